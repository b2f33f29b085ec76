//! The test-only echo protocol's async API (feature `test-protocols`): `mesh.echo()`. It
//! exercises the data path end to end: bulk sends held back by a slow receiver, and inboxes.

use macula_proto::{NodeId, Overflow, ProtocolId};

use crate::{Inbox, Mesh, MeshError, Runtime};

/// The echo protocol of a [`Mesh`].
#[derive(Debug)]
pub struct Echo<'a, R: Runtime> {
    mesh: &'a Mesh<R>,
}

impl<'a, R: Runtime> Echo<'a, R> {
    pub(crate) fn new(mesh: &'a Mesh<R>) -> Self {
        Echo { mesh }
    }

    /// Sends `payload` to the connected `peer` as one bulk frame. Returns once the node took
    /// it: while the peer does not read, that waits (the channel's back-pressure).
    ///
    /// # Errors
    /// [`MeshError::Send`] if the peer is not connected or does not speak echo;
    /// [`MeshError::Backlogged`] if too many sends are held back already.
    pub async fn bulk(&self, peer: NodeId, payload: Vec<u8>) -> Result<(), MeshError> {
        self.mesh
            .call(move |cx, reply| {
                let len = payload.len();
                let mut payload = Some(payload);
                cx.send_data(
                    peer,
                    ProtocolId::TEST_ECHO,
                    len,
                    move |node, now| {
                        let bytes = payload.take().unwrap_or_default();
                        let result = node.echo_bulk(peer, bytes.clone(), now);
                        if result.is_err() {
                            payload = Some(bytes);
                        }
                        result
                    },
                    reply,
                );
            })
            .await
    }

    /// Bulk payloads received from now on, through an inbox of `capacity` items with the
    /// `overflow` policy (a second call replaces the first inbox).
    ///
    /// # Errors
    /// [`MeshError::Inbox`] for a capacity out of range.
    pub async fn inbox(&self, capacity: usize, overflow: Overflow) -> Result<Inbox, MeshError> {
        self.mesh
            .call(move |cx, reply| {
                let opened = cx.endpoint.with_node(cx.now, |node, now| {
                    node.echo_open_inbox(capacity, overflow, now)
                });
                let _ = reply.try_send(match opened {
                    Ok(inbox) => Ok(cx.consume(inbox, capacity)),
                    Err(err) => Err(MeshError::Inbox(err)),
                });
            })
            .await
    }
}
