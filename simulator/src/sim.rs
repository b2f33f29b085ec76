//! The engine: one virtual clock, one event queue, every node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use macula_proto::node::layout::Prefetch;
use macula_proto::node::Socket;
use macula_proto::quic::{Endpoint, EndpointConfig};
use macula_proto::{
    Channel, Config, Data, Duration, Event, Identity, Instant, LinkError, LinkId, LinkInfo, Node,
    NodeId, PingError, PingId, Rng, Transmit,
};

use crate::check::{self, Checker, Observation, Verdict};
use crate::cpu::Cpu;
use crate::host::Host;
use crate::nat::{Dest, NatPlan, Nats, AUX_PORT};
use crate::net::{addr_of, chance, node_at, LinkModel, NodeIdx, Partition, PathProps};
use crate::queue::Queue;
use crate::slab::{self, Slab};
use crate::trace::Digest;

/// Adjusts a node's configuration before it starts.
type ConfigureFn = Rc<dyn Fn(NodeIdx, &mut Config)>;

/// How faithfully nodes talk to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// [`Node`]s joined by modelled reliable, ordered pipes: fast, for up to 100,000 nodes.
    Frames,
    /// Full [`Endpoint`]s (real quinn-proto and rustls) over simulated UDP.
    Quic,
}

impl Mode {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Frames => "frames",
            Mode::Quic => "quic",
        }
    }
}

/// Builds a [`Sim`]: `SimBuilder::new().seed(7).nodes(100).build()`.
#[derive(Clone)]
pub struct SimBuilder {
    seed: u64,
    nodes: usize,
    duration: Duration,
    record_events: bool,
    read_inboxes: bool,
    mode: Mode,
    link: LinkModel,
    configure: ConfigureFn,
    prefetch: Option<bool>,
    nat: Option<NatPlan>,
}

impl std::fmt::Debug for SimBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimBuilder")
            .field("seed", &self.seed)
            .field("nodes", &self.nodes)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Default for SimBuilder {
    fn default() -> Self {
        SimBuilder::new()
    }
}

impl SimBuilder {
    /// Seed 0, 2 nodes, frames mode, the default link model, default node configuration.
    pub fn new() -> Self {
        SimBuilder {
            seed: 0,
            nodes: 2,
            duration: Duration::from_secs(60),
            record_events: false,
            read_inboxes: false,
            mode: Mode::Frames,
            link: LinkModel::default(),
            configure: Rc::new(|_, _| {}),
            prefetch: None,
            nat: None,
        }
    }

    /// The master seed: every node's seed and every draw of the network derive from it.
    pub fn seed(&mut self, seed: u64) -> &mut Self {
        self.seed = seed;
        self
    }

    /// Puts nodes behind NAT boxes (QUIC mode only: frames mode has no datagrams).
    pub fn nat(&mut self, plan: NatPlan) -> &mut Self {
        self.nat = Some(plan);
        self
    }

    /// How many nodes.
    pub fn nodes(&mut self, nodes: usize) -> &mut Self {
        self.nodes = nodes;
        self
    }

    /// How long [`Sim::run`] runs (virtual time). Default: 60 s.
    pub fn duration(&mut self, duration: Duration) -> &mut Self {
        self.duration = duration;
        self
    }

    /// Keep every node event for [`Sim::take_events`] (off by default: a large run emits
    /// millions). Events are recorded by [`Sim::run`] and [`Sim::run_until`]; [`Sim::step`]
    /// returns them directly.
    pub fn record_events(&mut self, record: bool) -> &mut Self {
        self.record_events = record;
        self
    }

    /// Frames or QUIC fidelity.
    pub fn mode(&mut self, mode: Mode) -> &mut Self {
        self.mode = mode;
        self
    }

    /// The link model.
    pub fn link_model(&mut self, link: LinkModel) -> &mut Self {
        self.link = link;
        self
    }

    /// Whether the engine has the CPU prefetch the state of the next few events' nodes while
    /// it handles the current one, and where the queue's next pushes will write. By default it
    /// does from [`LARGE_MESH_NODES`] nodes on.
    /// It changes how fast a run goes, and nothing else: the trace digest is the same either
    /// way.
    pub fn prefetch(&mut self, prefetch: bool) -> &mut Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// Adjusts each node's configuration (called at every start and restart).
    pub fn configure(&mut self, f: impl Fn(NodeIdx, &mut Config) + 'static) -> &mut Self {
        self.configure = Rc::new(f);
        self
    }

    /// Makes the simulation read every node's inboxes as soon as they hold data (an
    /// application that keeps up), handing the data to [`Sim::take_data`]. Off by default.
    pub fn read_inboxes(&mut self, read: bool) -> &mut Self {
        self.read_inboxes = read;
        self
    }

    /// The simulation, every node started at time zero.
    ///
    /// # Panics
    /// If a configuration from [`SimBuilder::configure`] is invalid, or more nodes are asked for
    /// than the address range holds (131,072).
    pub fn build(&self) -> Sim {
        assert!(
            self.nodes <= 1 << 17,
            "the simulated address range holds 131,072 nodes"
        );
        assert!(
            self.nat.is_none() || self.mode == Mode::Quic,
            "NAT boxes need QUIC mode"
        );
        let mut master = Rng::from_seed(self.seed);
        let mut net_rng = master.child();
        let nats = match &self.nat {
            Some(plan) => Nats::new(plan, self.nodes, &mut net_rng),
            None => Nats::default(),
        };
        let epoch = std::time::Instant::now();
        let prefetch = self.prefetch.unwrap_or(self.nodes >= LARGE_MESH_NODES);
        let mut sim = Sim {
            mode: self.mode,
            seed: self.seed,
            now: Instant::ZERO,
            rng: net_rng,
            master,
            queue: Queue::new(prefetch),
            nodes: Vec::with_capacity(self.nodes),
            link: self.link.clone(),
            partition: None,
            wires: Slab::default(),
            held: BTreeMap::new(),
            identities: Vec::with_capacity(self.nodes),
            ids: Vec::with_capacity(self.nodes),
            digest: Digest::default(),
            processed: 0,
            checkers: Vec::new(),
            configure: self.configure.clone(),
            epoch,
            stats: SimStats::default(),
            events_out: Vec::new(),
            read_inboxes: self.read_inboxes,
            data_out: Vec::new(),
            end: Instant::ZERO + self.duration,
            recorded: self.record_events.then(Vec::new),
            prefetch,
            nats,
        };
        for i in 0..self.nodes {
            let identity = Identity::from_seed(sim.master.child_seed());
            sim.ids.push(identity.node_id());
            sim.identities.push(identity);
            sim.nodes.push(SimNode::new());
            sim.start_host(i as NodeIdx);
        }
        let timeout = sim
            .nodes
            .first()
            .map_or(Duration::from_secs(10), |n| n.handshake_timeout);
        sim.checkers = check::standard(timeout);
        sim
    }
}

