//! The DHT state machine: answers peers' requests, runs this node's operations, keeps records
//! alive. It never touches a link: it names the node to send each frame to, and the node it
//! lives in finds or dials the link (and reports back whether that node could be reached).

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::config::DhtConfig;
use super::lookup::{Found, Lookup};
use super::store::{Record, RecordStore, StoreLimits};
use super::table::{Contact, Insert, RoutingTable};
use crate::config::MAX_LISTEN_ADDRS;
use crate::id::NodeId;
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use crate::wire::{
    Ack, DhtRefusal, FindNode, FindValue, Frame, KeyBytes, Nodes, Records, Refused, Store,
    WireContact, WireRecord, Withdraw,
};

/// Identifies one DHT operation of this node (a lookup, get, put, provide or withdraw).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Why an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DhtError {
    /// The routing table is empty: join the mesh first.
    NoPeers,
    /// The operation ran past `lookup_timeout`.
    Timeout,
    /// `max_operations` are under way.
    Busy,
    /// The value is over `max_value_size`.
    ValueTooLarge,
    /// `max_published` records are published already.
    TooManyPublished,
}

impl core::fmt::Display for DhtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DhtError::NoPeers => "no peers in the routing table (join the mesh first)",
            DhtError::Timeout => {
                "no answer within dht.lookup_timeout: check that the node has peers in the mesh"
            }
            DhtError::Busy => "max_operations DHT operations are under way: wait for one to finish",
            DhtError::ValueTooLarge => {
                "the value is larger than max_value_size: store a smaller value or a reference"
            }
            DhtError::TooManyPublished => {
                "max_published records are published already: withdraw one first"
            }
        })
    }
}

/// The outcome of an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DhtEvent {
    /// A find-node lookup finished.
    NodesFound {
        /// The operation.
        op: OpId,
        /// The closest nodes that answered, closest first.
        closest: Vec<(NodeId, SocketAddr)>,
        /// Hops to the closest one.
        hops: u8,
        /// Queries the lookup sent.
        queries: u32,
        /// How long it took.
        elapsed: Duration,
    },
    /// A get or find-providers finished; `records` is empty if none was found.
    Got {
        /// The operation.
        op: OpId,
        /// The records found.
        records: Vec<Record>,
    },
    /// A put, provide or withdraw finished: `acks` of the closest nodes confirmed it.
    Stored {
        /// The operation.
        op: OpId,
        /// How many nodes acknowledged.
        acks: usize,
    },
    /// An operation failed.
    Failed {
        /// The operation.
        op: OpId,
        /// Why.
        error: DhtError,
    },
}

impl DhtEvent {
    /// The operation this is the outcome of.
    pub fn op(&self) -> OpId {
        match self {
            DhtEvent::NodesFound { op, .. }
            | DhtEvent::Got { op, .. }
            | DhtEvent::Stored { op, .. }
            | DhtEvent::Failed { op, .. } => *op,
        }
    }
}

/// What the DHT asks of the node it lives in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send {
    /// The node to send to (dial it at `addr` if there is no link).
    pub to: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The frame.
    pub frame: Frame,
}

/// DHT counters and figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DhtStats {
    /// Lookups finished (every operation starts with one).
    pub lookups: u64,
    /// Lookups that found at least one node that answered.
    pub lookups_ok: u64,
    /// Lookups by hops to the closest node found (index 15 holds 15 and more).
    pub hops: [u64; 16],
    /// Queries sent by the lookups finished.
    pub lookup_queries: u64,
    /// Time the lookups finished took, summed.
    pub lookup_time: Duration,
    /// Requests this node sent.
    pub requests_sent: u64,
    /// Its requests that timed out or could not be delivered.
    pub requests_failed: u64,
    /// Requests peers sent us.
    pub requests_received: u64,
    /// Peers' requests refused for their rate.
    pub rate_limited: u64,
    /// Peers' records stored.
    pub stores_accepted: u64,
    /// Peers' records refused (bounds or publisher).
    pub stores_refused: u64,
    /// Answers that matched no request of ours (late, or not for us).
    pub stray_answers: u64,
}

