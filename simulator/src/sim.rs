//! The engine: one virtual clock, one event queue, every node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use macula_proto::node::layout::Prefetch;
use macula_proto::node::Socket;
use macula_proto::quic::{Endpoint, EndpointConfig};
use macula_proto::{
    Channel, Config, Data, Duration, Event, Identity, Instant, LinkError, LinkId, Node, NodeId,
    PingError, PingId, Rng, Transmit,
};

use crate::check::{Checker, Observation, Verdict};
use crate::cpu::Cpu;
use crate::host::Host;
use crate::nat::{Dest, Nats, AUX_PORT};
use crate::net::{LinkModel, NodeIdx, Partition};
use crate::queue::Queue;
use crate::slab::{self, Slab};
use crate::trace::Digest;

mod builder;
mod datagrams;
mod frames;

pub use builder::SimBuilder;
use frames::{Bindings, Wire, LANES};

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

    /// Ends the link faults: from now on no path loses, duplicates or reorders (explicit
    /// per-path overrides stay as they are). Latency and jitter stay.
    pub fn calm(&mut self) {
        self.link.loss = 0.0;
        self.link.duplicate = 0.0;
        self.link.reorder = 0.0;
        self.digest.record(self.now.as_micros(), 0, 0xd2);
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
    use super::frames::INLINE_BINDINGS;
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
