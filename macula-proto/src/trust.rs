//! Trust on first use: the key this node found at each name its user gave it.
//!
//! When the application dials an address it supplied ([`Node::connect`](crate::Node::connect)
//! without an expected node id: a bootstrap or seed address, a configured peer), nothing yet
//! says which key should answer there. The first time a node completes a handshake at such a
//! name it **pins** the key it found; from then on a different key at that name is refused
//! before the handshake goes on, naming both fingerprints (SSH's `accept-new`). A dial by node
//! id needs no pin (the expected id is the key), and addresses learned from the mesh, inbound
//! links and mapped addresses are never pinned.
//!
//! The core keeps the pins in memory and reports each change as a [`TrustEvent`]; adapters
//! load the pins at start ([`Node::trust_pin`](crate::Node::trust_pin)) and store them when
//! they change. A pin is removed only on purpose
//! ([`Node::trust_revoke`](crate::Node::trust_revoke)).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::id::NodeId;

/// The pins: a bounded map from name to the node id (the key) found there.
#[derive(Debug, Default, Clone)]
pub struct Pins {
    by_name: BTreeMap<String, NodeId>,
}

impl Pins {
    /// No pins.
    pub const fn new() -> Self {
        Pins {
            by_name: BTreeMap::new(),
        }
    }

    /// The key pinned at `name`.
    pub fn get(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    /// Every pin, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, NodeId)> + '_ {
        self.by_name.iter().map(|(n, id)| (n.as_str(), *id))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether `name` can be pinned: not empty, no white space or control characters, not
    /// starting with `#` (so a pin file of `<name> <fingerprint>` lines reads back).
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && !name.starts_with('#')
            && !name.chars().any(|c| c.is_whitespace() || c.is_control())
    }

    /// Pins `node` at `name` unless `max` pins exist already (a pin is never evicted: that
    /// would silently trust the next key at the evicted name) or `name` is not
    /// [valid](Pins::valid_name). Replaces a pin at `name`.
    pub(crate) fn insert(&mut self, name: &str, node: NodeId, max: usize) -> bool {
        if !Pins::valid_name(name)
            || (!self.by_name.contains_key(name) && self.by_name.len() >= max)
        {
            return false;
        }
        self.by_name.insert(name.into(), node);
        true
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<NodeId> {
        self.by_name.remove(name)
    }
}

/// A change to what the node trusts, or a refusal because of it. Each one is what an audit
/// log records.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustEvent {
    /// The first key seen at `name` was pinned (`tofu_trust`).
    Pinned {
        /// The name the application dialed.
        name: String,
        /// The key found there.
        node: NodeId,
    },
    /// Another key than the pinned one answered at `name`, and the link was refused
    /// (`fingerprint_mismatch`).
    Mismatch {
        /// The name the application dialed.
        name: String,
        /// The key pinned there.
        pinned: NodeId,
        /// The key that answered.
        presented: NodeId,
    },
    /// A key was found at a new name, but it was not pinned: the pins are full, or the name
    /// cannot be a pin's (see [`Pins::valid_name`]).
    NotPinned {
        /// The name the application dialed.
        name: String,
        /// The key found there.
        node: NodeId,
    },
    /// The application removed the pin at `name` (`trust_revoked`).
    Revoked {
        /// The name.
        name: String,
        /// The key that was pinned there.
        node: NodeId,
    },
    /// `node` made a new link from `new` while its link from `old`, another address, was
    /// alive (heard from within a keep-alive interval): two live nodes may hold one identity
    /// (a copied key), or the node moved (`identity_conflict`). The newer link is kept, as for
    /// a node that restarted; a twin shows up as a conflict at every switch.
    IdentityConflict {
        /// The identity both links proved.
        node: NodeId,
        /// The address of the link that was alive.
        old: core::net::SocketAddr,
        /// The address of the new link.
        new: core::net::SocketAddr,
    },
}

/// The DHT name a node publishes its pin at `name` under (a provider record of its realm, one
/// per node that pinned it, signed by that node): `trust/` and the name.
pub fn dht_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + name.len());
    out.extend_from_slice(b"trust/");
    out.extend_from_slice(name.as_bytes());
    out
}

/// The key a published pin names (the record's value), if it is one.
pub fn published_key(value: &[u8]) -> Option<NodeId> {
    let bytes: [u8; 32] = value.try_into().ok()?;
    Some(NodeId(bytes))
}
