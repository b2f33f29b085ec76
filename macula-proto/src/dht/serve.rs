//! How the DHT answers its peers: rate limits, closest contacts, pages of records, stores.

use alloc::vec::Vec;

use super::machine::Dht;
use super::messages::{
    Ack, DhtMessage, DhtRefusal, FindNode, FindValue, Nodes, Records, Refused, Store, WireContact,
    Withdraw,
};
use super::store::Record;
use crate::id::NodeId;
use crate::node::subsystem::{Cx, Peer};
use crate::rate::Limit;
use crate::time::Instant;
use crate::wire::KeyBytes;

/// Most peers whose request rate is remembered; past it the longest-idle one is forgotten
/// (its bucket has refilled by then, so forgetting it changes nothing).
pub(super) const MAX_RATE_STATES: usize = 4096;

/// Bytes of records in one page of an answer.
const PAGE_BYTES: usize = 32 * 1024;

impl Dht {
    pub(super) fn handle_request(&mut self, from: Peer, message: DhtMessage, cx: &mut Cx<'_>) {
        self.stats.requests_received += 1;
        let now = cx.now();
        let id = message.id();
        if !self.allow(&from.id, now) {
            self.stats.rate_limited += 1;
            let refused = DhtMessage::Refused(Refused {
                id,
                reason: DhtRefusal::RateLimited,
            });
            cx.reply(from.id, &refused);
            return;
        }
        let answer = match message {
            DhtMessage::FindNode(FindNode { id, target }) => DhtMessage::Nodes(Nodes {
                id,
                nodes: self.closest_wire(&target),
            }),
            DhtMessage::FindValue(FindValue { id, key, after }) => {
                let (records, more) = self.page(&key, after, PAGE_BYTES, now);
                DhtMessage::Records(Records {
                    id,
                    records: records.iter().map(|r| r.to_wire(now)).collect(),
                    nodes: self.closest_wire(&key),
                    more,
                })
            }
            DhtMessage::Store(Store { id, key, record }) => {
                let result = if NodeId::from_public_key(&record.publisher_key) != from.id {
                    Err(DhtRefusal::NotPublisher)
                } else {
                    Record::from_wire(record, &key, now, self.config.record_ttl)
                        .and_then(|record| self.store.put(key, record))
                };
                match result {
                    Ok(()) => {
                        self.stats.stores_accepted += 1;
                        #[cfg(feature = "planted-bugs")]
                        if self.config.planted_drop_store_acks && id % 10 == 0 {
                            return;
                        }
                        DhtMessage::Ack(Ack { id })
                    }
                    Err(reason) => {
                        self.stats.stores_refused += 1;
                        DhtMessage::Refused(Refused { id, reason })
                    }
                }
            }
            DhtMessage::Withdraw(Withdraw { id, key }) => {
                self.store.withdraw(&key, &from.id);
                DhtMessage::Ack(Ack { id })
            }
            _ => return,
        };
        cx.reply(from.id, &answer);
    }

    /// The records under `key` after publisher `after`, in publisher order, this node's own
    /// among them, up to `budget` bytes (at least one record); and whether more follow.
    pub(super) fn page(
        &self,
        key: &KeyBytes,
        after: Option<NodeId>,
        budget: usize,
        now: Instant,
    ) -> (Vec<Record>, bool) {
        let mut all: Vec<&Record> = self
            .store
            .get(key, after, now)
            .filter(|r| r.publisher != self.own)
            .collect();
        let own = self
            .published
            .get(key)
            .map(|p| &p.record)
            .filter(|r| after.map_or(true, |a| r.publisher > a) && r.expires > now);
        if let Some(own) = own {
            let at = all.partition_point(|r| r.publisher < own.publisher);
            all.insert(at, own);
        }
        let mut used = 0;
        let mut page = Vec::new();
        for record in all {
            if !page.is_empty() && used + record.wire_size() > budget {
                return (page, true);
            }
            used += record.wire_size();
            page.push(record.clone());
        }
        (page, false)
    }

    fn closest_wire(&self, target: &KeyBytes) -> Vec<WireContact> {
        self.table
            .closest(&NodeId(*target), self.config.k)
            .into_iter()
            .map(|c| WireContact {
                id: c.id,
                addr: c.addr.into(),
            })
            .collect()
    }

    /// Takes one request's worth from `peer`'s token bucket. Buckets outlive links (a peer
    /// that reconnects does not get a fresh burst); at most [`MAX_RATE_STATES`] are kept.
    fn allow(&mut self, peer: &NodeId, now: Instant) -> bool {
        let limit = Limit::per_second(
            self.config.peer_request_rate,
            self.config.peer_request_burst,
        );
        self.limits.take(*peer, now, &limit)
    }
}
