//! NAT boxes and detection: a node behind each kind of box detects exactly that kind.

use macula_proto::nat::{Allocation, Behavior, NatEvent, NatProfile};
use macula_proto::{Duration, Event, Instant};
use macula_sim::nat::{NatBoxConfig, NatPlan};
use macula_sim::{Mode, SimBuilder};

use Allocation::{Contiguous, Preserving, Random};
use Behavior::{AddressAndPortDependent as Apd, AddressDependent as Ad, EndpointIndependent as Ei};

/// Four public nodes joined to node 0, and node 4 behind `kind`, joined to node 0 only; then
/// node 4 detects.
fn detect(kind: NatBoxConfig, seed: u64) -> NatProfile {
    let mut b = SimBuilder::new();
    b.seed(seed)
        .nodes(5)
        .mode(Mode::Quic)
        .record_events(true)
        .nat(NatPlan {
            boxes: vec![kind],
            behind: vec![None, None, None, None, Some(0)],
        })
        .configure(|n, c| {
            if n == 4 {
                c.dht.join = false;
            }
        });
    let mut sim = b.build();
    for n in 1..5 {
        sim.connect(n, 0);
    }
    let t = sim.now() + Duration::from_secs(3);
    sim.run_until(t, |_| false);
    sim.command(4, |node, now| node.nat_detect(now));
    let t = sim.now() + Duration::from_secs(20);
    let mut outcome = None;
    sim.run_until(t, |_| false);
    for (n, e) in sim.take_events() {
        if let (4, Event::Nat(e)) = (n, e) {
            outcome = Some(e);
        }
    }
    match outcome {
        Some(NatEvent::Detected(p)) => p,
        other => panic!("{kind:?}: {other:?}"),
    }
}

#[test]
fn detection_gives_each_box_its_configured_class() {
    let kinds = [
        ("full cone", NatBoxConfig::new(Ei, Ei, Preserving)),
        ("restricted cone", NatBoxConfig::new(Ei, Ad, Preserving)),
        (
            "port-restricted cone",
            NatBoxConfig::new(Ei, Apd, Preserving),
        ),
        ("address-dependent", NatBoxConfig::new(Ad, Apd, Contiguous)),
        (
            "symmetric contiguous",
            NatBoxConfig::new(Apd, Apd, Contiguous),
        ),
        ("symmetric random", NatBoxConfig::new(Apd, Apd, Random)),
    ];
    for (name, kind) in kinds {
        for hairpin in [false, true] {
            let kind = NatBoxConfig { hairpin, ..kind };
            let p = detect(kind, 1);
            let got = (p.mapping, p.filtering, p.allocation, p.hairpin);
            let want = (kind.mapping, kind.filtering, kind.allocation, kind.hairpin);
            assert_eq!(got, want, "{name}, hairpin {hairpin}: {p}");
        }
    }
    let _ = Instant::ZERO;
}

/// A gateway (node 0), a second public node (1), and nodes 2 and 3 behind two symmetric NATs
/// with random allocation (no hole punch can work), both joined to the gateway; node 3
/// reserves there.
fn relay_world(seed: u64) -> macula_sim::Sim {
    let sym = NatBoxConfig::new(Apd, Apd, Random);
    let mut b = SimBuilder::new();
    b.seed(seed)
        .nodes(4)
        .mode(Mode::Quic)
        .record_events(true)
        .nat(NatPlan {
            boxes: vec![sym, sym],
            behind: vec![None, None, Some(0), Some(1)],
        })
        .configure(|n, c| {
            if n == 0 {
                c.nat.gateway = true;
                c.roles = macula_proto::Roles::GATEWAY;
            }
        });
    let mut sim = b.build();
    for n in 1..4 {
        sim.connect(n, 0);
    }
    let t = sim.now() + Duration::from_secs(2);
    sim.run_until(t, |_| false);
    let gateway = sim.node_id(0);
    sim.command(3, |node, now| node.relay_reserve(gateway, None, now));
    let t = sim.now() + Duration::from_secs(1);
    sim.run_until(t, |_| false);
    sim
}

