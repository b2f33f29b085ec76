//! Helpers shared by the end-to-end tests in `tests/tests/`, one scenario per file.
//!
//! Everything here runs real nodes over real UDP sockets on loopback.

use std::net::SocketAddr;

use macula_proto::quic::{Endpoint, EndpointConfig};
use macula_proto::{ApiKey, Config, Event, Identity, Instant, Realm};
use macula_tokio::{Mesh, MeshConfig};
use tokio::net::UdpSocket;
use tokio::time::Instant as TokioInstant;

/// A node configuration for `realm`, with `key` as its API key if given.
pub fn config(realm: &str, key: Option<&[u8]>) -> Config {
    let mut c = Config::new(Realm::new(realm).expect("test realms are valid"));
    c.api_key = key.map(|k| ApiKey::new(k).expect("test keys are long enough"));
    c
}

/// A node on a free loopback port.
pub async fn node(config: Config) -> anyhow::Result<Mesh> {
    Ok(Mesh::bind(MeshConfig::new(config, "127.0.0.1:0".parse()?)).await?)
}

/// A bare [`Endpoint`] driven by hand over a loopback socket, for tests that must misbehave
/// (send raw bytes) or watch the protocol from the inside.
#[allow(missing_debug_implementations)]
pub struct RawPeer {
    /// The endpoint.
    pub endpoint: Endpoint,
    socket: UdpSocket,
    epoch: TokioInstant,
    /// Every event the endpoint emitted, in order.
    pub events: Vec<Event>,
}

impl RawPeer {
    /// A raw peer of `config` on a free loopback port.
    pub async fn bind(config: Config, seed: u64) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let epoch = TokioInstant::now();
        let endpoint = Endpoint::new(
            EndpointConfig::new(config, Identity::from_seed(seed), seed, epoch.into_std()),
            Instant::ZERO,
        )?;
        Ok(RawPeer {
            endpoint,
            socket,
            epoch,
            events: Vec::new(),
        })
    }

    /// The socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// The current core time.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// Sends a raw UDP datagram to `to` from this peer's socket.
    pub async fn send_datagram(&self, to: SocketAddr, bytes: &[u8]) -> anyhow::Result<()> {
        self.socket.send_to(bytes, to).await?;
        Ok(())
    }

    /// Drives the endpoint until `done` holds for its events or `limit` passes. Returns whether
    /// `done` held.
    pub async fn drive_until(
        &mut self,
        limit: std::time::Duration,
        mut done: impl FnMut(&[Event]) -> bool,
    ) -> anyhow::Result<bool> {
        let give_up = TokioInstant::now() + limit;
        let mut buf = vec![0u8; 65_536];
        loop {
            while let Some(d) = self.endpoint.poll_transmit() {
                self.socket.send_to(&d.contents, d.destination).await?;
            }
            while let Some(e) = self.endpoint.poll_event() {
                self.events.push(e);
            }
            if done(&self.events) {
                return Ok(true);
            }
            if TokioInstant::now() >= give_up {
                return Ok(false);
            }
            let timer = self
                .endpoint
                .poll_timeout()
                .map(|t| self.epoch + std::time::Duration::from_micros(t.as_micros()))
                .unwrap_or(give_up)
                .min(give_up);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    let (n, from) = r?;
                    let now = self.now();
                    self.endpoint.handle_datagram(now, from, None, &buf[..n]);
                }
                () = tokio::time::sleep_until(timer) => {
                    let now = self.now();
                    self.endpoint.handle_timeout(now);
                }
            }
        }
    }
}
