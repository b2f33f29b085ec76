//! A test-only subsystem (feature `test-protocols`): what adding a subsystem costs, and a
//! protocol for testing the node's composition, channels and flow control with.
//!
//! It echoes requests, carries bulk bytes one way, and asks its sibling the DHT for the nodes
//! closest to a target, whose answer comes back to it alone. A node runs it only when
//! [`Config::test_echo`](crate::Config::test_echo) is set, so two nodes can differ in the
//! protocols they speak.

#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::dht::{DhtAsk, DhtEvent};
use crate::id::NodeId;
use crate::node::flow::Delivered;
use crate::node::subsystem::{Answer, Ask, Cx, Init, Peer, PeerChange, Subsystem, Ticket};
use crate::node::{Data, Event, InboxError, InboxId, Node, Overflow, SendError};
use crate::time::Instant;
use crate::wire::{Message, ProtocolId};

/// The echo protocol's messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EchoMessage {
    /// Kind 0. Send `payload` back.
    Echo {
        /// Correlation id.
        id: u64,
        /// Anything.
        payload: Vec<u8>,
    },
    /// Kind 1. The answer to `Echo`.
    Reply {
        /// The `Echo`'s id.
        id: u64,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// Kind 2. Bytes to count, not answered.
    Bulk {
        /// Anything.
        payload: Vec<u8>,
    },
}

impl Message for EchoMessage {
    const PROTOCOL: ProtocolId = ProtocolId::TEST_ECHO;
    const KINDS: u32 = 3;
}

/// What the echo subsystem tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EchoEvent {
    /// A reply to [`Node::echo`] came back.
    Replied {
        /// Who answered.
        peer: NodeId,
        /// The request's id.
        id: u64,
        /// The echoed payload's length.
        len: usize,
    },
    /// Bulk bytes arrived.
    Bulk {
        /// Who sent them.
        peer: NodeId,
        /// How many bytes.
        len: usize,
    },
    /// The sibling DHT answered [`Node::echo_find`]: how many nodes it found.
    Found {
        /// The ask's ticket.
        ticket: u64,
        /// Nodes found.
        nodes: usize,
    },
    /// Frames to a peer could not be delivered.
    Unreachable {
        /// The peer.
        peer: NodeId,
    },
}

/// Bulk bytes delivered to the echo inbox ([`Node::echo_open_inbox`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoData {
    /// Who sent them.
    pub from: NodeId,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// The echo subsystem's state: counters, and the inbox bulk goes to.
#[derive(Debug, Default)]
pub struct Echo {
    next_id: u64,
    /// Bytes of bulk received.
    pub bulk_received: u64,
    /// Where bulk payloads go; without one, they are counted and told as events.
    inbox: Option<InboxId>,
}

impl Subsystem for Echo {
    const PROTOCOL: ProtocolId = ProtocolId::TEST_ECHO;
    const VERSION: u16 = 1;
    type Message = EchoMessage;

    fn new(_init: &Init<'_>) -> Self {
        Echo::default()
    }

    fn enabled(config: &crate::Config) -> bool {
        config.test_echo
    }

    fn on_peer(&mut self, change: PeerChange, cx: &mut Cx<'_>) {
        if let PeerChange::Unreachable { peer, .. } = change {
            cx.emit(Event::Echo(EchoEvent::Unreachable { peer }));
        }
    }

    fn on_message(&mut self, from: Peer, message: EchoMessage, cx: &mut Cx<'_>) {
        match message {
            EchoMessage::Echo { id, payload } => {
                cx.reply(from.id, &EchoMessage::Reply { id, payload });
            }
            EchoMessage::Reply { id, payload } => cx.emit(Event::Echo(EchoEvent::Replied {
                peer: from.id,
                id,
                len: payload.len(),
            })),
            EchoMessage::Bulk { payload } => {
                self.bulk_received += payload.len() as u64;
                let len = payload.len();
                if let Some(inbox) = self.inbox {
                    let data = Data::Echo(EchoData {
                        from: from.id,
                        payload,
                    });
                    if cx.deliver(inbox, from, data) != Delivered::NoInbox {
                        return;
                    }
                    self.inbox = None;
                }
                cx.emit(Event::Echo(EchoEvent::Bulk { peer: from.id, len }));
            }
        }
    }

    fn on_timeout(&mut self, _cx: &mut Cx<'_>) {}

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn on_answer(&mut self, ticket: Ticket, answer: Answer, cx: &mut Cx<'_>) {
        let Answer::Dht(outcome) = answer;
        let nodes = match outcome {
            DhtEvent::NodesFound { closest, .. } => closest.len(),
            _ => 0,
        };
        cx.emit(Event::Echo(EchoEvent::Found {
            ticket: ticket.0,
            nodes,
        }));
    }
}

impl Node {
    /// Asks `peer` to echo `payload` (dialing it at `addr` if there is no link); the reply
    /// arrives as [`EchoEvent::Replied`] with the returned id.
    pub fn echo(
        &mut self,
        peer: NodeId,
        addr: Option<core::net::SocketAddr>,
        payload: Vec<u8>,
        now: Instant,
    ) -> u64 {
        self.run(now, |echo: &mut Echo, cx| {
            echo.next_id += 1;
            let id = echo.next_id;
            cx.send(peer, addr, &EchoMessage::Echo { id, payload });
            id
        })
    }

    /// Sends `payload` to `peer` as one bulk frame: data, held back while the channel to the
    /// peer is full.
    ///
    /// # Errors
    /// [`SendError::Full`] while the channel is full (try again after [`Event::Writable`]);
    /// [`SendError::NotConnected`] without a link to the peer.
    pub fn echo_bulk(
        &mut self,
        peer: NodeId,
        payload: Vec<u8>,
        now: Instant,
    ) -> Result<(), SendError> {
        self.run(now, |_: &mut Echo, cx| {
            cx.send_data(peer, None, &EchoMessage::Bulk { payload })
        })
    }

    /// Opens the inbox bulk payloads go to from now on (see [`Node::open_inbox`]); the
    /// previous one, if any, is closed.
    ///
    /// # Errors
    /// As [`Node::open_inbox`].
    pub fn echo_open_inbox(
        &mut self,
        capacity: usize,
        overflow: Overflow,
        now: Instant,
    ) -> Result<InboxId, InboxError> {
        let inbox = self.open_inbox(capacity, overflow)?;
        let old = self.run(now, |echo: &mut Echo, _| echo.inbox.replace(inbox));
        if let Some(old) = old {
            self.close_inbox(old, now);
        }
        Ok(inbox)
    }

    /// Asks the DHT, as a sibling, for the nodes closest to `target`; the answer arrives as
    /// [`EchoEvent::Found`] (the application sees no DHT event). Returns the ticket.
    pub fn echo_find(&mut self, target: NodeId, now: Instant) -> u64 {
        self.run(now, |_: &mut Echo, cx| {
            cx.ask(ProtocolId::DHT, Ask::Dht(DhtAsk::FindNode(target.0)))
                .0
        })
    }

    /// The echo subsystem's counters.
    pub fn echo_state(&self) -> &Echo {
        self.subsystem()
    }
}
