//! Many validators in one raft group (issue 22): a real 3-member cluster on loopback with mutual
//! TLS, one handle per validator on each member. Each validator's lease, epoch and watermarks are
//! its own; a holder that dies loses only its own leases, each expired by the leader's own timer;
//! and renews (and signer reservations ahead) of several leases that reach the node together commit
//! as one log entry.

mod common;

use std::time::Duration;

use common::raft_cluster::{Cluster, within};
use failover::coord::Coordinator;
use failover::coord::raft::{RaftCoordinator, RaftOptions};
use failover::domain::{Epoch, Hrs, KeyId, LeaseView, Step, ValidatorId};

fn v(s: &str) -> ValidatorId {
    ValidatorId::new(s).expect("id")
}

fn key() -> KeyId {
    KeyId::new("validator").expect("id")
}

async fn cluster_of(validators: &[ValidatorId]) -> Cluster {
    let options = RaftOptions { validators: validators.to_vec(), ..RaftOptions::default() };
    let cluster = Cluster::start_with(3, options, |_, _| None).await;
    cluster.leader(Duration::from_secs(10)).await;
    cluster
}

fn handle(cluster: &Cluster, i: usize, validator: &ValidatorId) -> RaftCoordinator {
    cluster.node(i).for_validator(validator, &cluster.configs[i]).expect("the node watches the validator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_validator_keeps_its_own_lease_epoch_and_watermark_in_one_raft_group() {
    let (x, y) = (v("x"), v("y"));
    let cluster = cluster_of(&[x.clone(), y.clone()]).await;
    let (a, b) = (cluster.member(0), cluster.member(1));
    let x_a = handle(&cluster, 0, &x);
    let y_b = handle(&cluster, 1, &y);
    let first = x_a.acquire(&a, within(Duration::from_secs(3))).await.expect("x to a");
    x_a.release(&first, None, within(Duration::from_secs(3))).await.expect("a gives x back");
    let gx = x_a.acquire_with_watermark(&a, &key(), within(Duration::from_secs(3))).await.expect("x to a again");
    let gy = y_b.acquire_with_watermark(&b, &key(), within(Duration::from_secs(3))).await.expect("y to b");
    assert_eq!((gx.lease.epoch, gy.lease.epoch), (Epoch::new(2), Epoch::new(1)), "each validator counts its own");
    let hrs = Hrs::new(40, 0, Step::Precommit);
    x_a.reserve(gx.lease.epoch, &key(), hrs, within(Duration::from_secs(3))).await.expect("x reserves");
    // x's epoch means nothing to y: a reservation under it is refused there, and y's watermark
    // never moved.
    let y_seen_by_a = handle(&cluster, 0, &y);
    assert!(y_seen_by_a.reserve(gx.lease.epoch, &key(), hrs, within(Duration::from_secs(3))).await.is_err());
    assert_eq!(y_b.watermark(&key(), within(Duration::from_secs(3))).await.expect("read"), None);
    let x_on_c = handle(&cluster, 2, &x);
    assert_eq!(x_on_c.watermark(&key(), within(Duration::from_secs(3))).await.expect("read").map(|w| w.hrs), Some(hrs));
    // The default validator, and every member's view of each, agree.
    let default = cluster.node(2);
    assert_eq!(
        default.lease(within(Duration::from_secs(3))).await.expect("read"),
        LeaseView::Free { epoch: Epoch::ZERO }
    );
    assert_eq!(x_on_c.watch().borrow().lease, LeaseView::Held { holder: a.clone(), epoch: Epoch::new(2) });
    assert_eq!(handle(&cluster, 2, &y).watch().borrow().lease, LeaseView::Held { holder: b, epoch: Epoch::new(1) });
    // x's pause is x's alone.
    x_a.set_paused(true, within(Duration::from_secs(3))).await.expect("pause x");
    assert!(!y_b.intents(within(Duration::from_secs(3))).await.expect("read").paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_stops_renewing_loses_only_its_own_leases() {
    let (x, y) = (v("x"), v("y"));
    let cluster = cluster_of(&[x.clone(), y.clone()]).await;
    let (a, b) = (cluster.member(0), cluster.member(1));
    let x_a = handle(&cluster, 0, &x);
    let y_b = handle(&cluster, 1, &y);
    let gx = x_a.acquire(&a, within(Duration::from_secs(3))).await.expect("x to a");
    let mut gy = y_b.acquire(&b, within(Duration::from_secs(3))).await.expect("y to b");
    // b keeps renewing y; nobody renews x, so the raft leader's timer expires x alone.
    let x_on_b = handle(&cluster, 1, &x);
    let end = within(Duration::from_secs(15));
    loop {
        gy = y_b.renew(&gy, within(Duration::from_secs(2))).await.expect("b renews y");
        if matches!(x_on_b.watch().borrow().lease, LeaseView::Free { .. }) {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "x never expired");
        tokio::time::sleep(cluster.configs[1].coordinator.renew_interval / 2).await;
    }
    assert_eq!(x_on_b.watch().borrow().lease, LeaseView::Free { epoch: gx.epoch });
    assert_eq!(y_b.watch().borrow().lease, LeaseView::Held { holder: b.clone(), epoch: gy.epoch });
    let taken = x_on_b.acquire(&b, within(Duration::from_secs(3))).await.expect("b takes x over");
    assert_eq!(taken.epoch, Epoch::new(2));
    assert!(x_a.renew(&gx, within(Duration::from_secs(2))).await.is_err(), "a's old x lease is refused");
}

/// A cluster serving twenty validators, member a holding every lease: the cluster, a's handle
/// of each validator and its lease.
async fn twenty_held_by_a() -> (Cluster, Vec<RaftCoordinator>, Vec<failover::domain::Lease>) {
    let validators: Vec<ValidatorId> = (0..20).map(|i| v(&format!("v{i}"))).collect();
    let cluster = cluster_of(&validators).await;
    let a = cluster.member(0);
    let handles: Vec<RaftCoordinator> = validators.iter().map(|x| handle(&cluster, 0, x)).collect();
    let mut leases = Vec::new();
    for h in &handles {
        leases.push(h.acquire(&a, within(Duration::from_secs(3))).await.expect("grant"));
    }
    (cluster, handles, leases)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_of_many_validators_that_come_together_commit_as_few_entries() {
    let (cluster, handles, leases) = twenty_held_by_a().await;
    let node = cluster.node(0);
    let before = node.info().applied;
    let renews = handles.iter().zip(&leases).map(|(h, l)| h.renew(l, within(Duration::from_secs(3))));
    let renewed = futures::future::join_all(renews).await;
    assert!(renewed.iter().all(Result::is_ok), "{renewed:?}");
    let entries = node.info().applied - before;
    // At most a stray entry besides (an expiry the leader's timer proposed meanwhile).
    assert!(entries <= 5, "20 renews that came together took {entries} log entries");
    // Each caller gets its own command's answer: one stale renew among them is refused, to it
    // alone.
    let mut stale = leases[7].clone();
    stale.epoch = Epoch::new(9);
    let asked: Vec<_> =
        handles.iter().zip(&leases).enumerate().map(|(i, (h, l))| (h, if i == 7 { &stale } else { l })).collect();
    let answers =
        futures::future::join_all(asked.iter().map(|(h, l)| h.renew(l, within(Duration::from_secs(3))))).await;
    for (i, answer) in answers.iter().enumerate() {
        match i {
            7 => assert!(matches!(answer, Err(failover::coord::CoordError::NotHolder { .. })), "renew 7: {answer:?}"),
            _ => assert!(answer.is_ok(), "renew {i}: {answer:?}"),
        }
    }
    eprintln!("20 renews sent together committed as {entries} log entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_and_checkpoints_of_many_validators_sent_apart_leave_together_at_the_next_tick() {
    let (cluster, handles, leases) = twenty_held_by_a().await;
    let node = cluster.node(0);
    let before = node.info().applied;
    // Each validator's loop renews and checkpoints at its own moment: here a validator every
    // 4 ms, 40 commands over 76 ms (at most two of the cluster's 50 ms ticks pass meanwhile).
    let calls = handles.iter().zip(&leases).enumerate().map(|(i, (h, l))| async move {
        tokio::time::sleep(Duration::from_millis(4 * i as u64)).await;
        let key = key();
        let (renewed, checkpointed) = tokio::join!(
            h.renew(l, within(Duration::from_secs(3))),
            h.checkpoint(l.epoch, &key, 100 + i as u64, within(Duration::from_secs(3)))
        );
        (renewed.map(|_| ()), checkpointed.map(|w| w.hrs.height))
    });
    let answers = futures::future::join_all(calls).await;
    for (i, (renewed, checkpointed)) in answers.iter().enumerate() {
        assert!(renewed.is_ok(), "renew {i}: {renewed:?}");
        assert_eq!(checkpointed.as_ref().ok(), Some(&(100 + i as u64)), "checkpoint {i}: each answered its own");
    }
    let entries = node.info().applied - before;
    // One entry per tick the commands spanned (three, or four or five when the test's own sleeps
    // overrun on a loaded machine); each would be an entry of its own if they left as they came.
    assert!(entries <= 6, "40 renews and checkpoints sent over 76 ms took {entries} log entries");
    for (i, h) in handles.iter().enumerate() {
        let mark = h.watermark(&key(), within(Duration::from_secs(3))).await.expect("read").expect("a watermark");
        assert_eq!(mark.hrs.height, 100 + i as u64, "validator {i}'s own checkpoint, in its own scope");
    }
    eprintln!("40 renews and checkpoints sent over 76 ms committed as {entries} log entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_ahead_of_many_validators_sent_apart_leave_together_at_the_next_tick() {
    let (cluster, handles, leases) = twenty_held_by_a().await;
    assert!(
        handles.iter().all(|h| h.gathers_reservations_ahead()),
        "every scoped validator's reservation ahead gathers"
    );
    assert!(!cluster.node(0).gathers_reservations_ahead(), "the default validator's leaves at once, alone");
    let node = cluster.node(0);
    let before = node.info().applied;
    // Each validator's signer asks for its next window at its own moment: here one every 4 ms.
    let calls = handles.iter().zip(&leases).enumerate().map(|(i, (h, l))| async move {
        tokio::time::sleep(Duration::from_millis(4 * i as u64)).await;
        let top = Hrs::end_of_height(200 + i as u64);
        h.reserve_ahead(l.epoch, &key(), top, within(Duration::from_secs(3))).await.map(|w| w.hrs.height)
    });
    let answers = futures::future::join_all(calls).await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.as_ref().ok(), Some(&(200 + i as u64)), "reservation {i}: each answered its own");
    }
    let entries = node.info().applied - before;
    // As for renews: one entry per tick the reservations spanned, not one each.
    assert!(entries <= 6, "20 reservations ahead sent over 76 ms took {entries} log entries");
    // Each is judged as alone: one at or below its watermark is refused, to it alone.
    let k = key();
    let again = handles[3].reserve_ahead(leases[3].epoch, &k, Hrs::end_of_height(203), within(Duration::from_secs(3)));
    let refused = again.await;
    assert!(matches!(refused, Err(failover::coord::CoordError::Refused(_))), "not above the watermark: {refused:?}");
    eprintln!("20 reservations ahead sent over 76 ms committed as {entries} log entries");
}

/// A signer's connection thread queues its reservation ahead (`queue_reserve_ahead`) from
/// outside the runtime, as the remote signer does: each is answered with its own watermark,
/// those queued apart leave together at the raft node's ticks, and one not above its
/// watermark is refused, to it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_ahead_queued_from_signer_threads_are_each_answered_and_leave_at_the_ticks() {
    let (cluster, _handles, leases) = twenty_held_by_a().await;
    let node = cluster.node(0);
    let before = node.info().applied;
    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let queue_from_thread = |i: usize, height: u64| {
        let (h, epoch, tx) = (handle(&cluster, 0, &v(&format!("v{i}"))), leases[i].epoch, tx.clone());
        let deadline = within(Duration::from_secs(3));
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(4 * i as u64));
            let answer = Box::new(move |r: Result<failover::domain::Watermark, failover::coord::CoordError>| {
                let _ = tx.send((i, r));
            });
            let hrs = Hrs::end_of_height(height);
            h.queue_reserve_ahead(failover::coord::QueuedReservation::new(epoch, key(), hrs, deadline, answer));
        })
    };
    let threads: Vec<_> = (0..20).map(|i| queue_from_thread(i, 300 + i as u64)).collect();
    for t in threads {
        t.join().expect("a signer thread");
    }
    let mut answered = std::collections::BTreeMap::new();
    while answered.len() < 20 {
        let (i, r) = tokio::time::timeout(Duration::from_secs(5), heard.recv()).await.expect("in time").expect("open");
        answered.insert(i, r.map(|w| w.hrs.height));
    }
    for (i, answer) in &answered {
        assert_eq!(answer.as_ref().ok(), Some(&(300 + *i as u64)), "reservation {i}: each answered its own");
    }
    let entries = node.info().applied - before;
    assert!(entries <= 6, "20 reservations queued over 76 ms took {entries} log entries");
    queue_from_thread(5, 305).join().expect("a signer thread");
    let (i, refused) =
        tokio::time::timeout(Duration::from_secs(5), heard.recv()).await.expect("in time").expect("open");
    assert_eq!(i, 5);
    assert!(matches!(refused, Err(failover::coord::CoordError::Refused(_))), "not above the watermark: {refused:?}");
    eprintln!("20 reservations queued from threads over 76 ms committed as {entries} log entries");
}
