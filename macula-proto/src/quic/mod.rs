//! `quic::Endpoint`: a [`Node`] carried over QUIC (quinn-proto + rustls), still sans-IO.
//!
//! Inputs are UDP datagrams and time; outputs are UDP datagrams, node [`Event`]s and a deadline.
//! Each link of the node is one QUIC connection; its frames travel on the connection's first
//! bidirectional stream (the *control stream*, opened by the dialer). The endpoint dials when the
//! node asks, derives the peer's [`NodeId`] from its TLS certificate, exports the keying material
//! the realm proof is bound to, and turns connection loss into link loss. It writes each link's
//! queued frames with one stream write, so many small frames cost one QUIC send.
//!
//! The same drain contract as [`Node`] applies: after any `handle_*` or command, drain
//! [`Endpoint::poll_transmit`], then [`Endpoint::poll_event`], then read
//! [`Endpoint::poll_timeout`].
//!
//! quinn-proto counts time in `std::time::Instant`s; the endpoint maps the core's
//! [`Instant`] onto them from an `epoch` the driver supplies, so the core itself reads no clock.

mod events;
mod seeded;
mod streams;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
pub mod tls;
mod types;

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use std::time::Instant as StdInstant;

use bytes::{Bytes, BytesMut};
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    AckFrequencyConfig, ClientConfig, ConnectionHandle, DatagramEvent, EcnCodepoint, ServerConfig,
    TransportConfig, VarInt,
};

use crate::node::{
    is_circuit_addr, is_raw_datagram, Event, LinkError, LinkId, Node, Socket, Transmit,
};
use crate::time::{Duration, Instant};
use crate::wire::{Channel, CloseCode};
use crate::{Config, NodeId};
use streams::Streams;
pub use types::{Datagram, EndpointConfig, EndpointError, EndpointStats};

/// A QUIC connection and what the endpoint knows of it.
struct Conn {
    conn: quinn_proto::Connection,
    /// The node's id for this connection, once the node knows it.
    link: Option<LinkId>,
    /// For outbound connections, the link the node asked to open.
    outbound: bool,
    /// The link's channels as streams.
    streams: Streams,
    /// The connection's next timer, in core time.
    timeout: Option<Instant>,
    /// TLS completed.
    connected: bool,
    /// For inbound connections: when an unfinished TLS handshake is given up.
    tls_deadline: Instant,
}

