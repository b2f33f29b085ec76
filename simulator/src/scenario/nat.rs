//! `nat`: a mesh where most nodes sit behind NAT, in a mix of kinds taken from published
//! measurements, and every node reaches a few others by their ids.
//!
//! Node 0 is the bootstrap node and the next `gateways` nodes (one per 40, at least three)
//! are gateways, all on the public side. Of the others, a fifth are on the public side too and
//! four fifths each sit behind a NAT box of their own, whose mapping follows the split the
//! NATCracker study measured (endpoint-independent 52%, address-dependent ("host-dependent")
//! 12%, address-and-port-dependent ("port-dependent") 36%). Filtering behind an
//! endpoint-independent mapping is split evenly between the three classes, and allocation
//! behind the other mappings evenly between contiguous and random: those two splits are
//! assumptions, not measurements. (Halkes and Pouwelse, "UDP NAT and Firewall Puncturing in
//! the Wild", TU Delft PDS-2010-007, found about 64% of peers behind NATs that allow punching;
//! this mix gives a similar share.)
//!
//! Every node joins through the bootstrap node in the first tenth of the run and detects its
//! NAT on its own; those that can't be dialed keep reservations at gateways and publish their
//! records. Between 40% and 50% of the run every node reaches two random others by id. The
//! scenario applies only the fault plan's link faults (it crashes and splits nothing) but keeps
//! the plan's timing. With a plan that has faults, every node dials its seeds (the bootstrap
//! node and the gateways) again at calm:
//! links that heavy loss broke are not rebuilt by the core, and a node behind NAT that lost its
//! gateways only reserves again when it meets one. 25 s later every node reaches each node it
//! reached before again (an application making sure of its links). At the end the figures
//! count, over those reaches, how many pairs are linked and on which path, and how many of the
//! pairs the decision table calls punchable ended up punched.

use std::collections::BTreeMap;

use macula_proto::nat::{decide, Allocation, Approach, Behavior, NatEvent, PathKind, ReachError};
use macula_proto::{Duration, Event, Instant, Rng, Roles};
use serde_json::{json, Map, Value};

use super::{at_fraction, random_moment, tag, Params, Scenario};
use crate::check::{Kind, Verdict};
use crate::nat::{NatBoxConfig, NatPlan};
use crate::net::NodeIdx;
use crate::sim::{Mode, Sim, SimBuilder};

const JOIN: u64 = 1;
const REACH: u64 = 2;
const RETRY: u64 = 3;
const REJOIN: u64 = 4;

/// Reaches each node makes.
const REACHES_PER_NODE: usize = 2;

/// With faults: how often records are republished.
const REPUBLISH: Duration = Duration::from_secs(20);

/// With faults: how long after they stop the reaches are made again (after the re-bootstrap
/// and a round of republishing).
const RETRY_AFTER: Duration = Duration::from_secs(25);

/// The `nat` scenario: most nodes behind NAT in a measured mix, each reaching two others by id
/// (see the module source for the mix and its sources).
#[derive(Debug, Default)]
pub struct Nat {
    nodes: u32,
    gateways: u32,
    duration: Duration,
    /// When the faults stop, if there are any.
    calm: Option<Instant>,
    rng: Option<Rng>,
    /// Each node's NAT kind, by name (`public` for none).
    kinds: Vec<&'static str>,
    /// (from, to) → the reach's outcome: `None` while under way.
    reaches: BTreeMap<(NodeIdx, NodeIdx), Option<Result<PathKind, ReachError>>>,
    /// Reach ids of each node, to match outcomes.
    ids: BTreeMap<(NodeIdx, macula_proto::nat::ReachId), NodeIdx>,
}

/// The mix: a kind for each node past the bootstrap node and the gateways.
fn draw(rng: &mut Rng) -> (&'static str, Option<NatBoxConfig>) {
    use Allocation::{Contiguous, Preserving, Random};
    use Behavior::{
        AddressAndPortDependent as Apd, AddressDependent as Ad, EndpointIndependent as Ei,
    };
    if rng.below(5) == 0 {
        return ("public", None);
    }
    let roll = rng.below(100);
    let allocation = if rng.below(2) == 0 {
        Contiguous
    } else {
        Random
    };
    match roll {
        0..=51 => match rng.below(3) {
            0 => ("full cone", Some(NatBoxConfig::new(Ei, Ei, Preserving))),
            1 => (
                "restricted cone",
                Some(NatBoxConfig::new(Ei, Ad, Preserving)),
            ),
            _ => (
                "port-restricted cone",
                Some(NatBoxConfig::new(Ei, Apd, Preserving)),
            ),
        },
        52..=63 => (
            "address-dependent",
            Some(NatBoxConfig::new(Ad, Apd, allocation)),
        ),
        _ if allocation == Contiguous => (
            "symmetric, contiguous",
            Some(NatBoxConfig::new(Apd, Apd, Contiguous)),
        ),
        _ => (
            "symmetric, random",
            Some(NatBoxConfig::new(Apd, Apd, Random)),
        ),
    }
}

