//! Record keys and the record store: what this node keeps for others, bounded and expiring.
//!
//! A key is SHA-256 over the realm, a kind and a name, so keys of different realms or kinds
//! never collide and a node can't be asked to hold another realm's records. Under a key the
//! store keeps at most one record per publisher (a newer `Store` replaces it), at most
//! `max_providers_per_key` publishers, and at most `max_records` records in all; every record
//! expires after its TTL (capped by the store) unless its publisher stores it again. Pure
//! data: times arrive as arguments.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::net::SocketAddr;

use sha2::{Digest, Sha256};

use crate::id::NodeId;
use crate::time::{Duration, Instant};
use crate::wire::{DhtRefusal, KeyBytes, WireAddr, WireRecord};

/// What a key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    /// A value (a put and get).
    Value,
    /// A provider record (provide and find-providers).
    Provider,
}

impl KeyKind {
    fn tag(self) -> u8 {
        match self {
            KeyKind::Value => 0,
            KeyKind::Provider => 1,
        }
    }
}

/// The DHT key of `name` of `kind` in `realm`:
/// `SHA-256("macula/1 dht-key" || u32_be(len(realm)) || realm || kind || name)`.
pub fn record_key(realm: &str, kind: KeyKind, name: &[u8]) -> KeyBytes {
    let mut h = Sha256::new();
    h.update(b"macula/1 dht-key");
    h.update((realm.len() as u32).to_be_bytes());
    h.update(realm.as_bytes());
    h.update([kind.tag()]);
    h.update(name);
    h.finalize().into()
}

/// A record as a node holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The node that published it.
    pub publisher: NodeId,
    /// Where the publisher listens.
    pub addrs: Vec<SocketAddr>,
    /// The value (or provider metadata).
    pub value: Vec<u8>,
    /// When it expires.
    pub expires: Instant,
}

impl Record {
    /// The record as sent at `now` (its TTL relative, rounded up to whole seconds).
    pub fn to_wire(&self, now: Instant) -> WireRecord {
        let left = self.expires.saturating_duration_since(now).as_micros();
        WireRecord {
            publisher: self.publisher,
            addrs: self.addrs.iter().map(|a| WireAddr::from(*a)).collect(),
            value: self.value.clone(),
            ttl_secs: u32::try_from(left.div_ceil(1_000_000)).unwrap_or(u32::MAX),
        }
    }

    /// A received record, its TTL capped at `max_ttl`, received at `now`.
    pub fn from_wire(w: WireRecord, now: Instant, max_ttl: Duration) -> Self {
        let ttl = Duration::from_secs(u64::from(w.ttl_secs)).min(max_ttl);
        Record {
            publisher: w.publisher,
            addrs: w.addrs.into_iter().map(SocketAddr::from).collect(),
            value: w.value,
            expires: now + ttl,
        }
    }
}

/// The store's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most records in all.
    pub max_records: usize,
    /// Most publishers under one key.
    pub max_providers_per_key: usize,
    /// Largest value, in bytes.
    pub max_value_size: usize,
    /// Most addresses kept per record.
    pub max_addrs: usize,
}

/// The records this node holds for the DHT.
#[derive(Debug)]
pub struct RecordStore {
    limits: StoreLimits,
    records: BTreeMap<KeyBytes, Vec<Record>>,
    /// (expiry, key, publisher) for every record, so expiry is ordered and cheap.
    expiries: BTreeSet<(Instant, KeyBytes, NodeId)>,
    len: usize,
}

