//! The raft backend under failure: real members on loopback sockets with raft-engine on disk
//! in temp dirs. Crashes abort a member's tasks and close its sockets; partitions use the
//! transport's fault injection.

mod common;

use std::time::Duration;

use common::raft_cluster::{Cluster, ELECTION_TICKS, LEASE_TTL, SAFETY_MARGIN, TICK, within};
use failover::coord::raft::RaftOptions;
use failover::coord::{CoordError, Coordinator};
use failover::domain::{Hrs, KeyId, LeaseView, Step};
use tokio::time::Instant;

fn key() -> KeyId {
    KeyId::new("validator").expect("valid")
}

fn soon() -> Instant {
    within(Duration::from_secs(5))
}

fn election_timeout() -> Duration {
    TICK * ELECTION_TICKS
}

/// Retries `f` until it succeeds or `limit` passes (a call may land while raft elects).
async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CoordError>>,
{
    let deadline = within(limit);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "still failing after {limit:?}: {e}"),
        }
        tokio::time::sleep(TICK).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_elects_a_new_leader_and_keeps_lease_and_watermark() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader(Duration::from_secs(10)).await;
    // The holder is a member that survives, so its lease can outlive the leader change.
    let holder = (0..2).find(|i| *i != leader).expect("a producer that is not the leader");
    let lease = c.node(holder).acquire(&c.member(holder), soon()).await.expect("grant");
    c.node(holder).reserve(lease.epoch, &key(), Hrs::new(77, 0, Step::Precommit), soon()).await.expect("reserve");

    c.crash(leader).await;
    // Keep renewing as a holder would while the survivors elect.
    let renewer = {
        let started = Instant::now();
        let mut new_leader = None;
        while new_leader.is_none() && started.elapsed() < Duration::from_secs(10) {
            let _ = c.node(holder).renew(&lease, within(Duration::from_millis(300))).await;
            new_leader = c.running().find(|(_, n)| n.info().is_leader).map(|(i, _)| i);
        }
        new_leader.expect("a new leader among the survivors")
    };
    assert_ne!(renewer, leader);
    let renewed = eventually(Duration::from_secs(5), || async { c.node(holder).renew(&lease, soon()).await }).await;
    assert_eq!(renewed.epoch, lease.epoch, "the lease survived the leader change");
    for (_, n) in c.running() {
        assert_eq!(
            n.lease(soon()).await.expect("read"),
            LeaseView::Held { holder: c.member(holder), epoch: lease.epoch }
        );
        assert_eq!(
            n.watermark(&key(), soon()).await.expect("read").map(|w| w.hrs),
            Some(Hrs::new(77, 0, Step::Precommit))
        );
    }
}

/// Waits until member `i`'s watched view is `current` (or not) within `limit`.
async fn view_becomes(c: &Cluster, i: usize, current: bool, limit: Duration) {
    let mut view = c.node(i).watch();
    let waited = tokio::time::timeout(limit, view.wait_for(|v| v.current == current)).await;
    assert!(matches!(waited, Ok(Ok(_))), "member {i}'s view did not become current={current} within {limit:?}");
}

