//! Nodes with different protocol sets, unknown protocols and kinds, version ranges, and
//! requests between siblings, shown with the echo protocol.

use alloc::vec;
use alloc::vec::Vec;

use super::{EchoEvent, EchoMessage};
use crate::config::{Config, Realm};
use crate::dht::DhtEvent;
use crate::node::{Event, Node, Transmit};
use crate::testnet::{addr, Net};
use crate::time::{Duration, Instant};
use crate::wire::{
    encode, Channel, CloseCode, Connect, ConnectError, Control, Decoder, ProtocolId, RefuseReason,
    Versions,
};
use crate::{Identity, LinkInfo};

fn config(i: usize, echo: bool) -> Config {
    let mut c = Config::new(Realm::new("io.test").unwrap());
    c.listen_addrs = vec![addr(i)];
    c.test_echo = echo;
    c
}

fn echo_events(events: &[Event]) -> Vec<EchoEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Echo(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn nodes_with_different_protocols_use_what_they_share() {
    // Nodes 0 and 1 speak echo; node 2 does not.
    let mut net = Net::new(vec![config(0, true), config(1, true), config(2, false)]);
    net.connect(1, 0);
    net.connect(2, 0);
    net.run_for(Duration::from_secs(2));
    let (id1, id2) = (net.id(1), net.id(2));
    let offers = |i: usize, peer| -> Vec<ProtocolId> {
        net.nodes[i]
            .peer(&peer)
            .unwrap()
            .protocols
            .iter()
            .map(|p| p.id)
            .collect()
    };
    assert_eq!(
        offers(0, id1),
        [
            ProtocolId::DHT,
            ProtocolId::PUBSUB,
            ProtocolId::RPC,
            ProtocolId::NAT,
            ProtocolId::TEST_ECHO
        ]
    );
    assert_eq!(
        offers(0, id2),
        [
            ProtocolId::DHT,
            ProtocolId::PUBSUB,
            ProtocolId::RPC,
            ProtocolId::NAT
        ]
    );
    // They share the DHT: node 2 finds node 1 through node 0.
    let op = net.command(2, |n, now| n.dht_find_node(&id1, now));
    net.run_for(Duration::from_secs(2));
    let found = net.events[2].iter().any(|e| {
        matches!(e, Event::Dht(DhtEvent::NodesFound { op: o, closest, .. })
            if *o == op && closest.iter().any(|(id, _)| *id == id1))
    });
    assert!(found, "{:?}", net.events[2]);
    // Echo works where both speak it ...
    let id = net.command(0, |n, now| n.echo(id1, None, b"hi".to_vec(), now));
    net.run_for(Duration::from_secs(1));
    assert!(echo_events(&net.events[0]).contains(&EchoEvent::Replied {
        peer: id1,
        id,
        len: 2
    }));
    // ... and is never sent to a peer that did not offer it: the sender is told.
    let sent_before = net.nodes[2].stats().frames_received;
    net.command(0, |n, now| n.echo(id2, None, b"hi".to_vec(), now));
    net.run_for(Duration::from_secs(1));
    assert!(echo_events(&net.events[0]).contains(&EchoEvent::Unreachable { peer: id2 }));
    assert_eq!(net.nodes[0].stats().frames_unspoken, 1);
    assert_eq!(net.nodes[2].stats().frames_skipped, 0);
    assert!(net.nodes[2].stats().frames_received >= sent_before);
}

#[test]
fn frames_of_an_unknown_protocol_are_counted_and_skipped() {
    let mut net = Net::new(vec![config(0, false), config(1, true)]);
    let link = net.connect(1, 0);
    net.run_for(Duration::from_secs(1));
    let &(_, remote) = net.wires.get(&(1, link)).unwrap();
    // Node 1 writes echo frames to node 0, which does not run echo, then a ping.
    let mut bytes = encode(&EchoMessage::Bulk {
        payload: vec![7; 100],
    });
    bytes.extend(encode(&EchoMessage::Echo {
        id: 1,
        payload: vec![],
    }));
    let now = net.now;
    net.nodes[0].handle_link_data(remote, ProtocolId::TEST_ECHO.channel(), &bytes, now);
    net.drain(0);
    let stats = net.nodes[0].stats();
    assert_eq!(stats.frames_skipped, 2);
    assert_eq!(stats.protocol_violations + stats.malformed_frames, 0);
    assert_eq!(net.nodes[0].peer_count(), 1, "skipping is not closing");
    let id1 = net.id(1);
    net.command(0, |n, now| n.ping(&id1, now).unwrap());
    net.run_for(Duration::from_secs(1));
    assert!(net.events[0]
        .iter()
        .any(|e| matches!(e, Event::PingResult { result: Ok(_), .. })));
}

#[test]
fn an_unknown_kind_of_a_known_protocol_closes_with_unknown_kind() {
    let mut net = Net::new(vec![config(0, false), config(1, false)]);
    let link = net.connect(1, 0);
    net.run_for(Duration::from_secs(1));
    let &(_, remote) = net.wires.get(&(1, link)).unwrap();
    // Protocol 1 (the DHT), kind 99: a DHT this build knows has no such message.
    let frame = [0x03, 0x01, 0x63, 0x00];
    let now = net.now;
    net.nodes[0].handle_link_data(remote, ProtocolId::DHT.channel(), &frame, now);
    let closed = core::iter::from_fn(|| net.nodes[0].poll_transmit()).any(
        |t| matches!(t, Transmit::Close { link, code: CloseCode::UnknownKind } if link == remote),
    );
    assert!(closed);
    assert_eq!(net.nodes[0].stats().unknown_kinds, 1);
    assert_eq!(net.nodes[0].peer_count(), 0);
}

#[test]
fn a_peer_offering_a_disjoint_version_range_is_refused_with_version() {
    let mut node = Node::new(config(0, false), Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let peer = Identity::from_seed(2);
    let info = LinkInfo {
        remote_id: peer.node_id(),
        remote_addr: addr(2),
        exporter: [0; 32],
    };
    let link = node.handle_inbound(info, Instant::ZERO).unwrap();
    let newer = Versions {
        min: Versions::OURS.max + 1,
        max: Versions::OURS.max + 3,
    };
    let connect = Control::Connect(Connect {
        versions: newer,
        node_id: peer.node_id(),
        realm: "io.test".into(),
        auth: None,
        listen_addrs: vec![],
        roles: 0,
        protocols: vec![],
    });
    node.handle_link_data(link, Channel::CONTROL, &encode(&connect), Instant::ZERO);
    let out: Vec<Transmit> = core::iter::from_fn(|| node.poll_transmit()).collect();
    let Some(Transmit::Send { bytes, .. }) = out.first() else {
        panic!("{out:?}");
    };
    let mut d = Decoder::new(1 << 20);
    d.push(bytes);
    let answer = crate::wire::decode_message::<Control>(d.next_frame().unwrap().unwrap());
    assert!(matches!(
        answer,
        Ok(Control::ConnectError(ConnectError {
            reason: RefuseReason::Version,
            ..
        }))
    ));
    assert!(out.contains(&Transmit::Close {
        link,
        code: CloseCode::Refused(RefuseReason::Version)
    }));
    assert_eq!(node.stats().refused_by_us.version, 1);
}

#[test]
fn a_sibling_asks_the_dht_and_the_application_sees_no_dht_event() {
    let mut net = Net::new(vec![config(0, true), config(1, true), config(2, true)]);
    net.connect(1, 0);
    net.connect(2, 0);
    net.run_for(Duration::from_secs(2));
    net.events[1].clear();
    let target = net.id(2);
    let ticket = net.command(1, |n, now| n.echo_find(target, now));
    net.run_for(Duration::from_secs(2));
    let found = echo_events(&net.events[1]);
    assert!(
        found.iter().any(
            |e| matches!(e, EchoEvent::Found { ticket: t, nodes } if *t == ticket && *nodes >= 2)
        ),
        "{found:?}"
    );
    assert!(
        !net.events[1].iter().any(|e| matches!(e, Event::Dht(_))),
        "the answer went to the asker alone"
    );
}

#[test]
fn bulk_crosses_on_its_own_channel() {
    let mut net = Net::new(vec![config(0, true), config(1, true)]);
    net.connect(1, 0);
    net.run_for(Duration::from_secs(1));
    let id0 = net.id(0);
    net.command(1, |n, now| n.echo_bulk(id0, vec![1; 100_000], now))
        .unwrap();
    let on_echo = net.log.iter().any(|(i, t)| {
        *i == 1
            && matches!(t, Transmit::Send { channel, bytes, .. }
                if *channel == ProtocolId::TEST_ECHO.channel() && bytes.len() > 100_000)
    });
    assert!(on_echo);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.nodes[0].echo_state().bulk_received, 100_000);
}
