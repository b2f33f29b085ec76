//! Frames mode: links as wires between nodes, carrying the node's frames with the path's
//! delay, loss and duplication.

use std::net::SocketAddr;

use macula_proto::{Channel, Duration, LinkError, LinkId, LinkInfo, Transmit};

use crate::check::Observation;
use crate::host::Host;
use crate::net::{addr_of, chance, node_at, NodeIdx, PathProps};

use super::*;

/// One side of a wire: which node, which of its links, which incarnation.
#[derive(Clone, Copy, Debug)]
pub(super) struct End {
    pub(super) node: NodeIdx,
    pub(super) link: LinkId,
    pub(super) incarnation: u32,
}

/// Which wire carries one of a node's links.
#[derive(Clone, Copy, Debug)]
pub(super) struct Binding {
    pub(super) link: LinkId,
    pub(super) wire: slab::Key,
    /// The direction the node sends in (0: it dialed).
    pub(super) dir: u8,
}

/// Bindings kept in the node's page: as many as the links a node keeps inline.
pub(super) const INLINE_BINDINGS: usize = 6;

/// A node's bindings, indexed by [`LinkId::slot`]; the first few inline.
#[derive(Default)]
pub(super) struct Bindings {
    pub(super) inline: [Option<Binding>; INLINE_BINDINGS],
    /// Slots `INLINE_BINDINGS..`.
    pub(super) spill: Vec<Option<Binding>>,
    /// Bindings pushed out of their slot by a newer link while still live (rare).
    pub(super) displaced: Vec<Binding>,
}

impl Bindings {
    pub(super) fn slot(&self, slot: usize) -> Option<&Option<Binding>> {
        match slot.checked_sub(INLINE_BINDINGS) {
            None => Some(&self.inline[slot]),
            Some(s) => self.spill.get(s),
        }
    }

    pub(super) fn get(&self, link: LinkId) -> Option<Binding> {
        match self.slot(link.slot()) {
            Some(Some(b)) if b.link == link => Some(*b),
            _ => self.displaced.iter().find(|b| b.link == link).copied(),
        }
    }

    pub(super) fn slot_mut(&mut self, slot: usize) -> Option<&mut Option<Binding>> {
        match slot.checked_sub(INLINE_BINDINGS) {
            None => Some(&mut self.inline[slot]),
            Some(s) => self.spill.get_mut(s),
        }
    }

    pub(super) fn bind(&mut self, link: LinkId, wire: slab::Key, dir: u8) {
        let slot = link.slot();
        if let Some(s) = slot.checked_sub(INLINE_BINDINGS) {
            if self.spill.len() <= s {
                self.spill.resize(s + 1, None);
            }
        }
        let entry = self.slot_mut(slot).expect("the slot exists");
        if let Some(old) = entry.replace(Binding { link, wire, dir }) {
            self.displaced.push(old);
        }
    }

    pub(super) fn unbind(&mut self, link: LinkId) {
        match self.slot_mut(link.slot()) {
            Some(entry) if entry.is_some_and(|b| b.link == link) => *entry = None,
            _ => self.displaced.retain(|b| b.link != link),
        }
    }

    /// Removes every binding; returns their wires.
    pub(super) fn clear(&mut self) -> Vec<slab::Key> {
        let wires = self
            .inline
            .iter_mut()
            .chain(&mut self.spill)
            .filter_map(Option::take)
            .chain(self.displaced.drain(..))
            .map(|b| b.wire)
            .collect();
        *self = Bindings::default();
        wires
    }
}

/// A modelled QUIC connection in frames mode: a reliable, ordered pipe each way.
pub(super) struct Wire {
    pub(super) dialer: End,
    pub(super) listener_node: NodeIdx,
    pub(super) listener: Option<End>,
    pub(super) exporter: [u8; 32],
    /// Latest arrival scheduled per direction (0: dialer to listener) and lane, for FIFO
    /// delivery within a channel (see [`lane`]).
    pub(super) last: [[Instant; LANES]; 2],
    /// Whether each side is finished with the wire (closed, told it is down, or crashed).
    pub(super) done: [bool; 2],
}

