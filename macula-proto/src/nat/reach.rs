//! Reaching a node by its id: what it publishes about itself (its NAT record), the gateways it
//! keeps reservations at, and the first path tried towards it.
//!
//! A node publishes its *NAT record* in the DHT (a provider record under `nat/<node id>`, so
//! only it can sign it): its profile, its local addresses and the gateways holding a
//! reservation for it. It publishes again whenever one of those changes. A node whose profile
//! shows that others can't dial it keeps reservations at up to
//! [`NatConfig::reservations`](super::NatConfig::reservations) gateways among its peers.
//!
//! [`Node::nat_reach`](crate::Node::nat_reach) looks the target's record up and dials its public
//! address when the decision table says a dial gets through without help (or its local address
//! behind the same NAT); otherwise it opens a circuit through one of the target's gateways, and
//! the relayed link upgrades itself ([`punch`](super::punch)) where the profiles allow.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::decide::{decide, Approach, Side};
use super::machine::{public_addr, Nat};
use super::profile::NatProfile;
use super::types::{NatEvent, ReachError};
use crate::config::Roles;
use crate::dht::{record_key, DhtAsk, DhtEvent, KeyKind};
use crate::id::NodeId;
use crate::node::subsystem::{Answer, Ask, Cx, Ticket};
use crate::node::Event;
use crate::time::{Duration, Instant};
use crate::wire::{KeyBytes, ProtocolId};

/// Most gateways a record names.
pub const MAX_RECORD_GATEWAYS: usize = 4;

/// How long a reach may take, lookup and handshake together.
const REACH_TIMEOUT: Duration = Duration::from_secs(30);

/// What a node publishes about how to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatRecord {
    /// Its NAT profile, once detected.
    pub profile: Option<NatProfile>,
    /// Where it listens (its local addresses: reachable from behind the same NAT).
    pub local: Vec<SocketAddr>,
    /// Gateways holding a reservation for it, with where they are reached.
    pub gateways: Vec<(NodeId, SocketAddr)>,
}

/// The DHT name of `node`'s NAT record.
pub fn record_name(node: &NodeId) -> String {
    alloc::format!("nat/{node}")
}

/// A reach under way.
#[derive(Debug)]
struct Reaching {
    id: u64,
    due: Instant,
}

/// Reaches under way, and what this node last published.
#[derive(Debug, Default)]
pub(crate) struct Reaches {
    /// By target.
    pending: BTreeMap<NodeId, Reaching>,
    /// DHT lookups asked, by ticket: for which target.
    lookups: BTreeMap<Ticket, NodeId>,
    next: u64,
    published: Option<Vec<u8>>,
}

impl Reaches {
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|r| r.due).min()
    }
}

impl Nat {
    fn record_key(&self, node: &NodeId) -> KeyBytes {
        record_key(&self.realm, KeyKind::Provider, record_name(node).as_bytes())
    }

    /// Publishes this node's NAT record if it changed.
    pub(crate) fn publish_record(&mut self, cx: &mut Cx<'_>) {
        let gateways = self
            .reserved_gateways()
            .into_iter()
            .filter_map(|g| cx.peer(&g).map(|p| (g, p.addr)))
            .take(MAX_RECORD_GATEWAYS)
            .collect();
        let record = NatRecord {
            profile: self.profile(cx.now()),
            local: cx.listen_addrs().to_vec(),
            gateways,
        };
        let Ok(value) = postcard::to_allocvec(&record) else {
            return;
        };
        if self.reaches.published.as_ref() == Some(&value) {
            return;
        }
        self.reaches.published = Some(value.clone());
        let key = self.record_key(&cx.identity().node_id());
        // The answer is not waited for: the DHT keeps republishing the record.
        cx.ask(ProtocolId::DHT, Ask::Dht(DhtAsk::Put(key, value)));
    }

