//! NAT boxes: the mapping, filtering, port allocation, mapping timeout and hairpinning of
//! RFC 4787, between nodes on private networks and the public side (QUIC mode).
//!
//! A node behind a box has a private address, `192.168.0.(2 + k)` for the box's `k`-th node
//! (the same addresses behind every box, as home networks have), and the box one public
//! address in 100.64.0.0/10. Nodes behind one box reach each other's private addresses
//! directly; a datagram from a private network to anywhere else leaves through the box's
//! mapping for it, and one arriving at the box's address gets in only through a live mapping
//! whose filter lets its source in. Private addresses are not routed on the public side.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use macula_proto::nat::{Allocation, Behavior};
use macula_proto::node::Socket;
use macula_proto::{Duration, Instant, Rng};

use crate::net::{addr_of, node_at, NodeIdx, PORT};

/// The port of every simulated node's auxiliary socket.
pub const AUX_PORT: u16 = PORT + 1;

/// Most nodes behind one box.
pub const MAX_PER_BOX: usize = 250;

/// How one NAT box behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatBoxConfig {
    /// Which destinations share a public port.
    pub mapping: Behavior,
    /// Which sources may send to a mapped port.
    pub filtering: Behavior,
    /// How new public ports are chosen.
    pub allocation: Allocation,
    /// Whether a packet to the box's own public address from behind it comes back in.
    pub hairpin: bool,
    /// How long a mapping lives without outbound traffic.
    pub timeout: Duration,
}

impl NatBoxConfig {
    /// A box of the given classes, with hairpinning off and a 120 s mapping timeout.
    pub fn new(mapping: Behavior, filtering: Behavior, allocation: Allocation) -> Self {
        NatBoxConfig {
            mapping,
            filtering,
            allocation,
            hairpin: false,
            timeout: Duration::from_secs(120),
        }
    }
}

/// Which nodes sit behind which boxes.
#[derive(Clone, Debug, Default)]
pub struct NatPlan {
    /// The boxes.
    pub boxes: Vec<NatBoxConfig>,
    /// For each node (by index; missing ones are public), the box it sits behind.
    pub behind: Vec<Option<usize>>,
}

/// Where a datagram is headed once it left its sender's network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    /// Straight to a node's socket (public side, or the same private network).
    Node(NodeIdx, Socket),
    /// To a box's public port (through its filter, on arrival).
    Box(u32, u16),
    /// Back in through the box it left by (hairpinning): to a live mapping, past the filter
    /// (the box routes it within itself).
    Hairpin(u32, u16),
}

/// A box's public address.
pub fn box_addr(b: usize) -> IpAddr {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    IpAddr::V4(Ipv4Addr::from(base + 1 + b as u32))
}

fn box_at(ip: IpAddr, boxes: usize) -> Option<usize> {
    let IpAddr::V4(v4) = ip else {
        return None;
    };
    let b = u32::from(v4).checked_sub(u32::from(Ipv4Addr::new(100, 64, 0, 1)))? as usize;
    (b < boxes).then_some(b)
}

/// The private address of the `k`-th node behind a box.
pub fn private_ip(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 168, 0, 2 + k as u8))
}

fn port_of(socket: Socket) -> u16 {
    match socket {
        Socket::Main => PORT,
        Socket::Auxiliary => AUX_PORT,
    }
}

/// What a mapping is keyed by, besides the inside address: the part of the destination its
/// mapping behavior depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Any,
    Ip(IpAddr),
    Addr(SocketAddr),
}

#[derive(Debug)]
struct Mapping {
    node: NodeIdx,
    socket: Socket,
    key: Key,
    /// Destinations sent to through it (what its filter lets back in).
    sent_to: Vec<SocketAddr>,
    last_out: Instant,
}

#[derive(Debug)]
struct NatBox {
    config: NatBoxConfig,
    /// Public port → mapping.
    mappings: BTreeMap<u16, Mapping>,
    /// (node, socket, key) → public port.
    index: BTreeMap<(NodeIdx, u8, Key), u16>,
    /// The last port given (contiguous allocation).
    last_port: u16,
    /// The nodes behind it, in order.
    hosts: Vec<NodeIdx>,
}

