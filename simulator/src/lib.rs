//! `macula-sim`: a deterministic, discrete-event simulator for whole Macula meshes.
//!
//! One thread, one virtual clock, every node. The clock jumps from event to event; nothing
//! sleeps and nothing is kept per pair of nodes that never talk. Two fidelities:
//!
//! - [`Mode::Frames`] drives bare [`macula_proto::Node`]s over modelled QUIC connections
//!   (reliable ordered pipes: a handshake costs its round trips, loss costs retransmission
//!   delays, a partition holds traffic): tens of thousands of nodes per second of wall time.
//! - [`Mode::Quic`] drives full [`macula_proto::quic::Endpoint`]s (real quinn-proto and rustls)
//!   over simulated UDP with latency, jitter, loss, duplication and reordering.
//!
//! One master seed derives every node's identity and seed, every network draw and the
//! scenario's randomness; QUIC mode seeds quinn-proto and rustls too. The [trace
//! digest](Sim::trace_digest) hashes every delivery and event with its time: the same seed gives
//! the same digest. [Invariant checkers](check) watch every run.
//!
//! ```
//! use macula_sim::{SimBuilder, Mode};
//! use macula_proto::{Duration, Instant};
//!
//! let mut sim = SimBuilder::new().seed(7).nodes(3).mode(Mode::Frames).build();
//! sim.connect(1, 0);
//! sim.connect(2, 0);
//! let up = sim.run_until(Instant::ZERO + Duration::from_secs(5), |s| {
//!     s.node(0).is_some_and(|n| n.peer_count() == 2)
//! });
//! assert!(up);
//! assert!(sim.verdicts().iter().all(|v| v.ok));
//! ```
//!
//! See `docs/simulator.md` for scenarios, checkers and replaying a seed.

pub mod check;
mod cpu;
pub mod faults;
mod host;
pub mod memory;
pub mod nat;
pub mod nat_matrix;
pub mod net;
pub mod planted;
mod queue;
pub mod scenario;
mod sim;
mod slab;
pub mod sweep;
pub mod trace;

pub use net::{LinkModel, NodeIdx, PathProps};
pub use sim::{Mode, NodeEvent, Sim, SimBuilder, SimStats, Step, LARGE_MESH_NODES};
