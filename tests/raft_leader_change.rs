//! L2 across raft leader changes at signer mode's short lease (docs/design.md §3, §4): real
//! members on loopback sockets, raft-engine in temp dirs, signer mode's default timings (lease_ttl
//! 400 ms, renew every 150 ms, raft tick 100 ms, 10 election ticks), with the producers in signer
//! mode, so renews refresh the raft leader's expiry timer outside the log and fall back to the log
//! when it refuses. Leader changes come from cutting links with the transport's fault injection.

mod common;

use std::time::Duration;

use common::raft_cluster::{Cluster, Timings, within};
use failover::coord::raft::RaftOptions;
use failover::coord::{CoordError, Coordinator};
use failover::domain::{Lease, LeaseView};
use tokio::time::Instant;

const T: Timings = Timings::SIGNER;
/// The holder: a producer (member c, index 2, is the witness).
const HOLDER: usize = 0;

fn soon() -> Instant {
    within(Duration::from_secs(5))
}

async fn start(n: usize) -> Cluster {
    Cluster::start_timed(n, RaftOptions::default(), T, |_, _| None).await
}

fn raft_id(c: &Cluster, of: usize, peer: usize) -> u64 {
    c.node(of).raft_id(&c.member(peer)).expect("known member")
}

/// Drops all traffic between members `i` and `j`.
fn cut(c: &Cluster, i: usize, j: usize) {
    c.node(i).link_filter().block(raft_id(c, i, j));
    c.node(j).link_filter().block(raft_id(c, j, i));
}

/// Cuts member `i` off from every other.
fn isolate(c: &Cluster, i: usize) {
    for (j, _) in c.running() {
        if j != i {
            cut(c, i, j);
        }
    }
}

fn heal(c: &Cluster) {
    for (_, n) in c.running() {
        n.link_filter().unblock_all();
    }
}

/// Retries `f` until it succeeds (a call may land while raft elects).
async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CoordError>>,
{
    let deadline = within(Duration::from_secs(10));
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "still failing after 10 s: {e}"),
        }
        tokio::time::sleep(T.tick).await;
    }
}

/// Renews `lease` every renew interval, each call bounded by call_timeout, as the holder's
/// daemon does; a failed renew is simply followed by the next one. Never returns.
async fn keep_renewing(c: &Cluster, lease: &Lease) {
    loop {
        let _ = c.node(HOLDER).renew(lease, within(T.call_timeout)).await;
        tokio::time::sleep(T.renew_interval).await;
    }
}

/// Waits until member `f` leads and the holder follows it.
async fn wait_until_leads(c: &Cluster, f: usize) {
    let deadline = within(Duration::from_secs(10));
    let f_id = raft_id(c, HOLDER, f);
    let led = c.node(f).wait_info(deadline, |i| i.is_leader).await;
    assert!(led.is_some(), "member {f} did not become raft leader: {:?}", c.node(f).info());
    let followed = c.node(HOLDER).wait_info(deadline, |i| i.leader == Some(f_id)).await;
    assert!(followed.is_some(), "the holder does not follow member {f}: {:?}", c.node(HOLDER).info());
}

/// One leader change, then one hiccup: the old raft leader is cut off, and as soon as another
/// member leads, the holder's link to it drops for `hiccup` (longer than the TTL, shorter than
/// the TTL plus an election timeout). Heals everything at the end.
async fn leader_change_with_hiccup(c: &Cluster, hiccup: Duration) {
    // The raft leader, once it is not the holder (a holder hands raft leadership away).
    let deadline = within(Duration::from_secs(10));
    let old = loop {
        let l = c.leader(Duration::from_secs(10)).await;
        if l != HOLDER {
            break l;
        }
        assert!(Instant::now() < deadline, "the holder kept raft leadership");
        tokio::time::sleep(T.tick).await;
    };
    let next = (0..3).find(|i| *i != old && *i != HOLDER).expect("a third member");
    isolate(c, old);
    wait_until_leads(c, next).await;
    cut(c, HOLDER, next);
    tokio::time::sleep(hiccup).await;
    heal(c);
}

// docs/design.md §3 L2: a new raft leader cannot know when the holder last renewed (renews sent
// during the election were lost), so it waits the holder's TTL plus an election timeout before
// it may expire it. A holder that keeps renewing through leader changes, with a hiccup on its
// link to each new leader longer than the TTL itself, keeps its lease at the same epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_keeps_renewing_keeps_its_lease_through_leader_changes() {
    let c = start(3).await;
    c.leader(Duration::from_secs(10)).await;
    let lease = eventually(|| async { c.node(HOLDER).acquire(&c.member(HOLDER), soon()).await }).await;
    let held = LeaseView::Held { holder: c.member(HOLDER), epoch: lease.epoch };
    let hiccup = T.lease_ttl + T.lease_ttl * 2 / 3;
    assert!(hiccup < T.lease_ttl + T.election_timeout());
    let mut view = c.node(HOLDER).watch();
    // The grant answers before the holder's view is published.
    let published = tokio::time::timeout(Duration::from_secs(5), view.wait_for(|v| v.lease == held)).await;
    assert!(published.is_ok_and(|r| r.is_ok()), "the holder never saw its own grant");
    let scenario = async {
        for _ in 0..3 {
            leader_change_with_hiccup(&c, hiccup).await;
        }
    };
    tokio::select! {
        _ = keep_renewing(&c, &lease) => unreachable!("renews forever"),
        moved = view.wait_for(|v| v.lease != held) => {
            panic!("the lease moved away from its live holder during a leader change: {:?}", moved.map(|v| v.lease.clone()));
        }
        _ = scenario => {}
    }
    let renewed = eventually(|| async { c.node(HOLDER).renew(&lease, soon()).await }).await;
    assert_eq!(renewed.epoch, lease.epoch);
    for (i, n) in c.running() {
        assert_eq!(n.lease(soon()).await.expect("read"), held, "member {i}");
    }
}

// A holder that died is still expired after a leader change: the new leader's grace is bounded,
// TTL + election timeout from its election (plus two ticks and scheduling slack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_is_expired_within_ttl_and_an_election_timeout_of_a_leader_change() {
    let c = start(5).await;
    let leader = c.leader(Duration::from_secs(10)).await;
    let holder = [0, 1, 3, 4].into_iter().find(|i| *i != leader).expect("a producer that does not lead");
    let lease = eventually(|| async { c.node(holder).acquire(&c.member(holder), soon()).await }).await;
    c.node(holder).renew(&lease, soon()).await.expect("renew");
    // The holder dies (cut off from everyone) and the raft leader with it, at once.
    isolate(&c, holder);
    isolate(&c, leader);
    let survivors: Vec<usize> = (0..5).filter(|i| *i != holder && *i != leader).collect();
    let new_leader = c.leader_among(&survivors, Duration::from_secs(10)).await;
    let elected = Instant::now();
    let mut view = c.node(new_leader).watch();
    let held = LeaseView::Held { holder: c.member(holder), epoch: lease.epoch };
    assert_eq!(view.borrow().lease, held, "the lease was still held when the new leader was elected");
    let freed = tokio::time::timeout(Duration::from_secs(10), view.wait_for(|v| v.lease.holder().is_none())).await;
    assert!(freed.is_ok_and(|r| r.is_ok()), "the dead holder's lease never expired");
    let after = elected.elapsed();
    let bound = T.lease_ttl + T.election_timeout() + T.tick * 2 + Duration::from_millis(200);
    assert!(after <= bound, "expired {after:?} after the new leader was elected, later than {bound:?}");
    assert!(after >= T.lease_ttl, "expired {after:?} after the leader change, within one TTL");
}
