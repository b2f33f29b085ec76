//! `rpc`: callers and providers of five procedures found through the DHT, with providers that
//! crash holding calls, loss, duplication and a partition on request.
//!
//! Nodes `0..b` are bootstrap nodes (one per 1,000). Of the others, one in ten serves one of
//! the procedures `svc.0` … `svc.4` and one in five calls them. A provider answers each call
//! [`HANDLER_TIME`] after it arrives, so a crash always catches some calls in its hands.
//!
//! Phases, as fractions of the run's duration `D`:
//! - `0 – 0.2 D`: members join through their bootstrap node.
//! - `0.2 D – 0.25 D`: providers register.
//! - `0.45 D – 0.85 D`: every caller calls a random procedure [`RATE`] times a second, with
//!   the default deadline (5 s) and attempts (3); in a run with faults, calls go on until the
//!   run's end, so that there are calls to judge after the faults stop.
//! - Churn crashes a fraction of the members between `0.35 D` and `0.7 D` and restarts each
//!   5–15 s later; a restarted provider registers again at once.
//! - The fault plan's partition, if any, cuts a share of the members off from everyone else.
//!
//! Safety, checked always: every call a caller's life started ends exactly once (a reply or
//! an error), no later than its deadline plus [`SLACK`]; a reply carries the call's own
//! argument back; no provider's life runs one call twice. Liveness, for the calls made
//! [`DISCOVERY`] after the faults stopped (every call when there were none): a call succeeds
//! whenever a provider of its procedure was live and reachable for the call's whole duration
//! (up, not parted from the caller, and registered [`DISCOVERY`] before the call, in a life
//! that lasted past it), and its caller had joined [`DISCOVERY`] before. The
//! `call_success_ratio` figure counts every such call, faults or not.

use std::collections::{BTreeMap, VecDeque};

use macula_proto::rpc::{CallError, CallId, CallOptions, RegisterOptions, RequestId, RpcEvent};
use macula_proto::{Data, Duration, Event, Instant, Rng};
use serde_json::{json, Map, Value};

use super::{
    at_fraction, bootstrap_count, configure_nodes, crash_for_a_while, random_moment,
    rejoin_if_refused, shuffle_front, tag, Lives, Params, Scenario, Split,
};
use crate::check::{Kind, Verdict};
use crate::faults::FaultPlan;
use crate::net::NodeIdx;
use crate::sim::{Sim, SimBuilder};

const JOIN: u64 = 1;
const REGISTER: u64 = 2;
const CALL: u64 = 3;
const CRASH: u64 = 4;
const RESTART: u64 = 5;
const PARTITION: u64 = 6;
const HEAL: u64 = 7;
const ANSWER: u64 = 8;

/// How long a provider's handler takes over a call.
pub const HANDLER_TIME: Duration = Duration::from_millis(100);

/// How long after a provider registers (or a caller joins) callers are sure to find it: its
/// announcement lands, under churn after DHT requests to nodes that left stall.
pub const DISCOVERY: Duration = Duration::from_secs(15);

/// How late after its deadline a call's outcome may come (the outcome is due at the
/// deadline exactly; this is the simulator's scheduling grain).
pub const SLACK: Duration = Duration::from_millis(1);

/// Calls per second of each caller.
const RATE: u64 = 2;

/// The procedures.
const PROCEDURES: usize = 5;

/// One call, as the scenario follows it.
#[derive(Debug)]
struct Call {
    caller: NodeIdx,
    life: u32,
    procedure: usize,
    at: Instant,
    deadline: Instant,
    /// When and how it ended.
    outcome: Option<(Instant, Result<NodeIdx, CallError>)>,
    outcomes: u32,
    attempts: u8,
}

/// The `rpc` scenario's state and figures.
#[derive(Debug, Default)]
pub struct Rpc {
    rng: Option<Rng>,
    nodes: u32,
    bootstraps: u32,
    duration: Duration,
    faults: Option<FaultPlan>,
    split: Option<Split>,
    /// Each provider's procedure.
    providers: BTreeMap<NodeIdx, usize>,
    callers: Vec<NodeIdx>,
    lives: Lives,
    /// When each (provider, life) registered.
    registered: BTreeMap<(NodeIdx, u32), Instant>,
    calls: Vec<Call>,
    /// Calls in flight: (caller, life, id) -> index.
    open: BTreeMap<(NodeIdx, u32, CallId), usize>,
    /// Requests each provider holds, in the order they arrived (each is answered
    /// `HANDLER_TIME` later, so in that order).
    holding: BTreeMap<NodeIdx, VecDeque<(u32, RequestId, Vec<u8>)>>,
    /// Runs of each call on each provider life: (provider, life, call) -> runs.
    runs: BTreeMap<(NodeIdx, u32, usize), u32>,
    refused: u64,
    violations: Vec<String>,
    strays: Vec<String>,
    restarted: u64,
    /// RPC counters of lives that ended, summed.
    ended_failovers: u64,
}

