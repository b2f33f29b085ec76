//! The provider's side: procedures served, calls received and run at most once, answers.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::Rpc;
use crate::id::NodeId;
use crate::node::flow::Delivered;
use crate::node::subsystem::{Cx, Peer};
use crate::node::{Data, Event, InboxId};
use crate::pubsub::Topic;
use crate::rpc::messages::{Call, CallRef, Fail, Refusal, Reply, RpcMessage};
use crate::rpc::types::{
    Ended, RegisterError, RegistrationId, ReplyError, Request, RequestId, RpcEvent,
};
use crate::time::{Duration, Instant};

/// A call's idempotency key: the caller and its reference to the call.
pub(crate) type Key = (NodeId, CallRef);

/// A procedure this node serves.
#[derive(Debug)]
pub(crate) struct Reg {
    procedure: Arc<str>,
    inbox: InboxId,
    /// Calls it holds until they are answered, and the most it may.
    queued: usize,
    queue: usize,
}

impl Reg {
    /// Calls it holds.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.queued
    }
}

/// A call received, as the provider remembers it.
#[derive(Debug)]
pub(crate) enum Exec {
    /// Handed to the handler; not answered yet.
    Running {
        request: RequestId,
        reg: RegistrationId,
        deadline: Instant,
    },
    /// Answered (or given up); the answer is sent again if the call comes again, until
    /// `until`. `None`: nothing is sent again (the call was cancelled or expired, or its
    /// reply was too large to keep).
    Done {
        answer: Option<RpcMessage>,
        until: Instant,
    },
}

impl Exec {
    fn expires(&self) -> Instant {
        match self {
            Exec::Running { deadline, .. } => *deadline,
            Exec::Done { until, .. } => *until,
        }
    }
}

/// What a handler answers.
#[derive(Debug)]
pub(crate) enum Outcome {
    Reply(Vec<u8>),
    Fail(String),
    Abandon,
}

impl Rpc {
    /// Serves `procedure`: its calls go to `inbox`, at most `queue` held at once.
    pub(crate) fn register(
        &mut self,
        procedure: &Topic,
        queue: usize,
        inbox: InboxId,
        cx: &mut Cx<'_>,
    ) -> Result<RegistrationId, RegisterError> {
        if self.closed {
            return Err(RegisterError::Closed);
        }
        if self.served.contains_key(procedure.as_str()) {
            return Err(RegisterError::AlreadyServed);
        }
        if self.regs.len() >= self.config.max_registrations {
            return Err(RegisterError::TooMany);
        }
        self.next_reg += 1;
        let id = RegistrationId(self.next_reg);
        self.regs.insert(
            id,
            Reg {
                procedure: Arc::from(procedure.as_str()),
                inbox,
                queued: 0,
                queue,
            },
        );
        self.served.insert(procedure.as_str().into(), id);
        self.announce(procedure.as_str(), cx);
        Ok(id)
    }

    /// Stops serving; calls still held are answered `Abandoned` (their callers try another
    /// provider). Returns the inbox (for the node to close), or `None` if unknown.
    pub(crate) fn unregister(&mut self, id: RegistrationId, cx: &mut Cx<'_>) -> Option<InboxId> {
        let reg = self.regs.remove(&id)?;
        self.served.remove(&*reg.procedure);
        let held: Vec<RequestId> = self
            .execs
            .values()
            .filter_map(|e| match e {
                Exec::Running { request, reg, .. } if *reg == id => Some(*request),
                _ => None,
            })
            .collect();
        for request in held {
            let _ = self.answer(request, Outcome::Abandon, cx);
        }
        self.announce(&reg.procedure, cx);
        self.settle(cx);
        Some(reg.inbox)
    }

    /// Whether `request` still waits for its handler's answer.
    pub fn is_waiting(&self, request: RequestId) -> bool {
        self.requests.contains_key(&request)
    }

    /// The time left until `request`'s deadline at `now`, if it still waits.
    pub fn time_left(&self, request: RequestId, now: Instant) -> Option<Duration> {
        let key = self.requests.get(&request)?;
        match self.execs.get(key)? {
            Exec::Running { deadline, .. } => Some(deadline.saturating_duration_since(now)),
            Exec::Done { .. } => None,
        }
    }

