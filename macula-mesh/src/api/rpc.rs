//! Remote procedure calls' async API: `mesh.rpc()`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::Stream;
use macula_proto::rpc::{
    CallError, CallId, CallOptions, Ended, RegisterError, RegisterOptions, RegistrationId, Replied,
    ReplyError, Request, RequestId, RpcEvent, RpcStats,
};
use macula_proto::{Data, Event, NodeId};

use crate::driver::{Command, Ctx, Gate, Once, OpKey, Reply, Start};
use crate::oneshot::{self, oneshot};
use crate::{Inbox, Mesh, MeshError, Runtime};

/// Remote procedure calls of a [`Mesh`]: procedures served in the node's realm, found through
/// the DHT, called with failover to another provider.
#[derive(Debug)]
pub struct Rpc<'a, R: Runtime> {
    mesh: &'a Mesh<R>,
}

impl<'a, R: Runtime> Rpc<'a, R> {
    pub(crate) fn new(mesh: &'a Mesh<R>) -> Self {
        Rpc { mesh }
    }

    /// Calls `procedure` with `payload` and waits for the reply. While the node has as many
    /// calls in flight as it may (`rpc.max_calls`), the call waits for room first. Dropping
    /// the future cancels the call.
    ///
    /// # Errors
    /// [`MeshError::Call`] with why the call has no result: `NoResponders`, `Timeout`,
    /// `Remote` (the handler's error), `Overloaded`, `TooLarge`, a bad name.
    pub async fn call(
        &self,
        procedure: &str,
        payload: impl Into<Vec<u8>>,
        options: CallOptions,
    ) -> Result<Replied, MeshError> {
        let span = tracing::debug_span!("call", %procedure);
        let procedure = procedure.to_owned();
        let payload = payload.into();
        let bytes = payload.len();
        // One trip to the node's task: the command that starts the call also files the
        // waiter for its outcome. The call's id comes back through `started`, for a drop to
        // cancel it.
        let started = Arc::new(AtomicU64::new(0));
        let mut guard = CancelOnDrop {
            started: started.clone(),
            commands: self.mesh.commands().clone(),
            armed: true,
        };
        let mut call = Some((procedure, payload, options));
        let outcome = self.mesh.call(move |cx, reply| {
            let attempt = move |cx: &mut Ctx<'_>, reply: &Reply<Result<Replied, MeshError>>| {
                if !cx.endpoint.node().rpc_has_room() {
                    return false;
                }
                let (procedure, payload, options) = call.take().expect("tried until taken");
                let taken = cx.endpoint.with_node(cx.now, |node, now| {
                    node.rpc_call(&procedure, payload, options, now)
                });
                match taken {
                    Ok(id) => {
                        started.store(id.0, Ordering::Relaxed);
                        cx.wait(
                            OpKey::Call(id),
                            None,
                            Once {
                                reply: reply.clone(),
                                map: move |event: &Event| done(event, id),
                                timeout: || MeshError::Timeout,
                            },
                        );
                    }
                    Err(error) => {
                        let _ = reply.try_send(Err(MeshError::Call(error)));
                    }
                }
                true
            };
            cx.hold(Gate::Rpc, bytes, attempt, reply);
        });
        let outcome = crate::mesh::traced(span, outcome).await;
        guard.armed = false;
        outcome
    }

    /// Starts a call and returns once the node has taken it; [`PendingCall::result`] waits
    /// for its outcome, [`PendingCall::cancel`] gives up on it.
    ///
    /// # Errors
    /// [`MeshError::Call`] for a bad name or an argument too large (nothing was sent).
    pub async fn start(
        &self,
        procedure: &str,
        payload: impl Into<Vec<u8>>,
        options: CallOptions,
    ) -> Result<PendingCall, MeshError> {
        let procedure = procedure.to_owned();
        let payload = payload.into();
        let bytes = payload.len();
        let mut call = Some((procedure, payload, options));
        let (id, outcome) = self
            .mesh
            .call(move |cx, reply| {
                let attempt = move |cx: &mut Ctx<'_>, reply: &Reply<Result<Started, MeshError>>| {
                    if !cx.endpoint.node().rpc_has_room() {
                        return false;
                    }
                    let (procedure, payload, options) = call.take().expect("tried until taken");
                    let started = cx.endpoint.with_node(cx.now, |node, now| {
                        node.rpc_call(&procedure, payload, options, now)
                    });
                    let _ = reply.try_send(match started {
                        Ok(id) => {
                            let (tx, rx) = oneshot();
                            cx.wait(
                                OpKey::Call(id),
                                None,
                                Once {
                                    reply: tx,
                                    map: move |event: &Event| done(event, id),
                                    timeout: || MeshError::Timeout,
                                },
                            );
                            Ok((id, rx))
                        }
                        Err(error) => Err(MeshError::Call(error)),
                    });
                    true
                };
                cx.hold(Gate::Rpc, bytes, attempt, reply);
            })
            .await?;
        Ok(PendingCall {
            id,
            outcome,
            commands: self.mesh.commands().clone(),
            finished: false,
        })
    }

    /// Serves `procedure`: calls arrive on the returned [`Service`], a stream of requests.
    /// Dropping it stops serving.
    ///
    /// # Errors
    /// [`MeshError::Register`] for a bad name, a procedure served already, or a bound
    /// reached.
    pub async fn serve(&self, procedure: &str) -> Result<Service, MeshError> {
        self.serve_with(procedure, RegisterOptions::default()).await
    }

    /// Serves `procedure` with `options` (how many calls it holds until answered).
    ///
    /// # Errors
    /// As [`Rpc::serve`].
    pub async fn serve_with(
        &self,
        procedure: &str,
        options: RegisterOptions,
    ) -> Result<Service, MeshError> {
        let procedure = procedure.to_owned();
        let (id, inbox) = self
            .mesh
            .call(move |cx, reply| {
                let queue = options
                    .queue
                    .unwrap_or(cx.endpoint.node().config().rpc.queue);
                let registered = cx.endpoint.with_node(cx.now, |node, now| {
                    node.rpc_register(&procedure, options, now)
                });
                let _ = reply.try_send(match registered {
                    Ok(r) => Ok((r.id, cx.consume(r.inbox, queue))),
                    Err(error) => Err(MeshError::Register(error)),
                });
            })
            .await?;
        Ok(Service {
            id,
            inbox,
            commands: self.mesh.commands().clone(),
            ended: false,
        })
    }

    /// RPC's counters.
    ///
    /// # Errors
    /// [`MeshError::Closed`] if the mesh is closed.
    pub async fn stats(&self) -> Result<RpcStats, MeshError> {
        self.mesh
            .query(|cx| cx.endpoint.node().rpc_stats().clone())
            .await
    }
}

