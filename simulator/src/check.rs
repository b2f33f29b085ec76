//! Invariant checkers: first-class code that watches a run and can fail it.
//!
//! The engine feeds every checker the same [`Observation`]s while the run goes on; at the end
//! each gives a [`Verdict`]. Checkers see only observations, never the engine, so a test can feed
//! them a hand-made trace (and must see them fail on a bad one).

use std::collections::BTreeMap;

use macula_proto::{Duration, Event, Instant, LinkId};

use crate::net::NodeIdx;

/// Something that happened in a run, as checkers see it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Observation<'a> {
    /// A node dialed: an answer (`PeerUp` or `ConnectFailed` for `link`) must follow.
    Dial {
        /// The dialer.
        node: NodeIdx,
        /// The link the dial uses.
        link: LinkId,
        /// When.
        at: Instant,
    },
    /// A node emitted an event.
    Event {
        /// The node.
        node: NodeIdx,
        /// When.
        at: Instant,
        /// The event.
        event: &'a Event,
    },
    /// A node's bounded structures after it handled an input.
    Gauges {
        /// The node.
        node: NodeIdx,
        /// When.
        at: Instant,
        /// Established peers, and their configured bound.
        peers: (usize, usize),
        /// Handshakes under way, and their bound.
        pending: (usize, usize),
        /// Queued events, and their bound.
        events: (usize, usize),
        /// Records in the DHT store, and their bound.
        records: (usize, usize),
    },
    /// A node crashed (its state is gone; its pending dials need no answer).
    Crash {
        /// The node.
        node: NodeIdx,
        /// When.
        at: Instant,
    },
    /// A node panicked: always a bug.
    Panic {
        /// The node.
        node: NodeIdx,
        /// When.
        at: Instant,
        /// The panic message.
        message: &'a str,
    },
}

/// Whether an invariant must hold at every moment of a run, faults or not (safety), or only
/// once the faults have stopped and the recovery window has passed (liveness: the run is
/// judged at its end, which the fault plan places after that window).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Holds at every moment: no panic, bounds kept, no misdelivery, no duplicate execution,
    /// every operation answered within its timeout.
    Safety,
    /// Holds once the faults have stopped: nodes rejoined, messages delivered, calls served.
    Liveness,
}

impl Kind {
    /// `safety` or `liveness`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Safety => "safety",
            Kind::Liveness => "liveness",
        }
    }
}

/// A checker's conclusion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The invariant's name.
    pub name: &'static str,
    /// Safety or liveness.
    pub kind: Kind,
    /// Whether it held.
    pub ok: bool,
    /// What was checked, or the first violation.
    pub detail: String,
}

/// An invariant over a run.
pub trait Checker {
    /// The invariant's name, as reported.
    fn name(&self) -> &'static str;
    /// Sees one observation.
    fn observe(&mut self, observation: &Observation<'_>);
    /// The verdict for a run that ended at `end`.
    fn finish(&mut self, end: Instant) -> Verdict;
}

/// Every `Connect` is answered (the dialer sees `PeerUp` or `ConnectFailed`) or the dialer
/// crashed, within `grace` of the dial.
#[derive(Debug)]
pub struct ConnectsAnswered {
    grace: Duration,
    pending: BTreeMap<(NodeIdx, LinkId), Instant>,
    dials: u64,
    answered: u64,
}

impl ConnectsAnswered {
    /// A checker allowing `grace` between a dial and its answer.
    pub fn new(grace: Duration) -> Self {
        ConnectsAnswered {
            grace,
            pending: BTreeMap::new(),
            dials: 0,
            answered: 0,
        }
    }
}

impl Checker for ConnectsAnswered {
    fn name(&self) -> &'static str {
        "connects_answered"
    }

    fn observe(&mut self, o: &Observation<'_>) {
        match o {
            Observation::Dial { node, link, at } => {
                self.dials += 1;
                self.pending.insert((*node, *link), *at);
            }
            Observation::Event { node, event, .. } => {
                let link = match event {
                    Event::PeerUp { link, .. } | Event::ConnectFailed { link, .. } => *link,
                    _ => return,
                };
                if self.pending.remove(&(*node, link)).is_some() {
                    self.answered += 1;
                }
            }
            Observation::Crash { node, .. } | Observation::Panic { node, .. } => {
                let keys: Vec<_> = self
                    .pending
                    .range((*node, LinkId(0))..=(*node, LinkId(u64::MAX)))
                    .map(|(k, _)| *k)
                    .collect();
                for k in keys {
                    self.pending.remove(&k);
                }
            }
            Observation::Gauges { .. } => {}
        }
    }

    fn finish(&mut self, end: Instant) -> Verdict {
        let overdue = self
            .pending
            .iter()
            .filter(|(_, at)| **at + self.grace <= end)
            .map(|((node, link), at)| (*node, *link, *at))
            .next();
        match overdue {
            Some((node, link, at)) => Verdict {
                name: self.name(),
                kind: Kind::Safety,
                ok: false,
                detail: format!(
                    "node {node} dialed on {link:?} at {:.3} s and got no answer within {:.0} s",
                    at.as_micros() as f64 / 1e6,
                    self.grace.as_secs_f64()
                ),
            },
            None => Verdict {
                name: self.name(),
                kind: Kind::Safety,
                ok: true,
                detail: format!(
                    "{} dials, {} answered, {} still within their grace period",
                    self.dials,
                    self.answered,
                    self.pending.len()
                ),
            },
        }
    }
}

