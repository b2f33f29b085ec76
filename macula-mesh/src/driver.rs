//! The task that drives one endpoint: socket, timer, commands.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant as WallInstant;

use macula_proto::dht::{Contact, DhtEvent, OpId};
use macula_proto::quic::{Endpoint, EndpointConfig};
use macula_proto::{
    Config, ConnectFailure, Duration, Event, Identity, Instant, LinkId, Node, NodeId, PeerInfo,
    PingError, PingId,
};

/// Where a request's answer goes: a one-slot channel, which works on every runtime.
pub(crate) type Reply<T> = async_channel::Sender<T>;

use crate::mesh::{MeshError, MeshStats};
use crate::runtime::{Runtime, UdpSocket};
use futures_lite::future::race;

/// Requests from [`Mesh`](crate::Mesh) handles to the task.
pub(crate) enum Command {
    Connect {
        addr: SocketAddr,
        expected: Option<NodeId>,
        reply: Reply<Result<NodeId, MeshError>>,
    },
    Ping {
        peer: NodeId,
        reply: Reply<Result<Duration, MeshError>>,
    },
    Disconnect {
        peer: NodeId,
        reply: Reply<bool>,
    },
    Peers {
        reply: Reply<Vec<PeerInfo>>,
    },
    Stats {
        reply: Reply<MeshStats>,
    },
    /// Starts a DHT operation; its outcome answers.
    Dht {
        start: DhtStart,
        reply: Reply<Result<DhtEvent, MeshError>>,
    },
    Contacts {
        reply: Reply<Vec<Contact>>,
    },
    Close {
        reply: Reply<()>,
    },
}

/// Starts one of the node's `dht_*` commands.
pub(crate) type DhtStart = Box<dyn FnOnce(&mut Node, Instant) -> OpId + Send>;

/// Commands waiting in the channel before senders wait; bounds memory under a burst.
const COMMAND_QUEUE: usize = 256;
/// Largest UDP payload received.
const RECV_BUF: usize = 65_536;
/// Longest a graceful close waits for connections to drain.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) fn spawn<R: Runtime>(
    socket: R::Socket,
    node: Config,
    identity: Identity,
    seed: u64,
    events: async_broadcast::Sender<Event>,
) -> Result<async_channel::Sender<Command>, MeshError> {
    let epoch = R::now();
    let config = EndpointConfig::new(node, identity, seed, epoch);
    let mut endpoint = Endpoint::new(config, Instant::ZERO)?;
    endpoint.set_max_datagrams(socket.max_gso_segments());
    let (tx, rx) = async_channel::bounded(COMMAND_QUEUE);
    let driver = Driver::<R> {
        socket: Arc::new(socket),
        endpoint,
        epoch,
        commands: rx,
        events,
        connects: BTreeMap::new(),
        pings: BTreeMap::new(),
        dht_ops: BTreeMap::new(),
        closing: None,
    };
    R::spawn(driver.run());
    Ok(tx)
}

/// A `connect` awaiting its outcome. The core always answers within its handshake timeout; the
/// deadline is a backstop in case the answering event was dropped from a full queue.
struct PendingConnect {
    addr: SocketAddr,
    deadline: WallInstant,
    reply: Reply<Result<NodeId, MeshError>>,
}

/// A `ping` awaiting its pong, with the same kind of backstop.
struct PendingPing {
    deadline: WallInstant,
    reply: Reply<Result<Duration, MeshError>>,
}

/// A DHT operation awaiting its outcome, with the same kind of backstop.
struct PendingDht {
    deadline: WallInstant,
    reply: Reply<Result<DhtEvent, MeshError>>,
}

/// Slack past the core's own timeouts before a request is failed by the driver.
const REQUEST_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

struct Driver<R: Runtime> {
    socket: Arc<R::Socket>,
    endpoint: Endpoint,
    epoch: WallInstant,
    commands: async_channel::Receiver<Command>,
    events: async_broadcast::Sender<Event>,
    connects: BTreeMap<LinkId, PendingConnect>,
    pings: BTreeMap<PingId, PendingPing>,
    dht_ops: BTreeMap<OpId, PendingDht>,
    /// Set once closing: when to give up waiting, and who to tell.
    closing: Option<(WallInstant, Vec<Reply<()>>)>,
}

