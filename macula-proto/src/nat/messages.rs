//! The NAT protocol's messages (protocol id 4), on its own channel of a link.
//!
//! Detection asks an *observer* (a peer reachable at the address it listens on) what it sees
//! and where its auxiliary socket is ([`NatMessage::Observe`]), then asks it for the filtering
//! tests ([`NatMessage::AnswerFrom`]): a [`Probe::Seen`](super::Probe::Seen) sent to the
//! asker's address from the observer's auxiliary port, and one sent by a *helper*, one of the
//! observer's own peers at an address the asker has never sent to ([`NatMessage::Help`]).
//! Every answer goes to the address the link came from, never to one the asker names.

use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::profile::NatProfile;
use crate::id::NodeId;
use crate::wire::{Message, ProtocolId};

/// Most addresses an [`Via::Helper`] request may exclude; a longer list is ignored.
pub const MAX_EXCLUDED: usize = 64;

/// The NAT protocol's messages. The variant index is the message kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NatMessage {
    /// Kind 0. "What do you see, and where is your auxiliary socket?"
    Observe {
        /// Matches the answer.
        id: u64,
    },
    /// Kind 1. The answer to `Observe`.
    Observed {
        /// The request's id.
        id: u64,
        /// The asker's address as the link shows it.
        seen: SocketAddr,
        /// The observer's auxiliary port on its own address, if it has one.
        aux_port: Option<u16>,
        /// Another observer (a peer of this one, reachable where it listens, at another
        /// address than both), for the asker's mapping test.
        second: Option<SocketAddr>,
    },
    /// Kind 2. "Send a `Seen` carrying `nonce` to my address, from where `via` says."
    AnswerFrom {
        /// The nonce to send back.
        nonce: u64,
        /// Where the answer comes from.
        via: Via,
    },
    /// Kind 3. From an observer to a helper: send a `Seen` carrying `nonce` to `to` from
    /// the main socket.
    Help {
        /// The nonce.
        nonce: u64,
        /// The address the observer saw the asker at.
        to: SocketAddr,
    },
    /// Kind 4. To a gateway: keep this node reachable through you (while this link lives).
    Reserve {
        /// Matches the answer.
        id: u64,
    },
    /// Kind 5. The gateway's answer to `Reserve`: `None` if it holds the reservation, or why
    /// not.
    Reserved {
        /// The request's id.
        id: u64,
        /// Why it was refused, if it was.
        refused: Option<RelayRefusal>,
    },
    /// Kind 6. To a gateway: open a circuit to `target`, which holds a reservation there.
    /// `circuit` names the circuit on this link from now on.
    Open {
        /// The circuit's number on this link, chosen by the opener.
        circuit: u64,
        /// The node to reach.
        target: NodeId,
    },
    /// Kind 7. From a gateway to a reserved node: `from` opened a circuit to you, named
    /// `circuit` on this link.
    Incoming {
        /// The circuit's number on this link, chosen by the gateway.
        circuit: u64,
        /// Who opened it.
        from: NodeId,
    },
    /// Kind 8. A packet of the end-to-end connection carried by `circuit` (opaque to the
    /// gateway: QUIC, encrypted between the two ends).
    Data {
        /// The circuit, as named on this link.
        circuit: u64,
        /// The packet.
        #[serde(with = "crate::wire::bytes")]
        packet: Vec<u8>,
    },
    /// Kind 9. The circuit is closed (or was never opened), and why.
    Close {
        /// The circuit, as named on this link.
        circuit: u64,
        /// Why.
        reason: RelayRefusal,
    },
    /// Kind 10. To a peer reached through a relay: "here is my NAT profile; let us try for a
    /// direct link".
    Upgrade {
        /// Matches the answer.
        id: u64,
        /// The sender's profile.
        profile: NatProfile,
    },
    /// Kind 11. The answer to `Upgrade`: the answerer's profile, if it knows it. Both ends
    /// then read the same approach from the decision table.
    UpgradeReply {
        /// The request's id.
        id: u64,
        /// The answerer's profile.
        profile: Option<NatProfile>,
    },
    /// Kind 12. From the dialer of a hole punch to its listener: send `Punch` datagrams to
    /// these addresses now (the dialer's public address, or its predicted next ones); the
    /// dialer dials in about half a round trip.
    Go {
        /// The upgrade's id.
        id: u64,
        /// Where to punch (at most [`MAX_PUNCH_TARGETS`]).
        punch: Vec<SocketAddr>,
    },
    /// Kind 13. "My application wants this link: don't close it for being idle." Sent by a
    /// node that reached the other by its id over a link the other had opened on its own.
    Keep,
}

/// Most addresses one `Go` may ask to punch; a longer list is cut.
pub const MAX_PUNCH_TARGETS: usize = 16;

/// Why a gateway refused or closed a reservation or a circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayRefusal {
    /// The node is not a gateway.
    NotGateway,
    /// The gateway holds as many reservations or circuits as it allows.
    Full,
    /// The opener has as many circuits through this gateway as it allows one node.
    PeerLimit,
    /// The target holds no reservation here (or its link is gone).
    NoReservation,
    /// The circuit carried as many bytes as a circuit may.
    Bytes,
    /// The circuit lived as long as a circuit may.
    Duration,
    /// One end went away or closed it.
    Closed,
}

impl RelayRefusal {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayRefusal::NotGateway => "not_gateway",
            RelayRefusal::Full => "full",
            RelayRefusal::PeerLimit => "peer_limit",
            RelayRefusal::NoReservation => "no_reservation",
            RelayRefusal::Bytes => "bytes_limit",
            RelayRefusal::Duration => "duration_limit",
            RelayRefusal::Closed => "closed",
        }
    }
}

/// Where an observer's filtering answer comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Via {
    /// The observer's auxiliary socket: same address, another port.
    Auxiliary,
    /// A helper at an address not in this list (the addresses the asker has sent to).
    Helper {
        /// Addresses to avoid, at most [`MAX_EXCLUDED`].
        exclude: Vec<IpAddr>,
    },
}

impl Message for NatMessage {
    const PROTOCOL: ProtocolId = ProtocolId::NAT;
    const KINDS: u32 = 14;
}
