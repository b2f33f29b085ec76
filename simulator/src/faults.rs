//! What goes wrong in a run, and when: the fault plan.
//!
//! A run's faults are one [`FaultPlan`]: link faults (loss, duplication, reordering), churn
//! (a share of the nodes crash in a window and restart 5 to 15 s later) and at most one
//! partition (two-way or one-way) that always heals inside the run. Every fault stops at the
//! plan's [`calm`](FaultPlan::calm) moment; liveness is judged only after a
//! [`recovery`](FaultPlan::recovery) window of calm, and the run is extended to leave that
//! window when the faults end late.
//!
//! A plan comes from explicit options (`--loss`, `--churn`, `--partition`, ...) or from a
//! [`Profile`], whose intensities and timings the master seed draws: a sweep over seeds then
//! explores the space of faults, not one point of it.

use std::fmt;
use std::str::FromStr;

use macula_proto::{Duration, Instant, Rng};

use crate::net::chance;

/// Families of faults a sweep explores; within one, the seed draws intensities and timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// No faults: a baseline.
    None,
    /// Loss 1–10%, some duplication and reordering.
    Lossy,
    /// 5–30% of the nodes crash and restart.
    Churny,
    /// One two-way partition of 10–45 s, splitting off 20–50% of the members.
    Partitioned,
    /// Duplication and reordering (QUIC mode) with a little loss, and a partition that is
    /// one-way half the time.
    Adversarial,
    /// Each of the above families in or out by the seed (at least one in).
    Mixed,
}

impl Profile {
    /// Every profile, in the order `--help` lists them.
    pub const ALL: [Profile; 6] = [
        Profile::None,
        Profile::Lossy,
        Profile::Churny,
        Profile::Partitioned,
        Profile::Adversarial,
        Profile::Mixed,
    ];

    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::None => "none",
            Profile::Lossy => "lossy",
            Profile::Churny => "churny",
            Profile::Partitioned => "partitioned",
            Profile::Adversarial => "adversarial",
            Profile::Mixed => "mixed",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Profile::ALL.iter().map(|p| p.as_str()).collect();
                format!("no fault profile '{s}' (one of: {})", names.join(", "))
            })
    }
}

/// A partition: which share of the members is cut off, from when to when, which way.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PartitionPlan {
    /// When it starts.
    pub start: Instant,
    /// When it heals (always inside the run).
    pub end: Instant,
    /// The share of the members (not the bootstrap nodes) on the cut-off side.
    pub share: f64,
    /// Only traffic from the cut-off side to the rest is lost.
    pub one_way: bool,
}

/// The faults of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// Loss probability on every path, until calm.
    pub loss: f64,
    /// Duplication probability on every path (QUIC mode), until calm.
    pub dup: f64,
    /// Reordering probability on every path (QUIC mode), until calm.
    pub reorder: f64,
    /// The share of the members that crash.
    pub churn: f64,
    /// Crashes happen in this window; each node restarts 5 to 15 s after its crash.
    pub crashes: (Instant, Instant),
    /// At most one partition.
    pub partition: Option<PartitionPlan>,
    /// When every fault has stopped: links are clean, the partition healed, every crashed node
    /// restarted.
    pub calm: Instant,
    /// How long after `calm` liveness is judged.
    pub recovery: Duration,
    /// The run's end: its requested duration, or later to leave `recovery` after `calm`.
    pub end: Instant,
}

/// Nodes join in the first 10 s of a run; crashes start after that.
pub const JOIN_WINDOW: Duration = Duration::from_secs(10);
/// The longest a crashed node stays down.
pub const MAX_DOWN: Duration = Duration::from_secs(15);
/// Liveness is judged this long after the faults stopped (default).
pub const RECOVERY: Duration = Duration::from_secs(30);
/// How long `--partition` lasts: longer than the idle timeout, so links across it break.
pub const PARTITION_FOR: Duration = Duration::from_secs(45);

/// What a run was asked for explicitly (the `run` command's fault options).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Explicit {
    /// `--loss`.
    pub loss: f64,
    /// `--dup`.
    pub dup: f64,
    /// `--churn`.
    pub churn: f64,
    /// `--partition`.
    pub partition: bool,
}

