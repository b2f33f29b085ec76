//! The Kademlia DHT: how nodes find each other and the records they publish (DESIGN.md §3.5).

mod config;
pub mod lookup;
mod machine;
pub mod store;
pub mod table;

#[cfg(test)]
mod tests;

pub use config::DhtConfig;
pub use machine::{Dht, DhtError, DhtEvent, DhtStats, OpId, Send};
pub use store::{record_key, KeyKind, Record, RecordStore, StoreLimits};
pub use table::{Contact, Diversity, Insert, RoutingTable};
