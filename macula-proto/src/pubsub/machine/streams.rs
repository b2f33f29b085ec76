//! The publishing side's QoS 1 streams: one per subscriber node, sent in order, acknowledged
//! cumulatively, sent again after a lost link or a back-off, given up at their deadline, and
//! topped up for subscribers found late.

use super::*;

impl Pubsub {
    /// Sends the QoS 1 messages still within their deadline to the subscribers the cache
    /// knows now but did not when they were sent (a lookup that missed them, a subscription
    /// that came later), in publish order, and only those newer than the newest such a node
    /// already got, so its stream stays in order.
    pub(super) fn top_up(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        while self.recent.front().is_some_and(|r| r.deadline <= now) {
            self.recent.pop_front();
        }
        if self.recent.is_empty() {
            return;
        }
        let own = cx.identity().node_id();
        // The newest recent message each node already got.
        let mut newest: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (i, r) in self.recent.iter().enumerate() {
            for node in &r.targets {
                newest.insert(*node, i);
            }
        }
        for i in 0..self.recent.len() {
            let topic = self.recent[i].body.topic.clone();
            let late: Vec<(NodeId, Option<SocketAddr>)> = self
                .cache
                .subscribers(&topic, now)
                .plain
                .into_iter()
                .filter(|(node, _)| *node != own)
                .filter(|(node, _)| newest.get(node).map_or(true, |&j| j < i))
                .collect();
            for (node, addr) in late {
                if !self.stream_room(&node) {
                    continue;
                }
                let r = &mut self.recent[i];
                r.targets.push(node);
                newest.insert(node, i);
                let (id, body, deadline) = (r.id, r.body.clone(), r.deadline);
                if let Some(t) = self.tracking.get_mut(&id) {
                    t.subscribers += 1;
                    t.waiting += 1;
                }
                self.stats.late += 1;
                let copy = Copy {
                    addr,
                    plain: true,
                    groups: Vec::new(),
                };
                self.enqueue(node, id, &body, copy, deadline);
            }
        }
    }

    /// Adds a QoS 1 message to the stream to `node`; the drain under way sends it (every
    /// caller is one, or is followed by one).
    pub(super) fn enqueue(
        &mut self,
        node: NodeId,
        id: PublishId,
        body: &Arc<Body>,
        copy: Copy,
        deadline: Instant,
    ) {
        if !self.streams.contains_key(&node) && self.streams.len() >= self.config.max_streams {
            // Make room: forget an idle stream (a later one to that node starts above
            // `high_water`, so its receiver can't take it for a replay).
            let idle = self
                .streams
                .iter()
                .find(|(_, s)| s.unacked.is_empty())
                .map(|(n, _)| *n);
            if let Some(idle) = idle {
                self.remove_stream(idle);
            }
        }
        let rto = self.config.ack_timeout;
        let start = self.high_water + 1;
        let stream = self.streams.entry(node).or_insert(Stream {
            addr: copy.addr,
            next: start,
            unacked: VecDeque::new(),
            sent: 0,
            sent_high: 0,
            link: None,
            rto,
            retry_at: None,
            wake: None,
        });
        if copy.addr.is_some() {
            stream.addr = copy.addr;
        }
        let seq = stream.next;
        stream.next += 1;
        self.high_water = self.high_water.max(seq);
        stream.unacked.push_back(Unacked {
            seq,
            id,
            body: body.clone(),
            plain: copy.plain,
            groups: copy.groups,
            deadline,
        });
        // Sent when the drain under way ends, with what else it enqueues for the node: many
        // messages to a frame.
        if !self.enqueued.contains(&node) {
            self.enqueued.push(node);
        }
    }

