//! `trust`: a keyed realm A, intruders that know its name but not its key, members of
//! another realm B, and an impostor that takes over a seed's address with another key.
//!
//! Nodes 0 and 1 are realm A's seeds. Of the others, one in ten is an intruder (realm A's
//! name, a wrong key), one in ten a member of realm B (its own key; the first is B's hub), and
//! the rest are members of realm A. A members join by dialing their seed's *address* (the
//! first key seen there is pinned, as for a seed given on the command line), then keep three
//! peers by dialing random members by id. B members join their hub and once knock at seed 0.
//! Intruders knock every five seconds at seed 0 and at a random A member.
//!
//! At 40% of the run seed 1 crashes and comes back at once under another key (with realm A's
//! API key: the impostor stole the key, not the seed's identity). At 45% every A member that
//! pinned seed 1's real key dials its address again.
//!
//! Checkers: no link is ever established between nodes of different realms or with an
//! intruder (links are the only way a frame reaches a subsystem, so no frame of a realm
//! crosses to another); every intruder is refused, and the refusals the listeners counted
//! equal the refusal events they emitted (the events the audit log writes); the impostor is
//! refused by every node that had pinned the real key and asked it again; and the pins the
//! realm's members published in the DHT at seed 1's address name the real key, none the
//! impostor's (at 60% a pinner looks them up).

use std::collections::{BTreeMap, BTreeSet};

use macula_proto::trust::TrustEvent;
use macula_proto::{
    ApiKey, ConnectFailure, Direction, Duration, Event, Identity, Instant, LinkId, NodeId,
    RefuseReason, Rng,
};
use serde_json::{json, Map, Value};

use super::{at_fraction, tag, Params, Scenario};
use crate::check::{Kind, Verdict};
use crate::net::NodeIdx;
use crate::sim::{Sim, SimBuilder};

const JOIN: u64 = 1;
const TICK: u64 = 2;
const SWAP: u64 = 3;
const REDIAL: u64 = 4;
const CHECK: u64 = 5;

const TICK_EVERY: Duration = Duration::from_secs(5);
const JOIN_WINDOW: Duration = Duration::from_secs(10);
const TARGET_PEERS: usize = 3;
/// Realm A's seeds; seed 1 is taken over.
const SEEDS: NodeIdx = 2;
const TAKEN_OVER: NodeIdx = 1;

const REALM_A: &str = "io.trust.a";
const REALM_B: &str = "io.trust.b";
const KEY_A: &[u8] = b"realm-a-api-key-0123456789";
const KEY_B: &[u8] = b"realm-b-api-key-0123456789";
const WRONG_KEY: &[u8] = b"a-guess-at-realm-a-api-key";

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Seed,
    Member,
    Intruder,
    OtherRealm,
}

fn role(n: NodeIdx) -> Role {
    if n < SEEDS {
        return Role::Seed;
    }
    match (n - SEEDS) % 10 {
        0 => Role::Intruder,
        1 => Role::OtherRealm,
        _ => Role::Member,
    }
}

/// Which realm a role's links belong to: intruders belong to none (`2`).
fn realm_of(role: Role) -> u8 {
    match role {
        Role::Seed | Role::Member => 0,
        Role::OtherRealm => 1,
        Role::Intruder => 2,
    }
}

/// The `trust` scenario's state and figures.
#[derive(Debug, Default)]
pub struct Trust {
    rng: Option<Rng>,
    nodes: u32,
    duration: Duration,
    /// Realm B's hub: its first member.
    hub: Option<NodeIdx>,
    /// Every id a node has had, and the node.
    owner: BTreeMap<NodeId, NodeIdx>,
    /// Each A member's seed (it moves to seed 0 once seed 1 is refused).
    seed_of: BTreeMap<NodeIdx, NodeIdx>,
    real_key: Option<NodeId>,
    impostor: Option<NodeId>,
    /// A nodes that pinned seed 1's real key.
    pinners: BTreeSet<NodeIdx>,
    /// The dials of pinners to seed 1's address after the swap, not answered yet.
    redials: BTreeSet<(NodeIdx, LinkId)>,
    redials_made: u64,
    redials_refused: u64,
    /// Redials that failed otherwise (lost on the way, timed out).
    redials_failed: u64,
    impostor_admitted_by_pinners: u64,
    fingerprint_mismatches: u64,
    cross_realm_links: u64,
    first_cross: Option<String>,
    intruder_attempts: u64,
    intruders_admitted: u64,
    /// Refusals intruders were told of.
    refusals_seen: u64,
    /// `InboundRefused` events for a bad proof or a rate limit (what the audit log records).
    refusals_audited: u64,
    /// Such refusals of a node that is not an intruder.
    members_refused: u64,
    by_reason: BTreeMap<&'static str, u64>,
    /// Seed 1's refusal counters from its life before the swap.
    counted_before_swap: u64,
    /// The lookup of the pins published at seed 1's address, and what it found: records
    /// naming the real key, and naming another.
    check: Option<(NodeIdx, macula_proto::dht::OpId)>,
    published_real: Option<u64>,
    published_other: u64,
}