    /// A call arrived from `caller` (`peer` is `None` when it is this node's own).
    pub(crate) fn received(
        &mut self,
        caller: NodeId,
        peer: Option<Peer>,
        call: Call,
        cx: &mut Cx<'_>,
    ) {
        self.stats.received += 1;
        let now = cx.now();
        let key = (caller, call.call);
        self.settled(caller, call.call.epoch, call.settled_below, cx);
        match self.execs.get(&key) {
            Some(Exec::Running { .. }) | Some(Exec::Done { answer: None, .. }) => {
                // Running: its answer goes when it is ready. Done without an answer to repeat:
                // the caller stopped waiting.
                self.stats.duplicates += 1;
                return;
            }
            Some(Exec::Done {
                answer: Some(answer),
                ..
            }) => {
                self.stats.duplicates += 1;
                let answer = answer.clone();
                self.send_answer(caller, answer, cx);
                return;
            }
            None => {}
        }
        let remaining = Duration::from_micros(call.remaining_us).min(self.config.max_deadline);
        if remaining == Duration::ZERO {
            self.stats.expired += 1;
            return;
        }
        let refusal = if call.procedure.len() + call.payload.len() > self.config.max_payload {
            Some(Refusal::TooLarge)
        } else {
            match self.served.get(call.procedure.as_str()) {
                None => {
                    self.stats.not_served += 1;
                    Some(Refusal::NotServed)
                }
                Some(reg) => {
                    let reg = &self.regs[reg];
                    let running = self.running_per_peer.get(&caller).copied().unwrap_or(0);
                    let full = reg.queued >= reg.queue
                        || running >= self.config.max_calls_per_peer
                        || self.execs.len() >= self.config.max_remembered;
                    full.then(|| {
                        self.stats.overloaded += 1;
                        Refusal::Overloaded
                    })
                }
            }
        };
        if let Some(error) = refusal {
            // Refusals are not remembered (the call did not run): a retry is judged again.
            if caller == self.me || self.may_answer(caller, now) {
                let fail = RpcMessage::Fail(Fail {
                    call: call.call,
                    error,
                });
                self.send_answer(caller, fail, cx);
            }
            return;
        }
        let reg_id = self.served[call.procedure.as_str()];
        let reg = self
            .regs
            .get_mut(&reg_id)
            .expect("served procedures are registered");
        self.next_request += 1;
        let request = RequestId(self.next_request);
        let deadline = now + remaining;
        let data = Data::Request(Request {
            id: request,
            registration: reg_id,
            procedure: reg.procedure.clone(),
            caller,
            deadline,
            payload: call.payload,
        });
        let delivered = match peer {
            Some(peer) => cx.deliver(reg.inbox, peer, data),
            None => cx.deliver_local(reg.inbox, data),
        };
        if delivered != Delivered::Queued {
            // The handler is gone (its inbox closed): the caller tries elsewhere.
            let fail = RpcMessage::Fail(Fail {
                call: call.call,
                error: Refusal::Abandoned,
            });
            self.send_answer(caller, fail, cx);
            return;
        }
        reg.queued += 1;
        *self.running_per_peer.entry(caller).or_insert(0) += 1;
        self.stats.executed += 1;
        self.requests.insert(request, key);
        self.expiry.insert((deadline, key));
        self.execs.insert(
            key,
            Exec::Running {
                request,
                reg: reg_id,
                deadline,
            },
        );
    }

    /// A handler answers `request`.
    pub(crate) fn answer(
        &mut self,
        request: RequestId,
        outcome: Outcome,
        cx: &mut Cx<'_>,
    ) -> Result<(), ReplyError> {
        let key = *self.requests.get(&request).ok_or(ReplyError::Gone)?;
        let mut result = Ok(());
        let message = match outcome {
            Outcome::Reply(payload) if payload.len() > self.config.max_payload => {
                result = Err(ReplyError::TooLarge {
                    size: payload.len(),
                    max: self.config.max_payload,
                });
                RpcMessage::Fail(Fail {
                    call: key.1,
                    error: Refusal::TooLarge,
                })
            }
            Outcome::Reply(payload) => RpcMessage::Reply(Reply {
                call: key.1,
                payload,
            }),
            Outcome::Fail(message) => RpcMessage::Fail(Fail {
                call: key.1,
                error: Refusal::Application(message),
            }),
            Outcome::Abandon => RpcMessage::Fail(Fail {
                call: key.1,
                error: Refusal::Abandoned,
            }),
        };
        if key.0 == self.me {
            self.end(key, None, cx);
            self.local_answers.push_back(message);
        } else {
            cx.reply(key.0, &message);
            self.end(key, Some(message), cx);
        }
        self.settle(cx);
        result
    }

