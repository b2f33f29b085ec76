//! The composition root of the core: links, the CONNECT handshake, the peer table, keep-alive.
//!
//! A [`Node`] talks to other nodes over *links*: reliable, ordered byte pipes that a transport
//! opens (a QUIC connection's control stream in [`quic`](crate::quic), a modelled pipe in the
//! simulator). By the time a link is handed to the node the transport has proven the remote's
//! [`NodeId`] (TLS) and exported a per-connection secret ([`LinkInfo::exporter`]); the node then
//! runs the realm handshake over the link and keeps the peer alive. It never touches a socket.
//!
//! # Method kinds
//!
//! - **(A) getters** on `&self`: [`Node::node_id`], [`Node::peers`], [`Node::stats`], ...
//! - **(B) inputs** from the transport and the clock: [`Node::handle_link_up`],
//!   [`Node::handle_inbound`], [`Node::handle_link_data`], [`Node::handle_link_down`],
//!   [`Node::handle_timeout`].
//! - **(C) commands** from the application: [`Node::connect`], [`Node::ping`],
//!   [`Node::disconnect`], [`Node::close`], returning typed ids whose results arrive as events.
//! - **(D) outputs**: [`Node::poll_transmit`], [`Node::poll_event`], [`Node::poll_timeout`].
//!
//! # The drain contract
//!
//! After any (B) or (C) call, call `poll_transmit` until it returns `None` and carry out each
//! [`Transmit`]; then `poll_event` until `None`; then read `poll_timeout` and call
//! `handle_timeout(now)` once the clock reaches it. While output is queued, `poll_timeout` returns
//! the `now` of the last call, so a driver never sleeps on pending work. Every mutating call takes
//! `now`; time must not go backwards (an earlier `now` is treated as the latest one seen).
//!
//! Same seed, same identity, same config and the same inputs give the same outputs, bit for bit.

mod link;
mod prefetch;
mod stats;
mod table;
#[cfg(test)]
mod tests;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

use crate::auth::{realm_proof, verify_realm_proof};
use crate::config::{Config, ConfigError, Roles, MAX_LISTEN_ADDRS};
use crate::dht::{self, record_key, Dht, DhtEvent, KeyKind, OpId};
use crate::id::{Identity, NodeId};
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use crate::wire::{
    encode_into, CloseCode, Connect, ConnectAck, ConnectError, DecodeError, Frame, KeyBytes, Ping,
    RefuseReason, WireAddr, PROTOCOL_VERSION,
};

use link::{Link, LinkState, PendingPing};
pub use prefetch::Prefetch;
pub use stats::{RefusalCounts, Stats};
use table::{LinkQueue, Links, Timers};

/// Identifies one link (one transport connection) for the node's whole life; never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct LinkId(pub u64);

impl LinkId {
    /// A small index for per-link tables: among the node's live links no two share one, and
    /// every one is below the most links the node has held at once, so a transport can keep
    /// its own per-link state in a `Vec` indexed by it. Unlike the id, a slot is reused once
    /// its link is gone: check the id stored there.
    pub fn slot(self) -> usize {
        (self.0 & u64::from(u32::MAX)) as usize
    }
}

/// Identifies one application ping.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PingId(pub u64);

/// Who opened a link.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// This node dialed.
    Outbound,
    /// The remote dialed this node.
    Inbound,
}

/// What the transport proved about a link before handing it to the node.
#[derive(Clone, Debug)]
pub struct LinkInfo {
    /// The remote's node id, proven by the transport (the TLS certificate's key).
    pub remote_id: NodeId,
    /// The remote's address as the transport sees it.
    pub remote_addr: SocketAddr,
    /// 32 bytes both ends derive from the connection's TLS session (an exporter value); the realm
    /// proof is bound to it. Both ends of a link must see the same value.
    pub exporter: [u8; 32],
}

/// Work for the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Transmit {
    /// Open a link to `addr`; report the outcome with [`Node::handle_link_up`] or
    /// [`Node::handle_link_down`].
    Open {
        /// The id the node gave the link.
        link: LinkId,
        /// Where to dial.
        addr: SocketAddr,
        /// The node expected there, if the application named one.
        expected: Option<NodeId>,
    },
    /// Write `bytes` to the link's stream, after everything written before.
    Send {
        /// The link.
        link: LinkId,
        /// Encoded frames, in order.
        bytes: Vec<u8>,
    },
    /// Close the link with `code`, after delivering every earlier `Send`. The node has forgotten
    /// the link: a later report about it is ignored.
    Close {
        /// The link.
        link: LinkId,
        /// Why; the transport passes it to the remote (the QUIC application error code).
        code: CloseCode,
    },
}

/// How a link failed, as reported by the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// The transport could not establish the link (unreachable, TLS failure, bad certificate).
    DialFailed,
    /// The remote closed the link with this code.
    ClosedByPeer(CloseCode),
    /// The transport timed the link out.
    TimedOut,
    /// Any other transport failure (reset, protocol error below the node).
    Reset,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::DialFailed => f.write_str("could not establish a connection"),
            LinkError::ClosedByPeer(code) => write!(f, "closed by peer ({code})"),
            LinkError::TimedOut => f.write_str("transport timed out"),
            LinkError::Reset => f.write_str("transport failure"),
        }
    }
}

/// Why an outbound connection attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// The remote refused the handshake.
    Refused {
        /// The reason it gave.
        reason: RefuseReason,
        /// Its explanation (empty if only the close code arrived).
        message: String,
    },
    /// Another node than the expected one answered at the address.
    UnexpectedPeer {
        /// The node the application asked for.
        expected: NodeId,
        /// The node that answered.
        found: NodeId,
    },
    /// The address belongs to this node itself.
    SelfDial,
    /// The node answered, but it was already a peer over another link (two nodes dialed each
    /// other at once); that link was kept. Not an error for most callers.
    AlreadyConnected(NodeId),
    /// The transport failed.
    Link(LinkError),
    /// This node gave up (handshake timeout, a malformed or unexpected answer).
    Aborted(CloseCode),
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Refused { reason, message } if message.is_empty() => {
                write!(f, "refused by peer: {reason}")
            }
            ConnectFailure::Refused { reason, message } => {
                write!(f, "refused by peer: {reason} ({message})")
            }
            ConnectFailure::UnexpectedPeer { expected, found } => write!(
                f,
                "expected node {} but {} answered",
                expected.short(),
                found.short()
            ),
            ConnectFailure::SelfDial => f.write_str("the address is this node's own"),
            ConnectFailure::AlreadyConnected(peer) => {
                write!(f, "already connected to {} over another link", peer.short())
            }
            ConnectFailure::Link(err) => write!(f, "{err}"),
            ConnectFailure::Aborted(code) => write!(f, "gave up: {code}"),
        }
    }
}

