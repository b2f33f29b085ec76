//! The NAT subsystem on its own: observer answers and their budgets, helpers, and detection's
//! clear failures. Detection of each kind of NAT runs in the simulator (`simulator/tests/nat.rs`),
//! which models NAT boxes.

use alloc::vec::Vec;
use core::net::SocketAddr;

use super::messages::{NatMessage, Via};
use super::probe::{Probe, PROBE_LEN};
use super::{DetectError, NatEvent};
use crate::node::{Node, Socket, Transmit};
use crate::testnet::{config, joined, Net};
use crate::time::{Duration, Instant};
use crate::wire::{encode, ProtocolId};
use crate::{Event, Identity, LinkInfo, NodeId};

/// The raw datagrams a node asked for since the last call.
fn datagrams(node: &mut Node) -> Vec<(Socket, SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(t) = node.poll_transmit() {
        if let Transmit::Datagram { socket, to, bytes } = t {
            out.push((socket, to, bytes));
        }
    }
    while node.poll_event().is_some() {}
    out
}

fn lone_node() -> Node {
    let mut c = config(0);
    c.nat.aux_port = Some(20_000);
    Node::new(c, Identity::from_seed(1), 1, Instant::ZERO).unwrap()
}

fn at(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, host], port))
}

#[test]
fn a_probe_is_answered_where_it_came_from_on_its_socket_and_no_larger() {
    let mut node = lone_node();
    for socket in [Socket::Main, Socket::Auxiliary] {
        let probe = Probe::Probe { nonce: 42 }.encode();
        node.handle_datagram(socket, at(7, 5000), &probe, Instant::ZERO);
        let out = datagrams(&mut node);
        assert_eq!(out.len(), 1);
        let (from, to, bytes) = &out[0];
        assert_eq!((*from, *to), (socket, at(7, 5000)));
        assert!(bytes.len() <= probe.len());
        assert_eq!(
            Probe::decode(bytes),
            Ok(Probe::Seen {
                nonce: 42,
                observed: at(7, 5000)
            })
        );
    }
    // A short probe, an answer, a punch and garbage get nothing back.
    let short = &Probe::Probe { nonce: 1 }.encode()[..PROBE_LEN - 1];
    let seen = Probe::Seen {
        nonce: 1,
        observed: at(1, 1),
    }
    .encode();
    for input in [
        short,
        &seen[..],
        &Probe::Punch { nonce: 2 }.encode(),
        b"\x1emnt?",
    ] {
        node.handle_datagram(Socket::Main, at(7, 5000), input, Instant::ZERO);
        assert!(datagrams(&mut node).is_empty());
    }
    let stats = node.nat_stats();
    assert_eq!((stats.malformed, stats.punches_received), (2, 1));
}

#[test]
fn a_flood_of_probes_gets_its_budget_of_answers_and_others_are_still_heard() {
    let mut node = lone_node();
    let limit = node.config().nat.answer_limit;
    let probe = Probe::Probe { nonce: 9 }.encode();
    let mut answered = 0;
    let mut now = Instant::ZERO;
    for _ in 0..1_000 {
        now += Duration::from_millis(1);
        node.handle_datagram(Socket::Main, at(66, 1), &probe, now);
        answered += datagrams(&mut node).len();
    }
    // A burst, then the refill over one second.
    let most = (limit.burst + limit.refill) as usize;
    assert!(
        answered <= most && answered >= limit.burst as usize,
        "{answered}"
    );
    assert!(node.nat_stats().answers_limited >= (1_000 - most) as u64);
    // Another source is answered in the middle of it.
    node.handle_datagram(Socket::Main, at(67, 1), &probe, now);
    assert_eq!(datagrams(&mut node).len(), 1);
    // Ten thousand sources, one probe each, against a table of a hundred: the table holds.
    let mut c = config(0);
    c.nat.max_sources = 100;
    let mut node = Node::new(c, Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let mut answered = 0;
    for i in 0..10_000u32 {
        let from = SocketAddr::from((i.to_be_bytes(), 1));
        node.handle_datagram(Socket::Main, from, &probe, now);
        answered += datagrams(&mut node).len();
    }
    assert!(answered >= 100, "{answered}");
}

/// A node with an established peer at 198.18.0.9 that speaks NAT.
fn with_peer() -> (Node, crate::LinkId, NodeId) {
    let mut node = lone_node();
    let peer = Identity::from_seed(2).node_id();
    let info = LinkInfo {
        remote_id: peer,
        remote_addr: at(9, 4433),
        exporter: [7; 32],
    };
    let link = node.handle_inbound(info, Instant::ZERO).unwrap();
    let protocols = node.protocols();
    let connect = encode(&crate::wire::Control::Connect(crate::wire::Connect {
        versions: crate::wire::Versions::OURS,
        node_id: peer,
        realm: node.config().realm.as_str().into(),
        auth: None,
        listen_addrs: alloc::vec![at(9, 4433).into()],
        roles: 0,
        protocols,
    }));
    node.handle_link_data(link, crate::Channel::CONTROL, &connect, Instant::ZERO);
    datagrams(&mut node);
    assert_eq!(node.stats().peers, 1);
    (node, link, peer)
}

#[test]
fn filtering_answers_go_to_the_asker_as_its_link_shows_it() {
    let (mut node, link, _) = with_peer();
    let ask = |via| encode(&NatMessage::AnswerFrom { nonce: 5, via });
    node.handle_link_data(
        link,
        ProtocolId::NAT.channel(),
        &ask(Via::Auxiliary),
        Instant::ZERO,
    );
    let out = datagrams(&mut node);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, out[0].1), (Socket::Auxiliary, at(9, 4433)));
    // No other peer to help: nothing is sent, and that is counted.
    let helper = Via::Helper {
        exclude: Vec::new(),
    };
    node.handle_link_data(link, ProtocolId::NAT.channel(), &ask(helper), Instant::ZERO);
    assert!(datagrams(&mut node).is_empty());
    assert_eq!(node.nat_stats().no_helper, 1);
}

