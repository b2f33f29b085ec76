//! The RPC protocol's messages (protocol id 3), on RPC's own channel.
//!
//! A caller sends a provider a [`Call`]; the provider answers it with a [`Reply`] or a
//! [`Fail`], once. Every message names the call by the caller's start epoch and the call's
//! number in that epoch: with the caller's node id (proven by the link) that is the call's
//! *idempotency key*, the same for every attempt of the call, so a provider that receives a
//! call again answers it from what it remembers instead of running it again. A restarted
//! caller has a higher epoch, so no answer meant for its earlier life is taken for one of its
//! new calls. [`RpcMessage::Cancel`] tells a provider the caller no longer waits.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::wire::{bytes, Encode, Message, ProtocolId};

/// The RPC protocol's messages. The variant index is the message kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RpcMessage {
    /// Kind 0. Run a procedure; answered by `Reply` or `Fail`.
    Call(Call),
    /// Kind 1. A call's result.
    Reply(Reply),
    /// Kind 2. Why a call has no result.
    Fail(Fail),
    /// Kind 3. The caller no longer waits for a call.
    Cancel(CallRef),
}

impl Message for RpcMessage {
    const PROTOCOL: ProtocolId = ProtocolId::RPC;
    const KINDS: u32 = 4;
}

/// One attempt of a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Names the call (with the caller): its idempotency key.
    pub call: CallRef,
    /// Every call of this caller's epoch numbered below this one has its outcome: the
    /// provider may forget their results.
    pub settled_below: u64,
    /// Time left until the caller's deadline when the attempt was sent, in microseconds
    /// (relative: the two nodes' clocks are never compared).
    pub remaining_us: u64,
    /// The procedure.
    pub procedure: String,
    /// The argument.
    #[serde(with = "bytes")]
    pub payload: Vec<u8>,
}

/// Names a call: the caller's start epoch and the call's number in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CallRef {
    /// The caller's [`Config::start_epoch`](crate::Config::start_epoch).
    pub epoch: u64,
    /// The call's number, unique within the epoch.
    pub id: u64,
}

/// A call's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The call.
    pub call: CallRef,
    /// What the procedure returned.
    #[serde(with = "bytes")]
    pub payload: Vec<u8>,
}

/// Why a call has no result from this provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fail {
    /// The call.
    pub call: CallRef,
    /// Why.
    pub error: Refusal,
}

/// A provider's reason for not answering a call with a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// This node does not serve the procedure (any more): try another provider.
    NotServed,
    /// The procedure's queue is full, or the caller has as many calls running here as it
    /// may: try another provider.
    Overloaded,
    /// The call's argument or the reply is larger than this node takes.
    TooLarge,
    /// The handler gave up on the call without an answer (it was dropped, or the
    /// procedure was withdrawn while the call waited): try another provider.
    Abandoned,
    /// The handler answered with an application error: final, not tried elsewhere.
    Application(String),
}

/// [`RpcMessage::Call`] as a caller sends it: the same bytes, encoded from the call it
/// keeps rather than from a copy of its procedure and argument.
#[derive(Debug, Serialize)]
pub(crate) enum Outgoing<'a> {
    /// Kind 0, as [`RpcMessage::Call`].
    Call(CallOut<'a>),
}

impl Encode for Outgoing<'_> {
    const PROTOCOL: ProtocolId = ProtocolId::RPC;
}

/// [`Call`]'s fields, in its order, borrowed.
#[derive(Debug, Serialize)]
pub(crate) struct CallOut<'a> {
    pub call: CallRef,
    pub settled_below: u64,
    pub remaining_us: u64,
    pub procedure: &'a str,
    #[serde(with = "bytes")]
    pub payload: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode, Decoder};

    #[test]
    fn a_call_encoded_from_borrowed_fields_is_the_same_frame() {
        let call = Call {
            call: CallRef { epoch: 7, id: 42 },
            settled_below: 40,
            remaining_us: 5_000_000,
            procedure: "math.add".into(),
            payload: alloc::vec![1, 2, 3],
        };
        let owned = encode(&RpcMessage::Call(call.clone()));
        let borrowed = encode(&Outgoing::Call(CallOut {
            call: call.call,
            settled_below: call.settled_below,
            remaining_us: call.remaining_us,
            procedure: &call.procedure,
            payload: &call.payload,
        }));
        assert_eq!(owned, borrowed);
        let mut decoder = Decoder::new(1 << 20);
        decoder.push(&owned);
        let frame = decoder.next_frame().unwrap().unwrap();
        let back: RpcMessage = crate::wire::decode_message(frame).unwrap();
        assert_eq!(back, RpcMessage::Call(call));
    }
}
