//! How links end: an outbound attempt that failed, a link aborted or closed after its last
//! frames, and the peer it carried forgotten (or kept, when a duplicate replaced its link).

use super::link::{self, LinkState};
use super::link_core::Core;
use super::subsystem::{Gone, PeerChange};
use super::{ConnectFailure, DownReason, Event, LinkError, LinkId, PingError, PingId, Transmit};
use crate::wire::CloseCode;

impl Core {
    /// Ends an outbound attempt that has not completed: reports `failure` and closes with `code`.
    pub(super) fn fail_outbound(
        &mut self,
        link_id: LinkId,
        failure: ConnectFailure,
        code: CloseCode,
    ) {
        self.forget_outbound(link_id, failure);
        self.flush_and_close(link_id, code);
    }

    pub(super) fn forget_outbound(&mut self, link_id: LinkId, failure: ConnectFailure) {
        if let Some(link) = self.take_link(link_id) {
            let target = match link.state {
                LinkState::Dialing { expected } => expected,
                _ => link.remote,
            };
            if let Some(target) = target {
                self.dial_failed(link_id, target, &failure);
            }
            self.stats.connect_failures += 1;
            self.push_event(Event::ConnectFailed {
                link: link_id,
                addr: link.addr,
                failure,
            });
        }
    }

    /// Closes a link in whatever state it is, reporting what the application needs to know.
    pub(super) fn abort_link(&mut self, link_id: LinkId, code: CloseCode) {
        let Some(link) = self.links.get(link_id) else {
            return;
        };
        match link.state {
            LinkState::Established(_) => {
                self.forget_peer(link_id, DownReason::Local(code));
            }
            LinkState::Dialing { .. } | LinkState::AwaitingAck { .. } => {
                self.forget_outbound(link_id, ConnectFailure::Aborted(code));
            }
            LinkState::AwaitingConnect { .. } => {
                self.take_link(link_id);
                self.stats.handshakes_abandoned += 1;
            }
        }
        self.flush_and_close(link_id, code);
    }

    /// Removes an established link and its peer, failing its pings.
    pub(super) fn forget_peer(&mut self, link_id: LinkId, reason: DownReason) {
        let Some(link) = self.take_link(link_id) else {
            return;
        };
        let peer = link.remote.expect("established links know their remote");
        let LinkState::Established(est) = link.state else {
            unreachable!("forget_peer is called for established links only");
        };
        if self.peers.get(&peer) == Some(&link_id) {
            self.peers.remove(&peer);
            // A link replaced by a duplicate leaves the peer connected over the other one:
            // what was sent on it is sent again there once it is up.
            let replaced = matches!(
                reason,
                DownReason::Local(CloseCode::Duplicate)
                    | DownReason::Link(LinkError::ClosedByPeer(CloseCode::Duplicate))
            );
            if replaced {
                if self.relinked.len() >= self.config.max_peers {
                    self.relinked.pop_first();
                }
                // The application's wish to keep the peer passes to the link that replaces
                // this one, also when the other end chose which (this end then sees this
                // link closed before the other comes up).
                self.relinked.insert(peer, link.pinned);
            } else {
                let why = match reason {
                    DownReason::Link(LinkError::ClosedByPeer(CloseCode::Goodbye)) => Gone::Goodbye,
                    DownReason::Local(CloseCode::Goodbye) => Gone::Closed,
                    _ => Gone::Lost,
                };
                self.notify((est.speaks, PeerChange::Down { peer, why }));
            }
        } else if self.peers.contains_key(&peer) {
            // The peer is up over the link that replaced this one.
            self.notify((est.speaks, PeerChange::Relinked { peer }));
        }
        for (id, ping) in est.pings.into_inner() {
            if ping.from_app {
                self.push_event(Event::PingResult {
                    id: PingId(id),
                    peer,
                    result: Err(PingError::PeerGone),
                });
            }
        }
        self.push_event(Event::PeerDown {
            peer,
            link: link_id,
            reason,
        });
        // Keep the link's queued bytes: `flush_and_close` may still deliver them.
        self.queue_unsent(link_id, link.out);
    }

    /// Queues what a link had not yet handed to the transport.
    pub(super) fn queue_unsent(&mut self, link_id: LinkId, mut out: link::Outbox) {
        while let Some((channel, bytes)) = out.take_next() {
            self.transmits.push_back(Transmit::Send {
                link: link_id,
                channel,
                bytes,
            });
        }
    }

    /// Queues a link's pending bytes (if it is still known) and then its close.
    pub(super) fn flush_and_close(&mut self, link_id: LinkId, code: CloseCode) {
        if let Some(link) = self.take_link(link_id) {
            self.queue_unsent(link_id, link.out);
        }
        self.transmits.push_back(Transmit::Close {
            link: link_id,
            code,
        });
    }
}
