//! Record keys, signed records, and the record store: what this node keeps for others, bounded
//! and expiring.
//!
//! A key is SHA-256 over the realm, a kind and a name, so keys of different realms or kinds
//! never collide and a node can't be asked to hold another realm's records. A record is signed
//! by its publisher's Ed25519 key over the key, its addresses, value, TTL and sequence number,
//! so nobody on the way can forge or alter it. Nodes share no clock: a holder computes a
//! record's expiry on its own clock when it receives it, and of two records of one publisher
//! under a key the higher sequence number wins.
//!
//! Under a key the store keeps at most one record per publisher, at most
//! `max_providers_per_key` publishers (ordered by id, so answers can be paged), at most
//! `max_records_per_publisher` records of one publisher and at most `max_records` in all.
//! Pure data: times arrive as arguments.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::net::SocketAddr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::messages::{DhtRefusal, SignatureBytes, WireRecord};
use crate::id::{verify_signature, Identity, NodeId};
use crate::time::{Duration, Instant};
use crate::wire::{KeyBytes, WireAddr};

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

/// The domain every record signature is made in, so it can't be taken for another signature.
const SIGNING_DOMAIN: &[u8] = b"macula/2 dht-record";

/// A signed record, as a node holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The node that published it (the SHA-256 of `publisher_key`).
    pub publisher: NodeId,
    /// The publisher's Ed25519 public key.
    pub publisher_key: [u8; 32],
    /// Where the publisher listens.
    pub addrs: Vec<SocketAddr>,
    /// The value (or provider metadata).
    pub value: Vec<u8>,
    /// How long the publisher wants it kept, from receipt (whole seconds).
    pub ttl_secs: u32,
    /// The publisher's sequence number: a higher one replaces a lower one.
    pub seq: u64,
    /// The publisher's signature.
    pub signature: [u8; 64],
    /// When it expires, on this node's clock.
    pub expires: Instant,
}

/// The part of a record its signature covers, in the order it is encoded (postcard) after
/// [`SIGNING_DOMAIN`].
#[derive(Serialize)]
struct Signed<'a> {
    key: &'a KeyBytes,
    publisher_key: &'a [u8; 32],
    addrs: &'a [WireAddr],
    value: &'a [u8],
    ttl_secs: u32,
    seq: u64,
}

impl Signed<'_> {
    fn bytes(&self) -> Vec<u8> {
        postcard::to_extend(self, SIGNING_DOMAIN.to_vec())
            .expect("encoding into a Vec cannot fail: the writer grows and every field is sized")
    }
}

impl Record {
    /// A record of `identity` under `key`, signed, kept here until `now + ttl`.
    pub fn sign(
        identity: &Identity,
        key: &KeyBytes,
        addrs: &[SocketAddr],
        value: Vec<u8>,
        ttl: Duration,
        seq: u64,
        now: Instant,
    ) -> Self {
        let ttl_secs = u32::try_from(ttl.as_micros().div_ceil(1_000_000)).unwrap_or(u32::MAX);
        let wire_addrs: Vec<WireAddr> = addrs.iter().map(|a| WireAddr::from(*a)).collect();
        let publisher_key = identity.public_key();
        let signature = identity.sign(
            &Signed {
                key,
                publisher_key: &publisher_key,
                addrs: &wire_addrs,
                value: &value,
                ttl_secs,
                seq,
            }
            .bytes(),
        );
        Record {
            publisher: identity.node_id(),
            publisher_key,
            addrs: addrs.to_vec(),
            value,
            ttl_secs,
            seq,
            signature,
            expires: now + Duration::from_secs(u64::from(ttl_secs)),
        }
    }

    /// The record as sent at `now` (how long it has left, rounded up to whole seconds).
    pub fn to_wire(&self, now: Instant) -> WireRecord {
        let left = self.expires.saturating_duration_since(now).as_micros();
        let mut signature: SignatureBytes = [[0; 32]; 2];
        signature[0].copy_from_slice(&self.signature[..32]);
        signature[1].copy_from_slice(&self.signature[32..]);
        WireRecord {
            publisher_key: self.publisher_key,
            addrs: self.addrs.iter().map(|a| WireAddr::from(*a)).collect(),
            value: self.value.clone(),
            ttl_secs: self.ttl_secs,
            seq: self.seq,
            signature,
            left_secs: u32::try_from(left.div_ceil(1_000_000)).unwrap_or(u32::MAX),
        }
    }

