//! Per-link state.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::SocketAddr;

use crate::config::{Config, Roles};
use crate::id::NodeId;
use crate::time::{Duration, Instant};
use crate::wire::Decoder;

use super::Direction;

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
    /// Pings awaiting their pong, by correlation id.
    pub pings: BTreeMap<u64, PendingPing>,
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
            deadline,
            scheduled: Instant::NEVER,
        }
    }

    /// The earliest moment this link needs `handle_timeout`.
    pub fn next_deadline(&self, config: &Config) -> Instant {
        match &self.state {
            LinkState::Established(est) => {
                // Ping ids only grow, so the first pending ping is the oldest and expires first.
                let ping = est
                    .pings
                    .values()
                    .next()
                    .map_or(Instant::NEVER, |p| p.deadline);
                (self.last_heard + config.idle_timeout)
                    .min(est.next_keepalive)
                    .min(ping)
            }
            _ => self.deadline,
        }
    }
}