/// What woke the driver.
enum Wake {
    Datagram(std::io::Result<crate::udp::Received>),
    Timer,
    Command(Option<Command>),
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
        let linger = self.closing.as_ref().map(|(t, _)| *t);
        let requests = self
            .connects
            .values()
            .map(|c| c.deadline)
            .chain(self.pings.values().map(|p| p.deadline))
            .chain(self.dht_ops.values().map(|d| d.deadline))
            .min();
        [core, linger, requests].into_iter().flatten().min()
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            // quinn-udp may turn GSO off after a failed send; stop making batches then.
            self.endpoint
                .set_max_datagrams(self.socket.max_gso_segments());
            self.flush().await;
            if let Some((linger, _)) = &self.closing {
                if self.endpoint.is_idle() || R::now() >= *linger {
                    break;
                }
            }
            let deadline = self.deadline();
            let socket = self.socket.clone();
            let closing = self.closing.is_some();
            let commands = &self.commands;
            let recv = async { Wake::Datagram(socket.recv(&mut buf).await) };
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
            // `race` picks among ready futures at random, so a datagram flood can't starve
            // timers or commands.
            let wake = race(recv, race(timer, command)).await;
            match wake {
                Wake::Datagram(Ok(received)) => {
                    let now = self.now();
                    for datagram in received.segments(&buf) {
                        self.endpoint
                            .handle_datagram(now, received.from, received.ecn, datagram);
                    }
                }
                Wake::Datagram(Err(err)) => {
                    // ICMP errors surface here on some platforms; the core times out dead
                    // peers itself, so a failed receive is not fatal.
                    tracing::debug!(%err, "udp receive failed");
                }
                Wake::Timer => {
                    let now = self.now();
                    self.endpoint.handle_timeout(now);
                    self.expire_requests();
                }
                Wake::Command(Some(command)) => self.command(command),
                // Every handle is gone: stop at once.
                Wake::Command(None) => return,
            }
        }
        // Refuse new requests, then drop the queued ones so their callers see `Closed` (the
        // channel would otherwise keep them, unanswered, for as long as a handle lives).
        self.commands.close();
        while self.commands.try_recv().is_ok() {}
        if let Some((_, waiters)) = self.closing.take() {
            for w in waiters {
                let _ = w.try_send(());
            }
        }
    }

    /// Sends every queued datagram and dispatches every queued event.
    async fn flush(&mut self) {
        while let Some(d) = self.endpoint.poll_transmit() {
            if let Err(err) = self.socket.send(&d).await {
                tracing::debug!(%err, to = %d.destination, "udp send failed");
            }
        }
        while let Some(event) = self.endpoint.poll_event() {
            // Publish before answering a request: whoever subscribes after their `connect`
            // returned must not see the event that answered it.
            // No subscribers is fine: events are for whoever listens.
            let _ = self.events.try_broadcast(event.clone());
            self.dispatch(&event);
        }
    }

    /// `addr` as this socket must dial it: a socket bound to an IPv6 address reaches IPv4 peers
    /// through IPv4-mapped addresses, which is also how their replies arrive.
    fn dialable(&self, addr: SocketAddr) -> SocketAddr {
        match (addr, self.socket.local_addr()) {
            (SocketAddr::V4(v4), Ok(SocketAddr::V6(_))) => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            _ => addr,
        }
    }

    /// Fails requests whose answer never came (see [`PendingConnect`]).
    fn expire_requests(&mut self) {
        let now = R::now();
        for c in take_where(&mut self.connects, |c| c.deadline <= now) {
            let _ = c.reply.try_send(Err(MeshError::Connect {
                addr: c.addr,
                failure: ConnectFailure::Aborted(macula_proto::CloseCode::HandshakeTimeout),
            }));
        }
        for p in take_where(&mut self.pings, |p| p.deadline <= now) {
            let _ = p.reply.try_send(Err(MeshError::Ping(PingError::Timeout)));
        }
        for d in take_where(&mut self.dht_ops, |d| d.deadline <= now) {
            let error = macula_proto::dht::DhtError::Timeout;
            let _ = d.reply.try_send(Err(MeshError::Dht(error)));
        }
    }

    fn dispatch(&mut self, event: &Event) {
        match event {
            Event::PeerUp {
                peer, link, addr, ..
            } => {
                tracing::info!(peer = %peer, %addr, "peer joined");
                if let Some(c) = self.connects.remove(link) {
                    let _ = c.reply.try_send(Ok(*peer));
                }
            }
            Event::ConnectFailed {
                link,
                addr,
                failure,
            } => {
                if let Some(PendingConnect { reply, .. }) = self.connects.remove(link) {
                    let result = match failure {
                        ConnectFailure::AlreadyConnected(peer) => Ok(*peer),
                        other => Err(MeshError::Connect {
                            addr: *addr,
                            failure: other.clone(),
                        }),
                    };
                    let _ = reply.try_send(result);
                }
            }
            Event::PingResult { id, result, .. } => {
                if let Some(p) = self.pings.remove(id) {
                    let _ = p.reply.try_send(result.map_err(MeshError::Ping));
                }
            }
            Event::PeerDown { peer, reason, .. } => {
                tracing::info!(peer = %peer, %reason, "peer left");
            }
            Event::Dht(outcome) => {
                if let Some(d) = self.dht_ops.remove(&outcome.op()) {
                    let _ = d.reply.try_send(Ok(outcome.clone()));
                }
            }
            _ => {}
        }
    }

    fn command(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::Connect {
                addr,
                expected,
                reply,
            } => {
                let link = self.endpoint.connect(self.dialable(addr), expected, now);
                let config = self.endpoint.node().config();
                let deadline =
                    R::now() + std::time::Duration::from(config.handshake_timeout) + REQUEST_SLACK;
                self.connects.insert(
                    link,
                    PendingConnect {
                        addr,
                        deadline,
                        reply,
                    },
                );
                // A dial that failed synchronously already queued its event; dispatch happens in
                // the next flush, after the reply slot exists.
            }
            Command::Ping { peer, reply } => match self.endpoint.ping(&peer, now) {
                Ok(id) => {
                    let timeout = self.endpoint.node().config().ping_timeout;
                    let deadline = R::now() + std::time::Duration::from(timeout) + REQUEST_SLACK;
                    self.pings.insert(id, PendingPing { deadline, reply });
                }
                Err(err) => {
                    let _ = reply.try_send(Err(MeshError::Ping(err)));
                }
            },
            Command::Disconnect { peer, reply } => {
                let _ = reply.try_send(self.endpoint.disconnect(&peer, now));
            }
            Command::Peers { reply } => {
                let _ = reply.try_send(self.endpoint.node().peers().collect());
            }
            Command::Stats { reply } => {
                let node = self.endpoint.node();
                let _ = reply.try_send(MeshStats {
                    node: node.stats(),
                    quic: self.endpoint.stats(),
                    dht: node.dht().stats().clone(),
                });
            }
            Command::Dht { start, reply } => {
                let op = self.endpoint.with_node(now, start);
                let timeout = self.endpoint.node().config().dht.lookup_timeout;
                let deadline = R::now() + std::time::Duration::from(timeout) + REQUEST_SLACK;
                // A refused operation already queued its event; dispatch comes in the next flush.
                self.dht_ops.insert(op, PendingDht { deadline, reply });
            }
            Command::Contacts { reply } => {
                let table = self.endpoint.node().dht().table();
                let _ = reply.try_send(table.iter().copied().collect());
            }
            Command::Close { reply } => {
                self.endpoint.close(now);
                for (_, c) in std::mem::take(&mut self.connects) {
                    let _ = c.reply.try_send(Err(MeshError::Connect {
                        addr: c.addr,
                        failure: ConnectFailure::Aborted(macula_proto::wire::CloseCode::Goodbye),
                    }));
                }
                for (_, p) in std::mem::take(&mut self.pings) {
                    let _ = p.reply.try_send(Err(MeshError::Ping(PingError::PeerGone)));
                }
                for (_, d) in std::mem::take(&mut self.dht_ops) {
                    let _ = d.reply.try_send(Err(MeshError::Closed));
                }
                self.closing = Some((R::now() + CLOSE_LINGER, vec![reply]));
            }
        }
    }
}

/// Removes and returns the entries of `map` whose value matches `pred`.
fn take_where<K: Ord + Copy, V>(map: &mut BTreeMap<K, V>, pred: impl Fn(&V) -> bool) -> Vec<V> {
    let keys: Vec<K> = map
        .iter()
        .filter(|(_, v)| pred(v))
        .map(|(k, _)| *k)
        .collect();
    keys.iter().filter_map(|k| map.remove(k)).collect()
}
