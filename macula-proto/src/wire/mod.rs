//! The wire format: length-prefixed frames, each naming its protocol and message kind.
//!
//! This module owns the byte layout and nothing else: it never decides what a frame means.
//! A frame on a channel is `len` (unsigned LEB128, at most 5 bytes, canonical), then `len`
//! bytes: the protocol id (LEB128), the message kind (LEB128) and the message's fields in
//! postcard. The [`Decoder`] checks `len` against the configured maximum *before* buffering
//! anything of the body, so a hostile prefix cannot make it allocate, and splits frames off a
//! stream without knowing their protocols: a node skips frames of protocols it does not speak.
//!
//! Each protocol owns its messages (an enum implementing [`Message`]) in its own module: the
//! control protocol's are in [`control`], the DHT's in `dht::messages`. `docs/wire.md`
//! documents every field; the golden vectors in the tests pin them.

mod codec;
mod common;
pub mod control;
#[cfg(test)]
mod tests;

use core::fmt;

use serde::{Deserialize, Serialize};

pub use codec::{
    bytes, decode_message, encode, encode_into, DecodeError, Decoder, Encode, Message,
    MessageError, RawFrame, MAX_PREFIX_LEN,
};
pub use common::{CloseCode, RefuseReason, WireAddr};
pub use control::{Connect, ConnectAck, ConnectError, Control, Ping, ProtocolOffer, Versions};

/// A protocol's id on the wire: the first field of every frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProtocolId(pub u16);

impl ProtocolId {
    /// The handshake and keep-alive, spoken by every node.
    pub const CONTROL: ProtocolId = ProtocolId(0);
    /// The Kademlia DHT.
    pub const DHT: ProtocolId = ProtocolId(1);
    /// Publish/subscribe.
    pub const PUBSUB: ProtocolId = ProtocolId(2);
    /// Remote procedure calls.
    pub const RPC: ProtocolId = ProtocolId(3);
    /// NAT detection and traversal.
    pub const NAT: ProtocolId = ProtocolId(4);
    /// A test-only protocol (echo and bulk transfer), never spoken by a production build.
    pub const TEST_ECHO: ProtocolId = ProtocolId(0x7e);

    /// The channel this protocol's frames travel on: each protocol has its own, so a large
    /// frame of one never holds back another's.
    pub fn channel(self) -> Channel {
        Channel(self.0)
    }
}

impl fmt::Display for ProtocolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProtocolId::CONTROL => f.write_str("control"),
            ProtocolId::DHT => f.write_str("dht"),
            ProtocolId::PUBSUB => f.write_str("pubsub"),
            ProtocolId::RPC => f.write_str("rpc"),
            ProtocolId::NAT => f.write_str("nat"),
            ProtocolId::TEST_ECHO => f.write_str("test-echo"),
            ProtocolId(other) => write!(f, "protocol {other}"),
        }
    }
}

/// One of a link's independent ordered byte streams (a QUIC stream). Channel 0 is the control
/// channel; protocol `p` sends on channel `p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Channel(pub u16);

impl Channel {
    /// The control channel: the handshake and keep-alives.
    pub const CONTROL: Channel = Channel(0);

    /// The protocol whose frames travel on this channel; `None` for the control channel and
    /// for channels that will carry application byte streams.
    pub fn protocol(self) -> Option<ProtocolId> {
        (self != Channel::CONTROL).then_some(ProtocolId(self.0))
    }
}

/// A 256-bit DHT key. Record keys are derived from the realm, a kind and a name
/// (`dht::record_key`); node lookups use a [`NodeId`](crate::NodeId)'s bytes.
pub type KeyBytes = [u8; 32];
