//! RPC on the in-crate test net: discovery, replies, `NoResponders` without a call sent,
//! failover past a killed provider, idempotency, deadlines, cancellation, every strategy, and
//! every bound under a flood.

use alloc::vec;
use alloc::vec::Vec;

use super::messages::{Call, CallRef, Fail, Refusal, Reply};
use super::*;
use crate::config::Config;
use crate::node::{Data, Event, Transmit};
use crate::testnet::{addr, config, handshake_from, joined, Net};
use crate::time::{Duration, Instant};
use crate::wire::{encode, Decoder, ProtocolId};
use crate::{Identity, LinkId, Node, NodeId};

fn mesh(n: usize) -> Net {
    joined(n, config)
}

fn serve(net: &mut Net, i: usize, procedure: &str) -> Registered {
    let r = net
        .command(i, |n, now| {
            n.rpc_register(procedure, RegisterOptions::default(), now)
        })
        .unwrap();
    net.run_for(Duration::from_millis(500));
    r
}

fn call(net: &mut Net, i: usize, procedure: &str, payload: &[u8], options: CallOptions) -> CallId {
    net.command(i, |n, now| {
        n.rpc_call(procedure, payload.to_vec(), options, now)
    })
    .unwrap()
}

/// The requests waiting in `inbox` of node `i`.
fn requests(net: &mut Net, i: usize, inbox: crate::InboxId) -> Vec<Request> {
    let mut out = Vec::new();
    while let Some(data) = net.command(i, |n, now| n.take_data(inbox, now)) {
        match data {
            Data::Request(r) => out.push(r),
            other => panic!("a request expected, not {other:?}"),
        }
    }
    out
}

/// The outcome of call `id` at node `i`, and when the test saw it (`None`: not yet).
fn outcome(net: &Net, i: usize, id: CallId) -> Option<Result<Replied, CallError>> {
    let mut found = net.events[i].iter().filter_map(|e| match e {
        Event::Rpc(RpcEvent::Done { id: d, result }) if *d == id => Some(result.clone()),
        _ => None,
    });
    let first = found.next();
    assert!(found.next().is_none(), "one outcome per call");
    first
}

/// Runs the net in small steps until call `id` at node `i` has its outcome; returns it and
/// how long it took.
fn wait_for(net: &mut Net, i: usize, id: CallId) -> (Result<Replied, CallError>, Duration) {
    let start = net.now;
    for _ in 0..2_000 {
        if let Some(o) = outcome(net, i, id) {
            return (o, net.now - start);
        }
        net.run_for(Duration::from_millis(10));
    }
    panic!("call {id:?} never ended");
}

/// Answers every request waiting at node `i` with its own payload.
fn echo_all(net: &mut Net, i: usize, inbox: crate::InboxId) -> usize {
    let held = requests(net, i, inbox);
    for r in &held {
        net.command(i, |n, now| n.rpc_reply(r.id, r.payload.clone(), now))
            .unwrap();
    }
    held.len()
}

