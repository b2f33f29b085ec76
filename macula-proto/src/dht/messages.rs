//! The DHT protocol's messages (protocol id 1), on the DHT's own channel.
//!
//! Every request carries a correlation id that its answer echoes; a request gets exactly one
//! answer: the matching response, or [`Refused`].

use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::wire::{KeyBytes, Message, ProtocolId, WireAddr};

/// The DHT's messages. The variant index is the message kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DhtMessage {
    /// Kind 0. Which nodes do you know closest to `target`? Answered by `Nodes`.
    FindNode(FindNode),
    /// Kind 1. The records under `key` (a page of them), and the nodes you know closest to it.
    /// Answered by `Records`.
    FindValue(FindValue),
    /// Kind 2. The answer to `FindNode`.
    Nodes(Nodes),
    /// Kind 3. The answer to `FindValue`.
    Records(Records),
    /// Kind 4. Keep this record (published and signed by the sender) under `key`. Answered by
    /// `Ack` or `Refused`.
    Store(Store),
    /// Kind 5. Drop the sender's record under `key`. Answered by `Ack` or `Refused`.
    Withdraw(Withdraw),
    /// Kind 6. A `Store` or `Withdraw` was carried out.
    Ack(Ack),
    /// Kind 7. A request was refused; the requester should not wait for anything else.
    Refused(Refused),
}

impl Message for DhtMessage {
    const PROTOCOL: ProtocolId = ProtocolId::DHT;
    const KINDS: u32 = 8;
}

impl DhtMessage {
    /// Whether this is a request, which gets an answer (not itself an answer).
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            DhtMessage::FindNode(_)
                | DhtMessage::FindValue(_)
                | DhtMessage::Store(_)
                | DhtMessage::Withdraw(_)
        )
    }

    /// The correlation id.
    pub fn id(&self) -> u64 {
        match self {
            DhtMessage::FindNode(m) => m.id,
            DhtMessage::FindValue(m) => m.id,
            DhtMessage::Nodes(m) => m.id,
            DhtMessage::Records(m) => m.id,
            DhtMessage::Store(m) => m.id,
            DhtMessage::Withdraw(m) => m.id,
            DhtMessage::Ack(m) => m.id,
            DhtMessage::Refused(m) => m.id,
        }
    }
}

/// `FindNode`: a correlation id and a target id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindNode {
    /// The correlation id, echoed by the answer.
    pub id: u64,
    /// The id to find the closest nodes to.
    pub target: KeyBytes,
}

/// `FindValue`: a correlation id, a record key, and where in the key's records to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindValue {
    /// The correlation id, echoed by the answer.
    pub id: u64,
    /// The record key.
    pub key: KeyBytes,
    /// `None` for the first page; else the last publisher of the page before (records come
    /// ordered by publisher id).
    pub after: Option<NodeId>,
}

/// A node and one address it listens on, as DHT answers carry them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireContact {
    /// The node's id.
    pub id: NodeId,
    /// Where it listens.
    pub addr: WireAddr,
}

/// `Nodes`: the answer to `FindNode` (at most k contacts, closest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nodes {
    /// The `FindNode`'s correlation id.
    pub id: u64,
    /// The closest contacts the answerer knows.
    pub nodes: Vec<WireContact>,
}

/// An Ed25519 signature, 64 bytes on the wire.
pub type SignatureBytes = [[u8; 32]; 2];

/// A record as it travels: signed by its publisher over everything but `left_secs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    /// The publisher's Ed25519 public key; its SHA-256 is the publisher's node id.
    pub publisher_key: [u8; 32],
    /// Where the publisher listens (at most 16).
    pub addrs: Vec<WireAddr>,
    /// The value or provider metadata (bounded by the store's value size limit).
    #[serde(with = "crate::wire::bytes")]
    pub value: Vec<u8>,
    /// How long the publisher wants it kept, in seconds from when a holder receives it.
    pub ttl_secs: u32,
    /// The publisher's sequence number: a higher one replaces a lower one.
    pub seq: u64,
    /// The publisher's signature (see `docs/wire.md`).
    pub signature: SignatureBytes,
    /// Seconds the sender still keeps it (unsigned; at most `ttl_secs` is believed).
    pub left_secs: u32,
}