impl Rpc {
    fn rng(&mut self) -> &mut Rng {
        self.rng.as_mut().expect("start() seeds the scenario")
    }

    fn moment(&mut self, from: f64, to: f64) -> Instant {
        let duration = self.duration;
        random_moment(self.rng(), duration, from, to)
    }

    fn register(&mut self, sim: &mut Sim, n: NodeIdx) {
        let Some(&p) = self.providers.get(&n) else {
            return;
        };
        let name = format!("svc.{p}");
        let done = sim.command(n, |node, now| {
            node.rpc_register(&name, RegisterOptions::default(), now)
                .is_ok()
        });
        if done == Some(true) {
            self.registered.insert((n, self.lives.life(n)), sim.now());
        }
    }

    fn call(&mut self, sim: &mut Sim, n: NodeIdx) {
        let next = sim.now() + Duration::from_micros(1_000_000 / RATE);
        if next < self.calls_until() {
            sim.schedule_for(next, n, tag(CALL, n));
        }
        if !sim.is_up(n) {
            return;
        }
        let procedure = self.rng().below(PROCEDURES as u64) as usize;
        let index = self.calls.len();
        let name = format!("svc.{procedure}");
        let payload = (index as u64).to_le_bytes().to_vec();
        let started = sim.command(n, |node, now| {
            let timeout = node.config().rpc.timeout;
            node.rpc_call(&name, payload, CallOptions::default(), now)
                .map(|id| (id, now + timeout))
        });
        let Some(Ok((id, deadline))) = started else {
            self.refused += 1;
            return;
        };
        let life = self.lives.life(n);
        self.open.insert((n, life, id), index);
        self.calls.push(Call {
            caller: n,
            life,
            procedure,
            at: sim.now(),
            deadline,
            outcome: None,
            outcomes: 0,
            attempts: 0,
        });
    }

    fn done(
        &mut self,
        sim: &Sim,
        n: NodeIdx,
        id: CallId,
        result: &Result<macula_proto::rpc::Replied, CallError>,
    ) {
        let life = self.lives.life(n);
        let Some(&index) = self.open.get(&(n, life, id)) else {
            self.strays
                .push(format!("node {n} ended call {id:?}, which it never made"));
            return;
        };
        let now = sim.now();
        let call = &mut self.calls[index];
        call.outcomes += 1;
        if call.outcomes > 1 {
            self.violations.push(format!(
                "call {index} of node {n} ended {} times",
                call.outcomes
            ));
        }
        if now > call.deadline + SLACK {
            self.violations.push(format!(
                "call {index} of node {n} ended {} µs after its deadline",
                (now - call.deadline).as_micros()
            ));
        }
        let outcome = match result {
            Ok(replied) => {
                call.attempts = replied.attempts;
                if replied.payload != (index as u64).to_le_bytes() {
                    self.violations
                        .push(format!("call {index} got another call's reply"));
                }
                let from = (0..self.nodes).find(|m| sim.node_id(*m) == replied.from);
                Ok(from.unwrap_or(u32::MAX))
            }
            Err(e) => Err(e.clone()),
        };
        call.outcome = Some((now, outcome));
        self.open.remove(&(n, life, id));
    }

    /// A provider's handler receives a call: it answers `HANDLER_TIME` later.
    fn received(&mut self, sim: &mut Sim, n: NodeIdx, request: macula_proto::rpc::Request) {
        let index = request
            .payload
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .map(|i| i as usize)
            .filter(|i| *i < self.calls.len());
        let Some(index) = index else {
            self.strays
                .push(format!("node {n} got a call the scenario never made"));
            return;
        };
        let life = self.lives.life(n);
        let runs = self.runs.entry((n, life, index)).or_insert(0);
        *runs += 1;
        let expected = format!("svc.{}", self.calls[index].procedure);
        if *request.procedure != *expected || !self.providers.contains_key(&n) {
            self.strays.push(format!(
                "node {n} got call {index} for {}, which it does not serve",
                request.procedure
            ));
        }
        self.holding
            .entry(n)
            .or_default()
            .push_back((life, request.id, request.payload));
        sim.schedule_for(sim.now() + HANDLER_TIME, n, tag(ANSWER, n));
    }

