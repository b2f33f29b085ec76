//! `close()` is graceful: peers see a clean goodbye, not a timeout.

use macula_mesh::Runtime;
use macula_tests::{config, expect_goodbye, node, on_both_runtimes};

on_both_runtimes!(peers_see_a_clean_goodbye);

async fn peers_see_a_clean_goodbye<R: Runtime>() -> anyhow::Result<()> {
    let a = node::<R>(config("io.c", None)).await?;
    let b = node::<R>(config("io.c", None)).await?;
    let c = node::<R>(config("io.c", None)).await?;
    a.connect(b.local_addr()).await?;
    c.connect(b.local_addr()).await?;
    let mut a_events = a.events();
    let mut c_events = c.events();
    b.close().await;
    expect_goodbye::<R>(&mut a_events, b.node_id()).await;
    expect_goodbye::<R>(&mut c_events, b.node_id()).await;
    // a and c may know each other now (their DHTs met through b); b is gone from both.
    assert!(a.peers().await?.iter().all(|p| p.id != b.node_id()));
    assert!(c.peers().await?.iter().all(|p| p.id != b.node_id()));
    assert!(
        b.peers().await.is_err(),
        "a closed mesh answers no more requests"
    );
    Ok(())
}