/// Counters of the network itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Messages (frames mode) or datagrams (QUIC mode) delivered.
    pub delivered: u64,
    /// Datagrams dropped by modelled loss (QUIC mode).
    pub lost: u64,
    /// Transmissions delayed by modelled loss (frames mode retransmissions).
    pub retransmitted: u64,
    /// Datagrams dropped by a partition (QUIC mode) or messages held by one (frames mode).
    pub partitioned: u64,
    /// Datagrams duplicated.
    pub duplicated: u64,
    /// Node crashes (asked for or by panic).
    pub crashes: u64,
    /// Node restarts.
    pub restarts: u64,
    /// Panics caught.
    pub panics: u64,
    /// Timer events that found their node due.
    pub timers_due: u64,
    /// Timer events that were superseded or early (no work).
    pub timers_idle: u64,
    /// Datagrams to an address nothing is at (a private address from elsewhere, say).
    pub unroutable: u64,
    /// Datagrams a NAT box dropped: no live mapping, or its filter kept them out.
    pub nat_filtered: u64,
}

/// A node's place in the engine: one page of memory. The node itself sits inline (not boxed),
/// with the engine's bookkeeping before it, so they are one address computation apart rather
/// than a pointer chase; and a node keeps its first few links and timers inline too (see
/// [`Node::HOT_BYTES`]). At 100,000 nodes every event's first touches miss the cache and the
/// TLB, and a page-table walk costs about as much as a miss: an event that stays within one
/// page pays for one walk.
#[repr(C, align(4096))]
struct SimNode {
    /// The time of the earliest timer event queued for this node.
    timer: Instant,
    /// Bumped at every crash: messages for an earlier incarnation find no one.
    incarnation: u32,
    /// When the node's uplink is free again, per lane (bandwidth model; QUIC mode's datagrams
    /// all take lane 0).
    uplink_free: [Instant; LANES],
    handshake_timeout: Duration,
    limits: Limits,
    /// Frames mode: the wire carrying each of the node's links.
    links: Bindings,
    /// `None` while crashed.
    host: Option<Host>,
}

impl SimNode {
    fn new() -> Self {
        SimNode {
            timer: Instant::NEVER,
            incarnation: 0,
            uplink_free: [Instant::ZERO; LANES],
            handshake_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            links: Bindings::default(),
            host: None,
        }
    }
}

/// A node's configured bounds, copied when it starts: the checkers compare its gauges with them
/// after every event, and the configuration itself lies in cache lines an event does not
/// otherwise touch.
#[derive(Clone, Copy, Default)]
struct Limits {
    peers: u32,
    pending: u32,
    events: u32,
    records: u32,
}

impl Limits {
    fn of(config: &Config) -> Self {
        let small = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Limits {
            peers: small(config.max_peers),
            pending: small(config.max_pending_handshakes),
            events: small(config.max_queued_events),
            records: small(config.dht.max_records),
        }
    }
}

/// One side of a wire: which node, which of its links, which incarnation.
#[derive(Clone, Copy, Debug)]
struct End {
    node: NodeIdx,
    link: LinkId,
    incarnation: u32,
}

/// Which wire carries one of a node's links.
#[derive(Clone, Copy, Debug)]
struct Binding {
    link: LinkId,
    wire: slab::Key,
    /// The direction the node sends in (0: it dialed).
    dir: u8,
}

/// Bindings kept in the node's page: as many as the links a node keeps inline.
const INLINE_BINDINGS: usize = 6;

/// A node's bindings, indexed by [`LinkId::slot`]; the first few inline.
#[derive(Default)]
struct Bindings {
    inline: [Option<Binding>; INLINE_BINDINGS],
    /// Slots `INLINE_BINDINGS..`.
    spill: Vec<Option<Binding>>,
    /// Bindings pushed out of their slot by a newer link while still live (rare).
    displaced: Vec<Binding>,
}

impl Bindings {
    fn slot(&self, slot: usize) -> Option<&Option<Binding>> {
        match slot.checked_sub(INLINE_BINDINGS) {
            None => Some(&self.inline[slot]),
            Some(s) => self.spill.get(s),
        }
    }

    fn get(&self, link: LinkId) -> Option<Binding> {
        match self.slot(link.slot()) {
            Some(Some(b)) if b.link == link => Some(*b),
            _ => self.displaced.iter().find(|b| b.link == link).copied(),
        }
    }

    fn slot_mut(&mut self, slot: usize) -> Option<&mut Option<Binding>> {
        match slot.checked_sub(INLINE_BINDINGS) {
            None => Some(&mut self.inline[slot]),
            Some(s) => self.spill.get_mut(s),
        }
    }

    fn bind(&mut self, link: LinkId, wire: slab::Key, dir: u8) {
        let slot = link.slot();
        if let Some(s) = slot.checked_sub(INLINE_BINDINGS) {
            if self.spill.len() <= s {
                self.spill.resize(s + 1, None);
            }
        }
        let entry = self.slot_mut(slot).expect("the slot exists");
        if let Some(old) = entry.replace(Binding { link, wire, dir }) {
            self.displaced.push(old);
        }
    }

    fn unbind(&mut self, link: LinkId) {
        match self.slot_mut(link.slot()) {
            Some(entry) if entry.is_some_and(|b| b.link == link) => *entry = None,
            _ => self.displaced.retain(|b| b.link != link),
        }
    }

    /// Removes every binding; returns their wires.
    fn clear(&mut self) -> Vec<slab::Key> {
        let wires = self
            .inline
            .iter_mut()
            .chain(&mut self.spill)
            .filter_map(Option::take)
            .chain(self.displaced.drain(..))
            .map(|b| b.wire)
            .collect();
        *self = Bindings::default();
        wires
    }
}

/// A modelled QUIC connection in frames mode: a reliable, ordered pipe each way.
struct Wire {
    dialer: End,
    listener_node: NodeIdx,
    listener: Option<End>,
    exporter: [u8; 32],
    /// Latest arrival scheduled per direction (0: dialer to listener) and lane, for FIFO
    /// delivery within a channel (see [`lane`]).
    last: [[Instant; LANES]; 2],
    /// Whether each side is finished with the wire (closed, told it is down, or crashed).
    done: [bool; 2],
}

