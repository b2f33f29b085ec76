//! Named scenarios and the runner that turns one into a [`Report`].

mod connect;
mod dht;
mod nat;
mod pubsub;
mod rpc;
mod trust;

use std::time::Instant as WallInstant;

use std::collections::BTreeMap;

use macula_proto::{Config, Data, Duration, Event, Instant, Rng};
use serde_json::{json, Map, Value};

use crate::check::Verdict;
pub(crate) use crate::faults::at_fraction;
use crate::faults::{FaultPlan, Profile, MAX_DOWN};
use crate::net::{LinkModel, NodeIdx};
use crate::planted::Plant;
use crate::sim::{Mode, Sim, SimBuilder, Step};

pub use connect::Connect;
pub use dht::Dht;
pub use nat::Nat;
pub use pubsub::Pubsub;
pub use rpc::Rpc;
pub use trust::Trust;

/// What a scenario run is asked to do (the CLI's options).
#[derive(Clone, Debug)]
pub struct Params {
    /// How many nodes.
    pub nodes: usize,
    /// The master seed.
    pub seed: u64,
    /// Virtual time to run for.
    pub duration: Duration,
    /// Frames or QUIC fidelity.
    pub mode: Mode,
    /// What goes wrong, and when (the run lasts until [`FaultPlan::end`], at least
    /// `duration`).
    pub faults: FaultPlan,
    /// The profile the faults were drawn from, if any (for the report and replays).
    pub profile: Option<Profile>,
    /// A planted bug (tests only: see [`Plant`]).
    pub plant: Option<Plant>,
    /// Whether the engine prefetches ([`SimBuilder::prefetch`]); `None`: by mesh size.
    pub prefetch: Option<bool>,
}

/// A scenario: sets a simulation up, reacts to its events and actions, and reports figures.
pub trait Scenario {
    /// Adjusts the builder (node configuration, link model) before the run.
    fn configure(&mut self, builder: &mut SimBuilder, params: &Params);
    /// Schedules the first actions.
    fn start(&mut self, sim: &mut Sim);
    /// An action scheduled with [`Sim::schedule`] fell due.
    fn on_action(&mut self, sim: &mut Sim, tag: u64);
    /// A node emitted an event.
    fn on_event(&mut self, sim: &mut Sim, node: NodeIdx, event: &Event);
    /// Data was read from a node's inbox (only when the scenario's
    /// [`configure`](Scenario::configure) asked the builder to read inboxes).
    fn on_data(&mut self, _sim: &mut Sim, _node: NodeIdx, _data: Data) {}
    /// The scenario's own figures.
    fn figures(&self, sim: &Sim) -> Map<String, Value>;
    /// The scenario's own invariants.
    fn verdicts(&self, sim: &Sim) -> Vec<Verdict>;
    /// When its crashes (churn) fall in a run of `duration`: by default from the end of the
    /// join window to 60% of the run.
    fn crash_window(&self, duration: Duration) -> (Instant, Instant) {
        crate::faults::crash_window(duration)
    }
    /// Whether it crashes nodes and splits the mesh as the fault plan says (by default yes);
    /// one that does not gets a plan with link faults only.
    fn takes_churn_and_partitions(&self) -> bool {
        true
    }
    /// How long after the faults stop its liveness is judged (by default 30 s,
    /// [`RECOVERY`](crate::faults::RECOVERY)).
    fn recovery(&self) -> Duration {
        crate::faults::RECOVERY
    }
}

/// The scenarios `macula-sim` knows, with a line about each.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "connect",
        "nodes join through bootstrap nodes, dial random peers, ping them; --loss, --churn, --partition",
    ),
    (
        "dht",
        "nodes join, look up random ids, put values and get them from others; --loss, --churn",
    ),
    (
        "pubsub",
        "publishers and exact, wildcard and queue-group subscribers; QoS 0 and 1; --loss, --dup, --churn, --partition",
    ),
    (
        "rpc",
        "callers and providers of five procedures; providers crash holding calls; --loss, --dup, --churn, --partition",
    ),
    (
        "nat",
        "most nodes behind NAT in a measured mix; every node reaches two others by id (QUIC mode always)",
    ),
    (
        "trust",
        "a keyed realm, intruders with a wrong key, another realm's members, an impostor at a pinned seed's address; --loss, --dup",
    ),
];

