//! Per-link state.

use alloc::vec::Vec;
use core::net::SocketAddr;

use crate::config::Roles;
use crate::id::NodeId;
use crate::time::{Duration, Instant};
use crate::wire::Decoder;

use super::{Direction, Tuning};

pub(super) struct Link {
    pub direction: Direction,
    pub addr: SocketAddr,
    pub state: LinkState,
    /// The remote's proven id; known from link-up on.
    pub remote: Option<NodeId>,
    pub exporter: [u8; 32],
    pub decoder: Decoder,
    /// Encoded frames not yet handed to the transport; one `Transmit::Send` carries them all.
    pub out: Vec<u8>,
    /// Whether the link sits in the node's dirty queue.
    pub dirty: bool,
    pub last_heard: Instant,
    /// Whether the application asked for this link (`Node::connect`): it is never closed for
    /// idleness nor evicted to make room.
    pub pinned: bool,
    /// When a subsystem (the DHT) last sent or received a frame on it.
    pub last_used: Instant,
    /// The handshake deadline (unused once established).
    pub deadline: Instant,
    /// The deadline this link is filed under in the node's timer index (`NEVER`: not filed).
    pub scheduled: Instant,
}

pub(super) enum LinkState {
    /// Outbound, waiting for the transport.
    Dialing {
        expected: Option<NodeId>,
    },
    /// Outbound, `Connect` sent.
    AwaitingAck,
    /// Inbound, waiting for `Connect`.
    AwaitingConnect,
    Established(Established),
}

pub(super) struct Established {
    pub since: Instant,
    pub listen_addrs: Vec<SocketAddr>,
    pub roles: Roles,
    pub rtt: Option<Duration>,
    pub next_keepalive: Instant,
    /// Pings awaiting their pong, oldest first.
    pub pings: PingWindow,
}

pub(super) struct PendingPing {
    pub sent: Instant,
    pub deadline: Instant,
    pub from_app: bool,
}

impl Link {
    pub fn new(
        direction: Direction,
        addr: SocketAddr,
        state: LinkState,
        deadline: Instant,
        max_frame_size: u32,
    ) -> Self {
        Link {
            direction,
            addr,
            state,
            remote: None,
            exporter: [0; 32],
            decoder: Decoder::new(max_frame_size),
            out: Vec::new(),
            dirty: false,
            last_heard: Instant::ZERO,
            pinned: false,
            last_used: Instant::ZERO,
            deadline,
            scheduled: Instant::NEVER,
        }
    }

    /// Whether the node opened this link on its own, so closes it once unused.
    pub fn on_demand(&self) -> bool {
        !self.pinned && self.direction == Direction::Outbound
    }

    /// When an on-demand link is closed for want of use.
    pub fn pool_deadline(&self, tuning: &Tuning) -> Instant {
        if self.on_demand() {
            self.last_used + tuning.pool_idle_timeout
        } else {
            Instant::NEVER
        }
    }

    /// The earliest moment this link needs `handle_timeout`.
    pub fn next_deadline(&self, tuning: &Tuning) -> Instant {
        match &self.state {
            LinkState::Established(est) => {
                let ping = est.pings.oldest_deadline().unwrap_or(Instant::NEVER);
                (self.last_heard + tuning.idle_timeout)
                    .min(est.next_keepalive)
                    .min(ping)
                    .min(self.pool_deadline(tuning))
            }
            _ => self.deadline,
        }
    }
}

/// The pings of one link awaiting their pong, in the order they were sent (so the oldest, which
/// expires first, is at the front). Small: at most `max_pings_in_flight` entries, usually one,
/// so the oldest sits inline in the link and only a second one in flight allocates.
#[derive(Default)]
pub(super) struct PingWindow {
    oldest: Option<(u64, PendingPing)>,
    rest: Vec<(u64, PendingPing)>,
}

impl PingWindow {
    pub fn len(&self) -> usize {
        usize::from(self.oldest.is_some()) + self.rest.len()
    }

    pub fn push(&mut self, id: u64, ping: PendingPing) {
        if self.oldest.is_none() {
            self.oldest = Some((id, ping));
        } else {
            self.rest.push((id, ping));
        }
    }

    pub fn remove(&mut self, id: u64) -> Option<PendingPing> {
        if self.oldest.as_ref().is_some_and(|(i, _)| *i == id) {
            let (_, ping) = self.oldest.take().expect("checked");
            if !self.rest.is_empty() {
                self.oldest = Some(self.rest.remove(0));
            }
            return Some(ping);
        }
        let at = self.rest.iter().position(|(i, _)| *i == id)?;
        Some(self.rest.remove(at).1)
    }

    pub fn oldest_deadline(&self) -> Option<Instant> {
        self.oldest.as_ref().map(|(_, p)| p.deadline)
    }

    /// Removes the pings due at `now`; returns their ids and whether the application sent them.
    pub fn expire(&mut self, now: Instant) -> Vec<(u64, bool)> {
        let mut due = Vec::new();
        while let Some((id, ping)) = self.oldest.take() {
            if ping.deadline > now {
                self.oldest = Some((id, ping));
                break;
            }
            due.push((id, ping.from_app));
            if !self.rest.is_empty() {
                self.oldest = Some(self.rest.remove(0));
            }
        }
        due
    }

    pub fn into_inner(self) -> Vec<(u64, PendingPing)> {
        self.oldest.into_iter().chain(self.rest).collect()
    }
}
