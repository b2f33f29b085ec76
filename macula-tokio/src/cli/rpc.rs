//! `macula serve` and `macula call`: an echo service on a running mesh, and calls to any
//! procedure, as a short-lived client that joined it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use macula_proto::rpc::{provider_name, CallOptions};
use macula_proto::NodeId;
use macula_tokio::{Mesh, MeshError};

/// What `macula serve` does.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The procedure (dot-separated segments, no wildcards).
    pub procedure: String,
    /// Exit after answering this many calls (default: run until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
}

/// What `macula call` does.
#[derive(clap::Args)]
pub struct CallArgs {
    /// The procedure (dot-separated segments, no wildcards).
    pub procedure: String,
    /// The argument, as text.
    pub payload: String,
    /// Call this node only (64 hex digits).
    #[arg(long, value_name = "NODE_ID")]
    pub to: Option<String>,
    /// Each call's deadline in milliseconds, attempts on other providers included.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub timeout: u64,
    /// How many calls to make, one after another.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
}

/// Serves `procedure`, answering every call with its own payload. Prints
/// `serving=<procedure> node_id=<hex>` once callers can find it, then `call from=<8 hex>
/// bytes=<n>` per call answered.
pub async fn serve(mesh: &Mesh, args: ServeArgs) -> Result<()> {
    let mut service = mesh.rpc().serve(&args.procedure).await?;
    wait_until_findable(mesh, &args.procedure).await?;
    println!("serving={} node_id={}", args.procedure, mesh.node_id());
    let mut answered = 0;
    while args.count.map_or(true, |n| answered < n) {
        let call = tokio::select! {
            c = service.recv() => c,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(call) = call else {
            bail!("the node stopped");
        };
        let (from, payload) = (call.caller(), call.payload().to_vec());
        let bytes = payload.len();
        match call.reply(payload).await {
            Ok(()) => {
                println!("call from={} bytes={bytes}", from.short());
                answered += 1;
            }
            // The caller gave up meanwhile (cancelled, or past its deadline).
            Err(MeshError::Reply(e)) => tracing::warn!(from = %from.short(), "not answered: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Waits until the DHT lists this node as a provider of `procedure` (at most 30 s): a caller
/// starting after `serve` said so finds it.
pub async fn wait_until_findable<R: macula_mesh::Runtime>(
    mesh: &macula_mesh::Mesh<R>,
    procedure: &str,
) -> Result<()> {
    let name = provider_name(procedure);
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let found = mesh.dht().find_providers(&name).await;
        if found.is_ok_and(|records| records.iter().any(|r| r.publisher == mesh.node_id())) {
            return Ok(());
        }
        if Instant::now() >= give_up {
            bail!("the mesh did not store this node's announcement within 30 s");
        }
        R::sleep_until(R::now() + Duration::from_millis(100)).await;
    }
}

/// Makes the calls, one `from=<8 hex> rtt_us=<n> payload=<text>` line per reply; fails on the
/// first call that has no result, naming why (`no_responders`, `timeout`, ...).
pub async fn call(mesh: &Mesh, args: CallArgs) -> Result<()> {
    let mut options =
        CallOptions::default().with_timeout(Duration::from_millis(args.timeout).into());
    if let Some(to) = &args.to {
        let node = NodeId::from_hex(to)
            .map_err(|_| anyhow::anyhow!("--to: not a node id (64 hex digits): {to}"))?;
        options = options.to(node);
    }
    if args.timeout == 0 {
        bail!("--timeout must be at least 1 ms");
    }
    for n in 1..=args.count {
        let started = Instant::now();
        let replied = match mesh
            .rpc()
            .call(&args.procedure, args.payload.clone(), options.clone())
            .await
        {
            Ok(r) => r,
            Err(MeshError::Call(e)) => bail!("call {n} failed: {}: {e}", e.code()),
            Err(e) => return Err(e).context(format!("call {n}")),
        };
        println!(
            "from={} rtt_us={} payload={}",
            replied.from.short(),
            started.elapsed().as_micros(),
            String::from_utf8_lossy(&replied.payload)
        );
    }
    Ok(())
}
