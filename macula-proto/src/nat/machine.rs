//! The NAT subsystem: every node is an observer and a helper for others, and detects its own
//! NAT profile when asked (or on its own, with [`NatConfig::detect`]).
//!
//! Detection takes four steps, each asked again up to a few times while answers are missing
//! (datagrams get lost):
//!
//! 1. **Observe.** A peer reachable at the address it listens on becomes the first observer:
//!    it says where its auxiliary socket is and names a second observer at another address.
//! 2. **Filtering** (before the node has sent anything to either new port): the observer
//!    answers from its auxiliary port, and has a helper at an address the node never sent to
//!    answer too. The helper's answer getting in means endpoint-independent filtering; only
//!    the auxiliary port's, address-dependent; neither, address-and-port-dependent.
//! 3. **Mapping.** Probes from the main socket to the observer's main port, its auxiliary
//!    port and the second observer, then one from the auxiliary socket: one address seen by
//!    all three means endpoint-independent mapping; one per observer address,
//!    address-dependent; one per port, address-and-port-dependent. The ports of the new
//!    mappings, in order, show the allocation.
//! 4. **Hairpin.** A probe to the node's own public address: does it come back?
//!
//! As an observer, a node answers a `Probe` with a `Seen` to the probe's source, from the
//! socket it arrived on, within a per-source budget; as a helper, it sends one `Seen` where an
//! observer (a realm member over an authenticated link) saw a node, within a budget of its own.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use super::classify::{classify, Observations};
use super::config::NatConfig;
use super::messages::{NatMessage, Via, MAX_EXCLUDED};
use super::probe::Probe;
use super::profile::NatProfile;
use super::punch::Upgrades;
use super::reach::Reaches;
use super::relay::{Ends, Gateway, RelayStats};
use super::types::{DetectError, NatEvent, NatStats};
use crate::dht::DhtAsk;
use crate::id::NodeId;
use crate::node::subsystem::{Ask, Cx, Init, Peer, PeerChange, Subsystem};
use crate::node::{Event, Socket};
use crate::rate::{Buckets, TokenBucket};
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use crate::wire::ProtocolId;

/// The tests of one detection, each with its own nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
enum Test {
    Observe,
    FilterAux,
    FilterHelper,
    MapFirst,
    MapFirstAux,
    MapSecond,
    MapAuxSocket,
    Hairpin,
}

const TESTS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Observe,
    Filtering,
    Mapping,
    Hairpin,
}

impl Step {
    /// How many times the step is asked before it gives up waiting.
    fn rounds(self) -> u8 {
        match self {
            Step::Observe | Step::Filtering => 3,
            Step::Mapping => 5,
            Step::Hairpin => 2,
        }
    }
}

/// A detection in progress.
#[derive(Debug)]
struct Detection {
    observer: NodeId,
    /// Where this node reaches the observer (its main socket).
    observer_addr: SocketAddr,
    aux: Option<SocketAddr>,
    second: Option<SocketAddr>,
    /// The addresses this node had sent to when the filtering test began.
    contacted: Vec<IpAddr>,
    step: Step,
    round: u8,
    due: Instant,
    nonces: [u64; TESTS],
    seen: Observations,
}

/// The NAT subsystem. See the [module documentation](self).
#[derive(Debug)]
pub struct Nat {
    pub(super) config: NatConfig,
    pub(super) rng: Rng,
    /// Peers up that speak the NAT protocol.
    pub(super) peers: BTreeSet<NodeId>,
    /// The last profile detected, and when.
    profile: Option<(NatProfile, Instant)>,
    detection: Option<Detection>,
    /// When detection runs next on its own.
    next_detect: Option<Instant>,
    /// Answers to each source address.
    answers: Buckets<IpAddr>,
    /// Answers sent as a helper.
    help: TokenBucket,
    stats: NatStats,
    /// As a gateway: reservations and circuits.
    gateway: Gateway,
    /// This node's own circuit ends and reservations.
    pub(super) ends: Ends,
    next_id: u64,
    /// Upgrades of relayed links under way.
    pub(super) upgrades: Upgrades,
    /// Reaches under way, and the record last published.
    pub(super) reaches: Reaches,
    /// The realm (NAT records are keyed in it).
    pub(super) realm: alloc::string::String,
    /// Addresses this node sent raw datagrams to from its main socket lately, and when (its
    /// NAT's filter may be open to them: no filtering test counts an answer from one).
    pub(super) sent_raw: alloc::collections::BTreeMap<IpAddr, Instant>,
    /// The same for the auxiliary socket.
    pub(super) sent_aux: alloc::collections::BTreeMap<IpAddr, Instant>,
}

