//! The node's commands for the DHT. Each starts an operation and returns its id; the outcome
//! arrives as [`Event::Dht`](crate::Event::Dht).

use alloc::vec::Vec;

use super::machine::Owner;
use super::{record_key, Dht, KeyKind, OpId};
use crate::id::NodeId;
use crate::node::Node;
use crate::time::Instant;
use crate::wire::KeyBytes;

impl Node {
    /// The DHT: its routing table, record store and [`stats`](Dht::stats).
    pub fn dht(&self) -> &Dht {
        self.subsystem()
    }

    /// Gauge: records the DHT stores for others.
    pub fn dht_records(&self) -> usize {
        self.dht().store().len()
    }

    /// The DHT key of `name` of `kind` in this node's realm.
    pub fn dht_key(&self, kind: KeyKind, name: &[u8]) -> KeyBytes {
        record_key(self.config().realm.as_str(), kind, name)
    }

    /// Finds the nodes closest to `target`: [`DhtEvent::NodesFound`](super::DhtEvent) (or
    /// `Failed`).
    pub fn dht_find_node(&mut self, target: &NodeId, now: Instant) -> OpId {
        let target = target.0;
        self.run(now, |dht: &mut Dht, cx| {
            dht.find_node(target, Owner::App, cx)
        })
    }

    /// Publishes `value` under `name` in this realm, at the closest nodes, republished until
    /// withdrawn: `Stored` (or `Failed`).
    pub fn dht_put(&mut self, name: &[u8], value: Vec<u8>, now: Instant) -> OpId {
        let key = self.dht_key(KeyKind::Value, name);
        self.dht_put_key(key, value, now)
    }

    /// Finds the values published under `name` in this realm, one per publisher: `Got` (or
    /// `Failed`).
    pub fn dht_get(&mut self, name: &[u8], now: Instant) -> OpId {
        let key = self.dht_key(KeyKind::Value, name);
        self.dht_get_key(key, now)
    }

    /// Announces that this node provides `name` (with `metadata`, at most
    /// [`DhtConfig::max_value_size`](super::DhtConfig::max_value_size) bytes), republished
    /// until withdrawn: `Stored` (or `Failed`).
    pub fn dht_provide(&mut self, name: &[u8], metadata: Vec<u8>, now: Instant) -> OpId {
        let key = self.dht_key(KeyKind::Provider, name);
        self.dht_put_key(key, metadata, now)
    }

    /// Finds the nodes that provide `name`: `Got`, each record's publisher and addresses being
    /// a provider (or `Failed`).
    pub fn dht_find_providers(&mut self, name: &[u8], now: Instant) -> OpId {
        let key = self.dht_key(KeyKind::Provider, name);
        self.run(now, |dht: &mut Dht, cx| dht.get(key, true, Owner::App, cx))
    }

    /// Withdraws this node's value or provider record under `name` and stops republishing it:
    /// `Stored` (or `Failed`).
    pub fn dht_withdraw(&mut self, kind: KeyKind, name: &[u8], now: Instant) -> OpId {
        let key = self.dht_key(kind, name);
        self.run(now, |dht: &mut Dht, cx| dht.withdraw(key, Owner::App, cx))
    }

    /// [`Node::dht_put`] under a key made elsewhere (see [`Node::dht_key`]).
    pub fn dht_put_key(&mut self, key: KeyBytes, value: Vec<u8>, now: Instant) -> OpId {
        self.run(now, |dht: &mut Dht, cx| dht.put(key, value, Owner::App, cx))
    }

    /// [`Node::dht_get`] under a key made elsewhere (see [`Node::dht_key`]).
    pub fn dht_get_key(&mut self, key: KeyBytes, now: Instant) -> OpId {
        self.run(now, |dht: &mut Dht, cx| dht.get(key, false, Owner::App, cx))
    }
}