/// A [`Node`] over QUIC. See the [module documentation](self), and `docs/embedding.md` for
/// driving an endpoint from a loop of your own (the example `embedded` of this crate is one,
/// on a `std` UDP socket).
///
/// The minimal loop, with two endpoints whose network is this loop: what one sends the other
/// receives at once, and when neither has anything to send, time jumps to the next deadline.
///
/// ```
/// use std::net::SocketAddr;
///
/// use macula_proto::quic::{Endpoint, EndpointConfig};
/// use macula_proto::{Config, Event, Identity, Instant, Realm};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (epoch, realm) = (std::time::Instant::now(), Realm::new("io.example.dev")?);
/// let endpoint = |seed| {
///     let identity = Identity::from_seed(seed);
///     let config = EndpointConfig::new(Config::new(realm.clone()), identity, seed, epoch);
///     Endpoint::new(config, Instant::ZERO)
/// };
/// let (mut a, mut b) = (endpoint(1)?, endpoint(2)?);
/// let a_addr: SocketAddr = "192.0.2.1:4433".parse()?;
/// let b_addr: SocketAddr = "192.0.2.2:4433".parse()?;
/// let mut now = Instant::ZERO;
/// a.connect(b_addr, Some(b.node_id()), now);
/// let mut joined = false;
/// while !joined {
///     let mut quiet = true;
///     while let Some(d) = a.poll_transmit() {
///         b.handle_datagram(a_addr, d.ecn, &d.contents, now);
///         quiet = false;
///     }
///     while let Some(d) = b.poll_transmit() {
///         a.handle_datagram(b_addr, d.ecn, &d.contents, now);
///         quiet = false;
///     }
///     while let Some(event) = a.poll_event() {
///         joined |= matches!(event, Event::PeerUp { .. });
///     }
///     while b.poll_event().is_some() {}
///     if quiet {
///         let deadline = [a.poll_timeout(), b.poll_timeout()].into_iter().flatten().min();
///         now = now.max(deadline.expect("a handshake under way has timers"));
///         a.handle_timeout(now);
///         b.handle_timeout(now);
///     }
/// }
/// assert_eq!(a.node().peer_count(), 1);
/// # Ok(()) }
/// ```
pub struct Endpoint {
    node: Node,
    quic: quinn_proto::Endpoint,
    client_config: ClientConfig,
    /// Production TLS: for dials to a name or address the user gave, checked against the CAs.
    seed_client_config: Option<ClientConfig>,
    epoch: StdInstant,
    now: Instant,
    conns: BTreeMap<ConnectionHandle, Conn>,
    /// Connections an input touched since they were last driven; only these are driven, so an
    /// input costs the same with one peer or a thousand.
    active: BTreeSet<ConnectionHandle>,
    /// Connections driven since their datagrams were last made. Datagrams are made when the
    /// driver asks for them, not after each input: everything the inputs since the last
    /// [`Endpoint::poll_transmit`] wrote (many calls, say) shares packets.
    unsent: BTreeSet<ConnectionHandle>,
    /// Each connection's next timer (its `Conn::timeout`), so finding the next deadline and
    /// the due connections doesn't scan them all.
    timers: BTreeSet<(Instant, ConnectionHandle)>,
    links: BTreeMap<LinkId, ConnectionHandle>,
    datagrams: VecDeque<Datagram>,
    stats: EndpointStats,
    buf: Vec<u8>,
    /// With seeded crypto: the wall clock quinn's tokens see, driven by `now`.
    clock: Option<Arc<seeded::VirtualClock>>,
    /// Most datagrams per transmit (GSO batch size); 1 without GSO.
    max_datagrams: usize,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("node", &self.node)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

/// Most datagrams in one GSO batch: ten 1,200-byte datagrams stay well under UDP's 65,507-byte
/// payload limit (a larger batch is refused by the kernel as a whole).
pub const MAX_GSO_SEGMENTS: usize = 10;

/// Most channel streams a peer may have open towards this node.
const MAX_CHANNELS: u32 = 16;

impl Endpoint {
    /// An endpoint for a node, started at `now`.
    ///
    /// # Errors
    /// [`EndpointError`] if the configuration is invalid or TLS can't be set up.
    pub fn new(config: EndpointConfig, now: Instant) -> Result<Self, EndpointError> {
        let mut node = Node::new(config.node, config.identity, config.seed, now)?;
        let crypto_seed = node.child_seed();
        let provider = if config.seeded_crypto {
            seeded::provider(crypto_seed)
        } else {
            tls::provider()
        };
        let (cert, key) = tls::self_signed(node.identity())?;
        let verifier = Arc::new(tls::PeerVerifier::new(provider.clone()));
        let (chain, seed_verifier) = match &config.tls {
            tls::TlsMode::Development => (vec![cert], None),
            tls::TlsMode::Production(production) => {
                let chain = if production.chain.is_empty() {
                    vec![cert]
                } else {
                    let leaf = tls::node_id_from_cert(&production.chain[0]);
                    if leaf != Some(node.node_id()) {
                        return Err(EndpointError::Tls(rustls::Error::General(
                            "the certificate chain's leaf is not for this node's identity key"
                                .into(),
                        )));
                    }
                    production.chain.clone()
                };
                let seeds = tls::SeedVerifier::new(production, provider.clone())?;
                (chain, Some(Arc::new(seeds)))
            }
        };

        let transport = Arc::new(transport_config(node.config()));

        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(chain.clone(), key.clone_key())?;
        server_tls.alpn_protocols = vec![tls::ALPN.to_vec()];
        // No session resumption: every node presents the same server name, so a ticket from one
        // node would be offered to another, and ticket ages come from the host's wall clock.
        server_tls.send_tls13_tickets = 0;
        server_tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        let server_crypto = QuicServerConfig::try_from(server_tls)
            .map_err(|e| rustls::Error::General(alloc::format!("{e}")))?;
        let mut quic_seed = [0u8; 32];
        crate::Rng::from_seed(node.child_seed()).fill(&mut quic_seed);
        let clock = config
            .seeded_crypto
            .then(|| Arc::new(seeded::VirtualClock::default()));
        let mut server_config = if let Some(clock) = &clock {
            let token_key = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&quic_seed);
            let mut server = ServerConfig::new(Arc::new(server_crypto), Arc::new(token_key));
            server.time_source(clock.clone());
            server
        } else {
            ServerConfig::with_crypto(Arc::new(server_crypto))
        };
        server_config.transport_config(transport.clone());
        server_config.migration(false);

