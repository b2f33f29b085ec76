//! The async handle to a running node.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;

use macula_proto::dht::{DhtError, DhtStats};
use macula_proto::pubsub::PubsubStats;
use macula_proto::quic::tls::TlsMode;
use macula_proto::quic::{EndpointConfig, EndpointError, EndpointStats};
use macula_proto::rpc::RpcStats;
use macula_proto::{
    Config, ConnectFailure, Data, Duration, Event, Identity, InboxError, NodeId, PeerInfo,
    PingError, SendError, Stats,
};
use tracing::Instrument;

use crate::driver::{self, Command, Ctx, Once, OpKey, Reply};
use crate::handoff::{Taker, Took};
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
    /// A file of trust-on-first-use pins (see [`macula_proto::trust`]): loaded at start (a
    /// corrupt file is an error, never a silent reset of trust) and rewritten, atomically, the
    /// moment a pin is made or revoked. `None` keeps pins in memory only. Default: `None`.
    pub pins: Option<std::path::PathBuf>,
    /// A file to append the audit log to, as JSON lines (see [`crate::audit`]): handshakes
    /// accepted and refused, pins made, refused by and revoked. Default: `None`.
    pub audit_log: Option<std::path::PathBuf>,
    /// Development or production TLS (see [`macula_proto::quic::tls::TlsMode`]). Default:
    /// development.
    pub tls: TlsMode,
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
            pins: None,
            audit_log: None,
            tls: TlsMode::Development,
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
    /// The pin file could not be read.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The audit log could not be opened.
    #[error("could not open the audit log {path}: {source}")]
    Audit {
        /// The path.
        path: std::path::PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
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
    /// A node could not be reached by its id.
    #[error("could not reach the node: {0}")]
    Reach(macula_proto::nat::ReachError),
    /// This node has as many relay circuits as it keeps (`nat.max_own_circuits`).
    #[error("this node has as many relay circuits as it keeps (nat.max_own_circuits)")]
    TooManyCircuits,
    /// NAT detection could not finish.
    #[error("NAT detection failed: {0}")]
    Nat(macula_proto::nat::DetectError),
    /// A data send was refused.
    #[error("send failed: {0}")]
    Send(SendError),
    /// More data sends are held back than the node keeps waiting
    /// ([`MAX_HELD_SENDS`](crate::MAX_HELD_SENDS) sends or
    /// [`MAX_HELD_BYTES`](crate::MAX_HELD_BYTES) bytes).
    #[error("too many sends are held back waiting for their channels to drain")]
    Backlogged,
    /// An inbox could not be opened.
    #[error("could not open an inbox: {0}")]
    Inbox(InboxError),
    /// A publish was refused.
    #[error("publish refused: {0}")]
    Publish(macula_proto::pubsub::PublishError),
    /// A subscription was refused.
    #[error("subscription refused: {0}")]
    Subscribe(macula_proto::pubsub::SubscribeError),
    /// A call has no result.
    #[error("call failed: {0}")]
    Call(macula_proto::rpc::CallError),
    /// A procedure could not be served.
    #[error("could not serve the procedure: {0}")]
    Register(macula_proto::rpc::RegisterError),
    /// A handler's answer was not sent.
    #[error("answer not sent: {0}")]
    Reply(macula_proto::rpc::ReplyError),
    /// The node did not answer within its own timeout and some slack (a bug in the node,
    /// reported rather than waited on forever).
    #[error("no answer from the node in time")]
    Timeout,
    /// The core answered with an outcome of another kind than the operation's (a bug).
    #[error("unexpected outcome from the core: {0}")]
    Unexpected(String),
    /// The mesh was closed (or its task ended).
    #[error("the mesh is closed")]
    Closed,
}

/// Counters of the node, its subsystems and its QUIC layer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MeshStats {
    /// The core node's counters.
    pub node: Stats,
    /// The QUIC layer's counters.
    pub quic: EndpointStats,
    /// The DHT's counters.
    pub dht: DhtStats,
    /// Pub/sub's counters.
    pub pubsub: PubsubStats,
    /// RPC's counters.
    pub rpc: RpcStats,
    /// Gauge: commands from `Mesh` handles waiting for the node's task (bounded).
    pub commands_queued: usize,
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

