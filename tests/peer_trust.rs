//! The quorum trusts only its members (docs/design.md §5, trust model), checked on a running
//! 3-member raft cluster in this process with a hostile peer: forged snapshots (one voter that
//! takes the lease, a ConfState raft-rs panics on, a state that does not decode), a member
//! speaking for another member, an operator's certificate, spoofed statuses and a protobuf
//! group bomb. Each is refused and counted; no member panics, stops or changes its membership;
//! the member whose identity was spoofed is unaffected; and the lease stays where it was.

mod common;

use std::time::Duration;

use common::raft_cluster::{Cluster, within};
use failover::coord::Coordinator;
use failover::coord::raft::RaftOptions;
use failover::coord::raft::peer_gate::Refusal;
use failover::domain::{LeaseView, MemberId};
use failover::sim::rogue_peer::{self, Answer, ForgedSnapshot, RoguePeer};
use failover::tls::TlsMaterial;

const A: u64 = 1;
const B: u64 = 2;
const C: u64 = 3;

fn material(tls: &failover::config::TlsConfig) -> TlsMaterial {
    TlsMaterial::load(tls).expect("test certificates load")
}

/// A cluster with member a holding the lease, and how the store shows it.
async fn cluster_with_holder_a() -> (Cluster, LeaseView) {
    let c = Cluster::start(3).await;
    c.leader(Duration::from_secs(10)).await;
    let lease = loop {
        match c.node(0).acquire(&c.member(0), within(Duration::from_secs(2))).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let view = c.node(2).lease(within(Duration::from_secs(5))).await.expect("read");
    assert_eq!(view.holder(), Some(&lease.holder));
    (c, view)
}

/// Every member still agrees on one leader and on the lease `before`, and answers.
async fn cluster_unchanged(c: &Cluster, before: &LeaseView) {
    c.leader(Duration::from_secs(10)).await;
    for (i, node) in c.running() {
        assert_eq!(node.info().failed, None, "member {i}'s raft node failed");
        let view = node.lease(within(Duration::from_secs(5))).await.expect("member answers");
        assert_eq!(&view, before, "member {i} sees another lease");
    }
}

fn refused_with(answer: &Answer, code: tonic::Code, fragment: &str) {
    match answer {
        Answer::Refused { code: got, message } => {
            assert_eq!(*got, code, "{message}");
            assert!(message.contains(fragment), "expected {fragment:?} in: {message}");
        }
        other => panic!("expected a refusal ({code:?}, {fragment:?}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_snapshots_are_refused_and_no_member_changes_its_membership() {
    let (mut c, before) = cluster_with_holder_a().await;
    let target = format!("127.0.0.1:{}", c.ports[2]);
    let b = RoguePeer::connect(&target, Some(&material(&c.pki.member("b"))), true).await;
    let c_id = MemberId::new("c").expect("id");
    for kind in
        [ForgedSnapshot::SingleVoterTakeover, ForgedSnapshot::InvalidConfState, ForgedSnapshot::UndecodableState]
    {
        // From member b's own certificate, honestly signed as b: the transport takes it, the
        // snapshot check keeps it from raft.
        let forged = rogue_peer::forged_snapshot(kind, B, C, &[A, B, C], &c_id);
        assert_eq!(b.send(B, &forged).await, Answer::Accepted, "{kind:?}");
    }
    let refusals = c.node(2).peer_refusals();
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while refusals.count(Refusal::Snapshot) < 3 {
        assert!(tokio::time::Instant::now() < end, "only {} snapshots refused", refusals.count(Refusal::Snapshot));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster_unchanged(&c, &before).await;
    // Nothing of the undecodable snapshot reached c's disk: it starts again.
    c.crash(2).await;
    c.restart(2, RaftOptions::default()).await.expect("member c starts again");
    cluster_unchanged(&c, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_speaking_for_another_member_is_refused_and_the_spoofed_member_is_unaffected() {
    let (c, before) = cluster_with_holder_a().await;
    let target = format!("127.0.0.1:{}", c.ports[2]);
    let b = RoguePeer::connect(&target, Some(&material(&c.pki.member("b"))), true).await;
    let a_id = MemberId::new("a").expect("id");
    let c_id = MemberId::new("c").expect("id");

    // b's certificate, claiming to be a (the holder) in the batch, and inside it.
    let forged = rogue_peer::forged_snapshot(ForgedSnapshot::SingleVoterTakeover, A, C, &[A, B, C], &c_id);
    refused_with(&b.send(A, &forged).await, tonic::Code::PermissionDenied, "member b (by its certificate)");
    refused_with(&b.send(B, &forged).await, tonic::Code::InvalidArgument, "messages[0] claims to come from raft id 1");
    // 300 statuses in a's name, far ahead of the chain.
    for _ in 0..300 {
        let answer = b.publish(rogue_peer::spoofed_status(&a_id)).await;
        refused_with(&answer, tonic::Code::PermissionDenied, "claiming to be member a");
    }
    // 300 more on one status stream: the first ends it.
    let streamed = (0..300).map(|_| rogue_peer::spoofed_status(&a_id)).collect();
    refused_with(&b.publish_on_stream(streamed).await, tonic::Code::PermissionDenied, "claiming to be member a");
    let refusals = c.node(2).peer_refusals();
    assert_eq!(refusals.count(Refusal::SpoofedSender), 302);
    let statuses = c.node(2).cluster_status(within(Duration::from_secs(1))).await.expect("statuses");
    assert!(statuses.iter().all(|r| r.status.height != Some(1_000_000_000)), "a spoofed status was believed");
    cluster_unchanged(&c, &before).await;
    // a goes on renewing its lease: the spoofing changed nothing for it.
    let lease = c.node(0).acquire(&a_id, within(Duration::from_millis(500))).await;
    assert!(lease.is_err(), "the lease was free to take again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_certificate_is_refused_on_the_peer_port() {
    let (c, before) = cluster_with_holder_a().await;
    let target = format!("127.0.0.1:{}", c.ports[2]);
    let ops = RoguePeer::connect(&target, Some(&material(&c.pki.operators["ops"])), true).await;
    let c_id = MemberId::new("c").expect("id");
    let forged = rogue_peer::forged_snapshot(ForgedSnapshot::SingleVoterTakeover, B, C, &[A, B, C], &c_id);
    refused_with(&ops.send(B, &forged).await, tonic::Code::PermissionDenied, "operator ops");
    refused_with(
        &ops.publish(rogue_peer::spoofed_status(&MemberId::new("b").expect("id"))).await,
        tonic::Code::PermissionDenied,
        "only members speak on the peer port",
    );
    refused_with(
        &ops.publish_on_stream(vec![rogue_peer::spoofed_status(&MemberId::new("b").expect("id"))]).await,
        tonic::Code::PermissionDenied,
        "only members speak on the peer port",
    );
    assert_eq!(c.node(2).peer_refusals().count(Refusal::NotAMember), 3);
    cluster_unchanged(&c, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_group_bomb_is_refused_before_it_is_parsed() {
    let (c, before) = cluster_with_holder_a().await;
    let target = format!("127.0.0.1:{}", c.ports[2]);
    let b = RoguePeer::connect(&target, Some(&material(&c.pki.member("b"))), true).await;
    // 100,000 nested groups: parsed by protobuf 2.28, this overflows the stack and takes the
    // whole member down.
    let bomb = rogue_peer::group_bomb(B, C, 100_000);
    refused_with(&b.send_bytes(B, vec![bomb]).await, tonic::Code::InvalidArgument, "messages[0]");
    assert_eq!(c.node(2).peer_refusals().count(Refusal::Malformed), 1);
    cluster_unchanged(&c, &before).await;
}
