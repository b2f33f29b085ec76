//! TLS for Macula links: a self-signed certificate made from the node's Ed25519 identity, and
//! verifiers that accept any such certificate and derive the peer's [`NodeId`] from its key.
//!
//! Trust in a *particular* node is not decided here: the TLS handshake proves the peer holds the
//! key in its certificate, the node id is the hash of that key, and the [`Node`](crate::Node)
//! checks expected ids, realms and API keys above this layer.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::id::{Identity, NodeId};

/// The ALPN protocol id of Macula version 1.
pub const ALPN: &[u8] = b"macula/1";

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the key's 32 bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410): the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The node id proven by a certificate: SHA-256 of its Ed25519 subject public key.
/// `None` if the certificate does not parse or its key is not Ed25519.
pub fn node_id_from_cert(der: &[u8]) -> Option<NodeId> {
    let der = CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    let spki = cert.subject_public_key_info();
    let key = spki.as_ref().strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    let key: &[u8; 32] = key.try_into().ok()?;
    Some(NodeId::from_public_key(key))
}

/// A self-signed certificate for `identity`, with its private key, in DER.
///
/// # Errors
/// [`rustls::Error::General`] if the certificate could not be made (it can't for a valid key).
pub fn self_signed(
    identity: &Identity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), rustls::Error> {
    let mut pkcs8 = Vec::with_capacity(48);
    pkcs8.extend_from_slice(&ED25519_PKCS8_PREFIX);
    pkcs8.extend_from_slice(&identity.secret());
    let key_der = PrivatePkcs8KeyDer::from(pkcs8);
    let general = |e: rcgen::Error| rustls::Error::General(alloc::format!("certificate: {e}"));
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_ED25519)
        .map_err(general)?;
    let mut params = rcgen::CertificateParams::new(vec!["macula".into()]).map_err(general)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        alloc::format!("{}", identity.node_id()),
    );
    let cert = params.self_signed(&key_pair).map_err(general)?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(key_der)))
}

/// The crypto provider Macula uses: rustls's ring provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any well-formed Ed25519 self-signed certificate and verifies the handshake signature
/// with its key; the peer's identity is its key's hash, checked by the node.
#[derive(Debug)]
pub struct PeerVerifier {
    provider: Arc<CryptoProvider>,
}

impl PeerVerifier {
    /// A verifier using `provider`'s signature algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        PeerVerifier { provider }
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        node_id_from_cert(end_entity)
            .map(|_| ())
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ))
    }

    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

/// The handshake-signature methods, identical for both verifier traits: TLS 1.2 is refused,
/// TLS 1.3 signatures are checked with the certificate's key, and only Ed25519 is offered.
macro_rules! handshake_signature_methods {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    };
}

impl ServerCertVerifier for PeerVerifier {
    handshake_signature_methods!();

    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }
}

impl ClientCertVerifier for PeerVerifier {
    handshake_signature_methods!();

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_proves_the_identity_it_was_made_from() {
        let who = Identity::from_seed(11);
        let (cert, _key) = self_signed(&who).unwrap();
        assert_eq!(node_id_from_cert(&cert), Some(who.node_id()));
        assert_eq!(node_id_from_cert(b"not a certificate"), None);
        let mut broken = cert.to_vec();
        let n = broken.len();
        broken.truncate(n - 10);
        assert_eq!(node_id_from_cert(&broken), None);
    }
}
