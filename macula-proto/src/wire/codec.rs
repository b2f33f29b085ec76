//! Length-prefixed framing, the envelope, and the streaming decoder.
//!
//! A frame is `len` (LEB128, at most five bytes, canonical) followed by `len` bytes of body.
//! The body is the envelope: the protocol id (LEB128, a `u16`), then the message in postcard,
//! which begins with its kind (postcard's variant index, LEB128). The decoder checks only the
//! length and the protocol id; which kinds exist and what their fields are is the protocol's
//! business ([`decode_message`]).

use alloc::vec::Vec;
use core::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ProtocolId;

/// Longest length prefix: a `u32` in LEB128 takes at most five bytes.
pub const MAX_PREFIX_LEN: usize = 5;

/// One protocol's messages: an enum whose variant index is the message kind on the wire.
///
/// Variants are only ever appended, so an older peer knows a prefix of the kinds.
pub trait Message: Serialize + DeserializeOwned {
    /// The protocol these messages belong to.
    const PROTOCOL: ProtocolId;
    /// How many kinds there are: a kind at or above it is unknown to this build.
    const KINDS: u32;
}

/// Something that can be sent as one frame of `PROTOCOL`: every [`Message`], and borrowed
/// forms of a message that encode to the same bytes without copying its fields first (a
/// publisher sends the body it keeps, not a clone of it).
pub trait Encode: Serialize {
    /// The protocol of the frame.
    const PROTOCOL: ProtocolId;
}

impl<M: Message> Encode for M {
    const PROTOCOL: ProtocolId = <M as Message>::PROTOCOL;
}

/// Serde helpers that write a byte string as postcard's bytes (length, then the bytes in one
/// copy) rather than as a sequence of `u8` one element at a time. The two forms are the same
/// bytes on the wire, so a field can switch freely; this one is many times faster for a
/// payload of any size.
pub mod bytes {
    use alloc::vec::Vec;
    use core::fmt;

    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::Serializer;

    /// Writes `bytes` (for `#[serde(with = "bytes")]` on a `Vec<u8>` or `&[u8]` field).
    ///
    /// # Errors
    /// The serializer's, if it cannot write a byte string.
    pub fn serialize<S: Serializer, B: AsRef<[u8]> + ?Sized>(
        bytes: &B,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes.as_ref())
    }

    /// Reads a byte string into a `Vec<u8>`.
    ///
    /// # Errors
    /// The deserializer's, if the input holds no byte string there.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(ByteBuf)
    }

    struct ByteBuf;

    impl<'de> Visitor<'de> for ByteBuf {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        // Formats without a byte string (not postcard) hand over a sequence.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

/// Why a byte stream could not be split into frames. After an error the decoder stays failed:
/// the stream is out of step and the link must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix announced `len` bytes, more than the maximum frame size.
    FrameTooLarge {
        /// The announced length.
        len: u64,
        /// The configured maximum.
        max: u32,
    },
    /// The length prefix is not canonical LEB128 or does not fit in 32 bits.
    BadPrefix,
    /// The body does not start with a well-formed protocol id and message kind.
    BadFrame,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes announced, the maximum is {max}")
            }
            DecodeError::BadPrefix => f.write_str("malformed frame length prefix"),
            DecodeError::BadFrame => f.write_str("malformed frame envelope"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a frame of a known protocol could not be read as one of its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// The kind is not one this build knows for the protocol (close code `unknown_kind`).
    UnknownKind(u32),
    /// The fields do not decode, or bytes are left over (close code `malformed_frame`).
    Malformed,
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::UnknownKind(kind) => write!(f, "unknown message kind {kind}"),
            MessageError::Malformed => f.write_str("malformed message"),
        }
    }
}

impl core::error::Error for MessageError {}

/// A frame split off the stream, not yet read as a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The protocol it belongs to.
    pub protocol: ProtocolId,
    /// The message: its kind (LEB128) and then its fields.
    pub message: &'a [u8],
}

impl RawFrame<'_> {
    /// The message kind.
    ///
    /// # Panics
    /// If `message` does not start with a kind that fits in 32 bits: the decoder checks this
    /// for every frame it returns, so only a frame built by hand can fail it.
    pub fn kind(&self) -> u32 {
        read_varint(self.message, 5)
            .and_then(|(kind, _)| u32::try_from(kind).ok())
            .expect("the decoder checked the kind")
    }
}

