//! The data path on the core: a consumer that stops reading holds its sender back, nothing is
//! lost, memory stays bounded; an inbox that drops says so.

use alloc::vec;
use alloc::vec::Vec;

use super::EchoData;
use crate::config::{Config, Realm};
use crate::node::{Data, Event, InboxId, Overflow, SendError};
use crate::testnet::{addr, Net};
use crate::time::Duration;
use crate::wire::{CloseCode, ProtocolId};
use crate::{DownReason, NodeId};

const CHUNK: usize = 64 * 1024;
const CAPACITY: usize = 8;

fn config(i: usize) -> Config {
    let mut c = Config::new(Realm::new("io.test").unwrap());
    c.listen_addrs = vec![addr(i)];
    c.test_echo = true;
    c
}

/// Chunk `n`: its number, then filler.
fn chunk(n: u64) -> Vec<u8> {
    let mut bytes = vec![0xab; CHUNK];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    bytes
}

/// Two echo nodes, linked; node 0 has an inbox with `overflow`.
fn pair(overflow: Overflow) -> (Net, InboxId, NodeId) {
    let mut net = Net::new(vec![config(0), config(1)]);
    net.connect(1, 0);
    net.run_for(Duration::from_millis(100));
    let inbox = net
        .command(0, |n, now| n.echo_open_inbox(CAPACITY, overflow, now))
        .unwrap();
    let id0 = net.id(0);
    (net, inbox, id0)
}

fn take(net: &mut Net, inbox: InboxId) -> Option<u64> {
    let data = net.command(0, |n, now| n.take_data(inbox, now))?;
    let Data::Echo(EchoData { payload, .. }) = data else {
        panic!("echo data expected")
    };
    assert_eq!(payload.len(), CHUNK);
    Some(u64::from_le_bytes(payload[..8].try_into().unwrap()))
}

/// Node 1 sends chunks to node 0 until it is held back; returns how many it sent.
fn send_until_full(net: &mut Net, to: NodeId) -> u64 {
    let mut sent = 0;
    while net
        .command(1, |n, now| n.echo_bulk(to, chunk(sent), now))
        .is_ok()
    {
        sent += 1;
        net.run_for(Duration::from_millis(1));
    }
    sent
}

#[test]
fn a_consumer_that_stops_reading_holds_its_sender_back_and_loses_nothing() {
    let (mut net, inbox, id0) = pair(Overflow::Block);
    let total = 200u64;
    let mut sent = 0u64;
    // The consumer reads nothing: the sender sends until it is held back.
    while sent < total {
        match net.command(1, |n, now| n.echo_bulk(id0, chunk(sent), now)) {
            Ok(()) => sent += 1,
            Err(SendError::Full) => break,
            Err(other) => panic!("{other:?}"),
        }
        net.run_for(Duration::from_millis(1));
    }
    assert!(sent < total, "the sender was held back after {sent} chunks");
    let backlog = net.nodes[1].config().channel_backlog;
    // The inbox holds its capacity (one item over at most, the frame that filled it), the
    // paused channel's bytes wait in the pipe, and nothing more was sent.
    assert!(net.nodes[0].inbox_len(inbox).unwrap() <= CAPACITY + 1);
    assert!(
        net.held_bytes() <= backlog + CHUNK + 64,
        "{}",
        net.held_bytes()
    );
    assert!(net.nodes[0].stats().channels_paused >= 1);
    let s1 = net.nodes[1].stats();
    assert!(
        s1.channels_blocked >= 1 && s1.sends_held_back >= 1,
        "{s1:?}"
    );
    // Still held back a while later, and the link is healthy (keep-alives on their channel).
    net.run_for(Duration::from_secs(60));
    assert_eq!(
        net.command(1, |n, now| n.echo_bulk(id0, chunk(sent), now)),
        Err(SendError::Full)
    );
    assert!(net.nodes[1].peer(&id0).is_some(), "the link lives");
    // The consumer reads everything; the sender goes on whenever it hears it may.
    let mut received = Vec::new();
    while (received.len() as u64) < total {
        while let Some(n) = take(&mut net, inbox) {
            received.push(n);
        }
        let writable = core::mem::take(&mut net.events[1]).into_iter().any(|e| {
            matches!(e, Event::Writable { peer, protocol }
                if peer == id0 && protocol == ProtocolId::TEST_ECHO)
        });
        if writable || net.nodes[0].inbox_len(inbox) == Some(0) {
            while sent < total {
                match net.command(1, |n, now| n.echo_bulk(id0, chunk(sent), now)) {
                    Ok(()) => sent += 1,
                    Err(SendError::Full) => break,
                    Err(other) => panic!("{other:?}"),
                }
            }
        }
        net.run_for(Duration::from_millis(20));
    }
    assert_eq!(
        received,
        (0..total).collect::<Vec<_>>(),
        "all of it, in order"
    );
    assert_eq!(net.nodes[0].stats().data_dropped, 0);
    assert_eq!(net.held_bytes(), 0);
}

