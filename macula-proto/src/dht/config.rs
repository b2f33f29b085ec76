//! The DHT's settings, each with its documented default.

use super::table::Diversity;
use crate::config::ConfigError;
use crate::time::Duration;

/// Settings of the DHT; a node takes them from
/// [`Config::dht`](crate::Config::dht).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DhtConfig {
    /// Bucket size and replication factor. Default: 20.
    pub k: usize,
    /// Queries in flight per lookup. Default: 3.
    pub alpha: usize,
    /// Verified contacts kept per bucket for when one leaves. Default: 3.
    pub replacement_cache: usize,
    /// Contacts per network in a bucket and in the table. Default: 2 and 10.
    pub diversity: Diversity,
    /// How long one query waits for its answer (including dialing). Default: 5 s.
    pub request_timeout: Duration,
    /// How long a lookup waits on one query before it stops counting on it: the query may
    /// still answer (until `request_timeout`), but the lookup asks the next node meanwhile
    /// and may finish without it. A node that left without a goodbye then costs a lookup
    /// this, not `request_timeout`. Default: 1 s.
    pub stall_timeout: Duration,
    /// How long a whole operation (lookup, put, get) may take. Default: 30 s.
    pub lookup_timeout: Duration,
    /// The longest a stored record lives without being stored again; longer TTLs are capped.
    /// Default: 300 s.
    pub record_ttl: Duration,
    /// How often this node stores its own records again. Default: 240 s.
    pub republish_interval: Duration,
    /// A bucket not used by a lookup for this long is refreshed with a lookup of a random id in
    /// it. Default: 600 s.
    pub refresh_interval: Duration,
    /// Most records the store holds for others. Default: 10,000.
    pub max_records: usize,
    /// Most publishers kept under one key (answers to a get come in pages, so a key of
    /// many providers is found whole). Default: 1,000.
    pub max_providers_per_key: usize,
    /// Most records of one publisher the store keeps for it. Default: 256.
    pub max_records_per_publisher: usize,
    /// Largest value accepted, in bytes. Default: 4096.
    pub max_value_size: usize,
    /// Requests (any DHT request) one peer may send per second on average. Default: 20.
    pub peer_request_rate: u32,
    /// Requests one peer may send in a burst. Default: 100.
    pub peer_request_burst: u32,
    /// Most operations of this node under way at once; more are refused. Default: 256.
    pub max_operations: usize,
    /// Most of this node's own records republished. Default: 1024.
    pub max_published: usize,
    /// Whether the first peer starts the join: a lookup of the own id, then one lookup per
    /// bucket. A node that only answers, or asks now and then, may turn it off; its table
    /// then fills from the peers it meets and its own lookups. Default: on.
    pub join: bool,
    /// **A planted bug, for tests only**: a store this node accepts goes unacknowledged one
    /// time in ten (by its request id), breaking the rule that every request is answered. It
    /// exists so that a test can show the simulator's sweeps catch such a bug (feature
    /// `planted-bugs`, never on in a release build of the tools). Default: off.
    #[cfg(feature = "planted-bugs")]
    pub planted_drop_store_acks: bool,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            k: 20,
            alpha: 3,
            replacement_cache: 3,
            diversity: Diversity::default(),
            request_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(1),
            lookup_timeout: Duration::from_secs(30),
            record_ttl: Duration::from_secs(300),
            republish_interval: Duration::from_secs(240),
            refresh_interval: Duration::from_secs(600),
            max_records: 10_000,
            max_providers_per_key: 1000,
            max_records_per_publisher: 256,
            max_value_size: 4096,
            peer_request_rate: 20,
            peer_request_burst: 100,
            max_operations: 256,
            max_published: 1024,
            #[cfg(feature = "planted-bugs")]
            planted_drop_store_acks: false,
            join: true,
        }
    }
}

impl DhtConfig {
    /// Checks for values that can't work, for a node whose largest frame is
    /// `max_frame_size` bytes.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] naming the first bound that is zero, [`ConfigError::Dht`] for
    /// settings that contradict each other.
    pub fn validate(&self, max_frame_size: u32) -> Result<(), ConfigError> {
        self.validate_bounds()?;
        if self.republish_interval >= self.record_ttl {
            return Err(ConfigError::Dht(
                "dht.republish_interval must be shorter than dht.record_ttl, \
                 or records expire before they are stored again",
            ));
        }
        if self.request_timeout >= self.lookup_timeout {
            return Err(ConfigError::Dht(
                "dht.request_timeout must be shorter than dht.lookup_timeout, \
                 or a lookup ends before its first request times out",
            ));
        }
        if self.stall_timeout > self.request_timeout {
            return Err(ConfigError::Dht(
                "dht.stall_timeout must not be longer than dht.request_timeout",
            ));
        }
        if self.largest_answer() > max_frame_size as usize {
            return Err(ConfigError::Dht(
                "the largest DHT answer (one record of dht.max_value_size and k contacts) \
                 does not fit in max_frame_size: lower dht.max_value_size or dht.k",
            ));
        }
        Ok(())
    }

    /// Bytes of the largest answer: one record of the largest value with every address,
    /// and k contacts.
    pub(crate) fn largest_answer(&self) -> usize {
        let record = self.max_value_size + 16 * 19 + 160;
        record + self.k * (32 + 19 + 2) + 64
    }

    fn validate_bounds(&self) -> Result<(), ConfigError> {
        let counts = [
            (self.k, "dht.k"),
            (self.alpha, "dht.alpha"),
            (self.max_records, "dht.max_records"),
            (self.max_providers_per_key, "dht.max_providers_per_key"),
            (
                self.max_records_per_publisher,
                "dht.max_records_per_publisher",
            ),
            (self.diversity.per_bucket, "dht.diversity.per_bucket"),
            (self.diversity.per_table, "dht.diversity.per_table"),
            (self.max_value_size, "dht.max_value_size"),
            (self.peer_request_rate as usize, "dht.peer_request_rate"),
            (self.peer_request_burst as usize, "dht.peer_request_burst"),
            (self.max_operations, "dht.max_operations"),
            (self.max_published, "dht.max_published"),
        ];
        let times = [
            (self.request_timeout, "dht.request_timeout"),
            (self.stall_timeout, "dht.stall_timeout"),
            (self.lookup_timeout, "dht.lookup_timeout"),
            (self.record_ttl, "dht.record_ttl"),
            (self.republish_interval, "dht.republish_interval"),
            (self.refresh_interval, "dht.refresh_interval"),
        ];
        let zero = counts
            .iter()
            .find(|(v, _)| *v == 0)
            .map(|(_, name)| *name)
            .or_else(|| {
                times
                    .iter()
                    .find(|(v, _)| *v == Duration::ZERO)
                    .map(|(_, name)| *name)
            });
        match zero {
            Some(name) => Err(ConfigError::Zero(name)),
            None => Ok(()),
        }
    }
}
