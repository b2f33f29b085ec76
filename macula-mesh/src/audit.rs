//! The audit log: who was let in, who was refused, and what the node came to trust, as JSON
//! lines an operator's tools can read.
//!
//! One object per line, written with a single `write` as the event happens (nothing waits in
//! a buffer for a crash to lose):
//!
//! ```text
//! {"time":"2026-12-03T18:55:06.123Z","event":"auth_failure","peer":"5f3a…","addr":"192.0.2.7:4433","realm":"io.example.prod","reason":"bad_credentials"}
//! ```
//!
//! Events: `auth_success` (a handshake completed; `reason` is `inbound` or `outbound`),
//! `auth_failure` (this node refused an inbound handshake; `reason` is the refusal),
//! `rate_limited` (an inbound handshake refused because its source address was over a rate
//! limit, its proof not looked at),
//! `tofu_trust` (a key was pinned at a name; `addr` is the name), `fingerprint_mismatch`
//! (another key than the pinned one answered; `peer` is the key that answered, `reason` names
//! the pinned one), `trust_revoked` and `identity_conflict` (a peer linked again from another
//! address while its link was alive: `addr` is the new address, `reason` names the old). The file is bounded: past its size limit it is renamed
//! to `FILE.1` (replacing the previous one) and a new `FILE` begins.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use macula_proto::trust::TrustEvent;
use macula_proto::{Direction, Event, Fingerprint, NodeId, RefuseReason};

/// Default size at which an audit log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;

/// An open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
}

impl AuditLog {
    /// Opens (appending) or creates the log at `path`, rotated past `max_bytes`.
    ///
    /// # Errors
    /// The operating system's, if the file cannot be opened.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<AuditLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(AuditLog {
            path: path.to_owned(),
            file,
            written,
            max_bytes: max_bytes.max(1),
        })
    }

    /// Records `event` if it is one the audit log keeps; `realm` is the node's.
    ///
    /// # Errors
    /// The operating system's, if the line cannot be written.
    pub fn record(&mut self, event: &Event, realm: &str) -> io::Result<()> {
        let Some(entry) = Entry::of(event) else {
            return Ok(());
        };
        let line = entry.line(&now_utc(), realm);
        if self.written > 0 && self.written + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.written += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, PathBuf::from(old))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// One line's fields.
struct Entry {
    event: &'static str,
    peer: NodeId,
    addr: String,
    reason: String,
}

impl Entry {
    fn of(event: &Event) -> Option<Entry> {
        let entry = |event, peer, addr: String, reason: String| Entry {
            event,
            peer,
            addr,
            reason,
        };
        Some(match event {
            Event::PeerUp {
                peer,
                addr,
                direction,
                ..
            } => {
                let way = match direction {
                    Direction::Inbound => "inbound",
                    Direction::Outbound => "outbound",
                };
                entry("auth_success", *peer, addr.to_string(), way.into())
            }
            Event::InboundRefused {
                peer, addr, reason, ..
            } => {
                let kind = match reason {
                    RefuseReason::RateLimited => "rate_limited",
                    _ => "auth_failure",
                };
                entry(kind, *peer, addr.to_string(), reason.to_string())
            }
            Event::Trust(TrustEvent::Pinned { name, node }) => {
                entry("tofu_trust", *node, name.clone(), "first key seen".into())
            }
            Event::Trust(TrustEvent::Mismatch {
                name,
                pinned,
                presented,
            }) => entry(
                "fingerprint_mismatch",
                *presented,
                name.clone(),
                format!("pinned {}", Fingerprint(*pinned)),
            ),
            Event::Trust(TrustEvent::Revoked { name, node }) => {
                entry("trust_revoked", *node, name.clone(), "revoked".into())
            }
            Event::Trust(TrustEvent::IdentityConflict { node, old, new }) => entry(
                "identity_conflict",
                *node,
                new.to_string(),
                format!("its link from {old} was alive"),
            ),
            _ => return None,
        })
    }

    fn line(&self, time: &str, realm: &str) -> String {
        format!(
            "{{\"time\":\"{time}\",\"event\":\"{}\",\"peer\":\"{}\",\"addr\":{},\"realm\":{},\"reason\":{}}}\n",
            self.event,
            self.peer,
            json_string(&self.addr),
            json_string(realm),
            json_string(&self.reason)
        )
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The wall-clock time now, as RFC 3339 in UTC with milliseconds.
fn now_utc() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since.as_secs(), since.subsec_millis())
}

/// `secs` after the Unix epoch, as `YYYY-MM-DDTHH:MM:SS.mmmZ` (the proleptic Gregorian
/// calendar, by the days-to-civil method).
fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use macula_proto::{Identity, LinkId};

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 12:34:56 UTC, a leap day.
        assert_eq!(rfc3339(951_827_696, 7), "2000-02-29T12:34:56.007Z");
        assert_eq!(rfc3339(1_796_256_000, 999), "2026-12-03T00:00:00.999Z");
    }

    #[test]
    fn each_event_is_one_json_line_and_the_log_rotates_past_its_bound() {
        let dir = std::env::temp_dir().join(format!("macula-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let peer = Identity::from_seed(1).node_id();
        let refused = Event::InboundRefused {
            link: LinkId(1),
            addr: "192.0.2.7:4433".parse().unwrap(),
            peer,
            reason: RefuseReason::BadCredentials,
        };
        let mut log = AuditLog::open(&path, 1000).unwrap();
        log.record(&refused, "io.example.\"q\"").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.lines().next().unwrap();
        assert!(line.starts_with("{\"time\":\""), "{line}");
        assert!(line.contains("\"event\":\"auth_failure\""), "{line}");
        assert!(line.contains(&format!("\"peer\":\"{peer}\"")), "{line}");
        assert!(line.contains("\"addr\":\"192.0.2.7:4433\""), "{line}");
        assert!(
            line.contains("\"realm\":\"io.example.\\\"q\\\"\""),
            "{line}"
        );
        assert!(line.contains("\"reason\":\"bad_credentials\""), "{line}");
        let limited = Event::InboundRefused {
            link: LinkId(2),
            addr: "192.0.2.7:4433".parse().unwrap(),
            peer,
            reason: RefuseReason::RateLimited,
        };
        let limited_path = dir.join("limited.log");
        AuditLog::open(&limited_path, 1000)
            .unwrap()
            .record(&limited, "r")
            .unwrap();
        let text = std::fs::read_to_string(&limited_path).unwrap();
        assert!(text.contains("\"event\":\"rate_limited\""), "{text}");
        assert!(text.contains("\"reason\":\"rate_limited\""), "{text}");
        // Events it does not keep leave no line.
        let dropped = Event::DataDropped {
            inbox: macula_proto::InboxId(1),
            dropped: 1,
        };
        log.record(&dropped, "r").unwrap();
        // Past 1,000 bytes (about five lines) the file starts again, the old one kept as .1.
        for _ in 0..5 {
            log.record(&refused, "r").unwrap();
        }
        let rotated = std::fs::read_to_string(dir.join("audit.log.1")).unwrap();
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(rotated.len() <= 1000 && current.len() <= 1000);
        assert_eq!(rotated.lines().count() + current.lines().count(), 6);
    }
}
