//! What a node keeps on disk: its identity file and its data directory.
//!
//! An **identity file** holds one Ed25519 secret key as text:
//!
//! ```text
//! # Macula node identity: an Ed25519 secret key. Keep it private.
//! # node_id 5f3a…
//! ed25519-secret 9c41…(64 hex digits)
//! ```
//!
//! Lines starting with `#` are comments; the one `ed25519-secret` line is the key. The file is
//! written with mode 0600 and never overwritten; on Unix, loading a file that its group or
//! anyone else may read is refused (a key others have read is no longer an identity).
//!
//! A **data directory** is where a node keeps what must outlive it: `identity.key` (made on
//! first use) and, later, its trust pins. While a node runs it holds an exclusive lock on the
//! directory's `lock` file, so two nodes on one host never share an identity or a pin file;
//! the lock ends with the process, however it ends.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use macula_proto::{Identity, NodeId};

/// The identity file's name in a data directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// The lock file's name in a data directory.
pub const LOCK_FILE: &str = "lock";

/// The trust pins' file name in a data directory.
pub const PINS_FILE: &str = "pins";

const KEY_TAG: &str = "ed25519-secret";

/// Why an identity file or a data directory could not be used. Each message names the path
/// and, where there is one, the fix.
#[derive(Debug)]
pub enum StoreError {
    /// The operating system refused (reading, writing, creating).
    Io {
        /// The path.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// An identity file is there already: it is never overwritten.
    Exists(PathBuf),
    /// An identity file its group or others may read (Unix mode bits).
    Exposed {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not an identity file.
    Malformed {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another running node holds the data directory.
    InUse(PathBuf),
    /// The operating system gave no randomness for a new key.
    Random(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::Exists(path) => write!(
                f,
                "{} exists already; an identity file is never overwritten (remove it first if \
                 you mean to replace that identity)",
                path.display()
            ),
            StoreError::Exposed { path, mode } => write!(
                f,
                "identity file {} may be read by others (mode {:o}); fix it with `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            ),
            StoreError::Malformed { path, reason } => write!(
                f,
                "{} is not a Macula identity file: {reason} (expected one line `{KEY_TAG} \
                 <64 hex digits>`)",
                path.display()
            ),
            StoreError::InUse(path) => write!(
                f,
                "data directory {} is in use by another running node; give this one its own \
                 with --data-dir",
                path.display()
            ),
            StoreError::Random(e) => write!(f, "no randomness for a new identity: {e}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Makes a new identity from operating-system randomness and writes it to `path` (mode 0600,
/// synced before this returns).
///
/// # Errors
/// [`StoreError::Exists`] if `path` exists; [`StoreError::Io`] if it cannot be written;
/// [`StoreError::Random`] without randomness.
pub fn generate_identity(path: &Path) -> Result<Identity, StoreError> {
    let identity = new_identity()?;
    save_identity(path, &identity)?;
    Ok(identity)
}

/// A new identity from operating-system randomness.
///
/// # Errors
/// [`StoreError::Random`] without randomness.
pub fn new_identity() -> Result<Identity, StoreError> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(Identity::from_secret(secret))
}

/// Writes `identity` to a new file at `path` (mode 0600, synced).
///
/// # Errors
/// [`StoreError::Exists`] if `path` exists; [`StoreError::Io`] if it cannot be written.
pub fn save_identity(path: &Path, identity: &Identity) -> Result<(), StoreError> {
    write_new(path, &format_identity(identity), 0o600)
}

/// Writes `text` to a new file at `path` with permissions `mode` (Unix; `0o600` for a
/// secret), synced before this returns. An existing file is never replaced.
///
/// # Errors
/// [`StoreError::Exists`] if `path` exists; [`StoreError::Io`] if it cannot be written.
pub fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), StoreError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => StoreError::Exists(path.to_owned()),
        _ => io_error(path)(e),
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

/// The text of an identity file holding `identity`.
pub fn format_identity(identity: &Identity) -> String {
    format!(
        "# Macula node identity: an Ed25519 secret key. Keep it private.\n# node_id {}\n\
         {KEY_TAG} {}\n",
        identity.node_id(),
        hex(&identity.secret())
    )
}

/// Reads the identity in `path`.
///
/// # Errors
/// [`StoreError::Exposed`] if others may read it (Unix); [`StoreError::Malformed`] if it is
/// not an identity file; [`StoreError::Io`] if it cannot be read.
pub fn load_identity(path: &Path) -> Result<Identity, StoreError> {
    let file = File::open(path).map_err(io_error(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .map_err(io_error(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(StoreError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let mut text = String::new();
    file.take(4096)
        .read_to_string(&mut text)
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => StoreError::Malformed {
                path: path.to_owned(),
                reason: "it is not text",
            },
            _ => io_error(path)(e),
        })?;
    parse_identity(&text).map_err(|reason| StoreError::Malformed {
        path: path.to_owned(),
        reason,
    })
}

/// Reads an identity file's text, in Macula's own form (`ed25519-secret <hex>`) or as a PEM
/// Ed25519 private key (PKCS#8, as TLS tools and `macula cert dev` write it); the error says
/// what is wrong with it.
///
/// # Errors
/// Why `text` is not an identity file.
pub fn parse_identity(text: &str) -> Result<Identity, &'static str> {
    if text.trim_start().starts_with("-----BEGIN") {
        return macula_proto::quic::tls::identity_from_pem(text.as_bytes())
            .map_err(|_| "it is PEM, but not an Ed25519 PKCS#8 private key");
    }
    let mut keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = keys.next().ok_or("it holds no key")?;
    if keys.next().is_some() {
        return Err("it holds more than one line besides comments");
    }
    let hex_key = line
        .strip_prefix(KEY_TAG)
        .filter(|rest| rest.starts_with([' ', '\t']))
        .ok_or("its key line does not start with `ed25519-secret`")?
        .trim();
    let secret = unhex(hex_key).ok_or("the key is not 64 hex digits")?;
    Ok(Identity::from_secret(secret))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A node's data directory, locked for as long as this value lives.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Holds the lock (released when closed, or when the process ends).
    _lock: File,
}

impl DataDir {
    /// Opens `path` (creating it, mode 0700, if missing) and locks it.
    ///
    /// # Errors
    /// [`StoreError::InUse`] if another process holds it; [`StoreError::Io`] if it cannot be
    /// created or locked.
    pub fn open(path: &Path) -> Result<DataDir, StoreError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(path).map_err(io_error(path))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        lock_exclusively(&lock).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => StoreError::InUse(path.to_owned()),
            _ => io_error(&lock_path)(e),
        })?;
        Ok(DataDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where its trust pins are kept.
    pub fn pins_path(&self) -> PathBuf {
        self.path.join(PINS_FILE)
    }

    /// The node's identity: the one kept here, or a new one, kept here from now on.
    ///
    /// # Errors
    /// As [`load_identity`] and [`generate_identity`].
    pub fn identity(&self) -> Result<Identity, StoreError> {
        let path = self.path.join(IDENTITY_FILE);
        match generate_identity(&path) {
            Err(StoreError::Exists(_)) => load_identity(&path),
            made => made,
        }
    }
}

/// The pins kept in `path` (none if there is no such file), by name.
///
/// # Errors
/// [`StoreError::Malformed`] for a file that is not a pin file (trust is never reset in
/// silence: the node must not start); [`StoreError::Io`] if it cannot be read.
pub fn load_pins(path: &Path) -> Result<Vec<(String, NodeId)>, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(StoreError::Malformed {
                path: path.to_owned(),
                reason: "it is not text",
            })
        }
        Err(e) => return Err(io_error(path)(e)),
    };
    parse_pins(&text).map_err(|reason| StoreError::Malformed {
        path: path.to_owned(),
        reason,
    })
}

/// Reads a pin file's text, by name; the error says what is wrong with it.
///
/// # Errors
/// Why `text` is not a pin file.
pub fn parse_pins(text: &str) -> Result<Vec<(String, NodeId)>, &'static str> {
    let mut pins = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, key) = line
            .rsplit_once(' ')
            .ok_or("a line is not `<name> sha256:<hex>`")?;
        let id = key
            .strip_prefix("sha256:")
            .and_then(|hex| NodeId::from_hex(hex).ok())
            .ok_or("a fingerprint is not `sha256:` and 64 hex digits")?;
        let name = name.trim();
        if !macula_proto::trust::Pins::valid_name(name) {
            return Err("a name is empty or holds white space");
        }
        pins.push((name.to_owned(), id));
    }
    Ok(pins)
}

