//! The RPC subsystem's state machine: procedures announced in the DHT, callers' discovery,
//! attempts and failover, and providers' requests and their memory of answered calls.
//!
//! **Serving** a procedure opens an inbox for its requests and announces the node as a
//! provider in a signed DHT record (a sibling ask; the DHT republishes it while it lives).
//! **Calling** looks the procedure's providers up (through [`Providers`], shared with pub/sub),
//! picks one by the call's [`Strategy`](super::Strategy), and sends it the call with the time
//! left until the deadline. An attempt that gets no answer within its own timeout (a share of
//! the time left, never less than a few round trips) does not end: the call is also sent to
//! another provider, and the first answer from any of them wins (the others are told to
//! cancel). An attempt whose link is lost, or that a provider refuses (`Overloaded`, not
//! served), moves on at once. The attempt's provider is left out of later lookups for a
//! while unless it proves alive.
//!
//! A **provider** remembers each call by its idempotency key (caller, caller's epoch, call
//! number) from its arrival until its deadline has passed: a call received again while it runs
//! is dropped, and one received after it was answered gets the same answer again, so no call
//! runs twice on one provider. Calls tell the provider which of their caller's calls are
//! settled, so that memory stays as small as the caller's calls in flight.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::config::RpcConfig;
use super::messages::RpcMessage;
use super::types::RpcStats;
use crate::dht::{record_key, DhtAsk, DhtEvent, KeyKind, Record};
use crate::discovery::{Announcer, Bounds, Provider, Providers};
use crate::id::NodeId;
use crate::node::subsystem::{
    Answer, Ask, Cx, Gone, Init, Peer, PeerChange, Subsystem, Ticket, Unreachable,
};
use crate::rng::Rng;
use crate::time::Instant;
use crate::wire::{KeyBytes, ProtocolId};

mod caller;
mod provider;

pub(crate) use caller::Calling;
pub(crate) use provider::{Exec, Outcome, Reg};

/// A node that announced it serves a procedure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcProvider {
    /// The node.
    pub node: NodeId,
    /// Where it listens (from its signed record).
    pub addr: Option<SocketAddr>,
}

impl Provider for RpcProvider {
    fn node(&self) -> NodeId {
        self.node
    }
}

/// What a ticket to the DHT was for.
#[derive(Debug)]
enum Asked {
    /// Every closest node's providers: the answer kept.
    Lookup(String),
    /// The first providers found (see `look_up`), and when that lookup started.
    Quick(String, Instant),
    Announce(String),
}

/// The RPC subsystem of a node: the procedures it serves and the calls it makes. Read it with
/// [`Node::rpc`](crate::Node::rpc); `docs/rpc.md` says how it works.
#[derive(Debug)]
pub struct Rpc {
    config: RpcConfig,
    realm: String,
    epoch: u64,
    me: NodeId,
    rng: Rng,
    closed: bool,
    stats: RpcStats,
    asks: BTreeMap<Ticket, Asked>,
    // ---- serving
    regs: BTreeMap<super::RegistrationId, Reg>,
    served: BTreeMap<String, super::RegistrationId>,
    next_reg: u64,
    /// Announcements to make again.
    announcer: Announcer,
    /// Calls received, by idempotency key: running, or answered and within their deadline.
    execs: BTreeMap<provider::Key, Exec>,
    /// The requests handlers hold, and their calls' keys.
    requests: BTreeMap<super::RequestId, provider::Key>,
    next_request: u64,
    /// When each remembered call's deadline passes (running) or its memory ends (answered).
    expiry: BTreeSet<(Instant, provider::Key)>,
    remembered_bytes: usize,
    running_per_peer: BTreeMap<NodeId, usize>,
    /// Per-peer token buckets for refusals and cancellations.
    buckets: crate::rate::Buckets<NodeId>,
    // ---- calling
    providers: Providers<RpcProvider>,
    looking: BTreeSet<String>,
    calls: BTreeMap<super::CallId, Calling>,
    next_call: u64,
    /// Each call's next moment: an attempt's timeout or its deadline.
    timers: BTreeSet<(Instant, super::CallId)>,
    /// Attempts in flight to each provider.
    in_flight: BTreeMap<NodeId, usize>,
    /// Calls with no provider to go to now (all at their credit, or their channel full).
    stalled: BTreeSet<super::CallId>,
    /// A call was refused as full: say `Ready` when there is room.
    refused: bool,
    /// Round-robin turns, per procedure.
    turns: BTreeMap<String, u64>,
    // ---- this node calling itself, run after the step that queued it (see `settle`)
    local_calls: VecDeque<super::messages::Call>,
    local_answers: VecDeque<RpcMessage>,
    local_cancels: VecDeque<super::messages::CallRef>,
    /// Credit or room was freed: stalled calls may go on.
    wake: bool,
    /// Inside `settle` (which its own steps must not start again).
    settling: bool,
}

