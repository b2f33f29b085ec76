//! `pubsub`: publishers and subscribers (exact, wildcard and queue-group) over the DHT's
//! discovery; QoS 0 and 1; with loss, duplication, churn and a partition on request.
//!
//! Nodes `0..b` are bootstrap nodes (one per 1,000). Of the others, one in twenty publishes and
//! three in ten subscribe. Topics are `s.<g>.<k>` (`g` in 0..5, `k` in 0..10). Of the
//! subscribers, two in three subscribe to one topic exactly, one in three with a wildcard
//! (`s.<g>.*`, `s.*.<k>` or `**.<k>`, the last announced under the empty prefix), and one in
//! ten of them joins queue group `workers` on one of the first five topics instead.
//!
//! Phases, as fractions of the run's duration `D`:
//! - `0 – 0.2 D`: members join through their bootstrap node.
//! - `0.2 D – 0.25 D`: subscribers subscribe.
//! - `0.45 D – 0.8 D`: every publisher publishes on its topic 20 times a second, every
//!   fourth message at QoS 0, the others at QoS 1 with a deadline of 15 s.
//! - Churn crashes a fraction of the members between `0.35 D` and `0.7 D` and restarts each
//!   5–15 s later; a restarted node rejoins and subscribes again at once.
//! - The fault plan's partition, if any, cuts a share of the members off from everyone else.
//!
//! The application of every node reads its inboxes as data arrives. A (subscriber, message)
//! pair is *eligible* when the subscriber's pattern matches, it was subscribed (in its
//! current life) [`DISCOVERY`] before the publish, and it and the publisher stayed up, and not
//! parted, until the message's deadline or the end of the run. Safety is checked on every
//! delivery: nothing reaches a node whose pattern does not match; no QoS 1 message reaches a
//! subscriber's life twice, and each publisher's QoS 1 messages arrive in the order published;
//! no QoS 0 message arrives twice; no queue-group message reaches two members. Liveness: every
//! eligible QoS 1 pair is delivered by the end of the run.

use std::collections::{BTreeMap, BTreeSet};

use macula_proto::pubsub::{
    Pattern, PublishId, PublishOptions, Publishing, PubsubEvent, Qos, SubscribeOptions, Topic,
};
use macula_proto::{Data, Duration, Event, Instant, NodeId, Rng};
use serde_json::{json, Map, Value};

use super::{
    at_fraction, bootstrap_count, configure_nodes, crash_for_a_while, random_moment,
    rejoin_if_refused, shuffle_front, tag, Params, Scenario, Split,
};
use crate::check::{Kind, Verdict};
use crate::faults::FaultPlan;
use crate::net::NodeIdx;
use crate::sim::{Sim, SimBuilder};

const JOIN: u64 = 1;
const SUBSCRIBE: u64 = 2;
const PUBLISH: u64 = 3;
const CRASH: u64 = 4;
const RESTART: u64 = 5;
const PARTITION: u64 = 6;
const HEAL: u64 = 7;

/// How long after subscribing a subscriber is sure to be seen by an active publisher: its
/// announcement lands (a DHT put, after a restarted node has rejoined), the publisher's
/// cached answer (5 s) goes stale, and its next lookup finds it. Each DHT operation takes
/// milliseconds on a healthy mesh and a few seconds under churn (requests to nodes that left
/// time out).
pub const DISCOVERY: Duration = Duration::from_secs(15);

/// How long a publisher must stay up after a publish for the message to count: its deadline
/// (a first message may wait that long for discovery, and a crashed publisher takes what it
/// had not delivered with it).
const PUBLISHER_STAYS: Duration = DEADLINE;

/// How long a QoS 1 message is tried for.
const DEADLINE: Duration = Duration::from_secs(15);

/// Publishes per second of each publisher.
const RATE: u64 = 20;

/// The group the queue-group subscribers join.
const GROUP: &str = "workers";

/// What a subscriber listens to.
#[derive(Clone, Debug)]
struct Interest {
    pattern: Pattern,
    group: bool,
}

#[derive(Debug)]
struct Message {
    publisher: NodeIdx,
    publisher_life: u32,
    topic: usize,
    qos: Qos,
    at: Instant,
    /// (subscriber, life) -> deliveries.
    got: BTreeMap<(NodeIdx, u32), u32>,
    /// QoS 1: the publisher's outcome, once it came: (acked, missed).
    outcome: Option<(Vec<NodeId>, Vec<NodeId>)>,
}

