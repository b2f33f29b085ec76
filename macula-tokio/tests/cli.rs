//! The `macula` binary: `node` prints its id and address, `ping` measures round trips and names
//! the cause when refused, Ctrl-C closes a node gracefully, `dht` puts and gets against running
//! nodes, `pub`/`sub` and `serve`/`call` work against running nodes, `demo` runs. Identities,
//! trust, configuration, metrics and TLS are in `operation.rs`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;

#[test]
fn ping_reports_one_rtt_per_round_trip() {
    let node = NodeProcess::start(&["--realm", "io.cli"]);
    let out = ping(&[&node.addr, "--realm", "io.cli", "--count", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rtts: Vec<u64> = stdout
        .lines()
        .map(|l| field(l, "rtt_us").parse().unwrap())
        .collect();
    assert_eq!(rtts.len(), 3, "{stdout}");
    assert!(
        stdout.lines().all(|l| field(l, "path") == "direct"),
        "{stdout}"
    );
    assert!(node.interrupt().success(), "Ctrl-C closes the node cleanly");
}

/// The value of `name=` in a line of `key=value` fields.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

#[test]
fn ping_reaches_a_node_by_its_id_through_the_mesh() {
    let bootstrap = NodeProcess::start(&["--realm", "io.cli", "--gateway"]);
    let target = NodeProcess::start_at(
        "127.0.0.2:0",
        &["--realm", "io.cli", "--bootstrap", &bootstrap.addr],
    );
    // Until the target has published where it is, the mesh does not know it.
    let args = [
        target.id.as_str(),
        "--bootstrap",
        &bootstrap.addr,
        "--realm",
        "io.cli",
        "--count",
        "2",
        "--interval",
        "50",
    ];
    let mut out = ping(&args);
    for _ in 0..100 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = ping(&args);
    }
    let stdout = succeeded(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in lines {
        assert_eq!(field(line, "peer"), &target.id[..8]);
        assert_eq!(field(line, "path"), "direct", "loopback has no NAT");
    }
    // Neither an address nor an id.
    let bad = ping(&["not-a-node", "--bootstrap", &bootstrap.addr]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("neither an address"));
}

#[test]
fn ping_names_a_wrong_realm_and_a_wrong_key() {
    let dir = std::env::temp_dir().join(format!("macula-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    let wrong = dir.join("wrong");
    std::fs::write(&key, "0123456789abcdef0123\n").unwrap();
    std::fs::write(&wrong, "0123456789abcdef9999\n").unwrap();
    let node = NodeProcess::start(&["--realm", "io.cli", "--api-key-file", key.to_str().unwrap()]);

    let out = ping(&[&node.addr, "--realm", "io.other", "--count", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong_realm"), "{err}");

    let out = ping(&[
        &node.addr,
        "--realm",
        "io.cli",
        "--api-key-file",
        wrong.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad_credentials"), "{err}");

    let out = ping_keyed(&node.addr, &key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = ping(&[&node.addr, "--realm", "bad realm!"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--realm"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn demo_connects_three_nodes_and_prints_a_table() {
    let out = Command::new(BIN)
        .arg("demo")
        .output()
        .expect("the macula binary runs");
    let stdout = succeeded(&out);
    assert!(stdout.contains("Every node sees 2 peers"), "{stdout}");
    assert!(
        stdout.contains("node 2 got 'demo/greeting' = 'hello from node 0'"),
        "{stdout}"
    );
    for i in 0..2 {
        assert!(
            stdout.contains(&format!(
                "node 2 got 'hello from node {i}' on 'demo.node{i}.greeting' from node {i}"
            )),
            "{stdout}"
        );
    }
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.trim_start().starts_with("node ") && l.contains('-'))
            .count(),
        3
    );
    // The call whose provider vanished is answered by the other one.
    assert!(stdout.contains("RPC: node 0 got 'ping 1'"), "{stdout}");
    assert!(
        stdout.contains("RPC: node 0 got 'ping 2'")
            && stdout.contains("after failing over (2 attempts"),
        "{stdout}"
    );
}

fn dht(args: &[&str]) -> std::process::Output {
    macula("dht", args)
}

#[test]
fn dht_put_and_get_against_running_nodes() {
    let seed = NodeProcess::start(&["--realm", "io.cli.dht"]);
    let other = NodeProcess::start(&["--realm", "io.cli.dht", "--bootstrap", &seed.addr]);
    let realm = ["--realm", "io.cli.dht"];
    // `other` joins in the background once it listens: wait (boundedly) until the seed's
    // routing table, as a client sees it, lists both nodes.
    let listed = |stdout: &str| {
        stdout.contains(&format!("addr={}", seed.addr))
            && stdout.contains(&format!("addr={}", other.addr))
    };
    let mut peers = String::new();
    for _ in 0..50 {
        let out = dht(&[&["peers", "--bootstrap", &seed.addr], &realm[..]].concat());
        assert!(out.status.success());
        peers = String::from_utf8_lossy(&out.stdout).into_owned();
        if listed(&peers) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The table lists both running nodes (the client itself never becomes a contact).
    assert!(listed(&peers), "{peers}");
    assert_eq!(peers.lines().count(), 2, "{peers}");
    let put = dht(&[
        &["put", "color", "blue", "--bootstrap", &seed.addr],
        &realm[..],
    ]
    .concat());
    let stdout = String::from_utf8_lossy(&put.stdout);
    assert!(
        put.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let stored: usize = stdout
        .trim()
        .strip_prefix("stored_at=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("stored_at=N, got {stdout}"));
    assert_eq!(stored, 2, "stored at both nodes: {stdout}");
    // Another client, through the other node, finds it.
    let get = dht(&[&["get", "color", "--bootstrap", &other.addr], &realm[..]].concat());
    let stdout = String::from_utf8_lossy(&get.stdout);
    assert!(
        get.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert!(stdout.trim().ends_with("value=blue"), "{stdout}");
    // Nothing under another key: exit 1 and say so.
    let missing = dht(&[&["get", "colour", "--bootstrap", &other.addr], &realm[..]].concat());
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no value is stored under 'colour'"));
    // Without --bootstrap it says what is missing.
    let lost = dht(&["get", "color"]);
    assert!(!lost.status.success());
    assert!(String::from_utf8_lossy(&lost.stderr).contains("--bootstrap"));
}

fn publish(args: &[&str]) -> std::process::Output {
    macula("pub", args)
}

#[test]
fn sub_prints_what_pub_sends_on_matching_topics_only() {
    let seed = NodeProcess::start(&["--realm", "io.cli.pubsub"]);
    let realm = ["--realm", "io.cli.pubsub"];
    let sub = Command::new(BIN)
        .args([
            "sub",
            "sensors.*.temp",
            "--count",
            "2",
            "--bootstrap",
            &seed.addr,
        ])
        .args(realm)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the macula binary starts");
    // Publish until the subscriber is found (its announcement takes a moment to land).
    let mut found = false;
    for _ in 0..100 {
        let out = publish(
            &[
                &["sensors.kitchen.humidity", "55", "--bootstrap", &seed.addr],
                &realm[..],
            ]
            .concat(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "message=1 subscribers=0\n"
        );
        assert!(out.stderr.is_empty(), "quiet by default");
        let out = publish(
            &[
                &[
                    "sensors.kitchen.temp",
                    "21",
                    "--qos",
                    "1",
                    "--bootstrap",
                    &seed.addr,
                ],
                &realm[..],
            ]
            .concat(),
        );
        let stdout = succeeded(&out);
        if stdout.contains("subscribers=1 acked=1 missed=0") {
            found = true;
            break;
        }
        assert_eq!(stdout, "message=1 subscribers=0 acked=0 missed=0\n");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(found, "the subscriber was never found");
    // With --count, messages get a counter suffix; the subscriber exits after two.
    let out = publish(
        &[
            &[
                "sensors.hall.temp",
                "19",
                "--count",
                "1",
                "--bootstrap",
                &seed.addr,
            ],
            &realm[..],
        ]
        .concat(),
    );
    assert!(out.status.success());
    let output = sub.wait_with_output().expect("the subscriber exits");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("topic=sensors.kitchen.temp from="),
        "{stdout}"
    );
    assert!(lines[0].ends_with(" payload=21"), "{stdout}");
    assert!(
        lines[1].starts_with("topic=sensors.hall.temp from="),
        "{stdout}"
    );
    assert!(!stdout.contains("humidity"));
    let from = lines[0].split_whitespace().nth(1).unwrap();
    assert_eq!(from.len(), "from=".len() + 8, "{stdout}");
    assert!(output.stderr.is_empty(), "quiet by default");

    // Several messages with a counter, and a bad topic is named.
    let out = publish(
        &[
            &["a.b", "m", "--count", "3", "--bootstrap", &seed.addr],
            &realm[..],
        ]
        .concat(),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "message=1 subscribers=0\nmessage=2 subscribers=0\nmessage=3 subscribers=0\n"
    );
    let bad = publish(&[&["a..b", "m", "--bootstrap", &seed.addr], &realm[..]].concat());
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid topic"));
}

#[test]
fn bench_pubsub_runs_separate_processes_and_counts_loss() {
    let out = Command::new(BIN)
        .args([
            "bench", "pubsub", "--subs", "2", "--size", "32", "--count", "3000", "--json",
        ])
        .output()
        .expect("the macula binary runs");
    let stdout = succeeded(&out);
    let line = stdout.lines().last().expect("a JSON line");
    for field in [
        "\"delivered_msgs_per_s\":",
        "\"delivered_payload_mb_per_s\":",
        "\"peak_rss_bytes\":",
        "\"rtt\":{\"p50_us\":",
        "\"p99_us\":",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(line.contains("\"lost\":0,"), "{line}");
    assert!(line.contains("\"delivered_total\":6000,"), "{line}");
    let small = Command::new(BIN)
        .args(["bench", "pubsub", "--size", "8"])
        .output()
        .expect("the macula binary runs");
    assert!(!small.status.success());
    assert!(String::from_utf8_lossy(&small.stderr).contains("at least 16"));
}

#[test]
fn bench_runs_its_workers_on_smol_when_asked() {
    let on_smol = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["bench"])
            .args(args)
            .args(["--runtime", "smol", "--json"])
            .output()
            .expect("the macula binary runs");
        let line = succeeded(&out)
            .lines()
            .last()
            .expect("a JSON line")
            .to_string();
        assert!(line.contains("\"runtime\":\"smol\""), "{line}");
        line
    };
    let line = on_smol(&["pubsub", "--subs", "1", "--count", "2000", "--qos", "1"]);
    assert!(line.contains("\"lost\":0,"), "{line}");
    assert!(line.contains("\"delivered_total\":2000,"), "{line}");
    let line = on_smol(&["rpc", "--outstanding", "4", "--count", "400"]);
    assert!(line.contains("\"req_per_s\":"), "{line}");
    let wrong = Command::new(BIN)
        .args(["bench", "rpc", "--runtime", "async-std"])
        .output()
        .expect("the macula binary runs");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("tokio, smol"));
}

/// A `macula serve` process, once it says callers can find it.
struct Server {
    child: Running,
    node_id: String,
    /// Its stdout, kept open (it prints a line per call answered).
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    fn start(procedure: &str, seed: &str, realm: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", procedure, "--bootstrap", seed])
            .args(realm)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the macula binary starts");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        stdout.read_line(&mut line).expect("serve prints a line");
        let node_id = line
            .trim()
            .strip_prefix(&format!("serving={procedure} node_id="))
            .unwrap_or_else(|| panic!("serving= first: {line:?}"))
            .to_string();
        Server {
            child: Running(child),
            node_id,
            _stdout: stdout,
        }
    }
}

/// A child process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn call(args: &[&str]) -> std::process::Output {
    macula("call", args)
}

#[test]
fn call_is_answered_by_serve_and_survives_a_killed_server() {
    let realm = ["--realm", "io.cli.rpc"];
    let seed = NodeProcess::start(&realm);
    let mut servers = vec![
        Server::start("svc.echo", &seed.addr, &realm),
        Server::start("svc.echo", &seed.addr, &realm),
    ];
    let out = call(
        &[
            &[
                "svc.echo",
                "hello",
                "--count",
                "3",
                "--bootstrap",
                &seed.addr,
            ],
            &realm[..],
        ]
        .concat(),
    );
    let stdout = succeeded(&out);
    assert!(out.stderr.is_empty(), "quiet by default");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let shorts: Vec<String> = servers.iter().map(|s| s.node_id[..8].to_string()).collect();
    for line in &lines {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3, "{line}");
        let from = fields[0].strip_prefix("from=").expect("from= first");
        assert!(shorts.iter().any(|s| s == from), "{line}");
        let rtt: u64 = fields[1]
            .strip_prefix("rtt_us=")
            .expect("rtt_us=")
            .parse()
            .unwrap();
        assert!(rtt > 0);
        assert_eq!(fields[2], "payload=hello");
    }
    // Addressed to one server, only it answers.
    let to = servers[1].node_id.clone();
    let out = call(
        &[
            &["svc.echo", "you", "--to", &to, "--bootstrap", &seed.addr],
            &realm[..],
        ]
        .concat(),
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("from={}", &to[..8])));

    // One server dies without a goodbye: every later call is still answered.
    let mut dead = servers.remove(0);
    dead.child.0.kill().expect("SIGKILL");
    dead.child.0.wait().unwrap();
    for k in 0..3 {
        let payload = format!("after-{k}");
        let out = call(
            &[
                &[
                    "svc.echo",
                    &payload,
                    "--count",
                    "4",
                    "--bootstrap",
                    &seed.addr,
                ],
                &realm[..],
            ]
            .concat(),
        );
        let stdout = succeeded(&out);
        assert_eq!(stdout.lines().count(), 4);
        for line in stdout.lines() {
            assert!(line.starts_with(&format!("from={}", shorts[1])), "{line}");
            assert!(line.ends_with(&format!("payload={payload}")), "{line}");
        }
    }

    // Nobody serves it: a non-zero exit naming the error, at once.
    let out = call(&[&["svc.nobody", "?", "--bootstrap", &seed.addr], &realm[..]].concat());
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no_responders"), "{stderr}");
}

#[test]
fn nat_reports_the_classes_of_a_host_without_nat() {
    // A bootstrap at 127.0.0.1 and a second node at 127.0.0.2 (a second observer, and a
    // helper at an address the detecting host never sent to).
    let bootstrap = NodeProcess::start(&[]);
    let _second = NodeProcess::start_at("127.0.0.2:0", &["--bootstrap", &bootstrap.addr]);
    // Until the second node has joined, the bootstrap knows no second observer.
    let mut out = macula("nat", &["--bootstrap", &bootstrap.addr]);
    for _ in 0..100 {
        if !String::from_utf8_lossy(&out.stderr).contains("second observer") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = macula("nat", &["--bootstrap", &bootstrap.addr]);
    }
    let line = succeeded(&out);
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields[..4],
        [
            "mapping=endpoint-independent",
            "filtering=endpoint-independent",
            "allocation=preserving",
            "hairpin=yes"
        ],
        "{line}"
    );
    let public = fields[4].strip_prefix("public=").expect("public= last");
    assert!(public.starts_with("127.0.0.1:"), "{line}");
    assert_eq!(line.lines().count(), 1, "one line: {line}");
}

#[test]
fn nat_without_a_second_observer_says_so() {
    let bootstrap = NodeProcess::start(&[]);
    let out = macula("nat", &["--bootstrap", &bootstrap.addr]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("second observer"), "{err}");
}
