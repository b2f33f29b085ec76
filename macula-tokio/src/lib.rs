//! Macula on tokio: a thin driver for [`macula_proto::quic::Endpoint`] and an async [`Mesh`]
//! handle.
//!
//! One task owns the UDP socket, one timer and a command channel, and runs the endpoint's loop:
//! receive a datagram, a timer expiry or a command; feed it to the core; drain the core's
//! datagrams and events. Every protocol decision is the core's; this crate only moves bytes and
//! time. Time comes from tokio's clock, so `tokio::time::pause` works in tests.
//!
//! ```no_run
//! # async fn run() -> Result<(), macula_tokio::MeshError> {
//! use macula_tokio::{Mesh, MeshConfig};
//! use macula_proto::{Config, Realm};
//!
//! let realm = Realm::new("io.example.dev").expect("a valid realm name");
//! let a = Mesh::bind(MeshConfig::new(Config::new(realm.clone()), "127.0.0.1:0".parse().unwrap())).await?;
//! let b = Mesh::bind(MeshConfig::new(Config::new(realm), "127.0.0.1:0".parse().unwrap())).await?;
//! let peer = a.connect(b.local_addr()).await?;
//! let rtt = a.ping(peer).await?;
//! println!("{peer} answered in {} µs", rtt.as_micros());
//! a.close().await;
//! b.close().await;
//! # Ok(()) }
//! ```

mod driver;
mod mesh;

pub use mesh::{Events, Mesh, MeshConfig, MeshError, MeshStats};
