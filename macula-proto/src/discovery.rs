//! Finding the nodes that serve a name, and remembering them for a while.
//!
//! A pub/sub subscriber of a topic prefix and an RPC provider of a procedure are the same thing
//! to the node looking for them: a node that announced, in a signed provider record in the DHT,
//! that it serves a name. [`Providers`] is the one memory of those answers that both use:
//!
//! - the answer for a name is kept for `fresh_for`; after that it still serves, but the name is
//!   due to be looked up again;
//! - a *key* (the thing a caller asks about: a topic, covering several names, or a procedure)
//!   is looked up at most once per `lookup_interval`;
//! - at most `max_names` answers and `max_keys` keys are kept, the least recently used going
//!   first;
//! - a node that failed (a delivery or a call to it went nowhere) is left out of every answer
//!   fetched before its failure and up to `quarantine` after it, until it proves alive again
//!   ([`Providers::alive`]: a link to it came up). With a quarantine of zero that is "until
//!   the next answer"; with a longer one, a provider killed without a goodbye, whose record
//!   lives on in the DHT, costs one failure per quarantine rather than one per lookup;
//! - every change to what the answers say moves [`Providers::generation`], so a user can keep
//!   what it worked out from them until then.
//!
//! The announcing side is smaller: [`Announcer`] holds the announcements the DHT could not
//! make, to try again after a back-off.
//!
//! It holds what the DHT answered and decides nothing else: which names a key needs and what a
//! provider's record means belong to its user.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use crate::id::NodeId;
use crate::time::{Duration, Instant};

/// A provider as its user reads it from a record: it must say which node it is.
pub trait Provider {
    /// The node that serves.
    fn node(&self) -> NodeId;
}

/// How long answers are kept, how often a key may be looked up, and how much is remembered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// How long an answer counts as fresh.
    pub fresh_for: Duration,
    /// Least time between two lookups for one key.
    pub lookup_interval: Duration,
    /// Most names whose answer is kept.
    pub max_names: usize,
    /// Most keys whose last lookup is remembered.
    pub max_keys: usize,
    /// How long after a node failed answers that list it still leave it out (unless it
    /// proves alive first). Zero: answers fetched after the failure list it again.
    pub quarantine: Duration,
    /// Most failed nodes remembered.
    pub max_failed: usize,
}

#[derive(Debug)]
struct Answer<T> {
    providers: Vec<T>,
    fetched: Instant,
    used: Instant,
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct Providers<T> {
    bounds: Bounds,
    names: BTreeMap<String, Answer<T>>,
    /// When each key was last looked up.
    lookups: BTreeMap<String, Instant>,
    /// Nodes that failed, and when.
    failed: BTreeMap<NodeId, Instant>,
    generation: u64,
}

impl<T: Provider> Providers<T> {
    /// An empty memory.
    pub fn new(bounds: Bounds) -> Self {
        Providers {
            bounds,
            names: BTreeMap::new(),
            lookups: BTreeMap::new(),
            failed: BTreeMap::new(),
            generation: 0,
        }
    }

    /// Its bounds.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// Changes whenever what [`Providers::get`] or [`Providers::knows`] answers may have.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether `key` may be looked up at `now` (not within `lookup_interval` of its last).
    pub fn may_look_up(&self, key: &str, now: Instant) -> bool {
        self.lookups.get(key).map_or(true, |&last| {
            now.saturating_duration_since(last) >= self.bounds.lookup_interval
        })
    }

    /// Notes that `key` is being looked up at `now` (the least recently looked-up key is
    /// forgotten if there are too many).
    pub fn looking_up(&mut self, key: &str, now: Instant) {
        if !self.lookups.contains_key(key) && self.lookups.len() >= self.bounds.max_keys {
            let oldest = self
                .lookups
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.lookups.remove(&k);
            }
        }
        self.lookups.insert(key.into(), now);
    }

    /// When `key` may next be looked up.
    pub fn next_lookup_of(&self, key: &str) -> Instant {
        self.lookups
            .get(key)
            .map_or(Instant::ZERO, |&t| t + self.bounds.lookup_interval)
    }

    /// Whether `name` has no answer, or only one older than `fresh_for`.
    pub fn is_due(&self, name: &str, now: Instant) -> bool {
        self.names.get(name).map_or(true, |a| {
            now.saturating_duration_since(a.fetched) >= self.bounds.fresh_for
        })
    }