impl FaultPlan {
    /// The plan for explicit options in a run of `duration`: crashes from 10 s to 60% of the
    /// run, the partition from 30% of it for 45 s, splitting the members in halves.
    pub fn explicit(options: Explicit, duration: Duration) -> Self {
        let partition = options.partition.then(|| {
            let start = at_fraction(duration, 0.3);
            PartitionPlan {
                start,
                end: start + PARTITION_FOR,
                share: 0.5,
                one_way: false,
            }
        });
        FaultPlan::settle(
            FaultPlan {
                loss: options.loss,
                dup: options.dup,
                reorder: 0.0,
                churn: options.churn,
                crashes: crash_window(duration),
                partition,
                calm: Instant::ZERO,
                recovery: RECOVERY,
                end: Instant::ZERO,
            },
            duration,
        )
    }

    /// The plan profile `profile` draws from `seed` for a run of `duration`. The draw uses its
    /// own stream of the seed, so the run's other choices do not move with it.
    pub fn draw(profile: Profile, seed: u64, duration: Duration) -> Self {
        let mut rng = Rng::from_seed(seed ^ 0x6661_756c_7473_2121);
        let mut plan = FaultPlan::explicit(Explicit::default(), duration);
        let families = match profile {
            Profile::None => [false; 4],
            Profile::Lossy => [true, false, false, false],
            Profile::Churny => [false, true, false, false],
            Profile::Partitioned => [false, false, true, false],
            Profile::Adversarial => [false, false, false, true],
            Profile::Mixed => loop {
                let pick = [(); 4].map(|()| rng.below(2) == 1);
                if pick.contains(&true) {
                    break pick;
                }
            },
        };
        let [lossy, churny, partitioned, adversarial] = families;
        if lossy {
            plan.loss = uniform(&mut rng, 0.01, 0.10);
            plan.dup = uniform(&mut rng, 0.0, 0.03);
            plan.reorder = uniform(&mut rng, 0.0, 0.05);
        }
        if churny {
            plan.churn = uniform(&mut rng, 0.05, 0.30);
        }
        if adversarial {
            plan.loss = plan.loss.max(uniform(&mut rng, 0.0, 0.03));
            plan.dup = plan.dup.max(uniform(&mut rng, 0.02, 0.10));
            plan.reorder = plan.reorder.max(uniform(&mut rng, 0.05, 0.20));
        }
        if partitioned || adversarial {
            let start = at_fraction(duration, uniform(&mut rng, 0.15, 0.45));
            let secs = uniform(&mut rng, 10.0, PARTITION_FOR.as_secs_f64());
            plan.partition = Some(PartitionPlan {
                start,
                end: start + Duration::from_micros((secs * 1e6) as u64),
                share: uniform(&mut rng, 0.2, 0.5),
                one_way: adversarial && rng.below(2) == 1,
            });
        }
        FaultPlan::settle(plan, duration)
    }

    /// Works out `calm` and `end` from the faults.
    fn settle(mut plan: FaultPlan, duration: Duration) -> Self {
        let mut calm = Instant::ZERO;
        if plan.loss > 0.0 || plan.dup > 0.0 || plan.reorder > 0.0 {
            calm = calm.max(plan.crashes.1);
        }
        if plan.churn > 0.0 {
            calm = calm.max(plan.crashes.1 + MAX_DOWN);
        }
        if let Some(p) = &plan.partition {
            calm = calm.max(p.end);
        }
        plan.calm = calm;
        plan.end = (Instant::ZERO + duration).max(calm + plan.recovery);
        plan
    }

    /// The plan fitted to a scenario: crashes in `window` (timed to its workload) and
    /// liveness judged `recovery` after calm (time for its slowest operation to end after a
    /// retry); `calm` and `end` follow.
    pub fn fitted(
        mut self,
        window: (Instant, Instant),
        recovery: Duration,
        duration: Duration,
    ) -> Self {
        self.crashes = window;
        self.recovery = recovery;
        FaultPlan::settle(self, duration)
    }

