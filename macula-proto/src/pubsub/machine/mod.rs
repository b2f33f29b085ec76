//! The pub/sub subsystem's state machine: subscriptions announced in the DHT, publishers'
//! discovery and delivery, QoS 1 streams, and receivers.
//!
//! **Subscribing** opens an inbox and announces the node's patterns under each literal prefix
//! as a signed provider record in the DHT (a sibling ask; the DHT republishes it while it
//! lives). **Publishing** looks the topic's prefixes up (through the [`SubscriberCache`]),
//! holds the message in the *outbox* until they are answered (at most
//! [`PubsubConfig::discovery_wait`]) and there is room at every subscriber, then sends one copy
//! straight to each matching node. The outbox is first in, first out, so a publisher's
//! messages reach each subscriber in the order they were published.
//!
//! At **QoS 1** a publisher keeps a *stream* per subscriber node: consecutive sequence
//! numbers, at most [`PubsubConfig::window`] unacknowledged. The receiver takes a stream's
//! messages in order only (one ahead of a gap is dropped and comes again), acknowledges
//! cumulatively, once per batch, and drops what it has taken before. The publisher sends the
//! unacknowledged part again from its start when the link to the node changes (go-back-N),
//! and the first unacknowledged message alone after each back-off on an unchanged link (QUIC
//! delivers in order, so that is a probe). A message whose deadline passes at the head of its
//! stream is given up; `base` tells the receiver not to wait for it.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::cache::{Subscriber, SubscriberCache, Targets};
use super::config::PubsubConfig;
use super::dedup::Dedup;
use super::messages::{
    Outgoing, PubAck, Publish, PublishRef, PubsubMessage, Qos, RunRef, MAX_RUN_MESSAGES,
};
use super::topic::{Pattern, Topic};
use super::types::{
    PublishError, PublishId, PublishOptions, Publishing, PubsubEvent, PubsubStats, Received,
    SubscribeError, SubscriptionId,
};
use crate::dht::{record_key, DhtAsk, DhtEvent, KeyKind, Record};
use crate::discovery::Announcer;
use crate::id::NodeId;
use crate::node::flow::Delivered;
use crate::node::subsystem::{
    Answer, Ask, Cx, Init, Peer, PeerChange, Subsystem, Ticket, Unreachable,
};
use crate::node::{Data, Event, InboxId, LinkId, SendError};
use crate::time::{Duration, Instant};
use crate::wire::{KeyBytes, MessageError, ProtocolId, RawFrame};

mod receive;
mod routes;
mod streams;

/// Publishers whose QoS 1 streams a receiver remembers; the least recently heard is forgotten.
pub const MAX_RECEIVING: usize = 4096;

/// Queue groups whose turn a publisher remembers.
const MAX_TURNS: usize = 1024;

/// What one message is about, shared by every copy of it.
#[derive(Debug)]
struct Body {
    topic: Topic,
    headers: Vec<(String, Vec<u8>)>,
    payload: Vec<u8>,
}

/// A publish in the outbox.
#[derive(Debug)]
struct Waiting {
    id: PublishId,
    body: Arc<Body>,
    qos: Qos,
    deadline: Duration,
    since: Instant,
    notify: Notify,
}

/// Who hears how a publish went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Notify {
    /// The publish under way: it answers its caller itself.
    Caller,
    /// The caller was told [`Publishing::Pending`]: a [`PubsubEvent::Published`] says.
    Event,
    /// Nobody (one of a batch: its caller counts what was taken).
    Nobody,
}

/// A QoS 1 message on a stream, not yet acknowledged.
#[derive(Debug)]
struct Unacked {
    seq: u64,
    id: PublishId,
    body: Arc<Body>,
    plain: bool,
    groups: Vec<String>,
    deadline: Instant,
}

/// A publisher's QoS 1 stream to one subscriber node.
#[derive(Debug)]
struct Stream {
    addr: Option<SocketAddr>,
    next: u64,
    unacked: VecDeque<Unacked>,
    /// How many of `unacked` (from the front) were sent since the stream last went back.
    sent: usize,
    /// The highest sequence number ever sent (one at or below it is sent again).
    sent_high: u64,
    /// The link those went on.
    link: Option<LinkId>,
    rto: Duration,
    retry_at: Option<Instant>,
    /// Where it is filed in `wakeups`.
    wake: Option<Instant>,
}