#[test]
fn a_relayed_link_is_end_to_end_quic_through_the_gateway() {
    let mut sim = relay_world(3);
    assert_eq!(sim.node(3).unwrap().relay_stats().reserved_at, 1);
    let (gateway, target) = (sim.node_id(0), sim.node_id(3));
    // The direct way fails: node 3's private address means nothing from behind another NAT.
    let link = sim
        .command(2, |node, now| {
            node.connect_relayed(target, gateway, None, now)
        })
        .flatten()
        .expect("room for a circuit");
    let t = sim.now() + Duration::from_secs(5);
    sim.run_until(t, |s| s.node(2).unwrap().peer(&target).is_some());
    let peer = sim
        .node(2)
        .unwrap()
        .peer(&target)
        .expect("linked through the relay");
    assert_eq!(peer.link, link);
    assert_eq!(peer.path, macula_proto::nat::PathKind::Relayed);
    let back = sim
        .node(3)
        .unwrap()
        .peer(&sim.node_id(2))
        .expect("both ends");
    assert_eq!(back.path, macula_proto::nat::PathKind::Relayed);
    // A ping goes round through the gateway, which counts what it forwarded.
    let before = sim.node(0).unwrap().relay_stats();
    sim.ping(2, target).unwrap().unwrap();
    let t = sim.now() + Duration::from_secs(2);
    sim.run_until(t, |_| false);
    let pinged = sim.take_events().into_iter().any(|(n, e)| {
        n == 2 && matches!(e, Event::PingResult { peer, result: Ok(_), .. } if peer == target)
    });
    assert!(pinged);
    let after = sim.node(0).unwrap().relay_stats();
    assert_eq!(after.circuits, 1);
    assert!(after.packets_relayed > before.packets_relayed);
    // The gateway goes away: when an end loses its link to the gateway, it drops the
    // relayed link with it, not after QUIC's own idle timeout.
    sim.crash(0);
    let t = sim.now() + Duration::from_secs(120);
    for n in [2, 3] {
        sim.run_until(t, |s| s.node(n).unwrap().peer(&gateway).is_none());
        let other = sim.node_id(5 - n);
        assert!(sim.node(n).unwrap().peer(&gateway).is_none(), "node {n}");
        assert!(sim.node(n).unwrap().peer(&other).is_none(), "node {n}");
    }
}

#[test]
fn every_pair_ends_up_connected_punched_where_the_table_says_and_relayed_otherwise() {
    let matrix = macula_sim::nat_matrix::Matrix::run(5);
    assert_eq!(
        matrix.failures(),
        Vec::<String>::new(),
        "{}",
        matrix.markdown()
    );
    // The table's shares (see docs/nat.md): every kind of outcome occurs.
    assert_eq!(matrix.counts(), (24, 14, 11), "{}", matrix.markdown());
    assert_eq!(matrix.same_nat.len(), 6);
}

/// A QUIC mesh of `behind.len()` nodes where every node detects on its own: node 0 is where
/// the others join, the nodes in `gateways` accept relay circuits, and node `n` sits behind
/// box `behind[n]` of `kinds` (or on the public side). Runs `settle` for the detections and
/// reservations.
fn detecting_world(
    seed: u64,
    kinds: &[NatBoxConfig],
    behind: Vec<Option<usize>>,
    gateways: &'static [u32],
    settle: Duration,
) -> macula_sim::Sim {
    let nodes = behind.len();
    let mut b = SimBuilder::new();
    b.seed(seed)
        .nodes(nodes)
        .mode(Mode::Quic)
        .record_events(true)
        .read_inboxes(true)
        .nat(NatPlan {
            boxes: kinds.to_vec(),
            behind,
        })
        .configure(move |n, c| {
            c.nat.detect = true;
            if gateways.contains(&n) {
                c.nat.gateway = true;
                c.roles = macula_proto::Roles::GATEWAY;
            }
        });
    let mut sim = b.build();
    for n in 1..nodes as u32 {
        sim.connect(n, 0);
    }
    let t = sim.now() + settle;
    sim.run_until(t, |_| false);
    sim
}

