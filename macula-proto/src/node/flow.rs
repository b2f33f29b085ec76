//! The data path: bounded inboxes for the application, pausing of the channels that feed a
//! full one, and the transport's report of channels whose sending side is blocked.
//!
//! Control events (peers, operation outcomes) go through the event queue; data (messages,
//! calls, stream bytes) never does. A subsystem hands each piece of data to an inbox the
//! application opened ([`Cx::deliver`](super::subsystem::Cx::deliver)); the application takes
//! it with [`Node::take_data`](super::Node::take_data). When an inbox with the
//! [`Overflow::Block`] policy is full, the channel the data came on is *paused*: its frames
//! stay in the decoder, the transport stops reading that stream, the peer's transport fills
//! up and reports its side blocked, and the peer's data sends answer [`SendError::Full`]
//! until the channel drains. Nothing is dropped anywhere on that path.
//!
//! [`SendError::Full`]: super::SendError::Full

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use super::link_core::Core;
use super::subsystem::{Peer, PeerChange};
use super::{Data, Event, InboxError, InboxId, LinkId, Overflow, MAX_INBOXES, MAX_INBOX_CAPACITY};
use crate::id::NodeId;
use crate::wire::{Channel, CloseCode, ProtocolId, MAX_PREFIX_LEN};

/// The node's inboxes.
#[derive(Default)]
pub(super) struct Inboxes {
    open: BTreeMap<InboxId, Inbox>,
    next: u32,
    /// Inboxes that went from empty to holding data, each once, for
    /// [`Node::poll_ready`](super::Node::poll_ready).
    ready: VecDeque<InboxId>,
}

struct Inbox {
    queue: VecDeque<Data>,
    capacity: usize,
    overflow: Overflow,
    /// Items dropped since the inbox was opened (`DropNewest` only).
    dropped: u64,
    /// Whether it is dropping now (told once per episode).
    dropping: bool,
    /// Whether it sits in the ready queue.
    ready: bool,
    /// The channels it paused, each once.
    paused: Vec<(LinkId, Channel)>,
}

/// What became of data handed to an inbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Queued for the application.
    Queued,
    /// Dropped by the inbox's policy (counted and told).
    Dropped,
    /// No such inbox (the application closed it): the subsystem decides.
    NoInbox,
}

impl Core {
    /// Opens an inbox.
    pub fn open_inbox(
        &mut self,
        capacity: usize,
        overflow: Overflow,
    ) -> Result<InboxId, InboxError> {
        if capacity == 0 || capacity > MAX_INBOX_CAPACITY {
            return Err(InboxError::Capacity(capacity));
        }
        let inboxes = &mut self.inboxes;
        if inboxes.open.len() >= MAX_INBOXES {
            return Err(InboxError::TooMany);
        }
        // Ids wrap; one still open is skipped (there are far fewer open than ids).
        let mut id = InboxId(inboxes.next);
        while inboxes.open.contains_key(&id) {
            id = InboxId(id.0.wrapping_add(1));
        }
        inboxes.next = id.0.wrapping_add(1);
        inboxes.open.insert(
            id,
            Inbox {
                queue: VecDeque::new(),
                capacity,
                overflow,
                dropped: 0,
                dropping: false,
                ready: false,
                paused: Vec::new(),
            },
        );
        Ok(id)
    }

    /// Closes an inbox: its data is dropped (the application asked for that) and the channels
    /// it paused flow again. Returns whether it was open.
    pub fn close_inbox(&mut self, id: InboxId) -> bool {
        let Some(inbox) = self.inboxes.open.remove(&id) else {
            return false;
        };
        self.inboxes.ready.retain(|r| *r != id);
        for (link, channel) in inbox.paused {
            self.unpause(link, channel);
        }
        true
    }