impl RecordStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        RecordStore {
            limits,
            records: BTreeMap::new(),
            expiries: BTreeSet::new(),
            len: 0,
        }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys held.
    pub fn key_count(&self) -> usize {
        self.records.len()
    }

    /// The bounds.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Live records under `key` at `now`.
    pub fn get(&self, key: &KeyBytes, now: Instant) -> impl Iterator<Item = &Record> + '_ {
        self.records
            .get(key)
            .into_iter()
            .flatten()
            .filter(move |r| r.expires > now)
    }

    /// Keeps `record` under `key` (replacing the same publisher's earlier one).
    ///
    /// # Errors
    /// The [`DhtRefusal`] to answer with when a bound would be broken.
    pub fn put(&mut self, key: KeyBytes, mut record: Record) -> Result<(), DhtRefusal> {
        if record.value.len() > self.limits.max_value_size {
            return Err(DhtRefusal::ValueTooLarge);
        }
        record.addrs.truncate(self.limits.max_addrs);
        let list = self.records.get(&key);
        let existing = list.and_then(|l| l.iter().position(|r| r.publisher == record.publisher));
        match existing {
            Some(at) => {
                let list = self.records.get_mut(&key).expect("looked up above");
                let old = core::mem::replace(&mut list[at], record);
                let new = &list[at];
                self.expiries.remove(&(old.expires, key, old.publisher));
                self.expiries.insert((new.expires, key, new.publisher));
            }
            None => {
                if list.is_some_and(|l| l.len() >= self.limits.max_providers_per_key) {
                    return Err(DhtRefusal::TooManyProviders);
                }
                if self.len >= self.limits.max_records {
                    return Err(DhtRefusal::StoreFull);
                }
                self.expiries
                    .insert((record.expires, key, record.publisher));
                self.records.entry(key).or_default().push(record);
                self.len += 1;
            }
        }
        Ok(())
    }

    /// Drops `publisher`'s record under `key`. Returns whether there was one.
    pub fn withdraw(&mut self, key: &KeyBytes, publisher: &NodeId) -> bool {
        let Some(list) = self.records.get_mut(key) else {
            return false;
        };
        let Some(at) = list.iter().position(|r| r.publisher == *publisher) else {
            return false;
        };
        let old = list.swap_remove(at);
        if list.is_empty() {
            self.records.remove(key);
        }
        self.expiries.remove(&(old.expires, *key, old.publisher));
        self.len -= 1;
        true
    }

    /// Drops every record expired at `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some(&(at, key, publisher)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.withdraw(&key, &publisher);
            dropped += 1;
        }
        dropped
    }

    /// When the next record expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(at, _, _)| *at)
    }

    /// Checks the bounds and the expiry index; returns the first violation.
    pub fn check(&self) -> Result<(), &'static str> {
        let total: usize = self.records.values().map(Vec::len).sum();
        if total != self.len || self.expiries.len() != self.len {
            return Err("the record count is wrong");
        }
        if self.len > self.limits.max_records {
            return Err("the store holds more records than max_records");
        }
        for list in self.records.values() {
            if list.is_empty() || list.len() > self.limits.max_providers_per_key {
                return Err("a key holds no record or too many providers");
            }
            if list
                .iter()
                .any(|r| r.value.len() > self.limits.max_value_size)
            {
                return Err("a value is over max_value_size");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> StoreLimits {
        StoreLimits {
            max_records: 3,
            max_providers_per_key: 2,
            max_value_size: 8,
            max_addrs: 1,
        }
    }

    fn rec(publisher: u8, expires: u64) -> Record {
        Record {
            publisher: NodeId([publisher; 32]),
            addrs: alloc::vec!["198.18.0.1:1".parse().unwrap(), "[::1]:1".parse().unwrap()],
            value: alloc::vec![publisher],
            expires: Instant::from_micros(expires),
        }
    }

    #[test]
    fn keys_separate_realms_kinds_and_names() {
        let a = record_key("io.a", KeyKind::Value, b"x");
        assert_ne!(a, record_key("io.b", KeyKind::Value, b"x"));
        assert_ne!(a, record_key("io.a", KeyKind::Provider, b"x"));
        assert_ne!(a, record_key("io.a", KeyKind::Value, b"y"));
        // The realm's length is framed: "io.a" + "bx" is not "io.ab" + "x".
        assert_ne!(
            record_key("io.a", KeyKind::Value, b"bx"),
            record_key("io.ab", KeyKind::Value, b"x")
        );
    }

    #[test]
    fn bounds_hold_and_refusals_say_which() {
        let mut s = RecordStore::new(limits());
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        assert_eq!(s.put(k1, rec(1, 10)), Ok(()));
        assert_eq!(s.put(k1, rec(2, 10)), Ok(()));
        assert_eq!(s.put(k1, rec(3, 10)), Err(DhtRefusal::TooManyProviders));
        assert_eq!(
            s.put(k1, rec(1, 20)),
            Ok(()),
            "a publisher replaces its own record"
        );
        assert_eq!(s.put(k2, rec(3, 10)), Ok(()));
        assert_eq!(s.put(k2, rec(4, 10)), Err(DhtRefusal::StoreFull));
        let mut big = rec(5, 10);
        big.value = alloc::vec![0; 9];
        assert_eq!(s.put(k2, big), Err(DhtRefusal::ValueTooLarge));
        assert_eq!(s.len(), 3);
        assert!(s.get(&k1, Instant::ZERO).all(|r| r.addrs.len() == 1));
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn records_expire_and_withdraw() {
        let mut s = RecordStore::new(limits());
        let k = [1u8; 32];
        s.put(k, rec(1, 10)).unwrap();
        s.put(k, rec(2, 30)).unwrap();
        assert_eq!(s.next_expiry(), Some(Instant::from_micros(10)));
        assert_eq!(
            s.get(&k, Instant::from_micros(10)).count(),
            1,
            "expired at 10"
        );
        assert_eq!(s.expire(Instant::from_micros(15)), 1);
        assert!(s.withdraw(&k, &NodeId([2; 32])));
        assert!(!s.withdraw(&k, &NodeId([2; 32])));
        assert!(s.is_empty() && s.key_count() == 0);
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn wire_ttls_are_relative_and_capped() {
        let now = Instant::from_micros(5_000_000);
        let r = rec(1, 5_000_000 + 2_500_000);
        let w = r.to_wire(now);
        assert_eq!(w.ttl_secs, 3, "rounded up");
        let back = Record::from_wire(
            WireRecord {
                ttl_secs: u32::MAX,
                ..w
            },
            now,
            Duration::from_secs(300),
        );
        assert_eq!(back.expires, now + Duration::from_secs(300));
    }
}
