//! Who is on the other end of a TLS connection (DESIGN.md §4, trust model).
//!
//! A failoverd certificate names exactly one identity, as a URI subject alternative name in one
//! of two namespaces: `failoverd://member/<id>` for a member of the cluster, and
//! `failoverd://operator/<name>` for a person or tool that drives it. The peer port accepts only
//! members and takes the sender's id from here; the TCP control API accepts only operators.
//!
//! This module reads certificates; it never decides what an identity may do (the peer service
//! and the control API do) and never reads a private key.

mod identity;

pub use identity::{IdentityError, OperatorName, PeerIdentity, identity_of, member_uri, operator_uri};
