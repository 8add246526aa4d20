//! The pool's certificate authority and the mutual-TLS configurations built
//! from it. Every endpoint holds a certificate signed by the pool CA; its role
//! (node or client) and id ride in a DNS subject-alternative name
//! `node-<id>.cairn` / `client-<name>.cairn`, which the server reads to
//! decide what the peer may ask.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// The name clients put in the TLS handshake; every node certificate
/// carries it, so clients need not know which node they reach by name.
pub const NODE_SERVER_NAME: &str = "node.cairn";

/// What a peer's certificate entitles it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Node(String),
    Client(String),
    /// No certificate: may only ask a node outside any pool to join one.
    Anonymous,
}

/// PEM texts of a CA certificate, and of a certificate and key signed by it.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A freshly made pool CA: certificate and private key (PEM).
pub fn create_ca(pool_id: &str) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate().context("generating the pool CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("cairn-pool-{pool_id}"));
    params.distinguished_name = dn;
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issues a certificate for `role`, signed by the CA given in PEM.
pub fn issue(ca_cert_pem: &str, ca_key_pem: &str, role: &Role) -> anyhow::Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key_pem).context("parsing the pool CA key")?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).context("parsing the pool CA")?;
    let (sans, usages, cn) = match role {
        Role::Node(id) => (
            vec![format!("node-{id}.cairn"), NODE_SERVER_NAME.to_string()],
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            format!("node-{id}"),
        ),
        Role::Client(name) => {
            check_client_name(name)?;
            (
                vec![format!("client-{name}.cairn")],
                vec![ExtendedKeyUsagePurpose::ClientAuth],
                format!("client-{name}"),
            )
        }
        Role::Anonymous => anyhow::bail!("an anonymous peer holds no certificate"),
    };
    let mut params = CertificateParams::new(sans)?;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn check_client_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 63 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        anyhow::bail!("invalid client name {name:?}: use 1-63 letters, digits or '-'");
    }
    Ok(())
}

/// Reads the role out of a peer's certificate chain (leaf first).
pub fn peer_role(chain: &[CertificateDer<'_>]) -> Option<Role> {
    let leaf = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
            if let Some(id) = dns.strip_prefix("node-").and_then(|s| s.strip_suffix(".cairn")) {
                return Some(Role::Node(id.to_string()));
            }
            if let Some(n) = dns.strip_prefix("client-").and_then(|s| s.strip_suffix(".cairn")) {
                return Some(Role::Client(n.to_string()));
            }
        }
    }
    None
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_parts(
    creds: &Credentials,
) -> anyhow::Result<(
    rustls::RootCertStore,
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
)> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(creds.ca_pem.as_bytes()) {
        roots.add(ca.context("parsing the CA certificate")?)?;
    }
    if roots.is_empty() {
        anyhow::bail!("no CA certificate found");
    }
    let chain = CertificateDer::pem_slice_iter(creds.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the certificate")?;
    if chain.is_empty() {
        anyhow::bail!("no certificate found");
    }
    let key = PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes()).context("parsing the private key")?;
    Ok((roots, chain, key))
}

/// TLS for a node's server side: a certificate a peer presents must be
/// signed by the pool CA. A peer may also present none: such a connection
/// is anonymous and may only ask a node outside any pool to join one
/// (`peer probe`); the server enforces that per request.
pub fn server_crypto(creds: &Credentials) -> anyhow::Result<rustls::ServerConfig> {
    let (roots, chain, key) = parse_parts(creds)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .context("building the client verifier")?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("loading the node certificate")?;
    tls.alpn_protocols = vec![crate::proto::ALPN.to_vec()];
    Ok(tls)
}

/// TLS for the client side: trusts only the pool CA, presents our certificate.
pub fn client_crypto(creds: &Credentials) -> anyhow::Result<rustls::ClientConfig> {
    let (roots, chain, key) = parse_parts(creds)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("loading the client certificate")?;
    tls.alpn_protocols = vec![crate::proto::ALPN.to_vec()];
    Ok(tls)
}

/// TLS for a `peer probe`'s join request: the node being probed still has
/// its own CA, so its certificate cannot be checked against ours, and ours
/// means nothing to it. The channel is encrypted but the peer unverified,
/// as gluster's probe trusts the address the administrator typed.
pub fn join_client_crypto() -> anyhow::Result<rustls::ClientConfig> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider())))
        .with_no_client_auth();
    tls.alpn_protocols = vec![crate::proto::ALPN.to_vec()];
    Ok(tls)
}

/// Accepts any server certificate, still checking the handshake signature
/// (the peer holds the key of the certificate it shows).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_their_role() {
        let (ca, ca_key) = create_ca("t").unwrap();
        let (cert, key) = issue(&ca, &ca_key, &Role::Node("abc".into())).unwrap();
        let der: Vec<_> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(peer_role(&der), Some(Role::Node("abc".into())));
        let creds = Credentials {
            ca_pem: ca.clone(),
            cert_pem: cert,
            key_pem: key,
        };
        server_crypto(&creds).unwrap();
        client_crypto(&creds).unwrap();
        let (cert, _) = issue(&ca, &ca_key, &Role::Client("m1".into())).unwrap();
        let der: Vec<_> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(peer_role(&der), Some(Role::Client("m1".into())));
        assert!(issue(&ca, &ca_key, &Role::Client("bad name".into())).is_err());
    }
}
