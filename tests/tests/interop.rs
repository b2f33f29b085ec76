//! A tokio node and a smol node handshake, ping and close cleanly, in both directions.

use macula_mesh::{Mesh, Runtime};
use macula_tests::{config, expect_goodbye, node, Smol, Tokio};

async fn dial_ping_close<D: Runtime, L: Runtime>(
    dialer: Mesh<D>,
    listener: Mesh<L>,
) -> anyhow::Result<()> {
    assert_eq!(
        dialer.connect(listener.local_addr()).await?,
        listener.node_id()
    );
    assert!(dialer.ping(listener.node_id()).await?.as_micros() > 0);
    assert!(listener.ping(dialer.node_id()).await?.as_micros() > 0);
    let mut events = dialer.events();
    let gone = listener.node_id();
    listener.close().await;
    expect_goodbye::<D>(&mut events, gone).await;
    dialer.close().await;
    Ok(())
}

#[test]
fn tokio_dials_smol() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = node::<Smol>(config("io.mix", None)).await?;
        let dialer = node::<Tokio>(config("io.mix", None)).await?;
        dial_ping_close(dialer, listener).await
    })
}

#[test]
fn smol_dials_tokio() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The tokio node's task runs on `rt`; the test body runs on smol.
    let listener = rt.block_on(node::<Tokio>(config("io.mix", None)))?;
    smol::block_on(async {
        let dialer = node::<Smol>(config("io.mix", None)).await?;
        dial_ping_close(dialer, listener).await
    })
}