/// The scenario called `name`.
pub fn by_name(name: &str) -> Option<Box<dyn Scenario>> {
    match name {
        "connect" => Some(Box::new(Connect::default())),
        "dht" => Some(Box::new(Dht::default())),
        "pubsub" => Some(Box::new(Pubsub::default())),
        "rpc" => Some(Box::new(Rpc::default())),
        "trust" => Some(Box::new(Trust::default())),
        "nat" => Some(Box::new(Nat::default())),
        _ => None,
    }
}

/// An action's tag: its kind in the high 32 bits, the node it is for in the low ones.
fn tag(kind: u64, node: NodeIdx) -> u64 {
    kind << 32 | u64::from(node)
}

/// A random moment between fractions `from` and `to` of a run of `duration`.
fn random_moment(rng: &mut Rng, duration: Duration, from: f64, to: f64) -> Instant {
    let (a, b) = (
        at_fraction(duration, from).as_micros(),
        at_fraction(duration, to).as_micros(),
    );
    Instant::from_micros(a + rng.below((b - a).max(1)))
}

/// Crashes node `n` and schedules `restart` (an action tag) 5 to 15 s ([`MAX_DOWN`]) later.
fn crash_for_a_while(sim: &mut Sim, rng: &mut Rng, n: NodeIdx, restart: u64) {
    sim.crash(n);
    let shortest = Duration::from_secs(5);
    let spread = MAX_DOWN.saturating_sub(shortest).as_micros();
    let down = shortest + Duration::from_micros(rng.below(spread));
    let at = sim.now() + down;
    sim.schedule_for(at, n, restart);
}

/// One bootstrap node per 1,000 nodes: at least one, at most all of them.
fn bootstrap_count(nodes: usize) -> u32 {
    let nodes = u32::try_from(nodes).unwrap_or(u32::MAX);
    nodes.div_ceil(1000).max(1).min(nodes.max(1))
}

/// Makes nodes `0..bootstraps` bootstrap nodes with room for `max_peers` peers each, and
/// applies `every` to every node's configuration.
fn configure_nodes(
    builder: &mut SimBuilder,
    bootstraps: u32,
    max_peers: usize,
    every: impl Fn(&mut Config) + 'static,
) {
    builder.configure(move |n, config| {
        every(config);
        if n < bootstraps {
            config.roles = macula_proto::Roles::BOOTSTRAP;
            config.max_peers = max_peers;
            config.max_pending_handshakes = 512;
            config.max_queued_events = 16_384;
        }
    });
}

/// Moves `count` distinct random items to the front of `items` (a partial Fisher-Yates
/// shuffle).
fn shuffle_front(rng: &mut Rng, items: &mut [NodeIdx], count: usize) {
    for k in 0..count.min(items.len()) {
        let pick = k + rng.below((items.len() - k) as u64) as usize;
        items.swap(k, pick);
    }
}

/// Each node's lives: a node's life ends when it crashes and the next begins when it
/// restarts. The first life of every node begins at zero.
#[derive(Debug, Default)]
pub(crate) struct Lives {
    current: Vec<u32>,
    /// When each (node, life) began (the first lives are not listed) and ended.
    started: BTreeMap<(NodeIdx, u32), Instant>,
    ended: BTreeMap<(NodeIdx, u32), Instant>,
}

impl Lives {
    /// `nodes` nodes, each in its first life.
    pub fn new(nodes: u32) -> Self {
        Lives {
            current: vec![0; nodes as usize],
            ..Lives::default()
        }
    }

    /// Node `n`'s current life.
    pub fn life(&self, n: NodeIdx) -> u32 {
        self.current[n as usize]
    }

    /// Node `n`'s current life ended (it crashed) at `at`.
    pub fn end(&mut self, n: NodeIdx, at: Instant) {
        self.ended.insert((n, self.life(n)), at);
    }

    /// Node `n` (re)started at `at`: its next life begins.
    pub fn start(&mut self, n: NodeIdx, at: Instant) {
        self.current[n as usize] += 1;
        self.started.insert((n, self.life(n)), at);
    }

