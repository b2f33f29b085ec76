//! Token buckets with injected time, alone or one per key in a bounded table.
//!
//! Pure arithmetic in thousandths of a token, so rates below one a second work too.

use alloc::collections::BTreeMap;

use crate::time::{Duration, Instant};

/// A rate limit: at most `burst` tokens saved up, `refill` more every `every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Most tokens saved up (what a quiet source may spend at once).
    pub burst: u32,
    /// Tokens added every `every`.
    pub refill: u32,
    /// The refill period.
    pub every: Duration,
}

impl Limit {
    /// `rate` tokens a second, at most `burst` saved up.
    pub const fn per_second(rate: u32, burst: u32) -> Limit {
        Limit {
            burst,
            refill: rate,
            every: Duration::from_secs(1),
        }
    }

    /// `count` tokens every `every`, all of them available at once.
    pub const fn per(count: u32, every: Duration) -> Limit {
        Limit {
            burst: count,
            refill: count,
            every,
        }
    }

    /// Whether it lets nothing through (a zero field).
    pub fn is_zero(&self) -> bool {
        self.burst == 0 || self.refill == 0 || self.every == Duration::ZERO
    }

    fn cap(&self) -> u64 {
        u64::from(self.burst) * 1000
    }
}

/// A token bucket. See the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    /// Thousandths of a token, as of `at`.
    tokens: u64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket for `limit` at `now`.
    pub fn full(limit: &Limit, now: Instant) -> Self {
        TokenBucket {
            tokens: limit.cap(),
            at: now,
        }
    }

    /// The thousandths of a token it holds at `now`, refilled as `limit` says.
    fn level(&self, now: Instant, limit: &Limit) -> u64 {
        let elapsed = now.saturating_duration_since(self.at).as_micros();
        let period = limit.every.as_micros().max(1);
        let refill = elapsed.saturating_mul(u64::from(limit.refill).saturating_mul(1000)) / period;
        self.tokens.saturating_add(refill).min(limit.cap())
    }

    /// Whether it has refilled to the burst by `now` (so it says nothing a new one would not).
    pub fn is_full(&self, now: Instant, limit: &Limit) -> bool {
        self.level(now, limit) >= limit.cap()
    }

    /// Whether it holds a whole token at `now`.
    pub fn has_token(&self, now: Instant, limit: &Limit) -> bool {
        self.level(now, limit) >= 1000
    }

    /// When it was last used.
    pub fn last_used(&self) -> Instant {
        self.at
    }

    /// Takes a token at `now` if there is one; returns whether there was.
    pub fn take(&mut self, now: Instant, limit: &Limit) -> bool {
        self.tokens = self.level(now, limit);
        self.at = self.at.max(now);
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            true
        } else {
            false
        }
    }
}

/// One token bucket per key (a peer, a source address), at most `max` of them. A key without
/// a bucket has a full one. Buckets that have refilled say nothing a new one would not: they
/// are forgotten each time the table has doubled since the last such pruning (which keeps the
/// work linear overall), and when it is full; past that, a new key pushes out the one used
/// longest ago.
#[derive(Debug)]
pub(crate) struct Buckets<K> {
    map: BTreeMap<K, TokenBucket>,
    max: usize,
    /// The size at which refilled buckets are next forgotten.
    prune_at: usize,
}

/// The smallest table that is pruned of refilled buckets.
const PRUNE_FROM: usize = 64;

impl<K: Ord + Copy> Buckets<K> {
    /// An empty table of at most `max` buckets (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Buckets {
            map: BTreeMap::new(),
            max,
            prune_at: PRUNE_FROM.min(max),
        }
    }

    /// Buckets kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether `key` has a bucket (it spent a token that has not been forgotten).
    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Whether `key`'s bucket holds a whole token at `now`.
    pub fn has_token(&self, key: &K, now: Instant, limit: &Limit) -> bool {
        self.map.get(key).map_or(true, |b| b.has_token(now, limit))
    }

    /// Takes a token from `key`'s bucket at `now`, making room for it if it has none; returns
    /// whether there was one.
    pub fn take(&mut self, key: K, now: Instant, limit: &Limit) -> bool {
        let new = !self.map.contains_key(&key);
        if new && self.map.len() >= self.prune_at {
            self.map.retain(|_, b| !b.is_full(now, limit));
            self.prune_at = (2 * self.map.len()).clamp(PRUNE_FROM.min(self.max), self.max);
        }
        if new && self.map.len() >= self.max {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, b)| b.last_used())
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
        self.map
            .entry(key)
            .or_insert_with(|| TokenBucket::full(limit, now))
            .take(now, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let t0 = Instant::ZERO;
        let limit = Limit::per_second(2, 3);
        let mut b = TokenBucket::full(&limit, t0);
        assert!((0..3).all(|_| b.take(t0, &limit)));
        assert!(!b.take(t0, &limit), "empty");
        let half = t0 + Duration::from_millis(500);
        assert!(
            b.take(half, &limit),
            "two a second: one after half a second"
        );
        assert!(!b.take(half, &limit));
        assert!(!b.is_full(half, &limit));
        assert!(b.is_full(half + Duration::from_secs(2), &limit));
        assert_eq!(b.last_used(), half);
    }

    #[test]
    fn a_slow_limit_refills_over_its_period() {
        let t0 = Instant::ZERO;
        let limit = Limit::per(5, Duration::from_secs(60));
        let mut b = TokenBucket::full(&limit, t0);
        assert!((0..5).all(|_| b.take(t0, &limit)));
        assert!(!b.has_token(t0 + Duration::from_secs(11), &limit));
        assert!(
            b.has_token(t0 + Duration::from_secs(12), &limit),
            "one per 12 s"
        );
        assert!(b.is_full(t0 + Duration::from_secs(60), &limit));
    }

    #[test]
    fn a_table_of_buckets_stays_bounded_and_forgets_refilled_ones_first() {
        let t0 = Instant::ZERO;
        let limit = Limit::per_second(1, 4);
        let mut table = Buckets::new(3);
        assert!(table.has_token(&7, t0, &limit), "no bucket is a full one");
        assert!((0..4).all(|_| table.take(0, t0, &limit)));
        assert!(!table.take(0, t0, &limit), "key 0 spent its burst");
        assert!(!table.has_token(&0, t0, &limit));
        assert!(table.take(1, t0, &limit) && table.take(2, t0, &limit));
        // Key 1 is used again later; by t2 key 2 has refilled: a new key pushes it out first,
        // and the next one the key used longest ago.
        assert!(table.take(1, t0 + Duration::from_millis(500), &limit));
        let t2 = t0 + Duration::from_secs(1);
        assert!(table.take(3, t2, &limit));
        assert_eq!(table.len(), 3);
        assert!(!table.contains(&2) && table.contains(&0) && table.contains(&1));
        assert!(table.take(4, t2, &limit));
        assert!(!table.contains(&0), "the one used longest ago went");
        for key in 10..1000 {
            table.take(key, t2, &limit);
            assert!(table.len() <= 3);
        }
    }
}
