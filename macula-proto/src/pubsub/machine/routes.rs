//! Where a publisher's messages go and how they leave: a topic's route, worked out once and
//! kept while nothing it depends on changes; QoS 0 runs on one topic, each link looked up
//! once; and the message-by-message way (queue groups, QoS 1, a subscriber not linked yet).

use super::*;

impl Pubsub {
    /// The index in `routes` of where `topic`'s messages go now, worked out again if the
    /// cache or the subscriptions changed since; the topic is looked up again (in the
    /// background) whenever that may be due.
    pub(super) fn route(&mut self, topic: &Topic, cx: &mut Cx<'_>) -> usize {
        let now = cx.now();
        let at = self.routes.iter().position(|r| r.topic == *topic);
        if let Some(i) = at {
            if self.routes[i].current(self) && now < self.routes[i].until {
                return i;
            }
        }
        // Refresh in the background while the topic is in use.
        self.look_up(topic, cx);
        let until = self.cache.next_lookup(topic);
        match at {
            Some(i) if self.routes[i].current(self) => {
                self.routes[i].until = until;
                i
            }
            Some(i) => {
                self.routes[i] = self.work_out(topic, until, cx);
                i
            }
            None => {
                if self.routes.len() >= MAX_ROUTES {
                    self.routes.remove(0);
                }
                let route = self.work_out(topic, until, cx);
                self.routes.push(route);
                self.routes.len() - 1
            }
        }
    }

    /// Where `topic`'s messages go, from the cache and this node's subscriptions.
    pub(super) fn work_out(&mut self, topic: &Topic, until: Instant, cx: &mut Cx<'_>) -> Route {
        let own = cx.identity().node_id();
        let Targets { plain, groups } = self.cache.subscribers(topic, cx.now());
        let plain = plain.into_iter().filter(|(n, _)| *n != own).collect();
        let local = self
            .subs
            .iter()
            .filter(|(_, s)| s.group.is_none() && s.pattern.matches(topic))
            .map(|(id, _)| *id)
            .collect();
        // Queue groups: this node's own members count as one member.
        let mut groups: BTreeMap<String, Members> = groups;
        for sub in self.subs.values() {
            if let Some(g) = &sub.group {
                if sub.pattern.matches(topic) {
                    let members = groups.entry(g.clone()).or_default();
                    if !members.iter().any(|(n, _)| *n == own) {
                        members.push((own, None));
                        members.sort_by_key(|(n, _)| *n);
                    }
                }
            }
        }
        Route {
            topic: topic.clone(),
            known: self.cache.knows(topic),
            cache_generation: self.cache.generation(),
            subs_generation: self.subs_generation,
            until,
            plain,
            groups: groups.into_iter().collect(),
            local,
        }
    }

