//! Runs: several messages to one node in one frame, read as the messages they stand for.

use super::*;
use crate::pubsub::machine::{frames, Framed};
use crate::pubsub::messages::{Outgoing, Run, RunRef, MAX_RUN_MESSAGES};
use crate::wire::{decode_message, Decoder};

fn run(qos: Qos, first: u64, base: u64, payloads: &[&str]) -> Run {
    Run {
        epoch: 4,
        qos,
        first,
        base,
        topic: "t".into(),
        payloads: payloads.iter().map(|p| p.as_bytes().to_vec()).collect(),
    }
}

/// Decodes one encoded pub/sub frame as the subsystem does.
fn decode_with(bytes: &[u8]) -> Result<PubsubMessage, crate::wire::MessageError> {
    let mut decoder = Decoder::new(1 << 20);
    let mut input = bytes;
    let frame = decoder
        .next_frame_from(&mut input)
        .expect("a whole frame")
        .expect("one frame");
    PubsubMessage::decode_with(frame, None)
}

#[test]
fn a_run_is_encoded_from_kept_messages_and_read_back_as_its_publishes() {
    let owned = run(Qos::AtLeastOnce, 10, 9, &["a", "", "ccc"]);
    let kept: Vec<Vec<u8>> = owned.payloads.clone();
    let borrowed = Outgoing::Run(RunRef {
        epoch: owned.epoch,
        qos: owned.qos,
        first: owned.first,
        base: owned.base,
        topic: &owned.topic,
        payloads: kept.iter(),
    });
    let bytes = encode(&PubsubMessage::Run(owned.clone()));
    assert_eq!(encode(&borrowed), bytes);
    assert_eq!(decode_with(&bytes), Ok(PubsubMessage::Run(owned.clone())));
    let mut decoder = Decoder::new(1 << 20);
    let mut input = &bytes[..];
    let frame = decoder.next_frame_from(&mut input).unwrap().unwrap();
    assert_eq!(decode_message(frame), Ok(PubsubMessage::Run(owned.clone())));
    let publishes: Vec<Publish> = owned.into_publishes().collect();
    assert_eq!(
        publishes.iter().map(|p| p.seq).collect::<Vec<_>>(),
        [10, 11, 12]
    );
    assert!(publishes
        .iter()
        .all(|p| p.plain && p.groups.is_empty() && p.headers.is_empty() && p.base == 9));
    assert_eq!(publishes[2].payload, b"ccc");
}

#[test]
fn a_run_claiming_more_messages_than_allowed_is_malformed() {
    let at_limit = run(Qos::AtMostOnce, 1, 0, &vec![""; MAX_RUN_MESSAGES]);
    assert!(decode_with(&encode(&PubsubMessage::Run(at_limit))).is_ok());
    let over = run(Qos::AtMostOnce, 1, 0, &vec![""; MAX_RUN_MESSAGES + 1]);
    assert_eq!(
        decode_with(&encode(&PubsubMessage::Run(over))),
        Err(crate::wire::MessageError::Malformed)
    );
}

#[test]
fn messages_share_a_frame_only_where_they_can() {
    let m = |topic, payload, joins| Framed {
        topic,
        payload,
        joins,
    };
    // A message with headers (or for groups) goes alone; a new topic starts a new run.
    let split = frames(
        [
            m("a", 1, true),
            m("a", 1, true),
            m("a", 1, false),
            m("a", 1, true),
            m("b", 1, true),
            m("b", 1, true),
        ],
        1 << 20,
    );
    assert_eq!(split, [(0, 2), (2, 1), (3, 1), (4, 2)]);
    // The byte budget (topic, payloads and their lengths) and the count both cap a run; one
    // message over the budget still goes, alone.
    let split = frames([m("a", 10, true), m("a", 10, true), m("a", 40, true)], 32);
    assert_eq!(split, [(0, 2), (2, 1)]);
    let many = frames((0..MAX_RUN_MESSAGES + 3).map(|_| m("a", 0, true)), 1 << 30);
    assert_eq!(many, [(0, MAX_RUN_MESSAGES), (MAX_RUN_MESSAGES, 3)]);
}

