//! Cache hints for hosts that run many nodes in one thread: see [`Prefetch`].

use super::{LinkId, Node};

/// Fetches memory into the CPU cache without waiting for it (a prefetch instruction). Doing
/// nothing is a correct implementation.
///
/// One node per process keeps its state in the CPU cache. The simulator, running a hundred
/// thousand nodes, does not: each input lands on a node whose state was last touched thousands
/// of inputs earlier, spread over a few dozen cache lines in several allocations. Read one after
/// another, those misses take most of the CPU's time.
///
/// A host that knows its next few inputs can have that memory fetched while it handles the
/// current one. The node itself it fetches directly: its first [`Node::HOT_BYTES`] (its fields
/// are private). Once those have arrived, [`Node::prefetch`] names the rest: the slot of the link
/// an input arrives on, the top of the timer heap, the output queues. It reads only the hot
/// fields to find them, since a pointer must be in the cache before what it points to can be
/// named without a wait. The hints change nothing a node does: a host that ignores them, or gives
/// them for an input that never comes, gets the same outputs, bit for bit.
pub trait Prefetch {
    /// Starts fetching every cache line `at` occupies.
    fn prefetch<T>(&mut self, at: &T);
}

impl Node {
    /// How many bytes from its start hold the fields of a node that nearly every input reads or
    /// writes: a host that prefetches a node it cannot yet read fetches these. Whole cache
    /// lines.
    pub const HOT_BYTES: usize = 512;

    /// Names the memory that an input arriving on `link` (`None`: a timer) will read, apart
    /// from the node's first [`Node::HOT_BYTES`], which it reads and which the host should have
    /// fetched a little earlier. See [`Prefetch`] for why and how a host uses it. Behaviour does
    /// not depend on it.
    ///
    /// Returns the link the input will most likely touch, so a host can fetch its own state for
    /// that link too: `link` itself, or for a timer the link at the top of the timer index.
    ///
    /// What a link points to (a second ping in flight) is not named: that would read the
    /// link's slot, named here and not yet fetched, and a second ping is rare. Naming it,
    /// a stage later, cost more than it saved (10,000 simulated nodes ran 13% faster without).
    pub fn prefetch(&self, link: Option<LinkId>, to: &mut impl Prefetch) -> Option<LinkId> {
        let top = self.timers.slice().first();
        let link = link.or_else(|| top.map(|(_, link)| *link));
        if let Some(slot) = link.and_then(|l| self.links.slot(l)) {
            to.prefetch(slot);
        }
        if let Some(top) = top {
            to.prefetch(top);
        }
        if let Some(t) = self.transmits.front() {
            to.prefetch(t);
        }
        if let Some(e) = self.events.front() {
            to.prefetch(e);
        }
        link
    }
}
