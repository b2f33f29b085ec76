//! The Kademlia routing table: who this node knows, bucketed by XOR distance from its own id.
//!
//! Pure data: no clock, no randomness, no I/O. Times arrive as values (a contact's `last_seen`),
//! and the table answers with what the caller must do (ping the oldest contact of a full
//! bucket); the DHT machine around it does the talking.
//!
//! Buckets split the classic way: bucket `i < last` holds contacts whose id shares exactly `i`
//! leading bits with ours, and the last bucket holds everything closer. Only the last bucket
//! splits, and only when it is full, so far-away regions of the id space keep one bucket each
//! and the table holds `O(k log n)` contacts. Each bucket keeps its contacts least recently seen
//! first, and a small replacement cache of verified contacts that did not fit.
//!
//! Address diversity bounds how much of the table one network can fill (an eclipse attack needs
//! many addresses in few networks): at most `per_bucket` contacts from one /24 (IPv4) or /48
//! (IPv6) in a bucket, and `per_table` in the whole table. Loopback addresses are exempt: they
//! can only be this machine.

use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use crate::id::{Distance, NodeId};
use crate::time::Instant;

/// A node the table knows: its id (proven by TLS when it was added) and where to reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contact {
    /// The node's id.
    pub id: NodeId,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// When it was last heard from.
    pub last_seen: Instant,
}

/// Limits on contacts per network (/24 for IPv4, /48 for IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diversity {
    /// Most contacts from one network in one bucket. Default: 2.
    pub per_bucket: usize,
    /// Most contacts from one network in the whole table. Default: 10.
    pub per_table: usize,
}

impl Default for Diversity {
    fn default() -> Self {
        Diversity {
            per_bucket: 2,
            per_table: 10,
        }
    }
}

/// What [`RoutingTable::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// The contact is new in the table.
    Added,
    /// The contact was there; its address and `last_seen` were refreshed and it moved to the
    /// most-recently-seen end of its bucket.
    Updated,
    /// The bucket is full and can't split: the contact waits in the replacement cache. The
    /// caller should check that `oldest` (the bucket's least recently seen contact) is alive,
    /// then call [`RoutingTable::seen`] or [`RoutingTable::remove`] for it.
    Pending {
        /// The least recently seen contact of the full bucket.
        oldest: NodeId,
    },
    /// The contact's network already has its share of the bucket or table.
    Diversity,
    /// The contact is this node.
    Own,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Least recently seen first.
    contacts: Vec<Contact>,
    /// Verified contacts that did not fit, most recently seen last.
    replacements: Vec<Contact>,
}

/// The routing table. See the [module documentation](self).
#[derive(Debug)]
pub struct RoutingTable {
    own: NodeId,
    k: usize,
    replacements: usize,
    diversity: Diversity,
    buckets: Vec<Bucket>,
    len: usize,
}

/// The network an address belongs to for diversity limits, or `None` if exempt.
fn network(addr: &SocketAddr) -> Option<[u8; 6]> {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => None,
        IpAddr::V4(ip) => {
            let o = ip.octets();
            Some([4, o[0], o[1], o[2], 0, 0])
        }
        IpAddr::V6(ip) if ip.is_loopback() => None,
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => network(&SocketAddr::new(v4.into(), addr.port())),
            None => {
                let o = ip.octets();
                Some([o[0], o[1], o[2], o[3], o[4], o[5]])
            }
        },
    }
}

/// Puts `c` in a bucket ordered least recently seen first (after any contact seen at the same
/// time, so ties keep arrival order).
fn place(contacts: &mut Vec<Contact>, c: Contact) {
    let at = contacts.partition_point(|x| x.last_seen <= c.last_seen);
    contacts.insert(at, c);
}

impl RoutingTable {
    /// An empty table for the node `own`, with buckets of `k` contacts, `replacements` cached
    /// per bucket, and the given diversity limits.
    ///
    /// # Panics
    /// If `k` is zero.
    pub fn new(own: NodeId, k: usize, replacements: usize, diversity: Diversity) -> Self {
        assert!(k > 0, "a bucket holds at least one contact");
        RoutingTable {
            own,
            k,
            replacements,
            diversity,
            buckets: alloc::vec![Bucket::default()],
            len: 0,
        }
    }

