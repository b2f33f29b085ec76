//! `macula nat`: what the NAT in front of this host does.

use anyhow::{Context, Result};
use macula_tokio::{Mesh, MeshConfig};

use super::join::Bootstrap;
use super::settings::RealmArgs;

/// Joins the mesh through the first bootstrap only (no DHT join, not advertised, so the host
/// has sent to no other address when the filtering test runs), detects, and prints the
/// profile's one line.
pub async fn run(bootstraps: &[Bootstrap], realm: &RealmArgs) -> Result<()> {
    let bootstrap = bootstraps
        .first()
        .context("give a node of the mesh to observe this host with --bootstrap HOST:PORT")?;
    let first = bootstrap.resolve().await?;
    let mut config = crate::client_config(realm)?;
    config.dht.join = false;
    let mut mesh_config = MeshConfig::new(config, crate::client_addr(first, true));
    // Not advertised: no other node takes this short-lived client for a contact or an
    // observer, so it sends nothing to anyone but the bootstrap before its filtering test.
    mesh_config.advertise = false;
    mesh_config.identity = realm.identity()?;
    mesh_config.tls = realm.tls.mode()?;
    let mesh = Mesh::bind(mesh_config).await?;
    let result = detect(&mesh, bootstrap).await;
    mesh.close().await;
    println!("{}", result?);
    Ok(())
}

async fn detect(mesh: &Mesh, bootstrap: &Bootstrap) -> Result<macula_proto::nat::NatProfile> {
    bootstrap
        .join(mesh)
        .await
        .with_context(|| format!("joining through {bootstrap}"))?;
    Ok(mesh.nat().detect().await?)
}
