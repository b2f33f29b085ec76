//! A connection's life as quinn reports it: connected (the link comes up in the node), lost,
//! its streams accepted and read into the node, channels resumed, and writes that waited for
//! room.

use alloc::vec::Vec;

use bytes::Bytes;
use quinn_proto::{ConnectionError, ConnectionHandle, Dir, StreamEvent, StreamId, VarInt};

use super::{is_alert, tls, Endpoint};
use crate::node::{LinkError, LinkId, LinkInfo};
use crate::time::Instant;
use crate::wire::{Channel, CloseCode};

impl Endpoint {
    pub(super) fn connection_event(
        &mut self,
        handle: ConnectionHandle,
        ev: quinn_proto::Event,
        now: Instant,
    ) {
        match ev {
            quinn_proto::Event::Connected => self.on_connected(handle, now),
            quinn_proto::Event::ConnectionLost { reason } => self.on_lost(handle, reason, now),
            quinn_proto::Event::Stream(StreamEvent::Opened { .. }) => {
                self.accept_streams(handle, now);
            }
            quinn_proto::Event::Stream(StreamEvent::Readable { id }) => {
                self.read_stream(handle, id, now)
            }
            quinn_proto::Event::Stream(StreamEvent::Stopped { id, .. }) => {
                // The peer refuses one of our streams: the link can't carry frames any more.
                let Some(c) = self.conns.get(&handle) else {
                    return;
                };
                if let Some(link) = c.link.filter(|_| c.streams.is_ours(id)) {
                    self.node
                        .close_link(link, CloseCode::ProtocolViolation, now);
                }
            }
            quinn_proto::Event::Stream(
                StreamEvent::Writable { .. } | StreamEvent::Available { dir: Dir::Uni },
            ) => self.flush_pending(handle, now),
            _ => {}
        }
    }