/// The `pubsub` scenario's state and figures.
#[derive(Debug, Default)]
pub struct Pubsub {
    rng: Option<Rng>,
    nodes: u32,
    bootstraps: u32,
    duration: Duration,
    deadline: Duration,
    faults: Option<FaultPlan>,
    split: Option<Split>,
    topics: Vec<Topic>,
    publishers: BTreeMap<NodeIdx, usize>,
    interests: BTreeMap<NodeIdx, Interest>,
    /// The subscribers whose pattern matches each topic.
    matching: Vec<Vec<NodeIdx>>,
    /// Each node's current life (counts its starts).
    lives: Vec<u32>,
    /// When each life of a node started (the first at zero, not listed), ended (a crash), and
    /// subscribed: (node, life) -> time.
    started: BTreeMap<(NodeIdx, u32), Instant>,
    ended: BTreeMap<(NodeIdx, u32), Instant>,
    subscriptions: BTreeMap<(NodeIdx, u32), Instant>,
    messages: Vec<Message>,
    /// Per (subscriber, life, publisher, publisher life, qos): the last message taken.
    order: BTreeMap<(NodeIdx, u32, NodeIdx, u32, u8), usize>,
    latencies: Vec<u64>,
    misdelivered: Vec<String>,
    duplicated: Vec<String>,
    out_of_order: Vec<String>,
    group_twice: Vec<String>,
    refused_publishes: u64,
    /// QoS 1 publishes awaiting their outcome: (publisher, its life, id) -> message.
    awaiting: BTreeMap<(NodeIdx, u32, PublishId), usize>,
    restarted: u64,
    /// Pub/sub counters of lives that ended, summed.
    ended_stats: Counters,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    published: u64,
    sent: u64,
    resent: u64,
    acks: u64,
    lookups: u64,
}

impl Counters {
    fn add(&mut self, node: &macula_proto::Node) {
        let s = node.pubsub_stats();
        self.published += s.published;
        self.sent += s.sent;
        self.resent += s.resent;
        self.acks += s.acks_sent;
        self.lookups += s.lookups;
    }
}

impl Pubsub {
    fn rng(&mut self) -> &mut Rng {
        self.rng.as_mut().expect("start() seeds the scenario")
    }

    fn moment(&mut self, from: f64, to: f64) -> Instant {
        let duration = self.duration;
        random_moment(self.rng(), duration, from, to)
    }

    fn subscribe(&mut self, sim: &mut Sim, n: NodeIdx) {
        let Some(interest) = self.interests.get(&n).cloned() else {
            return;
        };
        let options = if interest.group {
            SubscribeOptions::group(GROUP)
        } else {
            SubscribeOptions::default()
        };
        let done = sim.command(n, |node, now| {
            node.pubsub_subscribe(interest.pattern.as_str(), options, now)
                .is_ok()
        });
        if done == Some(true) {
            self.subscriptions
                .insert((n, self.lives[n as usize]), sim.now());
        }
    }

    fn publish(&mut self, sim: &mut Sim, n: NodeIdx) {
        let next = sim.now() + Duration::from_micros(1_000_000 / RATE);
        if next < at_fraction(self.duration, 0.8) {
            sim.schedule_for(next, n, tag(PUBLISH, n));
        }
        if !sim.is_up(n) {
            return;
        }
        let topic = self.publishers[&n];
        let index = self.messages.len();
        let qos = if index % 4 == 0 {
            Qos::AtMostOnce
        } else {
            Qos::AtLeastOnce
        };
        let name = self.topics[topic].as_str().to_owned();
        let payload = (index as u64).to_le_bytes().to_vec();
        let options = PublishOptions::qos(qos).with_deadline(self.deadline);
        let taken = sim.command(n, |node, now| {
            node.pubsub_publish(&name, payload, options, now)
        });
        match taken {
            Some(Ok(Publishing::Pending(id))) => {
                self.awaiting.insert((n, self.lives[n as usize], id), index);
            }
            Some(Ok(_)) => {}
            _ => {
                self.refused_publishes += 1;
                return;
            }
        }
        self.messages.push(Message {
            publisher: n,
            publisher_life: self.lives[n as usize],
            topic,
            qos,
            at: sim.now(),
            got: BTreeMap::new(),
            outcome: None,
        });
    }