/// Appends `message`, length prefix and protocol id first, to `out`.
///
/// # Panics
/// Never for the crate's messages: encoding into a `Vec` cannot fail (it grows, and every
/// field's size is known).
pub fn encode_into<M: Encode>(message: &M, out: &mut Vec<u8>) {
    let body = (M::PROTOCOL.0, message);
    // Small frames (pings, acks, most control traffic) are serialized on the stack, so the
    // prefix can be written first without a second pass or a move.
    let mut small = [0u8; 256];
    if let Ok(body) = postcard::to_slice(&body, &mut small) {
        let mut prefix = [0u8; MAX_PREFIX_LEN];
        let prefix_len = write_prefix(body.len() as u32, &mut prefix);
        out.reserve(prefix_len + body.len());
        out.extend_from_slice(&prefix[..prefix_len]);
        out.extend_from_slice(body);
        return;
    }
    let start = out.len();
    // Larger frames: reserve the longest prefix, write the body after it, then move the body
    // back to sit right after the real prefix.
    out.extend_from_slice(&[0; MAX_PREFIX_LEN]);
    let body_start = out.len();
    let written = postcard::to_extend(&body, core::mem::take(out))
        .expect("encoding into a Vec cannot fail: the writer grows and every field is sized");
    *out = written;
    let body_len = out.len() - body_start;
    let mut prefix = [0u8; MAX_PREFIX_LEN];
    let prefix_len = write_prefix(body_len as u32, &mut prefix);
    out.copy_within(body_start.., start + prefix_len);
    out.truncate(start + prefix_len + body_len);
    out[start..start + prefix_len].copy_from_slice(&prefix[..prefix_len]);
}

/// `message`, length prefix first, as a new buffer.
pub fn encode<M: Encode>(message: &M) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    encode_into(message, &mut out);
    out
}

/// Reads a frame of protocol `M::PROTOCOL` as one of its messages.
///
/// # Errors
/// [`MessageError::UnknownKind`] for a kind past `M::KINDS`; [`MessageError::Malformed`] if
/// the fields do not decode exactly.
pub fn decode_message<M: Message>(frame: RawFrame<'_>) -> Result<M, MessageError> {
    debug_assert_eq!(frame.protocol, <M as Message>::PROTOCOL);
    let kind = frame.kind();
    if kind >= M::KINDS {
        return Err(MessageError::UnknownKind(kind));
    }
    match postcard::take_from_bytes::<M>(frame.message) {
        Ok((message, [])) => Ok(message),
        _ => Err(MessageError::Malformed),
    }
}

fn write_prefix(mut value: u32, out: &mut [u8; MAX_PREFIX_LEN]) -> usize {
    let mut i = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

/// Reads a canonical LEB128 value of at most `max_len` bytes from the start of `bytes`:
/// `None` if it is cut short, overlong or not canonical; else the value and its length.
fn read_varint(bytes: &[u8], max_len: usize) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().take(max_len).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // Canonical: no redundant trailing zero group.
            return (i == 0 || byte != 0).then_some((value, i + 1));
        }
    }
    None
}

/// Reads a prefix from the start of `bytes`: `Ok(None)` if more bytes are needed, else the
/// length and the prefix's size.
fn read_prefix(bytes: &[u8]) -> Result<Option<(u64, usize)>, DecodeError> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().take(MAX_PREFIX_LEN).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // Canonical: no redundant trailing zero groups, and the value fits in a u32.
            if (i > 0 && byte == 0) || value > u64::from(u32::MAX) {
                return Err(DecodeError::BadPrefix);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= MAX_PREFIX_LEN {
        Err(DecodeError::BadPrefix)
    } else {
        Ok(None)
    }
}

/// Splits a frame's body into its protocol id and its message, checking the kind is readable.
fn split_body(body: &[u8]) -> Result<RawFrame<'_>, DecodeError> {
    let (protocol, used) = read_varint(body, 3).ok_or(DecodeError::BadFrame)?;
    let protocol = u16::try_from(protocol).map_err(|_| DecodeError::BadFrame)?;
    let message = &body[used..];
    match read_varint(message, 5) {
        Some((kind, _)) if kind <= u64::from(u32::MAX) => Ok(RawFrame {
            protocol: ProtocolId(protocol),
            message,
        }),
        _ => Err(DecodeError::BadFrame),
    }
}

