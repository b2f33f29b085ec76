//! The task that drives one endpoint: socket, timer, commands.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use macula_proto::quic::{Endpoint, EndpointConfig};
use macula_proto::{
    Config, ConnectFailure, Duration, Event, Identity, Instant, LinkId, NodeId, PeerInfo,
    PingError, PingId,
};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant as TokioInstant;

use crate::mesh::{MeshError, MeshStats};

/// Requests from [`Mesh`](crate::Mesh) handles to the task.
pub(crate) enum Command {
    Connect {
        addr: SocketAddr,
        expected: Option<NodeId>,
        reply: oneshot::Sender<Result<NodeId, MeshError>>,
    },
    Ping {
        peer: NodeId,
        reply: oneshot::Sender<Result<Duration, MeshError>>,
    },
    Disconnect {
        peer: NodeId,
        reply: oneshot::Sender<bool>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Stats {
        reply: oneshot::Sender<MeshStats>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// Commands waiting in the channel before senders wait; bounds memory under a burst.
const COMMAND_QUEUE: usize = 256;
/// Largest UDP payload received.
const RECV_BUF: usize = 65_536;
/// Longest a graceful close waits for connections to drain.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) fn spawn(
    socket: UdpSocket,
    node: Config,
    identity: Identity,
    seed: u64,
    events: broadcast::Sender<Event>,
) -> Result<mpsc::Sender<Command>, MeshError> {
    let epoch = TokioInstant::now();
    let config = EndpointConfig::new(node, identity, seed, epoch.into_std());
    let endpoint = Endpoint::new(config, Instant::ZERO)?;
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let driver = Driver {
        socket,
        endpoint,
        epoch,
        commands: rx,
        events,
        connects: BTreeMap::new(),
        pings: BTreeMap::new(),
        closing: None,
    };
    tokio::spawn(driver.run());
    Ok(tx)
}

/// A `connect` awaiting its outcome. The core always answers within its handshake timeout; the
/// deadline is a backstop in case the answering event was dropped from a full queue.
struct PendingConnect {
    addr: SocketAddr,
    deadline: TokioInstant,
    reply: oneshot::Sender<Result<NodeId, MeshError>>,
}

/// A `ping` awaiting its pong, with the same kind of backstop.
struct PendingPing {
    deadline: TokioInstant,
    reply: oneshot::Sender<Result<Duration, MeshError>>,
}

/// Slack past the core's own timeouts before a request is failed by the driver.
const REQUEST_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

struct Driver {
    socket: UdpSocket,
    endpoint: Endpoint,
    epoch: TokioInstant,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<Event>,
    connects: BTreeMap<LinkId, PendingConnect>,
    pings: BTreeMap<PingId, PendingPing>,
    /// Set once closing: when to give up waiting, and who to tell.
    closing: Option<(TokioInstant, Vec<oneshot::Sender<()>>)>,
}

impl Driver {
    fn now(&self) -> Instant {
        let micros = TokioInstant::now()
            .saturating_duration_since(self.epoch)
            .as_micros();
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    fn deadline(&self) -> Option<TokioInstant> {
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
            .min();
        [core, linger, requests].into_iter().flatten().min()
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            self.flush().await;
            if let Some((linger, _)) = &self.closing {
                if self.endpoint.is_idle() || TokioInstant::now() >= *linger {
                    break;
                }
            }
            let deadline = self.deadline();
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        let now = self.now();
                        self.endpoint.handle_datagram(now, from, None, &buf[..n]);
                    }
                    Err(err) => {
                        // ICMP errors surface here on some platforms; the core times out dead
                        // peers itself, so a failed receive is not fatal.
                        tracing::debug!(%err, "udp receive failed");
                    }
                },
                () = sleep_until(deadline) => {
                    let now = self.now();
                    self.endpoint.handle_timeout(now);
                    self.expire_requests();
                }
                command = self.commands.recv(), if self.closing.is_none() => match command {
                    Some(command) => self.command(command),
                    // Every handle is gone: stop at once.
                    None => return,
                },
            }
        }
        if let Some((_, waiters)) = self.closing.take() {
            for w in waiters {
                let _ = w.send(());
            }
        }
    }

    /// Sends every queued datagram and dispatches every queued event.
    async fn flush(&mut self) {
        while let Some(d) = self.endpoint.poll_transmit() {
            if let Err(err) = self.socket.send_to(&d.contents, d.destination).await {
                tracing::debug!(%err, to = %d.destination, "udp send failed");
            }
        }
        while let Some(event) = self.endpoint.poll_event() {
            self.dispatch(&event);
            // No subscribers is fine: events are for whoever listens.
            let _ = self.events.send(event);
        }
    }

    /// Fails requests whose answer never came (see [`PendingConnect`]).
    fn expire_requests(&mut self) {
        let now = TokioInstant::now();
        let late: Vec<LinkId> = self
            .connects
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(link, _)| *link)
            .collect();
        for link in late {
            if let Some(c) = self.connects.remove(&link) {
                let _ = c.reply.send(Err(MeshError::Connect {
                    addr: c.addr,
                    failure: ConnectFailure::Aborted(macula_proto::CloseCode::HandshakeTimeout),
                }));
            }
        }
        let late: Vec<PingId> = self
            .pings
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(p) = self.pings.remove(&id) {
                let _ = p.reply.send(Err(MeshError::Ping(PingError::Timeout)));
            }
        }
    }

    fn dispatch(&mut self, event: &Event) {
        match event {
            Event::PeerUp { peer, link, .. } => {
                if let Some(c) = self.connects.remove(link) {
                    let _ = c.reply.send(Ok(*peer));
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
                    let _ = reply.send(result);
                }
            }
            Event::PingResult { id, result, .. } => {
                if let Some(p) = self.pings.remove(id) {
                    let _ = p.reply.send(result.map_err(MeshError::Ping));
                }
            }
            Event::PeerDown { peer, reason, .. } => {
                tracing::info!(peer = %peer, %reason, "peer left");
            }
            _ => {}
        }
        if let Event::PeerUp { peer, addr, .. } = event {
            tracing::info!(peer = %peer, %addr, "peer joined");
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
                let link = self.endpoint.connect(addr, expected, now);
                let config = self.endpoint.node().config();
                let deadline =
                    TokioInstant::now() + config.handshake_timeout.into() + REQUEST_SLACK;
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
                    let deadline = TokioInstant::now() + timeout.into() + REQUEST_SLACK;
                    self.pings.insert(id, PendingPing { deadline, reply });
                }
                Err(err) => {
                    let _ = reply.send(Err(MeshError::Ping(err)));
                }
            },
            Command::Disconnect { peer, reply } => {
                let _ = reply.send(self.endpoint.disconnect(&peer, now));
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.endpoint.node().peers().collect());
            }
            Command::Stats { reply } => {
                let _ = reply.send(MeshStats {
                    node: self.endpoint.node().stats(),
                    quic: self.endpoint.stats(),
                });
            }
            Command::Close { reply } => {
                self.endpoint.close(now);
                for (_, c) in std::mem::take(&mut self.connects) {
                    let _ = c.reply.send(Err(MeshError::Connect {
                        addr: c.addr,
                        failure: ConnectFailure::Aborted(macula_proto::wire::CloseCode::Goodbye),
                    }));
                }
                for (_, p) in std::mem::take(&mut self.pings) {
                    let _ = p.reply.send(Err(MeshError::Ping(PingError::PeerGone)));
                }
                self.closing = Some((TokioInstant::now() + CLOSE_LINGER, vec![reply]));
            }
        }
    }
}

async fn sleep_until(deadline: Option<TokioInstant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