/// Why a peer went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// This node closed the link with this code.
    Local(CloseCode),
    /// The transport reported the link lost (a peer's clean close is `ClosedByPeer(Goodbye)`).
    Link(LinkError),
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::Local(code) => write!(f, "closed here: {code}"),
            DownReason::Link(err) => write!(f, "{err}"),
        }
    }
}

/// Why a ping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PingError {
    /// There is no established peer with that id.
    NotConnected,
    /// Too many pings to that peer await their pong ([`Config::max_pings_in_flight`]).
    TooManyInFlight,
    /// No pong arrived within [`Config::ping_timeout`].
    Timeout,
    /// The peer went away before answering.
    PeerGone,
}

impl fmt::Display for PingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PingError::NotConnected => "not connected to that peer",
            PingError::TooManyInFlight => "too many pings to that peer are awaiting answers",
            PingError::Timeout => "no answer within the ping timeout",
            PingError::PeerGone => "the peer disconnected before answering",
        })
    }
}

/// Something the application may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A handshake completed: `peer` is now a member of the peer table.
    PeerUp {
        /// The peer's id.
        peer: NodeId,
        /// The link it is reached over.
        link: LinkId,
        /// Its address as the transport sees it.
        addr: SocketAddr,
        /// Who dialed.
        direction: Direction,
    },
    /// A peer left the peer table.
    PeerDown {
        /// The peer's id.
        peer: NodeId,
        /// The link that carried it.
        link: LinkId,
        /// Why.
        reason: DownReason,
    },
    /// An outbound [`Node::connect`] failed.
    ConnectFailed {
        /// The link the attempt used.
        link: LinkId,
        /// The address dialed.
        addr: SocketAddr,
        /// Why.
        failure: ConnectFailure,
    },
    /// This node refused an inbound handshake.
    InboundRefused {
        /// The refused link.
        link: LinkId,
        /// The remote's address.
        addr: SocketAddr,
        /// The remote's (TLS-proven) id.
        peer: NodeId,
        /// Why.
        reason: RefuseReason,
    },
    /// An application ping got its answer, or failed.
    PingResult {
        /// The id [`Node::ping`] returned.
        id: PingId,
        /// The pinged peer.
        peer: NodeId,
        /// The round-trip time, or why there is none.
        result: Result<Duration, PingError>,
    },
    /// A DHT operation (started with one of the `dht_*` commands) finished.
    Dht(DhtEvent),
}

/// A peer in the peer table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's id.
    pub id: NodeId,
    /// The link it is reached over.
    pub link: LinkId,
    /// Its address as the transport sees it.
    pub addr: SocketAddr,
    /// Who dialed.
    pub direction: Direction,
    /// The addresses it says it listens on.
    pub listen_addrs: Vec<SocketAddr>,
    /// Its advertised roles.
    pub roles: Roles,
    /// The latest measured round-trip time, once a ping came back.
    pub rtt: Option<Duration>,
    /// When the handshake completed.
    pub since: Instant,
}

/// A Macula node's protocol state. See the [module documentation](self) for the contract.
///
/// The fields every input reads or writes come first, and `repr(C)` keeps them in that order:
/// they then share the first [`Node::HOT_BYTES`] rather than being spread over the whole node.
/// The first few links and timer entries sit inline, so a node with a handful of links keeps
/// nearly all it touches in one 3.5 KB stretch of memory. That matters when a host runs many
/// nodes (a simulation of a hundred thousand), where each input finds its node's state out of
/// the cache and out of the TLB; see [`Prefetch`].
#[repr(C)]
pub struct Node {
    // ---- hot: touched by nearly every input
    now: Instant,
    /// The DHT's `poll_timeout`, read after every call that could move it.
    dht_deadline: Instant,
    /// Gauge: records the DHT stores for others, read with its output.
    dht_records: usize,
    /// When each link next needs `handle_timeout`. An entry may be early (a deadline that moved
    /// later, such as the idle timeout after data arrived, is not re-filed) but never late.
    timers: Timers,
    transmits: VecDeque<Transmit>,
    /// Links with frames queued in their `out` buffer, in the order they got them.
    dirty: LinkQueue,
    events: VecDeque<Event>,
    /// Established peers and the link each is on.
    peers: BTreeMap<NodeId, LinkId>,
    traffic: Traffic,
    tuning: Tuning,
    next_ping: u64,
    /// The DHT; boxed, as most inputs (keep-alives, pings) never touch it.
    dht: Box<Dht>,
    closed: bool,
    /// Whether the DHT was called since its output was last read.
    dht_touched: bool,
    /// The links, last: their bookkeeping ends the hot fields, and the first few links follow
    /// it inline.
    links: Links,
    // ---- cold: handshakes, failures, commands
    config: Config,
    identity: Identity,
    rng: Rng,
    /// The counters other than `traffic`'s (whose fields here stay zero; [`Node::stats`]
    /// merges the two) and without the gauges, which are read off the tables.
    stats: Stats,
    /// Links being dialed for the DHT, and the frames waiting for each.
    dht_dials: BTreeMap<NodeId, DhtDial>,
    /// Peers whose link was closed as a duplicate while it was theirs: the DHT's requests to
    /// them are sent again once the other link is up. At most `max_peers`.
    relinked: BTreeSet<NodeId>,
}

/// The [`Config`] values that inputs read, copied beside the node's hot fields (a node's
/// configuration never changes): the `Config` itself, 300 bytes, would cost a cache line for
/// each of them.
#[derive(Clone, Copy)]
pub(super) struct Tuning {
    pub keepalive_interval: Duration,
    pub idle_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub ping_timeout: Duration,
    pub max_pings_in_flight: usize,
    pub max_queued_events: usize,
}

