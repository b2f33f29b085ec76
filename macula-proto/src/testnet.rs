//! The in-crate test harness: a handful of nodes joined by perfect pipes of fixed latency, on a
//! clock that jumps to the next deadline. Node, DHT and subsystem tests all run on it.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddr};

use crate::node::{Event, LinkError, LinkId, LinkInfo, Node, Socket, Transmit};
use crate::time::{Duration, Instant};
use crate::wire::Channel;
use crate::{Config, Identity, NodeId};

/// One-way latency of every pipe.
pub(crate) const LATENCY: Duration = Duration::from_millis(10);

/// Where node `i` listens.
pub(crate) fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(127, 0, 0, 1).into(), 10_000 + i as u16)
}

/// Node `i`'s configuration in realm `io.test`, listening at [`addr`]`(i)`.
pub(crate) fn config(i: usize) -> Config {
    let mut c = Config::new(crate::config::Realm::new("io.test").unwrap());
    c.listen_addrs = vec![addr(i)];
    c
}

/// `n` nodes configured by `config`, each joined to node 0, with the DHT settled.
pub(crate) fn joined(n: usize, config: impl Fn(usize) -> Config) -> Net {
    let mut net = Net::new((0..n).map(config).collect());
    for i in 1..n {
        net.connect(i, 0);
    }
    net.run_for(Duration::from_secs(3));
    net
}

/// Where node `i`'s auxiliary socket is (see [`NatConfig::aux_port`](crate::nat::NatConfig)).
pub(crate) fn aux_addr(i: usize) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(127, 0, 0, 1).into(), 20_000 + i as u16)
}

pub(crate) enum Delivery {
    Data(LinkId, Channel, Vec<u8>),
    Datagram(Socket, SocketAddr, Vec<u8>),
    Down(LinkId, LinkError),
    Up(LinkId, LinkInfo),
}

/// Nodes joined by pipes. See the [module documentation](self).
pub(crate) struct Net {
    pub now: Instant,
    pub nodes: Vec<Node>,
    /// (node, link) -> (node, link) for both directions.
    pub wires: BTreeMap<(usize, LinkId), (usize, LinkId)>,
    /// Deliveries by time, FIFO within one instant.
    queue: VecDeque<(Instant, usize, Delivery)>,
    pub events: Vec<Vec<Event>>,
    /// Every transmit, in order, for determinism checks.
    pub log: Vec<(usize, Transmit)>,
    exporter_counter: u8,
    /// Bytes that arrived for a channel its node paused, by (node, link, channel), in order:
    /// the pipe's flow control, holding them until the node reads the channel again.
    held: BTreeMap<(usize, LinkId, Channel), VecDeque<Vec<u8>>>,
    /// Sending ends told their channel is blocked: (node, link, channel).
    blocked: alloc::collections::BTreeSet<(usize, LinkId, Channel)>,
    /// Nodes killed without a goodbye: they take no input, run no timer and send nothing,
    /// and their links stay up on the other side until it times them out.
    pub killed: alloc::collections::BTreeSet<usize>,
}