impl Trust {
    fn rng(&mut self) -> &mut Rng {
        self.rng.as_mut().expect("start() seeds the scenario")
    }

    fn random_member(&mut self) -> NodeIdx {
        let others = u64::from(self.nodes - SEEDS);
        loop {
            let n = SEEDS + self.rng().below(others) as NodeIdx;
            if role(n) == Role::Member {
                return n;
            }
        }
    }

    fn tick(&mut self, sim: &mut Sim, n: NodeIdx) {
        let peers = sim.node(n).map_or(0, |node| node.peer_count());
        match role(n) {
            Role::Member if peers == 0 => {
                let seed = self.seed_of[&n];
                sim.connect_addr(n, seed);
            }
            Role::Member if peers < TARGET_PEERS && sim.now() >= Instant::ZERO + JOIN_WINDOW => {
                let to = self.random_member();
                if to != n {
                    sim.connect(n, to);
                }
            }
            Role::Intruder => {
                let to = self.random_member();
                for target in [0, to] {
                    if sim.connect(n, target).is_some() {
                        self.intruder_attempts += 1;
                    }
                }
            }
            Role::OtherRealm if peers == 0 => {
                if let Some(hub) = self.hub.filter(|h| *h != n) {
                    sim.connect(n, hub);
                }
            }
            _ => {}
        }
        let next = sim.now() + TICK_EVERY;
        sim.schedule_for(next, n, tag(TICK, n));
    }

    fn counted_refusals(&self, sim: &Sim) -> u64 {
        let now: u64 = (0..self.nodes)
            .filter(|n| matches!(role(*n), Role::Seed | Role::Member))
            .filter_map(|n| sim.node(n))
            .map(|node| {
                let r = node.stats().refused_by_us;
                r.bad_credentials + r.rate_limited
            })
            .sum();
        now + self.counted_before_swap
    }
}

impl Scenario for Trust {
    fn configure(&mut self, builder: &mut SimBuilder, params: &Params) {
        self.nodes = params.nodes.max(SEEDS as usize + 12) as u32;
        builder.nodes(self.nodes as usize);
        self.duration = params.duration;
        let share = self.nodes as usize / 2;
        builder.configure(move |n, config| {
            config.dht.join = false;
            let (realm, key) = match role(n) {
                Role::Seed | Role::Member => (REALM_A, KEY_A),
                Role::Intruder => (REALM_A, WRONG_KEY),
                Role::OtherRealm => (REALM_B, KEY_B),
            };
            config.realm = macula_proto::Realm::new(realm).expect("a valid realm");
            config.api_key = Some(ApiKey::new(key).expect("a long enough key"));
            if role(n) == Role::Seed {
                config.roles = macula_proto::Roles::BOOTSTRAP;
                config.max_peers = share + 64;
                config.max_pending_handshakes = 512;
                config.max_queued_events = 16_384;
            }
        });
    }

    fn start(&mut self, sim: &mut Sim) {
        self.rng = Some(Rng::from_seed(sim.derive_seed()));
        for n in 0..self.nodes {
            self.owner.insert(sim.node_id(n), n);
        }
        self.real_key = Some(sim.node_id(TAKEN_OVER));
        self.hub = (SEEDS..self.nodes).find(|n| role(*n) == Role::OtherRealm);
        for n in SEEDS..self.nodes {
            if role(n) == Role::Member {
                self.seed_of.insert(n, n % SEEDS);
            }
            let at =
                Instant::ZERO + Duration::from_micros(self.rng().below(JOIN_WINDOW.as_micros()));
            sim.schedule_for(at, n, tag(JOIN, n));
        }
        sim.schedule(at_fraction(self.duration, 0.4), tag(SWAP, 0));
        sim.schedule(at_fraction(self.duration, 0.45), tag(REDIAL, 0));
        sim.schedule(at_fraction(self.duration, 0.6), tag(CHECK, 0));
    }

