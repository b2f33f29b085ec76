//! `macula dht ...`: the DHT's subcommands, run by a short-lived client that joined the mesh.

use anyhow::{bail, Result};
use clap::Subcommand;
use macula_tokio::Mesh;

#[derive(Subcommand)]
pub enum DhtCommand {
    /// Store VALUE under KEY at the nodes closest to it; prints `stored_at=<nodes>`. The record
    /// lives for the record TTL (300 s by default): this client does not stay to republish it.
    Put {
        /// The key (a name in the realm).
        key: String,
        /// The value (at most 4096 bytes).
        value: String,
    },
    /// Print the values stored under KEY, one `publisher=<id> value=<value>` line each; exits 1
    /// if there are none.
    Get {
        /// The key.
        key: String,
    },
    /// Join, fill the routing table, and print its contacts: `id=<id> addr=<addr>` lines.
    Peers,
}

/// Runs one DHT subcommand on `mesh`, printing its results on stdout.
pub async fn run(mesh: &Mesh, command: DhtCommand) -> Result<()> {
    match command {
        DhtCommand::Put { key, value } => {
            let acks = mesh.dht().put(key.as_bytes(), value.into_bytes()).await?;
            println!("stored_at={acks}");
        }
        DhtCommand::Get { key } => {
            let records = mesh.dht().get(key.as_bytes()).await?;
            if records.is_empty() {
                bail!("no value is stored under '{key}'");
            }
            for r in records {
                println!(
                    "publisher={} value={}",
                    r.publisher,
                    String::from_utf8_lossy(&r.value)
                );
            }
        }
        DhtCommand::Peers => {
            // A lookup of our own id fills the table the way joining does.
            let own = mesh.node_id();
            mesh.dht().find_node(own).await?;
            for c in mesh.dht().contacts().await? {
                println!("id={} addr={}", c.id, c.addr);
            }
        }
    }
    Ok(())
}
