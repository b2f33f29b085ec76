//! Node configuration with documented defaults.
//!
//! Every bound the core enforces is a field here. [`Config::default`] gives the documented
//! defaults; [`Config::validate`] rejects nonsense before a node starts.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

use crate::dht::DhtConfig;
use crate::pubsub::PubsubConfig;
use crate::rate::Limit;
use crate::rpc::RpcConfig;
use crate::time::Duration;

/// A realm: a tenant of the mesh, named in reverse-DNS form (`io.example.prod`).
#[derive(Clone, PartialEq, Eq)]
pub struct Realm {
    name: String,
}

/// The longest realm name accepted (a DNS name's limit).
pub const MAX_REALM_LEN: usize = 253;

impl Realm {
    /// A realm named `name`.
    ///
    /// # Errors
    /// [`ConfigError::BadRealm`] unless `name` is 1–253 characters of dot-separated labels made
    /// of ASCII letters, digits, `-` and `_`, no label empty.
    pub fn new(name: &str) -> Result<Self, ConfigError> {
        if is_valid_realm(name) {
            Ok(Realm { name: name.into() })
        } else {
            Err(ConfigError::BadRealm)
        }
    }

    /// The realm's name.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

/// Whether `name` is a well-formed realm name (see [`Realm::new`]).
pub fn is_valid_realm(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_REALM_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl fmt::Debug for Realm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Realm({})", self.name)
    }
}

impl fmt::Display for Realm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A realm's shared API key. It proves membership and never crosses the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Vec<u8>);

impl ApiKey {
    /// A key made of `bytes` (at least 16 bytes: shorter keys are guessable).
    ///
    /// # Errors
    /// [`ConfigError::WeakApiKey`] if `bytes` is shorter than 16 bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() < 16 {
            return Err(ConfigError::WeakApiKey);
        }
        Ok(ApiKey(bytes.into()))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Roles a node offers to others, advertised in the handshake.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Roles(pub u8);

impl Roles {
    /// A well-known seed that others join through.
    pub const BOOTSTRAP: Roles = Roles(1);
    /// Accepts relay circuits for nodes that can't reach each other.
    pub const GATEWAY: Roles = Roles(2);