    /// Sends the messages of the stream to `node` not sent since it last went back, while the
    /// channel takes them; then files the stream's next wake-up.
    pub(super) fn pump(&mut self, node: NodeId, cx: &mut Cx<'_>) {
        let Some(stream) = self.streams.get_mut(&node) else {
            return;
        };
        let mut failed = false;
        let unsent = stream.unacked.range(stream.sent..).map(|u| Framed {
            topic: u.body.topic.as_str(),
            payload: u.body.payload.len(),
            joins: u.plain && u.groups.is_empty() && u.body.headers.is_empty(),
        });
        for (_, len) in frames(unsent, self.config.max_message_size) {
            if !cx.data_writable(&node) {
                break;
            }
            let message = frame(self.epoch, stream, stream.sent, len);
            match cx.send_data(node, stream.addr, &message) {
                Ok(()) => {
                    for _ in 0..len {
                        let seq = stream.unacked[stream.sent].seq;
                        stream.sent += 1;
                        if seq <= stream.sent_high {
                            self.stats.resent += 1;
                        } else {
                            self.stats.sent += 1;
                            stream.sent_high = seq;
                        }
                    }
                    stream.link = cx.link_to(&node);
                }
                Err(SendError::Full) => break,
                Err(SendError::NotConnected | SendError::NotSpoken) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            self.cache.forget(&node, cx.now());
            self.fail_stream(node, cx);
            return;
        }
        if stream.sent > 0 && stream.retry_at.is_none() {
            stream.retry_at = Some(cx.now() + stream.rto);
        }
        self.file(node);
    }

    /// Files the stream's next wake-up: its retry or the deadline of its first message.
    pub(super) fn file(&mut self, node: NodeId) {
        let Some(stream) = self.streams.get_mut(&node) else {
            return;
        };
        let next = [stream.retry_at, stream.unacked.front().map(|u| u.deadline)]
            .into_iter()
            .flatten()
            .min();
        if next != stream.wake {
            if let Some(old) = stream.wake {
                self.wakeups.remove(&(old, node));
            }
            if let Some(t) = next {
                self.wakeups.insert((t, node));
            }
            stream.wake = next;
        }
    }

    /// A stream's wake-up: give up messages past their deadline at its head, and send again
    /// what was not acknowledged.
    pub(super) fn wake_stream(&mut self, node: NodeId, cx: &mut Cx<'_>) {
        let now = cx.now();
        let mut given_up = Vec::new();
        let Some(stream) = self.streams.get_mut(&node) else {
            return;
        };
        while stream.unacked.front().is_some_and(|u| u.deadline <= now) {
            let u = stream.unacked.pop_front().expect("checked");
            stream.sent = stream.sent.saturating_sub(1);
            given_up.push(u.id);
        }
        let mut probe = false;
        if stream.unacked.is_empty() {
            stream.retry_at = None;
        } else if stream.retry_at.is_some_and(|t| t <= now) {
            stream.rto = stream
                .rto
                .saturating_mul(2)
                .min(self.config.max_ack_timeout);
            stream.retry_at = None;
            if stream.link.is_some() && stream.link == cx.link_to(&node) {
                // QUIC delivers in order on the same link: a probe of the first is enough.
                probe = true;
            } else {
                stream.sent = 0;
            }
        }
        for id in given_up {
            self.stats.missed += 1;
            self.resolve(id, node, false, cx);
        }
        if probe {
            if let Some(stream) = self.streams.get_mut(&node) {
                if !stream.unacked.is_empty()
                    && cx
                        .send_data(node, stream.addr, &frame(self.epoch, stream, 0, 1))
                        .is_ok()
                {
                    self.stats.resent += 1;
                }
                stream.retry_at = Some(now + stream.rto);
            }
        }
        self.pump(node, cx);
    }

    /// `node` acknowledged its stream up to `upto`.
    pub(super) fn acked(&mut self, node: NodeId, upto: u64, cx: &mut Cx<'_>) {
        let Some(stream) = self.streams.get_mut(&node) else {
            return;
        };
        let mut done = Vec::new();
        while stream.unacked.front().is_some_and(|u| u.seq <= upto) {
            let u = stream.unacked.pop_front().expect("checked");
            stream.sent = stream.sent.saturating_sub(1);
            done.push(u.id);
        }
        if !done.is_empty() {
            stream.rto = self.config.ack_timeout;
            stream.retry_at = (!stream.unacked.is_empty()).then(|| cx.now() + stream.rto);
        }
        self.file(node);
        for id in done {
            self.resolve(id, node, true, cx);
        }
    }

    /// Gives up every message of the stream to `node` (it can't be reached).
    pub(super) fn fail_stream(&mut self, node: NodeId, cx: &mut Cx<'_>) {
        let Some(stream) = self.remove_stream(node) else {
            return;
        };
        for u in stream.unacked {
            self.stats.missed += 1;
            self.resolve(u.id, node, false, cx);
        }
    }

    pub(super) fn remove_stream(&mut self, node: NodeId) -> Option<Stream> {
        let stream = self.streams.remove(&node)?;
        if let Some(t) = stream.wake {
            self.wakeups.remove(&(t, node));
        }
        Some(stream)
    }

    /// One subscriber node is done with QoS 1 publish `id`.
    pub(super) fn resolve(&mut self, id: PublishId, node: NodeId, acked: bool, cx: &mut Cx<'_>) {
        let Some(t) = self.tracking.get_mut(&id) else {
            return;
        };
        // Who acknowledged is told only to a publisher waiting for the outcome.
        if t.notify {
            if acked {
                t.acked.push(node);
            } else {
                t.missed.push(node);
            }
        }
        t.waiting = t.waiting.saturating_sub(1);
        if t.waiting == 0 {
            self.finish(id, cx);
        }
    }

    pub(super) fn finish(&mut self, id: PublishId, cx: &mut Cx<'_>) {
        let Some(mut t) = self.tracking.remove(&id) else {
            return;
        };
        self.outstanding_bytes -= t.bytes;
        if !t.notify {
            return;
        }
        t.acked.sort();
        t.missed.sort();
        cx.emit(Event::Pubsub(PubsubEvent::Published {
            id,
            subscribers: t.subscribers,
            acked: t.acked,
            missed: t.missed,
        }));
    }
}

/// The payloads of unacknowledged messages, for a run.
type UnackedPayloads<'a> =
    core::iter::Map<alloc::collections::vec_deque::Iter<'a, Unacked>, fn(&Unacked) -> &[u8]>;

/// The frame of the `len` unacknowledged messages of `stream` from the `index`-th: a run if
/// there are several (they must be fit for one, as [`frames`] says).
pub(super) fn frame(
    epoch: u64,
    stream: &Stream,
    index: usize,
    len: usize,
) -> Outgoing<'_, UnackedPayloads<'_>> {
    let u = &stream.unacked[index];
    let base = stream.unacked.front().map_or(u.seq, |f| f.seq);
    if len > 1 {
        let payload: fn(&Unacked) -> &[u8] = |u| &u.body.payload;
        return Outgoing::Run(RunRef {
            epoch,
            qos: Qos::AtLeastOnce,
            first: u.seq,
            base,
            topic: u.body.topic.as_str(),
            payloads: stream.unacked.range(index..index + len).map(payload),
        });
    }
    Outgoing::Publish(PublishRef {
        epoch,
        qos: Qos::AtLeastOnce,
        seq: u.seq,
        base,
        plain: u.plain,
        groups: &u.groups,
        topic: u.body.topic.as_str(),
        headers: &u.body.headers,
        payload: &u.body.payload,
    })
}
