//! A member's TLS files (`[tls]`), read once at start-up into what servers and clients need:
//! the cluster's CA, this member's certificate chain and its private key.
//!
//! Loading refuses a certificate that does not name exactly one failoverd identity, so a member
//! configured with an operator's certificate (or an old certificate without an identity) stops
//! at start-up with a message saying how to make the right one, instead of failing every
//! connection later.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{IdentityError, PeerIdentity, identity_of};
use crate::config::TlsConfig;

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFilesError {
    #[error("cannot read {what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what} {path} holds no usable PEM {expected}: {detail}")]
    Pem { what: &'static str, path: PathBuf, expected: &'static str, detail: String },
    #[error("{what} {path}: {source}")]
    Identity { what: &'static str, path: PathBuf, source: IdentityError },
    #[error(
        "{path} names {found}, but this process needs a certificate for {expected}; make one with \
         `failoverd tls {command}`"
    )]
    WrongIdentity { path: PathBuf, found: PeerIdentity, expected: String, command: String },
}

/// The contents of a `[tls]` section, parsed.
pub struct TlsMaterial {
    pub(crate) ca: Vec<CertificateDer<'static>>,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    pub(crate) ca_pem: Vec<u8>,
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) key_pem: Vec<u8>,
    /// Who the certificate says this process is.
    pub identity: PeerIdentity,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            ca_pem: self.ca_pem.clone(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
            identity: self.identity.clone(),
        }
    }
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TlsMaterial").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Reads the CA, the certificate and the key that `tls` names.
    pub fn load(tls: &TlsConfig) -> Result<TlsMaterial, TlsFilesError> {
        TlsMaterial::from_files(
            ("tls.ca_file", &tls.ca_file),
            ("tls.cert_file", &tls.cert_file),
            ("tls.key_file", &tls.key_file),
        )
    }

    /// Reads the three files, each given with the name an error should call it by (a config
    /// key, or a command-line flag).
    pub fn from_files(
        (ca_what, ca): (&'static str, &Path),
        (cert_what, cert): (&'static str, &Path),
        (key_what, key): (&'static str, &Path),
    ) -> Result<TlsMaterial, TlsFilesError> {
        let ca_pem = read(ca_what, ca)?;
        let cert_pem = read(cert_what, cert)?;
        let key_pem = read(key_what, key)?;
        let certs = |what, path: &Path, pem: &[u8]| -> Result<Vec<CertificateDer<'static>>, TlsFilesError> {
            let pem_error =
                |detail: String| TlsFilesError::Pem { what, path: path.to_path_buf(), expected: "certificate", detail };
            let list = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_error(e.to_string()))?;
            if list.is_empty() {
                return Err(pem_error("no CERTIFICATE block found".into()));
            }
            Ok(list)
        };
        let ca_certs = certs(ca_what, ca, &ca_pem)?;
        let chain = certs(cert_what, cert, &cert_pem)?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsFilesError::Pem {
            what: key_what,
            path: key.to_path_buf(),
            expected: "private key",
            detail: e.to_string(),
        })?;
        let identity = identity_of(chain[0].as_ref()).map_err(|source| TlsFilesError::Identity {
            what: cert_what,
            path: cert.to_path_buf(),
            source,
        })?;
        Ok(TlsMaterial { ca: ca_certs, chain, key: private_key, ca_pem, cert_pem, key_pem, identity })
    }

    /// Refuses the material unless its certificate names `expected`: a member must present its
    /// own member certificate, an operator tool an operator certificate.
    pub fn expect_member(&self, path: &Path, expected: &crate::domain::MemberId) -> Result<(), TlsFilesError> {
        match &self.identity {
            PeerIdentity::Member(id) if id == expected => Ok(()),
            other => Err(TlsFilesError::WrongIdentity {
                path: path.to_path_buf(),
                found: other.clone(),
                expected: format!("member {expected}"),
                command: format!("member {expected}"),
            }),
        }
    }

    /// Refuses the material unless its certificate names an operator.
    pub fn expect_operator(&self, path: &Path) -> Result<(), TlsFilesError> {
        match &self.identity {
            PeerIdentity::Operator(_) => Ok(()),
            other => Err(TlsFilesError::WrongIdentity {
                path: path.to_path_buf(),
                found: other.clone(),
                expected: "an operator".into(),
                command: "operator NAME".into(),
            }),
        }
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The CA as a rustls root store.
    pub(crate) fn roots(&self) -> Result<rustls::RootCertStore, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for der in &self.ca {
            roots.add(der.clone())?;
        }
        Ok(roots)
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsFilesError> {
    std::fs::read(path).map_err(|source| TlsFilesError::Read { what, path: path.to_path_buf(), source })
}

impl TlsMaterial {
    /// The server side for tonic: this member's certificate, and a client certificate that
    /// chains to the CA required at the handshake. Which identity a client may have is checked
    /// per call ([`caller_identity`](super::caller_identity)).
    pub fn tonic_server(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(tonic::transport::Certificate::from_pem(&self.ca_pem))
    }
}