#[test]
fn nodes_behind_nat_are_reached_by_their_ids_through_the_records_they_publish() {
    use macula_proto::nat::PathKind;
    // A gateway and two more public nodes; a node behind a symmetric NAT with random
    // allocation, one behind a port-restricted cone (no punch between them: relayed), and
    // one behind a restricted cone (punchable with both). Every node detects on its own;
    // those that can't be dialed keep reservations at the gateway and publish where they are.
    let kinds = [
        NatBoxConfig::new(Apd, Apd, Random),
        NatBoxConfig::new(Ei, Apd, Preserving),
        NatBoxConfig::new(Ei, Ad, Preserving),
    ];
    let mut sim = detecting_world(
        9,
        &kinds,
        vec![None, None, None, Some(0), Some(1), Some(2)],
        &[0],
        Duration::from_secs(20),
    );
    for n in 3..6 {
        let node = sim.node(n).unwrap();
        assert!(node.nat_profile().is_some(), "node {n} detected");
        assert_eq!(
            node.relay_stats().reserved_at,
            1,
            "node {n} reserved: {:?} {:?}",
            node.nat_profile(),
            node.relay_stats()
        );
    }
    let reach = |sim: &mut macula_sim::Sim, from: u32, to: u32| {
        let target = sim.node_id(to);
        let id = sim
            .command(from, |node, now| node.nat_reach(target, now))
            .unwrap();
        let t = sim.now() + Duration::from_secs(40);
        sim.run_until(t, |_| false);
        let outcome = sim.take_events().into_iter().find_map(|(n, e)| match e {
            Event::Nat(NatEvent::Reached { id: i, path, .. }) if n == from && i == id => {
                Some(Ok(path))
            }
            Event::Nat(NatEvent::Unreachable { id: i, why, .. }) if n == from && i == id => {
                Some(Err(why))
            }
            _ => None,
        });
        let now = sim.node(from).unwrap().peer(&target).map(|p| p.path);
        (outcome, now)
    };
    // Symmetric → port-restricted: relayed, and it stays so.
    let (first, now) = reach(&mut sim, 3, 4);
    assert_eq!(first, Some(Ok(PathKind::Relayed)));
    assert_eq!(now, Some(PathKind::Relayed));
    // Symmetric → restricted cone: relayed first, then punched.
    let (first, now) = reach(&mut sim, 3, 5);
    assert_eq!(first, Some(Ok(PathKind::Relayed)));
    assert_eq!(now, Some(PathKind::Punched));
    // Behind NAT → public: a plain dial.
    let (first, now) = reach(&mut sim, 4, 2);
    assert_eq!(
        (first, now),
        (Some(Ok(PathKind::Direct)), Some(PathKind::Direct))
    );
    // Nobody by that id.
    let stranger = macula_proto::Identity::from_seed(999).node_id();
    let id = sim
        .command(4, |node, now| node.nat_reach(stranger, now))
        .unwrap();
    let t = sim.now() + Duration::from_secs(40);
    sim.run_until(t, |_| false);
    let failed = sim.take_events().into_iter().any(|(n, e)| {
        n == 4 && matches!(e, Event::Nat(NatEvent::Unreachable { id: i, .. }) if i == id)
    });
    assert!(failed);
}

#[test]
fn a_relayed_link_fails_over_to_another_gateway_when_its_gateway_goes() {
    use macula_proto::nat::PathKind;
    // Two gateways and a bootstrap node on the public side; behind a symmetric NAT with
    // random allocation, and behind a port-restricted cone: no punch between them, so the
    // only way is a relay. The node behind the cone keeps reservations at both gateways.
    let kinds = [
        NatBoxConfig::new(Apd, Apd, Random),
        NatBoxConfig::new(Ei, Apd, Preserving),
    ];
    let mut sim = detecting_world(
        4,
        &kinds,
        vec![None, None, None, Some(0), Some(1)],
        &[1, 2],
        Duration::from_secs(20),
    );
    assert_eq!(sim.node(4).unwrap().relay_stats().reserved_at, 2);
    let target = sim.node_id(4);
    sim.command(3, |node, now| node.nat_reach(target, now));
    let t = sim.now() + Duration::from_secs(20);
    sim.run_until(t, |_| false);
    let path = |sim: &macula_sim::Sim| sim.node(3).unwrap().peer(&target).map(|p| p.path);
    assert_eq!(path(&sim), Some(PathKind::Relayed));
    let carrying = |sim: &macula_sim::Sim, g: u32| sim.node(g).unwrap().relay_stats().circuits;
    let (used, other) = if carrying(&sim, 1) == 1 {
        (1, 2)
    } else {
        (2, 1)
    };
    assert_eq!((carrying(&sim, used), carrying(&sim, other)), (1, 0));
    // The gateway carrying the circuit goes away: the link is made again through the other.
    sim.crash(used);
    let t = sim.now() + Duration::from_secs(40);
    sim.run_until(t, |_| false);
    assert_eq!(path(&sim), Some(PathKind::Relayed));
    assert_eq!(carrying(&sim, other), 1);
    assert_eq!(sim.node(3).unwrap().nat_stats().failovers, 1);
    assert!(sim.node(4).unwrap().peer(&sim.node_id(3)).is_some());
}

