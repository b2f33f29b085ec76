//! Relay circuits: a gateway forwards the packets of an end-to-end QUIC connection between two
//! nodes that can't reach each other, over its links to both.
//!
//! A node behind NAT keeps a *reservation* at a gateway: a link it keeps open, on which the
//! gateway agreed to hand it circuits. Another node *opens* a circuit to it there: it names
//! the circuit on its own link to the gateway (a number below 2^63) and sends its packets at
//! once; the gateway names the circuit on its link to the target (a number from 2^63 up, so
//! the two kinds never meet) and tells the target who opened it. Each end sees the circuit as
//! a *virtual address* ([`circuit_addr`]) that its QUIC stack sends to and hears from, so the
//! connection inside is ordinary QUIC and TLS between the two ends: the gateway sees opaque,
//! encrypted packets it can neither read nor forge, and the node above sees an ordinary link.
//!
//! A gateway bounds everything it holds: reservations, circuits, circuits per node, bytes and
//! lifetime per circuit. A packet it can't forward at once (the next link's channel is full)
//! is dropped, as a router drops one; QUIC sends it again.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::config::NatConfig;
use super::messages::{NatMessage, RelayRefusal};
use crate::id::NodeId;
use crate::node::subsystem::Cx;
use crate::time::Instant;

/// Circuit numbers a gateway chooses start here; an opener's are below.
const GATEWAY_CHOSEN: u64 = 1 << 63;

/// The first two groups of every virtual address (`fd00:6d61::/32`, a unique-local range; such
/// addresses never leave the node).
const VIRTUAL: [u16; 2] = [0xfd00, 0x6d61];

/// The virtual address of this node's circuit `v`: its QUIC stack's peer address for the
/// connection carried by the circuit. Each circuit has its own /64, so rate limits that group
/// IPv6 sources by /64 tell circuits apart.
pub fn circuit_addr(v: u64) -> SocketAddr {
    let g = |shift: u32| (v >> shift) as u16;
    let ip = Ipv6Addr::new(VIRTUAL[0], VIRTUAL[1], g(16), g(0), g(48), g(32), 0, 1);
    SocketAddr::new(IpAddr::V6(ip), 1)
}

/// The circuit a virtual address stands for, if it is one.
pub fn circuit_of(addr: SocketAddr) -> Option<u64> {
    let IpAddr::V6(ip) = addr.ip() else {
        return None;
    };
    let s = ip.segments();
    let ours = s[..2] == VIRTUAL && s[6] == 0 && s[7] == 1 && addr.port() == 1;
    ours.then(|| {
        (u64::from(s[4]) << 48)
            | (u64::from(s[5]) << 32)
            | (u64::from(s[2]) << 16)
            | u64::from(s[3])
    })
}

/// A circuit through this node, as a gateway.
#[derive(Debug)]
struct Circuit {
    /// The opener and its number for the circuit.
    opener: (NodeId, u64),
    /// The target and the number this gateway gave the circuit on its link.
    target: (NodeId, u64),
    bytes: u64,
    since: Instant,
}

/// Gateway counters and gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Gauge: reservations held (as a gateway).
    pub reservations: usize,
    /// Gauge: circuits open through this node (as a gateway).
    pub circuits: usize,
    /// Circuits opened through this node.
    pub circuits_opened: u64,
    /// Circuits refused or closed by a limit (full, per-node, bytes, duration).
    pub circuits_refused: u64,
    /// Packets forwarded.
    pub packets_relayed: u64,
    /// Bytes of packets forwarded.
    pub bytes_relayed: u64,
    /// Packets dropped because the next link's channel was full.
    pub packets_dropped: u64,
    /// Gauge: circuits this node is an end of.
    pub own_circuits: usize,
    /// Gauge: gateways holding a reservation for this node.
    pub reserved_at: usize,
}

/// What a node keeps as a gateway.
#[derive(Debug, Default)]
pub(crate) struct Gateway {
    reservations: BTreeSet<NodeId>,
    circuits: BTreeMap<u64, Circuit>,
    /// (node, its number for a circuit) → the circuit.
    by_end: BTreeMap<(NodeId, u64), u64>,
    per_node: BTreeMap<NodeId, usize>,
    next: u64,
    pub stats: RelayStats,
}

