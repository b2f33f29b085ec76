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

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_macula-sim"))
        .args(args)
        .output()
        .expect("macula-sim runs")
}

#[test]
fn a_sweep_reports_every_invariant_and_its_kind_as_json() {
    let out = sim(&[
        "sweep",
        "--scenario",
        "connect",
        "--nodes",
        "30",
        "--seeds",
        "6",
        "--from",
        "10",
        "--profile",
        "mixed",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let summary = report(&out);
    assert_eq!(summary["seeds"], 6);
    assert_eq!(summary["from"], 10);
    assert_eq!(summary["passed"], 6);
    assert_eq!(summary["profile"], "mixed");
    let invariants = summary["invariants"].as_array().expect("a list");
    let kind = |name: &str| {
        invariants.iter().find(|i| i["name"] == name).map(|i| {
            (
                i["kind"].as_str().unwrap().to_owned(),
                i["held"].as_u64().unwrap(),
            )
        })
    };
    assert_eq!(kind("no_panics"), Some(("safety".into(), 6)));
    assert_eq!(kind("restarted_nodes_rejoin"), Some(("liveness".into(), 6)));
}

#[test]
fn a_run_with_a_drawn_fault_plan_replays_bit_for_bit() {
    // What a sweep's replay command relies on: the seed draws the same faults, and the same run.
    let alone = |seed: &str| {
        let out = sim(&[
            "run",
            "--scenario",
            "connect",
            "--nodes",
            "30",
            "--seed",
            seed,
            "--profile",
            "adversarial",
            "--json",
        ]);
        assert!(out.status.success(), "{out:?}");
        report(&out)
    };
    let a = alone("3");
    assert_eq!(a["faults"]["profile"], "adversarial");
    assert!(
        a["faults"]["reorder"].as_f64().unwrap() > 0.0,
        "{}",
        a["faults"]
    );
    assert_eq!(digest_of(&a), digest_of(&alone("3")));
    assert_ne!(digest_of(&a), digest_of(&alone("4")));
}

fn digest_of(report: &serde_json::Value) -> String {
    report["trace_digest"]
        .as_str()
        .expect("a digest")
        .to_owned()
}

#[test]
fn bad_sweep_options_are_refused_with_the_reason() {
    let both = sim(&[
        "sweep",
        "--scenario",
        "connect",
        "--seeds",
        "1",
        "--profile",
        "lossy",
        "--loss",
        "0.1",
    ]);
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("--profile draws the faults"));
    let unknown = sim(&["sweep", "--scenario", "connect", "--profile", "chaos"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("mixed"));
    let nobody = sim(&["sweep", "--scenario", "nobody", "--seeds", "1"]);
    assert_eq!(nobody.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("macula-sim list"));
}