    /// When the answer for `name` stops being fresh (`Instant::ZERO` if there is none).
    pub fn stale_at(&self, name: &str) -> Instant {
        self.names
            .get(name)
            .map_or(Instant::ZERO, |a| a.fetched + self.bounds.fresh_for)
    }

    /// Whether `name` has an answer, fresh or not.
    pub fn knows(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// Keeps the answer for `name`.
    pub fn fill(&mut self, name: &str, providers: Vec<T>, now: Instant) {
        if !self.names.contains_key(name) && self.names.len() >= self.bounds.max_names {
            let stalest = self
                .names
                .iter()
                .min_by_key(|(_, a)| a.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                self.names.remove(&k);
            }
        }
        self.generation += 1;
        self.names.insert(
            name.into(),
            Answer {
                providers,
                fetched: now,
                used: now,
            },
        );
    }

    /// A lookup of `name` failed (nobody answered in time, or the DHT was busy): an answer
    /// already kept stays, else the name is taken to have no providers for now.
    pub fn fill_failed(&mut self, name: &str, now: Instant) {
        if !self.names.contains_key(name) {
            self.fill(name, Vec::new(), now);
        }
    }

    /// The providers of `name` as last answered, without those that failed since (or within
    /// the quarantine before) the answer was fetched; empty if unknown.
    pub fn get(&mut self, name: &str, now: Instant) -> impl Iterator<Item = &T> {
        let (failed, quarantine) = (&self.failed, self.bounds.quarantine);
        let (providers, fetched) = match self.names.get_mut(name) {
            Some(a) => {
                a.used = now;
                (&a.providers[..], a.fetched)
            }
            None => (&[][..], Instant::ZERO),
        };
        providers.iter().filter(move |p| {
            failed
                .get(&p.node())
                .map_or(true, |&at| fetched > at + quarantine)
        })
    }

    /// A delivery or call to `node` went nowhere at `now`: answers fetched until the
    /// quarantine has passed leave it out, unless it proves alive ([`Providers::alive`]).
    pub fn failed(&mut self, node: NodeId, now: Instant) {
        if !self.failed.contains_key(&node) && self.failed.len() >= self.bounds.max_failed {
            let oldest = self
                .failed
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(n, _)| *n);
            if let Some(n) = oldest {
                self.failed.remove(&n);
            }
        }
        self.failed.insert(node, now);
        self.generation += 1;
    }

    /// `node` proved alive (a link to it came up): it is no longer left out.
    pub fn alive(&mut self, node: &NodeId) {
        if self.failed.remove(node).is_some() {
            self.generation += 1;
        }
    }

    /// `node` said it does not serve `name` (any more): it leaves that answer.
    pub fn remove(&mut self, name: &str, node: &NodeId) {
        if let Some(answer) = self.names.get_mut(name) {
            let before = answer.providers.len();
            answer.providers.retain(|p| p.node() != *node);
            if answer.providers.len() != before {
                self.generation += 1;
            }
        }
    }

    /// Whether `node` is left out for having failed.
    pub fn is_failed(&self, node: &NodeId) -> bool {
        self.failed.contains_key(node)
    }

    /// What is known under `name` (failed nodes included), and when it was fetched.
    pub fn known(&self, name: &str) -> Option<(&[T], Instant)> {
        self.names
            .get(name)
            .map(|a| (a.providers.as_slice(), a.fetched))
    }

    /// Names whose answer is kept.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Keys whose last lookup is remembered.
    pub fn keys(&self) -> usize {
        self.lookups.len()
    }
}

/// Wait before an announcement the DHT could not make is tried again; doubled on each
/// failure up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Longest wait between two tries of an announcement.
pub const MAX_RETRY: Duration = Duration::from_secs(32);

/// The other side of discovery: the names this node announces whose last announcement the
/// DHT could not make (no peers yet, nobody acknowledged), to try again after a back-off.
/// The DHT republishes what it stored; this only covers what it never stored.
#[derive(Debug)]
pub struct Announcer {
    again: BTreeSet<String>,
    at: Option<Instant>,
    backoff: Duration,
}

impl Default for Announcer {
    fn default() -> Self {
        Announcer {
            again: BTreeSet::new(),
            at: None,
            backoff: FIRST_RETRY,
        }
    }
}

impl Announcer {
    /// An announcement was stored: the back-off starts over.
    pub fn stored(&mut self) {
        self.backoff = FIRST_RETRY;
    }

