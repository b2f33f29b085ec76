//! `macula`: run a node, ping one, use the DHT, or watch a three-node demo on loopback.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use cli::settings::{NodeSettings, RealmArgs};
use macula_mesh::store::DataDir;
use macula_proto::pubsub::Qos;
use macula_proto::{Config, NodeId, Realm};
use macula_tokio::{Mesh, MeshConfig};

mod cli;

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
    /// Run a node until Ctrl-C or SIGTERM; prints `node_id=<hex> listen=<addr>` once it
    /// listens (and ` metrics=<addr>` with --metrics).
    Node(Box<cli::settings::NodeArgs>),
    /// Show what a node would run with: `macula config show` with `macula node`'s flags.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Connect to a node and measure round trips; one line per ping,
    /// `seq=<n> peer=<8 hex> rtt_us=<n> path=<direct|punched|relayed>`. The node is an
    /// address, or a node id (64 hex digits) reached through the mesh joined with
    /// `--bootstrap`: straight where the two NATs let a dial through, else through a gateway's
    /// relay, upgrading to a punched path when the NATs allow it.
    Ping {
        /// The node: its UDP address, or its id.
        target: PingTarget,
        /// With a node id: a node of the mesh to join through (required), as HOST:PORT.
        #[arg(long = "bootstrap", value_name = "HOST:PORT")]
        bootstraps: Vec<cli::join::Bootstrap>,
        #[command(flatten)]
        realm: RealmArgs,
        /// How many pings to send.
        #[arg(long, default_value_t = 5)]
        count: u32,
        /// Milliseconds between pings.
        #[arg(long, value_name = "MS", default_value_t = 0)]
        interval: u64,
    },
    /// Use the DHT of a running mesh: joins it through `--bootstrap` as a short-lived client.
    Dht {
        #[command(subcommand)]
        command: cli::dht::DhtCommand,
        /// A node of the mesh to join through (required), as HOST:PORT (an address or a DNS
        /// name); repeat for several.
        #[arg(long = "bootstrap", value_name = "HOST:PORT", global = true)]
        bootstraps: Vec<cli::join::Bootstrap>,
        #[command(flatten)]
        realm: RealmArgs,
    },
    /// Publish a message on a topic of a running mesh: joins it through `--bootstrap` as a
    /// short-lived client; prints `message=<n> subscribers=<nodes>` per message.
    Pub {
        #[command(flatten)]
        args: cli::pubsub::PubArgs,
        /// A node of the mesh to join through (required), as HOST:PORT (an address or a DNS
        /// name); repeat for several.
        #[arg(long = "bootstrap", value_name = "HOST:PORT")]
        bootstraps: Vec<cli::join::Bootstrap>,
        #[command(flatten)]
        realm: RealmArgs,
    },
    /// Subscribe to a pattern on a running mesh; prints
    /// `topic=<topic> from=<8 hex> seq=<n> payload=<text>` per message.
    Sub {
        #[command(flatten)]
        args: cli::pubsub::SubArgs,
        /// A node of the mesh to join through (required), as HOST:PORT (an address or a DNS
        /// name); repeat for several.
        #[arg(long = "bootstrap", value_name = "HOST:PORT")]
        bootstraps: Vec<cli::join::Bootstrap>,
        #[command(flatten)]
        realm: RealmArgs,
    },
    /// Serve a procedure on a running mesh as an echo service (every call is answered with
    /// its own payload); prints `serving=<procedure> node_id=<hex>` once callers can find it,
    /// then `call from=<8 hex> bytes=<n>` per call.
    Serve {
        #[command(flatten)]
        args: cli::rpc::ServeArgs,
        /// A node of the mesh to join through (required), as HOST:PORT (an address or a DNS
        /// name); repeat for several.
        #[arg(long = "bootstrap", value_name = "HOST:PORT")]
        bootstraps: Vec<cli::join::Bootstrap>,
        #[command(flatten)]
        realm: RealmArgs,
    },
    /// Call a procedure on a running mesh; prints `from=<8 hex> rtt_us=<n> payload=<text>`
    /// per reply, and exits non-zero naming the error (`no_responders`, `timeout`, ...) if a
    /// call fails.
    Call {
        #[command(flatten)]
        args: cli::rpc::CallArgs,
        /// A node of the mesh to join through (required), as HOST:PORT (an address or a DNS
        /// name); repeat for several.
        #[arg(long = "bootstrap", value_name = "HOST:PORT")]
        bootstraps: Vec<cli::join::Bootstrap>,
        #[command(flatten)]
        realm: RealmArgs,
    },
    /// Detect what the NAT in front of this host does, with the help of a running mesh;
    /// prints `mapping=<class> filtering=<class> allocation=<class> hairpin=<yes|no>
    /// public=<ip:port>` (classes as in RFC 4787: endpoint-independent, address-dependent,
    /// address-and-port-dependent; allocation preserving, contiguous or random).
    Nat {
        /// A node of the mesh to join through (required), reachable at the address it listens
        /// on, with a peer at another address (a second observer), as HOST:PORT.
        #[arg(long = "bootstrap", value_name = "HOST:PORT")]
        bootstraps: Vec<cli::join::Bootstrap>,
        #[command(flatten)]
        realm: RealmArgs,
    },
    /// Make or read identity files.
    Keys {
        #[command(subcommand)]
        command: cli::keys::KeysCommand,
    },
    /// Make a development CA and node certificates for trying production TLS out.
    Cert {
        #[command(subcommand)]
        command: cli::cert::CertCommand,
    },
    /// List or revoke the keys a node pinned at the addresses it was told to dial (trust on
    /// first use).
    Trust {
        #[command(subcommand)]
        command: cli::trust::TrustCommand,
    },
    /// Measure Macula on loopback (separate processes, public API); results on stdout.
    Bench {
        #[command(subcommand)]
        command: cli::bench::BenchCommand,
    },
    /// A benchmark's worker process (started by `macula bench`).
    #[command(hide = true)]
    BenchWorker {
        /// The async runtime to run on.
        #[arg(long, value_enum, default_value_t = cli::bench::RuntimeChoice::Tokio)]
        runtime: cli::bench::RuntimeChoice,
        #[command(subcommand)]
        command: cli::bench::WorkerCommand,
    },
    /// Start three nodes on loopback in this process, connect them, ping every pair, put a value
    /// in the DHT on one node and get it on the others, show one wildcard subscriber receiving
    /// from two publishers, and a call that fails over when its provider vanishes.
    Demo,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration of `macula node` given the same flags, environment
    /// and `--config` file, as TOML with where each value came from (flag, environment,
    /// file or default) in a comment.
    Show(Box<cli::settings::NodeArgs>),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    // The node's settings know which values came from flags and which from the environment.
    let sub = |path: &[&str]| {
        path.iter()
            .try_fold(&matches, |m, name| m.subcommand_matches(name))
            .cloned()
    };
    // A running node logs what it does; the tools print their results on stdout and only
    // warnings on stderr, unless RUST_LOG asks for more.
    let default_level = match cli.command {
        Command::Node(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A benchmark worker runs on the runtime it was told, which may not be tokio.
    let result = match cli.command {
        Command::BenchWorker { runtime, command } => cli::bench::run_worker(runtime, command),
        command => run(command, sub),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command on tokio.
fn run(command: Command, sub: impl Fn(&[&str]) -> Option<clap::ArgMatches>) -> Result<()> {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => anyhow::bail!("could not start the async runtime: {err}"),
    };
    runtime.block_on(async {
        match command {
            Command::Node(args) => {
                let matches = sub(&["node"]).expect("the node subcommand was parsed");
                node(NodeSettings::resolve(*args, &matches)?).await
            }
            Command::Config {
                command: ConfigCommand::Show(args),
            } => {
                let matches = sub(&["config", "show"]).expect("config show was parsed");
                let settings = NodeSettings::resolve(*args, &matches)?;
                settings.config()?;
                settings.realm.tls.mode()?;
                print!("{}", settings.show());
                Ok(())
            }
            Command::Ping {
                target,
                bootstraps,
                realm,
                count,
                interval,
            } => {
                let every = std::time::Duration::from_millis(interval);
                match target {
                    PingTarget::Addr(addr) => ping(addr, &realm, count, every).await,
                    PingTarget::Node(id) => ping_node(id, &bootstraps, &realm, count, every).await,
                }
            }
            Command::Nat { bootstraps, realm } => cli::nat::run(&bootstraps, &realm).await,
            Command::Dht {
                command,
                bootstraps,
                realm,
            } => dht(command, bootstraps, &realm).await,
            Command::Pub {
                args,
                bootstraps,
                realm,
            } => {
                let mesh = client(&bootstraps, &realm, false).await?;
                let result = cli::pubsub::publish(&mesh, args).await;
                mesh.close().await;
                result
            }
            Command::Sub {
                args,
                bootstraps,
                realm,
            } => {
                let mesh = client(&bootstraps, &realm, true).await?;
                let result = cli::pubsub::subscribe(&mesh, args).await;
                mesh.close().await;
                result
            }
            Command::Serve {
                args,
                bootstraps,
                realm,
            } => {
                let mesh = client(&bootstraps, &realm, true).await?;
                let result = cli::rpc::serve(&mesh, args).await;
                mesh.close().await;
                result
            }
            Command::Call {
                args,
                bootstraps,
                realm,
            } => {
                let mesh = client(&bootstraps, &realm, false).await?;
                let result = cli::rpc::call(&mesh, args).await;
                mesh.close().await;
                result
            }
            Command::Keys { command } => cli::keys::run(command),
            Command::Cert { command } => cli::cert::run(command),
            Command::Trust {
                command:
                    cli::trust::TrustCommand::Check {
                        name,
                        bootstraps,
                        realm,
                    },
            } => {
                let mesh = client(&bootstraps, &realm, false).await?;
                let result = cli::trust::check(&mesh, &name).await;
                mesh.close().await;
                result
            }
            Command::Trust { command } => cli::trust::run(command),
            Command::Bench { command } => cli::bench::run(command).await,
            Command::BenchWorker { .. } => unreachable!("run before the runtime starts"),
            Command::Demo => demo().await,
        }
    })
}

async fn node(settings: NodeSettings) -> Result<()> {
    let listen = settings.listen;
    let realm = &settings.realm;
    let data_dir = match settings.data_dir.clone() {
        Some(dir) => Some(dir),
        None => cli::keys::default_data_dir(listen)?,
    };
    // The directory stays locked until the node is closed.
    let (dir, identity) = cli::keys::node_identity(data_dir.as_deref(), realm.identity()?)?;
    if identity.is_none() {
        tracing::warn!("an ephemeral port and no --data-dir: this node's identity is not kept");
    }
    let mut core = settings.config()?;
    // A long-running node learns what its NAT does (and keeps it fresh).
    core.nat.detect = true;
    let mut config = MeshConfig::new(core, listen);
    config.identity = identity;
    config.tls = realm.tls.mode()?;
    config.pins = dir.as_ref().map(DataDir::pins_path);
    config.audit_log = settings.audit_log.clone();
    let bootstraps = settings.bootstraps.clone();
    let mesh = Mesh::bind(config).await?;
    let metrics = match settings.metrics {
        Some(addr) => {
            let bound = cli::metrics::serve(mesh.clone(), addr).await?;
            format!(" metrics={bound}")
        }
        None => String::new(),
    };
    println!(
        "node_id={} listen={}{metrics}",
        mesh.node_id(),
        mesh.local_addr()
    );
    if !bootstraps.is_empty() {
        // Until one seed lets it in, the node keeps trying (a seed may be full or not up yet).
        let joiner = mesh.clone();
        tokio::spawn(async move {
            let mut wait = std::time::Duration::from_secs(1);
            loop {
                let mut joined = false;
                for addr in &bootstraps {
                    match addr.join(&joiner).await {
                        Ok(peer) => {
                            tracing::info!(%addr, peer = %peer, "joined through bootstrap");
                            joined = true;
                        }
                        Err(err) => tracing::warn!(%addr, "bootstrap failed: {err:#}"),
                    }
                }
                if joined {
                    return;
                }
                tracing::warn!("no bootstrap node let us in; trying again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        });
    }
    stopped().await?;
    tracing::info!("closing");
    mesh.close().await;
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM (a service manager's stop): either closes the node cleanly.
async fn stopped() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted.context("waiting for Ctrl-C"),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
}

/// What `macula ping` pings: an address, or a node id.
#[derive(Clone, Debug)]
enum PingTarget {
    Addr(SocketAddr),
    Node(NodeId),
}

impl std::str::FromStr for PingTarget {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        if let Ok(addr) = text.parse() {
            return Ok(PingTarget::Addr(addr));
        }
        NodeId::from_hex(text).map(PingTarget::Node).map_err(|_| {
            format!("{text:?} is neither an address (IP:PORT) nor a node id (64 hex digits)")
        })
    }
}

/// Pings `peer` `count` times, `every` apart, printing each round trip and the path its
/// link runs at that moment.
async fn ping_rounds(
    mesh: &Mesh,
    peer: NodeId,
    count: u32,
    every: std::time::Duration,
) -> Result<()> {
    for seq in 1..=count {
        if seq > 1 && !every.is_zero() {
            tokio::time::sleep(every).await;
        }
        let rtt = mesh.ping(peer).await?;
        let path = mesh
            .peers()
            .await?
            .into_iter()
            .find(|p| p.id == peer)
            .map_or(macula_proto::nat::PathKind::Direct, |p| p.path);
        println!(
            "seq={seq} peer={} rtt_us={} path={path}",
            peer.short(),
            rtt.as_micros()
        );
    }
    Ok(())
}

/// Joins the mesh and pings a node by its id, reaching it through the mesh.
async fn ping_node(
    target: NodeId,
    bootstraps: &[cli::join::Bootstrap],
    realm: &RealmArgs,
    count: u32,
    every: std::time::Duration,
) -> Result<()> {
    let mesh = client(bootstraps, realm, true).await?;
    let result = async {
        // Knowing this host's own NAT lets a straight or punched path be tried first; without
        // a second observer the reach still works, through what the target published.
        if let Err(err) = mesh.nat().detect().await {
            tracing::info!(%err, "no NAT profile for this host");
        }
        mesh.nat()
            .reach(target)
            .await
            .with_context(|| format!("reaching {target}"))?;
        ping_rounds(&mesh, target, count, every).await
    }
    .await;
    mesh.close().await;
    result
}

async fn ping(
    addr: SocketAddr,
    realm: &RealmArgs,
    count: u32,
    every: std::time::Duration,
) -> Result<()> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let mut config = MeshConfig::new(client_config(realm)?, local);
    config.identity = realm.identity()?;
    config.tls = realm.tls.mode()?;
    let mesh = Mesh::bind(config).await?;
    let result = async {
        let peer = mesh.connect(addr).await?;
        ping_rounds(&mesh, peer, count, every).await
    }
    .await;
    mesh.close().await;
    result
}

/// Where a short-lived client reaching `addr` binds: any port, on the local address that
/// routes to it when the client must be reachable (`reachable`: publishers dial a
/// subscriber), else on the unspecified address of its family.
fn client_addr(addr: SocketAddr, reachable: bool) -> SocketAddr {
    let any = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    if !reachable {
        return any;
    }
    // Connecting a UDP socket sends nothing; it only picks the route.
    std::net::UdpSocket::bind(any)
        .and_then(|s| s.connect(addr).and_then(|()| s.local_addr()))
        .map(|local| SocketAddr::new(local.ip(), 0))
        .unwrap_or(any)
}

/// A short-lived client's core configuration: its pins die with it, so it does not publish
/// them in the DHT.
fn client_config(realm: &RealmArgs) -> Result<Config> {
    let mut config = realm.config()?;
    config.publish_pins = false;
    Ok(config)
}

/// A short-lived client that joined the mesh through `bootstraps`; `reachable` makes it
/// advertise its address (a subscriber must be dialed by publishers).
async fn client(
    bootstraps: &[cli::join::Bootstrap],
    realm: &RealmArgs,
    reachable: bool,
) -> Result<Mesh> {
    let first = bootstraps
        .first()
        .context("give a node of the mesh to join through with --bootstrap HOST:PORT")?
        .resolve()
        .await?;
    let mut core = client_config(realm)?;
    // One others must reach (a subscriber, a server) learns what NAT it is behind, so that
    // those it can't be dialed through find it by its id.
    core.nat.detect = reachable;
    let mut config = MeshConfig::new(core, client_addr(first, reachable));
    config.identity = realm.identity()?;
    config.tls = realm.tls.mode()?;
    config.advertise = reachable;
    let mesh = Mesh::bind(config).await?;
    let mut joined = 0;
    for addr in bootstraps {
        match addr.join(&mesh).await {
            Ok(_) => joined += 1,
            Err(err) => tracing::warn!(%addr, "bootstrap failed: {err:#}"),
        }
    }
    if joined == 0 {
        mesh.close().await;
        bail!("could not join the mesh through any --bootstrap address");
    }
    Ok(mesh)
}

async fn dht(
    command: cli::dht::DhtCommand,
    bootstraps: Vec<cli::join::Bootstrap>,
    realm: &RealmArgs,
) -> Result<()> {
    let mesh = client(&bootstraps, realm, false).await?;
    let result = cli::dht::run(&mesh, command).await;
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
    println!("\nEvery node sees {} peers.", nodes.len() - 1);
    let (key, value) = ("demo/greeting", "hello from node 0");
    let acks = nodes[0].dht().put(key.as_bytes(), value.into()).await?;
    println!("\nDHT: node 0 put '{key}' = '{value}' (stored at {acks} nodes)");
    for (i, n) in nodes.iter().enumerate().skip(1) {
        let records = n.dht().get(key.as_bytes()).await?;
        let Some(record) = records.iter().find(|r| r.publisher == nodes[0].node_id()) else {
            bail!("node {i} could not get '{key}' from the DHT");
        };
        println!(
            "DHT: node {i} got '{key}' = '{}' from node 0",
            String::from_utf8_lossy(&record.value)
        );
    }
    // Pub/sub: a wildcard subscriber on node 2 hears both other nodes.
    let pattern = "demo.*.greeting";
    let mut sub = nodes[2].pubsub().subscribe(pattern).await?;
    println!("\nPub/sub: node 2 subscribes to '{pattern}'");
    for (i, n) in nodes.iter().enumerate().take(2) {
        let topic = format!("demo.node{i}.greeting");
        let report = n
            .pubsub()
            .publish(&topic, format!("hello from node {i}"), Qos::AtLeastOnce)
            .await?;
        println!(
            "Pub/sub: node {i} published on '{topic}' (acknowledged by {} of {} subscribers)",
            report.acked.len(),
            report.subscribers
        );
    }
    for _ in 0..2 {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), sub.recv())
            .await
            .context("the subscriber heard nothing for 10 s")?
            .context("node 2 stopped")?;
        let from = nodes.iter().position(|n| n.node_id() == m.publisher);
        println!(
            "Pub/sub: node 2 got '{}' on '{}' from node {}",
            String::from_utf8_lossy(&m.payload),
            m.topic,
            from.map_or("?".into(), |i| i.to_string())
        );
    }
    rpc_failover(&nodes, &realm).await?;
    println!("\nClosing.");
    for n in &nodes {
        n.close().await;
    }
    Ok(())
}

/// RPC in the demo: nodes 1 and 2 serve an echo procedure, node 0 calls it; then the
/// provider that answered vanishes without a goodbye and node 0's next call fails over.
async fn rpc_failover(nodes: &[Mesh], realm: &Realm) -> Result<()> {
    use macula_proto::rpc::{CallOptions, Strategy};
    let procedure = "demo.echo";
    // A fourth node, so one provider can vanish and the demo's three stay.
    let spare = Mesh::bind(MeshConfig::new(
        Config::new(realm.clone()),
        "127.0.0.1:0".parse()?,
    ))
    .await?;
    spare.connect(nodes[0].local_addr()).await?;
    let providers = [&nodes[1], &spare];
    for p in providers {
        let mut service = p.rpc().serve(procedure).await?;
        tokio::spawn(async move {
            while let Some(call) = service.recv().await {
                let payload = call.payload().to_vec();
                let _ = call.reply(payload).await;
            }
        });
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let name = |id: macula_proto::NodeId| {
        if id == nodes[1].node_id() {
            "node 1".to_string()
        } else {
            format!("node 3 ({})", id.short())
        }
    };
    println!("\nRPC: node 1 and a fourth node serve '{procedure}'; node 0 calls it");
    // `First` picks the provider with the lowest id while it answers: the one to vanish.
    let first = CallOptions::default().with_strategy(Strategy::First);
    let replied = nodes[0]
        .rpc()
        .call(procedure, "ping 1", first.clone())
        .await?;
    println!(
        "RPC: node 0 got '{}' from {} in {} attempt(s)",
        String::from_utf8_lossy(&replied.payload),
        name(replied.from),
        replied.attempts
    );
    let (gone, other) = if replied.from == spare.node_id() {
        (&spare, &nodes[1])
    } else {
        (&nodes[1], &spare)
    };
    println!("RPC: {} vanishes without a goodbye", name(gone.node_id()));
    // Stopping its node abruptly, as a crash would (the demo's node 1 is then left out of
    // the closing below; its peers time its link out).
    gone.kill().await;
    let started = std::time::Instant::now();
    let replied = nodes[0].rpc().call(procedure, "ping 2", first).await?;
    if replied.from != other.node_id() {
        bail!("the call was not answered by the remaining provider");
    }
    println!(
        "RPC: node 0 got '{}' from {} after failing over ({} attempts, {} ms)",
        String::from_utf8_lossy(&replied.payload),
        name(replied.from),
        replied.attempts,
        started.elapsed().as_millis()
    );
    if !std::ptr::eq(gone, &spare) {
        spare.close().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
