//! NAT traversal: what a NAT does to a node's traffic, and how two nodes behind NATs get a
//! link anyway.
//!
//! - [`NatProfile`]: the RFC 4787 classes of the NAT in front of a node (mapping, filtering,
//!   port allocation, hairpinning) and its public address.
//! - [`decide()`]: the decision table, direct, hole punch or relay, from two profiles.
//! - [`Nat`]: the subsystem that detects a node's profile and observes others'
//!   ([`probe`] has the raw datagrams it sends outside QUIC, [`messages`] those over links).

mod api;
pub mod classify;
mod config;
pub mod decide;
pub mod machine;
pub mod messages;
pub mod probe;
mod profile;
pub mod punch;
pub mod reach;
pub mod relay;
#[cfg(test)]
mod tests;
mod types;

pub use config::NatConfig;
pub use decide::{decide, Approach, Side};
pub(crate) use machine::is_private;
pub use machine::Nat;
pub use messages::{NatMessage, RelayRefusal};
pub use probe::Probe;
pub use profile::{Allocation, Behavior, NatProfile, UnknownClass};
pub use reach::{record_name, NatRecord};
pub use relay::{circuit_addr, circuit_of, RelayStats};
pub use types::{DetectError, NatEvent, NatStats, ReachError, ReachId};

use core::fmt;

/// How a link to a peer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// Straight between the two nodes' addresses.
    Direct,
    /// Straight between the two nodes, through NAT mappings a coordinated hole punch opened.
    Punched,
    /// Through a gateway's relay circuit (still end-to-end QUIC and TLS).
    Relayed,
}

impl PathKind {
    /// Its name: `direct`, `punched` or `relayed`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Punched => "punched",
            PathKind::Relayed => "relayed",
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