/// Files a waiter for the outcome of dialing `link` (to `addr`): the peer's id once it is up.
pub(crate) fn wait_for_link(
    cx: &mut driver::Ctx<'_>,
    link: macula_proto::LinkId,
    addr: SocketAddr,
    reply: driver::Reply<Result<NodeId, MeshError>>,
) {
    let timeout = cx.endpoint.node().config().handshake_timeout;
    let map = move |event: &Event| match event {
        Event::PeerUp { peer, .. } => Some(Ok(*peer)),
        Event::ConnectFailed { failure, .. } => Some(match failure {
            ConnectFailure::AlreadyConnected(peer) => Ok(*peer),
            other => Err(MeshError::Connect {
                addr,
                failure: other.clone(),
            }),
        }),
        _ => None,
    };
    // A dial that failed at once queued its event; it is dispatched after this call, once the
    // waiter is filed.
    cx.wait(
        OpKey::Link(link),
        Some(timeout.into()),
        Once {
            reply,
            map,
            timeout: || MeshError::Timeout,
        },
    );
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
        // A second socket on another port of the same address, for NAT detection (observers
        // answer filtering tests from it). A node works without one.
        let aux = match R::bind(SocketAddr::new(local_addr.ip(), 0)) {
            Ok(aux) => Some(aux),
            Err(err) => {
                tracing::warn!(%err, "no auxiliary UDP socket: this node can't observe others' NATs");
                None
            }
        };
        let aux_port = aux
            .as_ref()
            .and_then(|a| a.local_addr().ok())
            .map(|a| a.port());
        let identity = match config.identity {
            Some(identity) => identity,
            None => Identity::from_secret(random_bytes()?),
        };
        let seed = match config.seed {
            Some(seed) => seed,
            None => u64::from_le_bytes(random_bytes::<8>()?),
        };
        let mut node = config.node;
        node.nat.aux_port = aux_port;
        node.nat.main_port = Some(local_addr.port());
        if node.start_epoch == 0 {
            // Records this node signs must outrank those of its earlier runs.
            node.start_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        }
        if !config.advertise {
            node.listen_addrs.clear();
        } else if !node.listen_addrs.contains(&local_addr) {
            node.listen_addrs.insert(0, advertised(local_addr));
            node.listen_addrs
                .truncate(macula_proto::config::MAX_LISTEN_ADDRS);
        }
        let node_id = identity.node_id();
        let (mut events, receiver) = async_broadcast::broadcast(config.event_capacity.max(1));
        // A slow subscriber loses its oldest events; the node never waits for one.
        events.set_overflow(true);
        events.set_await_active(false);
        let pins = match config.pins {
            Some(path) => {
                let kept = crate::store::load_pins(&path)?;
                Some((path, kept))
            }
            None => None,
        };
        let audit = match config.audit_log {
            Some(path) => Some(
                crate::audit::AuditLog::open(&path, crate::audit::DEFAULT_MAX_BYTES)
                    .map_err(|source| MeshError::Audit { path, source })?,
            ),
            None => None,
        };
        let mut endpoint = EndpointConfig::new(node, identity, seed, R::now());
        endpoint.tls = config.tls;
        let commands = driver::spawn::<R>(socket, aux, endpoint, events, pins, audit)?;
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
    /// The address is taken as one the user supplied: the first key found there is pinned,
    /// and another key there later is refused (trust on first use; see
    /// [`macula_proto::trust`] and [`MeshConfig::pins`]).
    ///
    /// # Errors
    /// [`MeshError::Connect`] with the reason: refused by the peer (wrong realm, bad
    /// credentials, capacity, version), another key than the one pinned at `addr`,
    /// unreachable, timed out.
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
        // The pin's name is the address as given, not the form the socket dials it by.
        let name = expected.is_none().then(|| addr.to_string());
        self.dial(addr, name, expected).await
    }

    /// Connects to `addr`, which `name` (a DNS name and port the user gave, say) resolved to:
    /// the key that answers is checked against, or pinned at, `name` (trust on first use; see
    /// [`macula_proto::trust`]).
    ///
    /// # Errors
    /// As [`Mesh::connect`]; [`ConnectFailure::FingerprintMismatch`] if another key than the
    /// one pinned at `name` answers.
    pub async fn connect_name(&self, name: &str, addr: SocketAddr) -> Result<NodeId, MeshError> {
        self.dial(addr, Some(name.to_owned()), None).await
    }

    async fn dial(
        &self,
        addr: SocketAddr,
        name: Option<String>,
        expected: Option<NodeId>,
    ) -> Result<NodeId, MeshError> {
        let local = self.local_addr;
        let span = tracing::debug_span!("connect", %addr, name = name.as_deref(), ?expected);
        let dialed = self.call(move |cx, reply| {
            let dial = driver::dialable(addr, local);
            let link = match &name {
                Some(name) => cx.endpoint.connect_name(name, dial, cx.now),
                None => cx.endpoint.connect(dial, expected, cx.now),
            };
            wait_for_link(cx, link, addr, reply);
        });
        traced(span, dialed).await
    }

    /// Measures a round trip to a connected peer.
    ///
    /// # Errors
    /// [`MeshError::Ping`] if the peer is not connected, does not answer in time or leaves.
    pub async fn ping(&self, peer: NodeId) -> Result<Duration, MeshError> {
        self.call(move |cx, reply| match cx.endpoint.ping(&peer, cx.now) {
            Ok(id) => {
                let timeout = cx.endpoint.node().config().ping_timeout;
                let map = |event: &Event| match event {
                    Event::PingResult { result, .. } => Some(result.map_err(MeshError::Ping)),
                    _ => None,
                };
                cx.wait(
                    OpKey::Ping(id),
                    Some(timeout.into()),
                    Once {
                        reply,
                        map,
                        timeout: || MeshError::Ping(PingError::Timeout),
                    },
                );
            }
            Err(err) => {
                let _ = reply.try_send(Err(MeshError::Ping(err)));
            }
        })
        .await
    }

    /// Drops a peer with a clean goodbye; returns whether it was connected.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn disconnect(&self, peer: NodeId) -> Result<bool, MeshError> {
        self.query(move |cx| cx.endpoint.disconnect(&peer, cx.now))
            .await
    }

    /// The established peers.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, MeshError> {
        self.query(|cx| cx.endpoint.node().peers().collect()).await
    }

    /// The node's and the QUIC layer's counters.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn stats(&self) -> Result<MeshStats, MeshError> {
        let commands_queued = self.commands.len();
        self.query(move |cx| {
            let node = cx.endpoint.node();
            MeshStats {
                node: node.stats(),
                quic: cx.endpoint.stats(),
                dht: node.dht().stats().clone(),
                pubsub: node.pubsub_stats().clone(),
                rpc: node.rpc_stats().clone(),
                commands_queued,
            }
        })
        .await
    }

    /// The DHT: values and provider records in this node's realm, and node lookups.
    pub fn dht(&self) -> crate::api::dht::Dht<'_, R> {
        crate::api::dht::Dht::new(self)
    }

    /// Publish/subscribe.
    pub fn pubsub(&self) -> crate::api::pubsub::Pubsub<'_, R> {
        crate::api::pubsub::Pubsub::new(self)
    }

    /// Remote procedure calls.
    pub fn rpc(&self) -> crate::api::rpc::Rpc<'_, R> {
        crate::api::rpc::Rpc::new(self)
    }

    /// NAT traversal: this node's NAT profile.
    pub fn nat(&self) -> crate::api::nat::Nat<'_, R> {
        crate::api::nat::Nat::new(self)
    }

    /// This node's NAT profile, while the last detection is trusted (see
    /// [`Mesh::nat`] to detect it).
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn nat_profile(&self) -> Result<Option<macula_proto::nat::NatProfile>, MeshError> {
        self.nat().profile().await
    }

    /// The test-only echo protocol (feature `test-protocols`).
    #[cfg(feature = "test-protocols")]
    pub fn echo(&self) -> crate::api::echo::Echo<'_, R> {
        crate::api::echo::Echo::new(self)
    }

    /// A subscription to the node's events from now on (a call's outcome, `RpcEvent::Done`, goes to
    /// its caller alone).
    pub fn events(&self) -> Events {
        Events(self.events.activate_cloned())
    }

    /// Leaves the mesh gracefully: every peer sees a clean goodbye. Waits (at most about two
    /// seconds) until the closes are sent and the connections drained, then stops the task.
    /// When it returns, the node's socket is closed: its address can be bound again.
    pub async fn close(&self) {
        let (tx, rx) = crate::oneshot::oneshot();
        if self.commands.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.recv().await;
        }
    }

    /// Stops the node at once, as a crash (SIGKILL, power loss) would: no goodbye is sent and
    /// nothing is drained, so peers find out only when their links time out. For testing how
    /// a mesh copes with nodes that vanish; [`Mesh::close`] is the way to leave.
    pub async fn kill(&self) {
        let _ = self.commands.send(Command::Kill).await;
    }

    /// Runs `start` on the node's task; it answers through the reply it is given, at once or
    /// through a waiter it files. Every operation of every API module goes through here.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        start: impl FnOnce(&mut Ctx<'_>, Reply<Result<T, MeshError>>) + Send + 'static,
    ) -> Result<T, MeshError> {
        let (tx, rx) = crate::oneshot::oneshot();
        let run: driver::Start = Box::new(move |cx| start(cx, tx));
        self.commands
            .send(Command::Run(run))
            .await
            .map_err(|_| MeshError::Closed)?;
        rx.recv().await.map_err(|_| MeshError::Closed)?
    }

    /// The way to the node's task.
    pub(crate) fn commands(&self) -> &async_channel::Sender<Command> {
        &self.commands
    }

    /// Runs `read` on the node's task and returns what it gives.
    pub(crate) async fn query<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut Ctx<'_>) -> T + Send + 'static,
    ) -> Result<T, MeshError> {
        self.call(move |cx, reply| {
            let _ = reply.try_send(Ok(read(cx)));
        })
        .await
    }
}

