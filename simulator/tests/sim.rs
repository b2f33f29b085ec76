//! The simulator's promises: same seed, same trace; faults injected as asked; invariants hold
//! under churn, loss and partitions; restarted nodes rejoin.

use macula_proto::{Duration, Instant};
use macula_sim::faults::{Explicit, FaultPlan};
use macula_sim::scenario::{self, Params};
use macula_sim::{Mode, SimBuilder};

fn params(nodes: usize, seed: u64, mode: Mode) -> Params {
    faulty(nodes, seed, mode, 40, Explicit::default())
}

/// A run of `secs` virtual seconds with `faults`.
fn faulty(nodes: usize, seed: u64, mode: Mode, secs: u64, faults: Explicit) -> Params {
    let duration = Duration::from_secs(secs);
    Params {
        nodes,
        seed,
        duration,
        mode,
        faults: FaultPlan::explicit(faults, duration),
        profile: None,
        plant: None,
        prefetch: None,
    }
}

/// Churn `churn` and loss `loss`.
fn churn_and_loss(churn: f64, loss: f64) -> Explicit {
    Explicit {
        churn,
        loss,
        ..Explicit::default()
    }
}

fn digest(p: &Params) -> String {
    let report = scenario::run("connect", p).expect("the connect scenario exists");
    assert!(report.ok, "{:#?}", report.verdicts);
    report.json["trace_digest"]
        .as_str()
        .expect("a digest")
        .to_owned()
}

#[test]
fn same_seed_same_digest_in_frames_mode() {
    let p = params(300, 7, Mode::Frames);
    let a = digest(&p);
    assert_eq!(a, digest(&p));
    assert_ne!(a, digest(&Params { seed: 8, ..p }));
}

#[test]
fn prefetching_changes_only_speed() {
    // Enough nodes that the engine looks several events ahead, with crashes and loss so that
    // some of the events it looks at find their node gone or their wire closed.
    let p = Params {
        prefetch: Some(true),
        ..faulty(3000, 5, Mode::Frames, 30, churn_and_loss(0.2, 0.05))
    };
    let with = digest(&p);
    assert_eq!(
        with,
        digest(&Params {
            prefetch: Some(false),
            ..p
        })
    );
}

#[test]
fn same_seed_same_digest_in_quic_mode() {
    let p = params(12, 7, Mode::Quic);
    let a = digest(&p);
    assert_eq!(a, digest(&p));
    assert_ne!(a, digest(&Params { seed: 8, ..p }));
}

#[test]
fn churn_and_loss_keep_invariants_and_restarted_nodes_rejoin() {
    for mode in [Mode::Frames, Mode::Quic] {
        let nodes = if mode == Mode::Quic { 30 } else { 300 };
        let p = faulty(nodes, 11, mode, 60, churn_and_loss(0.2, 0.05));
        let report = scenario::run("connect", &p).unwrap();
        assert!(report.ok, "{mode:?}: {:#?}", report.verdicts);
        let restarted = report.json["restarted"].as_u64().unwrap();
        assert_eq!(
            restarted,
            ((nodes - 1) as f64 * 0.2).round() as u64,
            "{mode:?}"
        );
        assert_eq!(
            report.json["rejoined"].as_u64().unwrap(),
            restarted,
            "{mode:?}"
        );
        let net = &report.json["network"];
        let loss_seen = net["lost"].as_u64().unwrap() + net["retransmitted"].as_u64().unwrap();
        assert!(loss_seen > 0, "{mode:?}: loss was injected: {net}");
    }
}

#[test]
fn a_partition_longer_than_the_idle_timeout_heals() {
    let partition = Explicit {
        partition: true,
        ..Explicit::default()
    };
    let p = faulty(200, 5, Mode::Frames, 120, partition);
    let report = scenario::run("connect", &p).unwrap();
    assert!(report.ok, "{:#?}", report.verdicts);
    assert!(report.json["network"]["partitioned"].as_u64().unwrap() > 0);
    assert_eq!(report.json["connected_ratio_end"].as_f64().unwrap(), 1.0);
}

