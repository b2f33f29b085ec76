//! The DHT state machine: answers peers' requests, runs operations, keeps records alive. It is
//! a [`Subsystem`]: it never touches a link, it names the node each message goes to and the
//! node finds or dials the link, and tells it when that node could not be reached.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::config::DhtConfig;
use super::lookup::{Found, Lookup};
use super::messages::{
    DhtMessage, FindNode, FindValue, Nodes, Records, Store, WireContact, WireRecord, Withdraw,
};
use super::serve::MAX_RATE_STATES;
use super::store::{Record, RecordStore, StoreLimits};
use super::table::{Contact, Insert, RoutingTable};
use super::types::{DhtAsk, DhtError, DhtEvent, DhtStats, OpId};
use crate::config::MAX_LISTEN_ADDRS;
use crate::id::NodeId;
use crate::node::subsystem::{
    Answer, Ask, Cx, Gone, Init, Peer, PeerChange, Subsystem, Ticket, Unreachable,
};
use crate::node::Event;
use crate::rate::Buckets;
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use crate::wire::{KeyBytes, ProtocolId};

mod publish;

#[derive(Debug)]
enum Goal {
    /// Find the closest nodes and report them.
    FindNode,
    /// Find records under the key: from the first node that has some (a value), or from
    /// every one of the closest nodes (`all`: providers, each announced at its own set of
    /// nodes).
    Get { all: bool },
    /// Store the record at the closest nodes.
    Put(Record),
    /// Withdraw our record from the closest nodes.
    Withdraw,
    /// The lookup of the own id on joining; when it ends, every bucket is refreshed.
    Join,
    /// A lookup of a random id in one bucket; when it ends, the next bucket due is refreshed.
    Refresh,
}

/// Who hears an operation's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The application, as an [`Event::Dht`].
    App,
    /// Nobody: the DHT's own upkeep (joining, refreshing, republishing).
    Internal,
    /// A sibling subsystem, as an [`Answer::Dht`].
    Sibling(ProtocolId, Ticket),
}

#[derive(Debug)]
struct Op {
    goal: Goal,
    owner: Owner,
    lookup: Lookup,
    started: Instant,
    deadline: Instant,
    /// Once the lookup is done, for puts and withdraws: answers awaited and acks got.
    storing: Option<(usize, usize)>,
    /// Records found by a get, the newest of each publisher.
    records: BTreeMap<NodeId, Record>,
    /// Whether a remote node answered a get with records.
    got_remote: bool,
    /// Follow-up pages of records awaited.
    pages: usize,
    /// Whether the lookup was counted in the stats.
    counted: bool,
}

#[derive(Debug)]
struct Request {
    to: NodeId,
    addr: SocketAddr,
    op: Option<OpId>,
    deadline: Instant,
    /// When its lookup stops counting on it (a lookup's query only).
    stall_at: Option<Instant>,
    /// A store of the operation's storing phase (else a query of its lookup, or a page).
    store: bool,
    /// A follow-up page of a `FindValue`: its answer only adds records.
    page: bool,
    /// The request as sent, for sending again if its link is replaced.
    message: DhtMessage,
}

/// How soon a republish that found no room for its operation tries again.
const REPUBLISH_RETRY: Duration = Duration::from_secs(1);

/// A record this node publishes, stored again every `republish_interval`.
#[derive(Debug)]
pub(super) struct Published {
    value: Vec<u8>,
    /// The record as last signed.
    pub(super) record: Record,
    next: Instant,
}

/// The DHT: a routing table, a record store, and this node's operations under way.
#[derive(Debug)]
pub struct Dht {
    pub(super) config: DhtConfig,
    pub(super) own: NodeId,
    rng: Rng,
    pub(super) table: RoutingTable,
    pub(super) store: RecordStore,
    ops: BTreeMap<OpId, Op>,
    requests: BTreeMap<u64, Request>,
    /// (addressee, correlation id) of every request.
    by_peer: BTreeSet<(NodeId, u64)>,
    /// (operation, correlation id) of every request of an operation.
    by_op: BTreeSet<(OpId, u64)>,
    /// (deadline, correlation id) of every request.
    request_deadlines: BTreeSet<(Instant, u64)>,
    /// (stall time, correlation id) of every lookup query not answered yet.
    stalls: BTreeSet<(Instant, u64)>,
    /// (deadline, op) of every operation.
    op_deadlines: BTreeSet<(Instant, OpId)>,
    /// Request rates of peers, kept across reconnects.
    pub(super) limits: Buckets<NodeId>,
    pub(super) published: BTreeMap<KeyBytes, Published>,
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
    /// The sequence number of the next record this node signs.
    next_seq: u64,
    pub(super) stats: DhtStats,
}

