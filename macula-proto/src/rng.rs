//! Seeded randomness.
//!
//! The core never asks the operating system for randomness: a [`Rng`] is built from a seed, and
//! every component that needs its own stream derives a child seed from its parent, so one master
//! seed reproduces a whole run. The generator is xoshiro256** seeded through SplitMix64: fast,
//! well distributed and *not* cryptographic. Nothing secret is ever drawn from it; key material
//! comes from an [`Identity`](crate::Identity) the driver provides.

/// A deterministic pseudo-random generator.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose whole output is determined by `seed`.
    pub fn from_seed(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A seed for a child generator; children of the same parent draw independent streams.
    pub fn child_seed(&mut self) -> u64 {
        self.next_u64()
    }

    /// A child generator seeded from this one.
    pub fn child(&mut self) -> Rng {
        Rng::from_seed(self.child_seed())
    }

    /// A uniform value in `0..bound` (`bound` must be non-zero; zero yields zero).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        // Lemire's multiply-shift; the tiny bias is irrelevant for protocol jitter and sampling.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_children_differ() {
        let mut a = Rng::from_seed(7);
        let mut b = Rng::from_seed(7);
        let xs: [u64; 4] = core::array::from_fn(|_| a.next_u64());
        let ys: [u64; 4] = core::array::from_fn(|_| b.next_u64());
        assert_eq!(xs, ys);
        let mut c1 = a.child();
        let mut c2 = a.child();
        assert_ne!(c1.next_u64(), c2.next_u64());
        assert_ne!(Rng::from_seed(8).next_u64(), Rng::from_seed(7).next_u64());
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::from_seed(1);
        for bound in [1u64, 2, 3, 10, 1000] {
            for _ in 0..100 {
                assert!(r.below(bound) < bound);
            }
        }
        assert_eq!(r.below(0), 0);
    }
}