fn ended(net: &Net, i: usize) -> Vec<(RequestId, Ended)> {
    net.events[i]
        .iter()
        .filter_map(|e| match e {
            Event::Rpc(RpcEvent::Ended { request, why }) => Some((*request, *why)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_finds_its_provider_through_the_dht_and_gets_the_reply() {
    let mut net = mesh(5);
    let reg = serve(&mut net, 2, "math.double");
    let id = call(&mut net, 4, "math.double", b"21", CallOptions::default());
    net.run_for(Duration::from_millis(200));
    let held = requests(&mut net, 2, reg.inbox);
    assert_eq!(held.len(), 1);
    let r = &held[0];
    assert_eq!(
        (&*r.procedure, r.caller, &r.payload[..]),
        ("math.double", net.id(4), &b"21"[..])
    );
    assert!(r.deadline > net.now, "the deadline travels with the call");
    net.command(2, |n, now| n.rpc_reply(r.id, b"42".to_vec(), now))
        .unwrap();
    let (result, _) = wait_for(&mut net, 4, id);
    let replied = result.unwrap();
    assert_eq!(
        (replied.from, replied.attempts, &replied.payload[..]),
        (net.id(2), 1, &b"42"[..])
    );
    assert_eq!(
        net.command(2, |n, now| n.rpc_reply(r.id, b"again".to_vec(), now)),
        Err(ReplyError::Gone),
        "a request is answered once"
    );
    let stats = net.nodes[4].rpc_stats().clone();
    assert_eq!((stats.calls, stats.replied, stats.attempts), (1, 1, 1));
}

#[test]
fn no_responders_comes_as_soon_as_discovery_is_empty_and_nothing_is_sent() {
    let mut net = mesh(4);
    let id = call(&mut net, 3, "nobody.home", b"?", CallOptions::default());
    let (result, took) = wait_for(&mut net, 3, id);
    assert_eq!(result, Err(CallError::NoResponders));
    assert!(
        took < Duration::from_millis(500),
        "one DHT lookup, not the 5 s deadline: {took:?}"
    );
    assert_eq!(net.nodes[3].rpc_stats().attempts, 0, "no call was sent");
    let calls_sent = net
        .log
        .iter()
        .filter(|(i, t)| *i == 3 && is_call(t))
        .count();
    assert_eq!(calls_sent, 0);
    // Asked again at once, the empty answer still holds: no second lookup, the same error.
    let again = call(&mut net, 3, "nobody.home", b"?", CallOptions::default());
    assert_eq!(outcome(&net, 3, again), Some(Err(CallError::NoResponders)));
    assert_eq!(net.nodes[3].rpc_stats().lookups, 1);
    // A provider that appears later is found once the answer may be asked again (1 s).
    let reg = serve(&mut net, 1, "nobody.home");
    net.run_for(Duration::from_secs(1));
    let id = call(&mut net, 3, "nobody.home", b"now", CallOptions::default());
    net.run_for(Duration::from_millis(300));
    assert_eq!(echo_all(&mut net, 1, reg.inbox), 1);
    assert!(wait_for(&mut net, 3, id).0.is_ok());
}

/// Whether `t` carries an RPC call frame.
fn is_call(t: &Transmit) -> bool {
    match t {
        Transmit::Send { channel, bytes, .. } if *channel == ProtocolId::RPC.channel() => {
            let mut d = Decoder::new(1 << 20);
            d.push(bytes);
            let mut any = false;
            while let Ok(Some(frame)) = d.next_frame() {
                any |= frame.kind() == 0;
            }
            any
        }
        _ => false,
    }
}

#[test]
fn a_provider_killed_mid_call_costs_one_attempt_not_the_deadline() {
    let mut net = mesh(6);
    let regs: Vec<Registered> = (1..=3).map(|i| serve(&mut net, i, "svc.work")).collect();
    // `First` picks the lowest node id: that provider gets the call and dies holding it.
    let first = (1..=3).min_by_key(|&i| net.id(i)).unwrap();
    let start = net.now;
    let id = call(
        &mut net,
        5,
        "svc.work",
        b"job",
        CallOptions::default().with_strategy(Strategy::First),
    );
    net.run_for(Duration::from_millis(100));
    assert_eq!(requests(&mut net, first, regs[first - 1].inbox).len(), 1);
    net.killed.insert(first);
    // The others answer whatever reaches them.
    let mut result = None;
    for _ in 0..500 {
        for i in (1..=3).filter(|&i| i != first) {
            echo_all(&mut net, i, regs[i - 1].inbox);
        }
        if let Some(o) = outcome(&net, 5, id) {
            result = Some(o);
            break;
        }
        net.run_for(Duration::from_millis(10));
    }
    let replied = result.expect("answered").unwrap();
    assert_ne!(replied.from, net.id(first));
    assert_eq!((replied.attempts, &replied.payload[..]), (2, &b"job"[..]));
    assert_eq!(net.nodes[5].rpc_stats().failovers, 1);
    // The attempt's own timeout is a third of the 5 s deadline: the call took about that.
    let took = net.now - start;
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The dead provider is left out of the next call, which goes straight to a live one.
    let next = call(
        &mut net,
        5,
        "svc.work",
        b"next",
        CallOptions::default().with_strategy(Strategy::First),
    );
    net.run_for(Duration::from_millis(100));
    for i in (1..=3).filter(|&i| i != first) {
        echo_all(&mut net, i, regs[i - 1].inbox);
    }
    let (result, took) = wait_for(&mut net, 5, next);
    assert_eq!(result.unwrap().attempts, 1);
    assert!(took < Duration::from_millis(100));
}

#[test]
fn an_application_error_is_final_and_refusals_move_the_call_on() {
    let mut net = mesh(5);
    let a = serve(&mut net, 1, "svc.check");
    let b = serve(&mut net, 2, "svc.check");
    let id = call(&mut net, 4, "svc.check", b"x", CallOptions::default());
    net.run_for(Duration::from_millis(100));
    let (who, inbox) = if net.nodes[1].rpc().requests() == 1 {
        (1, a.inbox)
    } else {
        (2, b.inbox)
    };
    let r = requests(&mut net, who, inbox).remove(0);
    net.command(who, |n, now| n.rpc_fail(r.id, "bad input", now))
        .unwrap();
    let (result, _) = wait_for(&mut net, 4, id);
    assert_eq!(result, Err(CallError::Remote("bad input".into())));
    assert_eq!(net.nodes[4].rpc_stats().attempts, 1, "not tried elsewhere");

    // A handler that gives a call up sends it to the other provider.
    let id = call(&mut net, 4, "svc.check", b"y", CallOptions::default());
    net.run_for(Duration::from_millis(100));
    let (who, other) = if net.nodes[1].rpc().requests() == 1 {
        ((1, a.inbox), (2, b.inbox))
    } else {
        ((2, b.inbox), (1, a.inbox))
    };
    let r = requests(&mut net, who.0, who.1).remove(0);
    net.command(who.0, |n, now| n.rpc_abandon(r.id, now))
        .unwrap();
    net.run_for(Duration::from_millis(100));
    assert_eq!(echo_all(&mut net, other.0, other.1), 1);
    let replied = wait_for(&mut net, 4, id).0.unwrap();
    assert_eq!((replied.from, replied.attempts), (net.id(other.0), 2));
}

#[test]
fn cancellation_reaches_the_handler_and_its_answer_goes_nowhere() {
    let mut net = mesh(4);
    let reg = serve(&mut net, 1, "svc.slow");
    let id = call(&mut net, 3, "svc.slow", b"", CallOptions::default());
    net.run_for(Duration::from_millis(100));
    let r = requests(&mut net, 1, reg.inbox).remove(0);
    assert!(net.command(3, |n, now| n.rpc_cancel(id, now)));
    assert_eq!(outcome(&net, 3, id), Some(Err(CallError::Cancelled)));
    assert!(!net.command(3, |n, now| n.rpc_cancel(id, now)), "once");
    net.run_for(Duration::from_millis(100));
    assert_eq!(ended(&net, 1), [(r.id, Ended::Cancelled)]);
    assert_eq!(
        net.command(1, |n, now| n.rpc_reply(r.id, vec![1], now)),
        Err(ReplyError::Gone)
    );
}

#[test]
fn a_provider_gives_up_a_call_at_its_deadline_and_drops_one_that_arrives_late() {
    let mut net = mesh(4);
    let reg = serve(&mut net, 1, "svc.slow");
    let options = CallOptions::default()
        .with_timeout(Duration::from_millis(800))
        .with_attempts(1);
    let id = call(&mut net, 3, "svc.slow", b"", options);
    net.run_for(Duration::from_millis(100));
    let r = requests(&mut net, 1, reg.inbox).remove(0);
    let (result, took) = wait_for(&mut net, 3, id);
    assert_eq!(result, Err(CallError::Timeout));
    assert!(took <= Duration::from_millis(800));
    net.run_for(Duration::from_millis(100));
    assert_eq!(ended(&net, 1), [(r.id, Ended::Expired)]);
    assert_eq!(
        net.command(1, |n, now| n.rpc_reply(r.id, vec![1], now)),
        Err(ReplyError::Gone)
    );

    // A call whose time is already up when it arrives is dropped, not run.
    let (mut node, link, _) = lone_provider("svc.slow", |_| {});
    feed(&mut node, link, call_frame(1, 1, 0, "svc.slow", b""), 0);
    assert_eq!(node.rpc_stats().expired, 1);
    assert_eq!(node.rpc().requests(), 0);
}

/// A node serving `procedure`, and an established peer (its link and identity) to feed it
/// calls from.
fn lone_provider(procedure: &str, tune: impl FnOnce(&mut Config)) -> (Node, LinkId, Identity) {
    let mut c = config(0);
    tune(&mut c);
    let mut node = Node::new(c, Identity::from_seed(1), 5, Instant::ZERO).unwrap();
    node.rpc_register(procedure, RegisterOptions::default(), Instant::ZERO)
        .unwrap();
    let caller = Identity::from_seed(2);
    let link = handshake_from(&mut node, &caller, addr(2), Instant::ZERO);
    while node.poll_transmit().is_some() {}
    while node.poll_event().is_some() {}
    (node, link, caller)
}

fn call_frame(
    epoch: u64,
    id: u64,
    remaining_ms: u64,
    procedure: &str,
    payload: &[u8],
) -> RpcMessage {
    RpcMessage::Call(Call {
        call: CallRef { epoch, id },
        settled_below: 0,
        remaining_us: remaining_ms * 1000,
        procedure: procedure.into(),
        payload: payload.to_vec(),
    })
}

fn feed(node: &mut Node, link: LinkId, message: RpcMessage, at_ms: u64) {
    let now = Instant::from_micros(at_ms * 1000);
    node.handle_link_data(link, ProtocolId::RPC.channel(), &encode(&message), now);
}

/// The RPC messages node sent since last asked.
fn sent(node: &mut Node) -> Vec<RpcMessage> {
    let mut out = Vec::new();
    while let Some(t) = node.poll_transmit() {
        if let Transmit::Send { channel, bytes, .. } = t {
            if channel != ProtocolId::RPC.channel() {
                continue;
            }
            let mut d = Decoder::new(1 << 20);
            d.push(&bytes);
            while let Ok(Some(frame)) = d.next_frame() {
                out.push(crate::wire::decode_message(frame).unwrap());
            }
        }
    }
    out
}

fn take_requests(node: &mut Node, at_ms: u64) -> Vec<Request> {
    let now = Instant::from_micros(at_ms * 1000);
    let mut out = Vec::new();
    while let Some(inbox) = node.poll_ready() {
        while let Some(Data::Request(r)) = node.take_data(inbox, now) {
            out.push(r);
        }
    }
    out
}

#[test]
fn a_call_received_again_runs_once_and_gets_the_same_answer() {
    let (mut node, link, _) = lone_provider("svc.once", |_| {});
    feed(
        &mut node,
        link,
        call_frame(1, 7, 5_000, "svc.once", b"a"),
        1,
    );
    feed(
        &mut node,
        link,
        call_frame(1, 7, 5_000, "svc.once", b"a"),
        2,
    );
    let held = take_requests(&mut node, 3);
    assert_eq!(held.len(), 1, "a duplicate while it runs is dropped");
    node.rpc_reply(held[0].id, b"A".to_vec(), Instant::from_micros(4_000))
        .unwrap();
    let reply = RpcMessage::Reply(Reply {
        call: CallRef { epoch: 1, id: 7 },
        payload: b"A".to_vec(),
    });
    assert_eq!(sent(&mut node), core::slice::from_ref(&reply));
    // A retry after the answer gets the answer again, and runs nothing.
    feed(
        &mut node,
        link,
        call_frame(1, 7, 5_000, "svc.once", b"a"),
        5,
    );
    assert_eq!(sent(&mut node), [reply]);
    assert!(take_requests(&mut node, 6).is_empty());
    assert_eq!(node.rpc_stats().executed, 1);
    assert_eq!(node.rpc_stats().duplicates, 2);
    // The same number from a restarted caller (a later epoch) is a new call.
    feed(
        &mut node,
        link,
        call_frame(2, 7, 5_000, "svc.once", b"b"),
        7,
    );
    assert_eq!(take_requests(&mut node, 8).len(), 1);
    // ...and the earlier epoch's memory is gone.
    assert_eq!(node.rpc().remembered(), 1);
}

#[test]
fn the_memory_of_answered_calls_follows_the_callers_settled_calls_and_deadlines() {
    let (mut node, link, _) = lone_provider("svc.mem", |_| {});
    for id in 1..=10 {
        feed(&mut node, link, call_frame(1, id, 2_000, "svc.mem", b""), 1);
    }
    for r in take_requests(&mut node, 2) {
        node.rpc_reply(r.id, vec![0; 100], Instant::from_micros(3_000))
            .unwrap();
    }
    assert_eq!(
        (node.rpc().remembered(), node.rpc().remembered_bytes()),
        (10, 1000)
    );
    let mut settled = call_frame(1, 11, 2_000, "svc.mem", b"");
    if let RpcMessage::Call(c) = &mut settled {
        c.settled_below = 8;
    }
    feed(&mut node, link, settled, 4);
    assert_eq!(
        node.rpc().remembered(),
        4,
        "7 settled calls forgotten, one new"
    );
    // The rest are forgotten a second after their deadline.
    node.handle_timeout(Instant::from_micros(3_002_000));
    assert_eq!(node.rpc().remembered(), 1, "the new one runs still");
    assert_eq!(node.rpc().remembered_bytes(), 0);
}

#[test]
fn refusals_and_cancellations_from_one_peer_are_rate_limited() {
    let (mut node, link, _) = lone_provider("svc.x", |c| {
        c.rpc.control_rate = 10;
        c.rpc.control_burst = 20;
    });
    for id in 0..1_000 {
        feed(
            &mut node,
            link,
            call_frame(1, id, 5_000, "not.served", b""),
            1,
        );
    }
    let fails = sent(&mut node)
        .into_iter()
        .filter(|m| {
            matches!(
                m,
                RpcMessage::Fail(Fail {
                    error: Refusal::NotServed,
                    ..
                })
            )
        })
        .count();
    assert_eq!(fails, 20, "the burst, then nothing");
    for id in 0..1_000 {
        feed(
            &mut node,
            link,
            RpcMessage::Cancel(CallRef { epoch: 1, id }),
            2,
        );
    }
    assert!(node.rpc_stats().rate_limited >= 1_980);
    // A second later there are ten more.
    for id in 0..100 {
        feed(
            &mut node,
            link,
            call_frame(1, id, 5_000, "not.served", b""),
            1_002,
        );
    }
    assert_eq!(sent(&mut node).len(), 10);
    assert!(node.rpc().buckets() <= 1);
}

#[test]
fn a_full_queue_answers_overloaded_and_the_call_moves_on() {
    let mut net = joined(5, |i| {
        let mut c = config(i);
        c.rpc.queue = 1;
        c
    });
    let a = serve(&mut net, 1, "svc.q");
    let b = serve(&mut net, 2, "svc.q");
    // Two calls fill both queues; a third is refused by both: `Overloaded`.
    let first = call(&mut net, 4, "svc.q", b"1", CallOptions::default());
    let second = call(&mut net, 3, "svc.q", b"2", CallOptions::default());
    net.run_for(Duration::from_millis(200));
    let third = call(&mut net, 4, "svc.q", b"3", CallOptions::default());
    let (result, took) = wait_for(&mut net, 4, third);
    assert_eq!(result, Err(CallError::Overloaded));
    assert!(
        took < Duration::from_millis(200),
        "refusals are not waited out"
    );
    assert!(net.nodes[1].rpc_stats().overloaded + net.nodes[2].rpc_stats().overloaded >= 2);
    echo_all(&mut net, 1, a.inbox);
    echo_all(&mut net, 2, b.inbox);
    assert!(wait_for(&mut net, 4, first).0.is_ok());
    assert!(wait_for(&mut net, 3, second).0.is_ok());
}

#[test]
fn calls_past_the_node_and_peer_credit_wait_and_none_is_lost() {
    let mut net = joined(4, |i| {
        let mut c = config(i);
        c.rpc.max_calls = 8;
        c.rpc.max_calls_per_peer = 2;
        c
    });
    let reg = serve(&mut net, 1, "svc.credit");
    let ids: Vec<CallId> = (0..8u8)
        .map(|k| call(&mut net, 3, "svc.credit", &[k], CallOptions::default()))
        .collect();
    assert_eq!(
        net.command(3, |n, now| n.rpc_call(
            "svc.credit",
            vec![],
            CallOptions::default(),
            now
        )),
        Err(CallError::Full),
        "the ninth waits for room"
    );
    let mut answered = Vec::new();
    for _ in 0..100 {
        net.run_for(Duration::from_millis(30));
        assert!(
            net.nodes[1].rpc().requests() <= 2,
            "at most two at the provider at once"
        );
        for r in requests(&mut net, 1, reg.inbox) {
            answered.push(r.payload[0]);
            net.command(1, |n, now| n.rpc_reply(r.id, r.payload.clone(), now))
                .unwrap();
        }
        if ids.iter().all(|id| outcome(&net, 3, *id).is_some()) {
            break;
        }
    }
    assert_eq!(answered, (0..8).collect::<Vec<u8>>(), "in order, none lost");
    for (k, id) in ids.iter().enumerate() {
        assert_eq!(outcome(&net, 3, *id).unwrap().unwrap().payload, [k as u8]);
    }
    assert!(net.events[3]
        .iter()
        .any(|e| matches!(e, Event::Rpc(RpcEvent::Ready))));
}

#[test]
fn call_outcomes_are_never_dropped_from_a_full_event_queue() {
    let mut net = joined(3, |i| {
        let mut c = config(i);
        c.max_queued_events = 4;
        c.rpc.max_calls = 16;
        c
    });
    let ids: Vec<CallId> = (0..16)
        .map(|_| call(&mut net, 2, "nobody.here", b"", CallOptions::default()))
        .collect();
    // Not drained between calls: the node's own queue holds them all.
    net.run_for(Duration::from_secs(1));
    for id in ids {
        assert_eq!(outcome(&net, 2, id), Some(Err(CallError::NoResponders)));
    }
}

#[test]
fn strategies_targets_and_calls_to_itself() {
    let mut net = mesh(6);
    let regs: Vec<Registered> = (1..=3).map(|i| serve(&mut net, i, "svc.pick")).collect();
    let answer_all = |net: &mut Net| {
        for i in 1..=3 {
            echo_all(net, i, regs[i - 1].inbox);
        }
    };
    let from = |net: &mut Net, options: CallOptions| -> NodeId {
        let id = call(net, 5, "svc.pick", b"", options);
        for _ in 0..100 {
            answer_all(net);
            if let Some(o) = outcome(net, 5, id) {
                return o.unwrap().from;
            }
            net.run_for(Duration::from_millis(10));
        }
        panic!("no answer");
    };
    let mut sorted: Vec<NodeId> = (1..=3).map(|i| net.id(i)).collect();
    sorted.sort();
    let first = CallOptions::default().with_strategy(Strategy::First);
    assert_eq!(from(&mut net, first.clone()), sorted[0]);
    let rr = CallOptions::default().with_strategy(Strategy::RoundRobin);
    let turns: Vec<NodeId> = (0..3).map(|_| from(&mut net, rr.clone())).collect();
    let mut seen = turns.clone();
    seen.sort();
    assert_eq!(seen, sorted, "each in turn");
    let target = net.id(3);
    for _ in 0..3 {
        assert_eq!(from(&mut net, CallOptions::default().to(target)), target);
    }
    let random: Vec<NodeId> = (0..12)
        .map(|_| from(&mut net, CallOptions::default()))
        .collect();
    assert!(sorted.iter().all(|n| random.contains(n)), "random spreads");
    net.run_for(Duration::from_secs(12));
    let lowest = from(
        &mut net,
        CallOptions::default().with_strategy(Strategy::LowestRtt),
    );
    assert!(sorted.contains(&lowest));
    // A node that serves the procedure itself can call it.
    let id = net.command(2, |n, now| {
        n.rpc_call(
            "svc.pick",
            b"me".to_vec(),
            CallOptions::default().to(n.node_id()),
            now,
        )
    });
    let id = id.unwrap();
    assert_eq!(
        echo_all(&mut net, 2, regs[1].inbox),
        1,
        "at once, no network"
    );
    let replied = wait_for(&mut net, 2, id).0.unwrap();
    assert_eq!(
        (replied.from, &replied.payload[..]),
        (net.id(2), &b"me"[..])
    );
    // A target that does not serve it: nobody responds.
    let other = net.id(4);
    let id = call(
        &mut net,
        5,
        "svc.pick",
        b"",
        CallOptions::default().to(other),
    );
    assert_eq!(wait_for(&mut net, 5, id).0, Err(CallError::NoResponders));
}

#[test]
fn unregistering_withdraws_and_hands_held_calls_to_another_provider() {
    let mut net = mesh(5);
    let a = serve(&mut net, 1, "svc.move");
    let b = serve(&mut net, 2, "svc.move");
    let id = call(
        &mut net,
        4,
        "svc.move",
        b"m",
        CallOptions::default().with_strategy(Strategy::First),
    );
    net.run_for(Duration::from_millis(100));
    let (holder, reg, other) = if net.nodes[1].rpc().requests() == 1 {
        (1, a, (2, b.inbox))
    } else {
        (2, b, (1, a.inbox))
    };
    assert!(net.command(holder, |n, now| n.rpc_unregister(reg.id, now)));
    net.run_for(Duration::from_millis(100));
    assert_eq!(echo_all(&mut net, other.0, other.1), 1);
    assert_eq!(wait_for(&mut net, 4, id).0.unwrap().from, net.id(other.0));
    assert!(!net.command(holder, |n, now| n.rpc_unregister(reg.id, now)));
}

#[test]
fn bad_input_is_refused_with_the_rule_it_breaks() {
    let mut net = joined(2, |i| {
        let mut c = config(i);
        c.rpc.max_registrations = 1;
        c.rpc.max_payload = 1000;
        c
    });
    let wild = net.command(1, |n, now| {
        n.rpc_call("svc.*", vec![], CallOptions::default(), now)
    });
    assert!(matches!(wild, Err(CallError::Procedure(_))));
    let big = net.command(1, |n, now| {
        n.rpc_call("svc.big", vec![0; 1000], CallOptions::default(), now)
    });
    assert_eq!(
        big,
        Err(CallError::TooLarge {
            size: 1007,
            max: 1000
        })
    );
    serve(&mut net, 1, "svc.one");
    let again = net.command(1, |n, now| {
        n.rpc_register("svc.one", RegisterOptions::default(), now)
    });
    assert_eq!(again, Err(RegisterError::AlreadyServed));
    let more = net.command(1, |n, now| {
        n.rpc_register("svc.two", RegisterOptions::default(), now)
    });
    assert_eq!(more, Err(RegisterError::TooMany));
    let bad = net.command(1, |n, now| {
        n.rpc_register("svc..x", RegisterOptions::default(), now)
    });
    assert!(matches!(bad, Err(RegisterError::Procedure(_))));
    let mut c = config(0);
    c.rpc.attempts = 9;
    assert!(c.validate().is_err());
    c.rpc.attempts = 0;
    assert_eq!(c.validate(), Err(crate::ConfigError::Zero("rpc.attempts")));
    // A reply too large is refused, and the caller hears `TooLarge`.
    let (mut node, link, _) = lone_provider("svc.x", |c| c.rpc.max_payload = 1000);
    feed(&mut node, link, call_frame(1, 1, 5_000, "svc.x", b""), 1);
    let r = take_requests(&mut node, 2).remove(0);
    assert_eq!(
        node.rpc_reply(r.id, vec![0; 2000], Instant::from_micros(3_000)),
        Err(ReplyError::TooLarge {
            size: 2000,
            max: 1000
        })
    );
    assert!(matches!(
        &sent(&mut node)[..],
        [RpcMessage::Fail(Fail {
            error: Refusal::TooLarge,
            ..
        })]
    ));
}

#[test]
fn closing_ends_every_call() {
    let mut net = mesh(3);
    let _reg = serve(&mut net, 1, "svc.close");
    let id = call(&mut net, 2, "svc.close", b"", CallOptions::default());
    net.run_for(Duration::from_millis(100));
    net.command(2, |n, now| n.close(now));
    assert_eq!(outcome(&net, 2, id), Some(Err(CallError::Closed)));
    assert_eq!(
        net.command(2, |n, now| n.rpc_call(
            "svc.close",
            vec![],
            CallOptions::default(),
            now
        )),
        Err(CallError::Closed)
    );
}

#[test]
fn a_dead_node_in_the_dht_costs_discovery_a_stall_not_the_deadline() {
    let mut net = mesh(6);
    // Killed without a goodbye: lookups that ask it wait the DHT's stall timeout (1 s) for
    // it, not its request timeout (5 s, the call's whole deadline).
    net.killed.insert(4);
    let id = call(&mut net, 3, "nobody.home", b"?", CallOptions::default());
    let (result, took) = wait_for(&mut net, 3, id);
    assert_eq!(result, Err(CallError::NoResponders));
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(net.nodes[3].rpc_stats().lookups, 1, "one lookup per call");
}
