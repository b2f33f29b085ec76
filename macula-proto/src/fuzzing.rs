//! Bodies of the fuzz targets, shared by `fuzz/` (cargo-fuzz, nightly) and by the corpus replay
//! test that runs on stable with `cargo test`. Each body asserts the properties the target checks;
//! a panic is a finding.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddr};

use crate::dht::messages::DhtMessage;
use crate::node::{LinkInfo, Node, Transmit};
use crate::wire::{
    decode_message, encode, Channel, Control, Decoder, Message, ProtocolId, RawFrame,
    MAX_PREFIX_LEN,
};
use crate::{Config, Identity, Instant, NodeId};

const MAX_FRAME: u32 = 4096;

/// Decodes `data` as a stream cut into chunks whose sizes come from the data itself, then checks
/// that every frame of a protocol this build knows that reads as a message re-encodes to bytes
/// that read as the same message, and that the decoder's buffer stays within one frame plus
/// one chunk.
pub fn frame_decode(data: &[u8]) {
    let (chunking, stream) = match data.split_first() {
        Some((first, rest)) => (usize::from(*first % 64) + 1, rest),
        None => return,
    };
    let mut decoder = Decoder::new(MAX_FRAME);
    let mut frames: Vec<(ProtocolId, Vec<u8>)> = Vec::new();
    for chunk in stream.chunks(chunking) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push((frame.protocol, frame.message.to_vec())),
                Ok(None) => break,
                Err(_) => {
                    assert_eq!(decoder.buffered(), 0, "a failed decoder keeps no bytes");
                    break;
                }
            }
        }
        assert!(decoder.buffered() <= MAX_FRAME as usize + MAX_PREFIX_LEN + chunking);
    }
    for (protocol, message) in frames {
        let frame = RawFrame {
            protocol,
            message: &message,
        };
        match protocol {
            ProtocolId::CONTROL => round_trips::<Control>(frame),
            ProtocolId::DHT => round_trips::<DhtMessage>(frame),
            _ => {}
        }
    }
}

/// If `frame` reads as an `M`, encoding that message and reading it back gives it again.
fn round_trips<M: Message + PartialEq + core::fmt::Debug>(frame: RawFrame<'_>) {
    let Ok(message) = decode_message::<M>(frame) else {
        return;
    };
    let bytes = encode(&message);
    let mut again = Decoder::new(u32::MAX);
    again.push(&bytes);
    let frame = again
        .next_frame()
        .expect("re-encoded bytes decode")
        .expect("a whole frame");
    assert_eq!(
        decode_message::<M>(frame),
        Ok(message),
        "re-encoding round-trips"
    );
}

/// Feeds `data` to a node as the bytes of an inbound link, before and (for a second link) after
/// a valid handshake, with the clock moving. The node must not panic, must keep its peer table
/// and queues within their bounds, and must close a link it rejects.
pub fn node_link_data(data: &[u8]) {
    let config = Config {
        max_frame_size: MAX_FRAME,
        max_queued_events: 16,
        dht: crate::dht::DhtConfig {
            max_value_size: 1024,
            ..crate::dht::DhtConfig::default()
        },
        ..Config::default()
    };
    let mut node = Node::new(config.clone(), Identity::from_seed(1), 1, Instant::ZERO)
        .expect("the default config is valid");
    // Link 1: raw bytes from the first byte on.
    let fresh = inbound(&mut node, Identity::from_seed(2).node_id(), 1);
    // Link 2: a valid Connect first, then the raw bytes.
    let other = Identity::from_seed(3).node_id();
    let established = inbound(&mut node, other, 2);
    connect(&mut node, established, other, Vec::new());
    assert_eq!(node.stats().peers, 1);
    let mut now = Instant::ZERO;
    for (i, chunk) in data.chunks(13).enumerate() {
        now += crate::Duration::from_millis(u64::from(chunk[0]) * 50);
        let link = if i % 2 == 0 { fresh } else { established };
        // The established link's bytes go to its control channel and to the DHT's in turn.
        let channel = if i % 4 == 1 {
            ProtocolId::DHT.channel()
        } else {
            Channel::CONTROL
        };
        node.handle_link_data(link, channel, chunk, now);
        node.handle_timeout(now);
        drain(&mut node);
        let stats = node.stats();
        assert!(stats.peers <= 2 && stats.pending_handshakes <= 2);
    }
}