impl Wire {
    /// The node a message in direction `dir` goes to, and its end of the wire (none yet on
    /// the listener's side before its inbound link is handed over).
    fn receiver(&self, dir: u8) -> (NodeIdx, Option<End>) {
        if dir == 0 {
            (self.listener_node, self.listener)
        } else {
            (self.dialer.node, Some(self.dialer))
        }
    }
}

/// Lanes of a wire per direction: channels 0, 1 and 2 have one each (the control channel, the
/// DHT's, the next protocol's), later channels share the last. Messages are delivered in order
/// within a lane, and a lane never waits for another: QUIC's independent streams, to the
/// precision of channels that share a lane.
const LANES: usize = 4;

/// The lane of `channel`.
fn lane(channel: Channel) -> usize {
    usize::from(channel.0).min(LANES - 1)
}

enum Msg {
    Data(Vec<u8>),
    /// Data short enough to ride inside the queue entry (keep-alives, most requests): its
    /// delivery then touches no heap memory of its own, which matters once a large run's state
    /// no longer fits in the CPU cache.
    Small {
        len: u8,
        bytes: [u8; SMALL_MSG],
    },
    Down(LinkError),
}

/// The longest message kept inline; an `Ev` is no larger for it than for a datagram.
const SMALL_MSG: usize = 46;

impl Msg {
    fn data(bytes: Vec<u8>) -> Msg {
        if bytes.len() <= SMALL_MSG {
            let mut inline = [0u8; SMALL_MSG];
            inline[..bytes.len()].copy_from_slice(&bytes);
            Msg::Small {
                len: bytes.len() as u8,
                bytes: inline,
            }
        } else {
            Msg::Data(bytes)
        }
    }

    /// The bytes of a data message.
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Msg::Data(b) => Some(b),
            Msg::Small { len, bytes } => Some(&bytes[..usize::from(*len)]),
            Msg::Down(_) => None,
        }
    }
}

enum Ev {
    Timer(NodeIdx),
    /// Frames mode: the listener side of a wire appears (its TLS completed).
    Inbound(u64),
    /// Frames mode: the dialer's link is up.
    LinkUp(u64),
    /// Frames mode: a message on a wire, direction 0 (to the listener) or 1 (to the dialer),
    /// on one of the link's channels.
    Wire {
        wire: u64,
        dir: u8,
        channel: u16,
        msg: Msg,
    },
    /// QUIC mode.
    Datagram {
        to: Dest,
        from: SocketAddr,
        ecn: Option<u8>,
        bytes: Vec<u8>,
    },
    /// A scenario's timer, and the node it is about if the scenario named one.
    Action {
        tag: u64,
        node: Option<NodeIdx>,
    },
}

/// The mesh size from which a run's state no longer fits in the CPU's cache: from here on the
/// engine prefetches by default, and `macula-sim run` asks for huge pages. Smaller meshes lose
/// by it: at 1,000 nodes the `connect` scenario ran about 10% slower with prefetching, at
/// 10,000 10-20% faster, at 100,000 30-40% faster.
pub const LARGE_MESH_NODES: usize = 4096;

/// Events between two prefetch stages of one event (see [`Sim::prefetch_ahead`]).
const PREFETCH_GAP: usize = 2;
const _: () = assert!(
    4 * PREFETCH_GAP < crate::queue::LOOK_AHEAD,
    "the queue names the events the prefetch looks at"
);

/// The bytes of a [`SimNode`] that nearly every event reads: the engine's bookkeeping and the
/// node's hot fields after it (see [`Node::HOT_BYTES`]).
const SIM_NODE_HOT_BYTES: usize =
    std::mem::offset_of!(SimNode, host) + Host::NODE_OFFSET + Node::HOT_BYTES;
const _: () = assert!(
    SIM_NODE_HOT_BYTES <= 16 * 64,
    "a prefetch of 16 lines at most"
);

/// A simulated mesh. See the [crate documentation](crate).
pub struct Sim {
    mode: Mode,
    seed: u64,
    now: Instant,
    /// The network's own randomness (loss, jitter, ...).
    rng: Rng,
    /// Seeds for nodes (identities, incarnations) and scenarios.
    master: Rng,
    queue: Queue<Ev>,
    nodes: Vec<SimNode>,
    link: LinkModel,
    partition: Option<Partition>,
    wires: Slab<Wire>,
    /// Messages held by the partition, per wire and direction, in order, with their channels.
    held: BTreeMap<slab::Key, [Vec<(Channel, Msg)>; 2]>,
    /// Every node's identity (kept across restarts) and id, apart from the hot state.
    identities: Vec<Identity>,
    ids: Vec<NodeId>,
    digest: Digest,
    processed: u64,
    checkers: Vec<Box<dyn Checker>>,
    configure: ConfigureFn,
    epoch: std::time::Instant,
    stats: SimStats,
    /// Node events of the last step, for [`Sim::step`]'s caller.
    events_out: Vec<(NodeIdx, Event)>,
    /// Whether nodes' inboxes are read as they fill ([`SimBuilder::read_inboxes`]).
    read_inboxes: bool,
    /// Data read from inboxes since [`Sim::take_data`] was last called.
    data_out: Vec<(NodeIdx, Data)>,
    /// When [`Sim::run`] stops.
    end: Instant,
    /// Events kept for [`Sim::take_events`], when recording.
    recorded: Option<Vec<NodeEvent>>,
    /// Whether [`Sim::prefetch_ahead`] runs, and the queue prefetches where its pushes go (it
    /// changes nothing but speed).
    prefetch: bool,
    /// The NAT boxes, if any.
    nats: Nats,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("mode", &self.mode)
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

/// A node event, as returned by [`Sim::step`].
pub type NodeEvent = (NodeIdx, Event);

impl Sim {
    // ------------------------------------------------------------------ getters

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The master seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The fidelity.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How many nodes there are (up or crashed).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A node's core state, `None` while it is crashed.
    pub fn node(&self, n: NodeIdx) -> Option<&Node> {
        self.nodes.get(n as usize)?.host.as_ref().map(Host::node)
    }

    /// A node's QUIC-layer counters (QUIC mode, while it is up).
    pub fn quic_stats(&self, n: NodeIdx) -> Option<macula_proto::quic::EndpointStats> {
        self.nodes.get(n as usize)?.host.as_ref()?.quic_stats()
    }

    /// A node's id (kept across restarts; [`Sim::restart_as`] gives it another).
    pub fn node_id(&self, n: NodeIdx) -> NodeId {
        self.ids[n as usize]
    }

    /// A node's address.
    pub fn addr(&self, n: NodeIdx) -> SocketAddr {
        self.nats.addr(n)
    }

    /// The NAT box node `n` sits behind, if any.
    pub fn nat_box(&self, n: NodeIdx) -> Option<usize> {
        self.nats.box_of(n)
    }