/// Buffer capacity a [`Decoder`] keeps once it has read everything it buffered; a larger one
/// (left by a large frame that arrived in pieces) is freed.
const RETAINED_BUFFER: usize = 4096;

/// Reassembles frames from a byte stream cut into chunks of any size.
///
/// Feed chunks with [`Decoder::push`] and take frames with [`Decoder::next_frame`] until it
/// returns `Ok(None)`, or hand each chunk to [`Decoder::next_frame_from`]. The buffer never
/// holds more than one partial frame (at most the maximum frame size plus the prefix) beyond
/// the chunk last pushed; once it has all been read, a large buffer is freed.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    start: usize,
    max_frame_size: u32,
    failed: Option<DecodeError>,
}

impl Decoder {
    /// A decoder refusing frames longer than `max_frame_size` bytes.
    pub fn new(max_frame_size: u32) -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            max_frame_size,
            failed: None,
        }
    }

    /// Appends a chunk of the stream. Once the decoder has failed, chunks are dropped.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 4096 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The largest frame it accepts.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// The buffer's capacity, for tests of what it keeps.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// A [`DecodeError`] if the stream is malformed; every later call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame<'_>>, DecodeError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        if self.start == self.buf.len() && self.buf.capacity() > RETAINED_BUFFER {
            // Everything buffered is read: a large buffer is given back rather than kept for
            // the link's life (there is one per channel, on every link of a node).
            self.buf = Vec::new();
            self.start = 0;
        }
        let (body_at, len) = match frame_bounds(&self.buf[self.start..], self.max_frame_size) {
            Ok(Some((prefix_len, len))) => (self.start + prefix_len, len),
            Ok(None) => return Ok(None),
            Err(err) => return Err(self.fail(err)),
        };
        if let Err(err) = split_body(&self.buf[body_at..body_at + len]) {
            return Err(self.fail(err));
        }
        self.start = body_at + len;
        Ok(split_body(&self.buf[body_at..body_at + len]).ok())
    }

    /// The next complete frame from what is buffered followed by `input`, taking from `input`
    /// only what it uses. While nothing is buffered, frames are read straight from `input`,
    /// never copied; only a partial frame at its end is buffered. The frames and errors are
    /// those of [`Decoder::push`] of `input` followed by [`Decoder::next_frame`] calls.
    ///
    /// # Errors
    /// As [`Decoder::next_frame`]; the rest of `input` is then dropped.
    pub fn next_frame_from<'s, 'i: 's>(
        &'s mut self,
        input: &mut &'i [u8],
    ) -> Result<Option<RawFrame<'s>>, DecodeError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        if self.buffered() == 0 && !input.is_empty() {
            let whole: &'i [u8] = input;
            match decode_one(whole, self.max_frame_size) {
                Ok(Some((frame, used))) => {
                    *input = &whole[used..];
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(err) => {
                    *input = &[];
                    return Err(self.fail(err));
                }
            }
        }
        if !input.is_empty() {
            self.push(input);
            *input = &[];
        }
        self.next_frame()
    }

    fn fail(&mut self, err: DecodeError) -> DecodeError {
        self.failed = Some(err);
        // Release the buffer: a failed stream is never read again.
        self.buf = Vec::new();
        self.start = 0;
        err
    }
}

/// Where the frame at the start of `pending` is: its prefix's length and its body's, `None` if
/// it is not all there yet.
fn frame_bounds(
    pending: &[u8],
    max_frame_size: u32,
) -> Result<Option<(usize, usize)>, DecodeError> {
    let Some((len, prefix_len)) = read_prefix(pending)? else {
        return Ok(None);
    };
    if len > u64::from(max_frame_size) {
        return Err(DecodeError::FrameTooLarge {
            len,
            max: max_frame_size,
        });
    }
    let len = len as usize;
    Ok((pending.len() >= prefix_len + len).then_some((prefix_len, len)))
}

/// The frame at the start of `pending` and the bytes it took, `None` if it is not all there.
fn decode_one(
    pending: &[u8],
    max_frame_size: u32,
) -> Result<Option<(RawFrame<'_>, usize)>, DecodeError> {
    let Some((prefix_len, len)) = frame_bounds(pending, max_frame_size)? else {
        return Ok(None);
    };
    let frame = split_body(&pending[prefix_len..prefix_len + len])?;
    Ok(Some((frame, prefix_len + len)))
}