/// A QoS 1 publish awaiting its subscribers' acks.
#[derive(Debug)]
struct Tracking {
    notify: bool,
    /// Its payload's bytes (counted in `Pubsub::outstanding_bytes`).
    bytes: usize,
    subscribers: usize,
    waiting: usize,
    acked: Vec<NodeId>,
    missed: Vec<NodeId>,
}

/// A QoS 1 message still within its deadline, and the nodes it went to: a subscriber found
/// later gets it too.
#[derive(Debug)]
struct Recent {
    id: PublishId,
    body: Arc<Body>,
    deadline: Instant,
    /// The nodes it went to (a handful: a vector, where a set would allocate a whole tree
    /// node for each message).
    targets: Vec<NodeId>,
}

/// Most QoS 1 messages kept for subscribers found late.
const MAX_RECENT: usize = 1024;

/// A receiver's view of one publisher's QoS 1 stream.
#[derive(Debug)]
struct Incoming {
    epoch: u64,
    expected: u64,
    touched: u64,
}

#[derive(Debug)]
struct Sub {
    pattern: Pattern,
    group: Option<String>,
    inbox: InboxId,
}

/// What a ticket to the DHT was for.
#[derive(Debug)]
enum Asked {
    Lookup(String),
    Announce(String),
}

/// The pub/sub subsystem of a node: its subscriptions and their announcements, its publisher
/// side (subscriber cache, outbox, QoS 1 streams) and its receiver side (per-publisher order and
/// de-duplication). Read it with [`Node::pubsub`](crate::Node::pubsub); `docs/pubsub.md` says
/// how it works.
#[derive(Debug)]
pub struct Pubsub {
    config: PubsubConfig,
    realm: String,
    max_announcement: usize,
    epoch: u64,
    closed: bool,
    stats: PubsubStats,
    asks: BTreeMap<Ticket, Asked>,
    // ---- subscribing
    subs: BTreeMap<SubscriptionId, Sub>,
    next_sub: u64,
    /// Announcements to make again.
    announcer: Announcer,
    receiving: BTreeMap<NodeId, Incoming>,
    clock: u64,
    dedup: Dedup,
    acks_due: BTreeMap<NodeId, PubAck>,
    ack_at: Option<Instant>,
    local_turn: u64,
    // ---- publishing
    cache: SubscriberCache,
    looking: BTreeSet<String>,
    outbox: VecDeque<Waiting>,
    outbox_bytes: usize,
    outbox_wake: Option<Instant>,
    /// A publish was refused as full: say [`PubsubEvent::Ready`] when there is room.
    refused: bool,
    next_publish: u64,
    seq0: u64,
    /// The highest QoS 1 sequence number given out: a new stream starts above it, so a
    /// receiver that remembers a forgotten stream of ours never takes it for a replay.
    high_water: u64,
    streams: BTreeMap<NodeId, Stream>,
    wakeups: BTreeSet<(Instant, NodeId)>,
    tracking: BTreeMap<PublishId, Tracking>,
    recent: VecDeque<Recent>,
    turns: BTreeMap<String, u64>,
    /// QoS 0 publishes finished during a drain: (id, subscribers, whether it was told Pending).
    done: Vec<(PublishId, usize, bool)>,
    /// The topics published lately and where their messages go, so that a stream of
    /// messages on one topic works its subscribers out once, not once a message.
    routes: Vec<Route>,
    /// Counts changes to this node's subscriptions (routes made before one are stale).
    subs_generation: u64,
    /// A plan's buffers, kept between messages.
    scratch: Plan,
    /// Payload bytes of the publishes in `tracking`.
    outstanding_bytes: usize,
    /// Subscriber nodes whose QoS 1 streams took messages in the drain under way (they are
    /// sent at its end).
    enqueued: Vec<NodeId>,
    /// The topic of the last message received, checked, and this node's subscriptions
    /// outside groups that match it: a stream of messages on one topic is matched once.
    arrival: Option<Arrival>,
}

impl Subsystem for Pubsub {
    const PROTOCOL: ProtocolId = ProtocolId::PUBSUB;
    const VERSION: u16 = 1;
    type Message = PubsubMessage;