#[test]
fn a_one_way_partition_starves_the_listener_and_it_drops_the_peer() {
    let mut sim = SimBuilder::new().seed(1).nodes(2).build();
    sim.connect(1, 0);
    let t = |s| Instant::ZERO + Duration::from_secs(s);
    assert!(sim.run_until(t(2), |s| s.node(0).is_some_and(|n| n.peer_count() == 1)));
    // Node 1 can no longer reach node 0; node 0 still reaches node 1.
    sim.partition(&[1], &[0], true);
    sim.run_until(t(45), |_| false);
    assert_eq!(
        sim.node(0).unwrap().stats().idle_timeouts,
        1,
        "node 0 heard nothing for 30 s"
    );
    assert!(sim.verdicts().iter().all(|v| v.ok));
}

#[test]
fn a_restarted_node_keeps_its_identity_and_loses_its_state() {
    let mut sim = SimBuilder::new().seed(2).nodes(3).build();
    let id = sim.node_id(2);
    sim.connect(2, 0);
    sim.connect(1, 0);
    let t = |s| Instant::ZERO + Duration::from_secs(s);
    assert!(sim.run_until(t(2), |s| s.node(0).is_some_and(|n| n.peer_count() == 2)));
    sim.crash(2);
    assert!(sim.node(2).is_none() && !sim.is_up(2));
    sim.run_until(t(5), |_| false);
    sim.restart(2);
    assert_eq!(sim.node_id(2), id);
    assert_eq!(sim.node(2).unwrap().peer_count(), 0, "state is lost");
    sim.connect(2, 0);
    assert!(sim.run_until(t(7), |s| s.node(2).is_some_and(|n| n.peer_count() == 1)));
    // Node 0 replaced the dead link at once (the restarted node dialed again).
    assert_eq!(sim.node(0).unwrap().peer_count(), 2);
    assert!(sim.verdicts().iter().all(|v| v.ok));
}

#[test]
fn a_bandwidth_limit_stretches_round_trips() {
    let rtt = |bandwidth: Option<u64>| {
        let link = macula_sim::LinkModel {
            bandwidth,
            ..macula_sim::LinkModel::default()
        };
        let mut sim = SimBuilder::new().seed(3).nodes(2).link_model(link).build();
        sim.connect(1, 0);
        let t = |s| Instant::ZERO + Duration::from_secs(s);
        let up = sim.run_until(t(5), |s| s.node(1).is_some_and(|n| n.peer_count() == 1));
        assert!(up, "{:?} {:?}", sim.now(), sim.node(1).unwrap().stats());
        sim.run_until(t(20), |_| false);
        let rtt = sim.node(1).unwrap().peers().next().unwrap().rtt.unwrap();
        rtt
    };
    let fast = rtt(None);
    // 1,000 bytes/s: a ping frame of a dozen bytes takes ~12 ms to leave each uplink.
    let slow = rtt(Some(1_000));
    assert!(
        slow > fast + Duration::from_millis(15),
        "{slow:?} vs {fast:?}"
    );
}

#[test]
fn quic_mode_survives_duplication_and_reordering() {
    let link = macula_sim::LinkModel {
        duplicate: 0.05,
        reorder: 0.1,
        ..macula_sim::LinkModel::default()
    };
    let mut sim = SimBuilder::new()
        .seed(4)
        .nodes(4)
        .mode(Mode::Quic)
        .link_model(link)
        .build();
    for n in 1..4 {
        sim.connect(n, 0);
    }
    let t = |s| Instant::ZERO + Duration::from_secs(s);
    assert!(sim.run_until(t(10), |s| s.node(0).is_some_and(|n| n.peer_count() == 3)));
    sim.run_until(t(30), |_| false);
    assert_eq!(
        sim.node(0).unwrap().peer_count(),
        3,
        "keep-alives carried the peers"
    );
    assert!(sim.stats().duplicated > 0);
    assert!(sim.verdicts().iter().all(|v| v.ok), "{:?}", sim.verdicts());
}

