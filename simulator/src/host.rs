//! What runs on a simulated node: a bare [`Node`] (frames mode) or a full QUIC [`Endpoint`].

use std::net::SocketAddr;

use macula_proto::quic::Endpoint;
use macula_proto::{Event, Instant, LinkId, Node, NodeId, PingError, PingId};

/// A frames-mode node sits inline: it is the hot state of a large run (see `SimNode`). QUIC
/// endpoints are far bigger and far fewer, so they are boxed.
///
/// `repr(u8)` fixes the layout: the tag (and `Option<Host>`'s, which uses the tag's spare
/// values) is the first byte, the node follows at [`Host::NODE_OFFSET`], and so the engine
/// knows where a node's hot fields are without reading anything.
#[allow(clippy::large_enum_variant)]
#[repr(u8)]
pub(crate) enum Host {
    Frames(Node),
    Quic(Box<Endpoint>),
}

impl Host {
    /// Where a frames-mode node starts in a `Host`.
    pub const NODE_OFFSET: usize = std::mem::align_of::<Node>();

    pub fn node(&self) -> &Node {
        match self {
            Host::Frames(n) => n,
            Host::Quic(e) => e.node(),
        }
    }

    pub fn connect(&mut self, addr: SocketAddr, expected: Option<NodeId>, now: Instant) -> LinkId {
        match self {
            Host::Frames(n) => n.connect(addr, expected, now),
            Host::Quic(e) => e.connect(addr, expected, now),
        }
    }

    pub fn ping(&mut self, peer: &NodeId, now: Instant) -> Result<PingId, PingError> {
        match self {
            Host::Frames(n) => n.ping(peer, now),
            Host::Quic(e) => e.ping(peer, now),
        }
    }

    pub fn disconnect(&mut self, peer: &NodeId, now: Instant) -> bool {
        match self {
            Host::Frames(n) => n.disconnect(peer, now),
            Host::Quic(e) => e.disconnect(peer, now),
        }
    }

    pub fn quic_stats(&self) -> Option<macula_proto::quic::EndpointStats> {
        match self {
            Host::Frames(_) => None,
            Host::Quic(e) => Some(e.stats()),
        }
    }

    pub fn command<R>(&mut self, now: Instant, f: impl FnOnce(&mut Node, Instant) -> R) -> R {
        match self {
            Host::Frames(n) => f(n, now),
            Host::Quic(e) => e.with_node(now, f),
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Host::Frames(n) => n.poll_timeout(),
            Host::Quic(e) => e.poll_timeout(),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            Host::Frames(n) => n.handle_timeout(now),
            Host::Quic(e) => e.handle_timeout(now),
        }
    }

    /// Whether [`Host::poll_event`] may have something: a frames-mode node is asked for the
    /// length of its queue, so that the engine does not call out for the `None` that ends
    /// every drain (that `None` comes back as a two-byte store the caller reads eight bytes
    /// of, which the CPU cannot forward: the read waits for every store before it, cache
    /// misses included, about a tenth of a 100,000-node run). An endpoint is simply asked.
    pub fn may_have_event(&self) -> bool {
        match self {
            Host::Frames(n) => n.queued_events() > 0,
            Host::Quic(_) => true,
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        match self {
            Host::Frames(n) => n.poll_event(),
            Host::Quic(e) => e.poll_event(),
        }
    }
}