/// Feeds `data` to a node's DHT as the bytes an established peer (one that listens, so it is a
/// contact) sends, while the node runs its own operations whose requests those bytes may
/// answer. The node must not panic; its routing table and record store must stay well formed
/// and within their bounds; its queues stay bounded.
pub fn node_dht(data: &[u8]) {
    use crate::dht::DhtConfig;
    let config = Config {
        max_frame_size: MAX_FRAME,
        max_queued_events: 16,
        dht: DhtConfig {
            max_records: 8,
            max_providers_per_key: 2,
            max_value_size: 64,
            peer_request_burst: 20,
            max_operations: 4,
            ..DhtConfig::default()
        },
        ..Config::default()
    };
    let mut node = Node::new(config.clone(), Identity::from_seed(1), 1, Instant::ZERO)
        .expect("the config is valid");
    let peer = Identity::from_seed(2).node_id();
    let link = inbound(&mut node, peer, 9);
    let listens = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 9).into();
    connect(&mut node, link, peer, alloc::vec![listens]);
    assert_eq!(node.stats().peers, 1);
    let mut now = Instant::ZERO;
    for (i, chunk) in data.chunks(29).enumerate() {
        now += crate::Duration::from_millis(u64::from(chunk[0]) * 20);
        // The node's own operations, so that answers in the data can match its requests
        // (correlation ids are small counters in a fresh DHT).
        match i % 4 {
            0 => {
                node.dht_find_node(&NodeId([chunk[0]; 32]), now);
            }
            1 => {
                node.dht_put(&chunk[..1], chunk.to_vec(), now);
            }
            2 => {
                node.dht_get(&chunk[..1], now);
            }
            _ => {}
        }
        node.handle_link_data(link, ProtocolId::DHT.channel(), chunk, now);
        node.handle_timeout(now);
        drain(&mut node);
        let dht = node.dht();
        assert_eq!(dht.table().check(), Ok(()));
        assert_eq!(dht.store().check(), Ok(()));
        assert!(dht.store().len() <= 8);
        assert!(dht.operations() <= 4);
        assert!(node.stats().peers <= 1);
    }
}

/// Feeds `data` to a node's pub/sub as the bytes an established peer sends on the pub/sub
/// channel, while the node has exact, wildcard, queue-group and dropping subscriptions, reads
/// some of what they receive, and publishes itself. The node must not panic, and its inboxes
/// and pub/sub state must stay within their bounds; a paused channel is not fed until it
/// flows again (as a transport would).
pub fn node_pubsub(data: &[u8]) {
    use crate::pubsub::{PublishOptions, Qos, SubscribeOptions, MAX_RECEIVING};
    use crate::Overflow;
    let (mut node, link, _) = established(|config| {
        config.pubsub.max_waiting = 8;
        config.pubsub.window = 4;
        config.pubsub.max_outstanding = 8;
    });
    let mut inboxes = Vec::new();
    for (pattern, options) in [
        ("t", SubscribeOptions::default().with_capacity(4)),
        ("t.*", SubscribeOptions::default().with_capacity(4)),
        ("**", SubscribeOptions::group("g").with_capacity(4)),
        (
            "**.x",
            SubscribeOptions::default()
                .with_capacity(2)
                .with_overflow(Overflow::DropOldest),
        ),
    ] {
        let sub = node
            .pubsub_subscribe(pattern, options, Instant::ZERO)
            .expect("valid subscriptions");
        inboxes.push(sub.inbox);
    }
    let channel = ProtocolId::PUBSUB.channel();
    let mut now = Instant::ZERO;
    for (i, chunk) in data.chunks(37).enumerate() {
        now += crate::Duration::from_millis(u64::from(chunk[0]) * 10);
        match chunk[0] % 5 {
            0 => {
                let qos = if chunk[0] & 0x80 == 0 {
                    Qos::AtMostOnce
                } else {
                    Qos::AtLeastOnce
                };
                let _ = node.pubsub_publish("t.x", chunk.to_vec(), PublishOptions::qos(qos), now);
            }
            1 => {
                let inbox = inboxes[i % inboxes.len()];
                while node.take_data(inbox, now).is_some() {}
            }
            _ => {}
        }
        if !node.is_paused(link, channel) {
            node.handle_link_data(link, channel, chunk, now);
        }
        node.handle_timeout(now);
        drain(&mut node);
        while node.poll_resumed().is_some() {}
        for inbox in &inboxes {
            let held = node.inbox_len(*inbox).unwrap_or(0);
            assert!(held <= 4 + node.config().max_peers, "inbox bound: {held}");
        }
        let pubsub = node.pubsub();
        assert!(pubsub.outstanding() <= 8);
        assert!(pubsub.receiving() <= MAX_RECEIVING);
        assert!(pubsub.streams() <= node.config().pubsub.max_streams);
        assert!(node.stats().peers <= 1);
    }
}