impl DhtStats {
    /// Lookups that found someone, over lookups finished (1 when none finished).
    pub fn success_ratio(&self) -> f64 {
        if self.lookups == 0 {
            1.0
        } else {
            self.lookups_ok as f64 / self.lookups as f64
        }
    }
}

#[derive(Debug)]
enum Goal {
    /// Find the closest nodes and report them.
    FindNode,
    /// Find records under the key.
    Get,
    /// Store the record at the closest nodes.
    Put(Record),
    /// Withdraw our record from the closest nodes.
    Withdraw,
    /// The lookup of the own id on joining; when it ends, every bucket is refreshed.
    Join,
    /// A lookup of a random id in one bucket; when it ends, the next bucket due is refreshed.
    Refresh,
}

#[derive(Debug)]
struct Op {
    goal: Goal,
    lookup: Lookup,
    started: Instant,
    deadline: Instant,
    /// Once the lookup is done, for puts and withdraws: answers awaited and acks got.
    storing: Option<(usize, usize)>,
    /// Records found by a get.
    records: Vec<Record>,
}

#[derive(Debug)]
struct Request {
    to: NodeId,
    addr: SocketAddr,
    op: Option<OpId>,
    deadline: Instant,
    /// The request as sent, for sending again if its link is replaced.
    frame: Frame,
}

#[derive(Debug)]
struct TokenBucket {
    /// In thousandths of a request.
    tokens: u64,
    at: Instant,
}

/// A record this node publishes, stored again every `republish_interval`.
#[derive(Debug)]
struct Published {
    value: Vec<u8>,
    next: Instant,
}

/// The DHT: a routing table, a record store, and this node's operations under way.
#[derive(Debug)]
pub struct Dht {
    config: DhtConfig,
    own: NodeId,
    own_addrs: Vec<SocketAddr>,
    rng: Rng,
    table: RoutingTable,
    store: RecordStore,
    ops: BTreeMap<OpId, Op>,
    requests: BTreeMap<u64, Request>,
    /// (deadline, correlation id) of every request.
    request_deadlines: BTreeSet<(Instant, u64)>,
    /// (deadline, op) of every operation.
    op_deadlines: BTreeSet<(Instant, OpId)>,
    limits: BTreeMap<NodeId, TokenBucket>,
    published: BTreeMap<KeyBytes, Published>,
    /// The earliest `next` among `published` (`NEVER` if none), kept for `poll_timeout`.
    next_publish: Instant,
    /// When each bucket was last looked into.
    refreshed: Vec<Option<Instant>>,
    next_refresh: Instant,
    /// Buckets due for a refresh lookup; one runs at a time, so a refresh of every bucket
    /// (after joining) does not open links to hundreds of nodes at once.
    refresh_due: Vec<usize>,
    refreshing: bool,
    next_id: u64,
    sends: VecDeque<Send>,
    events: VecDeque<DhtEvent>,
    stats: DhtStats,
}

impl Dht {
    /// The DHT of node `own`, listening on `own_addrs`, its randomness from `seed`.
    pub fn new(
        config: DhtConfig,
        own: NodeId,
        own_addrs: Vec<SocketAddr>,
        seed: u64,
        now: Instant,
    ) -> Self {
        let table = RoutingTable::new(own, config.k, config.replacement_cache, config.diversity);
        let store = RecordStore::new(StoreLimits {
            max_records: config.max_records,
            max_providers_per_key: config.max_providers_per_key,
            max_value_size: config.max_value_size,
            max_addrs: MAX_LISTEN_ADDRS,
        });
        let next_refresh = now + config.refresh_interval;
        Dht {
            config,
            own,
            own_addrs,
            rng: Rng::from_seed(seed),
            table,
            store,
            ops: BTreeMap::new(),
            requests: BTreeMap::new(),
            request_deadlines: BTreeSet::new(),
            op_deadlines: BTreeSet::new(),
            limits: BTreeMap::new(),
            published: BTreeMap::new(),
            next_publish: Instant::NEVER,
            refreshed: Vec::new(),
            next_refresh,
            refresh_due: Vec::new(),
            refreshing: false,
            next_id: 1,
            sends: VecDeque::new(),
            events: VecDeque::new(),
            stats: DhtStats::default(),
        }
    }

