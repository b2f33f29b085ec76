//! `macula bench pubsub` and `macula bench rpc`: the ends in separate processes (this binary
//! started again as hidden workers), each an application on the public `Mesh` API, over
//! loopback.
//!
//! Pub/sub: every payload starts with its sequence number and the publisher's wall-clock send
//! time (16 bytes), so subscribers count loss from sequence gaps and measure latency on the
//! shared clock. RPC: the caller times each call itself, from the call to its reply.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use macula_mesh::Runtime;
use macula_proto::pubsub::Qos;
use macula_proto::rpc::CallOptions;
use macula_proto::{Config, Realm};
use macula_tokio::{Mesh, MeshConfig};

use super::latencies::Latencies;

const REALM: &str = "bench.macula.local";
const DATA: &str = "bench.data";
const READY: &str = "bench.ready";
const PROCEDURE: &str = "bench.echo";
/// Messages handed to the node per trip to its task.
const BATCH: usize = 1024;
/// A subscriber that heard nothing for this long after its first message stops counting.
const QUIET: Duration = Duration::from_secs(10);

/// The async runtime a benchmark's workers run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeChoice {
    /// tokio, multi-threaded (`macula-tokio`).
    Tokio,
    /// smol (`macula-smol`).
    Smol,
}

impl RuntimeChoice {
    fn name(self) -> &'static str {
        match self {
            RuntimeChoice::Tokio => "tokio",
            RuntimeChoice::Smol => "smol",
        }
    }
}

/// `macula bench ...`.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// One publisher to `--subs` subscribers, each in its own process: delivered messages/s,
    /// payload MB/s, loss (from sequence gaps), latency p50/p99, and each process's peak RSS
    /// and CPU time.
    Pubsub {
        /// Subscriber processes.
        #[arg(long, default_value_t = 1)]
        subs: usize,
        /// Payload bytes per message (at least 16: sequence number and send time).
        #[arg(long, default_value_t = 16)]
        size: usize,
        /// Messages to publish.
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// 0 or 1.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
        /// The async runtime of the publisher and subscriber processes.
        #[arg(long, value_enum, default_value_t = RuntimeChoice::Tokio)]
        runtime: RuntimeChoice,
        /// Print one JSON line (field names as `../shared/peers` uses them).
        #[arg(long)]
        json: bool,
    },
    /// A caller and an echo provider, each in its own process: calls/s and round trips
    /// p50/p99 with `--outstanding` calls in flight, and each process's peak RSS and CPU time.
    Rpc {
        /// Argument (and reply) bytes per call.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Calls in flight at once.
        #[arg(long, default_value_t = 1)]
        outstanding: usize,
        /// Calls to make.
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// The async runtime of the caller and provider processes.
        #[arg(long, value_enum, default_value_t = RuntimeChoice::Tokio)]
        runtime: RuntimeChoice,
        /// Print one JSON line (field names as `../shared/peers` uses them).
        #[arg(long)]
        json: bool,
    },
}

/// The workers `macula bench` starts (hidden from `--help`).
#[derive(clap::Subcommand)]
pub enum WorkerCommand {
    /// Subscribe to the benchmark's topic; print `ready`, then one JSON line of figures.
    Sub {
        #[arg(long)]
        bootstrap: SocketAddr,
        #[arg(long)]
        count: u64,
    },
    /// Publish `count` messages once `subs` subscribers are found; print one JSON line.
    Pub {
        #[arg(long)]
        bootstrap: SocketAddr,
        #[arg(long)]
        subs: usize,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        qos: u8,
    },
    /// Serve the benchmark's procedure as an echo; print `ready`, then (told `done` on
    /// stdin) one JSON line.
    Serve {
        #[arg(long)]
        bootstrap: SocketAddr,
    },
    /// Make `count` calls, `outstanding` at once; print one JSON line.
    Call {
        #[arg(long)]
        bootstrap: SocketAddr,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        outstanding: usize,
        #[arg(long)]
        count: u64,
    },
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// CPU time this process has used (user and system, all threads), in milliseconds. Linux
/// counts it in ticks of 1/100 s (`USER_HZ`).
fn cpu_ms() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // The fields after the command name, which is in parentheses and may hold spaces.
            let rest = &s[s.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split(' ').collect();
            let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
            Some((ticks(11)? + ticks(12)?) * 10)
        })
        .unwrap_or(0)
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

