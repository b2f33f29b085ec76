//! `dht`: nodes join through bootstrap nodes, then look up random ids, put values and get them
//! back from other nodes; with loss and churn on request.
//!
//! Phases, as fractions of the run's duration `D`:
//! - At `0`, the bootstrap nodes connect to each other.
//! - A member whose join dial fails (its bootstrap node is full) tries again a second later.
//! - `0 – 0.25 D`: every member joins through bootstrap `i % bootstraps` (one per 1,000 nodes)
//!   at a random moment; its DHT then looks up its own id and fills its table.
//! - `0.35 D – 0.85 D`: every member looks up one random id. The lookup succeeds if the live
//!   node closest to that id (by brute force over every node that has been up for 10 s) is
//!   among the nodes it returns.
//! - `0.35 D – 0.5 D`: one member in ten puts a value under its own name; under faults, it puts
//!   it again 10 to 15 s after they stop.
//! - `0.6 D – 0.9 D`: every member gets one of the values whose put was acknowledged. The get
//!   succeeds if it returns the value from its publisher.
//! - Churn crashes a fraction of the members between `0.3 D` and `0.8 D`, and restarts each
//!   5–15 s later; a restarted node rejoins through its bootstrap node with an empty DHT.
//!
//! Every `0.1 D` and at the end, every live node's routing table and record store are checked
//! for well-formedness and bounds.

use std::collections::BTreeMap;

use macula_proto::dht::{DhtEvent, OpId};
use macula_proto::{Duration, Event, Instant, NodeId, Rng};
use serde_json::{json, Map, Value};

use super::{
    at_fraction, bootstrap_count, configure_nodes, crash_for_a_while, random_moment, shuffle_front,
    tag, Params, Scenario,
};
use crate::check::{Kind, Verdict};
use crate::faults::FaultPlan;
use crate::net::NodeIdx;
use crate::sim::{Sim, SimBuilder};

const JOIN: u64 = 1;
const LOOKUP: u64 = 2;
const PUT: u64 = 3;
const GET: u64 = 4;
const CRASH: u64 = 5;
const RESTART: u64 = 6;
const SWEEP: u64 = 7;

/// A node counts as live for the lookup check once it has been up this long.
const SETTLED: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum Pending {
    Lookup { target: NodeId },
    Put { put: usize },
    Get { put: usize },
}

#[derive(Debug)]
struct Put {
    node: NodeIdx,
    name: Vec<u8>,
    value: Vec<u8>,
    stored: bool,
    /// When it was made, and how many nodes acknowledged it.
    at: Instant,
    acks: Option<usize>,
}

/// The `dht` scenario's state and figures.
#[derive(Debug, Default)]
pub struct Dht {
    rng: Option<Rng>,
    nodes: u32,
    bootstraps: u32,
    duration: Duration,
    faults: Option<FaultPlan>,
    up_since: Vec<Instant>,
    /// Whether each member has a peer since it (re)started; one whose join dial fails retries.
    joined: Vec<bool>,
    join_retries: u64,
    pending: BTreeMap<(NodeIdx, OpId), (Instant, Pending)>,
    puts: Vec<Put>,
    lookups: u64,
    lookups_ok: u64,
    lookups_exact: u64,
    lookups_failed: u64,
    hops: Vec<u8>,
    queries: Vec<u32>,
    lookup_micros: Vec<u64>,
    gets: u64,
    gets_ok: u64,
    gets_skipped: u64,
    restarted: u64,
    sweeps: u64,
    first_malformed: Option<String>,
}

impl Dht {
    fn rng(&mut self) -> &mut Rng {
        self.rng.as_mut().expect("start() seeds the scenario")
    }

    fn bootstrap_of(&self, n: NodeIdx) -> NodeIdx {
        n % self.bootstraps
    }

    fn random_moment(&mut self, from: f64, to: f64) -> Instant {
        let duration = self.duration;
        random_moment(self.rng(), duration, from, to)
    }

