//! Cache hints for hosts that run many nodes in one thread: see [`Prefetch`].

use super::{LinkId, LinkState, Node};

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
/// are private); [`Node::prefetch`] then names the rest, in [stages](PrefetchStage): the slot of
/// the link an input arrives on, and what the node points to, since a pointer must be in the
/// cache before what it points to can be named without a wait. The hints change
/// nothing a node does: a host that ignores them, or gives them for an input that never comes,
/// gets the same outputs, bit for bit.
pub trait Prefetch {
    /// Starts fetching every cache line `at` occupies.
    fn prefetch<T>(&mut self, at: &T);
}

/// One step of [`Node::prefetch`]. A host calls them in order for the same input, some time
/// apart (the simulator: two inputs apart), after fetching the node itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PrefetchStage {
    /// The link's slot (inside the node for its first few links; for a timer, the slot of the
    /// link the timer heap will hand out first), the top of the timer heap, what the node's
    /// fields point to (the output queues). Reads the node's hot fields.
    Tables,
    /// What the link points to. Reads what [`PrefetchStage::Tables`] fetched.
    Link,
}

impl Node {
    /// How many bytes from its start hold the fields of a node that nearly every input reads or
    /// writes: a host that prefetches a node it cannot yet read fetches these. Whole cache
    /// lines.
    pub const HOT_BYTES: usize = 512;

    /// Names, for `stage`, the memory that an input arriving on `link` (`None`: a timer) will
    /// read. See [`Prefetch`] for why and how a host uses it. Behaviour does not depend on it.
    ///
    /// Returns the link the input will most likely touch, so a host can fetch its own state for
    /// that link too: `link` itself, or for a timer the link at the top of the timer index.
    pub fn prefetch(
        &self,
        stage: PrefetchStage,
        link: Option<LinkId>,
        to: &mut impl Prefetch,
    ) -> Option<LinkId> {
        let link = link.or_else(|| self.timers.slice().first().map(|(_, link)| *link));
        match stage {
            PrefetchStage::Tables => {
                if let Some(slot) = link.and_then(|l| self.links.slot(l)) {
                    to.prefetch(slot);
                }
                if let Some(top) = self.timers.slice().first() {
                    to.prefetch(top);
                }
                if let Some(t) = self.transmits.front() {
                    to.prefetch(t);
                }
                if let Some(e) = self.events.front() {
                    to.prefetch(e);
                }
            }
            PrefetchStage::Link => {
                if let Some(LinkState::Established(e)) =
                    link.and_then(|l| self.links.get(l)).map(|l| &l.state)
                {
                    if let Some(p) = e.pings.rest_first() {
                        to.prefetch(p);
                    }
                }
            }
        }
        link
    }
}
