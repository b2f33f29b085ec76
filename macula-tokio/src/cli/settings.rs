//! `macula node`'s settings: a TOML file (`--config FILE`), `MACULA_*` environment variables
//! and flags, each overriding the one before; `macula config show` prints what a node would
//! run with and where each value came from.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;
use macula_proto::quic::tls::{self, CertificateDer, ProductionTls, TlsMode};
use macula_proto::{ApiKey, Config, Identity, Realm};
use serde::Deserialize;

use super::join::Bootstrap;

/// The realm and the keys: shared by the node and the client commands.
#[derive(clap::Args, Debug)]
pub struct RealmArgs {
    /// The realm to join (reverse-DNS name, e.g. io.example.dev).
    #[arg(
        long,
        default_value = DEFAULT_REALM,
        global = true,
        env = "MACULA_REALM"
    )]
    pub realm: String,
    /// A file holding the realm's API key (at least 16 bytes; a trailing newline is ignored).
    #[arg(long, value_name = "FILE", global = true, env = "MACULA_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// While rotating the realm's key: a file holding the old key, still accepted from peers
    /// (this node proves the one in --api-key-file).
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        env = "MACULA_PREVIOUS_API_KEY_FILE"
    )]
    pub previous_api_key_file: Option<PathBuf>,
    /// The identity to present, from `macula keys generate`. Default: a node keeps one in its
    /// data directory; the other commands use a throwaway identity.
    #[arg(long, value_name = "FILE", global = true, env = "MACULA_IDENTITY")]
    pub identity: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The TLS mode and its files.
#[derive(clap::Args, Debug, Clone)]
pub struct TlsArgs {
    /// `development`: nodes present self-signed certificates of their identity keys. `production`:
    /// a node dialed at a name or address the user gave (a seed) must present a certificate
    /// signed by a CA in --tls-ca-cert-file, for that host name.
    #[arg(
        long,
        value_enum,
        default_value_t = TlsModeArg::Development,
        global = true,
        env = "MACULA_TLS_MODE"
    )]
    pub tls_mode: TlsModeArg,
    /// Production mode: the CA certificates (PEM) that sign seeds' certificates.
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        env = "MACULA_TLS_CACERTFILE"
    )]
    pub tls_ca_cert_file: Option<PathBuf>,
    /// Production mode: this node's CA-signed certificate chain (PEM, leaf first), whose key is
    /// the one in --tls-key-file.
    #[arg(long, value_name = "FILE", global = true, env = "MACULA_TLS_CERTFILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Production mode: the certificate's Ed25519 private key (PEM, PKCS#8; mode 0600), which
    /// becomes the node's identity.
    #[arg(long, value_name = "FILE", global = true, env = "MACULA_TLS_KEYFILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Production mode: whether a seed's certificate must be valid for the host name dialed.
    #[arg(
        long,
        value_name = "BOOL",
        global = true,
        env = "MACULA_TLS_VERIFY_HOSTNAME",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub tls_verify_hostname: bool,
}

/// `--tls-mode`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsModeArg {
    /// Self-signed identity certificates.
    Development,
    /// CA-signed certificates for seeds.
    Production,
}

impl TlsModeArg {
    fn as_str(self) -> &'static str {
        match self {
            TlsModeArg::Development => "development",
            TlsModeArg::Production => "production",
        }
    }
}

impl TlsArgs {
    /// The TLS mode, with its files read.
    pub fn mode(&self) -> Result<TlsMode> {
        let production_only = [
            ("--tls-ca-cert-file", self.tls_ca_cert_file.is_some()),
            ("--tls-cert-file", self.tls_cert_file.is_some()),
            ("--tls-key-file", self.tls_key_file.is_some()),
        ];
        if self.tls_mode == TlsModeArg::Development {
            if let Some((flag, _)) = production_only.iter().find(|(_, given)| *given) {
                anyhow::bail!("{flag} is for production mode: add --tls-mode production");
            }
            return Ok(TlsMode::Development);
        }
        let ca = self
            .tls_ca_cert_file
            .as_deref()
            .context("production TLS needs the CA certificates (--tls-ca-cert-file)")?;
        let mut tls = ProductionTls::new(read_certificates(ca)?);
        tls.verify_hostname = self.tls_verify_hostname;
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(_)) => tls.chain = read_certificates(cert)?,
            (None, None) => {}
            _ => anyhow::bail!("--tls-cert-file and --tls-key-file go together"),
        }
        Ok(TlsMode::Production(tls))
    }

    /// The identity in --tls-key-file, if given.
    pub fn key_identity(&self) -> Result<Option<Identity>> {
        Ok(self
            .tls_key_file
            .as_deref()
            .map(macula_mesh::store::load_identity)
            .transpose()?)
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    tls::certificates_from_pem(&pem).map_err(|e| anyhow!("{}: {e}", path.display()))
}