    fn answer(&mut self, sim: &mut Sim, n: NodeIdx) {
        let Some((life, request, payload)) = self.holding.get_mut(&n).and_then(VecDeque::pop_front)
        else {
            return;
        };
        if life != self.lives.life(n) || !sim.is_up(n) {
            return;
        }
        // A request that stopped waiting (cancelled, or past its deadline) is `Gone`: fine.
        let _ = sim.command(n, |node, now| node.rpc_reply(request, payload, now));
    }

    /// When callers stop calling: at 85% of the run, or with faults until the run's end, to
    /// leave calls after them (each ends by its deadline, and a second's slack, before the run
    /// does).
    fn calls_until(&self) -> Instant {
        let usual = at_fraction(self.duration, 0.85);
        let last = macula_proto::rpc::RpcConfig::default().timeout + Duration::from_secs(1);
        match &self.faults {
            Some(f) if !f.is_quiet() => usual.max(Instant::from_micros(
                f.end.as_micros().saturating_sub(last.as_micros()),
            )),
            _ => usual,
        }
    }

    /// The calls liveness is judged on: those made from here on.
    fn judged_from(&self) -> Instant {
        match &self.faults {
            Some(f) if !f.is_quiet() => f.calm + DISCOVERY,
            _ => Instant::ZERO,
        }
    }

    /// Whether `a` and `b` were on different sides of the partition at any time in
    /// `from..=to`.
    fn parted(&self, a: NodeIdx, b: NodeIdx, from: Instant, to: Instant) -> bool {
        self.split.is_some_and(|s| s.parted(a, b, from, to))
    }

    /// Whether call `c` had a provider live and reachable for its whole duration.
    fn had_a_provider(&self, c: &Call) -> bool {
        let joined = self.lives.started(c.caller, c.life) + DISCOVERY <= c.at;
        joined
            && self.providers.iter().any(|(&p, &procedure)| {
                procedure == c.procedure
                    && self.lives.life_at(p, c.at).is_some_and(|life| {
                        self.registered
                            .get(&(p, life))
                            .is_some_and(|t| *t + DISCOVERY <= c.at)
                            && self.lives.up_through(p, life, c.deadline)
                    })
                    && !self.parted(c.caller, p, c.at, c.deadline)
            })
    }

    /// Of the calls made from `since`: (those whose caller stayed up to their end, of those
    /// the eligible ones, and of those the ones that succeeded; the first eligible failure).
    fn tally(&self, sim: &Sim, since: Instant) -> (u64, u64, u64, Option<String>) {
        let end = sim.now();
        let (mut judged, mut eligible, mut ok, mut first) = (0, 0, 0, None);
        for (index, c) in self.calls.iter().enumerate() {
            if c.at < since
                || c.deadline + SLACK > end
                || !self.lives.up_through(c.caller, c.life, c.deadline)
            {
                continue;
            }
            judged += 1;
            if !self.had_a_provider(c) {
                continue;
            }
            eligible += 1;
            match &c.outcome {
                Some((_, Ok(_))) => ok += 1,
                other if first.is_none() => {
                    first = Some(format!(
                        "call {index} of node {} to svc.{} at {:.3} s: {other:?}",
                        c.caller,
                        c.procedure,
                        c.at.as_micros() as f64 / 1e6
                    ));
                }
                _ => {}
            }
        }
        (judged, eligible, ok, first)
    }
}

impl Scenario for Rpc {
    fn configure(&mut self, builder: &mut SimBuilder, params: &Params) {
        self.nodes = params.nodes as u32;
        self.bootstraps = bootstrap_count(params.nodes);
        self.duration = params.duration;
        self.faults = Some(params.faults.clone());
        let share = (self.nodes / self.bootstraps) as usize;
        configure_nodes(builder, self.bootstraps, 4 * share + 512, |_| {});
        builder.read_inboxes(true);
    }