    /// The id the table is organised around.
    pub fn own_id(&self) -> NodeId {
        self.own
    }

    /// Contacts in the table (not counting replacement caches).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table has no contacts.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many buckets there are (1 plus the number of splits).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// The fill of each bucket, from the farthest (index 0: ids differing in the first bit).
    #[cfg(test)]
    pub fn bucket_fill(&self) -> Vec<usize> {
        self.buckets.iter().map(|b| b.contacts.len()).collect()
    }

    /// The bucket `id` belongs in.
    pub fn bucket_of(&self, id: &NodeId) -> usize {
        let shared = self.own.distance(id).leading_zeros() as usize;
        shared.min(self.buckets.len() - 1)
    }

    /// Every contact, farthest bucket first.
    pub fn iter(&self) -> impl Iterator<Item = &Contact> + '_ {
        self.buckets.iter().flat_map(|b| b.contacts.iter())
    }

    /// The contact with id `id`, if present.
    pub fn get(&self, id: &NodeId) -> Option<&Contact> {
        self.buckets[self.bucket_of(id)]
            .contacts
            .iter()
            .find(|c| c.id == *id)
    }

    /// Heap bytes held (contacts, replacement caches, bucket list), by capacity.
    pub fn heap_bytes(&self) -> usize {
        let contact = core::mem::size_of::<Contact>();
        self.buckets.capacity() * core::mem::size_of::<Bucket>()
            + self
                .buckets
                .iter()
                .map(|b| (b.contacts.capacity() + b.replacements.capacity()) * contact)
                .sum::<usize>()
    }

    /// Up to `n` contacts closest to `target`, closest first.
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<Contact> {
        let mut all: Vec<(Distance, Contact)> =
            self.iter().map(|c| (c.id.distance(target), *c)).collect();
        let n = n.min(all.len());
        if n == 0 {
            return Vec::new();
        }
        all.select_nth_unstable_by(n - 1, |a, b| a.0.cmp(&b.0));
        all.truncate(n);
        all.sort_unstable_by_key(|a| a.0);
        all.into_iter().map(|(_, c)| c).collect()
    }

    /// Adds or refreshes a verified contact (one whose id a handshake proved).
    pub fn insert(&mut self, contact: Contact) -> Insert {
        if contact.id == self.own {
            return Insert::Own;
        }
        loop {
            let index = self.bucket_of(&contact.id);
            let bucket = &mut self.buckets[index];
            if let Some(at) = bucket.contacts.iter().position(|c| c.id == contact.id) {
                let mut c = bucket.contacts.remove(at);
                c.last_seen = c.last_seen.max(contact.last_seen);
                let moved = c.addr != contact.addr;
                c.addr = contact.addr;
                place(&mut bucket.contacts, c);
                if moved && !self.diverse_enough(index, &contact.addr, Some(&contact.id)) {
                    self.remove(&contact.id);
                    return Insert::Diversity;
                }
                return Insert::Updated;
            }
            if !self.diverse_enough(index, &contact.addr, None) {
                return Insert::Diversity;
            }
            let splittable = index == self.buckets.len() - 1 && index < 255;
            let bucket = &mut self.buckets[index];
            if bucket.contacts.len() < self.k {
                if bucket.contacts.capacity() == 0 {
                    bucket.contacts.reserve_exact(self.k);
                }
                place(&mut bucket.contacts, contact);
                bucket.replacements.retain(|c| c.id != contact.id);
                self.len += 1;
                return Insert::Added;
            }
            if splittable {
                self.split();
                continue;
            }
            let oldest = bucket.contacts[0].id;
            bucket.replacements.retain(|c| c.id != contact.id);
            if self.replacements > 0 {
                if bucket.replacements.len() >= self.replacements {
                    bucket.replacements.remove(0);
                }
                if bucket.replacements.capacity() == 0 {
                    bucket.replacements.reserve_exact(self.replacements);
                }
                bucket.replacements.push(contact);
            }
            return Insert::Pending { oldest };
        }
    }

    /// Marks a contact alive at `now` (it answered), moving it to the most-recently-seen end.
    /// Returns whether it is in the table.
    pub fn seen(&mut self, id: &NodeId, now: Instant) -> bool {
        let index = self.bucket_of(id);
        let bucket = &mut self.buckets[index];
        let Some(at) = bucket.contacts.iter().position(|c| c.id == *id) else {
            return false;
        };
        let mut c = bucket.contacts.remove(at);
        c.last_seen = c.last_seen.max(now);
        place(&mut bucket.contacts, c);
        true
    }

    /// Removes a contact (it failed to answer), promoting the most recently seen replacement
    /// that fits. Returns the removed contact.
    pub fn remove(&mut self, id: &NodeId) -> Option<Contact> {
        let index = self.bucket_of(id);
        let bucket = &mut self.buckets[index];
        bucket.replacements.retain(|c| c.id != *id);
        let at = bucket.contacts.iter().position(|c| c.id == *id)?;
        let removed = bucket.contacts.remove(at);
        self.len -= 1;
        while let Some(candidate) = self.buckets[index].replacements.pop() {
            if self.diverse_enough(index, &candidate.addr, None) {
                // The most recently seen replacement is the likeliest alive.
                place(&mut self.buckets[index].contacts, candidate);
                self.len += 1;
                break;
            }
        }
        Some(removed)
    }

    /// Splits the last bucket: contacts sharing more than its index's bits with our id move to a
    /// new last bucket, and so do the replacements.
    fn split(&mut self) {
        let last = self.buckets.len() - 1;
        let own = self.own;
        let old = &mut self.buckets[last];
        let (stay, go): (Vec<Contact>, Vec<Contact>) = old
            .contacts
            .drain(..)
            .partition(|c| own.distance(&c.id).leading_zeros() as usize == last);
        let (stay_r, go_r): (Vec<Contact>, Vec<Contact>) = old
            .replacements
            .drain(..)
            .partition(|c| own.distance(&c.id).leading_zeros() as usize == last);
        old.contacts.extend(stay);
        old.replacements.extend(stay_r);
        let mut next = Bucket::default();
        next.contacts.reserve_exact(self.k);
        next.contacts.extend(go);
        next.replacements.extend(go_r);
        self.buckets.push(next);
    }

    /// Whether a contact at `addr` may join bucket `index` (ignoring `except`, a contact whose
    /// address is being changed).
    fn diverse_enough(&self, index: usize, addr: &SocketAddr, except: Option<&NodeId>) -> bool {
        let Some(net) = network(addr) else {
            return true;
        };
        let same = |c: &&Contact| Some(&c.id) != except && network(&c.addr) == Some(net);
        let in_bucket = self.buckets[index].contacts.iter().filter(same).count();
        if in_bucket >= self.diversity.per_bucket {
            return false;
        }
        self.iter().filter(same).count() < self.diversity.per_table
    }

    /// Checks the table's invariants: every contact in the bucket its id belongs in, no bucket
    /// over `k`, no duplicate ids, the count right, diversity limits held.
    ///
    /// # Errors
    /// The first violation found, described.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut seen = Vec::with_capacity(self.len);
        for (i, b) in self.buckets.iter().enumerate() {
            if b.contacts.len() > self.k {
                return Err("a bucket holds more than k contacts");
            }
            if b.replacements.len() > self.replacements {
                return Err("a replacement cache is over its bound");
            }
            for c in &b.contacts {
                if self.bucket_of(&c.id) != i {
                    return Err("a contact sits in the wrong bucket");
                }
                if c.id == self.own {
                    return Err("the table holds its own id");
                }
                seen.push(c.id);
            }
            if b.contacts
                .windows(2)
                .any(|w| w[0].last_seen > w[1].last_seen)
            {
                return Err("a bucket is not ordered least recently seen first");
            }
        }
        if seen.len() != self.len {
            return Err("the contact count is wrong");
        }
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            return Err("an id appears twice");
        }
        for (i, b) in self.buckets.iter().enumerate() {
            for c in &b.contacts {
                let Some(net) = network(&c.addr) else {
                    continue;
                };
                let same = |x: &&Contact| network(&x.addr) == Some(net);
                if self.buckets[i].contacts.iter().filter(same).count() > self.diversity.per_bucket
                    || self.iter().filter(same).count() > self.diversity.per_table
                {
                    return Err("a network holds more than its share");
                }
            }
        }
        Ok(())
    }
}
