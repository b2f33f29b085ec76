//! `macula-sim`: run a named scenario on a simulated mesh and report.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use macula_proto::Duration;
use macula_sim::faults::{Explicit, Profile};
use macula_sim::scenario::{self, SCENARIOS};
use macula_sim::sweep::{self, Recipe};
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

/// What to simulate: the scenario, its size, and its faults.
#[derive(Args, Clone)]
struct What {
    /// The scenario (see `macula-sim list`).
    #[arg(long)]
    scenario: String,
    /// How many nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Virtual seconds to run (faults that end late extend the run, to leave a recovery
    /// window after them).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Drive full QUIC endpoints (real quinn-proto + rustls) instead of frames.
    #[arg(long)]
    quic: bool,
    /// Draw the faults from a profile: the seed chooses their intensities and timings. One of
    /// none, lossy, churny, partitioned, adversarial (duplication, reordering, one-way
    /// partitions), mixed. Not with --loss, --dup, --churn or --partition.
    #[arg(long)]
    profile: Option<Profile>,
    /// Loss probability on every path (0 to 1), until the faults stop.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Duplication probability on every path (0 to 1; QUIC mode duplicates datagrams).
    #[arg(long, default_value_t = 0.0)]
    dup: f64,
    /// Fraction of nodes that crash and restart during the run (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Split the members in halves for 45 s, from 30% of the run.
    #[arg(long)]
    partition: bool,
    /// Plant a bug that breaks one protocol rule (forgets-rejoin, drops-store-acks), to see
    /// a sweep catch it. Test builds only (feature `planted-bugs`).
    #[cfg(feature = "planted-bugs")]
    #[arg(long)]
    plant: Option<macula_sim::planted::Plant>,
}

impl What {
    /// The recipe, or why the options make none.
    fn recipe(&self) -> Result<Recipe, String> {
        if [self.loss, self.dup, self.churn]
            .iter()
            .any(|p| !(0.0..=1.0).contains(p))
        {
            return Err("--loss, --dup and --churn are probabilities between 0 and 1".into());
        }
        if self.nodes == 0 || self.nodes > 1 << 17 {
            return Err("--nodes must be between 1 and 131072".into());
        }
        let explicit = Explicit {
            loss: self.loss,
            dup: self.dup,
            churn: self.churn,
            partition: self.partition,
        };
        if self.profile.is_some() && explicit != Explicit::default() {
            return Err(
                "--profile draws the faults: give it without --loss, --dup, --churn or --partition"
                    .into(),
            );
        }
        Ok(Recipe {
            scenario: self.scenario.clone(),
            nodes: self.nodes,
            duration: Duration::from_secs(self.duration),
            mode: if self.quic { Mode::Quic } else { Mode::Frames },
            profile: self.profile,
            explicit,
            #[cfg(feature = "planted-bugs")]
            plant: self.plant,
            #[cfg(not(feature = "planted-bugs"))]
            plant: None,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario; exits 1 if an invariant fails.
    Run {
        #[command(flatten)]
        what: What,
        /// The master seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
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
    /// Run a scenario under many seeds on every core: per-invariant failure counts, and each
    /// failing seed with the command that replays it; exits 1 if any seed fails.
    Sweep {
        #[command(flatten)]
        what: What,
        /// How many seeds.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Runs at once (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
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
        Command::Sweep {
            what,
            seeds,
            from,
            jobs,
            json,
        } => {
            let recipe = match what.recipe() {
                Ok(r) => r,
                Err(e) => return usage(&e),
            };
            let jobs = jobs.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            let end = from.saturating_add(seeds);
            let outcome = match sweep::sweep(&recipe, from..end, jobs) {
                Ok(o) => o,
                Err(e) => return usage(&e),
            };
            if json {
                println!("{}", outcome.json());
            } else {
                print_sweep(&outcome);
            }
            if outcome.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Run {
            what,
            seed,
            json,
            no_prefetch,
            expectations,
        } => {
            let recipe = match what.recipe() {
                Ok(r) => r,
                Err(e) => return usage(&e),
            };
            if recipe.nodes >= LARGE_MESH_NODES {
                if let Some(code) = macula_sim::memory::rerun() {
                    return code;
                }
            }
            let mut params = recipe.params(seed);
            params.prefetch = no_prefetch.then_some(false);
            let report = match scenario::run(&recipe.scenario, &params) {
                Ok(r) => r,
                Err(e) => return usage(&e),
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
                let mut replay = recipe.replay(seed);
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

/// Says what is wrong with the command line; exit status 2.
fn usage(error: &str) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(2)
}

/// A sweep's outcome as text: a summary line, a line per invariant, and each failing seed
/// with its replay command.
fn print_sweep(outcome: &sweep::Outcome) {
    let r = &outcome.recipe;
    let profile = r.profile.map_or("explicit".into(), |p| p.to_string());
    println!(
        "sweep scenario={} profile={profile} nodes={} mode={} seeds={} passed={} failed={}",
        r.scenario,
        r.nodes,
        r.mode.as_str(),
        outcome.seeds.len(),
        outcome.seeds.len() - outcome.failed.len(),
        outcome.failed.len()
    );
    let failures = outcome.failures_by_invariant();
    for (name, (kind, held)) in &outcome.held {
        let failed = failures.get(name.as_str()).map_or(0, |f| f.1.len());
        println!(
            "  {:<9} {name}: held {held}, failed {failed}",
            kind.as_str()
        );
    }
    for (seed, failed) in &outcome.failed {
        for f in failed {
            println!(
                "seed {seed}: {} ({}): {}",
                f.invariant,
                f.kind.as_str(),
                f.detail
            );
        }
        println!("  replay: {}", r.replay(*seed));
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
