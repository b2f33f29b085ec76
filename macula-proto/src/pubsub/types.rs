//! Pub/sub's public vocabulary: ids, options, outcomes, errors, what subscribers receive, and
//! counters.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::messages::Qos;
use super::topic::{Topic, TopicError};
use crate::id::NodeId;
use crate::node::{InboxError, InboxId, Overflow};
use crate::time::Duration;

/// Names one subscription of this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(pub u64);

/// Names one publish of this node whose outcome comes later, as [`PubsubEvent::Published`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublishId(pub u64);

/// How a subscription receives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// The queue group: each message goes to one member of the group (per publisher, spread
    /// across members) instead of to every subscriber. Default: none.
    pub group: Option<String>,
    /// Messages its inbox holds before `overflow` applies. Default: 1,024.
    pub capacity: usize,
    /// What a full inbox does. [`Overflow::Block`] (the default) slows the publishers down and
    /// loses nothing; [`Overflow::DropNewest`] keeps them going and counts what it drops.
    pub overflow: Overflow,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            group: None,
            capacity: 1024,
            overflow: Overflow::Block,
        }
    }
}

impl SubscribeOptions {
    /// Options for a member of queue group `group`.
    pub fn group(group: impl Into<String>) -> Self {
        SubscribeOptions {
            group: Some(group.into()),
            ..SubscribeOptions::default()
        }
    }

    /// With an inbox of `capacity` messages.
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// With `overflow` as what a full inbox does.
    #[must_use]
    pub fn with_overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }
}

/// A subscription: its id, and the inbox its messages arrive in (as [`Data::Message`]).
///
/// [`Data::Message`]: crate::Data::Message
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscribed {
    /// The subscription.
    pub id: SubscriptionId,
    /// Its inbox, to read with [`Node::take_data`](crate::Node::take_data).
    pub inbox: InboxId,
}

/// How a message is published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishOptions {
    /// The delivery guarantee. Default: QoS 0.
    pub qos: Qos,
    /// Small key-value metadata.
    pub headers: Vec<(String, Vec<u8>)>,
    /// QoS 1: how long the message is tried for; `None` is
    /// [`PubsubConfig::deadline`](super::PubsubConfig::deadline).
    pub deadline: Option<Duration>,
}

impl PublishOptions {
    /// Options for QoS `qos` and nothing else.
    pub fn qos(qos: Qos) -> Self {
        PublishOptions {
            qos,
            ..PublishOptions::default()
        }
    }

    /// With a header `key` = `value` added.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// QoS 1: tried for `deadline` instead of the configured default.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

/// What became of a publish, at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publishing {
    /// QoS 0, and the topic's subscribers were known: sent to this many subscriber nodes
    /// (this node counts as one when it subscribes too). Zero is a success: nobody subscribes.
    Sent {
        /// Subscriber nodes it went to.
        subscribers: usize,
    },
    /// The outcome comes as [`PubsubEvent::Published`] with this id: the message waits for
    /// its topic's discovery or for room at a subscriber, or is QoS 1 and waits for acks.
    Pending(PublishId),
}

/// Why a publish was refused. Nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic breaks a rule.
    Topic(TopicError),
    /// Topic, headers and payload come to `size` bytes, more than `max`
    /// ([`PubsubConfig::max_message_size`](super::PubsubConfig::max_message_size)).
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// More headers, or more header bytes, than the configuration allows.
    Headers,
    /// The publisher holds as many messages as it may (waiting for discovery, for a slow
    /// subscriber, or for acks): publish again after [`PubsubEvent::Ready`].
    Full,
    /// The node is closed.
    Closed,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Topic(e) => write!(f, "invalid topic: {e}"),
            PublishError::TooLarge { size, max } => write!(
                f,
                "the message is {size} bytes (topic, headers and payload); the most is {max}"
            ),
            PublishError::Headers => f.write_str(
                "too many headers or header bytes (see pubsub.max_headers and \
                 pubsub.max_header_bytes)",
            ),
            PublishError::Full => f.write_str(
                "the publisher holds as many messages as it may (a subscriber is slow or \
                 acks are outstanding): publish again once there is room",
            ),
            PublishError::Closed => f.write_str("the node is closed"),
        }
    }
}

