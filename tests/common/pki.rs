//! Test PKIs. [`write_cluster`] makes a whole cluster's certificates with failoverd's own issuing
//! code, the files `failoverd tls` writes: member certificates name `failoverd://member/<id>`,
//! operator certificates `failoverd://operator/<name>`.
//!
//! [`Ca`] makes certificates for other servers (rcgen directly): the Consul agent's, which names
//! a host, not a failoverd identity.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use failover::config::TlsConfig;
use failover::tls::CertificateAuthority;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// How long the test certificates are valid.
const TEST_VALIDITY: Duration = Duration::from_secs(7 * 86_400);

/// A cluster's certificate files, as `failoverd tls` writes them into one directory.
pub struct ClusterPki {
    /// The CA that issued them, to issue more (a late member, a second operator).
    pub ca: CertificateAuthority,
    pub dir: PathBuf,
    /// `ca.pem`.
    pub ca_file: PathBuf,
    /// Each member's `[tls]` section: `ca.pem`, `member-<id>.pem`, `member-<id>.key`.
    pub members: BTreeMap<String, TlsConfig>,
    /// Each operator's `operator-<name>.pem` and `.key`, with `ca.pem` as `ca_file`.
    pub operators: BTreeMap<String, TlsConfig>,
}

impl ClusterPki {
    /// Member `id`'s `[tls]` section.
    pub fn member(&self, id: &str) -> TlsConfig {
        self.members.get(id).unwrap_or_else(|| panic!("no certificate for member {id}")).clone()
    }
}

/// Writes a new CA (`ca.pem`, `ca.key`), `member-<id>.pem/.key` for each of `members` and
/// `operator-<name>.pem/.key` for each of `operators` into `dir`, with failoverd's own issuing code.
pub fn write_cluster(dir: &Path, members: &[&str], operators: &[&str]) -> ClusterPki {
    let written =
        failover::sim::lab::certificates::write(dir, "test", members, operators, TEST_VALIDITY).expect("certificates");
    let files = written.files;
    ClusterPki {
        ca_file: files.ca_file.clone(),
        dir: dir.to_path_buf(),
        members: files.members.iter().map(|(m, t)| (m.to_string(), t.clone())).collect(),
        operators: files.operators.iter().map(|(o, t)| (o.to_string(), t.clone())).collect(),
        ca: files.ca,
    }
}

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        Ca { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate naming `member` (as a DNS SAN) and its private key, both PEM.
    pub fn issue(&self, member: &str) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(vec![member.to_string(), "127.0.0.1".to_string()]).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA, a certificate for `member` and its key (mode 0600) into `dir`.
    pub fn write(&self, member: &str, dir: &Path) -> TlsConfig {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).expect("dir");
        let (cert, key) = self.issue(member);
        let tls = TlsConfig {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("member.pem"),
            key_file: dir.join("member.key"),
        };
        std::fs::write(&tls.ca_file, self.pem()).expect("write ca");
        std::fs::write(&tls.cert_file, cert).expect("write cert");
        std::fs::write(&tls.key_file, key).expect("write key");
        std::fs::set_permissions(&tls.key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        tls
    }
}

/// The `[tls]` section that uses `tls`'s files.
pub fn tls_section(tls: &TlsConfig) -> String {
    format!(
        "[tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        tls.ca_file.display(),
        tls.cert_file.display(),
        tls.key_file.display()
    )
}
