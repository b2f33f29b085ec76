//! The link core: links, the realm handshake, keep-alive, one timer structure for links and
//! subsystems, and sending to a node by its id (dialing on demand).
//!
//! It knows subsystems only as indices into the registry's list: it tells them about peers by
//! queueing [`PeerChange`] notices, which the node hands on after each call, and it files
//! their deadlines in the same timer heap as the links'.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

use super::dial::Dial;
use super::layout::{Traffic, Tuning};
use super::link::{Link, LinkState, PendingPing};
use super::registry::{index_of, offers, Mask, MAX_SUBSYSTEMS};
use super::subsystem::{Answer, Ask, Peer, PeerChange, Ticket};
use super::table::{LinkQueue, Links, Timers};
use super::{
    ConnectFailure, Direction, DownReason, Event, LinkError, LinkId, LinkInfo, PeerInfo, PingError,
    PingId, Stats, Transmit,
};
use crate::auth::{realm_proof, Prover};
use crate::config::{Config, MAX_LISTEN_ADDRS};
use crate::id::{Identity, NodeId};
use crate::rate::{Limit, TokenBucket};
use crate::rng::Rng;
use crate::time::Instant;
use crate::wire::{
    encode_into, Channel, CloseCode, Connect, Control, Encode, Ping, ProtocolId, RefuseReason,
    Versions, WireAddr,
};

