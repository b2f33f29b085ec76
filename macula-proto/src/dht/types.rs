//! The DHT's public vocabulary: operation ids, outcomes, errors, counters, and what a sibling
//! may ask of it.

use alloc::vec::Vec;
use core::net::SocketAddr;

use super::store::Record;
use crate::id::NodeId;
use crate::time::Duration;
use crate::wire::KeyBytes;

/// Identifies one DHT operation of this node (a lookup, get, put, provide or withdraw).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Why an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DhtError {
    /// The routing table is empty: join the mesh first.
    NoPeers,
    /// The operation ran past `lookup_timeout`.
    Timeout,
    /// `max_operations` are under way.
    Busy,
    /// The value is over `max_value_size`.
    ValueTooLarge,
    /// `max_published` records are published already.
    TooManyPublished,
}

impl core::fmt::Display for DhtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DhtError::NoPeers => "no peers in the routing table (join the mesh first)",
            DhtError::Timeout => {
                "no answer within dht.lookup_timeout: check that the node has peers in the mesh"
            }
            DhtError::Busy => "max_operations DHT operations are under way: wait for one to finish",
            DhtError::ValueTooLarge => {
                "the value is larger than max_value_size: store a smaller value or a reference"
            }
            DhtError::TooManyPublished => {
                "max_published records are published already: withdraw one first"
            }
        })
    }
}

impl core::error::Error for DhtError {}

/// The outcome of an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DhtEvent {
    /// A find-node lookup finished.
    NodesFound {
        /// The operation.
        op: OpId,
        /// The closest nodes that answered, closest first.
        closest: Vec<(NodeId, SocketAddr)>,
        /// Hops to the closest one.
        hops: u8,
        /// Queries the lookup sent.
        queries: u32,
        /// How long it took.
        elapsed: Duration,
    },
    /// A get or find-providers finished; `records` is empty if none was found.
    Got {
        /// The operation.
        op: OpId,
        /// The records found, one per publisher (the newest), ordered by publisher.
        records: Vec<Record>,
    },
    /// A put, provide or withdraw finished: `acks` of the closest nodes confirmed it.
    Stored {
        /// The operation.
        op: OpId,
        /// How many nodes acknowledged.
        acks: usize,
    },
    /// An operation failed.
    Failed {
        /// The operation.
        op: OpId,
        /// Why.
        error: DhtError,
    },
}

impl DhtEvent {
    /// The operation this is the outcome of.
    pub fn op(&self) -> OpId {
        match self {
            DhtEvent::NodesFound { op, .. }
            | DhtEvent::Got { op, .. }
            | DhtEvent::Stored { op, .. }
            | DhtEvent::Failed { op, .. } => *op,
        }
    }
}

/// What a sibling subsystem may ask of the DHT; the answer is the operation's [`DhtEvent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DhtAsk {
    /// The closest nodes to a target.
    FindNode(KeyBytes),
    /// The provider records under a key, from every one of the closest nodes.
    FindProviders(KeyBytes),
    /// The provider records under a key from the first of the closest nodes that holds some
    /// (each holds every record it was given, so that is most often all of them): one node
    /// that answers is enough, however many of the others left.
    FindSomeProviders(KeyBytes),
    /// Publish (and keep republishing) a value under a key.
    Put(KeyBytes, Vec<u8>),
    /// Withdraw this node's record under a key.
    Withdraw(KeyBytes),
    /// Store every record this node publishes again now, signed anew (the addresses it can
    /// be dialed at changed). Not answered.
    Republish,
}

/// DHT counters and figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DhtStats {
    /// Lookups finished or timed out (every operation starts with one).
    pub lookups: u64,
    /// Lookups that found at least one node that answered.
    pub lookups_ok: u64,
    /// Lookups by hops to the closest node found (index 15 holds 15 and more).
    pub hops: [u64; 16],
    /// Queries sent by the lookups finished.
    pub lookup_queries: u64,
    /// Time the lookups finished took, summed.
    pub lookup_time: Duration,
    /// Requests this node sent.
    pub requests_sent: u64,
    /// Its requests that timed out or could not be delivered.
    pub requests_failed: u64,
    /// Lookup queries that did not answer within `stall_timeout` (the lookup went on
    /// without them; some answered later).
    pub requests_stalled: u64,
    /// Requests peers sent us.
    pub requests_received: u64,
    /// Peers' requests refused for their rate.
    pub rate_limited: u64,
    /// Peers' records stored.
    pub stores_accepted: u64,
    /// Peers' records refused (bounds, publisher, signature, sequence).
    pub stores_refused: u64,
    /// Records in answers whose signature did not verify; they were ignored.
    pub forged_records: u64,
    /// Answers that matched no request of ours (late, or not for us).
    pub stray_answers: u64,
}

impl DhtStats {
    /// Lookups that found someone, over lookups finished or timed out (1 when none did).
    pub fn success_ratio(&self) -> f64 {
        if self.lookups == 0 {
            1.0
        } else {
            self.lookups_ok as f64 / self.lookups as f64
        }
    }
}
