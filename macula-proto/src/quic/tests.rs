//! Endpoints exchanging datagrams in memory, with time jumped to the next deadline.

use alloc::vec;
use alloc::vec::Vec;

use super::testing::{addr, MemoryNet as Mesh, ONE_WAY};
use super::*;
use crate::config::{ApiKey, Realm};
use crate::node::{ConnectFailure, DownReason};
use crate::wire::RefuseReason;
use crate::Identity;
use core::net::SocketAddr;
use std::time::Instant as StdInstantForTests;

fn config(realm: &str) -> Config {
    Config::new(Realm::new(realm).unwrap())
}

#[test]
fn two_endpoints_handshake_over_quic_and_ping() {
    let mut m = Mesh::new(vec![config("q.x"), config("q.x")]);
    let id1 = m.eps[1].node_id();
    m.eps[0].connect(addr(1), Some(id1), m.now);
    m.drain(0);
    m.run_for(Duration::from_millis(50));
    assert_eq!(m.eps[0].node().stats().peers, 1, "{:?}", m.events[0]);
    assert_eq!(m.eps[1].node().stats().peers, 1);
    let peer = m.eps[1].node().peer(&m.eps[0].node_id()).unwrap();
    assert_eq!(peer.listen_addrs, vec![addr(0)]);
    let ping = m.eps[0].ping(&id1, m.now).unwrap();
    m.drain(0);
    m.run_for(Duration::from_millis(50));
    let rtt = m.events[0].iter().find_map(|e| match e {
        Event::PingResult {
            id,
            result: Ok(rtt),
            ..
        } if *id == ping => Some(*rtt),
        _ => None,
    });
    assert_eq!(rtt, Some(ONE_WAY.saturating_mul(2)));
    // Keep-alives carry the peers through a quiet minute.
    m.run_for(Duration::from_secs(60));
    assert_eq!(m.eps[0].node().stats().peers, 1);
}

#[test]
fn refusals_reach_the_dialer_with_their_reason() {
    let mut keyed = config("q.x");
    keyed.api_key = Some(ApiKey::new(b"a-very-secret-key").unwrap());
    let mut m = Mesh::new(vec![config("q.y"), keyed, config("q.x")]);
    m.eps[0].connect(addr(2), None, m.now); // wrong realm
    m.drain(0);
    m.eps[2].connect(addr(1), None, m.now); // no key
    m.drain(2);
    m.run_for(Duration::from_millis(100));
    let failure = |ev: &Vec<Event>| {
        ev.iter().find_map(|e| match e {
            Event::ConnectFailed {
                failure: ConnectFailure::Refused { reason, .. },
                ..
            } => Some(*reason),
            _ => None,
        })
    };
    assert_eq!(failure(&m.events[0]), Some(RefuseReason::WrongRealm));
    assert_eq!(failure(&m.events[2]), Some(RefuseReason::BadCredentials));
    assert_eq!(m.eps[2].node().stats().refused_by_us.wrong_realm, 1);
    assert_eq!(m.eps[1].node().stats().refused_by_us.bad_credentials, 1);
    assert_eq!(m.eps[0].node().stats().refused_by_peer.wrong_realm, 1);
    m.run_for(Duration::from_secs(5));
    assert!(
        m.eps.iter().all(|e| e.is_idle()),
        "refused connections are closed and drained"
    );
}

#[test]
fn an_unexpected_node_at_the_address_fails_the_dial() {
    let mut m = Mesh::new(vec![config("q.x"), config("q.x")]);
    m.eps[0].connect(addr(1), Some(NodeId([3; 32])), m.now);
    m.drain(0);
    m.run_for(Duration::from_millis(100));
    assert!(m.events[0].iter().any(|e| matches!(
        e,
        Event::ConnectFailed {
            failure: ConnectFailure::UnexpectedPeer { .. },
            ..
        }
    )));
    assert_eq!(m.eps[1].node().stats().peers, 0);
}