#[test]
fn an_inbox_that_drops_counts_and_tells() {
    let (mut net, inbox, id0) = pair(Overflow::DropNewest);
    for n in 0..50 {
        net.command(1, |node, now| node.echo_bulk(id0, chunk(n), now))
            .expect("a dropping receiver never holds its sender back");
        net.run_for(Duration::from_millis(1));
    }
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.nodes[0].inbox_len(inbox), Some(CAPACITY));
    let stats = net.nodes[0].stats();
    assert_eq!(stats.data_dropped, 50 - CAPACITY as u64);
    assert_eq!(stats.channels_paused, 0);
    let told: Vec<u64> = net.events[0]
        .iter()
        .filter_map(|e| match e {
            Event::DataDropped { inbox: i, dropped } if *i == inbox => Some(*dropped),
            _ => None,
        })
        .collect();
    assert_eq!(told, vec![1], "told once, when dropping started");
    let kept: Vec<u64> = core::iter::from_fn(|| take(&mut net, inbox)).collect();
    assert_eq!(
        kept,
        (0..CAPACITY as u64).collect::<Vec<_>>(),
        "the oldest kept"
    );
    // A second episode is told again, with the running total.
    for n in 0..CAPACITY as u64 + 1 {
        net.command(1, |node, now| node.echo_bulk(id0, chunk(n), now))
            .unwrap();
        net.run_for(Duration::from_millis(1));
    }
    net.run_for(Duration::from_millis(100));
    assert!(net.events[0].iter().any(
        |e| matches!(e, Event::DataDropped { dropped, .. } if *dropped == 50 - CAPACITY as u64 + 1)
    ));
}

#[test]
fn closing_a_full_inbox_lets_the_channel_flow() {
    let (mut net, inbox, id0) = pair(Overflow::Block);
    let sent = send_until_full(&mut net, id0);
    assert!(net.nodes[0].is_paused(
        net.nodes[0].peer(&net.id(1)).unwrap().link,
        ProtocolId::TEST_ECHO.channel()
    ));
    net.command(0, |n, now| n.close_inbox(inbox, now));
    net.run_for(Duration::from_millis(100));
    // Without an inbox, bulk is counted as it arrives: all of it arrived.
    assert_eq!(net.nodes[0].echo_state().bulk_received, sent * CHUNK as u64);
    assert_eq!(net.held_bytes(), 0);
    assert!(net.events[1]
        .iter()
        .any(|e| matches!(e, Event::Writable { .. })));
}

#[test]
fn a_transport_that_ignores_a_pause_loses_the_link() {
    let (mut net, _inbox, id0) = pair(Overflow::Block);
    send_until_full(&mut net, id0);
    let link = net.nodes[0].peer(&net.id(1)).unwrap().link;
    let channel = ProtocolId::TEST_ECHO.channel();
    assert!(net.nodes[0].is_paused(link, channel));
    // Bytes handed regardless pile up in the decoder only to its bound.
    let limit = net.nodes[0].config().max_frame_size as usize + crate::node::PAUSED_SLACK;
    let flood = chunk(0);
    let mut handed = 0;
    while net.nodes[0].peer(&net.id(1)).is_some() {
        net.command(0, |n, now| n.handle_link_data(link, channel, &flood, now));
        handed += flood.len();
        assert!(handed <= limit + 2 * flood.len(), "bounded");
    }
    assert!(net.events[0].iter().any(|e| matches!(
        e,
        Event::PeerDown {
            reason: DownReason::Local(CloseCode::ProtocolViolation),
            ..
        }
    )));
}

