//! The event queue: items ordered by (virtual time, sequence number), so ties resolve in the
//! order they were scheduled and a run never depends on the queue's internals.
//!
//! Almost every event falls within seconds of now (deliveries within milliseconds, timers within
//! seconds), so the queue is a timing wheel in two levels. The *near* wheel has a bucket for
//! each millisecond of the current window of 256 ms; the *far* wheel a bucket for each of the
//! next 255 windows, so the two cover 65 s, and anything later waits in an overflow heap until
//! the far wheel reaches it. When the clock enters a window, the window's far bucket is spread
//! over the near buckets; a near bucket is sorted once, when the clock enters it or (so that
//! [`Queue::ahead_each`] can name the items after the current millisecond's last ones) shortly
//! before, and items scheduled into a sorted bucket are inserted in order.
//!
//! Items sit in their bucket beside their key: a bucket is read front to back, so popping
//! touches memory the hardware prefetcher has already fetched (a slab of payloads, tried first,
//! cost a cache miss per pop at 100,000 nodes). And a push writes to the end of one of about 500
//! buckets, whose last pages stay in the TLB, where a single wheel of 65,536 one-millisecond
//! buckets had its pushes walk the page tables twice as often (callgrind). Pushing
//! and popping cost O(1) amortized (an item moves at most once from the far wheel to the near
//! one), where a binary heap of a hundred thousand entries misses the cache on every pop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use macula_proto::node::layout::Prefetch;
use macula_proto::Instant;

use crate::cpu::Cpu;

/// What orders items: time, then the order they were pushed in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Key {
    at: Instant,
    seq: u64,
}

/// An item and its key, ordered by the key alone.
struct Entry<T> {
    key: Key,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

const BUCKET_MICROS: u64 = 1_000;
/// Milliseconds per window: the near wheel's buckets.
const NEAR: u64 = 256;
/// Windows the far wheel spans, the current one included (whose far bucket stays empty).
const FAR: u64 = 256;
/// How far [`Queue::ahead_each`] sees past the end of the millisecond being drained.
pub(crate) const LOOK_AHEAD: usize = 16;

/// Appends `entry` to `bucket`; with `prefetch`, has the CPU fetch the place the bucket's next
/// push writes to.
///
/// A bucket's next push comes hundreds of events later at 100,000 nodes (300 items a
/// millisecond over some 500 buckets), into memory last used when a bucket before it was
/// drained, long out of the cache. Each 80-byte entry starts a new cache line, so each push
/// missed: a store the CPU must hold until the line arrives, behind which later stores queue
/// up and then the whole core waits (cachegrind, 20,000 nodes, steady state: 0.22 write
/// misses an event in `file`, none after). Fetched at the push before, the line has arrived
/// long before it is written.
fn push<T>(bucket: &mut Vec<Entry<T>>, entry: Entry<T>, prefetch: bool) {
    bucket.push(entry);
    if !prefetch {
        return;
    }
    if let Some(next) = bucket.spare_capacity_mut().first() {
        Cpu.prefetch(next);
    }
}

/// Marks a place of [`Queue::sort_bucket`]'s permutation as filled (a key's microsecond
/// takes at most 10 bits above the 32 of its position).
const DONE: u64 = 1 << 63;

/// A min-queue of timed items.
pub(crate) struct Queue<T> {
    /// Bucket `i` holds the keys in millisecond `i` of the cursor's window.
    near: Vec<Vec<Entry<T>>>,
    /// Bucket `i` holds the keys in window `w` where `w % FAR == i`, for the windows after the
    /// cursor's and before `window + FAR`.
    far: Vec<Vec<Entry<T>>>,
    /// The millisecond the cursor is in; no queued key is earlier.
    cursor_ms: u64,
    /// Whether the cursor's bucket is sorted (descending, so the earliest pops off the end).
    cursor_sorted: bool,
    /// Whether the next millisecond's bucket is sorted already, so that [`Queue::ahead_each`] can
    /// see past the end of the cursor's (it is sorted early, when the cursor's bucket has
    /// fewer than [`LOOK_AHEAD`] items left, if it lies in the same window).
    next_sorted: bool,
    /// Keys in window `cursor_ms / NEAR + FAR` or later.
    overflow: BinaryHeap<Reverse<Entry<T>>>,
    /// Keys in the near wheel and in the far one.
    in_near: usize,
    in_far: usize,
    /// Buffers of drained buckets, reused for the next buckets to fill, so the wheels hold
    /// memory for the buckets in use, not for every bucket ever used. A bucket takes a kept
    /// buffer before a new one is allocated, so no more buffers exist than buckets: at most
    /// `NEAR` are kept here.
    spare: Vec<Vec<Entry<T>>>,
    /// The same for the far wheel, whose buckets are far larger: at most `FAR`.
    far_spare: Vec<Vec<Entry<T>>>,
    seq: u64,
    /// Whether pushes prefetch (see [`push`]).
    prefetch: bool,
    /// Scratch for [`Queue::sort_bucket`], kept to reuse its memory.
    order: Vec<u64>,
}

impl<T> Queue<T> {
    /// A queue; with `prefetch`, each push to a bucket has the CPU fetch the place the
    /// bucket's next push writes to (see [`push`]).
    pub fn new(prefetch: bool) -> Self {
        Queue {
            prefetch,
            near: (0..NEAR).map(|_| Vec::new()).collect(),
            far: (0..FAR).map(|_| Vec::new()).collect(),
            cursor_ms: 0,
            cursor_sorted: false,
            next_sorted: false,
            overflow: BinaryHeap::new(),
            in_near: 0,
            in_far: 0,
            spare: Vec::new(),
            far_spare: Vec::new(),
            seq: 0,
            order: Vec::new(),
        }
    }

