//! The contract every subsystem keeps, and the context ([`Cx`]) the node lends it for a call.
//!
//! A subsystem (the DHT, later pub/sub, RPC, ...) is a sub-machine of the node. It never sees a
//! link, a channel or a timer heap: it names the node it wants to reach and the message, and
//! learns about peers through [`PeerChange`]s. The node calls it through five entry points and
//! drains what it asked for inside the same call, so no subsystem needs a pump:
//!
//! - [`Subsystem::on_peer`]: a peer that speaks its protocol came or went, or could not be
//!   reached for frames it sent;
//! - [`Subsystem::on_message`]: one of its messages arrived;
//! - [`Subsystem::on_timeout`]: its [`Subsystem::poll_timeout`] came due;
//! - [`Subsystem::on_ask`] / [`Subsystem::on_answer`]: a sibling's request, and the answer to
//!   one of its own.
//!
//! Each subsystem owns its messages (an enum implementing [`Message`]) in its own module and
//! its own RNG, seeded from the node's at creation.

use alloc::vec::Vec;
use core::net::SocketAddr;

use super::flow::Delivered;
use super::link_core::Core;
use super::{Data, Event, InboxId, LinkId, SendError};
use crate::config::Config;
use crate::id::{Identity, NodeId};
use crate::time::Instant;
use crate::wire::{decode_message, Encode, Message, MessageError, ProtocolId, RawFrame};

/// What a subsystem is made from.
pub(crate) struct Init<'a> {
    pub config: &'a Config,
    pub identity: &'a Identity,
    /// The subsystem's own seed, derived from the node's.
    pub seed: u64,
    pub now: Instant,
}

/// A peer a message came from: an established peer that speaks the protocol.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    pub id: NodeId,
    /// The link it came over (where a full inbox pauses reading; see [`Cx::deliver`]).
    pub link: LinkId,
}

/// Something that happened to a peer, as far as one protocol is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerChange {
    /// The handshake completed and the peer speaks this protocol. `contact` is where it
    /// listens (`None`: nowhere, so it can't be handed to others).
    Up {
        peer: NodeId,
        contact: Option<SocketAddr>,
    },
    /// The peer's link is gone.
    Down { peer: NodeId, why: Gone },
    /// The peer's link was replaced by a newer one (two links crossed): what was sent on the
    /// old one may be lost, and may be sent again now.
    Relinked { peer: NodeId },
    /// Frames this protocol sent to the peer with [`Cx::send`] were not delivered.
    Unreachable { peer: NodeId, why: Unreachable },
    /// The channel to the peer, full before, takes data again (see [`Cx::send_data`]).
    Writable { peer: NodeId },
}

/// Why a peer's link went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gone {
    /// Timed out, reset, or closed for a fault: the peer is most likely gone.
    Lost,
    /// The peer said goodbye (it is leaving, or closed a link idle on its side).
    Goodbye,
    /// This node closed it to make room or because it was idle: the peer is fine.
    Closed,
}

/// Why frames could not be delivered to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unreachable {
    /// Nobody (or somebody else) answered at the address: the peer is most likely gone.
    DialFailed,
    /// This node or the peer had no room for another link, or this node is closing: the peer
    /// may well be there.
    NoRoom,
    /// The peer does not speak this protocol.
    NotSpoken,
}

/// A request from one subsystem to a sibling; its answer comes back to the asker alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    /// An operation of the DHT.
    Dht(crate::dht::DhtAsk),
}

/// The answer to an [`Ask`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The outcome of a DHT operation.
    Dht(crate::dht::DhtEvent),
}

/// Names one ask of a subsystem; its answer carries it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ticket(pub u64);

/// The contract of a subsystem. See the [module documentation](self).
pub(crate) trait Subsystem {
    /// Its protocol on the wire.
    const PROTOCOL: ProtocolId;
    /// Its protocol's version: peers exchange its frames only when both speak the same one.
    const VERSION: u16;
    /// Its messages.
    type Message: Message;

