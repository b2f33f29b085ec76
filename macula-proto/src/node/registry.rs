//! The node's subsystems: one list drives frame dispatch, peer fan-out, timeouts and stats.
//!
//! Adding a subsystem to the core is one line in the [`subsystems!`] invocation at the end of
//! this file (its folder, its messages and its commands live elsewhere). The list fixes the
//! order in which subsystems hear of peers and time, so runs stay deterministic.

use alloc::vec::Vec;

use super::link_core::Core;
use super::subsystem::{Answer, Ask, Cx, Init, Peer, PeerChange, Subsystem, Ticket};
use crate::config::Config;
use crate::rng::Rng;
use crate::time::Instant;
use crate::wire::{MessageError, ProtocolId, ProtocolOffer, RawFrame};

/// Most subsystems a node may have (a bound for per-subsystem tables).
pub(crate) const MAX_SUBSYSTEMS: usize = 8;

/// The half of [`Subsystem`] that does not depend on its message type, so the node can walk
/// subsystems of different types in one loop.
pub(crate) trait Tenant {
    fn protocol(&self) -> ProtocolId;
    fn on_peer(&mut self, change: PeerChange, cx: &mut Cx<'_>);
    fn on_timeout(&mut self, cx: &mut Cx<'_>);
    fn poll_timeout(&self) -> Option<Instant>;
    fn stored(&self) -> usize;
    fn on_ask(&mut self, asker: ProtocolId, ticket: Ticket, ask: Ask, cx: &mut Cx<'_>);
    fn on_answer(&mut self, ticket: Ticket, answer: Answer, cx: &mut Cx<'_>);
}

impl<S: Subsystem> Tenant for S {
    fn protocol(&self) -> ProtocolId {
        S::PROTOCOL
    }
    fn on_peer(&mut self, change: PeerChange, cx: &mut Cx<'_>) {
        Subsystem::on_peer(self, change, cx);
    }
    fn on_timeout(&mut self, cx: &mut Cx<'_>) {
        Subsystem::on_timeout(self, cx);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Subsystem::poll_timeout(self)
    }
    fn stored(&self) -> usize {
        Subsystem::stored(self)
    }
    fn on_ask(&mut self, asker: ProtocolId, ticket: Ticket, ask: Ask, cx: &mut Cx<'_>) {
        Subsystem::on_ask(self, asker, ticket, ask, cx);
    }
    fn on_answer(&mut self, ticket: Ticket, answer: Answer, cx: &mut Cx<'_>) {
        Subsystem::on_answer(self, ticket, answer, cx);
    }
}

/// Access to one subsystem by its type, for the node's commands.
pub(crate) trait Pick<S> {
    fn pick(&mut self) -> &mut S;
    fn pick_ref(&self) -> &S;
}

/// A set of protocols as a bit mask: bit `i` is the `i`-th subsystem of the list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mask(pub u32);

impl Mask {
    pub const NONE: Mask = Mask(0);

    pub fn has(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }
}

macro_rules! subsystems {
    ($( $(#[$attr:meta])* $field:ident : $ty:ty ),* $(,)?) => {
        /// Every subsystem of the node, one field each.
        pub(crate) struct Subsystems {
            /// The subsystems the configuration runs.
            pub(crate) enabled: Mask,
            /// Each one's [`Tenant::stored`] when last asked (the core keeps their sum).
            pub(crate) stored: [usize; MAX_SUBSYSTEMS],
            $( $(#[$attr])* pub(crate) $field: $ty, )*
        }

        /// A message of one of the subsystems, decoded.
        #[allow(non_camel_case_types)]
        pub(crate) enum Incoming {
            $( $(#[$attr])* $field(<$ty as Subsystem>::Message), )*
        }

        /// The protocol of each subsystem and its version, in list order: a subsystem's index
        /// is its place here.
        const PROTOCOLS: &[ProtocolOffer] = &[$( $(#[$attr])* ProtocolOffer {
            id: <$ty as Subsystem>::PROTOCOL,
            version: <$ty as Subsystem>::VERSION,
        }, )*];

        $( $(#[$attr])*
        impl Pick<$ty> for Subsystems {
            fn pick(&mut self) -> &mut $ty {
                &mut self.$field
            }
            fn pick_ref(&self) -> &$ty {
                &self.$field
            }
        } )*

        impl Subsystems {
            /// Every subsystem, each with a seed drawn from `rng` in list order.
            pub(crate) fn new(init: &Init<'_>, rng: &mut Rng) -> Self {
                let mut enabled = Mask::NONE;
                $( $(#[$attr])* {
                    if <$ty as Subsystem>::enabled(init.config) {
                        enabled.0 |= 1 << index_of(<$ty as Subsystem>::PROTOCOL)
                            .expect("listed");
                    }
                } )*
                Subsystems {
                    enabled,
                    stored: [0; MAX_SUBSYSTEMS],
                    $( $(#[$attr])* $field: <$ty as Subsystem>::new(&Init {
                        seed: rng.child_seed(),
                        ..*init
                    }), )*
                }
            }

            /// Calls `f` for each running subsystem, in list order, with its index.
            pub(crate) fn each(&mut self, mut f: impl FnMut(usize, &mut dyn Tenant)) {
                $( $(#[$attr])* {
                    let index = index_of(<$ty as Subsystem>::PROTOCOL).expect("listed");
                    if self.enabled.has(index) {
                        f(index, &mut self.$field);
                    }
                } )*
            }

            /// Calls `f` for each running subsystem, to read.
            #[cfg(test)]
            pub(crate) fn each_ref(&self, mut f: impl FnMut(usize, &dyn Tenant)) {
                $( $(#[$attr])* {
                    let index = index_of(<$ty as Subsystem>::PROTOCOL).expect("listed");
                    if self.enabled.has(index) {
                        f(index, &self.$field);
                    }
                } )*
            }

            /// The running subsystem at `index`.
            pub(crate) fn at(&mut self, index: usize) -> Option<&mut dyn Tenant> {
                if !self.enabled.has(index) {
                    return None;
                }
                let mut found: Option<&mut dyn Tenant> = None;
                $( $(#[$attr])* {
                    if found.is_none()
                        && index_of(<$ty as Subsystem>::PROTOCOL) == Some(index) {
                        found = Some(&mut self.$field);
                    }
                } )*
                found
            }

            /// Decodes a frame of a running subsystem's protocol; `None` for any other protocol.
            pub(crate) fn decode(
                &self,
                frame: RawFrame<'_>,
            ) -> Option<Result<(usize, Incoming), MessageError>> {
                let index = index_of(frame.protocol).filter(|i| self.enabled.has(*i))?;
                $( $(#[$attr])* {
                    if frame.protocol == <$ty as Subsystem>::PROTOCOL {
                        return Some(
                            Subsystem::decode(&self.$field, frame)
                                .map(|m| (index, Incoming::$field(m))),
                        );
                    }
                } )*
                None
            }

            /// Hands a decoded message to its subsystem.
            pub(crate) fn dispatch(&mut self, from: Peer, message: Incoming, core: &mut Core) {
                match message {
                    $( $(#[$attr])* Incoming::$field(m) => {
                        let cx = &mut Cx::new(core, <$ty as Subsystem>::PROTOCOL);
                        Subsystem::on_message(&mut self.$field, from, m, cx);
                    } )*
                }
            }

        }

        /// Whether a node with `config` runs the subsystem of `protocol`.
        #[allow(dead_code)]
        pub(crate) fn runs(config: &Config, protocol: ProtocolId) -> bool {
            $( $(#[$attr])* {
                if protocol == <$ty as Subsystem>::PROTOCOL {
                    return <$ty as Subsystem>::enabled(config);
                }
            } )*
            false
        }
    };
}

/// The index of the subsystem speaking `protocol`, if one does.
pub(crate) fn index_of(protocol: ProtocolId) -> Option<usize> {
    PROTOCOLS.iter().position(|p| p.id == protocol)
}

/// The protocol of the subsystem at `index`.
pub(crate) fn protocol_at(index: usize) -> ProtocolId {
    PROTOCOLS[index].id
}

/// What a node running the subsystems in `running` offers peers in its handshake.
pub(crate) fn offers(running: Mask) -> Vec<ProtocolOffer> {
    PROTOCOLS
        .iter()
        .enumerate()
        .filter(|(i, _)| running.has(*i))
        .map(|(_, p)| *p)
        .collect()
}

/// Which of the running subsystems a peer offering `offers` shares with this node: both list
/// the protocol, with the same version.
pub(crate) fn shared(running: Mask, offers: &[ProtocolOffer]) -> Mask {
    let mut mask = Mask::NONE;
    for (index, ours) in PROTOCOLS.iter().enumerate() {
        if running.has(index) && offers.contains(ours) {
            mask.0 |= 1 << index;
        }
    }
    mask
}

const _: () = assert!(PROTOCOLS.len() <= MAX_SUBSYSTEMS);

subsystems! {
    dht: crate::dht::Dht,
    pubsub: crate::pubsub::Pubsub,
    rpc: crate::rpc::Rpc,
    nat: crate::nat::Nat,
    #[cfg(feature = "test-protocols")]
    echo: crate::echo::Echo,
}