impl Wire {
    /// The node a message in direction `dir` goes to, and its end of the wire (none yet on
    /// the listener's side before its inbound link is handed over).
    pub(super) fn receiver(&self, dir: u8) -> (NodeIdx, Option<End>) {
        if dir == 0 {
            (self.listener_node, self.listener)
        } else {
            (self.dialer.node, Some(self.dialer))
        }
    }
}

/// Lanes of a wire per direction: channels 0, 1 and 2 have one each (the control channel, the
/// DHT's, the next protocol's), later channels share the last. Messages are delivered in order
/// within a lane, and a lane never waits for another: QUIC's independent streams, to the
/// precision of channels that share a lane.
pub(super) const LANES: usize = 4;

/// The lane of `channel`.
pub(super) fn lane(channel: Channel) -> usize {
    usize::from(channel.0).min(LANES - 1)
}

impl Sim {
    pub(super) fn path(&self, from: NodeIdx, to: NodeIdx) -> PathProps {
        self.link.path(from, to)
    }

    pub(super) fn blocked(&self, from: NodeIdx, to: NodeIdx) -> bool {
        self.partition.as_ref().is_some_and(|p| p.blocks(from, to))
    }

    /// One-way delay for `bytes` from `from` to `to` in one of `from`'s uplink lanes, with
    /// jitter, bandwidth and (frames mode) retransmission delays for modelled loss. `None` when
    /// the lane's drop-tail buffer is full (the datagram is lost).
    pub(super) fn delay(
        &mut self,
        from: NodeIdx,
        to: NodeIdx,
        lane: usize,
        bytes: usize,
        retransmit: bool,
    ) -> Option<Duration> {
        let p = self.path(from, to);
        let jitter = Duration::from_micros(self.rng.below(p.jitter.as_micros() + 1));
        let mut delay = p.latency + jitter;
        if let Some(bw) = self.link.bandwidth.filter(|bw| *bw > 0) {
            let node = &mut self.nodes[from as usize];
            let start = node.uplink_free[lane].max(self.now);
            if let Some(buffer) = self.link.buffer.filter(|_| !retransmit) {
                let queued = (start - self.now).as_micros() * bw / 1_000_000;
                if queued + bytes as u64 > buffer {
                    return None;
                }
            }
            let done = start + Duration::from_micros(bytes as u64 * 1_000_000 / bw);
            node.uplink_free[lane] = done;
            delay = delay + (done - self.now);
        }
        if retransmit && p.loss > 0.0 {
            // A lost transmission costs a probe timeout (about 1.5 RTT + 25 ms), each time.
            let rto = p.latency.saturating_mul(3) + Duration::from_millis(25);
            let mut tries = 0;
            while chance(&mut self.rng) < p.loss && tries < 16 {
                delay = delay + rto.saturating_mul(1 << tries.min(4));
                tries += 1;
                self.stats.retransmitted += 1;
            }
        }
        Some(delay)
    }

    pub(super) fn frames_transmit(&mut self, n: NodeIdx, t: Transmit) {
        match t {
            Transmit::Open { link, addr, .. } => {
                self.observe(&Observation::Dial {
                    node: n,
                    link,
                    at: self.now,
                });
                self.open_wire(n, link, addr)
            }
            Transmit::Send {
                link,
                channel,
                bytes,
            } => {
                if let Some((wire, dir)) = self.wire_of(n, link) {
                    self.send_on_wire(wire, dir, channel, Msg::data(bytes));
                }
            }
            Transmit::Close { link, code } => {
                if let Some((wire, dir)) = self.wire_of(n, link) {
                    self.nodes[n as usize].links.unbind(link);
                    let down = Msg::Down(LinkError::ClosedByPeer(code));
                    self.send_on_wire(wire, dir, Channel::CONTROL, down);
                    self.side_done(wire, n);
                }
            }
            // Frames mode models links, not UDP or QUIC: raw datagrams (NAT probes) and
            // relayed QUIC packets go nowhere.
            Transmit::Datagram { .. } | Transmit::Relayed { .. } => {}
        }
    }

