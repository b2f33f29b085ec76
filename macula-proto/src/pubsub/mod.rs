//! Publish/subscribe (being built): topics and patterns first.
//!
//! A topic names what a message is about (`sensors.kitchen.temp`); a pattern names the topics a
//! subscriber wants (`sensors.*.temp`, `sensors.**`). See [`topic`] for the syntax, its limits
//! and the matcher.

pub mod topic;

pub use topic::{Pattern, Topic, TopicError, MAX_SEGMENTS, MAX_TOPIC_LEN};
