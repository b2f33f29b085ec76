//! The `macula-sim` binary: what a large run's second process (see `macula_sim::memory::rerun`)
//! prints and exits with is what the caller gets.

use std::process::{Command, Output};

fn run(extra: &[&str], tunables: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_macula-sim"));
    cmd.args(["run", "--scenario", "connect", "--nodes", "5000"])
        .args(["--seed", "3", "--duration", "2", "--json"])
        .args(extra);
    match tunables {
        Some(t) => cmd.env("GLIBC_TUNABLES", t),
        None => cmd.env_remove("GLIBC_TUNABLES"),
    };
    cmd.output().expect("macula-sim runs")
}

/// The report a `--json` run printed.
fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn digest(out: &Output) -> String {
    report(out)["trace_digest"]
        .as_str()
        .expect("a digest")
        .to_owned()
}

#[test]
fn a_large_run_gives_the_same_report_and_status_whether_rerun_or_not() {
    // No GLIBC_TUNABLES: from 4,096 nodes the command reruns itself with huge pages asked for.
    let rerun = run(&[], None);
    // GLIBC_TUNABLES set (to nothing): it runs in this process.
    let direct = run(&[], Some(""));
    assert!(rerun.status.success(), "{rerun:?}");
    assert!(direct.status.success(), "{direct:?}");
    assert_eq!(digest(&rerun), digest(&direct));

    let failing = run(&["--expect", "joined_ratio>=2"], None);
    assert_eq!(failing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failing.stderr);
    assert!(stderr.contains("expectation not met"), "{stderr}");
}

/// The kernel's transparent huge page mode, the bracketed word of its `enabled` file.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn thp_mode() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_owned())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn anon_huge_bytes(out: &Output) -> u64 {
    report(out)["anon_huge_bytes"]
        .as_u64()
        .expect("anon_huge_bytes")
}

/// The rerun asks glibc for huge pages, so this holds where glibc is the C library.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_large_run_gets_huge_pages_every_time_it_reruns() {
    // Only the kernel's `madvise` mode tells the rerun apart: `always` gives every run huge
    // pages, `never` none.
    if thp_mode().as_deref() != Some("madvise") {
        eprintln!("skipped: transparent huge pages are not in madvise mode here");
        return;
    }
    // glibc 2.36 decided whether to ask for them from a stale stack byte, and the rerun got
    // none in about half of all runs; several runs in a row make that visible.
    for attempt in 0..6 {
        let rerun = run(&[], None);
        assert!(rerun.status.success(), "{rerun:?}");
        assert!(
            anon_huge_bytes(&rerun) > 0,
            "run {attempt}: the rerun got no huge pages"
        );
    }
    let direct = run(&[], Some(""));
    assert!(direct.status.success(), "{direct:?}");
    assert_eq!(anon_huge_bytes(&direct), 0, "no huge pages were asked for");
}
