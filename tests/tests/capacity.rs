//! With `max_peers = 50`, 60 concurrent dialers: exactly 50 are accepted, the rest get `capacity`.

use macula_mesh::{MeshError, Runtime};
use macula_proto::{ConnectFailure, RefuseReason};
use macula_tests::{config, join_all, node, on_both_runtimes};

on_both_runtimes!(sixty_dialers_fifty_slots);

async fn sixty_dialers_fifty_slots<R: Runtime>() -> anyhow::Result<()> {
    let mut listener_config = config("io.cap", None);
    listener_config.max_peers = 50;
    let listener = node::<R>(listener_config).await?;
    let target = listener.local_addr();
    let mut dialers = Vec::new();
    for _ in 0..60 {
        dialers.push(node::<R>(config("io.cap", None)).await?);
    }
    let attempts = dialers
        .iter()
        .map(|d| {
            let d = d.clone();
            async move { d.connect(target).await }
        })
        .collect();
    let results = join_all::<R, _>(attempts).await;
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
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(ToString::to_string)
        .collect();
    assert_eq!((accepted, capacity), (50, 10), "{errors:?}");
    let stats = listener.stats().await?;
    assert_eq!(stats.node.peers, 50);
    assert_eq!(stats.node.refused_by_us.capacity, 10);
    Ok(())
}