    /// The live node closest to `target`, other than `asker`.
    fn true_closest(&self, sim: &Sim, target: &NodeId, asker: NodeIdx) -> Option<NodeId> {
        let now = sim.now();
        (0..self.nodes)
            .filter(|n| *n != asker && sim.is_up(*n))
            .filter(|n| self.up_since[*n as usize] + SETTLED <= now)
            .map(|n| sim.node_id(n))
            .min_by_key(|id| id.distance(target))
    }

    fn start_lookup(&mut self, sim: &mut Sim, n: NodeIdx) {
        let mut target = [0u8; 32];
        self.rng().fill(&mut target);
        let target = NodeId(target);
        if let Some(op) = sim.command(n, |node, now| node.dht_find_node(&target, now)) {
            self.pending
                .insert((n, op), (sim.now(), Pending::Lookup { target }));
        }
    }

    fn start_put(&mut self, sim: &mut Sim, n: NodeIdx) {
        let name = format!("node-{n}").into_bytes();
        let value = format!("a value put by node {n} at {} us", sim.now().as_micros()).into_bytes();
        let put = self.puts.len();
        let (k, v) = (name.clone(), value.clone());
        if let Some(op) = sim.command(n, |node, now| node.dht_put(&k, v, now)) {
            self.puts.push(Put {
                node: n,
                name,
                value,
                stored: false,
                at: sim.now(),
                acks: None,
            });
            self.pending
                .insert((n, op), (sim.now(), Pending::Put { put }));
        }
    }

    fn start_get(&mut self, sim: &mut Sim, n: NodeIdx) {
        let stored: Vec<usize> = (0..self.puts.len())
            .filter(|p| self.puts[*p].stored && self.puts[*p].node != n)
            .collect();
        if stored.is_empty() {
            self.gets_skipped += 1;
            return;
        }
        let put = stored[self.rng().below(stored.len() as u64) as usize];
        let name = self.puts[put].name.clone();
        if let Some(op) = sim.command(n, |node, now| node.dht_get(&name, now)) {
            self.pending
                .insert((n, op), (sim.now(), Pending::Get { put }));
        }
    }

    fn sweep(&mut self, sim: &Sim) {
        self.sweeps += 1;
        if self.first_malformed.is_some() {
            return;
        }
        for n in 0..self.nodes {
            let Some(node) = sim.node(n) else { continue };
            let dht = node.dht();
            let verdict = dht
                .table()
                .check()
                .map_err(|e| format!("routing table: {e}"))
                .and_then(|()| dht.store().check().map_err(|e| format!("store: {e}")));
            if let Err(e) = verdict {
                self.first_malformed = Some(format!(
                    "node {n} at {:.3} s: {e}",
                    sim.now().as_micros() as f64 / 1e6
                ));
                return;
            }
        }
    }

    fn finished(&mut self, sim: &Sim, n: NodeIdx, event: &DhtEvent) {
        let Some((_, pending)) = self.pending.remove(&(n, event.op())) else {
            return; // an operation of a node's previous life, or not the scenario's
        };
        match (pending, event) {
            (
                Pending::Lookup { target },
                DhtEvent::NodesFound {
                    closest,
                    hops,
                    queries,
                    elapsed,
                    ..
                },
            ) => {
                self.lookups += 1;
                let truth = self.true_closest(sim, &target, n);
                let found = |id: &NodeId| closest.iter().any(|(c, _)| c == id);
                if truth.as_ref().map_or(true, found) {
                    self.lookups_ok += 1;
                }
                if truth.is_none() || closest.first().map(|(c, _)| *c) == truth {
                    self.lookups_exact += 1;
                }
                self.hops.push(*hops);
                self.queries.push(*queries);
                self.lookup_micros.push(elapsed.as_micros());
            }
            (Pending::Lookup { .. }, _) => {
                self.lookups += 1;
                self.lookups_failed += 1;
            }
            (Pending::Put { put }, DhtEvent::Stored { acks, .. }) => {
                self.puts[put].stored = *acks > 0;
                self.puts[put].acks = Some(*acks);
            }
            (Pending::Put { .. }, _) => {}
            (Pending::Get { put }, DhtEvent::Got { records, .. }) => {
                self.gets += 1;
                let want = &self.puts[put];
                let publisher = sim.node_id(want.node);
                if records
                    .iter()
                    .any(|r| r.publisher == publisher && r.value == want.value)
                {
                    self.gets_ok += 1;
                }
            }
            (Pending::Get { .. }, _) => self.gets += 1,
        }
    }
}

