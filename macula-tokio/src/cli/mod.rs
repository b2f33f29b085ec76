//! One module per subsystem's subcommands.

pub mod bench;
pub mod dht;
pub mod keys;
pub mod pubsub;
pub mod rpc;
pub mod trust;