impl Subsystem for Rpc {
    const PROTOCOL: ProtocolId = ProtocolId::RPC;
    const VERSION: u16 = 1;
    type Message = RpcMessage;

    fn new(init: &Init<'_>) -> Self {
        let mut config = init.config.rpc.clone();
        config.max_payload = config
            .max_payload
            .min(init.config.max_frame_size as usize / 2);
        Rpc {
            providers: Providers::new(Bounds {
                fresh_for: config.fresh_for,
                lookup_interval: config.lookup_interval,
                max_names: config.max_procedures,
                max_keys: config.max_procedures,
                quarantine: config.quarantine,
                max_failed: config.max_procedures,
            }),
            config,
            realm: init.config.realm.as_str().into(),
            epoch: init.config.start_epoch,
            me: init.identity.node_id(),
            rng: Rng::from_seed(init.seed),
            closed: false,
            stats: RpcStats::default(),
            asks: BTreeMap::new(),
            regs: BTreeMap::new(),
            served: BTreeMap::new(),
            next_reg: 0,
            announcer: Announcer::default(),
            execs: BTreeMap::new(),
            requests: BTreeMap::new(),
            next_request: 0,
            expiry: BTreeSet::new(),
            remembered_bytes: 0,
            running_per_peer: BTreeMap::new(),
            buckets: crate::rate::Buckets::new(MAX_BUCKETS),
            looking: BTreeSet::new(),
            calls: BTreeMap::new(),
            next_call: 0,
            timers: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            stalled: BTreeSet::new(),
            refused: false,
            turns: BTreeMap::new(),
            local_calls: VecDeque::new(),
            local_answers: VecDeque::new(),
            local_cancels: VecDeque::new(),
            wake: false,
            settling: false,
        }
    }

    fn on_peer(&mut self, change: PeerChange, cx: &mut Cx<'_>) {
        match change {
            PeerChange::Up { peer, .. } => {
                // A provider that failed is reachable again, and calls held for room on a
                // dial to it may go.
                self.providers.alive(&peer);
                self.unstall(cx);
                self.announcer.peer_up(cx.now());
            }
            PeerChange::Down { peer, why } => self.lost(peer, why != Gone::Closed, cx),
            PeerChange::Relinked { peer } => self.resend_to(peer, cx),
            PeerChange::Unreachable { peer, why } => {
                self.lost(peer, why != Unreachable::NoRoom, cx);
            }
            PeerChange::Writable { .. } => self.unstall(cx),
        }
        self.settle(cx);
    }

    fn on_message(&mut self, from: Peer, message: RpcMessage, cx: &mut Cx<'_>) {
        match message {
            RpcMessage::Call(call) => self.received(from.id, Some(from), call, cx),
            RpcMessage::Reply(reply) => self.replied(from.id, reply, cx),
            RpcMessage::Fail(fail) => self.refused_by(from.id, fail, cx),
            RpcMessage::Cancel(call) => {
                if self.may_answer(from.id, cx.now()) {
                    self.cancelled(from.id, call, cx);
                }
            }
        }
        self.settle(cx);
    }