/// How long after its first peer came up a node detects on its own (so that a second
/// observer may be up by then).
const FIRST_DETECT_DELAY: Duration = Duration::from_millis(500);

/// Most addresses remembered as sent to (see `Nat::sent_raw`).
const MAX_SENT_RAW: usize = 256;

/// How long a failed detection waits before it tries again on its own.
const RETRY_AFTER: Duration = Duration::from_secs(30);

impl Subsystem for Nat {
    const PROTOCOL: ProtocolId = ProtocolId::NAT;
    const VERSION: u16 = 1;
    type Message = NatMessage;

    fn new(init: &Init<'_>) -> Self {
        let config = init.config.nat.clone();
        Nat {
            answers: Buckets::new(config.max_sources),
            help: TokenBucket::full(&config.help_limit, init.now),
            // With `detect`, detection starts once a peer is up to observe this node.
            next_detect: None,
            config,
            rng: Rng::from_seed(init.seed),
            peers: BTreeSet::new(),
            profile: None,
            detection: None,
            stats: NatStats::default(),
            gateway: Gateway::default(),
            ends: Ends::default(),
            next_id: 0,
            upgrades: Upgrades::default(),
            reaches: Reaches::default(),
            realm: init.config.realm.as_str().into(),
            sent_raw: alloc::collections::BTreeMap::new(),
            sent_aux: alloc::collections::BTreeMap::new(),
        }
    }

    fn on_peer(&mut self, change: PeerChange, cx: &mut Cx<'_>) {
        match change {
            PeerChange::Up { peer, .. } => {
                self.peers.insert(peer);
                let soon = cx.now() + FIRST_DETECT_DELAY;
                let idle = self.profile.is_none() && self.detection.is_none();
                if self.config.detect && idle && self.next_detect.map_or(true, |t| t > soon) {
                    self.next_detect = Some(soon);
                }
                self.reached(peer, cx);
                self.link_changed(peer, cx);
                self.keep_reservations(cx);
            }
            PeerChange::Relinked { peer } => self.link_changed(peer, cx),
            PeerChange::Down { peer, .. } => {
                self.peers.remove(&peer);
                if self.detection.as_ref().is_some_and(|d| d.observer == peer) {
                    self.fail(DetectError::Unanswered, cx);
                }
                self.gateway.gone(peer, cx);
                self.upgrades.forget(&peer);
                let reserved = self.ends.reservations.contains_key(&peer);
                // The links carried by circuits through a gateway that went away are dead:
                // drop them now rather than when QUIC times them out, and make each one this
                // node opened again, through another gateway of the other end's or directly
                // (a circuit is only opened on purpose).
                for (addr, other, opened) in self.ends.gateway_gone(peer) {
                    cx.drop_links_at(addr);
                    if opened && cx.peer(&other).is_none() {
                        self.stats.failovers += 1;
                        self.reach(other, cx);
                    }
                }
                if reserved {
                    self.keep_reservations(cx);
                    self.publish_record(cx);
                }
            }
            // No address led to a node another subsystem sent frames to: reach it by its id.
            PeerChange::Unreachable { peer, .. } => self.reach_for_frames(peer, cx),
            PeerChange::Writable { .. } => {}
        }
    }

