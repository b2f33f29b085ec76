//! A token bucket with injected time: `rate` tokens a second, at most `burst` saved up.
//!
//! Pure arithmetic in thousandths of a token, so rates below one a second work too.

use crate::time::Instant;

/// A token bucket. See the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    /// Thousandths of a token, as of `at`.
    tokens: u64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens at `now`.
    pub fn full(burst: u32, now: Instant) -> Self {
        TokenBucket {
            tokens: u64::from(burst) * 1000,
            at: now,
        }
    }

    /// The thousandths of a token it holds at `now`, refilled at `rate` a second up to `burst`.
    fn level(&self, now: Instant, rate: u32, burst: u32) -> u64 {
        let elapsed = now.saturating_duration_since(self.at).as_micros();
        let refill = elapsed.saturating_mul(u64::from(rate)) / 1000;
        (self.tokens.saturating_add(refill)).min(u64::from(burst) * 1000)
    }

    /// Whether it has refilled to `burst` by `now` (so it says nothing a new one would not).
    pub fn is_full(&self, now: Instant, rate: u32, burst: u32) -> bool {
        self.level(now, rate, burst) >= u64::from(burst) * 1000
    }

    /// When it was last used.
    pub fn last_used(&self) -> Instant {
        self.at
    }

    /// Takes a token at `now` if there is one; returns whether there was.
    pub fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        self.tokens = self.level(now, rate, burst);
        self.at = self.at.max(now);
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let t0 = Instant::ZERO;
        let mut b = TokenBucket::full(3, t0);
        assert!((0..3).all(|_| b.take(t0, 2, 3)));
        assert!(!b.take(t0, 2, 3), "empty");
        let half = t0 + Duration::from_millis(500);
        assert!(b.take(half, 2, 3), "two a second: one after half a second");
        assert!(!b.take(half, 2, 3));
        assert!(!b.is_full(half, 2, 3));
        assert!(b.is_full(half + Duration::from_secs(2), 2, 3));
        assert_eq!(b.last_used(), half);
    }
}