#[test]
fn a_flood_of_help_requests_gets_the_helper_budget() {
    let (mut node, link, _) = with_peer();
    let limit = node.config().nat.help_limit;
    let help = encode(&NatMessage::Help {
        nonce: 1,
        to: at(50, 1),
    });
    let mut sent = 0;
    let mut now = Instant::ZERO;
    for _ in 0..1_000 {
        now += Duration::from_millis(1);
        node.handle_link_data(link, ProtocolId::NAT.channel(), &help, now);
        sent += datagrams(&mut node).len();
    }
    assert!(sent <= (limit.burst + limit.refill) as usize, "{sent}");
    assert_eq!(node.nat_stats().helped, sent as u64);
}

fn outcome(net: &Net, i: usize) -> Option<NatEvent> {
    net.events[i].iter().rev().find_map(|e| match e {
        Event::Nat(e) => Some(e.clone()),
        _ => None,
    })
}

#[test]
fn detection_fails_clearly_without_observers() {
    // Alone: nobody to observe it.
    let mut net = Net::new(alloc::vec![config(0)]);
    net.command(0, |n, now| n.nat_detect(now));
    assert_eq!(
        outcome(&net, 0),
        Some(NatEvent::DetectFailed(DetectError::NoObserver))
    );
    // Peers, but all at one address (127.0.0.1): no second observer.
    let mut net = joined(3, |i| {
        let mut c = config(i);
        c.nat.aux_port = Some(crate::testnet::aux_addr(i).port());
        c
    });
    net.command(1, |n, now| n.nat_detect(now));
    net.run_for(Duration::from_secs(5));
    assert_eq!(
        outcome(&net, 1),
        Some(NatEvent::DetectFailed(DetectError::NoSecondObserver))
    );
    assert!(!net.nodes[1].nat_detecting());
    assert_eq!(net.nodes[1].nat_profile(), None);
}

#[test]
fn random_inputs_hold_the_fuzz_targets_properties() {
    // A quick stand-in for a fuzzer run: random byte strings, and valid probes cut and mutated.
    let mut rng = crate::Rng::from_seed(11);
    for _ in 0..400 {
        let len = rng.below(600) as usize;
        let mut data = alloc::vec![0u8; len];
        rng.fill(&mut data);
        crate::fuzzing::node_nat(&data);
        let mut probe = Probe::Probe {
            nonce: rng.next_u64(),
        }
        .encode();
        let i = rng.below(probe.len() as u64) as usize;
        probe[i] = rng.next_u64() as u8;
        probe.truncate(rng.below(PROBE_LEN as u64 + 1) as usize);
        let _ = Probe::decode(&probe);
    }
}

/// Node 0 a gateway (with `tune`), nodes 1 and 2 joined to it; node 2 holds a reservation.
fn relay_net(tune: impl Fn(&mut crate::nat::NatConfig)) -> Net {
    let mut net = joined(3, |i| {
        let mut c = config(i);
        if i == 0 {
            c.nat.gateway = true;
            tune(&mut c.nat);
        }
        c
    });
    let gateway = net.id(0);
    net.command(2, |n, now| n.relay_reserve(gateway, None, now));
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.nodes[2].relay_stats().reserved_at, 1);
    net
}

/// Node 1 opens a circuit to node 2 through node 0; its virtual address.
fn open(net: &mut Net) -> Option<SocketAddr> {
    let (gateway, target) = (net.id(0), net.id(2));
    net.command(1, |n, now| {
        n.connect_relayed(target, gateway, None, now)?;
        Some(())
    })?;
    // The link the node dialed is the circuit's virtual address; find it in the log.
    net.log.iter().rev().find_map(|(i, t)| match t {
        Transmit::Open { addr, .. } if *i == 1 && crate::node::is_circuit_addr(*addr) => {
            Some(*addr)
        }
        _ => None,
    })
}