    pub(super) fn on_connected(&mut self, handle: ConnectionHandle, now: Instant) {
        let std_now = self.std_instant(now);
        let Some(c) = self.conns.get_mut(&handle) else {
            return;
        };
        c.connected = true;
        let identity = c.conn.crypto_session().peer_identity().and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        });
        let remote_id =
            identity.and_then(|certs| certs.first().and_then(|c| tls::node_id_from_cert(c)));
        let mut exporter = [0u8; 32];
        let exported = c
            .conn
            .crypto_session()
            .export_keying_material(&mut exporter, crate::auth::EXPORTER_LABEL, b"")
            .is_ok();
        let (Some(remote_id), true) = (remote_id, exported) else {
            // The verifiers only accept certificates with an id; this is defensive.
            self.stats.tls_failures += 1;
            let code = VarInt::from_u32(CloseCode::ProtocolViolation.to_u32());
            c.conn.close(std_now, code, Bytes::new());
            if let Some(link) = c.link.take() {
                self.links.remove(&link);
                self.node.handle_link_down(link, LinkError::DialFailed, now);
            }
            return;
        };
        let info = LinkInfo {
            remote_id,
            remote_addr: c.conn.remote_address(),
            exporter,
        };
        if c.outbound {
            c.streams.control = c.conn.streams().open(Dir::Bi);
            let link = c.link.expect("outbound connections are made for a link");
            let opened = c.streams.control.is_some();
            self.node.handle_link_up(link, info, now);
            if !opened {
                // The peer allows no bidirectional stream: it can't speak Macula.
                self.node
                    .close_link(link, CloseCode::ProtocolViolation, now);
            }
        } else {
            match self.node.handle_inbound(info, now) {
                Ok(link) => {
                    c.link = Some(link);
                    self.links.insert(link, handle);
                    // The control stream may have opened before the node knew the link.
                    self.accept_streams(handle, now);
                }
                Err(code) => {
                    c.conn
                        .close(std_now, VarInt::from_u32(code.to_u32()), Bytes::new());
                }
            }
        }
    }

    pub(super) fn on_lost(
        &mut self,
        handle: ConnectionHandle,
        reason: ConnectionError,
        now: Instant,
    ) {
        let Some(c) = self.conns.get_mut(&handle) else {
            return;
        };
        let error = match reason {
            ConnectionError::LocallyClosed => return,
            ConnectionError::ApplicationClosed(close) => {
                let code = u32::try_from(close.error_code.into_inner()).unwrap_or(u32::MAX);
                LinkError::ClosedByPeer(CloseCode::from_u32(code))
            }
            ConnectionError::TimedOut if c.connected => LinkError::TimedOut,
            ConnectionError::TransportError(e) if !c.connected && is_alert(&e) => {
                self.stats.tls_failures += 1;
                let alert = (u64::from(e.code) & 0xff) as u8;
                LinkError::Certificate(tls::certificate_problem(alert, &e.reason))
            }
            ConnectionError::ConnectionClosed(_) | ConnectionError::TransportError(_)
                if !c.connected =>
            {
                self.stats.tls_failures += 1;
                LinkError::DialFailed
            }
            _ if !c.connected => LinkError::DialFailed,
            _ => LinkError::Reset,
        };
        if let Some(link) = c.link.take() {
            self.links.remove(&link);
            self.node.handle_link_down(link, error, now);
        }
    }

    pub(super) fn accept_streams(&mut self, handle: ConnectionHandle, now: Instant) {
        let Some(c) = self.conns.get_mut(&handle) else {
            return;
        };
        if c.link.is_none() {
            return;
        }
        self.stats.streams_rejected += c.streams.accept(&mut c.conn, c.outbound);
        for id in c.streams.readable() {
            self.read_stream(handle, id, now);
        }
    }

    /// Hands what stream `id` holds to the node, on its channel, a chunk at a time, until it
    /// is empty or the node pauses the channel (then QUIC's flow control holds the sender
    /// back; the node names the channel in `poll_resumed` when it flows again).
    pub(super) fn read_stream(&mut self, handle: ConnectionHandle, id: StreamId, now: Instant) {
        loop {
            let Some(c) = self.conns.get_mut(&handle) else {
                return;
            };
            let Some(link) = c.link else {
                return;
            };
            if let Some(channel) = c.streams.channel_of(id) {
                if self.node.is_paused(link, channel) {
                    return;
                }
            }
            let read = match c.streams.read(&mut c.conn, id) {
                Ok(Some(read)) => read,
                Ok(None) => return,
                Err(_) => {
                    self.node
                        .close_link(link, CloseCode::ProtocolViolation, now);
                    return;
                }
            };
            let got = !read.chunks.is_empty();
            if let Some(channel) = read.channel {
                for bytes in read.chunks {
                    self.node.handle_link_data(link, channel, &bytes, now);
                }
            }
            if read.finished {
                // A peer that ends one of its streams ends the link.
                self.node
                    .close_link(link, CloseCode::ProtocolViolation, now);
                return;
            }
            if !got {
                return;
            }
            // Reading gave the peer flow-control credit: let the connection send it.
            self.active.insert(handle);
        }
    }

    /// Reads a channel the node paused and now lets flow again.
    pub(super) fn resume(&mut self, link: LinkId, channel: Channel, now: Instant) {
        let Some(&handle) = self.links.get(&link) else {
            return;
        };
        let Some(id) = self
            .conns
            .get(&handle)
            .and_then(|c| c.streams.inbound_stream(channel))
        else {
            return;
        };
        self.read_stream(handle, id, now);
        self.active.insert(handle);
    }

    /// Writes what the link's streams will take of its pending bytes, and tells the node which
    /// channels have more waiting than `channel_backlog` (or no longer do).
    pub(super) fn flush_pending(&mut self, handle: ConnectionHandle, now: Instant) {
        let max = self.node.config().max_link_send_buffer;
        let backlog = self.node.config().channel_backlog;
        let Some(c) = self.conns.get_mut(&handle) else {
            return;
        };
        if c.streams.flush(&mut c.conn).is_err() {
            // Stopped or closed: the link can't carry frames any more.
            c.streams.clear();
            if let Some(link) = c.link {
                self.node
                    .close_link(link, CloseCode::ProtocolViolation, now);
            }
            return;
        }
        let Some(link) = c.link else {
            return;
        };
        if c.streams.largest_pending() > max {
            c.streams.clear();
            self.node.close_link(link, CloseCode::SendBufferFull, now);
            return;
        }
        for (channel, blocked) in c.streams.blocked_changes(backlog) {
            self.node.handle_link_blocked(link, channel, blocked, now);
        }
    }
}