    /// The wire carrying `link` of node `n`, and the direction `n` sends in.
    pub(super) fn wire_of(&self, n: NodeIdx, link: LinkId) -> Option<(u64, u8)> {
        self.nodes[n as usize]
            .links
            .get(link)
            .map(|b| (b.wire, b.dir))
    }

    pub(super) fn open_wire(&mut self, n: NodeIdx, link: LinkId, addr: SocketAddr) {
        let Some(target) = node_at(addr, self.nodes.len()) else {
            return; // nobody there: the dialer's handshake timeout answers
        };
        let mut exporter = [0u8; 32];
        self.rng.fill(&mut exporter);
        let incarnation = self.nodes[n as usize].incarnation;
        let w = Wire {
            dialer: End {
                node: n,
                link,
                incarnation,
            },
            listener_node: target,
            listener: None,
            exporter,
            last: [[self.now; LANES]; 2],
            done: [false, false],
        };
        let wire = self.wires.insert(w);
        self.nodes[n as usize].links.bind(link, wire, 0);
        if self.blocked(n, target) || self.blocked(target, n) || !self.is_up(target) {
            // No handshake gets through; the wire waits for the dialer to give up.
            return;
        }
        // QUIC + TLS: the dialer is up after one round trip, the listener half a trip later.
        // Frames mode never drops (its `delay` is always `Some`).
        let out = self.delay(n, target, 0, 1200, true).unwrap_or_default();
        let back = self.delay(target, n, 0, 1200, true).unwrap_or_default();
        let up_at = self.now + out + back;
        let inbound_at = up_at + self.delay(n, target, 0, 100, true).unwrap_or_default();
        if let Some(w) = self.wires.get_mut(wire) {
            w.last = [[inbound_at; LANES], [up_at; LANES]];
        }
        self.queue.push(up_at, Ev::LinkUp(wire));
        self.queue.push(inbound_at, Ev::Inbound(wire));
    }

    pub(super) fn send_on_wire(&mut self, wire: u64, dir: u8, channel: Channel, msg: Msg) {
        let Some(w) = self.wires.get(wire) else {
            return;
        };
        let (from, to) = if dir == 0 {
            (w.dialer.node, w.listener_node)
        } else {
            (w.listener_node, w.dialer.node)
        };
        if self.blocked(from, to) {
            self.stats.partitioned += 1;
            self.held.entry(wire).or_default()[dir as usize].push((channel, msg));
            return;
        }
        let len = msg.bytes().map_or(40, <[u8]>::len);
        let delay = self
            .delay(from, to, lane(channel), len, true)
            .unwrap_or_default();
        let w = self.wires.get_mut(wire).expect("looked up above");
        let lanes = &mut w.last[dir as usize];
        let at = if msg.bytes().is_some() {
            let at = (self.now + delay).max(lanes[lane(channel)]);
            lanes[lane(channel)] = at;
            at
        } else {
            // A close comes after everything sent before it, on every channel.
            let at = lanes.iter().fold(self.now + delay, |a, l| a.max(*l));
            *lanes = [at; LANES];
            at
        };
        let channel = channel.0;
        self.queue.push(
            at,
            Ev::Wire {
                wire,
                dir,
                channel,
                msg,
            },
        );
    }

    /// Marks node `n`'s side of a wire finished; forgets the wire once both sides are.
    pub(super) fn side_done(&mut self, wire: u64, n: NodeIdx) {
        let Some(w) = self.wires.get_mut(wire) else {
            return;
        };
        if w.dialer.node == n {
            w.done[0] = true;
        }
        if w.listener_node == n {
            w.done[1] = true;
        }
        if w.done[0] && w.done[1] {
            self.wires.remove(wire);
            self.held.remove(&wire);
        }
    }

