//! The DHT end to end: five nodes on loopback join through one; a value put on one node is got
//! on every other; a provider is found and withdrawn; a lookup finds every node.

use macula_mesh::{MeshError, Runtime};
use macula_proto::dht::{DhtError, KeyKind};
use macula_tests::{config, node, on_both_runtimes};

on_both_runtimes!(five_nodes_put_get_provide_withdraw);

async fn five_nodes_put_get_provide_withdraw<R: Runtime>() -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(node::<R>(config("io.dht", None)).await?);
    }
    // Everyone joins through node 0 only; the DHT dials the rest on demand.
    let seed = nodes[0].local_addr();
    for n in &nodes[1..] {
        n.connect(seed).await?;
    }

    let acks = nodes[2].dht().put(b"color", b"blue".to_vec()).await?;
    assert_eq!(acks, 4, "stored at every other node");
    for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != 2) {
        let records = n.dht().get(b"color").await?;
        assert_eq!(records.len(), 1, "node {i}: {records:?}");
        assert_eq!(records[0].publisher, nodes[2].node_id(), "node {i}");
        assert_eq!(records[0].value, b"blue", "node {i}");
        assert_eq!(records[0].addrs, vec![nodes[2].local_addr()], "node {i}");
    }
    // A name nobody put is found empty, not failed.
    assert!(nodes[1].dht().get(b"colour").await?.is_empty());

    nodes[3]
        .dht()
        .provide(b"printer", b"floor 2".to_vec())
        .await?;
    let providers = nodes[4].dht().find_providers(b"printer").await?;
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0].publisher, nodes[3].node_id());
    assert_eq!(providers[0].value, b"floor 2");
    // Values and providers live under different keys.
    assert!(nodes[4].dht().get(b"printer").await?.is_empty());
    nodes[3]
        .dht()
        .withdraw(KeyKind::Provider, b"printer")
        .await?;
    assert!(nodes[1].dht().find_providers(b"printer").await?.is_empty());

    // A lookup from a node that joined through node 0 finds all four others.
    let found = nodes[4].dht().find_node(nodes[1].node_id()).await?;
    let mut ids: Vec<_> = found.iter().map(|(id, _)| *id).collect();
    ids.sort();
    let mut want: Vec<_> = nodes[..4].iter().map(|n| n.node_id()).collect();
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(
        found[0].0,
        nodes[1].node_id(),
        "the target itself is closest"
    );

    // Too large a value is refused at once, with the reason.
    let err = nodes[1].dht().put(b"big", vec![0; 5000]).await.unwrap_err();
    assert!(
        matches!(err, MeshError::Dht(DhtError::ValueTooLarge)),
        "{err}"
    );
    let stats = nodes[2].stats().await?;
    assert!(stats.dht.lookups >= 1 && stats.dht.success_ratio() == 1.0);
    for n in &nodes {
        n.close().await;
    }
    Ok(())
}
