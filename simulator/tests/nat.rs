//! NAT boxes and detection: a node behind each kind of box detects exactly that kind.

use macula_proto::nat::{decide, Allocation, Behavior, NatEvent, NatProfile, PathKind};
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

/// The kinds of the matrix: `None` is the public side.
fn matrix_kinds() -> Vec<(&'static str, Option<NatBoxConfig>)> {
    vec![
        ("public", None),
        ("full cone", Some(NatBoxConfig::new(Ei, Ei, Preserving))),
        ("restricted cone", Some(NatBoxConfig::new(Ei, Ad, Preserving))),
        ("port-restricted cone", Some(NatBoxConfig::new(Ei, Apd, Preserving))),
        ("address-dependent", Some(NatBoxConfig::new(Ad, Apd, Contiguous))),
        ("symmetric contiguous", Some(NatBoxConfig::new(Apd, Apd, Contiguous))),
        ("symmetric random", Some(NatBoxConfig::new(Apd, Apd, Random))),
    ]
}

/// Node 0 a gateway, node 1 public; node 2 of kind `a` and node 3 of kind `b` (behind one box
/// when `same` is set) detect their profiles, node 3 reserves at the gateway, and node 2 opens
/// a relayed link to node 3, which upgrades if the two profiles allow. The path each end ends
/// with, and the path the decision table chose.
fn pair(
    a: Option<NatBoxConfig>,
    b: Option<NatBoxConfig>,
    same: bool,
    seed: u64,
) -> (PathKind, PathKind, PathKind) {
    let mut boxes = Vec::new();
    let mut behind = vec![None, None];
    for kind in [a, b] {
        behind.push(kind.map(|k| {
            if same && !boxes.is_empty() {
                return 0;
            }
            boxes.push(k);
            boxes.len() - 1
        }));
    }
    let mut builder = SimBuilder::new();
    builder
        .seed(seed)
        .nodes(4)
        .mode(Mode::Quic)
        .record_events(std::env::var("NAT_DEBUG").is_ok())
        .nat(NatPlan { boxes, behind })
        .configure(|n, c| {
            if n == 0 {
                c.nat.gateway = true;
                c.roles = macula_proto::Roles::GATEWAY;
            }
            if n >= 2 {
                c.dht.join = false;
                c.publish_pins = false;
            }
        });
    let mut sim = builder.build();
    sim.connect(1, 0);
    let t = sim.now() + Duration::from_secs(1);
    sim.run_until(t, |_| false);
    for n in [2, 3] {
        sim.connect(n, 0);
        let t = sim.now() + Duration::from_secs(1);
        sim.run_until(t, |_| false);
        sim.command(n, |node, now| node.nat_detect(now));
        let t = sim.now() + Duration::from_secs(15);
        sim.run_until(t, |s| s.node(n).unwrap().nat_profile().is_some());
    }
    let (p2, p3) = (
        sim.node(2).unwrap().nat_profile().expect("node 2 detected"),
        sim.node(3).unwrap().nat_profile().expect("node 3 detected"),
    );
    let (gateway, target) = (sim.node_id(0), sim.node_id(3));
    sim.command(3, |node, now| node.relay_reserve(gateway, None, now));
    let t = sim.now() + Duration::from_secs(1);
    sim.run_until(t, |_| false);
    sim.command(2, |node, now| node.connect_relayed(target, gateway, None, now));
    let t = sim.now() + Duration::from_secs(30);
    sim.run_until(t, |_| false);
    let path = |s: &macula_sim::Sim, n: u32, peer| {
        s.node(n)
            .unwrap()
            .peer(&peer)
            .map(|p| p.path)
            .unwrap_or_else(|| panic!("node {n} has no link to its peer"))
    };
    if std::env::var("NAT_DEBUG").is_ok() {
        for (n, e) in sim.take_events() {
            if n >= 2 {
                eprintln!("{n}: {e:?}");
            }
        }
    }
    let from2 = path(&sim, 2, target);
    let from3 = path(&sim, 3, sim.node_id(2));
    (from2, from3, decide(&p2, &p3).path())
}

#[test]
fn every_pair_ends_up_connected_punched_where_the_table_says_and_relayed_otherwise() {
    let mut rows = Vec::new();
    for (na, a) in matrix_kinds() {
        for (nb, b) in matrix_kinds() {
            let (x, y, want) = pair(a, b, false, 5);
            assert_eq!((x, y), (want, want), "{na} → {nb}");
            rows.push((na, nb, x));
        }
    }
    // Two nodes behind one NAT reach each other on the private network, hairpinning or not.
    for (name, kind) in matrix_kinds().into_iter().skip(1) {
        for hairpin in [false, true] {
            let k = kind.map(|k| NatBoxConfig { hairpin, ..k });
            let (x, y, want) = pair(k, k, true, 6);
            assert_eq!((x, y, want), (PathKind::Direct, PathKind::Direct, PathKind::Direct), "{name} twice, hairpin {hairpin}");
        }
    }
    assert_eq!(rows.len(), 49);
    let count = |k| rows.iter().filter(|r| r.2 == k).count();
    let (direct, punched, relayed) = (
        count(PathKind::Direct),
        count(PathKind::Punched),
        count(PathKind::Relayed),
    );
    eprintln!("direct {direct} punched {punched} relayed {relayed}");
    // Every kind of outcome occurs: the matrix is not all one thing.
    assert!(direct > 0 && punched > 0 && relayed > 0);
}
