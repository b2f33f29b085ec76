//! One module per subsystem's subcommands.

pub mod bench;
pub mod cert;
pub mod dht;
pub mod join;
pub mod keys;
mod latencies;
pub mod metrics;
pub mod nat;
pub mod pubsub;
pub mod rpc;
pub mod settings;
pub mod trust;