    /// A new instance.
    fn new(init: &Init<'_>) -> Self;

    /// Whether a node with `config` runs it (and offers its protocol to peers).
    fn enabled(_config: &Config) -> bool {
        true
    }

    /// A peer that speaks the protocol came or went, or was unreachable.
    fn on_peer(&mut self, change: PeerChange, cx: &mut Cx<'_>);

    /// Reads a frame of its protocol as one of its messages. The default decodes it with
    /// postcard ([`decode_message`]); a subsystem may read its busiest message faster (by
    /// reusing what it decoded from an earlier frame, say) as long as the result is the same.
    fn decode(&self, frame: RawFrame<'_>) -> Result<Self::Message, MessageError> {
        decode_message(frame)
    }

    /// One of its messages arrived from an established peer.
    fn on_message(&mut self, from: Peer, message: Self::Message, cx: &mut Cx<'_>);

    /// Its deadline came due.
    fn on_timeout(&mut self, cx: &mut Cx<'_>);

    /// When [`Subsystem::on_timeout`] is next due.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Gauge: the records it keeps for other nodes (bounded by its configuration).
    fn stored(&self) -> usize {
        0
    }

    /// A sibling asks something of it; the answer goes back with [`Cx::answer`].
    fn on_ask(&mut self, _asker: ProtocolId, _ticket: Ticket, _ask: Ask, _cx: &mut Cx<'_>) {}

    /// The answer to one of its own asks.
    fn on_answer(&mut self, _ticket: Ticket, _answer: Answer, _cx: &mut Cx<'_>) {}
}

/// What a subsystem may do during a call: the node lends it for that call only.
pub(crate) struct Cx<'a> {
    core: &'a mut Core,
    protocol: ProtocolId,
}

impl<'a> Cx<'a> {
    pub(super) fn new(core: &'a mut Core, protocol: ProtocolId) -> Self {
        Cx { core, protocol }
    }

    /// The time of the call.
    pub fn now(&self) -> Instant {
        self.core.now()
    }

    /// This node's identity (to sign with).
    pub fn identity(&self) -> &Identity {
        self.core.identity()
    }

    /// Where this node listens, as it tells peers.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        self.core.listen_addrs()
    }

    /// Sends `message` to `to`. Without a link to it, dials `addr` and holds a bounded number
    /// of frames until the link is up. Frames that can't be delivered come back as
    /// [`PeerChange::Unreachable`], never synchronously.
    pub fn send<M: Encode>(&mut self, to: NodeId, addr: Option<SocketAddr>, message: &M) {
        debug_assert_eq!(
            M::PROTOCOL,
            self.protocol,
            "a subsystem sends its own messages"
        );
        self.core.send_to(to, addr, message);
    }

    /// Sends data (a message, a call, stream bytes: what a consumer waits for, as opposed to
    /// control and discovery) to `to`, dialing `addr` like [`Cx::send`]. Refused with
    /// [`SendError::Full`] while the channel to `to` has more than `Config::channel_backlog`
    /// waiting in the transport (the receiver is not reading): the caller holds it back and
    /// tries again after [`Event::Writable`].
    pub fn send_data<M: Encode>(
        &mut self,
        to: NodeId,
        addr: Option<SocketAddr>,
        message: &M,
    ) -> Result<(), SendError> {
        debug_assert_eq!(
            M::PROTOCOL,
            self.protocol,
            "a subsystem sends its own messages"
        );
        self.core.send_data_to(to, addr, message)
    }

    /// Hands `data`, which came in a message from `from`, to the application's inbox `inbox`,
    /// under the inbox's overflow policy (see [`flow`](super::flow)).
    pub fn deliver(&mut self, inbox: InboxId, from: Peer, data: Data) -> Delivered {
        self.core
            .deliver(inbox, Some(from), self.protocol.channel(), data)
    }

    /// Hands `data` that this node made itself (no channel to pause) to `inbox`: a full
    /// blocking inbox takes up to `max_peers` more, then drops like a dropping one.
    pub fn deliver_local(&mut self, inbox: InboxId, data: Data) -> Delivered {
        self.core
            .deliver(inbox, None, self.protocol.channel(), data)
    }

    /// The link a data send to `to` would go on at once (up, speaking this protocol, with
    /// room), for [`Cx::send_data_on`].
    pub fn data_link(&self, to: &NodeId) -> Option<LinkId> {
        self.core.data_link(to, self.protocol)
    }

    /// Sends a run of data messages over `link` (from [`Cx::data_link`]), in order, with one
    /// look-up of the link: as [`Cx::send_data`] each, for a subsystem that sends many
    /// messages to one node at once. The channel's room is not checked between them, so a run
    /// may overshoot it by the run's size: keep runs small (pub/sub's are at most 64 KiB).
    /// Returns how many were sent.
    pub fn send_data_on<M: Encode>(
        &mut self,
        link: LinkId,
        messages: impl IntoIterator<Item = M>,
    ) -> usize {
        debug_assert_eq!(
            M::PROTOCOL,
            self.protocol,
            "a subsystem sends its own messages"
        );
        self.core.send_data_on(link, messages)
    }

    /// Whether a data send to `to` would be taken now (see [`Cx::send_data`]).
    pub fn data_writable(&self, to: &NodeId) -> bool {
        self.core.data_writable(to, self.protocol)
    }

    /// The latest round trip measured to `to`, if a link to it is up and a ping came back.
    pub fn rtt(&self, to: &NodeId) -> Option<crate::time::Duration> {
        self.core.peer_rtt(to)
    }

    /// The link to `to`, if one is up.
    pub fn link_to(&self, to: &NodeId) -> Option<LinkId> {
        self.core.peers.get(to).copied()
    }

    /// Sends `message` to `to` if a link to it is up (an answer, which is not worth a dial).
    /// Returns whether it was sent.
    pub fn reply<M: Encode>(&mut self, to: NodeId, message: &M) -> bool {
        debug_assert_eq!(
            M::PROTOCOL,
            self.protocol,
            "a subsystem sends its own messages"
        );
        self.core.reply_to(to, message)
    }

    /// Hands `event` to the application.
    pub fn emit(&mut self, event: Event) {
        self.core.push_event(event);
    }

    /// Asks sibling `to` for something; the answer comes to [`Subsystem::on_answer`] with
    /// the returned ticket.
    pub fn ask(&mut self, to: ProtocolId, ask: Ask) -> Ticket {
        self.core.queue_ask(self.protocol, to, ask)
    }

    /// Answers a sibling's ask.
    pub fn answer(&mut self, asker: ProtocolId, ticket: Ticket, answer: Answer) {
        self.core.queue_answer(asker, ticket, answer);
    }

    /// What the peer table knows of `id`, if its link is up.
    pub fn peer(&self, id: &NodeId) -> Option<super::PeerInfo> {
        self.core.peer(id)
    }

    /// The address of every link this node has, up or still being opened (everywhere its
    /// main socket is sending to).
    pub fn link_addrs(&self) -> Vec<SocketAddr> {
        self.core.links.iter().map(|(_, l)| l.addr).collect()
    }

    /// Sends a raw UDP datagram (whose first byte has QUIC's fixed bit clear) from one of the
    /// transport's sockets.
    pub fn send_datagram(&mut self, socket: super::Socket, to: SocketAddr, bytes: Vec<u8>) {
        debug_assert!(super::is_raw_datagram(&bytes));
        self.core.send_datagram(socket, to, bytes);
    }

    /// Hands the transport a QUIC packet that came through a relay circuit, as if it arrived
    /// from `from` (the circuit's virtual address).
    pub fn relayed(&mut self, from: SocketAddr, bytes: Vec<u8>) {
        self.core
            .transmits
            .push_back(super::Transmit::Relayed { from, bytes });
    }

    /// The NAT subsystem could not reach `peer` by its id: the frames other subsystems sent
    /// it while it was being reached fail (as [`PeerChange::Unreachable`]).
    pub fn reach_failed(&mut self, peer: NodeId) {
        self.core.reach_failed(peer);
    }

    /// Says whether others can dial this node where it listens (its NAT lets them in). A
    /// node that can't be dialed publishes no addresses in its DHT records, so those who
    /// read them reach it by its id.
    pub fn set_dialable(&mut self, dialable: bool) {
        self.core.undialable = !dialable;
    }

    /// Where others can dial this node: where it listens, or nowhere behind a NAT that
    /// lets nobody in (see [`Cx::set_dialable`]).
    pub fn dialable_addrs(&self) -> &[SocketAddr] {
        if self.core.undialable {
            &[]
        } else {
            self.core.listen_addrs()
        }
    }

    /// Keeps the link to `peer` open even when unused (a gateway holding a reservation).
    pub fn keep_link(&mut self, peer: &NodeId) {
        if let Some(link) = self.core.peers.get(peer).copied() {
            if let Some(l) = self.core.links.get_mut(link) {
                l.pinned = true;
            }
        }
    }

    /// Drops every link to `addr` at once (its path is gone): the node reports them lost and
    /// the transport forgets their connections.
    pub fn drop_links_at(&mut self, addr: SocketAddr) {
        let at: Vec<LinkId> = self
            .core
            .links
            .iter()
            .filter(|(_, l)| l.addr == addr)
            .map(|(id, _)| id)
            .collect();
        for link in at {
            self.core.handle_link_down(link, super::LinkError::Reset);
            self.core.transmits.push_back(super::Transmit::Close {
                link,
                code: crate::wire::CloseCode::IdleTimeout,
            });
        }
    }

    /// Dials `addr` expecting `peer` there, even with a link to it up (a better path: the new
    /// link replaces the old one if it wins, see `resolve_duplicate`); `punched` marks it as
    /// made over a punched path.
    pub fn dial(&mut self, addr: SocketAddr, peer: NodeId, punched: bool) -> LinkId {
        // The new link is kept as the old one was: a link the peer dialed, or the
        // application's own, is not closed for being idle, and neither is its successor.
        let keep = self
            .core
            .peers
            .get(&peer)
            .and_then(|l| self.core.links.get(*l))
            .is_some_and(|l| !l.on_demand());
        let link = self.core.open_link(addr, Some(peer), keep);
        if let Some(l) = self.core.links.get_mut(link) {
            l.punched = punched;
        }
        link
    }

    /// Dials `addr` expecting `peer` there, for the application (kept open like one its own
    /// [`Node::connect`](super::Node::connect) made).
    pub fn connect(&mut self, addr: SocketAddr, peer: NodeId) -> LinkId {
        self.core.open_link(addr, Some(peer), true)
    }

    /// Marks the link to `peer` as made over a punched path.
    pub fn mark_punched(&mut self, peer: &NodeId) {
        if let Some(link) = self.core.peers.get(peer).copied() {
            if let Some(l) = self.core.links.get_mut(link) {
                l.punched = true;
            }
        }
    }

    /// How long a link's handshake may take.
    pub fn handshake_timeout(&self) -> crate::time::Duration {
        self.core.config().handshake_timeout
    }

    /// The peers up that speak this protocol.
    #[allow(dead_code)]
    pub fn peers(&self) -> Vec<(NodeId, LinkId)> {
        self.core.peers_speaking(self.protocol)
    }
}
