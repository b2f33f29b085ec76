//! The caller's side: calls, their attempts, failover, and their one outcome each.

use alloc::string::String;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::{Rpc, RpcProvider};
use crate::id::NodeId;
use crate::node::subsystem::Cx;
use crate::node::{Event, SendError};
use crate::pubsub::Topic;
use crate::rpc::config::MAX_ATTEMPTS;
use crate::rpc::messages::{Call, CallOut, CallRef, Fail, Outgoing, Refusal, Reply, RpcMessage};
use crate::rpc::types::{CallError, CallId, CallOptions, Replied, RpcEvent, Strategy};
use crate::time::{Duration, Instant};

/// An attempt's timeout is never shorter than this many round trips to its provider...
const RTT_FACTOR: u64 = 4;
/// ...nor than this, whatever the round trip (a provider without a link must be dialed first).
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// A call in flight.
#[derive(Debug)]
pub(crate) struct Calling {
    procedure: String,
    payload: Vec<u8>,
    started: Instant,
    deadline: Instant,
    strategy: Strategy,
    attempts: u8,
    to: Option<NodeId>,
    /// Attempts sent.
    sent: u8,
    /// Providers sent an attempt that has not ended (no answer, link up), and where they are.
    live: Vec<(NodeId, Option<SocketAddr>)>,
    /// Providers sent an attempt, in order.
    tried: Vec<NodeId>,
    /// Where it is filed in `timers`.
    timer: Instant,
    /// When the latest attempt's own timeout passes (then another provider is tried too).
    next_attempt: Instant,
    /// The most telling refusal heard so far.
    refusal: Option<Refusal>,
    /// It waits for a lookup under way to name another provider.
    waiting: bool,
}

impl Calling {
    /// The providers with an attempt in flight.
    #[cfg(test)]
    pub(super) fn live_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.live.iter().map(|(n, _)| *n)
    }

    /// Attempts sent.
    #[cfg(test)]
    pub(super) fn sent_count(&self) -> u8 {
        self.sent
    }

    /// Where it is filed in the timers.
    #[cfg(test)]
    pub(super) fn timer_at(&self) -> Instant {
        self.timer
    }
}

impl Rpc {
    /// Starts a call of `procedure`; its outcome comes as [`RpcEvent::Done`].
    pub(crate) fn call(
        &mut self,
        procedure: &Topic,
        payload: Vec<u8>,
        options: CallOptions,
        cx: &mut Cx<'_>,
    ) -> Result<CallId, CallError> {
        if self.closed {
            return Err(CallError::Closed);
        }
        let size = procedure.as_str().len() + payload.len();
        if size > self.config.max_payload {
            return Err(CallError::TooLarge {
                size,
                max: self.config.max_payload,
            });
        }
        if !self.has_room() {
            self.refused = true;
            return Err(CallError::Full);
        }
        let now = cx.now();
        let timeout = options
            .timeout
            .unwrap_or(self.config.timeout)
            .min(self.config.max_deadline);
        let attempts = options
            .attempts
            .unwrap_or(self.config.attempts)
            .clamp(1, MAX_ATTEMPTS);
        self.next_call += 1;
        let id = CallId(self.next_call);
        let deadline = now + timeout;
        self.stats.calls += 1;
        self.calls.insert(
            id,
            Calling {
                procedure: procedure.as_str().into(),
                payload,
                started: now,
                deadline,
                strategy: options.strategy,
                attempts,
                to: options.to,
                sent: 0,
                live: Vec::new(),
                tried: Vec::new(),
                timer: deadline,
                next_attempt: deadline,
                refusal: None,
                waiting: false,
            },
        );
        self.timers.insert((deadline, id));
        self.advance(id, cx);
        self.settle(cx);
        Ok(id)
    }

    /// The application gives up on call `id`: it ends with [`CallError::Cancelled`] and its
    /// providers are told. Returns whether it was in flight.
    pub(crate) fn cancel(&mut self, id: CallId, cx: &mut Cx<'_>) -> bool {
        let known = self.calls.contains_key(&id);
        if known {
            self.finish(id, Err(CallError::Cancelled), cx);
            self.settle(cx);
        }
        known
    }