#[test]
fn rpc_and_pubsub_reach_nodes_behind_nat_by_their_ids() {
    use macula_proto::pubsub::{PublishOptions, Qos, SubscribeOptions};
    use macula_proto::rpc::{CallOptions, RegisterOptions, RpcEvent};
    use macula_proto::Data;
    // A bootstrap node and a gateway; a provider and subscriber behind a port-restricted
    // cone, a caller and publisher behind a symmetric NAT with random allocation. No address
    // in a DHT record leads through the provider's NAT: the caller reaches it by its id,
    // through a relay.
    let kinds = [
        NatBoxConfig::new(Ei, Apd, Preserving),
        NatBoxConfig::new(Apd, Apd, Random),
    ];
    let mut sim = detecting_world(
        12,
        &kinds,
        vec![None, None, Some(0), Some(1)],
        &[1],
        Duration::from_secs(10),
    );
    assert_eq!(sim.node(2).unwrap().relay_stats().reserved_at, 1);
    sim.command(2, |node, now| {
        node.rpc_register("echo", RegisterOptions::default(), now)
    })
    .unwrap()
    .unwrap();
    sim.command(2, |node, now| {
        node.pubsub_subscribe("news.*", SubscribeOptions::default(), now)
    })
    .unwrap()
    .unwrap();
    let t = sim.now() + Duration::from_secs(5);
    sim.run_until(t, |_| false);
    sim.take_events();
    let mut options = CallOptions::default();
    options.timeout = Some(Duration::from_secs(20));
    let call = sim
        .command(3, |node, now| {
            node.rpc_call("echo", b"ping".to_vec(), options, now)
        })
        .unwrap()
        .unwrap();
    let published = sim.command(3, |node, now| {
        node.pubsub_publish(
            "news.a",
            b"hello".to_vec(),
            PublishOptions::qos(Qos::AtLeastOnce),
            now,
        )
    });
    assert!(matches!(published, Some(Ok(_))));
    let mut answered = None;
    let mut delivered = Vec::new();
    let end = sim.now() + Duration::from_secs(30);
    while sim.now() < end && (answered.is_none() || delivered.is_empty()) {
        let t = sim.now() + Duration::from_millis(100);
        sim.run_until(t, |_| false);
        for (n, data) in sim.take_data() {
            match data {
                Data::Request(r) if n == 2 => {
                    sim.command(2, |node, now| node.rpc_reply(r.id, r.payload, now));
                }
                Data::Message(m) if n == 2 => delivered.push(m.payload),
                _ => {}
            }
        }
        for (n, e) in sim.take_events() {
            if let Event::Rpc(RpcEvent::Done { id, result }) = e {
                if n == 3 && id == call {
                    answered = Some(result);
                }
            }
        }
    }
    let replied = answered.expect("the call ended").expect("answered");
    assert_eq!(replied.payload, b"ping");
    assert_eq!(replied.from, sim.node_id(2));
    assert_eq!(delivered, vec![b"hello".to_vec()]);
    let path = sim.node(3).unwrap().peer(&sim.node_id(2)).map(|p| p.path);
    assert_eq!(path, Some(macula_proto::nat::PathKind::Relayed));
}
