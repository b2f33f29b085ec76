//! Per-link state.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::SocketAddr;

use crate::config::Roles;
use crate::id::NodeId;
use crate::time::{Duration, Instant};
use crate::wire::{Channel, Decoder, ProtocolOffer};

use super::layout::Tuning;
use super::registry::Mask;
use super::Direction;

/// Most channels a peer may send on over one link; another one closes the link (a protocol
/// violation). Room for every protocol this build knows and a few it does not.
pub(super) const MAX_CHANNELS: usize = 16;

pub(super) struct Link {
    pub direction: Direction,
    pub addr: SocketAddr,
    pub state: LinkState,
    /// The remote's proven id; known from link-up on.
    pub remote: Option<NodeId>,
    /// The control channel's decoder (the handshake and keep-alives).
    pub decoder: Decoder,
    /// The other channels: decoders of those the peer sent on, made on first use, with their
    /// pauses, and ours the transport reported blocked (out of line: a link mostly carries
    /// keep-alives).
    pub channels: Option<Box<Channels>>,
    /// Encoded frames not yet handed to the transport, per channel; one `Transmit::Send` carries
    /// each channel's.
    pub out: Outbox,
    /// Whether the link sits in the node's dirty queue.
    pub dirty: bool,
    pub last_heard: Instant,
    /// Whether the application asked for this link (`Node::connect`): it is never closed for
    /// idleness nor evicted to make room.
    pub pinned: bool,
    /// The link came up over a path a hole punch opened.
    pub punched: bool,
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
    /// Outbound, `Connect` sent; the listener's proof in its `ConnectAck` is bound to
    /// `exporter`.
    AwaitingAck {
        exporter: [u8; 32],
    },
    /// Inbound, waiting for `Connect`, whose realm proof is bound to `exporter` (the value
    /// the transport exported from the connection's TLS session).
    AwaitingConnect {
        exporter: [u8; 32],
        /// The link was over its source's handshake limit: its `Connect` is refused.
        limited: bool,
    },
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
    /// The subsystems both ends run (the protocols both offered with the same version).
    pub speaks: Mask,
    /// Every protocol the peer offered, sorted.
    pub protocols: Box<[ProtocolOffer]>,
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
            decoder: Decoder::new(max_frame_size),
            channels: None,
            out: Outbox::default(),
            dirty: false,
            last_heard: Instant::ZERO,
            pinned: false,
            punched: false,
            last_used: Instant::ZERO,
            deadline,
            scheduled: Instant::NEVER,
        }
    }

    /// The decoder of `channel`, made on first use; `None` if the peer already uses as many
    /// channels as it may.
    pub fn decoder(&mut self, channel: Channel) -> Option<&mut Decoder> {
        if channel == Channel::CONTROL {
            return Some(&mut self.decoder);
        }
        self.inbound(channel).map(|c| &mut c.decoder)
    }

    /// The state of the peer's `channel`, made on first use; `None` if the peer already uses
    /// as many channels as it may.
    pub fn inbound(&mut self, channel: Channel) -> Option<&mut InChannel> {
        let max = self.decoder.max_frame_size();
        let channels = self.channels.get_or_insert_with(Box::default);
        if channels.iter().all(|c| c.channel != channel) {
            if channels.len() + 1 >= MAX_CHANNELS {
                return None;
            }
            let new = InChannel {
                channel,
                decoder: Decoder::new(max),
                paused: 0,
            };
            match &channels.first {
                None => channels.first = Some(new),
                Some(_) => channels.rest.push(new),
            }
        }
        channels
            .first
            .iter_mut()
            .chain(channels.rest.iter_mut())
            .find(|c| c.channel == channel)
    }

    /// Whether the node stopped reading the peer's `channel` (an inbox it feeds is full).
    pub fn is_paused(&self, channel: Channel) -> bool {
        self.channels
            .as_ref()
            .is_some_and(|c| c.iter().any(|i| i.channel == channel && i.paused > 0))
    }

    /// Whether the transport reported our side of `channel` blocked.
    // Only the test-only echo protocol delivers data until pub/sub, its first production user.
    #[cfg_attr(not(feature = "test-protocols"), allow(dead_code))]
    pub fn is_blocked(&self, channel: Channel) -> bool {
        self.channels
            .as_ref()
            .is_some_and(|c| c.blocked.contains(&channel))
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

/// A link's frames waiting for the transport, per channel, in the order channels got their
/// first frame. Nearly always one channel, whose buffer sits inline; the rest are out of line.
#[derive(Default)]
pub(super) struct Outbox {
    first: Option<(Channel, Vec<u8>)>,
    rest: Option<Box<Queued>>,
}

/// A link's channels other than the control channel.
#[derive(Default)]
pub(super) struct Channels {
    /// The first channel the peer sent on, inline: most links carry one besides control.
    first: Option<InChannel>,
    /// The others, in the order the peer first sent on them.
    rest: Vec<InChannel>,
    /// Our channels whose transport stream has more waiting than `Config::channel_backlog`.
    pub blocked: Vec<Channel>,
}

impl Channels {
    /// The peer's channels, in the order it first sent on them.
    pub fn iter(&self) -> impl Iterator<Item = &InChannel> {
        self.first.iter().chain(self.rest.iter())
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }
}

/// One of the peer's channels.
pub(super) struct InChannel {
    pub channel: Channel,
    pub decoder: Decoder,
    /// How many full inboxes hold this channel paused: while any does, its frames stay in the
    /// decoder and the transport stops reading it (see `Node::is_paused`).
    pub paused: u16,
}

/// Frames queued on channels other than an outbox's first.
#[derive(Default)]
pub(super) struct Queued(Vec<(Channel, Vec<u8>)>);

impl Outbox {
    /// The buffer of `channel`, appended to by the caller.
    pub fn channel(&mut self, channel: Channel) -> &mut Vec<u8> {
        let rest_empty = self.rest.as_ref().map_or(true, |r| r.0.is_empty());
        if self.first.is_none() && rest_empty {
            return &mut self.first.insert((channel, Vec::new())).1;
        }
        if self.first.as_ref().is_some_and(|(c, _)| *c == channel) {
            return &mut self.first.as_mut().expect("checked").1;
        }
        let rest = &mut self.rest.get_or_insert_with(Box::default).0;
        let at = match rest.iter().position(|(c, _)| *c == channel) {
            Some(at) => at,
            None => {
                rest.push((channel, Vec::new()));
                rest.len() - 1
            }
        };
        &mut rest[at].1
    }

    /// The next channel's bytes, oldest channel first.
    pub fn take_next(&mut self) -> Option<(Channel, Vec<u8>)> {
        loop {
            let next = match self.first.take() {
                Some(first) => first,
                None => match self.rest.as_mut().filter(|r| !r.0.is_empty()) {
                    Some(rest) => rest.0.remove(0),
                    None => return None,
                },
            };
            if !next.1.is_empty() {
                return Some(next);
            }
        }
    }
}
