//! Upgrading a relayed link: coordinated hole punching, and direct dials where a NAT allows.
//!
//! The node that opened a relayed link sends its NAT profile over it ([`NatMessage::Upgrade`]);
//! the other end answers with its own, and both read the same approach from the decision table
//! ([`decide`]). Then:
//!
//! - **direct** or **local**: the dialer dials the listener's public (or local) address;
//! - **punch**: the dialer tells the listener where to punch ([`NatMessage::Go`]: its public
//!   address, or for port prediction its next few ports, read from a fresh probe to an
//!   observer); the listener sends `Punch` datagrams there at once, opening its own NAT; the
//!   dialer dials the listener's public address half a measured round trip after its `Go`, so
//!   its first packet reaches the listener's NAT after the punch left it (QUIC's own
//!   retransmission covers a miss);
//! - **relay**: the link stays relayed.
//!
//! The new link replaces the relayed one at both ends (a direct link always wins over a
//! relayed one), which the node reports as [`NatEvent::PathChanged`]; the circuit is closed, so
//! the gateway carries nothing more for the pair. A punch that did not get through is tried
//! again (observing again, in case a port was not preserved) up to [`ATTEMPTS`] times, and
//! the whole upgrade again after [`RETRY_UPGRADE`] while the link stays relayed.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::decide::{decide, Approach, Side};
use super::machine::{public_addr, Nat};
use super::messages::{NatMessage, MAX_PUNCH_TARGETS};
use super::probe::Probe;
use super::profile::NatProfile;
use super::types::NatEvent;
use super::PathKind;
use crate::id::NodeId;
use crate::node::subsystem::Cx;
use crate::node::{Direction, Event, Socket};
use crate::time::{Duration, Instant};

/// Punch attempts per upgrade.
pub const ATTEMPTS: u8 = 3;

/// How long after an upgrade that did not work the opener of a relayed link tries again.
pub const RETRY_UPGRADE: Duration = Duration::from_secs(120);

/// How many next ports port prediction punches.
pub const PREDICTED_PORTS: u16 = 16;

/// How long a step of an upgrade waits for the other end (an answer, an observation).
const STEP: Duration = Duration::from_secs(2);

/// Round trip assumed before one was measured.
const DEFAULT_RTT: Duration = Duration::from_millis(100);

#[derive(Debug)]
enum State {
    /// The opener sent its profile and waits for the answer.
    Asked,
    /// The dialer waits for an observer to say which port its NAT gives now.
    Observing { nonce: u64 },
    /// The dialer sent `Go` (or needs none) and dials `addr` when due.
    Dialing { addr: SocketAddr },
    /// The dialer dialed; when due, it looks at which link won.
    Dialed,
    /// The listener waits for the dialer's link.
    Listening,
    /// Nothing under way; the opener tries again when due (if ever).
    Resting,
}

/// One peer's upgrade.
#[derive(Debug)]
pub(crate) struct Upgrade {
    id: u64,
    state: State,
    due: Instant,
    attempts: u8,
    /// Whether this end opened the relayed link (and so drives retries).
    opener: bool,
    /// The peer's profile, once known.
    theirs: Option<NatProfile>,
    /// The approach, once chosen.
    approach: Option<Approach>,
}

/// Every peer's upgrade.
#[derive(Debug, Default)]
pub(crate) struct Upgrades {
    by_peer: BTreeMap<NodeId, Upgrade>,
    next: u64,
    /// Counters.
    pub punches: u64,
    pub punched: u64,
    pub direct: u64,
    pub failed: u64,
}

impl Upgrades {
    pub fn next_due(&self) -> Option<Instant> {
        self.by_peer
            .values()
            .filter(|u| u.due != Instant::NEVER)
            .map(|u| u.due)
            .min()
    }

    pub fn forget(&mut self, peer: &NodeId) {
        self.by_peer.remove(peer);
    }
}

impl Nat {
    /// A peer came up (or its link changed): start an upgrade if the link is relayed and this
    /// node opened it, or finish one if a direct link took its place.
    pub(crate) fn link_changed(&mut self, peer: NodeId, cx: &mut Cx<'_>) {
        let Some(info) = cx.peer(&peer) else {
            return;
        };
        if info.path != PathKind::Relayed {
            self.upgraded(peer, cx);
            return;
        }
        // The end that opened the relayed link drives its upgrade. Two crossing relayed links
        // (both ends reached the other at once) leave one, opened by one end: an upgrade the
        // other end started over its own is dropped, and the opener starts one.
        let opener = info.direction == Direction::Outbound;
        match self.upgrades.by_peer.get(&peer).map(|u| u.opener) {
            Some(driver) if driver == opener => {}
            Some(_) => {
                self.upgrades.by_peer.remove(&peer);
                if opener {
                    self.ask_upgrade(peer, cx);
                }
            }
            None if opener => self.ask_upgrade(peer, cx),
            None => {}
        }
    }

