//! The endpoint's plain data: the datagrams it sends, its counters, its parameters and why it
//! could not be made.

use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use std::time::Instant as StdInstant;

use super::tls;
#[cfg(doc)]
use super::Endpoint;
#[cfg(doc)]
use crate::node::Node;
use crate::node::Socket;
use crate::{Config, ConfigError, Identity};

/// One UDP datagram to send, or with `segment_size` a GSO batch: several datagrams of that size
/// back to back (the last may be shorter). Batches are only made after
/// [`Endpoint::set_max_datagrams`] allows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The socket to send it from: QUIC's are all [`Socket::Main`]; a NAT observer's answer may
    /// come from the [auxiliary](Socket::Auxiliary) one (a driver without one drops those).
    pub socket: Socket,
    /// Where to send it.
    pub destination: SocketAddr,
    /// The ECN codepoint to mark it with (`0b10` ECT(0), `0b01` ECT(1), `0b11` CE).
    pub ecn: Option<u8>,
    /// The payload.
    pub contents: Vec<u8>,
    /// For a GSO batch, the size of each datagram in `contents`.
    pub segment_size: Option<usize>,
}

impl Datagram {
    /// The datagrams this transmit holds (one, or the segments of a GSO batch).
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> {
        let size = self.segment_size.unwrap_or(self.contents.len()).max(1);
        self.contents.chunks(size)
    }
}

impl fmt::Debug for Datagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datagram")
            .field("socket", &self.socket)
            .field("destination", &self.destination)
            .field("len", &self.contents.len())
            .finish()
    }
}

/// Counters of the QUIC layer (the node's own are in [`Node::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Datagrams handed to [`Endpoint::handle_datagram`].
    pub datagrams_received: u64,
    /// Received datagrams discarded: by quinn-proto (garbage, unknown connection, bad version),
    /// or neither QUIC nor NAT datagrams.
    pub datagrams_dropped: u64,
    /// Datagrams emitted by [`Endpoint::poll_transmit`].
    pub datagrams_sent: u64,
    /// Inbound QUIC connections refused because `max_peers + max_pending_handshakes` were open.
    pub connections_refused: u64,
    /// Connections whose TLS handshake failed (bad certificate, wrong ALPN, ...), or that did not
    /// finish it within `handshake_timeout`.
    pub tls_failures: u64,
    /// Inbound connections asked to prove their address with a QUIC Retry.
    pub retries: u64,
    /// Transmits that carried more than one datagram (GSO batches).
    pub gso_batches: u64,
    /// Datagrams received with an ECN mark (the path carries ECN).
    pub ecn_received: u64,
    /// Extra streams a peer opened that Macula does not use yet; each was stopped.
    pub streams_rejected: u64,
    /// Events dropped because the application did not drain `max_queued_events` of them (the
    /// node's count, [`Stats::events_dropped`](crate::Stats::events_dropped): events wait in
    /// the node's queue, which never drops a call's outcome).
    pub events_dropped: u64,
    /// Gauge: QUIC connections open (including ones draining after close).
    pub connections: usize,
}

/// Parameters of an [`Endpoint`].
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// The node's configuration.
    pub node: Config,
    /// The node's identity; its key signs the TLS certificate.
    pub identity: Identity,
    /// Seed of all the node's randomness.
    pub seed: u64,
    /// The `std::time::Instant` that the core's [`Instant::ZERO`](crate::Instant::ZERO) stands for.
    pub epoch: StdInstant,
    /// **Insecure; simulation only.** Draw all QUIC and TLS randomness (connection ids, TLS
    /// randoms, ephemeral keys) from `seed`, so a run replays bit for bit. Anyone who knows the
    /// seed can decrypt the sessions. Default: `false` (operating-system randomness).
    pub seeded_crypto: bool,
    /// Development (self-signed identity certificates only) or production TLS (CA-signed
    /// certificates for seeds). Default: development.
    pub tls: tls::TlsMode,
}

impl EndpointConfig {
    /// A configuration with operating-system randomness for QUIC and TLS.
    pub fn new(node: Config, identity: Identity, seed: u64, epoch: StdInstant) -> Self {
        EndpointConfig {
            node,
            identity,
            seed,
            epoch,
            seeded_crypto: false,
            tls: tls::TlsMode::Development,
        }
    }
}

/// Why an endpoint could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndpointError {
    /// The node configuration is invalid.
    Config(ConfigError),
    /// TLS could not be set up.
    Tls(rustls::Error),
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::Config(e) => write!(f, "invalid configuration: {e}"),
            EndpointError::Tls(e) => write!(f, "TLS setup failed: {e}"),
        }
    }
}

impl std::error::Error for EndpointError {}

impl From<ConfigError> for EndpointError {
    fn from(e: ConfigError) -> Self {
        EndpointError::Config(e)
    }
}

impl From<rustls::Error> for EndpointError {
    fn from(e: rustls::Error) -> Self {
        EndpointError::Tls(e)
    }
}