    fn start(&mut self, sim: &mut Sim) {
        self.rng = Some(Rng::from_seed(sim.derive_seed()));
        self.lives = Lives::new(self.nodes);
        for b in 1..self.bootstraps {
            for earlier in 0..b {
                sim.connect(b, earlier);
            }
        }
        let mut members: Vec<NodeIdx> = (self.bootstraps..self.nodes).collect();
        for &n in &members {
            let at = self.moment(0.0, 0.2);
            sim.schedule_for(at, n, tag(JOIN, n));
        }
        let count = members.len();
        let providers = count.div_ceil(10);
        let callers = count.div_ceil(5).min(count - providers);
        shuffle_front(self.rng(), &mut members, providers + callers);
        for (i, &n) in members.iter().take(providers).enumerate() {
            self.providers.insert(n, i % PROCEDURES);
            let at = self.moment(0.2, 0.25);
            sim.schedule_for(at, n, tag(REGISTER, n));
        }
        for &n in members.iter().skip(providers).take(callers) {
            self.callers.push(n);
            let at = self.moment(0.45, 0.46);
            sim.schedule_for(at, n, tag(CALL, n));
        }
        let faults = self.faults.clone().expect("configure() comes first");
        let crashes = (count as f64 * faults.churn).round() as usize;
        shuffle_front(self.rng(), &mut members, crashes);
        for &n in members.iter().take(crashes) {
            let at = faults.crash_moment(self.rng());
            sim.schedule(at, tag(CRASH, n));
        }
        let (bootstraps, nodes) = (self.bootstraps, self.nodes);
        self.split = Split::plan(sim, &faults, bootstraps, nodes, (PARTITION, HEAL));
    }

    fn on_action(&mut self, sim: &mut Sim, action: u64) {
        let n = (action & 0xffff_ffff) as NodeIdx;
        match action >> 32 {
            JOIN => {
                let b = n % self.bootstraps;
                sim.connect(n, b);
            }
            REGISTER => self.register(sim, n),
            CALL => self.call(sim, n),
            ANSWER => self.answer(sim, n),
            CRASH if sim.is_up(n) => {
                if let Some(node) = sim.node(n) {
                    self.ended_failovers += node.rpc_stats().failovers;
                }
                let life = self.lives.life(n);
                self.open.retain(|(c, l, _), _| (*c, *l) != (n, life));
                self.holding.remove(&n);
                self.lives.end(n, sim.now());
                let rng = self.rng.as_mut().expect("start() seeds the scenario");
                crash_for_a_while(sim, rng, n, tag(RESTART, n));
            }
            RESTART => {
                sim.restart(n);
                self.restarted += 1;
                self.lives.start(n, sim.now());
                sim.connect(n, n % self.bootstraps);
                self.register(sim, n);
            }
            PARTITION => {
                if let Some(split) = self.split {
                    split.apply(sim);
                }
            }
            HEAL => sim.heal(),
            _ => {}
        }
    }

    fn on_event(&mut self, sim: &mut Sim, node: NodeIdx, event: &Event) {
        if let Event::Rpc(RpcEvent::Done { id, result }) = event {
            self.done(sim, node, *id, result);
        }
        rejoin_if_refused(sim, node, event, self.bootstraps, JOIN);
    }

    fn on_data(&mut self, sim: &mut Sim, node: NodeIdx, data: Data) {
        if let Data::Request(request) = data {
            self.received(sim, node, request);
        }
    }

