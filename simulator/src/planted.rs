//! Planted bugs: test-only switches that each break one protocol rule, so that a test can show
//! that a sweep catches the bug and that the replay command it prints reproduces it. They
//! exist only with the `planted-bugs` feature (`--plant NAME`); without it this enum is empty.

use std::fmt;
use std::str::FromStr;

/// One planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Plant {
    /// `connect`: a restarted node forgets to rejoin (it dials nobody).
    #[cfg(feature = "planted-bugs")]
    ForgetsRejoin,
    /// Every node's DHT drops every tenth store acknowledgement
    /// (`DhtConfig::planted_drop_store_acks`).
    #[cfg(feature = "planted-bugs")]
    DropsStoreAcks,
}

impl Plant {
    /// Every planted bug.
    pub const ALL: &'static [Plant] = &[
        #[cfg(feature = "planted-bugs")]
        Plant::ForgetsRejoin,
        #[cfg(feature = "planted-bugs")]
        Plant::DropsStoreAcks,
    ];

    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            #[cfg(feature = "planted-bugs")]
            Plant::ForgetsRejoin => "forgets-rejoin",
            #[cfg(feature = "planted-bugs")]
            Plant::DropsStoreAcks => "drops-store-acks",
        }
    }
}

impl fmt::Display for Plant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Plant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Plant::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Plant::ALL.iter().map(|p| p.as_str()).collect();
                format!("no planted bug '{s}' (one of: {})", names.join(", "))
            })
    }
}
