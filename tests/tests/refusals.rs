//! A wrong realm and a wrong API key are refused with the matching reason, seen by both sides and
//! counted in `stats()`.

use macula_mesh::{Mesh, MeshConfig};
use macula_mesh::{MeshError, Runtime};
use macula_proto::{ConnectFailure, Event, RefuseReason};
use macula_tests::{config, join_all, node, on_both_runtimes};

on_both_runtimes!(
    wrong_realm_is_refused,
    wrong_api_key_is_refused,
    missing_api_key_is_refused,
    the_right_api_key_is_accepted,
    a_flood_of_bad_proofs_from_one_address_does_not_lock_out_a_member,
    a_keyed_dialer_refuses_a_listener_that_does_not_prove_the_key,
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

/// 1,000 handshakes with a wrong key from 127.0.0.1 (ten intruders, a hundred each): only the
/// configured number of proofs is looked at, every other attempt is refused `rate_limited`, the
/// listener's tables stay bounded, and a member dialing from 127.0.0.2 meanwhile is admitted.
async fn a_flood_of_bad_proofs_from_one_address_does_not_lock_out_a_member<R: Runtime>(
) -> anyhow::Result<()> {
    let mut listener = config("io.k", Some(KEY));
    // The window outlasts the test, so the count does not depend on how fast it runs.
    let hour = std::time::Duration::from_secs(3600).into();
    listener.auth_failure_limit = macula_proto::Limit::per(5, hour);
    let b = node::<R>(listener).await?;
    let target = b.local_addr();
    let mut intruders = Vec::new();
    for _ in 0..10 {
        intruders.push(node::<R>(config("io.k", Some(WRONG_KEY))).await?);
    }
    let attempts: Vec<_> = intruders
        .into_iter()
        .map(|a| async move {
            let mut reasons = Vec::new();
            for _ in 0..100 {
                match a.connect(target).await {
                    Err(MeshError::Connect {
                        failure: ConnectFailure::Refused { reason, .. },
                        ..
                    }) => reasons.push(reason),
                    other => panic!("an intruder must be refused, got {other:?}"),
                }
            }
            reasons
        })
        .collect();
    let (done, flood) = async_channel::bounded(1);
    R::spawn(async move {
        let _ = done.send(join_all::<R, _>(attempts).await).await;
    });
    // A member from another address, once the flood is being refused.
    while b.stats().await?.node.refused_by_us.rate_limited < 100 {
        macula_tests::sleep::<R>(std::time::Duration::from_millis(5)).await;
    }
    let member_config = MeshConfig::new(config("io.k", Some(KEY)), "127.0.0.2:0".parse()?);
    let member = Mesh::<R>::bind(member_config).await?;
    assert_eq!(member.connect(target).await?, b.node_id());
    let reasons: Vec<RefuseReason> = flood.recv().await?.into_iter().flatten().collect();
    assert_eq!(reasons.len(), 1000);
    let counted = |r| reasons.iter().filter(|x| **x == r).count();
    assert_eq!(counted(RefuseReason::BadCredentials), 5);
    assert_eq!(counted(RefuseReason::RateLimited), 995);
    let stats = b.stats().await?.node;
    assert_eq!(stats.refused_by_us.bad_credentials, 5);
    assert_eq!(stats.refused_by_us.rate_limited, 995);
    assert!(
        stats.rate_sources <= 2,
        "{} sources kept",
        stats.rate_sources
    );
    assert_eq!(b.peers().await?.len(), 1, "only the member is a peer");
    Ok(())
}

/// A node that knows only the realm's name (it runs the realm open, admitting anyone) is not
/// taken for a member by a node that holds the key: it cannot prove the key back.
async fn a_keyed_dialer_refuses_a_listener_that_does_not_prove_the_key<R: Runtime>(
) -> anyhow::Result<()> {
    let member = node::<R>(config("io.k", Some(KEY))).await?;
    let impostor = node::<R>(config("io.k", None)).await?;
    let err = member
        .connect(impostor.local_addr())
        .await
        .expect_err("an unproven listener");
    assert!(
        matches!(
            &err,
            MeshError::Connect {
                failure: ConnectFailure::ListenerUnproven,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("unproven listener"), "{err}");
    assert_eq!(member.stats().await?.node.listeners_unproven, 1);
    assert!(member.peers().await?.is_empty());
    Ok(())
}
