//! The DHT's settings, each with its documented default.

use super::table::Diversity;
use crate::config::ConfigError;
use crate::time::Duration;

/// Settings of the DHT, given to [`Dht::new`](super::Dht::new); a node takes them from
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
    /// Most publishers kept under one key. Default: 20.
    pub max_providers_per_key: usize,
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
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            k: 20,
            alpha: 3,
            replacement_cache: 3,
            diversity: Diversity::default(),
            request_timeout: Duration::from_secs(5),
            lookup_timeout: Duration::from_secs(30),
            record_ttl: Duration::from_secs(300),
            republish_interval: Duration::from_secs(240),
            refresh_interval: Duration::from_secs(600),
            max_records: 10_000,
            max_providers_per_key: 20,
            max_value_size: 4096,
            peer_request_rate: 20,
            peer_request_burst: 100,
            max_operations: 256,
            max_published: 1024,
            join: true,
        }
    }
}

impl DhtConfig {
    /// Checks for values that can't work.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] naming the first bound that is zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let counts = [
            (self.k, "dht.k"),
            (self.alpha, "dht.alpha"),
            (self.max_records, "dht.max_records"),
            (self.max_providers_per_key, "dht.max_providers_per_key"),
            (self.max_value_size, "dht.max_value_size"),
            (self.peer_request_rate as usize, "dht.peer_request_rate"),
            (self.peer_request_burst as usize, "dht.peer_request_burst"),
            (self.max_operations, "dht.max_operations"),
            (self.max_published, "dht.max_published"),
        ];
        let times = [
            (self.request_timeout, "dht.request_timeout"),
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