/// The text of a pin file holding `pins`.
pub fn format_pins<'a>(pins: impl IntoIterator<Item = (&'a str, NodeId)>) -> String {
    let mut text = String::from(
        "# Macula trust pins: the key first found at each name this node was told to dial.\n\
         # <name> <fingerprint>; `macula trust revoke NAME` removes one.\n",
    );
    for (name, id) in pins {
        text.push_str(&format!("{name} sha256:{id}\n"));
    }
    text
}

/// Replaces the pin file at `path` with `pins`, atomically: written to a temporary file,
/// synced, renamed over the old one, and the directory synced, so a crash leaves the old file
/// or the new one, never a part.
///
/// # Errors
/// [`StoreError::Io`] if it cannot be written.
pub fn save_pins<'a>(
    path: &Path,
    pins: impl IntoIterator<Item = (&'a str, NodeId)>,
) -> Result<(), StoreError> {
    let text = format_pins(pins);
    let temporary = path.with_extension("tmp");
    let written = File::create(&temporary)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&temporary, path));
    written.map_err(io_error(path))?;
    if let Some(dir) = path.parent() {
        // The rename is durable once the directory is (where directories can be synced).
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[cfg(unix)]
fn lock_exclusively(file: &File) -> io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(io::Error::from)
}

#[cfg(not(unix))]
fn lock_exclusively(_: &File) -> io::Result<()> {
    // Elsewhere the directory is not locked: give each node its own --data-dir.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("macula-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_generated_identity_loads_back_and_is_never_overwritten() {
        let dir = scratch("roundtrip");
        let path = dir.join("node.key");
        let made = generate_identity(&path).unwrap();
        assert_eq!(load_identity(&path).unwrap().node_id(), made.node_id());
        assert!(matches!(
            generate_identity(&path),
            Err(StoreError::Exists(_))
        ));
        assert_eq!(load_identity(&path).unwrap().node_id(), made.node_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_may_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("exposed");
        let path = dir.join("node.key");
        generate_identity(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load_identity(&path).unwrap_err();
        assert!(matches!(error, StoreError::Exposed { mode, .. } if mode & 0o777 == 0o644));
        let message = error.to_string();
        assert!(message.contains("mode 644"), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
    }

    #[test]
    fn what_is_not_an_identity_file_is_named_as_such() {
        let dir = scratch("malformed");
        let cases: [(&str, &str); 5] = [
            ("empty", ""),
            ("short", "ed25519-secret abcd\n"),
            ("tag", "rsa-secret 00\n"),
            ("two", "ed25519-secret 00\ned25519-secret 00\n"),
            ("nothex", &format!("ed25519-secret {}\n", "zz".repeat(32))),
        ];
        for (name, text) in cases {
            let path = dir.join(name);
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options
                .open(&path)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let error = load_identity(&path).unwrap_err();
            assert!(
                matches!(error, StoreError::Malformed { .. }),
                "{name}: {error}"
            );
        }
        assert!(matches!(
            load_identity(&dir.join("missing")),
            Err(StoreError::Io { .. })
        ));
    }

    #[test]
    fn pins_are_saved_whole_and_a_corrupt_file_is_an_error_not_a_reset() {
        let dir = scratch("pins");
        let path = dir.join(PINS_FILE);
        assert!(load_pins(&path).unwrap().is_empty(), "no file: no pins");
        let (a, b) = (
            Identity::from_seed(1).node_id(),
            Identity::from_seed(2).node_id(),
        );
        let mut node = macula_proto::Node::new(
            macula_proto::Config::new(macula_proto::Realm::new("a.b").unwrap()),
            Identity::from_seed(3),
            1,
            macula_proto::Instant::ZERO,
        )
        .unwrap();
        assert!(node.trust_pin("127.0.0.1:4433", a));
        assert!(node.trust_pin("seed.example:4433", b));
        save_pins(&path, node.trust_pins().iter()).unwrap();
        assert_eq!(
            load_pins(&path).unwrap(),
            vec![
                ("127.0.0.1:4433".to_string(), a),
                ("seed.example:4433".to_string(), b)
            ]
        );
        assert!(!path.with_extension("tmp").exists());
        std::fs::write(&path, "127.0.0.1:4433 sha256:nothex\n").unwrap();
        let error = load_pins(&path).unwrap_err();
        assert!(matches!(error, StoreError::Malformed { .. }), "{error}");
    }

    #[test]
    fn a_data_directory_keeps_its_identity_and_admits_one_node_at_a_time() {
        let dir = scratch("datadir").join("node");
        let first = DataDir::open(&dir).unwrap();
        let id = first.identity().unwrap().node_id();
        assert_eq!(first.identity().unwrap().node_id(), id);
        #[cfg(unix)]
        assert!(matches!(DataDir::open(&dir), Err(StoreError::InUse(_))));
        drop(first);
        let again = DataDir::open(&dir).unwrap();
        assert_eq!(again.identity().unwrap().node_id(), id);
    }
}