    /// Whether every role in `other` is in `self`.
    pub fn contains(self, other: Roles) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for Roles {
    type Output = Roles;
    fn bitor(self, other: Roles) -> Roles {
        Roles(self.0 | other.0)
    }
}

/// Configuration of a [`Node`](crate::Node).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The realm this node belongs to; peers of other realms are refused.
    pub realm: Realm,
    /// The realm's API key. `None` makes the realm open (development); with a key, every peer must
    /// prove it knows the key. Default: `None`.
    pub api_key: Option<ApiKey>,
    /// A second key this node accepts from dialers while a realm's key is being rotated: a
    /// proof made with either `api_key` or this one is accepted, and this node proves
    /// `api_key` when it dials. Roll out a new key by giving every node the new one as
    /// `api_key` and the old as `previous_api_key`, then drop the old. Ignored without
    /// `api_key`. Default: `None`.
    pub previous_api_key: Option<ApiKey>,
    /// Addresses this node tells peers it listens on. Adapters fill in the bound address.
    /// At most [`MAX_LISTEN_ADDRS`] are sent.
    pub listen_addrs: Vec<SocketAddr>,
    /// Roles advertised to peers. Default: none.
    pub roles: Roles,
    /// Most peers with a completed handshake. At the limit a new peer takes the place of the
    /// least recently used on-demand link (see [`Config::pool_idle_timeout`]); if there is
    /// none, an inbound peer is refused with reason `capacity` and a DHT request to a new peer
    /// fails. Default: 512.
    pub max_peers: usize,
    /// Links this node opened on its own (for the DHT) are closed after this long without a
    /// DHT frame either way. Links the application opened with `connect` stay until it drops
    /// them. Default: 10 s.
    pub pool_idle_timeout: Duration,
    /// Most links whose handshake is still under way (both directions); further inbound links are
    /// refused at once. Default: 64.
    pub max_pending_handshakes: usize,
    /// Links this node may open on its own (to reach a node by id, such as a contact a DHT
    /// answer named) per second on average; past it, frames for a new node fail at once as if
    /// there were no room. Bounds how fast answers from others can make this node dial.
    /// Default: 50.
    pub dial_rate: u32,
    /// Such links it may open in a burst. Default: 200.
    pub dial_burst: u32,
    /// New inbound links one source address may open: past it, the handshake is refused with
    /// reason `rate_limited` (IPv6 sources are counted by their /64 prefix). Default: 64 a
    /// second, 256 at once, so a host running many nodes still joins quickly.
    pub handshake_limit: Limit,
    /// Failed API-key proofs one source address may make (counted by /64 for IPv6): while its
    /// bucket is empty, its handshakes are refused with `rate_limited` and their proofs are not
    /// looked at. Default: 5 every 60 s.
    pub auth_failure_limit: Limit,
    /// Failed proofs from all sources together, a safety valve above the per-source limit:
    /// while it is spent, sources that have failed before are refused with `rate_limited`;
    /// a source with no failure on record is still heard, so an attacker can't lock the realm
    /// out. Default: 600 every 60 s.
    pub realm_auth_failure_limit: Limit,
    /// Most source addresses whose handshake and failure buckets are kept; past it, buckets
    /// that have refilled are forgotten first, then the one used longest ago. Default: 4096.
    pub max_rate_sources: usize,
    /// How long a handshake may take before the link is closed. Default: 10 s.
    pub handshake_timeout: Duration,
    /// Interval between keep-alive pings to each peer. Default: 5 s.
    pub keepalive_interval: Duration,
    /// A peer heard nothing from for this long is dropped. Default: 30 s.
    pub idle_timeout: Duration,
    /// How long an application ping waits for its pong. Default: 10 s.
    pub ping_timeout: Duration,
    /// Most pings (keep-alive and application) awaiting a pong per peer. Default: 32.
    pub max_pings_in_flight: usize,
    /// Largest frame accepted or sent, in bytes; a larger length prefix closes the link.
    /// Default: 1 MiB.
    pub max_frame_size: u32,
    /// Most bytes queued on one channel of a link that the transport has not taken yet; a link
    /// over it is closed (the peer is not reading control or discovery frames, which are
    /// never held back). Default: 4 MiB.
    pub max_link_send_buffer: usize,
    /// Bytes waiting for the transport on one channel of a link above which data sends on it
    /// are held back ([`SendError::Full`](crate::SendError::Full)) until half of it has
    /// drained: the back-pressure that reaches a sender whose receiver stops reading. With
    /// one frame more, must fit in `max_link_send_buffer`. Default: 1 MiB.
    pub channel_backlog: usize,
    /// Most events queued for the application; the oldest are dropped (and counted) beyond it.
    /// Default: 4096.
    pub max_queued_events: usize,
    /// Most trust-on-first-use pins kept (see [`crate::trust`]). Past it, keys found at new
    /// names are not pinned (and [`TrustEvent::NotPinned`](crate::trust::TrustEvent::NotPinned)
    /// says so); no pin is ever evicted. Default: 4096.
    pub max_pins: usize,
    /// Whether each pin this node makes is published in the DHT (a record signed by this
    /// node, under [`trust::dht_name`](crate::trust::dht_name)), so other members can check a
    /// key against what the realm has seen; at most 64 pins are published, so they never take
    /// many of the DHT's publishing slots. Default: `true`.
    pub publish_pins: bool,
    /// A number that grows from one start of this node's identity to the next: the sequence
    /// numbers of the records it signs start from it, so those of a restarted node replace
    /// its older ones. Adapters use the Unix time in milliseconds at start. Default: 0.
    pub start_epoch: u64,
    /// The DHT's settings (each with its own documented default).
    pub dht: DhtConfig,
    /// Pub/sub's settings (each with its own documented default).
    pub pubsub: PubsubConfig,
    /// RPC's settings (each with its own documented default).
    pub rpc: RpcConfig,
    /// NAT traversal.
    pub nat: crate::nat::NatConfig,
    /// Whether the node runs the test-only echo protocol.
    #[cfg(feature = "test-protocols")]
    pub test_echo: bool,
}

