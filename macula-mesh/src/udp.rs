//! UDP with segmentation offload and ECN, through quinn-udp, for every runtime.
//!
//! A runtime adapter keeps its own readiness API (tokio's `try_io`, async-io's `read_with`) and
//! calls these non-blocking operations inside it; the batching, ECN and GRO handling live here
//! once. Where the platform lacks GSO, GRO or ECN, quinn-udp falls back to plain datagrams.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use macula_proto::quic::Datagram;
pub use quinn_udp::UdpSockRef;

/// Largest UDP payload received (and the size of each slot of a [`RecvBuf`]).
pub const MAX_RECEIVE: usize = 65_536;

/// Most slots of a [`RecvBuf`] (what one system call can fill).
pub const MAX_SLOTS: usize = 8;

/// Where receives land: `slots` buffers of [`MAX_RECEIVE`] bytes, each filled by one datagram
/// or one GRO batch, all by one system call, and what each slot received.
#[derive(Debug)]
pub struct RecvBuf {
    bytes: Vec<u8>,
    got: Vec<Received>,
}

impl RecvBuf {
    /// A buffer of `slots` slots (at most [`MAX_SLOTS`]; none for a socket never read).
    pub fn new(slots: usize) -> Self {
        let slots = slots.min(MAX_SLOTS);
        RecvBuf {
            bytes: vec![0; slots * MAX_RECEIVE],
            got: Vec::with_capacity(slots),
        }
    }

    /// What the last receive got, each with its datagrams.
    pub fn received(&self) -> impl Iterator<Item = (&Received, impl Iterator<Item = &[u8]>)> {
        self.got.iter().map(|r| (r, r.segments(&self.bytes)))
    }
}

/// What one slot of a receive got: `len` bytes from `from`, made of datagrams of `stride`
/// bytes back to back (several when the kernel coalesced them with GRO), all with the same ECN
/// mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Where in the buffer they start.
    pub offset: usize,
    /// Bytes in the buffer.
    pub len: usize,
    /// The sender.
    pub from: SocketAddr,
    /// The ECN codepoint of the datagrams (`0b10` ECT(0), `0b01` ECT(1), `0b11` CE).
    pub ecn: Option<u8>,
    /// The size of each datagram in the buffer (the last may be shorter).
    pub stride: usize,
}

impl Received {
    /// The datagrams in `buf[self.offset..][..self.len]`.
    pub fn segments<'a>(&self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        buf[self.offset..][..self.len].chunks(self.stride.max(1))
    }
}

/// The kernel buffer a node asks for on its socket, each way. The system's default (about
/// 208 KiB on Linux) overflows under a burst of batched datagrams: a packet dropped there is
/// lost to QUIC, which then halves its sending rate. The kernel counts this memory, not the
/// process, and allocates it only while datagrams wait.
pub const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// A socket's offload state: what GSO batch size it supports, and the options set on it.
#[derive(Debug)]
pub struct UdpState(quinn_udp::UdpSocketState);

impl UdpState {
    /// Configures `socket` for ECN and offloads (where the platform has them), and asks for
    /// kernel buffers of [`SOCKET_BUFFER`] bytes each way.
    ///
    /// # Errors
    /// The operating system's error.
    pub fn new<S>(socket: &S) -> io::Result<Self>
    where
        for<'a> UdpSockRef<'a>: From<&'a S>,
    {
        let state = quinn_udp::UdpSocketState::new(socket.into())?;
        // Best effort: the system caps it (`net.core.rmem_max`, `wmem_max` on Linux), and a
        // smaller buffer only costs speed.
        let _ = state.set_recv_buffer_size(socket.into(), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size(socket.into(), SOCKET_BUFFER);
        Ok(UdpState(state))
    }

    /// Most datagrams one send may carry (1 without GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.0.max_gso_segments()
    }

    /// One non-blocking receive into as many of `buf`'s slots as there are datagrams waiting
    /// (`WouldBlock` when nothing is there): one system call however many it gets.
    ///
    /// # Errors
    /// The operating system's error.
    pub fn try_recv<S>(&self, socket: &S, buf: &mut RecvBuf) -> io::Result<()>
    where
        for<'a> UdpSockRef<'a>: From<&'a S>,
    {
        buf.got.clear();
        let slots = buf.bytes.len() / MAX_RECEIVE;
        let mut meta = [quinn_udp::RecvMeta::default(); MAX_SLOTS];
        let mut chunks = buf.bytes.chunks_mut(MAX_RECEIVE);
        let mut bufs: [IoSliceMut<'_>; MAX_SLOTS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let n = self
            .0
            .recv(socket.into(), &mut bufs[..slots], &mut meta[..slots])?;
        for (slot, m) in meta[..n].iter().enumerate() {
            buf.got.push(Received {
                offset: slot * MAX_RECEIVE,
                len: m.len,
                from: m.addr,
                ecn: m.ecn.map(|e| e as u8),
                stride: m.stride,
            });
        }
        Ok(())
    }

    /// One non-blocking send of a datagram or GSO batch (`WouldBlock` when the socket is full).
    ///
    /// # Errors
    /// The operating system's error.
    pub fn try_send<S>(&self, socket: &S, datagram: &Datagram) -> io::Result<()>
    where
        for<'a> UdpSockRef<'a>: From<&'a S>,
    {
        let ecn = datagram.ecn.and_then(quinn_udp::EcnCodepoint::from_bits);
        if datagram.segment_size.is_some() && self.max_gso_segments() == 1 {
            // quinn-udp turned GSO off after a send failed (some NICs, tunnels and VMs): a batch
            // made before that goes out as separate datagrams.
            for segment in datagram.segments() {
                let transmit = quinn_udp::Transmit {
                    destination: datagram.destination,
                    ecn,
                    contents: segment,
                    segment_size: None,
                    src_ip: None,
                };
                self.0.send(socket.into(), &transmit)?;
            }
            return Ok(());
        }
        let transmit = quinn_udp::Transmit {
            destination: datagram.destination,
            ecn,
            contents: &datagram.contents,
            segment_size: datagram.segment_size,
            src_ip: None,
        };
        self.0.send(socket.into(), &transmit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_asks_for_large_kernel_buffers_up_to_the_system_cap() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let state = UdpState::new(&socket).unwrap();
        let cap = |name: &str| -> usize {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        // Linux reports twice what it grants (the other half is its own bookkeeping).
        let expected = SOCKET_BUFFER.min(cap("rmem_max"));
        let got = state.0.recv_buffer_size((&socket).into()).unwrap();
        assert!(got >= expected, "receive buffer {got}, expected {expected}");
        let expected = SOCKET_BUFFER.min(cap("wmem_max"));
        let got = state.0.send_buffer_size((&socket).into()).unwrap();
        assert!(got >= expected, "send buffer {got}, expected {expected}");
    }
}
