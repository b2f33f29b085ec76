//! The raw datagrams of NAT traversal, sent outside QUIC on a node's UDP sockets.
//!
//! Every one starts with the four bytes `1e 6d 6e 74` (`0x1e` has QUIC's fixed bit `0x40`
//! clear, so a receiver tells these from QUIC packets by the first byte alone), then a kind
//! byte, then a 64-bit nonce (little-endian):
//!
//! | kind | name | after the nonce | answered |
//! | ---: | --- | --- | --- |
//! | 0 | `Probe` | zeros up to [`PROBE_LEN`] bytes in all | with a `Seen` to the probe's source, from the socket it reached |
//! | 1 | `Seen` | the address the probe came from: family (4 or 6), address, port (big-endian) | never |
//! | 2 | `Punch` | nothing | never (it only opens the sender's NAT towards the receiver) |
//!
//! A `Seen` is at most 32 bytes and a `Probe` [`PROBE_LEN`] bytes, so an answer is never
//! larger than what asked for it: an observer can't be used to amplify a flood.

use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first bytes of every NAT datagram.
pub const MAGIC: [u8; 4] = [0x1e, b'm', b'n', b't'];

/// The length of a `Probe`: at least the length of any answer.
pub const PROBE_LEN: usize = 64;

/// The longest `Seen`: magic, kind, nonce, family, an IPv6 address, port.
pub const MAX_SEEN_LEN: usize = 4 + 1 + 8 + 1 + 16 + 2;

const _: () = assert!(
    MAX_SEEN_LEN <= PROBE_LEN,
    "an answer is never larger than its probe"
);

/// A NAT datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// "Where do you see me?": answered with a [`Probe::Seen`] carrying the same nonce.
    Probe {
        /// Chosen at random by the prober, to match the answer.
        nonce: u64,
    },
    /// The answer: the address the probe came from, as the observer saw it.
    Seen {
        /// The probe's nonce.
        nonce: u64,
        /// The probe's source address.
        observed: SocketAddr,
    },
    /// A hole punch: opens the sender's NAT towards the receiver; not answered.
    Punch {
        /// Names the punch attempt.
        nonce: u64,
    },
}

/// Why a datagram is not a NAT datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// It does not start with [`MAGIC`].
    NotOurs,
    /// It ends early, has trailing bytes, or an unknown kind or address family.
    Malformed,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeError::NotOurs => "not a NAT datagram",
            ProbeError::Malformed => "a malformed NAT datagram",
        })
    }
}

impl core::error::Error for ProbeError {}

impl Probe {
    /// Its nonce.
    pub fn nonce(&self) -> u64 {
        match *self {
            Probe::Probe { nonce } | Probe::Seen { nonce, .. } | Probe::Punch { nonce } => nonce,
        }
    }

    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PROBE_LEN);
        out.extend_from_slice(&MAGIC);
        let kind = match self {
            Probe::Probe { .. } => 0,
            Probe::Seen { .. } => 1,
            Probe::Punch { .. } => 2,
        };
        out.push(kind);
        out.extend_from_slice(&self.nonce().to_le_bytes());
        match self {
            Probe::Probe { .. } => out.resize(PROBE_LEN, 0),
            Probe::Seen { observed, .. } => {
                match observed.ip() {
                    IpAddr::V4(ip) => {
                        out.push(4);
                        out.extend_from_slice(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        out.push(6);
                        out.extend_from_slice(&ip.octets());
                    }
                }
                out.extend_from_slice(&observed.port().to_be_bytes());
            }
            Probe::Punch { .. } => {}
        }
        out
    }

    /// Reads a datagram.
    ///
    /// # Errors
    /// [`ProbeError`] if it is not exactly one well-formed NAT datagram.
    pub fn decode(bytes: &[u8]) -> Result<Probe, ProbeError> {
        let rest = bytes.strip_prefix(&MAGIC[..]).ok_or(ProbeError::NotOurs)?;
        let (&kind, rest) = rest.split_first().ok_or(ProbeError::Malformed)?;
        let (nonce, rest) = take::<8>(rest)?;
        let nonce = u64::from_le_bytes(nonce);
        match kind {
            0 if bytes.len() == PROBE_LEN && rest.iter().all(|b| *b == 0) => {
                Ok(Probe::Probe { nonce })
            }
            1 => {
                let (&family, rest) = rest.split_first().ok_or(ProbeError::Malformed)?;
                let (ip, rest): (IpAddr, _) = match family {
                    4 => {
                        let (ip, rest) = take::<4>(rest)?;
                        (Ipv4Addr::from(ip).into(), rest)
                    }
                    6 => {
                        let (ip, rest) = take::<16>(rest)?;
                        (Ipv6Addr::from(ip).into(), rest)
                    }
                    _ => return Err(ProbeError::Malformed),
                };
                let (port, rest) = take::<2>(rest)?;
                if !rest.is_empty() {
                    return Err(ProbeError::Malformed);
                }
                Ok(Probe::Seen {
                    nonce,
                    observed: SocketAddr::new(ip, u16::from_be_bytes(port)),
                })
            }
            2 if rest.is_empty() => Ok(Probe::Punch { nonce }),
            _ => Err(ProbeError::Malformed),
        }
    }
}

fn take<const N: usize>(bytes: &[u8]) -> Result<([u8; N], &[u8]), ProbeError> {
    if bytes.len() < N {
        return Err(ProbeError::Malformed);
    }
    let (head, rest) = bytes.split_at(N);
    let mut out = [0u8; N];
    out.copy_from_slice(head);
    Ok((out, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::is_raw_datagram;

    #[test]
    fn every_kind_round_trips_and_is_told_apart_from_quic() {
        let cases = [
            Probe::Probe { nonce: 7 },
            Probe::Seen {
                nonce: u64::MAX,
                observed: "198.18.0.1:4433".parse().unwrap(),
            },
            Probe::Seen {
                nonce: 1,
                observed: "[2001:db8::1]:65535".parse().unwrap(),
            },
            Probe::Punch { nonce: 0 },
        ];
        for p in cases {
            let bytes = p.encode();
            assert!(is_raw_datagram(&bytes));
            assert!(bytes.len() <= PROBE_LEN);
            assert_eq!(Probe::decode(&bytes), Ok(p));
        }
        assert_eq!(Probe::Probe { nonce: 7 }.encode().len(), PROBE_LEN);
        // QUIC long and short headers have the fixed bit set.
        assert!(!is_raw_datagram(&[0xc0, 0, 0, 1]));
        assert!(!is_raw_datagram(&[0x40, 1, 2]));
        assert!(!is_raw_datagram(&[]));
    }

    #[test]
    fn malformed_datagrams_are_refused() {
        let seen = Probe::Seen {
            nonce: 1,
            observed: "198.18.0.1:1".parse().unwrap(),
        }
        .encode();
        let mut probe = Probe::Probe { nonce: 1 }.encode();
        assert_eq!(Probe::decode(b"hello"), Err(ProbeError::NotOurs));
        for cut in 0..seen.len() {
            assert!(Probe::decode(&seen[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = seen.clone();
        long.push(0);
        assert_eq!(Probe::decode(&long), Err(ProbeError::Malformed));
        // A short probe would let its answer be larger than it.
        assert_eq!(Probe::decode(&probe[..20]), Err(ProbeError::Malformed));
        probe[30] = 1;
        assert_eq!(Probe::decode(&probe), Err(ProbeError::Malformed));
        let mut kind = seen;
        kind[4] = 9;
        assert_eq!(Probe::decode(&kind), Err(ProbeError::Malformed));
    }
}
