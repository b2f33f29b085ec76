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