    fn new(init: &Init<'_>) -> Self {
        let mut config = init.config.pubsub.clone();
        config.max_message_size = config
            .max_message_size
            .min(init.config.max_frame_size as usize / 2);
        Pubsub {
            cache: SubscriberCache::new(config.cache.clone()),
            config,
            realm: init.config.realm.as_str().into(),
            max_announcement: init.config.dht.max_value_size,
            epoch: init.config.start_epoch,
            closed: false,
            stats: PubsubStats::default(),
            asks: BTreeMap::new(),
            subs: BTreeMap::new(),
            next_sub: 0,
            announcer: Announcer::default(),
            receiving: BTreeMap::new(),
            clock: 0,
            dedup: Dedup::default(),
            acks_due: BTreeMap::new(),
            ack_at: None,
            local_turn: 0,
            looking: BTreeSet::new(),
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            outbox_wake: None,
            refused: false,
            next_publish: 0,
            seq0: 0,
            high_water: 0,
            streams: BTreeMap::new(),
            wakeups: BTreeSet::new(),
            tracking: BTreeMap::new(),
            recent: VecDeque::new(),
            turns: BTreeMap::new(),
            done: Vec::new(),
            routes: Vec::new(),
            subs_generation: 0,
            scratch: Plan::default(),
            enqueued: Vec::new(),
            outstanding_bytes: 0,
            arrival: None,
        }
    }

    fn on_peer(&mut self, change: PeerChange, cx: &mut Cx<'_>) {
        match change {
            PeerChange::Up { peer, .. } => {
                // A subscriber that could not be reached is reachable again.
                self.cache.alive(&peer);
                // A node that could not announce (no peers yet) tries at once.
                self.announcer.peer_up(cx.now());
            }
            PeerChange::Down { peer, .. } | PeerChange::Relinked { peer } => {
                // What went on the old link may be lost: send it again from the start.
                if let Some(stream) = self.streams.get_mut(&peer) {
                    stream.sent = 0;
                    stream.link = None;
                }
                self.pump(peer, cx);
            }
            PeerChange::Unreachable { peer, why } => match why {
                Unreachable::DialFailed | Unreachable::NotSpoken => {
                    self.cache.forget(&peer, cx.now());
                    self.fail_stream(peer, cx);
                }
                // The stream tries again after its back-off.
                Unreachable::NoRoom => {
                    if let Some(stream) = self.streams.get_mut(&peer) {
                        stream.sent = 0;
                    }
                }
            },
            PeerChange::Writable { peer } => self.pump(peer, cx),
        }
        self.drain(cx);
    }

    fn decode(&self, frame: RawFrame<'_>) -> Result<PubsubMessage, MessageError> {
        // A stream of messages on one topic shares the last topic's text.
        PubsubMessage::decode_with(frame, self.arrival.as_ref().map(|a| &a.shared))
    }

    fn on_message(&mut self, from: Peer, message: PubsubMessage, cx: &mut Cx<'_>) {
        match message {
            PubsubMessage::Publish(publish) => self.receive(from, publish, cx),
            PubsubMessage::Run(run) => {
                for publish in run.into_publishes() {
                    self.receive(from, publish, cx);
                }
            }
            PubsubMessage::PubAck(ack) => {
                self.stats.acks_received += 1;
                if ack.epoch == self.epoch {
                    self.acked(from.id, ack.upto, cx);
                    self.drain(cx);
                }
            }
        }
    }