    /// An announcement of `name` failed at `now`: it is tried again after the back-off,
    /// which doubles.
    pub fn failed(&mut self, name: String, now: Instant) {
        self.again.insert(name);
        let at = now + self.backoff;
        self.at = Some(self.at.map_or(at, |t| t.min(at)));
        self.backoff = self.backoff.saturating_mul(2).min(MAX_RETRY);
    }

    /// A peer came up: what waits is tried at once.
    pub fn peer_up(&mut self, now: Instant) {
        if !self.again.is_empty() {
            self.at = Some(now);
        }
    }

    /// The names due to be announced again at `now` (they leave the announcer).
    pub fn due(&mut self, now: Instant) -> BTreeSet<String> {
        if self.at.is_some_and(|t| t <= now) {
            self.at = None;
            core::mem::take(&mut self.again)
        } else {
            BTreeSet::new()
        }
    }

    /// When [`Announcer::due`] next has something.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.at
    }

    /// Nothing is announced any more (the node is closing).
    pub fn clear(&mut self) {
        self.again.clear();
        self.at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[derive(Debug, PartialEq)]
    struct P(u8);

    impl Provider for P {
        fn node(&self) -> NodeId {
            NodeId([self.0; 32])
        }
    }

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    fn bounds() -> Bounds {
        Bounds {
            fresh_for: Duration::from_secs(5),
            lookup_interval: Duration::from_secs(2),
            max_names: 3,
            max_keys: 2,
            quarantine: Duration::from_secs(30),
            max_failed: 2,
        }
    }

    fn nodes(p: &mut Providers<P>, name: &str, now: Instant) -> Vec<u8> {
        p.get(name, now).map(|p| p.0).collect()
    }

    #[test]
    fn answers_stay_fresh_then_due_and_keys_are_rate_limited() {
        let mut p = Providers::new(bounds());
        assert!(p.is_due("a", at(0)) && !p.knows("a"));
        assert!(p.may_look_up("k", at(0)));
        p.looking_up("k", at(0));
        assert!(!p.may_look_up("k", at(1_999)) && p.may_look_up("k", at(2_000)));
        assert_eq!(p.next_lookup_of("k"), at(2_000));
        let g = p.generation();
        p.fill("a", vec![P(1), P(2)], at(100));
        assert!(p.generation() > g);
        assert!(!p.is_due("a", at(5_099)) && p.is_due("a", at(5_100)));
        assert_eq!(p.stale_at("a"), at(5_100));
        assert_eq!(nodes(&mut p, "a", at(200)), [1, 2]);
        // A failed lookup keeps what was known, and counts as an empty answer otherwise.
        p.fill_failed("a", at(6_000));
        assert_eq!(nodes(&mut p, "a", at(6_000)), [1, 2]);
        p.fill_failed("b", at(6_000));
        assert!(p.knows("b") && nodes(&mut p, "b", at(6_000)).is_empty());
    }

    #[test]
    fn a_failed_node_is_left_out_until_it_proves_alive_or_its_quarantine_passes() {
        let mut p = Providers::new(bounds());
        p.fill("a", vec![P(1), P(2)], at(0));
        let g = p.generation();
        p.failed(NodeId([1; 32]), at(1_000));
        assert!(p.generation() > g && p.is_failed(&NodeId([1; 32])));
        assert_eq!(nodes(&mut p, "a", at(1_000)), [2]);
        // The record still lists it: a fresh answer within the quarantine does not bring it
        // back...
        p.fill("a", vec![P(1), P(2)], at(10_000));
        assert_eq!(nodes(&mut p, "a", at(10_000)), [2]);
        // ...one after it does.
        p.fill("a", vec![P(1), P(2)], at(31_001));
        assert_eq!(nodes(&mut p, "a", at(31_001)), [1, 2]);
        // A link coming up proves it alive at once.
        p.failed(NodeId([2; 32]), at(32_000));
        p.alive(&NodeId([2; 32]));
        assert_eq!(nodes(&mut p, "a", at(32_000)), [1, 2]);
    }

    #[test]
    fn everything_it_remembers_is_bounded() {
        let mut p = Providers::new(bounds());
        for i in 0..10u8 {
            let name = alloc::format!("n{i}");
            p.fill(&name, vec![P(i)], at(u64::from(i)));
            p.looking_up(&name, at(u64::from(i)));
            p.failed(NodeId([i; 32]), at(u64::from(i)));
        }
        assert_eq!((p.len(), p.keys(), p.failed.len()), (3, 2, 2));
        assert!(
            p.knows("n9") && !p.knows("n0"),
            "the least recently used went"
        );
    }
}
