//! `macula cert dev`: a development CA and node certificates, for trying production TLS out.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use macula_mesh::store::{self, StoreError};
use macula_proto::quic::tls::{self, DevCa};

#[derive(Subcommand)]
pub enum CertCommand {
    /// Make a development CA in DIR (`ca.pem`, and `ca.key.pem`, reused when present) and for
    /// each --name a node key (`NAME.key.pem`, an identity) and a certificate for that host
    /// signed by the CA (`NAME.pem`). Prints `ca=<file>`, then `name=<host> cert=<file>
    /// key=<file> node_id=<hex>` per name. Existing files are never overwritten.
    Dev {
        /// The directory to write to (made if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A host name (or IP address) a node's certificate is for; repeat for several.
        #[arg(long = "name", value_name = "HOST")]
        names: Vec<String>,
    },
}

pub fn run(command: CertCommand) -> Result<()> {
    let CertCommand::Dev { out, names } = command;
    std::fs::create_dir_all(&out).with_context(|| format!("making {}", out.display()))?;
    let ca_cert = out.join("ca.pem");
    let ca_key = out.join("ca.key.pem");
    let ca = if ca_key.exists() {
        let pem = std::fs::read_to_string(&ca_key)
            .with_context(|| format!("reading {}", ca_key.display()))?;
        DevCa::from_key_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", ca_key.display()))?
    } else {
        let ca = DevCa::generate()?;
        store::write_new(&ca_key, &ca.key_pem(), 0o600)?;
        store::write_new(&ca_cert, &ca.cert_pem(), 0o644)?;
        ca
    };
    println!("ca={}", ca_cert.display());
    for name in names {
        let file = |suffix: &str| out.join(format!("{name}{suffix}"));
        let (cert_file, key_file) = (file(".pem"), file(".key.pem"));
        for path in [&cert_file, &key_file] {
            if path.exists() {
                return Err(StoreError::Exists(path.clone()).into());
            }
        }
        let identity = store::new_identity()?;
        let (_, cert_pem) = ca
            .issue(&identity, &name)
            .map_err(|e| anyhow::anyhow!("a certificate for {name:?}: {e}"))?;
        store::write_new(&key_file, &tls::identity_to_pem(&identity)?, 0o600)?;
        store::write_new(&cert_file, &cert_pem, 0o644)?;
        println!(
            "name={name} cert={} key={} node_id={}",
            shown(&cert_file),
            shown(&key_file),
            identity.node_id()
        );
    }
    Ok(())
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}