    /// When `n`'s life `life` began.
    pub fn started(&self, n: NodeIdx, life: u32) -> Instant {
        self.started
            .get(&(n, life))
            .copied()
            .unwrap_or(Instant::ZERO)
    }

    /// When `n`'s life `life` ended, if it did.
    pub fn ended(&self, n: NodeIdx, life: u32) -> Option<Instant> {
        self.ended.get(&(n, life)).copied()
    }

    /// Whether `n`'s life `life` was still up at `to`.
    pub fn up_through(&self, n: NodeIdx, life: u32, to: Instant) -> bool {
        self.ended(n, life).map_or(true, |end| end > to)
    }

    /// The life node `n` had at `at` (`None`: it was down).
    pub fn life_at(&self, n: NodeIdx, at: Instant) -> Option<u32> {
        (0..=self.life(n))
            .rev()
            .find(|&life| self.started(n, life) <= at && self.up_through(n, life, at))
    }
}

/// The partition of the fault plan: members (`bootstraps..nodes`) on the cut-off side apart
/// from everyone else, at the plan's times.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Split {
    start: Instant,
    end: Instant,
    bootstraps: NodeIdx,
    half: NodeIdx,
    nodes: NodeIdx,
    one_way: bool,
}

impl Split {
    /// Plans the partition of `faults` for `nodes` nodes (the first `bootstraps` of them
    /// bootstrap nodes), scheduling its start and end as actions `split` and `heal`; `None`
    /// when the plan has none or there are fewer than two members.
    pub fn plan(
        sim: &mut Sim,
        faults: &FaultPlan,
        bootstraps: NodeIdx,
        nodes: NodeIdx,
        (split, heal): (u64, u64),
    ) -> Option<Split> {
        let partition = faults.partition?;
        let members = nodes.saturating_sub(bootstraps);
        if members < 2 {
            return None;
        }
        let cut = ((f64::from(members) * partition.share).round() as NodeIdx).clamp(1, members - 1);
        sim.schedule(partition.start, tag(split, 0));
        sim.schedule(partition.end, tag(heal, 0));
        Some(Split {
            start: partition.start,
            end: partition.end,
            bootstraps,
            half: bootstraps + cut,
            nodes,
            one_way: partition.one_way,
        })
    }

    /// Splits the mesh (the action `split` fell due).
    pub fn apply(&self, sim: &mut Sim) {
        let a: Vec<NodeIdx> = (self.bootstraps..self.half).collect();
        let b: Vec<NodeIdx> = (0..self.bootstraps).chain(self.half..self.nodes).collect();
        sim.partition(&a, &b, self.one_way);
    }

    /// Whether `a` and `b` were on different sides at any time in `from..=to` (one way or
    /// both: either breaks a round trip).
    pub fn parted(&self, a: NodeIdx, b: NodeIdx, from: Instant, to: Instant) -> bool {
        let side = |n: NodeIdx| n >= self.bootstraps && n < self.half;
        side(a) != side(b) && from <= self.end && to >= self.start
    }
}

/// A member whose join was refused (its bootstrap node full) tries again a second later, as
/// action `join`.
fn rejoin_if_refused(sim: &mut Sim, node: NodeIdx, event: &Event, bootstraps: u32, join: u64) {
    if let Event::ConnectFailed { .. } = event {
        if node >= bootstraps && sim.node(node).is_some_and(|n| n.peer_count() == 0) {
            let at = sim.now() + Duration::from_secs(1);
            sim.schedule_for(at, node, tag(join, node));
        }
    }
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Everything as one JSON object (the fields `macula-sim run --json` prints).
    pub json: Value,
    /// Whether every invariant held.
    pub ok: bool,
    /// The invariants' verdicts.
    pub verdicts: Vec<Verdict>,
}

