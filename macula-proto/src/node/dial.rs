//! Sending to a node by its id: over its link if it has one, else dialing it on demand and
//! holding a bounded number of frames until the link is up; closing the least recently used
//! on-demand link to make room.

use alloc::vec::Vec;
use core::net::SocketAddr;

use super::link_core::Core;
use super::registry::{index_of, protocol_at, Mask};
use super::subsystem::{PeerChange, Unreachable};
use super::{ConnectFailure, LinkId, SendError};
use crate::id::NodeId;
use crate::rate::Limit;
use crate::time::Duration;
use crate::wire::{encode, CloseCode, Encode, ProtocolId, RefuseReason};

/// An on-demand link under way and the frames it will carry once up, with the subsystem each
/// came from.
pub(super) struct Dial {
    /// The link dialed; `None` while the NAT subsystem reaches the node by its id instead
    /// (there was no address to dial).
    pub link: Option<LinkId>,
    pub frames: Vec<(usize, Vec<u8>)>,
}

/// Most frames held for one link being dialed; more are dropped and counted (a request among
/// them times out like an unanswered one).
pub(super) const MAX_FRAMES_PER_DIAL: usize = 64;

/// A link a subsystem used this recently is never evicted to make room for another.
pub(super) const POOL_MIN_IDLE: Duration = Duration::from_secs(1);

impl Core {
    // ---------------------------------------------------------------- sending by node id

    /// Sends a subsystem's message to `to`, dialing `addr` if there is no link (see
    /// [`Cx::send`](super::subsystem::Cx::send)).
    pub fn send_to<M: Encode>(&mut self, to: NodeId, addr: Option<SocketAddr>, message: &M) {
        let index = index_of(M::PROTOCOL).expect("subsystems send their own protocol");
        if let Some(&link_id) = self.peers.get(&to) {
            if self.link_speaks(link_id, index) {
                self.use_link(link_id);
                self.send_frame(link_id, message);
            } else {
                self.stats.frames_unspoken += 1;
                self.notify_one(index, to, Unreachable::NotSpoken);
            }
            return;
        }
        if let Some(dial) = self.dials.get_mut(&to) {
            if dial.frames.len() < MAX_FRAMES_PER_DIAL {
                dial.frames.push((index, encode(message)));
            } else {
                self.stats.frames_undeliverable += 1;
            }
            return;
        }
        let Some(addr) = addr else {
            let frames = alloc::vec![(index, encode(message))];
            if self.reach_by_id(to, frames).is_err() {
                self.stats.frames_undeliverable += 1;
                self.notify_one(index, to, Unreachable::DialFailed);
            }
            return;
        };
        let limit = Limit::per_second(self.config.dial_rate, self.config.dial_burst);
        if !self.closed && !self.dial_budget.take(self.now, &limit) {
            self.stats.dials_throttled += 1;
            self.stats.frames_undeliverable += 1;
            self.notify_one(index, to, Unreachable::NoRoom);
            return;
        }
        if self.closed || !self.make_room() {
            self.stats.frames_undeliverable += 1;
            self.notify_one(index, to, Unreachable::NoRoom);
            return;
        }
        let link = self.open_link(addr, Some(to), false);
        self.dials.insert(
            to,
            Dial {
                link: Some(link),
                frames: alloc::vec![(index, encode(message))],
            },
        );
    }

    /// The NAT subsystem's index, if it runs: then a node with no address can still be
    /// reached by its id.
    fn nat_index(&self) -> Option<usize> {
        index_of(ProtocolId::NAT).filter(|i| self.running.has(*i))
    }

