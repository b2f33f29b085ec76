//! The wire format: [`Frame`]s encoded with postcard behind a varint length prefix.
//!
//! This module owns the byte layout and nothing else: it never decides what a frame means.
//! A frame on a stream is `len` (unsigned LEB128, at most 5 bytes, canonical) followed by `len`
//! bytes of postcard-encoded [`Frame`]. The [`Decoder`] checks `len` against the configured
//! maximum *before* buffering anything of the body, so a hostile prefix cannot make it allocate.
//! `docs/wire.md` documents every field; the golden vectors in this module's tests pin it.

mod codec;
mod frame;

pub use codec::{encode, encode_into, DecodeError, Decoder, MAX_PREFIX_LEN};
pub use frame::{
    Ack, CloseCode, Connect, ConnectAck, ConnectError, DhtRefusal, FindNode, FindValue, Frame,
    KeyBytes, Nodes, Ping, Records, RefuseReason, Refused, Store, WireAddr, WireContact,
    WireRecord, Withdraw, PROTOCOL_VERSION,
};
