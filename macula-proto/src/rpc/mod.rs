//! Remote procedure calls: providers found through the DHT, a choice of provider per call,
//! failover within the caller's deadline, at most one run per provider for each call, and
//! cancellation.
//!
//! A procedure is named like a pub/sub topic without wildcards (`math.add`). A node serves it
//! with [`Node::rpc_register`](crate::Node::rpc_register): its calls arrive in an inbox as
//! [`Data::Request`](crate::Data::Request), and the handler answers each with
//! [`Node::rpc_reply`](crate::Node::rpc_reply) or [`Node::rpc_fail`](crate::Node::rpc_fail).
//! A node calls it with [`Node::rpc_call`](crate::Node::rpc_call); the outcome comes as
//! [`RpcEvent::Done`]. See [the machine](Rpc) for how calls find providers and fail over, and
//! `docs/rpc.md` for the whole design, including what failover means for an application:
//! a call can run on more than one provider.

mod api;
mod config;
mod machine;
pub mod messages;
mod types;

#[cfg(test)]
mod tests;

pub use config::{RpcConfig, MAX_ATTEMPTS};
pub use machine::{provider_name, Rpc, RpcProvider};
pub use messages::RpcMessage;
pub use types::{
    CallError, CallId, CallOptions, Ended, RegisterError, RegisterOptions, Registered,
    RegistrationId, Replied, ReplyError, Request, RequestId, RpcEvent, RpcStats, Strategy,
};
