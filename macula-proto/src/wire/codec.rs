//! Length-prefixed framing and the streaming decoder.

use alloc::vec::Vec;
use core::fmt;

use super::Frame;

/// Longest length prefix: a `u32` in LEB128 takes at most five bytes.
pub const MAX_PREFIX_LEN: usize = 5;

/// Why a byte stream could not be decoded. After an error the decoder stays failed: the stream
/// is out of step and the link must be closed.
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
    /// The body is not a valid postcard `Frame`, or has bytes left over.
    BadFrame,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes announced, the maximum is {max}")
            }
            DecodeError::BadPrefix => f.write_str("malformed frame length prefix"),
            DecodeError::BadFrame => f.write_str("malformed frame body"),
        }
    }
}

/// Appends `frame`, length prefix first, to `out`.
pub fn encode_into(frame: &Frame, out: &mut Vec<u8>) {
    // Small frames (pings, acks, most control traffic) are serialized on the stack, so the
    // prefix can be written first without a second pass or a move.
    let mut small = [0u8; 256];
    if let Ok(body) = postcard::to_slice(frame, &mut small) {
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
    let written = postcard::to_extend(frame, core::mem::take(out))
        .expect("encoding into a Vec cannot fail: the writer grows and every field is sized");
    *out = written;
    let body_len = out.len() - body_start;
    let mut prefix = [0u8; MAX_PREFIX_LEN];
    let prefix_len = write_prefix(body_len as u32, &mut prefix);
    out.copy_within(body_start.., start + prefix_len);
    out.truncate(start + prefix_len + body_len);
    out[start..start + prefix_len].copy_from_slice(&prefix[..prefix_len]);
}

/// `frame`, length prefix first, as a new buffer.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    encode_into(frame, &mut out);
    out
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

/// Reassembles frames from a byte stream cut into chunks of any size.
///
/// Feed chunks with [`Decoder::push`] and take frames with [`Decoder::next_frame`] until it
/// returns `Ok(None)`. The buffer never holds more than one partial frame (at most the maximum
/// frame size plus the prefix) beyond the chunk last pushed.
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

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// A [`DecodeError`] if the stream is malformed; every later call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        let result = self.try_next();
        if let Err(err) = result {
            self.failed = Some(err);
            // Release the buffer: a failed stream is never read again.
            self.buf = Vec::new();
            self.start = 0;
        }
        result
    }

    /// The next complete frame from what is buffered followed by `input`, taking from `input`
    /// only what it uses. While nothing is buffered, frames are decoded straight from `input`,
    /// never copied; only a partial frame at its end is buffered. The frames and errors are
    /// those of [`Decoder::push`] of `input` followed by [`Decoder::next_frame`] calls.
    ///
    /// # Errors
    /// As [`Decoder::next_frame`]; the rest of `input` is then dropped.
    pub fn next_frame_from(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, DecodeError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        if self.buffered() == 0 && !input.is_empty() {
            match decode_one(input, self.max_frame_size) {
                Ok(Some((frame, used))) => {
                    *input = &input[used..];
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(err) => {
                    *input = &[];
                    self.failed = Some(err);
                    self.buf = Vec::new();
                    self.start = 0;
                    return Err(err);
                }
            }
        }
        if !input.is_empty() {
            self.push(input);
            *input = &[];
        }
        self.next_frame()
    }

    fn try_next(&mut self) -> Result<Option<Frame>, DecodeError> {
        match decode_one(&self.buf[self.start..], self.max_frame_size)? {
            Some((frame, used)) => {
                self.start += used;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }
}

/// The frame at the start of `pending` and the bytes it took, `None` if it is not all there.
fn decode_one(pending: &[u8], max_frame_size: u32) -> Result<Option<(Frame, usize)>, DecodeError> {
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
    let Some(body) = pending.get(prefix_len..prefix_len + len) else {
        return Ok(None);
    };
    let (frame, rest) =
        postcard::take_from_bytes::<Frame>(body).map_err(|_| DecodeError::BadFrame)?;
    if !rest.is_empty() {
        return Err(DecodeError::BadFrame);
    }
    Ok(Some((frame, prefix_len + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{
        Ack, Connect, ConnectAck, ConnectError, DhtRefusal, FindNode, FindValue, Nodes, Ping,
        Records, RefuseReason, Refused, Store, WireAddr, WireContact, WireRecord, Withdraw,
    };
    use crate::NodeId;
    use alloc::string::String;
    use alloc::vec;
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| alloc::format!("{b:02x}")).collect()
    }

    fn sample_frames() -> Vec<Frame> {
        vec![
            Frame::Connect(Connect {
                version: 1,
                node_id: NodeId([0xab; 32]),
                realm: "io.example".into(),
                auth: Some([0x11; 32]),
                listen_addrs: vec![WireAddr::V4([127, 0, 0, 1], 4433), WireAddr::V6([0; 16], 1)],
                roles: 1,
            }),
            Frame::ConnectAck(ConnectAck {
                version: 1,
                node_id: NodeId([0x01; 32]),
                listen_addrs: vec![],
                roles: 0,
            }),
            Frame::ConnectError(ConnectError {
                reason: RefuseReason::Capacity,
                message: "full".into(),
            }),
            Frame::Ping(Ping { id: 300 }),
            Frame::Pong(Ping { id: u64::MAX }),
            Frame::FindNode(FindNode {
                id: 1,
                target: [0x5a; 32],
            }),
            Frame::FindValue(FindValue {
                id: 2,
                key: [0xa5; 32],
            }),
            Frame::Nodes(Nodes {
                id: 1,
                nodes: vec![WireContact {
                    id: NodeId([0x02; 32]),
                    addr: WireAddr::V4([198, 18, 0, 2], 4433),
                }],
            }),
            Frame::Records(Records {
                id: 2,
                records: vec![WireRecord {
                    publisher: NodeId([0x03; 32]),
                    addrs: vec![WireAddr::V6([0; 16], 9)],
                    value: b"value".to_vec(),
                    ttl_secs: 300,
                }],
                nodes: vec![],
            }),
            Frame::Store(Store {
                id: 3,
                key: [0x11; 32],
                record: WireRecord {
                    publisher: NodeId([0x04; 32]),
                    addrs: vec![],
                    value: vec![],
                    ttl_secs: 0,
                },
            }),
            Frame::Withdraw(Withdraw {
                id: 4,
                key: [0x22; 32],
            }),
            Frame::Ack(Ack { id: 3 }),
            Frame::Refused(Refused {
                id: 5,
                reason: DhtRefusal::NotPublisher,
            }),
        ]
    }

    /// Golden vectors: these bytes are the protocol. A change here breaks interoperability and
    /// needs a new protocol version, not a new vector.
    #[test]
    fn golden_vectors_pin_the_encoding() {
        let ping = encode(&Frame::Ping(Ping { id: 300 }));
        assert_eq!(hex(&ping), "0303ac02");
        let pong = encode(&Frame::Pong(Ping { id: u64::MAX }));
        assert_eq!(hex(&pong), "0b04ffffffffffffffffff01");
        let err = encode(&Frame::ConnectError(ConnectError {
            reason: RefuseReason::Capacity,
            message: "full".into(),
        }));
        assert_eq!(hex(&err), "0702030466756c6c");
        let ack = encode(&Frame::ConnectAck(ConnectAck {
            version: 1,
            node_id: NodeId([0x01; 32]),
            listen_addrs: vec![WireAddr::V4([127, 0, 0, 1], 4433)],
            roles: 2,
        }));
        assert_eq!(
            hex(&ack),
            alloc::format!("2b0101{}01007f000001d12202", "01".repeat(32))
        );
        let connect = encode(&Frame::Connect(Connect {
            version: 1,
            node_id: NodeId([0xab; 32]),
            realm: "io.x".into(),
            auth: None,
            listen_addrs: vec![WireAddr::V6([0; 16], 1)],
            roles: 0,
        }));
        assert_eq!(
            hex(&connect),
            alloc::format!(
                "3c0001{}04696f2e78000101{}0100",
                "ab".repeat(32),
                "00".repeat(16)
            )
        );
        let find = encode(&Frame::FindNode(FindNode {
            id: 7,
            target: [0x5a; 32],
        }));
        assert_eq!(hex(&find), alloc::format!("220507{}", "5a".repeat(32)));
        let nodes = encode(&Frame::Nodes(Nodes {
            id: 7,
            nodes: vec![WireContact {
                id: NodeId([0x02; 32]),
                addr: WireAddr::V4([198, 18, 0, 2], 4433),
            }],
        }));
        assert_eq!(
            hex(&nodes),
            alloc::format!("2a070701{}00c6120002d122", "02".repeat(32))
        );
        let store = encode(&Frame::Store(Store {
            id: 8,
            key: [0x11; 32],
            record: WireRecord {
                publisher: NodeId([0x04; 32]),
                addrs: vec![],
                value: b"hi".to_vec(),
                ttl_secs: 300,
            },
        }));
        assert_eq!(
            hex(&store),
            alloc::format!("480908{}{}00026869ac02", "11".repeat(32), "04".repeat(32))
        );
        let refused = encode(&Frame::Refused(Refused {
            id: 9,
            reason: DhtRefusal::RateLimited,
        }));
        assert_eq!(hex(&refused), "030c0900");
    }

    #[test]
    fn every_sample_round_trips() {
        for frame in sample_frames() {
            let bytes = encode(&frame);
            let mut d = Decoder::new(1 << 20);
            d.push(&bytes);
            assert_eq!(d.next_frame(), Ok(Some(frame)));
            assert_eq!(d.next_frame(), Ok(None));
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn a_huge_prefix_is_refused_before_buffering() {
        let mut d = Decoder::new(1 << 20);
        // 4 GiB - 1 announced; only the five prefix bytes ever arrive.
        d.push(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(
            d.next_frame(),
            Err(DecodeError::FrameTooLarge {
                len: u64::from(u32::MAX),
                max: 1 << 20
            })
        );
        d.push(&[0u8; 64]);
        assert_eq!(d.buffered(), 0, "a failed decoder drops what it is fed");
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn malformed_prefixes_and_bodies_are_errors() {
        for bad in [
            &[0x80, 0x00][..],
            &[0xff, 0xff, 0xff, 0xff, 0x7f],
            &[0x80; 6],
        ] {
            let mut d = Decoder::new(u32::MAX);
            d.push(bad);
            assert_eq!(d.next_frame(), Err(DecodeError::BadPrefix), "{bad:?}");
        }
        let mut d = Decoder::new(1024);
        d.push(&[0x02, 0x63, 0x00]); // frame type 99
        assert_eq!(d.next_frame(), Err(DecodeError::BadFrame));
        let mut d = Decoder::new(1024);
        d.push(&[0x03, 0x03, 0x01, 0x00]); // a ping with a stray byte
        assert_eq!(d.next_frame(), Err(DecodeError::BadFrame));
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            any::<u64>().prop_map(|id| Frame::Ping(Ping { id })),
            any::<u64>().prop_map(|id| Frame::Pong(Ping { id })),
            (
                any::<[u8; 32]>(),
                "[a-z.]{0,40}",
                any::<Option<[u8; 32]>>(),
                any::<u8>()
            )
                .prop_map(|(id, realm, auth, roles)| Frame::Connect(Connect {
                    version: 1,
                    node_id: NodeId(id),
                    realm,
                    auth,
                    listen_addrs: vec![WireAddr::V4([10, 0, 0, 1], 9)],
                    roles,
                })),
            (0usize..5, ".{0,300}").prop_map(|(r, message)| Frame::ConnectError(ConnectError {
                reason: RefuseReason::ALL[r],
                message,
            })),
        ]
    }

    proptest! {
        #[test]
        fn any_chunking_decodes_to_the_same_frames(
            frames in proptest::collection::vec(arb_frame(), 1..20),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..40),
        ) {
            let mut stream = Vec::new();
            for f in &frames {
                encode_into(f, &mut stream);
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            let mut d = Decoder::new(1 << 20);
            let mut out = Vec::new();
            for w in points.windows(2) {
                d.push(&stream[w[0]..w[1]]);
                while let Some(f) = d.next_frame().unwrap() {
                    out.push(f);
                }
            }
            prop_assert_eq!(&out, &frames);
            prop_assert_eq!(d.buffered(), 0);
            // Decoding straight from the chunks gives the same frames.
            let mut d = Decoder::new(1 << 20);
            let mut direct = Vec::new();
            for w in points.windows(2) {
                let mut input = &stream[w[0]..w[1]];
                while let Some(f) = d.next_frame_from(&mut input).unwrap() {
                    direct.push(f);
                }
                prop_assert!(input.is_empty());
            }
            prop_assert_eq!(direct, frames);
            prop_assert_eq!(d.buffered(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut d = Decoder::new(1024);
            for chunk in bytes.chunks(7) {
                d.push(chunk);
                while let Ok(Some(_)) = d.next_frame() {}
                prop_assert!(d.buffered() <= 1024 + MAX_PREFIX_LEN + 7);
            }
        }
    }
}