    fn ask_upgrade(&mut self, peer: NodeId, cx: &mut Cx<'_>) {
        let now = cx.now();
        let Some(ours) = self.profile(now) else {
            // Nothing to offer yet: look again later.
            self.rest(peer, true, cx);
            return;
        };
        self.upgrades.next += 1;
        let id = self.upgrades.next;
        self.upgrades.by_peer.insert(
            peer,
            Upgrade {
                id,
                state: State::Asked,
                due: now + STEP,
                attempts: 0,
                opener: true,
                theirs: None,
                approach: None,
            },
        );
        cx.reply(peer, &NatMessage::Upgrade { id, profile: ours });
    }

    /// The opener of a relayed link offers its profile.
    pub(crate) fn on_upgrade(
        &mut self,
        from: NodeId,
        id: u64,
        theirs: NatProfile,
        cx: &mut Cx<'_>,
    ) {
        let ours = self.profile(cx.now());
        cx.reply(from, &NatMessage::UpgradeReply { id, profile: ours });
        let Some(ours) = ours else {
            return;
        };
        let approach = decide(&theirs, &ours);
        self.upgrades.by_peer.insert(
            from,
            Upgrade {
                id,
                state: State::Resting,
                due: Instant::NEVER,
                attempts: 0,
                opener: false,
                theirs: Some(theirs),
                approach: Some(approach),
            },
        );
        self.proceed(from, Side::Target, cx);
    }

    /// The other end's profile, in answer to this node's offer.
    pub(crate) fn on_upgrade_reply(
        &mut self,
        from: NodeId,
        id: u64,
        theirs: Option<NatProfile>,
        cx: &mut Cx<'_>,
    ) {
        let now = cx.now();
        let ours = self.profile(now);
        let Some(u) = self.upgrades.by_peer.get_mut(&from) else {
            return;
        };
        if u.id != id || !matches!(u.state, State::Asked) {
            return;
        }
        let (Some(ours), Some(theirs)) = (ours, theirs) else {
            self.rest(from, true, cx);
            return;
        };
        u.theirs = Some(theirs);
        u.approach = Some(decide(&ours, &theirs));
        self.proceed(from, Side::Initiator, cx);
    }

    /// Acts on the chosen approach, as `me`.
    fn proceed(&mut self, peer: NodeId, me: Side, cx: &mut Cx<'_>) {
        let now = cx.now();
        let ours = self.profile(now);
        let Some(u) = self.upgrades.by_peer.get_mut(&peer) else {
            return;
        };
        let (Some(approach), Some(theirs), Some(ours)) = (u.approach, u.theirs, ours) else {
            return;
        };
        let listener = match approach {
            Approach::Relay => {
                let opener = u.opener;
                self.rest(peer, opener, cx);
                return;
            }
            // The initiator dials the other's local address.
            Approach::Local => Side::Target,
            Approach::Direct { listener } | Approach::Punch { listener, .. } => listener,
        };
        if listener == me {
            u.state = State::Listening;
            u.due = now + STEP.saturating_mul(3);
            return;
        }
        match approach {
            Approach::Local => {
                let local = cx.peer(&peer).and_then(|p| {
                    p.listen_addrs
                        .iter()
                        .copied()
                        .find(|a| !a.ip().is_unspecified())
                });
                match local {
                    Some(addr) => {
                        u.state = State::Dialing { addr };
                        u.due = now;
                    }
                    None => {
                        let opener = u.opener;
                        self.rest(peer, opener, cx);
                    }
                }
            }
            Approach::Direct { .. } => {
                u.state = State::Dialing {
                    addr: theirs.public,
                };
                u.due = now;
            }
            Approach::Punch { predict: false, .. } => {
                let id = u.id;
                u.state = State::Dialing {
                    addr: theirs.public,
                };
                u.due = now + half_rtt(cx.rtt(&peer));
                let punch = alloc::vec![ours.public];
                cx.reply(peer, &NatMessage::Go { id, punch });
            }
            Approach::Punch { predict: true, .. } => {
                // Which port does the NAT give a new mapping now? A probe to where this node
                // already sent would come back on the old mapping's port, so it goes from the
                // auxiliary socket (which only this subsystem uses) to an observer that socket
                // never sent to: the NAT makes a new mapping, from the same run of ports.
                let observers: Vec<SocketAddr> = self
                    .peers
                    .iter()
                    .filter(|p| **p != peer)
                    .filter_map(|p| public_addr(cx, p))
                    .collect();
                let (socket, sent) = if self.config.aux_port.is_some() {
                    (Socket::Auxiliary, &self.sent_aux)
                } else {
                    (Socket::Main, &self.sent_raw)
                };
                let fresh: Vec<SocketAddr> = observers
                    .iter()
                    .filter(|a| !sent.contains_key(&a.ip()))
                    .copied()
                    .collect();
                let pool = if fresh.is_empty() { observers } else { fresh };
                if pool.is_empty() {
                    let opener = u.opener;
                    self.rest(peer, opener, cx);
                    return;
                }
                let observer = pool[self.rng.below(pool.len() as u64) as usize];
                let nonce = self.rng.next_u64();
                u.state = State::Observing { nonce };
                u.due = now + STEP;
                self.send_raw(cx, socket, observer, Probe::Probe { nonce }.encode());
            }
            Approach::Relay => {}
        }
    }