/// Most listen addresses a node advertises or accepts in a handshake.
pub const MAX_LISTEN_ADDRS: usize = 16;

impl Config {
    /// Defaults for a node of `realm`.
    pub fn new(realm: Realm) -> Self {
        Config {
            realm,
            api_key: None,
            previous_api_key: None,
            listen_addrs: Vec::new(),
            roles: Roles::default(),
            max_peers: 512,
            pool_idle_timeout: Duration::from_secs(10),
            max_pending_handshakes: 64,
            dial_rate: 50,
            dial_burst: 200,
            handshake_limit: Limit::per_second(64, 256),
            auth_failure_limit: Limit::per(5, Duration::from_secs(60)),
            realm_auth_failure_limit: Limit::per(600, Duration::from_secs(60)),
            max_rate_sources: 4096,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
            max_pings_in_flight: 32,
            max_frame_size: 1 << 20,
            max_link_send_buffer: 4 << 20,
            channel_backlog: 1 << 20,
            max_queued_events: 4096,
            max_pins: 4096,
            publish_pins: true,
            start_epoch: 0,
            dht: DhtConfig::default(),
            pubsub: PubsubConfig::default(),
            rpc: RpcConfig::default(),
            nat: crate::nat::NatConfig::default(),
            #[cfg(feature = "test-protocols")]
            test_echo: false,
        }
    }

    /// Checks the configuration for values that can't work.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first field that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_peers == 0 {
            return Err(ConfigError::Zero("max_peers"));
        }
        if self.max_pending_handshakes == 0 {
            return Err(ConfigError::Zero("max_pending_handshakes"));
        }
        if self.dial_rate == 0 || self.dial_burst == 0 {
            return Err(ConfigError::Zero("dial_rate and dial_burst"));
        }
        if self.handshake_limit.is_zero() {
            return Err(ConfigError::Zero("handshake_limit"));
        }
        if self.auth_failure_limit.is_zero() {
            return Err(ConfigError::Zero("auth_failure_limit"));
        }
        if self.realm_auth_failure_limit.is_zero() {
            return Err(ConfigError::Zero("realm_auth_failure_limit"));
        }
        if self.max_rate_sources == 0 {
            return Err(ConfigError::Zero("max_rate_sources"));
        }
        if self.max_pings_in_flight == 0 {
            return Err(ConfigError::Zero("max_pings_in_flight"));
        }
        if self.max_queued_events == 0 {
            return Err(ConfigError::Zero("max_queued_events"));
        }
        if self.max_frame_size < 1024 {
            return Err(ConfigError::FrameSizeTooSmall);
        }
        if self.channel_backlog == 0
            || self.channel_backlog + self.max_frame_size as usize > self.max_link_send_buffer
        {
            return Err(ConfigError::ChannelBacklog);
        }
        if self.keepalive_interval == Duration::ZERO || self.keepalive_interval >= self.idle_timeout
        {
            return Err(ConfigError::KeepaliveNotBelowIdle);
        }
        if self.listen_addrs.len() > MAX_LISTEN_ADDRS {
            return Err(ConfigError::TooManyListenAddrs);
        }
        if self.pool_idle_timeout == Duration::ZERO {
            return Err(ConfigError::Zero("pool_idle_timeout"));
        }
        self.dht.validate(self.max_frame_size)?;
        self.pubsub.validate()?;
        self.rpc.validate()?;
        self.nat.validate()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(Realm {
            name: "dev.macula.local".into(),
        })
    }
}

