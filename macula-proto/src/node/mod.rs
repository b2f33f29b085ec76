//! The composition root of the core: a link core and one field per subsystem.
//!
//! A [`Node`] talks to other nodes over *links*: connections a transport opens (a QUIC
//! connection in [`quic`](crate::quic), a modelled pipe in the simulator), each carrying
//! several independent ordered *channels*. By the time a link is handed to the node the
//! transport has proven the remote's [`NodeId`] (TLS) and exported a per-connection secret
//! ([`LinkInfo::exporter`]); the node then runs the realm handshake on the control channel,
//! keeps the peer alive, and carries its subsystems' frames, each protocol on its own channel.
//! It never touches a socket.
//!
//! The link core ([`core`]) owns links, the handshake, keep-alive, the one timer heap and
//! sending to a node by its id. Every subsystem (the [DHT](crate::dht), later pub/sub, RPC,
//! ...) is a sub-machine with the same contract (`node/subsystem.rs`); the node hands them their
//! messages, peers and deadlines and drains what they asked for inside its own calls. The list
//! of subsystems is in `node/registry.rs`; `docs/architecture.md` describes the whole.
//!
//! # Method kinds
//!
//! - **(A) getters** on `&self`: [`Node::node_id`], [`Node::peers`], [`Node::stats`], ...
//! - **(B) inputs** from the transport and the clock: [`Node::handle_link_up`],
//!   [`Node::handle_inbound`], [`Node::handle_link_data`], [`Node::handle_link_down`],
//!   [`Node::handle_timeout`].
//! - **(C) commands** from the application: [`Node::connect`], [`Node::ping`],
//!   [`Node::disconnect`], [`Node::close`], the `dht_*` commands, ..., returning typed ids
//!   whose results arrive as events.
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

mod closing;
mod dial;
pub(crate) mod flow;
mod guard;
mod handshake;
pub mod layout;
mod link;
mod link_core;
mod pinning;
pub(crate) mod registry;
mod stats;
pub(crate) mod subsystem;
mod table;
#[cfg(test)]
mod tests;
mod types;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

use crate::config::{Config, ConfigError};
use crate::id::{Identity, NodeId};
use crate::rng::Rng;
use crate::time::Instant;
use crate::wire::{
    decode_message, Channel, CloseCode, Control, DecodeError, MessageError, ProtocolId,
};

use self::link_core::Core;
pub use flow::PAUSED_SLACK;
pub use layout::Prefetch;
use registry::{index_of, Incoming, Mask, Pick, Subsystems};
pub use stats::{RefusalCounts, Stats};
use subsystem::{Cx, Init};
pub use types::{is_circuit_addr, is_raw_datagram};
pub use types::{
    CertificateProblem, ConnectFailure, Data, Direction, DownReason, Event, InboxError, InboxId,
    LinkError, LinkId, LinkInfo, Overflow, PeerInfo, PingError, PingId, SendError, Socket,
    Transmit, MAX_INBOXES, MAX_INBOX_CAPACITY,
};

/// A Macula node's protocol state. See the [module documentation](self) for the contract, and
/// `docs/embedding.md` for driving a node from a loop of your own.
///
/// The minimal loop, over a transport that reaches nobody (it reports every dial as failed):
/// a command, then the outputs in order (transmits, events, the deadline), the inputs they
/// lead to, and time passing until the outcome comes.
///
/// ```
/// use macula_proto::{Config, Event, Identity, Instant, LinkError, Node, Realm, Transmit};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config::new(Realm::new("io.example.dev")?);
/// let mut now = Instant::ZERO;
/// let mut node = Node::new(config, Identity::from_seed(1), 7, now)?;
/// let link = node.connect("192.0.2.1:4433".parse()?, None, now); // (C) a command
/// let mut outcome = None;
/// while outcome.is_none() {
///     while let Some(transmit) = node.poll_transmit() {
///         if let Transmit::Open { link, .. } = transmit {
///             node.handle_link_down(link, LinkError::DialFailed, now); // (B) an input
///         }
///     }
///     while let Some(event) = node.poll_event() {
///         if let Event::ConnectFailed { link: l, failure, .. } = event {
///             outcome = (l == link).then_some(failure);
///         }
///     }
///     // A real driver sleeps until this deadline or the next input, whichever comes first.
///     if let Some(deadline) = node.poll_timeout() {
///         now = now.max(deadline);
///         node.handle_timeout(now);
///     }
/// }
/// println!("could not connect: {}", outcome.unwrap());
/// # Ok(()) }
/// ```
///
/// The link core comes first (see [`layout`] for why its fields are in the order they are);
/// the subsystems sit behind one pointer.
#[repr(C)]
pub struct Node {
    core: Core,
    subsystems: Box<Subsystems>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt(f)
    }
}

