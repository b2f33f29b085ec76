//! Macula on tokio: [`Mesh`] is the async handle to a node whose task runs on tokio, and the
//! `macula` command-line tool lives here too.
//!
//! Everything about driving a node is runtime-independent and lives in [`macula_mesh`]; this
//! crate only tells it how to bind a UDP socket, spawn a task, sleep and read the clock on
//! tokio. Time comes from tokio's clock, so `tokio::time::pause` is obeyed.
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

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use macula_mesh::RecvBuf;
use macula_proto::quic::Datagram;
use tokio::io::Interest;

pub use macula_mesh::{Events, MeshConfig, MeshError, MeshStats};

/// A Macula node running on tokio (must be created inside a tokio runtime).
pub type Mesh = macula_mesh::Mesh<Tokio>;

/// The tokio [`Runtime`](macula_mesh::Runtime).
#[derive(Debug)]
pub struct Tokio;

/// A tokio UDP socket with GSO, GRO and ECN through quinn-udp.
#[derive(Debug)]
pub struct TokioUdp {
    io: tokio::net::UdpSocket,
    state: macula_mesh::UdpState,
}

impl macula_mesh::Runtime for Tokio {
    type Socket = TokioUdp;

    fn bind(addr: SocketAddr) -> io::Result<TokioUdp> {
        let socket = std::net::UdpSocket::bind(addr)?;
        let state = macula_mesh::UdpState::new(&socket)?;
        socket.set_nonblocking(true)?;
        Ok(TokioUdp {
            io: tokio::net::UdpSocket::from_std(socket)?,
            state,
        })
    }

    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(task);
    }

    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(deadline.into())
    }

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

impl macula_mesh::UdpSocket for TokioUdp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    async fn recv(&self, buf: &mut RecvBuf) -> io::Result<()> {
        loop {
            self.io.readable().await?;
            let attempt = self
                .io
                .try_io(Interest::READABLE, || self.state.try_recv(&self.io, buf));
            match attempt {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    async fn send(&self, datagram: &Datagram) -> io::Result<()> {
        loop {
            self.io.writable().await?;
            let attempt = self.io.try_io(Interest::WRITABLE, || {
                self.state.try_send(&self.io, datagram)
            });
            match attempt {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}