    fn on_timeout(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        for procedure in self.announcer.due(now) {
            self.announce(&procedure, cx);
        }
        self.expire(cx);
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, id));
            self.timer(id, cx);
        }
        self.settle(cx);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.announcer.poll_timeout(),
            self.expiry.first().map(|(t, _)| *t),
            self.timers.first().map(|(t, _)| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn stored(&self) -> usize {
        self.execs.len()
    }

    fn on_answer(&mut self, ticket: Ticket, answer: Answer, cx: &mut Cx<'_>) {
        let Answer::Dht(outcome) = answer;
        let Some(asked) = self.asks.remove(&ticket) else {
            return;
        };
        match asked {
            Asked::Lookup(procedure) => {
                self.looking.remove(&procedure);
                match outcome {
                    DhtEvent::Got { records, .. } => {
                        let found = records
                            .iter()
                            .filter_map(|r| parse_announcement(r, &procedure))
                            .collect();
                        self.providers.fill(&procedure, found, cx.now());
                    }
                    _ => self.providers.fill_failed(&procedure, cx.now()),
                }
                self.discovered(&procedure, cx);
            }
            Asked::Quick(procedure, asked) => {
                let found: Vec<RpcProvider> = match outcome {
                    DhtEvent::Got { records, .. } => records
                        .iter()
                        .filter_map(|r| parse_announcement(r, &procedure))
                        .collect(),
                    _ => Vec::new(),
                };
                // Some providers, before the whole answer: calls can go. Nothing found yet
                // says nothing (the whole lookup may still find some).
                let newer = self
                    .providers
                    .known(&procedure)
                    .map_or(true, |(_, fetched)| fetched < asked);
                if !found.is_empty() && newer && self.looking.contains(&procedure) {
                    self.providers.fill(&procedure, found, cx.now());
                    self.discovered(&procedure, cx);
                }
            }
            Asked::Announce(procedure) => {
                let ok = matches!(outcome, DhtEvent::Stored { acks, .. } if acks > 0);
                if ok {
                    self.announcer.stored();
                } else if !self.closed && self.served.contains_key(&procedure) {
                    self.announcer.failed(procedure, cx.now());
                }
            }
        }
    }
}

impl Rpc {
    /// Counters.
    pub fn stats(&self) -> &RpcStats {
        &self.stats
    }

    /// Calls in flight (waiting for discovery, credit or an answer).
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Whether a call would be taken now (not refused with `CallError::Full`).
    pub fn has_room(&self) -> bool {
        !self.closed && self.calls.len() < self.config.max_calls
    }

    /// Procedures this node serves.
    pub fn registrations(&self) -> usize {
        self.regs.len()
    }

    /// Calls this node remembers as a provider (running, or answered within their deadline).
    pub fn remembered(&self) -> usize {
        self.execs.len()
    }

    /// Bytes of the replies it remembers.
    pub fn remembered_bytes(&self) -> usize {
        self.remembered_bytes
    }

    /// Requests handed to handlers and not answered yet.
    pub fn requests(&self) -> usize {
        self.requests.len()
    }

    /// The providers remembered.
    pub fn providers(&self) -> &Providers<RpcProvider> {
        &self.providers
    }