/// The link core of a [`Node`](super::Node). See the [module documentation](self).
///
/// The fields every input reads or writes come first, and `repr(C)` keeps them in that order
/// (see [`layout`](super::layout), which owns what this order is for).
#[repr(C)]
pub(crate) struct Core {
    // ---- hot: touched by nearly every input
    pub(super) now: Instant,
    /// When each link and each subsystem next needs `handle_timeout`. An entry may be early (a
    /// deadline that moved later is not re-filed) but never late.
    pub(super) timers: Timers,
    pub(super) transmits: VecDeque<Transmit>,
    /// Links with frames queued on a channel, in the order they got them.
    pub(super) dirty: LinkQueue,
    pub(super) events: VecDeque<Event>,
    /// Established peers and the link each is on.
    pub(super) peers: BTreeMap<NodeId, LinkId>,
    pub(super) traffic: Traffic,
    pub(super) tuning: Tuning,
    pub(super) next_ping: u64,
    pub(super) closed: bool,
    /// Subsystems a call gave work to since their deadlines were last filed.
    pub(super) touched: Mask,
    /// Whether notices, asks or answers wait for subsystems (so a call that queued none
    /// does not read those cold queues).
    pub(super) queued: bool,
    /// Gauge: the records all subsystems keep for others, refreshed when they are called.
    pub(super) stored: usize,
    /// The links, last: their bookkeeping ends the hot fields, and the first few links follow
    /// it inline.
    pub(super) links: Links,
    // ---- cold: handshakes, failures, commands
    /// Behind a pointer: read only by cold paths (the hot values are copied into `tuning`),
    /// and several hundred bytes that would otherwise push a node past one page.
    pub(super) config: alloc::boxed::Box<Config>,
    pub(super) identity: Identity,
    pub(super) rng: Rng,
    /// The counters other than `traffic`'s (whose fields here stay zero; [`Core::stats`]
    /// merges the two) and without the gauges, which are read off the tables. Out of line:
    /// they are counted on cold paths only.
    pub(super) stats: alloc::boxed::Box<Stats>,
    /// The subsystems that run (the handshake offers their protocols).
    pub(super) running: Mask,
    /// Links this node may still open on its own now (`Config::dial_rate`).
    pub(super) dial_budget: TokenBucket,
    /// Links being dialed to reach a node by id, and the frames waiting for each.
    pub(super) dials: BTreeMap<NodeId, Dial>,
    /// The NAT subsystem found that others can't dial this node where it listens.
    pub(super) undialable: bool,
    /// Peers whose link was closed as a duplicate while it was theirs: their subsystems hear
    /// [`PeerChange::Relinked`] once the other link is up. At most `max_peers`.
    pub(super) relinked: BTreeMap<NodeId, bool>,
    /// What subsystems have to hear, with the subsystems to tell.
    pub(super) notices: VecDeque<(Mask, PeerChange)>,
    pub(super) asks: VecDeque<(ProtocolId, ProtocolId, Ticket, Ask)>,
    pub(super) answers: VecDeque<(ProtocolId, Ticket, Answer)>,
    pub(super) next_ticket: u64,
    /// The application's inboxes (see [`flow`](super::flow)).
    pub(super) inboxes: super::flow::Inboxes,
    /// Paused channels that flow again, for the transport to read.
    pub(super) resumed: VecDeque<(LinkId, Channel)>,
    /// Trust-on-first-use pins and the names being dialed; made when first needed (most
    /// nodes of a large simulation never dial by name).
    pub(super) trust: Option<alloc::boxed::Box<super::pinning::Trust>>,
    /// Rate limits on inbound handshakes by source address.
    pub(super) guard: alloc::boxed::Box<super::guard::Guard>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.identity.node_id())
            .field("links", &self.links.len())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A core for a validated `config`, running the subsystems in `running`.
    pub fn new(
        config: Config,
        identity: Identity,
        rng: &mut Rng,
        running: Mask,
        now: Instant,
    ) -> Self {
        // Correlation ids start at a random point so two runs with different seeds differ on the
        // wire from the first ping; they are not secret (pongs come over authenticated links).
        let next_ping = rng.next_u64() >> 16;
        let detect = config.nat.detect;
        let dial_budget =
            TokenBucket::full(&Limit::per_second(config.dial_rate, config.dial_burst), now);
        let guard = alloc::boxed::Box::new(super::guard::Guard::new(&config, now));
        Core {
            now,
            links: Links::default(),
            timers: Timers::default(),
            transmits: VecDeque::new(),
            dirty: LinkQueue::default(),
            events: VecDeque::new(),
            peers: BTreeMap::new(),
            traffic: Traffic::default(),
            tuning: Tuning::of(&config),
            next_ping,
            closed: false,
            touched: Mask::NONE,
            queued: false,
            stored: 0,
            config: alloc::boxed::Box::new(config),
            identity,
            rng: rng.child(),
            stats: alloc::boxed::Box::default(),
            running,
            dial_budget,
            dials: BTreeMap::new(),
            // A node that detects its NAT names no address in its records until it knows
            // others can dial it.
            undialable: detect,
            relinked: BTreeMap::new(),
            notices: VecDeque::new(),
            asks: VecDeque::new(),
            answers: VecDeque::new(),
            next_ticket: 1,
            inboxes: Default::default(),
            resumed: VecDeque::new(),
            trust: None,
            guard,
        }
    }

    // ---------------------------------------------------------------- getters

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.config.listen_addrs
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn child_seed(&mut self) -> u64 {
        self.rng.child_seed()
    }

    pub fn peer_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }

    pub fn peer(&self, id: &NodeId) -> Option<PeerInfo> {
        let link_id = self.peers.get(id)?;
        let link = self.links.get(*link_id)?;
        let LinkState::Established(est) = &link.state else {
            return None;
        };
        Some(PeerInfo {
            id: *id,
            link: *link_id,
            addr: link.addr,
            direction: link.direction,
            listen_addrs: est.listen_addrs.clone(),
            roles: est.roles,
            rtt: est.rtt,
            since: est.since,
            protocols: est.protocols.to_vec(),
            path: if super::is_circuit_addr(link.addr) {
                crate::nat::PathKind::Relayed
            } else if link.punched {
                crate::nat::PathKind::Punched
            } else {
                crate::nat::PathKind::Direct
            },
        })
    }

    /// The latest round trip measured to peer `id`.
    pub fn peer_rtt(&self, id: &NodeId) -> Option<crate::time::Duration> {
        let link = self.links.get(*self.peers.get(id)?)?;
        match &link.state {
            LinkState::Established(est) => est.rtt,
            _ => None,
        }
    }

    /// The peers up that speak the protocol of subsystem `protocol`.
    pub fn peers_speaking(&self, protocol: ProtocolId) -> Vec<(NodeId, LinkId)> {
        let Some(index) = index_of(protocol) else {
            return Vec::new();
        };
        self.peers
            .iter()
            .filter(|(_, l)| self.link_speaks(**l, index))
            .map(|(id, l)| (*id, *l))
            .collect()
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn pending_handshakes(&self) -> usize {
        self.links.len() - self.peers.len()
    }

    pub fn queued_events(&self) -> usize {
        self.events.len()
    }

    pub fn stats(&self) -> Stats {
        let t = self.traffic;
        Stats {
            peers: self.peers.len(),
            pending_handshakes: self.pending_handshakes(),
            rate_sources: {
                let (handshakes, failures) = self.guard.sources();
                handshakes.max(failures)
            },
            frames_sent: t.frames_sent,
            frames_received: t.frames_received,
            bytes_sent: t.bytes_sent,
            bytes_received: t.bytes_received,
            pings_sent: t.pings_sent,
            pongs_received: t.pongs_received,
            ..(*self.stats).clone()
        }
    }

    /// Whether `link` is established with a peer that speaks subsystem `index`'s protocol.
    pub fn link_speaks(&self, link: LinkId, index: usize) -> bool {
        self.links
            .get(link)
            .is_some_and(|l| matches!(&l.state, LinkState::Established(e) if e.speaks.has(index)))
    }

    /// The established peer on `link`, as a subsystem sees it.
    pub fn peer_on(&self, link: LinkId) -> Option<Peer> {
        let l = self.links.get(link)?;
        match l.state {
            LinkState::Established(_) => Some(Peer {
                id: l.remote?,
                link,
            }),
            _ => None,
        }
    }

    /// Whether `link` is an outbound link whose `Connect` awaits its answer.
    pub fn awaiting_ack(&self, link: LinkId) -> bool {
        self.links
            .get(link)
            .is_some_and(|l| matches!(l.state, LinkState::AwaitingAck { .. }))
    }

    pub fn is_established(&self, link: LinkId) -> Option<bool> {
        self.links
            .get(link)
            .map(|l| matches!(l.state, LinkState::Established(_)))
    }

    /// The timer heap's entries, its top first (for [`Node::prefetch`](super::Node::prefetch)).
    pub fn timers_slice(&self) -> &[(Instant, LinkId)] {
        self.timers.slice()
    }

    /// Prefetches the fronts of the output queues.
    pub fn prefetch_queues(&self, to: &mut impl super::layout::Prefetch) {
        if let Some(t) = self.transmits.front() {
            to.prefetch(t);
        }
        if let Some(e) = self.events.front() {
            to.prefetch(e);
        }
    }

    // ---------------------------------------------------------------- time

    pub fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    /// Files subsystem `index`'s deadline (a closed node keeps no time for them).
    pub fn file_subsystem(&mut self, index: usize, due: Option<Instant>) {
        let due = if self.closed {
            Instant::NEVER
        } else {
            due.unwrap_or(Instant::NEVER)
        };
        let key = LinkId::subsystem(index);
        if due < self.links.scheduled(key) {
            self.links.set_scheduled(key, due);
            self.timers.push(due, key, &self.links);
            self.timers.prune(&self.links);
        }
    }

    /// Runs the link timers due at `now`; returns the subsystems whose deadline came.
    pub fn handle_timeout(&mut self) -> Mask {
        let mut due = Mask::NONE;
        while let Some(key) = self.timers.pop_due(self.now, &mut self.links) {
            match key.as_subsystem() {
                Some(index) => due.0 |= 1 << index,
                None => {
                    self.link_timers(key);
                    self.schedule(key);
                }
            }
        }
        self.timers.prune(&self.links);
        due
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.transmits.is_empty() || !self.dirty.is_empty() || !self.events.is_empty() {
            return Some(self.now);
        }
        self.timers.first()
    }

    // ---------------------------------------------------------------- outputs

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        while let Some(link_id) = self.dirty.front() {
            if let Some(link) = self.links.get_mut(link_id) {
                if let Some((channel, bytes)) = link.out.take_next() {
                    return Some(Transmit::Send {
                        link: link_id,
                        channel,
                        bytes,
                    });
                }
                link.dirty = false;
            }
            self.dirty.pop_front();
        }
        None
    }

    /// Queues a raw datagram for the transport.
    pub fn send_datagram(&mut self, socket: super::Socket, to: SocketAddr, bytes: Vec<u8>) {
        self.transmits
            .push_back(Transmit::Datagram { socket, to, bytes });
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn push_event(&mut self, event: Event) {
        if self.events.len() >= self.tuning.max_queued_events {
            // The oldest event goes, unless it is a call's outcome: each call has exactly one,
            // and calls in flight are bounded (`rpc.max_calls`).
            let kept = |e: &Event| matches!(e, Event::Rpc(crate::rpc::RpcEvent::Done { .. }));
            if let Some(i) = self.events.iter().position(|e| !kept(e)) {
                self.events.remove(i);
                self.stats.events_dropped += 1;
            }
        }
        self.events.push_back(event);
    }

    // ---------------------------------------------------------------- commands

    /// Starts an outbound link; `pinned` for the application's own.
    pub fn open_link(
        &mut self,
        addr: SocketAddr,
        expected: Option<NodeId>,
        pinned: bool,
    ) -> LinkId {
        let link = self.links.next_id();
        if self.closed {
            self.push_event(Event::ConnectFailed {
                link,
                addr,
                failure: ConnectFailure::Aborted(CloseCode::Goodbye),
            });
            return link;
        }
        // A dial to the same node at the same address under way is the one asked for: two
        // at once could each win at one end and be closed at the other.
        let same = |l: &Link| {
            l.direction == Direction::Outbound
                && l.addr == addr
                && match &l.state {
                    LinkState::Dialing { expected: e } => *e == expected,
                    LinkState::AwaitingAck { .. } => expected.is_none() || l.remote == expected,
                    _ => false,
                }
        };
        let under_way = self.links.iter().find(|(_, l)| same(l)).map(|(id, _)| id);
        if let Some(id) = under_way {
            if let Some(l) = self.links.get_mut(id) {
                l.pinned |= pinned;
            }
            return id;
        }
        let deadline = self.now + self.config.handshake_timeout;
        let mut new = Link::new(
            Direction::Outbound,
            addr,
            LinkState::Dialing { expected },
            deadline,
            self.config.max_frame_size,
        );
        new.pinned = pinned;
        self.links.insert(link, new);
        self.schedule(link);
        self.transmits.push_back(Transmit::Open {
            link,
            addr,
            expected,
        });
        link
    }

    pub fn ping(&mut self, peer: &NodeId) -> Result<PingId, PingError> {
        let link_id = *self.peers.get(peer).ok_or(PingError::NotConnected)?;
        let id = self.send_ping(link_id, true)?;
        Ok(PingId(id))
    }

    pub fn disconnect(&mut self, peer: &NodeId) -> bool {
        match self.peers.get(peer) {
            Some(&link) => {
                self.abort_link(link, CloseCode::Goodbye);
                true
            }
            None => false,
        }
    }

    pub fn close(&mut self) {
        self.closed = true;
        let links: Vec<LinkId> = self.links.ids().collect();
        for link in links {
            self.abort_link(link, CloseCode::Goodbye);
        }
        // A closed node keeps no time: its subsystems' operations failed with its links.
        for index in 0..MAX_SUBSYSTEMS {
            self.links
                .set_scheduled(LinkId::subsystem(index), Instant::NEVER);
        }
        self.timers.prune(&self.links);
    }

    pub fn queue_ask(&mut self, asker: ProtocolId, to: ProtocolId, ask: Ask) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.queued = true;
        self.asks.push_back((asker, to, ticket, ask));
        ticket
    }

    pub fn queue_answer(&mut self, asker: ProtocolId, ticket: Ticket, answer: Answer) {
        self.queued = true;
        self.answers.push_back((asker, ticket, answer));
    }

    // ---------------------------------------------------------------- inputs

    pub fn handle_link_up(&mut self, link_id: LinkId, info: LinkInfo) {
        let own = self.node_id();
        let Some(link) = self.links.get_mut(link_id) else {
            // Closed by us meanwhile; the transport has (or will get) the Close.
            return;
        };
        let LinkState::Dialing { expected } = link.state else {
            return;
        };
        link.remote = Some(info.remote_id);
        link.addr = info.remote_addr;
        link.last_heard = self.now;
        if info.remote_id == own {
            self.fail_outbound(link_id, ConnectFailure::SelfDial, CloseCode::UnexpectedPeer);
            return;
        }
        if let Some(expected) = expected.filter(|e| *e != info.remote_id) {
            let failure = ConnectFailure::UnexpectedPeer {
                expected,
                found: info.remote_id,
            };
            self.fail_outbound(link_id, failure, CloseCode::UnexpectedPeer);
            return;
        }
        if self.refused_by_pin(link_id, info.remote_id) {
            return;
        }
        let auth = self.config.api_key.as_ref().map(|key| {
            realm_proof(
                Prover::Dialer,
                key,
                self.config.realm.as_str(),
                &own,
                &info.exporter,
            )
        });
        let connect = Control::Connect(Connect {
            versions: Versions::OURS,
            node_id: own,
            realm: self.config.realm.as_str().into(),
            auth,
            listen_addrs: self.wire_listen_addrs(),
            roles: self.config.roles.0,
            protocols: offers(self.running),
        });
        if let Some(link) = self.links.get_mut(link_id) {
            link.state = LinkState::AwaitingAck {
                exporter: info.exporter,
            };
        }
        self.send_frame(link_id, &connect);
    }

    pub fn handle_inbound(&mut self, info: LinkInfo) -> Result<LinkId, CloseCode> {
        if self.closed {
            return Err(CloseCode::Goodbye);
        }
        if self.pending_handshakes() >= self.config.max_pending_handshakes {
            self.stats.handshake_slots_full += 1;
            return Err(CloseCode::Refused(RefuseReason::Capacity));
        }
        if self.holds_its_share(info.remote_addr) {
            self.stats.refused_by_us.bump(RefuseReason::RateLimited);
            return Err(CloseCode::Refused(RefuseReason::RateLimited));
        }
        // Over its source's limit, the link still waits for the dialer's `Connect`, so the
        // refusal reaches it with its reason.
        let limited = !self.admit_handshake(info.remote_addr);
        let link_id = self.links.next_id();
        let deadline = self.now + self.config.handshake_timeout;
        let mut link = Link::new(
            Direction::Inbound,
            info.remote_addr,
            LinkState::AwaitingConnect {
                exporter: info.exporter,
                limited,
            },
            deadline,
            self.config.max_frame_size,
        );
        link.remote = Some(info.remote_id);
        link.last_heard = self.now;
        self.links.insert(link_id, link);
        self.schedule(link_id);
        Ok(link_id)
    }

    /// Bytes arrived on `link`: returns whether the node reads them (not for an unknown link
    /// or one still dialing, which is a transport bug, not the peer's).
    pub fn accept_bytes(&mut self, link_id: LinkId, len: usize) -> bool {
        let Some(link) = self.links.get_mut(link_id) else {
            return false;
        };
        if matches!(link.state, LinkState::Dialing { .. }) {
            return false;
        }
        link.last_heard = self.now;
        self.traffic.bytes_received += len as u64;
        true
    }

    pub fn handle_link_down(&mut self, link_id: LinkId, error: LinkError) {
        let Some(link) = self.links.get(link_id) else {
            return;
        };
        match link.state {
            LinkState::Dialing { .. } | LinkState::AwaitingAck { .. } => {
                let failure = match error {
                    LinkError::ClosedByPeer(CloseCode::Duplicate)
                        if link.remote.is_some_and(|r| self.peers.contains_key(&r)) =>
                    {
                        let remote = link.remote.expect("checked above");
                        // The application's wish to keep the peer passes to the link that
                        // stays.
                        if link.pinned {
                            let kept = self.peers.get(&remote).copied();
                            if let Some(l) = kept.and_then(|k| self.links.get_mut(k)) {
                                l.pinned = true;
                            }
                        }
                        ConnectFailure::AlreadyConnected(remote)
                    }
                    LinkError::ClosedByPeer(CloseCode::Refused(reason)) => {
                        self.stats.refused_by_peer.bump(reason);
                        ConnectFailure::Refused {
                            reason,
                            message: String::new(),
                        }
                    }
                    other => ConnectFailure::Link(other),
                };
                self.forget_outbound(link_id, failure);
            }
            LinkState::AwaitingConnect { .. } => {
                self.take_link(link_id);
                self.stats.handshakes_abandoned += 1;
            }
            LinkState::Established(_) => self.forget_peer(link_id, DownReason::Link(error)),
        }
    }

    /// A control-protocol message arrived on `link`.
    pub fn handle_control(&mut self, link_id: LinkId, message: Control) {
        self.traffic.frames_received += 1;
        let Some(link) = self.links.get(link_id) else {
            return;
        };
        match (&link.state, message) {
            (LinkState::AwaitingConnect { .. }, Control::Connect(connect)) => {
                self.answer_connect(link_id, connect);
            }
            (LinkState::AwaitingAck { .. }, Control::ConnectAck(ack)) => {
                self.complete_outbound(link_id, ack)
            }
            (LinkState::AwaitingAck { .. }, Control::ConnectError(err)) => {
                self.stats.refused_by_peer.bump(err.reason);
                let message = truncate(err.message, 256);
                let failure = ConnectFailure::Refused {
                    reason: err.reason,
                    message,
                };
                self.fail_outbound(link_id, failure, CloseCode::Goodbye);
            }
            (LinkState::Established(_), Control::Ping(ping)) => {
                self.send_frame(link_id, &Control::Pong(ping));
            }
            (LinkState::Established(_), Control::Pong(pong)) => self.handle_pong(link_id, pong.id),
            _ => self.violation(link_id, CloseCode::ProtocolViolation),
        }
    }

    /// A frame of subsystem `index`'s protocol arrived on `link`: the peer it came from, if the
    /// link may carry it. A frame before the handshake is a violation; one of a protocol the
    /// link did not agree on is counted and skipped.
    pub fn admit_subsystem_frame(&mut self, link_id: LinkId, index: usize) -> Option<Peer> {
        self.traffic.frames_received += 1;
        match self.is_established(link_id)? {
            false => {
                self.violation(link_id, CloseCode::ProtocolViolation);
                None
            }
            true if !self.link_speaks(link_id, index) => {
                self.stats.frames_skipped += 1;
                None
            }
            true => {
                self.use_link(link_id);
                self.touched.0 |= 1 << index;
                self.peer_on(link_id)
            }
        }
    }

    /// A frame of a protocol this node does not run arrived on `link`: skipped and counted once
    /// the handshake is done, a violation before.
    pub fn skip_frame(&mut self, link_id: LinkId) {
        self.traffic.frames_received += 1;
        match self.is_established(link_id) {
            Some(true) => self.stats.frames_skipped += 1,
            Some(false) => self.violation(link_id, CloseCode::ProtocolViolation),
            None => {}
        }
    }

    /// Closes `link` for a peer's fault, counting it by `code`.
    pub fn violation(&mut self, link_id: LinkId, code: CloseCode) {
        match code {
            CloseCode::FrameTooLarge => self.stats.oversized_frames += 1,
            CloseCode::MalformedFrame => self.stats.malformed_frames += 1,
            CloseCode::UnknownKind => self.stats.unknown_kinds += 1,
            _ => self.stats.protocol_violations += 1,
        }
        self.abort_link(link_id, code);
    }

    /// Closes one link with `code`, reporting what the application needs to know.
    pub fn close_link(&mut self, link_id: LinkId, code: CloseCode) {
        self.abort_link(link_id, code);
    }

    // ---------------------------------------------------------------- internals

    /// Files the link's next deadline if it is earlier than the one on file.
    pub(super) fn schedule(&mut self, link_id: LinkId) {
        let Some(link) = self.links.get_mut(link_id) else {
            return;
        };
        let due = link.next_deadline(&self.tuning);
        if due < link.scheduled {
            link.scheduled = due;
            self.timers.push(due, link_id, &self.links);
            self.timers.prune(&self.links);
        }
    }

    /// Removes a link and its timer.
    pub(super) fn take_link(&mut self, link_id: LinkId) -> Option<Link> {
        let link = self.links.remove(link_id)?;
        if let Some(trust) = &mut self.trust {
            trust.names.remove(&link_id);
        }
        self.timers.prune(&self.links);
        self.forget_pauses(link_id);
        Some(link)
    }

    pub(super) fn wire_listen_addrs(&self) -> Vec<WireAddr> {
        self.config
            .listen_addrs
            .iter()
            .take(MAX_LISTEN_ADDRS)
            .map(|a| WireAddr::from(*a))
            .collect()
    }

    pub(super) fn send_frame<M: Encode>(&mut self, link_id: LinkId, message: &M) {
        self.send_frames::<M, &M>(link_id, core::iter::once(message));
    }

    /// Queues `messages`, in order, on their channel of `link_id`. Returns how many.
    pub(super) fn send_frames<M: Encode, B: core::borrow::Borrow<M>>(
        &mut self,
        link_id: LinkId,
        messages: impl IntoIterator<Item = B>,
    ) -> usize {
        let channel = M::PROTOCOL.channel();
        let Some(link) = self.links.get_mut(link_id) else {
            return 0;
        };
        let out = link.out.channel(channel);
        let before = out.len();
        let mut frames = 0;
        for message in messages {
            encode_into(message.borrow(), out);
            frames += 1;
        }
        let written = out.len() - before;
        self.traffic.frames_sent += frames as u64;
        self.traffic.bytes_sent += written as u64;
        if frames > 0 && !link.dirty {
            link.dirty = true;
            self.dirty.push_back(link_id);
        }
        frames
    }

    /// Queues an already encoded frame.
    pub(super) fn send_encoded(&mut self, link_id: LinkId, channel: Channel, bytes: &[u8]) {
        let Some(link) = self.links.get_mut(link_id) else {
            return;
        };
        link.out.channel(channel).extend_from_slice(bytes);
        self.traffic.frames_sent += 1;
        self.traffic.bytes_sent += bytes.len() as u64;
        if !link.dirty {
            link.dirty = true;
            self.dirty.push_back(link_id);
        }
    }

    /// Queues a ping on an established link. Returns its correlation id.
    pub(super) fn send_ping(&mut self, link_id: LinkId, from_app: bool) -> Result<u64, PingError> {
        let now = self.now;
        let max = self.tuning.max_pings_in_flight;
        let deadline = now + self.tuning.ping_timeout;
        let link = self.links.get_mut(link_id).ok_or(PingError::NotConnected)?;
        let LinkState::Established(est) = &mut link.state else {
            return Err(PingError::NotConnected);
        };
        if est.pings.len() >= max {
            return Err(PingError::TooManyInFlight);
        }
        let id = self.next_ping;
        self.next_ping = self.next_ping.wrapping_add(1);
        est.pings.push(
            id,
            PendingPing {
                sent: now,
                deadline,
                from_app,
            },
        );
        self.traffic.pings_sent += 1;
        self.send_frame(link_id, &Control::Ping(Ping { id }));
        self.schedule(link_id);
        Ok(id)
    }

    pub(super) fn handle_pong(&mut self, link_id: LinkId, id: u64) {
        let now = self.now;
        let Some(link) = self.links.get_mut(link_id) else {
            return;
        };
        let remote = link.remote;
        let LinkState::Established(est) = &mut link.state else {
            return;
        };
        let Some(ping) = est.pings.remove(id) else {
            self.stats.unmatched_pongs += 1;
            return;
        };
        let rtt = now - ping.sent;
        est.rtt = Some(rtt);
        self.traffic.pongs_received += 1;
        if ping.from_app {
            let peer = remote.expect("established links know their remote");
            self.push_event(Event::PingResult {
                id: PingId(id),
                peer,
                result: Ok(rtt),
            });
        }
    }

    pub(super) fn link_timers(&mut self, link_id: LinkId) {
        let now = self.now;
        let Some(link) = self.links.get_mut(link_id) else {
            return;
        };
        let pool_deadline = link.pool_deadline(&self.tuning);
        match &mut link.state {
            LinkState::Established(est) => {
                if now >= link.last_heard + self.tuning.idle_timeout {
                    self.stats.idle_timeouts += 1;
                    self.abort_link(link_id, CloseCode::IdleTimeout);
                    return;
                }
                if now >= pool_deadline {
                    self.stats.pool_idle_closes += 1;
                    self.abort_link(link_id, CloseCode::Goodbye);
                    return;
                }
                let peer = link.remote.expect("established links know their remote");
                let expired = est.pings.expire(now);
                let keepalive = now >= est.next_keepalive;
                if keepalive {
                    est.next_keepalive = now + self.tuning.keepalive_interval;
                }
                for (id, from_app) in expired {
                    if from_app {
                        self.push_event(Event::PingResult {
                            id: PingId(id),
                            peer,
                            result: Err(PingError::Timeout),
                        });
                    }
                }
                if keepalive {
                    // A full ping window already proves we are asking; skip this keep-alive.
                    let _ = self.send_ping(link_id, false);
                }
            }
            LinkState::Dialing { .. } | LinkState::AwaitingAck { .. } => {
                if now >= link.deadline {
                    self.stats.handshake_timeouts += 1;
                    self.fail_outbound(
                        link_id,
                        ConnectFailure::Aborted(CloseCode::HandshakeTimeout),
                        CloseCode::HandshakeTimeout,
                    );
                }
            }
            LinkState::AwaitingConnect { .. } => {
                if now >= link.deadline {
                    self.stats.handshake_timeouts += 1;
                    self.abort_link(link_id, CloseCode::HandshakeTimeout);
                }
            }
        }
    }
}

