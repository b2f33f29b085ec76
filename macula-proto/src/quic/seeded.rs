//! Seeded randomness for QUIC and TLS, **for simulation only**.
//!
//! A simulated mesh must replay bit for bit from one seed, so every random draw of quinn-proto
//! (connection ids, the initial destination id, token keys) and of rustls (client and server
//! randoms, ephemeral X25519 keys) comes from the endpoint's seed. That makes the TLS sessions
//! predictable to anyone who knows the seed: never enable it on a real network.

use alloc::boxed::Box;
use alloc::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use curve25519_dalek::montgomery::MontgomeryPoint;
use quinn_proto::{ConnectionId, ConnectionIdGenerator, TimeSource};
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret,
    SupportedKxGroup,
};
use rustls::NamedGroup;

use crate::Rng;

/// Length of the connection ids the seeded generator makes (RFC 9000 wants at least 8).
const CID_LEN: usize = 8;

fn locked(rng: &Mutex<Rng>) -> std::sync::MutexGuard<'_, Rng> {
    // A poisoned lock only means another thread panicked mid-draw; the state is still valid.
    rng.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
struct SeededRandom(Mutex<Rng>);

impl SecureRandom for SeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        locked(&self.0).fill(buf);
        Ok(())
    }
}

#[derive(Debug)]
struct SeededX25519(Mutex<Rng>);

impl SupportedKxGroup for SeededX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut secret = [0u8; 32];
        locked(&self.0).fill(&mut secret);
        let public = MontgomeryPoint::mul_base_clamped(secret).to_bytes();
        Ok(Box::new(X25519Exchange { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

struct X25519Exchange {
    secret: [u8; 32],
    public: [u8; 32],
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: [u8; 32] = peer_pub_key
            .try_into()
            .map_err(|_| rustls::Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = MontgomeryPoint(peer).mul_clamped(self.secret).to_bytes();
        if shared == [0u8; 32] {
            // A low-order point: RFC 7748 §6.1 says to abort.
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// rustls's ring provider with its randomness and key exchange drawn from `seed`.
///
/// The provider's parts must be `'static`; they are leaked, a few dozen bytes per endpoint,
/// which a simulation can afford.
pub(super) fn provider(seed: u64) -> Arc<CryptoProvider> {
    let mut rng = Rng::from_seed(seed);
    let random: &'static SeededRandom = Box::leak(Box::new(SeededRandom(Mutex::new(rng.child()))));
    let x25519: &'static SeededX25519 = Box::leak(Box::new(SeededX25519(Mutex::new(rng.child()))));
    let mut provider = rustls::crypto::ring::default_provider();
    provider.secure_random = random;
    provider.kx_groups = alloc::vec![x25519];
    Arc::new(provider)
}

struct SeededCids(Rng);

impl ConnectionIdGenerator for SeededCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        self.0.fill(&mut bytes);
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<core::time::Duration> {
        None
    }
}

/// A factory of connection-id generators, each seeded from `seed` in turn.
pub(super) fn cid_factory(seed: u64) -> impl Fn() -> Box<dyn ConnectionIdGenerator> + Send + Sync {
    let rng = Mutex::new(Rng::from_seed(seed));
    move || Box::new(SeededCids(locked(&rng).child())) as Box<dyn ConnectionIdGenerator>
}

/// Initial destination connection ids drawn from `seed`.
pub(super) fn initial_cids(seed: u64) -> Arc<dyn Fn() -> ConnectionId + Send + Sync> {
    let rng = Mutex::new(Rng::from_seed(seed));
    Arc::new(move || {
        let mut bytes = [0u8; CID_LEN];
        locked(&rng).fill(&mut bytes);
        ConnectionId::new(&bytes)
    })
}

/// Wall-clock time for quinn's address-validation tokens, following the endpoint's virtual
/// clock instead of the host's: tokens carry their issue time, and a real clock would make two
/// runs differ.
#[derive(Debug, Default)]
pub(super) struct VirtualClock(AtomicU64);

/// Where virtual wall-clock time starts: 2023-11-14T22:13:20Z.
const VIRTUAL_UNIX_START: core::time::Duration = core::time::Duration::from_secs(1_700_000_000);

impl VirtualClock {
    pub fn set(&self, micros: u64) {
        self.0.store(micros, Ordering::Relaxed);
    }
}

impl TimeSource for VirtualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH
            + VIRTUAL_UNIX_START
            + core::time::Duration::from_micros(self.0.load(Ordering::Relaxed))
    }
}
