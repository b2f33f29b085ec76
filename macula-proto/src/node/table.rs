//! The node's links and their timers, laid out for locality.
//!
//! A node touches one link per input. Links live in a slab, and a [`LinkId`] carries its slot in
//! its low 32 bits, so a lookup is one bounds check and one comparison (a tree of boxed links cost
//! three dependent cache misses per input at 100,000 simulated nodes). The high 32 bits count
//! every link the node ever made, so an id is never reused even when its slot is.
//!
//! The first [`INLINE_LINKS`] slots sit inside the node itself, and a new link takes the lowest
//! free slot, so a node with a handful of links (nearly every node of a mesh) keeps them, their
//! timers and its own fields in one stretch of memory: where a host runs many nodes, an input
//! then costs one page-table walk rather than one per allocation it touches (see
//! `docs/simulator.md`). Slots past those are in a vector.
//!
//! The timer index is a four-ary heap of `(deadline, link)` with lazy deletion: an entry is live
//! only while its link is still filed under that deadline (`Link::scheduled`). Dead entries are
//! dropped when they reach the top and the heap is rebuilt when they outnumber the live ones, so
//! it never holds more than about twice as many entries as there are links. Up to
//! [`INLINE_TIMERS`] entries sit in the node; a heap that outgrows them moves to a vector, and
//! back when a rebuild finds few enough live ones.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::link::Link;
use super::registry::MAX_SUBSYSTEMS;
use super::LinkId;
use crate::time::Instant;

/// Links kept inside the node: in a simulated mesh of 10,000 nodes, 99.6% of nodes held at most
/// six links at the end of a `connect` run (63% held three).
pub(super) const INLINE_LINKS: usize = 6;

/// Timer entries kept inside the node: one per link, with room for a few dead ones.
pub(super) const INLINE_TIMERS: usize = 8;

/// A slot of the slab: a link and the id it was filed under, or nothing.
pub(super) type Slot = Option<(LinkId, Link)>;

/// The slab of links. `repr(C)`, the bookkeeping first: the node keeps this struct last among
/// its hot fields, so the bookkeeping shares their cache lines and the inline slots follow.
#[repr(C)]
pub(super) struct Links {
    len: u32,
    /// Links made so far: the high half of the next id.
    made: u32,
    /// Bit `i` set: inline slot `i` holds a link.
    inline_used: u8,
    /// Free slots among `spill`'s (numbered from 0 there), the lowest last.
    spill_free: Vec<u32>,
    /// Slots `INLINE_LINKS..`.
    spill: Vec<Slot>,
    inline: [Slot; INLINE_LINKS],
    /// The deadline each subsystem is filed under in the timer heap (`NEVER`: not filed).
    /// After the inline links: most inputs never read it.
    subsystems: [Instant; MAX_SUBSYSTEMS],
}

impl Default for Links {
    fn default() -> Self {
        Links {
            len: 0,
            made: 0,
            inline_used: 0,
            spill_free: Vec::new(),
            spill: Vec::new(),
            subsystems: [Instant::NEVER; MAX_SUBSYSTEMS],
            inline: Default::default(),
        }
    }
}

const ALL_INLINE: u8 = ((1u16 << INLINE_LINKS) - 1) as u8;

impl Links {
    /// Where the inline slots start: the bookkeeping before them is among the node's hot fields.
    #[cfg(test)]
    pub const SLOTS_OFFSET: usize = core::mem::offset_of!(Links, inline);

    /// The slot the next link takes: the lowest free one.
    fn next_slot(&self) -> usize {
        if self.inline_used != ALL_INLINE {
            return self.inline_used.trailing_ones() as usize;
        }
        INLINE_LINKS
            + self
                .spill_free
                .last()
                .map_or(self.spill.len(), |&s| s as usize)
    }

