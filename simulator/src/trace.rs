//! The trace digest: one hash over every delivery and every node event, with its time.
//!
//! Two runs with the same seed and inputs produce the same digest; any difference in what was
//! delivered, to whom, or when, changes it. The hash is a fast 128-bit multiply-mix (not
//! cryptographic: it detects divergence, it does not resist forgery).

/// A running digest of a simulation's trace.
#[derive(Clone, Debug)]
pub struct Digest {
    a: u64,
    b: u64,
    count: u64,
}

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;

fn mix(x: u64, k: u64) -> u64 {
    let m = u128::from(x ^ k) * u128::from(K1);
    (m as u64) ^ ((m >> 64) as u64)
}

impl Default for Digest {
    fn default() -> Self {
        Digest {
            a: 0x6d61_6375_6c61_7369,
            b: 0x7472_6163_6564_6967,
            count: 0,
        }
    }
}

impl Digest {
    /// Adds one 64-bit word.
    pub fn word(&mut self, x: u64) {
        self.a = mix(self.a ^ x, K2).rotate_left(23);
        self.b = mix(self.b.wrapping_add(x), self.a);
    }

    /// Adds a byte string (its length, then its bytes).
    pub fn bytes(&mut self, data: &[u8]) {
        self.word(data.len() as u64);
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(
                c.try_into().expect("chunks_exact gives 8 bytes"),
            ));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(last));
        }
    }

    /// Starts a record: its time, node and kind.
    pub fn record(&mut self, time_micros: u64, node: u32, kind: u8) {
        self.count += 1;
        self.word(time_micros);
        self.word(u64::from(node) << 8 | u64::from(kind));
    }

    /// How many records went in.
    pub fn records(&self) -> u64 {
        self.count
    }

    /// The digest as 32 hex digits.
    pub fn hex(&self) -> String {
        let (a, b) = (mix(self.a, self.b), mix(self.b, self.a ^ self.count));
        format!("{a:016x}{b:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_difference_changes_the_digest() {
        let run = |t: u64, payload: &[u8]| {
            let mut d = Digest::default();
            d.record(t, 3, 1);
            d.bytes(payload);
            d.hex()
        };
        assert_eq!(run(10, b"hello"), run(10, b"hello"));
        assert_ne!(run(10, b"hello"), run(11, b"hello"));
        assert_ne!(run(10, b"hello"), run(10, b"hellp"));
        assert_ne!(run(10, b"hello"), run(10, b"hello\0"));
    }
}
