//! The `macula` binary as operators run it: identities made, shown and kept (`keys`,
//! `--identity`, data directories), SIGTERM, trust on first use and `trust` commands, key
//! rotation, settings from file, environment and flags, metrics, production TLS.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

#[test]
fn keys_generate_show_and_a_node_presents_the_identity_it_is_given() {
    let dir = scratch("keys");
    let key = dir.join("node.key");
    let key_arg = key.to_str().expect("a UTF-8 path");
    let made = succeeded(&macula("keys", &["generate", "--out", key_arg]));
    let shown = succeeded(&macula("keys", &["show", key_arg]));
    assert_eq!(made, shown);
    let id = made
        .split_whitespace()
        .next()
        .and_then(|f| f.strip_prefix("node_id="))
        .expect("node_id= first")
        .to_string();
    assert!(
        made.trim_end()
            .ends_with(&format!("fingerprint=sha256:{id}")),
        "{made}"
    );
    // Never overwritten.
    let again = macula("keys", &["generate", "--out", key_arg]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    // The node presents it, start after start.
    for _ in 0..2 {
        let (child, presented, _) = node_with(
            &["--listen", "127.0.0.1:0", "--identity", key_arg],
            &[],
            false,
        );
        assert_eq!(presented, id);
        stop(child);
    }
    // A key others may read is refused, with the fix.
    let chmod = Command::new("chmod").args(["644", key_arg]).status();
    assert!(chmod.expect("chmod runs").success());
    let exposed = macula("keys", &["show", key_arg]);
    assert!(!exposed.status.success());
    let told = String::from_utf8_lossy(&exposed.stderr);
    assert!(told.contains("chmod 600"), "{told}");
}

#[test]
fn nodes_keep_their_identity_in_their_own_data_directory() {
    let state = scratch("state");
    let env = [("XDG_STATE_HOME", state.as_path())];
    let (a_port, b_port) = (free_port(), free_port());
    let a_listen = format!("127.0.0.1:{a_port}");
    let b_listen = format!("127.0.0.1:{b_port}");
    // Two nodes on one host without --data-dir: two identities.
    let (a, a_id, _) = node_with(&["--listen", &a_listen], &env, false);
    let (b, b_id, _) = node_with(&["--listen", &b_listen], &env, false);
    assert_ne!(a_id, b_id);
    stop(a);
    stop(b);
    // Started again at the same address, each is the node it was.
    let (a, again, _) = node_with(&["--listen", &a_listen], &env, false);
    assert_eq!(again, a_id);
    stop(a);
    // An explicit directory: kept across starts, and held by one node at a time.
    let data = state.join("explicit");
    let data_arg = data.to_str().expect("a UTF-8 path");
    let (first, first_id, _) = node_with(
        &["--listen", "127.0.0.1:0", "--data-dir", data_arg],
        &[],
        false,
    );
    let second = Command::new(BIN)
        .args(["node", "--listen", "127.0.0.1:0", "--data-dir", data_arg])
        .output()
        .expect("the macula binary runs");
    assert!(!second.status.success());
    let told = String::from_utf8_lossy(&second.stderr);
    assert!(told.contains("in use by another running node"), "{told}");
    stop(first);
    let (first, again, _) = node_with(
        &["--listen", "127.0.0.1:0", "--data-dir", data_arg],
        &[],
        false,
    );
    assert_eq!(again, first_id);
    stop(first);
}

#[test]
fn sigterm_closes_a_node_with_a_goodbye_to_its_peers() {
    let state = scratch("sigterm");
    let a_dir = state.join("a");
    let b_dir = state.join("b");
    let (mut a, _, a_addr) = node_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            a_dir.to_str().unwrap(),
        ],
        &[],
        false,
    );
    let (mut b, _, _) = node_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            b_dir.to_str().unwrap(),
            "--bootstrap",
            &a_addr,
        ],
        &[],
        true,
    );
    let mut logs = BufReader::new(b.stderr.take().unwrap()).lines();
    let joined = logs
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("joined through bootstrap"));
    assert!(joined, "b joins through a");
    let sent = Command::new("kill")
        .args(["-TERM", &a.id().to_string()])
        .status();
    assert!(sent.expect("kill runs").success());
    assert!(
        a.wait().expect("a exits").success(),
        "SIGTERM closes cleanly"
    );
    let goodbye = logs
        .map_while(Result::ok)
        .find(|l| l.contains("peer left"))
        .expect("b hears a leave");
    assert!(goodbye.contains("closed by peer"), "{goodbye}");
    // Logged inside the link's span, which names the peer and its address.
    assert!(
        goodbye.contains("link{") && goodbye.contains(&format!("addr={a_addr}")),
        "{goodbye}"
    );
    assert!(
        !goodbye.contains('\u{1b}'),
        "no colour codes into a pipe: {goodbye:?}"
    );
    stop(b);
}

