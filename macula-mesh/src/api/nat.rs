//! NAT traversal's async API: `mesh.nat()`.

use std::net::SocketAddr;

use macula_proto::nat::{NatEvent, NatProfile, NatStats, PathKind, RelayStats};
use macula_proto::{Event, NodeId};

use crate::driver::{Once, OpKey};
use crate::{Mesh, MeshError, Runtime};

/// NAT traversal of a [`Mesh`]: what the NAT in front of this node does.
#[derive(Debug)]
pub struct Nat<'a, R: Runtime> {
    mesh: &'a Mesh<R>,
}

impl<'a, R: Runtime> Nat<'a, R> {
    pub(crate) fn new(mesh: &'a Mesh<R>) -> Self {
        Nat { mesh }
    }

    /// Detects this node's NAT profile (or waits for the detection already running) and
    /// returns it. Needs a peer reachable at the address it listens on, and a second one at
    /// another address among its peers or this node's.
    ///
    /// # Errors
    /// [`MeshError::Nat`] with why detection could not finish; [`MeshError::Closed`].
    pub async fn detect(&self) -> Result<NatProfile, MeshError> {
        self.mesh
            .call(move |cx, reply| {
                cx.endpoint
                    .with_node(cx.now, |node, now| node.nat_detect(now));
                let nat = &cx.endpoint.node().config().nat;
                // Four steps of at most five rounds each, with room to spare.
                let timeout = nat.step_timeout.saturating_mul(24);
                let map = |event: &Event| match event {
                    Event::Nat(NatEvent::Detected(profile)) => Some(Ok(*profile)),
                    Event::Nat(NatEvent::DetectFailed(error)) => Some(Err(MeshError::Nat(*error))),
                    _ => None,
                };
                cx.wait(
                    OpKey::NatDetection,
                    Some(timeout.into()),
                    Once {
                        reply,
                        map,
                        timeout: || MeshError::Timeout,
                    },
                );
            })
            .await
    }

    /// The profile detected last, while it is trusted (`nat.profile_ttl`).
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn profile(&self) -> Result<Option<NatProfile>, MeshError> {
        self.mesh.query(|cx| cx.endpoint.node().nat_profile()).await
    }

    /// Asks `gateway` (dialed at `addr` if there is no link to it) to hold a reservation for
    /// this node, so that others can reach it through relay circuits there; see
    /// [`Nat::relay_stats`] (`reserved_at`) for whether it does.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn reserve(
        &self,
        gateway: NodeId,
        addr: Option<SocketAddr>,
    ) -> Result<(), MeshError> {
        self.mesh
            .query(move |cx| {
                cx.endpoint
                    .with_node(cx.now, |node, now| node.relay_reserve(gateway, addr, now));
            })
            .await
    }

    /// Opens a link to `target` through a relay circuit at `gateway` (dialed at `addr` if there
    /// is no link to it), where `target` holds a reservation. The link is QUIC and TLS between
    /// the two nodes; the gateway forwards packets it can't read. It upgrades to a direct or
    /// punched link by itself where the two nodes' NAT profiles allow
    /// ([`NatEvent::PathChanged`]).
    ///
    /// # Errors
    /// [`MeshError::Connect`] if the circuit or the handshake fails;
    /// [`MeshError::TooManyCircuits`]; [`MeshError::Closed`].
    pub async fn connect_relayed(
        &self,
        target: NodeId,
        gateway: NodeId,
        addr: Option<SocketAddr>,
    ) -> Result<NodeId, MeshError> {
        self.mesh
            .call(move |cx, reply| {
                let link = cx.endpoint.with_node(cx.now, |node, now| {
                    node.connect_relayed(target, gateway, addr, now)
                });
                match link {
                    // A failure names the gateway's address (the circuit's is only virtual).
                    Some(link) => {
                        let shown = addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                        crate::mesh::wait_for_link(cx, link, shown, reply);
                    }
                    None => {
                        let _ = reply.try_send(Err(MeshError::TooManyCircuits));
                    }
                }
            })
            .await
    }

    /// Reaches `target` by its id, through the mesh: looks its NAT record up in the DHT and
    /// dials it straight where the two NAT profiles let a dial through, else through a relay
    /// circuit at one of its gateways (which upgrades itself to a punched or direct link where
    /// the profiles allow). Returns the path the link runs now; [`Mesh::peers`] tells it
    /// later.
    ///
    /// # Errors
    /// [`MeshError::Reach`] with why; [`MeshError::Closed`].
    pub async fn reach(&self, target: NodeId) -> Result<PathKind, MeshError> {
        self.mesh
            .call(move |cx, reply| {
                let id = cx
                    .endpoint
                    .with_node(cx.now, |node, now| node.nat_reach(target, now));
                let map = |event: &Event| match event {
                    Event::Nat(NatEvent::Reached { path, .. }) => Some(Ok(*path)),
                    Event::Nat(NatEvent::Unreachable { why, .. }) => {
                        Some(Err(MeshError::Reach(*why)))
                    }
                    _ => None,
                };
                // The node answers every reach within its own timeout (30 s).
                cx.wait(
                    OpKey::Reach(id),
                    Some(std::time::Duration::from_secs(30)),
                    Once {
                        reply,
                        map,
                        timeout: || MeshError::Timeout,
                    },
                );
            })
            .await
    }

    /// Relay counters and gauges: as a gateway, and of this node's own circuits.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn relay_stats(&self) -> Result<RelayStats, MeshError> {
        self.mesh.query(|cx| cx.endpoint.node().relay_stats()).await
    }

    /// NAT counters.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn stats(&self) -> Result<NatStats, MeshError> {
        self.mesh.query(|cx| cx.endpoint.node().nat_stats()).await
    }
}
