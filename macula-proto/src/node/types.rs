//! The node's public vocabulary: ids, what the transport reports and is asked to do, events.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

#[cfg(doc)]
use super::Node;
#[cfg(doc)]
use crate::config::Config;
use crate::config::Roles;
use crate::dht::DhtEvent;
use crate::id::NodeId;
use crate::time::{Duration, Instant};
use crate::wire::{Channel, CloseCode, ProtocolId, ProtocolOffer, RefuseReason};

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
    /// Write `bytes` to one of the link's channels, after everything written on it before.
    /// Channels are independent: bytes of one never wait for another's.
    Send {
        /// The link.
        link: LinkId,
        /// The channel.
        channel: Channel,
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
    /// Send one raw UDP datagram (a NAT probe or an observer's answer) from one of the
    /// transport's sockets. Its first byte has QUIC's fixed bit (`0x40`) clear, so the receiver
    /// tells it from QUIC and hands it to [`Node::handle_datagram`]. A transport without such
    /// sockets drops it.
    Datagram {
        /// The socket to send from.
        socket: Socket,
        /// Where to.
        to: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// A QUIC packet that came through a relay circuit: hand it to the QUIC stack as if it
    /// arrived from `from`, the circuit's virtual address ([`is_circuit_addr`]). The stack's
    /// packets to such an address go back through [`Node::handle_relayed_packet`], not to a socket. A
    /// transport without QUIC drops it.
    Relayed {
        /// The circuit's virtual address.
        from: SocketAddr,
        /// The packet.
        bytes: Vec<u8>,
    },
}

/// Whether `addr` is the virtual address of a relay circuit: the QUIC stack's peer address
/// for a connection carried through a gateway (see [`Transmit::Relayed`]).
pub fn is_circuit_addr(addr: SocketAddr) -> bool {
    crate::nat::circuit_of(addr).is_some()
}

/// One of the UDP sockets of a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Socket {
    /// The socket QUIC uses: a probe from it opens the NAT mapping the node's links use.
    Main,
    /// A second socket on another port of the same address, so an observer can answer a probe
    /// from a port the prober never sent to (the filtering test of NAT detection).
    Auxiliary,
}

/// Whether a UDP datagram is a raw one for [`Node::handle_datagram`] (QUIC's fixed bit, `0x40`
/// of the first byte, clear) rather than a QUIC packet.
pub fn is_raw_datagram(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| b & 0x40 == 0)
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
    /// The certificate presented at a name dialed in production TLS mode was not accepted.
    Certificate(CertificateProblem),
}

/// Why a certificate presented at a name dialed in production TLS mode was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// It does not chain to a CA this node trusts.
    UnknownIssuer,
    /// It is not valid for the host name dialed.
    WrongName,
    /// It has expired or is not valid yet.
    Expired,
    /// Anything else: malformed, a key that is not Ed25519, a bad signature.
    Invalid,
}

impl fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertificateProblem::UnknownIssuer => {
                "its certificate is signed by a CA this node does not trust (unknown issuer)"
            }
            CertificateProblem::WrongName => {
                "its certificate is not valid for the host name dialed (wrong host name)"
            }
            CertificateProblem::Expired => "its certificate has expired or is not valid yet",
            CertificateProblem::Invalid => {
                "its certificate is not acceptable (malformed, not an Ed25519 node key, or a bad signature)"
            }
        })
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::DialFailed => f.write_str("could not establish a connection"),
            LinkError::ClosedByPeer(code) => write!(f, "closed by peer ({code})"),
            LinkError::TimedOut => f.write_str("transport timed out"),
            LinkError::Reset => f.write_str("transport failure"),
            LinkError::Certificate(problem) => write!(f, "TLS refused the node: {problem}"),
        }
    }
}

impl core::error::Error for LinkError {}

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
    /// Another key than the one pinned at the name dialed answered there (see
    /// [`crate::trust`]); the link was refused before the handshake went on.
    FingerprintMismatch {
        /// The name dialed.
        name: String,
        /// The key pinned there.
        pinned: NodeId,
        /// The key that answered.
        presented: NodeId,
    },
    /// The node answered without proving that it knows the realm's API key (this node has
    /// one): it may know only the realm's name. The link was closed.
    ListenerUnproven,
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
            ConnectFailure::FingerprintMismatch {
                name,
                pinned,
                presented,
            } => write!(
                f,
                "the key at {name} is not the one pinned there: pinned {}, presented {} \
                 (if the change is expected, revoke the pin)",
                crate::Fingerprint(*pinned),
                crate::Fingerprint(*presented)
            ),
            ConnectFailure::UnexpectedPeer { expected, found } => write!(
                f,
                "expected node {} but {} answered",
                expected.short(),
                found.short()
            ),
            ConnectFailure::SelfDial => f.write_str("the address is this node's own"),
            ConnectFailure::ListenerUnproven => f.write_str(
                "the node did not prove it knows the realm's API key (unproven listener)",
            ),
            ConnectFailure::AlreadyConnected(peer) => {
                write!(f, "already connected to {} over another link", peer.short())
            }
            ConnectFailure::Link(err) => write!(f, "{err}"),
            ConnectFailure::Aborted(code) => write!(f, "gave up: {code}"),
        }
    }
}