#[test]
fn a_run_records_node_events_when_asked() {
    let mut sim = SimBuilder::new()
        .seed(9)
        .nodes(3)
        .duration(Duration::from_secs(3))
        .record_events(true)
        .build();
    sim.connect(1, 0);
    sim.connect(2, 0);
    sim.run();
    assert_eq!(sim.now(), Instant::ZERO + Duration::from_secs(3));
    let events = sim.take_events();
    let mut ups: Vec<(u32, macula_proto::NodeId)> = events
        .iter()
        .filter_map(|(n, e)| match e {
            macula_proto::Event::PeerUp { peer, .. } => Some((*n, *peer)),
            _ => None,
        })
        .collect();
    ups.sort();
    let mut want = vec![
        (0, sim.node_id(1)),
        (0, sim.node_id(2)),
        (1, sim.node_id(0)),
        (2, sim.node_id(0)),
        // Joining, 1 and 2 look themselves up and find each other through 0.
        (1, sim.node_id(2)),
        (2, sim.node_id(1)),
    ];
    want.sort();
    assert_eq!(ups, want, "{events:?}");
    assert!(sim.take_events().is_empty(), "taken once");
}

#[test]
fn events_a_command_gives_at_once_reach_the_caller() {
    let mut sim = SimBuilder::new().seed(4).nodes(1).build();
    // A node without peers fails a DHT get at once, inside the command.
    let op = sim
        .command(0, |node, now| node.dht_get(b"anything", now))
        .expect("node 0 is up");
    let end = sim.now() + Duration::from_secs(1);
    let Some(macula_sim::Step::Events(events)) = sim.step(end) else {
        panic!("the command's event comes first");
    };
    assert!(
        events.iter().any(|(n, e)| *n == 0
            && matches!(e, macula_proto::Event::Dht(macula_proto::dht::DhtEvent::Failed {
                op: o,
                error: macula_proto::dht::DhtError::NoPeers,
            }) if *o == op)),
        "{events:?}"
    );
}

#[test]
fn actions_fall_due_in_order_whether_or_not_they_name_a_node() {
    use macula_sim::Step;
    let mut sim = SimBuilder::new().seed(3).nodes(20).prefetch(true).build();
    let at = |micros| Instant::ZERO + Duration::from_micros(micros);
    sim.schedule_for(at(30_000), 4, 1);
    sim.schedule(at(10_000), 2);
    // Thirty actions in one millisecond, so that the engine's look-ahead (which prefetches the
    // node an action names) reaches each of them, and among them one naming a node that does
    // not exist: no error, the action comes as if no node were named.
    for k in 0..30u64 {
        let node = if k == 15 { 1_000 } else { k as u32 % 20 };
        sim.schedule_for(at(20_000 + k), node, 100 + k);
    }
    let mut seen = Vec::new();
    while let Some(step) = sim.step(at(40_000)) {
        if let Step::Action(tag) = step {
            seen.push((sim.now(), tag));
        }
    }
    let expected: Vec<_> = [(at(10_000), 2)]
        .into_iter()
        .chain((0..30).map(|k| (at(20_000 + k), 100 + k)))
        .chain([(at(30_000), 1)])
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn the_trust_scenario_refuses_intruders_other_realms_and_the_impostor() {
    for mode in [Mode::Frames, Mode::Quic] {
        let p = faulty(60, 3, mode, 40, churn_and_loss(0.0, 0.02));
        let report = scenario::run("trust", &p).expect("the trust scenario exists");
        assert!(report.ok, "{mode:?}: {:#?}", report.verdicts);
        let figure = |name: &str| report.json[name].as_u64().expect(name);
        assert_eq!(figure("cross_realm_links"), 0);
        assert!(figure("refused_wrong_realm") > 0, "realm B knocked");
        assert!(figure("refused_bad_credentials") > 0, "intruders knocked");
        assert!(figure("refused_rate_limited") > 0, "and were cut off");
        assert!(
            figure("impostor_refused") > 0,
            "pinners refused the impostor"
        );
        assert_eq!(figure("impostor_admitted_by_pinners"), 0);
        assert!(
            figure("published_pins_real_key") > 0,
            "the realm remembers the real key"
        );
        assert_eq!(figure("published_pins_other_key"), 0);
    }
}
