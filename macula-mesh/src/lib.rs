//! The runtime-independent half of Macula's async adapters.
//!
//! [`Mesh<R>`](Mesh) is the async handle to a running node and the driver loop behind it: one task
//! owns the UDP socket, one timer and a command channel, and runs
//! [`macula_proto::quic::Endpoint`]'s loop (receive a datagram, a timer expiry or a command; feed
//! the core; drain its datagrams and events). Every protocol decision is the core's; this crate
//! only moves bytes and time, and it does so the same way on every runtime. A runtime adapter
//! implements [`Runtime`] (bind a UDP socket, spawn, sleep, read the clock) and names the
//! result: `macula_tokio::Mesh` is `Mesh<macula_tokio::Tokio>`, `macula_smol::Mesh` is
//! `Mesh<macula_smol::Smol>`. Nodes on different runtimes interoperate: they speak the same
//! protocol over UDP.

pub mod api;
pub mod audit;
mod driver;
#[doc(hidden)]
pub mod fuzzing;
mod handoff;
mod mesh;
mod oneshot;
mod runtime;
pub mod store;
mod udp;

pub use api::pubsub::{PublishReport, Subscription};
pub use api::rpc::{Incoming, PendingCall, Service};
pub use driver::{MAX_HELD_BYTES, MAX_HELD_SENDS};
pub use mesh::{Events, Inbox, Mesh, MeshConfig, MeshError, MeshStats};
pub use runtime::{Runtime, UdpSocket};
pub use store::{DataDir, StoreError};
pub use udp::{Received, RecvBuf, UdpSockRef, UdpState, MAX_RECEIVE, MAX_SLOTS, SOCKET_BUFFER};
