//! The DHT's async API: `mesh.dht()`.

use std::net::SocketAddr;

use macula_proto::dht::{Contact, DhtError, DhtEvent, DhtStats, KeyKind, OpId, Record};
use macula_proto::{Event, Instant, Node, NodeId};

use crate::driver::{Once, OpKey};
use crate::{Mesh, MeshError, Runtime};

/// The DHT of a [`Mesh`]: values and provider records in the node's realm, and node lookups.
#[derive(Debug)]
pub struct Dht<'a, R: Runtime> {
    mesh: &'a Mesh<R>,
}

impl<'a, R: Runtime> Dht<'a, R> {
    pub(crate) fn new(mesh: &'a Mesh<R>) -> Self {
        Dht { mesh }
    }

    /// Finds the nodes closest to `target` (at most `k`, closest first) with their addresses.
    ///
    /// # Errors
    /// [`MeshError::Dht`]: no peers to ask, or the lookup timed out.
    pub async fn find_node(&self, target: NodeId) -> Result<Vec<(NodeId, SocketAddr)>, MeshError> {
        self.run(
            move |node, now| node.dht_find_node(&target, now),
            |outcome| match outcome {
                DhtEvent::NodesFound { closest, .. } => Some(closest.clone()),
                _ => None,
            },
        )
        .await
    }

    /// Publishes `value` under `name` in this node's realm, at the nodes closest to its key,
    /// and keeps republishing it until withdrawn. Returns how many nodes stored it.
    ///
    /// # Errors
    /// [`MeshError::Dht`]: the value is too large, too many records are published, no peers.
    pub async fn put(&self, name: &[u8], value: Vec<u8>) -> Result<usize, MeshError> {
        let name = name.to_vec();
        self.run(move |node, now| node.dht_put(&name, value, now), stored)
            .await
    }

    /// The values published under `name` in this node's realm, one per publisher (empty if
    /// there are none).
    ///
    /// # Errors
    /// [`MeshError::Dht`]: no peers to ask, or the lookup timed out.
    pub async fn get(&self, name: &[u8]) -> Result<Vec<Record>, MeshError> {
        let name = name.to_vec();
        self.run(move |node, now| node.dht_get(&name, now), records)
            .await
    }

    /// Announces that this node provides `name`, with `metadata`; republished until withdrawn.
    /// Returns how many nodes stored the announcement.
    ///
    /// # Errors
    /// As [`Dht::put`].
    pub async fn provide(&self, name: &[u8], metadata: Vec<u8>) -> Result<usize, MeshError> {
        let name = name.to_vec();
        self.run(
            move |node, now| node.dht_provide(&name, metadata, now),
            stored,
        )
        .await
    }

    /// The nodes that provide `name`: each record's publisher, addresses and metadata.
    ///
    /// # Errors
    /// As [`Dht::get`].
    pub async fn find_providers(&self, name: &[u8]) -> Result<Vec<Record>, MeshError> {
        let name = name.to_vec();
        self.run(
            move |node, now| node.dht_find_providers(&name, now),
            records,
        )
        .await
    }

    /// Withdraws this node's value (or provider record) under `name` and stops republishing
    /// it. Returns how many nodes confirmed.
    ///
    /// # Errors
    /// As [`Dht::get`].
    pub async fn withdraw(&self, kind: KeyKind, name: &[u8]) -> Result<usize, MeshError> {
        let name = name.to_vec();
        self.run(move |node, now| node.dht_withdraw(kind, &name, now), stored)
            .await
    }

    /// The contacts in the DHT's routing table.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn contacts(&self) -> Result<Vec<Contact>, MeshError> {
        self.mesh
            .query(|cx| cx.endpoint.node().dht().table().iter().copied().collect())
            .await
    }

    /// The DHT's counters.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn stats(&self) -> Result<DhtStats, MeshError> {
        self.mesh
            .query(|cx| cx.endpoint.node().dht().stats().clone())
            .await
    }

    /// Starts an operation with `start` and waits for its outcome, which `pick` turns into the
    /// result (an outcome of another kind than the operation's is a bug, reported).
    async fn run<T: Send + 'static>(
        &self,
        start: impl FnOnce(&mut Node, Instant) -> OpId + Send + 'static,
        pick: fn(&DhtEvent) -> Option<T>,
    ) -> Result<T, MeshError> {
        let span = tracing::debug_span!("dht");
        let started = self.mesh.call(move |cx, reply| {
            let op = cx.endpoint.with_node(cx.now, start);
            let timeout = cx.endpoint.node().config().dht.lookup_timeout;
            let map = move |event: &Event| match event {
                Event::Dht(DhtEvent::Failed { error, .. }) => Some(Err(MeshError::Dht(*error))),
                Event::Dht(outcome) => {
                    Some(pick(outcome).ok_or_else(|| MeshError::Unexpected(format!("{outcome:?}"))))
                }
                _ => None,
            };
            // A refused operation already queued its event; it is dispatched after this
            // call, once the waiter is filed.
            cx.wait(
                OpKey::Dht(op),
                Some(timeout.into()),
                Once {
                    reply,
                    map,
                    timeout: || MeshError::Dht(DhtError::Timeout),
                },
            );
        });
        crate::mesh::traced(span, started).await
    }
}

fn stored(outcome: &DhtEvent) -> Option<usize> {
    match outcome {
        DhtEvent::Stored { acks, .. } => Some(*acks),
        _ => None,
    }
}

fn records(outcome: &DhtEvent) -> Option<Vec<Record>> {
    match outcome {
        DhtEvent::Got { records, .. } => Some(records.clone()),
        _ => None,
    }
}