    /// The caller of `call` no longer waits: its handler hears so.
    pub(crate) fn cancelled(&mut self, caller: NodeId, call: CallRef, cx: &mut Cx<'_>) {
        if let Some(Exec::Running { request, .. }) = self.execs.get(&(caller, call)) {
            let request = *request;
            self.end((caller, call), None, cx);
            cx.emit(Event::Rpc(RpcEvent::Ended {
                request,
                why: Ended::Cancelled,
            }));
        }
    }

    /// The calls of `caller` before `settled_below` in `epoch`, and all those of its earlier
    /// epochs, have their outcomes there: forget them (a running one is as good as cancelled).
    fn settled(&mut self, caller: NodeId, epoch: u64, settled_below: u64, cx: &mut Cx<'_>) {
        let from = (caller, CallRef { epoch: 0, id: 0 });
        let to = (
            caller,
            CallRef {
                epoch,
                id: settled_below,
            },
        );
        loop {
            let Some((&key, exec)) = self.execs.range(from..to).next() else {
                return;
            };
            match *exec {
                Exec::Running { request, .. } => {
                    self.end(key, None, cx);
                    cx.emit(Event::Rpc(RpcEvent::Ended {
                        request,
                        why: Ended::Cancelled,
                    }));
                }
                Exec::Done { .. } => self.forget(key),
            }
            // `end` leaves a memory of the call; nothing will ask for it again.
            self.forget(key);
        }
    }

    /// A running call is answered (`answer`, to send again if the call comes again) or given
    /// up; it is remembered until a little after its deadline.
    fn end(&mut self, key: Key, answer: Option<RpcMessage>, _cx: &mut Cx<'_>) {
        let Some(Exec::Running {
            request,
            reg,
            deadline,
        }) = self.execs.get(&key)
        else {
            return;
        };
        let (request, reg, deadline) = (*request, *reg, *deadline);
        self.requests.remove(&request);
        if let Some(reg) = self.regs.get_mut(&reg) {
            reg.queued -= 1;
        }
        if let Some(n) = self.running_per_peer.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.running_per_peer.remove(&key.0);
            }
        }
        self.expiry.remove(&(deadline, key));
        let bytes = answer.as_ref().map_or(0, answer_bytes);
        let answer =
            answer.filter(|_| self.remembered_bytes + bytes <= self.config.max_remembered_bytes);
        if answer.is_some() {
            self.remembered_bytes += bytes;
        }
        let until = deadline + self.config.remember_slack;
        self.expiry.insert((until, key));
        self.execs.insert(key, Exec::Done { answer, until });
    }

    /// Drops the memory of a call, whatever its state (a running one must be ended first).
    fn forget(&mut self, key: Key) {
        if let Some(exec) = self.execs.remove(&key) {
            self.expiry.remove(&(exec.expires(), key));
            if let Exec::Done {
                answer: Some(answer),
                ..
            } = &exec
            {
                self.remembered_bytes -= answer_bytes(answer);
            }
        }
    }

    /// Running calls whose deadline passed are given up (their handlers hear so); answered
    /// ones whose memory ran out are forgotten.
    pub(super) fn expire(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        while let Some(&(at, key)) = self.expiry.first() {
            if at > now {
                break;
            }
            match self.execs.get(&key) {
                Some(Exec::Running { request, .. }) => {
                    let request = *request;
                    self.end(key, None, cx);
                    cx.emit(Event::Rpc(RpcEvent::Ended {
                        request,
                        why: Ended::Expired,
                    }));
                }
                _ => self.forget(key),
            }
        }
    }

    /// Sends an answer to `caller` (this node's own calls get it through the local queue).
    pub(super) fn send_answer(&mut self, caller: NodeId, answer: RpcMessage, cx: &mut Cx<'_>) {
        if caller == self.me {
            self.local_answers.push_back(answer);
        } else {
            cx.reply(caller, &answer);
        }
    }
}

/// The bytes an answer holds.
fn answer_bytes(answer: &RpcMessage) -> usize {
    match answer {
        RpcMessage::Reply(r) => r.payload.len(),
        RpcMessage::Fail(Fail {
            error: Refusal::Application(m),
            ..
        }) => m.len(),
        _ => 0,
    }
}
