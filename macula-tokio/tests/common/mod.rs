//! What the `macula` binary's tests share: running it, starting nodes, scratch directories.
// Each test file uses its own part of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_macula");

pub struct NodeProcess {
    pub child: Child,
    pub addr: String,
    pub id: String,
}

impl NodeProcess {
    pub fn start(args: &[&str]) -> NodeProcess {
        Self::start_at("127.0.0.1:0", args)
    }

    /// A node listening at `listen`.
    pub fn start_at(listen: &str, args: &[&str]) -> NodeProcess {
        let mut child = Command::new(BIN)
            .args(["node", "--listen", listen])
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
            id: id.to_string(),
        }
    }

    pub fn interrupt(mut self) -> std::process::ExitStatus {
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

/// Runs `macula <command> <args>` to completion.
pub fn macula(command: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg(command)
        .args(args)
        .output()
        .expect("the macula binary runs")
}

/// The stdout of a run that must have succeeded (its output is shown if it did not).
pub fn succeeded(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn ping(args: &[&str]) -> std::process::Output {
    macula("ping", args)
}

/// One ping of the node at `addr` in realm `io.cli` with the API key in `key`.
pub fn ping_keyed(addr: &str, key: &std::path::Path) -> std::process::Output {
    let key = key.to_str().expect("a UTF-8 path");
    ping(&[
        addr,
        "--realm",
        "io.cli",
        "--api-key-file",
        key,
        "--count",
        "1",
    ])
}

/// A scratch directory of this test process.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("macula-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Starts `macula node` with `args` (which give `--listen`), `env` set, and stderr piped when
/// `logs`; returns the process, the node id and the address it printed.
pub fn node_with(
    args: &[&str],
    env: &[(&str, &std::path::Path)],
    logs: bool,
) -> (Child, String, String) {
    let (child, line) = node_line(args, env, logs);
    let field = |name: &str| field_of(&line, name);
    let (id, addr) = (field("node_id="), field("listen="));
    (child, id, addr)
}

/// The value of `name` (`key=`) in a line of `key=value` fields.
pub fn field_of(line: &str, name: &str) -> String {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name))
        .unwrap_or_else(|| panic!("{name} in {line:?}"))
        .to_string()
}

/// Starts `macula node` as [`node_with`] does; returns the process and the line it printed.
pub fn node_line(args: &[&str], env: &[(&str, &std::path::Path)], logs: bool) -> (Child, String) {
    let mut command = Command::new(BIN);
    command.arg("node").args(args).stdout(Stdio::piped());
    command.stderr(if logs { Stdio::piped() } else { Stdio::null() });
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("the macula binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("the node prints a line");
    (child, line)
}

pub fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A node started with `args` (which give `--bootstrap`) once it has joined through it.
pub fn joined(args: &[&str]) -> Child {
    let (mut node, _, _) = node_with(args, &[], true);
    let mut logs = BufReader::new(node.stderr.take().expect("stderr is piped")).lines();
    let joined = logs
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("joined through bootstrap"));
    assert!(joined, "the node joins through its bootstrap");
    node
}

/// A UDP port free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}
