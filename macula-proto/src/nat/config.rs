//! NAT traversal's settings, each with its documented default.

use crate::config::ConfigError;
use crate::rate::Limit;
use crate::time::Duration;

/// Settings of NAT traversal; a node takes them from [`Config::nat`](crate::Config::nat).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatConfig {
    /// Detect the NAT profile on its own once a suitable observer is a peer, and again every
    /// `refresh_interval`. Without it, detection runs only when asked
    /// ([`Node::nat_detect`](crate::Node::nat_detect)). Default: off in the core (the
    /// `macula node` command turns it on).
    pub detect: bool,
    /// The port of the transport's main UDP socket, as bound (the adapters set it): detection
    /// compares the public port with it to tell a preserved port. Without it, the port of the
    /// first listen address is taken. Default: none.
    pub main_port: Option<u16>,
    /// The port of the transport's auxiliary UDP socket on the node's address, if it has one
    /// (the adapters bind one and set this): as an observer the node answers filtering tests
    /// from it, and detection uses it to watch a fresh mapping being made. Default: none.
    pub aux_port: Option<u16>,
    /// How long a detected profile is trusted; detection runs again after four fifths of it.
    /// Default: 300 s.
    pub profile_ttl: Duration,
    /// How long one step of detection waits for answers before it asks again (three times at
    /// most). Default: 400 ms.
    pub step_timeout: Duration,
    /// Probes answered per source address (a `Probe` from it, or a filtering test asked over
    /// a link); past it they are dropped. Default: 20 a second, 40 at once.
    pub answer_limit: Limit,
    /// Answers this node sends as a helper for other observers, in all. Default: 20 a second,
    /// 40 at once.
    pub help_limit: Limit,
    /// Sources whose answer budgets are tracked at once; a new source takes the place of the
    /// longest idle one, or is refused while all are busy. Default: 1,024.
    pub max_sources: usize,
    /// Act as a gateway: hold reservations for nodes behind NAT and relay circuits to them.
    /// Default: off (`macula node --gateway` turns it on, with the gateway role).
    pub gateway: bool,
    /// As a gateway: nodes holding a reservation at once. Default: 1,024.
    pub max_reservations: usize,
    /// As a gateway: circuits open at once. Default: 512.
    pub max_circuits: usize,
    /// As a gateway: circuits one node may have open through it at once (as opener or
    /// target). Default: 16.
    pub max_circuits_per_peer: usize,
    /// As a gateway: bytes one circuit may carry, both ways together; then it is closed.
    /// Default: 256 MiB.
    pub max_circuit_bytes: u64,
    /// As a gateway: how long one circuit may live; then it is closed. Default: 1 hour.
    pub max_circuit_duration: Duration,
    /// Circuits this node's own links run over at once (each end keeps a small table).
    /// Default: 64.
    pub max_own_circuits: usize,
    /// Gateways (peers with the gateway role) a node that can't be dialed keeps reservations
    /// at, so others reach it through them; 0 keeps none. Default: 2.
    pub reservations: usize,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            detect: false,
            main_port: None,
            aux_port: None,
            profile_ttl: Duration::from_secs(300),
            step_timeout: Duration::from_millis(400),
            answer_limit: Limit::per_second(20, 40),
            help_limit: Limit::per_second(20, 40),
            max_sources: 1_024,
            gateway: false,
            max_reservations: 1_024,
            max_circuits: 512,
            max_circuits_per_peer: 16,
            max_circuit_bytes: 256 << 20,
            max_circuit_duration: Duration::from_secs(3_600),
            max_own_circuits: 64,
            reservations: 2,
        }
    }
}

impl NatConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.profile_ttl < Duration::from_secs(10) {
            return Err(ConfigError::Nat("nat.profile_ttl must be at least 10 s"));
        }
        if self.step_timeout == Duration::ZERO || self.step_timeout > Duration::from_secs(10) {
            return Err(ConfigError::Nat(
                "nat.step_timeout must be between 0 and 10 s",
            ));
        }
        let zero = [
            self.max_sources,
            self.max_reservations,
            self.max_circuits,
            self.max_circuits_per_peer,
            self.max_own_circuits,
        ]
        .contains(&0);
        if self.answer_limit.is_zero() || self.help_limit.is_zero() || zero {
            return Err(ConfigError::Nat("nat limits must not be zero"));
        }
        Ok(())
    }
}