    fn on_message(&mut self, from: Peer, message: NatMessage, cx: &mut Cx<'_>) {
        match message {
            NatMessage::Observe { id } => self.observe(from.id, id, cx),
            NatMessage::Observed {
                id,
                seen,
                aux_port,
                second,
            } => self.observed(from.id, id, seen, aux_port, second, cx),
            NatMessage::AnswerFrom { nonce, via } => self.answer_from(from.id, nonce, via, cx),
            NatMessage::Help { nonce, to } => {
                if self.help.take(cx.now(), &self.config.help_limit) {
                    self.stats.helped += 1;
                    let seen = Probe::Seen {
                        nonce,
                        observed: to,
                    };
                    self.send_raw(cx, Socket::Main, to, seen.encode());
                } else {
                    self.stats.answers_limited += 1;
                }
            }
            NatMessage::Reserve { id } => self.gateway.reserve(from.id, id, &self.config, cx),
            NatMessage::Reserved { refused, .. } => {
                if let Some(held) = self.ends.reservations.get_mut(&from.id) {
                    *held = refused.is_none();
                    if refused.is_none() {
                        cx.keep_link(&from.id);
                        self.publish_record(cx);
                    }
                }
            }
            NatMessage::Open { circuit, target } => {
                self.gateway
                    .open(from.id, circuit, target, &self.config, cx);
            }
            NatMessage::Incoming {
                circuit,
                from: opener,
            } => {
                self.ends
                    .incoming(from.id, circuit, opener, &self.config, cx);
            }
            NatMessage::Data { circuit, packet } => {
                if self.gateway.carries(&from.id, circuit) {
                    self.gateway
                        .forward(from.id, circuit, packet, &self.config, cx);
                } else {
                    self.ends.arrived(from.id, circuit, packet, cx);
                }
            }
            NatMessage::Close { circuit, .. } => {
                if self.gateway.carries(&from.id, circuit) {
                    self.gateway.closed_by(from.id, circuit, cx);
                } else if let Some(addr) = self.ends.closed(from.id, circuit) {
                    cx.drop_links_at(addr);
                }
            }
            NatMessage::Upgrade { id, profile } => self.on_upgrade(from.id, id, profile, cx),
            NatMessage::UpgradeReply { id, profile } => {
                self.on_upgrade_reply(from.id, id, profile, cx);
            }
            NatMessage::Go { id, punch } => self.on_go(from.id, id, punch, cx),
            NatMessage::Keep => cx.keep_link(&from.id),
        }
    }

    fn on_timeout(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now();
        if self
            .gateway
            .next_expiry(&self.config)
            .is_some_and(|t| t <= now)
        {
            self.gateway.expire(&self.config, cx);
        }
        if self.detection.as_ref().is_some_and(|d| d.due <= now) {
            self.step_due(cx);
        }
        if self.upgrades.next_due().is_some_and(|t| t <= now) {
            self.upgrade_due(cx);
        }
        if self.reaches.next_due().is_some_and(|t| t <= now) {
            self.reach_due(cx);
        }
        if self.detection.is_none() && self.next_detect.is_some_and(|t| t <= now) {
            self.next_detect = None;
            self.start(cx);
        }
    }

    fn on_answer(
        &mut self,
        ticket: crate::node::subsystem::Ticket,
        answer: crate::node::subsystem::Answer,
        cx: &mut Cx<'_>,
    ) {
        self.reach_answer(ticket, answer, cx);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let step = self.detection.as_ref().map(|d| d.due);
        let expiry = self.gateway.next_expiry(&self.config);
        let upgrade = self.upgrades.next_due();
        let reach = self.reaches.next_due();
        [step, self.next_detect, expiry, upgrade, reach]
            .into_iter()
            .flatten()
            .min()
    }
}

impl Nat {
    /// The gateways holding a reservation for this node.
    pub(super) fn reserved_gateways(&self) -> Vec<NodeId> {
        self.ends
            .reservations
            .iter()
            .filter(|(_, held)| **held)
            .map(|(g, _)| *g)
            .collect()
    }

    /// The profile detected last, while it is trusted (`profile_ttl`).
    pub fn profile(&self, now: Instant) -> Option<NatProfile> {
        self.profile
            .filter(|(_, at)| now < *at + self.config.profile_ttl)
            .map(|(p, _)| p)
    }

    /// Whether a detection is running.
    pub fn detecting(&self) -> bool {
        self.detection.is_some()
    }

    /// Counters.
    pub fn stats(&self) -> NatStats {
        NatStats {
            punches: self.upgrades.punches,
            upgraded_punched: self.upgrades.punched,
            upgraded_direct: self.upgrades.direct,
            upgrades_failed: self.upgrades.failed,
            ..self.stats
        }
    }

    /// Closes this node's circuits to `peer` (a direct link took their place).
    pub(super) fn close_circuits_to(&mut self, peer: NodeId, cx: &mut Cx<'_>) {
        for (gateway, circuit) in self.ends.to_peer(&peer) {
            self.ends.closed(gateway, circuit);
            let reason = super::messages::RelayRefusal::Closed;
            cx.reply(gateway, &NatMessage::Close { circuit, reason });
        }
    }

    /// Relay counters and gauges.
    pub fn relay_stats(&self) -> RelayStats {
        RelayStats {
            own_circuits: self.ends.len(),
            reserved_at: self.ends.reservations.values().filter(|r| **r).count(),
            ..self.gateway.stats
        }
    }

