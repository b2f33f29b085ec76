//! A slab with generation-checked keys: O(1) lookups into contiguous memory, and a key that
//! outlives its entry finds nothing even after the slot is reused.

/// A key: the slot in the low 32 bits, the slot's generation in the high 32.
pub(crate) type Key = u64;

pub(crate) struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

fn split(key: Key) -> (usize, u32) {
    ((key & u64::from(u32::MAX)) as usize, (key >> 32) as u32)
}

impl<T> Slab<T> {
    pub fn insert(&mut self, item: T) -> Key {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push((0, None));
                u32::try_from(self.slots.len() - 1).expect("fewer than 4 billion entries")
            }
        };
        let entry = &mut self.slots[slot as usize];
        // Generations start at 1, so no key is ever 0.
        entry.0 = entry.0.wrapping_add(1).max(1);
        entry.1 = Some(item);
        u64::from(entry.0) << 32 | u64::from(slot)
    }

    /// The slot `key` names, without reading it (for a prefetch).
    pub fn slot(&self, key: Key) -> Option<&(u32, Option<T>)> {
        self.slots.get(split(key).0)
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        let (slot, generation) = split(key);
        match self.slots.get(slot) {
            Some((g, Some(item))) if *g == generation => Some(item),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let (slot, generation) = split(key);
        match self.slots.get_mut(slot) {
            Some((g, Some(item))) if *g == generation => Some(item),
            _ => None,
        }
    }

    pub fn remove(&mut self, key: Key) -> Option<T> {
        let (slot, generation) = split(key);
        let (g, entry) = self.slots.get_mut(slot)?;
        if *g != generation {
            return None;
        }
        let item = entry.take()?;
        self.free.push(slot as u32);
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_miss_after_reuse() {
        let mut slab = Slab::default();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.remove(a), None);
        let c = slab.insert("c");
        assert_ne!(a, c);
        assert_eq!(a & 0xffff_ffff, c & 0xffff_ffff, "the slot is reused");
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.get(c), Some(&"c"));
        assert_eq!(slab.get_mut(b).map(|s| *s), Some("b"));
        assert_eq!(
            slab.slots.len(),
            2,
            "memory follows the live count, not the total"
        );
    }
}
