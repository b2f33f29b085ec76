//! The node's links and their timers, laid out for locality.
//!
//! A node touches one link per input. Links live inline in a slab, and a [`LinkId`] carries its
//! slot in its low 32 bits, so a lookup is one bounds check and one comparison in memory that
//! is contiguous with the node's other links (a tree of boxed links cost three dependent cache
//! misses per input at 100,000 simulated nodes). The high 32 bits count every link the node ever
//! made, so an id is never reused even when its slot is.
//!
//! The timer index is a binary heap of `(deadline, link)` with lazy deletion: an entry is live
//! only while its link is still filed under that deadline (`Link::scheduled`). Dead entries are
//! dropped when they reach the top and the heap is rebuilt when they outnumber the live ones, so
//! it never holds more than about twice as many entries as there are links.

use alloc::collections::{BinaryHeap, VecDeque};
use alloc::vec::Vec;
use core::cmp::Reverse;

use super::link::Link;
use super::LinkId;
use crate::time::Instant;

/// The slab of links.
#[derive(Default)]
pub(super) struct Links {
    slots: Vec<Option<(LinkId, Link)>>,
    free: Vec<u32>,
    len: usize,
    /// Links made so far: the high half of the next id.
    made: u32,
}

impl Links {
    /// The id the next [`Links::insert`] will use. Each call gives a new id, whether or not
    /// a link is then inserted under it.
    pub fn next_id(&mut self) -> LinkId {
        self.made = self
            .made
            .checked_add(1)
            .expect("fewer than 4 billion links per node");
        let slot = self
            .free
            .last()
            .copied()
            .unwrap_or_else(|| u32::try_from(self.slots.len()).expect("slot count fits u32"));
        LinkId(u64::from(self.made) << 32 | u64::from(slot))
    }

    /// Files `link` under `id`, which must be the latest [`Links::next_id`].
    pub fn insert(&mut self, id: LinkId, link: Link) {
        let slot = id.slot();
        if self.free.last() == Some(&(slot as u32)) {
            self.free.pop();
        } else {
            assert_eq!(slot, self.slots.len(), "insert takes the latest next_id");
            self.slots.push(None);
        }
        debug_assert!(self.slots[slot].is_none());
        self.slots[slot] = Some((id, link));
        self.len += 1;
    }

    /// The slot `id` lives in, read or not: for [`Node::prefetch`](super::Node::prefetch).
    pub fn slot(&self, id: LinkId) -> Option<&Option<(LinkId, Link)>> {
        self.slots.get(id.slot())
    }

    pub fn get(&self, id: LinkId) -> Option<&Link> {
        match self.slots.get(id.slot()) {
            Some(Some((have, link))) if *have == id => Some(link),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: LinkId) -> Option<&mut Link> {
        match self.slots.get_mut(id.slot()) {
            Some(Some((have, link))) if *have == id => Some(link),
            _ => None,
        }
    }

    pub fn remove(&mut self, id: LinkId) -> Option<Link> {
        let slot = id.slot();
        let entry = self.slots.get_mut(slot)?;
        if !matches!(entry, Some((have, _)) if *have == id) {
            return None;
        }
        let (_, link) = entry.take().expect("checked occupied");
        self.free.push(slot as u32);
        self.len -= 1;
        if self.len == 0 {
            // Idle: give the memory back (a hub may have held thousands of links).
            self.slots = Vec::new();
            self.free = Vec::new();
        }
        Some(link)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Ids in slot order.
    pub fn ids(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.iter().map(|(id, _)| id)
    }

    /// Links in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (LinkId, &Link)> + '_ {
        self.slots.iter().flatten().map(|(id, link)| (*id, link))
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

    pub fn pop_front(&mut self) -> Option<LinkId> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }
}

/// When each link next needs `handle_timeout`.
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, LinkId)>>,
    /// The top of the heap, kept beside it: `poll_timeout`, called after every input, then
    /// never reads the heap's own memory.
    top: Instant,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            top: Instant::NEVER,
        }
    }
}

impl Timers {
    /// Files `link` at `at`; the caller has set `link.scheduled = at`.
    pub fn push(&mut self, at: Instant, link: LinkId, links: &Links) {
        self.heap.push(Reverse((at, link)));
        self.bound(links);
        self.refresh_top();
    }

    fn refresh_top(&mut self) {
        self.top = self
            .heap
            .peek()
            .map_or(Instant::NEVER, |Reverse((at, _))| *at);
    }

    /// Keeps dead entries fewer than the links plus 16 (entries die when a link re-files an
    /// earlier deadline or goes away).
    fn bound(&mut self, links: &Links) {
        if self.heap.len() > 2 * links.len() + 16 {
            // Rebuild from the links themselves: only live entries survive.
            self.heap = links
                .iter()
                .filter(|(_, l)| l.scheduled != Instant::NEVER)
                .map(|(id, l)| Reverse((l.scheduled, id)))
                .collect();
        }
    }

    /// Drops dead entries from the top, so [`Timers::first`] is a live deadline, and keeps the
    /// dead ones bounded.
    pub fn prune(&mut self, links: &Links) {
        self.bound(links);
        while let Some(Reverse((at, id))) = self.heap.peek() {
            if links.get(*id).is_some_and(|l| l.scheduled == *at) {
                break;
            }
            self.heap.pop();
        }
        self.refresh_top();
    }

    /// The heap's entries, its top first.
    pub fn slice(&self) -> &[Reverse<(Instant, LinkId)>] {
        self.heap.as_slice()
    }

    /// The earliest deadline on file (live after [`Timers::prune`]).
    pub fn first(&self) -> Option<Instant> {
        (self.top != Instant::NEVER).then_some(self.top)
    }

    /// Takes the next live entry due at or before `now`, clearing its link's `scheduled`.
    pub fn pop_due(&mut self, now: Instant, links: &mut Links) -> Option<LinkId> {
        let due = loop {
            let Some(&Reverse((at, id))) = self.heap.peek() else {
                break None;
            };
            if at > now {
                break None;
            }
            self.heap.pop();
            if let Some(link) = links.get_mut(id).filter(|l| l.scheduled == at) {
                link.scheduled = Instant::NEVER;
                break Some(id);
            }
        };
        self.refresh_top();
        due
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Entries that are live (their link is filed under them).
    #[cfg(test)]
    pub fn live(&self, links: &Links) -> usize {
        self.heap
            .iter()
            .filter(|Reverse((at, id))| links.get(*id).is_some_and(|l| l.scheduled == *at))
            .count()
    }
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
            LinkState::AwaitingConnect,
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
