//! RPC end to end, over real QUIC on loopback, on both runtimes: three providers and a
//! caller; the provider holding a call is killed (no goodbye) and the call still succeeds
//! through another within its deadline; a cancelled call's handler hears it; an application
//! error, `NoResponders` and a dropped request come back as typed errors.

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::StreamExt;
use macula_mesh::{Incoming, Mesh, MeshError, Runtime, Service};
use macula_proto::rpc::{CallError, CallOptions, Ended, Strategy};
use macula_tests::{config, node, on_both_runtimes, sleep, timeout};

on_both_runtimes!(
    a_call_survives_the_death_of_the_provider_running_it,
    cancellation_reaches_the_handler_and_errors_are_typed,
);

/// How long a check may wait for something that must happen (a hang guard, not a measure).
const PATIENCE: Duration = Duration::from_secs(60);

const REALM: &str = "io.rpc";

async fn joined<R: Runtime>(bootstrap: SocketAddr) -> anyhow::Result<Mesh<R>> {
    let mesh = node::<R>(config(REALM, None)).await?;
    mesh.connect(bootstrap).await?;
    Ok(mesh)
}

async fn next<R: Runtime>(service: &mut Service) -> Incoming {
    timeout::<R, _>(PATIENCE, service.next())
        .await
        .expect("a call in time")
        .expect("the node runs")
}

/// Answers every call on `service` with its own payload, until the node stops.
fn echo<R: Runtime>(mut service: Service) {
    R::spawn(async move {
        while let Some(call) = service.next().await {
            let payload = call.payload().to_vec();
            let _ = call.reply(payload).await;
        }
    });
}

async fn a_call_survives_the_death_of_the_provider_running_it<R: Runtime>() -> anyhow::Result<()> {
    let boot = node::<R>(config(REALM, None)).await?;
    let at = boot.local_addr();
    let mut providers = Vec::new();
    for _ in 0..3 {
        providers.push(joined::<R>(at).await?);
    }
    let caller = joined::<R>(at).await?;
    // `First` sends every call to the lowest node id while it works: that one is killed
    // holding a call; the other two echo.
    providers.sort_by_key(Mesh::node_id);
    let mut doomed = providers[0].rpc().serve("svc.echo").await?;
    for p in &providers[1..] {
        echo::<R>(p.rpc().serve("svc.echo").await?);
    }
    sleep::<R>(Duration::from_millis(500)).await;

    let first = CallOptions::default().with_strategy(Strategy::First);
    let rpc = caller.rpc();
    let call = rpc
        .start("svc.echo", b"job".to_vec(), first.clone())
        .await?;
    let held = next::<R>(&mut doomed).await;
    assert_eq!(
        (held.payload(), held.caller()),
        (&b"job"[..], caller.node_id())
    );
    providers[0].kill().await;
    std::mem::forget(held); // Killed with it: no answer, not even a refusal.
    let replied = timeout::<R, _>(PATIENCE, call.result())
        .await
        .expect("an outcome in time")?;
    assert_eq!(replied.payload, b"job");
    assert_eq!(replied.attempts, 2);
    assert_ne!(replied.from, providers[0].node_id());

    // Later calls leave the dead provider out and go straight to a live one.
    for k in 0..5 {
        let payload = format!("again {k}");
        let replied = rpc.call("svc.echo", payload.clone(), first.clone()).await?;
        assert_eq!(
            (replied.payload, replied.attempts),
            (payload.into_bytes(), 1)
        );
    }
    let stats = rpc.stats().await?;
    assert_eq!(stats.failovers, 1);
    Ok(())
}

async fn cancellation_reaches_the_handler_and_errors_are_typed<R: Runtime>() -> anyhow::Result<()> {
    let boot = node::<R>(config(REALM, None)).await?;
    let at = boot.local_addr();
    let provider = joined::<R>(at).await?;
    let caller = joined::<R>(at).await?;
    let mut slow = provider.rpc().serve("svc.slow").await?;
    let mut strict = provider.rpc().serve("svc.strict").await?;
    sleep::<R>(Duration::from_millis(500)).await;
    let rpc = caller.rpc();

    // Cancelled: the handler holding the call hears why it ended.
    let call = rpc
        .start("svc.slow", b"wait".to_vec(), CallOptions::default())
        .await?;
    let held = next::<R>(&mut slow).await;
    let watching = held.cancelled();
    call.cancel().await;
    let why = timeout::<R, _>(PATIENCE, watching)
        .await
        .expect("told in time");
    assert_eq!(why, Ended::Cancelled);
    assert!(matches!(
        held.reply(b"late".to_vec()).await,
        Err(MeshError::Reply(_))
    ));

    // An application error is the caller's error, as the handler wrote it.
    let failing = async {
        let call = next::<R>(&mut strict).await;
        call.fail("no such account").await
    };
    let (outcome, answered) = futures_lite::future::zip(
        rpc.call("svc.strict", b"x".to_vec(), CallOptions::default()),
        failing,
    )
    .await;
    answered?;
    assert!(
        matches!(outcome, Err(MeshError::Call(CallError::Remote(m))) if m == "no such account")
    );

    // A handler that drops a call gives it up: with nobody else to try, the caller hears so
    // at once rather than at its deadline.
    let dropping = async {
        drop(next::<R>(&mut strict).await);
    };
    let (outcome, ()) = futures_lite::future::zip(
        rpc.call("svc.strict", b"y".to_vec(), CallOptions::default()),
        dropping,
    )
    .await;
    assert!(
        matches!(outcome, Err(MeshError::Call(CallError::Remote(_)))),
        "{outcome:?}"
    );

    // Nobody serves it: `NoResponders`, without waiting for the deadline.
    let outcome = rpc
        .call("svc.nobody", b"?".to_vec(), CallOptions::default())
        .await;
    assert!(matches!(
        outcome,
        Err(MeshError::Call(CallError::NoResponders))
    ));
    Ok(())
}
