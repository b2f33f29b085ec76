//! RPC's public vocabulary: ids, options, what a provider receives, outcomes, errors and
//! counters.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::id::NodeId;
use crate::node::{InboxError, InboxId};
use crate::pubsub::TopicError;
use crate::time::{Duration, Instant};

/// Names one call this node makes, for its whole life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// Names one procedure this node serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegistrationId(pub u64);

/// Names one call a provider received, until it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// How a call picks among a procedure's providers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Any of them, at random (the default): load spreads without coordination.
    #[default]
    Random,
    /// Each in turn, per procedure.
    RoundRobin,
    /// The first by node id: every caller picks the same one while it works.
    First,
    /// The one with the lowest measured round trip (a provider without a link yet counts as
    /// the slowest).
    LowestRtt,
}

/// How a call is made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// How long the call may take in all, attempts included; `None` is
    /// [`RpcConfig::timeout`](super::RpcConfig::timeout).
    pub timeout: Option<Duration>,
    /// How a provider is picked.
    pub strategy: Strategy,
    /// Providers it is tried on; `None` is [`RpcConfig::attempts`](super::RpcConfig::attempts).
    pub attempts: Option<u8>,
    /// Call this node only (it must serve the procedure).
    pub to: Option<NodeId>,
}

impl CallOptions {
    /// With a deadline of `timeout` from now.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Picking providers by `strategy`.
    #[must_use]
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Tried on at most `attempts` providers.
    #[must_use]
    pub fn with_attempts(mut self, attempts: u8) -> Self {
        self.attempts = Some(attempts);
        self
    }

    /// Addressed to `node` alone.
    #[must_use]
    pub fn to(mut self, node: NodeId) -> Self {
        self.to = Some(node);
        self
    }
}

/// How a procedure is served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegisterOptions {
    /// Calls held until answered; `None` is [`RpcConfig::queue`](super::RpcConfig::queue).
    pub queue: Option<usize>,
}

/// A procedure served: its id, and the inbox its calls arrive in (as
/// [`Data::Request`](crate::Data::Request)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The registration.
    pub id: RegistrationId,
    /// Its inbox, to read with [`Node::take_data`](crate::Node::take_data).
    pub inbox: InboxId,
}

/// A call, as a provider's handler receives it. Answer it with
/// [`Node::rpc_reply`](crate::Node::rpc_reply) or [`Node::rpc_fail`](crate::Node::rpc_fail).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Names it until it is answered.
    pub id: RequestId,
    /// The registration it came for.
    pub registration: RegistrationId,
    /// The procedure.
    pub procedure: Arc<str>,
    /// The calling node.
    pub caller: NodeId,
    /// When the caller stops waiting, on this node's clock (the caller sent the time left;
    /// the trip there is not subtracted).
    pub deadline: Instant,
    /// The argument.
    pub payload: Vec<u8>,
}

/// A call's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replied {
    /// The provider that answered.
    pub from: NodeId,
    /// Providers the call was sent to, this one included.
    pub attempts: u8,
    /// What the procedure returned.
    pub payload: Vec<u8>,
}

/// Why a call has no result.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// Nobody serves the procedure (discovery found no provider, or every one found said it
    /// does not serve it). Returned as soon as that is known.
    NoResponders,
    /// The deadline passed without an answer.
    Timeout,
    /// The caller cancelled it.
    Cancelled,
    /// The handler answered with an application error (final: not tried elsewhere).
    Remote(String),
    /// Every provider tried was overloaded.
    Overloaded,
    /// The argument is `size` bytes, more than `max` (with the procedure's name), or the
    /// provider found it or its reply too large (then `size` and `max` are zero).
    TooLarge {
        /// The argument's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The procedure's name breaks a rule (topic syntax, no wildcards).
    Procedure(TopicError),
    /// This node has [`RpcConfig::max_calls`](super::RpcConfig::max_calls) in flight: call
    /// again after [`RpcEvent::Ready`].
    Full,
    /// The node is closed.
    Closed,
}

