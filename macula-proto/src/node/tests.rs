//! Drives nodes through the handshake over in-memory links, jumping time to the next deadline.

use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::config::{ApiKey, Realm};
use crate::dht::messages::{DhtMessage, FindNode, Store};
use crate::dht::{DhtEvent, Record};
use crate::testnet::{addr, Net, LATENCY};
use crate::time::Duration;
use crate::wire::{encode, encode_into, Control, Ping, RefuseReason};

fn config(realm: &str) -> Config {
    Config::new(Realm::new(realm).unwrap())
}

fn keyed(realm: &str, key: &[u8]) -> Config {
    let mut c = config(realm);
    c.api_key = Some(ApiKey::new(key).unwrap());
    c
}

#[test]
fn two_nodes_handshake_and_measure_rtt() {
    let mut net = Net::new(vec![config("a.b"), config("a.b")]);
    net.connect(0, 1);
    net.run_for(Duration::from_millis(100));
    let (id0, id1) = (net.id(0), net.id(1));
    assert!(
        matches!(net.events[0][0], Event::PeerUp { peer, direction: Direction::Outbound, .. } if peer == id1)
    );
    assert!(
        matches!(net.events[1][0], Event::PeerUp { peer, direction: Direction::Inbound, .. } if peer == id0)
    );
    let ping = net.nodes[0].ping(&id1, net.now).unwrap();
    net.drain(0);
    net.run_for(Duration::from_millis(100));
    let rtt = net.events[0].iter().find_map(|e| match e {
        Event::PingResult { id, result, .. } if *id == ping => Some(*result),
        _ => None,
    });
    assert_eq!(rtt, Some(Ok(LATENCY.saturating_mul(2))));
    assert_eq!(
        net.nodes[0].peer(&id1).unwrap().rtt,
        Some(LATENCY.saturating_mul(2))
    );
    assert_eq!(net.nodes[1].stats().peers, 1);
    assert_eq!(net.nodes[1].stats().handshakes_completed, 1);
}

#[test]
fn peer_ids_list_the_peers_in_order_and_traffic_counts_both_ends() {
    let mut net = Net::new((0..5).map(|_| config("a.b")).collect());
    for i in 1..5 {
        net.connect(i, 0);
    }
    net.run_for(Duration::from_secs(30));
    let hub = &net.nodes[0];
    let ids: Vec<NodeId> = hub.peer_ids().collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids, hub.peers().map(|p| p.id).collect::<Vec<_>>());
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ordered by id");
    // Over a quiet link, what one end sent the other received, frame for frame and byte for
    // byte (nothing is in flight once the keep-alives of the last second have landed).
    let hub = net.nodes[0].stats();
    let spokes: Vec<Stats> = (1..5).map(|i| net.nodes[i].stats()).collect();
    let sum = |f: fn(&Stats) -> u64| spokes.iter().map(f).sum::<u64>();
    assert_eq!(hub.frames_received, sum(|s| s.frames_sent));
    assert_eq!(hub.bytes_received, sum(|s| s.bytes_sent));
    assert_eq!(hub.frames_sent, sum(|s| s.frames_received));
    assert_eq!(hub.bytes_sent, sum(|s| s.bytes_received));
    assert!(hub.pings_sent > 0 && hub.pongs_received > 0);
    assert!(sum(|s| s.pings_sent) > 0 && sum(|s| s.pongs_received) > 0);
    assert!(hub.bytes_sent > hub.frames_sent);
}

#[test]
fn keepalive_keeps_quiet_peers_up_for_minutes() {
    let mut net = Net::new(vec![config("a.b"), config("a.b")]);
    net.connect(0, 1);
    net.run_for(Duration::from_secs(600));
    assert_eq!(net.nodes[0].stats().peers, 1);
    assert_eq!(net.nodes[1].stats().peers, 1);
    // One keep-alive per 5 s per side, and every one answered.
    let s = net.nodes[0].stats();
    assert!(s.pings_sent >= 119, "{s:?}");
    assert!(s.pongs_received + 1 >= s.pings_sent);
    assert!(net.nodes[0].peer(&net.id(1)).unwrap().rtt.is_some());
}

#[test]
fn a_silent_peer_is_dropped_after_the_idle_timeout() {
    let mut net = Net::new(vec![config("a.b"), config("a.b")]);
    let link = net.connect(0, 1);
    net.run_for(Duration::from_secs(1));
    // Cut the wire one way: node 1 stops hearing node 0 but no one says so.
    net.wires.remove(&(0, link));
    net.run_for(Duration::from_secs(40));
    assert_eq!(net.nodes[1].stats().idle_timeouts, 1);
    assert!(net.events[1].iter().any(|e| matches!(
        e,
        Event::PeerDown {
            reason: DownReason::Local(CloseCode::IdleTimeout),
            ..
        }
    )));
}

#[test]
fn wrong_realm_is_refused_and_both_sides_know_why() {
    let mut net = Net::new(vec![config("a.b"), config("c.d")]);
    let link = net.connect(0, 1);
    net.run_for(Duration::from_secs(1));
    assert!(net.events[0].iter().any(|e| matches!(e,
        Event::ConnectFailed { link: l, failure: ConnectFailure::Refused { reason: RefuseReason::WrongRealm, message }, .. }
            if *l == link && message.contains("another realm"))));
    assert!(net.events[1].iter().any(|e| matches!(
        e,
        Event::InboundRefused {
            reason: RefuseReason::WrongRealm,
            ..
        }
    )));
    assert_eq!(net.nodes[0].stats().refused_by_peer.wrong_realm, 1);
    assert_eq!(net.nodes[1].stats().refused_by_us.wrong_realm, 1);
    assert_eq!(
        net.nodes[0].stats().refused_by_peer.total(),
        1,
        "counted once, not per signal"
    );
    assert_eq!(
        (net.nodes[0].stats().peers, net.nodes[1].stats().peers),
        (0, 0)
    );
}

#[test]
fn api_keys_must_match_and_open_realms_need_none() {
    let key = b"0123456789abcdef";
    let wrong = b"0123456789abcdeX";
    // Right key.
    let mut net = Net::new(vec![keyed("a.b", key), keyed("a.b", key)]);
    net.connect(0, 1);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.nodes[1].stats().peers, 1);
    // Wrong key, and no key at all.
    for dialer in [keyed("a.b", wrong), config("a.b")] {
        let mut net = Net::new(vec![dialer, keyed("a.b", key)]);
        net.connect(0, 1);
        net.run_for(Duration::from_secs(1));
        assert_eq!(net.nodes[0].stats().refused_by_peer.bad_credentials, 1);
        assert_eq!(net.nodes[1].stats().refused_by_us.bad_credentials, 1);
        assert_eq!(net.nodes[1].stats().peers, 0);
    }
    // A keyed dialer refuses a listener that does not prove the key: an open realm's node,
    // or an impostor that knows only the realm's name and so admits anyone.
    {
        let mut net = Net::new(vec![keyed("a.b", key), config("a.b")]);
        net.connect(0, 1);
        net.run_for(Duration::from_secs(1));
        assert_eq!(net.nodes[0].stats().peers, 0);
        assert_eq!(net.nodes[0].stats().listeners_unproven, 1);
        let failed = net.events[0].iter().any(|e| {
            matches!(
                e,
                Event::ConnectFailed {
                    failure: ConnectFailure::ListenerUnproven,
                    ..
                }
            )
        });
        assert!(failed);
    }
    // An open realm's dialer joins an open realm's listener, with nothing to prove.
    let mut net = Net::new(vec![config("a.b"), config("a.b")]);
    net.connect(0, 1);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.nodes[1].stats().peers, 1);
}