async fn member<R: Runtime>(bootstrap: SocketAddr) -> Result<macula_mesh::Mesh<R>> {
    let config = MeshConfig::new(
        Config::new(Realm::new(REALM).expect("valid")),
        "127.0.0.1:0".parse()?,
    );
    let mesh = macula_mesh::Mesh::<R>::bind(config).await?;
    mesh.connect(bootstrap).await?;
    Ok(mesh)
}

/// Waits `d` on runtime `R`.
async fn sleep<R: Runtime>(d: Duration) {
    R::sleep_until(R::now() + d).await;
}

/// Runs a worker on the runtime it was told (blocking this thread until it is done).
pub fn run_worker(runtime: RuntimeChoice, command: WorkerCommand) -> Result<()> {
    match runtime {
        RuntimeChoice::Tokio => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(spawned::<macula_tokio::Tokio>(command)),
        // smol's executor has one thread unless told otherwise, and the node's driver runs
        // on it: the application's work runs on the main thread, as `smol::block_on` has it.
        RuntimeChoice::Smol => smol::block_on(worker::<macula_smol::Smol>(command)),
    }
}

/// Runs a worker as a task of the runtime, as an application's work runs on tokio (the peers'
/// benchmarks spawn theirs too), rather than on the thread that waits for it: the driver's
/// wake-up then runs the reader on its own thread, where the message is still in the cache.
async fn spawned<R: Runtime>(command: WorkerCommand) -> Result<()> {
    let (done, result) = async_channel::bounded(1);
    R::spawn(async move {
        let _ = done.send(worker::<R>(command).await).await;
    });
    result.recv().await.context("the worker task ended")?
}