/// No node panicked.
#[derive(Debug, Default)]
pub struct NoPanics {
    first: Option<String>,
    count: u64,
}

impl Checker for NoPanics {
    fn name(&self) -> &'static str {
        "no_panics"
    }

    fn observe(&mut self, o: &Observation<'_>) {
        if let Observation::Panic { node, at, message } = o {
            self.count += 1;
            self.first.get_or_insert_with(|| {
                format!(
                    "node {node} panicked at {:.3} s: {message}",
                    at.as_micros() as f64 / 1e6
                )
            });
        }
    }

    fn finish(&mut self, _end: Instant) -> Verdict {
        Verdict {
            name: self.name(),
            kind: Kind::Safety,
            ok: self.first.is_none(),
            detail: match &self.first {
                Some(first) => format!("{} panics; first: {first}", self.count),
                None => "no node panicked".into(),
            },
        }
    }
}

/// Every bounded structure stays within its configured bound, after every input.
#[derive(Debug, Default)]
pub struct WithinBounds {
    checks: u64,
    first: Option<String>,
}

impl Checker for WithinBounds {
    fn name(&self) -> &'static str {
        "within_bounds"
    }

    fn observe(&mut self, o: &Observation<'_>) {
        let Observation::Gauges {
            node,
            at,
            peers,
            pending,
            events,
            records,
        } = o
        else {
            return;
        };
        self.checks += 1;
        if self.first.is_some() {
            return;
        }
        for (what, (value, bound)) in [
            ("peers", peers),
            ("pending handshakes", pending),
            ("queued events", events),
            ("stored DHT records", records),
        ] {
            if value > bound {
                self.first = Some(format!(
                    "node {node} had {value} {what} (bound {bound}) at {:.3} s",
                    at.as_micros() as f64 / 1e6
                ));
                return;
            }
        }
    }

    fn finish(&mut self, _end: Instant) -> Verdict {
        Verdict {
            name: self.name(),
            kind: Kind::Safety,
            ok: self.first.is_none(),
            detail: self.first.clone().unwrap_or_else(|| {
                format!(
                    "{} checks of peers, handshakes, event queues and DHT stores",
                    self.checks
                )
            }),
        }
    }
}

/// The checkers every run gets.
pub fn standard(handshake_timeout: Duration) -> Vec<Box<dyn Checker>> {
    vec![
        Box::new(ConnectsAnswered::new(
            handshake_timeout + Duration::from_secs(5),
        )),
        Box::new(NoPanics::default()),
        Box::new(WithinBounds::default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use macula_proto::NodeId;

    fn t(s: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(s)
    }

    #[test]
    fn an_unanswered_connect_is_caught() {
        let mut c = ConnectsAnswered::new(Duration::from_secs(15));
        c.observe(&Observation::Dial {
            node: 1,
            link: LinkId(7),
            at: t(0),
        });
        c.observe(&Observation::Dial {
            node: 2,
            link: LinkId(1),
            at: t(0),
        });
        let up = Event::PeerUp {
            peer: NodeId([0; 32]),
            link: LinkId(1),
            addr: "198.18.0.1:4433".parse().unwrap(),
            direction: macula_proto::Direction::Outbound,
        };
        c.observe(&Observation::Event {
            node: 2,
            at: t(1),
            event: &up,
        });
        assert!(c.finish(t(10)).ok, "still within grace");
        let v = c.finish(t(60));
        assert!(!v.ok);
        assert!(v.detail.contains("node 1"), "{}", v.detail);
    }

    #[test]
    fn a_crash_excuses_the_dials_of_the_crashed_node() {
        let mut c = ConnectsAnswered::new(Duration::from_secs(15));
        c.observe(&Observation::Dial {
            node: 1,
            link: LinkId(7),
            at: t(0),
        });
        c.observe(&Observation::Crash { node: 1, at: t(2) });
        assert!(c.finish(t(60)).ok);
    }

    #[test]
    fn a_panic_and_an_overflowing_bound_are_caught() {
        let mut p = NoPanics::default();
        assert!(p.finish(t(1)).ok);
        p.observe(&Observation::Panic {
            node: 3,
            at: t(1),
            message: "boom",
        });
        assert!(!p.finish(t(2)).ok);

        let mut b = WithinBounds::default();
        let gauges = |peers| Observation::Gauges {
            node: 4,
            at: t(1),
            peers: (peers, 128),
            pending: (0, 64),
            events: (0, 4096),
            records: (0, 10_000),
        };
        b.observe(&gauges(128));
        assert!(b.finish(t(2)).ok);
        b.observe(&gauges(129));
        let v = b.finish(t(2));
        assert!(!v.ok && v.detail.contains("129 peers"), "{}", v.detail);
    }
}
