//! The plain-std example node (`macula-proto/examples/embedded.rs`: one thread, a blocking UDP
//! socket, no async runtime) joins a mesh of `Mesh` nodes, and every operation works both ways:
//! DHT put and get, publish and subscribe, call and serve.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use futures_lite::StreamExt;
use macula_mesh::{MeshError, Runtime, Service};
use macula_proto::pubsub::Qos;
use macula_proto::rpc::{CallError, CallOptions};
use macula_tests::{config, node, on_both_runtimes, sleep, timeout};

on_both_runtimes!(the_plain_std_example_works_with_a_mesh_both_ways);

/// How long a check may wait for something that must happen (a hang guard, not a measure).
const PATIENCE: Duration = Duration::from_secs(60);

const REALM: &str = "io.embedding";

/// Answers every call on `service` with its own payload, until the node stops.
fn echo<R: Runtime>(mut service: Service) {
    R::spawn(async move {
        while let Some(call) = service.next().await {
            let payload = call.payload().to_vec();
            let _ = call.reply(payload).await;
        }
    });
}

/// Retries `attempt` every 200 ms until it gives `Some`, at most [`PATIENCE`].
async fn eventually<R: Runtime, T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let give_up = R::now() + PATIENCE;
    loop {
        if let Some(found) = attempt().await {
            return found;
        }
        assert!(R::now() < give_up, "{what} did not happen in time");
        sleep::<R>(Duration::from_millis(200)).await;
    }
}

async fn the_plain_std_example_works_with_a_mesh_both_ways<R: Runtime>() -> anyhow::Result<()> {
    // A bootstrap node and one that puts, serves and subscribes before the example comes.
    let boot = node::<R>(config(REALM, None)).await?;
    let mesh = node::<R>(config(REALM, None)).await?;
    mesh.connect(boot.local_addr()).await?;
    mesh.dht()
        .put(b"mesh.greeting", b"hello from the mesh".to_vec())
        .await?;
    echo::<R>(mesh.rpc().serve("mesh.echo").await?);
    let mut news = mesh.pubsub().subscribe("embedded.news").await?;

    let example = Command::new(env!("CARGO_BIN_EXE_embedded"))
        .args([&boot.local_addr().to_string(), REALM, "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let output = std::thread::spawn(move || example.wait_with_output());

    // The example's publish reaches the mesh's subscription.
    let message = timeout::<R, _>(PATIENCE, news.next())
        .await
        .expect("the example's message");
    assert_eq!(message.expect("the node runs").payload, b"news");
    // The mesh finds the example's record, calls its procedure and reaches its subscription.
    let record = eventually::<R, _, _>("a get of the example's record", || async {
        let records = mesh.dht().get(b"embedded.greeting").await.ok()?;
        records.into_iter().next()
    })
    .await;
    assert_eq!(record.value, b"hello from std");
    let reply = eventually::<R, _, _>("a call of the example's procedure", || async {
        match mesh
            .rpc()
            .call("embedded.echo", "hi", CallOptions::default())
            .await
        {
            Err(MeshError::Call(CallError::NoResponders)) => None,
            other => Some(other),
        }
    })
    .await?;
    assert_eq!(reply.payload, b"hi");
    eventually::<R, _, _>("a QoS 1 message the example acknowledges", || async {
        let report = mesh
            .pubsub()
            .publish("mesh.news", "extra", Qos::AtLeastOnce)
            .await;
        report.ok().filter(|r| !r.acked.is_empty())
    })
    .await;

    // The example saw the mesh's record, reply and message, and left cleanly.
    eventually::<R, _, _>("the example's exit", || {
        let done = output.is_finished();
        async move { done.then_some(()) }
    })
    .await;
    let output: Output = output.join().expect("the waiting thread")?;
    let stdout = String::from_utf8(output.stdout)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let short = mesh.node_id().short().to_string();
    for line in [
        "joined peer=".to_string(),
        "put key=embedded.greeting acks=".into(),
        "get key=mesh.greeting values=hello from the mesh".into(),
        format!("call procedure=mesh.echo from={short} payload=ping"),
        "publish topic=embedded.news acked=1".into(),
        "served procedure=embedded.echo payload=hi".into(),
        "message topic=mesh.news payload=extra".into(),
        "closed served=1 received=1".into(),
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&line)),
            "no {line:?} in:\n{stdout}"
        );
    }
    // It said goodbye: the bootstrap node no longer counts it as a peer.
    eventually::<R, _, _>("the example's goodbye", || async {
        (boot.peers().await.ok()?.len() == 1).then_some(())
    })
    .await;
    Ok(())
}

/// The example is documentation that compiles: it stays short enough to read in one sitting.
#[test]
fn the_example_stays_under_200_lines_of_code() {
    let source = include_str!("../../macula-proto/examples/embedded.rs");
    let code = source
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count();
    assert!(code < 200, "the example has {code} lines of code");
}

/// The example runs on `std` alone: the crate it lives in, whose dependencies it builds with,
/// names no async runtime among them (`.ci/run` also checks the whole tree with `cargo tree`).
#[test]
fn the_example_builds_without_an_async_runtime() {
    let manifest = include_str!("../../macula-proto/Cargo.toml");
    let deps = manifest
        .split("\n[")
        .filter(|section| {
            section.starts_with("dependencies]") || section.starts_with("dev-dependencies]")
        })
        .flat_map(str::lines)
        .filter_map(|l| l.split(['=', '.', ' ']).next())
        .collect::<Vec<_>>();
    assert!(
        deps.contains(&"quinn-proto"),
        "the sections were read: {deps:?}"
    );
    for runtime in [
        "tokio",
        "smol",
        "async-std",
        "async-io",
        "futures",
        "futures-lite",
        "mio",
    ] {
        assert!(
            !deps.contains(&runtime),
            "macula-proto depends on {runtime}"
        );
    }
}
