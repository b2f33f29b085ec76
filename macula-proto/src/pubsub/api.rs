//! The node's pub/sub commands.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::machine::{valid_group, Pubsub};
use super::topic::Pattern;
use super::types::{
    PublishError, PublishOptions, Publishing, PubsubStats, SubscribeError, SubscribeOptions,
    Subscribed, SubscriptionId,
};
use crate::node::Node;
use crate::time::Instant;

impl Node {
    /// Subscribes to the topics `pattern` matches: opens the subscription's inbox, where its
    /// messages arrive as [`Data::Message`](crate::Data::Message), and announces it in the DHT
    /// (publishers see it within their cache's freshness, 5 s by default, of the announcement).
    ///
    /// # Errors
    /// [`SubscribeError`] for a bad pattern or group name, or a bound reached; nothing changed.
    pub fn pubsub_subscribe(
        &mut self,
        pattern: &str,
        options: SubscribeOptions,
        now: Instant,
    ) -> Result<Subscribed, SubscribeError> {
        let pattern = Pattern::new(pattern).map_err(SubscribeError::Pattern)?;
        if options.group.as_deref().is_some_and(|g| !valid_group(g)) {
            return Err(SubscribeError::Group);
        }
        let inbox = self
            .open_inbox(options.capacity, options.overflow)
            .map_err(SubscribeError::Inbox)?;
        let group = options.group;
        let result = self.run(now, |pubsub: &mut Pubsub, cx| {
            pubsub.subscribe(pattern, group, inbox, cx)
        });
        match result {
            Ok(id) => Ok(Subscribed { id, inbox }),
            Err(e) => {
                self.close_inbox(inbox, now);
                Err(e)
            }
        }
    }

    /// Ends a subscription: its inbox is closed (what it held is dropped) and its announcement
    /// withdrawn once no other subscription of this node needs it. Returns whether it existed.
    pub fn pubsub_unsubscribe(&mut self, id: SubscriptionId, now: Instant) -> bool {
        let inbox = self.run(now, |pubsub: &mut Pubsub, cx| pubsub.unsubscribe(id, cx));
        match inbox {
            Some(inbox) => {
                self.close_inbox(inbox, now);
                true
            }
            None => false,
        }
    }

    /// Publishes `payload` on `topic`. The first publish on a topic waits for its discovery
    /// (at most `pubsub.discovery_wait`); later ones use the subscriber cache. A QoS 0 publish
    /// whose subscribers are known is sent at once ([`Publishing::Sent`], with how many nodes
    /// it went to, zero included); the others finish with
    /// [`PubsubEvent::Published`](super::PubsubEvent::Published).
    ///
    /// # Errors
    /// [`PublishError`]: a bad topic, too large, or [`PublishError::Full`] while the publisher
    /// holds as many messages as it may (publish again after
    /// [`PubsubEvent::Ready`](super::PubsubEvent::Ready)). Nothing was sent.
    pub fn pubsub_publish(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        options: PublishOptions,
        now: Instant,
    ) -> Result<Publishing, PublishError> {
        self.run(now, |pubsub: &mut Pubsub, cx| {
            pubsub.publish(topic, payload, options, cx)
        })
    }

    /// Publishes the payloads at the front of `payloads`, in order, on one `topic` with the
    /// same `options`, as far as the publisher has room; returns how many it took (they
    /// leave `payloads`; publish the rest after
    /// [`PubsubEvent::Ready`](super::PubsubEvent::Ready)). Each is a publish as
    /// [`Node::pubsub_publish`] makes it, but the topic is checked and its subscribers worked out
    /// once for the lot, and no [`PubsubEvent::Published`](super::PubsubEvent::Published)
    /// is told for them: this is for streams of messages.
    ///
    /// # Errors
    /// [`PublishError`] for a bad topic or headers, or a payload too large (then none was
    /// taken), or a closed node.
    pub fn pubsub_publish_batch(
        &mut self,
        topic: &str,
        payloads: &mut VecDeque<Vec<u8>>,
        options: &PublishOptions,
        now: Instant,
    ) -> Result<usize, PublishError> {
        self.run(now, |pubsub: &mut Pubsub, cx| {
            pubsub.publish_batch(topic, payloads, options, cx)
        })
    }

    /// Whether a publish would be taken now (not refused with [`PublishError::Full`]).
    pub fn pubsub_has_room(&self) -> bool {
        self.subsystem::<Pubsub>().has_room()
    }

    /// Publishes not finished yet (waiting to be sent, or QoS 1 awaiting acks): a node about
    /// to close waits for this to reach zero, or QoS 1 would silently become QoS 0.
    pub fn pubsub_outstanding(&self) -> usize {
        self.subsystem::<Pubsub>().outstanding()
    }

    /// Pub/sub's counters.
    pub fn pubsub_stats(&self) -> &PubsubStats {
        self.subsystem::<Pubsub>().stats()
    }

    /// Pub/sub's state, to read.
    pub fn pubsub(&self) -> &Pubsub {
        self.subsystem()
    }
}