impl LinkId {
    /// The timer key of subsystem `index`: an id no link ever has (links count from 1 in
    /// their high half).
    pub(super) fn subsystem(index: usize) -> LinkId {
        debug_assert!(index < MAX_SUBSYSTEMS);
        LinkId(index as u64)
    }

    /// The subsystem index this timer key stands for, if it is one.
    pub(super) fn as_subsystem(self) -> Option<usize> {
        (self.0 >> 32 == 0).then_some((self.0 & 0xffff_ffff) as usize)
    }
}

pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
impl Core {
    pub fn check_invariants(&self) {
        let truth = self
            .links
            .iter()
            .map(|(_, l)| l.next_deadline(&self.tuning))
            .min();
        if let Some(truth) = truth {
            let filed = self
                .poll_timeout()
                .expect("a node with links has a deadline");
            assert!(filed <= truth, "timer filed at {filed:?}, due at {truth:?}");
        }
        let subsystems = (0..MAX_SUBSYSTEMS)
            .filter(|i| self.links.scheduled(LinkId::subsystem(*i)) != Instant::NEVER)
            .count();
        assert_eq!(
            self.timers.live(&self.links),
            self.links.len() + subsystems,
            "a live timer entry for every link and filed subsystem"
        );
        assert!(
            self.timers.len() <= 2 * (self.links.len() + MAX_SUBSYSTEMS) + 16,
            "dead timer entries are bounded"
        );
        assert!(
            self.peers.len() <= self.config.max_peers,
            "peers within max_peers"
        );
        assert!(
            self.dials.len() <= self.config.max_peers,
            "dials within max_peers"
        );
    }
}