        let client = |verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>| -> Result<ClientConfig, EndpointError> {
            let mut client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_client_auth_cert(chain.clone(), key.clone_key())?;
            client_tls.alpn_protocols = vec![tls::ALPN.to_vec()];
            client_tls.resumption = rustls::client::Resumption::disabled();
            let client_crypto = QuicClientConfig::try_from(client_tls)
                .map_err(|e| rustls::Error::General(alloc::format!("{e}")))?;
            let mut client_config = ClientConfig::new(Arc::new(client_crypto));
            client_config.transport_config(transport.clone());
            Ok(client_config)
        };
        let mut client_config = client(verifier)?;
        let seed_client_config = seed_verifier.map(|v| client(v)).transpose()?;

        let mut endpoint_config = quinn_proto::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &quic_seed,
        )));
        endpoint_config.rng_seed(Some(quic_seed));
        // QUIC packets keep their fixed bit, so raw datagrams (NAT probes) are told apart by
        // its absence.
        endpoint_config.grease_quic_bit(false);
        if config.seeded_crypto {
            endpoint_config.cid_generator(seeded::cid_factory(node.child_seed()));
            client_config.initial_dst_cid_provider(seeded::initial_cids(node.child_seed()));
        }
        let quic = quinn_proto::Endpoint::new(
            Arc::new(endpoint_config),
            Some(Arc::new(server_config)),
            false,
            None,
        );
        Ok(Endpoint {
            node,
            quic,
            client_config,
            seed_client_config,
            epoch: config.epoch,
            now,
            conns: BTreeMap::new(),
            active: BTreeSet::new(),
            unsent: BTreeSet::new(),
            timers: BTreeSet::new(),
            links: BTreeMap::new(),
            datagrams: VecDeque::new(),
            stats: EndpointStats::default(),
            buf: Vec::new(),
            clock,
            max_datagrams: 1,
        })
    }

    // ---------------------------------------------------------------- getters

    /// The node this endpoint carries.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node.node_id()
    }

    /// QUIC-layer counters.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            connections: self.conns.len(),
            events_dropped: self.node.stats().events_dropped,
            ..self.stats
        }
    }

    /// The QUIC path RTT of the connection carrying `link`, if it is open.
    pub fn path_rtt(&self, link: LinkId) -> Option<Duration> {
        let handle = self.links.get(&link)?;
        Some(self.conns.get(handle)?.conn.rtt().into())
    }

    // ---------------------------------------------------------------- commands

    /// Dials `addr`, optionally insisting that `expected` answers. See [`Node::connect`].
    pub fn connect(&mut self, addr: SocketAddr, expected: Option<NodeId>, now: Instant) -> LinkId {
        let link = self.node.connect(addr, expected, now);
        self.pump(now);
        link
    }

    /// Dials `addr`, checking the key there against the pin at `name`. See
    /// [`Node::connect_name`].
    pub fn connect_name(&mut self, name: &str, addr: SocketAddr, now: Instant) -> LinkId {
        let link = self.node.connect_name(name, addr, now);
        self.pump(now);
        link
    }

    /// Pings a peer. See [`Node::ping`].
    ///
    /// # Errors
    /// As [`Node::ping`].
    pub fn ping(&mut self, peer: &NodeId, now: Instant) -> Result<crate::PingId, crate::PingError> {
        let r = self.node.ping(peer, now);
        self.pump(now);
        r
    }

    /// Runs any command on the node (the `dht_*` commands, for example) and carries out what it
    /// asks of the transport. `f` gets the node and the endpoint's clock, which is `now` or later.
    pub fn with_node<R>(&mut self, now: Instant, f: impl FnOnce(&mut Node, Instant) -> R) -> R {
        self.advance(now);
        let r = f(&mut self.node, self.now);
        self.pump(now);
        r
    }

    /// Drops a peer cleanly. See [`Node::disconnect`].
    pub fn disconnect(&mut self, peer: &NodeId, now: Instant) -> bool {
        let r = self.node.disconnect(peer, now);
        self.pump(now);
        r
    }

    /// Leaves the mesh: every connection is closed with a goodbye. Keep driving the endpoint
    /// until [`Endpoint::is_idle`] so the closes reach the peers.
    pub fn close(&mut self, now: Instant) {
        self.advance(now);
        self.node.close(self.now);
        // Connections still in TLS have no link yet, so the node could not close them.
        let std_now = self.std_instant(self.now);
        let code = VarInt::from_u32(CloseCode::Goodbye.to_u32());
        for (handle, c) in self.conns.iter_mut().filter(|(_, c)| c.link.is_none()) {
            c.conn.close(std_now, code, Bytes::new());
            self.active.insert(*handle);
        }
        self.pump(now);
    }

    /// Allows transmits of up to `n` datagrams (GSO batches) for drivers whose socket supports
    /// segmentation offload; capped at [`MAX_GSO_SEGMENTS`]. Default: 1.
    pub fn set_max_datagrams(&mut self, n: usize) {
        self.max_datagrams = n.clamp(1, MAX_GSO_SEGMENTS);
    }

    /// Writes `bytes` on one of a link's channels exactly as given, bypassing the node's
    /// encoder. For hostile-peer tests and fuzzing: a well-behaved application never needs it.
    #[doc(hidden)]
    pub fn send_raw(&mut self, link: LinkId, channel: Channel, bytes: &[u8], now: Instant) {
        self.advance(now);
        let std_now = self.std_instant(self.now);
        self.carry_out(
            Transmit::Send {
                link,
                channel,
                bytes: bytes.to_vec(),
            },
            now,
            std_now,
        );
        self.pump(now);
    }

    /// Whether no connection remains (all closed and drained).
    pub fn is_idle(&self) -> bool {
        self.conns.is_empty()
    }

    // ---------------------------------------------------------------- inputs

    /// A UDP datagram arrived from `remote` on the main socket: a QUIC packet, or a raw one
    /// (NAT traversal; told apart by [`is_raw_datagram`]) for the node.
    pub fn handle_datagram(
        &mut self,
        remote: SocketAddr,
        ecn: Option<u8>,
        data: &[u8],
        now: Instant,
    ) {
        self.advance(now);
        let now = self.now;
        self.stats.datagrams_received += 1;
        if is_raw_datagram(data) {
            self.raw_datagram(Socket::Main, remote, data, now);
            return;
        }
        self.quic_packet(now, remote, ecn, data);
        self.pump(now);
    }

    /// Hands a QUIC packet from `remote` (a socket address, or a circuit's virtual address) to
    /// quinn, and takes what it makes of it.
    fn quic_packet(&mut self, now: Instant, remote: SocketAddr, ecn: Option<u8>, data: &[u8]) {
        if ecn.is_some() {
            self.stats.ecn_received += 1;
        }
        let ecn = ecn.and_then(EcnCodepoint::from_bits);
        let std_now = self.std_instant(now);
        self.buf.clear();
        let event = self.quic.handle(
            std_now,
            remote,
            None,
            ecn,
            BytesMut::from(data),
            &mut self.buf,
        );
        match event {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(c) = self.conns.get_mut(&handle) {
                    c.conn.handle_event(event);
                    self.active.insert(handle);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                let config = self.node.config();
                let limit = config.max_peers + config.max_pending_handshakes;
                let half_open_limit = config.max_pending_handshakes;
                let half_open = self
                    .conns
                    .values()
                    .filter(|c| !c.connected && !c.outbound)
                    .count();
                self.buf.clear();
                if self.conns.len() >= limit
                    || half_open >= half_open_limit
                    || self.node.is_closed()
                {
                    self.stats.connections_refused += 1;
                    let t = self.quic.refuse(incoming, &mut self.buf);
                    queue_transmit(&mut self.datagrams, &mut self.stats, &self.buf, &t);
                } else if half_open * 2 >= half_open_limit && !incoming.remote_address_validated() {
                    // Under a burst of new connections, make senders prove their address
                    // first (a Retry round trip), so spoofed Initials can't fill the slots.
                    self.stats.retries += 1;
                    match self.quic.retry(incoming, &mut self.buf) {
                        Ok(t) => self.push_quinn_transmit(&t),
                        Err(err) => self.quic.ignore(err.into_incoming()),
                    }
                } else {
                    match self.quic.accept(incoming, std_now, &mut self.buf, None) {
                        Ok((handle, conn)) => {
                            let mut c = Conn::new(conn, None, false);
                            c.tls_deadline = now + self.node.config().handshake_timeout;
                            self.conns.insert(handle, c);
                            self.active.insert(handle);
                        }
                        Err(err) => {
                            if let Some(t) = err.response {
                                self.push_quinn_transmit(&t);
                            }
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => self.push_quinn_transmit(&t),
            None => self.stats.datagrams_dropped += 1,
        }
    }

    /// A UDP datagram arrived from `remote` on the auxiliary socket (see
    /// [`NatConfig::aux_port`](crate::nat::NatConfig::aux_port)); only raw datagrams are read
    /// there.
    pub fn handle_auxiliary_datagram(&mut self, remote: SocketAddr, data: &[u8], now: Instant) {
        self.advance(now);
        let now = self.now;
        self.stats.datagrams_received += 1;
        if is_raw_datagram(data) {
            self.raw_datagram(Socket::Auxiliary, remote, data, now);
        } else {
            self.stats.datagrams_dropped += 1;
        }
    }

    /// A datagram that is not QUIC: the node's if it is a NAT datagram, else dropped.
    fn raw_datagram(&mut self, socket: Socket, remote: SocketAddr, data: &[u8], now: Instant) {
        if data.starts_with(&crate::nat::probe::MAGIC) {
            self.node.handle_datagram(socket, remote, data, now);
            self.pump(now);
        } else {
            self.stats.datagrams_dropped += 1;
        }
    }

    /// Time passed; runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let now = self.now;
        let std_now = self.std_instant(now);
        let due: Vec<ConnectionHandle> = self
            .timers
            .range(..=(now, ConnectionHandle(usize::MAX)))
            .map(|(_, handle)| *handle)
            .collect();
        for handle in due {
            let Some(c) = self.conns.get_mut(&handle) else {
                continue;
            };
            if c.timeout.is_some_and(|t| t <= now) {
                c.conn.handle_timeout(std_now);
                self.active.insert(handle);
            }
            if !c.connected && c.tls_deadline <= now && !c.conn.is_closed() {
                // An inbound connection that never finished TLS: free its slot.
                self.stats.tls_failures += 1;
                let code = VarInt::from_u32(CloseCode::HandshakeTimeout.to_u32());
                c.conn.close(std_now, code, Bytes::new());
                self.active.insert(handle);
            }
        }
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
        self.pump(now);
    }

    // ---------------------------------------------------------------- outputs

    /// The next datagram to send. Packets for relayed connections (to a circuit's virtual
    /// address) never come out here: they go onto their circuit, inside the node.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        loop {
            if self.datagrams.is_empty() {
                self.transmit();
            }
            let d = self.datagrams.pop_front()?;
            if is_circuit_addr(d.destination) {
                let now = self.now;
                for segment in d.segments() {
                    self.node.handle_relayed_packet(d.destination, segment, now);
                }
                self.pump(now);
                continue;
            }
            self.stats.datagrams_sent += d.segments().count() as u64;
            return Some(d);
        }
    }

    /// The next event for the application. Events wait in the node's queue, bounded by
    /// `Config::max_queued_events` (see [`Node::poll_event`]).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.node.poll_event()
    }

    /// The next inbox that went from empty to holding data (a subscription's or a served
    /// procedure's): read it with [`Node::take_data`] through [`Endpoint::with_node`]. See
    /// [`Node::poll_ready`].
    #[must_use]
    pub fn poll_ready(&mut self) -> Option<crate::InboxId> {
        self.node.poll_ready()
    }

    /// When [`Endpoint::handle_timeout`] must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // The node's own deadline is its `now` while it holds events.
        if !self.datagrams.is_empty() || !self.unsent.is_empty() {
            return Some(self.now);
        }
        debug_assert!(
            self.timers.len() == self.conns.values().filter(|c| c.timeout.is_some()).count()
                && self
                    .conns
                    .iter()
                    .all(|(h, c)| c.timeout.map_or(true, |at| self.timers.contains(&(at, *h)))),
            "the timer index lists exactly each connection's timeout"
        );
        let conns = self.timers.first().map(|(at, _)| *at);
        match (conns, self.node.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---------------------------------------------------------------- internals

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if let Some(clock) = &self.clock {
            clock.set(self.now.as_micros());
        }
    }

    fn std_instant(&self, t: Instant) -> StdInstant {
        self.epoch + core::time::Duration::from_micros(t.as_micros())
    }

    /// Queues every datagram a connection has ready.
    fn queue_connection_transmits(&mut self, handle: ConnectionHandle, std_now: StdInstant) {
        let Some(c) = self.conns.get_mut(&handle) else {
            return;
        };
        loop {
            self.buf.clear();
            let Some(t) = c
                .conn
                .poll_transmit(std_now, self.max_datagrams, &mut self.buf)
            else {
                break;
            };
            queue_transmit(&mut self.datagrams, &mut self.stats, &self.buf, &t);
        }
    }

    /// Makes the datagrams of every connection driven since the last time.
    fn transmit(&mut self) {
        let now = self.now;
        let std_now = self.std_instant(now);
        while !self.unsent.is_empty() {
            for handle in core::mem::take(&mut self.unsent) {
                self.queue_connection_transmits(handle, std_now);
                // Sending sets timers and may end a draining connection.
                self.settle_connection(handle, now);
            }
            // What settling gave the connections or the node.
            self.pump(now);
        }
    }

    fn push_quinn_transmit(&mut self, t: &quinn_proto::Transmit) {
        queue_transmit(&mut self.datagrams, &mut self.stats, &self.buf, t);
    }

    /// Moves work between the node, the connections and the output queues until nothing moves.
    fn pump(&mut self, now: Instant) {
        self.advance(now);
        let now = self.now;
        let std_now = self.std_instant(now);
        loop {
            while let Some((link, channel)) = self.node.poll_resumed() {
                self.resume(link, channel, now);
            }
            while let Some(t) = self.node.poll_transmit() {
                self.carry_out(t, now, std_now);
            }
            let batch = core::mem::take(&mut self.active);
            if batch.is_empty() {
                break;
            }
            for handle in batch {
                self.drive_connection(handle, now);
            }
        }
    }

    /// Handles one connection's events and endpoint events, and marks it for its datagrams to
    /// be made. Returns whether anything happened that the node or another round may need to
    /// see.
    fn drive_connection(&mut self, handle: ConnectionHandle, now: Instant) -> bool {
        let mut progress = false;
        loop {
            let Some(c) = self.conns.get_mut(&handle) else {
                return progress;
            };
            let Some(ev) = c.conn.poll() else {
                break;
            };
            progress = true;
            self.connection_event(handle, ev, now);
        }
        self.unsent.insert(handle);
        self.settle_connection(handle, now) || progress
    }

    /// Handles a connection's endpoint events and files its next timer; returns whether
    /// anything happened. Endpoint events (new connection ids, drained) come after transmits,
    /// which can cause them.
    fn settle_connection(&mut self, handle: ConnectionHandle, now: Instant) -> bool {
        let mut progress = false;
        let Some(c) = self.conns.get_mut(&handle) else {
            return progress;
        };
        while let Some(ev) = c.conn.poll_endpoint_events() {
            progress = true;
            let drained = ev.is_drained();
            if let Some(reply) = self.quic.handle_event(handle, ev) {
                c.conn.handle_event(reply);
                self.active.insert(handle);
            }
            if drained {
                if let Some(link) = c.link {
                    // Closed without a ConnectionLost event (a local close below the node).
                    self.links.remove(&link);
                    let error = if c.connected {
                        LinkError::Reset
                    } else {
                        LinkError::DialFailed
                    };
                    self.node.handle_link_down(link, error, now);
                }
                if let Some(at) = c.timeout {
                    self.timers.remove(&(at, handle));
                }
                self.conns.remove(&handle);
                self.unsent.remove(&handle);
                return true;
            }
        }
        let epoch = self.epoch;
        let quinn = c.conn.poll_timeout().map(|t| core_instant(epoch, t));
        let tls = (!c.connected && !c.conn.is_closed()).then_some(c.tls_deadline);
        let timeout = match (quinn, tls) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b).filter(|t| *t != Instant::NEVER),
        };
        if timeout != c.timeout {
            if let Some(at) = c.timeout {
                self.timers.remove(&(at, handle));
            }
            if let Some(at) = timeout {
                self.timers.insert((at, handle));
            }
            c.timeout = timeout;
        }
        progress
    }

    fn carry_out(&mut self, t: Transmit, now: Instant, std_now: StdInstant) {
        match t {
            Transmit::Open { link, addr, .. } => {
                // A dial to a name the user gave meets a CA-signed certificate for that host
                // in production mode; every other dial is checked by key alone.
                let seed = self
                    .seed_client_config
                    .as_ref()
                    .zip(self.node.dial_name(link).map(host_of));
                let (client, server_name) = match seed {
                    Some((client, host)) => (client.clone(), host),
                    None => (self.client_config.clone(), "macula".into()),
                };
                match self.quic.connect(std_now, client, addr, &server_name) {
                    Ok((handle, conn)) => {
                        self.conns.insert(handle, Conn::new(conn, Some(link), true));
                        self.active.insert(handle);
                        self.links.insert(link, handle);
                    }
                    Err(_) => self.node.handle_link_down(link, LinkError::DialFailed, now),
                }
            }
            Transmit::Send {
                link,
                channel,
                bytes,
            } => {
                let Some(&handle) = self.links.get(&link) else {
                    return;
                };
                let Some(c) = self.conns.get_mut(&handle) else {
                    return;
                };
                c.streams.queue(channel, bytes);
                self.active.insert(handle);
                self.flush_pending(handle, now);
            }
            Transmit::Close { link, code } => {
                let Some(handle) = self.links.remove(&link) else {
                    return;
                };
                self.flush_pending(handle, now);
                self.active.insert(handle);
                if let Some(c) = self.conns.get_mut(&handle) {
                    c.link = None;
                }
                // Send what the stream holds before the close: quinn drops unsent stream data
                // once closed, and a refusal's ConnectError should reach the dialer.
                self.queue_connection_transmits(handle, std_now);
                let Some(c) = self.conns.get_mut(&handle) else {
                    return;
                };
                c.conn
                    .close(std_now, VarInt::from_u32(code.to_u32()), Bytes::new());
            }
            Transmit::Relayed { from, bytes } => self.quic_packet(now, from, None, &bytes),
            Transmit::Datagram { socket, to, bytes } => self.datagrams.push_back(Datagram {
                socket,
                destination: to,
                ecn: None,
                contents: bytes,
                segment_size: None,
            }),
        }
    }
}

