//! How a link's channels map onto one QUIC connection's streams.
//!
//! The control channel is the connection's first bidirectional stream, opened by the dialer.
//! Every other channel is a unidirectional stream per direction, opened by the sender on first
//! use, whose first bytes name the channel (its number in LEB128). QUIC schedules streams
//! independently, so a large frame on one channel never holds back another; the control stream
//! has priority, so keep-alives go first.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use bytes::Bytes;
use quinn_proto::{Connection, Dir, ReadError, StreamId, VarInt, WriteError};

use crate::wire::Channel;

/// Control-stream and channel reads are done in chunks of at most this size (the node's
/// `PAUSED_SLACK`: what it keeps when a read lands on a channel it just paused).
const READ_CHUNK: usize = crate::node::PAUSED_SLACK;

/// Longest channel header: a `u16` in LEB128.
const MAX_HEADER: usize = 3;

/// A connection's streams. See the [module documentation](self).
#[derive(Default)]
pub(super) struct Streams {
    pub control: Option<StreamId>,
    /// Our side of each channel used so far, the control channel's first once it exists.
    out: Vec<OutStream>,
    /// The peer's channel streams.
    inbound: Vec<InStream>,
}

/// Our stream for one channel and the bytes it has not taken yet.
struct OutStream {
    channel: Channel,
    id: Option<StreamId>,
    /// What the node handed over and the stream has not taken yet, in order, each chunk as the
    /// node encoded it (QUIC takes them without copying). For a channel stream not yet opened,
    /// the header is the first chunk.
    pending: VecDeque<Bytes>,
    /// Bytes in `pending`.
    pending_len: usize,
    /// Whether the node was told this channel is blocked (more than its backlog pending).
    blocked: bool,
}

/// One of the peer's channel streams.
struct InStream {
    id: StreamId,
    /// Known once the header is read.
    channel: Option<Channel>,
    header: Vec<u8>,
}

/// What a read of one stream gave.
pub(super) struct Read {
    /// The channel the bytes belong to (`None`: a header not yet complete).
    pub channel: Option<Channel>,
    pub chunks: Vec<Bytes>,
    /// The peer finished or reset the stream.
    pub finished: bool,
}

/// Why a stream can't carry a link's frames any more.
#[derive(Debug)]
pub(super) struct Broken;

impl Streams {
    /// Queues `bytes` for `channel` (taking them over: they are not copied).
    pub fn queue(&mut self, channel: Channel, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let at = match self.out.iter().position(|s| s.channel == channel) {
            Some(at) => at,
            None => {
                let mut stream = OutStream {
                    channel,
                    id: None,
                    pending: VecDeque::new(),
                    pending_len: 0,
                    blocked: false,
                };
                if channel != Channel::CONTROL {
                    let mut header = Vec::with_capacity(MAX_HEADER);
                    write_header(channel, &mut header);
                    stream.pending_len = header.len();
                    stream.pending.push_back(Bytes::from(header));
                }
                self.out.push(stream);
                self.out.len() - 1
            }
        };
        let s = &mut self.out[at];
        s.pending_len += bytes.len();
        s.pending.push_back(Bytes::from(bytes));
    }

    /// The most bytes queued on one channel that its stream has not taken yet.
    pub fn largest_pending(&self) -> usize {
        self.out.iter().map(|s| s.pending_len).max().unwrap_or(0)
    }

    /// The channels whose pending bytes crossed `backlog` upwards (`true`) or fell back to
    /// half of it (`false`) since the last call: what the node hears through
    /// `Node::handle_link_blocked`. The control channel is never held back.
    pub fn blocked_changes(&mut self, backlog: usize) -> Vec<(Channel, bool)> {
        let mut changes = Vec::new();
        for s in &mut self.out {
            if s.channel == Channel::CONTROL {
                continue;
            }
            let now_blocked = if s.blocked {
                s.pending_len > backlog / 2
            } else {
                s.pending_len > backlog
            };
            if now_blocked != s.blocked {
                s.blocked = now_blocked;
                changes.push((s.channel, now_blocked));
            }
        }
        changes
    }

    /// Drops every byte not yet taken.
    pub fn clear(&mut self) {
        for s in &mut self.out {
            s.pending.clear();
            s.pending_len = 0;
        }
    }

    /// Writes what the streams will take. A channel stream is opened when needed; one that
    /// can't be opened yet (the peer's stream limit) waits for the next call.
    ///
    /// # Errors
    /// [`Broken`] if a stream was stopped or the connection closed.
    pub fn flush(&mut self, conn: &mut Connection) -> Result<(), Broken> {
        for s in &mut self.out {
            if s.pending.is_empty() {
                continue;
            }
            let id = match (s.id, s.channel) {
                (Some(id), _) => id,
                (None, Channel::CONTROL) => match self.control {
                    Some(id) => {
                        // Keep-alives and the handshake go before any channel's bulk.
                        let _ = conn.send_stream(id).set_priority(1);
                        s.id = Some(id);
                        id
                    }
                    None => continue,
                },
                (None, _) => match conn.streams().open(Dir::Uni) {
                    Some(id) => {
                        s.id = Some(id);
                        id
                    }
                    None => continue,
                },
            };
            // Write until the stream takes everything or says it is blocked: only a `Blocked`
            // answer registers the stream for a `Writable` event, so a short write is retried.
            while !s.pending.is_empty() {
                // The chunks at the front, as one slice; QUIC advances a chunk it takes part of.
                let (front, _) = s.pending.as_mut_slices();
                match conn.send_stream(id).write_chunks(front) {
                    Ok(written) if written.bytes == 0 => break,
                    Ok(written) => {
                        s.pending_len -= written.bytes;
                        s.pending.drain(..written.chunks);
                    }
                    Err(WriteError::Blocked) => break,
                    Err(_) => return Err(Broken),
                }
            }
        }
        Ok(())
    }