impl Nat {
    fn rng(&mut self) -> &mut Rng {
        self.rng.as_mut().expect("set at start")
    }

    /// The reaches that ended with a link, and the path each pair is on at the end.
    fn linked(&self, sim: &Sim) -> Vec<((NodeIdx, NodeIdx), PathKind)> {
        self.reaches
            .keys()
            .filter_map(|&(a, b)| {
                let peer = sim.node_id(b);
                let path = sim.node(a)?.peer(&peer)?.path;
                Some(((a, b), path))
            })
            .collect()
    }

    /// Whether the decision table calls the pair punchable, from their profiles at the end.
    fn punchable(&self, sim: &Sim, a: NodeIdx, b: NodeIdx) -> bool {
        let profile = |n: NodeIdx| sim.node(n).and_then(|x| x.nat_profile());
        match (profile(a), profile(b)) {
            (Some(p), Some(q)) => matches!(decide(&p, &q), Approach::Punch { .. }),
            _ => false,
        }
    }
}

impl Scenario for Nat {
    fn configure(&mut self, builder: &mut SimBuilder, params: &Params) {
        self.nodes = params.nodes.max(20) as u32;
        self.gateways = (self.nodes / 40).max(3);
        self.duration = params.duration;
        self.calm = (!params.faults.is_quiet()).then_some(params.faults.calm);
        builder.nodes(self.nodes as usize).mode(Mode::Quic);
        let mut rng = Rng::from_seed(params.seed ^ 0x6e61_7400);
        let mut plan = NatPlan::default();
        for n in 0..self.nodes {
            let (name, kind) = if n <= self.gateways {
                ("public", None)
            } else {
                draw(&mut rng)
            };
            self.kinds.push(name);
            plan.behind.push(kind.map(|k| {
                plan.boxes.push(k);
                plan.boxes.len() - 1
            }));
        }
        builder.nat(plan);
        let gateways = self.gateways;
        let faulty = self.calm.is_some();
        builder.configure(move |n, config| {
            config.nat.detect = true;
            if faulty {
                // A record put while links were lossy may reach only some of the closest nodes,
                // which keep answering with the older one until the next republish (4 minutes
                // by default). Sooner here, so that the retry after the faults finds the newest.
                config.dht.republish_interval = REPUBLISH;
            }
            if n == 0 {
                config.roles = Roles::BOOTSTRAP;
                config.max_peers = 4_096;
                config.max_pending_handshakes = 512;
                config.max_queued_events = 16_384;
            } else if n <= gateways {
                config.nat.gateway = true;
                config.roles = Roles::GATEWAY;
                config.max_peers = 1_024;
                config.max_pending_handshakes = 256;
            }
        });
    }

    fn start(&mut self, sim: &mut Sim) {
        self.rng = Some(Rng::from_seed(sim.derive_seed()));
        let duration = self.duration;
        for n in 1..self.nodes {
            let at = random_moment(self.rng(), duration, 0.0, 0.1);
            sim.schedule_for(at, n, tag(JOIN, n));
            let at = random_moment(self.rng(), duration, 0.4, 0.5);
            sim.schedule_for(at, n, tag(REACH, n));
        }
        if let Some(calm) = self.calm {
            sim.schedule(calm, tag(REJOIN, 0));
            sim.schedule(calm + RETRY_AFTER, tag(RETRY, 0));
        }
    }