    /// The id the next [`Links::insert`] will use. Each call gives a new id, whether or not
    /// a link is then inserted under it.
    ///
    /// The count wraps after four billion links, skipping 0 (the high half of the
    /// subsystems' timer keys). A new id can't be a live link's: the slot it names is free.
    pub fn next_id(&mut self) -> LinkId {
        self.made = self.made.wrapping_add(1).max(1);
        let slot = u32::try_from(self.next_slot()).expect("slot count fits u32");
        LinkId(u64::from(self.made) << 32 | u64::from(slot))
    }

    /// Files `link` under `id`, which must be the latest [`Links::next_id`].
    pub fn insert(&mut self, id: LinkId, link: Link) {
        let slot = id.slot();
        assert_eq!(slot, self.next_slot(), "insert takes the latest next_id");
        if slot < INLINE_LINKS {
            self.inline_used |= 1 << slot;
        } else if self.spill_free.last().is_some() {
            self.spill_free.pop();
        } else {
            self.spill.push(None);
        }
        let entry = self.entry_mut(slot).expect("the slot exists");
        debug_assert!(entry.is_none());
        *entry = Some((id, link));
        self.len += 1;
    }

    fn entry_mut(&mut self, slot: usize) -> Option<&mut Slot> {
        match slot.checked_sub(INLINE_LINKS) {
            None => Some(&mut self.inline[slot]),
            Some(s) => self.spill.get_mut(s),
        }
    }

    /// The slot `id` lives in, read or not: for [`Node::prefetch`](super::Node::prefetch).
    /// Finding an inline slot reads nothing.
    pub fn slot(&self, id: LinkId) -> Option<&Slot> {
        let slot = id.slot();
        match slot.checked_sub(INLINE_LINKS) {
            None => Some(&self.inline[slot]),
            Some(s) => self.spill.get(s),
        }
    }

    pub fn get(&self, id: LinkId) -> Option<&Link> {
        match self.slot(id) {
            Some(Some((have, link))) if *have == id => Some(link),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: LinkId) -> Option<&mut Link> {
        match self.entry_mut(id.slot()) {
            Some(Some((have, link))) if *have == id => Some(link),
            _ => None,
        }
    }

    pub fn remove(&mut self, id: LinkId) -> Option<Link> {
        let slot = id.slot();
        let entry = self.entry_mut(slot)?;
        if !matches!(entry, Some((have, _)) if *have == id) {
            return None;
        }
        let (_, link) = entry.take().expect("checked occupied");
        match slot.checked_sub(INLINE_LINKS) {
            None => self.inline_used &= !(1 << slot),
            Some(s) => {
                let s = s as u32;
                let at = self.spill_free.partition_point(|&f| f > s);
                self.spill_free.insert(at, s);
            }
        }
        self.len -= 1;
        if self.len == 0 {
            // Idle: give the memory back (a hub may have held thousands of links).
            self.spill = Vec::new();
            self.spill_free = Vec::new();
        }
        Some(link)
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// The deadline a timer key (a link, or a subsystem: see [`LinkId::subsystem`]) is filed
    /// under; `NEVER` if none or if the link is gone.
    pub fn scheduled(&self, key: LinkId) -> Instant {
        match key.as_subsystem() {
            Some(index) => self.subsystems[index],
            None => self.get(key).map_or(Instant::NEVER, |l| l.scheduled),
        }
    }

    /// Files a timer key under `at` (the caller pushes the heap entry).
    pub fn set_scheduled(&mut self, key: LinkId, at: Instant) {
        match key.as_subsystem() {
            Some(index) => self.subsystems[index] = at,
            None => {
                if let Some(link) = self.get_mut(key) {
                    link.scheduled = at;
                }
            }
        }
    }

    /// Every key filed under a deadline, with it.
    fn filed(&self) -> impl Iterator<Item = (Instant, LinkId)> + '_ {
        let subsystems = self
            .subsystems
            .iter()
            .enumerate()
            .filter(|(_, at)| **at != Instant::NEVER)
            .map(|(i, at)| (*at, LinkId::subsystem(i)));
        self.iter()
            .filter(|(_, l)| l.scheduled != Instant::NEVER)
            .map(|(id, l)| (l.scheduled, id))
            .chain(subsystems)
    }

    /// How many keys are filed under a deadline now, at most.
    fn live_keys(&self) -> usize {
        self.len()
            + self
                .subsystems
                .iter()
                .filter(|at| **at != Instant::NEVER)
                .count()
    }

    /// How many timer keys may be live: links and subsystems.
    fn keys(&self) -> usize {
        self.len() + MAX_SUBSYSTEMS
    }

    /// Ids in slot order.
    pub fn ids(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.iter().map(|(id, _)| id)
    }

    /// Links in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (LinkId, &Link)> + '_ {
        self.inline
            .iter()
            .chain(&self.spill)
            .flatten()
            .map(|(id, link)| (*id, link))
    }
}

