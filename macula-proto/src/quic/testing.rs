//! An in-memory network of [`Endpoint`]s: datagrams are handed from one endpoint to another with a
//! fixed one-way delay, and time jumps from deadline to deadline. No sockets, no sleeping. Used by
//! the unit tests and the benchmarks; the simulator (`macula-sim`) is the full-featured version.

use alloc::vec;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddr};
use std::time::Instant as StdInstant;

use super::{Datagram, Endpoint, EndpointConfig};
use crate::node::Event;
use crate::time::{Duration, Instant};
use crate::{Config, Identity};

/// The one-way delay of every datagram.
pub const ONE_WAY: Duration = Duration::from_micros(500);

/// The address of endpoint `i`.
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(127, 0, 0, 1).into(), 20_000 + i as u16)
}

/// Endpoints joined by perfect links.
#[derive(Debug)]
pub struct MemoryNet {
    /// The current time.
    pub now: Instant,
    /// The endpoints; endpoint `i` is at [`addr`]`(i)`.
    pub eps: Vec<Endpoint>,
    in_flight: Vec<(Instant, usize, usize, Datagram)>,
    /// Every event each endpoint emitted.
    pub events: Vec<Vec<Event>>,
    /// Endpoints whose datagrams are dropped (a peer gone silent).
    pub muted: Vec<bool>,
    /// FNV-1a over every delivered datagram (time, endpoints, bytes): equal across runs exactly
    /// when the runs sent the same bytes at the same times.
    pub trace: u64,
}

impl MemoryNet {
    /// One endpoint per configuration, with identity and seed `i` and seeded QUIC/TLS
    /// randomness, so runs repeat exactly.
    ///
    /// # Panics
    /// If a configuration is invalid.
    pub fn new(configs: Vec<Config>) -> Self {
        Self::build(configs, true)
    }

    /// As [`MemoryNet::new`], but with operating-system randomness for QUIC and TLS, as in
    /// production (for benchmarks).
    ///
    /// # Panics
    /// If a configuration is invalid.
    pub fn with_os_randomness(configs: Vec<Config>) -> Self {
        Self::build(configs, false)
    }

    fn build(configs: Vec<Config>, seeded: bool) -> Self {
        let epoch = StdInstant::now();
        let eps: Vec<Endpoint> = configs
            .into_iter()
            .enumerate()
            .map(|(i, mut node)| {
                node.listen_addrs = vec![addr(i)];
                let mut cfg =
                    EndpointConfig::new(node, Identity::from_seed(i as u64), i as u64, epoch);
                cfg.seeded_crypto = seeded;
                Endpoint::new(cfg, Instant::ZERO).expect("test configurations are valid")
            })
            .collect();
        let n = eps.len();
        MemoryNet {
            now: Instant::ZERO,
            eps,
            in_flight: Vec::new(),
            events: vec![Vec::new(); n],
            trace: 0xcbf2_9ce4_8422_2325,
            muted: vec![false; n],
        }
    }

    /// From now on, drops everything endpoint `i` sends.
    pub fn mute(&mut self, i: usize) {
        self.muted[i] = true;
    }

    /// Takes endpoint `i`'s datagrams onto the wire and its events into [`MemoryNet::events`].
    pub fn drain(&mut self, i: usize) {
        while let Some(d) = self.eps[i].poll_transmit() {
            if self.muted[i] {
                continue;
            }
            if let Some(j) = (0..self.eps.len()).find(|j| addr(*j) == d.destination) {
                for segment in d.segments() {
                    let single = Datagram {
                        contents: segment.to_vec(),
                        segment_size: None,
                        ..d.clone()
                    };
                    self.in_flight.push((self.now + ONE_WAY, i, j, single));
                }
            }
        }
        while let Some(e) = self.eps[i].poll_event() {
            self.events[i].push(e);
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until, |_| false);
    }

    /// Runs until `done` holds or virtual time reaches `until`; returns whether `done` held.
    pub fn run_until(&mut self, until: Instant, mut done: impl FnMut(&Self) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            let next_dgram = self.in_flight.iter().map(|x| x.0).min();
            let next_timer = self.eps.iter().filter_map(|e| e.poll_timeout()).min();
            let Some(next) = [next_dgram, next_timer].into_iter().flatten().min() else {
                break;
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            let (due, rest): (Vec<_>, Vec<_>) = core::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|x| x.0 <= now);
            self.in_flight = rest;
            for (_, from, to, d) in due {
                let header = [now.as_micros(), from as u64, to as u64];
                for byte in header
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .chain(d.contents.iter().copied())
                {
                    self.trace = (self.trace ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
                }
                self.eps[to].handle_datagram(addr(from), d.ecn, &d.contents, now);
                self.drain(to);
            }
            for i in 0..self.eps.len() {
                if self.eps[i].poll_timeout().is_some_and(|t| t <= now) {
                    self.eps[i].handle_timeout(now);
                }
                self.drain(i);
            }
        }
        self.now = self.now.max(until);
        done(self)
    }
}