    fn on_timeout(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        if self.ack_at.is_some_and(|t| t <= now) {
            self.ack_at = None;
            for (to, ack) in core::mem::take(&mut self.acks_due) {
                if cx.reply(to, &PubsubMessage::PubAck(ack)) {
                    self.stats.acks_sent += 1;
                }
            }
        }
        for prefix in self.announcer.due(now) {
            self.announce(&prefix, cx);
        }
        while let Some(&(at, node)) = self.wakeups.first() {
            if at > now {
                break;
            }
            self.wakeups.remove(&(at, node));
            if let Some(stream) = self.streams.get_mut(&node) {
                stream.wake = None;
            }
            self.wake_stream(node, cx);
        }
        self.drain(cx);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.ack_at,
            self.announcer.poll_timeout(),
            self.wakeups.first().map(|(t, _)| *t),
            self.outbox_wake,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_answer(&mut self, ticket: Ticket, answer: Answer, cx: &mut Cx<'_>) {
        let Answer::Dht(outcome) = answer;
        let Some(asked) = self.asks.remove(&ticket) else {
            return;
        };
        match asked {
            Asked::Lookup(prefix) => {
                self.looking.remove(&prefix);
                match outcome {
                    DhtEvent::Got { records, .. } => {
                        let own = cx.identity().node_id();
                        let subscribers = records
                            .iter()
                            .filter(|r| r.publisher != own)
                            .filter_map(parse_announcement)
                            .collect();
                        self.cache.fill(&prefix, subscribers, cx.now());
                        self.top_up(cx);
                    }
                    // Nobody to ask, or nobody answered: what was known stays (the next
                    // refresh asks again).
                    _ => self.cache.fill_failed(&prefix, cx.now()),
                }
                self.drain(cx);
            }
            Asked::Announce(prefix) => {
                let ok = match outcome {
                    DhtEvent::Stored { acks, .. } => acks > 0,
                    _ => false,
                };
                if ok {
                    self.announcer.stored();
                } else if !self.closed {
                    self.announcer.failed(prefix, cx.now());
                }
            }
        }
    }
}

impl Pubsub {
    // ------------------------------------------------------------------ getters

    /// Counters.
    pub fn stats(&self) -> &PubsubStats {
        &self.stats
    }

    /// Publishes not done with yet: waiting in the outbox, or QoS 1 awaiting acks.
    pub fn outstanding(&self) -> usize {
        self.outbox.len() + self.tracking.len()
    }

    /// Payload bytes of the QoS 1 publishes awaiting acks (each once).
    pub fn outstanding_bytes(&self) -> usize {
        self.outstanding_bytes
    }

    /// Whether a publish would be taken now (the outbox has room).
    pub fn has_room(&self) -> bool {
        self.outbox.len() < self.config.max_waiting
            && self.outbox_bytes < self.config.max_waiting_bytes
            && self.tracking_room()
    }

    /// Whether another QoS 1 message may start waiting for acks.
    fn tracking_room(&self) -> bool {
        self.tracking.len() < self.config.max_outstanding
            && self.outstanding_bytes < self.config.max_outstanding_bytes
    }

    /// This node's subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.subs.len()
    }

    /// The subscriber cache.
    pub fn cache(&self) -> &SubscriberCache {
        &self.cache
    }

    /// Subscriber nodes with a QoS 1 stream from this node.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Publishers whose QoS 1 streams this node remembers (at most [`MAX_RECEIVING`]).
    pub fn receiving(&self) -> usize {
        self.receiving.len()
    }

    // ------------------------------------------------------------------ subscribing

    /// Adds a subscription whose messages go to `inbox`, and announces it.
    pub(crate) fn subscribe(
        &mut self,
        pattern: Pattern,
        group: Option<String>,
        inbox: InboxId,
        cx: &mut Cx<'_>,
    ) -> Result<SubscriptionId, SubscribeError> {
        if self.subs.len() >= self.config.max_subscriptions {
            return Err(SubscribeError::TooMany);
        }
        let prefix: String = pattern.literal_prefix().into();
        let mut interests = self.interests(&prefix);
        let entry = (String::from(pattern.as_str()), group.clone());
        if !interests.contains(&entry) {
            interests.push(entry);
            if announcement(&interests).len() > self.max_announcement {
                return Err(SubscribeError::TooManyUnderPrefix);
            }
        }
        self.next_sub += 1;
        self.subs_generation += 1;
        let id = SubscriptionId(self.next_sub);
        self.subs.insert(
            id,
            Sub {
                pattern,
                group,
                inbox,
            },
        );
        self.announce(&prefix, cx);
        Ok(id)
    }

    /// Removes a subscription; returns its inbox (for the node to close), or `None` if unknown.
    pub(crate) fn unsubscribe(&mut self, id: SubscriptionId, cx: &mut Cx<'_>) -> Option<InboxId> {
        let sub = self.subs.remove(&id)?;
        self.subs_generation += 1;
        let prefix: String = sub.pattern.literal_prefix().into();
        self.announce(&prefix, cx);
        Some(sub.inbox)
    }

    /// The distinct (pattern, group) pairs of this node under `prefix`, ordered.
    fn interests(&self, prefix: &str) -> Vec<(String, Option<String>)> {
        let set: BTreeSet<(String, Option<String>)> = self
            .subs
            .values()
            .filter(|s| s.pattern.literal_prefix() == prefix)
            .map(|s| (String::from(s.pattern.as_str()), s.group.clone()))
            .collect();
        set.into_iter().collect()
    }

