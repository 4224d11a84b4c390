//! Mutual TLS between raft members: a cluster whose members hold certificates from one CA
//! works; a peer with a certificate from another CA, or with none, is refused.

mod common;

use std::time::Duration;

use common::pki::Ca;
use common::raft_cluster::{Cluster, within};
use failover::coord::Coordinator;
use failover::coord::raft::RaftOptions;
use failover::proto::v1::RaftBatch;
use failover::proto::v1::peer_client::PeerClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

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