    /// Asks `gateway` (dialed at `addr` without a link) to hold a reservation for this node.
    pub(crate) fn reserve(&mut self, gateway: NodeId, addr: Option<SocketAddr>, cx: &mut Cx<'_>) {
        self.next_id += 1;
        let id = self.next_id;
        self.ends.reservations.entry(gateway).or_insert(false);
        cx.send(gateway, addr, &NatMessage::Reserve { id });
    }

    /// Opens a circuit to `target` through `gateway`; its virtual address.
    pub(crate) fn open_circuit(
        &mut self,
        target: NodeId,
        gateway: NodeId,
        addr: Option<SocketAddr>,
        cx: &mut Cx<'_>,
    ) -> Option<SocketAddr> {
        self.ends.open(target, gateway, addr, &self.config, cx)
    }

    /// The QUIC stack sends a packet to a circuit's virtual address.
    pub(crate) fn send_relayed(&mut self, to: SocketAddr, packet: &[u8], cx: &mut Cx<'_>) {
        if !self.ends.send(to, packet, cx) {
            self.stats.relayed_dropped += 1;
        }
    }

    /// The node at the other end of the circuit at `addr`, and the gateway it goes through.
    pub fn circuit_peer(&self, addr: SocketAddr) -> Option<(NodeId, NodeId)> {
        self.ends.peer_at(addr)
    }

    /// Starts a detection unless one runs.
    pub(crate) fn start(&mut self, cx: &mut Cx<'_>) {
        if self.detection.is_some() {
            return;
        }
        let observers: Vec<(NodeId, SocketAddr)> = prefer_global(
            self.peers
                .iter()
                .filter_map(|id| public_addr(cx, id).map(|a| (*id, a)))
                .collect(),
            |(_, a)| *a,
        );
        if observers.is_empty() {
            self.finish(Err(DetectError::NoObserver), cx);
            return;
        }
        let (observer, observer_addr) = observers[self.rng.below(observers.len() as u64) as usize];
        let mut nonces = [0u64; TESTS];
        for n in &mut nonces {
            *n = self.rng.next_u64();
        }
        let listen = self
            .config
            .main_port
            .or_else(|| cx.listen_addrs().first().map(SocketAddr::port));
        self.detection = Some(Detection {
            observer,
            observer_addr,
            aux: None,
            second: None,
            contacted: Vec::new(),
            step: Step::Observe,
            round: 0,
            due: cx.now(),
            nonces,
            seen: Observations {
                local_port: listen,
                local_aux_port: self.config.aux_port,
                ..Observations::default()
            },
        });
        self.stats.detections += 1;
        self.ask(cx);
    }

    /// Sends what the current step asks (again, for what is still unanswered).
    fn ask(&mut self, cx: &mut Cx<'_>) {
        let Some(d) = self.detection.as_mut() else {
            return;
        };
        d.round += 1;
        d.due = cx.now() + self.config.step_timeout;
        let nonce = |t: Test| d.nonces[t as usize];
        let mut out = Vec::new();
        match d.step {
            Step::Observe => {
                let id = nonce(Test::Observe);
                cx.reply(d.observer, &NatMessage::Observe { id });
            }
            Step::Filtering => {
                if !d.seen.aux_answer {
                    let nonce = nonce(Test::FilterAux);
                    let via = Via::Auxiliary;
                    cx.reply(d.observer, &NatMessage::AnswerFrom { nonce, via });
                }
                let exclude: Vec<IpAddr> = d.contacted.iter().take(MAX_EXCLUDED).copied().collect();
                let nonce = nonce(Test::FilterHelper);
                let via = Via::Helper { exclude };
                cx.reply(d.observer, &NatMessage::AnswerFrom { nonce, via });
            }
            Step::Mapping => {
                let probes = [
                    (
                        Test::MapFirst,
                        Socket::Main,
                        Some(d.observer_addr),
                        d.seen.first,
                    ),
                    (Test::MapFirstAux, Socket::Main, d.aux, d.seen.first_aux),
                    (Test::MapSecond, Socket::Main, d.second, d.seen.second),
                    (
                        Test::MapAuxSocket,
                        Socket::Auxiliary,
                        self.config.aux_port.map(|_| d.observer_addr),
                        d.seen.aux_socket,
                    ),
                ];
                for (test, socket, to, answered) in probes {
                    if let (Some(to), None) = (to, answered) {
                        let probe = Probe::Probe { nonce: nonce(test) };
                        out.push((socket, to, probe.encode()));
                    }
                }
            }
            Step::Hairpin => {
                if let Some(public) = d.seen.first {
                    let probe = Probe::Probe {
                        nonce: nonce(Test::Hairpin),
                    };
                    out.push((Socket::Main, public, probe.encode()));
                }
            }
        }
        for (socket, to, bytes) in out {
            self.send_raw(cx, socket, to, bytes);
        }
    }