/// A call taken by the node and the way its outcome comes back.
type Started = (CallId, oneshot::Receiver<Result<Replied, MeshError>>);

/// The outcome of call `id`, if `event` is it.
fn done(event: &Event, id: CallId) -> Option<Result<Replied, MeshError>> {
    match event {
        Event::Rpc(RpcEvent::Done { id: d, result }) if *d == id => {
            Some(result.clone().map_err(MeshError::Call))
        }
        _ => None,
    }
}

/// Cancels a call whose caller stopped waiting for it (the future of [`Rpc::call`] was
/// dropped), once the node has taken it.
struct CancelOnDrop {
    started: Arc<AtomicU64>,
    commands: async_channel::Sender<Command>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let id = self.started.load(Ordering::Relaxed);
        if self.armed && id != 0 {
            let _ = self.commands.try_send(Command::Run(cancel(CallId(id))));
        }
    }
}

/// A call the node has taken. Dropping it before its outcome cancels the call.
#[derive(Debug)]
pub struct PendingCall {
    id: CallId,
    outcome: oneshot::Receiver<Result<Replied, MeshError>>,
    commands: async_channel::Sender<Command>,
    finished: bool,
}

impl PendingCall {
    /// The call's id on the node.
    pub fn id(&self) -> CallId {
        self.id
    }

    /// Waits for the call's outcome.
    ///
    /// # Errors
    /// [`MeshError::Call`] with why the call has no result.
    pub async fn result(mut self) -> Result<Replied, MeshError> {
        let outcome = self.outcome.recv().await;
        self.finished = true;
        outcome.map_err(|_| MeshError::Closed)?
    }

    /// Cancels the call: the providers working on it are told, and its outcome is
    /// `Cancelled` (unless it had one already).
    pub async fn cancel(mut self) {
        self.finished = true;
        let _ = self.commands.send(Command::Run(cancel(self.id))).await;
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.finished {
            // A full command queue leaves the call to run to its deadline.
            let _ = self.commands.try_send(Command::Run(cancel(self.id)));
        }
    }
}

fn cancel(id: CallId) -> Start {
    Box::new(move |cx| {
        cx.endpoint
            .with_node(cx.now, |node, now| node.rpc_cancel(id, now));
    })
}

/// A procedure served: a [`Stream`] of the calls that arrive for it. Dropping it stops
/// serving (calls not answered yet are answered as given up, so their callers try another
/// provider).
#[derive(Debug)]
pub struct Service {
    id: RegistrationId,
    inbox: Inbox,
    commands: async_channel::Sender<Command>,
    ended: bool,
}

impl Service {
    /// Its id on the node.
    pub fn id(&self) -> RegistrationId {
        self.id
    }

    /// The next call; `None` once the node has stopped.
    pub async fn recv(&mut self) -> Option<Incoming> {
        loop {
            match self.inbox.recv().await? {
                Data::Request(r) => return Some(self.incoming(r)),
                _ => continue,
            }
        }
    }

    fn incoming(&self, request: Request) -> Incoming {
        Incoming {
            request,
            commands: self.commands.clone(),
            answered: false,
        }
    }

