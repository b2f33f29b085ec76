//! The network model: addresses, latency classes, faults and partitions.
//!
//! Nothing here is kept per pair of nodes unless asked for: a link's properties come from the two
//! nodes' regions and the model's global fault rates, with explicit per-pair overrides on top.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use macula_proto::{Duration, Rng};

/// Index of a simulated node.
pub type NodeIdx = u32;

/// The UDP port every simulated node listens on.
pub const PORT: u16 = 4433;

/// How many /24 networks the simulated nodes are spread over: all of 198.18.0.0/15.
const NETWORKS: u32 = 512;

/// A node's public address in 198.18.0.0/15 (the benchmarking range, never routed), one per
/// node. Consecutive nodes sit in different /24 networks (node `i` in network `i % 512`), as
/// peers on the internet mostly do, so address-diversity limits see a realistic spread.
pub fn addr_of(node: NodeIdx) -> SocketAddr {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let offset = (node % NETWORKS) * 256 + node / NETWORKS;
    SocketAddr::new(Ipv4Addr::from(base + offset).into(), PORT)
}

/// The node at a public address, if the address is one of ours.
pub fn node_at(addr: SocketAddr, nodes: usize) -> Option<NodeIdx> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    let offset = u32::from(*v4.ip()).checked_sub(u32::from(Ipv4Addr::new(198, 18, 0, 0)))?;
    let (network, host) = (offset / 256, offset % 256);
    let node = host * NETWORKS + network;
    (v4.port() == PORT && network < NETWORKS && (node as usize) < nodes).then_some(node)
}

/// Properties of the path between two nodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathProps {
    /// One-way latency before jitter.
    pub latency: Duration,
    /// Uniform extra delay in `0..=jitter`.
    pub jitter: Duration,
    /// Probability that a datagram (QUIC mode) or a transmission (frames mode) is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice (QUIC mode).
    pub duplicate: f64,
    /// Probability that a datagram is held back by up to four latencies, overtaking others
    /// (QUIC mode).
    pub reorder: f64,
}

/// How links behave.
#[derive(Clone, Debug)]
pub struct LinkModel {
    /// One-way latency between regions: `region_latency[a][b]`. Nodes are spread over regions
    /// round-robin by index.
    pub region_latency: Vec<Vec<Duration>>,
    /// Uniform jitter added to every delivery.
    pub jitter: Duration,
    /// Loss probability on every path.
    pub loss: f64,
    /// Duplication probability on every path (QUIC mode).
    pub duplicate: f64,
    /// Reordering probability on every path (QUIC mode).
    pub reorder: f64,
    /// Each node's uplink in bytes per second; `None` is unlimited.
    pub bandwidth: Option<u64>,
    /// With `bandwidth`, the bytes an uplink queues before it drops datagrams (drop-tail, QUIC
    /// mode); `None` queues without limit. Frames mode's pipes are reliable and never drop.
    pub buffer: Option<u64>,
    /// Explicit properties for particular (from, to) pairs.
    pub overrides: BTreeMap<(NodeIdx, NodeIdx), PathProps>,
}

impl Default for LinkModel {
    /// Three regions: 5 ms one way within a region, 40 ms and 80 ms between them, 1 ms jitter.
    fn default() -> Self {
        let ms = Duration::from_millis;
        LinkModel {
            region_latency: vec![
                vec![ms(5), ms(40), ms(80)],
                vec![ms(40), ms(5), ms(40)],
                vec![ms(80), ms(40), ms(5)],
            ],
            jitter: ms(1),
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            bandwidth: None,
            buffer: None,
            overrides: BTreeMap::new(),
        }
    }
}

impl LinkModel {
    /// The node's region.
    pub fn region(&self, node: NodeIdx) -> usize {
        node as usize % self.region_latency.len().max(1)
    }

    /// The properties of the path from `from` to `to`.
    pub fn path(&self, from: NodeIdx, to: NodeIdx) -> PathProps {
        if let Some(p) = self.overrides.get(&(from, to)) {
            return *p;
        }
        let latency = self
            .region_latency
            .get(self.region(from))
            .and_then(|row| row.get(self.region(to)))
            .copied()
            .unwrap_or(Duration::from_millis(5));
        PathProps {
            latency,
            jitter: self.jitter,
            loss: self.loss,
            duplicate: self.duplicate,
            reorder: self.reorder,
        }
    }
}

/// A draw in `[0, 1)`.
pub(crate) fn chance(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A partition: nodes on side 1 and side 2 can't reach each other (or, one-way, side 1 can't
/// reach side 2). Nodes on side 0 are unaffected.
#[derive(Clone, Debug)]
pub struct Partition {
    side: Vec<u8>,
    one_way: bool,
}

impl Partition {
    /// Splits `a` from `b`; with `one_way`, only traffic from `a` to `b` is cut.
    pub fn new(nodes: usize, a: &[NodeIdx], b: &[NodeIdx], one_way: bool) -> Self {
        let mut side = vec![0u8; nodes];
        for &n in a {
            side[n as usize] = 1;
        }
        for &n in b {
            side[n as usize] = 2;
        }
        Partition { side, one_way }
    }

    /// Whether traffic from `from` to `to` is cut.
    pub fn blocks(&self, from: NodeIdx, to: NodeIdx) -> bool {
        let (f, t) = (self.side[from as usize], self.side[to as usize]);
        (f == 1 && t == 2) || (!self.one_way && f == 2 && t == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_map_back_to_nodes() {
        for n in [0u32, 1, 255, 256, 99_999] {
            assert_eq!(node_at(addr_of(n), 100_000), Some(n));
        }
        assert_eq!(node_at(addr_of(5), 5), None);
        assert_eq!(node_at("127.0.0.1:4433".parse().unwrap(), 10), None);
    }

    #[test]
    fn partitions_cut_the_right_directions() {
        let p = Partition::new(4, &[0], &[1], false);
        assert!(p.blocks(0, 1) && p.blocks(1, 0));
        assert!(!p.blocks(0, 2) && !p.blocks(2, 3));
        let one = Partition::new(4, &[0], &[1], true);
        assert!(one.blocks(0, 1) && !one.blocks(1, 0));
    }
}
