//! A test PKI (rcgen): a CA that issues member certificates (DNS SAN = member id, plus
//! 127.0.0.1) and operator certificates (a common name), written as PEM files.
#![allow(dead_code)]

use std::path::Path;

use failover::config::TlsConfig;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

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

impl Ca {
    /// A client certificate with common name `cn` (an operator), and its key, both PEM.
    pub fn issue_client(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![cn.to_string()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}