/// Runs a worker.
async fn worker<R: Runtime>(command: WorkerCommand) -> Result<()> {
    match command {
        WorkerCommand::Sub { bootstrap, count } => {
            let mesh = member::<R>(bootstrap).await?;
            // The default inbox (1,024 messages), as an application gets it: a larger one only
            // holds more memory while the reader falls behind.
            let mut sub = mesh.pubsub().subscribe(DATA).await?;
            let _ready = mesh.pubsub().subscribe(READY).await?;
            println!("ready");
            // One bit per sequence number and a histogram: the bookkeeping stays small, so the
            // memory reported is the node's.
            let mut seen = vec![0u64; (count as usize).div_ceil(64)];
            let (mut received, mut first, mut last) = (0u64, 0u64, 0u64);
            let mut latencies = Latencies::new();
            while received < count {
                let wait = if received == 0 {
                    Duration::from_secs(120)
                } else {
                    QUIET
                };
                // Wait for one message, then take what else is there without waiting.
                let quiet = async {
                    sleep::<R>(wait).await;
                    None
                };
                let Some(first_one) = futures_lite::future::or(sub.recv(), quiet).await else {
                    break;
                };
                let mut next = Some(first_one);
                let mut taken = 0u32;
                let mut now = 0;
                while let Some(m) = next {
                    // The clock is read once per 64 messages taken without waiting (reading
                    // it per message was 4% of the subscriber's time).
                    if taken % 64 == 0 {
                        now = micros_now();
                    }
                    taken += 1;
                    let seq = u64::from_le_bytes(m.payload[..8].try_into()?);
                    let sent = u64::from_le_bytes(m.payload[8..16].try_into()?);
                    if let Some(word) = seen.get_mut((seq / 64) as usize) {
                        let bit = 1 << (seq % 64);
                        if seq < count && *word & bit == 0 {
                            *word |= bit;
                            received += 1;
                        }
                    }
                    if first == 0 {
                        first = now;
                    }
                    last = now;
                    latencies.record(now.saturating_sub(sent));
                    next = if received < count {
                        sub.try_recv()
                    } else {
                        None
                    };
                }
            }
            println!(
                "{{\"received\":{received},\"lost\":{},\"first_us\":{first},\"last_us\":{last},\"p50_us\":{},\"p99_us\":{},\"peak_rss_bytes\":{},\"cpu_ms\":{}}}",
                count - received,
                latencies.percentile(0.5),
                latencies.percentile(0.99),
                peak_rss_bytes(),
                cpu_ms()
            );
            mesh.close().await;
        }
        WorkerCommand::Pub {
            bootstrap,
            subs,
            size,
            count,
            qos,
        } => {
            let mesh = member::<R>(bootstrap).await?;
            let qos = if qos == 1 {
                Qos::AtLeastOnce
            } else {
                Qos::AtMostOnce
            };
            // Until every subscriber is found (their announcements take a moment).
            loop {
                let report = mesh
                    .pubsub()
                    .publish(READY, vec![0u8; 16], Qos::AtMostOnce)
                    .await?;
                if report.subscribers >= subs {
                    break;
                }
                sleep::<R>(Duration::from_millis(100)).await;
            }
            // The data topic's own discovery, before the clock starts.
            mesh.pubsub().publish_batch(DATA, Vec::new(), qos).await?;
            let start = micros_now();
            let mut seq = 0u64;
            while seq < count {
                let n = (count - seq).min(BATCH as u64);
                // One send time for the batch: the moment it is made, before it goes to the
                // node (the clock read per message cost the publisher 8% of its time).
                let sent = micros_now().to_le_bytes();
                let batch: Vec<Vec<u8>> = (seq..seq + n)
                    .map(|s| {
                        let mut p = vec![0u8; size];
                        p[..8].copy_from_slice(&s.to_le_bytes());
                        p[8..16].copy_from_slice(&sent);
                        p
                    })
                    .collect();
                mesh.pubsub().publish_batch(DATA, batch, qos).await?;
                seq += n;
            }
            let published = micros_now();
            println!(
                "{{\"start_us\":{start},\"published_us\":{published},\"peak_rss_bytes\":{},\"cpu_ms\":{}}}",
                peak_rss_bytes(),
                cpu_ms()
            );
            // Stay until the subscribers are done (the benchmark says so on stdin): a closing
            // connection drops what the peer has not read yet.
            until_done().await;
            mesh.close().await;
        }
        WorkerCommand::Serve { bootstrap } => {
            let mesh = member::<R>(bootstrap).await?;
            let mut service = mesh.rpc().serve(PROCEDURE).await?;
            super::rpc::wait_until_findable(&mesh, PROCEDURE).await?;
            println!("ready");
            R::spawn(async move {
                while let Some(call) = service.recv().await {
                    // Answered on a task of its own, so the calls in flight are answered
                    // side by side.
                    R::spawn(async move {
                        let payload = call.payload().to_vec();
                        let _ = call.reply(payload).await;
                    });
                }
            });
            until_done().await;
            println!(
                "{{\"peak_rss_bytes\":{},\"cpu_ms\":{}}}",
                peak_rss_bytes(),
                cpu_ms()
            );
            mesh.close().await;
        }
        WorkerCommand::Call {
            bootstrap,
            size,
            outstanding,
            count,
        } => {
            let mesh = member::<R>(bootstrap).await?;
            // Discovery and the link to the provider, before the clock starts.
            let options = CallOptions::default();
            mesh.rpc()
                .call(PROCEDURE, vec![0u8; size], options.clone())
                .await?;
            let start = std::time::Instant::now();
            let (done, results) = async_channel::bounded(outstanding);
            for k in 0..outstanding as u64 {
                let (mesh, options, done) = (mesh.clone(), options.clone(), done.clone());
                // Calls k, k + outstanding, k + 2 × outstanding, ...
                let calls = count / outstanding as u64 + u64::from(k < count % outstanding as u64);
                R::spawn(async move {
                    let mut rtts = Latencies::new();
                    for _ in 0..calls {
                        let sent = std::time::Instant::now();
                        if let Err(err) = mesh
                            .rpc()
                            .call(PROCEDURE, vec![0u8; size], options.clone())
                            .await
                        {
                            let _ = done.send(Err(err)).await;
                            return;
                        }
                        rtts.record(sent.elapsed().as_micros() as u64);
                    }
                    let _ = done.send(Ok(rtts)).await;
                });
            }
            let mut rtts = Latencies::new();
            for _ in 0..outstanding {
                rtts.merge(&results.recv().await??);
            }
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            println!(
                "{{\"calls\":{},\"req_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\"peak_rss_bytes\":{},\"cpu_ms\":{}}}",
                rtts.len(),
                rtts.len() as f64 / secs,
                rtts.percentile(0.5),
                rtts.percentile(0.99),
                peak_rss_bytes(),
                cpu_ms()
            );
            mesh.close().await;
        }
    }
    Ok(())
}