#[test]
fn garbage_datagrams_are_counted_and_harmless() {
    let mut m = Mesh::new(vec![config("q.x"), config("q.x"), config("q.x")]);
    m.eps[0].connect(addr(1), None, m.now);
    m.drain(0);
    m.run_for(Duration::from_millis(50));
    for n in 0..200usize {
        let junk: Vec<u8> = (0..(n % 1300)).map(|k| (k * 31 + n) as u8).collect();
        m.eps[1].handle_datagram(addr(2), None, &junk, m.now);
        m.drain(1);
    }
    assert!(
        m.eps[1].stats().datagrams_dropped >= 190,
        "{:?}",
        m.eps[1].stats()
    );
    m.eps[2].connect(addr(1), None, m.now);
    m.drain(2);
    m.run_for(Duration::from_millis(50));
    assert_eq!(m.eps[1].node().stats().peers, 2);
}

#[test]
fn close_is_seen_as_a_goodbye_and_drains() {
    let mut m = Mesh::new(vec![config("q.x"), config("q.x")]);
    m.eps[0].connect(addr(1), None, m.now);
    m.drain(0);
    m.run_for(Duration::from_millis(50));
    m.eps[0].close(m.now);
    m.drain(0);
    m.run_for(Duration::from_secs(5));
    assert!(m.events[1].iter().any(|e| matches!(
        e,
        Event::PeerDown {
            reason: DownReason::Link(LinkError::ClosedByPeer(CloseCode::Goodbye)),
            ..
        }
    )));
    assert!(m.eps[0].is_idle() && m.eps[1].is_idle());
}

#[test]
fn seeded_crypto_makes_quic_runs_byte_identical() {
    let run = |salt: u64| {
        let mut m = Mesh::new(vec![config("q.x"), config("q.x"), config("q.x")]);
        if salt != 0 {
            // Another seed for endpoint 0 only.
            let mut cfg = EndpointConfig::new(
                config("q.x"),
                Identity::from_seed(0),
                salt,
                StdInstantForTests::now(),
            );
            cfg.node.listen_addrs = vec![addr(0)];
            cfg.seeded_crypto = true;
            m.eps[0] = Endpoint::new(cfg, Instant::ZERO).unwrap();
        }
        m.eps[0].connect(addr(1), None, m.now);
        m.drain(0);
        m.eps[2].connect(addr(1), None, m.now);
        m.drain(2);
        m.run_for(Duration::from_secs(20));
        assert_eq!(m.eps[1].node().stats().peers, 2);
        (m.trace, m.events)
    };
    let (a, ev_a) = run(0);
    let (b, ev_b) = run(0);
    assert_eq!(a, b, "same seeds, same bytes on the wire");
    assert_eq!(ev_a, ev_b);
    let (c, _) = run(99);
    assert_ne!(a, c, "another seed, other bytes");
}

#[test]
fn quinn_timers_round_up_so_they_are_due_when_reported() {
    let epoch = StdInstantForTests::now();
    let t = epoch + core::time::Duration::from_nanos(1_000_400);
    assert_eq!(core_instant(epoch, t), Instant::from_micros(1_001));
    let exact = epoch + core::time::Duration::from_micros(7);
    assert_eq!(core_instant(epoch, exact), Instant::from_micros(7));
}

#[test]
fn spoofed_initials_cannot_fill_the_listener() {
    let mut listener = config("q.x");
    listener.max_pending_handshakes = 8;
    let mut m = Mesh::new(vec![config("q.x"), listener, config("q.x")]);
    // Capture real Initials from endpoint 0 (each dial has its own connection id; each expects
    // another node, as two dials to one node at one address are one), then replay them at
    // endpoint 1 from spoofed source addresses that will never answer.
    let capture = EndpointConfig::new(
        config("q.x"),
        Identity::from_seed(9),
        9,
        StdInstantForTests::now(),
    );
    let mut spoofer = Endpoint::new(capture, Instant::ZERO).unwrap();
    for i in 0..60 {
        let expected = Identity::from_seed(100 + i).node_id();
        spoofer.connect(addr(1), Some(expected), m.now);
    }
    let initials: Vec<Datagram> = core::iter::from_fn(|| spoofer.poll_transmit()).collect();
    assert_eq!(initials.len(), 60);
    for (i, initial) in initials.iter().enumerate() {
        let spoofed = SocketAddr::new(core::net::Ipv4Addr::new(198, 51, 100, i as u8).into(), 1000);
        m.eps[1].handle_datagram(spoofed, None, &initial.contents, m.now);
        let _ = core::iter::from_fn(|| m.eps[1].poll_transmit()).count();
    }
    let s = m.eps[1].stats();
    assert!(
        s.connections <= 8,
        "half-open connections are capped: {s:?}"
    );
    assert!(
        s.retries >= 50,
        "senders past half the slots must prove their address: {s:?}"
    );
    // After the handshake timeout the half-open slots are free again.
    m.run_for(Duration::from_secs(15));
    assert_eq!(m.eps[1].stats().connections, 0, "{:?}", m.eps[1].stats());
    m.eps[2].connect(addr(1), None, m.now);
    m.drain(2);
    m.run_for(Duration::from_millis(100));
    assert_eq!(m.eps[1].node().stats().peers, 1);
}