impl Gateway {
    /// A node asks for a reservation.
    pub fn reserve(&mut self, from: NodeId, id: u64, config: &NatConfig, cx: &mut Cx<'_>) {
        let refused = if !config.gateway {
            Some(RelayRefusal::NotGateway)
        } else if self.reservations.contains(&from)
            || self.reservations.len() < config.max_reservations
        {
            self.reservations.insert(from);
            None
        } else {
            Some(RelayRefusal::Full)
        };
        self.stats.reservations = self.reservations.len();
        cx.reply(from, &NatMessage::Reserved { id, refused });
    }

    /// `from` opens circuit `id` to `target`.
    pub fn open(
        &mut self,
        from: NodeId,
        id: u64,
        target: NodeId,
        config: &NatConfig,
        cx: &mut Cx<'_>,
    ) {
        if id >= GATEWAY_CHOSEN || self.by_end.contains_key(&(from, id)) || target == from {
            return; // not a number an opener may choose, one in use, or itself: a broken peer
        }
        let count = |n: &NodeId| self.per_node.get(n).copied().unwrap_or(0);
        let refusal = if !config.gateway {
            Some(RelayRefusal::NotGateway)
        } else if !self.reservations.contains(&target) || cx.link_to(&target).is_none() {
            Some(RelayRefusal::NoReservation)
        } else if self.circuits.len() >= config.max_circuits {
            Some(RelayRefusal::Full)
        } else if count(&from) >= config.max_circuits_per_peer
            || count(&target) >= config.max_circuits_per_peer
        {
            Some(RelayRefusal::PeerLimit)
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.stats.circuits_refused += 1;
            cx.reply(
                from,
                &NatMessage::Close {
                    circuit: id,
                    reason,
                },
            );
            return;
        }
        let key = GATEWAY_CHOSEN | self.next;
        self.next += 1;
        self.circuits.insert(
            key,
            Circuit {
                opener: (from, id),
                target: (target, key),
                bytes: 0,
                since: cx.now(),
            },
        );
        self.by_end.insert((from, id), key);
        self.by_end.insert((target, key), key);
        *self.per_node.entry(from).or_default() += 1;
        *self.per_node.entry(target).or_default() += 1;
        self.stats.circuits_opened += 1;
        self.stats.circuits = self.circuits.len();
        cx.reply(target, &NatMessage::Incoming { circuit: key, from });
    }

    /// Whether `(from, id)` names a circuit through this gateway.
    pub fn carries(&self, from: &NodeId, id: u64) -> bool {
        self.by_end.contains_key(&(*from, id))
    }

    /// A packet on circuit `id` from `from`: forwarded to the other end, or dropped.
    pub fn forward(
        &mut self,
        from: NodeId,
        id: u64,
        packet: Vec<u8>,
        config: &NatConfig,
        cx: &mut Cx<'_>,
    ) {
        let Some(&key) = self.by_end.get(&(from, id)) else {
            return;
        };
        let Some(c) = self.circuits.get_mut(&key) else {
            return;
        };
        c.bytes += packet.len() as u64;
        if c.bytes > config.max_circuit_bytes {
            self.stats.circuits_refused += 1;
            self.close(key, RelayRefusal::Bytes, None, cx);
            return;
        }
        let (to, circuit) = if c.opener == (from, id) {
            c.target
        } else {
            c.opener
        };
        let len = packet.len() as u64;
        match cx.send_data(to, None, &NatMessage::Data { circuit, packet }) {
            Ok(()) => {
                self.stats.packets_relayed += 1;
                self.stats.bytes_relayed += len;
            }
            Err(crate::node::SendError::Full) => self.stats.packets_dropped += 1,
            Err(_) => self.close(key, RelayRefusal::Closed, None, cx),
        }
    }