    /// Per-peer rate-limit buckets kept (bounded).
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Checks what must hold between any two calls: credit counts the attempts in flight,
    /// every request held has its call running, and the memory's counts are exact.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut live: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (id, call) in &self.calls {
            assert!(call.live_nodes().count() <= usize::from(call.sent_count()));
            assert!(
                self.timers.contains(&(call.timer_at(), *id)),
                "every call has its timer"
            );
            for node in call.live_nodes() {
                *live.entry(node).or_insert(0) += 1;
            }
        }
        assert_eq!(live, self.in_flight, "credit counts the attempts in flight");
        assert_eq!(self.timers.len(), self.calls.len(), "one timer per call");
        assert!(self.calls.len() <= self.config.max_calls);
        for (request, key) in &self.requests {
            assert!(
                matches!(self.execs.get(key), Some(Exec::Running { request: r, .. }) if r == request),
                "a request held is a call running"
            );
        }
        let running = self
            .execs
            .values()
            .filter(|e| matches!(e, Exec::Running { .. }))
            .count();
        assert_eq!(running, self.requests.len());
        assert_eq!(
            self.expiry.len(),
            self.execs.len(),
            "one expiry per call remembered"
        );
        let queued: usize = self.regs.values().map(Reg::queued).sum();
        assert_eq!(queued, running, "registrations count their calls");
        assert_eq!(
            self.running_per_peer.values().sum::<usize>(),
            running,
            "callers count their calls"
        );
        assert!(self.remembered_bytes <= self.config.max_remembered_bytes);
        assert!(self.buckets.len() <= MAX_BUCKETS);
    }

    /// The node is closing: nothing new is taken, every call ends with `Closed`, and every
    /// request held is withdrawn.
    pub(crate) fn close(&mut self, cx: &mut Cx<'_>) {
        self.closed = true;
        self.announcer.clear();
        let ids: Vec<super::CallId> = self.calls.keys().copied().collect();
        for id in ids {
            self.finish(id, Err(super::CallError::Closed), cx);
        }
    }

    /// The DHT key a procedure's providers are announced under.
    fn key(&self, procedure: &str) -> KeyBytes {
        record_key(&self.realm, KeyKind::Provider, &provider_name(procedure))
    }

    /// Publishes (or withdraws, when not served) this node's record for `procedure`.
    fn announce(&mut self, procedure: &str, cx: &mut Cx<'_>) {
        let key = self.key(procedure);
        let ask = if self.served.contains_key(procedure) {
            DhtAsk::Put(key, procedure.as_bytes().to_vec())
        } else {
            DhtAsk::Withdraw(key)
        };
        self.stats.announcements += 1;
        let ticket = cx.ask(ProtocolId::DHT, Ask::Dht(ask));
        self.asks.insert(ticket, Asked::Announce(procedure.into()));
    }

    /// Asks the DHT for `procedure`'s providers, unless a lookup is under way or was made
    /// within `lookup_interval`. Returns whether one is under way now.
    fn look_up(&mut self, procedure: &str, cx: &mut Cx<'_>) -> bool {
        if self.looking.contains(procedure) {
            return true;
        }
        let now = cx.now();
        if !self.providers.may_look_up(procedure, now) {
            return false;
        }
        self.providers.looking_up(procedure, now);
        self.stats.lookups += 1;
        // Two lookups: one that answers with the first providers found (calls need only
        // one, and under churn the whole answer waits on nodes that left), and one that
        // gathers every closest node's, which replaces it.
        let key = self.key(procedure);
        let quick = cx.ask(ProtocolId::DHT, Ask::Dht(DhtAsk::FindSomeProviders(key)));
        self.asks.insert(quick, Asked::Quick(procedure.into(), now));
        let whole = cx.ask(ProtocolId::DHT, Ask::Dht(DhtAsk::FindProviders(key)));
        self.asks.insert(whole, Asked::Lookup(procedure.into()));
        self.looking.insert(procedure.into());
        true
    }

    /// Whether a refusal or cancellation from (or to) `peer` is within its rate at `now`.
    fn may_answer(&mut self, peer: NodeId, now: Instant) -> bool {
        let limit =
            crate::rate::Limit::per_second(self.config.control_rate, self.config.control_burst);
        let ok = self.buckets.take(peer, now, &limit);
        if !ok {
            self.stats.rate_limited += 1;
        }
        ok
    }
}

/// The name a procedure's providers announce themselves under in the DHT (a provider record
/// of the node's realm): `rpc/` and the procedure. A DHT client can look them up with it.
pub fn provider_name(procedure: &str) -> Vec<u8> {
    let mut name = Vec::with_capacity(4 + procedure.len());
    name.extend_from_slice(b"rpc/");
    name.extend_from_slice(procedure.as_bytes());
    name
}

/// Most peers whose rate-limit buckets are kept.
const MAX_BUCKETS: usize = 4096;

/// A provider as its record announces it; `None` for a record that is not an announcement
/// of `procedure`.
fn parse_announcement(record: &Record, procedure: &str) -> Option<RpcProvider> {
    (record.value == procedure.as_bytes()).then(|| RpcProvider {
        node: record.publisher,
        addr: record.addrs.first().copied(),
    })
}