#[test]
fn a_peer_that_does_not_read_is_dropped_at_the_send_buffer_limit() {
    let mut sender = config("q.x");
    sender.max_link_send_buffer = 64 * 1024;
    sender.max_frame_size = 32 * 1024;
    sender.channel_backlog = 16 * 1024;
    let mut m = Mesh::new(vec![sender, config("q.x")]);
    m.eps[0].connect(addr(1), None, m.now);
    m.drain(0);
    m.run_for(Duration::from_millis(50));
    let link = m.eps[0].node().peer(&m.eps[1].node_id()).unwrap().link;
    // Endpoint 1 goes silent: nothing it sends (acks, flow-control credit) arrives any more.
    m.mute(1);
    // Far more than the stream's flow-control window: the rest must wait in the endpoint.
    m.eps[0].send_raw(link, Channel::CONTROL, &vec![0u8; 3 << 20], m.now);
    m.drain(0);
    m.run_for(Duration::from_millis(100));
    assert!(
        m.events[0].iter().any(|e| matches!(
            e,
            Event::PeerDown {
                reason: DownReason::Local(CloseCode::SendBufferFull),
                ..
            }
        )),
        "{:?}",
        m.events[0]
    );
}

#[test]
fn gso_batches_stay_under_the_udp_size_limit() {
    let mut m = Mesh::new(vec![config("q.x"), config("q.x")]);
    m.eps[0].connect(addr(1), None, m.now);
    m.drain(0);
    m.run_for(Duration::from_millis(50));
    let link = m.eps[0].node().peer(&m.eps[1].node_id()).unwrap().link;
    m.eps[0].set_max_datagrams(64);
    m.eps[0].send_raw(link, Channel::CONTROL, &vec![0u8; 256 * 1024], m.now);
    let batches: Vec<Datagram> = core::iter::from_fn(|| m.eps[0].poll_transmit()).collect();
    assert!(
        batches.iter().any(|d| d.segments().count() > 1),
        "bursts are batched"
    );
    for d in &batches {
        assert!(d.segments().count() <= MAX_GSO_SEGMENTS);
        assert!(d.contents.len() <= 65_507, "{} bytes", d.contents.len());
    }
}

#[test]
fn call_outcomes_survive_a_burst_larger_than_the_event_queue() {
    use crate::rpc::{CallError, CallOptions, RpcEvent};
    let mut small = config("q.x");
    small.max_queued_events = 4;
    small.rpc.max_calls = 16;
    let mut m = Mesh::new(vec![small, config("q.x")]);
    let id1 = m.eps[1].node_id();
    m.eps[0].connect(addr(1), Some(id1), m.now);
    m.drain(0);
    m.run_for(Duration::from_millis(50));
    let now = m.now;
    // Sixteen calls share one discovery, so their outcomes come in one burst.
    let ids: Vec<_> = (0..16)
        .map(|_| {
            m.eps[0].with_node(now, |n, now| {
                n.rpc_call("nobody.here", vec![], CallOptions::default(), now)
            })
        })
        .collect::<Result<_, _>>()
        .unwrap();
    m.drain(0);
    m.run_for(Duration::from_secs(1));
    for id in ids {
        let told = m.events[0].iter().any(|e| {
            matches!(e, Event::Rpc(RpcEvent::Done { id: i, result: Err(CallError::NoResponders) }) if *i == id)
        });
        assert!(told, "call {id:?} has its outcome");
    }
}
