//! `macula keys`: identity files, and the data directory a node keeps by default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use macula_mesh::store::{self, DataDir};
use macula_proto::Identity;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Write a new Ed25519 identity to FILE (mode 0600; an existing file is never
    /// overwritten); prints `node_id=<hex> fingerprint=sha256:<hex>`.
    Generate {
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the identity in FILE as `node_id=<hex> fingerprint=sha256:<hex>`.
    Show {
        /// An identity file (from `macula keys generate`).
        file: PathBuf,
    },
}

pub fn run(command: KeysCommand) -> Result<()> {
    let identity = match command {
        KeysCommand::Generate { out } => store::generate_identity(&out)?,
        KeysCommand::Show { file } => store::load_identity(&file)?,
    };
    println!(
        "node_id={} fingerprint={}",
        identity.node_id(),
        identity.fingerprint()
    );
    Ok(())
}

/// Where a node listening at `listen` keeps its data unless told (`--data-dir`): one
/// directory per listen address under `$XDG_STATE_HOME/macula` (or `~/.local/state/macula`),
/// so nodes on one host never share one. `None` for an ephemeral port (nothing to key it by).
pub fn default_data_dir(listen: SocketAddr) -> Result<Option<PathBuf>> {
    if listen.port() == 0 {
        return Ok(None);
    }
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(state) => PathBuf::from(state),
        None => PathBuf::from(std::env::var_os("HOME").context(
            "no HOME or XDG_STATE_HOME to keep the node's identity under; give --data-dir",
        )?)
        .join(".local/state"),
    };
    let name: String = listen
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(Some(base.join("macula").join(format!("node-{name}"))))
}

/// A node's data directory (locked while it runs) and its identity: `given` if any, else the
/// directory's own. Without a directory (an ephemeral port and no `--data-dir`) the identity
/// is a throwaway one unless given.
pub fn node_identity(
    data_dir: Option<&Path>,
    given: Option<Identity>,
) -> Result<(Option<DataDir>, Option<Identity>)> {
    let dir = data_dir.map(DataDir::open).transpose()?;
    let identity = match (given, &dir) {
        (Some(identity), _) => Some(identity),
        (None, Some(dir)) => Some(dir.identity()?),
        (None, None) => None,
    };
    Ok((dir, identity))
}
