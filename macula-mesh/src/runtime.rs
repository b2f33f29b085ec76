//! What an async runtime must provide to drive a Macula node.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use macula_proto::quic::Datagram;

use crate::udp::RecvBuf;

/// An async runtime: a UDP socket, a timer, a clock and a way to spawn the node's task.
/// `macula-tokio` and `macula-smol` each implement it in a few lines; everything else about
/// driving a node lives once, in this crate.
pub trait Runtime: Send + Sync + 'static {
    /// The runtime's UDP socket.
    type Socket: UdpSocket;

    /// Binds a UDP socket.
    ///
    /// # Errors
    /// The operating system's error.
    fn bind(addr: SocketAddr) -> io::Result<Self::Socket>;

    /// Runs `task` in the background until it finishes.
    fn spawn(task: impl Future<Output = ()> + Send + 'static);

    /// Completes at `deadline`.
    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send;

    /// The runtime's clock (so a runtime that can pause time, like tokio's test clock, is
    /// obeyed).
    fn now() -> Instant;
}

/// A runtime's UDP socket, sending and receiving through [`UdpState`](crate::UdpState) so
/// that GSO, GRO and ECN work wherever the platform has them.
pub trait UdpSocket: Send + Sync + 'static {
    /// The bound address.
    ///
    /// # Errors
    /// The operating system's error.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Most datagrams one send may carry (1 without GSO).
    fn max_gso_segments(&self) -> usize;

    /// Waits for datagrams, then receives as many as `buf` has slots for (each slot one
    /// datagram or several coalesced by GRO) in one system call.
    fn recv(&self, buf: &mut RecvBuf) -> impl Future<Output = io::Result<()>> + Send;

    /// Sends one datagram or a GSO batch.
    fn send(&self, datagram: &Datagram) -> impl Future<Output = io::Result<()>> + Send;
}