impl core::error::Error for ConnectFailure {}

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

impl core::error::Error for PingError {}

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
    /// Data sends to `peer` on `protocol` may go on: the transport took enough of what waited
    /// on that channel (see [`SendError::Full`]).
    Writable {
        /// The peer.
        peer: NodeId,
        /// The protocol whose channel drained.
        protocol: ProtocolId,
    },
    /// An inbox whose overflow policy is [`Overflow::DropNewest`] was full and dropped data:
    /// told once when dropping starts (and again after it next drains), with the inbox's total.
    DataDropped {
        /// The inbox.
        inbox: InboxId,
        /// Items it has dropped since it was opened.
        dropped: u64,
    },
    /// A pub/sub outcome.
    Pubsub(crate::pubsub::PubsubEvent),
    /// An RPC outcome.
    Rpc(crate::rpc::RpcEvent),
    /// A trust-on-first-use pin was made or removed, or a dial refused by one.
    Trust(crate::trust::TrustEvent),
    /// A NAT detection finished.
    Nat(crate::nat::NatEvent),
    /// The test-only echo protocol.
    #[cfg(feature = "test-protocols")]
    Echo(crate::echo::EchoEvent),
}

/// Names one inbox: a bounded queue of data (messages, calls, stream bytes) for one consumer.
/// See [`Node::take_data`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct InboxId(pub u32);

/// What an inbox does when data arrives and it is full.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Stop reading the channel the data came on until the consumer has taken half of what
    /// the inbox holds; the sender's transport fills and its data sends are held back with
    /// [`SendError::Full`]. Nothing is dropped. The default.
    #[default]
    Block,
    /// Drop what arrives while the inbox is full, count it, and tell the application with
    /// [`Event::DataDropped`]. The channel keeps flowing.
    DropNewest,
    /// Drop the oldest item to make room for what arrives (real-time data, where the latest
    /// matters most), count it, and tell the application with [`Event::DataDropped`]. The
    /// channel keeps flowing.
    DropOldest,
}

/// Data for the application, taken from an inbox with [`Node::take_data`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Data {
    /// A pub/sub message for a subscription.
    Message(crate::pubsub::Received),
    /// A call for a procedure this node serves.
    Request(crate::rpc::Request),
    /// The test-only echo protocol's bulk bytes.
    #[cfg(feature = "test-protocols")]
    Echo(crate::echo::EchoData),
}

/// Why a data send was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// More than [`Config::channel_backlog`] waits for the transport on that peer's channel
    /// (or the frames held for its dial are at their bound): send again after
    /// [`Event::Writable`] for the peer and protocol (or [`Event::PeerUp`] for a dial).
    Full,
    /// There is no link to the peer and no address to dial.
    NotConnected,
    /// The peer does not speak the protocol.
    NotSpoken,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full => "the channel to that peer is full; wait until it drains",
            SendError::NotConnected => "not connected to that peer and no address to dial",
            SendError::NotSpoken => "the peer does not speak that protocol",
        })
    }
}

impl core::error::Error for SendError {}

/// Why an inbox could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboxError {
    /// A capacity of zero, or above [`MAX_INBOX_CAPACITY`].
    Capacity(usize),
    /// The node already has [`MAX_INBOXES`] open.
    TooMany,
}

impl fmt::Display for InboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InboxError::Capacity(n) => write!(
                f,
                "an inbox holds between 1 and {MAX_INBOX_CAPACITY} items, not {n}"
            ),
            InboxError::TooMany => write!(f, "at most {MAX_INBOXES} inboxes may be open at once"),
        }
    }
}

impl core::error::Error for InboxError {}

/// Most items one inbox may be made to hold.
pub const MAX_INBOX_CAPACITY: usize = 65_536;

/// Most inboxes a node keeps open at once.
pub const MAX_INBOXES: usize = 4_096;

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
    /// The protocols it offered in the handshake, with their versions, sorted (the node
    /// exchanges those it runs too, at the same version).
    pub protocols: Vec<ProtocolOffer>,
    /// How the link runs: straight, over a punched path, or through a gateway's relay.
    pub path: crate::nat::PathKind,
}