    /// Keeps reservations at gateways among the peers while this node can't be dialed.
    pub(crate) fn keep_reservations(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        let needed = self.profile(now).is_some_and(|p| !p.accepts_unsolicited());
        if !needed || self.config.reservations == 0 {
            return;
        }
        let held = self.ends.reservations.len();
        if held >= self.config.reservations {
            return;
        }
        let candidates: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|p| !self.ends.reservations.contains_key(p))
            .filter(|p| {
                cx.peer(p).is_some_and(|i| i.roles.contains(Roles::GATEWAY))
                    && public_addr(cx, p).is_some()
            })
            .copied()
            .take(self.config.reservations - held)
            .collect();
        for gateway in candidates {
            self.reserve(gateway, None, cx);
        }
    }

    /// Starts reaching `target`; the outcome comes as [`NatEvent::Reached`] or
    /// [`NatEvent::Unreachable`] with the returned id.
    pub(crate) fn reach(&mut self, target: NodeId, cx: &mut Cx<'_>) -> u64 {
        self.reaches.next += 1;
        let id = self.reaches.next;
        if let Some(p) = cx.peer(&target) {
            // The application wants this peer: the link is kept, at both ends.
            cx.keep_link(&target);
            cx.reply(target, &super::messages::NatMessage::Keep);
            cx.emit(Event::Nat(NatEvent::Reached {
                id,
                peer: target,
                path: p.path,
            }));
            return id;
        }
        if target == cx.identity().node_id() {
            self.unreachable(id, target, ReachError::Itself, cx);
            return id;
        }
        if self.reaches.pending.len() >= self.config.max_own_circuits {
            self.unreachable(id, target, ReachError::Busy, cx);
            return id;
        }
        if let Some(old) = self.reaches.pending.insert(
            target,
            Reaching {
                id,
                due: cx.now() + REACH_TIMEOUT,
            },
        ) {
            // One reach per target: the newer stands for both.
            self.unreachable(old.id, target, ReachError::Superseded, cx);
        }
        let key = self.record_key(&target);
        let ticket = cx.ask(ProtocolId::DHT, Ask::Dht(DhtAsk::FindSomeProviders(key)));
        self.reaches.lookups.insert(ticket, target);
        id
    }

    /// The DHT's answer to a record lookup.
    pub(crate) fn reach_answer(&mut self, ticket: Ticket, answer: Answer, cx: &mut Cx<'_>) {
        let Some(target) = self.reaches.lookups.remove(&ticket) else {
            return;
        };
        let Some(id) = self.reaches.pending.get(&target).map(|r| r.id) else {
            return;
        };
        if cx.peer(&target).is_some() {
            return; // linked meanwhile: the peer's arrival answers the reach
        }
        let Answer::Dht(outcome) = answer;
        let record = match outcome {
            DhtEvent::Got { records, .. } => records
                .iter()
                .filter(|r| r.publisher == target)
                .find_map(|r| postcard::from_bytes::<NatRecord>(&r.value).ok()),
            _ => None,
        };
        let Some(record) = record else {
            self.reaches.pending.remove(&target);
            self.unreachable(id, target, ReachError::NoRecord, cx);
            return;
        };
        let ours = self.profile(cx.now());
        let direct = match (ours, record.profile) {
            (Some(o), Some(t)) => match decide(&o, &t) {
                Approach::Direct {
                    listener: Side::Target,
                } => Some(t.public),
                Approach::Local => record.local.first().copied(),
                _ => None,
            },
            (None, Some(t)) if t.accepts_unsolicited() => Some(t.public),
            _ => None,
        };
        if let Some(addr) = direct {
            cx.connect(addr, target);
            return;
        }
        for (gateway, addr) in &record.gateways {
            if let Some(circuit) = self.open_circuit(target, *gateway, Some(*addr), cx) {
                cx.connect(circuit, target);
                return;
            }
        }
        // No gateway: a dial is all that is left to try, at its public address or, without a
        // profile, where it listens.
        let last = record
            .profile
            .map(|t| t.public)
            .or_else(|| record.local.first().copied());
        match last {
            Some(addr) => {
                cx.connect(addr, target);
            }
            None => {
                self.reaches.pending.remove(&target);
                self.unreachable(id, target, ReachError::NoRoute, cx);
            }
        }
    }

    /// A peer came up: the reach for it, if any, is done.
    pub(crate) fn reached(&mut self, peer: NodeId, cx: &mut Cx<'_>) {
        let Some(r) = self.reaches.pending.remove(&peer) else {
            return;
        };
        cx.keep_link(&peer);
        cx.reply(peer, &super::messages::NatMessage::Keep);
        let path = cx.peer(&peer).map_or(super::PathKind::Direct, |p| p.path);
        cx.emit(Event::Nat(NatEvent::Reached {
            id: r.id,
            peer,
            path,
        }));
    }

    /// Reaches past their time.
    pub(crate) fn reach_due(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        let late: Vec<(NodeId, u64)> = self
            .reaches
            .pending
            .iter()
            .filter(|(_, r)| r.due <= now)
            .map(|(p, r)| (*p, r.id))
            .collect();
        for (peer, id) in late {
            self.reaches.pending.remove(&peer);
            self.unreachable(id, peer, ReachError::Timeout, cx);
        }
    }

    fn unreachable(&mut self, id: u64, peer: NodeId, why: ReachError, cx: &mut Cx<'_>) {
        cx.emit(Event::Nat(NatEvent::Unreachable { id, peer, why }));
    }
}
