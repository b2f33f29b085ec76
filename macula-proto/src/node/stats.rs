//! The node's counters.

use crate::wire::RefuseReason;

/// Handshake refusals by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusalCounts {
    /// The realms differed.
    pub wrong_realm: u64,
    /// The API-key proof was missing or wrong.
    pub bad_credentials: u64,
    /// The protocol versions were incompatible.
    pub version: u64,
    /// The listener was at `max_peers`.
    pub capacity: u64,
    /// The id in `Connect` was not the TLS-proven one.
    pub identity_mismatch: u64,
    /// The dialer's source address was over a rate limit (see [`Config::auth_failure_limit`]
    /// and [`Config::handshake_limit`](crate::Config::handshake_limit)).
    ///
    /// [`Config::auth_failure_limit`]: crate::Config::auth_failure_limit
    pub rate_limited: u64,
}

impl RefusalCounts {
    /// The count for one reason.
    pub fn get(&self, reason: RefuseReason) -> u64 {
        match reason {
            RefuseReason::WrongRealm => self.wrong_realm,
            RefuseReason::BadCredentials => self.bad_credentials,
            RefuseReason::Version => self.version,
            RefuseReason::Capacity => self.capacity,
            RefuseReason::IdentityMismatch => self.identity_mismatch,
            RefuseReason::RateLimited => self.rate_limited,
        }
    }

    /// The sum over all reasons.
    pub fn total(&self) -> u64 {
        RefuseReason::ALL.iter().map(|r| self.get(*r)).sum()
    }

    pub(crate) fn bump(&mut self, reason: RefuseReason) {
        let slot = match reason {
            RefuseReason::WrongRealm => &mut self.wrong_realm,
            RefuseReason::BadCredentials => &mut self.bad_credentials,
            RefuseReason::Version => &mut self.version,
            RefuseReason::Capacity => &mut self.capacity,
            RefuseReason::IdentityMismatch => &mut self.identity_mismatch,
            RefuseReason::RateLimited => &mut self.rate_limited,
        };
        *slot += 1;
    }
}

/// Counters and gauges of a [`Node`](crate::Node). Counters only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Gauge: established peers.
    pub peers: usize,
    /// Gauge: links whose handshake is under way.
    pub pending_handshakes: usize,
    /// Gauge: source addresses whose handshake or failure buckets are kept (the larger of the
    /// two tables; each at most [`Config::max_rate_sources`](crate::Config::max_rate_sources)).
    pub rate_sources: usize,
    /// Handshakes completed, both directions.
    pub handshakes_completed: u64,
    /// Keys pinned at a name on first use (see [`crate::trust`]).
    pub pins_made: u64,
    /// Dials refused because another key than the pinned one answered.
    pub fingerprint_mismatches: u64,
    /// New links of a peer from another address while its link was alive (see
    /// [`TrustEvent::IdentityConflict`](crate::trust::TrustEvent::IdentityConflict)).
    pub identity_conflicts: u64,
    /// Outbound handshakes given up because the listener did not prove the realm's key.
    pub listeners_unproven: u64,
    /// Inbound handshakes this node refused, by reason.
    pub refused_by_us: RefusalCounts,
    /// Outbound handshakes the remote refused, by reason.
    pub refused_by_peer: RefusalCounts,
    /// Outbound connection attempts that failed for any reason.
    pub connect_failures: u64,
    /// Inbound links turned away because `max_pending_handshakes` were under way.
    pub handshake_slots_full: u64,
    /// Inbound links that went away before completing the handshake.
    pub handshakes_abandoned: u64,
    /// Handshakes that did not complete within `handshake_timeout`.
    pub handshake_timeouts: u64,
    /// Peers dropped after `idle_timeout` of silence.
    pub idle_timeouts: u64,
    /// Second links to an already-connected peer (one of the two was closed).
    pub duplicate_links: u64,
    /// Frames encoded for sending.
    pub frames_sent: u64,
    /// Frames decoded.
    pub frames_received: u64,
    /// Bytes of frames encoded for sending.
    pub bytes_sent: u64,
    /// Bytes received on links.
    pub bytes_received: u64,
    /// Links closed because their bytes were not valid frames.
    pub malformed_frames: u64,
    /// Links closed because a length prefix exceeded `max_frame_size`.
    pub oversized_frames: u64,
    /// Links closed because a frame was not allowed in their state.
    pub protocol_violations: u64,
    /// Pings sent (keep-alive and application).
    pub pings_sent: u64,
    /// Pongs that matched a ping.
    pub pongs_received: u64,
    /// Pongs that matched no ping (late or forged); ignored.
    pub unmatched_pongs: u64,
    /// Events dropped because the application did not drain `max_queued_events`.
    pub events_dropped: u64,
    /// On-demand links closed after `pool_idle_timeout` without use.
    pub pool_idle_closes: u64,
    /// On-demand links closed to make room for a new peer at `max_peers`.
    pub pool_evictions: u64,
    /// Subsystem frames not sent: no room for another link, no address to dial, too many
    /// held for one dial, or an answer to a peer that had gone. The subsystem was told (a
    /// request among them fails or times out).
    pub frames_undeliverable: u64,
    /// Links to reach a node by id not opened because `dial_rate` was spent (their frames
    /// count in `frames_undeliverable` too).
    pub dials_throttled: u64,
    /// Subsystem frames not sent because the peer does not speak their protocol.
    pub frames_unspoken: u64,
    /// Frames received of a protocol this node does not run or the peer did not offer; they
    /// were skipped.
    pub frames_skipped: u64,
    /// Links closed because a frame named a message kind its protocol does not have.
    pub unknown_kinds: u64,
    /// Data items queued in an inbox for the application.
    pub data_delivered: u64,
    /// Data items an inbox with the `DropNewest` policy dropped because it was full (each
    /// inbox tells with `Event::DataDropped`).
    pub data_dropped: u64,
    /// Times a full inbox paused the channel its data came on.
    pub channels_paused: u64,
    /// Times the transport reported one of this node's channels blocked (more than
    /// `channel_backlog` waiting), so data sends on it were held back.
    pub channels_blocked: u64,
    /// Data sends refused with `SendError::Full`.
    pub sends_held_back: u64,
}
