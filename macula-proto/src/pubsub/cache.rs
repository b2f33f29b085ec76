//! A publisher's memory of who subscribes where, and how often it may ask again.
//!
//! Subscriptions are announced in the DHT under their pattern's literal prefix, so a publisher
//! of topic `a.b.c` needs what is announced under `a`, `a.b`, `a.b.c` and the empty prefix
//! ([`Topic::prefixes`]). It keeps each prefix's answer for [`CacheConfig::fresh_for`] (5 s by
//! default); a prefix it has no answer for, or an old one, is looked up again, but at most once
//! per [`CacheConfig::lookup_interval`] (2 s) for a topic. Meanwhile an old answer still
//! serves. Prefixes are shared between topics (`a.b.c` and `a.b.d` both need `a` and `a.b`), and
//! at most [`CacheConfig::max_prefixes`] are kept: the one used least recently goes first.
//! The memory itself is [`Providers`], which RPC shares.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::topic::{Pattern, Topic};
use crate::discovery::{Bounds, Provider, Providers};
use crate::id::NodeId;
use crate::time::{Duration, Instant};

/// How long answers are kept and how often a topic may be looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long a prefix's answer counts as fresh. Default: 5 s.
    pub fresh_for: Duration,
    /// Least time between two lookups for one topic. Default: 2 s.
    pub lookup_interval: Duration,
    /// Most prefixes remembered. Default: 1,024.
    pub max_prefixes: usize,
    /// Most topics whose last lookup is remembered. Default: 1,024.
    pub max_topics: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            fresh_for: Duration::from_secs(5),
            lookup_interval: Duration::from_secs(2),
            max_prefixes: 1024,
            max_topics: 1024,
        }
    }
}

/// A node that announced subscriptions under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    /// The node.
    pub node: NodeId,
    /// Where it listens (from its signed record).
    pub addr: Option<SocketAddr>,
    /// Its patterns under that prefix, each with the queue group it subscribes in (`None`:
    /// every message).
    pub patterns: Vec<(Pattern, Option<String>)>,
}

/// Where one topic's messages go, as far as the cache knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// Nodes that take every message, ordered by id, each with an address to reach it at.
    pub plain: Vec<(NodeId, Option<SocketAddr>)>,
    /// For each queue group, its members, ordered by id: one of them takes each message.
    pub groups: BTreeMap<String, Vec<(NodeId, Option<SocketAddr>)>>,
}

impl Provider for Subscriber {
    fn node(&self) -> NodeId {
        self.node
    }
}

/// See the [module documentation](self). Its memory is the [`Providers`] that RPC shares:
/// names are literal prefixes, keys are topics.
#[derive(Debug)]
pub struct SubscriberCache {
    providers: Providers<Subscriber>,
}

impl Default for SubscriberCache {
    fn default() -> Self {
        SubscriberCache::new(CacheConfig::default())
    }
}

