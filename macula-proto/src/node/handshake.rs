//! The realm handshake: answering a `Connect`, completing an outbound link with its
//! `ConnectAck`, keeping one link of two to the same peer, and establishing the peer.

use alloc::vec::Vec;
use core::net::SocketAddr;

use super::link::{self, LinkState};
use super::link_core::{truncate, Core};
use super::registry::{offers, shared};
use super::subsystem::PeerChange;
use super::{ConnectFailure, Direction, Event, LinkId};
use crate::auth::{realm_proof, verify_realm_proof, Prover};
use crate::config::ApiKey;
use crate::config::{Roles, MAX_LISTEN_ADDRS};
use crate::id::NodeId;
use crate::wire::{
    CloseCode, Connect, ConnectAck, ConnectError, Control, ProtocolOffer, RefuseReason, Versions,
    WireAddr,
};

impl Core {
    pub(super) fn answer_connect(&mut self, link_id: LinkId, connect: Connect) {
        let Some(link) = self.links.get(link_id) else {
            return;
        };
        let remote = link
            .remote
            .expect("inbound links get their remote id on creation");
        let addr = link.addr;
        let LinkState::AwaitingConnect { exporter, limited } = link.state else {
            return;
        };
        let version = connect.versions.common(Versions::OURS);
        let mut refusal = self.refusal_before_proof(&connect, remote, addr, limited);
        // The proof is looked at only once everything before it passed.
        let mut proven_by = None;
        if refusal.is_none() && self.config.api_key.is_some() {
            let proof = connect.auth.as_ref();
            proven_by = self.proving_key(&connect.node_id, proof, &exporter);
            if proven_by.is_none() {
                self.proof_failed(addr);
                refusal = Some((
                    RefuseReason::BadCredentials,
                    "the realm's API key proof is missing or wrong".into(),
                ));
            }
        }
        let refusal = if refusal.is_some() {
            refusal
        } else if connect.listen_addrs.len() > MAX_LISTEN_ADDRS
            || connect.protocols.len() > crate::wire::control::MAX_PROTOCOLS
        {
            self.violation(link_id, CloseCode::ProtocolViolation);
            return;
        } else if !self.peers.contains_key(&remote)
            && self.peers.len() >= self.config.max_peers
            && !self.evict_one()
        {
            Some((
                RefuseReason::Capacity,
                alloc::format!(
                    "this node is at its limit of {} peers",
                    self.config.max_peers
                ),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = refusal {
            self.stats.refused_by_us.bump(reason);
            self.send_frame(
                link_id,
                &Control::ConnectError(ConnectError { reason, message }),
            );
            self.flush_and_close(link_id, CloseCode::Refused(reason));
            self.push_event(Event::InboundRefused {
                link: link_id,
                addr,
                peer: remote,
                reason,
            });
            return;
        }
        if !self.resolve_duplicate(link_id, remote) {
            return;
        }
        // The listener proves the key the dialer proved, so a node still on the old key of a
        // rotation can check it.
        let own = self.node_id();
        let auth = proven_by.map(|key| {
            realm_proof(
                Prover::Listener,
                &key,
                self.config.realm.as_str(),
                &own,
                &exporter,
            )
        });
        let ack = Control::ConnectAck(ConnectAck {
            version: version.expect("checked above"),
            node_id: own,
            listen_addrs: self.wire_listen_addrs(),
            roles: self.config.roles.0,
            protocols: offers(self.running),
            auth,
        });
        self.send_frame(link_id, &ack);
        let hello = Hello {
            addrs: connect.listen_addrs,
            roles: Roles(connect.roles),
            protocols: connect.protocols,
        };
        self.establish(link_id, remote, hello);
    }

    /// Why `connect` is refused before its proof is looked at, if it is: versions, identity,
    /// realm, then the source's rate limits.
    fn refusal_before_proof(
        &self,
        connect: &Connect,
        remote: NodeId,
        addr: SocketAddr,
        limited: bool,
    ) -> Option<(RefuseReason, alloc::string::String)> {
        if connect.versions.common(Versions::OURS).is_none() {
            Some((
                RefuseReason::Version,
                alloc::format!(
                    "this node speaks link versions {}..={}, not {}..={}",
                    Versions::OURS.min,
                    Versions::OURS.max,
                    connect.versions.min,
                    connect.versions.max
                ),
            ))
        } else if connect.node_id != remote {
            Some((
                RefuseReason::IdentityMismatch,
                "the node id in Connect is not the one your certificate proves".into(),
            ))
        } else if connect.realm != self.config.realm.as_str() {
            Some((
                RefuseReason::WrongRealm,
                alloc::format!(
                    "this node serves another realm than '{}'",
                    truncate(connect.realm.clone(), 64)
                ),
            ))
        } else if limited {
            Some((
                RefuseReason::RateLimited,
                "too many new links from your address: wait and try again".into(),
            ))
        } else if self.config.api_key.is_some() && !self.may_check_proof(addr) {
            Some((
                RefuseReason::RateLimited,
                "too many failed API key proofs from your address: wait and try again".into(),
            ))
        } else {
            None
        }
    }

    /// The realm key (current or previous) a dialer's `proof` was made with, if any.
    fn proving_key(
        &self,
        prover: &NodeId,
        proof: Option<&[u8; 32]>,
        exporter: &[u8; 32],
    ) -> Option<ApiKey> {
        let proof = proof?;
        let realm = self.config.realm.as_str();
        let side = Prover::Dialer;
        let proves = |key: &&ApiKey| verify_realm_proof(side, key, realm, prover, exporter, proof);
        self.config
            .api_key
            .iter()
            .chain(self.config.previous_api_key.iter())
            .find(proves)
            .cloned()
    }

    pub(super) fn complete_outbound(&mut self, link_id: LinkId, ack: ConnectAck) {
        let Some(link) = self.links.get(link_id) else {
            return;
        };
        let remote = link
            .remote
            .expect("links awaiting an ack learned their remote at link-up");
        let LinkState::AwaitingAck { exporter } = link.state else {
            return;
        };
        let version_ok = Versions::OURS.common(Versions {
            min: ack.version,
            max: ack.version,
        }) == Some(ack.version);
        if ack.node_id != remote
            || !version_ok
            || ack.listen_addrs.len() > MAX_LISTEN_ADDRS
            || ack.protocols.len() > crate::wire::control::MAX_PROTOCOLS
        {
            self.stats.protocol_violations += 1;
            self.fail_outbound(
                link_id,
                ConnectFailure::Aborted(CloseCode::ProtocolViolation),
                CloseCode::ProtocolViolation,
            );
            return;
        }
        // An honest listener proves the key this node proved, its current one: a proof under
        // the previous key could only come from someone who holds just the retired key.
        let proven = |key: &ApiKey| {
            ack.auth.as_ref().is_some_and(|proof| {
                let realm = self.config.realm.as_str();
                verify_realm_proof(Prover::Listener, key, realm, &remote, &exporter, proof)
            })
        };
        if self.config.api_key.as_ref().is_some_and(|key| !proven(key)) {
            // It answered without proving the realm's key: it may only know the realm's name.
            self.stats.listeners_unproven += 1;
            let code = CloseCode::Refused(RefuseReason::BadCredentials);
            self.fail_outbound(link_id, ConnectFailure::ListenerUnproven, code);
            return;
        }
        let Some(link) = self.links.get(link_id) else {
            return;
        };
        let on_demand = link.on_demand();
        if on_demand
            && !self.peers.contains_key(&remote)
            && self.peers.len() >= self.config.max_peers
            && !self.evict_one()
        {
            // Inbound peers filled the table while this on-demand dial was under way.
            self.fail_outbound(
                link_id,
                ConnectFailure::Aborted(CloseCode::Goodbye),
                CloseCode::Goodbye,
            );
            return;
        }
        if !self.resolve_duplicate(link_id, remote) {
            return;
        }
        let hello = Hello {
            addrs: ack.listen_addrs,
            roles: Roles(ack.roles),
            protocols: ack.protocols,
        };
        self.establish(link_id, remote, hello);
    }

    /// When `remote` already has an established link, keeps one of the two so both ends agree:
    /// of two links in the same direction the newer wins (the peer reconnected). Two crossing
    /// links are a simultaneous dial only while the older one is young (established less than
    /// `handshake_timeout` ago): then the one dialed by the smaller node id wins. An older link
    /// always yields to the new one, since the peer that dialed again most likely restarted and
    /// the old link is dead. Returns whether `link_id` survives.
    fn resolve_duplicate(&mut self, link_id: LinkId, remote: NodeId) -> bool {
        let Some(&old) = self.peers.get(&remote) else {
            return true;
        };
        let Some(new_dir) = self.links.get(link_id).map(|l| l.direction) else {
            return false;
        };
        let old_dir = self.links.get(old).map(|l| l.direction);
        let old_is_young = self.links.get(old).is_some_and(|l| match &l.state {
            LinkState::Established(est) => self.now - est.since < self.config.handshake_timeout,
            _ => false,
        });
        // A straight link always beats one through a relay (both ends see which is which, so
        // they agree): that is how a relayed link upgrades once a direct one comes up.
        let relayed = |l: LinkId| {
            self.links
                .get(l)
                .is_some_and(|l| super::is_circuit_addr(l.addr))
        };
        let (old_relayed, new_relayed) = (relayed(old), relayed(link_id));
        let keep_new = match old_dir {
            _ if old_relayed != new_relayed => old_relayed,
            None => true,
            Some(d) if d == new_dir => true,
            Some(_) if !old_is_young => true,
            Some(_) => {
                let dialer_of_new = if new_dir == Direction::Outbound {
                    self.node_id()
                } else {
                    remote
                };
                let dialer_of_old = if new_dir == Direction::Outbound {
                    remote
                } else {
                    self.node_id()
                };
                dialer_of_new < dialer_of_old
            }
        };
        self.stats.duplicate_links += 1;
        self.check_identity_conflict(old, link_id, remote);
        if keep_new {
            // The application's wish to keep the peer outlives the link that carried it; so
            // does a relayed link's standing (one the peer dialed stays until the peer closes
            // it) when a direct link takes its place.
            if self
                .links
                .get(old)
                .is_some_and(|l| l.pinned || (old_relayed && !l.on_demand()))
            {
                if let Some(new) = self.links.get_mut(link_id) {
                    new.pinned = true;
                }
            }
            self.abort_link(old, CloseCode::Duplicate);
            true
        } else {
            // The application's wish to keep the peer passes to the link that stays; so does
            // a relayed link's (a circuit is only opened on purpose, by one end or the other).
            if new_relayed || self.links.get(link_id).is_some_and(|l| l.pinned) {
                if let Some(kept) = self.links.get_mut(old) {
                    kept.pinned = true;
                }
            }
            if new_dir == Direction::Outbound {
                self.forget_outbound(link_id, ConnectFailure::AlreadyConnected(remote));
            }
            self.flush_and_close(link_id, CloseCode::Duplicate);
            false
        }
    }

    /// Reports `remote` if its new link `new` comes, in the same direction, from another
    /// address than its established link `old` while that one was alive.
    fn check_identity_conflict(&mut self, old: LinkId, new: LinkId, remote: NodeId) {
        let (Some(o), Some(n)) = (self.links.get(old), self.links.get(new)) else {
            return;
        };
        let alive = matches!(o.state, LinkState::Established(_))
            && self.now.saturating_duration_since(o.last_heard) < self.config.keepalive_interval;
        // A relayed link and a direct one to the same node are an upgrade, not a conflict.
        let upgrade = super::is_circuit_addr(o.addr) != super::is_circuit_addr(n.addr);
        if alive && !upgrade && o.direction == n.direction && o.addr != n.addr {
            self.stats.identity_conflicts += 1;
            let (old, new) = (o.addr, n.addr);
            self.push_event(Event::Trust(crate::trust::TrustEvent::IdentityConflict {
                node: remote,
                old,
                new,
            }));
        }
    }

    fn establish(&mut self, link_id: LinkId, remote: NodeId, hello: Hello) {
        let now = self.now;
        let next_keepalive = now + self.tuning.keepalive_interval;
        let speaks = shared(self.running, &hello.protocols);
        let Some(link) = self.links.get_mut(link_id) else {
            return;
        };
        let listen_addrs: Vec<SocketAddr> = hello.addrs.into_iter().map(SocketAddr::from).collect();
        // A punched path was opened for this node alone: no contact for others.
        let dialed = link.direction == Direction::Outbound && !link.punched;
        let contact = contact_addr(link.addr, dialed, &listen_addrs);
        let mut protocols = hello.protocols;
        protocols.sort_unstable();
        protocols.dedup();
        link.state = LinkState::Established(link::Established {
            since: now,
            listen_addrs,
            roles: hello.roles,
            rtt: None,
            next_keepalive,
            pings: link::PingWindow::default(),
            speaks,
            protocols: protocols.into_boxed_slice(),
        });
        link.last_used = now;
        let addr = link.addr;
        let direction = link.direction;
        self.peers.insert(remote, link_id);
        self.schedule(link_id);
        self.stats.handshakes_completed += 1;
        self.push_event(Event::PeerUp {
            peer: remote,
            link: link_id,
            addr,
            direction,
        });
        self.pin_found(link_id, remote);
        self.notify((
            speaks,
            PeerChange::Up {
                peer: remote,
                contact,
            },
        ));
        // Frames queued for this peer while a link to it was being dialed.
        if let Some(dial) = self.dials.remove(&remote) {
            self.flush_dial(link_id, remote, dial.frames);
        }
        if let Some(pinned) = self.relinked.remove(&remote) {
            if pinned {
                if let Some(l) = self.links.get_mut(link_id) {
                    l.pinned = true;
                }
            }
            self.notify((speaks, PeerChange::Relinked { peer: remote }));
        }
    }
}

/// What a peer told about itself in the handshake.
struct Hello {
    addrs: Vec<WireAddr>,
    roles: Roles,
    protocols: Vec<ProtocolOffer>,
}

/// Where others can reach a peer whose link comes from `seen`, as the DHT hands it out: `None`
/// if it listens nowhere, or if nothing shows that others can dial it.
///
/// A link this node `dialed` shows the address works (unless it is a relay circuit's). An
/// inbound link comes from the peer's own socket: when that is where the peer says it listens
/// (or it listens on every interface at that port) the peer is reachable there; when the
/// link came over a private network, its listen address on that network is; otherwise a NAT
/// stands between the two, and the address seen is a mapping others can't count on (such a
/// node is reached by its id, through its NAT record).
pub(super) fn contact_addr(
    seen: SocketAddr,
    dialed: bool,
    listen_addrs: &[SocketAddr],
) -> Option<SocketAddr> {
    let first = *listen_addrs.first()?;
    if super::is_circuit_addr(seen) {
        return None;
    }
    let listens_at =
        |a: &SocketAddr| *a == seen || (a.ip().is_unspecified() && a.port() == seen.port());
    if dialed || listen_addrs.iter().any(listens_at) {
        return Some(seen);
    }
    if !crate::nat::is_private(seen.ip()) {
        return None;
    }
    Some(if first.ip().is_unspecified() {
        SocketAddr::new(seen.ip(), first.port())
    } else {
        first
    })
}
