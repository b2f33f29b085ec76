//! Pub/sub on the in-crate test net: discovery through the DHT, wildcard and exact
//! subscribers, QoS 1 across a lost link, queue groups, a slow consumer, receivers' order and
//! de-duplication, and every bound.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::node::{Data, Event, InboxId, Overflow};
use crate::testnet::{addr, config, handshake_from, joined, Net};
use crate::time::{Duration, Instant};
use crate::wire::{encode, CloseCode, ProtocolId};
use crate::{Identity, NodeId};

mod runs;

/// `n` nodes, each joined to node 0, with the DHT settled.
fn mesh(n: usize) -> Net {
    joined(n, config)
}

fn subscribe(net: &mut Net, i: usize, pattern: &str) -> Subscribed {
    net.command(i, |n, now| {
        n.pubsub_subscribe(pattern, SubscribeOptions::default(), now)
    })
    .unwrap()
}

fn publish(net: &mut Net, i: usize, topic: &str, payload: &[u8], qos: Qos) -> Publishing {
    net.command(i, |n, now| {
        n.pubsub_publish(topic, payload.to_vec(), PublishOptions::qos(qos), now)
    })
    .unwrap()
}

/// Everything in `inbox` of node `i`, as (topic, payload text).
fn take_all(net: &mut Net, i: usize, inbox: InboxId) -> Vec<Received> {
    let mut out = Vec::new();
    while let Some(data) = net.command(i, |n, now| n.take_data(inbox, now)) {
        #[allow(irrefutable_let_patterns)] // echo's data is another kind, under test-protocols
        let Data::Message(m) = data
        else {
            panic!("a pub/sub message expected")
        };
        out.push(m);
    }
    out
}

fn payloads(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect()
}

