//! The Kademlia DHT: how nodes find each other and the records they publish.
//!
//! A subsystem of the node (see `docs/architecture.md`): its messages are in [`messages`], its
//! state machine in [`Dht`], and the node's commands for it (`Node::dht_put`, ...) in `api.rs`.

mod api;
mod config;
pub mod lookup;
mod machine;
pub mod messages;
mod serve;
pub mod store;
pub mod table;
mod types;

#[cfg(test)]
mod tests;

pub use config::DhtConfig;
pub use machine::Dht;
pub use store::{record_key, KeyKind, Record, RecordStore, StoreLimits};
pub use table::{Contact, Diversity, Insert, RoutingTable};
pub(crate) use types::DhtAsk;
pub use types::{DhtError, DhtEvent, DhtStats, OpId};
