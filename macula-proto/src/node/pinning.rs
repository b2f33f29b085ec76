//! Trust on first use in the link core: dials by name are checked against the pins, and the
//! first key found at a name is pinned (see [`crate::trust`]).

use alloc::collections::BTreeMap;
use alloc::string::String;

use super::link_core::Core;
use super::subsystem::Ask;
use super::types::LinkId;
use super::{ConnectFailure, Event};
use crate::dht::{record_key, DhtAsk, KeyKind};
use crate::id::NodeId;
use crate::trust::{Pins, TrustEvent};
use crate::wire::{CloseCode, ProtocolId};

/// The pins, and the name each application dial without an expected id is checked against.
#[derive(Debug, Default)]
pub(super) struct Trust {
    pub pins: Pins,
    /// Dials by name under way; an entry leaves with its link (`Core::take_link`).
    pub names: BTreeMap<LinkId, String>,
    /// The names whose pins are published in the DHT (at most [`MAX_PUBLISHED_PINS`]).
    pub published: alloc::collections::BTreeSet<String>,
}

/// What a node without pins shows.
static NO_PINS: Pins = Pins::new();

/// Most pins a node publishes in the DHT (the first ones made; a revoke frees a place).
pub const MAX_PUBLISHED_PINS: usize = 64;

impl Core {
    fn trust_mut(&mut self) -> &mut Trust {
        self.trust.get_or_insert_with(Default::default)
    }

    pub(super) fn pins(&self) -> &Pins {
        self.trust.as_ref().map_or(&NO_PINS, |t| &t.pins)
    }

    /// The name `link` dials, while that dial is under way.
    pub(super) fn dial_name(&self, link: LinkId) -> Option<&str> {
        self.trust.as_ref()?.names.get(&link).map(String::as_str)
    }

    /// Link `link` dials the name `name`: its key is checked against the pin there.
    pub(super) fn name_dial(&mut self, link: LinkId, name: String) {
        self.trust_mut().names.insert(link, name);
    }

    /// Refuses `link` if it dialed a name whose pinned key is not `remote`
    /// ([`TrustEvent::Mismatch`], and the dial fails with
    /// [`ConnectFailure::FingerprintMismatch`]); returns whether it did.
    pub(super) fn refused_by_pin(&mut self, link: LinkId, remote: NodeId) -> bool {
        let Some(trust) = self.trust.as_ref() else {
            return false;
        };
        let Some(name) = trust.names.get(&link) else {
            return false;
        };
        let pinned = match trust.pins.get(name) {
            Some(pinned) if pinned != remote => pinned,
            _ => return false,
        };
        let name = name.clone();
        self.stats.fingerprint_mismatches += 1;
        self.push_event(Event::Trust(TrustEvent::Mismatch {
            name: name.clone(),
            pinned,
            presented: remote,
        }));
        let failure = ConnectFailure::FingerprintMismatch {
            name,
            pinned,
            presented: remote,
        };
        self.fail_outbound(link, failure, CloseCode::UnexpectedPeer);
        true
    }

    /// The handshake over `link` completed with `remote`: if it dialed a name with no pin
    /// yet, `remote` is pinned there.
    pub(super) fn pin_found(&mut self, link: LinkId, remote: NodeId) {
        let max = self.config.max_pins;
        let Some(trust) = self.trust.as_mut() else {
            return;
        };
        let Some(name) = trust.names.remove(&link) else {
            return;
        };
        if trust.pins.get(&name).is_some() {
            return;
        }
        let event = if trust.pins.insert(&name, remote, max) {
            self.stats.pins_made += 1;
            self.publish_pin(&name, Some(remote));
            TrustEvent::Pinned { name, node: remote }
        } else {
            TrustEvent::NotPinned { name, node: remote }
        };
        self.push_event(Event::Trust(event));
    }

    /// Pins `node` at `name` as the application says (pins it kept from an earlier run):
    /// no event. Returns `false` if the pins are full.
    pub(super) fn pin(&mut self, name: &str, node: NodeId) -> bool {
        let max = self.config.max_pins;
        let pinned = self.trust_mut().pins.insert(name, node, max);
        if pinned {
            self.publish_pin(name, Some(node));
        }
        pinned
    }

    /// Removes the pin at `name`; the next key found there is pinned anew.
    pub(super) fn revoke(&mut self, name: &str) -> Option<NodeId> {
        let node = self.trust.as_mut()?.pins.remove(name)?;
        self.publish_pin(name, None);
        self.push_event(Event::Trust(TrustEvent::Revoked {
            name: name.into(),
            node,
        }));
        Some(node)
    }

    /// Publishes (and keeps republishing) this node's pin at `name` in the DHT, signed as
    /// every record is, so other members of the realm can compare keys; `None` withdraws it.
    /// Only with [`Config::publish_pins`](crate::Config::publish_pins) and the DHT running.
    fn publish_pin(&mut self, name: &str, node: Option<NodeId>) {
        let dht = crate::node::registry::index_of(ProtocolId::DHT);
        if !self.config.publish_pins || !dht.is_some_and(|i| self.running.has(i)) {
            return;
        }
        // A bounded share of the DHT's publishing slots, so pins never crowd out the
        // application's own records.
        let published = &mut self.trust_mut().published;
        let go = match node {
            Some(_) => published.len() < MAX_PUBLISHED_PINS && published.insert(name.into()),
            None => published.remove(name),
        };
        if !go {
            return;
        }
        let name = crate::trust::dht_name(name);
        let key = record_key(self.config.realm.as_str(), KeyKind::Provider, &name);
        let ask = match node {
            Some(node) => DhtAsk::Put(key, node.as_bytes().to_vec()),
            None => DhtAsk::Withdraw(key),
        };
        // No subsystem asked: the answer goes nowhere, the record is kept up by the DHT.
        self.queue_ask(ProtocolId::CONTROL, ProtocolId::DHT, Ask::Dht(ask));
    }
}
