//! De-duplication of received messages by (publisher, start epoch, sequence).
//!
//! A publisher numbers its messages from 1 in each run, and each run has a start epoch that grows
//! from one run to the next (`Config::start_epoch`). A receiver keeps, per publisher, the latest
//! epoch seen, the highest sequence of that epoch and which of the [`WINDOW`] sequences below it
//! it has seen. A message is new when it is of a later epoch (the publisher restarted: not a
//! replay), or of the same epoch and either above the highest or inside the window and unseen.
//! Anything older than the window, or of an earlier epoch, is taken for a duplicate; QoS 1
//! retransmissions arrive well within the window. At most [`MAX_PUBLISHERS`] publishers are
//! remembered; the one heard from least recently is forgotten first.

use alloc::collections::BTreeMap;

use crate::id::NodeId;

/// Sequences below the highest one seen that are still told apart.
pub const WINDOW: u64 = 1024;

/// Publishers remembered at once.
pub const MAX_PUBLISHERS: usize = 4096;

/// What a receiver remembers of one publisher.
#[derive(Clone, Debug)]
struct Seen {
    epoch: u64,
    highest: u64,
    /// Bit `i` of word `i / 64`: whether `highest - i` was seen.
    bits: [u64; (WINDOW / 64) as usize],
    /// When it was last heard from, in calls of [`Dedup::first_time`].
    touched: u64,
}

impl Seen {
    fn new(epoch: u64, seq: u64, touched: u64) -> Self {
        let mut seen = Seen {
            epoch,
            highest: seq,
            bits: [0; (WINDOW / 64) as usize],
            touched,
        };
        seen.bits[0] = 1;
        seen
    }

    /// Records `seq` of the current epoch; returns whether it is new.
    fn record(&mut self, seq: u64) -> bool {
        if seq > self.highest {
            self.shift(seq - self.highest);
            self.highest = seq;
            self.bits[0] |= 1;
            return true;
        }
        let back = self.highest - seq;
        if back >= WINDOW {
            return false;
        }
        let (word, bit) = ((back / 64) as usize, back % 64);
        let new = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        new
    }

    /// Moves the window up by `by` sequences.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.bits = [0; (WINDOW / 64) as usize];
            return;
        }
        let (words, bits) = ((by / 64) as usize, by % 64);
        let n = self.bits.len();
        for i in (0..n).rev() {
            let from = i.checked_sub(words);
            let high = from.map_or(0, |f| self.bits[f]);
            let low = from
                .and_then(|f| f.checked_sub(1))
                .map_or(0, |f| self.bits[f]);
            self.bits[i] = if bits == 0 {
                high
            } else {
                (high << bits) | (low >> (64 - bits))
            };
        }
    }
}

/// The receiver's memory of what it has delivered. See the [module documentation](self).
#[derive(Debug, Default)]
pub struct Dedup {
    publishers: BTreeMap<NodeId, Seen>,
    clock: u64,
}

impl Dedup {
    /// Whether message `seq` of `publisher`'s run `epoch` is seen for the first time; records it.
    pub fn first_time(&mut self, publisher: NodeId, epoch: u64, seq: u64) -> bool {
        self.clock += 1;
        let clock = self.clock;
        if let Some(seen) = self.publishers.get_mut(&publisher) {
            seen.touched = clock;
            return match epoch.cmp(&seen.epoch) {
                core::cmp::Ordering::Less => false,
                core::cmp::Ordering::Greater => {
                    *seen = Seen::new(epoch, seq, clock);
                    true
                }
                core::cmp::Ordering::Equal => seen.record(seq),
            };
        }
        if self.publishers.len() >= MAX_PUBLISHERS {
            let stalest = self
                .publishers
                .iter()
                .min_by_key(|(_, s)| s.touched)
                .map(|(id, _)| *id);
            if let Some(id) = stalest {
                self.publishers.remove(&id);
            }
        }
        self.publishers
            .insert(publisher, Seen::new(epoch, seq, clock));
        true
    }

    /// Publishers remembered.
    pub fn len(&self) -> usize {
        self.publishers.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.publishers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use proptest::prelude::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    #[test]
    fn each_message_is_new_once_and_a_restart_is_not_a_replay() {
        let mut d = Dedup::default();
        assert!(d.first_time(id(1), 10, 1));
        assert!(!d.first_time(id(1), 10, 1), "a duplicate");
        assert!(d.first_time(id(1), 10, 3));
        assert!(d.first_time(id(1), 10, 2), "late but unseen");
        assert!(!d.first_time(id(1), 10, 2));
        assert!(d.first_time(id(2), 10, 1), "another publisher");
        // The publisher restarts: its sequence starts again, under a later epoch.
        assert!(d.first_time(id(1), 11, 1));
        assert!(!d.first_time(id(1), 10, 4), "its earlier run is over");
        // Far ahead: what fell out of the window is taken for a duplicate.
        assert!(d.first_time(id(1), 11, 1 + WINDOW + 5));
        assert!(!d.first_time(id(1), 11, 2));
    }

    #[test]
    fn the_publishers_remembered_are_bounded() {
        let mut d = Dedup::default();
        for n in 0..MAX_PUBLISHERS as u64 + 10 {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&n.to_le_bytes());
            d.first_time(NodeId(bytes), 1, 1);
        }
        assert_eq!(d.len(), MAX_PUBLISHERS);
    }

    proptest! {
        #[test]
        fn within_the_window_it_agrees_with_a_set(
            seqs in proptest::collection::vec(1u64..3000, 1..400),
        ) {
            let mut d = Dedup::default();
            let mut seen = BTreeSet::new();
            let mut highest = 0;
            for seq in seqs {
                let new = d.first_time(id(7), 5, seq);
                let in_window = seq + WINDOW > highest;
                if in_window {
                    prop_assert_eq!(new, !seen.contains(&seq), "seq {}", seq);
                } else {
                    prop_assert!(!new);
                }
                if new {
                    seen.insert(seq);
                }
                highest = highest.max(seq);
            }
        }
    }
}