impl Subsystem for Dht {
    const PROTOCOL: ProtocolId = ProtocolId::DHT;
    const VERSION: u16 = 1;
    type Message = DhtMessage;

    fn new(init: &Init<'_>) -> Self {
        let config = init.config.dht.clone();
        let own = init.identity.node_id();
        let table = RoutingTable::new(own, config.k, config.replacement_cache, config.diversity);
        let store = RecordStore::new(StoreLimits {
            max_records: config.max_records,
            max_providers_per_key: config.max_providers_per_key,
            max_records_per_publisher: config.max_records_per_publisher,
            max_value_size: config.max_value_size,
            max_addrs: MAX_LISTEN_ADDRS,
        });
        let next_refresh = init.now + config.refresh_interval;
        Dht {
            config,
            own,
            rng: Rng::from_seed(init.seed),
            table,
            store,
            ops: BTreeMap::new(),
            requests: BTreeMap::new(),
            by_peer: BTreeSet::new(),
            by_op: BTreeSet::new(),
            request_deadlines: BTreeSet::new(),
            stalls: BTreeSet::new(),
            op_deadlines: BTreeSet::new(),
            limits: Buckets::new(MAX_RATE_STATES),
            published: BTreeMap::new(),
            next_publish: Instant::NEVER,
            refreshed: Vec::new(),
            next_refresh,
            refresh_due: Vec::new(),
            refreshing: false,
            next_id: 1,
            next_seq: init.config.start_epoch.saturating_mul(1 << 20),
            stats: DhtStats::default(),
        }
    }

    fn on_peer(&mut self, change: PeerChange, cx: &mut Cx<'_>) {
        match change {
            PeerChange::Up { peer, contact } => {
                // Only a peer that listens somewhere can be a contact for others.
                if let Some(addr) = contact {
                    self.peer_up(peer, addr, cx);
                }
            }
            PeerChange::Down { peer, why } => match why {
                Gone::Lost => self.fail_requests_to(&peer, true, cx),
                // The peer closed a link idle on its side while our request was on its way,
                // or this node closed it for room: the peer is fine, and the requests go
                // again over a new link.
                Gone::Goodbye | Gone::Closed => self.resend_to(&peer, cx),
            },
            PeerChange::Relinked { peer } => self.resend_to(&peer, cx),
            PeerChange::Unreachable { peer, why } => match why {
                Unreachable::DialFailed | Unreachable::NotSpoken => {
                    self.table.remove(&peer);
                    self.fail_requests_to(&peer, true, cx);
                }
                // This node's own reasons: the requests fail, the contact stays.
                Unreachable::NoRoom => self.fail_requests_to(&peer, false, cx),
            },
            // The DHT sends no data.
            PeerChange::Writable { .. } => {}
        }
    }

    fn on_message(&mut self, from: Peer, message: DhtMessage, cx: &mut Cx<'_>) {
        if message.is_request() {
            self.handle_request(from, message, cx);
            return;
        }
        let id = message.id();
        let answer = match message {
            DhtMessage::Nodes(Nodes { nodes, .. }) => Reply::Nodes(nodes, Vec::new(), false),
            DhtMessage::Records(Records {
                records,
                nodes,
                more,
                ..
            }) => Reply::Nodes(nodes, records, more),
            DhtMessage::Ack(_) => Reply::Ack,
            _ => Reply::Refused,
        };
        self.handle_answer(&from.id, id, answer, cx);
    }

