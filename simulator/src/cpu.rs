//! The CPU's prefetch instruction, behind [`Prefetch`]: how the engine and its queue have memory
//! fetched before they read or write it (see `docs/simulator.md`).

use macula_proto::node::layout::Prefetch;

/// Prefetches with the CPU's prefetch instruction, every cache line the object spans.
pub(crate) struct Cpu;

/// Where [`Cpu`] computes addresses from (see there).
static ANCHOR: [u8; 1] = [0];

impl Cpu {
    /// Prefetches the cache lines of the first `bytes` of `at` (at most all of it).
    pub fn prefetch_prefix<T>(&mut self, at: &T, bytes: usize) {
        const LINE: usize = 64;
        let first = at as *const T as usize;
        let last = first + bytes.clamp(1, std::mem::size_of::<T>().max(1)) - 1;
        // `prefetch_index` takes a slice and an index, and is defined for any index (the
        // instruction never faults): an offset from a static byte names any address.
        let base = ANCHOR.as_ptr() as usize;
        let mut line = first & !(LINE - 1);
        while line <= last {
            prefetch_index::prefetch_index(&ANCHOR[..], line.wrapping_sub(base));
            line += LINE;
        }
    }
}

impl Prefetch for Cpu {
    fn prefetch<T>(&mut self, at: &T) {
        self.prefetch_prefix(at, std::mem::size_of::<T>());
    }
}