    /// Events processed so far.
    pub fn events_processed(&self) -> u64 {
        self.processed
    }

    /// The trace digest so far (32 hex digits).
    pub fn trace_digest(&self) -> String {
        self.digest.hex()
    }

    /// Network counters.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// A seed for a scenario's own randomness, derived from the master seed.
    pub fn derive_seed(&mut self) -> u64 {
        self.master.child_seed()
    }

    // ------------------------------------------------------------------ control

    /// Adds a checker (the standard ones are always there).
    pub fn add_checker(&mut self, checker: Box<dyn Checker>) {
        self.checkers.push(checker);
    }

    /// Schedules a scenario action; [`Sim::step`] returns it as `Step::Action(tag)` at `at`.
    pub fn schedule(&mut self, at: Instant, tag: u64) {
        self.queue
            .push(at.max(self.now), Ev::Action { tag, node: None });
    }

    /// [`Sim::schedule`] for an action that works on node `node`: the same, and a large run
    /// has the CPU fetch that node's state a few events before the action falls due, as it
    /// does for the node of a delivery or a timer (see [`SimBuilder::prefetch`]).
    pub fn schedule_for(&mut self, at: Instant, node: NodeIdx, tag: u64) {
        let node = Some(node).filter(|n| (*n as usize) < self.nodes.len());
        self.queue.push(at.max(self.now), Ev::Action { tag, node });
    }

    /// Node `from` dials node `to`. Returns the link id, or `None` if `from` is down.
    pub fn connect(&mut self, from: NodeIdx, to: NodeIdx) -> Option<LinkId> {
        let expected = Some(self.node_id(to));
        self.dial(from, to, expected)
    }

    /// Node `from` dials node `to`'s address without naming the node it expects there, as a
    /// user dials a seed's address: the first key seen there is pinned (trust on first use),
    /// and another key later is refused.
    pub fn connect_addr(&mut self, from: NodeIdx, to: NodeIdx) -> Option<LinkId> {
        self.dial(from, to, None)
    }

    fn dial(&mut self, from: NodeIdx, to: NodeIdx, expected: Option<NodeId>) -> Option<LinkId> {
        let now = self.now;
        let addr = self.addr(to);
        let link = self.with_host(from, |h| h.connect(addr, expected, now))?;
        if self.mode == Mode::Quic {
            // Frames mode observes every dial, the node's own included, as its `Open`.
            self.observe(&Observation::Dial {
                node: from,
                link,
                at: now,
            });
        }
        self.drain(from);
        Some(link)
    }

    /// Runs a command on node `n` (the `dht_*` commands, for example) with the current time,
    /// and carries out what it asks for. `None` if the node is down.
    pub fn command<R>(&mut self, n: NodeIdx, f: impl FnOnce(&mut Node, Instant) -> R) -> Option<R> {
        let now = self.now;
        let r = self.with_host(n, |h| h.command(now, f))?;
        self.drain(n);
        Some(r)
    }

    /// Node `from` pings its peer `peer`.
    pub fn ping(&mut self, from: NodeIdx, peer: NodeId) -> Option<Result<PingId, PingError>> {
        let now = self.now;
        let result = self.with_host(from, |h| h.ping(&peer, now))?;
        self.drain(from);
        Some(result)
    }

    /// Node `from` drops its peer `peer` cleanly.
    pub fn disconnect(&mut self, from: NodeIdx, peer: NodeId) -> bool {
        let now = self.now;
        let result = self
            .with_host(from, |h| h.disconnect(&peer, now))
            .unwrap_or(false);
        self.drain(from);
        result
    }

    /// Crashes a node: its state is gone, nothing is said to its peers.
    pub fn crash(&mut self, n: NodeIdx) {
        let node = &mut self.nodes[n as usize];
        if node.host.take().is_none() {
            return;
        }
        node.incarnation += 1;
        node.timer = Instant::NEVER;
        for wire in node.links.clear() {
            self.side_done(wire, n);
        }
        self.stats.crashes += 1;
        self.digest.record(self.now.as_micros(), n, 0xc0);
        self.observe(&Observation::Crash {
            node: n,
            at: self.now,
        });
    }

    /// Restarts a crashed node with its identity and a fresh state.
    pub fn restart(&mut self, n: NodeIdx) {
        if self.nodes[n as usize].host.is_some() {
            return;
        }
        self.stats.restarts += 1;
        self.digest.record(self.now.as_micros(), n, 0xc1);
        self.start_host(n);
    }

    /// Restarts a crashed node under another identity: an impostor at its address.
    pub fn restart_as(&mut self, n: NodeIdx, identity: Identity) {
        if self.nodes[n as usize].host.is_some() {
            return;
        }
        self.ids[n as usize] = identity.node_id();
        self.identities[n as usize] = identity;
        self.restart(n);
    }

    /// Whether a node is up.
    pub fn is_up(&self, n: NodeIdx) -> bool {
        self.nodes[n as usize].host.is_some()
    }

    /// Cuts `a` from `b` (both ways, or only from `a` to `b`). Replaces any earlier partition.
    pub fn partition(&mut self, a: &[NodeIdx], b: &[NodeIdx], one_way: bool) {
        self.partition = Some(Partition::new(self.nodes.len(), a, b, one_way));
        self.digest.record(self.now.as_micros(), 0, 0xd0);
    }

    /// Ends the partition; messages it held are delivered (frames mode).
    pub fn heal(&mut self) {
        self.partition = None;
        self.digest.record(self.now.as_micros(), 0, 0xd1);
        for (wire, held) in std::mem::take(&mut self.held) {
            for (dir, msgs) in held.into_iter().enumerate() {
                for (channel, msg) in msgs {
                    self.send_on_wire(wire, dir as u8, channel, msg);
                }
            }
        }
    }

    // ------------------------------------------------------------------ running

    /// Processes the next event due at or before `until`. Returns `None` when none is due (the
    /// clock then stands at `until`), else what happened. Events that commands gave since the
    /// last step (an operation refused at once) are returned first, before time moves.
    pub fn step(&mut self, until: Instant) -> Option<Step> {
        // Events a command gave between steps (an operation that failed at once) come first.
        if !self.events_out.is_empty() {
            return Some(Step::Events(std::mem::take(&mut self.events_out)));
        }
        if self.prefetch {
            self.prefetch_ahead();
        }
        let Some((at, ev)) = self.queue.pop_due(until) else {
            self.now = self.now.max(until);
            return None;
        };
        self.now = self.now.max(at);
        self.processed += 1;
        match ev {
            Ev::Action { tag, .. } => return Some(Step::Action(tag)),
            Ev::Timer(n) => self.fire_timer(n, at),
            Ev::Inbound(wire) => self.deliver_inbound(wire),
            Ev::LinkUp(wire) => self.deliver_link_up(wire),
            Ev::Wire {
                wire,
                dir,
                channel,
                msg,
            } => self.deliver_on_wire(wire, dir, Channel(channel), msg),
            Ev::Datagram {
                to,
                from,
                ecn,
                bytes,
            } => self.deliver_datagram(to, from, ecn, bytes),
        }
        Some(Step::Events(std::mem::take(&mut self.events_out)))
    }

