//! Dialling a member over mutual TLS: the connection is kept only when the server's
//! certificate chains to the cluster's CA *and* names the member we meant to reach
//! (`failoverd://member/<id>`), or any member when the caller does not care which (failoverctl
//! talking to "a member"). Host names play no part: a member's identity is its URI, so a
//! member reached through NAT, a load balancer or a Kubernetes service is still checked.
//!
//! This module only sets up connections; it never decides what the peer may do once connected.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::material::TlsMaterial;
use super::{PeerIdentity, identity_of};
use crate::domain::MemberId;

/// The server name sent in the TLS handshake. It is not checked (see the module doc); one
/// constant keeps member ids that are not DNS names (`a_1`) usable.
const SNI: &str = "member.failoverd.invalid";

/// Accepts a server certificate that chains to the CA and names a member (a given one, or any).
#[derive(Debug)]
pub struct MemberServerVerifier {
    roots: Arc<rustls::RootCertStore>,
    expected: Option<MemberId>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for MemberServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let identity = identity_of(end_entity.as_ref()).map_err(|e| rustls::Error::General(e.to_string()))?;
        match (&identity, &self.expected) {
            (PeerIdentity::Member(id), Some(want)) if id == want => Ok(ServerCertVerified::assertion()),
            (PeerIdentity::Member(_), None) => Ok(ServerCertVerified::assertion()),
            (found, Some(want)) => Err(rustls::Error::General(format!(
                "the server's certificate names {found}, not member {want}: check peer_address of member {want}"
            ))),
            (found, None) => Err(rustls::Error::General(format!(
                "the server's certificate names {found}; only members serve this API"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls client config that presents `material`'s certificate and accepts only `expected`
/// (or any member), speaking HTTP/2.
pub fn client_config(
    material: &TlsMaterial,
    expected: Option<MemberId>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        MemberServerVerifier { roots: Arc::new(material.roots()?), expected, provider: Arc::clone(&provider) };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(material.chain.clone(), material.key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A tonic connector: TCP readied as a member link (no Nagle, the kernel's dead-link watch),
/// then the TLS handshake with `config`. Members dial each other with it, and so do failoverctl
/// and the lab's rogue peer: a short call neither gains nor loses by the watch.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl TlsConnector {
    pub fn new(config: rustls::ClientConfig) -> TlsConnector {
        TlsConnector { config: Arc::new(config) }
    }
}

type Connected = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower::Service<http::Uri> for TlsConnector {
    type Response = Connected;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Connected, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = Arc::clone(&self.config);
        Box::pin(async move {
            let (host, port) = crate::link_watch::host_and_port(&uri, 443);
            let tcp = crate::link_watch::dial_member_link(&host, port).await?;
            let name = ServerName::try_from(SNI).map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}
