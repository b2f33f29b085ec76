//! Publish/subscribe: wildcard topics found through the DHT, messages sent straight to each
//! subscriber node, QoS 1 with acknowledgements, queue groups, and no silent loss.
//!
//! A topic names what a message is about (`sensors.kitchen.temp`); a pattern names the topics a
//! subscriber wants (`sensors.*.temp`, `sensors.**`). See [`topic`] for the syntax, its limits
//! and the matcher, [`machine`](Pubsub) for how subscribers are found and messages delivered,
//! and `docs/pubsub.md` for the whole design. The node's commands are
//! [`Node::pubsub_subscribe`](crate::Node::pubsub_subscribe), [`Node::pubsub_publish`](crate::Node::pubsub_publish) and
//! [`Node::pubsub_unsubscribe`](crate::Node::pubsub_unsubscribe).

mod api;
pub mod cache;
mod config;
pub mod dedup;
mod machine;
pub mod messages;
pub mod topic;
mod types;

#[cfg(test)]
mod tests;

pub use cache::{CacheConfig, Subscriber, SubscriberCache, Targets};
pub use config::PubsubConfig;
pub use dedup::Dedup;
pub use machine::{Pubsub, MAX_RECEIVING};
pub use messages::{PubAck, Publish, PubsubMessage, Qos};
pub use topic::{Pattern, Topic, TopicError, MAX_SEGMENTS, MAX_TOPIC_LEN};
pub use types::{
    PublishError, PublishId, PublishOptions, Publishing, PubsubEvent, PubsubStats, Received,
    SubscribeError, SubscribeOptions, Subscribed, SubscriptionId,
};