    fn received(&mut self, sim: &Sim, n: NodeIdx, m: &macula_proto::pubsub::Received) {
        let Some(index) = m
            .payload
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .map(|i| i as usize)
            .filter(|i| *i < self.messages.len())
        else {
            self.misdelivered
                .push(format!("node {n} got a message the scenario never sent"));
            return;
        };
        let life = self.lives[n as usize];
        let message = &mut self.messages[index];
        let topic = &self.topics[message.topic];
        let matches = self
            .interests
            .get(&n)
            .is_some_and(|i| i.pattern.matches(topic) && m.topic == topic.as_str());
        if !matches {
            self.misdelivered.push(format!(
                "node {n} got message {index} on {} at {:.3} s",
                m.topic,
                sim.now().as_micros() as f64 / 1e6
            ));
        }
        let count = message.got.entry((n, life)).or_insert(0);
        *count += 1;
        if *count > 1 {
            self.duplicated.push(format!(
                "node {n} (life {life}) got message {index} ({:?}) {count} times",
                message.qos
            ));
        }
        self.latencies
            .push(sim.now().saturating_duration_since(message.at).as_micros());
        let key = (
            n,
            life,
            message.publisher,
            message.publisher_life,
            message.qos.level(),
        );
        if let Some(&last) = self.order.get(&key) {
            if last > index && message.qos == Qos::AtLeastOnce {
                self.out_of_order.push(format!(
                    "node {n} got message {index} after {last} from node {}",
                    message.publisher
                ));
            }
        }
        let last = self.order.entry(key).or_insert(index);
        *last = (*last).max(index);
        if self.interests.get(&n).is_some_and(|i| i.group) {
            let members: BTreeSet<NodeIdx> = message
                .got
                .keys()
                .map(|(s, _)| *s)
                .filter(|s| self.interests.get(s).is_some_and(|i| i.group))
                .collect();
            if members.len() > 1 {
                self.group_twice
                    .push(format!("message {index} reached group members {members:?}"));
            }
        }
    }

    /// Whether `n`'s life `life` was still up at `to`.
    fn up_through(&self, n: NodeIdx, life: u32, to: Instant) -> bool {
        self.ended.get(&(n, life)).map_or(true, |end| *end > to)
    }

    /// Whether `a` and `b` were on different sides of the partition at any time in
    /// `from..=to`.
    fn parted(&self, a: NodeIdx, b: NodeIdx, from: Instant, to: Instant) -> bool {
        self.split.is_some_and(|s| s.parted(a, b, from, to))
    }

    /// Counts of (pairs, eligible, delivered), for `qos`; group subscribers apart.
    fn tally(&self, sim: &Sim, qos: Qos) -> Tally {
        let mut t = Tally::default();
        let end = sim.now();
        for (index, m) in self.messages.iter().enumerate() {
            if m.qos != qos {
                continue;
            }
            let until = (m.at + self.deadline).min(end);
            // A publisher that crashes takes what it had not delivered with it: its messages
            // count if it stayed up for a while after publishing.
            // A publisher that just (re)started has not discovered its subscribers yet.
            let publisher_started = self
                .started
                .get(&(m.publisher, m.publisher_life))
                .copied()
                .unwrap_or(Instant::ZERO);
            let publisher_stays = publisher_started + DISCOVERY <= m.at
                && self.up_through(
                    m.publisher,
                    m.publisher_life,
                    (m.at + PUBLISHER_STAYS).min(end),
                );
            let mut group_eligible = false;
            for &s in &self.matching[m.topic] {
                let interest = &self.interests[&s];
                // The life the subscriber had at the publish.
                let Some(life) = self.life_at(s, m.at) else {
                    continue;
                };
                let eligible = publisher_stays
                    && self
                        .subscribed_in(s, life)
                        .is_some_and(|t| t + DISCOVERY <= m.at)
                    && self.up_through(s, life, until)
                    && !self.parted(
                        m.publisher,
                        s,
                        Instant::from_micros(
                            m.at.as_micros().saturating_sub(DISCOVERY.as_micros()),
                        ),
                        until,
                    );
                if interest.group {
                    group_eligible |= eligible;
                    continue;
                }
                t.pairs += 1;
                if eligible {
                    t.eligible += 1;
                    if m.got.contains_key(&(s, life)) {
                        t.delivered += 1;
                    } else if t.first_missing.is_none() {
                        let id = sim.node_id(s);
                        let outcome = match &m.outcome {
                            Some((acked, _)) if acked.contains(&id) => "acknowledged",
                            Some((_, missed)) if missed.contains(&id) => "missed",
                            Some(_) => "not sent to it",
                            None => "no outcome",
                        };
                        t.first_missing = Some(format!(
                            "message {index} ({:?}, {} at {:.3} s from node {}) never reached node {s} \
                             (subscribed in life {life} at {:.3} s; the publisher says: {outcome}; \
                             its life ended at {})",
                            m.qos,
                            self.topics[m.topic].as_str(),
                            m.at.as_micros() as f64 / 1e6,
                            m.publisher,
                            self.subscribed_in(s, life).map_or(0.0, |t| t.as_micros() as f64 / 1e6),
                            self.ended
                                .get(&(m.publisher, m.publisher_life))
                                .map_or("never".into(), |t| format!("{:.3} s", t.as_micros() as f64 / 1e6)),
                        ));
                    }
                }
            }
            if group_eligible {
                t.group_eligible += 1;
                let reached = m
                    .got
                    .keys()
                    .any(|(s, _)| self.interests.get(s).is_some_and(|i| i.group));
                if reached {
                    t.group_delivered += 1;
                }
            }
        }
        t
    }

