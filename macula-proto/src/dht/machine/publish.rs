//! Publishing: this node's own records, stored at the closest nodes, signed anew and stored
//! again every `republish_interval` (or at once when the addresses it can be dialed at
//! change), until withdrawn.

use alloc::vec::Vec;
use core::net::SocketAddr;

use super::{Dht, Goal, Owner, Published, REPUBLISH_RETRY};
use crate::config::MAX_LISTEN_ADDRS;
use crate::dht::store::Record;
use crate::dht::types::{DhtError, OpId};
use crate::node::subsystem::Cx;
use crate::time::Instant;
use crate::wire::KeyBytes;

impl Dht {
    /// Publishes `value` under `key` at the closest nodes, and again every
    /// `republish_interval` until withdrawn. The node keeps its own record, so its own gets
    /// and the gets it answers find it.
    pub(crate) fn put(
        &mut self,
        key: KeyBytes,
        value: Vec<u8>,
        owner: Owner,
        cx: &mut Cx<'_>,
    ) -> OpId {
        // Nothing changes before a refusal.
        if value.len() > self.config.max_value_size {
            return self.refuse(DhtError::ValueTooLarge, owner, cx);
        }
        if !self.published.contains_key(&key) && self.published.len() >= self.config.max_published {
            return self.refuse(DhtError::TooManyPublished, owner, cx);
        }
        if self.ops.len() >= self.config.max_operations {
            return self.refuse(DhtError::Busy, owner, cx);
        }
        let record = self.sign(&key, value.clone(), cx);
        let next = cx.now() + self.config.republish_interval;
        self.published.insert(
            key,
            Published {
                value,
                record: record.clone(),
                next,
            },
        );
        self.update_next_publish();
        self.start(Goal::Put(record), owner, key, cx)
    }

    /// Withdraws this node's record under `key` from the closest nodes and stops republishing.
    pub(crate) fn withdraw(&mut self, key: KeyBytes, owner: Owner, cx: &mut Cx<'_>) -> OpId {
        if self.ops.len() >= self.config.max_operations {
            return self.refuse(DhtError::Busy, owner, cx);
        }
        self.published.remove(&key);
        self.update_next_publish();
        let own = self.own;
        self.store.withdraw(&key, &own);
        self.start(Goal::Withdraw, owner, key, cx)
    }

    pub(super) fn update_next_publish(&mut self) {
        self.next_publish = self
            .published
            .values()
            .map(|p| p.next)
            .min()
            .unwrap_or(Instant::NEVER);
    }

    /// Stores this node's records again, signed anew, once their interval has passed.
    pub(super) fn republish(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        let due: Vec<KeyBytes> = self
            .published
            .iter()
            .filter(|(_, p)| p.next <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if self.ops.len() >= self.config.max_operations {
                // No room for the operation: this record tries again a second from now
                // (waiting a whole interval would let it expire first).
                if let Some(p) = self.published.get_mut(&key) {
                    p.next = now + REPUBLISH_RETRY;
                }
                continue;
            }
            let Some(value) = self.published.get(&key).map(|p| p.value.clone()) else {
                continue;
            };
            let record = self.sign(&key, value, cx);
            let published = self.published.get_mut(&key).expect("listed above");
            published.next = now + self.config.republish_interval;
            published.record = record.clone();
            self.start(Goal::Put(record), Owner::Internal, key, cx);
        }
        self.update_next_publish();
    }

    fn sign(&mut self, key: &KeyBytes, value: Vec<u8>, cx: &mut Cx<'_>) -> Record {
        let seq = self.next_seq;
        self.next_seq += 1;
        // Behind a NAT that lets nobody in, none: readers reach the publisher by its id.
        let addrs: Vec<SocketAddr> = cx
            .dialable_addrs()
            .iter()
            .take(MAX_LISTEN_ADDRS)
            .copied()
            .collect();
        let ttl = self.config.record_ttl;
        Record::sign(cx.identity(), key, &addrs, value, ttl, seq, cx.now())
    }

    /// Stores every record this node publishes again now, signed anew (the addresses it can
    /// be dialed at changed).
    pub(super) fn republish_all(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        for p in self.published.values_mut() {
            p.next = now;
        }
        self.republish(cx);
    }
}
