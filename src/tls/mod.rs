//! Who is on the other end of a TLS connection (docs/design.md §5, trust model), and the certificates
//! that say so.
//!
//! A failoverd certificate names exactly one identity, as a URI subject alternative name in one
//! of two namespaces: `failoverd://member/<id>` for a member of the cluster, and
//! `failoverd://operator/<name>` for a person or tool that drives it. The peer port accepts only
//! members and takes the sender's id from here; the TCP control API accepts only operators.
//! [`identity_of`] reads that name from a verified certificate; [`CertificateAuthority`] makes a
//! cluster's CA and issues its members' and operators' certificates (`failoverd tls …`);
//! [`TlsMaterial`] and [`client_config`] set up connections with them.
//!
//! This module never decides what an identity may do (the peer service and the control API do).
//! Only the issuing half reads a CA's private key, and only when it is private to its owner.

mod cluster_files;
mod dial;
mod identity;
mod issue;
mod material;

pub use cluster_files::{ClusterFiles, write_cluster_files};
pub use dial::{MemberServerVerifier, TlsConnector, client_config};
pub use identity::{IdentityError, OperatorName, PeerIdentity, identity_of, member_uri, operator_uri};
pub use issue::{
    CA_STEM, CertificateAuthority, DEFAULT_CA_DAYS, DEFAULT_LEAF_DAYS, IssueError, Leaf, MAX_CA_DAYS, MAX_LEAF_DAYS,
    WrittenPair, check_ca_name, check_extra_dns_name, date_text, member_stem, operator_stem,
};
pub use material::{TlsFilesError, TlsMaterial};

/// The identity of the caller of a tonic request: `None` on a connection without TLS (the unix
/// socket, or plaintext peers on loopback), else what its verified certificate names.
pub fn caller_identity<T>(request: &tonic::Request<T>) -> Option<Result<PeerIdentity, IdentityError>> {
    let certs = request.peer_certs()?;
    Some(match certs.first() {
        Some(der) => identity_of(der.as_ref()),
        None => Err(IdentityError::Missing),
    })
}