#[test]
fn during_a_key_rotation_proofs_with_either_key_are_accepted_and_no_others() {
    let (old, new, wrong) = (
        b"old-realm-key-0123",
        b"new-realm-key-4567",
        b"not-the-realm-key!",
    );
    // The listener has moved to the new key and still accepts the old one.
    let rotating = || {
        let mut c = keyed("a.b", new);
        c.previous_api_key = Some(ApiKey::new(old).unwrap());
        c
    };
    for (dialer, admitted) in [
        (keyed("a.b", old), true),
        (keyed("a.b", new), true),
        (rotating(), true),
        (keyed("a.b", wrong), false),
        (config("a.b"), false),
    ] {
        let mut net = Net::new(vec![dialer, rotating()]);
        net.connect(0, 1);
        net.run_for(Duration::from_secs(1));
        assert_eq!(net.nodes[1].stats().peers, usize::from(admitted));
        assert_eq!(
            net.nodes[1].stats().refused_by_us.bad_credentials,
            u64::from(!admitted)
        );
    }
    // A node that has dropped the old key refuses it.
    let mut net = Net::new(vec![keyed("a.b", old), keyed("a.b", new)]);
    net.connect(0, 1);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.nodes[1].stats().refused_by_us.bad_credentials, 1);
}

#[test]
fn a_proof_replayed_on_another_link_is_refused() {
    let key = b"0123456789abcdef";
    let mut net = Net::new(vec![keyed("a.b", key), keyed("a.b", key)]);
    net.connect(0, 1);
    net.run_for(Duration::from_secs(1));
    let connect_bytes = net
        .log
        .iter()
        .find_map(|(i, t)| match t {
            Transmit::Send { bytes, .. } if *i == 0 => Some(bytes.clone()),
            _ => None,
        })
        .unwrap();
    // An attacker with another TLS session (another exporter value) replays the captured Connect.
    let info = LinkInfo {
        remote_id: net.id(0),
        remote_addr: addr(7),
        exporter: [0xee; 32],
    };
    let link = net.nodes[1].handle_inbound(info, net.now).unwrap();
    net.nodes[1].handle_link_data(link, Channel::CONTROL, &connect_bytes, net.now);
    net.drain(1);
    assert_eq!(net.nodes[1].stats().refused_by_us.bad_credentials, 1);
}

#[test]
fn capacity_refuses_exactly_the_excess() {
    let mut listener = config("a.b");
    listener.max_peers = 3;
    let mut configs = vec![listener];
    configs.extend((0..5).map(|_| config("a.b")));
    let mut net = Net::new(configs);
    for i in 1..6 {
        net.connect(i, 0);
    }
    net.run_for(Duration::from_secs(1));
    let s = net.nodes[0].stats();
    assert_eq!(s.peers, 3);
    assert_eq!(s.refused_by_us.capacity, 2);
    let refused = (1..6)
        .filter(|i| net.nodes[*i].stats().refused_by_peer.capacity == 1)
        .count();
    assert_eq!(refused, 2);
}

#[test]
fn pending_handshakes_are_bounded_and_time_out() {
    let mut c = config("a.b");
    c.max_pending_handshakes = 2;
    let mut node = Node::new(c, Identity::from_seed(9), 1, Instant::ZERO).unwrap();
    let info = |n: u64| LinkInfo {
        remote_id: Identity::from_seed(n).node_id(),
        remote_addr: source([192, 0, 2, n as u8], 1),
        exporter: [0; 32],
    };
    assert!(node.handle_inbound(info(1), Instant::ZERO).is_ok());
    assert!(node.handle_inbound(info(2), Instant::ZERO).is_ok());
    assert_eq!(
        node.handle_inbound(info(3), Instant::ZERO),
        Err(CloseCode::Refused(RefuseReason::Capacity))
    );
    assert_eq!(node.stats().handshake_slots_full, 1);
    let deadline = node.poll_timeout().unwrap();
    assert_eq!(deadline, Instant::ZERO + Duration::from_secs(10));
    node.handle_timeout(deadline);
    let closes: Vec<_> = core::iter::from_fn(|| node.poll_transmit()).collect();
    assert_eq!(closes.len(), 2);
    assert!(closes.iter().all(|t| matches!(
        t,
        Transmit::Close {
            code: CloseCode::HandshakeTimeout,
            ..
        }
    )));
    assert_eq!(node.stats().pending_handshakes, 0);
    assert!(node.handle_inbound(info(3), deadline).is_ok());
}

#[test]
fn nothing_but_the_handshake_is_accepted_before_it_completes() {
    let mut node = Node::new(config("a.b"), Identity::from_seed(9), 1, Instant::ZERO).unwrap();
    let info = LinkInfo {
        remote_id: NodeId([5; 32]),
        remote_addr: addr(5),
        exporter: [0; 32],
    };
    let link = node.handle_inbound(info, Instant::ZERO).unwrap();
    let ping = encode(&Control::Ping(Ping { id: 1 }));
    node.handle_link_data(link, Channel::CONTROL, &ping, Instant::ZERO);
    assert_eq!(
        node.poll_transmit(),
        Some(Transmit::Close {
            link,
            code: CloseCode::ProtocolViolation
        })
    );
    assert_eq!(node.stats().protocol_violations, 1);
}

#[test]
fn garbage_and_huge_prefixes_close_only_that_link() {
    let mut net = Net::new(vec![config("a.b"), config("a.b"), config("a.b")]);
    net.connect(1, 0);
    net.connect(2, 0);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.nodes[0].stats().peers, 2);
    let link_of_1 = net.nodes[0].peer(&net.id(1)).unwrap().link;
    let link_of_2 = net.nodes[0].peer(&net.id(2)).unwrap().link;
    let now = net.now;
    let huge = [0xff, 0xff, 0xff, 0xff, 0x0f];
    net.nodes[0].handle_link_data(link_of_1, Channel::CONTROL, &huge, now);
    net.drain(0);
    // A frame whose protocol id does not end within three bytes.
    let garbage = b"\x05\xff\xff\xffbytes";
    net.nodes[0].handle_link_data(link_of_2, Channel::CONTROL, garbage, now);
    net.drain(0);
    let s = net.nodes[0].stats();
    assert_eq!((s.oversized_frames, s.malformed_frames, s.peers), (1, 1, 0));
    // Node 3 can still join.
    let mut net2 = Net::new(vec![config("a.b"), config("a.b")]);
    net2.nodes[0] = core::mem::replace(
        &mut net.nodes[0],
        Node::new(config("a.b"), Identity::from_seed(50), 0, now).unwrap(),
    );
    net2.now = now;
    net2.connect(1, 0);
    net2.run_for(Duration::from_secs(1));
    assert_eq!(net2.nodes[0].stats().peers, 1);
}

#[test]
fn a_dial_that_expected_another_node_fails() {
    let mut net = Net::new(vec![config("a.b"), config("a.b")]);
    let wrong = NodeId([9; 32]);
    let link = net.nodes[0].connect(addr(1), Some(wrong), net.now);
    net.drain(0);
    net.run_for(Duration::from_secs(1));
    let found = net.id(1);
    assert!(net.events[0].iter().any(|e| matches!(e,
        Event::ConnectFailed { link: l, failure: ConnectFailure::UnexpectedPeer { expected, found: f }, .. }
            if *l == link && *expected == wrong && *f == found)));
    assert_eq!(net.nodes[1].stats().peers, 0);
}

