//! One iterative lookup: the candidates it knows, which are being asked, and when it is done.
//!
//! Pure logic. The DHT machine sends the queries this names, reports answers and failures
//! (timeouts, refusals, unreachable nodes) back, and stops the lookup at its deadline.
//!
//! The lookup keeps candidates sorted by distance to the target, at most `3k` of them (farther
//! ones can never matter once `k` closer ones answered). It keeps `α` queries in flight, always
//! asking the closest candidate not yet asked, and is done when the `k` closest candidates that
//! did not fail have all answered: nothing closer can then be learned from anyone it knows.
//! A failed query is replaced by one to the next candidate, which is the per-request retry.
//! A query that has not answered within the stall timeout is *stalled*: the lookup stops
//! counting on it (it no longer holds a place among the `α`, nor keeps the lookup from
//! finishing), but takes its answer if it comes before the lookup is done.

use alloc::vec::Vec;
use core::net::SocketAddr;

use crate::id::{Distance, NodeId};
use crate::wire::KeyBytes;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Fresh,
    Asked,
    /// Asked, and slow to answer: counted as failed until it answers.
    Stalled,
    Answered,
    Failed,
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    id: NodeId,
    addr: SocketAddr,
    distance: Distance,
    state: State,
    /// How many answers led to it: 0 for contacts from our own table.
    depth: u8,
}

/// What a finished lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The closest nodes that answered, closest first (at most k).
    pub closest: Vec<(NodeId, SocketAddr)>,
    /// Sequential hops to the closest node that answered (1: it was in our own table).
    pub hops: u8,
    /// Queries sent.
    pub queries: u32,
}

/// An iterative lookup. See the [module documentation](self).
#[derive(Debug)]
pub struct Lookup {
    own: NodeId,
    target: NodeId,
    k: usize,
    alpha: usize,
    candidates: Vec<Candidate>,
    in_flight: usize,
    queries: u32,
}

impl Lookup {
    /// A lookup by node `own` (never a candidate) of `target`, starting from `seeds` (normally
    /// our own table's closest contacts).
    ///
    /// # Panics
    /// If `k` or `alpha` is zero.
    pub fn new(
        own: NodeId,
        target: KeyBytes,
        k: usize,
        alpha: usize,
        seeds: impl IntoIterator<Item = (NodeId, SocketAddr)>,
    ) -> Self {
        assert!(k > 0 && alpha > 0, "k and alpha are at least 1");
        let mut lookup = Lookup {
            own,
            target: NodeId(target),
            k,
            alpha,
            candidates: Vec::new(),
            in_flight: 0,
            queries: 0,
        };
        lookup.learn(seeds, 0);
        lookup
    }

    /// The target.
    pub fn target(&self) -> KeyBytes {
        self.target.0
    }

    /// The next nodes to ask, marking them asked: as many as keep `α` in flight.
    pub fn next_queries(&mut self) -> Vec<(NodeId, SocketAddr)> {
        let mut out = Vec::new();
        if self.is_done() {
            return out;
        }
        let mut live = 0;
        for c in &mut self.candidates {
            if self.in_flight >= self.alpha || live >= self.k {
                break;
            }
            match c.state {
                State::Failed | State::Stalled => continue,
                State::Fresh => {
                    c.state = State::Asked;
                    self.in_flight += 1;
                    self.queries += 1;
                    out.push((c.id, c.addr));
                }
                State::Asked | State::Answered => {}
            }
            live += 1;
        }
        out
    }

    /// `from` answered with `nodes`. Answers from nodes not asked are ignored.
    pub fn answered(
        &mut self,
        from: &NodeId,
        nodes: impl IntoIterator<Item = (NodeId, SocketAddr)>,
    ) {
        let Some(c) = self
            .candidates
            .iter_mut()
            .find(|c| c.id == *from && matches!(c.state, State::Asked | State::Stalled))
        else {
            return;
        };
        if c.state == State::Asked {
            self.in_flight -= 1;
        }
        c.state = State::Answered;
        let depth = c.depth.saturating_add(1);
        self.learn(nodes, depth);
    }