    // ------------------------------------------------------------------ getters

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The record store.
    pub fn store(&self) -> &RecordStore {
        &self.store
    }

    /// Counters.
    pub fn stats(&self) -> &DhtStats {
        &self.stats
    }

    /// Operations under way.
    pub fn operations(&self) -> usize {
        self.ops.len()
    }

    /// Requests awaiting an answer.
    pub fn requests_in_flight(&self) -> usize {
        self.requests.len()
    }

    // ------------------------------------------------------------------ commands

    /// Finds the nodes closest to `target`.
    pub fn find_node(&mut self, target: KeyBytes, now: Instant) -> OpId {
        self.start(Goal::FindNode, target, now)
    }

    /// Finds the records under `key`.
    pub fn get(&mut self, key: KeyBytes, now: Instant) -> OpId {
        self.start(Goal::Get, key, now)
    }

    /// Publishes `value` under `key` at the closest nodes, and again every
    /// `republish_interval` until withdrawn.
    pub fn put(&mut self, key: KeyBytes, value: Vec<u8>, now: Instant) -> OpId {
        if value.len() > self.config.max_value_size {
            return self.refuse(DhtError::ValueTooLarge);
        }
        if !self.published.contains_key(&key) && self.published.len() >= self.config.max_published {
            return self.refuse(DhtError::TooManyPublished);
        }
        self.published.insert(
            key,
            Published {
                value: value.clone(),
                next: now + self.config.republish_interval,
            },
        );
        self.update_next_publish();
        let record = self.own_record(value, now);
        self.start(Goal::Put(record), key, now)
    }

    /// Withdraws this node's record under `key` from the closest nodes and stops republishing.
    pub fn withdraw(&mut self, key: KeyBytes, now: Instant) -> OpId {
        self.published.remove(&key);
        self.update_next_publish();
        let own = self.own;
        self.store.withdraw(&key, &own);
        self.start(Goal::Withdraw, key, now)
    }

    /// Joins: looks up our own id (which fills the buckets near us and makes us known there),
    /// then refreshes every bucket, one lookup at a time, to fill the far ones.
    pub fn bootstrap(&mut self, now: Instant) {
        let own = self.own.0;
        self.start(Goal::Join, own, now);
    }

    // ------------------------------------------------------------------ inputs

    /// A peer's handshake completed; `addr` is where it listens.
    pub fn peer_up(&mut self, peer: NodeId, addr: SocketAddr, now: Instant) {
        let contact = Contact {
            id: peer,
            addr,
            last_seen: now,
        };
        let was_empty = self.table.is_empty();
        if let Insert::Pending { oldest } = self.table.insert(contact) {
            // Is the oldest contact of the full bucket still there? Ask it something.
            if let Some(c) = self.table.get(&oldest).copied() {
                if !self.requests.values().any(|r| r.to == oldest) {
                    let target = self.own.0;
                    self.request(c.id, c.addr, None, now, |id| {
                        Frame::FindNode(FindNode { id, target })
                    });
                }
            }
        }
        if was_empty && !self.table.is_empty() && self.config.join {
            self.bootstrap(now);
        }
    }

    /// A peer's link went away: its answers can't come any more, and its rate state goes.
    pub fn peer_down(&mut self, peer: &NodeId, now: Instant) {
        self.limits.remove(peer);
        self.fail_requests_to(peer, now, true);
    }

    /// `peer` closed its link with a clean goodbye (it was idle on its side, or it leaves): its
    /// rate state goes, and requests still awaiting its answer are sent again, which dials it
    /// anew. A peer that is really gone then fails that dial and leaves the table.
    pub fn peer_left_cleanly(&mut self, peer: &NodeId) {
        self.limits.remove(peer);
        self.relinked(peer);
    }

    /// `peer` could not be reached at all (the dial failed): it leaves the table.
    pub fn unreachable(&mut self, peer: &NodeId, now: Instant) {
        self.table.remove(peer);
        self.fail_requests_to(peer, now, true);
    }