/// Feeds `data` to a node's RPC as the bytes an established peer sends on the RPC channel
/// (calls, replies, refusals, cancellations), while the node serves two procedures, answers
/// some of the calls it holds, gives others up, and makes calls of its own to the peer. The
/// node must not panic, and its calls, remembered calls and requests must stay within their
/// bounds.
pub fn node_rpc(data: &[u8]) {
    use crate::rpc::{CallOptions, RegisterOptions};
    use crate::Data;
    let (mut node, link, peer) = established(|config| {
        config.rpc.max_calls = 8;
        config.rpc.queue = 4;
        config.rpc.max_remembered = 16;
        config.rpc.max_remembered_bytes = 4096;
    });
    let mut inboxes = Vec::new();
    for procedure in ["svc.a", "svc.b"] {
        let served = node
            .rpc_register(procedure, RegisterOptions::default(), Instant::ZERO)
            .expect("valid procedures");
        inboxes.push(served.inbox);
    }
    let channel = ProtocolId::RPC.channel();
    let mut now = Instant::ZERO;
    for (i, chunk) in data.chunks(41).enumerate() {
        now += crate::Duration::from_millis(u64::from(chunk[0]) * 10);
        match chunk[0] % 6 {
            0 => {
                let options = CallOptions::default().to(peer);
                let _ = node.rpc_call("svc.a", chunk.to_vec(), options, now);
            }
            1 | 2 => {
                let inbox = inboxes[i % inboxes.len()];
                while let Some(Data::Request(r)) = node.take_data(inbox, now) {
                    let _ = match chunk[0] % 3 {
                        0 => node.rpc_reply(r.id, chunk.to_vec(), now),
                        1 => node.rpc_fail(r.id, "no", now),
                        _ => node.rpc_abandon(r.id, now),
                    };
                }
            }
            _ => {}
        }
        if !node.is_paused(link, channel) {
            node.handle_link_data(link, channel, chunk, now);
        }
        node.handle_timeout(now);
        drain(&mut node);
        while node.poll_resumed().is_some() {}
        let rpc = node.rpc();
        assert!(rpc.calls() <= 8, "calls in flight: {}", rpc.calls());
        assert!(
            rpc.remembered() <= 16 + 8,
            "remembered: {}",
            rpc.remembered()
        );
        assert!(rpc.remembered_bytes() <= 4096);
        assert!(rpc.requests() <= 2 * 4);
        assert!(node.stats().peers <= 1);
    }
}

