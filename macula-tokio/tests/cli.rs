//! The `macula` binary: `node` prints its id and address, `ping` measures round trips and names
//! the cause when refused, Ctrl-C closes a node gracefully, `dht` puts and gets against running
//! nodes, and `demo` runs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_macula");

struct NodeProcess {
    child: Child,
    addr: String,
}

impl NodeProcess {
    fn start(args: &[&str]) -> NodeProcess {
        let mut child = Command::new(BIN)
            .args(["node", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the macula binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the node prints a line");
        let mut fields = line.split_whitespace();
        let id = fields
            .next()
            .and_then(|f| f.strip_prefix("node_id="))
            .expect("node_id= first");
        assert_eq!(id.len(), 64, "{line}");
        let addr = fields
            .next()
            .and_then(|f| f.strip_prefix("listen="))
            .expect("listen= second");
        NodeProcess {
            child,
            addr: addr.to_string(),
        }
    }

    fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        self.child.wait().expect("the node exits")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ping(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("ping")
        .args(args)
        .output()
        .expect("the macula binary runs")
}

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
        .map(|l| {
            l.rsplit_once("rtt_us=")
                .expect("each line has rtt_us=")
                .1
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(rtts.len(), 3, "{stdout}");
    assert!(node.interrupt().success(), "Ctrl-C closes the node cleanly");
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

    let out = ping(&[
        &node.addr,
        "--realm",
        "io.cli",
        "--api-key-file",
        key.to_str().unwrap(),
        "--count",
        "1",
    ]);
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Every node sees 2 peers"), "{stdout}");
    assert!(
        stdout.contains("node 2 got 'demo/greeting' = 'hello from node 0'"),
        "{stdout}"
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.trim_start().starts_with("node ") && l.contains('-'))
            .count(),
        3
    );
}

fn dht(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("dht")
        .args(args)
        .output()
        .expect("the macula binary runs")
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