    /// The life node `n` had at `at` (`None`: it was down).
    fn life_at(&self, n: NodeIdx, at: Instant) -> Option<u32> {
        let current = self.lives[n as usize];
        (0..=current).rev().find(|life| {
            let started = self
                .started
                .get(&(n, *life))
                .copied()
                .unwrap_or(Instant::ZERO);
            started <= at && self.ended.get(&(n, *life)).map_or(true, |end| *end > at)
        })
    }

    fn subscribed_in(&self, n: NodeIdx, life: u32) -> Option<Instant> {
        self.subscriptions.get(&(n, life)).copied()
    }
}

#[derive(Debug, Default)]
struct Tally {
    pairs: u64,
    eligible: u64,
    delivered: u64,
    group_eligible: u64,
    group_delivered: u64,
    first_missing: Option<String>,
}

impl Scenario for Pubsub {
    fn configure(&mut self, builder: &mut SimBuilder, params: &Params) {
        self.nodes = params.nodes as u32;
        self.bootstraps = bootstrap_count(params.nodes);
        self.duration = params.duration;
        self.faults = Some(params.faults.clone());
        self.deadline = DEADLINE;
        let share = (self.nodes / self.bootstraps) as usize;
        configure_nodes(builder, self.bootstraps, 4 * share + 512, |_| {});
        builder.read_inboxes(true);
    }

    fn start(&mut self, sim: &mut Sim) {
        self.rng = Some(Rng::from_seed(sim.derive_seed()));
        self.lives = vec![0; self.nodes as usize];
        for g in 0..5 {
            for k in 0..10 {
                self.topics
                    .push(Topic::new(&format!("s.{g}.{k}")).expect("valid"));
            }
        }
        for b in 1..self.bootstraps {
            for earlier in 0..b {
                sim.connect(b, earlier);
            }
        }
        let mut members: Vec<NodeIdx> = (self.bootstraps..self.nodes).collect();
        for &n in &members {
            let at = self.moment(0.0, 0.2);
            sim.schedule_for(at, n, tag(JOIN, n));
        }
        let count = members.len();
        let publishers = count.div_ceil(20);
        let subscribers = (count * 3).div_ceil(10).min(count - publishers);
        shuffle_front(self.rng(), &mut members, publishers + subscribers);
        for (i, &n) in members.iter().take(publishers).enumerate() {
            self.publishers.insert(n, i % self.topics.len());
            let at = self.moment(0.45, 0.46);
            sim.schedule_for(at, n, tag(PUBLISH, n));
        }
        for (j, &n) in members
            .iter()
            .skip(publishers)
            .take(subscribers)
            .enumerate()
        {
            let (g, k) = (self.rng().below(5), self.rng().below(10));
            let (pattern, group) = if j % 10 == 9 {
                (format!("s.0.{}", k % 5), true)
            } else if j % 3 == 2 {
                let text = match self.rng().below(3) {
                    0 => format!("s.{g}.*"),
                    1 => format!("s.*.{k}"),
                    _ => format!("**.{k}"),
                };
                (text, false)
            } else {
                (format!("s.{g}.{k}"), false)
            };
            let pattern = Pattern::new(&pattern).expect("valid");
            self.interests.insert(n, Interest { pattern, group });
            let at = self.moment(0.2, 0.25);
            sim.schedule_for(at, n, tag(SUBSCRIBE, n));
        }
        self.matching = self
            .topics
            .iter()
            .map(|t| {
                self.interests
                    .iter()
                    .filter(|(_, i)| i.pattern.matches(t))
                    .map(|(n, _)| *n)
                    .collect()
            })
            .collect();
        let faults = self.faults.clone().expect("configure() comes first");
        let crashes = (count as f64 * faults.churn).round() as usize;
        shuffle_front(self.rng(), &mut members, crashes);
        for &n in members.iter().take(crashes) {
            let at = faults.crash_moment(self.rng());
            sim.schedule(at, tag(CRASH, n));
        }
        let (bootstraps, nodes) = (self.bootstraps, self.nodes);
        self.split = Split::plan(sim, &faults, bootstraps, nodes, (PARTITION, HEAL));
    }

