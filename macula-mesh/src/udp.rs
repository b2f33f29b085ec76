//! UDP with segmentation offload and ECN, through quinn-udp, for every runtime.
//!
//! A runtime adapter keeps its own readiness API (tokio's `try_io`, async-io's `read_with`) and
//! calls these non-blocking operations inside it; the batching, ECN and GRO handling live here
//! once. Where the platform lacks GSO, GRO or ECN, quinn-udp falls back to plain datagrams.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use macula_proto::quic::Datagram;
pub use quinn_udp::UdpSockRef;

/// What one receive returned: `len` bytes from `from`, made of datagrams of `stride` bytes back
/// to back (several when the kernel coalesced them with GRO), all with the same ECN mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
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
    /// The datagrams in `buf[..self.len]`.
    pub fn segments<'a>(&self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        buf[..self.len].chunks(self.stride.max(1))
    }
}

/// A socket's offload state: what GSO batch size it supports, and the options set on it.
#[derive(Debug)]
pub struct UdpState(quinn_udp::UdpSocketState);

impl UdpState {
    /// Configures `socket` for ECN and offloads (where the platform has them).
    ///
    /// # Errors
    /// The operating system's error.
    pub fn new(socket: UdpSockRef<'_>) -> io::Result<Self> {
        Ok(UdpState(quinn_udp::UdpSocketState::new(socket)?))
    }

    /// Most datagrams one send may carry (1 without GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.0.max_gso_segments()
    }

    /// One non-blocking receive (`WouldBlock` when nothing is there).
    ///
    /// # Errors
    /// The operating system's error.
    pub fn try_recv<S>(&self, socket: &S, buf: &mut [u8]) -> io::Result<Received>
    where
        for<'a> UdpSockRef<'a>: From<&'a S>,
    {
        let mut meta = [quinn_udp::RecvMeta::default()];
        let mut bufs = [IoSliceMut::new(buf)];
        self.0.recv(socket.into(), &mut bufs, &mut meta)?;
        let m = meta[0];
        Ok(Received {
            len: m.len,
            from: m.addr,
            ecn: m.ecn.map(|e| e as u8),
            stride: m.stride,
        })
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
