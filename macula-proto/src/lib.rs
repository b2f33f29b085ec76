//! The sans-IO protocol core of Macula, a peer-to-peer mesh.
//!
//! This crate makes every protocol decision and performs no IO: no sockets, threads, clocks,
//! `async` or OS randomness. A driver (the tokio or smol adapter, the simulator, a test) feeds it
//! inputs with the time they happened and carries out the outputs it asks for. See [`Node`] for
//! the method kinds and the drain contract.
//!
//! Everything but the [`quic`] module is `no_std` + `alloc`:
//! `cargo build -p macula-proto --no-default-features` builds it alone.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod auth;
pub mod config;
pub mod dht;
pub mod discovery;
#[cfg(feature = "test-protocols")]
pub mod echo;
#[doc(hidden)]
pub mod fuzzing;
mod id;
pub mod nat;
pub mod node;
pub mod pubsub;
mod rate;
mod rng;
pub mod rpc;
#[cfg(test)]
mod testnet;
pub mod time;
pub mod trust;
pub mod wire;

#[cfg(feature = "quic")]
pub mod quic;

/// `docs/embedding.md`, the guide to driving the core from your own loop: its code blocks run
/// as doctests of this crate.
#[cfg(all(doctest, feature = "quic"))]
#[doc = include_str!("../../docs/embedding.md")]
pub struct EmbeddingGuide;

pub use config::{ApiKey, Config, ConfigError, Realm, Roles};
pub use id::{verify_signature, Distance, Fingerprint, Identity, NodeId, ParseIdError, ShortId};
pub use node::{
    CertificateProblem, ConnectFailure, Data, Direction, DownReason, Event, InboxError, InboxId,
    LinkError, LinkId, LinkInfo, Node, Overflow, PeerInfo, PingError, PingId, RefusalCounts,
    SendError, Stats, Transmit, MAX_INBOXES, MAX_INBOX_CAPACITY,
};
pub use rate::Limit;
pub use rng::Rng;
pub use time::{Duration, Instant};
pub use wire::{Channel, CloseCode, ProtocolId, RefuseReason};