    /// The link to `peer` was replaced by another (two links crossed, one was closed): what was
    /// in flight on the closed one may be lost, so every request awaiting `peer`'s answer is sent
    /// again (requests are idempotent; a second answer counts as a stray one).
    pub fn relinked(&mut self, peer: &NodeId) {
        for req in self.requests.values().filter(|r| r.to == *peer) {
            self.sends.push_back(Send {
                to: req.to,
                addr: req.addr,
                frame: req.frame.clone(),
            });
        }
    }

    /// This node could not send to `peer` for reasons of its own (no room for another link):
    /// the requests to it fail, but it stays in the table.
    pub fn undeliverable(&mut self, peer: &NodeId, now: Instant) {
        self.fail_requests_to(peer, now, false);
    }

    /// A DHT frame from established peer `from`. Returns `false` for frames that are not the
    /// DHT's.
    pub fn handle_frame(
        &mut self,
        from: &NodeId,
        from_addr: SocketAddr,
        frame: Frame,
        now: Instant,
    ) -> bool {
        match frame {
            frame if frame.is_dht_request() => self.handle_request(from, from_addr, frame, now),
            Frame::Nodes(Nodes { id, nodes }) => {
                self.handle_answer(from, id, Answer::Nodes(nodes, Vec::new()), now);
            }
            Frame::Records(Records { id, records, nodes }) => {
                self.handle_answer(from, id, Answer::Nodes(nodes, records), now);
            }
            Frame::Ack(Ack { id }) => self.handle_answer(from, id, Answer::Ack, now),
            Frame::Refused(Refused { id, .. }) => {
                self.handle_answer(from, id, Answer::Refused, now)
            }
            _ => return false,
        }
        true
    }