    /// Hands `data`, which came from `from` on `channel` (`None`: made by this node), to inbox
    /// `id`.
    pub fn deliver(
        &mut self,
        id: InboxId,
        from: Option<Peer>,
        channel: Channel,
        data: Data,
    ) -> Delivered {
        let Some(inbox) = self.inboxes.open.get_mut(&id) else {
            return Delivered::NoInbox;
        };
        // A blocking inbox takes the frame that was already read when it filled (one per
        // pausing channel); past `capacity + max_peers` it drops like a dropping one, which a
        // well-behaved mesh never reaches.
        let bound = match inbox.overflow {
            Overflow::DropNewest | Overflow::DropOldest => inbox.capacity,
            Overflow::Block => inbox.capacity + self.config.max_peers,
        };
        let full = inbox.queue.len() >= bound;
        if full {
            inbox.dropped += 1;
            self.stats.data_dropped += 1;
            if !inbox.dropping {
                inbox.dropping = true;
                let dropped = inbox.dropped;
                self.push_event(Event::DataDropped { inbox: id, dropped });
            }
        }
        let inbox = self.inboxes.open.get_mut(&id).expect("open");
        if full {
            if inbox.overflow != Overflow::DropOldest {
                return Delivered::Dropped;
            }
            // The oldest was counted delivered when it came; now it is counted dropped too.
            inbox.queue.pop_front();
        }
        inbox.queue.push_back(data);
        self.stats.data_delivered += 1;
        if !inbox.ready {
            inbox.ready = true;
            self.inboxes.ready.push_back(id);
        }
        let Some(from) = from else {
            return Delivered::Queued;
        };
        if inbox.queue.len() >= inbox.capacity
            && inbox.overflow == Overflow::Block
            && !inbox.paused.contains(&(from.link, channel))
        {
            inbox.paused.push((from.link, channel));
            self.stats.channels_paused += 1;
            if let Some(c) = self
                .links
                .get_mut(from.link)
                .and_then(|l| l.inbound(channel))
            {
                c.paused += 1;
            }
        }
        Delivered::Queued
    }

    /// The next item of inbox `id`, resuming the channels it paused once it is half empty.
    pub fn take_data(&mut self, id: InboxId) -> Option<Data> {
        let data = self.inboxes.open.get_mut(&id)?.queue.pop_front();
        self.taken(id);
        data
    }

    /// Moves up to `max` items of inbox `id`, oldest first, to `out`. Returns how many.
    pub fn take_data_into(&mut self, id: InboxId, max: usize, out: &mut Vec<Data>) -> usize {
        let Some(inbox) = self.inboxes.open.get_mut(&id) else {
            return 0;
        };
        let n = max.min(inbox.queue.len());
        out.extend(inbox.queue.drain(..n));
        self.taken(id);
        n
    }

    /// Items were taken from inbox `id`: at half full or less, what it paused flows again;
    /// empty, it is no longer ready.
    fn taken(&mut self, id: InboxId) {
        let Some(inbox) = self.inboxes.open.get_mut(&id) else {
            return;
        };
        if inbox.queue.len() <= inbox.capacity / 2 {
            inbox.dropping = false;
            let paused = core::mem::take(&mut inbox.paused);
            for (link, channel) in paused {
                self.unpause(link, channel);
            }
        }
        let Some(inbox) = self.inboxes.open.get_mut(&id) else {
            return;
        };
        if inbox.queue.is_empty() && inbox.ready {
            inbox.ready = false;
            self.inboxes.ready.retain(|r| *r != id);
        }
    }

    /// Gauge: items in inbox `id`.
    pub fn inbox_len(&self, id: InboxId) -> Option<usize> {
        self.inboxes.open.get(&id).map(|i| i.queue.len())
    }

    /// The next inbox that went from empty to holding data.
    pub fn poll_ready(&mut self) -> Option<InboxId> {
        let id = self.inboxes.ready.pop_front()?;
        if let Some(inbox) = self.inboxes.open.get_mut(&id) {
            inbox.ready = false;
        }
        Some(id)
    }