    fn ms(at: Instant) -> u64 {
        at.as_micros() / BUCKET_MICROS
    }

    fn window(&self) -> u64 {
        self.cursor_ms / NEAR
    }

    pub fn push(&mut self, at: Instant, item: T) {
        self.seq += 1;
        // Nothing may be scheduled before the cursor; clamp (the engine never asks for the past).
        let at = at.max(Instant::from_micros(self.cursor_ms * BUCKET_MICROS));
        let key = Key { at, seq: self.seq };
        self.file(Entry { key, item });
    }

    fn file(&mut self, entry: Entry<T>) {
        let ms = Self::ms(entry.key.at);
        let window = ms / NEAR;
        if window >= self.window() + FAR {
            self.overflow.push(Reverse(entry));
            return;
        }
        if window > self.window() {
            let bucket = &mut self.far[(window % FAR) as usize];
            reuse(bucket, &mut self.far_spare);
            push(bucket, entry, self.prefetch);
            self.in_far += 1;
            return;
        }
        let bucket = &mut self.near[(ms % NEAR) as usize];
        reuse(bucket, &mut self.spare);
        let sorted = if ms == self.cursor_ms {
            self.cursor_sorted
        } else {
            ms == self.cursor_ms + 1 && self.next_sorted
        };
        if sorted {
            // Keep a sorted bucket sorted (descending): insert in place.
            let at = bucket.partition_point(|e| e.key > entry.key);
            bucket.insert(at, entry);
        } else {
            push(bucket, entry, self.prefetch);
        }
        self.in_near += 1;
    }

    /// Sorts the bucket of millisecond `ms` (the cursor's, or the next one), descending, so
    /// the earliest item pops off the end.
    ///
    /// A bucket is in push order for items of equal time: an item reaches it either from the
    /// overflow, which hands items out in key order when the bucket's millisecond enters the
    /// wheel, or by a push after that. So ordering by (microsecond, position in the bucket)
    /// is ordering by key, and that sorts 8-byte integers and then swaps each item into place
    /// about once, where sorting the items themselves swaps 80-byte entries a few times each:
    /// at 100,000 nodes (300 items a millisecond) sorting was an eighth of all instructions.
    fn sort_bucket(&mut self, ms: u64) {
        const FEW: usize = 32;
        let bucket = &mut self.near[(ms % NEAR) as usize];
        if bucket.len() <= FEW {
            bucket.sort_unstable_by(|a, b| b.cmp(a));
            return;
        }
        debug_assert!(
            {
                let mut last_seq = std::collections::BTreeMap::new();
                bucket
                    .iter()
                    .all(|e| last_seq.insert(e.key.at, e.key.seq) < Some(e.key.seq))
            },
            "items of equal time are in push order"
        );
        let start = ms * BUCKET_MICROS;
        self.order.clear();
        self.order
            .extend(bucket.iter().enumerate().map(|(position, entry)| {
                let micros = entry.key.at.as_micros() - start;
                micros << 32 | position as u64
            }));
        self.order.sort_unstable();
        // Descending: place `i` takes the item now at `order[i]`'s position. Follow each cycle
        // of that permutation with swaps, so every item moves within the bucket, which the
        // keys were just read from, rather than out to a scratch buffer and back.
        self.order.reverse();
        for start in 0..self.order.len() {
            let mut at = start;
            while self.order[at] & DONE == 0 {
                let from = (self.order[at] & u64::from(u32::MAX)) as usize;
                self.order[at] |= DONE;
                if from == start {
                    break;
                }
                bucket.swap(at, from);
                at = from;
            }
        }
    }