    fn on_action(&mut self, sim: &mut Sim, action: u64) {
        let n = (action & 0xffff_ffff) as NodeIdx;
        match action >> 32 {
            JOIN => {
                let b = n % self.bootstraps;
                sim.connect(n, b);
            }
            SUBSCRIBE => self.subscribe(sim, n),
            PUBLISH => self.publish(sim, n),
            CRASH if sim.is_up(n) => {
                let life = self.lives[n as usize];
                self.awaiting.retain(|(p, l, _), _| (*p, *l) != (n, life));
                if let Some(node) = sim.node(n) {
                    self.ended_stats.add(node);
                }
                self.ended.insert((n, self.lives[n as usize]), sim.now());
                let rng = self.rng.as_mut().expect("start() seeds the scenario");
                crash_for_a_while(sim, rng, n, tag(RESTART, n));
            }
            RESTART => {
                sim.restart(n);
                self.restarted += 1;
                self.lives[n as usize] += 1;
                self.started.insert((n, self.lives[n as usize]), sim.now());
                sim.connect(n, n % self.bootstraps);
                self.subscribe(sim, n);
            }
            PARTITION => {
                if let Some(split) = self.split {
                    split.apply(sim);
                }
            }
            HEAL => sim.heal(),
            _ => {}
        }
    }

    fn on_event(&mut self, sim: &mut Sim, node: NodeIdx, event: &Event) {
        if let Event::Pubsub(PubsubEvent::Published {
            id, acked, missed, ..
        }) = event
        {
            let key = (node, self.lives[node as usize], *id);
            if let Some(index) = self.awaiting.remove(&key) {
                self.messages[index].outcome = Some((acked.clone(), missed.clone()));
            }
        }
        rejoin_if_refused(sim, node, event, self.bootstraps, JOIN);
    }

    fn on_data(&mut self, sim: &mut Sim, node: NodeIdx, data: Data) {
        #[allow(irrefutable_let_patterns)] // other kinds exist under test-protocols
        if let Data::Message(m) = data {
            self.received(sim, node, &m);
        }
    }