impl core::error::Error for PublishError {}

/// Why a subscription was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The pattern breaks a rule.
    Pattern(TopicError),
    /// The queue group's name breaks a rule (1 to 64 bytes, no `.`, `*`, whitespace or control
    /// characters).
    Group,
    /// The node has [`PubsubConfig::max_subscriptions`](super::PubsubConfig::max_subscriptions)
    /// already.
    TooMany,
    /// The patterns announced under this pattern's literal prefix would not fit in one DHT
    /// record (`dht.max_value_size`): subscribe with fewer distinct patterns there.
    TooManyUnderPrefix,
    /// The inbox could not be opened.
    Inbox(InboxError),
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscribeError::Pattern(e) => write!(f, "invalid pattern: {e}"),
            SubscribeError::Group => f.write_str(
                "a queue group's name is 1 to 64 bytes without '.', '*', whitespace or control \
                 characters",
            ),
            SubscribeError::TooMany => {
                f.write_str("the node has pubsub.max_subscriptions subscriptions already")
            }
            SubscribeError::TooManyUnderPrefix => f.write_str(
                "the distinct patterns under this pattern's literal prefix would not fit in one \
                 DHT record (dht.max_value_size)",
            ),
            SubscribeError::Inbox(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for SubscribeError {}

/// A message, as a subscription receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The subscription it matched.
    pub subscription: SubscriptionId,
    /// The topic it was published on.
    pub topic: Topic,
    /// The publishing node.
    pub publisher: NodeId,
    /// Its sequence number: at QoS 1 its place in the publisher's stream to this node (no
    /// gaps unless the publisher gave a message up), at QoS 0 the publisher's counter.
    pub seq: u64,
    /// The guarantee it was published with.
    pub qos: Qos,
    /// Its headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// What pub/sub tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PubsubEvent {
    /// A publish that was [`Publishing::Pending`] is done with: sent (QoS 0), or acknowledged
    /// or given up by every subscriber node (QoS 1).
    Published {
        /// The publish.
        id: PublishId,
        /// Subscriber nodes it went to.
        subscribers: usize,
        /// QoS 1: the nodes that acknowledged it, ordered.
        acked: Vec<NodeId>,
        /// QoS 1: the nodes that did not before its deadline, or could not be reached, ordered.
        missed: Vec<NodeId>,
    },
    /// A publish was refused with [`PublishError::Full`] and there is room again.
    Ready,
}

/// Pub/sub counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PubsubStats {
    /// Publishes taken.
    pub published: u64,
    /// Messages sent to subscriber nodes for the first time (one per node per publish).
    pub sent: u64,
    /// QoS 1 messages sent again.
    pub resent: u64,
    /// Acknowledgements sent.
    pub acks_sent: u64,
    /// Acknowledgements received.
    pub acks_received: u64,
    /// (QoS 1 message, subscriber node) pairs given up: deadline passed or node unreachable.
    pub missed: u64,
    /// QoS 0 copies that could not be sent (no link to the node and no address to dial).
    pub unsent: u64,
    /// QoS 1 copies sent to a subscriber found after the message was first sent.
    pub late: u64,
    /// Subscriber lookups asked of the DHT (one per prefix).
    pub lookups: u64,
    /// Messages handed to local subscriptions.
    pub delivered: u64,
    /// Messages received again and dropped.
    pub duplicates: u64,
    /// QoS 1 messages received ahead of a missing one and dropped (they are sent again).
    pub out_of_order: u64,
    /// Messages received that no subscription of this node matched.
    pub unmatched: u64,
    /// Messages received that broke the rules (topic, size, headers) and were dropped.
    pub malformed: u64,
    /// Announcements (DHT puts and withdrawals) asked.
    pub announcements: u64,
}
