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
    assert!(second.nat().stats().await?.helped + first.nat().stats().await?.helped >= 1);
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