/// Links in the order they got something to send. Mostly one at a time, so the first sits
/// inline and the queue's own memory is touched only when several wait.
#[derive(Default)]
pub(super) struct LinkQueue {
    first: Option<LinkId>,
    rest: VecDeque<LinkId>,
}

impl LinkQueue {
    pub fn push_back(&mut self, link: LinkId) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(link);
        } else {
            self.rest.push_back(link);
        }
    }

    pub fn front(&self) -> Option<LinkId> {
        self.first.or_else(|| self.rest.front().copied())
    }

    pub fn pop_front(&mut self) -> Option<LinkId> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }
}

/// When each link next needs `handle_timeout`.
pub(super) struct Timers {
    /// The top of the heap, kept beside it: `poll_timeout`, called after every input, then
    /// never reads the heap itself.
    top: Instant,
    heap: Heap,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            top: Instant::NEVER,
            heap: Heap::default(),
        }
    }
}

impl Timers {
    /// Files `key` (a link or a subsystem) at `at`; the caller has filed it under `at` in
    /// `links`.
    pub fn push(&mut self, at: Instant, key: LinkId, links: &Links) {
        debug_assert!(links.scheduled(key) == at);
        let full_inline = matches!(&self.heap, Heap::Inline { len, .. } if *len == INLINE_TIMERS);
        if full_inline && links.live_keys() < INLINE_TIMERS {
            // Dead entries fill the node's own room: drop them rather than move out of it.
            // The rebuild files `link` too.
            self.rebuild(links);
        } else {
            self.heap.push((at, key));
            self.bound(links);
        }
        self.refresh_top();
    }

    fn refresh_top(&mut self) {
        self.top = self.heap.peek().map_or(Instant::NEVER, |(at, _)| at);
    }

    /// Keeps the entries at most twice the keys plus 16 (entries die when a key re-files an
    /// earlier deadline or its link goes away).
    fn bound(&mut self, links: &Links) {
        if self.heap.slice().len() > 2 * links.keys() + 16 {
            self.rebuild(links);
        }
    }

    /// Rebuilds the heap from the links and subsystems themselves: only live entries survive.
    fn rebuild(&mut self, links: &Links) {
        self.heap.rebuild(links.filed());
    }

    /// Drops dead entries from the top, so [`Timers::first`] is a live deadline, and keeps the
    /// dead ones bounded.
    pub fn prune(&mut self, links: &Links) {
        self.bound(links);
        while let Some((at, id)) = self.heap.peek() {
            if links.scheduled(id) == at {
                break;
            }
            self.heap.pop();
        }
        self.refresh_top();
    }

    /// The heap's entries, its top first.
    pub fn slice(&self) -> &[(Instant, LinkId)] {
        self.heap.slice()
    }

    /// The earliest deadline on file (live after [`Timers::prune`]).
    pub fn first(&self) -> Option<Instant> {
        (self.top != Instant::NEVER).then_some(self.top)
    }

