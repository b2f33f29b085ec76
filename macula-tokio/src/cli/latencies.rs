//! Latencies in a histogram of fixed size, so a benchmark's own bookkeeping doesn't grow with
//! the number of messages it counts (and doesn't show in the memory it reports).

/// Values below this are kept exactly; above it, each power of two is cut into this many
/// buckets, so a value read back is at most 1/64 (1.6 %) below the one recorded.
const STEPS: u64 = 64;
const STEP_BITS: u32 = STEPS.trailing_zeros();
/// Enough buckets for every `u64`.
const BUCKETS: usize = ((64 - STEP_BITS as usize) + 1) * STEPS as usize;

/// Microsecond latencies, counted by bucket.
pub struct Latencies {
    counts: Vec<u64>,
    total: u64,
}

impl Latencies {
    pub fn new() -> Self {
        Latencies {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    pub fn record(&mut self, micros: u64) {
        self.counts[bucket(micros)] += 1;
        self.total += 1;
    }

    /// Adds what `other` recorded.
    pub fn merge(&mut self, other: &Latencies) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    /// The latency at `fraction` (0.5 for the median) of the sorted values, to the bucket's
    /// low end; 0 when nothing was recorded.
    pub fn percentile(&self, fraction: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total - 1) as f64 * fraction.clamp(0.0, 1.0)) as u64;
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen > rank {
                return low_end(i);
            }
        }
        unreachable!("the counts add up to the total")
    }
}

fn bucket(value: u64) -> usize {
    if value < STEPS {
        return value as usize;
    }
    let shift = (63 - value.leading_zeros()) - STEP_BITS;
    let step = (value >> shift) - STEPS;
    ((u64::from(shift) + 1) * STEPS + step) as usize
}

fn low_end(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < STEPS {
        return bucket;
    }
    let shift = bucket / STEPS - 1;
    (STEPS + bucket % STEPS) << shift
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_within_one_step() {
        for value in (0..5_000).chain([65_535, 1 << 40, u64::MAX]) {
            let back = low_end(bucket(value));
            assert!(back <= value, "{value} read back as {back}");
            assert!(value - back <= value / STEPS, "{value} read back as {back}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_are_those_of_the_sorted_values() {
        let mut l = Latencies::new();
        assert_eq!(l.percentile(0.5), 0);
        for v in [5, 1, 4, 2, 3] {
            l.record(v);
        }
        assert_eq!(
            (l.percentile(0.0), l.percentile(0.5), l.percentile(1.0)),
            (1, 3, 5)
        );
        let mut other = Latencies::new();
        other.record(1_000_000);
        l.merge(&other);
        assert_eq!(l.len(), 6);
        assert!((984_375..=1_000_000).contains(&l.percentile(1.0)));
    }
}