/// A member's view of the lease stands for the store only while it follows a leader: with its
/// quorum gone it is no longer current (the loop then counts the lease unknown, so no standby
/// spends its priority wait or acquires against a store that can grant nothing), and it is
/// current again once a leader is back. At a cold start this is what lets a free lease go to the
/// member with the higher priority instead of to whichever acquire the first leader saw first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_view_is_current_only_while_it_follows_a_leader() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader(Duration::from_secs(10)).await;
    for i in 0..3 {
        view_becomes(&c, i, true, Duration::from_secs(5)).await;
    }
    let survivor = (0..3).find(|i| *i != leader).expect("a follower");
    let other = (0..3).find(|i| *i != leader && *i != survivor).expect("another follower");
    c.crash(leader).await;
    c.crash(other).await;
    view_becomes(&c, survivor, false, election_timeout() * 4).await;
    assert_eq!(c.node(survivor).watch().borrow().lease, LeaseView::Free { epoch: failover::domain::Epoch::ZERO });
    c.restart(other, c.options.clone()).await.expect("restart");
    view_becomes(&c, survivor, true, Duration::from_secs(10)).await;
    view_becomes(&c, other, true, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_that_stops_renewing_loses_the_lease_within_bounds() {
    let c = Cluster::start(3).await;
    c.leader(Duration::from_secs(10)).await;
    let a = c.node(0);
    let mut watch = a.watch();
    let sent = Instant::now();
    let lease = a.acquire(&c.member(0), soon()).await.expect("grant");
    let applied = Instant::now();
    watch.wait_for(|v| v.lease.epoch() == lease.epoch && v.lease.holder().is_none()).await.expect("the lease expires");
    let freed = Instant::now();
    // The leader expires the lease the TTL the holder declared after it applied the grant (docs/design.md §4).
    // A holder that leads raft at its grant hands leadership to the witness within a tick or two,
    // and a new leader waits the TTL plus an election timeout from its election (L2).
    let lower = LEASE_TTL;
    let upper = LEASE_TTL + election_timeout() + TICK * 2;
    assert!(freed - sent >= lower, "expired after {:?}, before the TTL ({lower:?})", freed - sent);
    assert!(
        freed - applied <= upper,
        "expired after {:?}, later than TTL + election timeout + 2 ticks ({upper:?})",
        freed - applied
    );
    // The holder's own deadline passed at least the safety margin before the store let go.
    assert!(lease.valid_until.saturating_add(SAFETY_MARGIN) <= failover::domain::MonoTime::now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_and_full_restarts_keep_every_committed_watermark() {
    let mut c = Cluster::start(3).await;
    c.leader(Duration::from_secs(10)).await;
    let lease = c.node(0).acquire(&c.member(0), soon()).await.expect("grant");
    let mut committed = Hrs::ZERO;
    for h in 1..=20 {
        committed =
            c.node(0).reserve(lease.epoch, &key(), Hrs::new(h, 0, Step::Precommit), soon()).await.expect("reserve").hrs;
    }
    c.node(0).release(&lease, None, soon()).await.expect("release");

    // A minority (one follower, then the leader) restarts.
    for _ in 0..2 {
        let leader = c.leader(Duration::from_secs(10)).await;
        let victim = (0..3).find(|i| *i != leader).expect("a follower");
        for v in [victim, leader] {
            c.crash(v).await;
            c.restart(v, RaftOptions::default()).await.expect("restart");
            let got = eventually(Duration::from_secs(10), || async { c.node(v).watermark(&key(), soon()).await }).await;
            assert!(
                got.is_some_and(|w| w.hrs >= committed),
                "member {v} restarted with {got:?}, committed {committed}"
            );
        }
    }
    // Everyone at once.
    for i in 0..3 {
        c.crash(i).await;
    }
    for i in 0..3 {
        c.restart(i, RaftOptions::default()).await.expect("restart");
    }
    c.leader(Duration::from_secs(10)).await;
    for i in 0..3 {
        let got = eventually(Duration::from_secs(10), || async { c.node(i).watermark(&key(), soon()).await }).await;
        assert_eq!(got.map(|w| w.hrs), Some(committed), "member {i} after a full restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_acquires_never_both_succeed() {
    let c = Cluster::start(3).await;
    c.leader(Duration::from_secs(10)).await;
    let (a, b) = (c.node(0), c.node(1));
    let (ma, mb) = (c.member(0), c.member(1));
    let mut wins = [0u32; 2];
    for round in 0..1000 {
        let (ra, rb) = tokio::join!(a.acquire(&ma, soon()), b.acquire(&mb, soon()));
        match (ra, rb) {
            (Ok(la), Ok(lb)) => panic!("round {round}: both acquired ({} and {})", la.epoch, lb.epoch),
            (Ok(l), Err(_)) => {
                wins[0] += 1;
                a.release(&l, None, soon()).await.expect("release");
            }
            (Err(_), Ok(l)) => {
                wins[1] += 1;
                b.release(&l, None, soon()).await.expect("release");
            }
            (Err(ea), Err(eb)) => panic!("round {round}: nobody acquired a free lease: {ea} / {eb}"),
        }
    }
    assert_eq!(wins[0] + wins[1], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_old_holder_cannot_renew_reserve_or_checkpoint() {
    let c = Cluster::start(3).await;
    let leader = c.leader(Duration::from_secs(10)).await;
    let old = leader; // the hardest case: the holder is also the raft leader
    let holder_id = c.member(old);
    if old == 2 {
        // The witness cannot hold; fall back to a producer.
        return partitioned_follower_holder(&c).await;
    }
    let lease = c.node(old).acquire(&holder_id, soon()).await.expect("grant");
    isolate(&c, old);
    let short = || within(Duration::from_millis(500));
    assert!(c.node(old).renew(&lease, short()).await.is_err(), "an isolated holder cannot renew");
    assert!(c.node(old).reserve(lease.epoch, &key(), Hrs::new(5, 0, Step::Propose), short()).await.is_err());
    // The majority expires the lease and grants it to another member.
    let other = (0..2).find(|i| *i != old).expect("another producer");
    let new =
        eventually(Duration::from_secs(10), || async { c.node(other).acquire(&c.member(other), soon()).await }).await;
    assert!(new.epoch > lease.epoch);
    heal(&c);
    // Healed, the old holder's epoch is refused everywhere.
    let renew = eventually(Duration::from_secs(5), || async {
        match c.node(old).renew(&lease, soon()).await {
            Err(CoordError::NotHolder { .. }) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => panic!("the deposed holder renewed"),
        }
    });
    renew.await;
    assert!(matches!(
        c.node(old).reserve(lease.epoch, &key(), Hrs::new(9, 0, Step::Propose), soon()).await,
        Err(CoordError::NotHolder { .. })
    ));
    assert!(matches!(c.node(old).checkpoint(lease.epoch, &key(), 9, soon()).await, Err(CoordError::NotHolder { .. })));
    assert_eq!(
        c.node(old).watermark(&key(), soon()).await.expect("read"),
        None,
        "nothing the old holder tried was applied"
    );
}

async fn partitioned_follower_holder(c: &Cluster) {
    let lease = c.node(0).acquire(&c.member(0), soon()).await.expect("grant");
    isolate(c, 0);
    assert!(c.node(0).renew(&lease, within(Duration::from_millis(500))).await.is_err());
    let new = eventually(Duration::from_secs(10), || async { c.node(1).acquire(&c.member(1), soon()).await }).await;
    assert!(new.epoch > lease.epoch);
    heal(c);
    assert!(matches!(
        eventually(Duration::from_secs(5), || async {
            match c.node(0).checkpoint(lease.epoch, &key(), 9, soon()).await {
                Err(CoordError::NotHolder { .. }) => Ok(Err::<(), _>(())),
                Err(e) => Err(e),
                Ok(_) => Ok(Ok(())),
            }
        })
        .await,
        Err(())
    ));
}

fn isolate(c: &Cluster, i: usize) {
    for (j, n) in c.running() {
        if j == i {
            for k in 0..c.len() {
                if k != i {
                    n.link_filter().block(n.raft_id(&c.member(k)).expect("known member"));
                }
            }
        } else {
            n.link_filter().block(n.raft_id(&c.member(i)).expect("known member"));
        }
    }
}

fn heal(c: &Cluster) {
    for (_, n) in c.running() {
        n.link_filter().unblock_all();
    }
}

fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).expect("readable dir").flatten() {
            // raft-engine purges old files while the cluster runs: one may go between the
            // listing and this look.
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// Stated bound on a member's data_dir after any number of renewals: raft-engine files are
/// 1 MiB and purged past 4 MiB, plus the snapshot.
const DATA_DIR_BOUND: u64 = 16 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_renewals_leave_the_data_dir_bounded() {
    let c = Cluster::start(3).await;
    c.leader(Duration::from_secs(10)).await;
    let lease = c.node(0).acquire(&c.member(0), soon()).await.expect("grant");
    let node = c.node(0);
    let total = 100_000u32;
    let concurrency = 200u32;
    let mut done = 0u32;
    let mut max_seen = 0u64;
    while done < total {
        let batch: Vec<_> = (0..concurrency).map(|_| node.renew(&lease, soon())).collect();
        // Polled together, so their proposals batch into few raft entries per fsync.
        for r in futures::future::join_all(batch).await {
            r.expect("renew");
        }
        done += concurrency;
        if done.is_multiple_of(10_000) {
            max_seen = max_seen.max((0..3).map(|i| dir_size(c.data_dir(i))).max().unwrap_or(0));
        }
    }
    let sizes: Vec<u64> = (0..3).map(|i| dir_size(c.data_dir(i))).collect();
    eprintln!("data_dir sizes after {total} renewals: {sizes:?} bytes; largest seen during the run: {max_seen}");
    for (i, s) in sizes.iter().enumerate() {
        assert!(*s < DATA_DIR_BOUND, "member {i}'s data_dir is {s} bytes, over {DATA_DIR_BOUND}");
    }
    assert!(max_seen < DATA_DIR_BOUND, "a data_dir reached {max_seen} bytes during the run");
    let applied = c.node(0).wait_info(soon(), |i| i.applied > u64::from(total)).await;
    assert!(applied.is_some(), "{:?}", c.node(0).info());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_whose_disk_was_lost_rejoins_with_the_same_id() {
    let mut c = Cluster::start(3).await;
    c.leader(Duration::from_secs(10)).await;
    let lease = c.node(0).acquire(&c.member(0), soon()).await.expect("grant");
    c.node(0).checkpoint(lease.epoch, &key(), 4242, soon()).await.expect("checkpoint");
    c.node(0).release(&lease, None, soon()).await.expect("release");

    // Member b loses its disk.
    c.crash(1).await;
    std::fs::remove_dir_all(c.data_dir(1)).expect("wipe b's data_dir");
    // Without rejoin an existing, initialised dir would be needed; with rejoin it starts empty.
    c.restart(1, RaftOptions { rejoin: true, ..RaftOptions::default() }).await.expect("rejoin");
    let info = c.node(1).wait_info(within(Duration::from_secs(10)), |i| !i.rejoining).await;
    assert!(info.is_some(), "b never caught up: {:?}", c.node(1).info());
    let got = eventually(Duration::from_secs(5), || async { c.node(1).watermark(&key(), soon()).await }).await;
    assert_eq!(got.map(|w| w.hrs), Some(Hrs::end_of_height(4242)), "b has the committed watermark back");

    // b counts toward the quorum again: with a down, b and c still grant the lease.
    c.crash(0).await;
    let l = eventually(Duration::from_secs(10), || async { c.node(1).acquire(&c.member(1), soon()).await }).await;
    assert!(l.epoch > lease.epoch);

    // Asking to rejoin with a data_dir that still has state is refused.
    c.crash(1).await;
    let err = c.restart(1, RaftOptions { rejoin: true, ..RaftOptions::default() }).await.expect_err("refused");
    assert!(err.to_string().contains("is not empty"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_restarted_empty_without_rejoin_detects_the_loss_and_catches_up() {
    let mut c = Cluster::start(3).await;
    c.leader(Duration::from_secs(10)).await;
    let lease = c.node(0).acquire(&c.member(0), soon()).await.expect("grant");
    c.node(0).checkpoint(lease.epoch, &key(), 99, soon()).await.expect("checkpoint");
    let leader = c.leader(Duration::from_secs(10)).await;
    let victim = (0..3).find(|i| *i != leader).expect("a follower");
    c.crash(victim).await;
    std::fs::remove_dir_all(c.data_dir(victim)).expect("wipe");
    // The operator forgot --rejoin: the member must notice, not panic, and not vote blindly.
    c.restart(victim, RaftOptions::default()).await.expect("starts");
    let got = eventually(Duration::from_secs(10), || async { c.node(victim).watermark(&key(), soon()).await }).await;
    assert_eq!(got.map(|w| w.hrs), Some(Hrs::end_of_height(99)));
    assert!(c.node(victim).info().failed.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_raft_dir_is_refused_at_start_naming_the_path() {
    let mut c = Cluster::start_with(3, RaftOptions { snapshot_every: 20, ..RaftOptions::default() }, |_, _| None).await;
    c.leader(Duration::from_secs(10)).await;
    let lease = c.node(0).acquire(&c.member(0), soon()).await.expect("grant");
    for h in 1..=60 {
        c.node(0).checkpoint(lease.epoch, &key(), h, soon()).await.expect("checkpoint");
    }
    c.crash(2).await;
    // The log files lose what was acknowledged: refused, never started empty.
    let raft_dir = c.data_dir(2).join("raft");
    for entry in std::fs::read_dir(&raft_dir).expect("raft dir").flatten() {
        if entry.path().extension().is_some_and(|e| e == "raftlog") {
            let f = std::fs::OpenOptions::new().write(true).open(entry.path()).expect("open");
            f.set_len(0).expect("truncate");
        }
    }
    let err = c.restart(2, RaftOptions::default()).await.expect_err("a truncated log is refused");
    assert!(err.to_string().contains(&raft_dir.display().to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_member_cluster_survives_two_crashes() {
    let mut c = Cluster::start(5).await;
    c.leader(Duration::from_secs(10)).await;
    c.crash(3).await;
    c.crash(4).await;
    let l = eventually(Duration::from_secs(10), || async { c.node(0).acquire(&c.member(0), soon()).await }).await;
    c.node(0).reserve(l.epoch, &key(), Hrs::new(3, 0, Step::Propose), soon()).await.expect("reserve with 3 of 5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_holder_hands_raft_leadership_to_the_witness() {
    let c = Cluster::start(3).await;
    let leader = c.leader(Duration::from_secs(10)).await;
    // Make the raft leader hold the lease (the witness, c, cannot: pick a producer that leads).
    let holder = if leader == 2 { 0 } else { leader };
    let lease =
        eventually(Duration::from_secs(5), || async { c.node(holder).acquire(&c.member(holder), soon()).await }).await;
    let deadline = within(Duration::from_secs(5));
    loop {
        let now_leader = c.leader(Duration::from_secs(5)).await;
        if now_leader != holder {
            assert_eq!(now_leader, 2, "the witness is the preferred raft leader");
            break;
        }
        assert!(Instant::now() < deadline, "the holder kept raft leadership");
        c.node(holder).renew(&lease, soon()).await.expect("renew");
        tokio::time::sleep(TICK).await;
    }
    c.node(holder).renew(&lease, soon()).await.expect("the lease survives the leadership change");
}
