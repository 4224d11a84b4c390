//! The Coordinator contract suite against a real 3-member raft cluster on loopback.

mod common;

use std::time::Duration;

use common::contract::{self, Member};
use common::raft_cluster::Cluster;
use failover::coord::{CoordError, Coordinator};
use failover::domain::{KeyId, LeaseView, MemberKind};
use tokio::time::Instant;

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

/// docs/design.md §5, fenced takeover on raft: the holding's stamp counts its grants and renews,
/// so a takeover looked at before the holder renewed — the holder was alive after all — is
/// refused and changes nothing, while one looked at after the renew moves the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_of_a_holding_renewed_since_it_was_looked_at_is_refused() {
    let cluster = Cluster::start(3).await;
    cluster.leader(Duration::from_secs(10)).await;
    let soon = || Instant::now() + Duration::from_secs(5);
    let (a, b) = (cluster.node(0), cluster.node(1));
    let (id_a, id_b) = (cluster.member(0), cluster.member(1));
    let key = KeyId::new("validator").expect("key");
    let lease = a.acquire(&id_a, soon()).await.expect("grant");
    let looked = b.holding(soon()).await.expect("read").expect("a holds");
    a.renew(&lease, soon()).await.expect("a is alive and renews");
    match b.take_over(&id_b, &key, &looked, soon()).await {
        Err(CoordError::LeaseMoved { .. }) => {}
        other => panic!("a takeover of a holding renewed since was not refused: {other:?}"),
    }
    assert_eq!(b.lease(soon()).await.expect("read"), LeaseView::Held { holder: id_a.clone(), epoch: lease.epoch });
    a.renew(&lease, soon()).await.expect("a still holds and renews");
    let now = b.holding(soon()).await.expect("read").expect("a holds");
    assert!(now.stamp > looked.stamp, "each renew moves the stamp");
    let new = b.take_over(&id_b, &key, &now, soon()).await.expect("the current holding is taken over");
    assert!(new.lease.epoch > lease.epoch);
}