    /// The current step's wait is over.
    fn step_due(&mut self, cx: &mut Cx<'_>) {
        let Some(d) = self.detection.as_ref() else {
            return;
        };
        if d.round < d.step.rounds() {
            self.ask(cx);
            return;
        }
        match d.step {
            Step::Observe => self.fail(DetectError::Unanswered, cx),
            Step::Filtering => self.next_step(Step::Mapping, cx),
            Step::Mapping => {
                let s = &d.seen;
                if s.first.is_none() || s.first_aux.is_none() || s.second.is_none() {
                    self.fail(DetectError::Unanswered, cx);
                } else {
                    self.next_step(Step::Hairpin, cx);
                }
            }
            Step::Hairpin => self.conclude(cx),
        }
    }

    fn next_step(&mut self, step: Step, cx: &mut Cx<'_>) {
        if let Some(d) = self.detection.as_mut() {
            d.step = step;
            d.round = 0;
        }
        self.ask(cx);
    }

    /// The observer's answer to `Observe`.
    fn observed(
        &mut self,
        from: NodeId,
        id: u64,
        seen: SocketAddr,
        aux_port: Option<u16>,
        second: Option<SocketAddr>,
        cx: &mut Cx<'_>,
    ) {
        let Some(d) = self.detection.as_mut() else {
            return;
        };
        if d.step != Step::Observe || from != d.observer || id != d.nonces[Test::Observe as usize] {
            return;
        }
        let observer_ip = d.observer_addr.ip();
        d.aux = aux_port.map(|p| SocketAddr::new(observer_ip, p));
        // The second observer: the one the first named, or one of this node's own public
        // peers at another address.
        let ours = prefer_global(
            self.peers
                .iter()
                .filter_map(|id| public_addr(cx, id))
                .filter(|a| a.ip() != observer_ip)
                .collect(),
            |a| *a,
        )
        .first()
        .copied();
        d.second = second.filter(|a| a.ip() != observer_ip).or(ours);
        if d.aux.is_none() {
            return self.fail(DetectError::NoObserver, cx);
        }
        if d.second.is_none() {
            return self.fail(DetectError::NoSecondObserver, cx);
        }
        d.contacted = cx.link_addrs().into_iter().map(|a| a.ip()).collect();
        d.contacted.extend(self.sent_raw.keys().copied());
        d.contacted.sort_unstable();
        d.contacted.dedup();
        // Seen at the very address it listens on, the node has no NAT: nothing to test of
        // filtering (a busy public node's helpers are mostly at addresses it has links to,
        // whose answers would prove nothing).
        if cx.listen_addrs().contains(&seen) {
            d.seen.helper_answer = true;
            return self.next_step(Step::Mapping, cx);
        }
        self.next_step(Step::Filtering, cx);
    }

    /// A raw datagram arrived on one of the transport's sockets.
    pub(crate) fn on_datagram(
        &mut self,
        socket: Socket,
        from: SocketAddr,
        bytes: &[u8],
        cx: &mut Cx<'_>,
    ) {
        let Ok(probe) = Probe::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        match probe {
            Probe::Probe { nonce } => {
                if let Some(d) = self.detection.as_mut() {
                    if nonce == d.nonces[Test::Hairpin as usize] {
                        d.seen.hairpin = true;
                        if d.step == Step::Hairpin {
                            self.conclude(cx);
                        }
                        return;
                    }
                }
                if !self.budget(from.ip(), cx.now()) {
                    return;
                }
                self.stats.probes_answered += 1;
                let seen = Probe::Seen {
                    nonce,
                    observed: from,
                };
                self.send_raw(cx, socket, from, seen.encode());
            }
            Probe::Seen { nonce, observed } => {
                if !self.prediction_seen(nonce, observed, cx) {
                    self.seen(nonce, from, observed, cx);
                }
            }
            Probe::Punch { .. } => self.stats.punches_received += 1,
        }
    }