    /// Sends call `id` on to a provider if it may have another attempt and one is free;
    /// ends it if nobody is left to try.
    pub(super) fn advance(&mut self, id: CallId, cx: &mut Cx<'_>) {
        let now = cx.now();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.waiting = false;
        if call.sent >= call.attempts {
            if call.live.is_empty() {
                self.give_up(id, cx);
            }
            return;
        }
        let procedure = call.procedure.clone();
        let to = call.to;
        if self.providers.is_due(&procedure, now) {
            // Nothing known, or only an old answer (which serves meanwhile).
            self.look_up(&procedure, cx);
        }
        let local = self.served.contains_key(&procedure);
        let reachable = |n: NodeId| n == self.me || cx.link_to(&n).is_some();
        if !self.providers.knows(&procedure) && !local && !to.is_some_and(reachable) {
            // Its discovery answers for it (see `discovered`).
            if !self.looking.contains(&procedure) {
                self.give_up(id, cx);
            }
            return;
        }
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let (sent, live, deadline, strategy) = (
            call.sent,
            !call.live.is_empty(),
            call.deadline,
            call.strategy,
        );
        // Whether the providers known were looked up before this call began (else asking
        // again would only repeat what the DHT just said).
        let known_before = self
            .providers
            .known(&procedure)
            .is_some_and(|(_, fetched)| fetched < call.started);
        let mut candidates: Vec<RpcProvider> =
            self.providers.get(&procedure, now).cloned().collect();
        let untried = |p: &RpcProvider| !call.tried.contains(&p.node);
        // With nobody left to try, one tried before may be tried again (its link was lost,
        // or it refused for lack of room): it is still a provider, and the call's key makes
        // a second attempt there harmless.
        let again_ok = to.is_some() || !candidates.iter().any(untried);
        if !candidates.iter().any(untried) {
            // Those that failed lately are left out while others remain; with nobody else
            // they are better than nobody (a provider slow once is not dead).
            candidates = self
                .providers
                .known(&procedure)
                .map_or(Vec::new(), |(all, _)| all.to_vec());
        }
        if local && !candidates.iter().any(|p| p.node == self.me) {
            candidates.push(RpcProvider {
                node: self.me,
                addr: None,
            });
        }
        if let Some(target) = to {
            candidates.retain(|p| p.node == target);
            if candidates.is_empty() && cx.link_to(&target).is_some() {
                candidates.push(RpcProvider {
                    node: target,
                    addr: None,
                });
            }
        }
        let mut free: Vec<RpcProvider> = Vec::new();
        let mut busy = false;
        for p in candidates {
            let again = if again_ok {
                call.live.iter().any(|(n, _)| *n == p.node)
            } else {
                call.tried.contains(&p.node)
            };
            if again {
                continue;
            }
            let credit = self.in_flight.get(&p.node).copied().unwrap_or(0);
            let room = p.node == self.me || cx.data_writable(&p.node);
            if credit < self.config.max_calls_per_peer && room {
                free.push(p);
            } else {
                busy = true;
            }
        }
        if free.is_empty() {
            if busy {
                self.stalled.insert(id);
            } else if sent == 0 && known_before && self.look_up(&procedure, cx) {
                // Everyone known failed or left: what does the DHT say now?
            } else if self.looking.contains(&procedure) {
                // The whole answer is still to come: it may name others.
                if let Some(call) = self.calls.get_mut(&id) {
                    call.waiting = true;
                }
                if live {
                    self.set_timer(id, deadline, deadline);
                }
            } else if !live {
                self.give_up(id, cx);
            } else {
                // The attempts in flight have the rest of the time.
                self.set_timer(id, deadline, deadline);
            }
            return;
        }
        let pick = self.pick(&procedure, strategy, &free, cx);
        let provider = free.swap_remove(pick);
        self.send_attempt(id, provider, cx);
    }