    /// Whether a wire end still belongs to a live process that has not let go of the link.
    pub(super) fn end_is_current(&self, w: &Wire, end: End) -> bool {
        let side = usize::from(end.node != w.dialer.node || end.link != w.dialer.link);
        let node = &self.nodes[end.node as usize];
        !w.done[side] && node.incarnation == end.incarnation && node.host.is_some()
    }

    pub(super) fn deliver_inbound(&mut self, wire: u64) {
        let Some(w) = self.wires.get(wire) else {
            return;
        };
        let (dialer, target, exporter) = (w.dialer, w.listener_node, w.exporter);
        let now = self.now;
        self.digest.record(now.as_micros(), target, 0x10);
        let info = LinkInfo {
            remote_id: self.node_id(dialer.node),
            remote_addr: addr_of(dialer.node),
            exporter,
        };
        let Some(result) = self.with_host(target, |h| match h {
            Host::Frames(node) => node.handle_inbound(info, now),
            Host::Quic(_) => unreachable!("wires exist in frames mode only"),
        }) else {
            self.side_done(wire, target);
            return;
        };
        match result {
            Ok(link) => {
                let incarnation = self.nodes[target as usize].incarnation;
                self.nodes[target as usize].links.bind(link, wire, 1);
                if let Some(w) = self.wires.get_mut(wire) {
                    w.listener = Some(End {
                        node: target,
                        link,
                        incarnation,
                    });
                }
            }
            Err(code) => {
                let down = Msg::Down(LinkError::ClosedByPeer(code));
                self.send_on_wire(wire, 1, Channel::CONTROL, down);
                self.side_done(wire, target);
            }
        }
        self.drain(target);
    }

    pub(super) fn deliver_link_up(&mut self, wire: u64) {
        let Some(w) = self.wires.get(wire) else {
            return;
        };
        let (dialer, listener, exporter) = (w.dialer, w.listener_node, w.exporter);
        if !self.end_is_current(w, dialer) {
            return;
        }
        let now = self.now;
        self.digest.record(now.as_micros(), dialer.node, 0x11);
        let info = LinkInfo {
            remote_id: self.node_id(listener),
            remote_addr: addr_of(listener),
            exporter,
        };
        self.with_host(dialer.node, |h| match h {
            Host::Frames(node) => node.handle_link_up(dialer.link, info, now),
            Host::Quic(_) => unreachable!("wires exist in frames mode only"),
        });
        self.drain(dialer.node);
    }

    pub(super) fn deliver_on_wire(&mut self, wire: u64, dir: u8, channel: Channel, msg: Msg) {
        let Some(w) = self.wires.get(wire) else {
            return;
        };
        let (target_node, target) = w.receiver(dir);
        let Some(end) = target.filter(|e| self.end_is_current(w, *e)) else {
            // The receiving process is gone. A restarted one answers a stray packet with a
            // stateless reset, which the sender sees as a reset link.
            if msg.bytes().is_some() && self.is_up(target_node) {
                self.send_on_wire(wire, 1 - dir, Channel::CONTROL, Msg::Down(LinkError::Reset));
            }
            return;
        };
        self.stats.delivered += 1;
        let now = self.now;
        match msg {
            Msg::Data(_) | Msg::Small { .. } => {
                let bytes = msg.bytes().expect("a data message");
                self.digest.record(now.as_micros(), end.node, 0x12);
                self.digest.bytes(bytes);
                self.with_host(end.node, |h| match h {
                    Host::Frames(node) => node.handle_link_data(end.link, channel, bytes, now),
                    Host::Quic(_) => unreachable!("wires exist in frames mode only"),
                });
            }
            Msg::Down(error) => {
                self.digest.record(now.as_micros(), end.node, 0x13);
                self.nodes[end.node as usize].links.unbind(end.link);
                self.side_done(wire, end.node);
                self.with_host(end.node, |h| match h {
                    Host::Frames(node) => node.handle_link_down(end.link, error, now),
                    Host::Quic(_) => unreachable!("wires exist in frames mode only"),
                });
            }
        }
        self.drain(end.node);
    }
}
