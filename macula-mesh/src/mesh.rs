//! The async handle to a running node.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;

use macula_proto::dht::{Contact, DhtError, DhtEvent, DhtStats, KeyKind, Record};
use macula_proto::quic::{EndpointError, EndpointStats};
use macula_proto::{
    Config, ConnectFailure, Duration, Event, Identity, Instant, Node, NodeId, PeerInfo, PingError,
    Stats,
};

use crate::driver::{self, Command};
use crate::runtime::{Runtime, UdpSocket};

/// How to start a [`Mesh`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MeshConfig {
    /// The node's configuration. The bound address is added to its `listen_addrs`.
    pub node: Config,
    /// The UDP address to bind (`127.0.0.1:0` for any free loopback port).
    pub listen: SocketAddr,
    /// The node's identity; `None` makes a new one from operating-system randomness.
    pub identity: Option<Identity>,
    /// The seed of the core's randomness; `None` draws one from the operating system.
    pub seed: Option<u64>,
    /// Capacity of the event channel of each [`Events`] subscriber; a subscriber that falls
    /// further behind loses the oldest events. Default: 1024.
    pub event_capacity: usize,
    /// Whether to tell peers the bound address, so they can hand it to others (a DHT contact)
    /// and dial it. A short-lived client (a command-line tool) sets it to `false`: peers still
    /// answer it but don't spread its address. Default: `true`.
    pub advertise: bool,
}

impl MeshConfig {
    /// A new identity, bound at `listen`, with default settings.
    pub fn new(node: Config, listen: SocketAddr) -> Self {
        MeshConfig {
            node,
            listen,
            identity: None,
            seed: None,
            event_capacity: 1024,
            advertise: true,
        }
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The UDP socket could not be bound.
    #[error("could not bind UDP socket on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The operating system gave no randomness for a new identity.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// The endpoint could not be made (bad configuration or TLS setup).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// A connection attempt failed.
    #[error("connecting to {addr} failed: {failure}")]
    Connect {
        /// The address dialed.
        addr: SocketAddr,
        /// Why.
        failure: ConnectFailure,
    },
    /// A ping failed.
    #[error("ping failed: {0}")]
    Ping(PingError),
    /// A DHT operation failed.
    #[error("DHT operation failed: {0}")]
    Dht(DhtError),
    /// The core answered with an outcome of another kind than the operation's (a bug).
    #[error("unexpected outcome from the core: {0}")]
    Unexpected(String),
    /// The mesh was closed (or its task ended).
    #[error("the mesh is closed")]
    Closed,
}

/// Counters of the node and of its QUIC layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshStats {
    /// The core node's counters.
    pub node: Stats,
    /// The QUIC layer's counters.
    pub quic: EndpointStats,
    /// The DHT's counters.
    pub dht: DhtStats,
}