    /// Which of `free` (not empty) a call picks by `strategy`.
    fn pick(
        &mut self,
        procedure: &str,
        strategy: Strategy,
        free: &[RpcProvider],
        cx: &Cx<'_>,
    ) -> usize {
        match strategy {
            Strategy::Random => self.rng.below(free.len() as u64) as usize,
            Strategy::First => free
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.node)
                .map_or(0, |(i, _)| i),
            Strategy::LowestRtt => free
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| {
                    let rtt = if p.node == self.me {
                        Some(Duration::ZERO)
                    } else {
                        cx.rtt(&p.node)
                    };
                    (rtt.unwrap_or(Duration::MAX), p.node)
                })
                .map_or(0, |(i, _)| i),
            Strategy::RoundRobin => {
                if !self.turns.contains_key(procedure)
                    && self.turns.len() >= self.config.max_procedures
                {
                    self.turns.clear();
                }
                let turn = self.turns.entry(procedure.into()).or_insert(0);
                *turn = turn.wrapping_add(1);
                let mut order: Vec<usize> = (0..free.len()).collect();
                order.sort_by_key(|&i| free[i].node);
                order[(*turn % free.len() as u64) as usize]
            }
        }
    }

    /// Sends call `id` to `provider`.
    fn send_attempt(&mut self, id: CallId, provider: RpcProvider, cx: &mut Cx<'_>) {
        let now = cx.now();
        let settled_below = self.settled_below();
        let me = self.me;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let remaining = call.deadline.saturating_duration_since(now);
        let reference = CallRef {
            epoch: self.epoch,
            id: id.0,
        };
        if provider.node == me {
            self.local_calls.push_back(Call {
                call: reference,
                settled_below,
                remaining_us: remaining.as_micros(),
                procedure: call.procedure.clone(),
                payload: call.payload.clone(),
            });
        } else {
            let message = Outgoing::Call(CallOut {
                call: reference,
                settled_below,
                remaining_us: remaining.as_micros(),
                procedure: &call.procedure,
                payload: &call.payload,
            });
            match cx.send_data(provider.node, provider.addr, &message) {
                Ok(()) => {}
                Err(SendError::Full) => {
                    // Its channel filled meanwhile: try again once it drains.
                    self.stalled.insert(id);
                    return;
                }
                Err(SendError::NotConnected | SendError::NotSpoken) => {
                    // No way to it: leave it out and try another; but one that failed so
                    // before as well would be picked again and again (the tried are
                    // allowed again once none is left): the call ends there.
                    self.providers.failed(provider.node, now);
                    let again = call.tried.contains(&provider.node);
                    call.tried.push(provider.node);
                    if again && call.live.is_empty() {
                        self.give_up(id, cx);
                    } else if !again {
                        self.advance(id, cx);
                    }
                    return;
                }
            }
        }
        let left = u64::from(call.attempts - call.sent);
        self.stalled.remove(&id);
        call.sent += 1;
        call.live.push((provider.node, provider.addr));
        call.tried.push(provider.node);
        self.stats.attempts += 1;
        if call.sent > 1 {
            self.stats.failovers += 1;
        }
        *self.in_flight.entry(provider.node).or_insert(0) += 1;
        // Its own timeout: a share of the time left, but a few round trips at least.
        let share = Duration::from_micros(remaining.as_micros() / left);
        let rtt = if provider.node == me {
            None
        } else {
            cx.rtt(&provider.node)
        };
        let floor = rtt.map_or(MIN_ATTEMPT, |r| {
            r.saturating_mul(RTT_FACTOR).max(MIN_ATTEMPT)
        });
        let own = share.max(floor).min(remaining);
        let deadline = call.deadline;
        let next = if call.sent < call.attempts {
            now + own
        } else {
            deadline
        };
        self.set_timer(id, next.min(deadline), next);
    }

    /// Files call `id`'s timer at `at`, noting `next_attempt`.
    fn set_timer(&mut self, id: CallId, at: Instant, next_attempt: Instant) {
        if let Some(call) = self.calls.get_mut(&id) {
            self.timers.remove(&(call.timer, id));
            call.timer = at;
            call.next_attempt = next_attempt;
            self.timers.insert((at, id));
        }
    }

    /// Call `id`'s timer came due: its deadline (it ends) or its latest attempt's timeout (its
    /// provider is suspect, and another is tried too).
    pub(super) fn timer(&mut self, id: CallId, cx: &mut Cx<'_>) {
        let now = cx.now();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if now >= call.deadline {
            self.finish(id, Err(CallError::Timeout), cx);
            return;
        }
        let deadline = call.deadline;
        call.timer = deadline;
        self.timers.insert((deadline, id));
        if now >= call.next_attempt {
            call.next_attempt = deadline;
            if let Some(&(node, _)) = call.live.last() {
                if node != self.me {
                    self.providers.failed(node, now);
                }
            }
            self.advance(id, cx);
        }
    }

    /// The DHT answered a lookup of `procedure`: calls waiting for it go on.
    pub(super) fn discovered(&mut self, procedure: &str, cx: &mut Cx<'_>) {
        let waiting: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.procedure == procedure && (c.live.is_empty() || c.waiting))
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.advance(id, cx);
        }
        self.settle(cx);
    }

    /// A reply came from `from`.
    pub(super) fn replied(&mut self, from: NodeId, reply: Reply, cx: &mut Cx<'_>) {
        if reply.call.epoch != self.epoch {
            return;
        }
        // It answers: whatever it failed before, it is alive.
        self.providers.alive(&from);
        let id = CallId(reply.call.id);
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if !call.tried.contains(&from) {
            return;
        }
        let replied = Replied {
            from,
            attempts: call.sent,
            payload: reply.payload,
        };
        self.finish(id, Ok(replied), cx);
        self.settle(cx);
    }

    /// A provider refused or failed a call.
    pub(super) fn refused_by(&mut self, from: NodeId, fail: Fail, cx: &mut Cx<'_>) {
        if fail.call.epoch != self.epoch {
            return;
        }
        let id = CallId(fail.call.id);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(i) = call.live.iter().position(|(n, _)| *n == from) else {
            return;
        };
        call.live.remove(i);
        let procedure = call.procedure.clone();
        self.release(from);
        match fail.error {
            Refusal::Application(message) => {
                self.finish(id, Err(CallError::Remote(message)), cx);
            }
            Refusal::TooLarge => {
                self.finish(id, Err(CallError::TooLarge { size: 0, max: 0 }), cx);
            }
            refusal => {
                if refusal == Refusal::NotServed {
                    self.providers.remove(&procedure, &from);
                }
                let call = self.calls.get_mut(&id).expect("still in flight");
                if call.refusal.as_ref().map_or(0, rank) < rank(&refusal) {
                    call.refusal = Some(refusal);
                }
                self.advance(id, cx);
            }
        }
        self.settle(cx);
    }

    /// The link to `peer` is gone, or frames to it could not be delivered: its attempts end
    /// (and it is suspect unless `quarantine` is false), and their calls move on.
    pub(super) fn lost(&mut self, peer: NodeId, quarantine: bool, cx: &mut Cx<'_>) {
        let hit: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.live.iter().any(|(n, _)| *n == peer))
            .map(|(id, _)| *id)
            .collect();
        if quarantine {
            self.providers.failed(peer, cx.now());
        }
        for id in hit {
            if let Some(call) = self.calls.get_mut(&id) {
                call.live.retain(|(n, _)| *n != peer);
                if !quarantine {
                    // Not its fault (no room for a link, or a link this node closed): it may
                    // be tried again.
                    call.tried.retain(|n| *n != peer);
                }
                self.release(peer);
                self.advance(id, cx);
            }
        }
        self.settle(cx);
    }

    /// The link to `peer` was replaced: attempts sent on the old one may be lost, so they go
    /// again (the provider's memory of the call makes that harmless).
    pub(super) fn resend_to(&mut self, peer: NodeId, cx: &mut Cx<'_>) {
        let now = cx.now();
        let settled_below = self.settled_below();
        for (id, call) in &self.calls {
            let Some(&(_, addr)) = call.live.iter().find(|(n, _)| *n == peer) else {
                continue;
            };
            let message = Outgoing::Call(CallOut {
                call: CallRef {
                    epoch: self.epoch,
                    id: id.0,
                },
                settled_below,
                remaining_us: call.deadline.saturating_duration_since(now).as_micros(),
                procedure: &call.procedure,
                payload: &call.payload,
            });
            cx.send(peer, addr, &message);
        }
    }

    /// Calls held back for credit or room try again.
    pub(super) fn unstall(&mut self, cx: &mut Cx<'_>) {
        self.wake = true;
        self.settle(cx);
    }

    /// An attempt to `node` ended: its credit is free.
    fn release(&mut self, node: NodeId) {
        if let Some(n) = self.in_flight.get_mut(&node) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&node);
            }
        }
        self.wake |= !self.stalled.is_empty();
    }

    /// Call `id` has nobody left to try and nothing in flight: it ends with what its providers
    /// said, or with `NoResponders`.
    fn give_up(&mut self, id: CallId, cx: &mut Cx<'_>) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let error = match call.refusal {
            Some(Refusal::Overloaded) => CallError::Overloaded,
            Some(Refusal::Abandoned) => {
                CallError::Remote(String::from("the provider gave the call up unanswered"))
            }
            _ => CallError::NoResponders,
        };
        self.finish(id, Err(error), cx);
    }

    /// Call `id` ends with `result`: the application hears it once, and providers still
    /// working on it are told to stop.
    pub(super) fn finish(
        &mut self,
        id: CallId,
        result: Result<Replied, CallError>,
        cx: &mut Cx<'_>,
    ) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        self.timers.remove(&(call.timer, id));
        self.stalled.remove(&id);
        let winner = result.as_ref().ok().map(|r| r.from);
        let reference = CallRef {
            epoch: self.epoch,
            id: id.0,
        };
        // At its deadline the providers give the call up themselves.
        let tell = !matches!(result, Err(CallError::Timeout));
        for (node, _) in &call.live {
            self.release(*node);
            if Some(*node) == winner || !tell {
                continue;
            }
            if *node == self.me {
                self.local_cancels.push_back(reference);
            } else {
                cx.reply(*node, &RpcMessage::Cancel(reference));
            }
        }
        match &result {
            Ok(_) => self.stats.replied += 1,
            Err(_) => self.stats.failed += 1,
        }
        cx.emit(Event::Rpc(RpcEvent::Done { id, result }));
    }

    /// The lowest call number still in flight (every call below it has its outcome).
    fn settled_below(&self) -> u64 {
        self.calls
            .keys()
            .next()
            .map_or(self.next_call + 1, |id| id.0)
    }

    /// Runs what was queued during a call (this node's calls to itself and their answers,
    /// calls waiting for credit), then says `Ready` if a refused caller may call again.
    pub(super) fn settle(&mut self, cx: &mut Cx<'_>) {
        if self.settling {
            return;
        }
        self.settling = true;
        loop {
            if let Some(call) = self.local_calls.pop_front() {
                let me = self.me;
                self.received(me, None, call, cx);
                continue;
            }
            if let Some(answer) = self.local_answers.pop_front() {
                let me = self.me;
                match answer {
                    RpcMessage::Reply(reply) => self.replied(me, reply, cx),
                    RpcMessage::Fail(fail) => self.refused_by(me, fail, cx),
                    _ => {}
                }
                continue;
            }
            if let Some(call) = self.local_cancels.pop_front() {
                let me = self.me;
                self.cancelled(me, call, cx);
                continue;
            }
            if self.wake {
                self.wake = false;
                for id in core::mem::take(&mut self.stalled) {
                    self.advance(id, cx);
                }
                continue;
            }
            break;
        }
        self.settling = false;
        if self.refused && self.has_room() {
            self.refused = false;
            cx.emit(Event::Rpc(RpcEvent::Ready));
        }
    }
}

/// How telling a refusal is when a call ends without a result: overloaded beats given up
/// beats not served.
fn rank(refusal: &Refusal) -> u8 {
    match refusal {
        Refusal::Overloaded => 3,
        Refusal::Abandoned => 2,
        Refusal::NotServed => 1,
        _ => 0,
    }
}
