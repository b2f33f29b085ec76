//! The event queue: ordered by (virtual time, sequence number), so ties resolve in the order the
//! events were scheduled and a run never depends on heap internals.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use macula_proto::Instant;

/// A heap key: small, so sifting moves 24 bytes whatever the payload.
#[derive(PartialEq, Eq)]
struct Key {
    at: Instant,
    seq: u64,
    slot: u32,
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the earliest (time, seq) must compare greatest.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A min-queue of timed items. Payloads live in a slab; the heap holds only keys.
pub(crate) struct Queue<T> {
    heap: BinaryHeap<Key>,
    slots: Vec<Option<T>>,
    free: Vec<u32>,
    seq: u64,
}

impl<T> Queue<T> {
    pub fn new() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }

    pub fn push(&mut self, at: Instant, item: T) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(item);
                slot
            }
            None => {
                self.slots.push(Some(item));
                u32::try_from(self.slots.len() - 1).expect("fewer than 4 billion queued events")
            }
        };
        self.heap.push(Key {
            at,
            seq: self.seq,
            slot,
        });
    }

    /// The earliest item if it is due at or before `until`.
    pub fn pop_due(&mut self, until: Instant) -> Option<(Instant, T)> {
        if self.heap.peek()?.at > until {
            return None;
        }
        let key = self.heap.pop()?;
        self.free.push(key.slot);
        let item = self.slots[key.slot as usize]
            .take()
            .expect("a queued key's slot holds its item");
        Some((key.at, item))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_fifo_among_equals() {
        let mut q = Queue::new();
        q.push(Instant::from_micros(5), "b");
        q.push(Instant::from_micros(1), "a");
        q.push(Instant::from_micros(5), "c");
        q.push(Instant::from_micros(9), "d");
        let until = Instant::from_micros(5);
        let got: Vec<_> = std::iter::from_fn(|| q.pop_due(until).map(|x| x.1)).collect();
        assert_eq!(got, ["a", "b", "c"]);
        assert_eq!(q.len(), 1);
    }
}