/// Feeds `data` to a node's NAT traversal: raw datagrams on both sockets from a few sources,
/// NAT protocol frames from an established peer that listens where it is seen (so it can be an
/// observer, a gateway's client, or a circuit's other end), detections started as the clock
/// moves, and packets its QUIC stack would send onto circuits. The node (a gateway) must not
/// panic; a raw datagram it sends is never larger than a probe; one input makes at most four
/// of them; its circuits stay within their bound.
pub fn node_nat(data: &[u8]) {
    use crate::nat::probe::PROBE_LEN;
    use crate::node::Socket;
    let (mut node, link, _) = established(|config| {
        config.nat.aux_port = Some(20);
        config.nat.gateway = true;
        config.nat.max_circuits = 4;
    });
    let mut now = Instant::ZERO;
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head >> 2) % 80 + 1;
        let (chunk, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        let from = SocketAddr::new(Ipv4Addr::new(127, 0, 0, head % 3 + 1).into(), 9);
        match head & 3 {
            0 => node.handle_datagram(Socket::Main, from, chunk, now),
            1 => node.handle_datagram(Socket::Auxiliary, from, chunk, now),
            2 => node.handle_link_data(link, ProtocolId::NAT.channel(), chunk, now),
            _ if head & 4 == 0 => {
                now += crate::Duration::from_millis(u64::from(head) * 4);
                node.handle_timeout(now);
                node.nat_detect(now);
            }
            _ => {
                let circuit = crate::nat::circuit_addr(u64::from(head >> 3) % 4);
                node.handle_relayed_packet(circuit, chunk, now);
            }
        }
        let mut raw = 0;
        while let Some(t) = node.poll_transmit() {
            if let Transmit::Datagram { bytes, .. } = t {
                assert!(bytes.len() <= PROBE_LEN, "never larger than a probe");
                raw += 1;
            }
        }
        assert!(raw <= 4, "{raw} datagrams for one input");
        assert!(node.relay_stats().circuits <= 4);
        while node.poll_event().is_some() {}
    }
}

/// A node with small frames, a short event queue and `tune` applied to its configuration,
/// and the link of an established peer (node seed 2, at 127.0.0.1:9) to feed it from.
fn established(tune: impl FnOnce(&mut Config)) -> (Node, crate::LinkId, NodeId) {
    let mut config = Config {
        max_frame_size: MAX_FRAME,
        max_queued_events: 16,
        ..Config::default()
    };
    config.dht.max_value_size = 512;
    tune(&mut config);
    let mut node =
        Node::new(config, Identity::from_seed(1), 1, Instant::ZERO).expect("the config is valid");
    let peer = Identity::from_seed(2).node_id();
    let link = inbound(&mut node, peer, 9);
    let listens = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 9).into();
    connect(&mut node, link, peer, alloc::vec![listens]);
    (node, link, peer)
}

/// Takes everything the node has queued; what it sends stays small.
fn drain(node: &mut Node) {
    while let Some(t) = node.poll_transmit() {
        if let Transmit::Send { bytes, .. } = t {
            assert!(bytes.len() <= 64 * 1024, "answers stay small");
        }
    }
    while node.poll_event().is_some() {}
}

/// An inbound link from `remote`, seen at 127.0.0.1:`port`.
fn inbound(node: &mut Node, remote: NodeId, port: u16) -> crate::LinkId {
    let info = LinkInfo {
        remote_id: remote,
        remote_addr: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
        exporter: [7; 32],
    };
    node.handle_inbound(info, Instant::ZERO)
        .expect("a fresh node has room")
}

/// `remote`'s valid `Connect` on `link`, advertising `listen_addrs`.
fn connect(
    node: &mut Node,
    link: crate::LinkId,
    remote: NodeId,
    listen_addrs: Vec<crate::wire::WireAddr>,
) {
    let realm = node.config().realm.as_str().into();
    let protocols = node.protocols();
    let bytes = encode(&Control::Connect(crate::wire::Connect {
        versions: crate::wire::Versions::OURS,
        node_id: remote,
        realm,
        auth: None,
        listen_addrs,
        roles: 0,
        protocols,
    }));
    node.handle_link_data(link, Channel::CONTROL, &bytes, Instant::ZERO);
}

/// Runs `body` on every input of the checked-in corpus `fuzz/corpus/<target>/`, in name order,
/// after checking the corpus holds at least ten: the corpus replay of `cargo test`, for the
/// targets of every crate.
///
/// # Panics
/// If the corpus is missing or small, or `body` panics on an input (a finding).
#[cfg(feature = "std")]
pub fn replay_corpus(target: &str, body: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} must exist: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entries are readable").path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 10,
        "{target}: the corpus holds {} inputs",
        inputs.len()
    );
    for path in inputs {
        let data = std::fs::read(&path).expect("corpus files are readable");
        body(&data);
    }
}
