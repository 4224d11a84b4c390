//! A whole cluster's certificate files in one directory, made in-process: what the demo, the
//! chaos lab and the tests use, and what `failoverd tls ca` followed by one `failoverd tls
//! member` per member and one `failoverd tls operator` per operator would write.
//!
//! Never used by a running member: members only read certificates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::identity::OperatorName;
use super::issue::{CertificateAuthority, IssueError, member_stem, operator_stem};
use crate::config::TlsConfig;
use crate::domain::MemberId;

/// The files written, as the `[tls]` section each identity would use.
pub struct ClusterFiles {
    /// The CA that issued them, to issue more (a late member, a second operator).
    pub ca: CertificateAuthority,
    /// `ca.pem`.
    pub ca_file: PathBuf,
    pub members: BTreeMap<MemberId, TlsConfig>,
    pub operators: BTreeMap<OperatorName, TlsConfig>,
}

/// Creates a CA named `name` and a certificate for each member and operator in `dir`, all
/// valid for `valid_for` (a certificate issued in a later second than the CA ends when the CA
/// does, since no certificate may outlive its CA). Member certificates also name 127.0.0.1 and
/// `localhost`, for tools that check the host they dialled on loopback.
pub fn write_cluster_files(
    dir: &Path,
    name: &str,
    members: &[MemberId],
    operators: &[OperatorName],
    valid_for: Duration,
) -> Result<ClusterFiles, IssueError> {
    let ca = CertificateAuthority::create(name, valid_for)?;
    let ca_file = ca.write(dir)?.cert;
    let loopback = [std::net::IpAddr::from([127, 0, 0, 1])];
    let tls = |pair: super::issue::WrittenPair| TlsConfig {
        ca_file: ca_file.clone(),
        cert_file: pair.cert,
        key_file: pair.key,
    };
    let mut files = BTreeMap::new();
    for id in members {
        let leaf = ca.issue_member(id, &["localhost".to_string()], &loopback, leaf_validity(&ca, valid_for))?;
        files.insert(id.clone(), tls(leaf.write_pair(dir, &member_stem(id))?));
    }
    let mut operator_files = BTreeMap::new();
    for op in operators {
        let leaf = ca.issue_operator(op, leaf_validity(&ca, valid_for))?;
        operator_files.insert(op.clone(), tls(leaf.write_pair(dir, &operator_stem(op))?));
    }
    Ok(ClusterFiles { ca, ca_file: ca_file.clone(), members: files, operators: operator_files })
}

/// `valid_for`, or less when that would outlive `ca`: validity is counted in whole seconds from
/// the second of issue, so a leaf issued in the second after its CA, for as long, would end a
/// second after the CA and be refused.
fn leaf_validity(ca: &CertificateAuthority, valid_for: Duration) -> Duration {
    // A CA that has already ended is left for the issuer to refuse, naming its end.
    ca.not_after().duration_since(SystemTime::now()).map_or(valid_for, |left| left.min(valid_for))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn a_certificate_issued_in_the_second_after_its_ca_ends_with_the_ca() {
        let valid_for = Duration::from_secs(86_400);
        let ca = CertificateAuthority::create("test", valid_for).expect("CA");
        // Into the next wall-clock second, so the leaf's validity counts from a later second
        // than the CA's (the moment to wait for is a time, not an event).
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
        std::thread::sleep(
            Duration::from_nanos(u64::from(1_000_000_000 - since_epoch.subsec_nanos())) + Duration::from_millis(5),
        );
        let id = MemberId::new("a").expect("id");
        let leaf = ca.issue_member(&id, &[], &[], leaf_validity(&ca, valid_for)).expect("issued within the CA's life");
        let end = |pem: &[u8]| {
            let der = CertificateDer::from_pem_slice(pem).expect("pem");
            let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
            (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp())
        };
        let (ca_start, ca_end) = end(ca.cert_pem().as_bytes());
        let (leaf_start, leaf_end) = end(leaf.cert_pem.as_bytes());
        assert!(leaf_start > ca_start, "the leaf was issued in the CA's second");
        assert!(leaf_end <= ca_end, "the leaf ends at {leaf_end}, after its CA at {ca_end}");
        // Without the cap the same issue is refused for outliving the CA.
        assert!(ca.issue_member(&id, &[], &[], valid_for).is_err(), "a full-length leaf outlived the CA");
    }
}
