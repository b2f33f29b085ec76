//! The Kademlia DHT: how nodes find each other and the records they publish (DESIGN.md §3.5).

pub mod lookup;
pub mod store;
pub mod table;

#[cfg(test)]
mod tests;

pub use store::{record_key, KeyKind, Record, RecordStore, StoreLimits};
pub use table::{Contact, Diversity, Insert, RoutingTable};