impl Dht {
    /// Of the puts made with no fault in force (none after the faults stopped are judged
    /// before [`SETTLED`] has passed), in a mesh of more than twice `k` nodes: how many there
    /// were, and the first that fewer than `k` nodes acknowledged. Every live node answers a
    /// store, so with nothing lost and nobody down each of the `k` closest acknowledges.
    fn puts_short_of_k(&self) -> (usize, Option<String>) {
        let k = macula_proto::dht::DhtConfig::default().k;
        if (self.nodes as usize) <= 2 * k {
            return (0, None);
        }
        let from = match &self.faults {
            Some(f) if !f.is_quiet() => f.calm + SETTLED,
            _ => Instant::ZERO,
        };
        let judged: Vec<&Put> = self
            .puts
            .iter()
            .filter(|p| p.at >= from && p.acks.is_some())
            .collect();
        let short = judged.iter().find(|p| p.acks < Some(k)).map(|p| {
            format!(
                "node {}'s put at {:.3} s was acknowledged by {} nodes, not k = {k}",
                p.node,
                p.at.as_micros() as f64 / 1e6,
                p.acks.unwrap_or(0)
            )
        });
        (judged.len(), short)
    }
}

impl Scenario for Dht {
    fn configure(&mut self, builder: &mut SimBuilder, params: &Params) {
        self.nodes = params.nodes as u32;
        self.bootstraps = bootstrap_count(params.nodes);
        self.duration = params.duration;
        self.faults = Some(params.faults.clone());
        let share = (self.nodes / self.bootstraps) as usize;
        configure_nodes(builder, self.bootstraps, 4 * share + 512, |_| {});
    }

    fn start(&mut self, sim: &mut Sim) {
        self.rng = Some(Rng::from_seed(sim.derive_seed()));
        self.up_since = vec![Instant::ZERO; self.nodes as usize];
        self.joined = vec![false; self.nodes as usize];
        // The bootstrap nodes know each other, or each would seed a DHT of its own.
        for b in 1..self.bootstraps {
            for earlier in 0..b {
                sim.connect(b, earlier);
            }
        }
        let members: Vec<NodeIdx> = (self.bootstraps..self.nodes).collect();
        for &n in &members {
            let join = self.random_moment(0.0, 0.25);
            sim.schedule_for(join, n, tag(JOIN, n));
            let lookup = self.random_moment(0.35, 0.85);
            sim.schedule_for(lookup, n, tag(LOOKUP, n));
            let get = self.random_moment(0.6, 0.9);
            sim.schedule_for(get, n, tag(GET, n));
        }
        let mut shuffled = members.clone();
        let putters = members.len().div_ceil(10);
        let faults = self.faults.clone().expect("configure() comes first");
        let crashes = (members.len() as f64 * faults.churn).round() as usize;
        shuffle_front(self.rng(), &mut shuffled, putters);
        for &n in shuffled.iter().take(putters) {
            let at = self.random_moment(0.35, 0.5);
            sim.schedule_for(at, n, tag(PUT, n));
            if !faults.is_quiet() {
                // Again once the faults have stopped, for the liveness check to judge.
                let later = Duration::from_micros(self.rng().below(5_000_000));
                sim.schedule_for(faults.calm + SETTLED + later, n, tag(PUT, n));
            }
        }
        // The crashing nodes are a second draw, so putters crash as often as anyone.
        shuffle_front(self.rng(), &mut shuffled, crashes);
        for &n in shuffled.iter().take(crashes) {
            let at = faults.crash_moment(self.rng());
            sim.schedule(at, tag(CRASH, n));
        }
        for step in 1..10 {
            let at = at_fraction(self.duration, f64::from(step) / 10.0);
            sim.schedule(at, tag(SWEEP, 0));
        }
    }