#[test]
fn crossing_dials_leave_exactly_one_link() {
    let mut net = Net::new(vec![config("a.b"), config("a.b")]);
    net.connect(0, 1);
    net.connect(1, 0);
    net.run_for(Duration::from_secs(2));
    let (p0, p1) = (
        net.nodes[0].peer(&net.id(1)).unwrap(),
        net.nodes[1].peer(&net.id(0)).unwrap(),
    );
    assert_eq!(
        net.wires.get(&(0, p0.link)),
        Some(&(1, p1.link)),
        "both ends kept the same link"
    );
    assert_eq!(net.wires.len(), 2);
    // Whichever dial lost reports the peer as already connected, so no caller waits forever.
    let settled = |i: usize| {
        net.events[i]
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::PeerUp { .. }
                        | Event::ConnectFailed {
                            failure: ConnectFailure::AlreadyConnected(_),
                            ..
                        }
                )
            })
            .count()
    };
    assert!(settled(0) >= 1 && settled(1) >= 1);
    let answered = net
        .events
        .iter()
        .flatten()
        .filter(|e| {
            matches!(
                e,
                Event::ConnectFailed {
                    failure: ConnectFailure::AlreadyConnected(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(answered, 1, "{:?}", net.events);
    net.run_for(Duration::from_secs(60));
    assert_eq!(
        (net.nodes[0].stats().peers, net.nodes[1].stats().peers),
        (1, 1)
    );
}

#[test]
fn close_says_goodbye_to_every_peer() {
    let mut net = Net::new(vec![config("a.b"), config("a.b"), config("a.b")]);
    net.connect(1, 0);
    net.connect(2, 0);
    net.run_for(Duration::from_secs(1));
    net.nodes[0].close(net.now);
    net.drain(0);
    net.run_for(Duration::from_secs(1));
    for i in [1, 2] {
        assert!(net.events[i].iter().any(|e| matches!(
            e,
            Event::PeerDown {
                reason: DownReason::Link(LinkError::ClosedByPeer(CloseCode::Goodbye)),
                ..
            }
        )));
        assert_eq!(net.nodes[i].stats().peers, 0);
    }
    assert_eq!(
        net.nodes[0].poll_timeout(),
        None,
        "a closed node schedules nothing"
    );
}

#[test]
fn pings_are_bounded_per_peer_and_fail_when_the_peer_goes() {
    let mut c = config("a.b");
    c.max_pings_in_flight = 4;
    let mut net = Net::new(vec![c, config("a.b")]);
    net.connect(0, 1);
    net.run_for(Duration::from_secs(1));
    let id1 = net.id(1);
    let now = net.now;
    let ids: Vec<_> = (0..4)
        .map(|_| net.nodes[0].ping(&id1, now).unwrap())
        .collect();
    assert_eq!(
        net.nodes[0].ping(&id1, now),
        Err(PingError::TooManyInFlight)
    );
    assert_eq!(
        net.nodes[0].ping(&NodeId([1; 32]), now),
        Err(PingError::NotConnected)
    );
    net.nodes[0].disconnect(&id1, now);
    net.drain(0);
    let gone = net.events[0]
        .iter()
        .filter(|e| {
            matches!(e,
        Event::PingResult { id, result: Err(PingError::PeerGone), .. } if ids.contains(id))
        })
        .count();
    assert_eq!(gone, 4);
}

#[test]
fn the_event_queue_is_bounded() {
    let mut c = config("a.b");
    c.max_queued_events = 3;
    let mut node = Node::new(c, Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    for i in 0..10 {
        let link = node.connect(addr(i), None, Instant::ZERO);
        node.handle_link_down(link, LinkError::DialFailed, Instant::ZERO);
    }
    assert_eq!(node.stats().events_dropped, 7);
    assert_eq!(core::iter::from_fn(|| node.poll_event()).count(), 3);
}

#[test]
fn same_seeds_and_inputs_give_identical_outputs() {
    let run = |seed_offset: u64| {
        let mut configs = vec![config("a.b"); 4];
        configs[0].max_peers = 2;
        let mut net = Net::new(configs);
        for (i, n) in net.nodes.iter_mut().enumerate() {
            *n = Node::new(
                n.config().clone(),
                Identity::from_seed(i as u64),
                seed_offset + i as u64,
                Instant::ZERO,
            )
            .unwrap();
        }
        for i in 1..4 {
            net.connect(i, 0);
        }
        net.connect(1, 2);
        net.run_for(Duration::from_secs(30));
        let id2 = net.id(2);
        net.nodes[1].ping(&id2, net.now).unwrap();
        net.drain(1);
        net.run_for(Duration::from_secs(1));
        (net.log, net.events)
    };
    let (log_a, events_a) = run(0);
    let (log_b, events_b) = run(0);
    assert!(log_a.len() > 20);
    assert_eq!(log_a, log_b);
    assert_eq!(events_a, events_b);
    let (log_c, _) = run(1000);
    assert_ne!(log_a, log_c, "another seed draws other correlation ids");
}

#[test]
fn a_restarted_peer_reconnects_at_once_over_a_stale_crossing_link() {
    let mut net = Net::new(vec![config("a.b"), config("a.b")]);
    // Make node 1 the one whose dial would lose a simultaneous-dial tie-break.
    let (lo, hi) = if net.id(0) < net.id(1) {
        (0, 1)
    } else {
        (1, 0)
    };
    net.connect(lo, hi);
    net.run_for(Duration::from_secs(20));
    // `hi` restarts (same identity, new state) and dials `lo`; the old link at `lo` is dead.
    let identity = net.nodes[hi].identity().clone();
    net.nodes[hi] = Node::new(config("a.b"), identity, 77, net.now).unwrap();
    // Its old link is gone: what `lo` sends on it is lost, as to a crashed process.
    net.wires.retain(|(n, _), (m, _)| *n != hi && *m != hi);
    net.events[hi].clear();
    net.connect(hi, lo);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.nodes[hi].stats().peers, 1, "{:?}", net.events[hi]);
    assert_eq!(net.nodes[lo].stats().peers, 1);
    assert_eq!(
        net.nodes[lo].peer(&net.id(hi)).unwrap().direction,
        Direction::Inbound
    );
}

/// Nodes that advertise where they listen, so the DHT can hand them out as contacts.
fn listening(n: usize) -> Vec<Config> {
    (0..n)
        .map(|i| {
            let mut c = config("a.b");
            c.listen_addrs = vec![addr(i)];
            c
        })
        .collect()
}

fn dht_results(events: &[Event]) -> Vec<&DhtEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Dht(d) => Some(d),
            _ => None,
        })
        .collect()
}

#[test]
fn a_value_put_on_one_node_is_got_on_every_other_over_on_demand_links() {
    let n = 10;
    let mut net = Net::new(listening(n));
    for i in 1..n {
        net.connect(i, 0);
    }
    net.run_for(Duration::from_secs(5));
    let op = net.nodes[3].dht_put(b"greeting", b"hello".to_vec(), net.now);
    net.drain(3);
    net.run_for(Duration::from_secs(5));
    let stored = dht_results(&net.events[3])
        .into_iter()
        .find_map(|e| match e {
            DhtEvent::Stored { op: o, acks } if *o == op => Some(*acks),
            _ => None,
        })
        .expect("the put finished");
    assert!(stored >= 5, "stored at {stored} nodes");
    let publisher = net.id(3);
    for i in (0..n).filter(|i| *i != 3) {
        let op = net.nodes[i].dht_get(b"greeting", net.now);
        net.drain(i);
        net.run_for(Duration::from_secs(5));
        let records = dht_results(&net.events[i])
            .into_iter()
            .find_map(|e| match e {
                DhtEvent::Got { op: o, records } if *o == op => Some(records.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("node {i}'s get finished"));
        assert_eq!(records.len(), 1, "node {i}");
        assert_eq!(records[0].publisher, publisher);
        assert_eq!(records[0].value, b"hello");
        assert_eq!(records[0].addrs, vec![addr(3)]);
    }
    // The realm scopes the key: another name finds nothing.
    let op = net.nodes[5].dht_get(b"other", net.now);
    net.drain(5);
    net.run_for(Duration::from_secs(5));
    assert!(dht_results(&net.events[5])
        .iter()
        .any(|e| matches!(e, DhtEvent::Got { op: o, records } if *o == op && records.is_empty())));

    // The DHT dialed nodes the application never asked for; unused, those links close, and
    // the links the application opened stay.
    let dialed: u64 = net
        .nodes
        .iter()
        .map(|n| n.stats().handshakes_completed)
        .sum();
    assert!(
        dialed > 2 * (n as u64 - 1),
        "the DHT dialed beyond the star"
    );
    net.run_for(Duration::from_secs(60));
    let closed: u64 = net.nodes.iter().map(|n| n.stats().pool_idle_closes).sum();
    assert!(closed > 0);
    for i in 1..n {
        let peers: Vec<NodeId> = net.nodes[i].peers().map(|p| p.id).collect();
        assert_eq!(peers, vec![net.id(0)], "node {i} kept only its own link");
    }
}

#[test]
fn on_demand_links_stay_within_max_peers_by_evicting_the_least_recently_used() {
    let n = 16;
    let mut configs = listening(n);
    configs[1].max_peers = 4;
    let mut net = Net::new(configs);
    for i in 1..n {
        net.connect(i, 0);
    }
    net.run_for(Duration::from_secs(5));
    // Node 1 looks up many targets: it needs more nodes than it may hold links to.
    let mut ops = Vec::new();
    for round in 0..6u8 {
        let target = NodeId([round.wrapping_mul(41); 32]);
        ops.push(net.nodes[1].dht_find_node(&target, net.now));
        net.drain(1);
        net.run_for(Duration::from_secs(3));
    }
    let results = dht_results(&net.events[1]);
    for op in &ops {
        assert!(
            results
                .iter()
                .any(|e| matches!(e, DhtEvent::NodesFound { op: o, closest, .. } if o == op && !closest.is_empty())),
            "lookup {op:?} found nodes: {results:?}"
        );
    }
    let stats = net.nodes[1].stats();
    assert!(stats.pool_evictions > 0, "{stats:?}");
    // The application's own link to node 0 was never evicted.
    assert!(net.nodes[1].peer(&net.id(0)).is_some());
}

#[test]
fn dht_frames_before_the_handshake_close_the_link() {
    let mut net = Net::new(listening(2));
    let link = net.nodes[0].connect(addr(1), None, net.now);
    // Node 1 gets a FindNode where it waits for Connect.
    net.drain(0);
    let &(_, remote) = net.wires.get(&(0, link)).unwrap();
    let frame = encode(&DhtMessage::FindNode(FindNode {
        id: 1,
        target: [0; 32],
    }));
    let channel = ProtocolId::DHT.channel();
    net.nodes[1].handle_link_data(remote, channel, &frame, net.now);
    net.drain(1);
    assert_eq!(net.nodes[1].stats().protocol_violations, 1);
    assert_eq!(net.nodes[1].dht().stats().requests_received, 0);
}

#[test]
fn a_dht_flood_over_a_link_is_rate_limited_and_leaves_table_and_store_bounded() {
    let mut configs = listening(2);
    configs[0].dht.max_records = 40;
    let mut net = Net::new(configs);
    let link = net.connect(1, 0);
    net.run_for(Duration::from_secs(1));
    let flooder = net.nodes[1].identity().clone();
    // Node 1 writes 2,000 requests at once on its link: half FindNode, half Store.
    let mut bytes = Vec::new();
    for id in 0..2_000u64 {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&id.to_be_bytes());
        let frame = if id % 2 == 0 {
            DhtMessage::FindNode(FindNode { id, target: key })
        } else {
            let ttl = Duration::from_secs(300);
            let record = Record::sign(&flooder, &key, &[addr(1)], vec![7; 32], ttl, id, net.now);
            DhtMessage::Store(Store {
                id,
                key,
                record: record.to_wire(net.now),
            })
        };
        encode_into(&frame, &mut bytes);
    }
    let &(_, remote) = net.wires.get(&(1, link)).unwrap();
    let channel = ProtocolId::DHT.channel();
    net.nodes[0].handle_link_data(remote, channel, &bytes, net.now);
    net.drain(0);
    net.run_for(Duration::from_secs(1));
    let node = &net.nodes[0];
    let stats = node.dht().stats();
    let burst = u64::from(node.config().dht.peer_request_burst);
    assert!(stats.rate_limited >= 2_000 - burst, "{stats:?}");
    assert!(node.dht().store().len() <= 40);
    assert_eq!(node.dht().store().check(), Ok(()));
    assert_eq!(node.dht().table().check(), Ok(()));
    assert!(
        node.dht().table().get(&net.id(1)).is_some(),
        "refusing does not drop the flooder as a contact"
    );
    // Refusing is not closing: the flooder stays a peer.
    assert_eq!(node.peer_count(), 1);
}

#[test]
fn a_request_racing_an_idle_close_is_sent_again_over_a_new_link() {
    let mut net = Net::new(listening(3));
    net.connect(1, 0);
    net.connect(2, 0);
    net.run_for(Duration::from_secs(2));
    // Joining, 1 and 2 found each other: one of them holds an on-demand link to the other.
    let (a, b, used) = [(1, 2), (2, 1)]
        .into_iter()
        .find_map(|(a, b)| {
            let id_b = net.id(b);
            net.nodes[a]
                .core
                .links
                .iter()
                .find(|(_, l)| l.remote == Some(id_b) && l.on_demand())
                .map(|(_, l)| (a, b, l.last_used))
        })
        .expect("the DHT linked 1 and 2 on demand");
    // `b` asks `a` something 5 ms before `a` closes that link for idleness, so the close
    // crosses the request.
    let closes_at = used + net.nodes[a].config().pool_idle_timeout;
    net.run_until(Instant::from_micros(closes_at.as_micros() - 5_000));
    let target = net.id(a);
    let op = net.nodes[b].dht_find_node(&target, net.now);
    net.drain(b);
    net.run_for(Duration::from_secs(3));
    assert!(
        net.nodes[a].stats().pool_idle_closes >= 1,
        "the link was closed"
    );
    let found = dht_results(&net.events[b])
        .into_iter()
        .find_map(|e| match e {
            DhtEvent::NodesFound { op: o, closest, .. } if *o == op => Some(closest.clone()),
            _ => None,
        })
        .expect("the lookup finished");
    assert_eq!(found.first().map(|(id, _)| *id), Some(target));
    assert_eq!(net.nodes[b].dht().stats().requests_failed, 0);
    assert!(
        net.nodes[b].dht().table().get(&target).is_some(),
        "still a contact"
    );
}

/// Records the address of everything a prefetch names.
#[derive(Default)]
struct Named(Vec<usize>);

impl Prefetch for Named {
    fn prefetch<T>(&mut self, at: &T) {
        self.0.push(at as *const T as usize);
    }
}

#[test]
fn prefetch_names_the_slot_of_the_link_an_input_arrives_on_and_of_the_next_timer() {
    let mut net = Net::new(vec![config("a"), config("a"), config("a")]);
    let first = net.connect(0, 1);
    let second = net.connect(0, 2);
    net.run_for(Duration::from_millis(100));
    let node = &net.nodes[0];
    let slot_of = |l: LinkId| node.core.links.slot(l).expect("a live link") as *const _ as usize;

    for link in [first, second] {
        let mut named = Named::default();
        let named_link = node.prefetch(Some(link), &mut named);
        assert!(named.0.contains(&slot_of(link)), "{link:?}");
        assert_eq!(named_link, Some(link));
    }
    // A timer is for the link at the top of the timer heap.
    let top = node
        .core
        .timers_slice()
        .first()
        .expect("two links, two timers")
        .1;
    let mut named = Named::default();
    assert_eq!(node.prefetch(None, &mut named), Some(top));
    assert!(named.0.contains(&slot_of(top)));
}

#[test]
fn the_fields_inputs_touch_share_the_first_eight_cache_lines() {
    // `Node` is `repr(C)` with its hot fields first (see there); the last is the links'
    // bookkeeping, followed by the inline links and then the cold fields.
    let hot = core::mem::offset_of!(Node, core)
        + core::mem::offset_of!(link_core::Core, links)
        + table::Links::SLOTS_OFFSET;
    assert!(hot <= Node::HOT_BYTES, "hot fields span {hot} bytes");
    assert_eq!(Node::HOT_BYTES % 64, 0, "whole cache lines");
    assert!(
        core::mem::size_of::<Node>() > 4 * hot,
        "most of a node is links and cold fields"
    );
}

#[test]
fn a_subsystem_frame_that_overtakes_the_connect_ack_is_read_once_the_handshake_is_done() {
    let mut node = Node::new(config("a.b"), Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let peer = Identity::from_seed(2);
    let link = node.connect(addr(2), None, Instant::ZERO);
    let info = LinkInfo {
        remote_id: peer.node_id(),
        remote_addr: addr(2),
        exporter: [3; 32],
    };
    node.handle_link_up(link, info, Instant::ZERO);
    while node.poll_transmit().is_some() {}
    // The listener's DHT request comes on its own channel before the `ConnectAck`.
    let find = encode(&DhtMessage::FindNode(FindNode {
        id: 41,
        target: [9; 32],
    }));
    let dht = ProtocolId::DHT.channel();
    node.handle_link_data(link, dht, &find, Instant::ZERO);
    assert_eq!(node.stats().protocol_violations, 0, "held, not refused");
    assert_eq!(node.dht().stats().requests_received, 0, "not read yet");
    let ack = encode(&Control::ConnectAck(crate::wire::ConnectAck {
        version: crate::wire::Versions::OURS.max,
        node_id: peer.node_id(),
        listen_addrs: vec![addr(2).into()],
        roles: 0,
        protocols: node.protocols(),
        auth: None,
    }));
    node.handle_link_data(link, Channel::CONTROL, &ack, Instant::ZERO);
    assert_eq!(node.peer_count(), 1);
    assert_eq!(
        node.dht().stats().requests_received,
        1,
        "read once established"
    );
    let answered = core::iter::from_fn(|| node.poll_transmit())
        .any(|t| matches!(t, Transmit::Send { channel, .. } if channel == dht));
    assert!(answered);
}

#[test]
fn an_inbound_link_may_carry_nothing_but_the_handshake_before_connect() {
    let mut node = Node::new(config("a.b"), Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let info = LinkInfo {
        remote_id: NodeId([5; 32]),
        remote_addr: addr(5),
        exporter: [0; 32],
    };
    let link = node.handle_inbound(info, Instant::ZERO).unwrap();
    let find = encode(&DhtMessage::FindNode(FindNode {
        id: 1,
        target: [0; 32],
    }));
    node.handle_link_data(link, ProtocolId::DHT.channel(), &find, Instant::ZERO);
    assert_eq!(node.stats().protocol_violations, 1);
}

/// Finds the DHT requests among what a node sent on `link`.
fn dht_sent(node: &mut Node, link: LinkId) -> Vec<DhtMessage> {
    let mut out = Vec::new();
    while let Some(t) = node.poll_transmit() {
        let Transmit::Send {
            link: l,
            channel,
            bytes,
        } = t
        else {
            continue;
        };
        if l != link || channel != ProtocolId::DHT.channel() {
            continue;
        }
        let mut d = crate::wire::Decoder::new(1 << 20);
        d.push(&bytes);
        while let Ok(Some(frame)) = d.next_frame() {
            out.push(crate::wire::decode_message::<DhtMessage>(frame).unwrap());
        }
    }
    out
}

/// A node that listens (so its DHT runs with contacts), and the identity of a peer for it.
fn a_listening_node_and_a_peer() -> (Node, Identity) {
    let config = listening(1).remove(0);
    let node = Node::new(config, Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    (node, Identity::from_seed(2))
}

#[test]
fn a_link_closed_for_room_keeps_its_contact_and_sends_its_requests_again() {
    let (mut node, peer) = a_listening_node_and_a_peer();
    let link = crate::testnet::handshake_from(&mut node, &peer, addr(2), Instant::ZERO);
    // The join asks the peer; its answer never comes.
    let asked = dht_sent(&mut node, link);
    assert!(
        matches!(asked.as_slice(), [DhtMessage::FindNode(_)]),
        "{asked:?}"
    );
    // This node closes the link to make room (what an eviction does) while the request waits.
    let now = Instant::ZERO + Duration::from_secs(2);
    node.close_link(link, CloseCode::Goodbye, now);
    let dht = node.dht();
    assert!(
        dht.table().get(&peer.node_id()).is_some(),
        "the contact stays"
    );
    assert_eq!(dht.stats().requests_failed, 0, "the request did not fail");
    // It goes again: the node dials the peer anew.
    let redial = core::iter::from_fn(|| node.poll_transmit())
        .any(|t| matches!(t, Transmit::Open { addr: a, expected: Some(e), .. } if a == addr(2) && e == peer.node_id()));
    assert!(redial);
}

#[test]
fn a_peer_that_reconnects_gets_no_fresh_burst_of_requests() {
    let (mut node, peer) = a_listening_node_and_a_peer();
    let burst = node.config().dht.peer_request_burst as u64;
    let flood = |node: &mut Node, link: LinkId, n: u64| {
        let mut bytes = Vec::new();
        for id in 0..n {
            let find = DhtMessage::FindNode(FindNode {
                id,
                target: [0; 32],
            });
            encode_into(&find, &mut bytes);
        }
        node.handle_link_data(link, ProtocolId::DHT.channel(), &bytes, Instant::ZERO);
        let refused = dht_sent(node, link)
            .iter()
            .filter(|m| matches!(m, DhtMessage::Refused(_)))
            .count();
        refused as u64
    };
    let link = crate::testnet::handshake_from(&mut node, &peer, addr(2), Instant::ZERO);
    assert_eq!(
        flood(&mut node, link, burst + 10),
        10,
        "the burst, then refusals"
    );
    node.close_link(link, CloseCode::Goodbye, Instant::ZERO);
    while node.poll_transmit().is_some() {}
    let again = crate::testnet::handshake_from(&mut node, &peer, addr(2), Instant::ZERO);
    assert_eq!(
        flood(&mut node, again, 10),
        10,
        "no time passed: still empty"
    );
}

#[test]
fn rate_buckets_of_quiet_peers_are_forgotten_and_the_rest_stay_bounded() {
    let (mut node, _) = a_listening_node_and_a_peer();
    let ask = |node: &mut Node, seed: u64, now: Instant| {
        let who = Identity::from_seed(1_000 + seed);
        let from = SocketAddr::new(core::net::Ipv4Addr::new(127, 0, 0, 1).into(), 20_000);
        let link = crate::testnet::handshake_from(node, &who, from, now);
        let find = encode(&DhtMessage::FindNode(FindNode {
            id: 1,
            target: [0; 32],
        }));
        node.handle_link_data(link, ProtocolId::DHT.channel(), &find, now);
        node.close_link(link, CloseCode::Goodbye, now);
        while node.poll_transmit().is_some() {}
    };
    for seed in 0..200 {
        ask(&mut node, seed, Instant::ZERO);
    }
    let busy = node.dht().rate_states();
    assert!((64..=200).contains(&busy), "{busy} peers remembered");
    // Ten seconds on, every bucket has refilled: once the map has doubled, those are forgotten
    // and only the peers heard from since remain.
    let later = Instant::ZERO + Duration::from_secs(10);
    for seed in 500..560 {
        ask(&mut node, seed, later);
    }
    assert_eq!(node.dht().rate_states(), 60);
}

#[test]
fn forged_records_in_answers_on_the_lookup_path_are_ignored() {
    let (mut node, peer) = a_listening_node_and_a_peer();
    let link = crate::testnet::handshake_from(&mut node, &peer, addr(2), Instant::ZERO);
    let _join = dht_sent(&mut node, link);
    let op = node.dht_get(b"k", Instant::ZERO);
    let asked = dht_sent(&mut node, link);
    let Some(DhtMessage::FindValue(find)) = asked.first() else {
        panic!("{asked:?}");
    };
    // The peer answers with a record it altered, one signed under another key, and one of its
    // own that is genuine.
    let key = find.key;
    let ttl = Duration::from_secs(60);
    let other = Identity::from_seed(9);
    let now = Instant::ZERO;
    let mut altered = Record::sign(&other, &key, &[], b"real".to_vec(), ttl, 1, now).to_wire(now);
    altered.value = b"fake".to_vec();
    let elsewhere = Record::sign(&other, &[1; 32], &[], b"x".to_vec(), ttl, 1, now).to_wire(now);
    let genuine = Record::sign(&peer, &key, &[], b"mine".to_vec(), ttl, 1, now).to_wire(now);
    let answer = DhtMessage::Records(crate::dht::messages::Records {
        id: find.id,
        records: vec![altered, elsewhere, genuine],
        nodes: vec![],
        more: false,
    });
    node.handle_link_data(link, ProtocolId::DHT.channel(), &encode(&answer), now);
    let got = core::iter::from_fn(|| node.poll_event()).find_map(|e| match e {
        Event::Dht(DhtEvent::Got { op: o, records }) if o == op => Some(records),
        _ => None,
    });
    let records = got.expect("the get finished");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].value, b"mine");
    assert_eq!(records[0].publisher, peer.node_id());
    assert_eq!(node.dht().stats().forged_records, 2);
}

#[test]
fn dials_to_reach_nodes_by_id_stay_within_the_dial_budget() {
    let mut config = listening(1).remove(0);
    config.dial_rate = 1;
    config.dial_burst = 2;
    let mut node = Node::new(config, Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let peer = Identity::from_seed(2);
    let link = crate::testnet::handshake_from(&mut node, &peer, addr(2), Instant::ZERO);
    let asked = dht_sent(&mut node, link);
    let Some(DhtMessage::FindNode(find)) = asked.first() else {
        panic!("{asked:?}");
    };
    // The peer's answer names ten nodes this node has no link to: the lookup asks three.
    let nodes = (0..10u8)
        .map(|i| crate::dht::messages::WireContact {
            id: NodeId([i + 100; 32]),
            addr: addr(100 + usize::from(i)).into(),
        })
        .collect();
    let answer = DhtMessage::Nodes(crate::dht::messages::Nodes { id: find.id, nodes });
    node.handle_link_data(
        link,
        ProtocolId::DHT.channel(),
        &encode(&answer),
        Instant::ZERO,
    );
    let opens = core::iter::from_fn(|| node.poll_transmit())
        .filter(|t| matches!(t, Transmit::Open { .. }))
        .count();
    assert_eq!(opens, 2, "the burst");
    assert!(node.stats().dials_throttled >= 1);
}

/// The trust events node `i` has seen.
fn trust_events(net: &Net, i: usize) -> Vec<crate::trust::TrustEvent> {
    net.events[i]
        .iter()
        .filter_map(|e| match e {
            Event::Trust(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_first_key_at_a_dialed_address_is_pinned_and_another_is_refused_until_revoked() {
    use crate::trust::TrustEvent;
    let mut net = Net::new(vec![config("a.b"), config("a.b"), config("a.b")]);
    let (id1, id2) = (net.id(1), net.id(2));
    let name = addr(1).to_string();
    // Node 0 pinned node 2's key at node 1's address (as if node 2 had been there before).
    assert!(net.nodes[0].trust_pin(&name, id2));
    net.connect(0, 1);
    net.run_for(Duration::from_millis(100));
    let failure = net.events[0].iter().find_map(|e| match e {
        Event::ConnectFailed { failure, .. } => Some(failure.clone()),
        _ => None,
    });
    let expected = ConnectFailure::FingerprintMismatch {
        name: name.clone(),
        pinned: id2,
        presented: id1,
    };
    assert_eq!(failure, Some(expected.clone()));
    let told = alloc::format!("{expected}");
    assert!(told.contains(&alloc::format!("sha256:{id2}")), "{told}");
    assert!(told.contains(&alloc::format!("sha256:{id1}")), "{told}");
    assert_eq!(
        trust_events(&net, 0),
        vec![TrustEvent::Mismatch {
            name: name.clone(),
            pinned: id2,
            presented: id1
        }]
    );
    assert_eq!(net.nodes[0].stats().peers, 0);
    assert_eq!(net.nodes[0].stats().fingerprint_mismatches, 1);
    // Revoked on purpose: the key found next is trusted and pinned.
    let revoked = net.command(0, |n, now| n.trust_revoke(&name, now));
    assert_eq!(revoked, Some(id2));
    net.connect(0, 1);
    net.run_for(Duration::from_millis(100));
    assert!(net.nodes[0].peer(&id1).is_some());
    assert_eq!(net.nodes[0].trust_pins().get(&name), Some(id1));
    assert_eq!(
        trust_events(&net, 0)[1..],
        [
            TrustEvent::Revoked {
                name: name.clone(),
                node: id2
            },
            TrustEvent::Pinned {
                name: name.clone(),
                node: id1
            }
        ]
    );
    // The listener pinned nothing (inbound), and a dial by node id pins nothing either.
    assert!(net.nodes[1].trust_pins().is_empty());
    let link = net.command(0, |n, now| n.connect(addr(2), Some(id2), now));
    net.run_for(Duration::from_millis(100));
    assert!(net.nodes[0].peer(&id2).is_some(), "{link:?}");
    assert_eq!(net.nodes[0].trust_pins().len(), 1);
}

#[test]
fn pins_are_bounded_and_never_evicted() {
    use crate::trust::TrustEvent;
    let mut full = config("a.b");
    full.max_pins = 1;
    let mut net = Net::new(vec![full, config("a.b"), config("a.b")]);
    let id1 = net.id(1);
    assert!(
        !net.nodes[0].trust_pin("two words", id1),
        "not a name a pin file can hold"
    );
    assert!(!net.nodes[0].trust_pin("#comment", id1));
    assert!(net.nodes[0].trust_pin("seed.example:4433", id1));
    assert!(!net.nodes[0].trust_pin("other.example:4433", id1));
    net.connect(0, 2);
    net.run_for(Duration::from_millis(100));
    // Connected, but not pinned: the one pin stays.
    assert!(net.nodes[0].peer(&net.id(2)).is_some());
    assert_eq!(net.nodes[0].trust_pins().len(), 1);
    assert_eq!(
        net.nodes[0].trust_pins().get("seed.example:4433"),
        Some(id1)
    );
    assert_eq!(
        trust_events(&net, 0),
        vec![TrustEvent::NotPinned {
            name: addr(2).to_string(),
            node: net.id(2)
        }]
    );
}

/// Opens an inbound link from `from` on `node` for `who`, sends its `Connect` with a proof
/// under `key` (none without one), and returns the refusal, if any.
fn attempt(
    node: &mut Node,
    who: &Identity,
    from: SocketAddr,
    key: Option<&[u8]>,
    now: Instant,
) -> Option<RefuseReason> {
    use crate::wire::{Connect, Versions};
    let exporter = [9; 32];
    let info = LinkInfo {
        remote_id: who.node_id(),
        remote_addr: from,
        exporter,
    };
    let link = node.handle_inbound(info, now).expect("a handshake slot");
    let realm = node.config().realm.as_str().to_owned();
    let auth = key.map(|k| {
        let key = ApiKey::new(k).unwrap();
        crate::auth::realm_proof(
            crate::auth::Prover::Dialer,
            &key,
            &realm,
            &who.node_id(),
            &exporter,
        )
    });
    let connect = Control::Connect(Connect {
        versions: Versions::OURS,
        node_id: who.node_id(),
        realm,
        auth,
        listen_addrs: vec![from.into()],
        roles: 0,
        protocols: node.protocols(),
    });
    node.handle_link_data(link, Channel::CONTROL, &encode(&connect), now);
    let mut refused = None;
    while let Some(event) = node.poll_event() {
        if let Event::InboundRefused { reason, .. } = event {
            refused = Some(reason);
        }
    }
    while node.poll_transmit().is_some() {}
    if node.peer(&who.node_id()).is_none() {
        node.handle_link_down(link, LinkError::Reset, now);
    }
    refused
}

fn source(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(core::net::Ipv4Addr::from(ip).into(), port)
}

#[test]
fn a_flood_of_bad_proofs_from_one_address_is_looked_at_only_up_to_its_limit() {
    let key = b"0123456789abcdef";
    let mut node = Node::new(keyed("a.b", key), Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let intruder = Identity::from_seed(2);
    let mut refusals = alloc::collections::BTreeMap::new();
    for i in 0..1000u64 {
        let now = Instant::ZERO + Duration::from_millis(i);
        let from = source([127, 0, 0, 1], 40_000 + i as u16);
        let reason = attempt(
            &mut node,
            &intruder,
            from,
            Some(&b"not-the-realm-key"[..]),
            now,
        );
        *refusals.entry(reason.map(|r| r.as_str())).or_insert(0) += 1;
        if i == 500 {
            // A member from another address is admitted in the middle of the flood.
            let member = Identity::from_seed(3);
            let from = source([127, 0, 0, 2], 5000);
            assert_eq!(attempt(&mut node, &member, from, Some(key), now), None);
            assert!(node.peer(&member.node_id()).is_some());
        }
    }
    let stats = node.stats();
    assert_eq!(stats.refused_by_us.bad_credentials, 5, "{refusals:?}");
    assert_eq!(stats.refused_by_us.rate_limited, 995, "{refusals:?}");
    assert_eq!(stats.rate_sources, 2);
    // One failure more is looked at once a twelfth of the minute has passed.
    let later = Instant::ZERO + Duration::from_secs(13);
    let from = source([127, 0, 0, 1], 1);
    let again = attempt(
        &mut node,
        &intruder,
        from,
        Some(&b"not-the-realm-key"[..]),
        later,
    );
    assert_eq!(again, Some(RefuseReason::BadCredentials));
    let now_limited = attempt(
        &mut node,
        &intruder,
        from,
        Some(&b"not-the-realm-key"[..]),
        later,
    );
    assert_eq!(now_limited, Some(RefuseReason::RateLimited));
}

/// The realm key of [`spent_valve`]'s node, and a wrong one.
const VALVE_KEY: &[u8] = b"0123456789abcdef";
const WRONG_KEY: Option<&[u8]> = Some(b"not-the-realm-key");

/// A keyed node whose valve allows three failures a minute, keeping `max_sources` sources,
/// after three addresses (192.0.2.1-3) failed once each: the valve is spent. Returns it and
/// the intruder.
fn spent_valve(max_sources: usize) -> (Node, Identity) {
    let mut config = keyed("a.b", VALVE_KEY);
    config.realm_auth_failure_limit = crate::Limit::per(3, Duration::from_secs(60));
    config.max_rate_sources = max_sources;
    let mut node = Node::new(config, Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let intruder = Identity::from_seed(2);
    for host in 1..=3 {
        let from = source([192, 0, 2, host], 1);
        let reason = attempt(&mut node, &intruder, from, WRONG_KEY, Instant::ZERO);
        assert_eq!(reason, Some(RefuseReason::BadCredentials));
    }
    (node, intruder)
}

#[test]
fn the_realm_valve_stops_repeat_offenders_but_hears_new_addresses() {
    let (mut node, intruder) = spent_valve(4096);
    let (key, bad) = (VALVE_KEY, WRONG_KEY);
    // They have failures left of their own, but the valve refuses them without a look...
    let from = source([192, 0, 2, 1], 2);
    let reason = attempt(&mut node, &intruder, from, bad, Instant::ZERO);
    assert_eq!(reason, Some(RefuseReason::RateLimited));
    // ...while an address with no failure on record is still heard, right or wrong.
    let member = Identity::from_seed(3);
    let from = source([192, 0, 2, 9], 1);
    assert_eq!(
        attempt(&mut node, &member, from, Some(key), Instant::ZERO),
        None
    );
    let from = source([192, 0, 2, 10], 1);
    let reason = attempt(&mut node, &intruder, from, bad, Instant::ZERO);
    assert_eq!(reason, Some(RefuseReason::BadCredentials));
}

#[test]
fn new_links_from_one_address_are_limited_and_the_tables_stay_bounded() {
    let mut config = config("a.b");
    config.handshake_limit = crate::Limit::per_second(2, 4);
    config.max_rate_sources = 100;
    let mut node = Node::new(config, Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let from = source([198, 51, 100, 1], 1);
    let reasons: Vec<_> = (0..6u64)
        .map(|i| {
            attempt(
                &mut node,
                &Identity::from_seed(10 + i),
                from,
                None,
                Instant::ZERO,
            )
        })
        .collect();
    let limited = Some(RefuseReason::RateLimited);
    assert_eq!(reasons, [None, None, None, None, limited, limited]);
    let half = Instant::ZERO + Duration::from_millis(500);
    assert_eq!(
        attempt(&mut node, &Identity::from_seed(20), from, None, half),
        None
    );
    // Ten thousand addresses, one link each: the table keeps at most its bound.
    for i in 0..10_000u32 {
        let from = SocketAddr::new(core::net::Ipv4Addr::from(0x0a00_0000 + i).into(), 1);
        let info = LinkInfo {
            remote_id: Identity::from_seed(7).node_id(),
            remote_addr: from,
            exporter: [0; 32],
        };
        let link = node.handle_inbound(info, half).unwrap();
        node.handle_link_down(link, LinkError::Reset, half);
        assert!(node.stats().rate_sources <= 100);
    }
}

#[test]
fn a_second_live_node_with_the_same_identity_is_reported() {
    let mut node = Node::new(config("a.b"), Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let twin = Identity::from_seed(2);
    let conflicts = |node: &mut Node| {
        let mut seen = Vec::new();
        while let Some(event) = node.poll_event() {
            if let Event::Trust(crate::trust::TrustEvent::IdentityConflict { node, old, new }) =
                event
            {
                seen.push((node, old, new));
            }
        }
        seen
    };
    let (a, b) = (source([192, 0, 2, 1], 1), source([192, 0, 2, 2], 1));
    crate::testnet::handshake_from(&mut node, &twin, a, Instant::ZERO);
    assert!(conflicts(&mut node).is_empty());
    // The same key links from another address a second later, while the first link is alive.
    let t1 = Instant::ZERO + Duration::from_secs(1);
    crate::testnet::handshake_from(&mut node, &twin, b, t1);
    assert_eq!(conflicts(&mut node), [(twin.node_id(), a, b)]);
    assert_eq!(node.stats().identity_conflicts, 1);
    // A node that comes back at the same address after a restart is no conflict, nor is one
    // whose old link had gone quiet.
    let t2 = t1 + Duration::from_secs(1);
    crate::testnet::handshake_from(&mut node, &twin, b, t2);
    assert!(conflicts(&mut node).is_empty());
    let quiet = t2 + node.config().keepalive_interval;
    crate::testnet::handshake_from(&mut node, &twin, a, quiet);
    assert!(conflicts(&mut node).is_empty());
    assert_eq!(node.stats().identity_conflicts, 1);
}

#[test]
fn pins_are_published_in_the_dht_and_members_can_compare_them() {
    // Nodes 1..5 join node 0 by its address (pinning its key there); node 5 does not publish.
    let mut net = crate::testnet::joined(6, |i| {
        let mut c = crate::testnet::config(i);
        c.publish_pins = i != 5;
        c
    });
    net.run_for(Duration::from_secs(5));
    let name = addr(0).to_string();
    let published = |net: &mut Net| {
        let key = crate::trust::dht_name(&name);
        let op = net.command(5, |n, now| n.dht_find_providers(&key, now));
        net.run_for(Duration::from_secs(5));
        net.events[5]
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Dht(DhtEvent::Got { op: o, records }) if *o == op => Some(records.clone()),
                _ => None,
            })
            .expect("the lookup ends")
    };
    let records = published(&mut net);
    let mut publishers: Vec<NodeId> = records.iter().map(|r| r.publisher).collect();
    publishers.sort();
    let mut expected: Vec<NodeId> = (1..5).map(|i| net.id(i)).collect();
    expected.sort();
    assert_eq!(
        publishers, expected,
        "every member that pinned, and only those"
    );
    for record in &records {
        assert_eq!(crate::trust::published_key(&record.value), Some(net.id(0)));
    }
    // A revoked pin is withdrawn.
    net.command(1, |n, now| n.trust_revoke(&name, now));
    net.run_for(Duration::from_secs(5));
    assert_eq!(published(&mut net).len(), 3);
}

#[test]
fn one_address_holds_at_most_a_quarter_of_the_handshake_slots() {
    let mut config = config("a.b");
    config.max_pending_handshakes = 8;
    let mut node = Node::new(config, Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let open = |node: &mut Node, ip: [u8; 4], port: u16| {
        let info = LinkInfo {
            remote_id: Identity::from_seed(u64::from(port)).node_id(),
            remote_addr: source(ip, port),
            exporter: [0; 32],
        };
        node.handle_inbound(info, Instant::ZERO)
    };
    // Connections that never send `Connect`: the address gets two slots of eight.
    assert!(open(&mut node, [198, 51, 100, 7], 1).is_ok());
    assert!(open(&mut node, [198, 51, 100, 7], 2).is_ok());
    let limited = Err(CloseCode::Refused(RefuseReason::RateLimited));
    assert_eq!(open(&mut node, [198, 51, 100, 7], 3), limited);
    assert_eq!(node.stats().refused_by_us.rate_limited, 1);
    // Everyone else still finds room.
    for port in 10..16 {
        assert!(open(&mut node, [198, 51, 100, port as u8], port).is_ok());
    }
}

#[test]
fn with_the_valve_spent_a_full_failure_table_hears_no_new_address() {
    let (mut node, intruder) = spent_valve(3);
    let (key, bad) = (VALVE_KEY, WRONG_KEY);
    // A fourth address would push one of the three out and let it come back clean: while the
    // valve is spent and the table is full, new addresses wait too.
    let from = source([192, 0, 2, 4], 1);
    let reason = attempt(&mut node, &intruder, from, bad, Instant::ZERO);
    assert_eq!(reason, Some(RefuseReason::RateLimited));
    // Once the valve refills, new addresses are heard again.
    let later = Instant::ZERO + Duration::from_secs(60);
    let member = Identity::from_seed(3);
    assert_eq!(
        attempt(
            &mut node,
            &member,
            source([192, 0, 2, 5], 1),
            Some(key),
            later
        ),
        None
    );
}

#[test]
fn two_dials_to_one_node_at_one_address_are_one_link() {
    let mut node = Node::new(config("a.b"), Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let peer = Identity::from_seed(2).node_id();
    let other = Identity::from_seed(3).node_id();
    let at = source([192, 0, 2, 1], 4433);
    let first = node.connect(at, Some(peer), Instant::ZERO);
    // Each end could complete two at once in another order and keep another one of them.
    assert_eq!(node.connect(at, Some(peer), Instant::ZERO), first);
    // Another node expected there, or another address, is another dial.
    assert_ne!(node.connect(at, Some(other), Instant::ZERO), first);
    let elsewhere = source([192, 0, 2, 2], 4433);
    assert_ne!(node.connect(elsewhere, Some(peer), Instant::ZERO), first);
    let opens = core::iter::from_fn(|| node.poll_transmit())
        .filter(|t| matches!(t, Transmit::Open { .. }))
        .count();
    assert_eq!(opens, 3);
}

#[test]
fn contacts_are_addresses_others_can_dial() {
    use super::handshake::contact_addr;
    let public = source([198, 51, 100, 7], 4433);
    let private = source([192, 168, 1, 7], 4433);
    let mapped = source([198, 51, 100, 9], 30211);
    let any = source([0, 0, 0, 0], 4433);
    // A node listening where its link comes from, or on every interface at that port.
    assert_eq!(contact_addr(public, false, &[public]), Some(public));
    assert_eq!(contact_addr(public, false, &[any]), Some(public));
    // Behind a NAT: the mapping its link came from is not for others, nor its private address.
    assert_eq!(contact_addr(mapped, false, &[private]), None);
    // A dialed address works; a relay circuit's does not.
    assert_eq!(contact_addr(mapped, true, &[private]), Some(mapped));
    let circuit = crate::nat::circuit_addr(3);
    assert_eq!(contact_addr(circuit, true, &[private]), None);
    // Over a private network, where it listens there.
    let lan = source([192, 168, 1, 8], 50000);
    assert_eq!(contact_addr(lan, false, &[private]), Some(private));
    // Listening nowhere.
    assert_eq!(contact_addr(public, true, &[]), None);
}