/// A configuration value that can't work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The realm name is not dot-separated labels of letters, digits, `-`, `_` (max 253 chars).
    BadRealm,
    /// The API key is shorter than 16 bytes.
    WeakApiKey,
    /// The named bound is zero.
    Zero(&'static str),
    /// `max_frame_size` is below 1024 bytes.
    FrameSizeTooSmall,
    /// `channel_backlog` is zero, or with `max_frame_size` over `max_link_send_buffer`.
    ChannelBacklog,
    /// `keepalive_interval` must be non-zero and shorter than `idle_timeout`.
    KeepaliveNotBelowIdle,
    /// More than [`MAX_LISTEN_ADDRS`] listen addresses.
    TooManyListenAddrs,
    /// DHT settings that contradict each other; the text says which and what to do.
    Dht(&'static str),
    /// Pub/sub settings that contradict each other; the text says which and what to do.
    Pubsub(&'static str),
    /// RPC settings that contradict each other; the text says which.
    Rpc(&'static str),
    /// NAT traversal settings out of range; the text says which.
    Nat(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadRealm => f.write_str(
                "a realm name is dot-separated labels of ASCII letters, digits, '-' and '_', \
                 at most 253 characters (for example io.example.prod)",
            ),
            ConfigError::WeakApiKey => f.write_str("an API key must be at least 16 bytes long"),
            ConfigError::Zero(field) => write!(f, "config field `{field}` must not be zero"),
            ConfigError::FrameSizeTooSmall => {
                f.write_str("max_frame_size must be at least 1024 bytes")
            }
            ConfigError::ChannelBacklog => f.write_str(
                "channel_backlog must be non-zero, and channel_backlog plus max_frame_size \
                 must not exceed max_link_send_buffer",
            ),
            ConfigError::KeepaliveNotBelowIdle => f.write_str(
                "keepalive_interval must be non-zero and shorter than idle_timeout, \
                 or peers would time out between pings",
            ),
            ConfigError::Dht(why)
            | ConfigError::Pubsub(why)
            | ConfigError::Rpc(why)
            | ConfigError::Nat(why) => f.write_str(why),
            ConfigError::TooManyListenAddrs => {
                write!(
                    f,
                    "at most {MAX_LISTEN_ADDRS} listen addresses can be advertised"
                )
            }
        }
    }
}

impl core::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realm_names_are_checked() {
        assert!(Realm::new("io.example.prod").is_ok());
        assert!(Realm::new("a").is_ok());
        for bad in ["", ".", "a..b", "a.", "sp ace", "ü.x"] {
            assert_eq!(Realm::new(bad), Err(ConfigError::BadRealm), "{bad:?}");
        }
        let long = "a".repeat(254);
        assert!(Realm::new(&long).is_err());
    }

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        let mut c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        c.max_peers = 0;
        assert_eq!(c.validate(), Err(ConfigError::Zero("max_peers")));
        let mut c = Config::default();
        c.keepalive_interval = c.idle_timeout;
        assert_eq!(c.validate(), Err(ConfigError::KeepaliveNotBelowIdle));
        assert_eq!(ApiKey::new(b"short"), Err(ConfigError::WeakApiKey));
        // DHT settings that contradict each other are named too.
        let mut c = Config::default();
        c.dht.republish_interval = c.dht.record_ttl;
        assert!(matches!(c.validate(), Err(ConfigError::Dht(m)) if m.contains("republish")));
        let mut c = Config::default();
        c.dht.request_timeout = c.dht.lookup_timeout;
        assert!(matches!(c.validate(), Err(ConfigError::Dht(m)) if m.contains("request_timeout")));
        let mut c = Config {
            max_frame_size: 4096,
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Dht(m)) if m.contains("max_frame_size")));
        c.dht.max_value_size = 1024;
        assert_eq!(c.validate(), Ok(()), "a smaller value fits");
        let mut c = Config::default();
        c.dht.diversity.per_bucket = 0;
        assert_eq!(
            c.validate(),
            Err(ConfigError::Zero("dht.diversity.per_bucket"))
        );
        assert_eq!(
            alloc::format!("{:?}", ApiKey::new(b"0123456789abcdef").unwrap()),
            "ApiKey(<redacted>)"
        );
    }
}
