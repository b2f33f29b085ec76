//! The task that drives one endpoint: socket, timer, commands, and the data path to consumers.
//!
//! Every operation takes one path. A [`Mesh`](crate::Mesh) method sends a [`Command::Run`]: a
//! closure that starts the operation on the endpoint and, if its result comes later, files a
//! [`Waiter`] under the operation's [`OpKey`] with an optional deadline. The driver keeps one
//! map of waiters and one deadline order; each event the core emits is matched to the waiters
//! of its key, and each deadline that passes fails its waiter. A waiter may stay for many
//! events (a send held back until its channel drains). Data never goes through events: each
//! inbox the core fills has a [`Consumer`] here, a bounded channel to the application, and the
//! core's inbox is emptied into it only as fast as the application reads.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant as WallInstant;

use macula_proto::dht::OpId;
use macula_proto::nat::NatEvent;
use macula_proto::node::Socket;
use macula_proto::pubsub::{PublishId, PubsubEvent};
use macula_proto::quic::{Endpoint, EndpointConfig};
use macula_proto::rpc::{CallId, RequestId, RpcEvent};
use macula_proto::trust::TrustEvent;
use macula_proto::{
    Data, Event, Fingerprint, InboxId, Instant, LinkId, NodeId, PingId, ProtocolId,
};

use crate::handoff::{handoff, Fed, Feeder};
use crate::mesh::MeshError;
use crate::runtime::{Runtime, UdpSocket};
use crate::udp::RecvBuf;
use futures_lite::future::race;

/// Where a request's answer goes: a one-answer slot, which works on every runtime.
pub(crate) type Reply<T> = crate::oneshot::Sender<T>;

/// Starts an operation on the endpoint (see the [module documentation](self)).
pub(crate) type Start = Box<dyn FnOnce(&mut Ctx<'_>) + Send>;

/// Requests from [`Mesh`](crate::Mesh) handles to the task.
pub(crate) enum Command {
    /// Runs an operation.
    Run(Start),
    /// Leaves the mesh; answers once the closes are sent.
    Close(Reply<()>),
    /// Stops at once, as a crash would: no goodbye, nothing drained.
    Kill,
}

/// Names an operation whose result is awaited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum OpKey {
    /// A connect, by the link it dials.
    Link(LinkId),
    /// An application ping.
    Ping(PingId),
    /// A DHT operation.
    Dht(OpId),
    /// A publish whose outcome comes later.
    Publish(PublishId),
    /// A call.
    Call(CallId),
    /// A request a handler holds, until it ends.
    Request(RequestId),
    /// The NAT detection running (one at a time; every caller waits for it).
    NatDetection,
    /// Reaching a node by its id.
    Reach(macula_proto::nat::ReachId),
}

/// Why a waiter is dropped without its result.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Abandon {
    /// Its deadline passed.
    Deadline,
    /// The mesh is closing.
    Closed,
}

/// Awaits the result of one operation.
pub(crate) trait Waiter: Send {
    /// An event keyed to the operation arrived; returns whether the operation is finished.
    fn event(&mut self, event: &Event, cx: &mut Ctx<'_>) -> bool;
    /// The operation ends without its result.
    fn abandon(self: Box<Self>, why: Abandon);
}

/// A waiter for one result: `map` picks it out of an event, `timeout` is the error if the
/// deadline passes first.
pub(crate) struct Once<T, F> {
    pub reply: Reply<Result<T, MeshError>>,
    pub map: F,
    pub timeout: fn() -> MeshError,
}

impl<T, F> Waiter for Once<T, F>
where
    T: Send,
    F: FnMut(&Event) -> Option<Result<T, MeshError>> + Send,
{
    fn event(&mut self, event: &Event, _: &mut Ctx<'_>) -> bool {
        match (self.map)(event) {
            Some(result) => {
                let _ = self.reply.try_send(result);
                true
            }
            None => false,
        }
    }

    fn abandon(self: Box<Self>, why: Abandon) {
        let error = match why {
            Abandon::Deadline => (self.timeout)(),
            Abandon::Closed => MeshError::Closed,
        };
        let _ = self.reply.try_send(Err(error));
    }
}

/// Several waiters on one key, each told of every event until it is done.
struct Many(Vec<Box<dyn Waiter>>);

impl Waiter for Many {
    fn event(&mut self, event: &Event, cx: &mut Ctx<'_>) -> bool {
        self.0.retain_mut(|w| !w.event(event, cx));
        self.0.is_empty()
    }