/// Most destinations a mapping's filter remembers (a bound; the oldest goes).
const MAX_SENT_TO: usize = 64;

/// Every NAT box of a run.
#[derive(Debug, Default)]
pub(crate) struct Nats {
    boxes: Vec<NatBox>,
    /// For each node: its box and its place there.
    place: Vec<Option<(u32, u8)>>,
    /// Counters.
    pub filtered: u64,
    pub expired: u64,
}

impl Nats {
    pub fn new(plan: &NatPlan, nodes: usize, rng: &mut Rng) -> Self {
        let mut boxes: Vec<NatBox> = plan
            .boxes
            .iter()
            .map(|c| NatBox {
                config: *c,
                mappings: BTreeMap::new(),
                index: BTreeMap::new(),
                last_port: 20_000 + rng.below(20_000) as u16,
                hosts: Vec::new(),
            })
            .collect();
        let mut place = vec![None; nodes];
        for (n, b) in plan.behind.iter().enumerate().take(nodes) {
            if let Some(b) = *b {
                let hosts = &mut boxes[b].hosts;
                assert!(
                    hosts.len() < MAX_PER_BOX,
                    "at most {MAX_PER_BOX} nodes per box"
                );
                place[n] = Some((b as u32, hosts.len() as u8));
                hosts.push(n as NodeIdx);
            }
        }
        Nats {
            boxes,
            place,
            filtered: 0,
            expired: 0,
        }
    }

    /// A node behind box `b`, whose position stands for the box's in the latency model.
    pub fn home(&self, b: u32) -> Option<NodeIdx> {
        self.boxes.get(b as usize)?.hosts.first().copied()
    }

    /// Node `n`'s own address (private behind a box).
    pub fn addr(&self, n: NodeIdx) -> SocketAddr {
        match self.place.get(n as usize).copied().flatten() {
            Some((_, k)) => SocketAddr::new(private_ip(usize::from(k)), PORT),
            None => addr_of(n),
        }
    }

    /// The box node `n` sits behind.
    pub fn box_of(&self, n: NodeIdx) -> Option<usize> {
        self.place
            .get(n as usize)
            .copied()
            .flatten()
            .map(|(b, _)| b as usize)
    }

    /// A datagram leaves node `n`'s `socket` for `to`: where it goes, and the source address
    /// it carries from there on. `None` when it can't go anywhere.
    pub fn outbound(
        &mut self,
        n: NodeIdx,
        socket: Socket,
        to: SocketAddr,
        nodes: usize,
        now: Instant,
        rng: &mut Rng,
    ) -> Option<(Dest, SocketAddr)> {
        let own = SocketAddr::new(self.addr(n).ip(), port_of(socket));
        let Some((b, _)) = self.place.get(n as usize).copied().flatten() else {
            return Some((self.public_dest(to, nodes)?, own));
        };
        let nat = &self.boxes[b as usize];
        // The same private network.
        if let Some(k) = (0..nat.hosts.len()).find(|k| private_ip(*k) == to.ip()) {
            let socket = socket_at(to.port())?;
            return Some((Dest::Node(nat.hosts[k], socket), own));
        }
        let public = self.map(b as usize, n, socket, to, now, rng);
        let from = SocketAddr::new(box_addr(b as usize), public);
        if box_at(to.ip(), self.boxes.len()) == Some(b as usize) {
            // To the box's own address: hairpinning.
            return self.boxes[b as usize]
                .config
                .hairpin
                .then_some((Dest::Hairpin(b, to.port()), from));
        }
        Some((self.public_dest(to, nodes)?, from))
    }

    /// Where a datagram to a public-side address goes.
    fn public_dest(&self, to: SocketAddr, nodes: usize) -> Option<Dest> {
        if let Some(b) = box_at(to.ip(), self.boxes.len()) {
            return Some(Dest::Box(b as u32, to.port()));
        }
        let main = node_at(SocketAddr::new(to.ip(), PORT), nodes)?;
        if self.place.get(main as usize).copied().flatten().is_some() {
            return None; // its public-range address is not where it is
        }
        Some(Dest::Node(main, socket_at(to.port())?))
    }

