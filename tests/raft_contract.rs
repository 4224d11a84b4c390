//! The Coordinator contract suite against a real 3-member raft cluster on loopback.

mod common;

use std::time::Duration;

use common::contract::{self, Member};
use common::raft_cluster::Cluster;
use failover::domain::MemberKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_cluster_keeps_the_coordinator_contract() {
    let cluster = Cluster::start(3).await;
    cluster.leader(Duration::from_secs(10)).await;
    let members: Vec<Member<'_>> = (0..3)
        .map(|i| Member {
            id: cluster.member(i),
            kind: if i == 2 { MemberKind::Witness } else { MemberKind::Producer },
            coord: cluster.node(i),
        })
        .collect();
    contract::run_all(&members).await;
}