#[test]
fn a_pinned_key_is_kept_an_impostor_refused_and_a_revoke_trusts_the_next() {
    let dir = scratch("tofu");
    let (real, impostor) = (dir.join("real.key"), dir.join("impostor.key"));
    let key_id = |key: &std::path::Path| {
        let out = succeeded(&macula(
            "keys",
            &["generate", "--out", key.to_str().unwrap()],
        ));
        out.split_whitespace()
            .next()
            .and_then(|f| f.strip_prefix("node_id="))
            .expect("node_id=")
            .to_string()
    };
    let (real_id, impostor_id) = (key_id(&real), key_id(&impostor));
    let seed_addr = format!("127.0.0.1:{}", free_port());
    let b_dir = dir.join("b");
    let audit = dir.join("audit.log");
    let b_args = |seed: &str| {
        vec![
            "--listen".to_string(),
            "127.0.0.1:0".to_string(),
            "--data-dir".to_string(),
            b_dir.to_str().unwrap().to_string(),
            "--audit-log".to_string(),
            audit.to_str().unwrap().to_string(),
            "--bootstrap".to_string(),
            seed.to_string(),
        ]
    };
    let start_seed = |key: &std::path::Path| {
        node_with(
            &[
                "--listen",
                &seed_addr,
                "--data-dir",
                dir.join("seed").to_str().unwrap(),
                "--identity",
                key.to_str().unwrap(),
            ],
            &[],
            false,
        )
        .0
    };
    let list = || {
        succeeded(&macula(
            "trust",
            &["list", "--data-dir", b_dir.to_str().unwrap()],
        ))
    };
    // First contact: b joins through the seed and pins its key.
    let seed = start_seed(&real);
    let args = b_args(&seed_addr);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    stop(joined(&args));
    stop(seed);
    assert_eq!(
        list(),
        format!("name={seed_addr} fingerprint=sha256:{real_id}\n")
    );
    // Another key at the pinned address: refused, both fingerprints named.
    let seed = start_seed(&impostor);
    let (mut b, _, _) = node_with(&args, &[], true);
    let mut logs = BufReader::new(b.stderr.take().unwrap()).lines();
    let refusal = logs
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("bootstrap failed"))
        .expect("b says why it cannot join");
    assert!(
        refusal.contains(&format!("pinned sha256:{real_id}")),
        "{refusal}"
    );
    assert!(
        refusal.contains(&format!("presented sha256:{impostor_id}")),
        "{refusal}"
    );
    stop(b);
    assert!(list().contains(&real_id), "the pin stays");
    // Revoked on purpose: the next key there is trusted and pinned.
    let revoked = succeeded(&macula(
        "trust",
        &["revoke", &seed_addr, "--data-dir", b_dir.to_str().unwrap()],
    ));
    assert_eq!(
        revoked,
        format!("revoked name={seed_addr} fingerprint=sha256:{real_id}\n")
    );
    stop(joined(&args));
    stop(seed);
    assert_eq!(
        list(),
        format!("name={seed_addr} fingerprint=sha256:{impostor_id}\n")
    );
    // The audit log tells the same story, one JSON line per event.
    let log = std::fs::read_to_string(&audit).expect("b wrote its audit log");
    // (A refused bootstrap is retried after a second: a slow machine may log it twice.)
    let mut kinds: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("\"event\":\"").nth(1)?.split('"').next())
        .filter(|k| *k != "auth_success")
        .collect();
    kinds.dedup();
    assert_eq!(
        kinds,
        ["tofu_trust", "fingerprint_mismatch", "tofu_trust"],
        "{log}"
    );
    let mismatch = log
        .lines()
        .find(|l| l.contains("fingerprint_mismatch"))
        .unwrap();
    assert!(
        mismatch.contains(&format!("\"peer\":\"{impostor_id}\"")),
        "{mismatch}"
    );
    assert!(
        mismatch.contains(&format!("pinned sha256:{real_id}")),
        "{mismatch}"
    );
    assert!(
        mismatch.contains(&format!("\"addr\":\"{seed_addr}\"")),
        "{mismatch}"
    );
    assert!(log.contains("\"event\":\"auth_success\""), "{log}");
}