    /// Time passed: request and operation timeouts, record expiry, republishing, refreshes.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, corr)) = self.request_deadlines.first() {
            if at > now {
                break;
            }
            self.request_deadlines.pop_first();
            if let Some(req) = self.requests.remove(&corr) {
                self.request_failed(req, now, true);
            }
        }
        while let Some(&(at, op)) = self.op_deadlines.first() {
            if at > now {
                break;
            }
            self.op_deadlines.pop_first();
            self.finish(op, Some(DhtError::Timeout), now);
        }
        self.store.expire(now);
        let due: Vec<KeyBytes> = if self.next_publish <= now {
            self.published
                .iter()
                .filter(|(_, p)| p.next <= now)
                .map(|(k, _)| *k)
                .collect()
        } else {
            Vec::new()
        };
        for key in due {
            let interval = self.config.republish_interval;
            let Some(p) = self.published.get_mut(&key) else {
                continue;
            };
            p.next = now + interval;
            let value = p.value.clone();
            let record = self.own_record(value, now);
            self.start(Goal::Put(record), key, now);
        }
        self.update_next_publish();
        if now >= self.next_refresh {
            self.next_refresh = now + self.config.refresh_interval;
            self.refresh(now);
        }
    }

    // ------------------------------------------------------------------ outputs

    /// The next frame to send.
    pub fn poll_send(&mut self) -> Option<Send> {
        self.sends.pop_front()
    }

    /// The next outcome.
    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }

    /// When [`Dht::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let publish = Some(self.next_publish).filter(|t| *t != Instant::NEVER);
        [
            self.request_deadlines.first().map(|(at, _)| *at),
            self.op_deadlines.first().map(|(at, _)| *at),
            self.store.next_expiry(),
            publish,
            Some(self.next_refresh),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ------------------------------------------------------------------ internals

    fn update_next_publish(&mut self) {
        self.next_publish = self
            .published
            .values()
            .map(|p| p.next)
            .min()
            .unwrap_or(Instant::NEVER);
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn own_record(&self, value: Vec<u8>, now: Instant) -> Record {
        Record {
            publisher: self.own,
            addrs: self
                .own_addrs
                .iter()
                .take(MAX_LISTEN_ADDRS)
                .copied()
                .collect(),
            value,
            expires: now + self.config.record_ttl,
        }
    }

    fn refuse(&mut self, error: DhtError) -> OpId {
        let op = OpId(self.new_id());
        self.events.push_back(DhtEvent::Failed { op, error });
        op
    }

    fn start(&mut self, goal: Goal, target: KeyBytes, now: Instant) -> OpId {
        if self.ops.len() >= self.config.max_operations {
            return self.refuse(DhtError::Busy);
        }
        let op = OpId(self.new_id());
        let seeds = self
            .table
            .closest(&NodeId(target), self.config.k)
            .into_iter()
            .map(|c| (c.id, c.addr));
        let lookup = Lookup::new(self.own, target, self.config.k, self.config.alpha, seeds);
        if let Some(slot) = self
            .refreshed
            .get_mut(self.table.bucket_of(&NodeId(target)))
        {
            *slot = Some(now);
        }
        let deadline = now + self.config.lookup_timeout;
        self.ops.insert(
            op,
            Op {
                goal,
                lookup,
                started: now,
                deadline,
                storing: None,
                records: Vec::new(),
            },
        );
        self.op_deadlines.insert((deadline, op));
        self.drive(op, now);
        op
    }

    /// Sends what an operation's lookup wants next, or moves it on once the lookup is done.
    fn drive(&mut self, op_id: OpId, now: Instant) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        if let Some((waiting, _)) = op.storing {
            if waiting == 0 {
                self.finish(op_id, None, now);
            }
            return;
        }
        let get = matches!(op.goal, Goal::Get);
        let target = op.lookup.target();
        for (to, addr) in op.lookup.next_queries() {
            self.request(to, addr, Some(op_id), now, |id| {
                if get {
                    Frame::FindValue(FindValue { id, key: target })
                } else {
                    Frame::FindNode(FindNode { id, target })
                }
            });
        }
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let got_records = get && !op.records.is_empty();
        if !op.lookup.is_done() && !got_records {
            return;
        }
        let found = op.lookup.found();
        let elapsed = now.saturating_duration_since(op.started);
        self.count_lookup(&found, elapsed);
        if found.closest.is_empty() {
            // Nobody answered: nothing to store at, nothing found (`NoPeers`).
            self.finish(op_id, None, now);
            return;
        }
        let op = self.ops.get_mut(&op_id).expect("checked above");
        match &op.goal {
            Goal::Put(record) => {
                let wire = record.to_wire(now);
                op.storing = Some((found.closest.len(), 0));
                for (to, addr) in found.closest {
                    let record = wire.clone();
                    self.request(to, addr, Some(op_id), now, |id| {
                        Frame::Store(Store {
                            id,
                            key: target,
                            record,
                        })
                    });
                }
                self.drive(op_id, now);
            }
            Goal::Withdraw => {
                op.storing = Some((found.closest.len(), 0));
                for (to, addr) in found.closest {
                    self.request(to, addr, Some(op_id), now, |id| {
                        Frame::Withdraw(Withdraw { id, key: target })
                    });
                }
                self.drive(op_id, now);
            }
            _ => self.finish(op_id, None, now),
        }
    }

    fn count_lookup(&mut self, found: &Found, elapsed: Duration) {
        self.stats.lookups += 1;
        self.stats.lookup_queries += u64::from(found.queries);
        self.stats.lookup_time = self.stats.lookup_time + elapsed;
        if !found.closest.is_empty() {
            self.stats.lookups_ok += 1;
            self.stats.hops[usize::from(found.hops).min(15)] += 1;
        }
    }

    /// Ends an operation with its event (or `error`).
    fn finish(&mut self, op_id: OpId, error: Option<DhtError>, now: Instant) {
        let Some(op) = self.ops.remove(&op_id) else {
            return;
        };
        self.op_deadlines.remove(&(op.deadline, op_id));
        // Its requests still in flight answer nothing now.
        for req in self.requests.values_mut() {
            if req.op == Some(op_id) {
                req.op = None;
            }
        }
        let found = op.lookup.found();
        self.next_bucket_refresh(now);
        let event = match (op.goal, error) {
            (Goal::Join, _) => {
                self.refreshed.clear();
                self.refresh(now);
                return;
            }
            (Goal::Refresh, _) => {
                self.refreshing = false;
                self.next_bucket_refresh(now);
                return;
            }
            (_, Some(error)) => DhtEvent::Failed { op: op_id, error },
            (_, None)
                if found.closest.is_empty() && op.records.is_empty() && op.storing.is_none() =>
            {
                DhtEvent::Failed {
                    op: op_id,
                    error: DhtError::NoPeers,
                }
            }
            (Goal::FindNode, None) => DhtEvent::NodesFound {
                op: op_id,
                closest: found.closest,
                hops: found.hops,
                queries: found.queries,
                elapsed: now.saturating_duration_since(op.started),
            },
            (Goal::Get, None) => DhtEvent::Got {
                op: op_id,
                records: op.records,
            },
            (Goal::Put(_) | Goal::Withdraw, None) => DhtEvent::Stored {
                op: op_id,
                acks: op.storing.map_or(0, |(_, acks)| acks),
            },
        };
        self.events.push_back(event);
    }

    fn request(
        &mut self,
        to: NodeId,
        addr: SocketAddr,
        op: Option<OpId>,
        now: Instant,
        frame: impl FnOnce(u64) -> Frame,
    ) {
        let id = self.new_id();
        let deadline = now + self.config.request_timeout;
        let frame = frame(id);
        self.requests.insert(
            id,
            Request {
                to,
                addr,
                op,
                deadline,
                frame: frame.clone(),
            },
        );
        self.request_deadlines.insert((deadline, id));
        self.stats.requests_sent += 1;
        self.sends.push_back(Send { to, addr, frame });
    }

    fn fail_requests_to(&mut self, peer: &NodeId, now: Instant, forget: bool) {
        let failed: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.to == *peer)
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            if let Some(req) = self.requests.remove(&id) {
                self.request_deadlines.remove(&(req.deadline, id));
                self.request_failed(req, now, forget);
            }
        }
    }

    /// A request got no answer; `forget` removes its addressee from the table (it timed out or
    /// its link failed, so it is most likely gone).
    fn request_failed(&mut self, req: Request, now: Instant, forget: bool) {
        self.stats.requests_failed += 1;
        if forget {
            self.table.remove(&req.to);
        }
        match req.op {
            None => {}
            Some(op_id) => {
                let Some(op) = self.ops.get_mut(&op_id) else {
                    return;
                };
                match &mut op.storing {
                    Some((waiting, _)) => *waiting = waiting.saturating_sub(1),
                    None => op.lookup.failed(&req.to),
                }
                self.drive(op_id, now);
            }
        }
    }

    fn handle_answer(&mut self, from: &NodeId, id: u64, answer: Answer, now: Instant) {
        let matches = self.requests.get(&id).is_some_and(|r| r.to == *from);
        if !matches {
            self.stats.stray_answers += 1;
            return;
        }
        let req = self.requests.remove(&id).expect("checked above");
        self.request_deadlines.remove(&(req.deadline, id));
        self.table.seen(from, now);
        let Some(op_id) = req.op else {
            return;
        };
        let max_ttl = self.config.record_ttl;
        let max_records = self.config.max_providers_per_key;
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        match answer {
            Answer::Nodes(nodes, records) if op.storing.is_none() => {
                let k = self.config.k;
                let nodes = nodes
                    .into_iter()
                    .take(k)
                    .map(|c| (c.id, SocketAddr::from(c.addr)));
                op.lookup.answered(from, nodes);
                if matches!(op.goal, Goal::Get) {
                    for r in records.into_iter().take(max_records) {
                        let r = Record::from_wire(r, now, max_ttl);
                        if !op.records.iter().any(|x| x.publisher == r.publisher) {
                            op.records.push(r);
                        }
                    }
                }
            }
            Answer::Ack if op.storing.is_some() => {
                if let Some((waiting, acks)) = &mut op.storing {
                    *waiting = waiting.saturating_sub(1);
                    *acks += 1;
                }
            }
            // A refusal, or an answer of the wrong kind (an `Ack` to a lookup, `Nodes` to a
            // store): that query failed, and the operation goes on without it.
            _ => match &mut op.storing {
                Some((waiting, _)) => *waiting = waiting.saturating_sub(1),
                None => op.lookup.failed(from),
            },
        }
        self.drive(op_id, now);
    }

    fn handle_request(&mut self, from: &NodeId, from_addr: SocketAddr, frame: Frame, now: Instant) {
        self.stats.requests_received += 1;
        let id = match &frame {
            Frame::FindNode(f) => f.id,
            Frame::FindValue(f) => f.id,
            Frame::Store(s) => s.id,
            Frame::Withdraw(w) => w.id,
            _ => return,
        };
        if !self.allow(from, now) {
            self.stats.rate_limited += 1;
            self.reply(
                from,
                from_addr,
                Frame::Refused(Refused {
                    id,
                    reason: DhtRefusal::RateLimited,
                }),
            );
            return;
        }
        let answer = match frame {
            Frame::FindNode(FindNode { id, target }) => Frame::Nodes(Nodes {
                id,
                nodes: self.closest_wire(&target),
            }),
            Frame::FindValue(FindValue { id, key }) => Frame::Records(Records {
                id,
                records: self
                    .store
                    .get(&key, now)
                    .take(self.config.max_providers_per_key)
                    .map(|r| r.to_wire(now))
                    .collect(),
                nodes: self.closest_wire(&key),
            }),
            Frame::Store(Store { id, key, record }) => {
                let result = if record.publisher != *from {
                    Err(DhtRefusal::NotPublisher)
                } else {
                    self.store
                        .put(key, Record::from_wire(record, now, self.config.record_ttl))
                };
                match result {
                    Ok(()) => {
                        self.stats.stores_accepted += 1;
                        Frame::Ack(Ack { id })
                    }
                    Err(reason) => {
                        self.stats.stores_refused += 1;
                        Frame::Refused(Refused { id, reason })
                    }
                }
            }
            Frame::Withdraw(Withdraw { id, key }) => {
                self.store.withdraw(&key, from);
                Frame::Ack(Ack { id })
            }
            _ => return,
        };
        self.reply(from, from_addr, answer);
    }

    fn reply(&mut self, to: &NodeId, addr: SocketAddr, frame: Frame) {
        self.sends.push_back(Send {
            to: *to,
            addr,
            frame,
        });
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

    /// Takes one request's worth from `peer`'s token bucket.
    fn allow(&mut self, peer: &NodeId, now: Instant) -> bool {
        let rate = u64::from(self.config.peer_request_rate);
        let burst = u64::from(self.config.peer_request_burst) * 1000;
        let bucket = self.limits.entry(*peer).or_insert(TokenBucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_micros();
        bucket.tokens = (bucket.tokens + elapsed.saturating_mul(rate) / 1000).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1000 {
            bucket.tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Queues a lookup of a random id in every bucket no lookup has touched for
    /// `refresh_interval`, farthest bucket first.
    fn refresh(&mut self, now: Instant) {
        let buckets = self.table.bucket_count();
        self.refreshed.resize(buckets, None);
        self.refresh_due = (0..buckets)
            .rev()
            .filter(|i| !self.fresh(*i, now))
            .collect();
        self.next_bucket_refresh(now);
    }

    /// Whether a lookup touched bucket `index` within `refresh_interval`.
    fn fresh(&self, index: usize, now: Instant) -> bool {
        self.refreshed
            .get(index)
            .copied()
            .flatten()
            .is_some_and(|at| now.saturating_duration_since(at) < self.config.refresh_interval)
    }

    /// Starts the next queued bucket refresh, unless one is running.
    fn next_bucket_refresh(&mut self, now: Instant) {
        // With every operation slot taken, the queue waits for one to finish.
        if self.refreshing || self.ops.len() >= self.config.max_operations {
            return;
        }
        while let Some(index) = self.refresh_due.pop() {
            // A lookup since it was queued may have refreshed it already.
            if self.fresh(index, now) || index >= self.table.bucket_count() {
                continue;
            }
            let target = self.random_id_in_bucket(index);
            self.refreshing = true;
            self.start(Goal::Refresh, target, now);
            return;
        }
    }

    /// A random id sharing exactly `index` leading bits with ours.
    fn random_id_in_bucket(&mut self, index: usize) -> KeyBytes {
        let mut id = [0u8; 32];
        self.rng.fill(&mut id);
        for bit in 0..=index.min(255) {
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            let own = self.own.0[byte] & mask;
            let want = if bit == index { !own & mask } else { own };
            id[byte] = (id[byte] & !mask) | want;
        }
        id
    }
}

enum Answer {
    Nodes(Vec<WireContact>, Vec<WireRecord>),
    Ack,
    Refused,
}