    /// The query to `from` failed (timeout, refusal, unreachable).
    pub fn failed(&mut self, from: &NodeId) {
        if let Some(c) = self
            .candidates
            .iter_mut()
            .find(|c| c.id == *from && matches!(c.state, State::Asked | State::Stalled))
        {
            if c.state == State::Asked {
                self.in_flight -= 1;
            }
            c.state = State::Failed;
        }
    }

    /// The query to `from` is slow: the lookup goes on without counting on it (its answer is
    /// still taken if it comes).
    pub fn stalled(&mut self, from: &NodeId) {
        if let Some(c) = self
            .candidates
            .iter_mut()
            .find(|c| c.id == *from && c.state == State::Asked)
        {
            c.state = State::Stalled;
            self.in_flight -= 1;
        }
    }

    /// Whether the lookup is done: nothing in flight and the `k` closest candidates that did
    /// not fail have all answered (or there are no candidates left to ask).
    pub fn is_done(&self) -> bool {
        if self.in_flight > 0 {
            return false;
        }
        !self
            .candidates
            .iter()
            .filter(|c| !matches!(c.state, State::Failed | State::Stalled))
            .take(self.k)
            .any(|c| c.state == State::Fresh)
    }

    /// What the lookup found so far (final once [`Lookup::is_done`]).
    pub fn found(&self) -> Found {
        let answered = || {
            self.candidates
                .iter()
                .filter(|c| c.state == State::Answered)
        };
        Found {
            closest: answered().take(self.k).map(|c| (c.id, c.addr)).collect(),
            hops: answered().next().map_or(0, |c| c.depth.saturating_add(1)),
            queries: self.queries,
        }
    }

    fn learn(&mut self, nodes: impl IntoIterator<Item = (NodeId, SocketAddr)>, depth: u8) {
        for (id, addr) in nodes {
            if id == self.own {
                continue;
            }
            let distance = id.distance(&self.target);
            match self
                .candidates
                .binary_search_by(|c| c.distance.cmp(&distance))
            {
                Ok(_) => {} // known already (equal distance means the same id)
                Err(at) => {
                    if at >= 3 * self.k {
                        continue;
                    }
                    self.candidates.insert(
                        at,
                        Candidate {
                            id,
                            addr,
                            distance,
                            state: State::Fresh,
                            depth,
                        },
                    );
                }
            }
        }
        // Farther candidates beyond 3k never matter, unless they are being asked (their answer
        // must still be counted).
        while self.candidates.len() > 3 * self.k {
            match self
                .candidates
                .iter()
                .rposition(|c| !matches!(c.state, State::Asked | State::Stalled))
            {
                Some(at) if at >= 3 * self.k => {
                    self.candidates.remove(at);
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, SocketAddr};

    fn node(n: u8) -> (NodeId, SocketAddr) {
        (
            NodeId([n; 32]),
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), u16::from(n)),
        )
    }

    #[test]
    fn a_stalled_query_frees_its_place_and_no_longer_holds_the_lookup_up() {
        let mut lookup = Lookup::new(node(0).0, [0; 32], 2, 1, [node(1), node(2)]);
        let first = lookup.next_queries();
        assert_eq!(first, [node(1)], "one in flight");
        assert!(lookup.next_queries().is_empty());
        lookup.stalled(&node(1).0);
        assert_eq!(
            lookup.next_queries(),
            [node(2)],
            "the next is asked meanwhile"
        );
        lookup.answered(&node(2).0, []);
        assert!(lookup.is_done(), "done without the stalled one");
        assert_eq!(lookup.found().closest, [node(2)]);
        // Its late answer still counts, and a later failure of it changes nothing.
        lookup.answered(&node(1).0, []);
        assert_eq!(lookup.found().closest, [node(1), node(2)]);
        lookup.failed(&node(1).0);
        assert!(lookup.is_done());
    }
}
