//! Mutual TLS between raft members: a cluster whose members hold certificates from one CA
//! works; a peer with a certificate from another CA, or with none, is refused.

mod common;

use std::path::Path;
use std::time::Duration;

use common::raft_cluster::{Cluster, within};
use failover::config::TlsConfig;
use failover::coord::Coordinator;
use failover::coord::raft::RaftOptions;
use failover::proto::v1::RaftBatch;
use failover::proto::v1::peer_client::PeerClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate naming `member` (as a DNS SAN) and its private key, both PEM.
    fn issue(&self, member: &str) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(vec![member.to_string(), "127.0.0.1".to_string()]).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA, a certificate for `member` and its key (mode 0600) into `dir`.
    fn write(&self, member: &str, dir: &Path) -> TlsConfig {
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

const NAMES: [&str; 3] = ["a", "b", "c"];

async fn call_raft(port: u16, trust: &Ca, identity: Option<(String, String)>) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(trust.pem())).domain_name("a");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    PeerClient::new(channel)
        .raft(RaftBatch { from: 2, messages: vec![] })
        .await
        .map(|_| ())
        .map_err(|e| format!("call: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_mutual_tls_refuses_a_peer_from_another_ca() {
    let ca = Ca::new("failoverd test cluster");
    let c = Cluster::start_with(3, RaftOptions::default(), |i, dir| Some(ca.write(NAMES[i], &dir.join("tls")))).await;
    c.leader(Duration::from_secs(10)).await;
    let lease = c.node(1).acquire(&c.member(1), within(Duration::from_secs(5))).await.expect("grant over TLS");
    assert_eq!(c.node(0).lease(within(Duration::from_secs(5))).await.expect("read").holder(), Some(&lease.holder));

    // A member certificate from the cluster's CA is accepted.
    call_raft(c.ports[0], &ca, Some(ca.issue("b"))).await.expect("a cluster certificate is accepted");
    // The same name from another CA is refused, and so is a client without a certificate.
    let rogue = Ca::new("someone else");
    let refused = call_raft(c.ports[0], &ca, Some(rogue.issue("b"))).await;
    assert!(refused.is_err(), "a certificate from another CA was accepted");
    let anonymous = call_raft(c.ports[0], &ca, None).await;
    assert!(anonymous.is_err(), "a client without a certificate was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_with_a_certificate_from_another_ca_cannot_join() {
    let ca = Ca::new("failoverd test cluster");
    let rogue = Ca::new("someone else");
    // Member c trusts only the rogue CA and presents a rogue certificate.
    let c = Cluster::start_with(3, RaftOptions::default(), |i, dir| {
        Some(if i == 2 { rogue.write(NAMES[i], &dir.join("tls")) } else { ca.write(NAMES[i], &dir.join("tls")) })
    })
    .await;
    let leader = c.leader_among(&[0, 1], Duration::from_secs(10)).await;
    assert!(leader < 2);
    let info = c.node(2).wait_info(within(Duration::from_secs(2)), |i| i.leader.is_some()).await;
    assert!(info.is_none(), "the rogue member heard from a leader: {:?}", c.node(2).info());
}