    /// Hands `to`, for which there is no address (a node behind a NAT publishes none), to the
    /// NAT subsystem to reach by its id (through its NAT record: a relay, a punch), holding
    /// `frames` until a link to it is up or the NAT subsystem gives up
    /// ([`Core::reach_failed`]). A dial that fails is not retried this way: the node at a
    /// dead address is most often gone, and its frames should fail at once. The frames come
    /// back if the NAT subsystem does not run or there is no room.
    fn reach_by_id(
        &mut self,
        to: NodeId,
        frames: Vec<(usize, Vec<u8>)>,
    ) -> Result<(), Vec<(usize, Vec<u8>)>> {
        let Some(nat) = self.nat_index() else {
            return Err(frames);
        };
        // Only for the subsystems above: the DHT drops a contact that does not answer, and
        // the NAT subsystem's own frames go to nodes reachable where they listen.
        let above = |(i, _): &(usize, Vec<u8>)| {
            !matches!(protocol_at(*i), ProtocolId::DHT | ProtocolId::NAT)
        };
        if !frames.iter().any(above) {
            return Err(frames);
        }
        if self.closed || !self.make_room() {
            return Err(frames);
        }
        self.dials.insert(to, Dial { link: None, frames });
        let why = Unreachable::DialFailed;
        self.notify((Mask(1 << nat), PeerChange::Unreachable { peer: to, why }));
        Ok(())
    }

    /// The NAT subsystem could not reach `to`: the frames held for it fail.
    pub fn reach_failed(&mut self, to: NodeId) {
        if self.dials.get(&to).is_some_and(|d| d.link.is_none()) {
            let dial = self.dials.remove(&to).expect("checked above");
            self.fail_frames(to, &dial.frames, Unreachable::DialFailed);
        }
    }

    fn fail_frames(&mut self, peer: NodeId, frames: &[(usize, Vec<u8>)], why: Unreachable) {
        let mut mask = Mask::NONE;
        for (index, _) in frames {
            mask.0 |= 1 << index;
        }
        self.notify((mask, PeerChange::Unreachable { peer, why }));
    }

    /// Sends a subsystem's data to `to`, unless the channel to it is full (see
    /// [`Cx::send_data`](super::subsystem::Cx::send_data)).
    // Only the test-only echo protocol delivers data until pub/sub, its first production user.
    #[cfg_attr(not(feature = "test-protocols"), allow(dead_code))]
    pub fn send_data_to<M: Encode>(
        &mut self,
        to: NodeId,
        addr: Option<SocketAddr>,
        message: &M,
    ) -> Result<(), SendError> {
        let index = index_of(M::PROTOCOL).expect("subsystems send their own protocol");
        match self.peers.get(&to) {
            Some(&link_id) if !self.link_speaks(link_id, index) => {
                return Err(SendError::NotSpoken)
            }
            None if addr.is_none()
                && !self.dials.contains_key(&to)
                && self.nat_index().is_none() =>
            {
                return Err(SendError::NotConnected)
            }
            _ => {}
        }
        let full = !self.data_writable(&to, M::PROTOCOL);
        if full {
            self.stats.sends_held_back += 1;
            return Err(SendError::Full);
        }
        self.send_to(to, addr, message);
        Ok(())
    }

    /// The link a data send of `protocol` to `to` would go on at once: established, speaking
    /// the protocol, its channel not blocked.
    pub fn data_link(&self, to: &NodeId, protocol: ProtocolId) -> Option<LinkId> {
        let index = index_of(protocol)?;
        let &link = self.peers.get(to)?;
        let open =
            self.link_speaks(link, index) && !self.links.get(link)?.is_blocked(protocol.channel());
        open.then_some(link)
    }

    /// Sends `messages` over `link` (from [`Core::data_link`]) in order, the link looked up
    /// once. Returns how many.
    pub fn send_data_on<M: Encode>(
        &mut self,
        link: LinkId,
        messages: impl IntoIterator<Item = M>,
    ) -> usize {
        self.use_link(link);
        self.send_frames::<M, M>(link, messages)
    }

    /// Sends a subsystem's message to `to` over an established link only.
    pub fn reply_to<M: Encode>(&mut self, to: NodeId, message: &M) -> bool {
        let index = index_of(M::PROTOCOL).expect("subsystems send their own protocol");
        match self.peers.get(&to) {
            Some(&link_id) if self.link_speaks(link_id, index) => {
                self.use_link(link_id);
                self.send_frame(link_id, message);
                true
            }
            _ => {
                // An answer to a peer whose link has gone meanwhile: nobody awaits it.
                self.stats.frames_undeliverable += 1;
                false
            }
        }
    }

