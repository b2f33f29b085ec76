//! TLS for Macula links: a self-signed certificate made from the node's Ed25519 identity, and
//! verifiers that accept any such certificate and derive the peer's [`NodeId`] from its key.
//!
//! Trust in a *particular* node is not decided here: the TLS handshake proves the peer holds the
//! key in its certificate, the node id is the hash of that key, and the [`Node`](crate::Node)
//! checks expected ids, realms and API keys above this layer.
//!
//! In [production mode](TlsMode::Production) a node can also serve a CA-signed chain (a public
//! seed node), and a dial to a name or address the user gave (not to a node id) must meet a
//! certificate that chains to the configured CAs and, unless turned off, is valid for the host
//! name dialed. The certificate's key is still the node's Ed25519 identity key, so the chain
//! proves the node id as the self-signed certificate does.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
pub use rustls::pki_types::CertificateDer;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::id::{Identity, NodeId};
use crate::node::CertificateProblem;

/// How a node's TLS treats certificates.
#[derive(Clone, Debug, Default)]
pub enum TlsMode {
    /// Every node presents a self-signed certificate made from its identity key, and any
    /// such certificate is accepted: the node checks the id it proves.
    #[default]
    Development,
    /// Dials to a name or address the user gave must meet a CA-signed certificate; the node
    /// may serve one.
    Production(ProductionTls),
}

/// Production mode's certificates.
#[derive(Clone, Debug)]
pub struct ProductionTls {
    /// The CAs that sign seed nodes' certificates.
    pub roots: Vec<CertificateDer<'static>>,
    /// This node's CA-signed chain, leaf first, whose key must be the node's identity key;
    /// empty to present the self-signed identity certificate (a node that is not a seed).
    pub chain: Vec<CertificateDer<'static>>,
    /// Whether a seed's certificate must be valid for the host name dialed. Default: yes.
    pub verify_hostname: bool,
}

impl ProductionTls {
    /// Production mode trusting `roots`, serving the self-signed certificate, checking host
    /// names.
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Self {
        ProductionTls {
            roots,
            chain: Vec::new(),
            verify_hostname: true,
        }
    }
}

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

/// `identity`'s key as PKCS#8 v1 DER (RFC 8410), as a TLS library reads it.
pub fn pkcs8_of(identity: &Identity) -> PrivatePkcs8KeyDer<'static> {
    let mut pkcs8 = Vec::with_capacity(48);
    pkcs8.extend_from_slice(&ED25519_PKCS8_PREFIX);
    pkcs8.extend_from_slice(&identity.secret());
    PrivatePkcs8KeyDer::from(pkcs8)
}

/// The identity whose key `der` holds: an Ed25519 PKCS#8 key, v1 or v2 (RFC 8410, RFC 5958:
/// with the public key, which must match, tagged `[1] IMPLICIT` or in the older explicit form).
/// `None` for anything else.
pub fn identity_from_pkcs8(der: &[u8]) -> Option<Identity> {
    // The forms differ in the outer length and the version byte only, up to the seed.
    let (head, rest) = der.split_at_checked(16)?;
    let (outer, version, public_tag): (u8, u8, &[u8]) = match head[1] {
        0x2e => (0x2e, 0x00, &[]),
        0x51 => (0x51, 0x01, &[0x81, 0x21, 0x00]),
        0x53 => (0x53, 0x01, &[0xa1, 0x23, 0x03, 0x21, 0x00]),
        _ => return None,
    };
    let mut expected = ED25519_PKCS8_PREFIX;
    expected[1] = outer;
    expected[4] = version;
    if head != expected {
        return None;
    }
    let (seed, tail) = rest.split_at_checked(32)?;
    let identity = Identity::from_secret(seed.try_into().ok()?);
    let public = tail.strip_prefix(public_tag)?;
    let public_ok = if version == 0 {
        public.is_empty()
    } else {
        public == identity.public_key()
    };
    public_ok.then_some(identity)
}

/// A self-signed certificate for `identity`, with its private key, in DER.
///
/// # Errors
/// [`rustls::Error::General`] if the certificate could not be made (it can't for a valid key).
pub fn self_signed(
    identity: &Identity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), rustls::Error> {
    let key_der = pkcs8_of(identity);
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

/// Every `CERTIFICATE` in PEM text, in order.
///
/// # Errors
/// A message if the text holds none, or one does not decode.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| alloc::format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE in it".into());
    }
    Ok(certs)
}

