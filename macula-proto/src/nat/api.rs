//! The node's NAT commands and its raw-datagram input.

use core::net::SocketAddr;

use super::machine::Nat;
use super::profile::NatProfile;
use super::types::NatStats;
use crate::id::NodeId;
use crate::node::{LinkId, Node, Socket};
use crate::time::Instant;

impl Node {
    /// Starts detecting this node's NAT profile (unless a detection runs); the outcome comes as
    /// [`Event::Nat`](crate::Event::Nat). Needs a peer reachable at the address it listens on
    /// and a transport that sends [`Transmit::Datagram`](crate::Transmit::Datagram)s.
    pub fn nat_detect(&mut self, now: Instant) {
        self.run::<Nat, _>(now, |nat, cx| nat.start(cx));
    }

    /// The NAT profile detected last, while it is trusted
    /// ([`NatConfig::profile_ttl`](crate::nat::NatConfig::profile_ttl) after detection).
    pub fn nat_profile(&self) -> Option<NatProfile> {
        self.subsystem::<Nat>().profile(self.now())
    }

    /// Whether a NAT detection is running.
    pub fn nat_detecting(&self) -> bool {
        self.subsystem::<Nat>().detecting()
    }

    /// NAT counters.
    pub fn nat_stats(&self) -> NatStats {
        self.subsystem::<Nat>().stats()
    }

    /// Reaches `target` by its id: looks its NAT record up in the DHT and dials it, straight
    /// where the two profiles let a dial through, else through a relay circuit at one of its
    /// gateways (which upgrades itself where a punch can work). The outcome comes as
    /// [`NatEvent::Reached`](super::NatEvent::Reached) or
    /// [`NatEvent::Unreachable`](super::NatEvent::Unreachable) with the returned id.
    pub fn nat_reach(&mut self, target: NodeId, now: Instant) -> super::ReachId {
        super::ReachId(self.run::<Nat, _>(now, |nat, cx| nat.reach(target, cx)))
    }

    /// Relay counters and gauges (as a gateway, and of this node's own circuits).
    pub fn relay_stats(&self) -> super::RelayStats {
        self.subsystem::<Nat>().relay_stats()
    }

    /// Asks `gateway` (dialed at `addr` if there is no link to it) to hold a reservation for
    /// this node, so others can open circuits to it there. The link to a gateway holding one
    /// is kept open.
    pub fn relay_reserve(&mut self, gateway: NodeId, addr: Option<SocketAddr>, now: Instant) {
        self.run::<Nat, _>(now, |nat, cx| nat.reserve(gateway, addr, cx));
    }

    /// Opens a link to `target` through a relay circuit at `gateway` (dialed at `addr` if
    /// there is no link to it), where `target` holds a reservation. The link is end-to-end
    /// QUIC and TLS between the two nodes (the gateway forwards opaque packets) and reports
    /// like any other: [`Event::PeerUp`](crate::Event::PeerUp), or
    /// [`Event::ConnectFailed`](crate::Event::ConnectFailed) if the circuit is refused or the
    /// handshake fails. `None` if this node has as many circuits as it keeps
    /// ([`NatConfig::max_own_circuits`](super::NatConfig::max_own_circuits)).
    pub fn connect_relayed(
        &mut self,
        target: NodeId,
        gateway: NodeId,
        addr: Option<SocketAddr>,
        now: Instant,
    ) -> Option<LinkId> {
        let circuit =
            self.run::<Nat, _>(now, |nat, cx| nat.open_circuit(target, gateway, addr, cx))?;
        Some(self.connect(circuit, Some(target), now))
    }

    /// Input: the QUIC stack sends `packet` to a circuit's virtual address (see
    /// [`Transmit::Relayed`](crate::Transmit::Relayed) for the other way); it goes onto the
    /// circuit, or is dropped like a lost datagram.
    pub fn handle_relayed_packet(&mut self, to: SocketAddr, packet: &[u8], now: Instant) {
        self.run::<Nat, _>(now, |nat, cx| nat.send_relayed(to, packet, cx));
    }

    /// Input: a raw datagram (one for which [`is_raw_datagram`](crate::node::is_raw_datagram)
    /// holds) arrived on one of the transport's sockets from `from`.
    pub fn handle_datagram(
        &mut self,
        socket: Socket,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) {
        self.run::<Nat, _>(now, |nat, cx| nat.on_datagram(socket, from, bytes, cx));
    }
}
