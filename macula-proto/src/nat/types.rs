//! NAT traversal's events, errors and counters.

use core::fmt;

use super::profile::NatProfile;

/// A NAT outcome, for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatEvent {
    /// Detection finished: the node's profile.
    Detected(NatProfile),
    /// Detection could not finish.
    DetectFailed(DetectError),
    /// The link to `peer`, relayed until now, runs `path` (an upgrade worked).
    PathChanged {
        /// The peer.
        peer: crate::NodeId,
        /// Its link's path now.
        path: super::PathKind,
    },
}

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
}
