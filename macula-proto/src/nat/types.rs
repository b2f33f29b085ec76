//! NAT traversal's events, errors and counters.

use core::fmt;

use super::profile::NatProfile;

/// Names one reach ([`Node::nat_reach`](crate::Node::nat_reach)) until its outcome comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReachId(pub u64);

/// A NAT outcome, for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatEvent {
    /// Detection finished: the node's profile.
    Detected(NatProfile),
    /// Detection could not finish.
    DetectFailed(DetectError),
    /// A reach ([`Node::nat_reach`](crate::Node::nat_reach)) got a link to `peer`.
    Reached {
        /// The reach's id.
        id: ReachId,
        /// The peer.
        peer: crate::NodeId,
        /// How the link runs (a relayed one may upgrade later: see `PathChanged`).
        path: super::PathKind,
    },
    /// A reach failed.
    Unreachable {
        /// The reach's id.
        id: ReachId,
        /// The node it was for.
        peer: crate::NodeId,
        /// Why.
        why: ReachError,
    },
    /// The link to `peer`, relayed until now, runs `path` (an upgrade worked).
    PathChanged {
        /// The peer.
        peer: crate::NodeId,
        /// Its link's path now.
        path: super::PathKind,
    },
}

/// Why a node could not be reached by its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReachError {
    /// The DHT holds no NAT record for it (it never published one, or is gone).
    NoRecord,
    /// Its record names no way in: no profile, no gateway, no address.
    NoRoute,
    /// No link came up in time (the dial, the circuit or the handshake failed).
    Timeout,
    /// It is this node.
    Itself,
    /// As many reaches are under way as this node allows.
    Busy,
    /// A newer reach for the same node took its place.
    Superseded,
}

impl fmt::Display for ReachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReachError::NoRecord => "the node published no NAT record (unknown, or gone)",
            ReachError::NoRoute => {
                "the node's record names no way in (no profile, gateway or address)"
            }
            ReachError::Timeout => "no link came up in time",
            ReachError::Itself => "that is this node",
            ReachError::Busy => "too many reaches under way",
            ReachError::Superseded => "a newer reach for the same node took its place",
        })
    }
}

impl core::error::Error for ReachError {}

/// Why detection could not finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DetectError {
    /// No peer is reachable where it listens with an auxiliary socket, to observe this node.
    NoObserver,
    /// The observer knows no second observer at another address, and neither does this node.
    NoSecondObserver,
    /// The observers did not answer (lost, gone, or filtered).
    Unanswered,
}

impl fmt::Display for DetectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DetectError::NoObserver => {
                "no peer reachable where it listens (with an auxiliary socket) to observe this node"
            }
            DetectError::NoSecondObserver => {
                "no second observer at another address: detection needs two"
            }
            DetectError::Unanswered => "the observers did not answer",
        })
    }
}

impl core::error::Error for DetectError {}

/// NAT counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatStats {
    /// Detections started.
    pub detections: u64,
    /// Detections that failed.
    pub detections_failed: u64,
    /// Probes and filtering tests this node answered as an observer.
    pub probes_answered: u64,
    /// Answers this node sent as a helper.
    pub helped: u64,
    /// Probes, tests and help requests dropped for a spent budget.
    pub answers_limited: u64,
    /// Filtering tests for which this node knew no helper.
    pub no_helper: u64,
    /// Hole-punch datagrams received.
    pub punches_received: u64,
    /// Raw datagrams that were not well-formed NAT datagrams.
    pub malformed: u64,
    /// Packets this node's QUIC stack sent onto a circuit that were dropped (no such circuit,
    /// or the link to the gateway full).
    pub relayed_dropped: u64,
    /// Hole punches this node sent as a listener.
    pub punches: u64,
    /// Relayed links that became punched ones.
    pub upgraded_punched: u64,
    /// Relayed links that became direct ones (a dial a NAT let through without a punch).
    pub upgraded_direct: u64,
    /// Upgrades given up after every attempt (tried again later).
    pub upgrades_failed: u64,
    /// Relayed links this node opened that it reached again after their gateway went away
    /// (through another gateway, or directly).
    pub failovers: u64,
}