    /// An answer to one of this node's tests.
    fn seen(&mut self, nonce: u64, from: SocketAddr, observed: SocketAddr, cx: &mut Cx<'_>) {
        let Some(d) = self.detection.as_mut() else {
            return;
        };
        let Some(test) = d.nonces.iter().position(|n| *n == nonce) else {
            return;
        };
        let filtering = d.step == Step::Filtering;
        let s = &mut d.seen;
        match test {
            // Once the mapping probes have gone out, the filter is open to those addresses:
            // a late filtering answer proves nothing.
            t if t == Test::FilterAux as usize => s.aux_answer |= filtering,
            // Nor does one from a helper at an address this node had sent to, then or since
            // (a link opened meanwhile: the DHT's, say).
            t if t == Test::FilterHelper as usize => {
                let sent_to = d.contacted.binary_search(&from.ip()).is_ok()
                    || self.sent_raw.contains_key(&from.ip())
                    || cx.link_addrs().iter().any(|a| a.ip() == from.ip());
                s.helper_answer |= filtering && !sent_to;
            }
            t if t == Test::MapFirst as usize => s.first = Some(observed),
            t if t == Test::MapFirstAux as usize => s.first_aux = Some(observed),
            t if t == Test::MapSecond as usize => s.second = Some(observed),
            t if t == Test::MapAuxSocket as usize => s.aux_socket = Some(observed),
            _ => return,
        }
        let mapped = s.first.is_some()
            && s.first_aux.is_some()
            && s.second.is_some()
            && (s.aux_socket.is_some() || self.config.aux_port.is_none());
        match d.step {
            Step::Filtering if s.helper_answer => self.next_step(Step::Mapping, cx),
            Step::Mapping if mapped => self.next_step(Step::Hairpin, cx),
            _ => {}
        }
    }

    fn conclude(&mut self, cx: &mut Cx<'_>) {
        let Some(d) = self.detection.as_ref() else {
            return;
        };
        match classify(&d.seen) {
            Some(profile) => self.finish(Ok(profile), cx),
            None => self.fail(DetectError::Unanswered, cx),
        }
    }

    fn fail(&mut self, error: DetectError, cx: &mut Cx<'_>) {
        self.finish(Err(error), cx);
    }

    fn finish(&mut self, outcome: Result<NatProfile, DetectError>, cx: &mut Cx<'_>) {
        self.detection = None;
        let now = cx.now();
        let event = match outcome {
            Ok(profile) => {
                self.profile = Some((profile, now));
                let dialable = profile.accepts_unsolicited();
                if cx.dialable_addrs().is_empty() == dialable {
                    // The records this node published name addresses only if others can
                    // dial them: they are stored again with the change.
                    cx.set_dialable(dialable);
                    cx.ask(ProtocolId::DHT, Ask::Dht(DhtAsk::Republish));
                }
                let refresh = self.config.profile_ttl.as_micros() / 5 * 4;
                self.next_detect = self
                    .config
                    .detect
                    .then(|| now + Duration::from_micros(refresh));
                cx.emit(Event::Nat(NatEvent::Detected(profile)));
                self.keep_reservations(cx);
                self.publish_record(cx);
                return;
            }
            Err(error) => {
                self.stats.detections_failed += 1;
                if self.profile.is_none() && cx.dialable_addrs().is_empty() {
                    // Nothing known of a NAT: the records name where it listens, as they
                    // would without detection.
                    cx.set_dialable(true);
                    cx.ask(ProtocolId::DHT, Ask::Dht(DhtAsk::Republish));
                }
                self.next_detect = self.config.detect.then(|| now + RETRY_AFTER);
                NatEvent::DetectFailed(error)
            }
        };
        cx.emit(Event::Nat(event));
        // Without a profile, the record still says where this node listens.
        if self.config.detect {
            self.publish_record(cx);
        }
    }

    // ------------------------------------------------------------ observer and helper

    /// Sends a raw datagram, remembering where each socket sent to.
    pub(super) fn send_raw(
        &mut self,
        cx: &mut Cx<'_>,
        socket: Socket,
        to: SocketAddr,
        bytes: Vec<u8>,
    ) {
        let sent = match socket {
            Socket::Main => &mut self.sent_raw,
            Socket::Auxiliary => &mut self.sent_aux,
        };
        if sent.len() >= MAX_SENT_RAW && !sent.contains_key(&to.ip()) {
            // The oldest goes; one so old its NAT mapping has likely expired.
            if let Some(oldest) = sent.iter().min_by_key(|(_, at)| **at).map(|(ip, _)| *ip) {
                sent.remove(&oldest);
            }
        }
        sent.insert(to.ip(), cx.now());
        cx.send_datagram(socket, to, bytes);
    }

