//! A whole cluster's certificate files in one directory, made in-process: what the demo, the
//! chaos lab and the tests use, and what `failoverd tls ca` followed by one `failoverd tls
//! member` per member and one `failoverd tls operator` per operator would write.
//!
//! Never used by a running member: members only read certificates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
/// valid for `valid_for`. Member certificates also name 127.0.0.1 and `localhost`, for tools
/// that check the host they dialled on loopback.
pub fn write_cluster_files(
    dir: &Path,
    name: &str,
    members: &[MemberId],
    operators: &[OperatorName],
    valid_for: Duration,
) -> Result<ClusterFiles, IssueError> {
    // The CA outlives its leaves by a day: a leaf may never outlive its CA, and the leaves are
    // made a moment after it.
    let ca = CertificateAuthority::create(name, valid_for + Duration::from_secs(86_400))?;
    let ca_file = ca.write(dir)?.cert;
    let loopback = [std::net::IpAddr::from([127, 0, 0, 1])];
    let tls = |pair: super::issue::WrittenPair| TlsConfig {
        ca_file: ca_file.clone(),
        cert_file: pair.cert,
        key_file: pair.key,
    };
    let mut files = BTreeMap::new();
    for id in members {
        let leaf = ca.issue_member(id, &["localhost".to_string()], &loopback, valid_for)?;
        files.insert(id.clone(), tls(leaf.write_pair(dir, &member_stem(id))?));
    }
    let mut operator_files = BTreeMap::new();
    for op in operators {
        let leaf = ca.issue_operator(op, valid_for)?;
        operator_files.insert(op.clone(), tls(leaf.write_pair(dir, &operator_stem(op))?));
    }
    Ok(ClusterFiles { ca, ca_file: ca_file.clone(), members: files, operators: operator_files })
}
