//! How a node's memory is laid out for hosts that run many nodes in one thread (a simulator of
//! a hundred thousand), and the cache hints such a host may use: see [`Prefetch`].
//!
//! Everything that serves that purpose lives here, and nothing a subsystem writes depends on
//! it. The link core's fields that nearly every input touches come first in it (`repr(C)`),
//! with the first few links and timers inline; the [`Config`] values inputs read are copied
//! beside them (`Tuning`), and so are the counters keep-alives move (`Traffic`); the
//! subsystems sit behind one pointer, as most inputs (keep-alives, pings) never touch them.
//! A node with a handful of links then keeps nearly all it touches in one 3.5 KB stretch of
//! memory, where each input otherwise found its state spread over several allocations, out of
//! the cache and out of the TLB (`docs/simulator.md` has the measurements).

use crate::config::Config;
use crate::time::Duration;

use super::{LinkId, Node};

/// The [`Config`] values that inputs read, copied beside the core's hot fields (a node's
/// configuration never changes): the `Config` itself, 300 bytes, would cost a cache line for
/// each of them.
#[derive(Clone, Copy)]
pub(super) struct Tuning {
    pub keepalive_interval: Duration,
    pub idle_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub ping_timeout: Duration,
    pub max_pings_in_flight: usize,
    pub max_queued_events: usize,
}

impl Tuning {
    pub fn of(config: &Config) -> Self {
        Tuning {
            keepalive_interval: config.keepalive_interval,
            idle_timeout: config.idle_timeout,
            pool_idle_timeout: config.pool_idle_timeout,
            ping_timeout: config.ping_timeout,
            max_pings_in_flight: config.max_pings_in_flight,
            max_queued_events: config.max_queued_events,
        }
    }
}

/// The counters of [`Stats`](super::Stats) that keep-alives and pings move, kept among the
/// hot fields.
#[derive(Clone, Copy, Default)]
pub(super) struct Traffic {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub pings_sent: u64,
    pub pongs_received: u64,
}

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
        let core = &self.core;
        let top = core.timers_slice().first();
        let link = link.or_else(|| top.map(|(_, link)| *link));
        if let Some(slot) = link.and_then(|l| core.links.slot(l)) {
            to.prefetch(slot);
        }
        if let Some(top) = top {
            to.prefetch(top);
        }
        core.prefetch_queues(to);
        link
    }
}
