//! `macula`: run a node, ping one, or watch a three-node demo on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use macula_proto::{ApiKey, Config, Realm};
use macula_tokio::{Mesh, MeshConfig};

#[derive(Parser)]
#[command(
    name = "macula",
    version,
    about = "Macula peer-to-peer mesh node and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node until Ctrl-C; prints `node_id=<hex> listen=<addr>` once it listens.
    Node {
        /// UDP address to listen on.
        #[arg(long, default_value = "127.0.0.1:4433")]
        listen: SocketAddr,
        #[command(flatten)]
        realm: RealmArgs,
        /// A node to join through; repeat for several.
        #[arg(long = "bootstrap", value_name = "ADDR")]
        bootstraps: Vec<SocketAddr>,
    },
    /// Connect to a node and measure round trips; one line per ping with the RTT in µs.
    Ping {
        /// The node's UDP address.
        addr: SocketAddr,
        #[command(flatten)]
        realm: RealmArgs,
        /// How many pings to send.
        #[arg(long, default_value_t = 5)]
        count: u32,
    },
    /// Start three nodes on loopback in this process, connect them, ping every pair, print a table.
    Demo,
}

#[derive(clap::Args)]
struct RealmArgs {
    /// The realm to join (reverse-DNS name, e.g. io.example.dev).
    #[arg(long, default_value = "dev.macula.local")]
    realm: String,
    /// A file holding the realm's API key (at least 16 bytes; a trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
}

impl RealmArgs {
    fn config(&self) -> Result<Config> {
        let realm = Realm::new(&self.realm).map_err(|e| anyhow::anyhow!("--realm: {e}"))?;
        let mut config = Config::new(realm);
        if let Some(path) = &self.api_key_file {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the API key file {}", path.display()))?;
            let trimmed = bytes.trim_ascii_end();
            config.api_key = Some(
                ApiKey::new(trimmed)
                    .map_err(|e| anyhow::anyhow!("API key in {}: {e}", path.display()))?,
            );
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints a table; its logs would only clutter it unless RUST_LOG asks for them.
    let default_level = match cli.command {
        Command::Demo => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Node {
                listen,
                realm,
                bootstraps,
            } => node(listen, &realm, bootstraps).await,
            Command::Ping { addr, realm, count } => ping(addr, &realm, count).await,
            Command::Demo => demo().await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn node(listen: SocketAddr, realm: &RealmArgs, bootstraps: Vec<SocketAddr>) -> Result<()> {
    let mesh = Mesh::bind(MeshConfig::new(realm.config()?, listen)).await?;
    println!("node_id={} listen={}", mesh.node_id(), mesh.local_addr());
    for addr in bootstraps {
        match mesh.connect(addr).await {
            Ok(peer) => tracing::info!(%addr, peer = %peer, "joined through bootstrap"),
            Err(err) => tracing::warn!(%addr, "bootstrap failed: {err}"),
        }
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("closing");
    mesh.close().await;
    Ok(())
}

async fn ping(addr: SocketAddr, realm: &RealmArgs, count: u32) -> Result<()> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let mesh = Mesh::bind(MeshConfig::new(realm.config()?, local)).await?;
    let result = async {
        let peer = mesh.connect(addr).await?;
        for seq in 1..=count {
            let rtt = mesh.ping(peer).await?;
            println!("seq={seq} peer={} rtt_us={}", peer.short(), rtt.as_micros());
        }
        anyhow::Ok(())
    }
    .await;
    mesh.close().await;
    result
}

async fn demo() -> Result<()> {
    let realm = Realm::new("demo.macula.local").expect("a valid realm name");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let config = MeshConfig::new(Config::new(realm.clone()), "127.0.0.1:0".parse()?);
        nodes.push(Mesh::bind(config).await?);
    }
    println!("Three Macula nodes on loopback, realm {realm}:");
    for (i, n) in nodes.iter().enumerate() {
        println!(
            "  node {i}: id {} at {}",
            n.node_id().short(),
            n.local_addr()
        );
    }
    for i in 0..nodes.len() {
        for j in i + 1..nodes.len() {
            nodes[i].connect(nodes[j].local_addr()).await?;
        }
    }
    println!("\nRound trips over QUIC (median of 10 pings, µs):");
    print!("{:>8}", "from\\to");
    for j in 0..nodes.len() {
        print!("{:>10}", format!("node {j}"));
    }
    println!();
    for (i, from) in nodes.iter().enumerate() {
        print!("{:>8}", format!("node {i}"));
        for (j, to) in nodes.iter().enumerate() {
            if i == j {
                print!("{:>10}", "-");
                continue;
            }
            let mut rtts = Vec::new();
            for _ in 0..10 {
                rtts.push(from.ping(to.node_id()).await?.as_micros());
            }
            rtts.sort_unstable();
            print!("{:>10}", rtts[rtts.len() / 2]);
        }
        println!();
    }
    for (i, n) in nodes.iter().enumerate() {
        let stats = n.stats().await?;
        if stats.node.peers != nodes.len() - 1 {
            bail!(
                "node {i} has {} peers, expected {}",
                stats.node.peers,
                nodes.len() - 1
            );
        }
    }
    println!("\nEvery node sees {} peers. Closing.", nodes.len() - 1);
    for n in &nodes {
        n.close().await;
    }
    Ok(())
}