const DEFAULT_REALM: &str = "dev.macula.local";
const DEFAULT_LISTEN: &str = "127.0.0.1:4433";

impl RealmArgs {
    /// A core configuration for this realm and its keys.
    pub fn config(&self) -> Result<Config> {
        realm_config(
            &self.realm,
            self.api_key_file.as_deref(),
            self.previous_api_key_file.as_deref(),
        )
    }

    /// The identity given with `--identity` or, in production TLS mode, `--tls-key-file`
    /// (both: they must be the same key), if any.
    pub fn identity(&self) -> Result<Option<Identity>> {
        let given = self
            .identity
            .as_deref()
            .map(macula_mesh::store::load_identity)
            .transpose()?;
        match (given, self.tls.key_identity()?) {
            (Some(a), Some(b)) if a.node_id() != b.node_id() => anyhow::bail!(
                "--identity and --tls-key-file hold different keys: the certificate's key is the \
                 node's identity, give one of them"
            ),
            (a, b) => Ok(b.or(a)),
        }
    }
}

fn realm_config(realm: &str, key: Option<&Path>, previous: Option<&Path>) -> Result<Config> {
    let realm = Realm::new(realm).map_err(|e| anyhow!("the realm (--realm) {realm:?}: {e}"))?;
    let mut config = Config::new(realm);
    config.api_key = key.map(read_api_key).transpose()?;
    config.previous_api_key = previous.map(read_api_key).transpose()?;
    if config.previous_api_key.is_some() && config.api_key.is_none() {
        anyhow::bail!("a previous API key is given without the current one (api_key_file)");
    }
    Ok(config)
}

/// The API key in `path` (a trailing newline is ignored).
pub fn read_api_key(path: &Path) -> Result<ApiKey> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the API key file {}", path.display()))?;
    ApiKey::new(bytes.trim_ascii_end()).map_err(|e| anyhow!("API key in {}: {e}", path.display()))
}

/// `macula node`'s flags (each also an environment variable and a key of the file).
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// A TOML file of settings: the keys are the long flags' names with `_` for `-`
    /// (`listen`, `realm`, `bootstrap = ["HOST:PORT", ...]`, ...) and a `[limits]` table.
    /// Environment variables (`MACULA_LISTEN`, ...) override it; flags override both.
    #[arg(long, value_name = "FILE", env = "MACULA_CONFIG")]
    pub config: Option<PathBuf>,
    /// UDP address to listen on [default: 127.0.0.1:4433].
    #[arg(long, env = "MACULA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where the node keeps its identity (made on first start) and pins, locked while it
    /// runs. Default: one directory per listen address under `$XDG_STATE_HOME/macula` (or
    /// `~/.local/state/macula`); none for port 0, whose identity is then a throwaway one.
    #[arg(long, value_name = "DIR", env = "MACULA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Append the audit log to FILE as JSON lines (handshakes accepted and refused, rate
    /// limits, keys pinned, refused by a pin, pins revoked), each written as it happens; past
    /// 16 MiB it moves to FILE.1 and a new FILE begins.
    #[arg(long, value_name = "FILE", env = "MACULA_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP at ADDR (`GET /metrics`).
    #[arg(long, value_name = "ADDR", env = "MACULA_METRICS")]
    pub metrics: Option<SocketAddr>,
    /// A node to join through, as HOST:PORT (an address or a DNS name; its key is pinned
    /// under that name on first contact); repeat for several (MACULA_BOOTSTRAP: separated by
    /// commas). Tried again (1 s, 2 s, ... up to 30 s apart) until one lets the node in.
    #[arg(
        long = "bootstrap",
        value_name = "HOST:PORT",
        env = "MACULA_BOOTSTRAP",
        value_delimiter = ','
    )]
    pub bootstraps: Vec<Bootstrap>,
    /// Act as a gateway: hold reservations for nodes behind NAT and relay circuits to them
    /// (within the limits in docs/nat.md), and advertise the gateway role.
    #[arg(
        long,
        env = "MACULA_GATEWAY",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub gateway: bool,
    #[command(flatten)]
    pub realm: RealmArgs,
}

