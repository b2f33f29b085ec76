//! With `max_peers = 50`, 60 concurrent dialers: exactly 50 are accepted, the rest get `capacity`.

use macula_proto::{ConnectFailure, RefuseReason};
use macula_tests::{config, node};
use macula_tokio::MeshError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_dialers_fifty_slots() -> anyhow::Result<()> {
    let mut listener_config = config("io.cap", None);
    listener_config.max_peers = 50;
    let listener = node(listener_config).await?;
    let target = listener.local_addr();
    let mut dialers = Vec::new();
    for _ in 0..60 {
        dialers.push(node(config("io.cap", None)).await?);
    }
    let attempts = dialers.iter().map(|d| {
        let d = d.clone();
        tokio::spawn(async move { d.connect(target).await })
    });
    let results = futures_join(attempts.collect()).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let capacity = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(MeshError::Connect {
                    failure: ConnectFailure::Refused {
                        reason: RefuseReason::Capacity,
                        ..
                    },
                    ..
                })
            )
        })
        .count();
    assert_eq!(
        (accepted, capacity),
        (50, 10),
        "{:?}",
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    let stats = listener.stats().await?;
    assert_eq!(stats.node.peers, 50);
    assert_eq!(stats.node.refused_by_us.capacity, 10);
    Ok(())
}

async fn futures_join(
    handles: Vec<tokio::task::JoinHandle<Result<macula_proto::NodeId, MeshError>>>,
) -> Vec<Result<macula_proto::NodeId, MeshError>> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("connect tasks do not panic"));
    }
    out
}