    /// Whether `id` is one of our streams.
    pub fn is_ours(&self, id: StreamId) -> bool {
        self.control == Some(id) || self.out.iter().any(|s| s.id == Some(id))
    }

    /// Accepts the streams the peer opened: the control stream (on an inbound connection) and
    /// channel streams. Returns how many streams were refused (a second bidirectional one).
    pub fn accept(&mut self, conn: &mut Connection, outbound: bool) -> u64 {
        let mut refused = 0;
        while let Some(id) = conn.streams().accept(Dir::Bi) {
            if self.control.is_none() && !outbound {
                self.control = Some(id);
            } else {
                let _ = conn.recv_stream(id).stop(VarInt::from_u32(0));
                refused += 1;
            }
        }
        while let Some(id) = conn.streams().accept(Dir::Uni) {
            self.inbound.push(InStream {
                id,
                channel: None,
                header: Vec::new(),
            });
        }
        refused
    }

    /// The streams to read: the control stream and the peer's channel streams.
    pub fn readable(&self) -> Vec<StreamId> {
        self.control
            .into_iter()
            .chain(self.inbound.iter().map(|s| s.id))
            .collect()
    }

    /// The peer's stream that carries `channel`, if it opened one.
    pub fn inbound_stream(&self, channel: Channel) -> Option<StreamId> {
        if channel == Channel::CONTROL {
            return self.control;
        }
        self.inbound
            .iter()
            .find(|s| s.channel == Some(channel))
            .map(|s| s.id)
    }

    /// The channel stream `id` carries, once known.
    pub fn channel_of(&self, id: StreamId) -> Option<Channel> {
        if self.control == Some(id) {
            return Some(Channel::CONTROL);
        }
        self.inbound
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.channel)
    }

    /// Reads one chunk (at most [`READ_CHUNK`] bytes) of what stream `id` holds: reading
    /// chunk by chunk lets the caller stop when the node pauses the channel, leaving the rest
    /// to QUIC's flow control.
    ///
    /// # Errors
    /// [`Broken`] for a malformed channel header, or a channel the peer already sends on.
    pub fn read(&mut self, conn: &mut Connection, id: StreamId) -> Result<Option<Read>, Broken> {
        let channel = if self.control == Some(id) {
            Some(Channel::CONTROL)
        } else {
            match self.inbound.iter().find(|s| s.id == id) {
                Some(s) => s.channel,
                None => return Ok(None),
            }
        };
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut finished = false;
        if let Ok(mut reader) = conn.recv_stream(id).read(true) {
            match reader.next(READ_CHUNK) {
                Ok(Some(chunk)) => chunks.push(chunk.bytes),
                Ok(None) | Err(ReadError::Reset(_)) => finished = true,
                Err(ReadError::Blocked) => {}
            }
            let _ = reader.finalize();
        }
        if finished {
            self.inbound.retain(|s| s.id != id);
        }
        if channel.is_some() {
            return Ok(Some(Read {
                channel,
                chunks,
                finished,
            }));
        }
        // A channel stream whose header is not known yet.
        let stream = self.inbound.iter_mut().find(|s| s.id == id).ok_or(Broken)?;
        let mut rest: Vec<Bytes> = Vec::new();
        for mut chunk in chunks {
            if stream.channel.is_none() {
                while let Some((&byte, tail)) = chunk.split_first() {
                    stream.header.push(byte);
                    chunk = chunk.slice(chunk.len() - tail.len()..);
                    if byte & 0x80 == 0 {
                        break;
                    }
                }
                if stream.header.last().is_some_and(|b| b & 0x80 == 0) {
                    stream.channel = Some(read_header(&stream.header).ok_or(Broken)?);
                } else if stream.header.len() >= MAX_HEADER {
                    return Err(Broken);
                }
            }
            if !chunk.is_empty() {
                rest.push(chunk);
            }
        }
        let channel = stream.channel;
        if let Some(c) = channel {
            let id = stream.id;
            if self
                .inbound
                .iter()
                .any(|s| s.id != id && s.channel == Some(c))
            {
                return Err(Broken);
            }
        }
        Ok(Some(Read {
            channel,
            chunks: rest,
            finished,
        }))
    }
}

fn write_header(channel: Channel, out: &mut Vec<u8>) {
    let mut value = channel.0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The channel a complete header names; `None` if it is not canonical or not a `u16`.
fn read_header(bytes: &[u8]) -> Option<Channel> {
    let mut value: u32 = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let canonical = i == 0 || byte != 0;
            return (canonical && i + 1 == bytes.len())
                .then(|| u16::try_from(value).ok().map(Channel))
                .flatten();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_headers_round_trip_and_bad_ones_are_refused() {
        for c in [1u16, 0x7e, 0x7f, 0x80, 300, u16::MAX] {
            let mut h = Vec::new();
            write_header(Channel(c), &mut h);
            assert!(h.len() <= MAX_HEADER);
            assert_eq!(read_header(&h), Some(Channel(c)));
        }
        assert_eq!(read_header(&[0x80, 0x00]), None, "not canonical");
        assert_eq!(read_header(&[0xff, 0xff, 0x7f]), None, "over u16");
    }
}