    fn figures(&self, sim: &Sim) -> Map<String, Value> {
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        let (judged, eligible, ok, _) = self.tally(sim, Instant::ZERO);
        let mut latencies: Vec<u64> = self
            .calls
            .iter()
            .filter_map(|c| match &c.outcome {
                Some((at, Ok(_))) => Some((*at - c.at).as_micros()),
                _ => None,
            })
            .collect();
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
                .map_or(0.0, |us| *us as f64 / 1000.0)
        };
        let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
        for c in &self.calls {
            if let Some((_, Err(e))) = &c.outcome {
                *errors.entry(e.code()).or_insert(0) += 1;
            }
        }
        let mut failovers = self.ended_failovers;
        for n in 0..self.nodes {
            if let Some(node) = sim.node(n) {
                failovers += node.rpc_stats().failovers;
            }
        }
        let duplicates: u64 = self.runs.values().map(|r| u64::from(r - 1)).sum();
        let mut m = Map::new();
        m.insert("bootstrap_nodes".into(), json!(self.bootstraps));
        m.insert("providers".into(), json!(self.providers.len()));
        m.insert("callers".into(), json!(self.callers.len()));
        m.insert("calls".into(), json!(self.calls.len()));
        m.insert("calls_refused".into(), json!(self.refused));
        m.insert("calls_judged".into(), json!(judged));
        m.insert("calls_eligible".into(), json!(eligible));
        m.insert("calls_succeeded".into(), json!(ok));
        m.insert("call_success_ratio".into(), json!(ratio(ok, eligible)));
        let end = sim.now();
        let replied = self
            .calls
            .iter()
            .filter(|c| c.deadline + SLACK <= end)
            .filter(|c| self.lives.up_through(c.caller, c.life, c.deadline))
            .filter(|c| matches!(c.outcome, Some((_, Ok(_)))))
            .count() as u64;
        // Every call whose caller stayed up, with a provider or not.
        m.insert("replied_ratio_all".into(), json!(ratio(replied, judged)));
        m.insert("errors".into(), json!(errors));
        m.insert("failovers".into(), json!(failovers));
        m.insert("latency_p50_ms".into(), json!(pct(0.5)));
        m.insert("latency_p99_ms".into(), json!(pct(0.99)));
        m.insert("duplicate_executions".into(), json!(duplicates));
        m.insert("restarted".into(), json!(self.restarted));
        m
    }

    fn crash_window(&self, duration: Duration) -> (Instant, Instant) {
        // Providers crash holding calls (made at 45% of the run).
        (at_fraction(duration, 0.35), at_fraction(duration, 0.7))
    }

    fn verdicts(&self, sim: &Sim) -> Vec<Verdict> {
        let first = |list: &[String], what: &str| match list.first() {
            Some(e) => format!("{e} ({} such)", list.len()),
            None => what.to_owned(),
        };
        let end = sim.now();
        let unended = self
            .calls
            .iter()
            .enumerate()
            .find(|(_, c)| {
                c.outcome.is_none()
                    && c.deadline + SLACK <= end
                    && self.lives.up_through(c.caller, c.life, c.deadline + SLACK)
            })
            .map(|(i, c)| format!("call {i} of node {} never ended", c.caller));
        let twice: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, r)| **r > 1)
            .map(|((p, life, call), r)| format!("node {p} (life {life}) ran call {call} {r} times"))
            .collect();
        let (_, eligible, ok, first_failure) = self.tally(sim, self.judged_from());
        let mut bounded = None;
        for n in 0..self.nodes {
            let Some(node) = sim.node(n) else { continue };
            let config = &node.config().rpc;
            let rpc = node.rpc();
            if rpc.calls() > config.max_calls
                || rpc.remembered() > config.max_remembered
                || rpc.registrations() > config.max_registrations
                || rpc.providers().len() > config.max_procedures
            {
                bounded = Some(format!("node {n}: an RPC bound is exceeded"));
                break;
            }
        }
        let mut violations = self.violations.clone();
        violations.extend(unended);
        vec![
            Verdict {
                name: "rpc_each_call_ends_once_in_time",
                kind: Kind::Safety,
                ok: violations.is_empty(),
                detail: first(
                    &violations,
                    "every call ended once, by its deadline, with its own reply",
                ),
            },
            Verdict {
                name: "rpc_no_duplicate_execution",
                kind: Kind::Safety,
                ok: twice.is_empty(),
                detail: first(&twice, "no provider life ran a call twice"),
            },
            Verdict {
                name: "rpc_no_strays",
                kind: Kind::Safety,
                ok: self.strays.is_empty(),
                detail: first(
                    &self.strays,
                    "every call and outcome was the scenario's own",
                ),
            },
            Verdict {
                name: "rpc_succeeds_with_a_live_provider",
                kind: Kind::Liveness,
                ok: ok == eligible,
                detail: first_failure.unwrap_or_else(|| {
                    format!("{eligible} calls with a live, reachable provider all succeeded")
                }),
            },
            Verdict {
                name: "rpc_bounded",
                kind: Kind::Safety,
                ok: bounded.is_none(),
                detail: bounded
                    .unwrap_or_else(|| "every live node's RPC state within its bounds".into()),
            },
        ]
    }
}
