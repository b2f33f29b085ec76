//! Publish/subscribe's async API: `mesh.pubsub()`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::Stream;
use macula_proto::pubsub::{
    PublishError, PublishOptions, Publishing, PubsubEvent, PubsubStats, Qos, Received,
    SubscribeOptions, SubscriptionId,
};
use macula_proto::{Data, Event, NodeId};

use crate::driver::{Command, Gate, Once, OpKey};
use crate::{Inbox, Mesh, MeshError, Runtime};

/// Publish/subscribe of a [`Mesh`]: topics in the node's realm, subscribers found through the
/// DHT, messages sent straight to them.
#[derive(Debug)]
pub struct Pubsub<'a, R: Runtime> {
    mesh: &'a Mesh<R>,
}

/// What became of a publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishReport {
    /// Subscriber nodes the message went to (this node counts as one when it subscribes too);
    /// zero when nobody subscribes, which is not an error.
    pub subscribers: usize,
    /// QoS 1: the nodes that acknowledged it, ordered (empty at QoS 0).
    pub acked: Vec<NodeId>,
    /// QoS 1: the nodes that did not before its deadline, or could not be reached, ordered.
    pub missed: Vec<NodeId>,
}

impl<'a, R: Runtime> Pubsub<'a, R> {
    pub(crate) fn new(mesh: &'a Mesh<R>) -> Self {
        Pubsub { mesh }
    }

    /// Publishes `payload` on `topic` with `qos`. See [`Pubsub::publish_with`].
    ///
    /// # Errors
    /// As [`Pubsub::publish_with`].
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        qos: Qos,
    ) -> Result<PublishReport, MeshError> {
        self.publish_with(topic, payload, PublishOptions::qos(qos))
            .await
    }

    /// Publishes `payload` on `topic`. Returns once the message is sent (QoS 0) or every
    /// subscriber node acknowledged it or missed its deadline (QoS 1). While the publisher
    /// holds as many messages as it may (a subscriber reads slowly, acks are outstanding), it
    /// waits for room first: a slow consumer slows the publisher down.
    ///
    /// # Errors
    /// [`MeshError::Publish`] for a bad topic or a message too large;
    /// [`MeshError::Backlogged`] if too many operations are held back already.
    pub async fn publish_with(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        options: PublishOptions,
    ) -> Result<PublishReport, MeshError> {
        let topic = topic.to_owned();
        let payload = payload.into();
        let bytes = payload.len();
        let mut message = Some((topic, payload, options));
        self.mesh
            .call(move |cx, reply| {
                let attempt = move |cx: &mut crate::driver::Ctx<'_>,
                                    reply: &crate::driver::Reply<
                    Result<PublishReport, MeshError>,
                >| {
                    if !cx.endpoint.node().pubsub_has_room() {
                        return false;
                    }
                    let (topic, payload, options) = message.take().expect("tried until taken");
                    let outcome = cx.endpoint.with_node(cx.now, |node, now| {
                        node.pubsub_publish(&topic, payload, options, now)
                    });
                    match outcome {
                        Ok(Publishing::Sent { subscribers }) => {
                            let _ = reply.try_send(Ok(PublishReport {
                                subscribers,
                                acked: Vec::new(),
                                missed: Vec::new(),
                            }));
                        }
                        Ok(Publishing::Pending(id)) => cx.wait(
                            OpKey::Publish(id),
                            None,
                            Once {
                                reply: reply.clone(),
                                map: report,
                                timeout: || MeshError::Timeout,
                            },
                        ),
                        Err(error) => {
                            let _ = reply.try_send(Err(MeshError::Publish(error)));
                        }
                    }
                    true
                };
                cx.hold(Gate::Publish, bytes, attempt, reply);
            })
            .await
    }

    /// Publishes every payload of `payloads` on `topic`, in order, with one trip to the node's
    /// task for as many as the publisher has room for. Returns how many were published once the
    /// node has taken them all (sent at QoS 0; sent and awaiting acknowledgement at QoS 1,
    /// whose outcomes this does not wait for: a closing mesh still waits for them).
    ///
    /// # Errors
    /// As [`Pubsub::publish_with`]; a bad topic or a payload too large is refused before any
    /// message is published.
    pub async fn publish_batch(
        &self,
        topic: &str,
        payloads: Vec<Vec<u8>>,
        qos: Qos,
    ) -> Result<usize, MeshError> {
        let topic = topic.to_owned();
        let bytes = payloads.iter().map(Vec::len).sum();
        let total = payloads.len();
        let mut queue: std::collections::VecDeque<Vec<u8>> = payloads.into();
        self.mesh
            .call(move |cx, reply| {
                let attempt = move |cx: &mut crate::driver::Ctx<'_>,
                                    reply: &crate::driver::Reply<Result<usize, MeshError>>| {
                    let options = PublishOptions::qos(qos);
                    let outcome = cx.endpoint.with_node(cx.now, |node, now| {
                        node.pubsub_publish_batch(&topic, &mut queue, &options, now)
                            .map(|_| queue.is_empty())
                    });
                    match outcome {
                        Ok(false) => false,
                        Ok(true) => {
                            let _ = reply.try_send(Ok(total));
                            true
                        }
                        Err(error) => {
                            let _ = reply.try_send(Err(MeshError::Publish(error)));
                            true
                        }
                    }
                };
                cx.hold(Gate::Publish, bytes, attempt, reply);
            })
            .await
    }

    /// Subscribes to the topics `pattern` matches (`*` one segment, `**` any number).
    ///
    /// # Errors
    /// [`MeshError::Subscribe`] for a bad pattern or a bound reached.
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, MeshError> {
        self.subscribe_with(pattern, SubscribeOptions::default())
            .await
    }

    /// Subscribes as a member of queue group `group`: each message goes to one member.
    ///
    /// # Errors
    /// As [`Pubsub::subscribe`], and for a bad group name.
    pub async fn subscribe_group(
        &self,
        pattern: &str,
        group: &str,
    ) -> Result<Subscription, MeshError> {
        self.subscribe_with(pattern, SubscribeOptions::group(group))
            .await
    }

    /// Subscribes with `options` (queue group, inbox capacity, overflow policy).
    ///
    /// # Errors
    /// As [`Pubsub::subscribe_group`].
    pub async fn subscribe_with(
        &self,
        pattern: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, MeshError> {
        let pattern = pattern.to_owned();
        let capacity = options.capacity;
        let (id, inbox) = self
            .mesh
            .call(move |cx, reply| {
                let subscribed = cx.endpoint.with_node(cx.now, |node, now| {
                    node.pubsub_subscribe(&pattern, options, now)
                });
                let _ = reply.try_send(match subscribed {
                    Ok(s) => Ok((s.id, cx.consume(s.inbox, capacity))),
                    Err(error) => Err(MeshError::Subscribe(error)),
                });
            })
            .await?;
        Ok(Subscription {
            id,
            inbox,
            commands: self.mesh.commands().clone(),
            ended: false,
        })
    }

    /// Pub/sub's counters.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn stats(&self) -> Result<PubsubStats, MeshError> {
        self.mesh
            .query(|cx| cx.endpoint.node().pubsub_stats().clone())
            .await
    }
}