    fn abandon(self: Box<Self>, why: Abandon) {
        for w in self.0 {
            w.abandon(why);
        }
    }
}

/// The operations awaiting results, and when each gives up.
#[derive(Default)]
pub(crate) struct Ops {
    waiting: BTreeMap<OpKey, (Option<WallInstant>, Box<dyn Waiter>)>,
    deadlines: BTreeSet<(WallInstant, OpKey)>,
    /// Operations held back, by what they wait for, in the order they were made.
    held: BTreeMap<(Gate, u64), (usize, Box<dyn Held>)>,
    /// Payload bytes of the held operations.
    held_bytes: usize,
    next_seq: u64,
}

/// What a held operation waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Gate {
    /// Room on the channel to a peer for a protocol's data.
    Channel(NodeId, ProtocolId),
    /// Room in the publisher's outbox.
    Publish,
    /// Room for another call.
    Rpc,
}

impl Gate {
    fn open(self, node: &macula_proto::Node) -> bool {
        match self {
            Gate::Channel(peer, protocol) => node.data_writable(&peer, protocol),
            Gate::Publish => node.pubsub_has_room(),
            Gate::Rpc => node.rpc_has_room(),
        }
    }
}

/// An operation held back until its [`Gate`] opens.
pub(crate) trait Held: Send {
    /// Tries it; returns whether it is done with (answered, or handed to a waiter).
    fn attempt(&mut self, cx: &mut Ctx<'_>) -> bool;
    /// It ends without being tried again.
    fn fail(&self, error: MeshError);
    /// Whether its caller stopped waiting (then it is dropped untried).
    fn abandoned(&self) -> bool;
}

/// A held operation: `attempt` returns `false` while the gate is shut (keeping what it needs
/// for the next try), and otherwise answers `reply` or files a waiter with it.
pub(crate) struct HeldOp<T, F> {
    pub attempt: F,
    pub reply: Reply<Result<T, MeshError>>,
}

impl<T, F> Held for HeldOp<T, F>
where
    T: Send,
    F: FnMut(&mut Ctx<'_>, &Reply<Result<T, MeshError>>) -> bool + Send,
{
    fn attempt(&mut self, cx: &mut Ctx<'_>) -> bool {
        (self.attempt)(cx, &self.reply)
    }
    fn fail(&self, error: MeshError) {
        let _ = self.reply.try_send(Err(error));
    }
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// Most data sends held back at once (each is a caller awaiting its send); more fail with
/// [`MeshError::Backlogged`].
pub const MAX_HELD_SENDS: usize = 4096;

/// Most payload bytes of the data sends held back at once; more fail with
/// [`MeshError::Backlogged`] (one send larger than this is held alone).
pub const MAX_HELD_BYTES: usize = 64 << 20;

impl Ops {
    fn insert(&mut self, key: OpKey, deadline: Option<WallInstant>, waiter: Box<dyn Waiter>) {
        // Most keys are unique while their operation lives; a shared one (a NAT detection
        // several callers wait for) keeps every waiter, until the latest deadline.
        let (deadline, waiter) = match self.remove(&key) {
            Some((old, w)) => {
                let waiter: Box<dyn Waiter> = Box::new(Many(vec![w, waiter]));
                let latest = match (old, deadline) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                (latest, waiter)
            }
            None => (deadline, waiter),
        };
        if let Some(t) = deadline {
            self.deadlines.insert((t, key));
        }
        self.waiting.insert(key, (deadline, waiter));
    }

    fn remove(&mut self, key: &OpKey) -> Option<(Option<WallInstant>, Box<dyn Waiter>)> {
        let (deadline, waiter) = self.waiting.remove(key)?;
        if let Some(t) = deadline {
            self.deadlines.remove(&(t, *key));
        }
        Some((deadline, waiter))
    }

    /// The key an event may answer.
    fn key_for(event: &Event) -> Option<OpKey> {
        match *event {
            Event::PeerUp { link, .. } | Event::ConnectFailed { link, .. } => {
                Some(OpKey::Link(link))
            }
            Event::PingResult { id, .. } => Some(OpKey::Ping(id)),
            Event::Dht(ref outcome) => Some(OpKey::Dht(outcome.op())),
            Event::Pubsub(PubsubEvent::Published { id, .. }) => Some(OpKey::Publish(id)),
            Event::Rpc(RpcEvent::Done { id, .. }) => Some(OpKey::Call(id)),
            Event::Rpc(RpcEvent::Ended { request, .. }) => Some(OpKey::Request(request)),
            Event::Nat(NatEvent::Detected(_) | NatEvent::DetectFailed(_)) => {
                Some(OpKey::NatDetection)
            }
            Event::Nat(NatEvent::Reached { id, .. } | NatEvent::Unreachable { id, .. }) => {
                Some(OpKey::Reach(id))
            }
            _ => None,
        }
    }

    /// The operations held at `gate`, oldest first.
    fn held_at(&self, gate: Gate) -> Vec<(Gate, u64)> {
        self.held
            .range((gate, 0)..=(gate, u64::MAX))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Every gate with operations held back.
    fn gates(&self) -> Vec<Gate> {
        let mut out: Vec<Gate> = Vec::new();
        for (gate, _) in self.held.keys() {
            if out.last() != Some(gate) {
                out.push(*gate);
            }
        }
        out
    }
}

/// An inbox's way to the application: a bounded channel, and a flag the consumer reads to ring
/// the driver's doorbell when it makes room in a channel the driver found full.
pub(crate) struct Consumer {
    pub feeder: Feeder<Data>,
}

/// What a command may use during its call.
pub(crate) struct Ctx<'a> {
    pub endpoint: &'a mut Endpoint,
    pub now: Instant,
    ops: &'a mut Ops,
    consumers: &'a mut BTreeMap<InboxId, Consumer>,
    doorbell: &'a async_channel::Sender<()>,
    wall: WallInstant,
}

impl Ctx<'_> {
    /// Files `waiter` for the result of operation `key`, failing it after `timeout` if given.
    pub fn wait(
        &mut self,
        key: OpKey,
        timeout: Option<std::time::Duration>,
        waiter: impl Waiter + 'static,
    ) {
        let deadline = timeout.map(|t| self.wall + t + REQUEST_SLACK);
        self.ops.insert(key, deadline, Box::new(waiter));
    }

    /// Runs `attempt` now, or holds it back until `gate` opens if it returns `false` (or if
    /// others wait at the gate already, so they keep their order). `bytes` is its payload's
    /// size, counted against [`MAX_HELD_BYTES`].
    pub fn hold<T: Send + 'static>(
        &mut self,
        gate: Gate,
        bytes: usize,
        mut attempt: impl FnMut(&mut Ctx<'_>, &Reply<Result<T, MeshError>>) -> bool + Send + 'static,
        reply: Reply<Result<T, MeshError>>,
    ) {
        if self.ops.held_at(gate).is_empty() && attempt(self, &reply) {
            return;
        }
        let over_bytes = !self.ops.held.is_empty() && self.ops.held_bytes + bytes > MAX_HELD_BYTES;
        if self.ops.held.len() >= MAX_HELD_SENDS || over_bytes {
            let _ = reply.try_send(Err(MeshError::Backlogged));
            return;
        }
        self.ops.next_seq += 1;
        self.ops.held_bytes += bytes;
        let op = HeldOp { attempt, reply };
        self.ops
            .held
            .insert((gate, self.ops.next_seq), (bytes, Box::new(op)));
    }

    /// Sends data with `send` (a data send of the node, such as `echo_bulk`), holding it back
    /// while the channel to `peer` is full: the caller's `reply` is answered once the node
    /// takes it. Sends to one peer and protocol are taken in the order they were made.
    #[cfg_attr(not(feature = "test-protocols"), allow(dead_code))]
    pub fn send_data(
        &mut self,
        peer: NodeId,
        protocol: ProtocolId,
        bytes: usize,
        mut send: impl FnMut(&mut macula_proto::Node, Instant) -> Result<(), macula_proto::SendError>
            + Send
            + 'static,
        reply: Reply<Result<(), MeshError>>,
    ) {
        let attempt = move |cx: &mut Ctx<'_>, reply: &Reply<Result<(), MeshError>>| match cx
            .endpoint
            .with_node(cx.now, &mut send)
        {
            Err(macula_proto::SendError::Full) => false,
            result => {
                let _ = reply.try_send(result.map_err(MeshError::Send));
                true
            }
        };
        self.hold(Gate::Channel(peer, protocol), bytes, attempt, reply);
    }

    /// Opens the way from `inbox` to the application: a channel of `capacity` items.
    pub fn consume(&mut self, inbox: InboxId, capacity: usize) -> crate::Inbox {
        // An inbox the node closed (replaced by this one, say) lets its reader see the end.
        let node = self.endpoint.node();
        self.consumers.retain(|id, _| node.inbox_len(*id).is_some());
        let (feeder, taker) = handoff(capacity);
        self.consumers.insert(inbox, Consumer { feeder });
        crate::mesh::Inbox::new(taker, self.doorbell.clone())
    }
}

/// Commands waiting in the channel before senders wait; bounds memory under a burst.
const COMMAND_QUEUE: usize = 256;
/// Most commands run between two flushes.
const COMMAND_BATCH: usize = 64;
/// Datagrams (or GRO batches) one receive on the main socket takes. One: with eight per
/// system call (recvmmsg), the calls of the real-NAT test (`tests/netns/nat.sh`) between
/// nodes behind NATs timed out, punched and relayed alike, for a reason not yet found; the
/// batching is kept ready (`RecvBuf`) for when it is.
const RECV_SLOTS: usize = 1;
/// Longest a graceful close waits for connections to drain.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// Slack past the core's own timeouts before a request is failed by the driver (the core
/// answers every operation within its own timeout; this is a backstop).
const REQUEST_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn spawn<R: Runtime>(
    socket: R::Socket,
    aux: Option<R::Socket>,
    config: EndpointConfig,
    events: async_broadcast::Sender<Event>,
    pins: Option<(std::path::PathBuf, Vec<(String, NodeId)>)>,
    audit: Option<crate::audit::AuditLog>,
) -> Result<async_channel::Sender<Command>, MeshError> {
    let epoch = config.epoch;
    let realm = config.node.realm.as_str().to_owned();
    let mut endpoint = Endpoint::new(config, Instant::ZERO)?;
    let pins_file = pins.map(|(path, kept)| {
        endpoint.with_node(Instant::ZERO, |node, _| {
            for (name, id) in kept {
                if !node.trust_pin(&name, id) {
                    tracing::warn!(%name, "more pins kept than max_pins: this one is not trusted");
                }
            }
        });
        path
    });
    endpoint.set_max_datagrams(socket.max_gso_segments());
    let (tx, rx) = async_channel::bounded(COMMAND_QUEUE);
    let (doorbell, ringing) = async_channel::bounded(1);
    let driver = Driver::<R> {
        socket: Arc::new(socket),
        aux: aux.map(Arc::new),
        endpoint,
        epoch,
        commands: rx,
        events,
        ops: Ops::default(),
        consumers: BTreeMap::new(),
        parked: BTreeSet::new(),
        batch: Vec::new(),
        pins_file,
        audit: audit.map(|log| (log, realm)),
        doorbell,
        ringing,
        closing: None,
        link_spans: BTreeMap::new(),
    };
    R::spawn(driver.run());
    Ok(tx)
}

struct Driver<R: Runtime> {
    socket: Arc<R::Socket>,
    /// The auxiliary socket (NAT detection), if one could be bound.
    aux: Option<Arc<R::Socket>>,
    endpoint: Endpoint,
    epoch: WallInstant,
    commands: async_channel::Receiver<Command>,
    events: async_broadcast::Sender<Event>,
    ops: Ops,
    consumers: BTreeMap<InboxId, Consumer>,
    /// Inboxes whose consumer's channel was full when the driver last fed it.
    parked: BTreeSet<InboxId>,
    /// Data on its way from an inbox to its consumer (kept to reuse its allocation).
    batch: Vec<Data>,
    /// Where the trust pins are kept, rewritten whenever one is made or revoked.
    pins_file: Option<std::path::PathBuf>,
    /// The audit log, and the realm its lines name.
    audit: Option<(crate::audit::AuditLog, String)>,
    doorbell: async_channel::Sender<()>,
    ringing: async_channel::Receiver<()>,
    /// Set once closing.
    closing: Option<Closing>,
    /// The span of each established link (see [`Driver::dispatch`]).
    link_spans: BTreeMap<LinkId, tracing::Span>,
}

/// A close under way: first the publisher's outstanding messages are waited for (up to their
/// deadline), then the node closes and its connections drain (up to [`CLOSE_LINGER`]).
struct Closing {
    /// Until when outstanding publishes are waited for.
    drain_until: WallInstant,
    /// Set once the node is closed: until when connections may drain.
    linger: Option<WallInstant>,
    /// Who to tell when done.
    waiters: Vec<Reply<()>>,
}

/// What woke the driver.
enum Wake {
    Datagram(std::io::Result<()>),
    /// A datagram on the auxiliary socket.
    Auxiliary(std::io::Result<()>),
    Timer,
    Command(Option<Command>),
    Doorbell,
}

impl<R: Runtime> Driver<R> {
    fn now(&self) -> Instant {
        let micros = R::now().saturating_duration_since(self.epoch).as_micros();
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    fn deadline(&self) -> Option<WallInstant> {
        let core = self
            .endpoint
            .poll_timeout()
            .map(|t| self.epoch + std::time::Duration::from_micros(t.as_micros()));
        let linger = self
            .closing
            .as_ref()
            .map(|c| c.linger.unwrap_or(c.drain_until));
        let requests = self.ops.deadlines.first().map(|(t, _)| *t);
        [core, linger, requests].into_iter().flatten().min()
    }

    async fn run(mut self) {
        let mut buf = RecvBuf::new(RECV_SLOTS);
        // NAT detection's few datagrams need no batches.
        let mut aux_buf = RecvBuf::new(if self.aux.is_some() { 1 } else { 0 });
        loop {
            // quinn-udp may turn GSO off after a failed send; stop making batches then.
            self.endpoint
                .set_max_datagrams(self.socket.max_gso_segments());
            self.flush().await;
            if let Some(closing) = &self.closing {
                match closing.linger {
                    None => {
                        let node = self.endpoint.node();
                        let drained = node.pubsub_outstanding() == 0 && self.ops.held.is_empty();
                        if drained || R::now() >= closing.drain_until {
                            self.shut();
                            continue;
                        }
                    }
                    Some(linger) => {
                        if self.endpoint.is_idle() || R::now() >= linger {
                            break;
                        }
                    }
                }
            }
            let deadline = self.deadline();
            let socket = self.socket.clone();
            let closing = self.closing.is_some();
            let commands = &self.commands;
            let ringing = &self.ringing;
            let aux = self.aux.clone();
            let recv = async { Wake::Datagram(socket.recv(&mut buf).await) };
            let recv_aux = async {
                match &aux {
                    Some(aux) => Wake::Auxiliary(aux.recv(&mut aux_buf).await),
                    None => std::future::pending().await,
                }
            };
            let timer = async {
                match deadline {
                    Some(t) => R::sleep_until(t).await,
                    None => std::future::pending().await,
                }
                Wake::Timer
            };
            let command = async {
                if closing {
                    std::future::pending().await
                } else {
                    Wake::Command(commands.recv().await.ok())
                }
            };
            let doorbell = async {
                let _ = ringing.recv().await;
                Wake::Doorbell
            };
            // `race` picks among ready futures at random, so a datagram flood can't starve
            // timers, commands or consumers.
            let wake = race(race(race(recv, recv_aux), doorbell), race(timer, command)).await;
            let read = match wake {
                Wake::Auxiliary(_) => &aux_buf,
                _ => &buf,
            };
            if self.handle(wake, read).is_break() {
                return;
            }
            // With several calls in flight or requests in handlers, the tasks behind them
            // answer in bursts: let those ready run first, so what they ask for goes out in
            // this flush, many to a datagram, rather than a flush each. With one or none the
            // driver goes on at once (no added latency).
            let rpc = self.endpoint.node().rpc();
            if rpc.calls() + rpc.requests() >= 2 {
                // A plain self-wake: tokio's own `yield_now` waits for its I/O driver first,
                // which lost the whole gain (35,000 against 99,600 calls/s).
                futures_lite::future::yield_now().await;
                if self.run_commands(None).is_break() {
                    return;
                }
            }
        }
        self.stop();
    }

    /// Handles what woke the driver; `Break` when it must stop at once.
    fn handle(&mut self, wake: Wake, buf: &RecvBuf) -> ControlFlow<()> {
        match wake {
            Wake::Datagram(Ok(())) => {
                let now = self.now();
                for (received, datagrams) in buf.received() {
                    for datagram in datagrams {
                        self.endpoint
                            .handle_datagram(received.from, received.ecn, datagram, now);
                    }
                }
            }
            Wake::Auxiliary(Ok(())) => {
                let now = self.now();
                for (received, datagrams) in buf.received() {
                    for datagram in datagrams {
                        self.endpoint
                            .handle_auxiliary_datagram(received.from, datagram, now);
                    }
                }
            }
            Wake::Datagram(Err(err)) | Wake::Auxiliary(Err(err)) => {
                // ICMP errors surface here on some platforms; the core times out dead
                // peers itself, so a failed receive is not fatal.
                tracing::debug!(%err, "udp receive failed");
            }
            Wake::Timer => {
                let now = self.now();
                self.endpoint.handle_timeout(now);
                self.expire();
            }
            Wake::Doorbell => {
                let parked = std::mem::take(&mut self.parked);
                let closed = self
                    .consumers
                    .iter()
                    .filter(|(_, c)| c.feeder.is_closed())
                    .map(|(id, _)| *id);
                let again: BTreeSet<InboxId> = parked.into_iter().chain(closed).collect();
                for inbox in again {
                    self.feed(inbox);
                }
            }
            Wake::Command(Some(first)) => self.run_commands(Some(first))?,
            // Every handle is gone: stop at once.
            Wake::Command(None) => return ControlFlow::Break(()),
        }
        ControlFlow::Continue(())
    }

    /// Runs `first` and the commands waiting after it (up to [`COMMAND_BATCH`], none once
    /// closing), so that what they send goes out in one flush; `Break` when one stops the
    /// driver.
    fn run_commands(&mut self, first: Option<Command>) -> ControlFlow<()> {
        let mut next = first;
        if next.is_none() && self.closing.is_none() {
            next = self.commands.try_recv().ok();
        }
        let mut taken = 0;
        while let Some(command) = next.take() {
            self.run_command(command)?;
            taken += 1;
            if taken < COMMAND_BATCH && self.closing.is_none() {
                next = self.commands.try_recv().ok();
            }
        }
        ControlFlow::Continue(())
    }

    fn run_command(&mut self, command: Command) -> ControlFlow<()> {
        match command {
            Command::Run(start) => start(&mut self.cx()),
            Command::Close(reply) => self.close(reply),
            Command::Kill => return ControlFlow::Break(()),
        }
        ControlFlow::Continue(())
    }

    /// Stops: the socket closes, then whoever waits for the close hears of it.
    fn stop(mut self) {
        // Refuse new requests, then drop the queued ones so their callers see `Closed` (the
        // channel would otherwise keep them, unanswered, for as long as a handle lives).
        self.commands.close();
        while self.commands.try_recv().is_ok() {}
        let waiters = self.closing.take().map(|c| c.waiters).unwrap_or_default();
        // The socket closes before anyone hears that the node has: a node restarted at the
        // same address right after `close` returned must be able to bind it.
        drop(self);
        for w in waiters {
            let _ = w.try_send(());
        }
    }

    fn cx(&mut self) -> Ctx<'_> {
        let now = self.now();
        Ctx {
            endpoint: &mut self.endpoint,
            now,
            ops: &mut self.ops,
            consumers: &mut self.consumers,
            doorbell: &self.doorbell,
            wall: R::now(),
        }
    }

    /// Sends every queued datagram, dispatches every queued event, and feeds consumers.
    async fn flush(&mut self) {
        loop {
            while let Some(d) = self.endpoint.poll_transmit() {
                let socket = match (d.socket, &self.aux) {
                    (Socket::Main, _) => &self.socket,
                    (Socket::Auxiliary, Some(aux)) => aux,
                    (Socket::Auxiliary, None) => continue,
                };
                if let Err(err) = socket.send(&d).await {
                    tracing::debug!(%err, to = %d.destination, "udp send failed");
                }
            }
            let mut quiet = true;
            while let Some(event) = self.endpoint.poll_event() {
                quiet = false;
                // Publish before answering a request: whoever subscribes after their `connect`
                // returned must not see the event that answered it.
                // No subscribers is fine: events are for whoever listens. A call's outcome
                // goes to its caller alone (it carries the reply's payload).
                if let Some((log, realm)) = &mut self.audit {
                    if let Err(err) = log.record(&event, realm) {
                        tracing::error!(%err, "could not write the audit log");
                    }
                }
                if !matches!(event, Event::Rpc(RpcEvent::Done { .. })) {
                    let _ = self.events.try_broadcast(event.clone());
                }
                self.dispatch(&event);
            }
            while let Some(inbox) = self.endpoint.poll_ready() {
                quiet = false;
                self.feed(inbox);
            }
            if !self.ops.held.is_empty() && self.retry_held() {
                quiet = false;
            }
            // Answering a waiter or feeding a consumer may have given the endpoint work.
            if quiet {
                return;
            }
        }
    }

    /// Hands the waiters of `event`'s keys the event.
    fn dispatch(&mut self, event: &Event) {
        match event {
            Event::PeerUp {
                peer,
                link,
                addr,
                direction,
            } => {
                // A link's span lives from its handshake to its end: what is logged about the
                // link in between carries the peer and the address.
                let span = tracing::info_span!("link", peer = %peer.short(), %addr, ?direction);
                span.in_scope(|| tracing::info!(peer = %peer, "peer joined"));
                if self.link_spans.len() >= 2 * self.endpoint.node().config().max_peers {
                    // Links whose end was never seen (an overflowed event queue) are dropped.
                    let node = self.endpoint.node();
                    self.link_spans
                        .retain(|l, _| node.peers().any(|p| p.link == *l));
                }
                self.link_spans.insert(*link, span);
            }
            Event::PeerDown { peer, reason, link } => {
                let span = self
                    .link_spans
                    .remove(link)
                    .unwrap_or_else(tracing::Span::none);
                span.in_scope(|| tracing::info!(peer = %peer, %reason, "peer left"));
            }
            Event::Trust(trust) => self.trusted(trust),
            _ => {}
        }
        let Some(key) = Ops::key_for(event) else {
            return;
        };
        let Some((deadline, mut waiter)) = self.ops.remove(&key) else {
            return;
        };
        if !waiter.event(event, &mut self.cx()) {
            self.ops.insert(key, deadline, waiter);
        }
    }

    /// Logs a trust change and keeps the pins the moment they change.
    fn trusted(&mut self, event: &TrustEvent) {
        match event {
            TrustEvent::Pinned { name, node } => {
                tracing::info!(%name, fingerprint = %Fingerprint(*node), "pinned the key found");
            }
            TrustEvent::Revoked { name, node } => {
                tracing::info!(%name, fingerprint = %Fingerprint(*node), "pin revoked");
            }
            TrustEvent::Mismatch {
                name,
                pinned,
                presented,
            } => {
                tracing::warn!(
                    %name,
                    pinned = %Fingerprint(*pinned),
                    presented = %Fingerprint(*presented),
                    "refused: another key than the pinned one answered"
                );
                return;
            }
            TrustEvent::IdentityConflict { node, old, new } => {
                tracing::warn!(
                    fingerprint = %Fingerprint(*node),
                    %old,
                    %new,
                    "a node linked again from another address while its link was alive: two \
                     nodes may share this identity (a copied key), or it moved"
                );
                return;
            }
            TrustEvent::NotPinned { name, .. } => {
                tracing::warn!(%name, "not pinned: max_pins are kept already");
                return;
            }
            _ => return,
        }
        if let Some(path) = &self.pins_file {
            if let Err(err) =
                crate::store::save_pins(path, self.endpoint.node().trust_pins().iter())
            {
                tracing::error!(%err, "could not keep the trust pins");
            }
        }
    }

    /// Operations held back go as soon as their gate opens, in order. Checked after every
    /// wake rather than on an event, so no lost or unsent event can strand one (a dial that
    /// failed, a channel that drained while the event queue overflowed).
    fn retry_held(&mut self) -> bool {
        let mut progress = false;
        for gate in self.ops.gates() {
            if !gate.open(self.endpoint.node()) {
                continue;
            }
            for key in self.ops.held_at(gate) {
                let Some((bytes, mut op)) = self.ops.held.remove(&key) else {
                    continue;
                };
                progress = true;
                if !op.abandoned() && !op.attempt(&mut self.cx()) {
                    self.ops.held.insert(key, (bytes, op));
                    break;
                }
                self.ops.held_bytes -= bytes;
            }
        }
        progress
    }

    /// Moves data from `inbox` to its consumer until the consumer's channel is full (then the
    /// inbox is parked until the consumer reads) or the inbox is empty.
    fn feed(&mut self, inbox: InboxId) {
        let now = self.now();
        loop {
            let Some(consumer) = self.consumers.get(&inbox) else {
                // Nobody reads it any more.
                self.endpoint
                    .with_node(now, |n, now| n.close_inbox(inbox, now));
                return;
            };
            if consumer.feeder.is_closed() {
                self.consumers.remove(&inbox);
                continue;
            }
            // As much as the consumer's queue takes, in one trip to the node.
            let room = consumer.feeder.room();
            let batch = &mut self.batch;
            let more = self.endpoint.with_node(now, |n, now| {
                n.take_data_into(inbox, room, batch, now);
                n.inbox_len(inbox).is_some_and(|len| len > 0)
            });
            match consumer.feeder.feed(batch, more) {
                Fed::Emptied => return,
                Fed::Filled => {
                    // The consumer rings the doorbell when it takes the batch.
                    self.parked.insert(inbox);
                    return;
                }
                Fed::Gone => {
                    self.consumers.remove(&inbox);
                }
            }
        }
    }

    /// Fails the operations whose deadline passed.
    fn expire(&mut self) {
        let now = R::now();
        while let Some(&(t, key)) = self.ops.deadlines.first() {
            if t > now {
                break;
            }
            if let Some((_, waiter)) = self.ops.remove(&key) {
                waiter.abandon(Abandon::Deadline);
            }
        }
    }

    /// Starts a close: publishes still outstanding are waited for first (a QoS 1 message
    /// left unacknowledged would silently become QoS 0), at most their deadline.
    fn close(&mut self, reply: Reply<()>) {
        match &mut self.closing {
            Some(closing) => closing.waiters.push(reply),
            None => {
                let deadline = self.endpoint.node().config().pubsub.deadline;
                self.closing = Some(Closing {
                    drain_until: R::now() + std::time::Duration::from(deadline),
                    linger: None,
                    waiters: vec![reply],
                });
            }
        }
    }

    /// Closes the node: every peer hears a goodbye, every waiter fails with `Closed`.
    fn shut(&mut self) {
        let now = self.now();
        self.endpoint.close(now);
        let waiting = std::mem::take(&mut self.ops.waiting);
        self.ops.deadlines.clear();
        for (_, (_, waiter)) in waiting {
            waiter.abandon(Abandon::Closed);
        }
        self.ops.held_bytes = 0;
        for (_, (_, op)) in std::mem::take(&mut self.ops.held) {
            op.fail(MeshError::Closed);
        }
        self.consumers.clear();
        if let Some(closing) = &mut self.closing {
            closing.linger = Some(R::now() + CLOSE_LINGER);
        }
    }
}

/// `addr` as a socket bound at `local` must dial it: a socket bound to an IPv6 address reaches
/// IPv4 peers through IPv4-mapped addresses, which is also how their replies arrive.
pub(crate) fn dialable(addr: SocketAddr, local: SocketAddr) -> SocketAddr {
    match (addr, local) {
        (SocketAddr::V4(v4), SocketAddr::V6(_)) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => addr,
    }
}
