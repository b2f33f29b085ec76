//! Two nodes on loopback complete the handshake, exchange pings and report RTTs.

use macula_mesh::Runtime;
use macula_proto::{Direction, Event};
use macula_tests::{config, node, on_both_runtimes};

on_both_runtimes!(
    two_nodes_handshake_and_measure_round_trips,
    a_dial_expecting_another_node_is_refused_locally,
    a_dual_stack_node_dials_an_ipv4_node,
);

async fn two_nodes_handshake_and_measure_round_trips<R: Runtime>() -> anyhow::Result<()> {
    let a = node::<R>(config("io.test", None)).await?;
    let b = node::<R>(config("io.test", None)).await?;
    let mut b_events = b.events();
    let peer = a.connect(b.local_addr()).await?;
    assert_eq!(peer, b.node_id());
    match b_events.recv().await {
        Some(Event::PeerUp {
            peer, direction, ..
        }) => {
            assert_eq!(peer, a.node_id());
            assert_eq!(direction, Direction::Inbound);
        }
        other => panic!("expected PeerUp at b, got {other:?}"),
    }
    for _ in 0..20 {
        let rtt = a.ping(b.node_id()).await?;
        assert!(rtt.as_micros() > 0, "a real round trip takes time");
    }
    let rtt_b = b.ping(a.node_id()).await?;
    assert!(rtt_b.as_micros() > 0);

    let peers = a.peers().await?;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].id, b.node_id());
    assert!(peers[0].rtt.is_some());
    assert_eq!(peers[0].listen_addrs.first(), Some(&b.local_addr()));
    let stats = a.stats().await?;
    assert_eq!(stats.node.handshakes_completed, 1);
    assert!(stats.node.pongs_received >= 20);
    a.close().await;
    b.close().await;
    Ok(())
}

async fn a_dial_expecting_another_node_is_refused_locally<R: Runtime>() -> anyhow::Result<()> {
    let a = node::<R>(config("io.test", None)).await?;
    let b = node::<R>(config("io.test", None)).await?;
    let c = node::<R>(config("io.test", None)).await?;
    let err = a
        .connect_to(b.local_addr(), Some(c.node_id()))
        .await
        .expect_err("b is not c");
    assert!(err.to_string().contains("expected node"), "{err}");
    assert!(a.peers().await?.is_empty());
    Ok(())
}

async fn a_dual_stack_node_dials_an_ipv4_node<R: Runtime>() -> anyhow::Result<()> {
    let v4 = node::<R>(config("io.test", None)).await?;
    let dual = match macula_mesh::Mesh::<R>::bind(macula_mesh::MeshConfig::new(
        config("io.test", None),
        "[::]:0".parse()?,
    ))
    .await
    {
        Ok(mesh) => mesh,
        Err(err) => {
            eprintln!("no IPv6 here ({err}); skipping");
            return Ok(());
        }
    };
    assert_eq!(dual.connect(v4.local_addr()).await?, v4.node_id());
    assert!(dual.ping(v4.node_id()).await?.as_micros() > 0);
    Ok(())
}
