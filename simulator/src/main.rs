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
        /// Duplication probability on every path (0 to 1; QUIC mode duplicates datagrams).
        #[arg(long, default_value_t = 0.0)]
        dup: f64,
        /// Fraction of nodes that crash and restart during the run (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        churn: f64,
        /// Split the mesh in two for 45 s, starting at 30% of the run.
        #[arg(long)]
        partition: bool,
        /// Do not prefetch the next events' state nor where the queue's next pushes write (on
        /// by default from 4,096 nodes; same results, slower at scale). For measuring what
        /// prefetching is worth.
        #[arg(long)]
        no_prefetch: bool,
        /// A threshold on a reported figure, `NAME>=VALUE` or `NAME<=VALUE` (for example
        /// `lookup_success_ratio>=0.999`); repeat for several. Exits 1 if one is not met.
        #[arg(long = "expect", value_name = "FIGURE>=X", value_parser = parse_expectation)]
        expectations: Vec<Expectation>,
    },
    /// Run every pair of NAT kinds (public, full cone, restricted, port-restricted,
    /// address-dependent, symmetric with contiguous and with random allocation), each in a
    /// small mesh with a gateway, and print the path each pair ends on as a Markdown table;
    /// exits 1 if a pair is not linked on the path the decision table chose, or a kind is
    /// detected as another.
    NatMatrix {
        /// The master seed of every pair's run.
        #[arg(long, default_value_t = 5)]
        seed: u64,
    },
    /// List the scenarios.
    List,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::NatMatrix { seed } => {
            let matrix = macula_sim::nat_matrix::Matrix::run(seed);
            print!("{}", matrix.markdown());
            let failures = matrix.failures();
            for f in &failures {
                eprintln!("failed: {f}");
            }
            if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
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
            dup,
            churn,
            partition,
            no_prefetch,
            expectations,
        } => {
            if [loss, dup, churn].iter().any(|p| !(0.0..=1.0).contains(p)) {
                eprintln!("error: --loss, --dup and --churn are probabilities between 0 and 1");
                return ExitCode::from(2);
            }
            if nodes == 0 || nodes > 1 << 17 {
                eprintln!("error: --nodes must be between 1 and 131072");
                return ExitCode::from(2);
            }
            if nodes >= LARGE_MESH_NODES {
                if let Some(code) = macula_sim::memory::rerun() {
                    return code;
                }
            }
            let params = Params {
                nodes,
                seed,
                duration: Duration::from_secs(duration),
                mode: if quic { Mode::Quic } else { Mode::Frames },
                loss,
                dup,
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
                if dup > 0.0 {
                    replay.push_str(&format!(" --dup {dup}"));
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
