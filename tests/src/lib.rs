//! Helpers shared by the end-to-end tests in `tests/tests/`, one scenario per file.
//!
//! Everything here runs real nodes over real UDP sockets on loopback. Test bodies are generic
//! over the [`Runtime`]; [`on_both_runtimes!`] runs each on tokio and on smol.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use macula_mesh::{Mesh, MeshConfig, Runtime, UdpSocket};
use macula_proto::quic::{Datagram, Endpoint, EndpointConfig};
use macula_proto::{ApiKey, Config, Event, Identity, Instant, NodeId, Realm};

pub use macula_smol::Smol;
pub use macula_tokio::Tokio;

/// Generates, for each generic test body `name::<R>() -> anyhow::Result<()>`, a module `name`
/// with a `tokio` test and a `smol` test.
#[macro_export]
macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn tokio() -> anyhow::Result<()> {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()?
                        .block_on(super::$name::<$crate::Tokio>())
                }

                #[test]
                fn smol() -> anyhow::Result<()> {
                    smol::block_on(super::$name::<$crate::Smol>())
                }
            }
        )*
    };
}

/// A node configuration for `realm`, with `key` as its API key if given.
pub fn config(realm: &str, key: Option<&[u8]>) -> Config {
    let mut c = Config::new(Realm::new(realm).expect("test realms are valid"));
    c.api_key = key.map(|k| ApiKey::new(k).expect("test keys are long enough"));
    c
}

/// A node on a free loopback port, on runtime `R`.
pub async fn node<R: Runtime>(config: Config) -> anyhow::Result<Mesh<R>> {
    Ok(Mesh::<R>::bind(MeshConfig::new(config, "127.0.0.1:0".parse()?)).await?)
}

/// Sleeps on runtime `R`.
pub async fn sleep<R: Runtime>(d: Duration) {
    R::sleep_until(R::now() + d).await;
}

/// `fut`'s output, or `None` if `limit` passes first.
pub async fn timeout<R: Runtime, T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep::<R>(limit).await;
        None
    })
    .await
}

/// Waits (at most ten seconds) for `from` to go down and asserts it said a clean goodbye. Other
/// events meanwhile (peers the DHT dials, its results) are skipped.
pub async fn expect_goodbye<R: Runtime>(events: &mut macula_mesh::Events, from: NodeId) {
    let down = async {
        loop {
            match events.recv().await {
                Some(Event::PeerDown { peer, reason, .. }) if peer == from => break Some(reason),
                Some(_) => continue,
                None => break None,
            }
        }
    };
    let reason = timeout::<R, _>(Duration::from_secs(10), down)
        .await
        .flatten();
    assert_eq!(
        reason,
        Some(macula_proto::DownReason::Link(
            macula_proto::LinkError::ClosedByPeer(macula_proto::CloseCode::Goodbye)
        )),
        "expected a goodbye from {from}"
    );
}

/// Runs every future as its own task on `R` and collects the outputs in order.
pub async fn join_all<R: Runtime, T: Send + 'static>(
    futures: Vec<impl Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let mut slots = Vec::new();
    for fut in futures {
        let (tx, rx) = async_channel::bounded(1);
        R::spawn(async move {
            let _ = tx.send(fut.await).await;
        });
        slots.push(rx);
    }
    let mut out = Vec::new();
    for rx in slots {
        out.push(
            rx.recv()
                .await
                .expect("spawned test tasks run to completion"),
        );
    }
    out
}

/// A bare [`Endpoint`] driven by hand over a loopback socket, for tests that must misbehave
/// (send raw bytes) or watch the protocol from the inside.
#[allow(missing_debug_implementations)]
pub struct RawPeer<R: Runtime> {
    /// The endpoint.
    pub endpoint: Endpoint,
    socket: R::Socket,
    epoch: std::time::Instant,
    /// Every event the endpoint emitted, in order.
    pub events: Vec<Event>,
}

impl<R: Runtime> RawPeer<R> {
    /// A raw peer of `config` on a free loopback port.
    pub async fn bind(config: Config, seed: u64) -> anyhow::Result<Self> {
        let socket = R::bind("127.0.0.1:0".parse()?)?;
        let epoch = R::now();
        let mut endpoint = Endpoint::new(
            EndpointConfig::new(config, Identity::from_seed(seed), seed, epoch),
            Instant::ZERO,
        )?;
        endpoint.set_max_datagrams(socket.max_gso_segments());
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
        Instant::from_micros(R::now().saturating_duration_since(self.epoch).as_micros() as u64)
    }

    /// Sends a raw UDP datagram to `to` from this peer's socket.
    pub async fn send_datagram(&self, to: SocketAddr, bytes: &[u8]) -> anyhow::Result<()> {
        let datagram = Datagram {
            socket: macula_proto::node::Socket::Main,
            destination: to,
            ecn: None,
            contents: bytes.to_vec(),
            segment_size: None,
        };
        self.socket.send(&datagram).await?;
        Ok(())
    }

    /// Drives the endpoint until `done` holds for its events or `limit` passes. Returns whether
    /// `done` held.
    pub async fn drive_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&[Event]) -> bool,
    ) -> anyhow::Result<bool> {
        let give_up = R::now() + limit;
        let mut buf = macula_mesh::RecvBuf::new(1);
        loop {
            while let Some(d) = self.endpoint.poll_transmit() {
                self.socket.send(&d).await?;
            }
            while let Some(e) = self.endpoint.poll_event() {
                self.events.push(e);
            }
            if done(&self.events) {
                return Ok(true);
            }
            if R::now() >= give_up {
                return Ok(false);
            }
            let timer = self
                .endpoint
                .poll_timeout()
                .map(|t| self.epoch + Duration::from_micros(t.as_micros()))
                .unwrap_or(give_up)
                .min(give_up);
            let received =
                futures_lite::future::or(async { Some(self.socket.recv(&mut buf).await) }, async {
                    R::sleep_until(timer).await;
                    None
                })
                .await;
            let now = self.now();
            match received {
                Some(r) => {
                    r?;
                    for (received, datagrams) in buf.received() {
                        for datagram in datagrams {
                            self.endpoint.handle_datagram(
                                received.from,
                                received.ecn,
                                datagram,
                                now,
                            );
                        }
                    }
                }
                None => self.endpoint.handle_timeout(now),
            }
        }
    }
}
