//! The pub/sub protocol's messages (protocol id 2), on pub/sub's own channel.
//!
//! A publisher sends each subscriber node its own copy of a message ([`Publish`]); the
//! subscriber node hands it to every local subscription it is meant for. At QoS 1 each
//! publisher keeps one *stream* per subscriber node: sequence numbers without gaps, which the
//! subscriber takes in order and acknowledges cumulatively ([`PubAck`]); the publisher sends
//! again what was not acknowledged. At QoS 0 the sequence number is the publisher's own
//! counter, used only to drop duplicates.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::wire::{bytes, decode_message, Encode, Message, MessageError, ProtocolId, RawFrame};

/// The pub/sub protocol's messages. The variant index is the message kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PubsubMessage {
    /// Kind 0. A message for the receiver's subscriptions. Answered by `PubAck` at QoS 1.
    Publish(Publish),
    /// Kind 1. Every QoS 1 message of the sender's stream up to `upto` was taken.
    PubAck(PubAck),
}

impl Message for PubsubMessage {
    const PROTOCOL: ProtocolId = ProtocolId::PUBSUB;
    const KINDS: u32 = 2;
}

/// Delivery guarantee of one message.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Qos {
    /// At most once: sent once, never acknowledged.
    #[default]
    AtMostOnce,
    /// At least once on the wire, each message acknowledged and sent again until it is or its
    /// deadline passes; receivers drop duplicates, so the application sees it once.
    AtLeastOnce,
}

impl Qos {
    /// The level as a number (0 or 1).
    pub fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }
}

/// A message to one subscriber node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    /// The publisher's start epoch ([`Config::start_epoch`](crate::Config::start_epoch)): a
    /// higher one is a restarted publisher, whose sequence numbers start again.
    pub epoch: u64,
    /// The delivery guarantee, which says what `seq` counts.
    pub qos: Qos,
    /// QoS 0: the publisher's message counter. QoS 1: the place in the publisher's stream to
    /// this node.
    pub seq: u64,
    /// QoS 1: the lowest sequence number the publisher may still send on the stream (it gave
    /// up on those below: the receiver stops waiting for them). QoS 0: zero.
    pub base: u64,
    /// Whether the message is for the receiver's subscriptions outside any queue group.
    pub plain: bool,
    /// The queue groups the publisher chose the receiver for, this message.
    pub groups: Vec<String>,
    /// The topic (the receiver checks it; shared, so that messages on one topic can hold
    /// the same text).
    #[serde(with = "shared_str")]
    pub topic: Arc<str>,
    /// Small key-value metadata.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The payload.
    #[serde(with = "bytes")]
    pub payload: Vec<u8>,
}

impl PubsubMessage {
    /// Reads `frame` exactly as [`decode_message`] does, but a publish whose topic has the
    /// bytes of `topic` shares that text: a stream of messages on one topic then costs no
    /// allocation and no UTF-8 check for it.
    pub(crate) fn decode_with(
        frame: RawFrame<'_>,
        topic: Option<&Arc<str>>,
    ) -> Result<Self, MessageError> {
        if frame.kind() != 0 {
            return decode_message(frame);
        }
        fn take<'a, T: Deserialize<'a>>(bytes: &mut &'a [u8]) -> Result<T, MessageError> {
            let (value, rest) =
                postcard::take_from_bytes(bytes).map_err(|_| MessageError::Malformed)?;
            *bytes = rest;
            Ok(value)
        }
        let mut b = frame.message;
        let _kind: u32 = take(&mut b)?;
        let epoch = take(&mut b)?;
        let qos = take(&mut b)?;
        let seq = take(&mut b)?;
        let base = take(&mut b)?;
        let plain = take(&mut b)?;
        let groups = take(&mut b)?;
        let text: &[u8] = take(&mut b)?;
        let topic = match topic {
            Some(known) if known.as_bytes() == text => known.clone(),
            _ => Arc::from(core::str::from_utf8(text).map_err(|_| MessageError::Malformed)?),
        };
        let headers = take(&mut b)?;
        let payload: &[u8] = take(&mut b)?;
        if !b.is_empty() {
            return Err(MessageError::Malformed);
        }
        Ok(PubsubMessage::Publish(Publish {
            epoch,
            qos,
            seq,
            base,
            plain,
            groups,
            topic,
            headers,
            payload: payload.to_vec(),
        }))
    }
}

/// Serde for a shared string: written as a string.
mod shared_str {
    use alloc::string::String;
    use alloc::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(text: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(deserializer).map(Arc::from)
    }
}

/// A [`PubsubMessage::Publish`] as a publisher sends it: the same bytes, encoded from the
/// message it keeps rather than from a copy of its topic and payload.
#[derive(Debug, Serialize)]
pub(crate) enum Outgoing<'a> {
    /// Kind 0, as [`PubsubMessage::Publish`].
    Publish(PublishRef<'a>),
}

impl Encode for Outgoing<'_> {
    const PROTOCOL: ProtocolId = ProtocolId::PUBSUB;
}

/// [`Publish`]'s fields, in its order, borrowed.
#[derive(Debug, Serialize)]
pub(crate) struct PublishRef<'a> {
    pub epoch: u64,
    pub qos: Qos,
    pub seq: u64,
    pub base: u64,
    pub plain: bool,
    pub groups: &'a [String],
    pub topic: &'a str,
    pub headers: &'a [(String, Vec<u8>)],
    #[serde(with = "bytes")]
    pub payload: &'a [u8],
}

/// A cumulative acknowledgement of a QoS 1 stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubAck {
    /// The publisher's epoch the stream belongs to.
    pub epoch: u64,
    /// Every message of the stream up to and including this sequence number was taken.
    pub upto: u64,
}
