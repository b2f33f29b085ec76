//! Pub/sub's settings, each with its documented default.

use super::cache::CacheConfig;
use crate::config::ConfigError;
use crate::time::Duration;

/// Settings of pub/sub; a node takes them from [`Config::pubsub`](crate::Config::pubsub).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PubsubConfig {
    /// Largest message accepted or sent: topic, headers and payload together, in bytes. A
    /// larger publish is refused; a larger message from a peer is dropped and counted. A node
    /// takes at most half of `max_frame_size` (the rest is room for the frame's other fields).
    /// Default: 512 KiB.
    pub max_message_size: usize,
    /// Most headers one message carries. Default: 16.
    pub max_headers: usize,
    /// Most bytes of all headers of one message, keys and values. Default: 4 KiB.
    pub max_header_bytes: usize,
    /// Most subscriptions of this node at once. Default: 1,024.
    pub max_subscriptions: usize,
    /// Publishes a publisher holds while they wait for discovery or for room at a subscriber;
    /// past it a publish is refused with `PublishError::Full` until one leaves. Default: 1,024.
    pub max_waiting: usize,
    /// Payload bytes of those held publishes. Default: 16 MiB.
    pub max_waiting_bytes: usize,
    /// QoS 1 messages not yet acknowledged by one subscriber node; a publish that would go
    /// past it waits (the back-pressure of a subscriber that stops reading). The window is
    /// what keeps a stream busy while acknowledgements travel: on loopback 1,024 held QoS 1 to
    /// 0.2 of QoS 0's rate, 8,192 to 0.45. Default: 8,192.
    pub window: usize,
    /// QoS 1 publishes whose acknowledgements are awaited, in all. Default: 16,384.
    pub max_outstanding: usize,
    /// Payload bytes of those publishes (each counted once, however many subscribers it went
    /// to); past it a publish waits as for `max_outstanding`. Default: 64 MiB.
    pub max_outstanding_bytes: usize,
    /// Subscriber nodes a publisher keeps QoS 1 streams to. Default: 4,096.
    pub max_streams: usize,
    /// How long a publish waits for its topic's first discovery before it goes to the
    /// subscribers found so far. On a healthy mesh discovery takes a DHT lookup (milliseconds
    /// to a second); under churn, lookups wait out requests to nodes that left. Default: 15 s.
    pub discovery_wait: Duration,
    /// Time before an unacknowledged QoS 1 message is sent again; doubled on every try up to
    /// `max_ack_timeout`. Default: 1 s.
    pub ack_timeout: Duration,
    /// Longest wait between two tries. Default: 8 s.
    pub max_ack_timeout: Duration,
    /// How long a QoS 1 publish is tried for, unless the publish names its own. Default: 30 s.
    pub deadline: Duration,
    /// The subscriber cache: how long an answer is fresh and how often a topic is looked up.
    pub cache: CacheConfig,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        PubsubConfig {
            max_message_size: 512 * 1024,
            max_headers: 16,
            max_header_bytes: 4096,
            max_subscriptions: 1024,
            max_waiting: 1024,
            max_waiting_bytes: 16 << 20,
            window: 8192,
            max_outstanding: 16384,
            max_outstanding_bytes: 64 << 20,
            max_streams: 4096,
            discovery_wait: Duration::from_secs(15),
            ack_timeout: Duration::from_secs(1),
            max_ack_timeout: Duration::from_secs(8),
            deadline: Duration::from_secs(30),
            cache: CacheConfig::default(),
        }
    }
}

impl PubsubConfig {
    /// Checks for values that can't work.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] naming the first bound that is zero, [`ConfigError::Pubsub`] for
    /// settings that contradict each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let counts = [
            (self.max_message_size, "pubsub.max_message_size"),
            (self.max_subscriptions, "pubsub.max_subscriptions"),
            (self.max_waiting, "pubsub.max_waiting"),
            (self.max_waiting_bytes, "pubsub.max_waiting_bytes"),
            (self.window, "pubsub.window"),
            (self.max_outstanding, "pubsub.max_outstanding"),
            (self.max_outstanding_bytes, "pubsub.max_outstanding_bytes"),
            (self.max_streams, "pubsub.max_streams"),
            (self.cache.max_prefixes, "pubsub.cache.max_prefixes"),
            (self.cache.max_topics, "pubsub.cache.max_topics"),
        ];
        let times = [
            (self.ack_timeout, "pubsub.ack_timeout"),
            (self.max_ack_timeout, "pubsub.max_ack_timeout"),
            (self.deadline, "pubsub.deadline"),
            (self.cache.fresh_for, "pubsub.cache.fresh_for"),
        ];
        if let Some((_, name)) = counts.iter().find(|(v, _)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        if let Some((_, name)) = times.iter().find(|(v, _)| *v == Duration::ZERO) {
            return Err(ConfigError::Zero(name));
        }
        if self.max_ack_timeout < self.ack_timeout {
            return Err(ConfigError::Pubsub(
                "pubsub.max_ack_timeout must not be shorter than pubsub.ack_timeout",
            ));
        }
        Ok(())
    }
}
