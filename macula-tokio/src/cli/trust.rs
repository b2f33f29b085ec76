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
