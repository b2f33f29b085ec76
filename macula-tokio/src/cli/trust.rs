//! `macula trust`: the keys a node pinned at the names it was told to dial.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use macula_mesh::store::{self, DataDir};
use macula_proto::Fingerprint;

#[derive(Subcommand)]
pub enum TrustCommand {
    /// Print each pin as `name=<name> fingerprint=sha256:<hex>`.
    List {
        #[command(flatten)]
        dir: DirArgs,
    },
    /// Remove the pin at NAME (the node must be stopped); the next key found there is pinned.
    /// Prints `revoked name=<name> fingerprint=sha256:<hex>`.
    Revoke {
        /// The name, as `trust list` prints it (such as `192.0.2.10:4433`).
        name: String,
        #[command(flatten)]
        dir: DirArgs,
    },
    /// Ask the realm which keys its members pinned at NAME (each node publishes its pins in
    /// the DHT, signed): prints `publisher=<node id> fingerprint=sha256:<hex>` per member that
    /// did, and exits non-zero unless they all name one key.
    Check {
        /// The name, as `trust list` prints it (such as `192.0.2.10:4433`).
        name: String,
        /// A node of the mesh to join through (required), as HOST:PORT; repeat for several.
        #[arg(long = "bootstrap", value_name = "HOST:PORT")]
        bootstraps: Vec<super::join::Bootstrap>,
        #[command(flatten)]
        realm: super::settings::RealmArgs,
    },
}

/// Prints what the realm's members published about `name`; fails unless they agree.
pub async fn check(mesh: &macula_tokio::Mesh, name: &str) -> Result<()> {
    let records = mesh
        .dht()
        .find_providers(&macula_proto::trust::dht_name(name))
        .await?;
    let mut keys = std::collections::BTreeSet::new();
    for record in &records {
        let Some(key) = macula_proto::trust::published_key(&record.value) else {
            continue;
        };
        keys.insert(key);
        println!(
            "publisher={} fingerprint={}",
            record.publisher,
            Fingerprint(key)
        );
    }
    match keys.len() {
        0 => bail!("no member of the realm has published a pin at {name}"),
        1 => Ok(()),
        n => bail!("members of the realm pinned {n} different keys at {name}"),
    }
}

/// Whose pins: a data directory, or the default one of a listen address.
#[derive(Args)]
pub struct DirArgs {
    /// The node's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The listen address of a node that uses the default data directory.
    #[arg(long, value_name = "ADDR", conflicts_with = "data_dir")]
    listen: Option<SocketAddr>,
}

impl DirArgs {
    fn path(&self) -> Result<PathBuf> {
        match (&self.data_dir, self.listen) {
            (Some(dir), _) => Ok(dir.clone()),
            (None, Some(listen)) => super::keys::default_data_dir(listen)?
                .context("a node on port 0 keeps no data directory"),
            (None, None) => bail!("say whose pins with --data-dir DIR or --listen ADDR"),
        }
    }
}

pub fn run(command: TrustCommand) -> Result<()> {
    match command {
        TrustCommand::Check { .. } => bail!("trust check runs as a client of the mesh"),
        TrustCommand::List { dir } => {
            for (name, id) in store::load_pins(&dir.path()?.join(store::PINS_FILE))? {
                println!("name={name} fingerprint={}", Fingerprint(id));
            }
        }
        TrustCommand::Revoke { name, dir } => {
            // Held while the file changes: a running node would write its own copy over it.
            let dir = DataDir::open(&dir.path()?)?;
            let path = dir.pins_path();
            let kept = store::load_pins(&path)?;
            let Some(&(_, revoked)) = kept.iter().find(|(n, _)| *n == name) else {
                bail!(
                    "no pin named {name} in {} (`macula trust list` shows the names)",
                    path.display()
                );
            };
            let rest = kept.iter().filter(|(n, _)| *n != name);
            store::save_pins(&path, rest.map(|(n, id)| (n.as_str(), *id)))?;
            println!("revoked name={name} fingerprint={}", Fingerprint(revoked));
        }
    }
    Ok(())
}
