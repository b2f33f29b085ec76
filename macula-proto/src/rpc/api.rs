//! The node's RPC commands.

use alloc::string::String;
use alloc::vec::Vec;

use super::machine::{Outcome, Rpc};
use super::types::{
    CallError, CallId, CallOptions, RegisterError, RegisterOptions, Registered, RegistrationId,
    ReplyError, RequestId, RpcStats,
};
use crate::node::{InboxError, Node, Overflow};
use crate::pubsub::Topic;
use crate::time::Instant;

impl Node {
    /// Serves `procedure`: announces this node as a provider in the DHT (callers find it
    /// within their cache's freshness of the announcement, at once if they have none) and
    /// opens the inbox its calls arrive in, as [`Data::Request`](crate::Data::Request).
    ///
    /// # Errors
    /// [`RegisterError`] for a bad name, a procedure served already, a bound reached, or a
    /// closed node; nothing changed.
    pub fn rpc_register(
        &mut self,
        procedure: &str,
        options: RegisterOptions,
        now: Instant,
    ) -> Result<Registered, RegisterError> {
        let procedure = Topic::new(procedure).map_err(RegisterError::Procedure)?;
        let queue = options.queue.unwrap_or(self.config().rpc.queue);
        if queue == 0 {
            return Err(RegisterError::Inbox(InboxError::Capacity(0)));
        }
        // One more than the calls it holds: the inbox is never full, so it never pauses the
        // channel a call came on (a full queue answers `Overloaded` instead).
        let inbox = self
            .open_inbox(queue + 1, Overflow::Block)
            .map_err(|e| match e {
                InboxError::Capacity(_) => RegisterError::Inbox(InboxError::Capacity(queue)),
                e => RegisterError::Inbox(e),
            })?;
        let result = self.run(now, |rpc: &mut Rpc, cx| {
            rpc.register(&procedure, queue, inbox, cx)
        });
        match result {
            Ok(id) => Ok(Registered { id, inbox }),
            Err(e) => {
                self.close_inbox(inbox, now);
                Err(e)
            }
        }
    }

    /// Stops serving: the announcement is withdrawn, the inbox closed, and calls not
    /// answered yet are answered as given up (their callers try another provider). Returns
    /// whether the registration existed.
    pub fn rpc_unregister(&mut self, id: RegistrationId, now: Instant) -> bool {
        let inbox = self.run(now, |rpc: &mut Rpc, cx| rpc.unregister(id, cx));
        match inbox {
            Some(inbox) => {
                self.close_inbox(inbox, now);
                true
            }
            None => false,
        }
    }

    /// Answers `request` with `payload`.
    ///
    /// # Errors
    /// [`ReplyError::Gone`] if the request no longer waits (answered, cancelled, expired);
    /// [`ReplyError::TooLarge`] for a reply over `rpc.max_payload` (the caller hears
    /// `TooLarge`).
    pub fn rpc_reply(
        &mut self,
        request: RequestId,
        payload: Vec<u8>,
        now: Instant,
    ) -> Result<(), ReplyError> {
        self.run(now, |rpc: &mut Rpc, cx| {
            rpc.answer(request, Outcome::Reply(payload), cx)
        })
    }

    /// Answers `request` with an application error: the call ends with
    /// [`CallError::Remote`] and is not tried elsewhere.
    ///
    /// # Errors
    /// [`ReplyError::Gone`] if the request no longer waits.
    pub fn rpc_fail(
        &mut self,
        request: RequestId,
        message: impl Into<String>,
        now: Instant,
    ) -> Result<(), ReplyError> {
        let message = message.into();
        self.run(now, |rpc: &mut Rpc, cx| {
            rpc.answer(request, Outcome::Fail(message), cx)
        })
    }

    /// Gives `request` up without an answer: the caller tries another provider. A handler
    /// that drops a request calls this, so that no call waits on silence.
    ///
    /// # Errors
    /// [`ReplyError::Gone`] if the request no longer waits.
    pub fn rpc_abandon(&mut self, request: RequestId, now: Instant) -> Result<(), ReplyError> {
        self.run(now, |rpc: &mut Rpc, cx| {
            rpc.answer(request, Outcome::Abandon, cx)
        })
    }

    /// Calls `procedure` with `payload`. The outcome comes as
    /// [`RpcEvent::Done`](super::RpcEvent::Done) with the returned id, exactly once: a reply,
    /// or a [`CallError`] (`NoResponders` as soon as discovery finds nobody, without sending
    /// anything).
    ///
    /// # Errors
    /// A bad name, an argument too large, [`CallError::Full`] while `rpc.max_calls` calls are
    /// in flight (call again after [`RpcEvent::Ready`](super::RpcEvent::Ready)), or a closed
    /// node. Nothing was sent.
    pub fn rpc_call(
        &mut self,
        procedure: &str,
        payload: Vec<u8>,
        options: CallOptions,
        now: Instant,
    ) -> Result<CallId, CallError> {
        let procedure = Topic::new(procedure).map_err(CallError::Procedure)?;
        self.run(now, |rpc: &mut Rpc, cx| {
            rpc.call(&procedure, payload, options, cx)
        })
    }

    /// Cancels call `id`: it ends with [`CallError::Cancelled`] and the providers running it
    /// are told. Returns whether it was in flight.
    pub fn rpc_cancel(&mut self, id: CallId, now: Instant) -> bool {
        self.run(now, |rpc: &mut Rpc, cx| rpc.cancel(id, cx))
    }

    /// Whether a call would be taken now (not refused with [`CallError::Full`]).
    pub fn rpc_has_room(&self) -> bool {
        self.subsystem::<Rpc>().has_room()
    }

    /// RPC's counters.
    pub fn rpc_stats(&self) -> &RpcStats {
        self.subsystem::<Rpc>().stats()
    }

    /// RPC's state, to read.
    pub fn rpc(&self) -> &Rpc {
        self.subsystem()
    }
}