    /// Runs until `deadline` or until `done` holds (checked after every step). Returns whether
    /// `done` held. Scenario actions are ignored; use [`Sim::step`] to handle them.
    pub fn run_until(&mut self, deadline: Instant, mut done: impl FnMut(&Sim) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            match self.step(deadline) {
                None => return done(self),
                Some(Step::Events(events)) => {
                    if let Some(recorded) = &mut self.recorded {
                        recorded.extend(events);
                    }
                }
                Some(Step::Action(_)) => {}
            }
        }
    }

    /// Runs to the end of the builder's [`duration`](SimBuilder::duration).
    pub fn run(&mut self) {
        let end = self.end;
        self.run_until(end, |_| false);
    }

    /// The data read from nodes' inboxes since the last call, in order (empty unless the
    /// builder asked to [read](SimBuilder::read_inboxes) them).
    pub fn take_data(&mut self) -> Vec<(NodeIdx, Data)> {
        std::mem::take(&mut self.data_out)
    }

    /// The node events recorded since the last call, in order (empty unless the builder asked
    /// to [record](SimBuilder::record_events) them).
    pub fn take_events(&mut self) -> Vec<NodeEvent> {
        self.recorded
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The checkers' verdicts for a run ending now.
    pub fn verdicts(&mut self) -> Vec<Verdict> {
        // Final gauges for every live node, so a bound broken at the end is seen.
        for n in 0..self.nodes.len() as NodeIdx {
            self.observe_gauges(n);
        }
        let end = self.now;
        self.checkers.iter_mut().map(|c| c.finish(end)).collect()
    }

    // ------------------------------------------------------------------ internals

    /// Has the CPU fetch what the next few events will read, in stages: the event
    /// `k * PREFETCH_GAP` places ahead gets stage `k` (the wire 4, the node's hot fields 3,
    /// what [`Node::prefetch`] names 2), so each stage reads only memory an earlier one
    /// fetched, `PREFETCH_GAP` events before. At 100,000 nodes nearly every event's state has
    /// left the cache since it was last used; see `docs/simulator.md`.
    fn prefetch_ahead(&self) {
        let cpu = &mut Cpu;
        // Place 0 is the event about to pop.
        let [wire, node, tables] = self.queue.ahead_each([4, 3, 2].map(|k| k * PREFETCH_GAP));
        if let Some(Ev::Wire { wire, .. } | Ev::Inbound(wire) | Ev::LinkUp(wire)) = wire {
            if let Some(slot) = self.wires.slot(*wire) {
                cpu.prefetch(slot);
            }
        }
        if let Some((n, _)) = node.and_then(|ev| self.target(ev)) {
            cpu.prefetch_prefix(&self.nodes[n as usize], SIM_NODE_HOT_BYTES);
        }
        let Some((n, link)) = tables.and_then(|ev| self.target(ev)) else {
            return;
        };
        let node = &self.nodes[n as usize];
        let Some(Host::Frames(f)) = &node.host else {
            return;
        };
        let touched = f.prefetch(link, cpu);
        if let Some(b) = touched.and_then(|l| node.links.slot(l.slot())) {
            cpu.prefetch(b);
        }
        // A timer mostly sends on the link it fires for (a keep-alive): its wire, as a
        // delivery's was fetched above.
        if link.is_none() {
            let wire = touched.and_then(|l| node.links.get(l)).map(|b| b.wire);
            if let Some(slot) = wire.and_then(|w| self.wires.slot(w)) {
                cpu.prefetch(slot);
            }
        }
    }

    /// The node a queued event is for, and the link it arrives on, as far as known before it
    /// pops.
    fn target(&self, ev: &Ev) -> Option<(NodeIdx, Option<LinkId>)> {
        match ev {
            Ev::Timer(n) => Some((*n, None)),
            Ev::Wire { wire, dir, .. } => {
                let (node, end) = self.wires.get(*wire)?.receiver(*dir);
                Some((node, end.map(|e| e.link)))
            }
            Ev::Inbound(wire) => Some((self.wires.get(*wire)?.listener_node, None)),
            Ev::LinkUp(wire) => {
                let w = self.wires.get(*wire)?;
                Some((w.dialer.node, Some(w.dialer.link)))
            }
            Ev::Datagram {
                to: Dest::Node(n, _),
                ..
            } => Some((*n, None)),
            Ev::Datagram { .. } => None,
            Ev::Action { node, .. } => node.map(|n| (n, None)),
        }
    }

    fn start_host(&mut self, n: NodeIdx) {
        let seed = self.master.child_seed();
        let mut config = Config::default();
        config.listen_addrs = vec![self.nats.addr(n)];
        if self.mode == Mode::Quic {
            config.nat.aux_port = Some(AUX_PORT);
        }
        // A restart starts later than the run before it, so its records outrank the old ones.
        config.start_epoch = self.now.as_micros() / 1_000 + 1;
        (self.configure)(n, &mut config);
        let identity = self.identities[n as usize].clone();
        let now = self.now;
        let host = match self.mode {
            Mode::Frames => Host::Frames(
                Node::new(config.clone(), identity, seed, now)
                    .expect("simulated configurations are valid"),
            ),
            Mode::Quic => {
                let mut ec = EndpointConfig::new(config.clone(), identity, seed, self.epoch);
                ec.seeded_crypto = true;
                Host::Quic(Box::new(
                    Endpoint::new(ec, now).expect("simulated configurations are valid"),
                ))
            }
        };
        let node = &mut self.nodes[n as usize];
        node.handshake_timeout = config.handshake_timeout;
        node.limits = Limits::of(&config);
        node.host = Some(host);
        node.timer = Instant::NEVER;
        self.drain(n);
    }

    /// Runs `f` on a live host, catching a panic (which crashes the node and is reported).
    fn with_host<R>(&mut self, n: NodeIdx, f: impl FnOnce(&mut Host) -> R) -> Option<R> {
        let host = self.nodes[n as usize].host.as_mut()?;
        match catch_unwind(AssertUnwindSafe(|| f(host))) {
            Ok(r) => Some(r),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                self.stats.panics += 1;
                self.observe(&Observation::Panic {
                    node: n,
                    at: self.now,
                    message: &message,
                });
                self.crash(n);
                None
            }
        }
    }