    /// The next channel that flows again, for the transport to read.
    pub fn poll_resumed(&mut self) -> Option<(LinkId, Channel)> {
        self.resumed.pop_front()
    }

    /// Whether the node stopped reading `channel` of `link`: the transport must not hand it
    /// more of that channel's bytes until [`Core::poll_resumed`] names it.
    pub fn is_paused(&self, link: LinkId, channel: Channel) -> bool {
        self.links.get(link).is_some_and(|l| l.is_paused(channel))
    }

    /// Bytes a paused channel may hold in its decoder: one read's chunk beyond a whole frame.
    /// A transport that hands more ignored the pause; the link is closed.
    pub fn paused_limit(&self) -> usize {
        self.config.max_frame_size as usize + MAX_PREFIX_LEN + PAUSED_SLACK
    }

    /// The transport says whether our side of `channel` on `link` has more than
    /// `Config::channel_backlog` waiting. When it drains, the peer's protocol hears
    /// [`Event::Writable`].
    pub fn set_blocked(&mut self, link_id: LinkId, channel: Channel, blocked: bool) {
        let Some(link) = self.links.get_mut(link_id) else {
            return;
        };
        let channels = link.channels.get_or_insert_with(Default::default);
        let was = channels.blocked.contains(&channel);
        if blocked && !was {
            channels.blocked.push(channel);
            self.stats.channels_blocked += 1;
        } else if !blocked && was {
            channels.blocked.retain(|c| *c != channel);
            if let (Some(peer), Some(protocol)) = (link.remote, channel.protocol()) {
                self.push_event(Event::Writable { peer, protocol });
                if let Some(index) = super::registry::index_of(protocol) {
                    self.notify((
                        super::registry::Mask(1 << index),
                        PeerChange::Writable { peer },
                    ));
                }
            }
        }
    }

    /// A link is gone: no inbox holds it paused any more.
    pub(super) fn forget_pauses(&mut self, link_id: LinkId) {
        for inbox in self.inboxes.open.values_mut() {
            inbox.paused.retain(|(l, _)| *l != link_id);
        }
    }

    /// Whether a data send to `to` on `protocol` would be taken now: not while the channel of
    /// its link is blocked, nor while the frames held for its dial are at their bound.
    pub fn data_writable(&self, to: &NodeId, protocol: ProtocolId) -> bool {
        match (self.peers.get(to), self.dials.get(to)) {
            (Some(&link), _) => !self
                .links
                .get(link)
                .is_some_and(|l| l.is_blocked(protocol.channel())),
            (None, Some(dial)) => dial.frames.len() < super::dial::MAX_FRAMES_PER_DIAL,
            (None, None) => true,
        }
    }

    /// One pause of `channel` on `link` ended; it flows again when none is left.
    fn unpause(&mut self, link_id: LinkId, channel: Channel) {
        let Some(c) = self.links.get_mut(link_id).and_then(|l| l.inbound(channel)) else {
            return;
        };
        c.paused = c.paused.saturating_sub(1);
        if c.paused == 0 {
            self.resumed.push_back((link_id, channel));
        }
    }

    /// Bytes that came for a paused channel: kept in its decoder, within
    /// [`Core::paused_limit`].
    pub fn keep_paused(&mut self, link_id: LinkId, channel: Channel, bytes: &[u8]) {
        let limit = self.paused_limit();
        let Some(c) = self.links.get_mut(link_id).and_then(|l| l.inbound(channel)) else {
            return;
        };
        if c.decoder.buffered() + bytes.len() > limit {
            self.violation(link_id, CloseCode::ProtocolViolation);
        } else {
            c.decoder.push(bytes);
        }
    }
}

/// What a paused channel may hold beyond a whole frame: a transport reads in chunks of at most
/// this much, and may have read one when the pause began.
pub const PAUSED_SLACK: usize = 64 * 1024;
