//! QUIC mode: real datagrams between the nodes' sockets, through NAT boxes where there are
//! some.

use std::net::SocketAddr;

use macula_proto::node::Socket;
use macula_proto::Duration;

use crate::host::Host;
use crate::nat::Dest;
use crate::net::{chance, NodeIdx};

use super::*;

impl Sim {
    pub(super) fn send_datagram(
        &mut self,
        from: NodeIdx,
        socket: Socket,
        to: SocketAddr,
        ecn: Option<u8>,
        bytes: Vec<u8>,
    ) {
        let n = self.nodes.len();
        let Some((dest, source)) = self
            .nats
            .outbound(from, socket, to, n, self.now, &mut self.rng)
        else {
            self.stats.unroutable += 1;
            return;
        };
        let target = match dest {
            Dest::Node(t, _) => t,
            Dest::Box(b, _) | Dest::Hairpin(b, _) => self.nats.home(b).unwrap_or(from),
        };
        if self.blocked(from, target) {
            self.stats.partitioned += 1;
            return;
        }
        let p = self.path(from, target);
        if p.loss > 0.0 && chance(&mut self.rng) < p.loss {
            self.stats.lost += 1;
            return;
        }
        let Some(mut delay) = self.delay(from, target, 0, bytes.len(), false) else {
            self.stats.lost += 1;
            return;
        };
        if p.reorder > 0.0 && chance(&mut self.rng) < p.reorder {
            delay = delay + Duration::from_micros(self.rng.below(p.latency.as_micros() * 4 + 1));
        }
        if p.duplicate > 0.0 && chance(&mut self.rng) < p.duplicate {
            self.stats.duplicated += 1;
            let extra = Duration::from_micros(self.rng.below(p.jitter.as_micros() + 1));
            self.queue.push(
                self.now + delay + extra,
                Ev::Datagram {
                    to: dest,
                    from: source,
                    ecn,
                    bytes: bytes.clone(),
                },
            );
        }
        self.queue.push(
            self.now + delay,
            Ev::Datagram {
                to: dest,
                from: source,
                ecn,
                bytes,
            },
        );
    }

    pub(super) fn deliver_datagram(
        &mut self,
        to: Dest,
        from: SocketAddr,
        ecn: Option<u8>,
        bytes: Vec<u8>,
    ) {
        let (to, socket) = match to {
            Dest::Node(n, socket) => (n, socket),
            Dest::Box(b, port) | Dest::Hairpin(b, port) => {
                let hairpin = matches!(to, Dest::Hairpin(..));
                match self.nats.inbound(b, port, from, hairpin, self.now) {
                    Some(inside) => inside,
                    None => {
                        self.stats.nat_filtered += 1;
                        return;
                    }
                }
            }
        };
        if !self.is_up(to) {
            return;
        }
        self.stats.delivered += 1;
        let now = self.now;
        self.digest.record(now.as_micros(), to, 0x20);
        self.digest.bytes(&bytes);
        self.with_host(to, |h| match (h, socket) {
            (Host::Quic(ep), Socket::Main) => ep.handle_datagram(from, ecn, &bytes, now),
            (Host::Quic(ep), Socket::Auxiliary) => ep.handle_auxiliary_datagram(from, &bytes, now),
            (Host::Frames(_), _) => unreachable!("datagrams exist in QUIC mode only"),
        });
        self.drain(to);
    }
}
