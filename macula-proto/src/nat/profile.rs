//! What a NAT does to a node's traffic, in the terms of RFC 4787.

use core::fmt;
use core::net::SocketAddr;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a NAT behaves towards remote endpoints: its *mapping* (which public port a packet to a
/// remote leaves from) and its *filtering* (which remotes may send to that port) each take one
/// of these (RFC 4787 §4.1 and §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Behavior {
    /// The same for every remote. As a mapping: one public port for every destination. As a
    /// filter: any remote may send to a mapped port (a "full cone").
    EndpointIndependent,
    /// Depends on the remote's address only. As a mapping: one public port per destination
    /// address. As a filter: remotes at an address the node has sent to.
    AddressDependent,
    /// Depends on the remote's address and port. As a mapping: one public port per
    /// destination address and port (a "symmetric" NAT). As a filter: only the exact
    /// address and port the node has sent to.
    AddressAndPortDependent,
}

impl Behavior {
    /// Every behavior, most open first.
    pub const ALL: [Behavior; 3] = [
        Behavior::EndpointIndependent,
        Behavior::AddressDependent,
        Behavior::AddressAndPortDependent,
    ];

    /// Its name: `endpoint-independent`, `address-dependent` or `address-and-port-dependent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::EndpointIndependent => "endpoint-independent",
            Behavior::AddressDependent => "address-dependent",
            Behavior::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

/// How a NAT picks the public port of a new mapping (RFC 4787 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Allocation {
    /// The node's own port, while it is free.
    Preserving,
    /// The port after the one it gave last (within a small step): the next mapping's port can
    /// be predicted.
    Contiguous,
    /// Any port: nothing can be predicted.
    Random,
}

impl Allocation {
    /// Every allocation, most predictable first.
    pub const ALL: [Allocation; 3] = [
        Allocation::Preserving,
        Allocation::Contiguous,
        Allocation::Random,
    ];

    /// Its name: `preserving`, `contiguous` or `random`.
    pub fn as_str(self) -> &'static str {
        match self {
            Allocation::Preserving => "preserving",
            Allocation::Contiguous => "contiguous",
            Allocation::Random => "random",
        }
    }
}

/// A name that is none of a class's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownClass;

impl fmt::Display for UnknownClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a NAT class name")
    }
}

macro_rules! named {
    ($ty:ty) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownClass;
            fn from_str(s: &str) -> Result<Self, UnknownClass> {
                <$ty>::ALL
                    .into_iter()
                    .find(|c| c.as_str() == s)
                    .ok_or(UnknownClass)
            }
        }
    };
}

named!(Behavior);
named!(Allocation);

/// What detection learned about the NAT in front of a node (or that there is none: a node on
/// the public side has endpoint-independent mapping and filtering, a preserved port, and its
/// public address is its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NatProfile {
    /// How the public port depends on the destination.
    pub mapping: Behavior,
    /// Which remotes may send to a mapped port.
    pub filtering: Behavior,
    /// How new public ports are chosen.
    pub allocation: Allocation,
    /// Whether a packet sent to the node's own public address comes back to it.
    pub hairpin: bool,
    /// The node's address as the rest of the internet sees it (its QUIC socket's mapping).
    pub public: SocketAddr,
    /// For contiguous allocation: the step between consecutive new ports (1 for most NATs).
    pub port_step: u16,
}

impl NatProfile {
    /// The profile of a node on the public side, at `addr`.
    pub fn public(addr: SocketAddr) -> Self {
        NatProfile {
            mapping: Behavior::EndpointIndependent,
            filtering: Behavior::EndpointIndependent,
            allocation: Allocation::Preserving,
            hairpin: true,
            public: addr,
            port_step: 0,
        }
    }

    /// Whether anyone may dial the node at its public address without help: its filter lets
    /// anyone in, and its mapping gives everyone the port detection saw.
    pub fn accepts_unsolicited(&self) -> bool {
        self.mapping == Behavior::EndpointIndependent
            && self.filtering == Behavior::EndpointIndependent
    }

    /// Whether the public port towards a new remote is known in advance (the one detection
    /// saw).
    pub fn predictable_port(&self) -> bool {
        self.mapping == Behavior::EndpointIndependent
    }

    /// Whether the next public ports can be guessed from the last one.
    pub fn predictable_next(&self) -> bool {
        self.allocation == Allocation::Contiguous && self.port_step > 0
    }
}

impl fmt::Display for NatProfile {
    /// The one-line form `macula nat` prints: `mapping=.. filtering=.. allocation=..
    /// hairpin=yes|no public=ip:port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mapping={} filtering={} allocation={} hairpin={} public={}",
            self.mapping,
            self.filtering,
            self.allocation,
            if self.hairpin { "yes" } else { "no" },
            self.public
        )
    }
}