    fn figures(&self, sim: &Sim) -> Map<String, Value> {
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        let q1 = self.tally(sim, Qos::AtLeastOnce);
        let q0 = self.tally(sim, Qos::AtMostOnce);
        let mut counters = self.ended_stats;
        for n in 0..self.nodes {
            if let Some(node) = sim.node(n) {
                counters.add(node);
            }
        }
        let mut latencies = self.latencies.clone();
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
                .map_or(0.0, |us| *us as f64 / 1000.0)
        };
        // Subscriber nodes matching each publish (outside groups, plus one per group).
        let mut matching = 0u64;
        for m in &self.messages {
            let subs = &self.matching[m.topic];
            let plain = subs.iter().filter(|s| !self.interests[s].group).count() as u64;
            let group = u64::from(subs.iter().any(|s| self.interests[s].group));
            matching += plain + group;
        }
        let publishes = self.messages.len() as u64;
        let mut m = Map::new();
        m.insert("bootstrap_nodes".into(), json!(self.bootstraps));
        m.insert("publishers".into(), json!(self.publishers.len()));
        m.insert("subscribers".into(), json!(self.interests.len()));
        m.insert(
            "wildcard_subscribers".into(),
            json!(self
                .interests
                .values()
                .filter(|i| i.pattern.is_wildcard())
                .count()),
        );
        m.insert(
            "group_subscribers".into(),
            json!(self.interests.values().filter(|i| i.group).count()),
        );
        m.insert("publishes".into(), json!(publishes));
        m.insert("publishes_refused".into(), json!(self.refused_publishes));
        m.insert("qos1_pairs".into(), json!(q1.pairs));
        m.insert("qos1_eligible".into(), json!(q1.eligible));
        m.insert("qos1_delivered".into(), json!(q1.delivered));
        m.insert(
            "qos1_eligible_share".into(),
            json!(ratio(q1.eligible, q1.pairs)),
        );
        m.insert(
            "delivery_ratio_qos1".into(),
            json!(ratio(q1.delivered, q1.eligible)),
        );
        m.insert("qos0_eligible".into(), json!(q0.eligible));
        m.insert(
            "delivery_ratio_qos0".into(),
            json!(ratio(q0.delivered, q0.eligible)),
        );
        m.insert(
            "group_messages_eligible".into(),
            json!(q1.group_eligible + q0.group_eligible),
        );
        m.insert(
            "group_delivery_ratio".into(),
            json!(ratio(
                q1.group_delivered + q0.group_delivered,
                q1.group_eligible + q0.group_eligible
            )),
        );
        m.insert("latency_p50_ms".into(), json!(pct(0.5)));
        m.insert("latency_p99_ms".into(), json!(pct(0.99)));
        m.insert(
            "matching_subscribers_per_publish".into(),
            json!(ratio(matching, publishes)),
        );
        let per_publish = ratio(counters.sent, counters.published);
        m.insert("messages_per_publish".into(), json!(per_publish));
        // Copies sent per publish over subscriber nodes that match it: 1 is no flooding and
        // no copy lost to discovery.
        m.insert(
            "messages_per_matching_subscriber".into(),
            json!(per_publish / ratio(matching, publishes).max(f64::MIN_POSITIVE)),
        );
        m.insert(
            "resent_per_publish".into(),
            json!(ratio(counters.resent, counters.published)),
        );
        m.insert(
            "acks_per_publish".into(),
            json!(ratio(counters.acks, counters.published)),
        );
        m.insert(
            "discovery_lookups_per_publish".into(),
            json!(ratio(counters.lookups, counters.published)),
        );
        m.insert("restarted".into(), json!(self.restarted));
        m
    }

    fn crash_window(&self, duration: Duration) -> (Instant, Instant) {
        // Nodes crash while messages flow.
        (at_fraction(duration, 0.35), at_fraction(duration, 0.7))
    }

    fn verdicts(&self, sim: &Sim) -> Vec<Verdict> {
        let first = |list: &[String], what: &str| match list.first() {
            Some(e) => format!("{e} ({} such)", list.len()),
            None => what.to_owned(),
        };
        let q1 = self.tally(sim, Qos::AtLeastOnce);
        let mut bounded = None;
        for n in 0..self.nodes {
            let Some(node) = sim.node(n) else { continue };
            let config = &node.config().pubsub;
            let ps = node.pubsub();
            if ps.outstanding() > config.max_waiting + config.max_outstanding
                || ps.receiving() > macula_proto::pubsub::MAX_RECEIVING
                || ps.streams() > config.max_streams
                || ps.cache().len() > config.cache.max_prefixes
            {
                bounded = Some(format!("node {n}: a pub/sub bound is exceeded"));
                break;
            }
        }
        vec![
            Verdict {
                name: "pubsub_no_misdelivery",
                kind: Kind::Safety,
                ok: self.misdelivered.is_empty(),
                detail: first(
                    &self.misdelivered,
                    "every message reached only matching subscribers",
                ),
            },
            Verdict {
                name: "pubsub_once_per_life",
                kind: Kind::Safety,
                ok: self.duplicated.is_empty(),
                detail: first(&self.duplicated, "no message reached a subscriber twice"),
            },
            Verdict {
                name: "pubsub_qos1_in_order",
                kind: Kind::Safety,
                ok: self.out_of_order.is_empty(),
                detail: first(
                    &self.out_of_order,
                    "each publisher's QoS 1 messages arrived in order",
                ),
            },
            Verdict {
                name: "pubsub_group_one_member",
                kind: Kind::Safety,
                ok: self.group_twice.is_empty(),
                detail: first(
                    &self.group_twice,
                    "every queue-group message reached at most one member",
                ),
            },
            Verdict {
                name: "pubsub_qos1_delivered",
                kind: Kind::Liveness,
                ok: q1.delivered == q1.eligible,
                detail: q1.first_missing.unwrap_or_else(|| {
                    format!(
                        "{} eligible (subscriber, message) pairs delivered",
                        q1.eligible
                    )
                }),
            },
            Verdict {
                name: "pubsub_bounded",
                kind: Kind::Safety,
                ok: bounded.is_none(),
                detail: bounded
                    .unwrap_or_else(|| "every live node's pub/sub state within its bounds".into()),
            },
        ]
    }
}