impl CallError {
    /// A short name for scripts: `no_responders`, `timeout`, `cancelled`, `remote`,
    /// `overloaded`, `too_large`, `bad_procedure`, `full`, `closed`.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::NoResponders => "no_responders",
            CallError::Timeout => "timeout",
            CallError::Cancelled => "cancelled",
            CallError::Remote(_) => "remote",
            CallError::Overloaded => "overloaded",
            CallError::TooLarge { .. } => "too_large",
            CallError::Procedure(_) => "bad_procedure",
            CallError::Full => "full",
            CallError::Closed => "closed",
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::NoResponders => f.write_str("no node serves the procedure"),
            CallError::Timeout => f.write_str("no answer before the call's deadline"),
            CallError::Cancelled => f.write_str("the call was cancelled"),
            CallError::Remote(message) => write!(f, "the procedure failed: {message}"),
            CallError::Overloaded => f.write_str("every provider tried was overloaded"),
            CallError::TooLarge { size, max } if *max > 0 => {
                write!(f, "the argument is {size} bytes; the most is {max}")
            }
            CallError::TooLarge { .. } => {
                f.write_str("the provider found the argument or its reply too large")
            }
            CallError::Procedure(e) => write!(f, "invalid procedure name: {e}"),
            CallError::Full => f.write_str("this node has rpc.max_calls calls in flight"),
            CallError::Closed => f.write_str("the node is closed"),
        }
    }
}

impl core::error::Error for CallError {}

/// Why a procedure could not be served.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// The name breaks a rule (topic syntax, no wildcards).
    Procedure(TopicError),
    /// This node serves the procedure already.
    AlreadyServed,
    /// The node has [`RpcConfig::max_registrations`](super::RpcConfig::max_registrations).
    TooMany,
    /// The inbox could not be opened (a queue of zero, say).
    Inbox(InboxError),
    /// The node is closed.
    Closed,
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::Procedure(e) => write!(f, "invalid procedure name: {e}"),
            RegisterError::AlreadyServed => f.write_str("this node serves the procedure already"),
            RegisterError::TooMany => {
                f.write_str("the node serves rpc.max_registrations procedures already")
            }
            RegisterError::Inbox(e) => write!(f, "{e}"),
            RegisterError::Closed => f.write_str("the node is closed"),
        }
    }
}

impl core::error::Error for RegisterError {}

/// Why an answer was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// No such request waits for an answer: answered already, cancelled, past its
    /// deadline, or withdrawn with its procedure.
    Gone,
    /// The reply is `size` bytes, more than `max`; the caller was told `TooLarge`.
    TooLarge {
        /// The reply's size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Gone => f.write_str(
                "the call no longer waits for an answer (answered, cancelled, or past its \
                 deadline)",
            ),
            ReplyError::TooLarge { size, max } => {
                write!(f, "the reply is {size} bytes; the most is {max}")
            }
        }
    }
}

impl core::error::Error for ReplyError {}

/// Why a request stopped waiting for its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ended {
    /// The caller cancelled the call.
    Cancelled,
    /// Its deadline passed.
    Expired,
}

/// What RPC tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcEvent {
    /// A call finished: its result or why there is none. Every call started with
    /// [`Node::rpc_call`](crate::Node::rpc_call) gets exactly one, and it is never dropped
    /// from the event queue to make room.
    Done {
        /// The call.
        id: CallId,
        /// Its outcome.
        result: Result<Replied, CallError>,
    },
    /// A request a handler holds stopped waiting: its answer would go nowhere.
    Ended {
        /// The request.
        request: RequestId,
        /// Why.
        why: Ended,
    },
    /// A call was refused with [`CallError::Full`] and there is room again.
    Ready,
}

/// RPC counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RpcStats {
    /// Calls started.
    pub calls: u64,
    /// Calls that got their result.
    pub replied: u64,
    /// Calls that ended without one (every error).
    pub failed: u64,
    /// Attempts sent (the first of each call included).
    pub attempts: u64,
    /// Attempts after the first: a call moved to another provider.
    pub failovers: u64,
    /// Provider lookups asked of the DHT.
    pub lookups: u64,
    /// Calls received as a provider (attempts included).
    pub received: u64,
    /// Calls run: handed to a handler.
    pub executed: u64,
    /// Calls received again and answered from memory, or dropped while still running.
    pub duplicates: u64,
    /// Calls received past their deadline and dropped.
    pub expired: u64,
    /// Calls answered `Overloaded`.
    pub overloaded: u64,
    /// Calls answered `NotServed`.
    pub not_served: u64,
    /// Refusals and cancellations dropped by the per-peer rate limit.
    pub rate_limited: u64,
    /// Messages that broke the rules and were dropped.
    pub malformed: u64,
    /// Announcements (DHT puts and withdrawals) asked.
    pub announcements: u64,
}
