//! One module per subsystem: the async face of its commands, each a few lines over
//! [`Mesh::call`](crate::Mesh) (start the operation on the node's task, file a waiter for its
//! result). Adding a subsystem adds a file here and a method on [`Mesh`](crate::Mesh).

pub mod dht;
#[cfg(feature = "test-protocols")]
pub mod echo;
pub mod nat;
pub mod pubsub;
pub mod rpc;