    fn on_action(&mut self, sim: &mut Sim, action: u64) {
        let n = (action & 0xffff_ffff) as NodeIdx;
        match action >> 32 {
            JOIN => {
                if role(n) == Role::OtherRealm {
                    // A member of another realm knocks at realm A's seed once.
                    sim.connect(n, 0);
                }
                self.tick(sim, n);
            }
            TICK => self.tick(sim, n),
            SWAP => {
                if let Some(node) = sim.node(TAKEN_OVER) {
                    let r = node.stats().refused_by_us;
                    self.counted_before_swap += r.bad_credentials + r.rate_limited;
                }
                sim.crash(TAKEN_OVER);
                let impostor = Identity::from_seed(self.rng().next_u64());
                self.impostor = Some(impostor.node_id());
                self.owner.insert(impostor.node_id(), TAKEN_OVER);
                sim.restart_as(TAKEN_OVER, impostor);
            }
            REDIAL => {
                for n in self.pinners.clone() {
                    if let Some(link) = sim.connect_addr(n, TAKEN_OVER) {
                        self.redials.insert((n, link));
                        self.redials_made += 1;
                    }
                }
            }
            CHECK => {
                // A member asks the realm which keys its members pinned at seed 1's address,
                // while the impostor answers there.
                let name = crate::net::addr_of(TAKEN_OVER).to_string();
                let asker = self.pinners.iter().next().copied();
                if let Some(asker) = asker {
                    let dht_name = macula_proto::trust::dht_name(&name);
                    let op =
                        sim.command(asker, |node, now| node.dht_find_providers(&dht_name, now));
                    self.check = op.map(|op| (asker, op));
                }
            }
            _ => {}
        }
    }

    fn on_event(&mut self, _sim: &mut Sim, node: NodeIdx, event: &Event) {
        match event {
            Event::PeerUp {
                peer,
                link,
                direction,
                ..
            } => {
                self.redials.remove(&(node, *link));
                let other = self.owner.get(peer).copied();
                let crosses = other.map_or(true, |o| {
                    let (a, b) = (role(node), role(o));
                    realm_of(a) != realm_of(b) || a == Role::Intruder
                });
                if crosses {
                    self.cross_realm_links += 1;
                    self.first_cross.get_or_insert_with(|| {
                        format!("node {node} ({:?}) and node {other:?}", role(node))
                    });
                }
                if role(node) == Role::Intruder {
                    self.intruders_admitted += 1;
                }
                if Some(*peer) == self.impostor
                    && *direction == Direction::Outbound
                    && self.pinners.contains(&node)
                {
                    self.impostor_admitted_by_pinners += 1;
                }
            }
            Event::ConnectFailed { link, failure, .. } => {
                let answered = self.redials.remove(&(node, *link));
                match failure {
                    ConnectFailure::FingerprintMismatch { .. } => {
                        self.fingerprint_mismatches += 1;
                        self.redials_refused += u64::from(answered);
                        // Its seed's address holds another key now: use the other seed.
                        if let Some(seed) = self.seed_of.get_mut(&node) {
                            *seed = 0;
                        }
                    }
                    _ if answered => self.redials_failed += 1,
                    ConnectFailure::Refused { .. } if role(node) == Role::Intruder => {
                        self.refusals_seen += 1;
                    }
                    _ => {}
                }
            }
            Event::InboundRefused { peer, reason, .. } => {
                *self.by_reason.entry(reason.as_str()).or_insert(0) += 1;
                if matches!(
                    reason,
                    RefuseReason::BadCredentials | RefuseReason::RateLimited
                ) {
                    self.refusals_audited += 1;
                    let from = self.owner.get(peer).map(|o| role(*o));
                    if from != Some(Role::Intruder) {
                        self.members_refused += 1;
                    }
                }
            }
            Event::Trust(TrustEvent::Pinned { node: key, .. }) if Some(*key) == self.real_key => {
                self.pinners.insert(node);
            }
            Event::Dht(macula_proto::dht::DhtEvent::Got { op, records })
                if self.check == Some((node, *op)) =>
            {
                let keys = records
                    .iter()
                    .filter_map(|r| macula_proto::trust::published_key(&r.value));
                let (real, other): (Vec<NodeId>, Vec<NodeId>) =
                    keys.partition(|k| Some(*k) == self.real_key);
                self.published_real = Some(real.len() as u64);
                self.published_other = other.len() as u64;
            }
            _ => {}
        }
    }

