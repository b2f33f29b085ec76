//! The decision table: from two nodes' NAT profiles, how they get a link.
//!
//! One side must *listen* (accept the QUIC handshake) and the other *dial*. A dial only gets
//! through if the listener's NAT lets the dialer's first packet in, and QUIC's client only
//! accepts answers from the exact address it dialed, so the listener's public port towards
//! the dialer must be known in advance. In order:
//!
//! 1. **Same NAT** (same public address): the two sit on one private network and dial each
//!    other's local addresses ([`Approach::Local`]).
//! 2. **Direct**: a side whose NAT lets anyone in (endpoint-independent filtering and
//!    mapping, or no NAT at all) listens at its public address; the initiator prefers to dial.
//! 3. **Punch**: the listener first sends probes towards the dialer, which opens its filter,
//!    then the dialer dials the listener's public address. That works when
//!    - both mappings are endpoint-independent (either side can listen; the other initiates);
//!    - one side's mapping is endpoint-independent and its filtering address-dependent (it
//!      listens; its probe to the dialer's address opens the filter for whatever port the
//!      dialer's NAT picks);
//!    - one side's mapping is endpoint-independent and the other's NAT allocates ports
//!      contiguously: the dialer predicts the next few ports its NAT will use and the listener
//!      probes each of them (*port prediction*).
//! 4. **Relay** otherwise: for example a port-restricted cone facing a symmetric NAT that
//!    allocates at random, or two symmetric NATs.

use super::profile::{Behavior, NatProfile};

/// One of the two nodes a decision is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The node that wants the link (the first profile given to [`decide`]).
    Initiator,
    /// The node it wants to reach.
    Target,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Initiator => Side::Target,
            Side::Target => Side::Initiator,
        }
    }
}

/// How two nodes get a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approach {
    /// Both are behind the same NAT: dial the local addresses.
    Local,
    /// `listener` takes unsolicited packets: the other side dials its public address.
    Direct {
        /// Who listens.
        listener: Side,
    },
    /// A coordinated hole punch: `listener` probes the dialer's address (each predicted port
    /// with `predict`), then the dialer dials the listener's public address.
    Punch {
        /// Who listens.
        listener: Side,
        /// Whether the dialer's next ports are predicted.
        predict: bool,
    },
    /// Neither: the link goes through a relay.
    Relay,
}

impl Approach {
    /// The path a link made this way is: `direct`, `punched` or `relayed`.
    pub fn path(self) -> crate::nat::PathKind {
        match self {
            Approach::Local | Approach::Direct { .. } => crate::nat::PathKind::Direct,
            Approach::Punch { .. } => crate::nat::PathKind::Punched,
            Approach::Relay => crate::nat::PathKind::Relayed,
        }
    }
}