    /// Takes the next live entry due at or before `now`, clearing its key's deadline on file.
    pub fn pop_due(&mut self, now: Instant, links: &mut Links) -> Option<LinkId> {
        let due = loop {
            let Some((at, id)) = self.heap.peek() else {
                break None;
            };
            if at > now {
                break None;
            }
            self.heap.pop();
            if links.scheduled(id) == at {
                links.set_scheduled(id, Instant::NEVER);
                break Some(id);
            }
        };
        self.refresh_top();
        due
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.slice().len()
    }

    #[cfg(test)]
    pub fn is_inline(&self) -> bool {
        matches!(self.heap, Heap::Inline { .. })
    }

    /// Keys with a live entry (one their key is filed under). A dead entry comes back to
    /// life when its key is filed again under the same instant, so a key may have two; both
    /// fire, and the second finds nothing filed.
    #[cfg(test)]
    pub fn live(&self, links: &Links) -> usize {
        let mut keys: Vec<LinkId> = self
            .slice()
            .iter()
            .filter(|(at, id)| links.scheduled(*id) == *at)
            .map(|(_, id)| *id)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.len()
    }
}

type TimerEntry = (Instant, LinkId);

const NO_ENTRY: TimerEntry = (Instant::NEVER, LinkId(0));

/// A four-ary min-heap (see [`ARITY`]) whose first [`INLINE_TIMERS`] entries live inline; past
/// that, all of them move to a vector (until a rebuild finds few enough to move back).
enum Heap {
    Inline {
        len: usize,
        items: [TimerEntry; INLINE_TIMERS],
    },
    Spilled(Vec<TimerEntry>),
}

impl Default for Heap {
    fn default() -> Self {
        Heap::Inline {
            len: 0,
            items: [NO_ENTRY; INLINE_TIMERS],
        }
    }
}

impl Heap {
    fn slice(&self) -> &[TimerEntry] {
        match self {
            Heap::Inline { len, items } => &items[..*len],
            Heap::Spilled(v) => v,
        }
    }

    fn slice_mut(&mut self) -> &mut [TimerEntry] {
        match self {
            Heap::Inline { len, items } => &mut items[..*len],
            Heap::Spilled(v) => v,
        }
    }

    fn peek(&self) -> Option<TimerEntry> {
        self.slice().first().copied()
    }

    /// Adds `entry` at the end, moving to a vector when the inline room is full; the heap
    /// order is the caller's to restore.
    fn append(&mut self, entry: TimerEntry) {
        match self {
            Heap::Inline { len, items } if *len < INLINE_TIMERS => {
                items[*len] = entry;
                *len += 1;
            }
            Heap::Inline { items, .. } => {
                let mut spilled = Vec::with_capacity(2 * INLINE_TIMERS);
                spilled.extend_from_slice(items);
                spilled.push(entry);
                *self = Heap::Spilled(spilled);
            }
            Heap::Spilled(v) => v.push(entry),
        }
    }

    fn push(&mut self, entry: TimerEntry) {
        self.append(entry);
        let heap = self.slice_mut();
        sift_up(heap, heap.len() - 1);
    }

    fn pop(&mut self) -> Option<TimerEntry> {
        let heap = self.slice_mut();
        let last = heap.len().checked_sub(1)?;
        heap.swap(0, last);
        let top = match self {
            Heap::Inline { len, items } => {
                *len -= 1;
                items[*len]
            }
            Heap::Spilled(v) => v.pop().expect("checked non-empty"),
        };
        sift_down(self.slice_mut(), 0);
        Some(top)
    }

    /// Replaces the entries with `entries`, inline if they fit.
    fn rebuild(&mut self, entries: impl Iterator<Item = TimerEntry>) {
        let mut fresh = Heap::default();
        for entry in entries {
            fresh.append(entry);
        }
        let heap = fresh.slice_mut();
        // Entries from `len.div_ceil(ARITY)` on have no children.
        for at in (0..heap.len().div_ceil(ARITY)).rev() {
            sift_down(heap, at);
        }
        *self = fresh;
    }
}

/// Children per entry of the timer heap. Four children of 16 bytes share one or two cache
/// lines, so a hub's heap of a thousand links is five or six levels deep, not ten or eleven:
/// where the heap has left the cache (many nodes in one process), a pop misses on half as many
/// lines, for about as many comparisons.
const ARITY: usize = 4;

