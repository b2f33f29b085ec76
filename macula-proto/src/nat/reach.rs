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
use super::types::{NatEvent, ReachError, ReachId};
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

/// How long after a lookup that found no record a reach looks again (the target may not have
/// published yet), while its time lasts.
const LOOK_AGAIN: Duration = Duration::from_secs(3);

/// How long after a publication no node confirmed it is tried again.
const PUBLISH_AGAIN: Duration = Duration::from_secs(5);

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
    /// When to look the record up again (it was not found), if at all.
    look_again: Option<Instant>,
    /// Asked by the node for another subsystem's frames, not by the application: no event,
    /// and the link is an on-demand one.
    quiet: bool,
}

/// Reaches under way, and what this node last published.
#[derive(Debug, Default)]
pub(crate) struct Reaches {
    /// By target.
    pending: BTreeMap<NodeId, Reaching>,
    /// DHT lookups asked, by ticket: for which target, and whether of the node itself (its
    /// contact) rather than its record.
    lookups: BTreeMap<Ticket, (NodeId, bool)>,
    next: u64,
    published: Option<Vec<u8>>,
    /// The DHT put of the record under way.
    publishing: Option<Ticket>,
    /// When to publish again, a put having reached no node.
    publish_again: Option<Instant>,
}

impl Reaches {
    pub fn next_due(&self) -> Option<Instant> {
        self.pending
            .values()
            .flat_map(|r| [Some(r.due), r.look_again])
            .chain([self.publish_again])
            .flatten()
            .min()
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
        // The DHT republishes the record from then on; a put no node confirmed (this node
        // had not joined yet) is made again soon.
        let ticket = cx.ask(ProtocolId::DHT, Ask::Dht(DhtAsk::Put(key, value)));
        self.reaches.publishing = Some(ticket);
        self.reaches.publish_again = None;
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

    /// Reaches `target` for frames another subsystem sent it while no address led to it: no
    /// event; the frames go once a link is up, or fail if none comes.
    pub(crate) fn reach_for_frames(&mut self, target: NodeId, cx: &mut Cx<'_>) {
        if cx.peer(&target).is_some() {
            return;
        }
        if self.reaches.pending.contains_key(&target) {
            return; // the reach under way brings the link, or fails the frames
        }
        self.start_reach(target, true, cx);
    }

    /// Starts reaching `target`; the outcome comes as [`NatEvent::Reached`] or
    /// [`NatEvent::Unreachable`] with the returned id.
    pub(crate) fn reach(&mut self, target: NodeId, cx: &mut Cx<'_>) -> u64 {
        self.start_reach(target, false, cx)
    }

    fn start_reach(&mut self, target: NodeId, quiet: bool, cx: &mut Cx<'_>) -> u64 {
        self.reaches.next += 1;
        let id = self.reaches.next;
        if let Some(p) = cx.peer(&target) {
            // The application wants this peer: the link is kept, at both ends.
            cx.keep_link(&target);
            cx.reply(target, &super::messages::NatMessage::Keep);
            cx.emit(Event::Nat(NatEvent::Reached {
                id: ReachId(id),
                peer: target,
                path: p.path,
            }));
            return id;
        }
        if target == cx.identity().node_id() {
            self.unreachable(id, target, ReachError::Itself, quiet, cx);
            return id;
        }
        if self.reaches.pending.len() >= self.config.max_own_circuits {
            self.unreachable(id, target, ReachError::Busy, quiet, cx);
            return id;
        }
        if let Some(old) = self.reaches.pending.insert(
            target,
            Reaching {
                id,
                due: cx.now() + REACH_TIMEOUT,
                look_again: None,
                quiet,
            },
        ) {
            // One reach per target: the newer stands for both.
            self.unreachable(old.id, target, ReachError::Superseded, old.quiet, cx);
        }
        self.look_up(target, cx);
        id
    }

    fn look_up(&mut self, target: NodeId, cx: &mut Cx<'_>) {
        let key = self.record_key(&target);
        // Every one of the closest nodes is asked, so the newest record wins over one a
        // holder kept from before the target's reservations changed.
        let ticket = cx.ask(ProtocolId::DHT, Ask::Dht(DhtAsk::FindProviders(key)));
        self.reaches.lookups.insert(ticket, (target, false));
    }

    /// The DHT's answer to a record lookup.
    pub(crate) fn reach_answer(&mut self, ticket: Ticket, answer: Answer, cx: &mut Cx<'_>) {
        if self.reaches.publishing == Some(ticket) {
            self.reaches.publishing = None;
            let Answer::Dht(outcome) = answer;
            if !matches!(outcome, DhtEvent::Stored { acks, .. } if acks > 0) {
                self.reaches.publish_again = Some(cx.now() + PUBLISH_AGAIN);
            }
            return;
        }
        let Some((target, node)) = self.reaches.lookups.remove(&ticket) else {
            return;
        };
        let Some((id, quiet)) = self.reaches.pending.get(&target).map(|r| (r.id, r.quiet)) else {
            return;
        };
        if cx.peer(&target).is_some() {
            return; // linked meanwhile: the peer's arrival answers the reach
        }
        let Answer::Dht(outcome) = answer;
        if node {
            // No record, but the DHT may know where the node is (one others can dial).
            let contact = match outcome {
                DhtEvent::NodesFound { closest, .. } => {
                    closest.into_iter().find(|(n, _)| *n == target)
                }
                _ => None,
            };
            match contact {
                Some((_, addr)) => link_to(addr, target, quiet, cx),
                None => self.no_record(id, target, quiet, cx),
            }
            return;
        }
        let record = match outcome {
            DhtEvent::Got { records, .. } => records
                .iter()
                .filter(|r| r.publisher == target)
                .find_map(|r| postcard::from_bytes::<NatRecord>(&r.value).ok()),
            _ => None,
        };
        let Some(record) = record else {
            let ticket = cx.ask(ProtocolId::DHT, Ask::Dht(DhtAsk::FindNode(target.0)));
            self.reaches.lookups.insert(ticket, (target, true));
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
            link_to(addr, target, quiet, cx);
            return;
        }
        // Gateways this node is linked to first: one the record names may have gone.
        let mut gateways = record.gateways.clone();
        gateways.sort_by_key(|(g, _)| cx.peer(g).is_none());
        for (gateway, addr) in &gateways {
            if let Some(circuit) = self.open_circuit(target, *gateway, Some(*addr), cx) {
                link_to(circuit, target, quiet, cx);
                return;
            }
        }
        match record.profile {
            // No gateway in the record (the target has none yet, or this is an older
            // record): look again shortly.
            Some(_) => self.no_record(id, target, quiet, cx),
            // Without a profile, a dial where it listens is all there is to try.
            None => match record.local.first() {
                Some(addr) => link_to(*addr, target, quiet, cx),
                None => {
                    self.reaches.pending.remove(&target);
                    self.unreachable(id, target, ReachError::NoRoute, quiet, cx);
                }
            },
        }
    }

    /// Neither a record nor a contact, or no way in the record: look again a little later
    /// while the reach's time lasts (the target may not have published yet).
    fn no_record(&mut self, id: u64, target: NodeId, quiet: bool, cx: &mut Cx<'_>) {
        let now = cx.now();
        if let Some(r) = self.reaches.pending.get_mut(&target) {
            if now + LOOK_AGAIN < r.due {
                r.look_again = Some(now + LOOK_AGAIN);
                return;
            }
        }
        self.reaches.pending.remove(&target);
        self.unreachable(id, target, ReachError::NoRecord, quiet, cx);
    }

    /// A peer came up: the reach for it, if any, is done.
    pub(crate) fn reached(&mut self, peer: NodeId, cx: &mut Cx<'_>) {
        let Some(r) = self.reaches.pending.remove(&peer) else {
            return;
        };
        if r.quiet {
            return;
        }
        cx.keep_link(&peer);
        cx.reply(peer, &super::messages::NatMessage::Keep);
        let path = cx.peer(&peer).map_or(super::PathKind::Direct, |p| p.path);
        cx.emit(Event::Nat(NatEvent::Reached {
            id: ReachId(r.id),
            peer,
            path,
        }));
    }

    /// Reaches past their time, lookups to make again, a publication to try again.
    pub(crate) fn reach_due(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        if self.reaches.publish_again.is_some_and(|t| t <= now) {
            self.reaches.publish_again = None;
            self.reaches.published = None;
            self.publish_record(cx);
        }
        let again: Vec<NodeId> = self
            .reaches
            .pending
            .iter_mut()
            .filter(|(_, r)| r.look_again.is_some_and(|t| t <= now))
            .map(|(p, r)| {
                r.look_again = None;
                *p
            })
            .collect();
        for target in again {
            self.look_up(target, cx);
        }
        let late: Vec<(NodeId, u64, bool)> = self
            .reaches
            .pending
            .iter()
            .filter(|(_, r)| r.due <= now)
            .map(|(p, r)| (*p, r.id, r.quiet))
            .collect();
        for (peer, id, quiet) in late {
            self.reaches.pending.remove(&peer);
            self.unreachable(id, peer, ReachError::Timeout, quiet, cx);
        }
    }

    fn unreachable(
        &mut self,
        id: u64,
        peer: NodeId,
        why: ReachError,
        quiet: bool,
        cx: &mut Cx<'_>,
    ) {
        if why != ReachError::Superseded {
            // Frames other subsystems sent it while it was being reached fail with it.
            cx.reach_failed(peer);
        }
        if !quiet {
            cx.emit(Event::Nat(NatEvent::Unreachable {
                id: ReachId(id),
                peer,
                why,
            }));
        }
    }
}

/// Opens the link a reach found the way for: kept open for the application, on demand for
/// another subsystem's frames (closed when idle, like any link the node dials for them).
fn link_to(addr: SocketAddr, target: NodeId, quiet: bool, cx: &mut Cx<'_>) {
    if quiet {
        cx.dial(addr, target, false);
    } else {
        cx.connect(addr, target);
    }
}