    /// Stops serving now.
    pub async fn unregister(mut self) {
        self.ended = true;
        let _ = self.commands.send(Command::Run(unregister(self.id))).await;
    }
}

fn unregister(id: RegistrationId) -> Start {
    Box::new(move |cx| {
        cx.endpoint
            .with_node(cx.now, |node, now| node.rpc_unregister(id, now));
    })
}

impl Stream for Service {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        loop {
            match Pin::new(&mut self.inbox).poll_next(cx) {
                Poll::Ready(Some(Data::Request(r))) => return Poll::Ready(Some(self.incoming(r))),
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if !self.ended {
            // A full command queue leaves it to the node: the inbox is closed with this
            // handle, and calls that arrive are answered as given up.
            let _ = self.commands.try_send(Command::Run(unregister(self.id)));
        }
    }
}

/// A call received by a [`Service`]. Answer it with [`Incoming::reply`] or
/// [`Incoming::fail`]; dropping it unanswered gives the call up, and its caller tries another
/// provider (never silence).
#[derive(Debug)]
pub struct Incoming {
    request: Request,
    commands: async_channel::Sender<Command>,
    answered: bool,
}

impl Incoming {
    /// The argument.
    pub fn payload(&self) -> &[u8] {
        &self.request.payload
    }

    /// The calling node.
    pub fn caller(&self) -> NodeId {
        self.request.caller
    }

    /// The procedure.
    pub fn procedure(&self) -> &str {
        &self.request.procedure
    }

    /// The request's id on the node.
    pub fn id(&self) -> RequestId {
        self.request.id
    }

    /// Answers with `payload`.
    ///
    /// # Errors
    /// [`MeshError::Reply`]: the call no longer waits (cancelled, past its deadline), or the
    /// reply is too large (the caller hears `TooLarge`).
    pub async fn reply(mut self, payload: impl Into<Vec<u8>>) -> Result<(), MeshError> {
        self.answered = true;
        let (id, payload) = (self.request.id, payload.into());
        self.answer(move |node, now| node.rpc_reply(id, payload, now))
            .await
    }

    /// Answers with an application error: the caller's call ends with it (not tried
    /// elsewhere).
    ///
    /// # Errors
    /// [`MeshError::Reply`]: the call no longer waits.
    pub async fn fail(mut self, message: impl Into<String>) -> Result<(), MeshError> {
        self.answered = true;
        let (id, message) = (self.request.id, message.into());
        self.answer(move |node, now| node.rpc_fail(id, message, now))
            .await
    }

    async fn answer(
        &self,
        answer: impl FnOnce(&mut macula_proto::Node, macula_proto::Instant) -> Result<(), ReplyError>
            + Send
            + 'static,
    ) -> Result<(), MeshError> {
        let (tx, rx) = oneshot();
        let run: Start = Box::new(move |cx| {
            let result = cx.endpoint.with_node(cx.now, answer);
            let _ = tx.try_send(result.map_err(MeshError::Reply));
        });
        self.commands
            .send(Command::Run(run))
            .await
            .map_err(|_| MeshError::Closed)?;
        rx.recv().await.map_err(|_| MeshError::Closed)?
    }

    /// Waits until the call stops waiting for this answer: its caller cancelled it, or its
    /// deadline passed. A handler races its work against this to stop early.
    pub async fn cancelled(&self) -> Ended {
        let id = self.request.id;
        let (tx, rx) = oneshot();
        let run: Start = Box::new(move |cx| {
            let waiting = cx.endpoint.node().rpc().is_waiting(id);
            if !waiting {
                let _ = tx.try_send(Ok(Ended::Cancelled));
                return;
            }
            let timeout = cx.endpoint.node().rpc().time_left(id, cx.now);
            cx.wait(
                OpKey::Request(id),
                timeout.map(Into::into),
                Once {
                    reply: tx,
                    map: move |event: &Event| match event {
                        Event::Rpc(RpcEvent::Ended { request, why }) if *request == id => {
                            Some(Ok(*why))
                        }
                        _ => None,
                    },
                    timeout: || MeshError::Timeout,
                },
            );
        });
        if self.commands.send(Command::Run(run)).await.is_err() {
            return Ended::Cancelled;
        }
        match rx.recv().await {
            Ok(Ok(why)) => why,
            // The node stopped, or its deadline passed without a word: the call is over.
            _ => Ended::Expired,
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.answered {
            let id = self.request.id;
            let run: Start = Box::new(move |cx| {
                let _ = cx
                    .endpoint
                    .with_node(cx.now, |node, now| node.rpc_abandon(id, now));
            });
            // A full command queue leaves the call to its deadline.
            let _ = self.commands.try_send(Command::Run(run));
        }
    }
}

impl From<CallError> for MeshError {
    fn from(error: CallError) -> Self {
        MeshError::Call(error)
    }
}

impl From<RegisterError> for MeshError {
    fn from(error: RegisterError) -> Self {
        MeshError::Register(error)
    }
}