#[test]
fn a_bootstrap_given_by_name_is_resolved_and_pinned_under_that_name() {
    let dir = scratch("byname");
    let port = free_port();
    // Listening on every IPv6 and (mapped) IPv4 address, so `localhost` reaches it whichever
    // address the resolver gives first.
    let (seed, seed_id, _) = node_with(&["--listen", &format!("[::]:{port}")], &[], false);
    let name = format!("localhost:{port}");
    let b_dir = dir.join("b");
    let b = joined(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        b_dir.to_str().unwrap(),
        "--bootstrap",
        &name,
    ]);
    stop(b);
    stop(seed);
    let pins = succeeded(&macula(
        "trust",
        &["list", "--data-dir", b_dir.to_str().unwrap()],
    ));
    assert_eq!(pins, format!("name={name} fingerprint=sha256:{seed_id}\n"));
    let bad = macula("dht", &["peers", "--bootstrap", "no-port-here"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not HOST:PORT"));
}

#[test]
fn a_node_rotating_its_realm_key_admits_the_old_and_the_new() {
    let dir = scratch("rotation");
    let (old, new) = (dir.join("old"), dir.join("new"));
    std::fs::write(&old, "old-key-0123456789\n").unwrap();
    std::fs::write(&new, "new-key-0123456789\n").unwrap();
    let node = NodeProcess::start(&[
        "--realm",
        "io.cli",
        "--api-key-file",
        new.to_str().unwrap(),
        "--previous-api-key-file",
        old.to_str().unwrap(),
    ]);
    for key in [&old, &new] {
        let out = ping_keyed(&node.addr, key);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stranger = dir.join("stranger");
    std::fs::write(&stranger, "stranger-0123456789\n").unwrap();
    let out = ping_keyed(&node.addr, &stranger);
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad_credentials"));
}

#[test]
fn settings_come_from_the_file_then_the_environment_then_flags() {
    let dir = scratch("settings");
    let file = dir.join("node.toml");
    let port = free_port();
    let audit = dir.join("from-file.log");
    let audit = audit.to_str().unwrap();
    std::fs::write(
        &file,
        format!(
            "# a node's settings\nlisten = \"127.0.0.1:{port}\"\nrealm = \"io.file\"\n\
             audit_log = \"{audit}\"\n\n[limits]\nmax_peers = 99\n"
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let show = |env: &[(&str, &str)], args: &[&str]| {
        let mut command = Command::new(BIN);
        command
            .args(["config", "show", "--config", config])
            .args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        succeeded(&command.output().expect("the macula binary runs"))
    };
    let line = |out: &str, key: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} in {out}"))
            .to_owned()
    };
    let from_file = show(&[], &[]);
    assert_eq!(
        line(&from_file, "listen"),
        format!("listen = \"127.0.0.1:{port}\"  # file {config}")
    );
    assert_eq!(
        line(&from_file, "realm"),
        format!("realm = \"io.file\"  # file {config}")
    );
    assert_eq!(
        line(&from_file, "max_peers"),
        format!("max_peers = 99  # file {config}")
    );
    assert_eq!(line(&from_file, "max_pins"), "max_pins = 4096  # default");
    let env = [
        ("MACULA_LISTEN", "127.0.0.1:5002"),
        ("MACULA_REALM", "io.env"),
    ];
    let from_env = show(&env, &[]);
    assert_eq!(
        line(&from_env, "listen"),
        "listen = \"127.0.0.1:5002\"  # environment MACULA_LISTEN"
    );
    assert_eq!(
        line(&from_env, "realm"),
        "realm = \"io.env\"  # environment MACULA_REALM"
    );
    let from_flag = show(&env, &["--listen", "127.0.0.1:5003"]);
    assert_eq!(
        line(&from_flag, "listen"),
        "listen = \"127.0.0.1:5003\"  # flag --listen"
    );
    assert_eq!(line(&from_flag, "realm"), line(&from_env, "realm"));
    assert_eq!(line(&from_flag, "audit_log"), line(&from_file, "audit_log"));
    // What `config show` prints is itself a configuration file that reads back the same.
    let again = dir.join("again.toml");
    std::fs::write(&again, &from_flag).unwrap();
    let out = macula("config", &["show", "--config", again.to_str().unwrap()]);
    assert!(line(&succeeded(&out), "listen").starts_with("listen = \"127.0.0.1:5003\""));
    // A node started with the file alone listens where it says.
    let (node, _, addr) = node_with(&["--config", config], &[], false);
    assert_eq!(addr, format!("127.0.0.1:{port}"));
    stop(node);
    // Unknown keys, in the file's top level or in a table, are errors naming the key.
    for (text, key) in [
        (
            "listen = \"127.0.0.1:1\"\nlisten_adress = \"x\"\n",
            "listen_adress",
        ),
        ("[limits]\nmax_peer = 3\n", "max_peer"),
    ] {
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        for command in [["config", "show"], ["node", "--listen"]] {
            let mut c = Command::new(BIN);
            c.args(command);
            if command[0] == "node" {
                c.arg("127.0.0.1:0");
            }
            let out = c
                .args(["--config", bad.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(!out.status.success());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(key), "{stderr}");
        }
    }
}

/// The body of `GET path` from `addr`, over a plain HTTP/1.1 connection.
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the metrics port answers");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.to_owned(), body.to_owned())
}

#[test]
fn metrics_are_served_over_http_in_the_prometheus_format() {
    use prometheus_parse::{Scrape, Value};
    let dir = scratch("metrics");
    let key = dir.join("key");
    std::fs::write(&key, "the-realm-key-0123456789").unwrap();
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "not-the-realm-key-012345").unwrap();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--realm",
        "io.cli",
        "--api-key-file",
        key.to_str().unwrap(),
    ];
    let mut command = Command::new(BIN);
    command
        .arg("node")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut node = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(node.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {line:?}"))
            .to_owned()
    };
    let (addr, metrics) = (field("listen="), field("metrics="));
    // One member pings it, one stranger is refused.
    succeeded(&ping_keyed(&addr, &key));
    assert!(!ping_keyed(&addr, &wrong).status.success());
    let (head, body) = http_get(&metrics, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("it parses");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("{name} {labels:?} in {body}"));
        match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(value("macula_handshakes_completed_total", &[]), 1.0);
    let refused = [("by", "us"), ("reason", "bad_credentials")];
    assert_eq!(value("macula_handshakes_refused_total", &refused), 1.0);
    assert!(value("macula_frames_received_total", &[]) > 0.0);
    for name in [
        "macula_peers",
        "macula_pending_handshakes",
        "macula_commands_queued",
        "macula_rate_limited_total",
        "macula_dht_lookups_total",
        "macula_pubsub_published_total",
        "macula_rpc_calls_total",
    ] {
        value(name, &[]);
    }
    let (head, _) = http_get(&metrics, "/elsewhere");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    stop(node);
}