    /// Takes one answer from `source`'s budget; counts a spent one.
    fn budget(&mut self, source: IpAddr, now: Instant) -> bool {
        let ok = self.answers.take(source, now, &self.config.answer_limit);
        if !ok {
            self.stats.answers_limited += 1;
        }
        ok
    }

    /// A peer asks what this node sees of it.
    fn observe(&mut self, from: NodeId, id: u64, cx: &mut Cx<'_>) {
        let Some(seen) = cx.peer(&from).map(|p| p.addr) else {
            return;
        };
        if !self.budget(seen.ip(), cx.now()) {
            return;
        }
        let candidates: Vec<SocketAddr> = prefer_global(
            self.peers
                .iter()
                .filter(|id| **id != from)
                .filter_map(|id| public_addr(cx, id))
                .filter(|a| {
                    a.ip() != seen.ip() && !cx.listen_addrs().iter().any(|l| l.ip() == a.ip())
                })
                .collect(),
            |a| *a,
        );
        let second = (!candidates.is_empty())
            .then(|| candidates[self.rng.below(candidates.len() as u64) as usize]);
        let aux_port = self.config.aux_port;
        cx.reply(
            from,
            &NatMessage::Observed {
                id,
                seen,
                aux_port,
                second,
            },
        );
    }

    /// A peer asks for a filtering test's answer.
    fn answer_from(&mut self, from: NodeId, nonce: u64, via: Via, cx: &mut Cx<'_>) {
        let Some(to) = cx.peer(&from).map(|p| p.addr) else {
            return;
        };
        if !self.budget(to.ip(), cx.now()) {
            return;
        }
        let seen = Probe::Seen {
            nonce,
            observed: to,
        };
        match via {
            Via::Auxiliary => {
                if self.config.aux_port.is_some() {
                    self.stats.probes_answered += 1;
                    self.send_raw(cx, Socket::Auxiliary, to, seen.encode());
                }
            }
            Via::Helper { exclude } => {
                if exclude.len() > MAX_EXCLUDED {
                    return;
                }
                let helpers: Vec<NodeId> = self
                    .peers
                    .iter()
                    .filter(|id| **id != from)
                    // A helper without a NAT of its own: one behind a NAT would leave a
                    // mapping towards the node, which a later punch between the two trips on.
                    .filter(|id| {
                        public_addr(cx, id)
                            .is_some_and(|a| a.ip() != to.ip() && !exclude.contains(&a.ip()))
                    })
                    .copied()
                    .collect();
                if helpers.is_empty() {
                    self.stats.no_helper += 1;
                    return;
                }
                let helper = helpers[self.rng.below(helpers.len() as u64) as usize];
                cx.reply(helper, &NatMessage::Help { nonce, to });
            }
        }
    }
}

/// Whether `ip` is an address of a private network (RFC 1918, link-local, IPv6 unique-local or
/// link-local): a peer there, seen where it listens, may be on this node's own side of a NAT.
pub(crate) fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local() || v4.is_loopback(),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 || v6.is_loopback()
        }
    }
}

/// `items` whose address is not private, if there are any; else all of them (a mesh that
/// lives on one private network has no other observers, and needs none).
fn prefer_global<T>(items: Vec<T>, addr: impl Fn(&T) -> SocketAddr) -> Vec<T> {
    if items.iter().any(|i| !is_private(addr(i).ip())) {
        items
            .into_iter()
            .filter(|i| !is_private(addr(i).ip()))
            .collect()
    } else {
        items
    }
}

/// Where a peer can be reached by anyone: the address its link came from, when that is where
/// it says it listens (so it has no NAT in the way, or one that forwards its port).
pub(super) fn public_addr(cx: &Cx<'_>, id: &NodeId) -> Option<SocketAddr> {
    let p = cx.peer(id)?;
    let listens = p
        .listen_addrs
        .iter()
        .any(|l| *l == p.addr || (l.ip().is_unspecified() && l.port() == p.addr.port()));
    listens.then_some(p.addr)
}
