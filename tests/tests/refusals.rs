//! A wrong realm and a wrong API key are refused with the matching reason, seen by both sides and
//! counted in `stats()`.

use macula_mesh::{MeshError, Runtime};
use macula_proto::{ConnectFailure, Event, RefuseReason};
use macula_tests::{config, node, on_both_runtimes};

on_both_runtimes!(
    wrong_realm_is_refused,
    wrong_api_key_is_refused,
    missing_api_key_is_refused,
    the_right_api_key_is_accepted,
);

const KEY: &[u8] = b"the-right-realm-api-key";
const WRONG_KEY: &[u8] = b"not-the-right-api-key!!";

async fn refused<R: Runtime>(
    dialer: macula_proto::Config,
    listener: macula_proto::Config,
    reason: RefuseReason,
) -> anyhow::Result<()> {
    let a = node::<R>(dialer).await?;
    let b = node::<R>(listener).await?;
    let mut b_events = b.events();
    let err = a
        .connect(b.local_addr())
        .await
        .expect_err("the handshake must be refused");
    match &err {
        MeshError::Connect {
            failure: ConnectFailure::Refused { reason: r, .. },
            ..
        } => assert_eq!(*r, reason, "{err}"),
        other => panic!("expected a refusal for {reason}, got {other}"),
    }
    assert!(
        err.to_string().contains(reason.as_str()),
        "the message names the cause: {err}"
    );
    match b_events.recv().await {
        Some(Event::InboundRefused {
            reason: r, peer, ..
        }) => {
            assert_eq!(r, reason);
            assert_eq!(peer, a.node_id());
        }
        other => panic!("expected InboundRefused at the listener, got {other:?}"),
    }
    assert_eq!(a.stats().await?.node.refused_by_peer.get(reason), 1);
    assert_eq!(b.stats().await?.node.refused_by_us.get(reason), 1);
    assert!(a.peers().await?.is_empty() && b.peers().await?.is_empty());
    Ok(())
}

async fn wrong_realm_is_refused<R: Runtime>() -> anyhow::Result<()> {
    refused::<R>(
        config("io.one", None),
        config("io.two", None),
        RefuseReason::WrongRealm,
    )
    .await
}

async fn wrong_api_key_is_refused<R: Runtime>() -> anyhow::Result<()> {
    refused::<R>(
        config("io.k", Some(WRONG_KEY)),
        config("io.k", Some(KEY)),
        RefuseReason::BadCredentials,
    )
    .await
}

async fn missing_api_key_is_refused<R: Runtime>() -> anyhow::Result<()> {
    refused::<R>(
        config("io.k", None),
        config("io.k", Some(KEY)),
        RefuseReason::BadCredentials,
    )
    .await
}

async fn the_right_api_key_is_accepted<R: Runtime>() -> anyhow::Result<()> {
    let a = node::<R>(config("io.k", Some(KEY))).await?;
    let b = node::<R>(config("io.k", Some(KEY))).await?;
    assert_eq!(a.connect(b.local_addr()).await?, b.node_id());
    Ok(())
}