impl Net {
    /// Nodes with these configurations, identities from seeds 0, 1, ...
    pub fn new(configs: Vec<Config>) -> Self {
        let nodes = configs
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                Node::new(
                    c,
                    Identity::from_seed(i as u64),
                    100 + i as u64,
                    Instant::ZERO,
                )
                .unwrap()
            })
            .collect::<Vec<_>>();
        let n = nodes.len();
        Net {
            now: Instant::ZERO,
            nodes,
            wires: BTreeMap::new(),
            queue: VecDeque::new(),
            events: vec![Vec::new(); n],
            log: Vec::new(),
            exporter_counter: 0,
            held: BTreeMap::new(),
            blocked: alloc::collections::BTreeSet::new(),
            killed: alloc::collections::BTreeSet::new(),
        }
    }

    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].node_id()
    }

    pub fn deliver_at(&mut self, at: Instant, to: usize, d: Delivery) {
        let pos = self
            .queue
            .iter()
            .position(|(t, _, _)| *t > at)
            .unwrap_or(self.queue.len());
        self.queue.insert(pos, (at, to, d));
    }

    /// Carries out everything node `i` wants done.
    pub fn drain(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].poll_transmit() {
            self.log.push((i, t.clone()));
            match t {
                Transmit::Open { link, addr: a, .. } => {
                    let target =
                        (0..self.nodes.len()).find(|j| addr(*j) == a && !self.killed.contains(j));
                    let Some(j) = target else {
                        self.deliver_at(
                            self.now + LATENCY,
                            i,
                            Delivery::Down(link, LinkError::DialFailed),
                        );
                        continue;
                    };
                    self.exporter_counter = self.exporter_counter.wrapping_add(1);
                    let exporter = [self.exporter_counter; 32];
                    let info_at_j = LinkInfo {
                        remote_id: self.id(i),
                        remote_addr: addr(i),
                        exporter,
                    };
                    match self.nodes[j].handle_inbound(info_at_j, self.now) {
                        Ok(remote_link) => {
                            self.wires.insert((i, link), (j, remote_link));
                            self.wires.insert((j, remote_link), (i, link));
                            let info = LinkInfo {
                                remote_id: self.id(j),
                                remote_addr: a,
                                exporter,
                            };
                            self.deliver_at(self.now + LATENCY, i, Delivery::Up(link, info));
                        }
                        Err(code) => self.deliver_at(
                            self.now + LATENCY,
                            i,
                            Delivery::Down(link, LinkError::ClosedByPeer(code)),
                        ),
                    }
                    self.drain(j);
                }
                Transmit::Send {
                    link,
                    channel,
                    bytes,
                } => {
                    if let Some(&(j, remote)) = self.wires.get(&(i, link)) {
                        let d = Delivery::Data(remote, channel, bytes);
                        self.deliver_at(self.now + LATENCY, j, d);
                    }
                }
                Transmit::Datagram { socket, to, bytes } => {
                    let from = match socket {
                        Socket::Main => addr(i),
                        Socket::Auxiliary => aux_addr(i),
                    };
                    let live = |j: &usize| !self.killed.contains(j);
                    let target = (0..self.nodes.len()).filter(live).find_map(|j| {
                        let aux = self.nodes[j].config().nat.aux_port == Some(to.port());
                        if to == addr(j) {
                            Some((j, Socket::Main))
                        } else {
                            (to == aux_addr(j) && aux).then_some((j, Socket::Auxiliary))
                        }
                    });
                    if let Some((j, socket)) = target {
                        let d = Delivery::Datagram(socket, from, bytes);
                        self.deliver_at(self.now + LATENCY, j, d);
                    }
                }
                // No QUIC here: relayed packets go nowhere.
                Transmit::Relayed { .. } => {}
                Transmit::Close { link, code } => {
                    if let Some((j, remote)) = self.wires.remove(&(i, link)) {
                        self.wires.remove(&(j, remote));
                        self.deliver_at(
                            self.now + LATENCY,
                            j,
                            Delivery::Down(remote, LinkError::ClosedByPeer(code)),
                        );
                    }
                }
            }
        }
        while let Some(e) = self.nodes[i].poll_event() {
            self.events[i].push(e);
        }
        self.nodes[i].check_invariants();
        while let Some((link, channel)) = self.nodes[i].poll_resumed() {
            self.release(i, link, channel);
        }
    }

    /// Bytes arrive on `channel` of `link` at node `to`: read by the node, or held while it
    /// has the channel paused (telling the sending end its channel is blocked once more than
    /// its `channel_backlog` is held).
    fn arrive(&mut self, to: usize, link: LinkId, channel: Channel, bytes: Vec<u8>) {
        let key = (to, link, channel);
        if self.nodes[to].is_paused(link, channel) || self.held.contains_key(&key) {
            self.held.entry(key).or_default().push_back(bytes);
            self.report_backlog(key);
            return;
        }
        let now = self.now;
        self.nodes[to].handle_link_data(link, channel, &bytes, now);
        self.drain(to);
    }

    /// Hands node `i` what was held for a channel it lets flow again.
    fn release(&mut self, i: usize, link: LinkId, channel: Channel) {
        let key = (i, link, channel);
        let mut read = false;
        while !self.nodes[i].is_paused(link, channel) {
            let Some(bytes) = self.held.get_mut(&key).and_then(VecDeque::pop_front) else {
                self.held.remove(&key);
                break;
            };
            let now = self.now;
            self.nodes[i].handle_link_data(link, channel, &bytes, now);
            read = true;
            self.report_backlog(key);
        }
        if self.held.get(&key).is_some_and(VecDeque::is_empty) {
            self.held.remove(&key);
        }
        self.report_backlog(key);
        if read {
            self.drain(i);
        }
    }

    /// Tells the sending end of the receiving `key` whether its channel is blocked.
    fn report_backlog(&mut self, (to, link, channel): (usize, LinkId, Channel)) {
        let Some(&(from, sender_link)) = self.wires.get(&(to, link)) else {
            return;
        };
        let held: usize = self
            .held
            .get(&(to, link, channel))
            .map_or(0, |q| q.iter().map(Vec::len).sum());
        let backlog = self.nodes[from].config().channel_backlog;
        let key = (from, sender_link, channel);
        let was = self.blocked.contains(&key);
        let now_blocked = if was {
            held > backlog / 2
        } else {
            held > backlog
        };
        if now_blocked != was {
            if now_blocked {
                self.blocked.insert(key);
            } else {
                self.blocked.remove(&key);
            }
            let now = self.now;
            self.nodes[from].handle_link_blocked(sender_link, channel, now_blocked, now);
            self.drain(from);
        }
    }

    /// Bytes held for paused channels, over all nodes.
    #[cfg_attr(not(feature = "test-protocols"), allow(dead_code))]
    pub fn held_bytes(&self) -> usize {
        self.held.values().flatten().map(Vec::len).sum()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timers = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.killed.contains(i))
            .filter_map(|(_, n)| n.poll_timeout())
            .min();
        let queued = self.queue.front().map(|(t, _, _)| *t);
        match (timers, queued) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs until `until`, jumping from deadline to deadline.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(t) = self.next_deadline().filter(|t| *t <= until) {
            self.now = self.now.max(t);
            while self.queue.front().is_some_and(|(at, _, _)| *at <= self.now) {
                let (_, to, d) = self.queue.pop_front().unwrap();
                if self.killed.contains(&to) {
                    continue;
                }
                let now = self.now;
                match d {
                    Delivery::Data(link, channel, bytes) => {
                        self.arrive(to, link, channel, bytes);
                        continue;
                    }
                    Delivery::Down(link, err) => {
                        self.wires.remove(&(to, link));
                        self.held.retain(|(n, l, _), _| (*n, *l) != (to, link));
                        self.blocked.retain(|(n, l, _)| (*n, *l) != (to, link));
                        self.nodes[to].handle_link_down(link, err, now)
                    }
                    Delivery::Up(link, info) => self.nodes[to].handle_link_up(link, info, now),
                    Delivery::Datagram(socket, from, bytes) => {
                        self.nodes[to].handle_datagram(socket, from, &bytes, now)
                    }
                }
                self.drain(to);
            }
            for i in 0..self.nodes.len() {
                if self.killed.contains(&i) {
                    continue;
                }
                if self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                    self.nodes[i].handle_timeout(self.now);
                }
                self.drain(i);
            }
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Node `from` dials node `to`.
    pub fn connect(&mut self, from: usize, to: usize) -> LinkId {
        let link = self.nodes[from].connect(addr(to), None, self.now);
        self.drain(from);
        link
    }

    /// Runs a command on node `i` at the current time and carries out what it asks for.
    pub fn command<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.nodes[i], now);
        self.drain(i);
        r
    }
}

/// Completes the handshake of an inbound link from `remote` (seen at `from`) on `node`, as a
/// peer speaking every protocol `node` speaks would; returns the link.
pub(crate) fn handshake_from(
    node: &mut Node,
    remote: &Identity,
    from: SocketAddr,
    now: Instant,
) -> LinkId {
    use crate::wire::{encode, Connect, Control, Versions};
    let info = LinkInfo {
        remote_id: remote.node_id(),
        remote_addr: from,
        exporter: [7; 32],
    };
    let link = node
        .handle_inbound(info, now)
        .expect("room for a handshake");
    let connect = Control::Connect(Connect {
        versions: Versions::OURS,
        node_id: remote.node_id(),
        realm: node.config().realm.as_str().into(),
        auth: None,
        listen_addrs: vec![from.into()],
        roles: 0,
        protocols: node.protocols(),
    });
    node.handle_link_data(link, Channel::CONTROL, &encode(&connect), now);
    assert!(
        node.peer(&remote.node_id()).is_some(),
        "the handshake completed"
    );
    link
}
