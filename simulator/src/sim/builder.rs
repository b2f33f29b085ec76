//! Building a [`Sim`]: its seed, size, mode, network model, NAT boxes and node
//! configurations.

use std::collections::BTreeMap;
use std::rc::Rc;

use macula_proto::{Config, Duration, Identity, Instant, Rng};

use crate::check;
use crate::nat::{NatPlan, Nats};
use crate::net::{LinkModel, NodeIdx};
use crate::queue::Queue;
use crate::slab::Slab;
use crate::trace::Digest;

use super::*;

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

    /// Applies `f` to every node's configuration after what [`SimBuilder::configure`] set.
    pub fn also_configure(&mut self, f: impl Fn(NodeIdx, &mut Config) + 'static) -> &mut Self {
        let first = self.configure.clone();
        self.configure = Rc::new(move |n, config| {
            first(n, config);
            f(n, config);
        });
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
