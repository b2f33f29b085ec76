//! `connect`: nodes join through bootstrap nodes, dial a few random peers and ping them, with
//! loss, churn and a partition on request.
//!
//! The nodes' DHTs answer but do not run their join lookups (the `dht` scenario covers those).
//!
//! Node `i < bootstraps` is a bootstrap node (started without seeds, sized for its share of the
//! mesh). Every other node joins through bootstrap `i % bootstraps` at a random moment in the
//! first ten seconds, then every five seconds runs a maintenance tick: rejoin if it has no peer,
//! dial a random non-bootstrap node while it has fewer than three peers, ping a random peer.
//! Churn crashes a fraction of the nodes at random moments and restarts them 5–15 s later;
//! they must rejoin. A partition (`--partition`: the members in halves for 45 s, longer than
//! the idle timeout) breaks links across it, which must be rebuilt after it heals.

use std::collections::BTreeMap;

use macula_proto::{Duration, Event, Instant, Rng};
use serde_json::{json, Map, Value};

use super::{
    bootstrap_count, configure_nodes, crash_for_a_while, shuffle_front, tag, Params, Scenario,
    Split,
};
use crate::check::{Kind, Verdict};
use crate::faults::{FaultPlan, JOIN_WINDOW};
use crate::net::NodeIdx;
use crate::sim::{Sim, SimBuilder};

const JOIN: u64 = 1;
const TICK: u64 = 2;
const CRASH: u64 = 3;
const RESTART: u64 = 4;
const PARTITION: u64 = 5;
const HEAL: u64 = 6;

const TICK_EVERY: Duration = Duration::from_secs(5);
const TARGET_PEERS: usize = 3;

/// The `connect` scenario's state and figures.
#[derive(Debug, Default)]
pub struct Connect {
    rng: Option<Rng>,
    nodes: u32,
    bootstraps: u32,
    faults: Option<FaultPlan>,
    split: Option<Split>,
    #[cfg_attr(not(feature = "planted-bugs"), allow(dead_code))]
    plant: Option<crate::planted::Plant>,
    joined: Vec<bool>,
    /// Nodes restarted, and when; cleared for a node once it has a peer again.
    awaiting_rejoin: BTreeMap<NodeIdx, Instant>,
    restarted: u64,
    rejoined: u64,
    dials: u64,
    peer_ups: u64,
    connect_failures: u64,
    pings_sent: u64,
    pings_ok: u64,
    pings_failed: u64,
    rtts_micros: Vec<u32>,
}

/// Most RTT samples kept for percentiles.
const MAX_RTT_SAMPLES: usize = 1 << 20;

impl Connect {
    fn rng(&mut self) -> &mut Rng {
        self.rng.as_mut().expect("start() seeds the scenario")
    }

    fn is_bootstrap(&self, n: NodeIdx) -> bool {
        n < self.bootstraps
    }

    fn bootstrap_of(&self, n: NodeIdx) -> NodeIdx {
        n % self.bootstraps
    }

    fn random_member(&mut self) -> Option<NodeIdx> {
        let members = self.nodes - self.bootstraps;
        if members == 0 {
            return None;
        }
        Some(self.bootstraps + self.rng().below(u64::from(members)) as NodeIdx)
    }

    fn dial(&mut self, sim: &mut Sim, from: NodeIdx, to: NodeIdx) {
        if from != to && sim.connect(from, to).is_some() {
            self.dials += 1;
        }
    }

    fn tick(&mut self, sim: &mut Sim, n: NodeIdx) {
        let Some(node) = sim.node(n) else {
            return; // crashed: the restart schedules the next tick
        };
        let peers = node.peer_count();
        let pick = if peers > 0 {
            Some(self.rng().below(peers as u64) as usize)
        } else {
            None
        };
        let target = pick.and_then(|k| sim.node(n).and_then(|node| node.peer_ids().nth(k)));
        if peers == 0 {
            let b = self.bootstrap_of(n);
            self.dial(sim, n, b);
        } else if peers < TARGET_PEERS && sim.now() >= Instant::ZERO + JOIN_WINDOW {
            if let Some(to) = self.random_member() {
                self.dial(sim, n, to);
            }
        }
        if let Some(peer) = target {
            if let Some(Ok(_)) = sim.ping(n, peer) {
                self.pings_sent += 1;
            }
        }
        let next = sim.now() + TICK_EVERY;
        sim.schedule_for(next, n, tag(TICK, n));
    }
}

impl Scenario for Connect {
    fn configure(&mut self, builder: &mut SimBuilder, params: &Params) {
        self.nodes = params.nodes as u32;
        self.bootstraps = bootstrap_count(params.nodes);
        self.faults = Some(params.faults.clone());
        self.plant = params.plant;
        let share = (self.nodes / self.bootstraps) as usize;
        // This scenario measures links and keep-alives; the DHT's join lookups (about 180
        // queries per node) are the `dht` scenario's subject.
        configure_nodes(builder, self.bootstraps, 2 * share + 64, |config| {
            config.dht.join = false;
        });
    }

    fn start(&mut self, sim: &mut Sim) {
        self.rng = Some(Rng::from_seed(sim.derive_seed()));
        self.joined = vec![false; self.nodes as usize];
        for n in self.bootstraps..self.nodes {
            let at =
                Instant::ZERO + Duration::from_micros(self.rng().below(JOIN_WINDOW.as_micros()));
            sim.schedule_for(at, n, tag(JOIN, n));
        }
        let faults = self.faults.clone().expect("configure() comes first");
        let mut members: Vec<NodeIdx> = (self.bootstraps..self.nodes).collect();
        let crashes = (members.len() as f64 * faults.churn).round() as usize;
        shuffle_front(self.rng(), &mut members, crashes);
        for &node in members.iter().take(crashes) {
            let at = faults.crash_moment(self.rng());
            sim.schedule(at, tag(CRASH, node));
        }
        self.split = Split::plan(sim, &faults, self.bootstraps, self.nodes, (PARTITION, HEAL));
    }