/// Data from one of the node's inboxes, in the order it arrived (see
/// [`Overflow`](macula_proto::Overflow) for what happens when it is not read). The handle takes
/// what waits in batches, and holds at most twice its capacity (a batch being read and one
/// waiting).
#[derive(Debug)]
pub struct Inbox {
    taker: Taker<Data>,
    doorbell: async_channel::Sender<()>,
}

impl Inbox {
    pub(crate) fn new(taker: Taker<Data>, doorbell: async_channel::Sender<()>) -> Self {
        Inbox { taker, doorbell }
    }

    /// The next item; `None` once the node has stopped (or closed the inbox).
    pub async fn recv(&mut self) -> Option<Data> {
        futures_lite::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item if one is waiting now, without waiting; `None` if none is (or the node
    /// has stopped). A consumer that reads many small items can take what is there this way
    /// and wait with [`Inbox::recv`] only when it runs dry.
    pub fn try_recv(&mut self) -> Option<Data> {
        match self.taker.try_take() {
            Took::Item { item, unparked } => {
                self.took(unparked);
                Some(item)
            }
            Took::Empty | Took::Ended => None,
        }
    }

    fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Data>> {
        match self.taker.poll_take(cx) {
            std::task::Poll::Ready(Took::Item { item, unparked }) => {
                self.took(unparked);
                std::task::Poll::Ready(Some(item))
            }
            std::task::Poll::Ready(_) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    /// A batch was taken from a queue the node stopped feeding for want of room: it hears
    /// there is room again.
    fn took(&self, unparked: bool) {
        if unparked {
            let _ = self.doorbell.try_send(());
        }
    }

    /// Items waiting in this handle (the node's inbox may hold more).
    pub fn len(&self) -> usize {
        self.taker.len()
    }

    /// Whether this handle holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl futures_lite::Stream for Inbox {
    type Item = Data;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Data>> {
        self.poll_recv(cx)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // The node closes the inbox, letting what it paused flow, once it sees nobody reads.
        self.taker.close();
        let _ = self.doorbell.try_send(());
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

fn random_bytes<const N: usize>() -> Result<[u8; N], MeshError> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).map_err(|e| MeshError::Random(e.to_string()))?;
    Ok(out)
}

/// Runs an operation's future inside `span`, logging (at debug level) how it ended.
pub(crate) async fn traced<T>(
    span: tracing::Span,
    operation: impl std::future::Future<Output = Result<T, MeshError>>,
) -> Result<T, MeshError> {
    async {
        let result = operation.await;
        match &result {
            Ok(_) => tracing::debug!("done"),
            Err(err) => tracing::debug!(%err, "failed"),
        }
        result
    }
    .instrument(span)
    .await
}

/// Where a socket bound at `local` can be reached, as the node advertises it: `local` itself,
/// or for one bound on every interface (`0.0.0.0`, `::`) the address of the interface that
/// routes to the rest of the network (found by connecting a UDP socket, which sends nothing),
/// else loopback. Never the unspecified address, which means nothing to whoever reads it.
fn advertised(local: SocketAddr) -> SocketAddr {
    if !local.ip().is_unspecified() {
        return local;
    }
    // Documentation addresses (RFC 5737, RFC 3849): only their route is looked up.
    let (any, probe, loopback): (SocketAddr, SocketAddr, std::net::IpAddr) = if local.is_ipv4() {
        (
            SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::from(([192, 0, 2, 1], 9)),
            std::net::Ipv4Addr::LOCALHOST.into(),
        )
    } else {
        (
            SocketAddr::from(([0u16; 8], 0)),
            SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 9)),
            std::net::Ipv6Addr::LOCALHOST.into(),
        )
    };
    let routed = std::net::UdpSocket::bind(any)
        .and_then(|s| s.connect(probe).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified());
    SocketAddr::new(routed.unwrap_or(loopback), local.port())
}