    /// Publishes (or withdraws, when none is left) this node's record under `prefix`.
    fn announce(&mut self, prefix: &str, cx: &mut Cx<'_>) {
        let key = self.key(prefix);
        let interests = self.interests(prefix);
        let ask = if interests.is_empty() {
            DhtAsk::Withdraw(key)
        } else {
            DhtAsk::Put(key, announcement(&interests))
        };
        self.stats.announcements += 1;
        let ticket = cx.ask(ProtocolId::DHT, Ask::Dht(ask));
        self.asks.insert(ticket, Asked::Announce(prefix.into()));
    }

    fn key(&self, prefix: &str) -> KeyBytes {
        let mut name = Vec::with_capacity(7 + prefix.len());
        name.extend_from_slice(b"pubsub/");
        name.extend_from_slice(prefix.as_bytes());
        record_key(&self.realm, KeyKind::Provider, &name)
    }

    // ------------------------------------------------------------------ publishing

    /// Takes a publish: it waits in the outbox for discovery and room, then goes.
    pub(crate) fn publish(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        options: PublishOptions,
        cx: &mut Cx<'_>,
    ) -> Result<Publishing, PublishError> {
        let topic = self.check_publish(topic, &options, payload.len())?;
        if !self.has_room() {
            self.refused = true;
            return Err(PublishError::Full);
        }
        self.look_up(&topic, cx);
        let id = self.take(topic, payload, &options, Notify::Caller, cx.now());
        self.drain(cx);
        if let Some(i) = self.done.iter().position(|d| d.0 == id) {
            let (_, subscribers, _) = self.done.remove(i);
            self.report_done(cx);
            return Ok(Publishing::Sent { subscribers });
        }
        if let Some(waiting) = self.outbox.iter_mut().find(|w| w.id == id) {
            waiting.notify = Notify::Event;
        }
        self.report_done(cx);
        Ok(Publishing::Pending(id))
    }

    /// Takes the payloads at the front of `payloads`, in order, as publishes on one `topic`
    /// with the same options, while there is room; returns how many it took (they leave
    /// `payloads`). Their callers are not told how each went: a batch is for streams of
    /// messages, where the topic is checked and its subscribers worked out once.
    pub(crate) fn publish_batch(
        &mut self,
        topic: &str,
        payloads: &mut VecDeque<Vec<u8>>,
        options: &PublishOptions,
        cx: &mut Cx<'_>,
    ) -> Result<usize, PublishError> {
        let largest = payloads.iter().map(Vec::len).max().unwrap_or(0);
        let topic = self.check_publish(topic, options, largest)?;
        self.look_up(&topic, cx);
        let now = cx.now();
        let mut taken = 0;
        while let Some(payload) = payloads.pop_front() {
            if !self.has_room() {
                // Send what can go, then see again.
                self.drain(cx);
                if !self.has_room() {
                    payloads.push_front(payload);
                    self.refused = true;
                    break;
                }
            }
            self.take(topic.clone(), payload, options, Notify::Nobody, now);
            taken += 1;
        }
        self.drain(cx);
        Ok(taken)
    }

    /// The topic of a publish, if the node takes publishes and the message keeps the bounds
    /// with a payload of `payload` bytes.
    fn check_publish(
        &self,
        topic: &str,
        options: &PublishOptions,
        payload: usize,
    ) -> Result<Topic, PublishError> {
        if self.closed {
            return Err(PublishError::Closed);
        }
        let topic = Topic::new(topic).map_err(PublishError::Topic)?;
        let headers =
            check_headers(&options.headers, &self.config).map_err(|()| PublishError::Headers)?;
        let size = topic.as_str().len() + headers + payload;
        if size > self.config.max_message_size {
            return Err(PublishError::TooLarge {
                size,
                max: self.config.max_message_size,
            });
        }
        Ok(topic)
    }

    /// Puts a checked publish in the outbox.
    fn take(
        &mut self,
        topic: Topic,
        payload: Vec<u8>,
        options: &PublishOptions,
        notify: Notify,
        now: Instant,
    ) -> PublishId {
        self.stats.published += 1;
        self.next_publish += 1;
        let id = PublishId(self.next_publish);
        self.outbox_bytes += payload.len();
        self.outbox.push_back(Waiting {
            id,
            body: Arc::new(Body {
                topic,
                headers: options.headers.clone(),
                payload,
            }),
            qos: options.qos,
            deadline: options.deadline.unwrap_or(self.config.deadline),
            since: now,
            notify,
        });
        id
    }