    /// A `Seen` that may answer a prediction's probe; returns whether it did.
    pub(crate) fn prediction_seen(
        &mut self,
        nonce: u64,
        observed: SocketAddr,
        cx: &mut Cx<'_>,
    ) -> bool {
        let now = cx.now();
        let Some((&peer, u)) = self
            .upgrades
            .by_peer
            .iter_mut()
            .find(|(_, u)| matches!(u.state, State::Observing { nonce: n } if n == nonce))
        else {
            return false;
        };
        let Some(theirs) = u.theirs else {
            return true;
        };
        // Every one of the next ports, whatever step detection measured: a busy node makes
        // other mappings while it detects, so the step it saw is often a multiple of the NAT's.
        let punch: Vec<SocketAddr> = (1..=PREDICTED_PORTS)
            .filter_map(|i| observed.port().checked_add(i))
            .map(|port| SocketAddr::new(observed.ip(), port))
            .collect();
        let id = u.id;
        u.state = State::Dialing {
            addr: theirs.public,
        };
        u.due = now + half_rtt(cx.rtt(&peer));
        cx.reply(peer, &NatMessage::Go { id, punch });
        true
    }

    /// The dialer asks this node to punch.
    pub(crate) fn on_go(&mut self, from: NodeId, id: u64, punch: Vec<SocketAddr>, cx: &mut Cx<'_>) {
        let now = cx.now();
        let Some(u) = self.upgrades.by_peer.get_mut(&from) else {
            return;
        };
        if u.id != id || !matches!(u.state, State::Listening) {
            return;
        }
        u.due = now + STEP.saturating_mul(3);
        self.upgrades.punches += 1;
        for to in punch.into_iter().take(MAX_PUNCH_TARGETS) {
            self.send_raw(cx, Socket::Main, to, Probe::Punch { nonce: id }.encode());
        }
    }

    /// An upgrade's deadline passed.
    pub(crate) fn upgrade_due(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        let due: Vec<NodeId> = self
            .upgrades
            .by_peer
            .iter()
            .filter(|(_, u)| u.due <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            let Some(u) = self.upgrades.by_peer.get_mut(&peer) else {
                continue;
            };
            match u.state {
                State::Dialing { addr } => {
                    let punched = matches!(u.approach, Some(Approach::Punch { .. }));
                    cx.dial(addr, peer, punched);
                    u.state = State::Dialed;
                    u.due = now + cx.handshake_timeout() + Duration::from_secs(1);
                }
                State::Dialed | State::Observing { .. } => {
                    // Still relayed (an upgrade ends this state on success).
                    u.attempts += 1;
                    if u.attempts < ATTEMPTS {
                        let me = if u.opener {
                            Side::Initiator
                        } else {
                            Side::Target
                        };
                        self.proceed(peer, me, cx);
                    } else {
                        self.upgrades.failed += 1;
                        let opener = u.opener;
                        self.rest(peer, opener, cx);
                    }
                }
                State::Asked | State::Listening => {
                    let opener = u.opener;
                    self.rest(peer, opener, cx);
                }
                State::Resting => {
                    self.upgrades.by_peer.remove(&peer);
                    if cx.peer(&peer).is_some_and(|p| p.path == PathKind::Relayed) {
                        self.ask_upgrade(peer, cx);
                    }
                }
            }
        }
    }

    /// Nothing more for now; the opener tries again after [`RETRY_UPGRADE`].
    fn rest(&mut self, peer: NodeId, opener: bool, cx: &mut Cx<'_>) {
        if !opener {
            self.upgrades.by_peer.remove(&peer);
            return;
        }
        let due = cx.now() + RETRY_UPGRADE;
        let u = self.upgrades.by_peer.entry(peer).or_insert(Upgrade {
            id: 0,
            state: State::Resting,
            due,
            attempts: 0,
            opener,
            theirs: None,
            approach: None,
        });
        u.state = State::Resting;
        u.due = due;
    }

    /// The link to `peer` is no longer relayed: the upgrade worked (or a direct link came up
    /// some other way). The circuits to it are closed.
    fn upgraded(&mut self, peer: NodeId, cx: &mut Cx<'_>) {
        let Some(u) = self.upgrades.by_peer.remove(&peer) else {
            return;
        };
        let punched = matches!(u.approach, Some(Approach::Punch { .. }));
        if punched {
            cx.mark_punched(&peer);
            self.upgrades.punched += 1;
        } else {
            self.upgrades.direct += 1;
        }
        self.close_circuits_to(peer, cx);
        let path = if punched {
            PathKind::Punched
        } else {
            PathKind::Direct
        };
        cx.emit(Event::Nat(NatEvent::PathChanged { peer, path }));
    }
}

fn half_rtt(rtt: Option<Duration>) -> Duration {
    let rtt = rtt.unwrap_or(DEFAULT_RTT);
    Duration::from_micros(rtt.as_micros() / 2) + Duration::from_millis(10)
}
