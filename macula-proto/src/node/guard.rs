//! Rate limits on inbound handshakes, per source address: new links, failed API-key proofs,
//! and a node-wide safety valve on failures.
//!
//! A source is an IPv4 address, or an IPv6 address's /64 prefix (one host or site usually
//! holds a whole /64, so counting single IPv6 addresses would let it rotate through them).
//! The decision is taken when the dialer's `Connect` arrives, before its proof is looked at:
//! a source over its limits learns nothing about whether its proof was right.

use core::net::{IpAddr, SocketAddr};

use super::link_core::Core;
use crate::config::Config;
use crate::rate::{Buckets, TokenBucket};
use crate::time::Instant;

/// A source address as rate limits count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Source([u8; 16]);

impl Source {
    pub fn of(addr: SocketAddr) -> Source {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let mut key = [0; 16];
        match ip {
            IpAddr::V4(v4) => key[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => {
                key[..8].copy_from_slice(&v6.octets()[..8]);
                key[15] = 6;
            }
        }
        Source(key)
    }
}

/// The buckets, bounded by `Config::max_rate_sources` each.
#[derive(Debug)]
pub(super) struct Guard {
    handshakes: Buckets<Source>,
    failures: Buckets<Source>,
    valve: TokenBucket,
}

impl Guard {
    pub fn new(config: &Config, now: Instant) -> Self {
        Guard {
            handshakes: Buckets::new(config.max_rate_sources),
            failures: Buckets::new(config.max_rate_sources),
            valve: TokenBucket::full(&config.realm_auth_failure_limit, now),
        }
    }

    /// Sources with a bucket of either kind (each table is bounded).
    pub fn sources(&self) -> (usize, usize) {
        (self.handshakes.len(), self.failures.len())
    }
}

impl Core {
    /// Whether `addr`'s source already holds its share of the handshake slots (a quarter of
    /// `max_pending_handshakes`, at least one), so one address can't keep everyone else out
    /// by opening connections and never finishing them.
    pub(super) fn holds_its_share(&self, addr: SocketAddr) -> bool {
        let share = (self.config.max_pending_handshakes / 4).max(1);
        let source = Source::of(addr);
        self.links
            .iter()
            .filter(|(_, l)| {
                matches!(l.state, super::link::LinkState::AwaitingConnect { .. })
                    && Source::of(l.addr) == source
            })
            .count()
            >= share
    }

    /// Counts a new inbound link from `addr`; returns whether it is within the source's
    /// handshake limit.
    pub(super) fn admit_handshake(&mut self, addr: SocketAddr) -> bool {
        let limit = self.config.handshake_limit;
        self.guard
            .handshakes
            .take(Source::of(addr), self.now, &limit)
    }

    /// Whether a proof from `addr` may be looked at now: the source has failures left, and
    /// if the node-wide valve is spent, it has no failure on record, and the failure table
    /// has room (else an attacker with more addresses than it holds could push its own
    /// records out and come back clean).
    pub(super) fn may_check_proof(&self, addr: SocketAddr) -> bool {
        let source = Source::of(addr);
        let (now, config) = (self.now, &self.config);
        let failures = &self.guard.failures;
        let clean = !failures.contains(&source) && failures.len() < config.max_rate_sources;
        failures.has_token(&source, now, &config.auth_failure_limit)
            && (self
                .guard
                .valve
                .has_token(now, &config.realm_auth_failure_limit)
                || clean)
    }

    /// A proof from `addr` was wrong or missing.
    pub(super) fn proof_failed(&mut self, addr: SocketAddr) {
        let (now, config) = (self.now, &self.config);
        self.guard
            .failures
            .take(Source::of(addr), now, &config.auth_failure_limit);
        self.guard.valve.take(now, &config.realm_auth_failure_limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_count_by_their_64_prefix_and_mapped_v4_as_v4() {
        let a: SocketAddr = "[2001:db8:1:2::1]:1".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2:ffff::9]:2".parse().unwrap();
        let c: SocketAddr = "[2001:db8:1:3::1]:1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let v4: SocketAddr = "192.0.2.1:5".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:6".parse().unwrap();
        assert_eq!(Source::of(v4), Source::of(mapped));
        let zeros: SocketAddr = "[::]:1".parse().unwrap();
        let zero4: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert_ne!(Source::of(zeros), Source::of(zero4));
    }
}
