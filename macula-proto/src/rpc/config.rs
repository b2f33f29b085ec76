//! RPC's settings, each with its documented default.

use crate::config::ConfigError;
use crate::time::Duration;

/// Settings of RPC; a node takes them from [`Config::rpc`](crate::Config::rpc).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RpcConfig {
    /// Largest argument or reply, in bytes, with the procedure's name. A larger call is
    /// refused with `CallError::TooLarge`; a larger call from a peer is answered
    /// `TooLarge`. A node takes at most half of `max_frame_size`. Default: 512 KiB.
    pub max_payload: usize,
    /// A call's deadline unless it names its own. Default: 5 s.
    pub timeout: Duration,
    /// Longest deadline a call may have; a longer one is cut to it (on both sides).
    /// Default: 60 s.
    pub max_deadline: Duration,
    /// Providers a call is tried on, unless it says otherwise (1 to 8). Default: 3.
    pub attempts: u8,
    /// Calls this node has in flight at once (waiting for discovery, for credit, or for an
    /// answer); past it a call is refused with `CallError::Full` until one finishes (the
    /// adapters wait instead). Default: 1,024.
    pub max_calls: usize,
    /// Attempts in flight to one provider at once: a call that would go past it goes to
    /// another provider, or waits for one to finish. A provider refuses a caller with more
    /// than this many calls running on it (`Overloaded`). Default: 256.
    pub max_calls_per_peer: usize,
    /// Procedures this node serves at once. Default: 256.
    pub max_registrations: usize,
    /// Calls a registration holds, taken or not, until they are answered, unless it says
    /// otherwise; past it a call is answered `Overloaded`. Default: 256.
    pub queue: usize,
    /// Calls whose outcome a provider remembers (running, or answered and within their
    /// deadline), so that a call received again is not run again; past it a call is answered
    /// `Overloaded`. Default: 65,536.
    pub max_remembered: usize,
    /// Bytes of the replies remembered for those calls. Default: 32 MiB.
    pub max_remembered_bytes: usize,
    /// How long past a call's deadline its outcome is remembered. Default: 1 s.
    pub remember_slack: Duration,
    /// Refusals (`Fail` answers for calls a node does not serve or has no room for) and
    /// cancellations a node takes from one peer a second; past it they are dropped.
    /// Default: 200.
    pub control_rate: u32,
    /// How many of those one peer may send at once after a quiet spell. Default: 400.
    pub control_burst: u32,
    /// How long a procedure's providers, once found, are used before they are looked up
    /// again. Default: 60 s.
    pub fresh_for: Duration,
    /// Least time between two lookups of one procedure. Default: 1 s.
    pub lookup_interval: Duration,
    /// How long a provider that failed a call (no answer in time, link lost) is left out of
    /// what a lookup finds, unless a link to it comes up or it answers. Default: 30 s.
    pub quarantine: Duration,
    /// Procedures whose providers are remembered. Default: 1,024.
    pub max_procedures: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            max_payload: 512 * 1024,
            timeout: Duration::from_secs(5),
            max_deadline: Duration::from_secs(60),
            attempts: 3,
            max_calls: 1024,
            max_calls_per_peer: 256,
            max_registrations: 256,
            queue: 256,
            max_remembered: 65_536,
            max_remembered_bytes: 32 << 20,
            remember_slack: Duration::from_secs(1),
            control_rate: 200,
            control_burst: 400,
            fresh_for: Duration::from_secs(60),
            lookup_interval: Duration::from_secs(1),
            quarantine: Duration::from_secs(30),
            max_procedures: 1024,
        }
    }
}

/// Most attempts a call may make.
pub const MAX_ATTEMPTS: u8 = 8;

impl RpcConfig {
    /// Checks for values that can't work.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] naming the first bound that is zero, [`ConfigError::Rpc`] for
    /// settings that contradict each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let counts = [
            (self.max_payload, "rpc.max_payload"),
            (usize::from(self.attempts), "rpc.attempts"),
            (self.max_calls, "rpc.max_calls"),
            (self.max_calls_per_peer, "rpc.max_calls_per_peer"),
            (self.max_registrations, "rpc.max_registrations"),
            (self.queue, "rpc.queue"),
            (self.max_remembered, "rpc.max_remembered"),
            (self.max_remembered_bytes, "rpc.max_remembered_bytes"),
            (self.control_rate as usize, "rpc.control_rate"),
            (self.control_burst as usize, "rpc.control_burst"),
            (self.max_procedures, "rpc.max_procedures"),
        ];
        let times = [
            (self.timeout, "rpc.timeout"),
            (self.max_deadline, "rpc.max_deadline"),
            (self.fresh_for, "rpc.fresh_for"),
        ];
        if let Some((_, name)) = counts.iter().find(|(v, _)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        if let Some((_, name)) = times.iter().find(|(v, _)| *v == Duration::ZERO) {
            return Err(ConfigError::Zero(name));
        }
        if self.attempts > MAX_ATTEMPTS {
            return Err(ConfigError::Rpc("rpc.attempts must be between 1 and 8"));
        }
        if self.timeout > self.max_deadline {
            return Err(ConfigError::Rpc(
                "rpc.timeout must not be longer than rpc.max_deadline",
            ));
        }
        if self.queue >= crate::node::MAX_INBOX_CAPACITY {
            return Err(ConfigError::Rpc(
                "rpc.queue must be smaller than an inbox may be (65,536)",
            ));
        }
        Ok(())
    }
}