fn report(event: &Event) -> Option<Result<PublishReport, MeshError>> {
    match event {
        Event::Pubsub(PubsubEvent::Published {
            subscribers,
            acked,
            missed,
            ..
        }) => Some(Ok(PublishReport {
            subscribers: *subscribers,
            acked: acked.clone(),
            missed: missed.clone(),
        })),
        _ => None,
    }
}

/// A subscription: a [`Stream`] of the messages that match it, in the order they arrived (per
/// publisher, the order they were published). Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    id: SubscriptionId,
    inbox: Inbox,
    commands: async_channel::Sender<Command>,
    ended: bool,
}

impl Subscription {
    /// Its id on the node.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// The next message; `None` once the node has stopped.
    pub async fn recv(&mut self) -> Option<Received> {
        loop {
            match self.inbox.recv().await? {
                Data::Message(m) => return Some(m),
                #[allow(unreachable_patterns)] // other kinds exist under test-protocols
                _ => continue,
            }
        }
    }

    /// The next message if one is waiting now, without waiting; `None` if none is (or the
    /// node has stopped). A reader of many small messages takes what is there this way and
    /// waits with [`Subscription::recv`] only when it runs dry.
    pub fn try_recv(&mut self) -> Option<Received> {
        loop {
            match self.inbox.try_recv()? {
                Data::Message(m) => return Some(m),
                #[allow(unreachable_patterns)] // other kinds exist under test-protocols
                _ => continue,
            }
        }
    }

    /// Messages waiting in this handle (the node may hold more).
    pub fn len(&self) -> usize {
        self.inbox.len()
    }

    /// Whether none waits in this handle.
    pub fn is_empty(&self) -> bool {
        self.inbox.is_empty()
    }

    /// Ends the subscription now: its announcement is withdrawn and what waits is dropped.
    pub async fn unsubscribe(mut self) {
        self.ended = true;
        let id = self.id;
        let run: crate::driver::Start = Box::new(move |cx| {
            cx.endpoint
                .with_node(cx.now, |node, now| node.pubsub_unsubscribe(id, now));
        });
        let _ = self.commands.send(Command::Run(run)).await;
    }
}

impl Stream for Subscription {
    type Item = Received;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        loop {
            match Pin::new(&mut self.inbox).poll_next(cx) {
                Poll::Ready(Some(Data::Message(m))) => return Poll::Ready(Some(m)),
                #[allow(unreachable_patterns)] // other kinds exist under test-protocols
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let id = self.id;
        let run: crate::driver::Start = Box::new(move |cx| {
            cx.endpoint
                .with_node(cx.now, |node, now| node.pubsub_unsubscribe(id, now));
        });
        // A full command queue leaves it to the node: the inbox is closed with this handle,
        // and the subscription ends at its next message.
        let _ = self.commands.try_send(Command::Run(run));
    }
}

impl From<PublishError> for MeshError {
    fn from(error: PublishError) -> Self {
        MeshError::Publish(error)
    }
}
