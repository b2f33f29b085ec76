//! Macula on smol: [`Mesh`] is the async handle to a node whose task runs on smol's executor.
//!
//! The same API as `macula-tokio`, from the same code: everything about driving a node lives in
//! [`macula_mesh`]; this crate only tells it how to bind a UDP socket (async-io), spawn a task,
//! sleep and read the clock. A smol node and a tokio node interoperate.
//!
//! ```no_run
//! use macula_smol::{Mesh, MeshConfig};
//! use macula_proto::{Config, Realm};
//!
//! smol::block_on(async {
//!     let realm = Realm::new("io.example.dev").expect("a valid realm name");
//!     let a = Mesh::bind(MeshConfig::new(Config::new(realm.clone()), "127.0.0.1:0".parse().unwrap())).await?;
//!     let b = Mesh::bind(MeshConfig::new(Config::new(realm), "127.0.0.1:0".parse().unwrap())).await?;
//!     let peer = a.connect(b.local_addr()).await?;
//!     println!("{peer} answered in {} µs", a.ping(peer).await?.as_micros());
//!     a.close().await;
//!     Ok::<_, macula_smol::MeshError>(())
//! }).unwrap();
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use async_io::Async;

use macula_mesh::RecvBuf;
use macula_proto::quic::Datagram;

pub use macula_mesh::{Events, MeshConfig, MeshError, MeshStats};

/// A Macula node running on smol.
pub type Mesh = macula_mesh::Mesh<Smol>;

/// The smol [`Runtime`](macula_mesh::Runtime): tasks go to smol's global executor, sockets
/// and timers to async-io's reactor.
#[derive(Debug)]
pub struct Smol;

/// An async-io UDP socket with GSO, GRO and ECN through quinn-udp.
#[derive(Debug)]
pub struct SmolUdp {
    io: Async<std::net::UdpSocket>,
    state: macula_mesh::UdpState,
}

impl macula_mesh::Runtime for Smol {
    type Socket = SmolUdp;

    fn bind(addr: SocketAddr) -> io::Result<SmolUdp> {
        let socket = std::net::UdpSocket::bind(addr)?;
        let state = macula_mesh::UdpState::new(&socket)?;
        Ok(SmolUdp {
            io: Async::new(socket)?,
            state,
        })
    }

    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        smol::spawn(task).detach();
    }

    async fn sleep_until(deadline: Instant) {
        async_io::Timer::at(deadline).await;
    }

    fn now() -> Instant {
        Instant::now()
    }
}

impl macula_mesh::UdpSocket for SmolUdp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    async fn recv(&self, buf: &mut RecvBuf) -> io::Result<()> {
        self.io
            .read_with(|socket| self.state.try_recv(socket, buf))
            .await
    }

    async fn send(&self, datagram: &Datagram) -> io::Result<()> {
        self.io
            .write_with(|socket| self.state.try_send(socket, datagram))
            .await
    }
}