    /// Sends the QoS 0 messages at the front of the outbox that share the front's topic as one
    /// run (at most [`MAX_RUN_BYTES`]): each remote node's link is looked up once and the run
    /// appended to it at once. Only for a route without queue groups (there each message's
    /// member is picked apart) whose remote nodes all have a link up with room; false, and
    /// nothing done, otherwise.
    pub(super) fn send_run(&mut self, route: usize, cx: &mut Cx<'_>) -> bool {
        let r = &self.routes[route];
        if !r.groups.is_empty() {
            return false;
        }
        let mut links = Vec::with_capacity(r.plain.len());
        for (node, _) in &r.plain {
            match cx.data_link(node) {
                Some(link) => links.push(link),
                None => return false,
            }
        }
        let topic = &r.topic;
        let mut run = 0;
        let mut bytes = 0;
        for w in &self.outbox {
            if w.qos != Qos::AtMostOnce || w.body.topic != *topic || bytes >= MAX_RUN_BYTES {
                break;
            }
            run += 1;
            bytes += topic.as_str().len() + w.body.payload.len() + RUN_OVERHEAD;
        }
        let local = r.local.clone();
        let first = self.seq0 + 1;
        self.seq0 += run as u64;
        let epoch = self.epoch;
        let outbox = &self.outbox;
        let framed = outbox.iter().take(run).map(|w| Framed {
            topic: w.body.topic.as_str(),
            payload: w.body.payload.len(),
            joins: w.body.headers.is_empty(),
        });
        let frames = frames(framed, self.config.max_message_size);
        for &link in &links {
            let messages = frames.iter().map(|&(start, len)| {
                let w = &outbox[start];
                let seq = first + start as u64;
                let payloads = outbox.range(start..start + len).map(payload as fn(_) -> _);
                if len > 1 {
                    return Outgoing::Run(RunRef {
                        epoch,
                        qos: Qos::AtMostOnce,
                        first: seq,
                        base: 0,
                        topic: w.body.topic.as_str(),
                        payloads,
                    });
                }
                Outgoing::Publish(PublishRef {
                    epoch,
                    qos: Qos::AtMostOnce,
                    seq,
                    base: 0,
                    plain: true,
                    groups: &[],
                    topic: w.body.topic.as_str(),
                    headers: &w.body.headers,
                    payload: &w.body.payload,
                })
            });
            cx.send_data_on(link, messages);
        }
        self.stats.sent += (run * links.len()) as u64;
        let subscribers = links.len() + usize::from(!local.is_empty());
        for _ in 0..run {
            let w = self.outbox.pop_front().expect("counted");
            self.outbox_bytes -= w.body.payload.len();
            if !local.is_empty() {
                self.deliver_own(&local, &w.body, Qos::AtMostOnce, cx);
            }
            self.sent_qos0(w.id, subscribers, w.notify);
        }
        true
    }

    /// Fills `plan` with where one message on `topic` goes now by `routes[route]`: each
    /// remote node with whether it is for its plain subscriptions and the groups it was
    /// picked for, and the local subscriptions. False if some remote node has no room for it.
    pub(super) fn plan(
        &mut self,
        route: usize,
        topic: &Topic,
        qos: Qos,
        plan: &mut Plan,
        cx: &mut Cx<'_>,
    ) -> bool {
        plan.clear();
        let own = cx.identity().node_id();
        let r = &self.routes[route];
        plan.remote.extend(r.plain.iter().map(|&(node, addr)| {
            (
                node,
                Copy {
                    addr,
                    plain: true,
                    groups: Vec::new(),
                },
            )
        }));
        plan.local.extend_from_slice(&r.local);
        for g in 0..self.routes[route].groups.len() {
            let (group, members) = &self.routes[route].groups[g];
            let (group, members) = (group.clone(), members.clone());
            let Some((node, addr)) = self.pick(&group, &members, qos, cx) else {
                continue;
            };
            if node == own {
                if let Some(id) = self.local_member(&group, topic) {
                    plan.local.push(id);
                }
                continue;
            }
            match plan.remote.iter_mut().find(|(n, _)| *n == node) {
                Some((_, copy)) => copy.groups.push(group),
                None => plan.remote.push((
                    node,
                    Copy {
                        addr,
                        plain: false,
                        groups: alloc::vec![group],
                    },
                )),
            }
        }
        plan.remote.iter().all(|(node, _)| match qos {
            Qos::AtMostOnce => cx.data_writable(node),
            Qos::AtLeastOnce => self.stream_room(node),
        })
    }

    /// One member of a queue group for the next message, taking turns; members whose stream
    /// is full (they stopped acking) are skipped while another has room.
    pub(super) fn pick(
        &mut self,
        group: &str,
        members: &[(NodeId, Option<SocketAddr>)],
        qos: Qos,
        cx: &mut Cx<'_>,
    ) -> Option<(NodeId, Option<SocketAddr>)> {
        if members.is_empty() {
            return None;
        }
        if !self.turns.contains_key(group) && self.turns.len() >= MAX_TURNS {
            self.turns.pop_first();
        }
        let turn = self.turns.entry(group.into()).or_insert(0);
        *turn = turn.wrapping_add(1);
        let start = (*turn % members.len() as u64) as usize;
        let own = cx.identity().node_id();
        let order = (0..members.len()).map(|i| members[(start + i) % members.len()]);
        let mut first = None;
        for (node, addr) in order {
            first.get_or_insert((node, addr));
            let room = node == own
                || match qos {
                    Qos::AtMostOnce => cx.data_writable(&node),
                    Qos::AtLeastOnce => self.stream_room(&node),
                };
            if room {
                return Some((node, addr));
            }
        }
        first
    }

