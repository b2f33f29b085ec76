//! Ping RTT and handshakes per second on each runtime, on loopback, in one run.
//!
//! `cargo run --release -p macula-tests --example runtimes [PINGS] [HANDSHAKES]`

use std::time::Instant;

use macula_mesh::Runtime;
use macula_tests::{config, node, Smol, Tokio};

struct Figures {
    p50_us: u64,
    p99_us: u64,
    handshakes_per_sec: f64,
}

async fn measure<R: Runtime>(pings: usize, handshakes: usize) -> anyhow::Result<Figures> {
    let a = node::<R>(config("bench.rt", None)).await?;
    let b = node::<R>(config("bench.rt", None)).await?;
    let peer = a.connect(b.local_addr()).await?;
    for _ in 0..100 {
        a.ping(peer).await?;
    }
    let mut rtts = Vec::with_capacity(pings);
    for _ in 0..pings {
        rtts.push(a.ping(peer).await?.as_micros());
    }
    rtts.sort_unstable();
    let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p).round() as usize];
    a.disconnect(peer).await?;
    // Full handshakes (QUIC + TLS 1.3 + realm), one after another, each closed again.
    let start = Instant::now();
    for _ in 0..handshakes {
        let peer = a.connect(b.local_addr()).await?;
        a.disconnect(peer).await?;
    }
    let handshakes_per_sec = handshakes as f64 / start.elapsed().as_secs_f64();
    a.close().await;
    b.close().await;
    Ok(Figures {
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        handshakes_per_sec,
    })
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let pings: usize = args.next().map_or(Ok(5000), |a| a.parse())?;
    let handshakes: usize = args.next().map_or(Ok(500), |a| a.parse())?;
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tokio = tokio_rt.block_on(measure::<Tokio>(pings, handshakes))?;
    let smol = smol::block_on(measure::<Smol>(pings, handshakes))?;
    println!("{pings} pings and {handshakes} handshakes per runtime, loopback, one run");
    println!(
        "{:<8}{:>12}{:>12}{:>16}",
        "runtime", "p50 µs", "p99 µs", "handshakes/s"
    );
    for (name, f) in [("tokio", &tokio), ("smol", &smol)] {
        println!(
            "{name:<8}{:>12}{:>12}{:>16.0}",
            f.p50_us, f.p99_us, f.handshakes_per_sec
        );
    }
    println!(
        "smol/tokio: p50 {:.2}, p99 {:.2}, handshakes/s {:.2}",
        smol.p50_us as f64 / tokio.p50_us.max(1) as f64,
        smol.p99_us as f64 / tokio.p99_us.max(1) as f64,
        smol.handshakes_per_sec / tokio.handshakes_per_sec
    );
    Ok(())
}