    /// A received record under `key`, received at `now`; it lives at most `max_ttl` here.
    ///
    /// # Errors
    /// [`DhtRefusal::BadSignature`] if the publisher's signature does not verify.
    pub fn from_wire(
        w: WireRecord,
        key: &KeyBytes,
        now: Instant,
        max_ttl: Duration,
    ) -> Result<Self, DhtRefusal> {
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&w.signature[0]);
        signature[32..].copy_from_slice(&w.signature[1]);
        let signed = Signed {
            key,
            publisher_key: &w.publisher_key,
            addrs: &w.addrs,
            value: &w.value,
            ttl_secs: w.ttl_secs,
            seq: w.seq,
        };
        if !verify_signature(&w.publisher_key, &signed.bytes(), &signature) {
            return Err(DhtRefusal::BadSignature);
        }
        let secs = w.ttl_secs.min(w.left_secs);
        let ttl = Duration::from_secs(u64::from(secs)).min(max_ttl);
        Ok(Record {
            publisher: NodeId::from_public_key(&w.publisher_key),
            publisher_key: w.publisher_key,
            addrs: w.addrs.into_iter().map(SocketAddr::from).collect(),
            value: w.value,
            ttl_secs: w.ttl_secs,
            seq: w.seq,
            signature,
            expires: now + ttl,
        })
    }

    /// Roughly how many bytes the record takes in an answer (for paging).
    pub fn wire_size(&self) -> usize {
        self.value.len() + 19 * self.addrs.len() + 160
    }
}

/// The store's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most records in all.
    pub max_records: usize,
    /// Most publishers under one key.
    pub max_providers_per_key: usize,
    /// Most records of one publisher.
    pub max_records_per_publisher: usize,
    /// Largest value, in bytes.
    pub max_value_size: usize,
    /// Most addresses kept per record.
    pub max_addrs: usize,
}

/// The records this node holds for the DHT.
#[derive(Debug)]
pub struct RecordStore {
    limits: StoreLimits,
    records: BTreeMap<KeyBytes, BTreeMap<NodeId, Record>>,
    /// (expiry, key, publisher) for every record, so expiry is ordered and cheap.
    expiries: BTreeSet<(Instant, KeyBytes, NodeId)>,
    /// Records held per publisher.
    per_publisher: BTreeMap<NodeId, usize>,
    len: usize,
}

impl RecordStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        RecordStore {
            limits,
            records: BTreeMap::new(),
            expiries: BTreeSet::new(),
            per_publisher: BTreeMap::new(),
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
    #[cfg(test)]
    pub fn key_count(&self) -> usize {
        self.records.len()
    }