    fn on_timeout(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        while let Some(&(at, corr)) = self.stalls.first() {
            if at > now {
                break;
            }
            self.stalls.pop_first();
            self.stalled(corr, cx);
        }
        while let Some(&(at, corr)) = self.request_deadlines.first() {
            if at > now {
                break;
            }
            self.request_deadlines.pop_first();
            if let Some(req) = self.take_request(corr) {
                self.request_failed(req, true, cx);
            }
        }
        while let Some(&(at, op)) = self.op_deadlines.first() {
            if at > now {
                break;
            }
            self.op_deadlines.pop_first();
            self.finish(op, Some(DhtError::Timeout), cx);
        }
        self.store.expire(now);
        if self.next_publish <= now {
            self.republish(cx);
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.config.refresh_interval;
            self.refresh(cx);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let publish = Some(self.next_publish).filter(|t| *t != Instant::NEVER);
        [
            self.request_deadlines.first().map(|(at, _)| *at),
            self.stalls.first().map(|(at, _)| *at),
            self.op_deadlines.first().map(|(at, _)| *at),
            self.store.next_expiry(),
            publish,
            Some(self.next_refresh),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn stored(&self) -> usize {
        self.store.len()
    }

    fn on_ask(&mut self, asker: ProtocolId, ticket: Ticket, ask: Ask, cx: &mut Cx<'_>) {
        let owner = Owner::Sibling(asker, ticket);
        let Ask::Dht(ask) = ask;
        let _op = match ask {
            DhtAsk::FindNode(target) => self.find_node(target, owner, cx),
            DhtAsk::FindProviders(key) => self.get(key, true, owner, cx),
            DhtAsk::FindSomeProviders(key) => self.get(key, false, owner, cx),
            DhtAsk::Put(key, value) => self.put(key, value, owner, cx),
            DhtAsk::Withdraw(key) => self.withdraw(key, owner, cx),
            DhtAsk::Republish => return self.republish_all(cx),
        };
    }
}

impl Dht {
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

    /// Peers whose request rate is remembered (at most 4,096).
    pub fn rate_states(&self) -> usize {
        self.limits.len()
    }

    // ------------------------------------------------------------------ commands

    /// Finds the nodes closest to `target`.
    pub(crate) fn find_node(&mut self, target: KeyBytes, owner: Owner, cx: &mut Cx<'_>) -> OpId {
        self.start(Goal::FindNode, owner, target, cx)
    }

    /// Finds the records under `key`: this node's own and those it holds, and those of the
    /// nodes closest to the key.
    pub(crate) fn get(&mut self, key: KeyBytes, all: bool, owner: Owner, cx: &mut Cx<'_>) -> OpId {
        let local = self.page(&key, None, usize::MAX, cx.now()).0;
        let local = local.into_iter().map(|r| (r.publisher, r)).collect();
        self.start_with(Goal::Get { all }, owner, key, local, cx)
    }

    // ------------------------------------------------------------------ peers

    fn peer_up(&mut self, peer: NodeId, addr: SocketAddr, cx: &mut Cx<'_>) {
        let now = cx.now();
        let contact = Contact {
            id: peer,
            addr,
            last_seen: now,
        };
        let was_empty = self.table.is_empty();
        if let Insert::Pending { oldest } = self.table.insert(contact) {
            // Is the oldest contact of the full bucket still there? Ask it something.
            if let Some(c) = self.table.get(&oldest).copied() {
                if !self.has_requests_to(&oldest) {
                    let target = self.own.0;
                    self.request(c.id, c.addr, None, false, cx, |id| {
                        DhtMessage::FindNode(FindNode { id, target })
                    });
                }
            }
        }
        if was_empty && !self.table.is_empty() && self.config.join {
            // Join: look up our own id (which fills the buckets near us and makes us known
            // there), then refresh every bucket, one lookup at a time, to fill the far ones.
            let own = self.own.0;
            self.start(Goal::Join, Owner::Internal, own, cx);
        }
    }

    fn has_requests_to(&self, peer: &NodeId) -> bool {
        self.by_peer
            .range((*peer, 0)..=(*peer, u64::MAX))
            .next()
            .is_some()
    }

    fn requests_to(&self, peer: &NodeId) -> Vec<u64> {
        self.by_peer
            .range((*peer, 0)..=(*peer, u64::MAX))
            .map(|(_, id)| *id)
            .collect()
    }

    /// Sends every request awaiting `peer`'s answer again (requests are idempotent; a second
    /// answer counts as a stray one).
    fn resend_to(&mut self, peer: &NodeId, cx: &mut Cx<'_>) {
        for id in self.requests_to(peer) {
            if let Some(req) = self.requests.get(&id) {
                cx.send(req.to, Some(req.addr), &req.message);
            }
        }
    }

    /// The requests to `peer` fail; `forget` removes it from the table too.
    fn fail_requests_to(&mut self, peer: &NodeId, forget: bool, cx: &mut Cx<'_>) {
        for id in self.requests_to(peer) {
            if let Some(req) = self.take_request(id) {
                self.request_failed(req, forget, cx);
            }
        }
    }

    // ------------------------------------------------------------------ internals

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn refuse(&mut self, error: DhtError, owner: Owner, cx: &mut Cx<'_>) -> OpId {
        let op = OpId(self.new_id());
        tell(owner, DhtEvent::Failed { op, error }, cx);
        op
    }

    fn start(&mut self, goal: Goal, owner: Owner, target: KeyBytes, cx: &mut Cx<'_>) -> OpId {
        self.start_with(goal, owner, target, BTreeMap::new(), cx)
    }

    /// Starts an operation that already knows `records` (a get, this node's own).
    fn start_with(
        &mut self,
        goal: Goal,
        owner: Owner,
        target: KeyBytes,
        records: BTreeMap<NodeId, Record>,
        cx: &mut Cx<'_>,
    ) -> OpId {
        if self.ops.len() >= self.config.max_operations {
            return self.refuse(DhtError::Busy, owner, cx);
        }
        let now = cx.now();
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
                owner,
                lookup,
                started: now,
                deadline,
                storing: None,
                records,
                got_remote: false,
                pages: 0,
                counted: false,
            },
        );
        self.op_deadlines.insert((deadline, op));
        self.drive(op, cx);
        op
    }

    /// Sends what an operation's lookup wants next, or moves it on once the lookup is done.
    fn drive(&mut self, op_id: OpId, cx: &mut Cx<'_>) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        if let Some((waiting, _)) = op.storing {
            if waiting == 0 {
                self.finish(op_id, None, cx);
            }
            return;
        }
        let get = matches!(op.goal, Goal::Get { .. });
        let first_hit = matches!(op.goal, Goal::Get { all: false });
        let target = op.lookup.target();
        for (to, addr) in op.lookup.next_queries() {
            self.request(to, addr, Some(op_id), false, cx, |id| {
                if get {
                    DhtMessage::FindValue(FindValue {
                        id,
                        key: target,
                        after: None,
                    })
                } else {
                    DhtMessage::FindNode(FindNode { id, target })
                }
            });
        }
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        if op.pages > 0 || !(op.lookup.is_done() || (first_hit && op.got_remote)) {
            return;
        }
        let found = op.lookup.found();
        let elapsed = cx.now().saturating_duration_since(op.started);
        op.counted = true;
        self.count_lookup(&found, elapsed);
        let op = self.ops.get_mut(&op_id).expect("checked above");
        if found.closest.is_empty() {
            // Nobody answered: nothing to store at; a get has what this node holds.
            self.finish(op_id, None, cx);
            return;
        }
        let now = cx.now();
        match &op.goal {
            Goal::Put(record) => {
                let wire = record.to_wire(now);
                op.storing = Some((found.closest.len(), 0));
                for (to, addr) in found.closest {
                    let record = wire.clone();
                    self.request(to, addr, Some(op_id), false, cx, |id| {
                        DhtMessage::Store(Store {
                            id,
                            key: target,
                            record,
                        })
                    });
                }
                self.drive(op_id, cx);
            }
            Goal::Withdraw => {
                op.storing = Some((found.closest.len(), 0));
                for (to, addr) in found.closest {
                    self.request(to, addr, Some(op_id), false, cx, |id| {
                        DhtMessage::Withdraw(Withdraw { id, key: target })
                    });
                }
                self.drive(op_id, cx);
            }
            _ => self.finish(op_id, None, cx),
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

    /// Ends an operation with its outcome (or `error`).
    fn finish(&mut self, op_id: OpId, error: Option<DhtError>, cx: &mut Cx<'_>) {
        let Some(op) = self.ops.remove(&op_id) else {
            return;
        };
        self.op_deadlines.remove(&(op.deadline, op_id));
        if !op.counted {
            // It timed out before its lookup was done: a failed lookup.
            self.stats.lookups += 1;
        }
        // Its requests still in flight answer nothing now.
        let orphans: Vec<u64> = self
            .by_op
            .range((op_id, 0)..=(op_id, u64::MAX))
            .map(|(_, id)| *id)
            .collect();
        for id in orphans {
            self.by_op.remove(&(op_id, id));
            if let Some(req) = self.requests.get_mut(&id) {
                req.op = None;
            }
        }
        let found = op.lookup.found();
        let now = cx.now();
        self.next_bucket_refresh(cx);
        let event = match (op.goal, error) {
            (Goal::Join, _) => {
                self.refreshed.clear();
                self.refresh(cx);
                return;
            }
            (Goal::Refresh, _) => {
                self.refreshing = false;
                self.next_bucket_refresh(cx);
                return;
            }
            (_, Some(error)) => DhtEvent::Failed { op: op_id, error },
            (Goal::Get { .. }, None) if !op.records.is_empty() => DhtEvent::Got {
                op: op_id,
                records: op.records.into_values().collect(),
            },
            (_, None) if found.closest.is_empty() && op.storing.is_none() => DhtEvent::Failed {
                op: op_id,
                error: DhtError::NoPeers,
            },
            (Goal::FindNode, None) => DhtEvent::NodesFound {
                op: op_id,
                closest: found.closest,
                hops: found.hops,
                queries: found.queries,
                elapsed: now.saturating_duration_since(op.started),
            },
            (Goal::Get { .. }, None) => DhtEvent::Got {
                op: op_id,
                records: Vec::new(),
            },
            (Goal::Put(_) | Goal::Withdraw, None) => DhtEvent::Stored {
                op: op_id,
                acks: op.storing.map_or(0, |(_, acks)| acks),
            },
        };
        tell(op.owner, event, cx);
    }

    fn request(
        &mut self,
        to: NodeId,
        addr: SocketAddr,
        op: Option<OpId>,
        page: bool,
        cx: &mut Cx<'_>,
        message: impl FnOnce(u64) -> DhtMessage,
    ) {
        let id = self.new_id();
        let deadline = cx.now() + self.config.request_timeout;
        let storing = op
            .and_then(|o| self.ops.get(&o))
            .map(|o| o.storing.is_some());
        let stall_at =
            (storing == Some(false) && !page).then(|| cx.now() + self.config.stall_timeout);
        let store = storing == Some(true) && !page;
        let message = message(id);
        cx.send(to, Some(addr), &message);
        self.requests.insert(
            id,
            Request {
                to,
                addr,
                op,
                deadline,
                stall_at,
                store,
                page,
                message,
            },
        );
        if let Some(at) = stall_at {
            self.stalls.insert((at, id));
        }
        self.by_peer.insert((to, id));
        if let Some(op) = op {
            self.by_op.insert((op, id));
        }
        self.request_deadlines.insert((deadline, id));
        self.stats.requests_sent += 1;
    }

    /// Removes a request and its index entries.
    fn take_request(&mut self, id: u64) -> Option<Request> {
        let req = self.requests.remove(&id)?;
        self.by_peer.remove(&(req.to, id));
        if let Some(op) = req.op {
            self.by_op.remove(&(op, id));
        }
        self.request_deadlines.remove(&(req.deadline, id));
        if let Some(at) = req.stall_at {
            self.stalls.remove(&(at, id));
        }
        Some(req)
    }

    /// Lookup query `id` has not answered within the stall timeout: its lookup goes on
    /// without counting on it.
    fn stalled(&mut self, id: u64, cx: &mut Cx<'_>) {
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        req.stall_at = None;
        let (to, op_id) = (req.to, req.op);
        let Some(op_id) = op_id else {
            return;
        };
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        if op.storing.is_none() {
            self.stats.requests_stalled += 1;
            op.lookup.stalled(&to);
            self.drive(op_id, cx);
        }
    }

    /// A request got no answer; `forget` removes its addressee from the table (it timed out or
    /// its link failed, so it is most likely gone).
    fn request_failed(&mut self, req: Request, forget: bool, cx: &mut Cx<'_>) {
        self.stats.requests_failed += 1;
        if forget {
            self.table.remove(&req.to);
        }
        let Some(op_id) = req.op else {
            return;
        };
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        if req.page {
            op.pages -= 1;
        } else {
            match &mut op.storing {
                Some((waiting, _)) if req.store => *waiting = waiting.saturating_sub(1),
                // A stalled query of the lookup, which finished without it.
                Some(_) => return,
                None => op.lookup.failed(&req.to),
            }
        }
        self.drive(op_id, cx);
    }

    fn handle_answer(&mut self, from: &NodeId, id: u64, answer: Reply, cx: &mut Cx<'_>) {
        if !self.requests.get(&id).is_some_and(|r| r.to == *from) {
            self.stats.stray_answers += 1;
            return;
        }
        let req = self.take_request(id).expect("checked above");
        let now = cx.now();
        self.table.seen(from, now);
        let Some(op_id) = req.op else {
            return;
        };
        let max_ttl = self.config.record_ttl;
        let max_records = self.config.max_providers_per_key;
        let k = self.config.k;
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let key = op.lookup.target();
        if op.storing.is_some() && !req.store && !req.page {
            // A stalled query of the lookup, answering after it finished without it.
            return;
        }
        let mut next_page = None;
        match answer {
            Reply::Nodes(nodes, records, more) if op.storing.is_none() => {
                if req.page {
                    op.pages -= 1;
                } else {
                    let nodes = nodes
                        .into_iter()
                        .take(k)
                        .map(|c| (c.id, SocketAddr::from(c.addr)));
                    op.lookup.answered(from, nodes);
                }
                if matches!(op.goal, Goal::Get { .. }) {
                    let mut last = None;
                    for r in records.into_iter().take(max_records) {
                        match Record::from_wire(r, &key, now, max_ttl) {
                            Ok(record) => {
                                last = Some(record.publisher);
                                op.got_remote = true;
                                if op.records.len() < max_records
                                    || op.records.contains_key(&record.publisher)
                                {
                                    keep_newest(&mut op.records, record);
                                }
                            }
                            Err(_) => self.stats.forged_records += 1,
                        }
                    }
                    if more && op.records.len() < max_records {
                        next_page = last;
                    }
                }
            }
            Reply::Ack if op.storing.is_some() => {
                if let Some((waiting, acks)) = &mut op.storing {
                    *waiting = waiting.saturating_sub(1);
                    *acks += 1;
                }
            }
            // A refusal, or an answer of the wrong kind (an `Ack` to a lookup, `Nodes` to a
            // store): that query failed, and the operation goes on without it.
            _ => {
                if req.page {
                    op.pages -= 1;
                } else {
                    match &mut op.storing {
                        Some((waiting, _)) => *waiting = waiting.saturating_sub(1),
                        None => op.lookup.failed(from),
                    }
                }
            }
        }
        if let Some(after) = next_page {
            if let Some(op) = self.ops.get_mut(&op_id) {
                op.pages += 1;
            }
            self.request(req.to, req.addr, Some(op_id), true, cx, |id| {
                DhtMessage::FindValue(FindValue {
                    id,
                    key,
                    after: Some(after),
                })
            });
        }
        self.drive(op_id, cx);
    }

    /// Queues a lookup of a random id in every bucket no lookup has touched for
    /// `refresh_interval`, farthest bucket first.
    fn refresh(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        let buckets = self.table.bucket_count();
        self.refreshed.resize(buckets, None);
        self.refresh_due = (0..buckets)
            .rev()
            .filter(|i| !self.fresh(*i, now))
            .collect();
        self.next_bucket_refresh(cx);
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
    fn next_bucket_refresh(&mut self, cx: &mut Cx<'_>) {
        // With every operation slot taken, the queue waits for one to finish.
        if self.refreshing || self.ops.len() >= self.config.max_operations {
            return;
        }
        let now = cx.now();
        while let Some(index) = self.refresh_due.pop() {
            // A lookup since it was queued may have refreshed it already.
            if self.fresh(index, now) || index >= self.table.bucket_count() {
                continue;
            }
            let target = self.random_id_in_bucket(index);
            self.refreshing = true;
            self.start(Goal::Refresh, Owner::Internal, target, cx);
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

/// Keeps `record` in `records` unless a newer one of its publisher is there.
fn keep_newest(records: &mut BTreeMap<NodeId, Record>, record: Record) {
    match records.get(&record.publisher) {
        Some(have) if have.seq >= record.seq => {}
        _ => {
            records.insert(record.publisher, record);
        }
    }
}

/// Hands an operation's outcome to its owner.
fn tell(owner: Owner, event: DhtEvent, cx: &mut Cx<'_>) {
    match owner {
        Owner::App => cx.emit(Event::Dht(event)),
        Owner::Internal => {}
        Owner::Sibling(asker, ticket) => cx.answer(asker, ticket, Answer::Dht(event)),
    }
}

/// An answer to one of our requests.
enum Reply {
    /// Contacts, records and whether more records follow.
    Nodes(Vec<WireContact>, Vec<WireRecord>, bool),
    Ack,
    Refused,
}
