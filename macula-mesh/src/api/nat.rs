//! NAT traversal's async API: `mesh.nat()`.

use macula_proto::nat::{NatEvent, NatProfile, NatStats};
use macula_proto::Event;

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

    /// NAT counters.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn stats(&self) -> Result<NatStats, MeshError> {
        self.mesh.query(|cx| cx.endpoint.node().nat_stats()).await
    }
}