    fn on_action(&mut self, sim: &mut Sim, action: u64) {
        let n = (action & 0xffff_ffff) as NodeIdx;
        match action >> 32 {
            JOIN => {
                let b = self.bootstrap_of(n);
                sim.connect(n, b);
            }
            LOOKUP => self.start_lookup(sim, n),
            PUT => self.start_put(sim, n),
            GET => self.start_get(sim, n),
            CRASH if sim.is_up(n) => {
                let rng = self.rng.as_mut().expect("start() seeds the scenario");
                crash_for_a_while(sim, rng, n, tag(RESTART, n));
                self.pending.retain(|(node, _), _| *node != n);
            }
            RESTART => {
                sim.restart(n);
                self.restarted += 1;
                self.up_since[n as usize] = sim.now();
                self.joined[n as usize] = false;
                let b = self.bootstrap_of(n);
                sim.connect(n, b);
            }
            SWEEP => self.sweep(sim),
            _ => {}
        }
    }

    fn on_event(&mut self, sim: &mut Sim, node: NodeIdx, event: &Event) {
        match event {
            Event::Dht(e) => self.finished(sim, node, e),
            Event::PeerUp { .. } => self.joined[node as usize] = true,
            // A join refused (its bootstrap node full) is tried again a second later, as a
            // node's operator would have it.
            Event::ConnectFailed { .. }
                if node >= self.bootstraps && !self.joined[node as usize] =>
            {
                self.join_retries += 1;
                let at = sim.now() + Duration::from_secs(1);
                sim.schedule_for(at, node, tag(JOIN, node));
            }
            _ => {}
        }
    }

    fn figures(&self, sim: &Sim) -> Map<String, Value> {
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        let mut table_bytes = Vec::new();
        let mut contacts = 0u64;
        let (mut requests, mut rate_limited, mut refused, mut dropped, mut evictions) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        let (mut failed, mut connect_failures) = (0u64, 0u64);
        let (mut quic_refused, mut quic_retries, mut tls_failures) = (0u64, 0u64, 0u64);
        for n in 0..self.nodes {
            let Some(node) = sim.node(n) else { continue };
            let dht = node.dht();
            table_bytes.push(dht.table().heap_bytes() as u64);
            contacts += dht.table().len() as u64;
            requests += dht.stats().requests_sent;
            failed += dht.stats().requests_failed;
            connect_failures += node.stats().connect_failures;
            if let Some(q) = sim.quic_stats(n) {
                quic_refused += q.connections_refused;
                quic_retries += q.retries;
                tls_failures += q.tls_failures;
            }
            rate_limited += dht.stats().rate_limited;
            refused += dht.stats().stores_refused;
            dropped += node.stats().frames_undeliverable;
            evictions += node.stats().pool_evictions;
        }
        let live = table_bytes.len() as u64;
        let acks: Vec<usize> = self.puts.iter().filter_map(|p| p.acks).collect();
        let mut m = Map::new();
        m.insert("put_acks_min".into(), json!(acks.iter().min()));
        m.insert("put_acks_max".into(), json!(acks.iter().max()));
        m.insert("bootstrap_nodes".into(), json!(self.bootstraps));
        m.insert("lookups".into(), json!(self.lookups));
        m.insert("lookups_failed".into(), json!(self.lookups_failed));
        m.insert(
            "lookup_success_ratio".into(),
            json!(ratio(self.lookups_ok, self.lookups)),
        );
        m.insert(
            "lookup_exact_ratio".into(),
            json!(ratio(self.lookups_exact, self.lookups)),
        );
        m.insert("hops_median".into(), json!(percentile(&self.hops, 0.5)));
        m.insert("hops_p90".into(), json!(percentile(&self.hops, 0.9)));
        m.insert("hops_max".into(), json!(percentile(&self.hops, 1.0)));
        let mean_queries = mean(&self.queries);
        m.insert("queries_per_lookup".into(), json!(mean_queries));
        // A query is one request and (at most) one answer.
        m.insert("messages_per_lookup".into(), json!(2.0 * mean_queries));
        m.insert(
            "lookup_ms_median".into(),
            json!(percentile(&self.lookup_micros, 0.5) as f64 / 1000.0),
        );
        m.insert("puts".into(), json!(self.puts.len()));
        m.insert(
            "puts_stored".into(),
            json!(self.puts.iter().filter(|p| p.stored).count()),
        );
        m.insert("gets".into(), json!(self.gets));
        m.insert("gets_skipped".into(), json!(self.gets_skipped));
        m.insert(
            "get_success_ratio".into(),
            json!(ratio(self.gets_ok, self.gets)),
        );
        m.insert(
            "routing_table_bytes_per_node".into(),
            json!(table_bytes.iter().sum::<u64>() / live.max(1)),
        );
        m.insert(
            "routing_table_bytes_max".into(),
            json!(table_bytes.iter().max().copied().unwrap_or(0)),
        );
        m.insert(
            "routing_table_contacts_mean".into(),
            json!(ratio(contacts, live)),
        );
        m.insert("dht_requests_sent".into(), json!(requests));
        m.insert("dht_requests_failed".into(), json!(failed));
        m.insert("connect_failures".into(), json!(connect_failures));
        if sim.mode() == crate::sim::Mode::Quic {
            m.insert("quic_connections_refused".into(), json!(quic_refused));
            m.insert("quic_retries".into(), json!(quic_retries));
            m.insert("quic_tls_failures".into(), json!(tls_failures));
        }
        m.insert("dht_rate_limited".into(), json!(rate_limited));
        m.insert("dht_stores_refused".into(), json!(refused));
        m.insert("frames_undeliverable".into(), json!(dropped));
        m.insert("pool_evictions".into(), json!(evictions));
        m.insert("restarted".into(), json!(self.restarted));
        m.insert("join_retries".into(), json!(self.join_retries));
        m
    }