/// What node `i` handed its QUIC stack from circuits.
fn relayed_to(net: &Net, i: usize) -> usize {
    net.log
        .iter()
        .filter(|(n, t)| *n == i && matches!(t, Transmit::Relayed { .. }))
        .count()
}

#[test]
fn a_gateway_forwards_packets_both_ways_and_refuses_without_a_reservation() {
    let mut net = relay_net(|_| {});
    let circuit = open(&mut net).expect("opened");
    net.run_for(Duration::from_millis(100));
    for _ in 0..5 {
        net.command(1, |n, now| {
            n.handle_relayed_packet(circuit, b"opaque packet", now)
        });
    }
    net.run_for(Duration::from_millis(100));
    assert_eq!(relayed_to(&net, 2), 5);
    // The target answers to the virtual address its packets came from.
    let back = net
        .log
        .iter()
        .find_map(|(n, t)| match t {
            Transmit::Relayed { from, .. } if *n == 2 => Some(*from),
            _ => None,
        })
        .unwrap();
    net.command(2, |n, now| n.handle_relayed_packet(back, b"answer", now));
    net.run_for(Duration::from_millis(100));
    assert_eq!(relayed_to(&net, 1), 1);
    let gw = net.nodes[0].relay_stats();
    assert_eq!(
        (gw.circuits, gw.packets_relayed, gw.bytes_relayed),
        (1, 6, 71)
    );
    // Node 1 holds no reservation: a circuit to it is refused, and the opener forgets it.
    let (gateway, target) = (net.id(0), net.id(1));
    net.command(2, |n, now| n.connect_relayed(target, gateway, None, now));
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.nodes[0].relay_stats().circuits, 1);
    assert_eq!(
        net.nodes[2].relay_stats().own_circuits,
        1,
        "only the one from node 1"
    );
    // A node that is not a gateway refuses reservations.
    let not_gateway = net.id(1);
    net.command(2, |n, now| n.relay_reserve(not_gateway, None, now));
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.nodes[2].relay_stats().reserved_at, 1);
}

#[test]
fn a_flood_of_circuit_requests_gets_the_limits() {
    let mut net = relay_net(|c| {
        c.max_circuits = 8;
        c.max_circuits_per_peer = 3;
    });
    for _ in 0..100 {
        open(&mut net);
    }
    net.run_for(Duration::from_millis(200));
    let gw = net.nodes[0].relay_stats();
    assert_eq!(gw.circuits, 3, "{gw:?}");
    assert!(gw.circuits_refused >= 100 - 64, "{gw:?}");
    // The opener keeps at most its own bound, and forgets the refused ones.
    assert_eq!(net.nodes[1].relay_stats().own_circuits, 3);
    assert_eq!(net.nodes[2].relay_stats().own_circuits, 3);
}

#[test]
fn bytes_and_lifetime_past_the_limits_close_the_circuit_at_both_ends() {
    let mut net = relay_net(|c| {
        c.max_circuit_bytes = 10_000;
        c.max_circuit_duration = Duration::from_secs(20);
    });
    let circuit = open(&mut net).expect("opened");
    net.run_for(Duration::from_millis(100));
    let packet = [7u8; 1_000];
    for _ in 0..20 {
        net.command(1, |n, now| n.handle_relayed_packet(circuit, &packet, now));
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(100));
    assert_eq!(relayed_to(&net, 2), 10);
    let gw = net.nodes[0].relay_stats();
    assert_eq!((gw.circuits, gw.circuits_refused), (0, 1));
    assert_eq!(net.nodes[1].relay_stats().own_circuits, 0);
    assert_eq!(net.nodes[2].relay_stats().own_circuits, 0);
    // Another circuit lives its lifetime, then goes.
    open(&mut net).expect("opened");
    net.run_for(Duration::from_secs(19));
    assert_eq!(net.nodes[0].relay_stats().circuits, 1);
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.nodes[0].relay_stats().circuits, 0);
    assert_eq!(net.nodes[2].relay_stats().own_circuits, 0);
}

#[test]
fn a_full_next_hop_drops_packets_rather_than_holding_them() {
    let mut net = relay_net(|_| {});
    let circuit = open(&mut net).expect("opened");
    net.run_for(Duration::from_millis(100));
    // The gateway's channel to the target is full (the target stopped reading).
    let target = net.id(2);
    let link = net.nodes[0].peer(&target).unwrap().link;
    let now = net.now;
    net.nodes[0].handle_link_blocked(link, ProtocolId::NAT.channel(), true, now);
    let packet = [1u8; 1_200];
    for _ in 0..1_000 {
        net.command(1, |n, now| n.handle_relayed_packet(circuit, &packet, now));
    }
    net.run_for(Duration::from_millis(200));
    let gw = net.nodes[0].relay_stats();
    assert_eq!(
        (gw.packets_dropped, gw.packets_relayed),
        (1_000, 0),
        "{gw:?}"
    );
    assert_eq!(relayed_to(&net, 2), 0);
}
