//! The NAT matrix: every pair of NAT kinds, each pair in a small simulated mesh, with the
//! path the two nodes end up on. `macula-sim nat-matrix` prints it (the table in
//! `docs/nat.md` is its output); the tests check it.
//!
//! Each pair runs in a mesh of four: node 0 is a gateway on the public side, node 1 another
//! public node (a second observer), node 2 has the initiator's kind and node 3 the target's.
//! Nodes 2 and 3 join through the gateway only (no DHT join, no published pins, so their
//! filtering tests are exact), detect their profiles, node 3 reserves at the gateway, and node
//! 2 opens a relayed link to node 3, which upgrades by itself where the two profiles allow.

use std::fmt::Write as _;

use macula_proto::nat::{decide, Allocation, Behavior, NatProfile, PathKind};
use macula_proto::{Duration, Roles};

use crate::nat::{NatBoxConfig, NatPlan};
use crate::sim::{Mode, Sim, SimBuilder};

use Allocation::{Contiguous, Preserving, Random};
use Behavior::{AddressAndPortDependent as Apd, AddressDependent as Ad, EndpointIndependent as Ei};

/// A kind of NAT in the matrix; `None` is the public side.
pub type Kind = (&'static str, Option<NatBoxConfig>);

/// The kinds: the public side, full cone, restricted cone, port-restricted cone,
/// address-dependent mapping, and symmetric NATs allocating contiguously and at random.
pub fn kinds() -> Vec<Kind> {
    vec![
        ("public", None),
        ("full cone", Some(NatBoxConfig::new(Ei, Ei, Preserving))),
        (
            "restricted cone",
            Some(NatBoxConfig::new(Ei, Ad, Preserving)),
        ),
        (
            "port-restricted cone",
            Some(NatBoxConfig::new(Ei, Apd, Preserving)),
        ),
        (
            "address-dependent",
            Some(NatBoxConfig::new(Ad, Apd, Contiguous)),
        ),
        (
            "symmetric, contiguous",
            Some(NatBoxConfig::new(Apd, Apd, Contiguous)),
        ),
        (
            "symmetric, random",
            Some(NatBoxConfig::new(Apd, Apd, Random)),
        ),
    ]
}

/// How one pair came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The profiles the two nodes detected.
    pub profiles: (Option<NatProfile>, Option<NatProfile>),
    /// The path each end's link to the other runs, if it has one.
    pub paths: (Option<PathKind>, Option<PathKind>),
    /// The path the decision table chose from the two profiles.
    pub chosen: Option<PathKind>,
}

impl Outcome {
    /// Both ends linked, on the path the table chose.
    pub fn ok(&self) -> bool {
        self.chosen.is_some() && self.paths == (self.chosen, self.chosen)
    }

    /// The cell of the printed table.
    pub fn cell(&self) -> String {
        match (self.ok(), self.paths.0) {
            (true, Some(p)) => p.to_string(),
            _ => format!(
                "**FAILED** ({:?}/{:?}, table: {:?})",
                self.paths.0, self.paths.1, self.chosen
            ),
        }
    }
}

/// Whether a detected profile has the box's classes (the public side: no NAT at all).
pub fn detected_as(profile: Option<NatProfile>, kind: Option<NatBoxConfig>) -> bool {
    let Some(p) = profile else {
        return false;
    };
    let got = (p.mapping, p.filtering, p.allocation, p.hairpin);
    match kind {
        Some(k) => got == (k.mapping, k.filtering, k.allocation, k.hairpin),
        None => got == (Ei, Ei, Preserving, true),
    }
}

/// Runs one pair (behind one box when `same`).
pub fn pair(a: Option<NatBoxConfig>, b: Option<NatBoxConfig>, same: bool, seed: u64) -> Outcome {
    let mut boxes = Vec::new();
    let mut behind = vec![None, None];
    for kind in [a, b] {
        behind.push(kind.map(|k| {
            if !same || boxes.is_empty() {
                boxes.push(k);
            }
            boxes.len() - 1
        }));
    }
    let mut builder = SimBuilder::new();
    builder
        .seed(seed)
        .nodes(4)
        .mode(Mode::Quic)
        .nat(NatPlan { boxes, behind })
        .configure(|n, c| {
            if n == 0 {
                c.nat.gateway = true;
                c.roles = Roles::GATEWAY;
            }
            if n >= 2 {
                c.dht.join = false;
                c.publish_pins = false;
            }
        });
    let mut sim = builder.build();
    sim.connect(1, 0);
    settle(&mut sim, 1);
    for n in [2, 3] {
        sim.connect(n, 0);
        settle(&mut sim, 1);
        sim.command(n, |node, now| node.nat_detect(now));
        let t = sim.now() + Duration::from_secs(15);
        sim.run_until(t, |s| s.node(n).is_some_and(|x| x.nat_profile().is_some()));
    }
    let profile = |s: &Sim, n| s.node(n).and_then(|x| x.nat_profile());
    let profiles = (profile(&sim, 2), profile(&sim, 3));
    let (gateway, target, initiator) = (sim.node_id(0), sim.node_id(3), sim.node_id(2));
    sim.command(3, |node, now| node.relay_reserve(gateway, None, now));
    settle(&mut sim, 1);
    sim.command(2, |node, now| {
        node.connect_relayed(target, gateway, None, now)
    });
    settle(&mut sim, 30);
    let path = |s: &Sim, n, peer| s.node(n).and_then(|x| x.peer(&peer)).map(|p| p.path);
    Outcome {
        profiles,
        paths: (path(&sim, 2, target), path(&sim, 3, initiator)),
        chosen: match profiles {
            (Some(a), Some(b)) => Some(decide(&a, &b).path()),
            _ => None,
        },
    }
}