/// How `initiator` gets a link to `target`. See the [module documentation](self).
pub fn decide(initiator: &NatProfile, target: &NatProfile) -> Approach {
    if initiator.public.ip() == target.public.ip() {
        return Approach::Local;
    }
    let of = |side: Side| match side {
        Side::Initiator => initiator,
        Side::Target => target,
    };
    // The target listening is preferred: the initiator dials without asking anyone.
    let order = [Side::Target, Side::Initiator];
    if let Some(listener) = order.into_iter().find(|s| of(*s).accepts_unsolicited()) {
        return Approach::Direct { listener };
    }
    if initiator.predictable_port() && target.predictable_port() {
        return Approach::Punch {
            listener: Side::Target,
            predict: false,
        };
    }
    let opens_to_address =
        |p: &NatProfile| p.predictable_port() && p.filtering != Behavior::AddressAndPortDependent;
    if let Some(listener) = order.into_iter().find(|s| opens_to_address(of(*s))) {
        return Approach::Punch {
            listener,
            predict: false,
        };
    }
    let predicts_for = |s: Side| of(s).predictable_port() && of(s.other()).predictable_next();
    if let Some(listener) = order.into_iter().find(|s| predicts_for(*s)) {
        return Approach::Punch {
            listener,
            predict: true,
        };
    }
    Approach::Relay
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::{Allocation, PathKind};
    use core::net::{IpAddr, Ipv4Addr, SocketAddr};
    use Allocation::{Contiguous, Preserving, Random};
    use Behavior::{
        AddressAndPortDependent as Apd, AddressDependent as Ad, EndpointIndependent as Ei,
    };

    fn nat(host: u8, mapping: Behavior, filtering: Behavior, allocation: Allocation) -> NatProfile {
        NatProfile {
            mapping,
            filtering,
            allocation,
            hairpin: false,
            public: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, host)), 4433),
            port_step: u16::from(allocation == Contiguous),
        }
    }

    /// A named NAT kind, as a profile at a host number.
    type Kind = (&'static str, fn(u8) -> NatProfile);

    /// The NAT kinds of the matrix, plus the public side.
    fn kinds() -> [Kind; 7] {
        [
            ("public", |h| {
                NatProfile::public(nat(h, Ei, Ei, Preserving).public)
            }),
            ("full cone", |h| nat(h, Ei, Ei, Preserving)),
            ("restricted cone", |h| nat(h, Ei, Ad, Preserving)),
            ("port-restricted cone", |h| nat(h, Ei, Apd, Preserving)),
            ("address-dependent", |h| nat(h, Ad, Apd, Contiguous)),
            ("symmetric contiguous", |h| nat(h, Apd, Apd, Contiguous)),
            ("symmetric random", |h| nat(h, Apd, Apd, Random)),
        ]
    }

    /// The rule the decision table must meet at least.
    fn rule(a: &NatProfile, b: &NatProfile) -> PathKind {
        if a.filtering == Ei || b.filtering == Ei {
            return PathKind::Direct;
        }
        let ei = |p: &NatProfile| p.mapping == Ei;
        let punchable = (ei(a) && ei(b))
            || (ei(a) && a.filtering == Ad)
            || (ei(b) && b.filtering == Ad)
            || (ei(a) && b.allocation == Contiguous)
            || (ei(b) && a.allocation == Contiguous);
        if punchable {
            PathKind::Punched
        } else {
            PathKind::Relayed
        }
    }

    #[test]
    fn every_pair_of_kinds_meets_the_rule_from_either_side() {
        for (na, a) in kinds() {
            for (nb, b) in kinds() {
                let (a, b) = (a(1), b(2));
                let got = decide(&a, &b);
                assert_eq!(got.path(), rule(&a, &b), "{na} → {nb}: {got:?}");
                // Whichever side starts, the same path results, with the same listener.
                let back = decide(&b, &a);
                assert_eq!(back.path(), got.path(), "{nb} → {na}");
                let listener = |x: Approach| match x {
                    Approach::Direct { listener } | Approach::Punch { listener, .. } => {
                        Some(listener)
                    }
                    _ => None,
                };
                if let (Some(l), Some(m)) = (listener(got), listener(back)) {
                    let same_node = l != m;
                    let both_ei = a.mapping == Ei && b.mapping == Ei;
                    let both_open = a.accepts_unsolicited() && b.accepts_unsolicited();
                    assert!(
                        same_node || both_ei || both_open,
                        "{na} ↔ {nb}: {got:?} {back:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_named_cases_of_the_rule() {
        let prc = nat(1, Ei, Apd, Preserving);
        let sym_random = nat(2, Apd, Apd, Random);
        assert_eq!(decide(&prc, &sym_random), Approach::Relay);
        assert_eq!(
            decide(&sym_random, &nat(3, Apd, Apd, Random)),
            Approach::Relay
        );
        assert_eq!(
            decide(&prc, &nat(2, Apd, Apd, Contiguous)),
            Approach::Punch {
                listener: Side::Initiator,
                predict: true
            }
        );
        assert_eq!(
            decide(&sym_random, &nat(3, Ei, Ad, Preserving)),
            Approach::Punch {
                listener: Side::Target,
                predict: false
            }
        );
        assert_eq!(
            decide(&prc, &nat(3, Ei, Ei, Preserving)),
            Approach::Direct {
                listener: Side::Target
            }
        );
        // A full cone reached by a symmetric NAT: the symmetric side dials.
        assert_eq!(
            decide(&nat(3, Ei, Ei, Preserving), &sym_random),
            Approach::Direct {
                listener: Side::Initiator
            }
        );
        // Two nodes behind one NAT.
        let mut twin = sym_random;
        twin.public.set_port(9999);
        assert_eq!(decide(&sym_random, &twin), Approach::Local);
    }

    #[test]
    fn class_names_round_trip_and_the_line_reads_as_documented() {
        for b in Behavior::ALL {
            assert_eq!(b.as_str().parse::<Behavior>(), Ok(b));
        }
        for a in Allocation::ALL {
            assert_eq!(a.as_str().parse::<Allocation>(), Ok(a));
        }
        assert!("cone".parse::<Behavior>().is_err());
        let line = alloc::format!("{}", nat(7, Ei, Apd, Preserving));
        assert_eq!(
            line,
            "mapping=endpoint-independent filtering=address-and-port-dependent \
             allocation=preserving hairpin=no public=198.18.0.7:4433"
        );
    }
}
