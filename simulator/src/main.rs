//! `macula-sim`: run a named scenario on a simulated mesh and report.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use macula_proto::Duration;
use macula_sim::scenario::{self, Params, SCENARIOS};
use macula_sim::{Mode, LARGE_MESH_NODES};

#[derive(Parser)]
#[command(
    name = "macula-sim",
    version,
    about = "Deterministic simulator for Macula meshes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario; exits 1 if an invariant fails.
    Run {
        /// The scenario (see `macula-sim list`).
        #[arg(long)]
        scenario: String,
        /// How many nodes.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// The master seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Virtual seconds to run.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Drive full QUIC endpoints (real quinn-proto + rustls) instead of frames.
        #[arg(long)]
        quic: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Loss probability on every path (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Fraction of nodes that crash and restart during the run (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        churn: f64,
        /// Split the mesh in two for 45 s, starting at 30% of the run.
        #[arg(long)]
        partition: bool,
        /// Do not prefetch the next events' state (on by default from 4,096 nodes; same results,
        /// slower at scale). For measuring what prefetching is worth.
        #[arg(long)]
        no_prefetch: bool,
        /// A threshold on a reported figure, `NAME>=VALUE` or `NAME<=VALUE` (for example
        /// `lookup_success_ratio>=0.999`); repeat for several. Exits 1 if one is not met.
        #[arg(long = "expect", value_name = "FIGURE>=X", value_parser = parse_expectation)]
        expectations: Vec<Expectation>,
    },
    /// List the scenarios.
    List,
}

/// Runs this command again in a child process with glibc's transparent huge pages on, and
/// returns its exit status; `None` where that does not apply.
///
/// A large run is bound by memory latency, and much of it is address translation: with 4 KiB
/// pages, every node's state sits on pages of its own, and the TLB misses come on top of the
/// cache misses. With 2 MiB pages the `connect` scenario at 100,000 nodes ran 13-16% more events
/// per second. glibc asks the kernel for them only if `GLIBC_TUNABLES` says so when the process
/// starts, hence the second process. A `GLIBC_TUNABLES` that is already set, even to nothing,
/// is left as it is, and nothing is rerun.
///
/// The child is named plain `macula-sim` (its `argv[0]`), not by the long path of the binary.
/// glibc 2.36 (Debian 12's) decides whether the kernel is in `madvise` mode by comparing the
/// 23 bytes it reads from `/sys/kernel/mm/transparent_hugepage/enabled` with `strcmp`, without
/// terminating them: the answer depends on the stack byte after the buffer, left there by the
/// dynamic loader. Started by its absolute path, the child got no huge pages in about half of
/// all runs (the byte varies with address-space randomisation); started as `macula-sim`, it got
/// them in every run tried. The report's `anon_huge_bytes` says whether a run had them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rerun_with_huge_pages() -> Option<ExitCode> {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let status = std::process::Command::new(exe)
        .arg0("macula-sim")
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
        .status()
        .ok()?;
    // A child killed by a signal has no code; report a failure.
    Some(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn rerun_with_huge_pages() -> Option<ExitCode> {
    None
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::List => {
            for (name, about) in SCENARIOS {
                println!("{name:<10} {about}");
            }
            ExitCode::SUCCESS
        }
        Command::Run {
            scenario: name,
            nodes,
            seed,
            duration,
            quic,
            json,
            loss,
            churn,
            partition,
            no_prefetch,
            expectations,
        } => {
            if !(0.0..=1.0).contains(&loss) || !(0.0..=1.0).contains(&churn) {
                eprintln!("error: --loss and --churn are probabilities between 0 and 1");
                return ExitCode::from(2);
            }
            if nodes == 0 || nodes > 1 << 17 {
                eprintln!("error: --nodes must be between 1 and 131072");
                return ExitCode::from(2);
            }
            if nodes >= LARGE_MESH_NODES {
                if let Some(code) = rerun_with_huge_pages() {
                    return code;
                }
            }
            let params = Params {
                nodes,
                seed,
                duration: Duration::from_secs(duration),
                mode: if quic { Mode::Quic } else { Mode::Frames },
                loss,
                churn,
                partition,
                prefetch: no_prefetch.then_some(false),
            };
            let report = match scenario::run(&name, &params) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if json {
                println!("{}", report.json);
            } else {
                print_text(&report.json);
            }
            let unmet: Vec<String> = expectations
                .iter()
                .filter_map(|e| e.unmet(&report.json))
                .collect();
            for line in &unmet {
                eprintln!("expectation not met: {line}");
            }
            if report.ok && unmet.is_empty() {
                ExitCode::SUCCESS
            } else {
                let mut replay = format!(
                    "macula-sim run --scenario {name} --nodes {nodes} --seed {seed} --duration {duration}"
                );
                if quic {
                    replay.push_str(" --quic");
                }
                if loss > 0.0 {
                    replay.push_str(&format!(" --loss {loss}"));
                }
                if churn > 0.0 {
                    replay.push_str(&format!(" --churn {churn}"));
                }
                if partition {
                    replay.push_str(" --partition");
                }
                for e in &expectations {
                    let op = if e.at_least { ">=" } else { "<=" };
                    replay.push_str(&format!(" --expect '{}{op}{}'", e.figure, e.bound));
                }
                let what = if report.ok {
                    "expectation not met"
                } else {
                    "invariant failed"
                };
                eprintln!("{what} (seed {seed}); replay with:\n  {replay}");
                ExitCode::from(1)
            }
        }
    }
}

/// A threshold on one figure of the report.
#[derive(Clone, Debug)]
struct Expectation {
    figure: String,
    at_least: bool,
    bound: f64,
}

impl Expectation {
    /// Why the report misses it, or `None` if it holds.
    fn unmet(&self, json: &serde_json::Value) -> Option<String> {
        let (op, bound) = (if self.at_least { ">=" } else { "<=" }, self.bound);
        let Some(value) = json.get(&self.figure).and_then(serde_json::Value::as_f64) else {
            return Some(format!("the report has no number called '{}'", self.figure));
        };
        let holds = if self.at_least {
            value >= bound
        } else {
            value <= bound
        };
        (!holds).then(|| format!("{} = {value}, wanted {op} {bound}", self.figure))
    }
}

fn parse_expectation(text: &str) -> Result<Expectation, String> {
    let (figure, at_least, bound) = if let Some((f, b)) = text.split_once(">=") {
        (f, true, b)
    } else if let Some((f, b)) = text.split_once("<=") {
        (f, false, b)
    } else {
        return Err("write FIGURE>=VALUE or FIGURE<=VALUE".into());
    };
    let bound = bound
        .trim()
        .parse::<f64>()
        .map_err(|e| format!("'{bound}' is not a number: {e}"))?;
    Ok(Expectation {
        figure: figure.trim().to_owned(),
        at_least,
        bound,
    })
}

fn print_text(json: &serde_json::Value) {
    let Some(fields) = json.as_object() else {
        return;
    };
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("invariants", serde_json::Value::Array(items)) => {
                println!("invariants:");
                for item in items {
                    let ok = item["ok"].as_bool().unwrap_or(false);
                    println!(
                        "  [{}] {}: {}",
                        if ok { "ok" } else { "FAIL" },
                        item["name"].as_str().unwrap_or("?"),
                        item["detail"].as_str().unwrap_or("")
                    );
                }
            }
            (key, value) => println!("{key}: {value}"),
        }
    }
}