/// Runs scenario `name` with `params`.
///
/// # Errors
/// If no scenario has that name.
pub fn run(name: &str, params: &Params) -> Result<Report, String> {
    let mut scenario = by_name(name)
        .ok_or_else(|| format!("no scenario named '{name}' (try `macula-sim list`)"))?;
    let mut params = params.clone();
    if !scenario.takes_churn_and_partitions() {
        params.faults.churn = 0.0;
        params.faults.partition = None;
    }
    let window = scenario.crash_window(params.duration);
    let recovery = scenario.recovery();
    params.faults = params.faults.fitted(window, recovery, params.duration);
    let params = &params;
    let mut builder = SimBuilder::new();
    let faults = &params.faults;
    let link = LinkModel {
        loss: faults.loss,
        duplicate: faults.dup,
        reorder: faults.reorder,
        ..LinkModel::default()
    };
    builder
        .seed(params.seed)
        .nodes(params.nodes)
        .mode(params.mode)
        .link_model(link);
    if let Some(prefetch) = params.prefetch {
        builder.prefetch(prefetch);
    }
    scenario.configure(&mut builder, params);
    #[cfg(feature = "planted-bugs")]
    if params.plant == Some(Plant::DropsStoreAcks) {
        builder.also_configure(|_, config| config.dht.planted_drop_store_acks = true);
    }
    let wall = WallInstant::now();
    let mut sim = builder.build();
    scenario.start(&mut sim);
    let setup_secs = wall.elapsed().as_secs_f64();
    // Until the faults stop, then calm links for the recovery window and whatever is left.
    for (until, calm) in [(faults.calm, true), (faults.end, false)] {
        while let Some(step) = sim.step(until) {
            match step {
                Step::Action(tag) => scenario.on_action(&mut sim, tag),
                Step::Events(events) => {
                    for (node, event) in &events {
                        scenario.on_event(&mut sim, *node, event);
                    }
                }
            }
            for (node, data) in sim.take_data() {
                scenario.on_data(&mut sim, node, data);
            }
        }
        if calm && !faults.is_quiet() {
            sim.calm();
        }
    }
    let wall_secs = wall.elapsed().as_secs_f64();
    let run_secs = wall_secs - setup_secs;
    let mut verdicts = sim.verdicts();
    verdicts.extend(scenario.verdicts(&sim));
    let ok = verdicts.iter().all(|v| v.ok);
    let events = sim.events_processed();
    let mut json = json!({
        "scenario": name,
        "seed": params.seed,
        "nodes": params.nodes,
        "mode": params.mode.as_str(),
        "virtual_secs": (faults.end - Instant::ZERO).as_secs_f64(),
        "events": events,
        "wall_secs": wall_secs,
        "setup_secs": setup_secs,
        "events_per_sec": if run_secs > 0.0 { (events as f64 / run_secs).round() } else { 0.0 },
        "peak_rss_bytes": crate::memory::peak_rss_bytes(),
        "anon_huge_bytes": crate::memory::anon_huge_bytes(),
        "trace_digest": sim.trace_digest(),
        "invariants": verdicts.iter().map(|v| json!({"name": v.name, "kind": v.kind.as_str(), "ok": v.ok, "detail": v.detail})).collect::<Vec<_>>(),
        "faults": faults_json(params),
    });
    let net = sim.stats();
    let figures = json.as_object_mut().expect("built as an object");
    figures.insert(
        "network".into(),
        json!({
            "delivered": net.delivered, "lost": net.lost, "retransmitted": net.retransmitted,
            "partitioned": net.partitioned, "duplicated": net.duplicated,
            "crashes": net.crashes, "restarts": net.restarts, "panics": net.panics,
            "timers_due": net.timers_due, "timers_idle": net.timers_idle,
        }),
    );
    figures.extend(scenario.figures(&sim));
    Ok(Report { json, ok, verdicts })
}

/// The fault plan as the report shows it.
fn faults_json(params: &Params) -> Value {
    let f = &params.faults;
    let secs = |t: Instant| (t - Instant::ZERO).as_secs_f64();
    let partition = f.partition.map(|p| {
        json!({"start_secs": secs(p.start), "end_secs": secs(p.end), "share": p.share, "one_way": p.one_way})
    });
    json!({
        "profile": params.profile.map(Profile::as_str),
        "loss": f.loss, "dup": f.dup, "reorder": f.reorder, "churn": f.churn,
        "partition": partition,
        "calm_secs": secs(f.calm), "recovery_secs": f.recovery.as_secs_f64(),
    })
}
