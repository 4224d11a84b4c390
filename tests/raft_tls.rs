//! Mutual TLS between raft members, in one process: members whose certificates come from the
//! cluster's CA form a quorum; a peer with a certificate from another CA, or with none, is
//! refused at the handshake; a member configured with a certificate that names someone else
//! does not start; a member whose certificate comes from another CA cannot join.

mod common;

use std::time::Duration;

use common::pki::write_cluster;
use common::raft_cluster::{Cluster, within};
use failover::coord::Coordinator;
use failover::coord::raft::{RaftCoordinator, RaftOptions, StartError};
use failover::sim::rogue_peer::{Answer, RoguePeer};
use failover::tls::TlsMaterial;

fn material(tls: &failover::config::TlsConfig) -> TlsMaterial {
    TlsMaterial::load(tls).expect("test certificates load")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_mutual_tls_refuses_a_peer_from_another_ca_or_without_a_certificate() {
    let c = Cluster::start(3).await;
    c.leader(Duration::from_secs(10)).await;
    let lease = c.node(1).acquire(&c.member(1), within(Duration::from_secs(5))).await.expect("grant over TLS");
    assert_eq!(c.node(0).lease(within(Duration::from_secs(5))).await.expect("read").holder(), Some(&lease.holder));
    let address = format!("127.0.0.1:{}", c.ports[0]);

    // Member b's certificate from the cluster's CA is accepted (an empty batch from b).
    let b = RoguePeer::connect(&address, Some(&material(&c.pki.member("b"))), true).await;
    assert_eq!(b.send_bytes(2, vec![]).await, Answer::Accepted);

    // The same member name from another CA, a client without a certificate, and plaintext on a
    // TLS port never get a request through.
    let rogue_dir = tempfile::tempdir().expect("dir");
    let rogue = write_cluster(rogue_dir.path(), &["b"], &[]);
    for (what, peer) in [
        ("another CA", RoguePeer::connect(&address, Some(&material(&rogue.member("b"))), true).await),
        ("no certificate", RoguePeer::connect(&address, None, true).await),
        ("plaintext", RoguePeer::connect(&address, None, false).await),
    ] {
        let answer = peer.send_bytes(2, vec![]).await;
        assert!(matches!(answer, Answer::Unreachable(_)), "{what}: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_with_a_certificate_from_another_ca_cannot_join() {
    let rogue_dir = tempfile::tempdir().expect("dir");
    let rogue = write_cluster(rogue_dir.path(), &["c"], &[]);
    // Member c trusts only the rogue CA and presents a rogue certificate.
    let c = Cluster::start_with(3, RaftOptions::default(), |i, _| (i == 2).then(|| rogue.member("c"))).await;
    let leader = c.leader_among(&[0, 1], Duration::from_secs(10)).await;
    assert!(leader < 2);
    let info = c.node(2).wait_info(within(Duration::from_secs(2)), |i| i.leader.is_some()).await;
    assert!(info.is_none(), "the rogue member heard from a leader: {:?}", c.node(2).info());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_configured_with_another_identitys_certificate_does_not_start() {
    let (_dir, pki) = common::raft_cluster::cluster_pki();
    let data = tempfile::tempdir().expect("dir");
    let ports = [common::lab::free_port(), common::lab::free_port(), common::lab::free_port()];
    for (what, tls, names) in [
        ("member b's certificate", pki.member("b"), "member b"),
        ("an operator's certificate", pki.operators["ops"].clone(), "operator ops"),
    ] {
        let config = common::raft_cluster::member_config(0, &ports, &data.path().join("data"), &tls);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let refused = RaftCoordinator::start(&config, listener, RaftOptions::default()).await;
        match refused {
            Err(StartError::Tls(e)) => {
                let text = e.to_string();
                assert!(text.contains(names) && text.contains("failoverd tls member a"), "{what}: {text}");
            }
            Err(other) => panic!("{what}: refused for another reason: {other}"),
            Ok(_) => panic!("{what}: member a started with {names}'s certificate"),
        }
    }
}