impl SubscriberCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        SubscriberCache {
            providers: Providers::new(Bounds {
                fresh_for: config.fresh_for,
                lookup_interval: config.lookup_interval,
                max_names: config.max_prefixes,
                max_keys: config.max_topics,
                // A subscriber that could not be reached is left out until the next answer.
                quarantine: Duration::ZERO,
                max_failed: config.max_prefixes,
            }),
        }
    }

    /// Changes whenever what [`SubscriberCache::subscribers`] or
    /// [`SubscriberCache::knows`] answers may have changed: an answer kept, dropped or
    /// edited. A publisher keeps a topic's subscribers worked out while it stays the same.
    pub fn generation(&self) -> u64 {
        self.providers.generation()
    }

    /// The earliest time [`SubscriberCache::to_look_up`] may have a prefix of `topic` to
    /// look up: when its oldest answer stops being fresh, but not before `lookup_interval`
    /// after the topic's last lookup. Until then (and while the generation stays the same)
    /// nothing about the topic needs asking.
    pub fn next_lookup(&self, topic: &Topic) -> Instant {
        let stale = topic
            .prefixes()
            .map(|p| self.providers.stale_at(p))
            .min()
            .unwrap_or(Instant::ZERO);
        stale.max(self.providers.next_lookup_of(topic.as_str()))
    }

    /// The prefixes of `topic` to look up now: those with no answer or an old one, unless the
    /// topic was looked up less than `lookup_interval` ago (then none). Notes the lookup.
    pub fn to_look_up(&mut self, topic: &Topic, now: Instant) -> Vec<String> {
        if !self.providers.may_look_up(topic.as_str(), now) {
            return Vec::new();
        }
        let due: Vec<String> = topic
            .prefixes()
            .filter(|p| self.providers.is_due(p, now))
            .map(String::from)
            .collect();
        if !due.is_empty() {
            self.providers.looking_up(topic.as_str(), now);
        }
        due
    }

    /// Whether every prefix of `topic` has an answer, fresh or not: a publish can be sent.
    pub fn knows(&self, topic: &Topic) -> bool {
        topic.prefixes().all(|p| self.providers.knows(p))
    }

    /// Keeps the answer for `prefix`.
    pub fn fill(&mut self, prefix: &str, subscribers: Vec<Subscriber>, now: Instant) {
        self.providers.fill(prefix, subscribers, now);
    }

    /// A lookup of `prefix` failed (nobody answered in time, or the DHT was busy): an answer
    /// already kept stays (and is looked up again once the topic may be), else the prefix is
    /// taken to have no subscribers for now, so publishes can go on.
    pub fn fill_failed(&mut self, prefix: &str, now: Instant) {
        self.providers.fill_failed(prefix, now);
    }

    /// The nodes with a pattern that matches `topic`, each once per group (or once outside
    /// any), with an address to reach them at.
    pub fn subscribers(&mut self, topic: &Topic, now: Instant) -> Targets {
        type Found = BTreeMap<NodeId, Option<SocketAddr>>;
        fn note(found: &mut Found, s: &Subscriber) {
            let addr = found.entry(s.node).or_insert(s.addr);
            if addr.is_none() {
                *addr = s.addr;
            }
        }
        let mut plain = Found::new();
        let mut groups: BTreeMap<String, Found> = BTreeMap::new();
        for prefix in topic.prefixes() {
            for s in self.providers.get(prefix, now) {
                for (pattern, group) in &s.patterns {
                    if !pattern.matches(topic) {
                        continue;
                    }
                    match group {
                        None => note(&mut plain, s),
                        Some(g) => note(groups.entry(g.clone()).or_default(), s),
                    }
                }
            }
        }
        Targets {
            plain: plain.into_iter().collect(),
            groups: groups
                .into_iter()
                .map(|(g, m)| (g, m.into_iter().collect()))
                .collect(),
        }
    }

    /// A delivery to `node` failed at `now`: it is left out of what is known until the next
    /// answer (or a link to it comes up, [`SubscriberCache::alive`]).
    pub fn forget(&mut self, node: &NodeId, now: Instant) {
        self.providers.failed(*node, now);
    }

    /// A link to `node` came up: it is reachable again.
    pub fn alive(&mut self, node: &NodeId) {
        self.providers.alive(node);
    }

    /// What is known under `prefix` (nodes that failed since included), and when it was
    /// fetched.
    pub fn known(&self, prefix: &str) -> Option<(&[Subscriber], Instant)> {
        self.providers.known(prefix)
    }

    /// Prefixes remembered.
    pub fn len(&self) -> usize {
        self.providers.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn t(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    fn sub(n: u8, patterns: &[&str]) -> Subscriber {
        Subscriber {
            node: NodeId([n; 32]),
            addr: None,
            patterns: patterns
                .iter()
                .map(|p| match p.split_once('@') {
                    Some((p, g)) => (Pattern::new(p).unwrap(), Some(g.into())),
                    None => (Pattern::new(p).unwrap(), None),
                })
                .collect(),
        }
    }

    #[test]
    fn a_topic_looks_up_its_prefixes_and_matching_subscribers_are_found() {
        let mut c = SubscriberCache::default();
        let topic = t("sensors.kitchen.temp");
        let due = c.to_look_up(&topic, at(0));
        assert_eq!(
            due,
            vec!["sensors", "sensors.kitchen", "sensors.kitchen.temp", ""]
        );
        assert!(!c.knows(&topic));
        c.fill(
            "sensors",
            vec![sub(1, &["sensors.*.temp"]), sub(2, &["sensors.*.humidity"])],
            at(10),
        );
        c.fill("sensors.kitchen", Vec::new(), at(10));
        c.fill(
            "sensors.kitchen.temp",
            vec![sub(3, &["sensors.kitchen.temp"])],
            at(10),
        );
        c.fill(
            "",
            vec![sub(1, &["**.temp"]), sub(4, &["**.light"])],
            at(10),
        );
        assert!(c.knows(&topic));
        let found = c.subscribers(&topic, at(20));
        let plain: Vec<NodeId> = found.plain.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            plain,
            vec![NodeId([1; 32]), NodeId([3; 32])],
            "each once, only matching"
        );
        assert!(found.groups.is_empty());
    }

    #[test]
    fn answers_stay_fresh_for_five_seconds_and_a_topic_is_looked_up_at_most_every_two() {
        let mut c = SubscriberCache::default();
        let topic = t("a.b");
        assert_eq!(c.to_look_up(&topic, at(0)).len(), 3);
        for p in ["a", "a.b", ""] {
            c.fill(p, Vec::new(), at(100));
        }
        assert!(c.to_look_up(&topic, at(2_500)).is_empty(), "fresh");
        // At 5.1 s the answers are 5 s old and the topic was last looked up 5.1 s ago: again.
        assert_eq!(c.to_look_up(&topic, at(5_100)).len(), 3);
        assert!(
            c.to_look_up(&topic, at(6_000)).is_empty(),
            "one lookup per 2 s"
        );
        assert!(c.knows(&topic), "an old answer still serves meanwhile");
        // Another topic shares the prefix `a`, which is still remembered.
        let other = t("a.c");
        assert_eq!(c.to_look_up(&other, at(6_000)), vec!["a", "a.c", ""]);
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_failed_nodes() {
        let mut c = SubscriberCache::new(CacheConfig {
            max_prefixes: 4,
            max_topics: 2,
            ..CacheConfig::default()
        });
        for i in 0..10u64 {
            let name = alloc::format!("p{i}");
            c.fill(&name, vec![sub(1, &["**"])], at(i));
            let topic = t(&alloc::format!("t{i}"));
            c.to_look_up(&topic, at(i));
        }
        assert_eq!(c.len(), 4);
        assert_eq!(c.providers.keys(), 2);
        assert!(c.providers.knows("p9") && !c.providers.knows("p0"));
        c.forget(&NodeId([1; 32]), at(20));
        c.fill("", Vec::new(), at(20));
        assert!(c.subscribers(&t("p9"), at(21)).plain.is_empty());
    }

    #[test]
    fn a_failed_lookup_keeps_what_was_known() {
        let mut c = SubscriberCache::default();
        let topic = t("a");
        c.fill("a", vec![sub(1, &["a"])], at(0));
        c.fill_failed("a", at(6_000));
        c.fill_failed("", at(6_000));
        assert!(c.knows(&topic));
        assert_eq!(c.subscribers(&topic, at(6_001)).plain.len(), 1);
        // Still old: looked up again once the topic may be.
        assert_eq!(c.to_look_up(&topic, at(6_001)), vec!["a"]);
    }

    #[test]
    fn queue_group_members_are_listed_per_group() {
        let mut c = SubscriberCache::default();
        let topic = t("jobs.render");
        c.fill(
            "jobs",
            vec![sub(1, &["jobs.*@workers"]), sub(2, &["jobs.**@workers"])],
            at(0),
        );
        c.fill("", vec![sub(3, &["**@audit", "**"])], at(0));
        let found = c.subscribers(&topic, at(1));
        let members =
            |g: &str| -> Vec<NodeId> { found.groups[g].iter().map(|(n, _)| *n).collect() };
        assert_eq!(members("workers"), vec![NodeId([1; 32]), NodeId([2; 32])]);
        assert_eq!(members("audit"), vec![NodeId([3; 32])]);
        assert_eq!(found.plain.len(), 1, "node 3 also takes every message");
    }

    #[test]
    fn the_generation_moves_with_every_change_and_the_next_lookup_is_known() {
        let mut c = SubscriberCache::default();
        let topic = t("a.b");
        let g0 = c.generation();
        assert_eq!(
            c.next_lookup(&topic),
            Instant::ZERO,
            "nothing known: due now"
        );
        assert_eq!(c.to_look_up(&topic, at(0)).len(), 3);
        assert_eq!(
            c.next_lookup(&topic),
            at(2_000),
            "not again before two seconds"
        );
        c.fill("a", vec![sub(1, &["a.*"])], at(100));
        c.fill("a.b", Vec::new(), at(200));
        c.fill("", Vec::new(), at(300));
        assert!(c.generation() > g0);
        // Fresh until the oldest answer is five seconds old.
        assert_eq!(c.next_lookup(&topic), at(5_100));
        let g1 = c.generation();
        c.forget(&NodeId([1; 32]), at(5_200));
        assert_ne!(c.generation(), g1);
        assert!(
            c.subscribers(&topic, at(5_200)).plain.is_empty(),
            "left out once it failed"
        );
        // Until the next answer for its prefix lists it again, or a link to it comes up.
        c.alive(&NodeId([1; 32]));
        assert_eq!(c.subscribers(&topic, at(5_300)).plain.len(), 1);
        c.forget(&NodeId([1; 32]), at(5_400));
        c.fill("a", vec![sub(1, &["a.*"])], at(5_500));
        assert_eq!(c.subscribers(&topic, at(5_500)).plain.len(), 1);
        let g2 = c.generation();
        c.fill_failed("a", at(6_000));
        assert_eq!(c.generation(), g2, "a failed lookup keeps what was known");
    }
}