    /// Whether a QoS 1 stream to `node` can take another message.
    pub(super) fn stream_room(&self, node: &NodeId) -> bool {
        match self.streams.get(node) {
            Some(stream) => stream.unacked.len() < self.config.window,
            None => {
                self.streams.len() < self.config.max_streams
                    || self.streams.values().any(|s| s.unacked.is_empty())
            }
        }
    }

    /// Sends a message as planned (`plan` is left empty).
    pub(super) fn send(&mut self, waiting: Waiting, plan: &mut Plan, cx: &mut Cx<'_>) {
        let Waiting {
            id,
            body,
            qos,
            deadline,
            notify,
            ..
        } = waiting;
        let subscribers = plan.remote.len() + usize::from(!plan.local.is_empty());
        if !plan.local.is_empty() {
            let local = core::mem::take(&mut plan.local);
            self.deliver_own(&local, &body, qos, cx);
            plan.local = local;
        }
        match qos {
            Qos::AtMostOnce => {
                self.seq0 += 1;
                for (node, copy) in plan.remote.drain(..) {
                    let message = Outgoing::publish(PublishRef {
                        epoch: self.epoch,
                        qos,
                        seq: self.seq0,
                        base: 0,
                        plain: copy.plain,
                        groups: &copy.groups,
                        topic: body.topic.as_str(),
                        headers: &body.headers,
                        payload: &body.payload,
                    });
                    match cx.send_data(node, copy.addr, &message) {
                        Ok(()) => self.stats.sent += 1,
                        // At most once: a node that can't be reached misses it.
                        Err(_) => {
                            self.stats.unsent += 1;
                            self.cache.forget(&node, cx.now());
                        }
                    }
                }
                self.sent_qos0(id, subscribers, notify);
            }
            Qos::AtLeastOnce => {
                let deadline = cx.now() + deadline;
                let remote = plan.remote.len();
                if self.recent.len() >= MAX_RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back(Recent {
                    id,
                    body: body.clone(),
                    deadline,
                    targets: plan.remote.iter().map(|(n, _)| *n).collect(),
                });
                self.outstanding_bytes += body.payload.len();
                self.tracking.insert(
                    id,
                    Tracking {
                        notify: notify != Notify::Nobody,
                        bytes: body.payload.len(),
                        subscribers,
                        waiting: remote,
                        acked: Vec::new(),
                        missed: Vec::new(),
                    },
                );
                for (node, copy) in plan.remote.drain(..) {
                    self.enqueue(node, id, &body, copy, deadline);
                }
                if remote == 0 {
                    self.finish(id, cx);
                }
            }
        }
        plan.clear();
    }

    /// Hands a message this node published to its own subscriptions in `local`.
    pub(super) fn deliver_own(
        &mut self,
        local: &[SubscriptionId],
        body: &Body,
        qos: Qos,
        cx: &mut Cx<'_>,
    ) {
        let received = Received {
            subscription: local[0],
            topic: body.topic.clone(),
            publisher: cx.identity().node_id(),
            seq: 0,
            qos,
            headers: body.headers.clone(),
            payload: body.payload.clone(),
        };
        self.deliver_each(local, received, None, cx);
    }

    /// A QoS 0 publish went to `subscribers` nodes: its caller hears so as `notify` says.
    pub(super) fn sent_qos0(&mut self, id: PublishId, subscribers: usize, notify: Notify) {
        match notify {
            Notify::Caller => self.done.push((id, subscribers, false)),
            Notify::Event => self.done.push((id, subscribers, true)),
            Notify::Nobody => {}
        }
    }
}

/// A waiting message's payload.
fn payload(w: &Waiting) -> &[u8] {
    &w.body.payload
}
