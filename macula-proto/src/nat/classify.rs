//! From what the observers saw to a [`NatProfile`]: the pure half of detection.

use alloc::vec::Vec;
use core::net::SocketAddr;

use super::profile::{Allocation, Behavior, NatProfile};

/// Largest step between two consecutive new ports still taken for contiguous allocation.
pub const MAX_PORT_STEP: u16 = 16;

/// What detection saw. The mapping probes go from the main socket in this order: to the first
/// observer's main port (the mapping the node's links already use), to its auxiliary port, to
/// the second observer; then one from the node's auxiliary socket (a fresh mapping).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    /// The node's main socket port, as bound.
    pub local_port: Option<u16>,
    /// The node's auxiliary socket port, as bound.
    pub local_aux_port: Option<u16>,
    /// Where the first observer's main port saw the main socket.
    pub first: Option<SocketAddr>,
    /// Where the first observer's auxiliary port saw it.
    pub first_aux: Option<SocketAddr>,
    /// Where the second observer saw it.
    pub second: Option<SocketAddr>,
    /// Where the first observer saw the node's auxiliary socket.
    pub aux_socket: Option<SocketAddr>,
    /// An answer from the first observer's auxiliary port arrived unasked.
    pub aux_answer: bool,
    /// An answer from a helper at an address never sent to arrived.
    pub helper_answer: bool,
    /// A probe to the node's own public address came back.
    pub hairpin: bool,
}

/// The profile the observations show, or `None` without the three mapping answers.
pub fn classify(o: &Observations) -> Option<NatProfile> {
    let (first, first_aux, second) = (o.first?, o.first_aux?, o.second?);
    let mapping = if first != first_aux {
        Behavior::AddressAndPortDependent
    } else if first != second {
        Behavior::AddressDependent
    } else {
        Behavior::EndpointIndependent
    };
    let filtering = if o.helper_answer {
        Behavior::EndpointIndependent
    } else if o.aux_answer {
        Behavior::AddressDependent
    } else {
        Behavior::AddressAndPortDependent
    };
    // Ports of the mappings the test made, in the order it made them.
    let mut fresh = Vec::with_capacity(3);
    if mapping == Behavior::AddressAndPortDependent {
        fresh.push(first_aux.port());
    }
    if mapping != Behavior::EndpointIndependent {
        fresh.push(second.port());
    }
    if let Some(aux) = o.aux_socket {
        fresh.push(aux.port());
    }
    let kept = |seen: Option<SocketAddr>, local: Option<u16>| {
        seen.zip(local).is_some_and(|(s, l)| s.port() == l)
    };
    // Forward steps between consecutive new ports (0 for one that went back or repeated).
    let steps: Vec<u16> = fresh
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    let (allocation, port_step) = if mapping == Behavior::EndpointIndependent {
        let preserved = kept(Some(first), o.local_port)
            && (o.aux_socket.is_none() || kept(o.aux_socket, o.local_aux_port));
        if preserved {
            (Allocation::Preserving, 0)
        } else {
            (Allocation::Random, 0)
        }
    } else if !steps.is_empty() && steps.iter().all(|s| (1..=MAX_PORT_STEP).contains(s)) {
        (
            Allocation::Contiguous,
            steps.iter().copied().min().unwrap_or(1),
        )
    } else {
        (Allocation::Random, 0)
    };
    Some(NatProfile {
        mapping,
        filtering,
        allocation,
        hairpin: o.hairpin,
        public: first,
        port_step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([203, 0, 113, 9], port)))
    }

    fn seen(first: u16, first_aux: u16, second: u16, aux: u16) -> Observations {
        Observations {
            local_port: Some(4433),
            local_aux_port: Some(4434),
            first: at(first),
            first_aux: at(first_aux),
            second: at(second),
            aux_socket: at(aux),
            ..Observations::default()
        }
    }

    #[test]
    fn cones_preserve_and_filter_as_the_answers_say() {
        let mut o = seen(4433, 4433, 4433, 4434);
        o.helper_answer = true;
        o.aux_answer = true;
        let p = classify(&o).unwrap();
        assert_eq!(
            (p.mapping, p.filtering, p.allocation),
            (
                Behavior::EndpointIndependent,
                Behavior::EndpointIndependent,
                Allocation::Preserving
            )
        );
        o.helper_answer = false;
        assert_eq!(classify(&o).unwrap().filtering, Behavior::AddressDependent);
        o.aux_answer = false;
        assert_eq!(
            classify(&o).unwrap().filtering,
            Behavior::AddressAndPortDependent
        );
        let moved = seen(5000, 5000, 5000, 5001);
        assert_eq!(classify(&moved).unwrap().allocation, Allocation::Random);
    }

    #[test]
    fn symmetric_and_address_dependent_mappings_and_their_allocation() {
        let p = classify(&seen(30000, 30001, 30002, 30003)).unwrap();
        assert_eq!(p.mapping, Behavior::AddressAndPortDependent);
        assert_eq!((p.allocation, p.port_step), (Allocation::Contiguous, 1));
        let p = classify(&seen(30000, 30002, 30004, 30007)).unwrap();
        assert_eq!((p.allocation, p.port_step), (Allocation::Contiguous, 2));
        let p = classify(&seen(30000, 51234, 1999, 40211)).unwrap();
        assert_eq!(p.allocation, Allocation::Random);
        let p = classify(&seen(30000, 30000, 30001, 30002)).unwrap();
        assert_eq!(p.mapping, Behavior::AddressDependent);
        assert_eq!(p.allocation, Allocation::Contiguous);
        assert_eq!(p.public, at(30000).unwrap());
        // Without the three mapping answers there is no profile.
        let mut missing = seen(1, 2, 3, 4);
        missing.second = None;
        assert_eq!(classify(&missing), None);
    }
}
