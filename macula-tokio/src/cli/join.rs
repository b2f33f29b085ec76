//! `--bootstrap HOST:PORT`: a node to join through, by address or DNS name.

use std::net::SocketAddr;
use std::str::FromStr;

use anyhow::{Context, Result};
use macula_proto::NodeId;
use macula_tokio::Mesh;

/// A bootstrap node as the user gave it: `192.0.2.10:4433`, `[2001:db8::1]:4433` or
/// `seed.example.org:4433`. Its key is pinned under this text (trust on first use).
#[derive(Clone, Debug)]
pub struct Bootstrap(String);

impl FromStr for Bootstrap {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not HOST:PORT"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("{text:?} is not HOST:PORT"));
        }
        Ok(Bootstrap(text.to_owned()))
    }
}

impl std::fmt::Display for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Bootstrap {
    /// The first address the name resolves to (an address resolves to itself).
    pub async fn resolve(&self) -> Result<SocketAddr> {
        self.resolve_for(None).await
    }

    /// The first address a socket bound at `local` can dial: an IPv4 socket only IPv4
    /// addresses, an IPv6 one any (IPv4 through mapped addresses).
    async fn resolve_for(&self, local: Option<SocketAddr>) -> Result<SocketAddr> {
        let v4_only = local.is_some_and(|l| l.is_ipv4());
        tokio::net::lookup_host(&self.0)
            .await
            .with_context(|| format!("resolving {}", self.0))?
            .find(|a| !v4_only || a.is_ipv4())
            .with_context(|| format!("{} resolves to no address this node can reach", self.0))
    }

    /// Joins `mesh` through this node; its key is checked against, or pinned at, the name.
    pub async fn join(&self, mesh: &Mesh) -> Result<NodeId> {
        let addr = self.resolve_for(Some(mesh.local_addr())).await?;
        Ok(mesh.connect_name(&self.0, addr).await?)
    }
}
