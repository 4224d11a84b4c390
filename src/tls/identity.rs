//! The identity a certificate names, read from its URI subject alternative names.
//!
//! Exactly one `failoverd://` URI is allowed: a certificate that names two identities, or
//! none, is refused, so that nobody can hold a certificate that is a member on one port and an
//! operator on another. Other SANs (DNS names, IP addresses) are ignored here: they only matter
//! to tools that check host names.

use std::fmt;

use x509_parser::extensions::GeneralName;

use crate::domain::{MemberId, MemberIdError};

const MEMBER_PREFIX: &str = "failoverd://member/";
const OPERATOR_PREFIX: &str = "failoverd://operator/";
const SCHEME: &str = "failoverd://";

/// An operator's name in its certificate. Same alphabet and length as a member id, so it is
/// safe in a log line or a metric label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperatorName(MemberId);

impl OperatorName {
    pub fn new(s: impl Into<String>) -> Result<OperatorName, MemberIdError> {
        MemberId::new(s).map(OperatorName)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for OperatorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a verified certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    Member(MemberId),
    Operator(OperatorName),
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerIdentity::Member(id) => write!(f, "member {id}"),
            PeerIdentity::Operator(name) => write!(f, "operator {name}"),
        }
    }
}

/// Why a certificate names no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate does not parse as X.509: {0}")]
    NotX509(String),
    #[error(
        "the certificate names no failoverd identity (no failoverd://member/… or failoverd://operator/… URI); \
         make certificates with `failoverd tls member ID` or `failoverd tls operator NAME`"
    )]
    Missing,
    #[error("the certificate names more than one failoverd identity ({0}); a certificate must name exactly one")]
    Ambiguous(String),
    #[error("the certificate's identity {uri:?} is not valid: {reason}")]
    Invalid { uri: String, reason: String },
}

/// The URI SAN that names member `id`.
pub fn member_uri(id: &MemberId) -> String {
    format!("{MEMBER_PREFIX}{id}")
}

/// The URI SAN that names operator `name`.
pub fn operator_uri(name: &OperatorName) -> String {
    format!("{OPERATOR_PREFIX}{name}")
}

/// The one failoverd identity that the DER certificate `der` names. Call it only on a
/// certificate whose chain was verified against the cluster's CA: this reads, it does not trust.
pub fn identity_of(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::NotX509(e.to_string()))?;
    let sans = cert.subject_alternative_name().map_err(|e| IdentityError::NotX509(e.to_string()))?;
    let uris: Vec<&str> = sans
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .filter(|uri| uri.len() >= SCHEME.len() && uri[..SCHEME.len()].eq_ignore_ascii_case(SCHEME))
        .collect();
    match uris.as_slice() {
        [] => Err(IdentityError::Missing),
        [uri] => parse_uri(uri),
        many => Err(IdentityError::Ambiguous(many.join(", "))),
    }
}

fn parse_uri(uri: &str) -> Result<PeerIdentity, IdentityError> {
    let invalid = |reason: String| IdentityError::Invalid { uri: uri.to_string(), reason };
    if let Some(id) = uri.strip_prefix(MEMBER_PREFIX) {
        return MemberId::new(id).map(PeerIdentity::Member).map_err(|e| invalid(e.to_string()));
    }
    if let Some(name) = uri.strip_prefix(OPERATOR_PREFIX) {
        return OperatorName::new(name).map(PeerIdentity::Operator).map_err(|e| invalid(e.to_string()));
    }
    Err(invalid("expected failoverd://member/ID or failoverd://operator/NAME".into()))
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::*;

    /// A self-signed certificate with these URI SANs (and one DNS name, which never counts).
    fn cert_with(uris: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["host.example".to_string()]).expect("params");
        for uri in uris {
            params.subject_alt_names.push(SanType::URI((*uri).try_into().expect("ia5 string")));
        }
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("certificate").der().to_vec()
    }

    fn member(s: &str) -> PeerIdentity {
        PeerIdentity::Member(MemberId::new(s).expect("id"))
    }

    #[test]
    fn a_certificate_names_a_member_or_an_operator_never_both() {
        let cases: &[(&[&str], Result<PeerIdentity, &str>)] = &[
            (&["failoverd://member/a"], Ok(member("a"))),
            (&["failoverd://operator/alice"], Ok(PeerIdentity::Operator(OperatorName::new("alice").expect("name")))),
            (&["spiffe://example.org/a", "failoverd://member/b"], Ok(member("b"))),
            (&[], Err("no failoverd identity")),
            (&["https://failoverd.example/member/a"], Err("no failoverd identity")),
            (&["failoverd://member/a", "failoverd://operator/a"], Err("more than one")),
            (&["failoverd://member/a", "failoverd://member/b"], Err("more than one")),
            (&["failoverd://member/"], Err("must not be empty")),
            (&["failoverd://member/a/b"], Err("only letters")),
            (&["failoverd://witness/c"], Err("expected failoverd://member/ID")),
            (&["FAILOVERD://member/a"], Err("expected failoverd://member/ID")),
        ];
        for (uris, want) in cases {
            let got = identity_of(&cert_with(uris));
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{uris:?}"),
                (Err(fragment), Err(e)) => assert!(e.to_string().contains(fragment), "{uris:?}: {e}"),
                _ => panic!("{uris:?}: expected {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn bytes_that_are_not_a_certificate_are_refused() {
        assert!(matches!(identity_of(b"not a certificate"), Err(IdentityError::NotX509(_))));
        let mut truncated = cert_with(&["failoverd://member/a"]);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(identity_of(&truncated), Err(IdentityError::NotX509(_))));
    }
}