    /// The earliest item if it is due at or before `until`.
    pub fn pop_due(&mut self, until: Instant) -> Option<(Instant, T)> {
        loop {
            let index = (self.cursor_ms % NEAR) as usize;
            if !self.near[index].is_empty() {
                if !self.cursor_sorted {
                    self.sort_bucket(self.cursor_ms);
                    self.cursor_sorted = true;
                }
                let at = self.near[index].last().expect("checked non-empty").key.at;
                if at > until {
                    return None;
                }
                let entry = self.near[index].pop().expect("checked non-empty");
                self.in_near -= 1;
                if self.near[index].len() < LOOK_AHEAD && !self.next_sorted {
                    self.sort_next_bucket();
                }
                return Some((at, entry.item));
            }
            // The cursor's bucket is empty: move on, unless that would pass `until`.
            let next_ms = if self.in_near > 0 {
                // Later in this window.
                self.cursor_ms + 1
            } else if self.in_far > 0 {
                // The next window.
                (self.window() + 1) * NEAR
            } else {
                // Skip straight to the overflow's earliest millisecond.
                let Reverse(first) = self.overflow.peek()?;
                Self::ms(first.key.at).max(self.cursor_ms + 1)
            };
            if next_ms * BUCKET_MICROS > until.as_micros() {
                return None;
            }
            let drained = std::mem::take(&mut self.near[index]);
            recycle(drained, &mut self.spare);
            let entered = next_ms / NEAR > self.window();
            self.cursor_sorted = next_ms == self.cursor_ms + 1 && self.next_sorted;
            self.next_sorted = false;
            self.cursor_ms = next_ms;
            if entered {
                self.enter_window();
            }
        }
    }

    /// Sorts the next millisecond's bucket ahead of time, if it is in the cursor's window and
    /// holds anything (an empty one is tried again at the next pop).
    fn sort_next_bucket(&mut self) {
        let next = self.cursor_ms + 1;
        if next / NEAR == self.window() && !self.near[(next % NEAR) as usize].is_empty() {
            self.sort_bucket(next);
            self.next_sorted = true;
        }
    }

    /// Moves the items of the window the cursor just entered to the near wheel, and the
    /// overflow's items that the far wheel now spans to it.
    fn enter_window(&mut self) {
        let index = (self.window() % FAR) as usize;
        let mut bucket = std::mem::take(&mut self.far[index]);
        self.in_far -= bucket.len();
        for entry in bucket.drain(..) {
            self.file(entry);
        }
        recycle(bucket, &mut self.far_spare);
        while let Some(Reverse(first)) = self.overflow.peek() {
            if Self::ms(first.key.at) / NEAR >= self.window() + FAR {
                break;
            }
            let Reverse(entry) = self.overflow.pop().expect("peeked");
            self.file(entry);
        }
    }

    /// One item of [`Queue::ahead_each`].
    #[cfg(test)]
    pub fn ahead(&self, k: usize) -> Option<&T> {
        self.ahead_each([k])[0]
    }

