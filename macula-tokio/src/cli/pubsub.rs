//! `macula pub` and `macula sub`: publish to and subscribe on a running mesh, as a
//! short-lived client that joined it.

use std::time::Duration;

use anyhow::{bail, Result};
use macula_proto::pubsub::{Qos, SubscribeOptions};
use macula_tokio::Mesh;

/// What `macula pub` does.
#[derive(clap::Args)]
pub struct PubArgs {
    /// The topic (dot-separated segments, no wildcards).
    pub topic: String,
    /// The message (with `--count`, each gets `-<n>` appended, counting from 1).
    pub message: String,
    /// 0: at most once; 1: at least once, acknowledged by every subscriber.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// How many messages to publish.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Messages per second (default: as fast as the subscribers take them).
    #[arg(long, value_name = "PER_SEC")]
    pub rate: Option<f64>,
}

/// What `macula sub` does.
#[derive(clap::Args)]
pub struct SubArgs {
    /// The pattern: `*` matches one segment, `**` any number (quote it for the shell).
    pub pattern: String,
    /// Exit after this many messages (default: run until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
    /// Join queue group NAME: each message goes to one member of the group.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
}

/// Publishes as asked, one `message=<n> subscribers=<nodes>` line per message (with
/// ` acked=<nodes> missed=<nodes>` at QoS 1). At QoS 1, fails naming the subscribers that did
/// not acknowledge every message.
pub async fn publish(mesh: &Mesh, args: PubArgs) -> Result<()> {
    let qos = if args.qos == 1 {
        Qos::AtLeastOnce
    } else {
        Qos::AtMostOnce
    };
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("--rate must be a positive number of messages per second");
        }
    }
    let interval = args.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let start = tokio::time::Instant::now();
    let mut missed = std::collections::BTreeSet::new();
    for n in 1..=args.count {
        if let Some(interval) = interval {
            tokio::time::sleep_until(start + interval * (n - 1) as u32).await;
        }
        let text = if args.count > 1 {
            format!("{}-{n}", args.message)
        } else {
            args.message.clone()
        };
        let report = mesh.pubsub().publish(&args.topic, text, qos).await?;
        match qos {
            Qos::AtMostOnce => println!("message={n} subscribers={}", report.subscribers),
            _ => println!(
                "message={n} subscribers={} acked={} missed={}",
                report.subscribers,
                report.acked.len(),
                report.missed.len()
            ),
        }
        missed.extend(report.missed);
    }
    if !missed.is_empty() {
        let names: Vec<String> = missed.iter().map(ToString::to_string).collect();
        bail!(
            "not every message was acknowledged; missing acknowledgements from: {}",
            names.join(", ")
        );
    }
    Ok(())
}

/// Subscribes and prints `topic=<topic> from=<8 hex> seq=<n> payload=<text>` per message.
pub async fn subscribe(mesh: &Mesh, args: SubArgs) -> Result<()> {
    let options = match args.group {
        Some(group) => SubscribeOptions::group(group),
        None => SubscribeOptions::default(),
    };
    let mut sub = mesh.pubsub().subscribe_with(&args.pattern, options).await?;
    let mut seen = 0;
    while args.count.map_or(true, |n| seen < n) {
        let message = tokio::select! {
            m = sub.recv() => m,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(m) = message else {
            bail!("the node stopped");
        };
        println!(
            "topic={} from={} seq={} payload={}",
            m.topic,
            m.publisher.short(),
            m.seq,
            String::from_utf8_lossy(&m.payload)
        );
        seen += 1;
    }
    Ok(())
}
