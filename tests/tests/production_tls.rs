//! Production TLS: a seed presenting a certificate signed by the configured CA for the name it is
//! dialed by is admitted; one signed by another CA, or valid for another host name, is refused
//! with a message naming the cause; dials by node id still need no CA.

use macula_mesh::{Mesh, MeshConfig, MeshError, Runtime};
use macula_proto::quic::tls::{DevCa, ProductionTls, TlsMode};
use macula_proto::{CertificateProblem, ConnectFailure, Identity, LinkError};
use macula_tests::{config, node, on_both_runtimes};

on_both_runtimes!(
    a_seed_with_a_certificate_for_its_name_is_admitted,
    a_certificate_from_another_ca_or_for_another_name_is_refused,
);

/// A node of realm `io.tls` presenting `identity`, in production mode trusting `ca`, serving
/// `chain` (empty: its self-signed certificate).
async fn production<R: Runtime>(
    ca: &DevCa,
    identity: Identity,
    chain: Vec<macula_proto::quic::tls::CertificateDer<'static>>,
    verify_hostname: bool,
) -> anyhow::Result<Mesh<R>> {
    let mut tls = ProductionTls::new(vec![ca.cert_der()]);
    tls.chain = chain;
    tls.verify_hostname = verify_hostname;
    let mut mesh = MeshConfig::new(config("io.tls", None), "127.0.0.1:0".parse()?);
    mesh.identity = Some(identity);
    mesh.tls = TlsMode::Production(tls);
    Ok(Mesh::<R>::bind(mesh).await?)
}

/// A seed for `host` with a certificate from `ca`.
async fn seed<R: Runtime>(ca: &DevCa, host: &str, key: u64) -> anyhow::Result<Mesh<R>> {
    let identity = Identity::from_seed(key);
    let (cert, _) = ca.issue(&identity, host)?;
    production::<R>(ca, identity, vec![cert], true).await
}

async fn a_seed_with_a_certificate_for_its_name_is_admitted<R: Runtime>() -> anyhow::Result<()> {
    let ca = DevCa::generate()?;
    let seed = seed::<R>(&ca, "seed.test", 1).await?;
    let port = seed.local_addr().port();
    let member = production::<R>(&ca, Identity::from_seed(11), Vec::new(), true).await?;
    let name = format!("seed.test:{port}");
    assert_eq!(
        member.connect_name(&name, seed.local_addr()).await?,
        seed.node_id()
    );
    // The seed dials the member back by id: a self-signed certificate is enough for that.
    member.disconnect(seed.node_id()).await?;
    assert_eq!(
        seed.connect_to(member.local_addr(), Some(member.node_id()))
            .await?,
        member.node_id()
    );
    // A development-mode node dials the seed too: it checks the key, not the CA.
    let dev = node::<R>(config("io.tls", None)).await?;
    assert_eq!(dev.connect(seed.local_addr()).await?, seed.node_id());
    Ok(())
}

fn certificate_problem(err: &MeshError) -> Option<CertificateProblem> {
    match err {
        MeshError::Connect {
            failure: ConnectFailure::Link(LinkError::Certificate(problem)),
            ..
        } => Some(*problem),
        _ => None,
    }
}

async fn a_certificate_from_another_ca_or_for_another_name_is_refused<R: Runtime>(
) -> anyhow::Result<()> {
    let ca = DevCa::generate()?;
    let member = production::<R>(&ca, Identity::from_seed(12), Vec::new(), true).await?;
    // Signed by a CA the member does not trust.
    let stranger = DevCa::generate()?;
    let impostor = seed::<R>(&stranger, "seed.test", 2).await?;
    let name = format!("seed.test:{}", impostor.local_addr().port());
    let err = member
        .connect_name(&name, impostor.local_addr())
        .await
        .expect_err("a certificate from an unknown CA");
    assert_eq!(
        certificate_problem(&err),
        Some(CertificateProblem::UnknownIssuer),
        "{err}"
    );
    assert!(err.to_string().contains("unknown issuer"), "{err}");
    // Signed by the right CA, for another host.
    let other = seed::<R>(&ca, "other.test", 3).await?;
    let name = format!("seed.test:{}", other.local_addr().port());
    let err = member
        .connect_name(&name, other.local_addr())
        .await
        .expect_err("a certificate for another name");
    assert_eq!(
        certificate_problem(&err),
        Some(CertificateProblem::WrongName),
        "{err}"
    );
    assert!(err.to_string().contains("wrong host name"), "{err}");
    // A node that presents only its self-signed certificate is no seed either.
    let plain = node::<R>(config("io.tls", None)).await?;
    let name = format!("seed.test:{}", plain.local_addr().port());
    let err = member
        .connect_name(&name, plain.local_addr())
        .await
        .expect_err("no CA-signed certificate");
    assert!(certificate_problem(&err).is_some(), "{err}");
    // With host names unchecked, the right CA is enough.
    let lax = production::<R>(&ca, Identity::from_seed(13), Vec::new(), false).await?;
    let name = format!("seed.test:{}", other.local_addr().port());
    assert_eq!(
        lax.connect_name(&name, other.local_addr()).await?,
        other.node_id()
    );
    assert_eq!(member.stats().await?.node.peers, 0);
    Ok(())
}