/// What a frame read off a channel turned out to be.
enum Read {
    Control(Result<Control, MessageError>),
    Subsystem(Result<(usize, Incoming), MessageError>),
    /// A protocol this node does not run.
    Unknown,
    /// The stream is broken; close with this code.
    Broken(CloseCode),
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
        let subsystems = Box::new(Subsystems::new(
            &Init {
                config: &config,
                identity: &identity,
                seed: 0,
                now,
            },
            &mut rng,
        ));
        let running = subsystems.enabled;
        let core = Core::new(config, identity, &mut rng, running, now);
        let mut node = Node { core, subsystems };
        node.core.touched = running;
        node.settle();
        Ok(node)
    }

    // ---------------------------------------------------------------- (A) getters

    /// The latest time the node was given.
    pub(crate) fn now(&self) -> Instant {
        self.core.now()
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.core.node_id()
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        self.core.identity()
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        self.core.config()
    }

    /// Established peers, ordered by id.
    pub fn peers(&self) -> impl Iterator<Item = PeerInfo> + '_ {
        self.core.peer_ids().filter_map(|id| self.core.peer(&id))
    }

    /// The ids of the established peers, ordered: [`Node::peers`] without building a
    /// [`PeerInfo`] (and copying its addresses) for each.
    pub fn peer_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.core.peer_ids()
    }

    /// One established peer.
    pub fn peer(&self, id: &NodeId) -> Option<PeerInfo> {
        self.core.peer(id)
    }

    /// The link core's counters and gauges (each subsystem has its own, such as
    /// [`Dht::stats`](crate::dht::Dht::stats)).
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// Gauge: established peers (cheaper than [`Node::stats`]).
    pub fn peer_count(&self) -> usize {
        self.core.peer_count()
    }

    /// Gauge: links whose handshake is under way.
    pub fn pending_count(&self) -> usize {
        self.core.pending_handshakes()
    }

    /// Gauge: the records this node keeps for others, in all its subsystems (cheaper than
    /// asking each, such as [`Node::dht_records`]).
    pub fn records_held(&self) -> usize {
        self.core.stored
    }

    /// Gauge: events queued for the application.
    pub fn queued_events(&self) -> usize {
        self.core.queued_events()
    }

    /// Whether [`Node::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// The protocols this node speaks besides the control protocol, with their versions.
    pub fn protocols(&self) -> alloc::vec::Vec<crate::wire::ProtocolOffer> {
        registry::offers(self.subsystems.enabled)
    }

    /// The derived seed for a child component (the QUIC layer uses one); each call gives another.
    pub fn child_seed(&mut self) -> u64 {
        self.core.child_seed()
    }

    /// A subsystem, to read.
    pub(crate) fn subsystem<S>(&self) -> &S
    where
        Subsystems: Pick<S>,
    {
        self.subsystems.pick_ref()
    }

    // ---------------------------------------------------------------- (C) commands

    /// Dials `addr`; `expected` names the node that must answer there. The outcome arrives as
    /// [`Event::PeerUp`] or [`Event::ConnectFailed`] for the returned link.
    ///
    /// Without `expected`, the address is a name the user supplied and trust on first use
    /// applies (see [`crate::trust`]): the key that answers must be the one pinned at the
    /// address, and the first one is pinned. [`Node::connect_name`] does the same for a name
    /// the application resolved itself.
    pub fn connect(&mut self, addr: SocketAddr, expected: Option<NodeId>, now: Instant) -> LinkId {
        self.core.advance(now);
        let link = self.core.open_link(addr, expected, true);
        if expected.is_none() {
            self.core.name_dial(link, alloc::format!("{addr}"));
        }
        self.settle();
        link
    }

    /// Dials `addr`, which `name` (a DNS name and port, say) resolved to: the key that answers
    /// is checked against, or pinned at, `name` rather than the address (see
    /// [`crate::trust`]).
    pub fn connect_name(&mut self, name: &str, addr: SocketAddr, now: Instant) -> LinkId {
        self.core.advance(now);
        let link = self.core.open_link(addr, None, true);
        self.core.name_dial(link, name.into());
        self.settle();
        link
    }

    /// Trusts `node` at `name` from now on, as if it had been found there (pins an adapter
    /// kept from an earlier run). No event. Returns `false` if `Config::max_pins` are kept
    /// already.
    pub fn trust_pin(&mut self, name: &str, node: NodeId) -> bool {
        self.core.pin(name, node)
    }

    /// Forgets the pin at `name` ([`TrustEvent::Revoked`](crate::trust::TrustEvent::Revoked));
    /// the next key found there is pinned. Returns the key that was pinned.
    pub fn trust_revoke(&mut self, name: &str, now: Instant) -> Option<NodeId> {
        self.core.advance(now);
        let node = self.core.revoke(name);
        self.settle();
        node
    }

    /// The name or address the application gave for `link`, while that dial is under way
    /// ([`Node::connect_name`], or [`Node::connect`] without an expected id): a transport
    /// verifying certificates by host name checks them against it.
    pub fn dial_name(&self, link: LinkId) -> Option<&str> {
        self.core.dial_name(link)
    }

    /// The trust-on-first-use pins.
    pub fn trust_pins(&self) -> &crate::trust::Pins {
        self.core.pins()
    }

    /// Pings an established peer; the round trip arrives as [`Event::PingResult`].
    ///
    /// # Errors
    /// [`PingError::NotConnected`] or [`PingError::TooManyInFlight`], at once.
    pub fn ping(&mut self, peer: &NodeId, now: Instant) -> Result<PingId, PingError> {
        self.core.advance(now);
        self.core.ping(peer)
    }

    /// Drops a peer with a clean goodbye. Returns whether it was connected.
    pub fn disconnect(&mut self, peer: &NodeId, now: Instant) -> bool {
        self.core.advance(now);
        let was = self.core.disconnect(peer);
        self.settle();
        was
    }

    /// Closes one link with `code` (transports use this when they must give up on a link, for
    /// example when its send buffer overflows). Unknown links are ignored.
    pub fn close_link(&mut self, link: LinkId, code: CloseCode, now: Instant) {
        self.core.advance(now);
        self.core.close_link(link, code);
        self.settle();
    }

    /// Leaves the mesh: every link is closed with a clean goodbye, and new links are refused.
    pub fn close(&mut self, now: Instant) {
        self.core.advance(now);
        self.subsystems.pubsub.close();
        self.run(now, |rpc: &mut crate::rpc::Rpc, cx| rpc.close(cx));
        self.core.close();
        self.settle();
    }

    /// Runs a command of subsystem `S` with the time of the call, then drains what it asked for.
    pub(crate) fn run<S, R>(&mut self, now: Instant, f: impl FnOnce(&mut S, &mut Cx<'_>) -> R) -> R
    where
        Subsystems: Pick<S>,
        S: subsystem::Subsystem,
    {
        self.core.advance(now);
        let index = index_of(S::PROTOCOL).expect("a listed subsystem");
        self.core.touched.0 |= 1 << index;
        let r = f(
            self.subsystems.pick(),
            &mut Cx::new(&mut self.core, S::PROTOCOL),
        );
        self.settle();
        r
    }

    // ---------------------------------------------------------------- the data path

    /// Opens an inbox: a queue of at most `capacity` data items for one consumer, which a
    /// subsystem fills (an echo inbox, later a subscription or a served procedure) and the
    /// application empties with [`Node::take_data`]. `overflow` says what happens when it is
    /// full; see [`Overflow`].
    ///
    /// # Errors
    /// [`InboxError`] for a capacity out of range or too many open inboxes.
    pub fn open_inbox(
        &mut self,
        capacity: usize,
        overflow: Overflow,
    ) -> Result<InboxId, InboxError> {
        self.core.open_inbox(capacity, overflow)
    }

    /// Closes an inbox, dropping what it holds; channels it paused flow again. Returns whether
    /// it was open.
    pub fn close_inbox(&mut self, inbox: InboxId, now: Instant) -> bool {
        self.core.advance(now);
        let before = self.core.resumed.len();
        let was = self.core.close_inbox(inbox);
        self.read_resumed(before);
        self.settle();
        was
    }

    /// The next item of `inbox`. Taking from a blocking inbox that was full lets the channels
    /// it paused flow again once it is half empty: frames they hold are read at once, and
    /// [`Node::poll_resumed`] tells the transport to read them again.
    pub fn take_data(&mut self, inbox: InboxId, now: Instant) -> Option<Data> {
        self.taking(now, |core| core.take_data(inbox))
    }

    /// Moves up to `max` items of `inbox`, oldest first, to the end of `out` (what
    /// [`Node::take_data`] would give one call at a time, for a consumer that takes many).
    /// Returns how many.
    pub fn take_data_into(
        &mut self,
        inbox: InboxId,
        max: usize,
        out: &mut Vec<Data>,
        now: Instant,
    ) -> usize {
        self.taking(now, |core| core.take_data_into(inbox, max, out))
    }

    /// Runs a take from an inbox, then lets what it resumed flow.
    fn taking<T>(&mut self, now: Instant, take: impl FnOnce(&mut Core) -> T) -> T {
        self.core.advance(now);
        let before = self.core.resumed.len();
        let taken = take(&mut self.core);
        if self.core.resumed.len() > before {
            self.read_resumed(before);
            self.settle();
        }
        taken
    }

    /// Gauge: items waiting in `inbox` (`None`: not open).
    pub fn inbox_len(&self, inbox: InboxId) -> Option<usize> {
        self.core.inbox_len(inbox)
    }

    /// The next inbox that went from empty to holding data (each is named once until emptied).
    #[must_use]
    pub fn poll_ready(&mut self) -> Option<InboxId> {
        self.core.poll_ready()
    }

    /// The next paused channel that flows again: the transport reads it once more.
    #[must_use]
    pub fn poll_resumed(&mut self) -> Option<(LinkId, Channel)> {
        self.core.poll_resumed()
    }

    /// Whether the node stopped reading `channel` of `link` because an inbox it feeds is full.
    /// The transport must not hand that channel's bytes to [`Node::handle_link_data`] until
    /// [`Node::poll_resumed`] names it (QUIC then holds them in the stream, and the peer's flow
    /// control holds back its sender). The node keeps at most one read of
    /// [`PAUSED_SLACK`] bytes beyond a whole frame, and closes a link whose transport hands it
    /// more.
    pub fn is_paused(&self, link: LinkId, channel: Channel) -> bool {
        self.core.is_paused(link, channel)
    }

    /// Whether a data send to `peer` on `protocol` would be taken now (see
    /// [`SendError::Full`]): a driver holding sends back retries them when this turns true.
    pub fn data_writable(&self, peer: &NodeId, protocol: ProtocolId) -> bool {
        self.core.data_writable(peer, protocol)
    }

    /// The transport reports whether the bytes waiting to be written on `channel` of `link`
    /// are above `Config::channel_backlog` (`blocked`), or back under half of it. While
    /// blocked, data sends on that channel answer [`SendError::Full`]; when it clears, the
    /// application hears [`Event::Writable`].
    pub fn handle_link_blocked(
        &mut self,
        link: LinkId,
        channel: Channel,
        blocked: bool,
        now: Instant,
    ) {
        self.core.advance(now);
        self.core.set_blocked(link, channel, blocked);
        self.settle();
    }

    // ---------------------------------------------------------------- (B) inputs

    /// The transport established an outbound link asked for by [`Transmit::Open`].
    pub fn handle_link_up(&mut self, link: LinkId, info: LinkInfo, now: Instant) {
        self.core.advance(now);
        self.core.handle_link_up(link, info);
        self.settle();
    }

    /// The transport accepted an inbound link. Returns the id the node gives it, or the code to
    /// close it with when the node has no room for another handshake (or is closed).
    ///
    /// # Errors
    /// The [`CloseCode`] to close the link with; the node has not kept it.
    pub fn handle_inbound(&mut self, info: LinkInfo, now: Instant) -> Result<LinkId, CloseCode> {
        self.core.advance(now);
        self.core.handle_inbound(info)
    }

    /// Bytes arrived on one of a link's channels (any chunking).
    ///
    /// Channels are independent, so a dialer may hear a subsystem's first frames before the
    /// `ConnectAck` that completes its handshake: it holds them (at most one frame's worth per
    /// channel) and reads them once the handshake is done.
    pub fn handle_link_data(&mut self, link: LinkId, channel: Channel, bytes: &[u8], now: Instant) {
        self.core.advance(now);
        if !self.core.accept_bytes(link, bytes.len()) {
            return;
        }
        let awaiting_ack = self.core.awaiting_ack(link);
        if awaiting_ack && channel != Channel::CONTROL {
            self.hold(link, channel, bytes);
        } else {
            self.read_frames(link, channel, bytes);
            if awaiting_ack && self.core.is_established(link) == Some(true) {
                self.read_held(link);
            }
        }
        self.settle();
    }

    /// The transport lost a link (or could not open it).
    pub fn handle_link_down(&mut self, link: LinkId, error: LinkError, now: Instant) {
        self.core.advance(now);
        self.core.handle_link_down(link, error);
        self.settle();
    }

    /// Time passed: runs keep-alives, timeouts and expiries due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.advance(now);
        let due = self.core.handle_timeout();
        if due != Mask::NONE && !self.core.is_closed() {
            let Node { core, subsystems } = self;
            let now = core.now();
            subsystems.each(|index, tenant| {
                if !due.has(index) {
                    return;
                }
                // Its entry fired: it is filed again below, whether or not it is due (its
                // deadline may have moved later since it was filed).
                core.touched.0 |= 1 << index;
                if tenant.poll_timeout().is_some_and(|t| t <= now) {
                    tenant.on_timeout(&mut Cx::new(core, tenant.protocol()));
                }
            });
        }
        self.settle();
    }

    // ---------------------------------------------------------------- (D) outputs

    /// The next piece of work for the transport.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.core.poll_transmit()
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.poll_event()
    }

    /// When [`Node::handle_timeout`] must next be called; `None` if nothing is scheduled.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    // ---------------------------------------------------------------- internals

    /// Checks what must hold between any two calls: the timer heap is never late for a link
    /// or a subsystem, its dead entries are bounded, and the tables are within their bounds.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.core.check_invariants();
        self.subsystems.rpc.check_invariants();
        if self.core.is_closed() {
            return;
        }
        let mut stored = 0;
        self.subsystems
            .each_ref(|_, tenant| stored += tenant.stored());
        assert_eq!(self.core.stored, stored, "the stored gauge is up to date");
        self.subsystems.each_ref(|index, tenant| {
            let filed = self.core.links.scheduled(LinkId::subsystem(index));
            if let Some(due) = tenant.poll_timeout() {
                assert!(
                    filed <= due,
                    "subsystem {index} filed at {filed:?}, due {due:?}"
                );
            }
        });
    }

    /// Keeps bytes that came on a subsystem's channel before the handshake completed.
    fn hold(&mut self, link: LinkId, channel: Channel, bytes: &[u8]) {
        let Some(state) = self.core.links.get_mut(link) else {
            return;
        };
        let limit = state.decoder.max_frame_size() as usize + crate::wire::MAX_PREFIX_LEN;
        match state.decoder(channel) {
            Some(decoder) if decoder.buffered() + bytes.len() <= limit => decoder.push(bytes),
            _ => self.core.violation(link, CloseCode::ProtocolViolation),
        }
    }

    /// Reads what [`Node::hold`] kept, now that the handshake is done.
    fn read_held(&mut self, link: LinkId) {
        let Some(state) = self.core.links.get(link) else {
            return;
        };
        let held: alloc::vec::Vec<Channel> = state
            .channels
            .iter()
            .flat_map(|c| c.iter())
            .filter(|c| c.decoder.buffered() > 0)
            .map(|c| c.channel)
            .collect();
        for channel in held {
            self.read_frames(link, channel, &[]);
        }
    }

    /// Reads the frames the channels that flow again (from index `from` of the resumed queue)
    /// kept while they were paused.
    fn read_resumed(&mut self, from: usize) {
        let resumed: alloc::vec::Vec<(LinkId, Channel)> =
            self.core.resumed.iter().skip(from).copied().collect();
        for (link, channel) in resumed {
            self.read_frames(link, channel, &[]);
        }
    }

    /// Reads the frames in `input` off `channel` of `link`, handing each to the control
    /// protocol or its subsystem. A channel paused meanwhile keeps the rest.
    fn read_frames(&mut self, link: LinkId, channel: Channel, mut input: &[u8]) {
        loop {
            let Node { core, subsystems } = self;
            let Some(state) = core.links.get_mut(link) else {
                return;
            };
            if channel != Channel::CONTROL && state.is_paused(channel) {
                if !input.is_empty() {
                    core.keep_paused(link, channel, input);
                }
                return;
            }
            let Some(decoder) = state.decoder(channel) else {
                core.violation(link, CloseCode::ProtocolViolation);
                return;
            };
            let read = match decoder.next_frame_from(&mut input) {
                Ok(None) => return,
                Ok(Some(raw)) if raw.protocol.channel() != channel => {
                    // Each protocol has its own channel; a frame on another would slip past
                    // that channel's pause.
                    Read::Broken(CloseCode::ProtocolViolation)
                }
                Ok(Some(raw)) if raw.protocol == ProtocolId::CONTROL => {
                    Read::Control(decode_message(raw))
                }
                Ok(Some(raw)) => match subsystems.decode(raw) {
                    Some(decoded) => Read::Subsystem(decoded),
                    None => Read::Unknown,
                },
                Err(DecodeError::FrameTooLarge { .. }) => Read::Broken(CloseCode::FrameTooLarge),
                Err(_) => Read::Broken(CloseCode::MalformedFrame),
            };
            match read {
                Read::Control(Ok(message)) => core.handle_control(link, message),
                Read::Subsystem(Ok((index, message))) => {
                    if let Some(from) = core.admit_subsystem_frame(link, index) {
                        subsystems.dispatch(from, message, core);
                    }
                }
                Read::Unknown => core.skip_frame(link),
                Read::Control(Err(err)) | Read::Subsystem(Err(err)) => {
                    let code = match err {
                        MessageError::UnknownKind(_) => CloseCode::UnknownKind,
                        _ => CloseCode::MalformedFrame,
                    };
                    core.violation(link, code);
                    return;
                }
                Read::Broken(code) => {
                    core.violation(link, code);
                    return;
                }
            }
        }
    }

    /// Hands subsystems what the core and their siblings queued for them until nothing is
    /// left, then files the deadlines of those that were called. Every mutating method ends
    /// with it: it is how the node drains its children inside its own calls.
    fn settle(&mut self) {
        let Node { core, subsystems } = self;
        while core.queued {
            if let Some((mask, change)) = core.notices.pop_front() {
                subsystems.each(|index, tenant| {
                    if mask.has(index) {
                        core.touched.0 |= 1 << index;
                        tenant.on_peer(change, &mut Cx::new(core, tenant.protocol()));
                    }
                });
                continue;
            }
            if let Some((asker, to, ticket, ask)) = core.asks.pop_front() {
                if let Some(index) = index_of(to) {
                    if let Some(tenant) = subsystems.at(index) {
                        core.touched.0 |= 1 << index;
                        tenant.on_ask(asker, ticket, ask, &mut Cx::new(core, to));
                    }
                }
                continue;
            }
            if let Some((asker, ticket, answer)) = core.answers.pop_front() {
                if let Some(index) = index_of(asker) {
                    if let Some(tenant) = subsystems.at(index) {
                        core.touched.0 |= 1 << index;
                        tenant.on_answer(ticket, answer, &mut Cx::new(core, asker));
                    }
                }
                continue;
            }
            core.queued = false;
        }
        let touched = core.touched;
        if touched != Mask::NONE {
            core.touched = Mask::NONE;
            let mut stored = subsystems.stored;
            subsystems.each(|index, tenant| {
                if touched.has(index) {
                    core.file_subsystem(index, tenant.poll_timeout());
                    stored[index] = tenant.stored();
                }
            });
            subsystems.stored = stored;
            core.stored = stored.iter().sum();
        }
    }
}