    /// Notes that a subsystem used `link` (an on-demand link in use is not closed as idle).
    pub fn use_link(&mut self, link: LinkId) {
        let now = self.now;
        if let Some(link) = self.links.get_mut(link) {
            link.last_used = now;
        }
    }

    /// Queues `change` for the subsystems in `mask`.
    pub(super) fn notify(&mut self, (mask, change): (Mask, PeerChange)) {
        self.queued = true;
        self.notices.push_back((mask, change));
    }

    pub(super) fn notify_one(&mut self, index: usize, peer: NodeId, why: Unreachable) {
        self.notify((Mask(1 << index), PeerChange::Unreachable { peer, why }));
    }

    /// An outbound link failed before its handshake completed; if frames waited for it, they go
    /// over the link the peer turned out to have, or their subsystems learn the outcome.
    pub(super) fn dial_failed(
        &mut self,
        link_id: LinkId,
        target: NodeId,
        failure: &ConnectFailure,
    ) {
        if self.dials.get(&target).map(|d| d.link) != Some(Some(link_id)) {
            return;
        }
        let dial = self.dials.remove(&target).expect("checked above");
        let why = match failure {
            ConnectFailure::AlreadyConnected(_) => match self.peers.get(&target).copied() {
                Some(link) => {
                    self.flush_dial(link, target, dial.frames);
                    return;
                }
                None => Unreachable::NoRoom,
            },
            // Reasons of this node's own, or a peer that is there but full: keep the contact.
            ConnectFailure::Aborted(CloseCode::Goodbye)
            | ConnectFailure::Refused {
                reason: RefuseReason::Capacity,
                ..
            } => Unreachable::NoRoom,
            _ => Unreachable::DialFailed,
        };
        self.fail_frames(target, &dial.frames, why);
    }

    /// Sends frames held for a dial over `link`; those of protocols the peer does not speak
    /// fail.
    pub(super) fn flush_dial(&mut self, link: LinkId, peer: NodeId, frames: Vec<(usize, Vec<u8>)>) {
        let mut unspoken = Mask::NONE;
        for (index, bytes) in frames {
            if self.link_speaks(link, index) {
                self.send_encoded(link, protocol_at(index).channel(), &bytes);
            } else {
                self.stats.frames_unspoken += 1;
                unspoken.0 |= 1 << index;
            }
        }
        if unspoken != Mask::NONE {
            let why = Unreachable::NotSpoken;
            self.notify((unspoken, PeerChange::Unreachable { peer, why }));
        }
    }

    /// Whether another on-demand link fits under `max_peers` and `max_pending_handshakes`,
    /// evicting the least recently used on-demand link if that makes room.
    pub(super) fn make_room(&mut self) -> bool {
        if self.pending_handshakes() >= self.config.max_pending_handshakes {
            return false;
        }
        let fits = |c: &Core| c.peers.len() + c.dials.len() < c.config.max_peers;
        fits(self) || (self.evict_one() && fits(self))
    }

    /// Closes the on-demand link (one this node opened to reach a node by id) that was used
    /// least recently, and not within [`POOL_MIN_IDLE`]. Links the application asked for, here
    /// or at the remote end, are never evicted. Returns whether there was one.
    pub(super) fn evict_one(&mut self) -> bool {
        let now = self.now;
        let victim = self
            .peers
            .values()
            .filter_map(|&id| {
                let link = self.links.get(id)?;
                (link.on_demand() && link.last_used + POOL_MIN_IDLE <= now)
                    .then_some((link.last_used, id))
            })
            .min();
        let Some((_, link)) = victim else {
            return false;
        };
        self.stats.pool_evictions += 1;
        self.abort_link(link, CloseCode::Goodbye);
        true
    }
}