/// `Records`: the answer to `FindValue`: a page of the records under the key, and the closest
/// contacts the answerer knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// The `FindValue`'s correlation id.
    pub id: u64,
    /// Records under the key (empty if none), ordered by publisher id.
    pub records: Vec<WireRecord>,
    /// The closest contacts the answerer knows.
    pub nodes: Vec<WireContact>,
    /// Whether more records follow this page (ask again with `after`).
    pub more: bool,
}

/// `Store`: keep `record` under `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    /// The correlation id, echoed by `Ack` or `Refused`.
    pub id: u64,
    /// The record key.
    pub key: KeyBytes,
    /// The record; its publisher must be the sender.
    pub record: WireRecord,
}

/// `Withdraw`: drop the sender's record under `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdraw {
    /// The correlation id, echoed by `Ack` or `Refused`.
    pub id: u64,
    /// The record key.
    pub key: KeyBytes,
}

/// `Ack`: the request with this correlation id was carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The request's correlation id.
    pub id: u64,
}

/// `Refused`: the request with this correlation id was refused, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// The request's correlation id.
    pub id: u64,
    /// Why.
    pub reason: DhtRefusal,
}

/// Why a DHT request was refused. On the wire a plain number, so a newer peer can add reasons
/// an older one reads as [`DhtRefusal::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
#[non_exhaustive]
pub enum DhtRefusal {
    /// 0: the sender sent more requests than its rate allows; try another node or later.
    RateLimited,
    /// 1: the store holds as many records as it may.
    StoreFull,
    /// 2: the key has as many providers as it may.
    TooManyProviders,
    /// 3: the value is larger than the store accepts.
    ValueTooLarge,
    /// 4: the record's publisher is not the sender.
    NotPublisher,
    /// 5: the record's signature does not verify.
    BadSignature,
    /// 6: the store holds a record of the publisher with a higher sequence number.
    Stale,
    /// 7: the publisher holds as many records in this store as it may.
    PublisherQuota,
    /// A reason this build does not know.
    Other(u16),
}

impl DhtRefusal {
    /// The short name used in logs and stats.
    pub fn as_str(self) -> &'static str {
        match self {
            DhtRefusal::RateLimited => "rate_limited",
            DhtRefusal::StoreFull => "store_full",
            DhtRefusal::TooManyProviders => "too_many_providers",
            DhtRefusal::ValueTooLarge => "value_too_large",
            DhtRefusal::NotPublisher => "not_publisher",
            DhtRefusal::BadSignature => "bad_signature",
            DhtRefusal::Stale => "stale",
            DhtRefusal::PublisherQuota => "publisher_quota",
            DhtRefusal::Other(_) => "other",
        }
    }
}

impl From<u16> for DhtRefusal {
    fn from(code: u16) -> Self {
        match code {
            0 => DhtRefusal::RateLimited,
            1 => DhtRefusal::StoreFull,
            2 => DhtRefusal::TooManyProviders,
            3 => DhtRefusal::ValueTooLarge,
            4 => DhtRefusal::NotPublisher,
            5 => DhtRefusal::BadSignature,
            6 => DhtRefusal::Stale,
            7 => DhtRefusal::PublisherQuota,
            other => DhtRefusal::Other(other),
        }
    }
}

impl From<DhtRefusal> for u16 {
    fn from(reason: DhtRefusal) -> u16 {
        match reason {
            DhtRefusal::RateLimited => 0,
            DhtRefusal::StoreFull => 1,
            DhtRefusal::TooManyProviders => 2,
            DhtRefusal::ValueTooLarge => 3,
            DhtRefusal::NotPublisher => 4,
            DhtRefusal::BadSignature => 5,
            DhtRefusal::Stale => 6,
            DhtRefusal::PublisherQuota => 7,
            DhtRefusal::Other(code) => code,
        }
    }
}

impl fmt::Display for DhtRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DhtRefusal::Other(code) => write!(f, "refusal {code}"),
            other => f.write_str(other.as_str()),
        }
    }
}