/// The file's keys. Unknown keys are an error naming the key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    metrics: Option<String>,
    bootstrap: Option<Vec<String>>,
    gateway: Option<bool>,
    realm: Option<String>,
    api_key_file: Option<PathBuf>,
    previous_api_key_file: Option<PathBuf>,
    identity: Option<PathBuf>,
    tls_mode: Option<TlsModeArg>,
    tls_ca_cert_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_verify_hostname: Option<bool>,
    limits: Option<Limits>,
}

/// `[limits]`: bounds of the core configuration (see docs/operator.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_peers: Option<usize>,
    max_pending_handshakes: Option<usize>,
    max_pins: Option<usize>,
    max_rate_sources: Option<usize>,
}

/// What a node runs with, each value with where it came from.
#[derive(Debug)]
pub struct NodeSettings {
    pub listen: SocketAddr,
    pub data_dir: Option<PathBuf>,
    pub audit_log: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    pub bootstraps: Vec<Bootstrap>,
    /// Relays circuits for nodes behind NAT.
    pub gateway: bool,
    pub realm: RealmArgs,
    max_peers: Option<usize>,
    max_pending_handshakes: Option<usize>,
    max_pins: Option<usize>,
    max_rate_sources: Option<usize>,
    /// `key = value  # source` lines, for `macula config show`.
    shown: Vec<String>,
}

/// Where a value came from.
enum Origin<'a> {
    Flag(&'static str),
    Env(&'static str),
    File(&'a Path),
    Default,
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag --{flag}"),
            Origin::Env(var) => write!(f, "environment {var}"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// Builds the settings: `matches` are the subcommand's (they tell a flag from an
/// environment variable from a default), `args` the values clap parsed from them.
struct Layers<'a> {
    matches: &'a ArgMatches,
    path: Option<&'a Path>,
    shown: Vec<String>,
}

impl Layers<'_> {
    /// The value of one setting: from the command line or the environment if given there,
    /// else from the file, else `default`.
    fn pick<T>(
        &mut self,
        key: &'static str,
        (id, flag, env): (&str, &'static str, &'static str),
        given: Option<T>,
        file: Option<T>,
        default: Option<T>,
        show: impl Fn(&T) -> String,
    ) -> Option<T> {
        let source = self.matches.value_source(id);
        let (value, origin) = match (source, given, file) {
            (Some(ValueSource::CommandLine), Some(v), _) => (Some(v), Origin::Flag(flag)),
            (Some(ValueSource::EnvVariable), Some(v), _) => (Some(v), Origin::Env(env)),
            (_, _, Some(v)) => (
                Some(v),
                Origin::File(self.path.expect("a file value comes from a file")),
            ),
            _ => (default, Origin::Default),
        };
        let line = match &value {
            Some(v) => format!("{key} = {}  # {origin}", show(v)),
            None => format!("# {key} is not set"),
        };
        self.shown.push(line);
        value
    }
}

/// A TOML string.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_shown<P: AsRef<Path>>(path: &P) -> String {
    let path = path.as_ref();
    quoted(&path.display().to_string())
}

fn parse_in<T: std::str::FromStr>(key: &str, path: &Path, text: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| anyhow!("{}: {key} = {text:?}: {e}", path.display()))
}