/// A running Macula node. Cheap to clone; every clone drives the same node.
///
/// Dropping every clone stops the node abruptly (peers see it time out); call [`Mesh::close`]
/// for a clean goodbye.
pub struct Mesh<R: Runtime> {
    commands: async_channel::Sender<Command>,
    events: Arc<async_broadcast::InactiveReceiver<Event>>,
    node_id: NodeId,
    local_addr: SocketAddr,
    runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime> Clone for Mesh<R> {
    fn clone(&self) -> Self {
        Mesh {
            commands: self.commands.clone(),
            events: self.events.clone(),
            node_id: self.node_id,
            local_addr: self.local_addr,
            runtime: PhantomData,
        }
    }
}

impl<R: Runtime> std::fmt::Debug for Mesh<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("node_id", &self.node_id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Mesh<R> {
    /// Binds the UDP socket and starts the node's task.
    ///
    /// # Errors
    /// [`MeshError::Bind`] if the address can't be bound; [`MeshError::Endpoint`] for an invalid
    /// configuration; [`MeshError::Random`] if no identity could be made.
    pub async fn bind(config: MeshConfig) -> Result<Self, MeshError> {
        let bind_error = |source| MeshError::Bind {
            addr: config.listen,
            source,
        };
        let socket = R::bind(config.listen).map_err(bind_error)?;
        let local_addr = socket.local_addr().map_err(bind_error)?;
        let identity = match config.identity {
            Some(identity) => identity,
            None => Identity::from_secret(random_bytes()?),
        };
        let seed = match config.seed {
            Some(seed) => seed,
            None => u64::from_le_bytes(random_bytes::<8>()?),
        };
        let mut node = config.node;
        if node.start_epoch == 0 {
            // Records this node signs must outrank those of its earlier runs.
            node.start_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        }
        if !config.advertise {
            node.listen_addrs.clear();
        } else if !node.listen_addrs.contains(&local_addr) {
            node.listen_addrs.insert(0, local_addr);
            node.listen_addrs
                .truncate(macula_proto::config::MAX_LISTEN_ADDRS);
        }
        let node_id = identity.node_id();
        let (mut events, receiver) = async_broadcast::broadcast(config.event_capacity.max(1));
        // A slow subscriber loses its oldest events; the node never waits for one.
        events.set_overflow(true);
        events.set_await_active(false);
        let commands = driver::spawn::<R>(socket, node, identity, seed, events)?;
        Ok(Mesh {
            commands,
            events: Arc::new(receiver.deactivate()),
            node_id,
            local_addr,
            runtime: PhantomData,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connects to the node at `addr` and completes the realm handshake. Returns its id.
    ///
    /// # Errors
    /// [`MeshError::Connect`] with the reason: refused by the peer (wrong realm, bad
    /// credentials, capacity, version), unreachable, timed out.
    pub async fn connect(&self, addr: SocketAddr) -> Result<NodeId, MeshError> {
        self.connect_to(addr, None).await
    }

    /// Connects to `addr`, insisting that the node `expected` answers there.
    ///
    /// # Errors
    /// As [`Mesh::connect`]; [`ConnectFailure::UnexpectedPeer`] if another node answers.
    pub async fn connect_to(
        &self,
        addr: SocketAddr,
        expected: Option<NodeId>,
    ) -> Result<NodeId, MeshError> {
        self.request(|reply| Command::Connect {
            addr,
            expected,
            reply,
        })
        .await?
    }

    /// Measures a round trip to a connected peer.
    ///
    /// # Errors
    /// [`MeshError::Ping`] if the peer is not connected, does not answer in time or leaves.
    pub async fn ping(&self, peer: NodeId) -> Result<Duration, MeshError> {
        self.request(|reply| Command::Ping { peer, reply }).await?
    }

    /// Drops a peer with a clean goodbye; returns whether it was connected.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn disconnect(&self, peer: NodeId) -> Result<bool, MeshError> {
        self.request(|reply| Command::Disconnect { peer, reply })
            .await
    }

    /// The established peers.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, MeshError> {
        self.request(|reply| Command::Peers { reply }).await
    }

    /// The node's and the QUIC layer's counters.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn stats(&self) -> Result<MeshStats, MeshError> {
        self.request(|reply| Command::Stats { reply }).await
    }

    /// Finds the nodes closest to `target` (at most `k`, closest first) with their addresses.
    ///
    /// # Errors
    /// [`MeshError::Dht`]: no peers to ask, or the lookup timed out.
    pub async fn dht_find_node(
        &self,
        target: NodeId,
    ) -> Result<Vec<(NodeId, SocketAddr)>, MeshError> {
        match self
            .dht(move |node, now| node.dht_find_node(&target, now))
            .await?
        {
            DhtEvent::NodesFound { closest, .. } => Ok(closest),
            other => Err(unexpected(other)),
        }
    }

    /// Publishes `value` under `name` in this node's realm, at the nodes closest to its key,
    /// and keeps republishing it until withdrawn. Returns how many nodes stored it.
    ///
    /// # Errors
    /// [`MeshError::Dht`]: the value is too large, too many records are published, no peers.
    pub async fn dht_put(&self, name: &[u8], value: Vec<u8>) -> Result<usize, MeshError> {
        let name = name.to_vec();
        let outcome = self
            .dht(move |node, now| node.dht_put(&name, value, now))
            .await?;
        stored(outcome)
    }

    /// The values published under `name` in this node's realm, one per publisher (empty if
    /// there are none).
    ///
    /// # Errors
    /// [`MeshError::Dht`]: no peers to ask, or the lookup timed out.
    pub async fn dht_get(&self, name: &[u8]) -> Result<Vec<Record>, MeshError> {
        let name = name.to_vec();
        let outcome = self.dht(move |node, now| node.dht_get(&name, now)).await?;
        records(outcome)
    }

    /// Announces that this node provides `name`, with `metadata`; republished until withdrawn.
    /// Returns how many nodes stored the announcement.
    ///
    /// # Errors
    /// As [`Mesh::dht_put`].
    pub async fn dht_provide(&self, name: &[u8], metadata: Vec<u8>) -> Result<usize, MeshError> {
        let name = name.to_vec();
        let outcome = self
            .dht(move |node, now| node.dht_provide(&name, metadata, now))
            .await?;
        stored(outcome)
    }

    /// The nodes that provide `name`: each record's publisher, addresses and metadata.
    ///
    /// # Errors
    /// As [`Mesh::dht_get`].
    pub async fn dht_find_providers(&self, name: &[u8]) -> Result<Vec<Record>, MeshError> {
        let name = name.to_vec();
        let outcome = self
            .dht(move |node, now| node.dht_find_providers(&name, now))
            .await?;
        records(outcome)
    }

    /// Withdraws this node's value (or provider record) under `name` and stops republishing
    /// it. Returns how many nodes confirmed.
    ///
    /// # Errors
    /// As [`Mesh::dht_get`].
    pub async fn dht_withdraw(&self, kind: KeyKind, name: &[u8]) -> Result<usize, MeshError> {
        let name = name.to_vec();
        let outcome = self
            .dht(move |node, now| node.dht_withdraw(kind, &name, now))
            .await?;
        stored(outcome)
    }

    /// The contacts in the DHT's routing table.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn dht_contacts(&self) -> Result<Vec<Contact>, MeshError> {
        self.request(|reply| Command::Contacts { reply }).await
    }

    async fn dht(
        &self,
        start: impl FnOnce(&mut Node, Instant) -> macula_proto::dht::OpId + Send + 'static,
    ) -> Result<DhtEvent, MeshError> {
        let outcome = self
            .request(|reply| Command::Dht {
                start: Box::new(start),
                reply,
            })
            .await??;
        match outcome {
            DhtEvent::Failed { error, .. } => Err(MeshError::Dht(error)),
            other => Ok(other),
        }
    }

    /// A subscription to the node's events from now on.
    pub fn events(&self) -> Events {
        Events(self.events.activate_cloned())
    }

    /// Leaves the mesh gracefully: every peer sees a clean goodbye. Waits (at most about two
    /// seconds) until the closes are sent and the connections drained, then stops the task.
    pub async fn close(&self) {
        let _ = self.request(|reply| Command::Close { reply }).await;
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(driver::Reply<T>) -> Command,
    ) -> Result<T, MeshError> {
        let (tx, rx) = async_channel::bounded(1);
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| MeshError::Closed)?;
        rx.recv().await.map_err(|_| MeshError::Closed)
    }
}

/// A stream of a node's [`Event`]s.
#[derive(Debug)]
pub struct Events(async_broadcast::Receiver<Event>);

impl Events {
    /// The next event; `None` once the node has stopped. Events this subscriber was too slow
    /// for are skipped.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.0.recv().await {
                Ok(event) => return Some(event),
                Err(async_broadcast::RecvError::Overflowed(_)) => continue,
                Err(async_broadcast::RecvError::Closed) => return None,
            }
        }
    }
}

fn stored(outcome: DhtEvent) -> Result<usize, MeshError> {
    match outcome {
        DhtEvent::Stored { acks, .. } => Ok(acks),
        other => Err(unexpected(other)),
    }
}

fn records(outcome: DhtEvent) -> Result<Vec<Record>, MeshError> {
    match outcome {
        DhtEvent::Got { records, .. } => Ok(records),
        other => Err(unexpected(other)),
    }
}

/// An outcome of another kind than the operation's: the core answers each operation with its
/// own kind or `Failed`, so this is a bug, reported rather than hidden.
fn unexpected(outcome: DhtEvent) -> MeshError {
    MeshError::Unexpected(format!("{outcome:?}"))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], MeshError> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).map_err(|e| MeshError::Random(e.to_string()))?;
    Ok(out)
}