#[test]
fn production_tls_with_a_development_ca_admits_its_seeds_and_names_what_is_wrong() {
    let dir = scratch("tls");
    let ca_dir = dir.join("ca");
    let out = succeeded(&macula(
        "cert",
        &[
            "dev",
            "--out",
            ca_dir.to_str().unwrap(),
            "--name",
            "127.0.0.1",
            "--name",
            "seed.test",
        ],
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let ca = field_of(lines[0], "ca=");
    let (key, id) = (field_of(lines[1], "key="), field_of(lines[1], "node_id="));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
    }
    // The key is an identity: keys show reads it.
    let shown = succeeded(&macula("keys", &["show", &key]));
    assert!(shown.contains(&format!("node_id={id}")), "{shown}");
    // Running it again never overwrites a file.
    let again = macula(
        "cert",
        &[
            "dev",
            "--out",
            ca_dir.to_str().unwrap(),
            "--name",
            "seed.test",
        ],
    );
    assert!(!again.status.success());
    // A seed for 127.0.0.1 serves the CA-signed certificate under the key's identity.
    let production = ["--tls-mode", "production", "--tls-ca-cert-file", &ca];
    // A production seed on a free port serving the certificate and key of `line`.
    let start_seed = |line: &str| {
        let (cert, key) = (field_of(line, "cert="), field_of(line, "key="));
        let own = [
            "--listen",
            "127.0.0.1:0",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
        ];
        node_with(&[&own[..], &production[..]].concat(), &[], false)
    };
    let (seed, seed_id, addr) = start_seed(lines[1]);
    assert_eq!(seed_id, id, "the certificate's key is the node's identity");
    let ping_with = |extra: &[&str]| {
        let args = [&[addr.as_str(), "--count", "1"][..], extra].concat();
        ping(&args)
    };
    succeeded(&ping_with(&production));
    // The same settings through the environment.
    let out = Command::new(BIN)
        .args(["ping", &addr, "--count", "1"])
        .env("MACULA_TLS_MODE", "production")
        .env("MACULA_TLS_CACERTFILE", &ca)
        .output()
        .unwrap();
    succeeded(&out);
    // Another CA's certificate: refused, naming the cause.
    let other_dir = dir.join("other");
    let other = succeeded(&macula(
        "cert",
        &["dev", "--out", other_dir.to_str().unwrap()],
    ));
    let other_ca = field_of(other.lines().next().unwrap(), "ca=");
    let out = ping_with(&["--tls-mode", "production", "--tls-ca-cert-file", &other_ca]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown issuer"), "{err}");
    stop(seed);
    // A certificate for another host than the address dialed: refused, naming the cause,
    // unless host names are not checked.
    let (seed, _, addr) = start_seed(lines[2]);
    let ping_with = |extra: &[&str]| ping(&[&[addr.as_str(), "--count", "1"][..], extra].concat());
    let out = ping_with(&production);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong host name"), "{err}");
    succeeded(&ping_with(
        &[&production[..], &["--tls-verify-hostname", "false"]].concat(),
    ));
    stop(seed);
    // Production files without production mode, and production mode without a CA, are errors.
    let out = ping(&[&addr, "--tls-ca-cert-file", &ca]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-mode production"));
    let out = ping(&[&addr, "--tls-mode", "production"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-ca-cert-file"));
}

#[test]
fn members_publish_their_pins_and_trust_check_compares_them() {
    let dir = scratch("check");
    let seed_dir = dir.join("seed");
    let (seed, seed_id, seed_addr) = node_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            seed_dir.to_str().unwrap(),
        ],
        &[],
        false,
    );
    let member_dir = dir.join("member");
    let member = joined(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        member_dir.to_str().unwrap(),
        "--bootstrap",
        &seed_addr,
    ]);
    let member_id = field_of(
        &succeeded(&macula(
            "keys",
            &["show", member_dir.join("identity.key").to_str().unwrap()],
        )),
        "node_id=",
    );
    // The member's record is stored a moment after it joined: ask until it is there.
    let expected = format!("publisher={member_id} fingerprint=sha256:{seed_id}");
    let mut last = String::new();
    for _ in 0..50 {
        let out = macula("trust", &["check", &seed_addr, "--bootstrap", &seed_addr]);
        last = format!("{out:?}");
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&expected) {
            last.clear();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(last.is_empty(), "{last}");
    // Nobody pinned a name nobody dialed.
    let out = macula(
        "trust",
        &["check", "192.0.2.1:9", "--bootstrap", &seed_addr],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no member"));
    stop(member);
    stop(seed);
}

#[test]
fn the_gateway_role_comes_from_a_flag_the_environment_or_the_file() {
    let show = |args: &[&str], env: Option<&str>| {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args(["config", "show"]).args(args);
        cmd.env_remove("MACULA_GATEWAY");
        if let Some(v) = env {
            cmd.env("MACULA_GATEWAY", v);
        }
        let out = cmd.output().expect("the binary runs");
        let text = common::succeeded(&out);
        text.lines()
            .find(|l| l.starts_with("gateway ="))
            .expect("a gateway line")
            .to_owned()
    };
    assert_eq!(show(&[], None), "gateway = false  # default");
    assert_eq!(
        show(&["--gateway"], None),
        "gateway = true  # flag --gateway"
    );
    assert_eq!(
        show(&[], Some("true")),
        "gateway = true  # environment MACULA_GATEWAY"
    );
    assert_eq!(
        show(&["--gateway=false"], Some("true")),
        "gateway = false  # flag --gateway"
    );
    let dir = scratch("gateway");
    let file = dir.join("node.toml");
    std::fs::write(&file, "gateway = true\n").unwrap();
    let file = file.to_str().unwrap();
    assert!(show(&["--config", file], None).starts_with("gateway = true  # file "));
}