    fn observe(&mut self, o: &Observation<'_>) {
        for c in &mut self.checkers {
            c.observe(o);
        }
    }

    fn observe_gauges(&mut self, n: NodeIdx) {
        let Some(node) = self.node(n) else {
            return;
        };
        let limits = self.nodes[n as usize].limits;
        let o = Observation::Gauges {
            node: n,
            at: self.now,
            peers: (node.peer_count(), limits.peers as usize),
            pending: (node.pending_count(), limits.pending as usize),
            events: (node.queued_events(), limits.events as usize),
            records: (node.records_held(), limits.records as usize),
        };
        self.observe(&o);
    }

    /// Carries out everything node `n` asks for, records its events, reads its inboxes (if
    /// asked to), re-arms its timer.
    fn drain(&mut self, n: NodeIdx) {
        loop {
            self.drain_outputs(n);
            if !self.read_inboxes || !self.read_data(n) {
                break;
            }
        }
        self.observe_gauges(n);
        let now = self.now;
        let node = &mut self.nodes[n as usize];
        let Some(host) = node.host.as_ref() else {
            return;
        };
        if let Some(t) = host.poll_timeout() {
            let t = t.max(now);
            if t < node.timer {
                node.timer = t;
                self.queue.push(t, Ev::Timer(n));
            }
        }
    }

    /// Takes what node `n`'s inboxes hold; returns whether there was anything (taking it may
    /// have given the node work).
    fn read_data(&mut self, n: NodeIdx) -> bool {
        let now = self.now;
        let mut read = false;
        while let Some(inbox) = self
            .with_host(n, |h| h.command(now, |node, _| node.poll_ready()))
            .flatten()
        {
            while let Some(data) = self
                .with_host(n, |h| {
                    h.command(now, |node, now| node.take_data(inbox, now))
                })
                .flatten()
            {
                self.digest.record(now.as_micros(), n, 0xda);
                self.data_out.push((n, data));
                read = true;
            }
        }
        read
    }

    /// Carries out the transmits node `n` asks for and records its events.
    fn drain_outputs(&mut self, n: NodeIdx) {
        loop {
            let out = self.with_host(n, |h| match h {
                Host::Frames(node) => node.poll_transmit().map(Out::Transmit),
                Host::Quic(ep) => ep
                    .poll_transmit()
                    // GSO batches are never enabled in simulation; split one defensively anyway.
                    .map(|d| {
                        let segments = d.segments().map(<[u8]>::to_vec).collect();
                        Out::Datagrams(d.socket, d.destination, d.ecn, segments)
                    }),
            });
            match out.flatten() {
                Some(Out::Transmit(t)) => self.frames_transmit(n, t),
                Some(Out::Datagrams(socket, to, ecn, segments)) => {
                    for bytes in segments {
                        self.send_datagram(n, socket, to, ecn, bytes);
                    }
                }
                None => break,
            }
        }
        while self.nodes[n as usize]
            .host
            .as_ref()
            .is_some_and(Host::may_have_event)
        {
            let Some(event) = self.with_host(n, Host::poll_event).flatten() else {
                break;
            };
            self.digest.record(self.now.as_micros(), n, 0xe0);
            hash_event(&mut self.digest, &event);
            self.observe(&Observation::Event {
                node: n,
                at: self.now,
                event: &event,
            });
            self.events_out.push((n, event));
        }
    }

    fn fire_timer(&mut self, n: NodeIdx, at: Instant) {
        let now = self.now;
        let node = &mut self.nodes[n as usize];
        if node.timer != at || node.host.is_none() {
            self.stats.timers_idle += 1;
            return; // superseded by an earlier timer, or the node crashed
        }
        node.timer = Instant::NEVER;
        let due = node
            .host
            .as_ref()
            .and_then(Host::poll_timeout)
            .is_some_and(|t| t <= now);
        if !due {
            self.stats.timers_idle += 1;
        }
        if due {
            self.stats.timers_due += 1;
            self.digest.record(now.as_micros(), n, 0x71);
            self.with_host(n, |h| h.handle_timeout(now));
        }
        self.drain(n);
    }

    // ---------------------------------------------------------------- frames mode

    fn path(&self, from: NodeIdx, to: NodeIdx) -> PathProps {
        self.link.path(from, to)
    }

    fn blocked(&self, from: NodeIdx, to: NodeIdx) -> bool {
        self.partition.as_ref().is_some_and(|p| p.blocks(from, to))
    }

    /// One-way delay for `bytes` from `from` to `to` in one of `from`'s uplink lanes, with
    /// jitter, bandwidth and (frames mode) retransmission delays for modelled loss. `None` when
    /// the lane's drop-tail buffer is full (the datagram is lost).
    fn delay(
        &mut self,
        from: NodeIdx,
        to: NodeIdx,
        lane: usize,
        bytes: usize,
        retransmit: bool,
    ) -> Option<Duration> {
        let p = self.path(from, to);
        let jitter = Duration::from_micros(self.rng.below(p.jitter.as_micros() + 1));
        let mut delay = p.latency + jitter;
        if let Some(bw) = self.link.bandwidth.filter(|bw| *bw > 0) {
            let node = &mut self.nodes[from as usize];
            let start = node.uplink_free[lane].max(self.now);
            if let Some(buffer) = self.link.buffer.filter(|_| !retransmit) {
                let queued = (start - self.now).as_micros() * bw / 1_000_000;
                if queued + bytes as u64 > buffer {
                    return None;
                }
            }
            let done = start + Duration::from_micros(bytes as u64 * 1_000_000 / bw);
            node.uplink_free[lane] = done;
            delay = delay + (done - self.now);
        }
        if retransmit && p.loss > 0.0 {
            // A lost transmission costs a probe timeout (about 1.5 RTT + 25 ms), each time.
            let rto = p.latency.saturating_mul(3) + Duration::from_millis(25);
            let mut tries = 0;
            while chance(&mut self.rng) < p.loss && tries < 16 {
                delay = delay + rto.saturating_mul(1 << tries.min(4));
                tries += 1;
                self.stats.retransmitted += 1;
            }
        }
        Some(delay)
    }

