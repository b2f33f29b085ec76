//! One module per subsystem's subcommands.

pub mod dht;
pub mod pubsub;