    fn on_action(&mut self, sim: &mut Sim, action: u64) {
        let n = (action & 0xffff_ffff) as NodeIdx;
        match action >> 32 {
            JOIN => {
                let b = self.bootstrap_of(n);
                self.dial(sim, n, b);
                let next = sim.now() + TICK_EVERY;
                sim.schedule_for(next, n, tag(TICK, n));
            }
            TICK => self.tick(sim, n),
            CRASH if sim.is_up(n) => {
                let rng = self.rng.as_mut().expect("start() seeds the scenario");
                crash_for_a_while(sim, rng, n, tag(RESTART, n));
            }
            RESTART => {
                sim.restart(n);
                self.restarted += 1;
                self.awaiting_rejoin.insert(n, sim.now());
                #[cfg(feature = "planted-bugs")]
                if self.plant == Some(crate::planted::Plant::ForgetsRejoin) {
                    return;
                }
                let b = self.bootstrap_of(n);
                self.dial(sim, n, b);
                let next = sim.now() + TICK_EVERY;
                sim.schedule_for(next, n, tag(TICK, n));
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

    fn on_event(&mut self, _sim: &mut Sim, node: NodeIdx, event: &Event) {
        match event {
            Event::PeerUp { .. } => {
                self.peer_ups += 1;
                if !self.is_bootstrap(node) {
                    self.joined[node as usize] = true;
                }
                if self.awaiting_rejoin.remove(&node).is_some() {
                    self.rejoined += 1;
                }
            }
            Event::ConnectFailed { .. } => self.connect_failures += 1,
            Event::PingResult {
                result: Ok(rtt), ..
            } => {
                self.pings_ok += 1;
                if self.rtts_micros.len() < MAX_RTT_SAMPLES {
                    self.rtts_micros
                        .push(u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX));
                }
            }
            Event::PingResult { result: Err(_), .. } => self.pings_failed += 1,
            _ => {}
        }
    }

    fn figures(&self, sim: &Sim) -> Map<String, Value> {
        let members = (self.bootstraps..self.nodes).filter(|n| sim.is_up(*n));
        let (mut up, mut connected, mut peers_total) = (0u64, 0u64, 0u64);
        for n in members {
            up += 1;
            let peers = sim.node(n).map_or(0, |node| node.peer_count()) as u64;
            peers_total += peers;
            connected += u64::from(peers > 0);
        }
        let member_count = u64::from(self.nodes - self.bootstraps);
        let joined = self.joined.iter().filter(|j| **j).count() as u64;
        let mut rtts = self.rtts_micros.clone();
        rtts.sort_unstable();
        let pct = |p: f64| -> f64 {
            if rtts.is_empty() {
                return 0.0;
            }
            let i = ((rtts.len() - 1) as f64 * p).round() as usize;
            f64::from(rtts[i]) / 1000.0
        };
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        let mut m = Map::new();
        m.insert("bootstrap_nodes".into(), json!(self.bootstraps));
        m.insert("joined_ratio".into(), json!(ratio(joined, member_count)));
        m.insert("connected_ratio_end".into(), json!(ratio(connected, up)));
        m.insert("mean_peers".into(), json!(ratio(peers_total, up)));
        m.insert("dials".into(), json!(self.dials));
        m.insert("peer_ups".into(), json!(self.peer_ups));
        m.insert("connect_failures".into(), json!(self.connect_failures));
        m.insert("pings_sent".into(), json!(self.pings_sent));
        m.insert(
            "ping_success_ratio".into(),
            json!(ratio(self.pings_ok, self.pings_ok + self.pings_failed)),
        );
        m.insert("rtt_p50_ms".into(), json!(pct(0.5)));
        m.insert("rtt_p99_ms".into(), json!(pct(0.99)));
        m.insert("restarted".into(), json!(self.restarted));
        m.insert("rejoined".into(), json!(self.rejoined));
        m
    }

    fn verdicts(&self, sim: &Sim) -> Vec<Verdict> {
        // A restarted node has 20 s to find a peer again (its first dial needs well under one).
        let grace = Duration::from_secs(20);
        let late: Vec<_> = self
            .awaiting_rejoin
            .iter()
            .filter(|(_, at)| **at + grace <= sim.now())
            .collect();
        let mut out = vec![Verdict {
            name: "restarted_nodes_rejoin",
            kind: Kind::Liveness,
            ok: late.is_empty(),
            detail: match late.first() {
                Some((n, at)) => format!(
                    "node {n} restarted at {:.1} s and had no peer {:.0} s later ({} such nodes)",
                    at.as_micros() as f64 / 1e6,
                    grace.as_secs_f64(),
                    late.len()
                ),
                None => format!("{} restarts, {} rejoined", self.restarted, self.rejoined),
            },
        }];
        // Without faults, every member must have joined.
        let joined = self.joined.iter().filter(|j| **j).count() as u32;
        let members = self.nodes - self.bootstraps;
        let quiet = self
            .faults
            .as_ref()
            .map_or(true, |f| f.churn == 0.0 && f.partition.is_none());
        if quiet && sim.now() >= Instant::ZERO + JOIN_WINDOW + grace {
            out.push(Verdict {
                name: "every_node_joined",
                kind: Kind::Liveness,
                ok: joined == members,
                detail: format!("{joined} of {members} nodes joined"),
            });
        }
        out
    }
}