    fn frames_transmit(&mut self, n: NodeIdx, t: Transmit) {
        match t {
            Transmit::Open { link, addr, .. } => {
                self.observe(&Observation::Dial {
                    node: n,
                    link,
                    at: self.now,
                });
                self.open_wire(n, link, addr)
            }
            Transmit::Send {
                link,
                channel,
                bytes,
            } => {
                if let Some((wire, dir)) = self.wire_of(n, link) {
                    self.send_on_wire(wire, dir, channel, Msg::data(bytes));
                }
            }
            Transmit::Close { link, code } => {
                if let Some((wire, dir)) = self.wire_of(n, link) {
                    self.nodes[n as usize].links.unbind(link);
                    let down = Msg::Down(LinkError::ClosedByPeer(code));
                    self.send_on_wire(wire, dir, Channel::CONTROL, down);
                    self.side_done(wire, n);
                }
            }
            // Frames mode models links, not UDP or QUIC: raw datagrams (NAT probes) and
            // relayed QUIC packets go nowhere.
            Transmit::Datagram { .. } | Transmit::Relayed { .. } => {}
        }
    }

    /// The wire carrying `link` of node `n`, and the direction `n` sends in.
    fn wire_of(&self, n: NodeIdx, link: LinkId) -> Option<(u64, u8)> {
        self.nodes[n as usize]
            .links
            .get(link)
            .map(|b| (b.wire, b.dir))
    }

    fn open_wire(&mut self, n: NodeIdx, link: LinkId, addr: SocketAddr) {
        let Some(target) = node_at(addr, self.nodes.len()) else {
            return; // nobody there: the dialer's handshake timeout answers
        };
        let mut exporter = [0u8; 32];
        self.rng.fill(&mut exporter);
        let incarnation = self.nodes[n as usize].incarnation;
        let w = Wire {
            dialer: End {
                node: n,
                link,
                incarnation,
            },
            listener_node: target,
            listener: None,
            exporter,
            last: [[self.now; LANES]; 2],
            done: [false, false],
        };
        let wire = self.wires.insert(w);
        self.nodes[n as usize].links.bind(link, wire, 0);
        if self.blocked(n, target) || self.blocked(target, n) || !self.is_up(target) {
            // No handshake gets through; the wire waits for the dialer to give up.
            return;
        }
        // QUIC + TLS: the dialer is up after one round trip, the listener half a trip later.
        // Frames mode never drops (its `delay` is always `Some`).
        let out = self.delay(n, target, 0, 1200, true).unwrap_or_default();
        let back = self.delay(target, n, 0, 1200, true).unwrap_or_default();
        let up_at = self.now + out + back;
        let inbound_at = up_at + self.delay(n, target, 0, 100, true).unwrap_or_default();
        if let Some(w) = self.wires.get_mut(wire) {
            w.last = [[inbound_at; LANES], [up_at; LANES]];
        }
        self.queue.push(up_at, Ev::LinkUp(wire));
        self.queue.push(inbound_at, Ev::Inbound(wire));
    }

    fn send_on_wire(&mut self, wire: u64, dir: u8, channel: Channel, msg: Msg) {
        let Some(w) = self.wires.get(wire) else {
            return;
        };
        let (from, to) = if dir == 0 {
            (w.dialer.node, w.listener_node)
        } else {
            (w.listener_node, w.dialer.node)
        };
        if self.blocked(from, to) {
            self.stats.partitioned += 1;
            self.held.entry(wire).or_default()[dir as usize].push((channel, msg));
            return;
        }
        let len = msg.bytes().map_or(40, <[u8]>::len);
        let delay = self
            .delay(from, to, lane(channel), len, true)
            .unwrap_or_default();
        let w = self.wires.get_mut(wire).expect("looked up above");
        let lanes = &mut w.last[dir as usize];
        let at = if msg.bytes().is_some() {
            let at = (self.now + delay).max(lanes[lane(channel)]);
            lanes[lane(channel)] = at;
            at
        } else {
            // A close comes after everything sent before it, on every channel.
            let at = lanes.iter().fold(self.now + delay, |a, l| a.max(*l));
            *lanes = [at; LANES];
            at
        };
        let channel = channel.0;
        self.queue.push(
            at,
            Ev::Wire {
                wire,
                dir,
                channel,
                msg,
            },
        );
    }

    /// Marks node `n`'s side of a wire finished; forgets the wire once both sides are.
    fn side_done(&mut self, wire: u64, n: NodeIdx) {
        let Some(w) = self.wires.get_mut(wire) else {
            return;
        };
        if w.dialer.node == n {
            w.done[0] = true;
        }
        if w.listener_node == n {
            w.done[1] = true;
        }
        if w.done[0] && w.done[1] {
            self.wires.remove(wire);
            self.held.remove(&wire);
        }
    }

    /// Whether a wire end still belongs to a live process that has not let go of the link.
    fn end_is_current(&self, w: &Wire, end: End) -> bool {
        let side = usize::from(end.node != w.dialer.node || end.link != w.dialer.link);
        let node = &self.nodes[end.node as usize];
        !w.done[side] && node.incarnation == end.incarnation && node.host.is_some()
    }

    fn deliver_inbound(&mut self, wire: u64) {
        let Some(w) = self.wires.get(wire) else {
            return;
        };
        let (dialer, target, exporter) = (w.dialer, w.listener_node, w.exporter);
        let now = self.now;
        self.digest.record(now.as_micros(), target, 0x10);
        let info = LinkInfo {
            remote_id: self.node_id(dialer.node),
            remote_addr: addr_of(dialer.node),
            exporter,
        };
        let Some(result) = self.with_host(target, |h| match h {
            Host::Frames(node) => node.handle_inbound(info, now),
            Host::Quic(_) => unreachable!("wires exist in frames mode only"),
        }) else {
            self.side_done(wire, target);
            return;
        };
        match result {
            Ok(link) => {
                let incarnation = self.nodes[target as usize].incarnation;
                self.nodes[target as usize].links.bind(link, wire, 1);
                if let Some(w) = self.wires.get_mut(wire) {
                    w.listener = Some(End {
                        node: target,
                        link,
                        incarnation,
                    });
                }
            }
            Err(code) => {
                let down = Msg::Down(LinkError::ClosedByPeer(code));
                self.send_on_wire(wire, 1, Channel::CONTROL, down);
                self.side_done(wire, target);
            }
        }
        self.drain(target);
    }

    fn deliver_link_up(&mut self, wire: u64) {
        let Some(w) = self.wires.get(wire) else {
            return;
        };
        let (dialer, listener, exporter) = (w.dialer, w.listener_node, w.exporter);
        if !self.end_is_current(w, dialer) {
            return;
        }
        let now = self.now;
        self.digest.record(now.as_micros(), dialer.node, 0x11);
        let info = LinkInfo {
            remote_id: self.node_id(listener),
            remote_addr: addr_of(listener),
            exporter,
        };
        self.with_host(dialer.node, |h| match h {
            Host::Frames(node) => node.handle_link_up(dialer.link, info, now),
            Host::Quic(_) => unreachable!("wires exist in frames mode only"),
        });
        self.drain(dialer.node);
    }