    fn on_action(&mut self, sim: &mut Sim, action: u64) {
        let n = (action & 0xffff_ffff) as NodeIdx;
        match action >> 32 {
            JOIN => {
                sim.connect(n, 0);
            }
            REACH => {
                for _ in 0..REACHES_PER_NODE {
                    let nodes = u64::from(self.nodes);
                    let to = self.rng().below(nodes) as NodeIdx;
                    if to == n || self.reaches.contains_key(&(n, to)) {
                        continue;
                    }
                    let target = sim.node_id(to);
                    if let Some(id) = sim.command(n, |node, now| node.nat_reach(target, now)) {
                        self.reaches.insert((n, to), None);
                        self.ids.insert((n, id), to);
                    }
                }
            }
            REJOIN => {
                // As a long-lived application re-bootstraps now and then, to its seeds: the
                // bootstrap node and the gateways. The core does not: links the faults broke
                // stay broken until traffic needs them, and a node behind NAT cut off from
                // every gateway it held a reservation at only reserves again when it meets
                // another gateway.
                for n in 1..self.nodes {
                    for seed in 0..=self.gateways {
                        let id = sim.node_id(seed);
                        if seed != n && sim.node(n).is_some_and(|node| node.peer(&id).is_none()) {
                            sim.connect(n, seed);
                        }
                    }
                }
            }
            RETRY => {
                // Every pair again: one whose reach failed (even if a link came up since for
                // other reasons, which may close when idle), and one whose kept link the faults
                // broke. A pair still linked is answered at once.
                let pairs: Vec<_> = self.reaches.keys().copied().collect();
                for (from, to) in pairs {
                    let target = sim.node_id(to);
                    if let Some(id) = sim.command(from, |node, now| node.nat_reach(target, now)) {
                        self.reaches.insert((from, to), None);
                        self.ids.insert((from, id), to);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_event(&mut self, _sim: &mut Sim, node: NodeIdx, event: &Event) {
        let (id, outcome) = match event {
            Event::Nat(NatEvent::Reached { id, path, .. }) => (*id, Ok(*path)),
            Event::Nat(NatEvent::Unreachable { id, why, .. }) => (*id, Err(*why)),
            _ => return,
        };
        if let Some(to) = self.ids.remove(&(node, id)) {
            self.reaches.insert((node, to), Some(outcome));
        }
    }

    fn figures(&self, sim: &Sim) -> Map<String, Value> {
        let linked = self.linked(sim);
        let total = self.reaches.len().max(1) as f64;
        let on = |k: PathKind| linked.iter().filter(|(_, p)| *p == k).count();
        let share = |k: PathKind| on(k) as f64 / linked.len().max(1) as f64;
        let punchable: Vec<_> = self
            .reaches
            .keys()
            .filter(|(a, b)| self.punchable(sim, *a, *b))
            .collect();
        // A punchable pair succeeded when it ended on a path of its own: punched, or direct
        // (a dial one of them made for other reasons got through first).
        let unrelayed = |a: NodeIdx, b: NodeIdx| {
            linked
                .iter()
                .any(|(pair, p)| pair == &(a, b) && *p != PathKind::Relayed)
        };
        let punched = punchable.iter().filter(|(a, b)| unrelayed(*a, *b)).count();
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for k in &self.kinds {
            *kinds.entry(k).or_default() += 1;
        }
        let failed: BTreeMap<String, usize> =
            self.reaches.values().fold(BTreeMap::new(), |mut m, o| {
                if let Some(Err(why)) = o {
                    *m.entry(format!("{why:?}")).or_default() += 1;
                }
                m
            });
        let detected = (0..self.nodes)
            .filter(|n| sim.node(*n).is_some_and(|x| x.nat_profile().is_some()))
            .count();
        // A few of the reaches that ended without a link, to look into.
        let unlinked: Vec<Value> = self
            .reaches
            .iter()
            .filter(|(pair, _)| !linked.iter().any(|(p, _)| p == *pair))
            .take(10)
            .map(|((a, b), outcome)| {
                json!({
                    "from": a, "to": b,
                    "from_kind": self.kinds[*a as usize], "to_kind": self.kinds[*b as usize],
                    "outcome": format!("{outcome:?}"),
                })
            })
            .collect();
        let unpunched: Vec<Value> = punchable
            .iter()
            .filter(|(a, b)| !unrelayed(*a, *b))
            .take(10)
            .map(|(a, b)| {
                let path = linked
                    .iter()
                    .find(|(pair, _)| pair == &(*a, *b))
                    .map(|(_, p)| *p);
                json!({
                    "from": a, "to": b,
                    "from_kind": self.kinds[*a as usize], "to_kind": self.kinds[*b as usize],
                    "path": format!("{path:?}"),
                })
            })
            .collect();
        let mut m = Map::new();
        m.insert("unlinked".into(), json!(unlinked));
        m.insert("punchable_not_punched".into(), json!(unpunched));
        m.insert("gateways".into(), json!(self.gateways));
        m.insert("kinds".into(), json!(kinds));
        m.insert("detected".into(), json!(detected));
        m.insert("reaches".into(), json!(self.reaches.len()));
        m.insert("reach_failures".into(), json!(failed));
        m.insert("connected_ratio".into(), json!(linked.len() as f64 / total));
        m.insert("direct_ratio".into(), json!(share(PathKind::Direct)));
        m.insert("punched_ratio".into(), json!(share(PathKind::Punched)));
        m.insert("relayed_ratio".into(), json!(share(PathKind::Relayed)));
        m.insert("punchable_pairs".into(), json!(punchable.len()));
        m.insert(
            "punch_success_ratio".into(),
            json!(punched as f64 / punchable.len().max(1) as f64),
        );
        m
    }

    fn recovery(&self) -> Duration {
        // The retry after calm, then a reach's own timeout (30 s), and slack.
        RETRY_AFTER + Duration::from_secs(40)
    }

    fn verdicts(&self, sim: &Sim) -> Vec<Verdict> {
        let linked = self.linked(sim).len();
        let done = sim.now() >= at_fraction(self.duration, 0.5) + Duration::from_secs(20);
        vec![Verdict {
            name: "every_reach_ends_linked",
            kind: Kind::Liveness,
            ok: !done || linked == self.reaches.len(),
            detail: format!(
                "{linked} of {} reaches linked at the end",
                self.reaches.len()
            ),
        }]
    }
}