    /// Asks the DHT for the prefixes of `topic` that are due.
    fn look_up(&mut self, topic: &Topic, cx: &mut Cx<'_>) {
        for prefix in self.cache.to_look_up(topic, cx.now()) {
            if self.looking.contains(&prefix) {
                continue;
            }
            self.stats.lookups += 1;
            let ticket = cx.ask(
                ProtocolId::DHT,
                Ask::Dht(DhtAsk::FindProviders(self.key(&prefix))),
            );
            self.asks.insert(ticket, Asked::Lookup(prefix.clone()));
            self.looking.insert(prefix);
        }
    }

    /// Sends what waits in the outbox, in order, as far as discovery and room allow.
    fn drain(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        self.outbox_wake = None;
        while let Some(front) = self.outbox.front() {
            let body = front.body.clone();
            let (qos, since) = (front.qos, front.since);
            let route = self.route(&body.topic, cx);
            if !self.routes[route].known {
                // Not discovered yet: it waits, at most `discovery_wait`, then goes to the
                // subscribers known by then.
                let until = since + self.config.discovery_wait;
                if now < until {
                    self.outbox_wake = Some(until);
                    break;
                }
            }
            if qos == Qos::AtMostOnce && self.send_run(route, cx) {
                continue;
            }
            if qos == Qos::AtLeastOnce && !self.tracking_room() {
                // As many await acks as the bounds allow: an ack brings it back here.
                break;
            }
            let mut plan = core::mem::take(&mut self.scratch);
            if !self.plan(route, &body.topic, qos, &mut plan, cx) {
                // A subscriber has no room: an ack or a drained channel brings it back here.
                self.scratch = plan;
                break;
            }
            let waiting = self.outbox.pop_front().expect("the front");
            self.outbox_bytes -= waiting.body.payload.len();
            self.send(waiting, &mut plan, cx);
            self.scratch = plan;
        }
        for node in core::mem::take(&mut self.enqueued) {
            self.pump(node, cx);
        }
        if self.refused && self.has_room() {
            self.refused = false;
            cx.emit(Event::Pubsub(PubsubEvent::Ready));
        }
        self.report_done(cx);
    }

    /// Tells the QoS 0 publishes finished in a drain whose callers were told to wait.
    /// (One not told yet belongs to the publish under way, which answers it itself.)
    fn report_done(&mut self, cx: &mut Cx<'_>) {
        if self.done.is_empty() {
            return;
        }
        self.done.retain(|&(id, subscribers, told)| {
            if told {
                cx.emit(Event::Pubsub(PubsubEvent::Published {
                    id,
                    subscribers,
                    acked: Vec::new(),
                    missed: Vec::new(),
                }));
            }
            !told
        });
    }

    /// The node is closing: nothing new is taken, announcements stop.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.announcer.clear();
    }
}

/// Where one copy of a message goes.
#[derive(Debug)]
struct Copy {
    addr: Option<SocketAddr>,
    plain: bool,
    groups: Vec<String>,
}

/// A message's way out: remote copies and local subscriptions.
#[derive(Debug, Default)]
struct Plan {
    remote: Vec<(NodeId, Copy)>,
    local: Vec<SubscriptionId>,
}

impl Plan {
    fn clear(&mut self) {
        self.remote.clear();
        self.local.clear();
    }
}

/// Where one topic's messages go, worked out from the subscriber cache and this node's
/// subscriptions; good while neither changes and no lookup is due.
#[derive(Debug)]
struct Route {
    topic: Topic,
    /// Whether every prefix of the topic had an answer (else its messages wait, at most
    /// `discovery_wait`).
    known: bool,
    cache_generation: u64,
    subs_generation: u64,
    /// When the topic may need looking up again ([`SubscriberCache::next_lookup`]).
    until: Instant,
    /// Remote nodes that take every message, ordered by id.
    plain: Vec<(NodeId, Option<SocketAddr>)>,
    /// Each queue group with its members, this node among them if it has one.
    groups: Vec<(String, Members)>,
    /// This node's matching subscriptions outside queue groups.
    local: Vec<SubscriptionId>,
}