    fn deliver_on_wire(&mut self, wire: u64, dir: u8, channel: Channel, msg: Msg) {
        let Some(w) = self.wires.get(wire) else {
            return;
        };
        let (target_node, target) = w.receiver(dir);
        let Some(end) = target.filter(|e| self.end_is_current(w, *e)) else {
            // The receiving process is gone. A restarted one answers a stray packet with a
            // stateless reset, which the sender sees as a reset link.
            if msg.bytes().is_some() && self.is_up(target_node) {
                self.send_on_wire(wire, 1 - dir, Channel::CONTROL, Msg::Down(LinkError::Reset));
            }
            return;
        };
        self.stats.delivered += 1;
        let now = self.now;
        match msg {
            Msg::Data(_) | Msg::Small { .. } => {
                let bytes = msg.bytes().expect("a data message");
                self.digest.record(now.as_micros(), end.node, 0x12);
                self.digest.bytes(bytes);
                self.with_host(end.node, |h| match h {
                    Host::Frames(node) => node.handle_link_data(end.link, channel, bytes, now),
                    Host::Quic(_) => unreachable!("wires exist in frames mode only"),
                });
            }
            Msg::Down(error) => {
                self.digest.record(now.as_micros(), end.node, 0x13);
                self.nodes[end.node as usize].links.unbind(end.link);
                self.side_done(wire, end.node);
                self.with_host(end.node, |h| match h {
                    Host::Frames(node) => node.handle_link_down(end.link, error, now),
                    Host::Quic(_) => unreachable!("wires exist in frames mode only"),
                });
            }
        }
        self.drain(end.node);
    }

    // ---------------------------------------------------------------- QUIC mode

    fn send_datagram(
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

    fn deliver_datagram(&mut self, to: Dest, from: SocketAddr, ecn: Option<u8>, bytes: Vec<u8>) {
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
            (Host::Quic(ep), Socket::Main) => ep.handle_datagram(now, from, ecn, &bytes),
            (Host::Quic(ep), Socket::Auxiliary) => ep.handle_auxiliary_datagram(now, from, &bytes),
            (Host::Frames(_), _) => unreachable!("datagrams exist in QUIC mode only"),
        });
        self.drain(to);
    }
}

enum Out {
    Transmit(Transmit),
    Datagrams(Socket, SocketAddr, Option<u8>, Vec<Vec<u8>>),
}

/// What one [`Sim::step`] did.
#[derive(Debug)]
pub enum Step {
    /// A scenario action fell due.
    Action(u64),
    /// The network or a timer moved; these node events resulted.
    Events(Vec<NodeEvent>),
}

/// Hashes the parts of an event that matter for reproducibility.
fn hash_event(d: &mut Digest, event: &Event) {
    match event {
        Event::PeerUp { peer, link, .. } => {
            d.word(1);
            d.bytes(peer.as_bytes());
            d.word(link.0);
        }
        Event::PeerDown { peer, link, .. } => {
            d.word(2);
            d.bytes(peer.as_bytes());
            d.word(link.0);
        }
        Event::ConnectFailed { link, .. } => {
            d.word(3);
            d.word(link.0);
        }
        Event::InboundRefused { link, reason, .. } => {
            d.word(4);
            d.word(link.0);
            d.word(*reason as u64);
        }
        Event::PingResult { id, result, .. } => {
            d.word(5);
            d.word(id.0);
            d.word(result.map_or(u64::MAX, |rtt| rtt.as_micros()));
        }
        other => d.bytes(format!("{other:?}").as_bytes()),
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn inline_messages_do_not_grow_queue_entries() {
        // A datagram is the largest event; an inline message must fit beside it.
        let datagram = std::mem::size_of::<(NodeIdx, SocketAddr, Option<u8>, Vec<u8>)>();
        assert!(
            std::mem::size_of::<Ev>() <= datagram + 8,
            "{}",
            std::mem::size_of::<Ev>()
        );
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    #[test]
    fn a_node_is_one_page_and_its_hot_bytes_come_first() {
        let unpadded = std::mem::offset_of!(SimNode, host) + std::mem::size_of::<Option<Host>>();
        assert_eq!(
            std::mem::size_of::<SimNode>(),
            4096,
            "{unpadded} bytes unpadded"
        );
        assert_eq!(
            std::mem::size_of::<Option<Host>>(),
            std::mem::size_of::<Host>(),
            "`None` is a spare value of the host's tag, not a field of its own"
        );
        // Where the node really is, measured, against where the prefetch assumes it is.
        let mut sim = SimBuilder::new().nodes(1).build();
        let node = &sim.nodes[0];
        let Some(Host::Frames(frames)) = &node.host else {
            panic!("a frames-mode node is up");
        };
        let offset = frames as *const Node as usize - node as *const SimNode as usize;
        assert_eq!(
            offset,
            std::mem::offset_of!(SimNode, host) + Host::NODE_OFFSET
        );
        sim.crash(0);
        assert!(sim.nodes[0].host.is_none());
    }

    #[test]
    fn bindings_past_the_inline_ones_and_displaced_ones_are_found_and_cleared() {
        let mut b = Bindings::default();
        let ids: Vec<LinkId> = (0..INLINE_BINDINGS as u64 + 2)
            .map(|slot| LinkId(1 << 32 | slot))
            .collect();
        for (k, id) in ids.iter().enumerate() {
            b.bind(*id, k as u64 + 100, 0);
        }
        // A newer link in a slot whose old binding is still live displaces it.
        let newer = LinkId(2 << 32 | 1);
        b.bind(newer, 7, 1);
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(b.get(*id).map(|b| b.wire), Some(k as u64 + 100), "{id:?}");
        }
        assert_eq!(b.get(newer).map(|b| (b.wire, b.dir)), Some((7, 1)));
        b.unbind(ids[1]);
        b.unbind(ids[INLINE_BINDINGS + 1]);
        assert!(b.get(ids[1]).is_none() && b.get(ids[INLINE_BINDINGS + 1]).is_none());
        assert!(
            b.get(newer).is_some(),
            "unbinding the displaced one keeps the slot's"
        );
        let mut wires = b.clear();
        wires.sort_unstable();
        let mut expected: Vec<u64> = (0..INLINE_BINDINGS as u64 + 1)
            .filter(|k| *k != 1)
            .map(|k| k + 100)
            .chain([7])
            .collect();
        expected.sort_unstable();
        assert_eq!(wires, expected);
        assert!(ids.iter().all(|id| b.get(*id).is_none()));
    }
}