/// The identity whose Ed25519 key PEM text holds (a `PRIVATE KEY`, PKCS#8).
///
/// # Errors
/// A message if there is no such key, or it is not an Ed25519 key.
pub fn identity_from_pem(pem: &[u8]) -> Result<Identity, String> {
    use rustls::pki_types::pem::PemObject;
    let key = PrivatePkcs8KeyDer::from_pem_slice(pem)
        .map_err(|e| alloc::format!("no PKCS#8 PRIVATE KEY in it: {e}"))?;
    identity_from_pkcs8(key.secret_pkcs8_der()).ok_or_else(|| "the key is not Ed25519".into())
}

/// `identity`'s key as PEM (`PRIVATE KEY`, PKCS#8), as [`identity_from_pem`] reads it.
///
/// # Errors
/// [`rustls::Error::General`] if the key could not be encoded (it can't for a valid key).
pub fn identity_to_pem(identity: &Identity) -> Result<String, rustls::Error> {
    let key =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8_of(identity), &rcgen::PKCS_ED25519)
            .map_err(cert_error)?;
    Ok(key.serialize_pem())
}

fn cert_error(e: rcgen::Error) -> rustls::Error {
    rustls::Error::General(alloc::format!("certificate: {e}"))
}

/// A certificate authority for trying production mode out: it signs node certificates for
/// host names, each for a node's identity key. Not for production use: its key is kept in a
/// plain file.
#[allow(missing_debug_implementations)]
pub struct DevCa {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl DevCa {
    /// A new CA with a new key.
    ///
    /// # Errors
    /// [`rustls::Error::General`] if it could not be made.
    pub fn generate() -> Result<DevCa, rustls::Error> {
        let key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_error)?;
        DevCa::with_key(key)
    }

    /// The CA whose key is in `pem` (from [`DevCa::key_pem`]): its certificate is made anew,
    /// with the same name and key, so certificates it signs chain to the one written before.
    ///
    /// # Errors
    /// [`rustls::Error::General`] if the key does not decode.
    pub fn from_key_pem(pem: &str) -> Result<DevCa, rustls::Error> {
        DevCa::with_key(rcgen::KeyPair::from_pem(pem).map_err(cert_error)?)
    }

    fn with_key(key: rcgen::KeyPair) -> Result<DevCa, rustls::Error> {
        let mut params = rcgen::CertificateParams::new(Vec::<alloc::string::String>::new())
            .map_err(cert_error)?;
        // Named after its key, so two development CAs never share a name (a certificate
        // of one would otherwise be taken as the other's, with a bad signature).
        let digest = <sha2::Sha256 as sha2::Digest>::digest(key.public_key_raw());
        let mut name = String::from("Macula development CA ");
        for byte in &digest[..8] {
            let _ = core::fmt::Write::write_fmt(&mut name, format_args!("{byte:02x}"));
        }
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(cert_error)?;
        Ok(DevCa { key, cert })
    }

    /// The CA's certificate, as PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's certificate, as DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The CA's private key, as PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for `identity`'s key, valid for `host` (a DNS name or an IP address)
    /// and signed by this CA, as DER and as PEM.
    ///
    /// # Errors
    /// [`rustls::Error::General`] if `host` can't be a certificate name.
    pub fn issue(
        &self,
        identity: &Identity,
        host: &str,
    ) -> Result<(CertificateDer<'static>, String), rustls::Error> {
        let key =
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8_of(identity), &rcgen::PKCS_ED25519)
                .map_err(cert_error)?;
        let mut params = rcgen::CertificateParams::new(vec![host.into()]).map_err(cert_error)?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            alloc::format!("{}", identity.node_id()),
        );
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(cert_error)?;
        Ok((cert.der().clone(), cert.pem()))
    }
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

/// Production mode's check of a seed's certificate: it must chain to the configured CAs, be
/// valid for the host name dialed (unless turned off), and carry an Ed25519 node key.
#[derive(Debug)]
pub struct SeedVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    peer: PeerVerifier,
    verify_hostname: bool,
}

impl SeedVerifier {
    /// A verifier for `tls`'s CAs using `provider`.
    ///
    /// # Errors
    /// [`rustls::Error::General`] if no CA is given or one can't be used.
    pub fn new(tls: &ProductionTls, provider: Arc<CryptoProvider>) -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for root in &tls.roots {
            roots
                .add(root.clone())
                .map_err(|e| rustls::Error::General(alloc::format!("a CA certificate: {e}")))?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(alloc::format!("the CA certificates: {e}")))?;
        Ok(SeedVerifier {
            webpki,
            peer: PeerVerifier::new(provider),
            verify_hostname: tls.verify_hostname,
        })
    }

    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.peer.signature(message, cert, dss)
    }
}

