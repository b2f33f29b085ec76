//! What an async runtime must provide to drive a Macula node.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

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

/// A runtime's UDP socket.
pub trait UdpSocket: Send + Sync + 'static {
    /// The bound address.
    ///
    /// # Errors
    /// The operating system's error.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Receives one datagram.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;

    /// Sends one datagram.
    fn send_to(&self, buf: &[u8], to: SocketAddr)
        -> impl Future<Output = io::Result<usize>> + Send;
}