impl Conn {
    fn new(conn: quinn_proto::Connection, link: Option<LinkId>, outbound: bool) -> Self {
        Conn {
            conn,
            link,
            outbound,
            streams: Streams::default(),
            timeout: None,
            connected: false,
            tls_deadline: Instant::NEVER,
        }
    }
}

/// Queues quinn's transmit (its bytes are at the start of `buf`) as a [`Datagram`].
fn queue_transmit(
    out: &mut VecDeque<Datagram>,
    stats: &mut EndpointStats,
    buf: &[u8],
    t: &quinn_proto::Transmit,
) {
    let segment_size = t.segment_size.filter(|s| *s < t.size);
    if segment_size.is_some() {
        stats.gso_batches += 1;
    }
    out.push_back(Datagram {
        socket: Socket::Main,
        destination: t.destination,
        ecn: t.ecn.map(|e| e as u8),
        contents: buf[..t.size].to_vec(),
        segment_size,
    });
}

/// The core instant for a quinn-proto instant.
///
/// Rounds *up* to the next microsecond: a quinn timer between two microseconds must not look due
/// a moment before it is, or a driver would wake, find nothing due, and spin.
fn core_instant(epoch: StdInstant, t: StdInstant) -> Instant {
    let since = t.saturating_duration_since(epoch);
    let round_up = u64::from(since.subsec_nanos() % 1_000 != 0);
    Instant::ZERO + Duration::from(since) + Duration::from_micros(round_up)
}

