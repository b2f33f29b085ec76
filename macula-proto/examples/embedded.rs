//! A Macula node in plain `std`: one thread, one blocking UDP socket, no async runtime.
//!
//! It joins a mesh through BOOTSTRAP, serves `embedded.echo`, subscribes to `mesh.news`, puts
//! `embedded.greeting` in the DHT and gets `mesh.greeting`, calls `mesh.echo`, and publishes on
//! `embedded.news` (QoS 1). Then it answers calls and prints messages until it has had one of
//! each, or LINGER seconds (default 10) pass, and leaves cleanly. One line per result on stdout.
//!
//! ```sh
//! cargo run -p macula-proto --example embedded -- BOOTSTRAP [REALM [LINGER]]
//! ```
//! `docs/embedding.md` explains the loop step by step.

use std::error::Error;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use macula_proto::dht::{DhtEvent, OpId};
use macula_proto::node::Socket;
use macula_proto::pubsub::{PublishId, PublishOptions, Publishing, PubsubEvent, Qos};
use macula_proto::quic::{Endpoint, EndpointConfig};
use macula_proto::rpc::{CallId, CallOptions, RpcEvent};
use macula_proto::{
    Config, Data, Duration, Event, Identity, InboxId, Instant, LinkId, Node, Realm,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Longest the loop sleeps on the socket, so that the linger below ends on time.
const MAX_SLEEP: StdDuration = StdDuration::from_millis(200);

/// The endpoint, the IO it asks for, and the events not looked at yet.
struct StdNode {
    endpoint: Endpoint,
    socket: UdpSocket,
    epoch: StdInstant,
    events: Vec<Event>,
    served: usize,
    received: usize,
}

impl StdNode {
    fn bind(realm: Realm) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let mut config = Config::new(realm);
        config.listen_addrs = vec![socket.local_addr()?];
        // The core draws no randomness of its own: the key and the seed come from the OS.
        let mut random = [0u8; 40];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
        let identity = Identity::from_secret(random[..32].try_into()?);
        let seed = u64::from_le_bytes(random[32..].try_into()?);
        let epoch = StdInstant::now();
        let config = EndpointConfig::new(config, identity, seed, epoch);
        let endpoint = Endpoint::new(config, Instant::ZERO)?;
        let (events, served, received) = (Vec::new(), 0, 0);
        Ok(StdNode {
            endpoint,
            socket,
            epoch,
            events,
            served,
            received,
        })
    }

    /// The core's clock: time since `epoch`, which never goes back.
    fn now(&self) -> Instant {
        Instant::ZERO + Duration::from(self.epoch.elapsed())
    }

    /// Runs a command on the node at the current time.
    fn command<T>(&mut self, f: impl FnOnce(&mut Node, Instant) -> T) -> T {
        let now = self.now();
        self.endpoint.with_node(now, f)
    }

    /// One turn of the loop: carry out the outputs, sleep on the socket until a datagram comes
    /// or the next timer is due, and hand the core what happened.
    fn turn(&mut self) -> Result<()> {
        while let Some(inbox) = self.endpoint.poll_ready() {
            self.read_inbox(inbox);
        }
        while let Some(d) = self.endpoint.poll_transmit() {
            // Those for NAT detection's second socket are dropped: there is none here. A
            // datagram that can't be sent is a lost datagram: QUIC recovers.
            for segment in d.segments().filter(|_| d.socket == Socket::Main) {
                let _ = self.socket.send_to(segment, d.destination);
            }
        }
        self.events
            .extend(std::iter::from_fn(|| self.endpoint.poll_event()));
        let now = self.now();
        let wait = match self.endpoint.poll_timeout() {
            Some(at) => at.saturating_duration_since(now).into(),
            None => MAX_SLEEP,
        };
        if wait.is_zero() {
            self.endpoint.handle_timeout(now);
            return Ok(());
        }
        self.socket.set_read_timeout(Some(wait.min(MAX_SLEEP)))?;
        let mut buf = [0; 65536];
        match self.socket.recv_from(&mut buf) {
            Ok((len, from)) => self
                .endpoint
                .handle_datagram(from, None, &buf[..len], self.now()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                self.endpoint.handle_timeout(self.now());
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Empties an inbox: answers calls (an echo) and prints messages.
    fn read_inbox(&mut self, inbox: InboxId) {
        while let Some(data) = self.command(|n, now| n.take_data(inbox, now)) {
            match data {
                Data::Request(r) => {
                    let (procedure, payload) = (&r.procedure, text(&r.payload));
                    println!("served procedure={procedure} payload={payload}");
                    let reply = r.payload.clone();
                    let _ = self.command(|n, now| n.rpc_reply(r.id, reply, now));
                    self.served += 1;
                }
                Data::Message(m) => {
                    println!("message topic={} payload={}", m.topic, text(&m.payload));
                    self.received += 1;
                }
                _ => {}
            }
        }
    }

    /// Turns the loop until operation `op` ends (the core ends every operation, on time),
    /// and returns its outcome as a line to print.
    fn wait(&mut self, op: Op) -> Result<String> {
        loop {
            self.turn()?;
            let mut outcomes = self.events.drain(..).filter_map(|e| outcome(&e));
            if let Some((_, line)) = outcomes.find(|(of, _)| *of == op) {
                return Ok(line);
            }
        }
    }
}

/// An operation whose outcome comes as an event.
#[derive(PartialEq)]
enum Op {
    Link(LinkId),
    Dht(OpId),
    Call(CallId),
    Publish(PublishId),
}

/// The operation `event` ends, and its outcome.
fn outcome(event: &Event) -> Option<(Op, String)> {
    Some(match event {
        Event::PeerUp { link, peer, .. } => (Op::Link(*link), format!("peer={}", peer.short())),
        Event::ConnectFailed { link, failure, .. } => (Op::Link(*link), format!("error={failure}")),
        Event::Dht(DhtEvent::Stored { op, acks }) => (Op::Dht(*op), format!("acks={acks}")),
        Event::Dht(DhtEvent::Got { op, records }) => {
            let values: Vec<_> = records.iter().map(|r| text(&r.value)).collect();
            (Op::Dht(*op), format!("values={}", values.join(",")))
        }
        Event::Dht(DhtEvent::Failed { op, error }) => (Op::Dht(*op), format!("error={error:?}")),
        Event::Rpc(RpcEvent::Done { id, result: Ok(r) }) => (
            Op::Call(*id),
            format!("from={} payload={}", r.from.short(), text(&r.payload)),
        ),
        Event::Rpc(RpcEvent::Done { id, result: Err(e) }) => {
            (Op::Call(*id), format!("error={}", e.code()))
        }
        Event::Pubsub(PubsubEvent::Published { id, acked, .. }) => {
            (Op::Publish(*id), format!("acked={}", acked.len()))
        }
        _ => return None,
    })
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: embedded BOOTSTRAP [REALM [LINGER]]";
    let bootstrap: SocketAddr = args.first().ok_or(usage)?.parse()?;
    let realm = Realm::new(args.get(1).map_or("io.example.dev", String::as_str))?;
    let linger = StdDuration::from_secs(args.get(2).map_or(Ok(10), |s| s.parse())?);
    let mut node = StdNode::bind(realm)?;

    let link = node.command(|n, now| n.connect(bootstrap, None, now));
    let joined = node.wait(Op::Link(link))?;
    println!("joined {joined}");
    if joined.starts_with("error") {
        return Err(format!("could not join through {bootstrap}: {joined}").into());
    }
    node.command(|n, now| n.rpc_register("embedded.echo", Default::default(), now))?;
    node.command(|n, now| n.pubsub_subscribe("mesh.news", Default::default(), now))?;

    let put = node.command(|n, now| n.dht_put(b"embedded.greeting", b"hello from std".into(), now));
    println!("put key=embedded.greeting {}", node.wait(Op::Dht(put))?);
    let get = node.command(|n, now| n.dht_get(b"mesh.greeting", now));
    println!("get key=mesh.greeting {}", node.wait(Op::Dht(get))?);
    let call = node
        .command(|n, now| n.rpc_call("mesh.echo", b"ping".into(), CallOptions::default(), now))?;
    println!("call procedure=mesh.echo {}", node.wait(Op::Call(call))?);
    let qos1 = PublishOptions::qos(Qos::AtLeastOnce);
    let published = match node
        .command(|n, now| n.pubsub_publish("embedded.news", b"news".into(), qos1, now))?
    {
        Publishing::Pending(id) => node.wait(Op::Publish(id))?,
        Publishing::Sent { subscribers } => format!("sent={subscribers}"),
    };
    println!("publish topic=embedded.news {published}");

    // Serve until a call and a message came (or LINGER passed), then leave cleanly: keep
    // turning until the goodbyes are sent and the connections drained.
    let until = StdInstant::now() + linger;
    while (node.served == 0 || node.received == 0) && StdInstant::now() < until {
        node.turn()?;
    }
    let now = node.now();
    node.endpoint.close(now);
    while !node.endpoint.is_idle() && StdInstant::now() < until + StdDuration::from_secs(2) {
        node.turn()?;
    }
    println!("closed served={} received={}", node.served, node.received);
    Ok(())
}