/// Moves `heap[at]` up to where the min-heap order holds.
fn sift_up(heap: &mut [TimerEntry], mut at: usize) {
    let entry = heap[at];
    while at > 0 {
        let parent = (at - 1) / ARITY;
        if heap[parent] <= entry {
            break;
        }
        heap[at] = heap[parent];
        at = parent;
    }
    heap[at] = entry;
}

/// Moves `heap[at]` down to where the min-heap order holds.
fn sift_down(heap: &mut [TimerEntry], mut at: usize) {
    let Some(&entry) = heap.get(at) else {
        return; // the heap is empty
    };
    loop {
        let first = ARITY * at + 1;
        if first >= heap.len() {
            break;
        }
        let mut child = first;
        for c in first + 1..(first + ARITY).min(heap.len()) {
            if heap[c] < heap[child] {
                child = c;
            }
        }
        if entry <= heap[child] {
            break;
        }
        heap[at] = heap[child];
        at = child;
    }
    heap[at] = entry;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::link::LinkState;
    use crate::node::Direction;

    fn link() -> Link {
        Link::new(
            Direction::Inbound,
            "198.18.0.1:1".parse().unwrap(),
            LinkState::AwaitingConnect {
                exporter: [0; 32],
                limited: false,
            },
            Instant::ZERO,
            1024,
        )
    }

    #[test]
    fn reused_slots_get_new_ids_and_stale_ids_find_nothing() {
        let mut links = Links::default();
        let a = links.next_id();
        links.insert(a, link());
        let b = links.next_id();
        links.insert(b, link());
        assert!(links.remove(a).is_some());
        let c = links.next_id();
        links.insert(c, link());
        assert_ne!(a, c, "the slot is reused, the id is not");
        assert!(links.get(a).is_none() && links.remove(a).is_none());
        assert!(links.get(b).is_some() && links.get(c).is_some());
        assert_eq!(links.ids().collect::<Vec<_>>(), [c, b]);
        assert_eq!(links.len(), 2);
    }

    #[test]
    fn link_ids_wrap_without_panicking_and_never_name_a_subsystem() {
        let mut links = Links::default();
        let kept = links.next_id();
        links.insert(kept, link());
        links.made = u32::MAX - 2;
        let mut seen = Vec::new();
        for _ in 0..6 {
            let id = links.next_id();
            links.insert(id, link());
            assert!(id.as_subsystem().is_none(), "{id:?}");
            assert!(links.remove(id).is_some());
            seen.push(id.0 >> 32);
        }
        assert_eq!(seen, [u32::MAX as u64 - 1, u32::MAX as u64, 1, 2, 3, 4]);
        assert!(links.get(kept).is_some(), "the live link is untouched");
    }

    #[test]
    fn new_links_take_the_lowest_free_slot_and_only_the_overflow_leaves_the_node() {
        let mut links = Links::default();
        let mut ids = Vec::new();
        for _ in 0..INLINE_LINKS + 3 {
            let id = links.next_id();
            links.insert(id, link());
            ids.push(id);
        }
        let slots: Vec<usize> = ids.iter().map(|id| id.slot()).collect();
        assert_eq!(slots, (0..INLINE_LINKS + 3).collect::<Vec<_>>());
        assert_eq!(
            links.spill.len(),
            3,
            "only the links past the inline ones spill"
        );
        // Free an inline slot and two spilled ones: the next links fill the lowest first.
        for at in [1, INLINE_LINKS + 2, INLINE_LINKS] {
            assert!(links.remove(ids[at]).is_some());
        }
        let again: Vec<usize> = (0..3)
            .map(|_| {
                let id = links.next_id();
                links.insert(id, link());
                id.slot()
            })
            .collect();
        assert_eq!(again, [1, INLINE_LINKS, INLINE_LINKS + 2]);
        assert_eq!(links.len(), INLINE_LINKS + 3);
        assert_eq!(links.ids().count(), INLINE_LINKS + 3);
        // Every slot is below the most links held at once, and the last link out frees the
        // spill.
        let held: Vec<LinkId> = links.ids().collect();
        assert!(held.iter().all(|id| id.slot() < INLINE_LINKS + 3));
        for id in held {
            assert!(links.remove(id).is_some());
        }
        assert_eq!(links.spill.capacity(), 0);
        let id = links.next_id();
        assert_eq!(id.slot(), 0);
    }

    #[test]
    fn the_timer_heap_pops_in_the_same_order_as_a_binary_heap() {
        use alloc::collections::BinaryHeap;
        use core::cmp::Reverse;

        let mut rng = crate::rng::Rng::from_seed(11);
        let mut ours = Heap::default();
        let mut reference = BinaryHeap::new();
        for round in 0..20_000u32 {
            // Grow past the inline room and shrink back, over and over.
            let grow = (round / 500) % 2 == 0;
            if (rng.below(3) < 2) == grow {
                let entry = (
                    Instant::from_micros(rng.below(50)),
                    LinkId(rng.below(8) << 32 | rng.below(4)),
                );
                ours.push(entry);
                reference.push(Reverse(entry));
            } else {
                assert_eq!(ours.pop(), reference.pop().map(|Reverse(e)| e));
            }
            assert_eq!(ours.peek(), reference.peek().map(|Reverse(e)| *e));
            assert_eq!(ours.slice().len(), reference.len());
            if round % 997 == 0 {
                // A rebuild keeps the same entries in heap order.
                let all: Vec<TimerEntry> = ours.slice().to_vec();
                ours.rebuild(all.into_iter());
                assert_eq!(ours.peek(), reference.peek().map(|Reverse(e)| *e));
            }
        }
    }

    #[test]
    fn dead_timer_entries_stay_out_of_the_node_while_its_links_fit_in_it() {
        let mut links = Links::default();
        let mut timers = Timers::default();
        let ids: Vec<LinkId> = (0..3)
            .map(|_| {
                let id = links.next_id();
                links.insert(id, link());
                id
            })
            .collect();
        // Re-file each link at ever earlier deadlines: entries die far faster than the bound
        // of twice the links plus 16 would clear them.
        for k in (1..200u64).rev() {
            for (i, id) in ids.iter().enumerate() {
                let at = Instant::from_micros(10 * k + i as u64);
                links.get_mut(*id).unwrap().scheduled = at;
                timers.push(at, *id, &links);
                assert!(timers.is_inline(), "{k}: {} entries", timers.len());
            }
        }
        assert_eq!(timers.live(&links), 3);
        assert_eq!(timers.first(), Some(Instant::from_micros(10)));
        let now = Instant::from_micros(1_000_000);
        let due: Vec<LinkId> = core::iter::from_fn(|| timers.pop_due(now, &mut links)).collect();
        assert_eq!(due, ids, "each live link fires once, earliest first");
    }

    #[test]
    fn dead_timer_entries_are_skipped_and_bounded() {
        let mut links = Links::default();
        let mut timers = Timers::default();
        let id = links.next_id();
        links.insert(id, link());
        // Re-file the same link at ever earlier deadlines: every older entry dies.
        for k in (1..1_000u64).rev() {
            let at = Instant::from_micros(k);
            links.get_mut(id).unwrap().scheduled = at;
            timers.push(at, id, &links);
            timers.prune(&links);
            assert!(timers.len() <= 2 * links.len() + 16);
            assert_eq!(timers.first(), Some(at));
        }
        assert_eq!(timers.live(&links), 1);
        let now = Instant::from_micros(5_000);
        assert_eq!(timers.pop_due(now, &mut links), Some(id));
        assert_eq!(
            timers.pop_due(now, &mut links),
            None,
            "dead entries never fire"
        );
        assert_eq!(links.get(id).unwrap().scheduled, Instant::NEVER);
    }
}
