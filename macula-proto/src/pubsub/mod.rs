//! Publish/subscribe (being built): topics and patterns, receivers' de-duplication, and
//! publishers' subscriber cache.
//!
//! A topic names what a message is about (`sensors.kitchen.temp`); a pattern names the topics a
//! subscriber wants (`sensors.*.temp`, `sensors.**`). See [`topic`] for the syntax, its limits
//! and the matcher.

pub mod cache;
pub mod dedup;
pub mod topic;

pub use cache::{CacheConfig, Subscriber, SubscriberCache};
pub use dedup::Dedup;
pub use topic::{Pattern, Topic, TopicError, MAX_SEGMENTS, MAX_TOPIC_LEN};