/// Packets a receiver may take before it must acknowledge them. Every other packet (QUIC's
/// default) costs a bulk receiver one `sendmsg` per two packets it reads: on a stream of small
/// messages, a fifth of its time.
const ACK_EVERY: u32 = 10;

fn transport_config(config: &Config) -> TransportConfig {
    let mut t = TransportConfig::default();
    // The node runs its own keep-alive and idle timeout; QUIC's idle timeout is a backstop.
    let idle = config.idle_timeout + Duration::from_secs(5);
    let idle = VarInt::from_u64(idle.as_millis()).unwrap_or(VarInt::MAX);
    t.max_idle_timeout(Some(idle.into()));
    // The control stream, and a unidirectional stream per channel each way.
    t.max_concurrent_bidi_streams(VarInt::from_u32(1));
    t.max_concurrent_uni_streams(VarInt::from_u32(MAX_CHANNELS));
    // Ask the peer to acknowledge every tenth packet rather than every other one (the ACK
    // frequency extension; a peer without it ignores the request).
    let mut acks = AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(VarInt::from_u32(ACK_EVERY - 1));
    t.ack_frequency_config(Some(acks));
    t
}

/// Whether a transport error is a TLS alert about a certificate (QUIC's crypto error codes are
/// 0x100 + the alert: bad_certificate 42 to certificate_unknown 46, unknown_ca 48); other
/// alerts (no common protocol, versions) are plain dial failures.
fn is_alert(e: &quinn_proto::TransportError) -> bool {
    let code = u64::from(e.code);
    (0x100 + 42..=0x100 + 46).contains(&code) || code == 0x100 + 48
}

/// The host part of a `host:port` name (an IPv6 address without its brackets), as TLS
/// checks certificates against it.
fn host_of(name: &str) -> String {
    let host = name.rsplit_once(':').map_or(name, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']').into()
}
