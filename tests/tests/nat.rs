//! NAT detection over real sockets on both runtimes: the auxiliary socket, raw datagrams beside
//! QUIC on the main one, and the observers' answers. Loopback has no NAT, so a node there sees
//! the profile of the public side; the NAT kinds themselves are checked in the simulator and
//! behind real Linux NAT in network namespaces.

use macula_mesh::{Mesh, MeshConfig, MeshError, Runtime};
use macula_proto::nat::{Allocation, Behavior, DetectError};
use macula_tests::{config, on_both_runtimes};

on_both_runtimes!(
    a_node_without_nat_detects_the_public_profile,
    detection_without_a_second_observer_fails_with_the_reason,
    a_relayed_link_carries_pings_through_a_gateway,
    a_node_bound_on_every_interface_never_advertises_the_unspecified_address,
);

/// A node at `ip` that neither joins the DHT nor publishes its pins there: when it detects, it
/// has sent nothing to the observer's peers, so one of them can test its filtering (a node that
/// has reads endpoint-independent filtering as address-dependent: see docs/nat.md).
async fn at<R: Runtime>(ip: &str) -> anyhow::Result<Mesh<R>> {
    let addr = format!("{ip}:0").parse()?;
    let mut c = config("io.nat", None);
    c.dht.join = false;
    c.publish_pins = false;
    Ok(Mesh::<R>::bind(MeshConfig::new(c, addr)).await?)
}

async fn a_node_without_nat_detects_the_public_profile<R: Runtime>() -> anyhow::Result<()> {
    let first = at::<R>("127.0.0.1").await?;
    let second = at::<R>("127.0.0.2").await?;
    let node = at::<R>("127.0.0.3").await?;
    second.connect(first.local_addr()).await?;
    node.connect(first.local_addr()).await?;
    // Several callers wait for one detection.
    let (a, b) = futures_lite::future::zip(node.nat().detect(), node.nat().detect()).await;
    let (p, q) = (a?, b?);
    assert_eq!(p, q);
    assert_eq!(
        (p.mapping, p.filtering, p.allocation, p.hairpin),
        (
            Behavior::EndpointIndependent,
            Behavior::EndpointIndependent,
            Allocation::Preserving,
            true
        ),
        "{p}"
    );
    assert_eq!(p.public, node.local_addr());
    assert_eq!(node.nat_profile().await?, Some(p));
    assert!(first.nat().stats().await?.probes_answered >= 2);
    // Seen where it listens, the node has no NAT: it skips the filtering test, so no helper
    // was asked (behind a NAT, the simulator's and the netns tests show the helpers at work).
    assert_eq!(
        second.nat().stats().await?.helped + first.nat().stats().await?.helped,
        0
    );
    Ok(())
}

async fn detection_without_a_second_observer_fails_with_the_reason<R: Runtime>(
) -> anyhow::Result<()> {
    let first = at::<R>("127.0.0.1").await?;
    let node = at::<R>("127.0.0.4").await?;
    node.connect(first.local_addr()).await?;
    match node.nat().detect().await {
        Err(MeshError::Nat(DetectError::NoSecondObserver)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(node.nat_profile().await?, None);
    Ok(())
}

/// Loopback has no NAT, so with no profile detected the link stays relayed: a gateway, a node
/// holding a reservation there, and a third node reaching it through a circuit.
async fn a_relayed_link_carries_pings_through_a_gateway<R: Runtime>() -> anyhow::Result<()> {
    let mut c = config("io.nat", None);
    c.nat.gateway = true;
    c.roles = macula_proto::Roles::GATEWAY;
    let gateway = Mesh::<R>::bind(MeshConfig::new(c, "127.0.0.1:0".parse()?)).await?;
    let target = at::<R>("127.0.0.5").await?;
    let opener = at::<R>("127.0.0.6").await?;
    let g = target.connect(gateway.local_addr()).await?;
    target.nat().reserve(g, None).await?;
    for _ in 0..100 {
        if target.nat().relay_stats().await?.reserved_at == 1 {
            break;
        }
        macula_tests::sleep::<R>(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(target.nat().relay_stats().await?.reserved_at, 1);
    let reached = opener
        .nat()
        .connect_relayed(target.node_id(), g, Some(gateway.local_addr()))
        .await?;
    assert_eq!(reached, target.node_id());
    let peers = opener.peers().await?;
    let link = peers
        .iter()
        .find(|p| p.id == target.node_id())
        .expect("linked");
    assert_eq!(link.path, macula_proto::nat::PathKind::Relayed);
    for _ in 0..3 {
        opener.ping(target.node_id()).await?;
    }
    let relay = gateway.nat().relay_stats().await?;
    assert_eq!(relay.circuits, 1);
    assert!(relay.packets_relayed >= 6, "{relay:?}");
    // A node that holds no reservation can't be reached that way.
    let err = target
        .nat()
        .connect_relayed(opener.node_id(), g, None)
        .await
        .expect_err("no reservation");
    assert!(matches!(err, MeshError::Connect { .. }), "{err}");
    Ok(())
}

async fn a_node_bound_on_every_interface_never_advertises_the_unspecified_address<R: Runtime>(
) -> anyhow::Result<()> {
    let any = at::<R>("0.0.0.0").await?;
    let port = any.local_addr().port();
    let other = at::<R>("127.0.0.1").await?;
    let id = other.connect(format!("127.0.0.1:{port}").parse()?).await?;
    let peer = other
        .peers()
        .await?
        .into_iter()
        .find(|p| p.id == id)
        .expect("linked");
    assert!(!peer.listen_addrs.is_empty());
    for addr in &peer.listen_addrs {
        assert!(!addr.ip().is_unspecified(), "{:?}", peer.listen_addrs);
        assert_eq!(addr.port(), port);
    }
    Ok(())
}
