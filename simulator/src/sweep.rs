//! Sweeps: one scenario under many seeds, on every core, each run as deterministic as alone.
//!
//! Within a fault [`Profile`] each seed also draws the faults' intensities and timings, so a
//! sweep explores the space of faults. A sweep counts, per invariant, the seeds it failed on,
//! and gives each failing seed the one command that replays it.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use macula_proto::Duration;
use serde_json::{json, Value};

use crate::check::Kind;
use crate::faults::{Explicit, FaultPlan, Profile};
use crate::planted::Plant;
use crate::scenario::{self, Params};
use crate::sim::Mode;

/// What to run for each seed: everything but the seed.
#[derive(Clone, Debug)]
pub struct Recipe {
    /// The scenario's name.
    pub scenario: String,
    /// How many nodes.
    pub nodes: usize,
    /// The requested duration (faults may extend a run).
    pub duration: Duration,
    /// Frames or QUIC.
    pub mode: Mode,
    /// Faults drawn from this profile by each seed, or
    pub profile: Option<Profile>,
    /// these explicit faults, the same for every seed.
    pub explicit: Explicit,
    /// A planted bug (tests only).
    pub plant: Option<Plant>,
}

impl Recipe {
    /// The run for `seed`.
    pub fn params(&self, seed: u64) -> Params {
        let faults = match self.profile {
            Some(profile) => FaultPlan::draw(profile, seed, self.duration),
            None => FaultPlan::explicit(self.explicit, self.duration),
        };
        Params {
            nodes: self.nodes,
            seed,
            duration: self.duration,
            mode: self.mode,
            faults,
            profile: self.profile,
            plant: self.plant,
            prefetch: None,
        }
    }

    /// The `macula-sim run` command that replays `seed`.
    pub fn replay(&self, seed: u64) -> String {
        let mut line = format!(
            "macula-sim run --scenario {} --nodes {} --seed {seed} --duration {}",
            self.scenario,
            self.nodes,
            self.duration.as_micros() / 1_000_000
        );
        if self.mode == Mode::Quic {
            line.push_str(" --quic");
        }
        match self.profile {
            Some(profile) => line.push_str(&format!(" --profile {profile}")),
            None => {
                line.push_str(&FaultPlan::explicit(self.explicit, self.duration).explicit_flags())
            }
        }
        if let Some(plant) = self.plant {
            line.push_str(&format!(" --plant {plant}"));
        }
        line
    }
}

/// One seed's run: the seed, its failures, and the invariants that held (with their kinds).
type SeedResult = (u64, Vec<Failure>, Vec<(String, Kind)>);

/// One failing invariant of one seed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The invariant (`run_panicked` if the run itself panicked).
    pub invariant: String,
    /// Safety or liveness.
    pub kind: Kind,
    /// What went wrong, first.
    pub detail: String,
}

/// A sweep's outcome.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The recipe.
    pub recipe: Recipe,
    /// The seeds run, in order.
    pub seeds: Vec<u64>,
    /// Each failing seed's failures.
    pub failed: BTreeMap<u64, Vec<Failure>>,
    /// Per invariant: its kind and how many seeds it held on.
    pub held: BTreeMap<String, (Kind, u64)>,
}

impl Outcome {
    /// Whether every seed passed.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// Per invariant: its kind, seeds it failed on.
    pub fn failures_by_invariant(&self) -> BTreeMap<&str, (Kind, Vec<u64>)> {
        let mut by: BTreeMap<&str, (Kind, Vec<u64>)> = BTreeMap::new();
        for (seed, failures) in &self.failed {
            for f in failures {
                by.entry(&f.invariant)
                    .or_insert((f.kind, Vec::new()))
                    .1
                    .push(*seed);
            }
        }
        by
    }

    /// The outcome as one JSON object.
    pub fn json(&self) -> Value {
        let invariants: Vec<Value> = self
            .held
            .iter()
            .map(|(name, (kind, held))| {
                let failed = self
                    .failures_by_invariant()
                    .get(name.as_str())
                    .map_or(0, |f| f.1.len());
                json!({"name": name, "kind": kind.as_str(), "held": held, "failed": failed})
            })
            .collect();
        let failing: Vec<Value> = self
            .failed
            .iter()
            .map(|(seed, failures)| {
                json!({
                    "seed": seed,
                    "replay": self.recipe.replay(*seed),
                    "failures": failures.iter().map(|f| json!({
                        "invariant": f.invariant, "kind": f.kind.as_str(), "detail": f.detail,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "scenario": self.recipe.scenario,
            "profile": self.recipe.profile.map(Profile::as_str),
            "nodes": self.recipe.nodes,
            "mode": self.recipe.mode.as_str(),
            "seeds": self.seeds.len(),
            "from": self.seeds.first(),
            "passed": self.seeds.len() - self.failed.len(),
            "failed": self.failed.len(),
            "invariants": invariants,
            "failing": failing,
        })
    }
}

/// Runs `recipe` for every seed of `seeds` on `jobs` threads.
///
/// # Errors
/// If the scenario does not exist.
pub fn sweep(recipe: &Recipe, seeds: std::ops::Range<u64>, jobs: usize) -> Result<Outcome, String> {
    if scenario::by_name(&recipe.scenario).is_none() {
        return Err(format!(
            "no scenario named '{}' (try `macula-sim list`)",
            recipe.scenario
        ));
    }
    let next = AtomicU64::new(seeds.start);
    let results: Mutex<Vec<SeedResult>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    return;
                }
                let result = one(recipe, seed);
                results
                    .lock()
                    .expect("no worker panics holding it")
                    .push(result);
            });
        }
    });
    let mut results = results.into_inner().expect("the workers are done");
    results.sort_by_key(|r| r.0);
    let mut outcome = Outcome {
        recipe: recipe.clone(),
        seeds: results.iter().map(|r| r.0).collect(),
        failed: BTreeMap::new(),
        held: BTreeMap::new(),
    };
    for (seed, failures, held) in results {
        for (name, kind) in held {
            outcome.held.entry(name).or_insert((kind, 0)).1 += 1;
        }
        for f in &failures {
            outcome
                .held
                .entry(f.invariant.clone())
                .or_insert((f.kind, 0));
        }
        if !failures.is_empty() {
            outcome.failed.insert(seed, failures);
        }
    }
    Ok(outcome)
}

/// Runs one seed.
fn one(recipe: &Recipe, seed: u64) -> SeedResult {
    let params = recipe.params(seed);
    match catch_unwind(AssertUnwindSafe(|| {
        scenario::run(&recipe.scenario, &params)
    })) {
        Ok(Ok(report)) => {
            let (held, failed): (Vec<_>, Vec<_>) = report.verdicts.into_iter().partition(|v| v.ok);
            let failures = failed
                .into_iter()
                .map(|v| Failure {
                    invariant: v.name.to_owned(),
                    kind: v.kind,
                    detail: v.detail,
                })
                .collect();
            (
                seed,
                failures,
                held.into_iter()
                    .map(|v| (v.name.to_owned(), v.kind))
                    .collect(),
            )
        }
        Ok(Err(e)) => (seed, vec![failure("run_failed", e)], Vec::new()),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".into());
            (seed, vec![failure("run_panicked", message)], Vec::new())
        }
    }
}

fn failure(invariant: &str, detail: String) -> Failure {
    Failure {
        invariant: invariant.into(),
        kind: Kind::Safety,
        detail,
    }
}