/// What a TLS alert this node raised while checking a certificate says about it, with the
/// error's text (quinn reports a local TLS failure as the alert and rustls's message).
pub fn certificate_problem(alert: u8, reason: &str) -> CertificateProblem {
    match alert {
        48 => CertificateProblem::UnknownIssuer,
        45 => CertificateProblem::Expired,
        _ if reason.contains("not valid for name") || reason.contains("NotValidForName") => {
            CertificateProblem::WrongName
        }
        _ if reason.contains("expired") || reason.contains("not valid yet") => {
            CertificateProblem::Expired
        }
        _ => CertificateProblem::Invalid,
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

impl ServerCertVerifier for SeedVerifier {
    handshake_signature_methods!();

    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.peer.check(end_entity)?;
        // The chain is checked before the name: a name error means the chain was good.
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.verify_hostname => Ok(ServerCertVerified::assertion()),
            other => other,
        }
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

    #[test]
    fn identity_keys_read_back_from_pkcs8_v1_v2_and_pem() {
        let who = Identity::from_seed(12);
        let v1 = pkcs8_of(&who);
        let read = identity_from_pkcs8(v1.secret_pkcs8_der()).unwrap();
        assert_eq!(read.node_id(), who.node_id());
        // ring writes v2 (with the public key).
        let rng = ring::rand::SystemRandom::new();
        let v2 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let from_v2 = identity_from_pkcs8(v2.as_ref()).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(v2.as_ref()).unwrap();
        use ring::signature::KeyPair;
        assert_eq!(&from_v2.public_key()[..], pair.public_key().as_ref());
        let mut wrong_public = v2.as_ref().to_vec();
        let last = wrong_public.len() - 1;
        wrong_public[last] ^= 1;
        assert!(identity_from_pkcs8(&wrong_public).is_none());
        assert!(identity_from_pkcs8(&v1.secret_pkcs8_der()[..40]).is_none());
        let pem = identity_to_pem(&who).unwrap();
        assert_eq!(
            identity_from_pem(pem.as_bytes()).unwrap().node_id(),
            who.node_id()
        );
        assert!(identity_from_pem(b"not pem").is_err());
    }

    fn seed_verifier(ca: &DevCa, verify_hostname: bool) -> SeedVerifier {
        let mut tls = ProductionTls::new(vec![ca.cert_der()]);
        tls.verify_hostname = verify_hostname;
        SeedVerifier::new(&tls, provider()).unwrap()
    }

    fn verify(
        v: &SeedVerifier,
        cert: &CertificateDer<'_>,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn seeds_are_verified_against_the_ca_and_the_host_name() {
        let ca = DevCa::generate().unwrap();
        let seed = Identity::from_seed(13);
        let (cert, pem) = ca.issue(&seed, "seed.test").unwrap();
        assert_eq!(
            node_id_from_cert(&cert),
            Some(seed.node_id()),
            "the chain proves the id"
        );
        assert_eq!(
            certificates_from_pem(pem.as_bytes()).unwrap(),
            vec![cert.clone()]
        );
        let checking = seed_verifier(&ca, true);
        assert!(verify(&checking, &cert, "seed.test").is_ok());
        let wrong_name = verify(&checking, &cert, "other.test").unwrap_err();
        assert!(
            wrong_name.to_string().contains("not valid for name"),
            "{wrong_name}"
        );
        assert!(verify(&seed_verifier(&ca, false), &cert, "other.test").is_ok());
        let stranger = DevCa::generate().unwrap();
        let (foreign, _) = stranger.issue(&seed, "seed.test").unwrap();
        let unknown = verify(&checking, &foreign, "seed.test").unwrap_err();
        assert_eq!(
            unknown,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        );
        // A self-signed identity certificate is not a seed's.
        let (own, _) = self_signed(&seed).unwrap();
        assert!(verify(&checking, &own, "seed.test").is_err());
        // A CA rebuilt from its key signs certificates that chain to the one written first.
        let again = DevCa::from_key_pem(&ca.key_pem()).unwrap();
        let (later, _) = again.issue(&Identity::from_seed(14), "seed.test").unwrap();
        assert!(verify(&checking, &later, "seed.test").is_ok());
    }

    #[test]
    fn refusals_are_told_apart_by_their_alert_and_text() {
        assert_eq!(
            certificate_problem(48, ""),
            CertificateProblem::UnknownIssuer
        );
        let text = "invalid peer certificate: certificate not valid for name \"a\"";
        assert_eq!(certificate_problem(42, text), CertificateProblem::WrongName);
        assert_eq!(certificate_problem(45, ""), CertificateProblem::Expired);
        assert_eq!(
            certificate_problem(42, "BadEncoding"),
            CertificateProblem::Invalid
        );
    }
}