/// Waits until the benchmark says `done` on stdin (or closes it).
async fn until_done() {
    let (said, done) = async_channel::bounded(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = said.try_send(());
    });
    let _ = done.recv().await;
}

/// A worker process and its stdout.
struct Worker {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Worker {
    fn start(runtime: RuntimeChoice, args: &[String]) -> Result<Worker> {
        let exe = std::env::current_exe().context("finding this binary")?;
        let mut child = Command::new(exe)
            .args(["bench-worker", "--runtime", runtime.name()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a worker process")?;
        let stdout = child.stdout.take().expect("piped");
        Ok(Worker {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    fn line(&mut self) -> Result<String> {
        match self.lines.next() {
            Some(line) => Ok(line?),
            None => bail!("a worker exited early"),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A number field of a worker's JSON line.
fn field(line: &str, name: &str) -> Result<u64> {
    let key = format!("\"{name}\":");
    let at = line
        .find(&key)
        .with_context(|| format!("no {name} in {line}"))?;
    let rest = &line[at + key.len()..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Ok(rest[..end].trim().parse()?)
}

/// Runs a benchmark, printing its figures on stdout.
pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Pubsub {
            subs,
            size,
            count,
            qos,
            runtime,
            json,
        } => pubsub(subs, size, count, qos, runtime, json).await,
        BenchCommand::Rpc {
            size,
            outstanding,
            count,
            runtime,
            json,
        } => rpc(size, outstanding, count, runtime, json).await,
    }
}

/// A bootstrap node for the workers, in this process.
async fn bootstrap() -> Result<Mesh> {
    Ok(Mesh::bind(MeshConfig::new(
        Config::new(Realm::new(REALM).expect("valid")),
        "127.0.0.1:0".parse()?,
    ))
    .await?)
}

async fn rpc(
    size: usize,
    outstanding: usize,
    count: u64,
    runtime: RuntimeChoice,
    json: bool,
) -> Result<()> {
    if outstanding == 0 || count < outstanding as u64 {
        bail!("--outstanding must be at least 1 and --count at least --outstanding");
    }
    let boot = bootstrap().await?;
    let at = boot.local_addr().to_string();
    let mut server = Worker::start(runtime, &["serve".into(), "--bootstrap".into(), at.clone()])?;
    let line = tokio::task::block_in_place(|| server.line())?;
    if line != "ready" {
        bail!("the provider said {line:?}");
    }
    let args: Vec<String> = vec![
        "call".into(),
        "--bootstrap".into(),
        at,
        "--size".into(),
        size.to_string(),
        "--outstanding".into(),
        outstanding.to_string(),
        "--count".into(),
        count.to_string(),
    ];
    let mut caller = Worker::start(runtime, &args)?;
    let call_line = tokio::task::block_in_place(|| caller.line())?;
    if let Some(stdin) = server.child.stdin.as_mut() {
        use std::io::Write;
        let _ = writeln!(stdin, "done");
    }
    let serve_line = tokio::task::block_in_place(|| server.line())?;
    boot.close().await;
    let rate = field(&call_line, "req_per_s")?;
    let (p50, p99) = (field(&call_line, "p50_us")?, field(&call_line, "p99_us")?);
    let rss = [
        field(&call_line, "peak_rss_bytes")?,
        field(&serve_line, "peak_rss_bytes")?,
    ];
    let cpu = [field(&call_line, "cpu_ms")?, field(&serve_line, "cpu_ms")?];
    let peak = rss[0].max(rss[1]);
    if json {
        println!(
            "{{\"bench\":\"macula_rpc\",\"runtime\":\"{}\",\"size\":{size},\"outstanding\":{outstanding},\"count\":{count},\"req_per_s\":{rate},\"rtt\":{{\"p50_us\":{p50},\"p99_us\":{p99}}},\"peak_rss_bytes\":{peak},\"peak_rss_bytes_per_process\":[{},{}],\"cpu_ms_per_process\":[{},{}]}}",
            runtime.name(),
            rss[0],
            rss[1],
            cpu[0],
            cpu[1]
        );
    } else {
        println!("req_per_s={rate} rtt_p50_us={p50} rtt_p99_us={p99}");
        println!("peak_rss_bytes caller={} provider={}", rss[0], rss[1]);
        println!("cpu_ms caller={} provider={}", cpu[0], cpu[1]);
    }
    Ok(())
}

async fn pubsub(
    subs: usize,
    size: usize,
    count: u64,
    qos: u8,
    runtime: RuntimeChoice,
    json: bool,
) -> Result<()> {
    if size < 16 {
        bail!("--size must be at least 16 bytes (sequence number and send time)");
    }
    if subs == 0 || count == 0 {
        bail!("--subs and --count must be at least 1");
    }
    let boot = bootstrap().await?;
    let at = boot.local_addr().to_string();
    let common = |kind: &str| vec![kind.to_string(), "--bootstrap".into(), at.clone()];
    let mut subscribers = Vec::new();
    for _ in 0..subs {
        let mut args = common("sub");
        args.extend(["--count".into(), count.to_string()]);
        let mut w = Worker::start(runtime, &args)?;
        let line = tokio::task::block_in_place(|| w.line())?;
        if line != "ready" {
            bail!("a subscriber said {line:?}");
        }
        subscribers.push(w);
    }
    let mut args = common("pub");
    for (k, v) in [
        ("--subs", subs.to_string()),
        ("--size", size.to_string()),
        ("--count", count.to_string()),
        ("--qos", qos.to_string()),
    ] {
        args.extend([k.into(), v]);
    }
    let mut publisher = Worker::start(runtime, &args)?;
    let pub_line = tokio::task::block_in_place(|| publisher.line())?;
    let mut sub_lines = Vec::new();
    for w in &mut subscribers {
        sub_lines.push(tokio::task::block_in_place(|| w.line())?);
    }
    // The publisher may leave now.
    if let Some(stdin) = publisher.child.stdin.as_mut() {
        use std::io::Write;
        let _ = writeln!(stdin, "done");
    }
    let _ = tokio::task::block_in_place(|| publisher.child.wait());
    boot.close().await;
    let start = field(&pub_line, "start_us")?;
    let mut total = 0u64;
    let (mut lost, mut last, mut p50s, mut p99) = (0u64, 0u64, Vec::new(), 0u64);
    let mut rss = vec![field(&pub_line, "peak_rss_bytes")?];
    let mut cpu = vec![field(&pub_line, "cpu_ms")?];
    for line in &sub_lines {
        total += field(line, "received")?;
        lost += field(line, "lost")?;
        last = last.max(field(line, "last_us")?);
        p50s.push(field(line, "p50_us")?);
        p99 = p99.max(field(line, "p99_us")?);
        rss.push(field(line, "peak_rss_bytes")?);
        cpu.push(field(line, "cpu_ms")?);
    }
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    p50s.sort_unstable();
    let p50 = p50s[p50s.len() / 2];
    let secs = (last.saturating_sub(start)).max(1) as f64 / 1e6;
    let rate = total as f64 / secs;
    let mb = rate * size as f64 / 1e6;
    let peak = rss.iter().copied().max().unwrap_or(0);
    if json {
        println!(
            "{{\"bench\":\"macula_pubsub\",\"runtime\":\"{}\",\"subs\":{subs},\"size\":{size},\"count\":{count},\"qos\":{qos},\"delivered_total\":{total},\"delivered_msgs_per_s\":{rate:.0},\"delivered_payload_mb_per_s\":{mb:.2},\"lost\":{lost},\"rtt\":{{\"p50_us\":{p50},\"p99_us\":{p99}}},\"peak_rss_bytes\":{peak},\"peak_rss_bytes_per_process\":[{}],\"cpu_ms_per_process\":[{}]}}",
            runtime.name(),
            list(&rss),
            list(&cpu)
        );
    } else {
        println!("delivered_msgs_per_s={rate:.0} delivered_payload_mb_per_s={mb:.2} lost={lost} delivered_total={total}");
        println!("latency_p50_us={p50} latency_p99_us={p99}");
        println!(
            "peak_rss_bytes publisher={} subscribers={}",
            rss[0],
            list(&rss[1..])
        );
        println!(
            "cpu_ms publisher={} subscribers={}",
            cpu[0],
            list(&cpu[1..])
        );
    }
    Ok(())
}