fn published(net: &Net, i: usize) -> Vec<PubsubEvent> {
    net.events[i]
        .iter()
        .filter_map(|e| match e {
            Event::Pubsub(e @ PubsubEvent::Published { .. }) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn outcome(net: &Net, i: usize, id: PublishId) -> (usize, Vec<NodeId>, Vec<NodeId>) {
    published(net, i)
        .into_iter()
        .find_map(|e| match e {
            PubsubEvent::Published {
                id: got,
                subscribers,
                acked,
                missed,
            } if got == id => Some((subscribers, acked, missed)),
            _ => None,
        })
        .expect("the publish finished")
}

fn pending(p: Publishing) -> PublishId {
    match p {
        Publishing::Pending(id) => id,
        other => panic!("expected a pending publish, got {other:?}"),
    }
}

#[test]
fn exact_and_wildcard_subscribers_receive_and_others_do_not() {
    let mut net = mesh(5);
    let exact = subscribe(&mut net, 1, "sensors.kitchen.temp");
    let one = subscribe(&mut net, 2, "sensors.*.temp");
    let any = subscribe(&mut net, 3, "**");
    let other = subscribe(&mut net, 4, "sensors.*.humidity");
    net.run_for(Duration::from_secs(2));

    // The first publish on a topic waits for its discovery.
    let id = pending(publish(
        &mut net,
        0,
        "sensors.kitchen.temp",
        b"21",
        Qos::AtMostOnce,
    ));
    net.run_for(Duration::from_secs(2));
    assert_eq!(outcome(&net, 0, id).0, 3, "three subscriber nodes match");
    // Later ones go at once from the cache.
    let later = publish(&mut net, 0, "sensors.kitchen.temp", b"22", Qos::AtMostOnce);
    assert_eq!(later, Publishing::Sent { subscribers: 3 });
    net.run_for(Duration::from_secs(1));

    for (i, sub) in [(1, exact), (2, one), (3, any)] {
        let got = take_all(&mut net, i, sub.inbox);
        assert_eq!(payloads(&got), ["21", "22"], "node {i}");
        assert!(got.iter().all(|m| m.topic == "sensors.kitchen.temp"
            && m.publisher == net.id(0)
            && m.subscription == sub.id));
    }
    assert!(take_all(&mut net, 4, other.inbox).is_empty());
    for i in 1..5 {
        assert_eq!(net.nodes[i].pubsub_stats().unmatched, 0, "no misdelivery");
    }
    // Straight to each subscriber: one message per subscriber node per publish.
    assert_eq!(net.nodes[0].pubsub_stats().sent, 6);
}

#[test]
fn a_publish_nobody_subscribes_to_succeeds_with_zero_subscribers() {
    let mut net = mesh(3);
    let id = pending(publish(
        &mut net,
        1,
        "nobody.listens",
        b"x",
        Qos::AtMostOnce,
    ));
    net.run_for(Duration::from_secs(2));
    assert_eq!(outcome(&net, 1, id), (0, vec![], vec![]));
    let again = publish(&mut net, 1, "nobody.listens", b"x", Qos::AtMostOnce);
    assert_eq!(again, Publishing::Sent { subscribers: 0 });
    let q1 = pending(publish(
        &mut net,
        1,
        "nobody.listens",
        b"x",
        Qos::AtLeastOnce,
    ));
    net.run_for(Duration::from_millis(10));
    assert_eq!(outcome(&net, 1, q1), (0, vec![], vec![]));
}

#[test]
fn a_node_receives_its_own_messages_and_headers_travel() {
    let mut net = mesh(3);
    let own = subscribe(&mut net, 1, "chat.**");
    let remote = subscribe(&mut net, 2, "chat.*");
    net.run_for(Duration::from_secs(2));
    let options = PublishOptions {
        qos: Qos::AtLeastOnce,
        headers: vec![("content-type".into(), b"text/plain".to_vec())],
        deadline: None,
    };
    let id = net
        .command(1, |n, now| {
            n.pubsub_publish("chat.room", b"hi".to_vec(), options, now)
        })
        .map(pending)
        .unwrap();
    net.run_for(Duration::from_secs(2));
    let (subscribers, acked, missed) = outcome(&net, 1, id);
    assert_eq!(subscribers, 2, "itself and node 2");
    assert_eq!(acked, vec![net.id(2)]);
    assert!(missed.is_empty());
    for (i, sub) in [(1, own), (2, remote)] {
        let got = take_all(&mut net, i, sub.inbox);
        assert_eq!(payloads(&got), ["hi"]);
        assert_eq!(
            got[0].headers,
            vec![("content-type".into(), b"text/plain".to_vec())]
        );
        assert_eq!(got[0].qos, Qos::AtLeastOnce);
    }
}

#[test]
fn qos1_is_acked_by_every_subscriber_and_survives_a_lost_link_in_order_once() {
    let mut net = mesh(4);
    let subs: Vec<(usize, Subscribed)> = (1..4)
        .map(|i| (i, subscribe(&mut net, i, "orders.**")))
        .collect();
    net.run_for(Duration::from_secs(2));
    let mut ids = Vec::new();
    for k in 0..50 {
        let payload = alloc::format!("{k}");
        ids.push(pending(publish(
            &mut net,
            0,
            "orders.new",
            payload.as_bytes(),
            Qos::AtLeastOnce,
        )));
        if k == 20 {
            // The link to node 2 breaks with messages in flight.
            let peer = net.nodes[0].peer(&net.id(2)).unwrap();
            net.command(0, |n, now| n.close_link(peer.link, CloseCode::Goodbye, now));
        }
        net.run_for(Duration::from_millis(5));
    }
    net.run_for(Duration::from_secs(5));
    let everyone: Vec<NodeId> = {
        let mut v: Vec<NodeId> = (1..4).map(|i| net.id(i)).collect();
        v.sort();
        v
    };
    for id in ids {
        let (subscribers, acked, missed) = outcome(&net, 0, id);
        assert_eq!((subscribers, &acked, missed.len()), (3, &everyone, 0));
    }
    let expected: Vec<String> = (0..50).map(|k| alloc::format!("{k}")).collect();
    for (i, sub) in subs {
        let got = take_all(&mut net, i, sub.inbox);
        assert_eq!(payloads(&got), expected, "node {i}: each once, in order");
        let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "no gaps: {seqs:?}"
        );
    }
    assert!(
        net.nodes[0].pubsub_stats().resent > 0,
        "the lost part went again"
    );
    assert_eq!(net.nodes[0].pubsub_outstanding(), 0);
}

#[test]
fn queue_group_members_share_the_messages_and_plain_subscribers_get_all() {
    let mut net = mesh(5);
    let workers: Vec<(usize, Subscribed)> = (1..4)
        .map(|i| {
            let s = net
                .command(i, |n, now| {
                    n.pubsub_subscribe("jobs.*", SubscribeOptions::group("workers"), now)
                })
                .unwrap();
            (i, s)
        })
        .collect();
    let audit = subscribe(&mut net, 4, "jobs.*");
    net.run_for(Duration::from_secs(2));
    for k in 0..30 {
        let p = alloc::format!("{k}");
        publish(&mut net, 0, "jobs.render", p.as_bytes(), Qos::AtLeastOnce);
        net.run_for(Duration::from_millis(20));
    }
    net.run_for(Duration::from_secs(2));
    let mut all: Vec<String> = Vec::new();
    for (i, sub) in workers {
        let got = payloads(&take_all(&mut net, i, sub.inbox));
        assert!(got.len() >= 5, "node {i} took a share: {got:?}");
        all.extend(got);
    }
    all.sort_by_key(|p| p.parse::<u32>().unwrap());
    let expected: Vec<String> = (0..30).map(|k| alloc::format!("{k}")).collect();
    assert_eq!(all, expected, "each message to exactly one member");
    assert_eq!(take_all(&mut net, 4, audit.inbox).len(), 30);
}

#[test]
fn unsubscribing_withdraws_and_publishers_stop_sending_once_their_cache_refreshes() {
    let mut net = mesh(3);
    let sub = subscribe(&mut net, 2, "news.*");
    net.run_for(Duration::from_secs(2));
    pending(publish(&mut net, 0, "news.today", b"a", Qos::AtMostOnce));
    net.run_for(Duration::from_secs(1));
    assert!(net.command(2, |n, now| n.pubsub_unsubscribe(sub.id, now)));
    assert!(!net.command(2, |n, now| n.pubsub_unsubscribe(sub.id, now)));
    // Within the cache's freshness the publisher may still send; the receiver drops it as
    // unmatched. After it, the withdrawn record is gone.
    net.run_for(Duration::from_secs(6));
    publish(&mut net, 0, "news.today", b"b", Qos::AtMostOnce);
    net.run_for(Duration::from_secs(2));
    let last = publish(&mut net, 0, "news.today", b"c", Qos::AtMostOnce);
    assert_eq!(last, Publishing::Sent { subscribers: 0 });
}

#[test]
fn a_consumer_that_stops_reading_slows_the_publisher_and_nothing_is_lost() {
    let mut net = joined(2, |i| {
        let mut c = config(i);
        c.pubsub.window = 64;
        c
    });
    let sub = net
        .command(1, |n, now| {
            n.pubsub_subscribe(
                "feed",
                SubscribeOptions {
                    capacity: 16,
                    ..SubscribeOptions::default()
                },
                now,
            )
        })
        .unwrap();
    net.run_for(Duration::from_secs(2));
    let mut sent = 0u32;
    let mut refused = 0;
    // Publish until the publisher says there is no room.
    for _ in 0..5_000 {
        let r = net.command(0, |n, now| {
            n.pubsub_publish(
                "feed",
                sent.to_le_bytes().to_vec(),
                PublishOptions::qos(Qos::AtLeastOnce),
                now,
            )
        });
        match r {
            Ok(_) => sent += 1,
            Err(PublishError::Full) => {
                refused += 1;
                break;
            }
            Err(e) => panic!("{e}"),
        }
        net.run_for(Duration::from_millis(1));
    }
    assert_eq!(refused, 1, "the publisher was held back");
    let node = &net.nodes[1];
    assert!(node.inbox_len(sub.inbox).unwrap() <= 16 + node.config().max_peers);
    let limits = &net.nodes[0].config().pubsub;
    assert!(
        net.nodes[0].pubsub().outstanding() <= limits.max_waiting + limits.max_outstanding,
        "bounded on the publisher"
    );
    // The consumer reads again: everything arrives, once, in order.
    let mut got = Vec::new();
    for _ in 0..10_000 {
        let batch = take_all(&mut net, 1, sub.inbox);
        got.extend(
            batch
                .into_iter()
                .map(|m| u32::from_le_bytes(m.payload[..4].try_into().unwrap())),
        );
        net.run_for(Duration::from_millis(50));
        if got.len() as u32 == sent {
            break;
        }
    }
    assert_eq!(got, (0..sent).collect::<Vec<_>>());
    assert!(net.events[0]
        .iter()
        .any(|e| matches!(e, Event::Pubsub(PubsubEvent::Ready))));
}

#[test]
fn a_dropping_subscription_counts_what_it_drops_and_the_publisher_goes_on() {
    let mut net = mesh(2);
    let sub = net
        .command(1, |n, now| {
            n.pubsub_subscribe(
                "ticks",
                SubscribeOptions {
                    capacity: 4,
                    overflow: Overflow::DropNewest,
                    ..SubscribeOptions::default()
                },
                now,
            )
        })
        .unwrap();
    net.run_for(Duration::from_secs(2));
    for k in 0..20u8 {
        publish(&mut net, 0, "ticks", &[k], Qos::AtMostOnce);
        net.run_for(Duration::from_millis(1));
    }
    net.run_for(Duration::from_secs(1));
    assert_eq!(take_all(&mut net, 1, sub.inbox).len(), 4);
    assert_eq!(net.nodes[1].stats().data_dropped, 16);
    assert!(net.events[1]
        .iter()
        .any(|e| matches!(e, Event::DataDropped { inbox, .. } if *inbox == sub.inbox)));
}

#[test]
fn a_subscription_that_drops_the_oldest_keeps_the_latest() {
    let mut net = mesh(2);
    let sub = net
        .command(1, |n, now| {
            n.pubsub_subscribe(
                "prices",
                SubscribeOptions {
                    capacity: 4,
                    overflow: Overflow::DropOldest,
                    ..SubscribeOptions::default()
                },
                now,
            )
        })
        .unwrap();
    net.run_for(Duration::from_secs(2));
    for k in 0..20u8 {
        publish(&mut net, 0, "prices", &[k], Qos::AtLeastOnce);
        net.run_for(Duration::from_millis(1));
    }
    net.run_for(Duration::from_secs(1));
    let got: Vec<u8> = take_all(&mut net, 1, sub.inbox)
        .iter()
        .map(|m| m.payload[0])
        .collect();
    assert_eq!(got, [16, 17, 18, 19]);
    assert_eq!(net.nodes[1].stats().data_dropped, 16);
    assert_eq!(
        net.nodes[0].pubsub_outstanding(),
        0,
        "every message was acked"
    );
}

/// A node with one subscription on `topic`, and a fake publisher linked to it: frames are
/// fed to the node directly.
fn receiver(pattern: &str) -> (Node, Subscribed, crate::LinkId, Identity) {
    let mut node = Node::new(config(0), Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let sub = node
        .pubsub_subscribe(pattern, SubscribeOptions::default(), Instant::ZERO)
        .unwrap();
    let publisher = Identity::from_seed(9);
    let link = handshake_from(&mut node, &publisher, addr(9), Instant::ZERO);
    (node, sub, link, publisher)
}

use crate::node::Node;

fn feed(node: &mut Node, link: crate::LinkId, publish: Publish, at: u64) {
    let bytes = encode(&PubsubMessage::Publish(publish));
    let now = Instant::ZERO + Duration::from_millis(at);
    node.handle_link_data(link, ProtocolId::PUBSUB.channel(), &bytes, now);
    while node.poll_transmit().is_some() {}
    while node.poll_event().is_some() {}
    for _ in 0..100 {
        if !node.poll_timeout().is_some_and(|t| t <= now) {
            return;
        }
        node.handle_timeout(now);
        while node.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
    }
    panic!(
        "the node's timeout stays due: {:?} at {now:?}",
        node.poll_timeout()
    );
}

fn message(epoch: u64, qos: Qos, seq: u64, base: u64, text: &str) -> Publish {
    Publish {
        epoch,
        qos,
        seq,
        base,
        plain: true,
        groups: vec![],
        topic: "t".into(),
        headers: vec![],
        payload: text.as_bytes().to_vec(),
    }
}

fn drain_inbox(node: &mut Node, inbox: InboxId) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(Data::Message(m)) = node.take_data(inbox, Instant::ZERO + Duration::from_secs(9))
    {
        out.push(String::from_utf8(m.payload).unwrap());
    }
    out
}

#[test]
fn receivers_take_a_stream_in_order_drop_duplicates_and_know_a_restarted_publisher() {
    let (mut node, sub, link, _) = receiver("t");
    let q1 = Qos::AtLeastOnce;
    feed(&mut node, link, message(5, q1, 10, 10, "a"), 1);
    feed(&mut node, link, message(5, q1, 12, 10, "skipped ahead"), 2);
    feed(&mut node, link, message(5, q1, 11, 10, "b"), 3);
    feed(&mut node, link, message(5, q1, 10, 10, "a again"), 4);
    // The publisher gave 12 and 13 up: base says so.
    feed(&mut node, link, message(5, q1, 14, 14, "c"), 5);
    // A replay of the old run is dropped; a restart (higher epoch) starts afresh.
    feed(&mut node, link, message(4, q1, 15, 15, "old run"), 6);
    feed(&mut node, link, message(6, q1, 1, 1, "restarted"), 7);
    assert_eq!(
        drain_inbox(&mut node, sub.inbox),
        ["a", "b", "c", "restarted"]
    );
    let stats = node.pubsub_stats().clone();
    assert_eq!((stats.out_of_order, stats.duplicates), (1, 2));
    assert!(stats.acks_sent >= 5);

    let q0 = Qos::AtMostOnce;
    feed(&mut node, link, message(6, q0, 1, 0, "x"), 8);
    feed(&mut node, link, message(6, q0, 1, 0, "x again"), 9);
    feed(&mut node, link, message(6, q0, 3, 0, "y"), 10);
    feed(&mut node, link, message(7, q0, 1, 0, "restarted x"), 11);
    assert_eq!(drain_inbox(&mut node, sub.inbox), ["x", "y", "restarted x"]);
}

#[test]
fn messages_that_break_the_rules_are_dropped_and_counted() {
    let (mut node, sub, link, _) = receiver("**");
    let mut bad_topic = message(1, Qos::AtMostOnce, 1, 0, "x");
    bad_topic.topic = "a..b".into();
    feed(&mut node, link, bad_topic, 1);
    let mut too_large = message(1, Qos::AtMostOnce, 2, 0, "");
    too_large.payload = vec![0; node.config().pubsub.max_message_size];
    feed(&mut node, link, too_large, 2);
    let mut headers = message(1, Qos::AtMostOnce, 3, 0, "x");
    headers.headers = (0..17).map(|i| (alloc::format!("h{i}"), vec![])).collect();
    feed(&mut node, link, headers, 3);
    let mut wrong = message(1, Qos::AtMostOnce, 4, 0, "x");
    wrong.topic = "other".into();
    wrong.plain = false;
    feed(&mut node, link, wrong, 4);
    assert!(drain_inbox(&mut node, sub.inbox).is_empty());
    assert_eq!(node.pubsub_stats().malformed, 3);
    assert_eq!(node.pubsub_stats().unmatched, 1);
}

#[test]
fn bad_input_is_refused_with_the_rule_it_breaks() {
    let mut node = Node::new(config(0), Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let now = Instant::ZERO;
    let err = node
        .pubsub_subscribe("a..b", SubscribeOptions::default(), now)
        .unwrap_err();
    assert!(matches!(err, SubscribeError::Pattern(_)), "{err}");
    for group in ["", "a.b", "a b", "*"] {
        let err = node
            .pubsub_subscribe("a", SubscribeOptions::group(group), now)
            .unwrap_err();
        assert_eq!(err, SubscribeError::Group, "{group:?}");
    }
    let err = node
        .pubsub_publish("a.*", vec![], PublishOptions::default(), now)
        .unwrap_err();
    assert!(matches!(err, PublishError::Topic(_)), "{err}");
    let max = node.config().pubsub.max_message_size;
    let err = node
        .pubsub_publish("a", vec![0; max], PublishOptions::default(), now)
        .unwrap_err();
    assert_eq!(err, PublishError::TooLarge { size: max + 1, max });
    let options = PublishOptions {
        headers: vec![("k".into(), vec![0; 5000])],
        ..PublishOptions::default()
    };
    assert_eq!(
        node.pubsub_publish("a", vec![], options, now).unwrap_err(),
        PublishError::Headers
    );
    node.close(now);
    assert_eq!(
        node.pubsub_publish("a", vec![], PublishOptions::default(), now)
            .unwrap_err(),
        PublishError::Closed
    );
}

#[test]
fn subscriptions_and_held_publishes_are_bounded() {
    let mut net = joined(2, |i| {
        let mut c = config(i);
        c.pubsub.max_subscriptions = 8;
        c.pubsub.max_waiting = 10;
        c
    });
    let now = net.now;
    let node = &mut net.nodes[0];
    for i in 0..8 {
        let pattern = alloc::format!("p{i}");
        node.pubsub_subscribe(&pattern, SubscribeOptions::default(), now)
            .unwrap();
    }
    assert_eq!(
        node.pubsub_subscribe("p9", SubscribeOptions::default(), now)
            .unwrap_err(),
        SubscribeError::TooMany
    );
    // Publishes wait for discovery: ten are held, the eleventh is refused.
    let mut results = Vec::new();
    for _ in 0..11 {
        results.push(node.pubsub_publish("x", vec![1], PublishOptions::default(), now));
    }
    assert!(results[..10].iter().all(Result::is_ok));
    assert_eq!(results[10], Err(PublishError::Full));
    assert!(!node.pubsub_has_room());
    net.drain(0);
    // Discovery answers: they go, and there is room again.
    net.run_for(Duration::from_secs(1));
    assert!(net.nodes[0].pubsub_has_room());
    assert_eq!(published(&net, 0).len(), 10);
    assert!(net.events[0]
        .iter()
        .any(|e| matches!(e, Event::Pubsub(PubsubEvent::Ready))));
}

#[test]
fn many_patterns_under_one_prefix_are_refused_before_the_record_overflows() {
    let mut node = Node::new(config(0), Identity::from_seed(1), 1, Instant::ZERO).unwrap();
    let now = Instant::ZERO;
    let long = "x".repeat(200);
    let mut refused = None;
    for i in 0..100 {
        let pattern = alloc::format!("{long}{i}.*");
        if let Err(e) = node.pubsub_subscribe(&pattern, SubscribeOptions::group("g"), now) {
            refused = Some((i, e));
            break;
        }
    }
    // Each pattern has its own prefix, so this is fine; under one prefix it is not.
    assert!(refused.is_none());
    let mut refused = None;
    for i in 0..100 {
        let pattern = alloc::format!("same.{long}{i}");
        let pattern = pattern.replacen(".", ".*.", 1);
        if let Err(e) = node.pubsub_subscribe(&pattern, SubscribeOptions::default(), now) {
            refused = Some((i, e));
            break;
        }
    }
    let (i, e) = refused.expect("refused at some point");
    assert_eq!(e, SubscribeError::TooManyUnderPrefix);
    assert!(i > 10, "a record holds a good many patterns ({i})");
}

#[test]
fn a_subscriber_found_late_gets_recent_qos1_messages_in_order() {
    let mut net = mesh(3);
    let first = subscribe(&mut net, 1, "news");
    net.run_for(Duration::from_secs(2));
    pending(publish(&mut net, 0, "news", b"m1", Qos::AtLeastOnce));
    net.run_for(Duration::from_secs(1));
    // Node 2 subscribes after m1 went out; the publisher's next lookup (once its answer is
    // stale) finds it, and m1, still within its deadline, follows.
    let late = subscribe(&mut net, 2, "news");
    net.run_for(Duration::from_secs(6));
    publish(&mut net, 0, "news", b"m2", Qos::AtLeastOnce);
    net.run_for(Duration::from_secs(2));
    publish(&mut net, 0, "news", b"m3", Qos::AtLeastOnce);
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        payloads(&take_all(&mut net, 1, first.inbox)),
        ["m1", "m2", "m3"]
    );
    assert_eq!(
        payloads(&take_all(&mut net, 2, late.inbox)),
        ["m1", "m2", "m3"]
    );
    assert!(net.nodes[0].pubsub_stats().late >= 1);
}

#[test]
fn a_batch_goes_in_order_to_every_matching_subscriber_and_waits_for_room() {
    let mut net = joined(3, |i| {
        let mut c = config(i);
        c.pubsub.max_waiting = 16;
        c
    });
    let exact = subscribe(&mut net, 1, "feed.a");
    let wild = subscribe(&mut net, 2, "feed.*");
    net.run_for(Duration::from_secs(2));
    let mut batch: alloc::collections::VecDeque<Vec<u8>> = (0..40)
        .map(|i| alloc::format!("{i}").into_bytes())
        .collect();
    let options = PublishOptions::qos(Qos::AtMostOnce);
    // Not discovered yet: the outbox takes 16, the rest stay with the caller.
    let taken = net
        .command(0, |n, now| {
            n.pubsub_publish_batch("feed.a", &mut batch, &options, now)
        })
        .unwrap();
    assert_eq!((taken, batch.len()), (16, 24));
    net.run_for(Duration::from_secs(1));
    assert!(net.events[0]
        .iter()
        .any(|e| matches!(e, Event::Pubsub(PubsubEvent::Ready))));
    // Discovered: the rest go at once, subscribers worked out once for the lot.
    let taken = net
        .command(0, |n, now| {
            n.pubsub_publish_batch("feed.a", &mut batch, &options, now)
        })
        .unwrap();
    assert_eq!((taken, batch.len()), (24, 0));
    net.run_for(Duration::from_secs(1));
    let expected: Vec<String> = (0..40).map(|i| alloc::format!("{i}")).collect();
    assert_eq!(payloads(&take_all(&mut net, 1, exact.inbox)), expected);
    assert_eq!(payloads(&take_all(&mut net, 2, wild.inbox)), expected);
    assert!(published(&net, 0).is_empty(), "a batch tells no events");
    assert_eq!(net.nodes[0].pubsub_stats().sent, 80);
    // Bad input is refused before anything is taken.
    let mut bad: alloc::collections::VecDeque<Vec<u8>> = [vec![1], vec![0; 1 << 20]].into();
    let refused = net.command(0, |n, now| {
        n.pubsub_publish_batch("feed.a", &mut bad, &options, now)
    });
    assert!(matches!(refused, Err(PublishError::TooLarge { .. })));
    assert_eq!(bad.len(), 2);
    let refused = net.command(0, |n, now| {
        n.pubsub_publish_batch("feed.*", &mut bad, &options, now)
    });
    assert!(matches!(refused, Err(PublishError::Topic(_))));
}

#[test]
fn subscriptions_made_while_a_topic_streams_get_its_next_messages() {
    let mut net = mesh(2);
    let remote = subscribe(&mut net, 1, "t.x");
    net.run_for(Duration::from_secs(2));
    pending(publish(&mut net, 0, "t.x", b"1", Qos::AtMostOnce));
    net.run_for(Duration::from_secs(1));
    // The publisher worked out where `t.x` goes and the receiver matched it: both are kept
    // for the next messages, and both must see a new subscription at once.
    let own = subscribe(&mut net, 0, "t.*");
    let second = subscribe(&mut net, 1, "**");
    assert_eq!(
        publish(&mut net, 0, "t.x", b"2", Qos::AtMostOnce),
        Publishing::Sent { subscribers: 2 }
    );
    net.run_for(Duration::from_secs(1));
    assert_eq!(payloads(&take_all(&mut net, 0, own.inbox)), ["2"]);
    assert_eq!(payloads(&take_all(&mut net, 1, remote.inbox)), ["1", "2"]);
    assert_eq!(payloads(&take_all(&mut net, 1, second.inbox)), ["2"]);
    // An unsubscription too.
    assert!(net.command(1, |n, now| n.pubsub_unsubscribe(remote.id, now)));
    publish(&mut net, 0, "t.x", b"3", Qos::AtMostOnce);
    net.run_for(Duration::from_secs(1));
    assert_eq!(payloads(&take_all(&mut net, 1, second.inbox)), ["3"]);
    assert_eq!(net.nodes[1].pubsub_stats().unmatched, 0);
}

#[test]
fn a_publish_is_encoded_from_the_kept_message_to_the_same_bytes() {
    let publish = Publish {
        epoch: 7,
        qos: Qos::AtLeastOnce,
        seq: 300,
        base: 299,
        plain: true,
        groups: vec!["g".into()],
        topic: "a.b".into(),
        headers: vec![("k".into(), vec![1, 2])],
        payload: (0..=255).collect(),
    };
    let borrowed = messages::Outgoing::publish(messages::PublishRef {
        epoch: publish.epoch,
        qos: publish.qos,
        seq: publish.seq,
        base: publish.base,
        plain: publish.plain,
        groups: &publish.groups,
        topic: &publish.topic,
        headers: &publish.headers,
        payload: &publish.payload,
    });
    let owned = PubsubMessage::Publish(publish.clone());
    assert_eq!(encode(&borrowed), encode(&owned));
    // The payload as postcard's bytes is the same as a sequence of `u8` (what earlier
    // builds wrote), so either side may be either.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct AsSequence(Vec<u8>);
    #[derive(serde::Serialize, serde::Deserialize)]
    struct AsBytes(#[serde(with = "crate::wire::bytes")] Vec<u8>);
    let sequence = postcard::to_allocvec(&AsSequence(publish.payload.clone())).unwrap();
    let bytes = postcard::to_allocvec(&AsBytes(publish.payload.clone())).unwrap();
    assert_eq!(sequence, bytes);
    let back: AsBytes = postcard::from_bytes(&sequence).unwrap();
    assert_eq!(back.0, publish.payload);
}

mod decoding {
    use super::*;
    use crate::wire::{Decoder, RawFrame};
    use alloc::sync::Arc;
    use proptest::prelude::*;

    fn publish() -> impl Strategy<Value = Publish> {
        (
            (
                any::<u64>(),
                any::<bool>(),
                any::<u64>(),
                any::<u64>(),
                any::<bool>(),
            ),
            proptest::collection::vec("[a-z]{0,4}", 0..3),
            "[a-z.*]{0,12}|\\PC{0,6}",
            proptest::collection::vec(
                ("[a-z]{0,3}", proptest::collection::vec(any::<u8>(), 0..4)),
                0..3,
            ),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(
                |((epoch, qos, seq, base, plain), groups, topic, headers, payload)| Publish {
                    epoch,
                    qos: if qos {
                        Qos::AtLeastOnce
                    } else {
                        Qos::AtMostOnce
                    },
                    seq,
                    base,
                    plain,
                    groups,
                    topic: topic.as_str().into(),
                    headers,
                    payload,
                },
            )
    }

    /// The frame `bytes` split off a stream, or `None`.
    fn with_frame<R>(bytes: &[u8], f: impl FnOnce(RawFrame<'_>) -> R) -> Option<R> {
        let mut decoder = Decoder::new(1 << 20);
        let mut input = bytes;
        match decoder.next_frame_from(&mut input) {
            Ok(Some(frame)) => Some(f(frame)),
            _ => None,
        }
    }

    proptest! {
        /// The fast reading of a publish is the plain one, whatever the topic it shares.
        #[test]
        fn reading_a_publish_with_a_known_topic_is_reading_it(
            p in publish(),
            known in "[a-z.]{0,12}",
            cut in 0usize..400,
        ) {
            let bytes = encode(&PubsubMessage::Publish(p.clone()));
            let known: Arc<str> = known.as_str().into();
            let same = p.topic.clone();
            with_frame(&bytes, |frame| {
                let plain = crate::wire::decode_message::<PubsubMessage>(frame);
                prop_assert_eq!(&plain, &Ok(PubsubMessage::Publish(p.clone())));
                for topic in [None, Some(&known), Some(&same)] {
                    prop_assert_eq!(&PubsubMessage::decode_with(frame, topic), &plain);
                }
                Ok(())
            }).expect("a whole frame")?;
            // A damaged body reads the same both ways (both fail, or both give the same).
            let mut damaged = bytes.clone();
            let at = cut % damaged.len();
            damaged[at] ^= 0x5a;
            with_frame(&damaged, |frame| {
                if frame.protocol != ProtocolId::PUBSUB || frame.message.is_empty() {
                    return Ok(());
                }
                let plain = crate::wire::decode_message::<PubsubMessage>(frame);
                prop_assert_eq!(PubsubMessage::decode_with(frame, Some(&same)), plain);
                Ok(())
            });
        }
    }
}