    fn crash_window(&self, duration: Duration) -> (Instant, Instant) {
        // Nodes crash while records are put and read back.
        (at_fraction(duration, 0.3), at_fraction(duration, 0.8))
    }

    fn verdicts(&self, sim: &Sim) -> Vec<Verdict> {
        let mut check = Dht {
            nodes: self.nodes,
            ..Dht::default()
        };
        check.sweep(sim);
        let malformed = self.first_malformed.clone().or(check.first_malformed);
        // An operation must end by its deadline (30 s by default) plus slack.
        let limit = Duration::from_secs(35);
        let overdue: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, (at, _))| *at + limit <= sim.now())
            .collect();
        let (judged, short) = self.puts_short_of_k();
        vec![
            Verdict {
                name: "dht_puts_acked_by_k",
                kind: Kind::Liveness,
                ok: short.is_none(),
                detail: short.unwrap_or_else(|| {
                    format!("{judged} puts made without faults each acknowledged by k nodes")
                }),
            },
            Verdict {
                name: "dht_tables_well_formed",
                kind: Kind::Safety,
                ok: malformed.is_none(),
                detail: malformed.unwrap_or_else(|| {
                    format!(
                        "every live node's routing table and record store, {} sweeps",
                        self.sweeps + 1
                    )
                }),
            },
            Verdict {
                name: "dht_operations_answered",
                kind: Kind::Safety,
                ok: overdue.is_empty(),
                detail: match overdue.first() {
                    Some(((n, op), (at, what))) => format!(
                        "node {n}'s {what:?} ({op:?}) started at {:.3} s has no outcome ({} such)",
                        at.as_micros() as f64 / 1e6,
                        overdue.len()
                    ),
                    None => format!(
                        "{} lookups, {} puts, {} gets answered; {} still running",
                        self.lookups,
                        self.puts.len(),
                        self.gets,
                        self.pending.len()
                    ),
                },
            },
        ]
    }
}

fn percentile<T: Copy + Ord + Default>(samples: &[T], p: f64) -> T {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn mean(samples: &[u32]) -> f64 {
    if samples.is_empty() {
        0.0
    } else {
        samples.iter().map(|q| f64::from(*q)).sum::<f64>() / samples.len() as f64
    }
}