#[test]
fn data_on_another_protocols_channel_closes_the_link() {
    // Frames of a protocol travel on its own channel only: echo bulk on the control channel
    // (never paused) would slip past a full inbox's pause.
    let (mut net, _inbox, _id0) = pair(Overflow::Block);
    let link = net.nodes[0].peer(&net.id(1)).unwrap().link;
    let bulk = crate::wire::encode(&super::EchoMessage::Bulk { payload: chunk(0) });
    net.command(0, |n, now| {
        n.handle_link_data(link, crate::wire::Channel::CONTROL, &bulk, now)
    });
    assert!(net.nodes[0].peer(&net.id(1)).is_none());
    assert_eq!(net.nodes[0].stats().protocol_violations, 1);
}

#[test]
fn a_blocking_inbox_never_holds_more_than_capacity_plus_max_peers() {
    let mut receiver = config(0);
    receiver.max_peers = 1;
    let mut net = Net::new(vec![receiver, config(1)]);
    net.connect(1, 0);
    net.run_for(Duration::from_millis(100));
    let inbox = net
        .command(0, |n, now| {
            n.echo_open_inbox(CAPACITY, Overflow::Block, now)
        })
        .unwrap();
    let id0 = net.id(0);
    send_until_full(&mut net, id0);
    // Each new link gets the frame that pauses it into the inbox; links come and go while
    // nobody reads.
    for _ in 0..5 {
        let id1 = net.id(1);
        net.command(0, |n, now| n.disconnect(&id1, now));
        net.run_for(Duration::from_millis(100));
        net.connect(1, 0);
        net.run_for(Duration::from_millis(100));
        net.command(1, |n, now| n.echo_bulk(id0, chunk(0), now))
            .unwrap();
        net.run_for(Duration::from_millis(100));
    }
    assert!(net.nodes[0].inbox_len(inbox).unwrap() <= CAPACITY + 1);
    assert!(net.nodes[0].stats().data_dropped >= 1);
    assert!(net.events[0]
        .iter()
        .any(|e| matches!(e, Event::DataDropped { inbox: i, .. } if *i == inbox)));
}

#[test]
fn taking_many_at_once_keeps_order_and_lets_the_channel_flow_again() {
    let (mut net, inbox, id0) = pair(Overflow::Block);
    let sent = send_until_full(&mut net, id0);
    net.run_for(Duration::from_millis(50));
    let held = net.nodes[0].inbox_len(inbox).unwrap();
    assert!(held >= CAPACITY && net.nodes[0].stats().channels_paused >= 1);
    let number = |d: &Data| {
        let Data::Echo(EchoData { payload, .. }) = d else {
            panic!("echo data expected")
        };
        u64::from_le_bytes(payload[..8].try_into().unwrap())
    };
    // Three, then the rest (asking for more than there is takes what there is).
    let mut out = Vec::new();
    assert_eq!(
        net.command(0, |n, now| n.take_data_into(inbox, 3, &mut out, now)),
        3
    );
    assert_eq!(out.iter().map(number).collect::<Vec<_>>(), [0, 1, 2]);
    let rest = net.command(0, |n, now| n.take_data_into(inbox, 1000, &mut out, now));
    assert_eq!(rest, held - 3);
    assert_eq!(
        out.iter().map(number).collect::<Vec<_>>(),
        (0..held as u64).collect::<Vec<_>>()
    );
    // Emptied: the paused channel flows again; what the sender had queued arrives, and it is
    // told it may go on.
    let mut writable = false;
    for _ in 0..100 {
        net.run_for(Duration::from_millis(20));
        net.command(0, |n, now| n.take_data_into(inbox, 1000, &mut out, now));
        writable |= core::mem::take(&mut net.events[1]).into_iter().any(|e| {
            matches!(e, Event::Writable { peer, protocol }
                if peer == id0 && protocol == ProtocolId::TEST_ECHO)
        });
        if writable && out.len() as u64 == sent {
            break;
        }
    }
    assert!(writable, "the sender may go on");
    assert_eq!(
        out.iter().map(number).collect::<Vec<_>>(),
        (0..sent).collect::<Vec<_>>(),
        "everything sent, in order"
    );
}