    /// Closes circuit `key`, telling both ends but `except`.
    pub fn close(
        &mut self,
        key: u64,
        reason: RelayRefusal,
        except: Option<NodeId>,
        cx: &mut Cx<'_>,
    ) {
        let Some(c) = self.circuits.remove(&key) else {
            return;
        };
        for (node, circuit) in [c.opener, c.target] {
            self.by_end.remove(&(node, circuit));
            if let Some(n) = self.per_node.get_mut(&node) {
                *n -= 1;
                if *n == 0 {
                    self.per_node.remove(&node);
                }
            }
            if Some(node) != except {
                cx.reply(node, &NatMessage::Close { circuit, reason });
            }
        }
        self.stats.circuits = self.circuits.len();
    }

    /// An end closed circuit `id`.
    pub fn closed_by(&mut self, from: NodeId, id: u64, cx: &mut Cx<'_>) {
        if let Some(&key) = self.by_end.get(&(from, id)) {
            self.close(key, RelayRefusal::Closed, Some(from), cx);
        }
    }

    /// A node's link went away: its reservation and circuits go with it.
    pub fn gone(&mut self, node: NodeId, cx: &mut Cx<'_>) {
        self.reservations.remove(&node);
        self.stats.reservations = self.reservations.len();
        let keys: Vec<u64> = self
            .by_end
            .range((node, 0)..=(node, u64::MAX))
            .map(|(_, k)| *k)
            .collect();
        for key in keys {
            self.close(key, RelayRefusal::Closed, Some(node), cx);
        }
    }

    /// Closes circuits past their lifetime; returns when the next one is due.
    pub fn expire(&mut self, config: &NatConfig, cx: &mut Cx<'_>) {
        let now = cx.now();
        let old: Vec<u64> = self
            .circuits
            .iter()
            .filter(|(_, c)| c.since + config.max_circuit_duration <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in old {
            self.stats.circuits_refused += 1;
            self.close(key, RelayRefusal::Duration, None, cx);
        }
    }

    /// When the oldest circuit reaches its lifetime.
    pub fn next_expiry(&self, config: &NatConfig) -> Option<Instant> {
        self.circuits
            .values()
            .map(|c| c.since + config.max_circuit_duration)
            .min()
    }
}

/// One end of a circuit, at this node.
#[derive(Debug)]
struct End {
    gateway: NodeId,
    /// Its number on the link to the gateway.
    circuit: u64,
    /// The node at the other end.
    peer: NodeId,
    /// Whether this node opened it.
    opened: bool,
}

/// The circuits this node is an end of, and its reservations.
#[derive(Debug, Default)]
pub(crate) struct Ends {
    ends: BTreeMap<u64, End>,
    /// (gateway, number on its link) → virtual index.
    by_link: BTreeMap<(NodeId, u64), u64>,
    next: u64,
    /// Gateways asked for a reservation, and whether they hold one.
    pub reservations: BTreeMap<NodeId, bool>,
}

impl Ends {
    /// Opens a circuit to `target` through `gateway` (dialed at `addr` if there is no link);
    /// returns its virtual address, or `None` when this node has as many as it keeps.
    pub fn open(
        &mut self,
        target: NodeId,
        gateway: NodeId,
        addr: Option<SocketAddr>,
        config: &NatConfig,
        cx: &mut Cx<'_>,
    ) -> Option<SocketAddr> {
        if self.ends.len() >= config.max_own_circuits {
            return None;
        }
        let v = self.fresh();
        self.ends.insert(
            v,
            End {
                gateway,
                circuit: v,
                peer: target,
                opened: true,
            },
        );
        self.by_link.insert((gateway, v), v);
        cx.send(gateway, addr, &NatMessage::Open { circuit: v, target });
        Some(circuit_addr(v))
    }

    fn fresh(&mut self) -> u64 {
        // Below the gateways' numbers; never reused while the node lives.
        self.next += 1;
        self.next % GATEWAY_CHOSEN
    }

