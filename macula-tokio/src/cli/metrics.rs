//! `macula node --metrics ADDR`: the node's counters in the Prometheus text format over HTTP
//! (`GET /metrics`), encoded by the `prometheus-client` crate.
//!
//! Each scrape asks the node for a snapshot of its counters and encodes it; nothing is kept
//! between scrapes. The server answers one request per connection, reads at most 8 KiB of
//! it within 5 s, and serves at most 16 connections at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use macula_proto::RefuseReason;
use macula_tokio::{Mesh, MeshStats};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Most bytes of a request read.
const MAX_REQUEST: usize = 8 * 1024;
/// Most connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `mesh`'s metrics at `addr`; returns the address bound (port 0 picks one).
pub async fn serve(mesh: Mesh, addr: SocketAddr) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!("metrics: accepting a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let mesh = mesh.clone();
            tokio::spawn(async move {
                if let Err(err) = answer(stream, &mesh).await {
                    tracing::debug!("metrics: {err:#}");
                }
                drop(permit);
            });
        }
    });
    Ok(bound)
}

async fn answer(mut stream: TcpStream, mesh: &Mesh) -> Result<()> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || request.len() + n > MAX_REQUEST {
                anyhow::bail!("no complete request");
            }
            request.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    })
    .await;
    read.context("the request took too long")??;
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, path) = (words.next(), words.next());
    let (status, content_type, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => match mesh.stats().await {
            Ok(stats) => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                exposition(&stats)?,
            ),
            Err(err) => ("503 Service Unavailable", "text/plain", format!("{err}\n")),
        },
        (Some(b"GET"), _) => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// A sample's labels, as (name, value) pairs.
type Labels = Vec<(String, String)>;

/// Registers metrics of one kind under a registry.
struct Metrics {
    registry: Registry,
}

impl Metrics {
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let counter: Counter = Counter::default();
        counter.inc_by(value);
        self.registry.register(name, help, counter);
    }

    fn gauge(&mut self, name: &str, help: &str, value: usize) {
        let gauge: Gauge = Gauge::default();
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        self.registry.register(name, help, gauge);
    }

    fn labelled(&mut self, name: &str, help: &str, values: &[(Labels, u64)]) {
        let family = Family::<Labels, Counter>::default();
        for (labels, value) in values {
            family.get_or_create(labels).inc_by(*value);
        }
        self.registry.register(name, help, family);
    }
}

/// The counters of `s` in the OpenMetrics text format (which Prometheus reads).
pub fn exposition(s: &MeshStats) -> Result<String> {
    let mut m = Metrics {
        registry: Registry::with_prefix("macula"),
    };
    let n = &s.node;
    m.gauge("peers", "Established peers", n.peers);
    m.gauge(
        "pending_handshakes",
        "Links whose handshake is under way",
        n.pending_handshakes,
    );
    m.gauge(
        "quic_connections",
        "QUIC connections, in any state",
        s.quic.connections,
    );
    m.gauge(
        "rate_limit_sources",
        "Source addresses whose handshake rate buckets are kept",
        n.rate_sources,
    );
    m.gauge(
        "commands_queued",
        "Commands from Mesh handles waiting for the node's task",
        s.commands_queued,
    );
    m.counter(
        "handshakes_completed",
        "Handshakes completed, both directions",
        n.handshakes_completed,
    );
    let mut refusals = Vec::new();
    for reason in RefuseReason::ALL {
        for (by, counts) in [("us", &n.refused_by_us), ("peer", &n.refused_by_peer)] {
            let labels = vec![
                ("by".to_owned(), by.to_owned()),
                ("reason".to_owned(), reason.as_str().to_owned()),
            ];
            refusals.push((labels, counts.get(reason)));
        }
    }
    m.labelled(
        "handshakes_refused",
        "Handshakes refused, by this node (by=us) or by the peer (by=peer), by reason",
        &refusals,
    );
    m.counter(
        "rate_limited",
        "Inbound handshakes refused because their source was over a rate limit",
        n.refused_by_us.rate_limited,
    );
    m.counter(
        "connect_failures",
        "Outbound connects that failed",
        n.connect_failures,
    );
    m.counter("pins_made", "Keys pinned on first use", n.pins_made);
    m.counter(
        "fingerprint_mismatches",
        "Dials refused because another key answered at a pinned name",
        n.fingerprint_mismatches,
    );
    m.counter(
        "identity_conflicts",
        "Peers that linked again from another address while their link was alive",
        n.identity_conflicts,
    );
    m.counter("frames_sent", "Frames sent on links", n.frames_sent);
    m.counter(
        "frames_received",
        "Frames received on links",
        n.frames_received,
    );
    m.counter("bytes_sent", "Frame bytes sent on links", n.bytes_sent);
    m.counter(
        "bytes_received",
        "Frame bytes received on links",
        n.bytes_received,
    );
    m.counter(
        "protocol_violations",
        "Links closed for a protocol violation",
        n.protocol_violations,
    );
    m.counter(
        "events_dropped",
        "Events dropped undrained",
        n.events_dropped,
    );
    m.counter(
        "datagrams_sent",
        "UDP datagrams sent",
        s.quic.datagrams_sent,
    );
    m.counter(
        "datagrams_received",
        "UDP datagrams received",
        s.quic.datagrams_received,
    );
    let d = &s.dht;
    m.counter("dht_lookups", "DHT lookups started", d.lookups);
    m.counter("dht_lookups_ok", "DHT lookups that succeeded", d.lookups_ok);
    m.counter("dht_requests_sent", "DHT requests sent", d.requests_sent);
    m.counter(
        "dht_requests_received",
        "DHT requests received",
        d.requests_received,
    );
    m.counter(
        "dht_stores_accepted",
        "DHT records stored for others",
        d.stores_accepted,
    );
    m.counter(
        "dht_rate_limited",
        "DHT requests refused by the per-peer rate limit",
        d.rate_limited,
    );
    let p = &s.pubsub;
    m.counter("pubsub_published", "Messages published here", p.published);
    m.counter(
        "pubsub_delivered",
        "Messages delivered to subscriptions here",
        p.delivered,
    );
    m.counter("pubsub_resent", "QoS 1 messages resent", p.resent);
    m.counter(
        "pubsub_missed",
        "Gaps noticed in publishers' sequences",
        p.missed,
    );
    let r = &s.rpc;
    m.counter("rpc_calls", "Calls made here", r.calls);
    m.counter("rpc_replied", "Calls made here that got a reply", r.replied);
    m.counter("rpc_failed", "Calls made here that failed", r.failed);
    m.counter(
        "rpc_failovers",
        "Call attempts moved to another provider",
        r.failovers,
    );
    m.counter(
        "rpc_executed",
        "Calls executed by this node's handlers",
        r.executed,
    );
    let mut text = String::new();
    encode(&mut text, &m.registry).context("encoding the metrics")?;
    Ok(text)
}
