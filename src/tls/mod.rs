//! Who is on the other end of a TLS connection (DESIGN.md §4, trust model), and the certificates
//! that say so.
//!
//! A failoverd certificate names exactly one identity, as a URI subject alternative name in one
//! of two namespaces: `failoverd://member/<id>` for a member of the cluster, and
//! `failoverd://operator/<name>` for a person or tool that drives it. The peer port accepts only
//! members and takes the sender's id from here; the TCP control API accepts only operators.
//! [`identity_of`] reads that name from a verified certificate; [`CertificateAuthority`] makes a
//! cluster's CA and issues its members' and operators' certificates (`failoverd tls …`).
//!
//! This module never decides what an identity may do (the peer service and the control API do).
//! Only the issuing half reads a private key: the CA's, and only when it is private to its owner.

mod identity;
mod issue;

pub use identity::{IdentityError, OperatorName, PeerIdentity, identity_of, member_uri, operator_uri};
pub use issue::{
    CA_STEM, CertificateAuthority, DEFAULT_CA_DAYS, DEFAULT_LEAF_DAYS, IssueError, Leaf, MAX_CA_DAYS, MAX_LEAF_DAYS,
    WrittenPair, check_ca_name, check_extra_dns_name, date_text, member_stem, operator_stem,
};