impl Route {
    /// Whether nothing it was worked out from changed since.
    fn current(&self, pubsub: &Pubsub) -> bool {
        self.cache_generation == pubsub.cache.generation()
            && self.subs_generation == pubsub.subs_generation
    }
}

/// A queue group's member nodes, each with an address to reach it at (`None`: this node).
type Members = Vec<(NodeId, Option<SocketAddr>)>;

/// A received topic, checked, and the plain subscriptions it matches.
#[derive(Debug)]
struct Arrival {
    topic: Topic,
    /// Its text as the decoder shares it with the messages that follow on the topic.
    shared: Arc<str>,
    subs_generation: u64,
    plain: Vec<SubscriptionId>,
}

/// Most bytes of messages sent to one node as one run (see `Pubsub::send_run`): a run is not
/// checked against the channel's room message by message, so it may overshoot by this much.
const MAX_RUN_BYTES: usize = 64 * 1024;

/// Bytes a message adds to a run besides its topic and payload (a fair guess at its fields).
const RUN_OVERHEAD: usize = 24;

/// Bytes a message adds to a [`Run`](super::messages::Run) frame besides its payload (the
/// payload's length, at most five bytes).
const RUN_ITEM_OVERHEAD: usize = 5;

/// One message as [`frames`] sees it.
pub(super) struct Framed<'a> {
    pub topic: &'a str,
    pub payload: usize,
    /// Whether it may travel in a run: no headers, for plain subscriptions only.
    pub joins: bool,
}

/// Splits messages with consecutive sequence numbers into frames: consecutive messages on one
/// topic that may travel in a run share one (at most [`MAX_RUN_MESSAGES`] and `budget` bytes
/// of topic and payloads, so it stays within the frame size however the node is configured);
/// any other is a frame of its own. Returns `(start, len)` for each frame, in order; `len > 1`
/// only for a run.
pub(super) fn frames<'a>(
    messages: impl IntoIterator<Item = Framed<'a>>,
    budget: usize,
) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    // The open run: where it starts, its topic, its bytes.
    let mut open: Option<(&str, usize)> = None;
    for (i, m) in messages.into_iter().enumerate() {
        let size = m.payload + RUN_ITEM_OVERHEAD;
        if let (Some((topic, bytes)), Some(last)) = (&mut open, out.last_mut()) {
            if m.joins && *topic == m.topic && last.1 < MAX_RUN_MESSAGES && *bytes + size <= budget
            {
                last.1 += 1;
                *bytes += size;
                continue;
            }
        }
        out.push((i, 1));
        open = m.joins.then_some((m.topic, m.topic.len() + size));
    }
    out
}

/// Topics whose routes a publisher keeps.
const MAX_ROUTES: usize = 16;

/// The bytes of `headers`, if they keep the configured bounds.
fn check_headers(headers: &[(String, Vec<u8>)], config: &PubsubConfig) -> Result<usize, ()> {
    let bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if headers.len() > config.max_headers || bytes > config.max_header_bytes {
        return Err(());
    }
    Ok(bytes)
}

/// A record's value: the (pattern, group) pairs a node subscribes with under one prefix.
fn announcement(interests: &[(String, Option<String>)]) -> Vec<u8> {
    postcard::to_allocvec(interests).expect("strings encode")
}

/// A subscriber as its record announces it; `None` for a value that is not an announcement.
fn parse_announcement(record: &Record) -> Option<Subscriber> {
    let interests: Vec<(String, Option<String>)> = postcard::from_bytes(&record.value).ok()?;
    let patterns: Vec<(Pattern, Option<String>)> = interests
        .into_iter()
        .filter_map(|(p, g)| {
            let group_ok = g.as_deref().map_or(true, valid_group);
            Some((Pattern::new(&p).ok()?, g)).filter(|_| group_ok)
        })
        .collect();
    (!patterns.is_empty()).then(|| Subscriber {
        node: record.publisher,
        addr: record.addrs.first().copied(),
        patterns,
    })
}

/// Whether `group` is a valid queue group name.
pub(crate) fn valid_group(group: &str) -> bool {
    (1..=64).contains(&group.len())
        && !group
            .chars()
            .any(|c| c == '.' || c == '*' || c.is_whitespace() || c.is_control())
}