#[test]
fn a_receiver_takes_a_run_as_its_messages_in_order_once() {
    let (mut node, sub, link, _) = receiver("t");
    let feed_run = |node: &mut Node, run: Run, at: u64| {
        let bytes = encode(&PubsubMessage::Run(run));
        let now = Instant::ZERO + Duration::from_millis(at);
        node.handle_link_data(link, ProtocolId::PUBSUB.channel(), &bytes, now);
        node.handle_timeout(now);
        while node.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
    };
    feed_run(&mut node, run(Qos::AtMostOnce, 1, 0, &["a", "b"]), 1);
    // Seen before: dropped.
    feed_run(&mut node, run(Qos::AtMostOnce, 2, 0, &["b", "c"]), 2);
    assert_eq!(drain_inbox(&mut node, sub.inbox), ["a", "b", "c"]);
    // QoS 1: a run ahead of a gap is dropped, the one that fills it is taken.
    feed_run(&mut node, run(Qos::AtLeastOnce, 3, 1, &["y", "z"]), 3);
    feed_run(&mut node, run(Qos::AtLeastOnce, 1, 1, &["w", "x"]), 4);
    feed_run(&mut node, run(Qos::AtLeastOnce, 3, 1, &["y", "z"]), 5);
    assert_eq!(drain_inbox(&mut node, sub.inbox), ["w", "x", "y", "z"]);
    assert_eq!(node.pubsub_stats().out_of_order, 2);
}

#[test]
fn a_batch_leaves_as_runs_at_either_qos_and_arrives_whole() {
    for qos in [Qos::AtMostOnce, Qos::AtLeastOnce] {
        let mut net = mesh(2);
        let sub = net
            .command(1, |n, now| {
                n.pubsub_subscribe("feed", SubscribeOptions::default().with_capacity(1000), now)
            })
            .unwrap();
        net.run_for(Duration::from_secs(2));
        // The topic's discovery, before counting frames.
        publish(&mut net, 0, "feed", b"first", qos);
        net.run_for(Duration::from_secs(1));
        let frames_before = net.nodes[0].stats().frames_sent;
        let mut batch: alloc::collections::VecDeque<Vec<u8>> = (0..500)
            .map(|i| alloc::format!("{i}").into_bytes())
            .collect();
        let options = PublishOptions::qos(qos);
        let taken = net
            .command(0, |n, now| {
                n.pubsub_publish_batch("feed", &mut batch, &options, now)
            })
            .unwrap();
        assert_eq!(taken, 500);
        net.run_for(Duration::from_secs(1));
        let frames = net.nodes[0].stats().frames_sent - frames_before;
        assert!(frames < 50, "{qos:?}: 500 messages in {frames} frames");
        let mut expected = vec![String::from("first")];
        expected.extend((0..500).map(|i| alloc::format!("{i}")));
        assert_eq!(payloads(&take_all(&mut net, 1, sub.inbox)), expected);
        if qos == Qos::AtLeastOnce {
            assert_eq!(net.nodes[0].pubsub().outstanding(), 0, "every one acked");
        }
    }
}

#[test]
fn qos1_payload_bytes_awaiting_acks_are_bounded() {
    const LIMIT: usize = 64 * 1024;
    let mut net = joined(2, |i| {
        let mut c = config(i);
        c.pubsub.max_outstanding_bytes = LIMIT;
        c
    });
    // A subscriber that never reads: its inbox fills, its channel pauses, acks stop.
    let sub = net
        .command(1, |n, now| {
            n.pubsub_subscribe("flood", SubscribeOptions::default().with_capacity(4), now)
        })
        .unwrap();
    net.run_for(Duration::from_secs(2));
    let mut refused = false;
    for _ in 0..10_000 {
        let r = net.command(0, |n, now| {
            n.pubsub_publish(
                "flood",
                vec![7; 4096],
                PublishOptions::qos(Qos::AtLeastOnce),
                now,
            )
        });
        if r == Err(PublishError::Full) {
            refused = true;
            break;
        }
        r.unwrap();
        net.run_for(Duration::from_millis(1));
        let held = net.nodes[0].pubsub().outstanding_bytes();
        assert!(held <= LIMIT + 4096, "{held} bytes awaiting acks");
    }
    assert!(refused, "the publisher was held back by the byte bound");
    assert!(net.nodes[1].inbox_len(sub.inbox).unwrap() <= 4 + net.nodes[1].config().max_peers);
}
