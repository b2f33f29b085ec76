//! The receiving side: a stream's messages taken in order, duplicates dropped, messages handed
//! to the subscriptions they are for.

use super::*;

impl Pubsub {
    /// A publish arrived.
    pub(super) fn receive(&mut self, from: Peer, publish: Publish, cx: &mut Cx<'_>) {
        if !self.check_incoming(&publish) {
            self.stats.malformed += 1;
            return;
        }
        match publish.qos {
            Qos::AtMostOnce => {
                if !self.dedup.first_time(from.id, publish.epoch, publish.seq) {
                    self.stats.duplicates += 1;
                    return;
                }
            }
            Qos::AtLeastOnce => {
                if !self.in_order(from.id, &publish, cx) {
                    return;
                }
            }
        }
        self.hand_over(from, publish, cx);
    }

    /// Whether a QoS 1 message is the next of its stream (and notes it, and the ack it
    /// earns); one taken before is acknowledged again, one ahead of a gap is dropped.
    pub(super) fn in_order(
        &mut self,
        publisher: NodeId,
        publish: &Publish,
        cx: &mut Cx<'_>,
    ) -> bool {
        self.clock += 1;
        let clock = self.clock;
        if !self.receiving.contains_key(&publisher) && self.receiving.len() >= MAX_RECEIVING {
            let stalest = self
                .receiving
                .iter()
                .min_by_key(|(_, s)| s.touched)
                .map(|(id, _)| *id);
            if let Some(id) = stalest {
                self.receiving.remove(&id);
            }
        }
        let stream = self.receiving.entry(publisher).or_insert(Incoming {
            epoch: publish.epoch,
            expected: publish.base,
            touched: clock,
        });
        stream.touched = clock;
        if publish.epoch < stream.epoch {
            // An earlier run of a restarted publisher: nobody waits for it.
            self.stats.duplicates += 1;
            return false;
        }
        if publish.epoch > stream.epoch {
            stream.epoch = publish.epoch;
            stream.expected = publish.base;
        }
        stream.expected = stream.expected.max(publish.base);
        let taken = publish.seq == stream.expected;
        if taken {
            stream.expected += 1;
        } else if publish.seq > stream.expected {
            self.stats.out_of_order += 1;
            return false;
        } else {
            self.stats.duplicates += 1;
        }
        if stream.expected > 0 {
            self.acks_due.insert(
                publisher,
                PubAck {
                    epoch: stream.epoch,
                    upto: stream.expected - 1,
                },
            );
            self.ack_at.get_or_insert(cx.now());
        }
        taken
    }

    /// Hands a message to the subscriptions it is for (its topic is `self.arrival`'s).
    pub(super) fn hand_over(&mut self, from: Peer, publish: Publish, cx: &mut Cx<'_>) {
        let Some(arrival) = &self.arrival else {
            return;
        };
        let mut targets = core::mem::take(&mut self.scratch.local);
        targets.clear();
        if publish.plain {
            targets.extend_from_slice(&arrival.plain);
        }
        if !publish.groups.is_empty() {
            let topic = arrival.topic.clone();
            for group in &publish.groups {
                if let Some(id) = self.local_member(group, &topic) {
                    targets.push(id);
                }
            }
        }
        if targets.is_empty() {
            self.stats.unmatched += 1;
        } else {
            let received = Received {
                subscription: targets[0],
                topic: Topic::from_checked(&publish.topic),
                publisher: from.id,
                seq: publish.seq,
                qos: publish.qos,
                headers: publish.headers,
                payload: publish.payload,
            };
            self.deliver_each(&targets, received, Some(from), cx);
        }
        self.scratch.local = targets;
    }

    /// One local subscription of `group` that matches, taking turns.
    pub(super) fn local_member(&mut self, group: &str, topic: &Topic) -> Option<SubscriptionId> {
        let members: Vec<SubscriptionId> = self
            .subs
            .iter()
            .filter(|(_, s)| s.group.as_deref() == Some(group) && s.pattern.matches(topic))
            .map(|(id, _)| *id)
            .collect();
        if members.is_empty() {
            return None;
        }
        self.local_turn = self.local_turn.wrapping_add(1);
        Some(members[(self.local_turn % members.len() as u64) as usize])
    }

    /// Delivers `received` to each of `targets` (a copy each but the last).
    pub(super) fn deliver_each(
        &mut self,
        targets: &[SubscriptionId],
        received: Received,
        from: Option<Peer>,
        cx: &mut Cx<'_>,
    ) {
        let mut received = Some(received);
        for (i, id) in targets.iter().enumerate() {
            let Some(sub) = self.subs.get(id) else {
                continue;
            };
            let mut data = if i + 1 == targets.len() {
                received.take().expect("the last one takes it")
            } else {
                received.clone().expect("kept for the last one")
            };
            data.subscription = *id;
            let outcome = match from {
                Some(from) => cx.deliver(sub.inbox, from, Data::Message(data)),
                None => cx.deliver_local(sub.inbox, Data::Message(data)),
            };
            match outcome {
                Delivered::Queued => self.stats.delivered += 1,
                Delivered::Dropped => {}
                Delivered::NoInbox => {
                    // The application closed the inbox without unsubscribing.
                    let _ = self.unsubscribe(*id, cx);
                }
            }
        }
    }

    /// Whether a message from a peer keeps the rules; if it does, `self.arrival` is for its
    /// topic.
    pub(super) fn check_incoming(&mut self, publish: &Publish) -> bool {
        let Ok(headers) = check_headers(&publish.headers, &self.config) else {
            return false;
        };
        let size = publish.topic.len() + headers + publish.payload.len();
        if size > self.config.max_message_size {
            return false;
        }
        let known = self.arrival.as_ref().is_some_and(|a| {
            a.subs_generation == self.subs_generation
                && (Arc::ptr_eq(&a.shared, &publish.topic) || a.topic == *publish.topic)
        });
        if !known {
            let Ok(topic) = Topic::from_shared(&publish.topic) else {
                return false;
            };
            let plain = self
                .subs
                .iter()
                .filter(|(_, s)| s.group.is_none() && s.pattern.matches(&topic))
                .map(|(id, _)| *id)
                .collect();
            self.arrival = Some(Arrival {
                topic,
                shared: publish.topic.clone(),
                subs_generation: self.subs_generation,
                plain,
            });
        }
        true
    }
}
