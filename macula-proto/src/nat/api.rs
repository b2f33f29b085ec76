//! The node's NAT commands and its raw-datagram input.

use core::net::SocketAddr;

use super::machine::Nat;
use super::profile::NatProfile;
use super::types::NatStats;
use crate::node::{Node, Socket};
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