impl Tuning {
    fn of(config: &Config) -> Self {
        Tuning {
            keepalive_interval: config.keepalive_interval,
            idle_timeout: config.idle_timeout,
            pool_idle_timeout: config.pool_idle_timeout,
            ping_timeout: config.ping_timeout,
            max_pings_in_flight: config.max_pings_in_flight,
            max_queued_events: config.max_queued_events,
        }
    }
}

/// The counters of [`Stats`] that keep-alives and pings move, kept among the hot fields.
#[derive(Clone, Copy, Default)]
struct Traffic {
    frames_sent: u64,
    frames_received: u64,
    bytes_sent: u64,
    bytes_received: u64,
    pings_sent: u64,
    pongs_received: u64,
}

/// An on-demand link under way and what it will carry once up.
struct DhtDial {
    link: LinkId,
    frames: Vec<Frame>,
}

/// Most DHT frames held for one link being dialed; more are dropped (their requests time out).
const MAX_FRAMES_PER_DIAL: usize = 64;

/// A link used by the DHT this recently is never evicted to make room for another.
const POOL_MIN_IDLE: Duration = Duration::from_secs(1);

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.identity.node_id())
            .field("links", &self.links.len())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with `identity`, all its randomness derived from `seed`, started at `now`.
    ///
    /// # Errors
    /// The [`ConfigError`] of [`Config::validate`].
    pub fn new(
        config: Config,
        identity: Identity,
        seed: u64,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = Rng::from_seed(seed);
        // Correlation ids start at a random point so two runs with different seeds differ on the
        // wire from the first ping; they are not secret (pongs come over authenticated links).
        let next_ping = rng.next_u64() >> 16;
        let dht = Box::new(Dht::new(
            config.dht.clone(),
            identity.node_id(),
            config.listen_addrs.clone(),
            rng.child_seed(),
            now,
        ));
        let dht_deadline = dht.poll_timeout().unwrap_or(Instant::NEVER);
        Ok(Node {
            now,
            dht_deadline,
            dht_records: 0,
            links: Links::default(),
            timers: Timers::default(),
            transmits: VecDeque::new(),
            dirty: LinkQueue::default(),
            events: VecDeque::new(),
            peers: BTreeMap::new(),
            traffic: Traffic::default(),
            tuning: Tuning::of(&config),
            next_ping,
            dht,
            closed: false,
            dht_touched: false,
            config,
            identity,
            rng,
            stats: Stats::default(),
            dht_dials: BTreeMap::new(),
            relinked: BTreeSet::new(),
        })
    }

    // ---------------------------------------------------------------- (A) getters

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Established peers, ordered by id.
    pub fn peers(&self) -> impl Iterator<Item = PeerInfo> + '_ {
        self.peers.keys().filter_map(|id| self.peer(id))
    }

    /// The ids of the established peers, ordered: [`Node::peers`] without building a
    /// [`PeerInfo`] (and copying its addresses) for each.
    pub fn peer_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }

    /// One established peer.
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
        })
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        let t = self.traffic;
        Stats {
            peers: self.peers.len(),
            pending_handshakes: self.pending_handshakes(),
            frames_sent: t.frames_sent,
            frames_received: t.frames_received,
            bytes_sent: t.bytes_sent,
            bytes_received: t.bytes_received,
            pings_sent: t.pings_sent,
            pongs_received: t.pongs_received,
            ..self.stats.clone()
        }
    }

    /// Gauge: established peers (cheaper than [`Node::stats`]).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Gauge: links whose handshake is under way.
    pub fn pending_count(&self) -> usize {
        self.pending_handshakes()
    }

    /// Gauge: records the DHT stores for others (cheaper than `dht().store().len()`).
    pub fn dht_records(&self) -> usize {
        self.dht_records
    }

    /// Gauge: events queued for the application.
    pub fn queued_events(&self) -> usize {
        self.events.len()
    }

    /// The DHT: its routing table, record store and [`stats`](Dht::stats).
    pub fn dht(&self) -> &Dht {
        &self.dht
    }

    /// The DHT key of `name` of `kind` in this node's realm.
    pub fn dht_key(&self, kind: KeyKind, name: &[u8]) -> KeyBytes {
        record_key(self.config.realm.as_str(), kind, name)
    }

    /// Whether [`Node::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The derived seed for a child component (the QUIC layer uses one); each call gives another.
    pub fn child_seed(&mut self) -> u64 {
        self.rng.child_seed()
    }

    fn pending_handshakes(&self) -> usize {
        self.links.len() - self.peers.len()
    }

    // ---------------------------------------------------------------- (C) commands

    /// Dials `addr`; `expected` names the node that must answer there. The outcome arrives as
    /// [`Event::PeerUp`] or [`Event::ConnectFailed`] for the returned link.
    pub fn connect(&mut self, addr: SocketAddr, expected: Option<NodeId>, now: Instant) -> LinkId {
        self.advance(now);
        let link = self.open_link(addr, expected, true);
        self.pump_dht();
        link
    }

    /// Starts an outbound link; `pinned` for the application's own.
    fn open_link(&mut self, addr: SocketAddr, expected: Option<NodeId>, pinned: bool) -> LinkId {
        let link = self.new_link_id();
        if self.closed {
            self.push_event(Event::ConnectFailed {
                link,
                addr,
                failure: ConnectFailure::Aborted(CloseCode::Goodbye),
            });
            return link;
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

    /// Pings an established peer; the round trip arrives as [`Event::PingResult`].
    ///
    /// # Errors
    /// [`PingError::NotConnected`] or [`PingError::TooManyInFlight`], at once.
    pub fn ping(&mut self, peer: &NodeId, now: Instant) -> Result<PingId, PingError> {
        self.advance(now);
        let link_id = *self.peers.get(peer).ok_or(PingError::NotConnected)?;
        let id = self.send_ping(link_id, true)?;
        Ok(PingId(id))
    }

    /// Finds the nodes closest to `target`: [`DhtEvent::NodesFound`] (or `Failed`).
    pub fn dht_find_node(&mut self, target: &NodeId, now: Instant) -> OpId {
        self.advance(now);
        let now = self.now;
        let op = self.dht_mut().find_node(target.0, now);
        self.pump_dht();
        op
    }

    /// Publishes `value` under `name` in this realm, at the closest nodes, republished until
    /// withdrawn: [`DhtEvent::Stored`] (or `Failed`).
    pub fn dht_put(&mut self, name: &[u8], value: Vec<u8>, now: Instant) -> OpId {
        let key = self.dht_key(KeyKind::Value, name);
        self.dht_put_key(key, value, now)
    }

    /// Finds the values published under `name` in this realm, one per publisher:
    /// [`DhtEvent::Got`] (or `Failed`).
    pub fn dht_get(&mut self, name: &[u8], now: Instant) -> OpId {
        let key = self.dht_key(KeyKind::Value, name);
        self.dht_get_key(key, now)
    }

    /// Announces that this node provides `name` (with `metadata`, at most
    /// [`DhtConfig::max_value_size`](crate::dht::DhtConfig::max_value_size) bytes), republished
    /// until withdrawn: [`DhtEvent::Stored`] (or `Failed`).
    pub fn dht_provide(&mut self, name: &[u8], metadata: Vec<u8>, now: Instant) -> OpId {
        let key = self.dht_key(KeyKind::Provider, name);
        self.dht_put_key(key, metadata, now)
    }

    /// Finds the nodes that provide `name`: [`DhtEvent::Got`], each record's publisher and
    /// addresses being a provider (or `Failed`).
    pub fn dht_find_providers(&mut self, name: &[u8], now: Instant) -> OpId {
        let key = self.dht_key(KeyKind::Provider, name);
        self.dht_get_key(key, now)
    }

    /// Withdraws this node's value or provider record under `name` and stops republishing it:
    /// [`DhtEvent::Stored`] (or `Failed`).
    pub fn dht_withdraw(&mut self, kind: KeyKind, name: &[u8], now: Instant) -> OpId {
        self.advance(now);
        let key = self.dht_key(kind, name);
        let now = self.now;
        let op = self.dht_mut().withdraw(key, now);
        self.pump_dht();
        op
    }

    /// [`Node::dht_put`] under a key made elsewhere (see [`Node::dht_key`]).
    pub fn dht_put_key(&mut self, key: KeyBytes, value: Vec<u8>, now: Instant) -> OpId {
        self.advance(now);
        let now = self.now;
        let op = self.dht_mut().put(key, value, now);
        self.pump_dht();
        op
    }

    /// [`Node::dht_get`] under a key made elsewhere (see [`Node::dht_key`]).
    pub fn dht_get_key(&mut self, key: KeyBytes, now: Instant) -> OpId {
        self.advance(now);
        let now = self.now;
        let op = self.dht_mut().get(key, now);
        self.pump_dht();
        op
    }

    /// Drops a peer with a clean goodbye. Returns whether it was connected.
    pub fn disconnect(&mut self, peer: &NodeId, now: Instant) -> bool {
        self.advance(now);
        match self.peers.get(peer) {
            Some(&link) => {
                self.close_link(link, CloseCode::Goodbye, now);
                true
            }
            None => false,
        }
    }

    /// Closes one link with `code` (transports use this when they must give up on a link, for
    /// example when its send buffer overflows). Unknown links are ignored.
    pub fn close_link(&mut self, link: LinkId, code: CloseCode, now: Instant) {
        self.advance(now);
        self.abort_link(link, code);
        self.pump_dht();
    }

    /// Leaves the mesh: every link is closed with a clean goodbye, and new links are refused.
    pub fn close(&mut self, now: Instant) {
        self.advance(now);
        self.closed = true;
        let links: Vec<LinkId> = self.links.ids().collect();
        for link in links {
            self.abort_link(link, CloseCode::Goodbye);
        }
        self.pump_dht();
    }

    // ---------------------------------------------------------------- (B) inputs

    /// The transport established an outbound link asked for by [`Transmit::Open`].
    pub fn handle_link_up(&mut self, link_id: LinkId, info: LinkInfo, now: Instant) {
        self.advance(now);
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
        link.exporter = info.exporter;
        link.last_heard = self.now;
        if info.remote_id == own {
            self.fail_outbound(link_id, ConnectFailure::SelfDial, CloseCode::UnexpectedPeer);
            self.pump_dht();
            return;
        }
        if let Some(expected) = expected.filter(|e| *e != info.remote_id) {
            let failure = ConnectFailure::UnexpectedPeer {
                expected,
                found: info.remote_id,
            };
            self.fail_outbound(link_id, failure, CloseCode::UnexpectedPeer);
            self.pump_dht();
            return;
        }
        let auth = self
            .config
            .api_key
            .as_ref()
            .map(|key| realm_proof(key, self.config.realm.as_str(), &own, &info.exporter));
        let connect = Frame::Connect(Connect {
            version: PROTOCOL_VERSION,
            node_id: own,
            realm: self.config.realm.as_str().into(),
            auth,
            listen_addrs: self.wire_listen_addrs(),
            roles: self.config.roles.0,
        });
        if let Some(link) = self.links.get_mut(link_id) {
            link.state = LinkState::AwaitingAck;
        }
        self.send_frame(link_id, &connect);
    }

    /// The transport accepted an inbound link. Returns the id the node gives it, or the code to
    /// close it with when the node has no room for another handshake (or is closed).
    ///
    /// # Errors
    /// The [`CloseCode`] to close the link with; the node has not kept it.
    pub fn handle_inbound(&mut self, info: LinkInfo, now: Instant) -> Result<LinkId, CloseCode> {
        self.advance(now);
        if self.closed {
            return Err(CloseCode::Goodbye);
        }
        if self.pending_handshakes() >= self.config.max_pending_handshakes {
            self.stats.handshake_slots_full += 1;
            return Err(CloseCode::Refused(RefuseReason::Capacity));
        }
        let link_id = self.new_link_id();
        let deadline = self.now + self.config.handshake_timeout;
        let mut link = Link::new(
            Direction::Inbound,
            info.remote_addr,
            LinkState::AwaitingConnect,
            deadline,
            self.config.max_frame_size,
        );
        link.remote = Some(info.remote_id);
        link.exporter = info.exporter;
        link.last_heard = self.now;
        self.links.insert(link_id, link);
        self.schedule(link_id);
        Ok(link_id)
    }

    /// Bytes arrived on a link's stream (any chunking).
    pub fn handle_link_data(&mut self, link_id: LinkId, bytes: &[u8], now: Instant) {
        self.advance(now);
        let Some(link) = self.links.get_mut(link_id) else {
            return;
        };
        if matches!(link.state, LinkState::Dialing { .. }) {
            // Data before the transport said the link is up: a transport bug, not the peer's.
            return;
        }
        link.last_heard = self.now;
        self.traffic.bytes_received += bytes.len() as u64;
        self.decode_frames(link_id, bytes);
        self.pump_dht();
    }

    fn decode_frames(&mut self, link_id: LinkId, mut input: &[u8]) {
        loop {
            let Some(link) = self.links.get_mut(link_id) else {
                return;
            };
            match link.decoder.next_frame_from(&mut input) {
                Ok(Some(frame)) => {
                    self.traffic.frames_received += 1;
                    self.handle_frame(link_id, frame);
                }
                Ok(None) => return,
                Err(err) => {
                    let code = match err {
                        DecodeError::FrameTooLarge { .. } => {
                            self.stats.oversized_frames += 1;
                            CloseCode::FrameTooLarge
                        }
                        _ => {
                            self.stats.malformed_frames += 1;
                            CloseCode::MalformedFrame
                        }
                    };
                    self.abort_link(link_id, code);
                    return;
                }
            }
        }
    }

    /// The transport lost a link (or could not open it).
    pub fn handle_link_down(&mut self, link_id: LinkId, error: LinkError, now: Instant) {
        self.advance(now);
        let Some(link) = self.links.get(link_id) else {
            return;
        };
        match link.state {
            LinkState::Dialing { .. } | LinkState::AwaitingAck => {
                let failure = match error {
                    LinkError::ClosedByPeer(CloseCode::Duplicate)
                        if link.remote.is_some_and(|r| self.peers.contains_key(&r)) =>
                    {
                        ConnectFailure::AlreadyConnected(link.remote.expect("checked above"))
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
            LinkState::AwaitingConnect => {
                self.take_link(link_id);
                self.stats.handshakes_abandoned += 1;
            }
            LinkState::Established(_) => self.forget_peer(link_id, DownReason::Link(error)),
        }
        self.pump_dht();
    }

    /// Time passed: runs keep-alives, timeouts and expiries due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        while let Some(link_id) = self.timers.pop_due(self.now, &mut self.links) {
            self.link_timers(link_id);
            self.schedule(link_id);
        }
        self.timers.prune(&self.links);
        if self.dht_deadline <= self.now {
            let now = self.now;
            self.dht_mut().handle_timeout(now);
        }
        self.pump_dht();
    }

    // ---------------------------------------------------------------- (D) outputs

    /// The next piece of work for the transport.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        while let Some(link_id) = self.dirty.pop_front() {
            if let Some(link) = self.links.get_mut(link_id) {
                link.dirty = false;
                if !link.out.is_empty() {
                    return Some(Transmit::Send {
                        link: link_id,
                        bytes: core::mem::take(&mut link.out),
                    });
                }
            }
        }
        None
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] must next be called; `None` if nothing is scheduled.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.transmits.is_empty() || !self.dirty.is_empty() || !self.events.is_empty() {
            return Some(self.now);
        }
        let links = self.timers.first().unwrap_or(Instant::NEVER);
        let due = links.min(self.dht_deadline);
        (due != Instant::NEVER).then_some(due)
    }

    // ---------------------------------------------------------------- internals

    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    /// Files the link's next deadline if it is earlier than the one on file.
    fn schedule(&mut self, link_id: LinkId) {
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
    fn take_link(&mut self, link_id: LinkId) -> Option<Link> {
        let link = self.links.remove(link_id)?;
        self.timers.prune(&self.links);
        Some(link)
    }

    fn new_link_id(&mut self) -> LinkId {
        self.links.next_id()
    }

    fn wire_listen_addrs(&self) -> Vec<WireAddr> {
        self.config
            .listen_addrs
            .iter()
            .take(MAX_LISTEN_ADDRS)
            .map(|a| WireAddr::from(*a))
            .collect()
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= self.tuning.max_queued_events {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    fn send_frame(&mut self, link_id: LinkId, frame: &Frame) {
        let Some(link) = self.links.get_mut(link_id) else {
            return;
        };
        let before = link.out.len();
        encode_into(frame, &mut link.out);
        self.traffic.frames_sent += 1;
        self.traffic.bytes_sent += (link.out.len() - before) as u64;
        if !link.dirty {
            link.dirty = true;
            self.dirty.push_back(link_id);
        }
    }

    /// Queues a ping on an established link. Returns its correlation id.
    fn send_ping(&mut self, link_id: LinkId, from_app: bool) -> Result<u64, PingError> {
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
        self.send_frame(link_id, &Frame::Ping(Ping { id }));
        self.schedule(link_id);
        Ok(id)
    }

    fn handle_frame(&mut self, link_id: LinkId, frame: Frame) {
        let Some(link) = self.links.get(link_id) else {
            return;
        };
        match (&link.state, frame) {
            (LinkState::AwaitingConnect, Frame::Connect(connect)) => {
                self.answer_connect(link_id, connect);
            }
            (LinkState::AwaitingAck, Frame::ConnectAck(ack)) => {
                self.complete_outbound(link_id, ack)
            }
            (LinkState::AwaitingAck, Frame::ConnectError(err)) => {
                self.stats.refused_by_peer.bump(err.reason);
                let message = truncate(err.message, 256);
                let failure = ConnectFailure::Refused {
                    reason: err.reason,
                    message,
                };
                self.fail_outbound(link_id, failure, CloseCode::Goodbye);
            }
            (LinkState::Established(_), Frame::Ping(ping)) => {
                self.send_frame(link_id, &Frame::Pong(ping));
            }
            (LinkState::Established(_), Frame::Pong(pong)) => self.handle_pong(link_id, pong.id),
            (LinkState::Established(est), frame) if frame.is_dht() => {
                let from = link.remote.expect("established links know their remote");
                let from_addr = dht_addr(link.addr, &est.listen_addrs).unwrap_or(link.addr);
                let now = self.now;
                if let Some(link) = self.links.get_mut(link_id) {
                    link.last_used = now;
                }
                self.dht_mut().handle_frame(&from, from_addr, frame, now);
            }
            _ => {
                self.stats.protocol_violations += 1;
                self.abort_link(link_id, CloseCode::ProtocolViolation);
            }
        }
    }

    fn answer_connect(&mut self, link_id: LinkId, connect: Connect) {
        let Some(link) = self.links.get(link_id) else {
            return;
        };
        let remote = link
            .remote
            .expect("inbound links get their remote id on creation");
        let addr = link.addr;
        let exporter = link.exporter;
        let refusal = if connect.version != PROTOCOL_VERSION {
            Some((
                RefuseReason::Version,
                alloc::format!(
                    "this node speaks protocol version {PROTOCOL_VERSION}, not {}",
                    connect.version
                ),
            ))
        } else if connect.node_id != remote {
            Some((
                RefuseReason::IdentityMismatch,
                "the node id in Connect is not the one your certificate proves".into(),
            ))
        } else if connect.realm != self.config.realm.as_str() {
            Some((
                RefuseReason::WrongRealm,
                alloc::format!(
                    "this node serves another realm than '{}'",
                    truncate(connect.realm, 64)
                ),
            ))
        } else if !self.credentials_ok(&connect, &exporter) {
            Some((
                RefuseReason::BadCredentials,
                "the realm's API key proof is missing or wrong".into(),
            ))
        } else if connect.listen_addrs.len() > MAX_LISTEN_ADDRS {
            self.stats.protocol_violations += 1;
            self.abort_link(link_id, CloseCode::ProtocolViolation);
            return;
        } else if !self.peers.contains_key(&remote)
            && self.peers.len() >= self.config.max_peers
            && !self.evict_one()
        {
            Some((
                RefuseReason::Capacity,
                alloc::format!(
                    "this node is at its limit of {} peers",
                    self.config.max_peers
                ),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = refusal {
            self.stats.refused_by_us.bump(reason);
            self.send_frame(
                link_id,
                &Frame::ConnectError(ConnectError { reason, message }),
            );
            self.flush_and_close(link_id, CloseCode::Refused(reason));
            self.push_event(Event::InboundRefused {
                link: link_id,
                addr,
                peer: remote,
                reason,
            });
            return;
        }
        if !self.resolve_duplicate(link_id, remote) {
            return;
        }
        let ack = Frame::ConnectAck(ConnectAck {
            version: PROTOCOL_VERSION,
            node_id: self.node_id(),
            listen_addrs: self.wire_listen_addrs(),
            roles: self.config.roles.0,
        });
        self.send_frame(link_id, &ack);
        self.establish(link_id, remote, connect.listen_addrs, Roles(connect.roles));
    }

    fn credentials_ok(&self, connect: &Connect, exporter: &[u8; 32]) -> bool {
        match (&self.config.api_key, &connect.auth) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(key), Some(proof)) => verify_realm_proof(
                key,
                self.config.realm.as_str(),
                &connect.node_id,
                exporter,
                proof,
            ),
        }
    }

    fn complete_outbound(&mut self, link_id: LinkId, ack: ConnectAck) {
        let Some(link) = self.links.get(link_id) else {
            return;
        };
        let remote = link
            .remote
            .expect("links awaiting an ack learned their remote at link-up");
        if ack.node_id != remote
            || ack.version != PROTOCOL_VERSION
            || ack.listen_addrs.len() > MAX_LISTEN_ADDRS
        {
            self.stats.protocol_violations += 1;
            self.fail_outbound(
                link_id,
                ConnectFailure::Aborted(CloseCode::ProtocolViolation),
                CloseCode::ProtocolViolation,
            );
            return;
        }
        let on_demand = link.on_demand();
        if on_demand
            && !self.peers.contains_key(&remote)
            && self.peers.len() >= self.config.max_peers
            && !self.evict_one()
        {
            // Inbound peers filled the table while this on-demand dial was under way.
            self.fail_outbound(
                link_id,
                ConnectFailure::Aborted(CloseCode::Goodbye),
                CloseCode::Goodbye,
            );
            return;
        }
        if !self.resolve_duplicate(link_id, remote) {
            return;
        }
        self.establish(link_id, remote, ack.listen_addrs, Roles(ack.roles));
    }

    /// When `remote` already has an established link, keeps one of the two so both ends agree:
    /// of two links in the same direction the newer wins (the peer reconnected). Two crossing
    /// links are a simultaneous dial only while the older one is young (established less than
    /// `handshake_timeout` ago): then the one dialed by the smaller node id wins. An older link
    /// always yields to the new one, since the peer that dialed again most likely restarted and
    /// the old link is dead. Returns whether `link_id` survives.
    fn resolve_duplicate(&mut self, link_id: LinkId, remote: NodeId) -> bool {
        let Some(&old) = self.peers.get(&remote) else {
            return true;
        };
        let Some(new_dir) = self.links.get(link_id).map(|l| l.direction) else {
            return false;
        };
        let old_dir = self.links.get(old).map(|l| l.direction);
        let old_is_young = self.links.get(old).is_some_and(|l| match &l.state {
            LinkState::Established(est) => self.now - est.since < self.config.handshake_timeout,
            _ => false,
        });
        let keep_new = match old_dir {
            None => true,
            Some(d) if d == new_dir => true,
            Some(_) if !old_is_young => true,
            Some(_) => {
                let dialer_of_new = if new_dir == Direction::Outbound {
                    self.node_id()
                } else {
                    remote
                };
                let dialer_of_old = if new_dir == Direction::Outbound {
                    remote
                } else {
                    self.node_id()
                };
                dialer_of_new < dialer_of_old
            }
        };
        self.stats.duplicate_links += 1;
        if keep_new {
            // The application's wish to keep the peer outlives the link that carried it.
            if self.links.get(old).is_some_and(|l| l.pinned) {
                if let Some(new) = self.links.get_mut(link_id) {
                    new.pinned = true;
                }
            }
            self.abort_link(old, CloseCode::Duplicate);
            true
        } else {
            if new_dir == Direction::Outbound {
                self.forget_outbound(link_id, ConnectFailure::AlreadyConnected(remote));
            }
            self.flush_and_close(link_id, CloseCode::Duplicate);
            false
        }
    }

    fn establish(&mut self, link_id: LinkId, remote: NodeId, addrs: Vec<WireAddr>, roles: Roles) {
        let now = self.now;
        let next_keepalive = now + self.tuning.keepalive_interval;
        let Some(link) = self.links.get_mut(link_id) else {
            return;
        };
        let listen_addrs: Vec<SocketAddr> = addrs.into_iter().map(SocketAddr::from).collect();
        let contact_addr = dht_addr(link.addr, &listen_addrs);
        link.state = LinkState::Established(link::Established {
            since: now,
            listen_addrs,
            roles,
            rtt: None,
            next_keepalive,
            pings: link::PingWindow::default(),
        });
        link.last_used = now;
        let addr = link.addr;
        let direction = link.direction;
        self.peers.insert(remote, link_id);
        self.schedule(link_id);
        self.stats.handshakes_completed += 1;
        self.push_event(Event::PeerUp {
            peer: remote,
            link: link_id,
            addr,
            direction,
        });
        // Frames the DHT queued for this peer while a link to it was being dialed.
        if let Some(dial) = self.dht_dials.remove(&remote) {
            for frame in &dial.frames {
                self.send_frame(link_id, frame);
            }
        }
        // Only a peer that listens somewhere can be a contact for others.
        if let Some(contact_addr) = contact_addr {
            self.dht_mut().peer_up(remote, contact_addr, now);
        }
        if self.relinked.remove(&remote) {
            self.dht_mut().relinked(&remote);
        }
    }

    fn handle_pong(&mut self, link_id: LinkId, id: u64) {
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

    fn link_timers(&mut self, link_id: LinkId) {
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
                for (id, from_app) in est.pings.expire(now) {
                    if from_app {
                        self.events.push_back(Event::PingResult {
                            id: PingId(id),
                            peer,
                            result: Err(PingError::Timeout),
                        });
                    }
                }
                if now >= est.next_keepalive {
                    est.next_keepalive = now + self.tuning.keepalive_interval;
                    // A full ping window already proves we are asking; skip this keep-alive.
                    let _ = self.send_ping(link_id, false);
                }
                self.trim_events();
            }
            LinkState::Dialing { .. } | LinkState::AwaitingAck => {
                if now >= link.deadline {
                    self.stats.handshake_timeouts += 1;
                    self.fail_outbound(
                        link_id,
                        ConnectFailure::Aborted(CloseCode::HandshakeTimeout),
                        CloseCode::HandshakeTimeout,
                    );
                }
            }
            LinkState::AwaitingConnect => {
                if now >= link.deadline {
                    self.stats.handshake_timeouts += 1;
                    self.abort_link(link_id, CloseCode::HandshakeTimeout);
                }
            }
        }
    }

    fn trim_events(&mut self) {
        while self.events.len() > self.tuning.max_queued_events {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
    }

    /// Ends an outbound attempt that has not completed: reports `failure` and closes with `code`.
    fn fail_outbound(&mut self, link_id: LinkId, failure: ConnectFailure, code: CloseCode) {
        self.forget_outbound(link_id, failure);
        self.flush_and_close(link_id, code);
    }

    fn forget_outbound(&mut self, link_id: LinkId, failure: ConnectFailure) {
        if let Some(link) = self.take_link(link_id) {
            let target = match link.state {
                LinkState::Dialing { expected } => expected,
                _ => link.remote,
            };
            if let Some(target) = target {
                self.dht_dial_failed(link_id, target, &failure);
            }
            self.stats.connect_failures += 1;
            self.push_event(Event::ConnectFailed {
                link: link_id,
                addr: link.addr,
                failure,
            });
        }
    }

    /// Closes a link in whatever state it is, reporting what the application needs to know.
    fn abort_link(&mut self, link_id: LinkId, code: CloseCode) {
        let Some(link) = self.links.get(link_id) else {
            return;
        };
        match link.state {
            LinkState::Established(_) => {
                self.forget_peer(link_id, DownReason::Local(code));
            }
            LinkState::Dialing { .. } | LinkState::AwaitingAck => {
                self.forget_outbound(link_id, ConnectFailure::Aborted(code));
            }
            LinkState::AwaitingConnect => {
                self.take_link(link_id);
                self.stats.handshakes_abandoned += 1;
            }
        }
        self.flush_and_close(link_id, code);
    }

    /// Removes an established link and its peer, failing its pings.
    fn forget_peer(&mut self, link_id: LinkId, reason: DownReason) {
        let Some(link) = self.take_link(link_id) else {
            return;
        };
        let peer = link.remote.expect("established links know their remote");
        if self.peers.get(&peer) == Some(&link_id) {
            self.peers.remove(&peer);
            // A link replaced by a duplicate leaves the peer connected over the other one:
            // requests sent on it are answered there or time out, and the contact stays.
            let replaced = matches!(
                reason,
                DownReason::Local(CloseCode::Duplicate)
                    | DownReason::Link(LinkError::ClosedByPeer(CloseCode::Duplicate))
            );
            let goodbye = reason == DownReason::Link(LinkError::ClosedByPeer(CloseCode::Goodbye));
            if goodbye {
                // The peer closed a link idle on its side while our request was on its way:
                // the request goes again over a new link.
                self.dht_mut().peer_left_cleanly(&peer);
            } else if replaced {
                // Once the surviving link is up, what was in flight is sent again over it.
                if self.relinked.len() >= self.config.max_peers {
                    self.relinked.pop_first();
                }
                self.relinked.insert(peer);
            } else {
                let now = self.now;
                self.dht_mut().peer_down(&peer, now);
            }
        } else if self.peers.contains_key(&peer) {
            // The peer is up over the link that replaced this one.
            self.dht_mut().relinked(&peer);
        }
        if let LinkState::Established(est) = link.state {
            for (id, ping) in est.pings.into_inner() {
                if ping.from_app {
                    self.push_event(Event::PingResult {
                        id: PingId(id),
                        peer,
                        result: Err(PingError::PeerGone),
                    });
                }
            }
        }
        self.push_event(Event::PeerDown {
            peer,
            link: link_id,
            reason,
        });
        // Keep the link's queued bytes: `flush_and_close` may still deliver them.
        if !link.out.is_empty() {
            self.transmits.push_back(Transmit::Send {
                link: link_id,
                bytes: link.out,
            });
        }
    }

    /// Queues a link's pending bytes (if it is still known) and then its close.
    fn flush_and_close(&mut self, link_id: LinkId, code: CloseCode) {
        if let Some(link) = self.take_link(link_id) {
            if !link.out.is_empty() {
                self.transmits.push_back(Transmit::Send {
                    link: link_id,
                    bytes: link.out,
                });
            }
        }
        self.transmits.push_back(Transmit::Close {
            link: link_id,
            code,
        });
    }
}

impl Node {
    // ---------------------------------------------------------------- the DHT's links

    /// The DHT, for a call that may give it output or move its deadline: the next
    /// [`Node::pump_dht`] then reads them. Calls that don't touch it leave it out of the cache.
    fn dht_mut(&mut self) -> &mut Dht {
        self.dht_touched = true;
        &mut self.dht
    }

    /// Carries out what the DHT asked for and hands its results to the application. Every
    /// public mutating method ends with it.
    fn pump_dht(&mut self) {
        if !self.dht_touched {
            return;
        }
        self.dht_touched = false;
        while let Some(send) = self.dht.poll_send() {
            self.route_dht(send);
        }
        while let Some(event) = self.dht.poll_event() {
            self.push_event(Event::Dht(event));
        }
        self.dht_records = self.dht.store().len();
        // A closed node keeps no time: its operations have failed with its links.
        self.dht_deadline = if self.closed {
            Instant::NEVER
        } else {
            self.dht.poll_timeout().unwrap_or(Instant::NEVER)
        };
    }

    /// Sends a DHT frame over the peer's link, or dials the peer and holds the frame until the
    /// link is up. When there is no room for another link the peer's requests fail at once.
    fn route_dht(&mut self, send: dht::Send) {
        let now = self.now;
        if let Some(&link_id) = self.peers.get(&send.to) {
            if let Some(link) = self.links.get_mut(link_id) {
                link.last_used = now;
            }
            self.send_frame(link_id, &send.frame);
            return;
        }
        if !send.frame.is_dht_request() {
            // An answer to a peer whose link has gone meanwhile: nobody awaits it.
            self.stats.dht_frames_dropped += 1;
            return;
        }
        if let Some(dial) = self.dht_dials.get_mut(&send.to) {
            if dial.frames.len() < MAX_FRAMES_PER_DIAL {
                dial.frames.push(send.frame);
            } else {
                // Its request times out like any unanswered one.
                self.stats.dht_frames_dropped += 1;
            }
            return;
        }
        if self.closed || !self.make_room() {
            self.stats.dht_frames_dropped += 1;
            self.dht_mut().undeliverable(&send.to, now);
            return;
        }
        let link = self.open_link(send.addr, Some(send.to), false);
        self.dht_dials.insert(
            send.to,
            DhtDial {
                link,
                frames: alloc::vec![send.frame],
            },
        );
    }

    /// An outbound link failed before its handshake completed; if the DHT was waiting for it,
    /// its frames go over the link the peer turned out to have, or the DHT learns the outcome.
    fn dht_dial_failed(&mut self, link_id: LinkId, target: NodeId, failure: &ConnectFailure) {
        if self.dht_dials.get(&target).map(|d| d.link) != Some(link_id) {
            return;
        }
        let dial = self.dht_dials.remove(&target).expect("checked above");
        let now = self.now;
        match failure {
            ConnectFailure::AlreadyConnected(_) => match self.peers.get(&target).copied() {
                Some(link) => {
                    for frame in &dial.frames {
                        self.send_frame(link, frame);
                    }
                }
                None => self.dht_mut().undeliverable(&target, now),
            },
            // Reasons of this node's own, or a peer that is there but full: keep the contact.
            ConnectFailure::Aborted(CloseCode::Goodbye)
            | ConnectFailure::Refused {
                reason: RefuseReason::Capacity,
                ..
            } => self.dht_mut().undeliverable(&target, now),
            _ => self.dht_mut().unreachable(&target, now),
        }
    }

    /// Whether another on-demand link fits under `max_peers` and `max_pending_handshakes`,
    /// evicting the least recently used on-demand link if that makes room.
    fn make_room(&mut self) -> bool {
        if self.pending_handshakes() >= self.config.max_pending_handshakes {
            return false;
        }
        let fits = |n: &Node| n.peers.len() + n.dht_dials.len() < n.config.max_peers;
        fits(self) || (self.evict_one() && fits(self))
    }

    /// Closes the on-demand link (one this node opened for the DHT) that was used least
    /// recently, and not within [`POOL_MIN_IDLE`]. Links the application asked for, here or at
    /// the remote end, are never evicted. Returns whether there was one.
    fn evict_one(&mut self) -> bool {
        let now = self.now;
        let victim = self
            .peers
            .values()
            .filter_map(|&id| {
                let link = self.links.get(id)?;
                (link.on_demand() && link.last_used + POOL_MIN_IDLE <= now)
                    .then_some((link.last_used, id))
            })
            .min();
        let Some((_, link)) = victim else {
            return false;
        };
        self.stats.pool_evictions += 1;
        self.abort_link(link, CloseCode::Goodbye);
        true
    }
}

/// Where others can reach a peer seen at `seen`: its first listen address, with the address the
/// link came from when it listens on every interface (`0.0.0.0:port`). `None` if it listens
/// nowhere.
fn dht_addr(seen: SocketAddr, listen_addrs: &[SocketAddr]) -> Option<SocketAddr> {
    let first = *listen_addrs.first()?;
    Some(if first.ip().is_unspecified() {
        SocketAddr::new(seen.ip(), first.port())
    } else {
        first
    })
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
