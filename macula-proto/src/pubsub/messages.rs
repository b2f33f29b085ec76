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
    /// Kind 2. Several messages on one topic in one frame, read as the `Publish`es it stands
    /// for.
    Run(Run),
}

impl Message for PubsubMessage {
    const PROTOCOL: ProtocolId = ProtocolId::PUBSUB;
    const KINDS: u32 = 3;
}

/// Most messages one [`Run`] may carry; a frame claiming more is malformed. (An empty payload
/// costs a byte on the wire and a `Vec` in memory: this bounds what one frame can make a
/// receiver allocate.)
pub const MAX_RUN_MESSAGES: usize = 4096;

/// Messages a publisher sends one node at once, on one topic, with consecutive sequence
/// numbers, none with headers and all for the receiver's subscriptions outside queue groups:
/// the topic and the fields they share are written once, each payload after them with its
/// length. Message `i` is the `Publish` with sequence number `first + i`, `plain` set, no
/// groups and no headers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// As [`Publish::epoch`].
    pub epoch: u64,
    /// As [`Publish::qos`], for every message.
    pub qos: Qos,
    /// The sequence number of the first message.
    pub first: u64,
    /// As [`Publish::base`], for every message.
    pub base: u64,
    /// The topic of every message.
    #[serde(with = "shared_str")]
    pub topic: Arc<str>,
    /// The payloads, in order (at most [`MAX_RUN_MESSAGES`]).
    #[serde(with = "byte_strings")]
    pub payloads: Vec<Vec<u8>>,
}

impl Run {
    /// The messages it stands for.
    pub fn into_publishes(self) -> impl Iterator<Item = Publish> {
        let Run {
            epoch,
            qos,
            first,
            base,
            topic,
            payloads,
        } = self;
        payloads
            .into_iter()
            .zip(first..)
            .map(move |(payload, seq)| Publish {
                epoch,
                qos,
                seq,
                base,
                plain: true,
                groups: Vec::new(),
                topic: topic.clone(),
                headers: Vec::new(),
                payload,
            })
    }
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
        fn take<'a, T: Deserialize<'a>>(bytes: &mut &'a [u8]) -> Result<T, MessageError> {
            let (value, rest) =
                postcard::take_from_bytes(bytes).map_err(|_| MessageError::Malformed)?;
            *bytes = rest;
            Ok(value)
        }
        let kind = frame.kind();
        if kind != 0 && kind != 2 {
            return decode_message(frame);
        }
        let mut b = frame.message;
        let _kind: u32 = take(&mut b)?;
        let epoch = take(&mut b)?;
        let qos = take(&mut b)?;
        let seq = take(&mut b)?;
        let base = take(&mut b)?;
        let shared_topic = |b: &mut &[u8]| -> Result<Arc<str>, MessageError> {
            let text: &[u8] = take(b)?;
            Ok(match topic {
                Some(known) if known.as_bytes() == text => known.clone(),
                _ => Arc::from(core::str::from_utf8(text).map_err(|_| MessageError::Malformed)?),
            })
        };
        if kind == 2 {
            let topic = shared_topic(&mut b)?;
            let count: usize = take(&mut b)?;
            if count > MAX_RUN_MESSAGES {
                return Err(MessageError::Malformed);
            }
            let mut payloads = Vec::with_capacity(count.min(b.len()));
            for _ in 0..count {
                let payload: &[u8] = take(&mut b)?;
                payloads.push(payload.to_vec());
            }
            if !b.is_empty() {
                return Err(MessageError::Malformed);
            }
            return Ok(PubsubMessage::Run(Run {
                epoch,
                qos,
                first: seq,
                base,
                topic,
                payloads,
            }));
        }
        let plain = take(&mut b)?;
        let groups = take(&mut b)?;
        let topic = shared_topic(&mut b)?;
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

/// Serde for a run's payloads: a sequence of byte strings.
mod byte_strings {
    use alloc::vec::Vec;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Bytes(#[serde(with = "crate::wire::bytes")] Vec<u8>);

    pub fn serialize<S: Serializer>(
        payloads: &[Vec<u8>],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(payloads.iter().map(super::AsBytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Vec<u8>>, D::Error> {
        let all: Vec<Bytes> = Vec::deserialize(deserializer)?;
        Ok(all.into_iter().map(|b| b.0).collect())
    }
}

/// A payload written as a byte string.
struct AsBytes<T>(T);

impl<T: AsRef<[u8]>> Serialize for AsBytes<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0.as_ref())
    }
}

/// A [`PubsubMessage`] as a publisher sends it: the same bytes, encoded from the messages it
/// keeps rather than from copies of their topics and payloads.
#[derive(Debug, Serialize)]
#[serde(bound = "")]
pub(crate) enum Outgoing<'a, P: Payloads = core::iter::Empty<&'a [u8]>> {
    /// Kind 0, as [`PubsubMessage::Publish`].
    Publish(PublishRef<'a>),
    /// Kind 1, as [`PubsubMessage::PubAck`].
    #[allow(dead_code)]
    PubAck(PubAck),
    /// Kind 2, as [`PubsubMessage::Run`].
    Run(RunRef<'a, P>),
}

impl<'a> Outgoing<'a> {
    /// A single message.
    pub fn publish(publish: PublishRef<'a>) -> Self {
        Outgoing::Publish(publish)
    }
}

/// Where a [`RunRef`] takes its payloads from: an iterator that can be walked again (serde
/// writes the count first, then each payload).
pub(crate) trait Payloads:
    Clone + ExactSizeIterator<Item = Self::Payload> + core::fmt::Debug
{
    /// A payload.
    type Payload: AsRef<[u8]>;
}

impl<P: AsRef<[u8]>, I: Clone + ExactSizeIterator<Item = P> + core::fmt::Debug> Payloads for I {
    type Payload = P;
}

/// [`Run`]'s fields, in its order, borrowed.
#[derive(Debug, Serialize)]
#[serde(bound = "")]
pub(crate) struct RunRef<'a, P: Payloads> {
    pub epoch: u64,
    pub qos: Qos,
    pub first: u64,
    pub base: u64,
    pub topic: &'a str,
    #[serde(serialize_with = "payloads")]
    pub payloads: P,
}

fn payloads<S: serde::Serializer, P: Payloads>(p: &P, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(p.clone().map(AsBytes))
}

impl<P: Payloads> Encode for Outgoing<'_, P> {
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