fn settle(sim: &mut Sim, seconds: u64) {
    let t = sim.now() + Duration::from_secs(seconds);
    sim.run_until(t, |_| false);
}

/// The whole matrix.
#[derive(Clone, Debug)]
pub struct Matrix {
    /// The kinds, in order.
    pub kinds: Vec<Kind>,
    /// `cells[i][j]`: kind `i` reaching kind `j`.
    pub cells: Vec<Vec<Outcome>>,
    /// Two nodes behind one NAT of each kind, hairpinning off and on.
    pub same_nat: Vec<(&'static str, [Outcome; 2])>,
}

impl Matrix {
    /// Runs every pair with `seed`.
    pub fn run(seed: u64) -> Matrix {
        let kinds = kinds();
        let cells = kinds
            .iter()
            .map(|(_, a)| {
                kinds
                    .iter()
                    .map(|(_, b)| pair(*a, *b, false, seed))
                    .collect()
            })
            .collect();
        let same_nat = kinds
            .iter()
            .filter_map(|(name, kind)| {
                let k = (*kind)?;
                let run = |hairpin| {
                    let k = Some(NatBoxConfig { hairpin, ..k });
                    pair(k, k, true, seed)
                };
                Some((*name, [run(false), run(true)]))
            })
            .collect();
        Matrix {
            kinds,
            cells,
            same_nat,
        }
    }

    /// What went wrong: a pair not linked on the table's path, or a kind detected as another.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, row) in self.cells.iter().enumerate() {
            for (j, o) in row.iter().enumerate() {
                let (a, b) = (&self.kinds[i], &self.kinds[j]);
                if !o.ok() {
                    out.push(format!("{} → {}: {}", a.0, b.0, o.cell()));
                }
                for (kind, p) in [(a, o.profiles.0), (b, o.profiles.1)] {
                    if !detected_as(p, kind.1) {
                        out.push(format!("{} → {}: {} detected as {p:?}", a.0, b.0, kind.0));
                    }
                }
            }
        }
        for (name, outcomes) in &self.same_nat {
            for o in outcomes {
                if !o.ok() || o.paths.0 != Some(PathKind::Direct) {
                    out.push(format!("two behind one {name}: {}", o.cell()));
                }
            }
        }
        out
    }

    /// How many pairs ended on each path: (direct, punched, relayed).
    pub fn counts(&self) -> (usize, usize, usize) {
        let all = || self.cells.iter().flatten().filter(|o| o.ok());
        let n = |k| all().filter(|o| o.paths.0 == Some(k)).count();
        (
            n(PathKind::Direct),
            n(PathKind::Punched),
            n(PathKind::Relayed),
        )
    }

    /// The table, in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::from("| initiator ↓ / target → |");
        for (name, _) in &self.kinds {
            let _ = write!(s, " {name} |");
        }
        s.push_str("\n| --- |");
        s.push_str(&" --- |".repeat(self.kinds.len()));
        s.push('\n');
        for (i, row) in self.cells.iter().enumerate() {
            let _ = write!(s, "| {} |", self.kinds[i].0);
            for o in row {
                let _ = write!(s, " {} |", o.cell());
            }
            s.push('\n');
        }
        s.push_str("\n| two nodes behind one | hairpinning off | hairpinning on |\n");
        s.push_str("| --- | --- | --- |\n");
        for (name, [off, on]) in &self.same_nat {
            let _ = writeln!(s, "| {name} | {} | {} |", off.cell(), on.cell());
        }
        let (d, p, r) = self.counts();
        let _ = writeln!(
            s,
            "\n{d} pairs direct, {p} punched, {r} relayed; {} failures.",
            self.failures().len()
        );
        s
    }
}
