//! A lab's PKI: one CA, a certificate per member and per operator, written with failoverd's own
//! issuing code (the files `failoverd tls` writes), so that lab members talk mutual TLS exactly
//! as production members do.
//!
//! It writes files only; which member uses which is the config's business.

use std::path::Path;
use std::time::Duration;

use crate::config::TlsConfig;
use crate::domain::MemberId;
use crate::tls::{ClusterFiles, OperatorName};

use super::LabError;

/// What [`write`] wrote.
pub struct Certificates {
    /// Everything, with the CA to issue more (a late member, a second operator).
    pub files: ClusterFiles,
    /// Each member's `[tls]`, in the order the members were given.
    pub members: Vec<TlsConfig>,
    /// Each operator's certificate and key (with the CA), in the order given.
    pub operators: Vec<TlsConfig>,
}

/// Writes a CA named `cluster`, `member-<id>.pem/.key` for each of `members` and
/// `operator-<name>.pem/.key` for each of `operators` into `dir`, valid for `valid_for`.
pub fn write(
    dir: &Path,
    cluster: &str,
    members: &[&str],
    operators: &[&str],
    valid_for: Duration,
) -> Result<Certificates, LabError> {
    let refused = |reason: String| LabError::Certificates { dir: dir.to_path_buf(), reason };
    let ids: Vec<MemberId> =
        members.iter().map(|m| MemberId::new(*m)).collect::<Result<_, _>>().map_err(|e| refused(e.to_string()))?;
    let names: Vec<OperatorName> = operators
        .iter()
        .map(|o| OperatorName::new(*o))
        .collect::<Result<_, _>>()
        .map_err(|e| refused(e.to_string()))?;
    let files =
        crate::tls::write_cluster_files(dir, cluster, &ids, &names, valid_for).map_err(|e| refused(e.to_string()))?;
    let members = ids
        .iter()
        .map(|id| {
            files.members.get(id).cloned().ok_or_else(|| refused(format!("no certificate was written for member {id}")))
        })
        .collect::<Result<_, _>>()?;
    let operators = names
        .iter()
        .map(|o| {
            files
                .operators
                .get(o)
                .cloned()
                .ok_or_else(|| refused(format!("no certificate was written for operator {o}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Certificates { files, members, operators })
}