impl NodeSettings {
    /// Resolves `args` (parsed from `matches`) over the file they name, if any.
    pub fn resolve(args: NodeArgs, matches: &ArgMatches) -> Result<NodeSettings> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("reading the configuration file {}", path.display())
                })?;
                basic_toml::from_str::<File>(&text)
                    .map_err(|e| anyhow!("configuration file {}: {e}", path.display()))?
            }
            None => File::default(),
        };
        let path = args.config.as_deref();
        let mut l = Layers {
            matches,
            path,
            shown: Vec::new(),
        };
        if let Some(path) = path {
            let origin = match matches.value_source("config") {
                Some(ValueSource::EnvVariable) => Origin::Env("MACULA_CONFIG"),
                _ => Origin::Flag("config"),
            };
            l.shown
                .push(format!("# read from {}  ({origin})", path.display()));
        }
        let from_file = |key: &str, text: Option<String>| -> Result<Option<SocketAddr>> {
            match (text, path) {
                (Some(t), Some(p)) => Ok(Some(parse_in(key, p, &t)?)),
                _ => Ok(None),
            }
        };
        let file_listen = from_file("listen", file.listen)?;
        let file_metrics = from_file("metrics", file.metrics)?;
        let file_bootstraps = match (file.bootstrap, path) {
            (Some(list), Some(p)) => Some(
                list.iter()
                    .map(|b| parse_in::<Bootstrap>("bootstrap", p, b))
                    .collect::<Result<Vec<_>>>()?,
            ),
            _ => None,
        };
        let shown_addr = |a: &SocketAddr| quoted(&a.to_string());
        let listen = l
            .pick(
                "listen",
                ("listen", "listen", "MACULA_LISTEN"),
                args.listen,
                file_listen,
                Some(DEFAULT_LISTEN.parse().expect("a valid default")),
                shown_addr,
            )
            .expect("listen has a default");
        let data_dir = l.pick(
            "data_dir",
            ("data_dir", "data-dir", "MACULA_DATA_DIR"),
            args.data_dir,
            file.data_dir,
            None,
            path_shown,
        );
        let audit_log = l.pick(
            "audit_log",
            ("audit_log", "audit-log", "MACULA_AUDIT_LOG"),
            args.audit_log,
            file.audit_log,
            None,
            path_shown,
        );
        let metrics = l.pick(
            "metrics",
            ("metrics", "metrics", "MACULA_METRICS"),
            args.metrics,
            file_metrics,
            None,
            shown_addr,
        );
        let given_bootstraps = Some(args.bootstraps).filter(|b| !b.is_empty());
        let bootstraps = l
            .pick(
                "bootstrap",
                ("bootstraps", "bootstrap", "MACULA_BOOTSTRAP"),
                given_bootstraps,
                file_bootstraps,
                Some(Vec::new()),
                |list: &Vec<Bootstrap>| {
                    let items: Vec<String> = list.iter().map(|b| quoted(&b.to_string())).collect();
                    format!("[{}]", items.join(", "))
                },
            )
            .unwrap_or_default();
        let r = args.realm;
        let realm = l
            .pick(
                "realm",
                ("realm", "realm", "MACULA_REALM"),
                Some(r.realm),
                file.realm,
                Some(DEFAULT_REALM.to_owned()),
                |s: &String| quoted(s),
            )
            .expect("realm has a default");
        let api_key_file = l.pick(
            "api_key_file",
            ("api_key_file", "api-key-file", "MACULA_API_KEY_FILE"),
            r.api_key_file,
            file.api_key_file,
            None,
            path_shown,
        );
        let previous_api_key_file = l.pick(
            "previous_api_key_file",
            (
                "previous_api_key_file",
                "previous-api-key-file",
                "MACULA_PREVIOUS_API_KEY_FILE",
            ),
            r.previous_api_key_file,
            file.previous_api_key_file,
            None,
            path_shown,
        );
        let identity = l.pick(
            "identity",
            ("identity", "identity", "MACULA_IDENTITY"),
            r.identity,
            file.identity,
            None,
            path_shown,
        );
        let t = r.tls;
        let tls_mode = l
            .pick(
                "tls_mode",
                ("tls_mode", "tls-mode", "MACULA_TLS_MODE"),
                Some(t.tls_mode),
                file.tls_mode,
                Some(TlsModeArg::Development),
                |m: &TlsModeArg| quoted(m.as_str()),
            )
            .expect("tls_mode has a default");
        let tls_ca_cert_file = l.pick(
            "tls_ca_cert_file",
            (
                "tls_ca_cert_file",
                "tls-ca-cert-file",
                "MACULA_TLS_CACERTFILE",
            ),
            t.tls_ca_cert_file,
            file.tls_ca_cert_file,
            None,
            path_shown,
        );
        let tls_cert_file = l.pick(
            "tls_cert_file",
            ("tls_cert_file", "tls-cert-file", "MACULA_TLS_CERTFILE"),
            t.tls_cert_file,
            file.tls_cert_file,
            None,
            path_shown,
        );
        let tls_key_file = l.pick(
            "tls_key_file",
            ("tls_key_file", "tls-key-file", "MACULA_TLS_KEYFILE"),
            t.tls_key_file,
            file.tls_key_file,
            None,
            path_shown,
        );
        let gateway = l
            .pick(
                "gateway",
                ("gateway", "gateway", "MACULA_GATEWAY"),
                Some(args.gateway),
                file.gateway,
                Some(false),
                bool::to_string,
            )
            .expect("gateway has a default");
        let tls_verify_hostname = l
            .pick(
                "tls_verify_hostname",
                (
                    "tls_verify_hostname",
                    "tls-verify-hostname",
                    "MACULA_TLS_VERIFY_HOSTNAME",
                ),
                Some(t.tls_verify_hostname),
                file.tls_verify_hostname,
                Some(true),
                bool::to_string,
            )
            .expect("tls_verify_hostname has a default");
        let limits = file.limits.unwrap_or_default();
        let defaults = Config::default();
        let mut limit = |key: &'static str, value: Option<usize>, default: usize| {
            let origin = match (value, path) {
                (Some(_), Some(p)) => Origin::File(p),
                _ => Origin::Default,
            };
            l.shown.push(format!(
                "limits.{key} = {}  # {origin}",
                value.unwrap_or(default)
            ));
            value
        };
        let max_peers = limit("max_peers", limits.max_peers, defaults.max_peers);
        let max_pending_handshakes = limit(
            "max_pending_handshakes",
            limits.max_pending_handshakes,
            defaults.max_pending_handshakes,
        );
        let max_pins = limit("max_pins", limits.max_pins, defaults.max_pins);
        let max_rate_sources = limit(
            "max_rate_sources",
            limits.max_rate_sources,
            defaults.max_rate_sources,
        );
        Ok(NodeSettings {
            listen,
            data_dir,
            audit_log,
            metrics,
            bootstraps,
            gateway,
            realm: RealmArgs {
                realm,
                api_key_file,
                previous_api_key_file,
                identity,
                tls: TlsArgs {
                    tls_mode,
                    tls_ca_cert_file,
                    tls_cert_file,
                    tls_key_file,
                    tls_verify_hostname,
                },
            },
            max_peers,
            max_pending_handshakes,
            max_pins,
            max_rate_sources,
            shown: l.shown,
        })
    }

    /// The core configuration: the realm, its keys and the limits.
    pub fn config(&self) -> Result<Config> {
        let mut config = self.realm.config()?;
        let set = |slot: &mut usize, value: Option<usize>| {
            if let Some(v) = value {
                *slot = v;
            }
        };
        set(&mut config.max_peers, self.max_peers);
        set(
            &mut config.max_pending_handshakes,
            self.max_pending_handshakes,
        );
        set(&mut config.max_pins, self.max_pins);
        set(&mut config.max_rate_sources, self.max_rate_sources);
        if self.gateway {
            config.nat.gateway = true;
            config.roles = config.roles | macula_proto::Roles::GATEWAY;
        }
        config
            .validate()
            .map_err(|e| anyhow!("configuration: {e}"))?;
        Ok(config)
    }

    /// The settings as a TOML file, each value's source in a comment.
    pub fn show(&self) -> String {
        let mut out = String::new();
        let mut in_limits = false;
        for line in &self.shown {
            if let Some(rest) = line.strip_prefix("limits.") {
                if !in_limits {
                    out.push_str("\n[limits]\n");
                    in_limits = true;
                }
                out.push_str(rest);
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_as_toml_reads_them() {
        let text = "a \"b\" \\ c\u{1}";
        let toml = format!("realm = {}", quoted(text));
        let file: File = basic_toml::from_str(&toml).unwrap();
        assert_eq!(file.realm.as_deref(), Some(text));
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let err = basic_toml::from_str::<File>("lisen = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = basic_toml::from_str::<File>("[limits]\nmax_peer = 3").unwrap_err();
        assert!(err.to_string().contains("max_peer"), "{err}");
    }
}