    /// The public port of node `n`'s mapping towards `to`, made if needed.
    fn map(
        &mut self,
        b: usize,
        n: NodeIdx,
        socket: Socket,
        to: SocketAddr,
        now: Instant,
        rng: &mut Rng,
    ) -> u16 {
        let nat = &mut self.boxes[b];
        let key = match nat.config.mapping {
            Behavior::EndpointIndependent => Key::Any,
            Behavior::AddressDependent => Key::Ip(to.ip()),
            Behavior::AddressAndPortDependent => Key::Addr(to),
        };
        let index_key = (n, socket as u8, key);
        let timeout = nat.config.timeout;
        if let Some(&port) = nat.index.get(&index_key) {
            let live = nat
                .mappings
                .get(&port)
                .is_some_and(|m| now - m.last_out <= timeout);
            if live {
                let m = nat.mappings.get_mut(&port).expect("indexed");
                m.last_out = now;
                if !m.sent_to.contains(&to) {
                    if m.sent_to.len() >= MAX_SENT_TO {
                        m.sent_to.remove(0);
                    }
                    m.sent_to.push(to);
                }
                return port;
            }
            nat.index.remove(&index_key);
            nat.mappings.remove(&port);
            self.expired += 1;
        }
        let nat = &mut self.boxes[b];
        // Expired mappings free their ports.
        let stale: Vec<u16> = nat
            .mappings
            .iter()
            .filter(|(_, m)| now - m.last_out > timeout)
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            if let Some(m) = nat.mappings.remove(&p) {
                nat.index.remove(&(m.node, m.socket as u8, m.key));
                self.expired += 1;
            }
        }
        let free = |p: u16, nat: &NatBox| p >= 1024 && !nat.mappings.contains_key(&p);
        let port = match nat.config.allocation {
            Allocation::Preserving if free(port_of(socket), nat) => port_of(socket),
            Allocation::Preserving | Allocation::Contiguous => {
                let mut p = nat.last_port;
                loop {
                    p = p.wrapping_add(1).max(1024);
                    if free(p, nat) {
                        break p;
                    }
                }
            }
            Allocation::Random => loop {
                let p = 1024 + rng.below(65536 - 1024) as u16;
                if free(p, nat) {
                    break p;
                }
            },
        };
        if nat.config.allocation != Allocation::Random {
            nat.last_port = port;
        }
        nat.mappings.insert(
            port,
            Mapping {
                node: n,
                socket,
                key,
                sent_to: vec![to],
                last_out: now,
            },
        );
        nat.index.insert(index_key, port);
        port
    }

    /// A datagram from `from` reaches box `b`'s public `port`: the node socket it is let in
    /// to, if the box's mapping and filter allow.
    pub fn inbound(
        &mut self,
        b: u32,
        port: u16,
        from: SocketAddr,
        hairpin: bool,
        now: Instant,
    ) -> Option<(NodeIdx, Socket)> {
        let nat = self.boxes.get(b as usize)?;
        let Some(m) = nat.mappings.get(&port) else {
            self.filtered += 1;
            return None;
        };
        let live = now - m.last_out <= nat.config.timeout;
        let allowed = hairpin
            || match nat.config.filtering {
                Behavior::EndpointIndependent => true,
                Behavior::AddressDependent => m.sent_to.iter().any(|a| a.ip() == from.ip()),
                Behavior::AddressAndPortDependent => m.sent_to.contains(&from),
            };
        if live && allowed {
            Some((m.node, m.socket))
        } else {
            self.filtered += 1;
            None
        }
    }
}

fn socket_at(port: u16) -> Option<Socket> {
    match port {
        PORT => Some(Socket::Main),
        AUX_PORT => Some(Socket::Auxiliary),
        _ => None,
    }
}