    /// For each `k` of `ks`, the item `k` places after the next, if the millisecond being
    /// drained and the one after it hold that many (the next one is looked at once the current
    /// one has fewer than [`LOOK_AHEAD`] items left, unless it starts a new window): what will
    /// most likely pop then (an item pushed meanwhile may come first).
    pub fn ahead_each<const N: usize>(&self, ks: [usize; N]) -> [Option<&T>; N] {
        let mut items = [None; N];
        if !self.cursor_sorted {
            return items;
        }
        let bucket = &self.near[(self.cursor_ms % NEAR) as usize];
        let next = &self.near[((self.cursor_ms + 1) % NEAR) as usize];
        for (item, k) in items.iter_mut().zip(ks) {
            *item = match k.checked_sub(bucket.len()) {
                None => Some(&bucket[bucket.len() - 1 - k].item),
                Some(_) if !self.next_sorted => None,
                Some(k) => next.len().checked_sub(k + 1).map(|at| &next[at].item),
            };
        }
        items
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.in_near + self.in_far + self.overflow.len()
    }
}

/// Gives an empty bucket a buffer from `spare`, if it has none of its own.
fn reuse<E>(bucket: &mut Vec<E>, spare: &mut Vec<Vec<E>>) {
    if bucket.capacity() == 0 {
        if let Some(buffer) = spare.pop() {
            *bucket = buffer;
        }
    }
}

/// Keeps a drained bucket's buffer in `spare` for the next bucket to fill.
fn recycle<E>(buffer: Vec<E>, spare: &mut Vec<Vec<E>>) {
    if buffer.capacity() > 0 {
        spare.push(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_fifo_among_equals() {
        let mut q = Queue::new(false);
        q.push(Instant::from_micros(5), "b");
        q.push(Instant::from_micros(1), "a");
        q.push(Instant::from_micros(5), "c");
        q.push(Instant::from_micros(9), "d");
        let until = Instant::from_micros(5);
        let got: Vec<_> = std::iter::from_fn(|| q.pop_due(until).map(|x| x.1)).collect();
        assert_eq!(got, ["a", "b", "c"]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn ahead_names_what_pops_next_in_this_millisecond_and_the_next() {
        let mut q = Queue::new(false);
        for (at, item) in [
            (300, "c"),
            (100, "a"),
            (200, "b"),
            (1_500, "later"),
            (2_100, "too late"),
        ] {
            q.push(Instant::from_micros(at), item);
        }
        // The first millisecond is sorted once its first item pops; with so few left in it,
        // the next millisecond is sorted too, and the one after that is not looked at.
        assert_eq!(q.ahead(0), None);
        let until = Instant::from_micros(10_000);
        assert_eq!(q.pop_due(until).map(|x| x.1), Some("a"));
        assert_eq!(
            (q.ahead(0), q.ahead(1), q.ahead(2), q.ahead(3)),
            (Some(&"b"), Some(&"c"), Some(&"later"), None)
        );
        // A push into the next millisecond, now sorted, lands in its place.
        q.push(Instant::from_micros(1_200), "sooner");
        q.push(Instant::from_micros(1_500), "with later");
        assert_eq!(
            (q.ahead(2), q.ahead(3), q.ahead(4), q.ahead(5)),
            (Some(&"sooner"), Some(&"later"), Some(&"with later"), None)
        );
        let rest: Vec<_> = std::iter::from_fn(|| q.pop_due(until).map(|x| x.1)).collect();
        assert_eq!(
            rest,
            ["b", "c", "sooner", "later", "with later", "too late"]
        );
        assert_eq!(q.ahead(0), None);
    }

    #[test]
    fn ahead_foretells_every_pop_when_nothing_is_pushed_in_between() {
        // Dense milliseconds, some sparse ones and empty ones, and window boundaries: whatever
        // `ahead_each` names `k` places ahead is what the k-th next pop returns.
        let mut rng = macula_proto::Rng::from_seed(11);
        let mut q = Queue::new(false);
        for seq in 0..40_000u64 {
            let at = match seq % 3 {
                0 => rng.below(600_000),
                1 => rng.below(3_000) * 200,
                _ => 255_000 + rng.below(3_000),
            };
            q.push(Instant::from_micros(at), seq);
        }
        let until = Instant::from_micros(u64::MAX / 2);
        let mut foretold: Vec<Option<u64>> = Vec::new();
        let mut popped = Vec::new();
        let (mut seen, mut crossed) = (0, 0);
        loop {
            let every: [usize; LOOK_AHEAD] = std::array::from_fn(|k| k);
            let names: Vec<_> = q.ahead_each(every).map(|name| name.copied()).to_vec();
            // Names past the current millisecond's items come from the next one.
            let here = q.near[(q.cursor_ms % NEAR) as usize].len();
            crossed += names.iter().skip(here).flatten().count();
            let Some((_, item)) = q.pop_due(until) else {
                break;
            };
            for (k, name) in names.into_iter().enumerate() {
                let i = popped.len() + k;
                if let Some(name) = name {
                    seen += 1;
                    if foretold.len() <= i {
                        foretold.resize(i + 1, None);
                    }
                    assert!(
                        !matches!(foretold[i], Some(f) if f != name),
                        "two different items foretold for pop {i}"
                    );
                    foretold[i] = Some(name);
                }
            }
            popped.push(item);
        }
        assert_eq!(popped.len(), 40_000);
        for (i, f) in foretold.iter().enumerate() {
            if let Some(f) = f {
                assert_eq!(popped[i], *f, "pop {i}");
            }
        }
        assert!(seen > 40_000 * 8, "ahead saw little: {seen}");
        assert!(
            crossed > 10_000,
            "ahead saw little past a millisecond: {crossed}"
        );
    }

    #[test]
    fn crowded_milliseconds_pop_in_time_then_push_order() {
        // Hundreds of items in one millisecond, many at the same microsecond, reaching its
        // bucket every way there is: from the overflow (pushed over 65 s ahead), through the
        // far wheel, pushed straight into the near wheel, and inserted into the bucket while it
        // is being drained. With the pushes prefetching, as in a large run.
        let mut rng = macula_proto::Rng::from_seed(7);
        let mut q = Queue::new(true);
        let mut reference = Vec::new();
        let target = 70_000_000u64;
        let mut seq = 0u64;
        let mut push = |q: &mut Queue<u64>, reference: &mut Vec<(u64, u64)>, at: u64| {
            seq += 1;
            q.push(Instant::from_micros(at), seq);
            reference.push((at, seq));
        };
        let advance = |q: &mut Queue<u64>, to: u64| {
            q.push(Instant::from_micros(to), 0);
            assert_eq!(q.pop_due(Instant::from_micros(to)).map(|x| x.1), Some(0));
        };
        for _ in 0..300 {
            push(&mut q, &mut reference, target + rng.below(20) * 50);
        }
        advance(&mut q, 60_000_000); // the target is in the far wheel's range now
        for _ in 0..300 {
            push(&mut q, &mut reference, target + rng.below(20) * 50);
        }
        advance(&mut q, 69_900_000); // and in the near wheel's window
        assert!(q.in_near > 0 && q.in_far == 0, "the far bucket was spread");
        for _ in 0..300 {
            push(&mut q, &mut reference, target + rng.below(20) * 50);
        }
        reference.sort_unstable();
        let until = Instant::from_micros(u64::MAX / 2);
        let mut popped: Vec<(u64, u64)> = Vec::new();
        let (at, first) = q.pop_due(until).expect("queued");
        popped.push((at.as_micros(), first));
        // The bucket is sorted now: more items for it are inserted in place.
        let mut late = Vec::new();
        for _ in 0..100 {
            push(&mut q, &mut late, target + 500 + rng.below(10) * 50);
        }
        popped.extend(std::iter::from_fn(|| q.pop_due(until)).map(|(t, s)| (t.as_micros(), s)));
        reference.extend(late);
        reference.sort_unstable();
        assert_eq!(popped, reference);
    }

    #[test]
    fn kept_buffers_stay_bounded_under_a_flood() {
        // Items in every millisecond of five minutes: every near and far bucket fills and
        // drains many times, and each drained buffer is kept. They stay bounded only because a
        // bucket takes a kept buffer before allocating one.
        let mut q = Queue::new(false);
        let mut rng = macula_proto::Rng::from_seed(5);
        for _ in 0..200_000 {
            q.push(Instant::from_micros(rng.below(300_000_000)), ());
        }
        let until = Instant::from_micros(300_000_000);
        let mut popped = 0;
        while q.pop_due(until).is_some() {
            popped += 1;
            assert!(q.spare.len() <= NEAR as usize && q.far_spare.len() <= FAR as usize);
        }
        assert_eq!(popped, 200_000);
        assert!(q.spare.len() <= NEAR as usize && q.far_spare.len() <= FAR as usize);
    }

    #[test]
    fn matches_a_sorted_reference_across_wheel_and_overflow() {
        // Pushes spread from microseconds to minutes ahead, interleaved with pops, must come
        // out exactly in (time, push order), as a reference list sorted that way does.
        let mut rng = macula_proto::Rng::from_seed(42);
        let mut q = Queue::new(false);
        let mut reference: Vec<(u64, u64)> = Vec::new();
        let mut now = 0u64;
        let mut seq = 0u64;
        let mut popped = Vec::new();
        let mut expected = Vec::new();
        for round in 0..20_000u64 {
            let spread = match round % 4 {
                0 => 1_000,
                1 => 200_000,
                2 => 5_000_000,
                _ => 200_000_000,
            };
            let at = now + rng.below(spread);
            seq += 1;
            q.push(Instant::from_micros(at), seq);
            reference.push((at, seq));
            if round % 3 == 0 {
                now += rng.below(50_000);
                let until = Instant::from_micros(now);
                while let Some((t, s)) = q.pop_due(until) {
                    popped.push((t.as_micros(), s));
                }
                reference.sort_unstable();
                let due = reference.partition_point(|(t, _)| *t <= now);
                expected.extend(reference.drain(..due));
            }
        }
        let until = Instant::from_micros(u64::MAX / 2);
        while let Some((t, s)) = q.pop_due(until) {
            popped.push((t.as_micros(), s));
        }
        reference.sort_unstable();
        expected.extend(reference);
        assert_eq!(popped.len(), expected.len());
        assert_eq!(popped, expected);
    }
}