    /// A moment in the crash window.
    pub fn crash_moment(&self, rng: &mut Rng) -> Instant {
        let (from, to) = (self.crashes.0.as_micros(), self.crashes.1.as_micros());
        Instant::from_micros(from + rng.below(to.saturating_sub(from).max(1)))
    }

    /// Whether the plan has any fault.
    pub fn is_quiet(&self) -> bool {
        self.calm == Instant::ZERO
    }

    /// The options that replay this plan with `run` when it was drawn from no profile.
    pub fn explicit_flags(&self) -> String {
        let mut flags = String::new();
        if self.loss > 0.0 {
            flags.push_str(&format!(" --loss {}", self.loss));
        }
        if self.dup > 0.0 {
            flags.push_str(&format!(" --dup {}", self.dup));
        }
        if self.churn > 0.0 {
            flags.push_str(&format!(" --churn {}", self.churn));
        }
        if self.partition.is_some() {
            flags.push_str(" --partition");
        }
        flags
    }
}

/// Crashes fall from the end of the join window to 60% of the run, unless a scenario says
/// otherwise.
pub fn crash_window(duration: Duration) -> (Instant, Instant) {
    let from = Instant::ZERO + JOIN_WINDOW;
    (from, at_fraction(duration, 0.6).max(from))
}

/// The moment a fraction `f` of a run of `duration` has passed.
pub fn at_fraction(duration: Duration, f: f64) -> Instant {
    Instant::from_micros((duration.as_micros() as f64 * f) as u64)
}

/// A draw in `[low, high)`.
fn uniform(rng: &mut Rng, low: f64, high: f64) -> f64 {
    low + (high - low) * chance(rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_late_partition_heals_inside_a_longer_run() {
        let plan = FaultPlan::explicit(
            Explicit {
                partition: true,
                ..Explicit::default()
            },
            MINUTE,
        );
        let p = plan.partition.expect("asked for");
        assert_eq!(p.end, p.start + PARTITION_FOR);
        assert!(p.end <= plan.calm && plan.calm + RECOVERY <= plan.end);
        assert!(plan.end > Instant::ZERO + MINUTE, "the run is extended");
    }

    #[test]
    fn a_quiet_plan_keeps_the_duration() {
        let plan = FaultPlan::draw(Profile::None, 7, MINUTE);
        assert!(plan.is_quiet());
        assert_eq!(plan.end, Instant::ZERO + MINUTE);
    }

    #[test]
    fn the_seed_draws_the_faults_within_the_profile() {
        let plans: Vec<FaultPlan> = (0..50)
            .map(|s| FaultPlan::draw(Profile::Mixed, s, MINUTE))
            .collect();
        assert_eq!(
            plans[3],
            FaultPlan::draw(Profile::Mixed, 3, MINUTE),
            "same seed"
        );
        assert!(plans.iter().any(|p| p.partition.is_some()));
        assert!(plans.iter().any(|p| p.partition.is_none()));
        assert!(plans.iter().any(|p| p.churn > 0.0) && plans.iter().any(|p| p.loss > 0.0));
        assert!(
            plans.iter().all(|p| !p.is_quiet()),
            "mixed always has a fault"
        );
        let lossy = FaultPlan::draw(Profile::Lossy, 1, MINUTE);
        assert!((0.01..0.10).contains(&lossy.loss) && lossy.churn == 0.0);
        let one_way = (0..50).any(|s| {
            FaultPlan::draw(Profile::Adversarial, s, MINUTE)
                .partition
                .is_some_and(|p| p.one_way)
        });
        assert!(
            one_way,
            "adversarial partitions are one-way some of the time"
        );
        for plan in &plans {
            if let Some(p) = plan.partition {
                assert!(p.start < p.end && p.end <= plan.calm && plan.calm + RECOVERY <= plan.end);
            }
        }
    }

    #[test]
    fn profiles_read_back_from_their_names() {
        for p in Profile::ALL {
            assert_eq!(p.as_str().parse::<Profile>(), Ok(p));
        }
        assert!("chaos".parse::<Profile>().unwrap_err().contains("mixed"));
    }
}