    /// A gateway hands this node a circuit that `from` opened.
    pub fn incoming(
        &mut self,
        gateway: NodeId,
        circuit: u64,
        from: NodeId,
        config: &NatConfig,
        cx: &mut Cx<'_>,
    ) {
        let reserved = self.reservations.get(&gateway).copied().unwrap_or(false);
        if !reserved || self.ends.len() >= config.max_own_circuits {
            let reason = if reserved {
                RelayRefusal::Full
            } else {
                RelayRefusal::NoReservation
            };
            cx.reply(gateway, &NatMessage::Close { circuit, reason });
            return;
        }
        let v = self.fresh();
        self.ends.insert(
            v,
            End {
                gateway,
                circuit,
                peer: from,
                opened: false,
            },
        );
        self.by_link.insert((gateway, circuit), v);
    }

    /// A packet arrived on one of this node's circuits: for the QUIC stack, from the
    /// circuit's virtual address.
    pub fn arrived(&mut self, gateway: NodeId, circuit: u64, packet: Vec<u8>, cx: &mut Cx<'_>) {
        if let Some(&v) = self.by_link.get(&(gateway, circuit)) {
            cx.relayed(circuit_addr(v), packet);
        }
    }

    /// The QUIC stack sends `packet` to virtual address `to`: onto its circuit, or dropped
    /// (no such circuit, or the link to the gateway is full).
    pub fn send(&mut self, to: SocketAddr, packet: &[u8], cx: &mut Cx<'_>) -> bool {
        let Some(end) = circuit_of(to).and_then(|v| self.ends.get(&v)) else {
            return false;
        };
        let message = NatMessage::Data {
            circuit: end.circuit,
            packet: packet.to_vec(),
        };
        cx.send_data(end.gateway, None, &message).is_ok()
    }

    /// The gateway closed circuit `circuit`.
    pub fn closed(&mut self, gateway: NodeId, circuit: u64) -> Option<SocketAddr> {
        let v = self.by_link.remove(&(gateway, circuit))?;
        self.ends.remove(&v);
        Some(circuit_addr(v))
    }

    /// The link to `gateway` went away: its circuits and reservation with it. Returns each
    /// lost circuit's virtual address, the node at its other end, and whether this node
    /// opened it.
    pub fn gateway_gone(&mut self, gateway: NodeId) -> Vec<(SocketAddr, NodeId, bool)> {
        self.reservations.remove(&gateway);
        let lost: Vec<(u64, NodeId, bool)> = self
            .by_link
            .range((gateway, 0)..=(gateway, u64::MAX))
            .filter_map(|(_, v)| self.ends.get(v).map(|e| (*v, e.peer, e.opened)))
            .collect();
        lost.into_iter()
            .filter_map(|(v, peer, opened)| {
                let end = self.ends.remove(&v)?;
                self.by_link.remove(&(end.gateway, end.circuit));
                Some((circuit_addr(v), peer, opened))
            })
            .collect()
    }

    /// The peer at the other end of the circuit at virtual address `addr`.
    pub fn peer_at(&self, addr: SocketAddr) -> Option<(NodeId, NodeId)> {
        let end = self.ends.get(&circuit_of(addr)?)?;
        Some((end.peer, end.gateway))
    }

    /// This node's circuits to `peer`: (gateway, number on its link).
    pub fn to_peer(&self, peer: &NodeId) -> Vec<(NodeId, u64)> {
        self.ends
            .values()
            .filter(|e| e.peer == *peer)
            .map(|e| (e.gateway, e.circuit))
            .collect()
    }

    /// Gauge: circuits this node is an end of.
    pub fn len(&self) -> usize {
        self.ends.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_addresses_round_trip_and_are_told_apart() {
        for v in [0, 1, 0xffff, 0x1_0000, u64::MAX >> 1, 0xdead_beef_cafe] {
            assert_eq!(circuit_of(circuit_addr(v)), Some(v));
        }
        assert_ne!(
            circuit_addr(1).ip().to_string()[..16],
            circuit_addr(2).ip().to_string()[..16]
        );
        assert_eq!(circuit_of("127.0.0.1:1".parse().unwrap()), None);
        assert_eq!(circuit_of("[fd00:6d61::1]:443".parse().unwrap()), None);
    }
}