    /// Live records under `key` at `now`, ordered by publisher, starting after `after`.
    pub fn get(
        &self,
        key: &KeyBytes,
        after: Option<NodeId>,
        now: Instant,
    ) -> impl Iterator<Item = &Record> + '_ {
        use core::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.records
            .get(key)
            .into_iter()
            .flat_map(move |m| m.range((from, Bound::Unbounded)).map(|(_, r)| r))
            .filter(move |r| r.expires > now)
    }

    /// Keeps `record` (whose signature was checked) under `key`, replacing the same
    /// publisher's record of a lower or equal sequence number.
    ///
    /// # Errors
    /// The [`DhtRefusal`] to answer with when a bound would be broken or the store holds a
    /// newer record of the publisher.
    ///
    /// # Panics
    /// Never: the one lookup it unwraps is of a key it has just found.
    pub fn put(&mut self, key: KeyBytes, mut record: Record) -> Result<(), DhtRefusal> {
        if record.value.len() > self.limits.max_value_size {
            return Err(DhtRefusal::ValueTooLarge);
        }
        record.addrs.truncate(self.limits.max_addrs);
        let publisher = record.publisher;
        let list = self.records.get(&key);
        match list.and_then(|l| l.get(&publisher)) {
            Some(old) if old.seq > record.seq => return Err(DhtRefusal::Stale),
            Some(old) => {
                self.expiries.remove(&(old.expires, key, publisher));
                self.expiries.insert((record.expires, key, publisher));
                let list = self.records.get_mut(&key).expect("looked up above");
                list.insert(publisher, record);
            }
            None => {
                if list.is_some_and(|l| l.len() >= self.limits.max_providers_per_key) {
                    return Err(DhtRefusal::TooManyProviders);
                }
                if self.len >= self.limits.max_records {
                    return Err(DhtRefusal::StoreFull);
                }
                let held = self.per_publisher.get(&publisher).copied().unwrap_or(0);
                if held >= self.limits.max_records_per_publisher {
                    return Err(DhtRefusal::PublisherQuota);
                }
                self.per_publisher.insert(publisher, held + 1);
                self.expiries.insert((record.expires, key, publisher));
                self.records
                    .entry(key)
                    .or_default()
                    .insert(publisher, record);
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
        let Some(old) = list.remove(publisher) else {
            return false;
        };
        if list.is_empty() {
            self.records.remove(key);
        }
        self.expiries.remove(&(old.expires, *key, old.publisher));
        match self.per_publisher.get_mut(publisher) {
            Some(1) | None => {
                self.per_publisher.remove(publisher);
            }
            Some(n) => *n -= 1,
        }
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

    /// Checks the bounds and the indexes.
    ///
    /// # Errors
    /// The first violation found, described.
    pub fn check(&self) -> Result<(), &'static str> {
        let total: usize = self.records.values().map(BTreeMap::len).sum();
        if total != self.len || self.expiries.len() != self.len {
            return Err("the record count is wrong");
        }
        if self.per_publisher.values().sum::<usize>() != self.len {
            return Err("the per-publisher counts are wrong");
        }
        if self.len > self.limits.max_records {
            return Err("the store holds more records than max_records");
        }
        if self
            .per_publisher
            .values()
            .any(|n| *n > self.limits.max_records_per_publisher)
        {
            return Err("a publisher holds more records than its quota");
        }
        for list in self.records.values() {
            if list.is_empty() || list.len() > self.limits.max_providers_per_key {
                return Err("a key holds no record or too many providers");
            }
            if list
                .values()
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
            max_records_per_publisher: 2,
            max_value_size: 8,
            max_addrs: 1,
        }
    }

    fn rec(publisher: u64, seq: u64, expires: u64) -> Record {
        let addrs = ["198.18.0.1:1".parse().unwrap(), "[::1]:1".parse().unwrap()];
        let mut r = Record::sign(
            &Identity::from_seed(publisher),
            &[0; 32],
            &addrs,
            alloc::vec![publisher as u8],
            Duration::from_secs(1),
            seq,
            Instant::ZERO,
        );
        r.expires = Instant::from_micros(expires);
        r
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
        let k3 = [3u8; 32];
        assert_eq!(s.put(k1, rec(1, 1, 10)), Ok(()));
        assert_eq!(s.put(k1, rec(2, 1, 10)), Ok(()));
        assert_eq!(s.put(k1, rec(3, 1, 10)), Err(DhtRefusal::TooManyProviders));
        assert_eq!(
            s.put(k1, rec(1, 2, 20)),
            Ok(()),
            "a publisher replaces its own record"
        );
        assert_eq!(s.put(k1, rec(1, 1, 30)), Err(DhtRefusal::Stale));
        assert_eq!(s.put(k2, rec(1, 1, 10)), Ok(()));
        assert_eq!(
            s.put(k3, rec(1, 1, 10)),
            Err(DhtRefusal::StoreFull),
            "full before the quota matters"
        );
        let mut big = rec(5, 1, 10);
        big.value = alloc::vec![0; 9];
        assert_eq!(s.put(k2, big), Err(DhtRefusal::ValueTooLarge));
        assert_eq!(s.len(), 3);
        assert!(s.get(&k1, None, Instant::ZERO).all(|r| r.addrs.len() == 1));
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn one_publisher_holds_at_most_its_quota() {
        let mut s = RecordStore::new(StoreLimits {
            max_records: 100,
            ..limits()
        });
        assert_eq!(s.put([1; 32], rec(1, 1, 10)), Ok(()));
        assert_eq!(s.put([2; 32], rec(1, 1, 10)), Ok(()));
        assert_eq!(
            s.put([3; 32], rec(1, 1, 10)),
            Err(DhtRefusal::PublisherQuota)
        );
        assert_eq!(s.put([3; 32], rec(2, 1, 10)), Ok(()), "others still fit");
        assert!(s.withdraw(&[1; 32], &Identity::from_seed(1).node_id()));
        assert_eq!(s.put([3; 32], rec(1, 1, 10)), Ok(()), "room again");
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn records_expire_withdraw_and_page_in_publisher_order() {
        let mut s = RecordStore::new(limits());
        let k = [1u8; 32];
        s.put(k, rec(1, 1, 10)).unwrap();
        s.put(k, rec(2, 1, 30)).unwrap();
        assert_eq!(s.next_expiry(), Some(Instant::from_micros(10)));
        let order: Vec<NodeId> = s
            .get(&k, None, Instant::ZERO)
            .map(|r| r.publisher)
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
        let rest: Vec<NodeId> = s
            .get(&k, Some(order[0]), Instant::ZERO)
            .map(|r| r.publisher)
            .collect();
        assert_eq!(rest, order[1..]);
        assert_eq!(
            s.get(&k, None, Instant::from_micros(10)).count(),
            1,
            "expired at 10"
        );
        assert_eq!(s.expire(Instant::from_micros(15)), 1);
        assert!(s.withdraw(&k, &Identity::from_seed(2).node_id()));
        assert!(!s.withdraw(&k, &Identity::from_seed(2).node_id()));
        assert!(s.is_empty() && s.key_count() == 0);
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn signatures_cover_every_field_but_the_time_left() {
        let now = Instant::from_micros(5_000_000);
        let key = [7u8; 32];
        let r = Record::sign(
            &Identity::from_seed(1),
            &key,
            &["198.18.0.1:1".parse().unwrap()],
            b"v".to_vec(),
            Duration::from_secs(300),
            9,
            Instant::ZERO,
        );
        let w = r.to_wire(now);
        assert_eq!(w.left_secs, 295);
        let max = Duration::from_secs(300);
        let back = Record::from_wire(w.clone(), &key, now, max).expect("it verifies");
        assert_eq!(
            back.expires,
            now + Duration::from_secs(295),
            "the time left"
        );
        // The time left is not signed: a holder may lower it, and raising it gains nothing
        // past the signed TTL.
        let longer = WireRecord {
            left_secs: u32::MAX,
            ..w.clone()
        };
        let back = Record::from_wire(longer, &key, now, Duration::from_secs(1_000)).unwrap();
        assert_eq!(back.expires, now + Duration::from_secs(300));
        // Every signed field, changed, breaks the signature; so does another key.
        let mut forged = alloc::vec![
            WireRecord {
                value: b"w".to_vec(),
                ..w.clone()
            },
            WireRecord {
                ttl_secs: 301,
                ..w.clone()
            },
            WireRecord {
                seq: 10,
                ..w.clone()
            },
            WireRecord {
                addrs: alloc::vec![],
                ..w.clone()
            },
            WireRecord {
                publisher_key: Identity::from_seed(2).public_key(),
                ..w.clone()
            },
        ];
        let mut bad_sig = w.clone();
        bad_sig.signature[1][0] ^= 1;
        forged.push(bad_sig);
        for f in forged {
            assert_eq!(
                Record::from_wire(f.clone(), &key, now, max),
                Err(DhtRefusal::BadSignature),
                "{f:?}"
            );
        }
        assert_eq!(
            Record::from_wire(w, &[8; 32], now, max),
            Err(DhtRefusal::BadSignature),
            "signed under another key"
        );
    }
}