    fn figures(&self, sim: &Sim) -> Map<String, Value> {
        let count = |r: Role| (0..self.nodes).filter(|n| role(*n) == r).count();
        let mut m = Map::new();
        m.insert("realm_a_members".into(), json!(count(Role::Member)));
        m.insert("intruders".into(), json!(count(Role::Intruder)));
        m.insert("realm_b_members".into(), json!(count(Role::OtherRealm)));
        m.insert("cross_realm_links".into(), json!(self.cross_realm_links));
        m.insert("intruder_attempts".into(), json!(self.intruder_attempts));
        m.insert("intruders_admitted".into(), json!(self.intruders_admitted));
        m.insert(
            "refusals_seen_by_intruders".into(),
            json!(self.refusals_seen),
        );
        m.insert("refusals_audited".into(), json!(self.refusals_audited));
        m.insert("refusals_counted".into(), json!(self.counted_refusals(sim)));
        for reason in ["bad_credentials", "rate_limited", "wrong_realm"] {
            let n = self.by_reason.get(reason).copied().unwrap_or(0);
            m.insert(format!("refused_{reason}"), json!(n));
        }
        m.insert("pinners".into(), json!(self.pinners.len()));
        m.insert("impostor_redials".into(), json!(self.redials_made));
        m.insert("impostor_refused".into(), json!(self.redials_refused));
        m.insert("impostor_redials_failed".into(), json!(self.redials_failed));
        m.insert(
            "impostor_admitted_by_pinners".into(),
            json!(self.impostor_admitted_by_pinners),
        );
        m.insert(
            "fingerprint_mismatches".into(),
            json!(self.fingerprint_mismatches),
        );
        m.insert(
            "published_pins_real_key".into(),
            json!(self.published_real.unwrap_or(0)),
        );
        m.insert(
            "published_pins_other_key".into(),
            json!(self.published_other),
        );
        m
    }

    fn takes_churn_and_partitions(&self) -> bool {
        false
    }

    fn verdicts(&self, sim: &Sim) -> Vec<Verdict> {
        let counted = self.counted_refusals(sim);
        let swapped = sim.now() >= at_fraction(self.duration, 0.45);
        let checked = sim.now() >= at_fraction(self.duration, 0.6) + Duration::from_secs(10);
        vec![
            Verdict {
                name: "published_pins_name_the_real_key",
                kind: Kind::Safety,
                ok: self.published_other == 0
                    && (!checked || self.pinners.is_empty() || self.published_real > Some(0)),
                detail: format!(
                    "the realm published {} pins of the real key and {} of another at the impostor's address",
                    self.published_real.unwrap_or(0),
                    self.published_other
                ),
            },
            Verdict {
                name: "no_cross_realm_links",
                kind: Kind::Safety,
                ok: self.cross_realm_links == 0,
                detail: match &self.first_cross {
                    Some(first) => format!("{} links, first {first}", self.cross_realm_links),
                    None => "no link between realms or with an intruder".into(),
                },
            },
            Verdict {
                name: "intruders_refused_counted_audited",
                kind: Kind::Safety,
                ok: self.intruders_admitted == 0
                    && self.members_refused == 0
                    && self.refusals_audited == counted
                    && self.refusals_seen <= self.refusals_audited
                    && (self.intruder_attempts == 0 || self.refusals_audited > 0),
                detail: format!(
                    "{} attempts, {} admitted, {} refusals seen, {} audited, {} counted, {} of members",
                    self.intruder_attempts,
                    self.intruders_admitted,
                    self.refusals_seen,
                    self.refusals_audited,
                    counted,
                    self.members_refused
                ),
            },
            Verdict {
                name: "impostor_refused_where_pinned",
                kind: Kind::Safety,
                ok: self.impostor_admitted_by_pinners == 0
                    && (!swapped || self.pinners.is_empty() || self.redials_refused > 0),
                detail: format!(
                    "{} pinners, {} redials: {} refused, {} failed otherwise, {} unanswered; {} admitted",
                    self.pinners.len(),
                    self.redials_made,
                    self.redials_refused,
                    self.redials_failed,
                    self.redials.len(),
                    self.impostor_admitted_by_pinners
                ),
            },
        ]
    }
}
