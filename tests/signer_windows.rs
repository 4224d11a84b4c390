//! Signer mode's reserve-ahead windows (docs/design.md §6) against a real 3-member raft cluster on
//! loopback: the signer asks the store once per window, not once per signature; a new holder
//! starts above every window an old one reserved, so the old one — frozen and woken, still
//! believing it is active — signs nothing the new one may sign; a planned handover drains the
//! window; and the signer's state file keeps its double-sign rule across a restart.
//!
//! The requests go straight to [`PrivvalSigner::answer`] as the connection threads hand them on;
//! the privval wire itself is tests/privval.rs's subject.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::raft_cluster::{SharedCluster, id, within};
use failover::coord::Coordinator;
use failover::coord::raft::RaftCoordinator;
use failover::domain::{Hrs, KeyId, Lease, MonoTime, Step};
use failover::producer::privval::coordinator_gate::{CoordinatorGate, Permission};
use failover::producer::privval::signer::{PrivvalSigner, code};
use failover::producer::privval::validator_key::ValidatorKey;
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::privval::{Message, SignVoteRequest, message::Sum};
use tendermint_proto::v0_38::types::{BlockId, PartSetHeader, Vote};

const CHAIN: &str = "test_chain_id";

fn key_id() -> KeyId {
    KeyId::new("validator").expect("key")
}

fn key() -> ValidatorKey {
    ValidatorKey::parse(ValidatorKey::file_for_seed([9u8; 32]).as_bytes()).expect("key")
}

/// A signer for `coord`'s member, active at `lease`'s epoch with no deadline (these tests are
/// about the reservations, not the lease's timing).
fn signer_for(
    coord: &Arc<RaftCoordinator>,
    lease: &Lease,
    state: Option<&std::path::Path>,
) -> PrivvalSigner<CoordinatorGate> {
    let store: Arc<dyn Coordinator> = coord.clone();
    let gate = CoordinatorGate::new(store, key_id(), tokio::runtime::Handle::current(), Duration::from_secs(2));
    gate.permit(Permission {
        epoch: lease.epoch,
        floor: Hrs::new(1, 0, Step::Propose),
        until: MonoTime::from_nanos(u64::MAX),
    });
    let signer = PrivvalSigner::new(CHAIN, key(), gate);
    match state {
        Some(path) => signer.persisted(path).expect("state file"),
        None => signer,
    }
}

fn vote(step: Step, height: u64, block: u8) -> Message {
    let msg_type = match step {
        Step::Prevote => 1,
        _ => 2,
    };
    let vote = Vote {
        r#type: msg_type,
        height: height as i64,
        round: 0,
        block_id: Some(BlockId {
            hash: vec![block; 32],
            part_set_header: Some(PartSetHeader { total: 1, hash: vec![block; 32] }),
        }),
        timestamp: Some(Timestamp { seconds: 100, nanos: 0 }),
        validator_address: vec![0xaa; 20],
        validator_index: 0,
        ..Vote::default()
    };
    Message { sum: Some(Sum::SignVoteRequest(SignVoteRequest { vote: Some(vote), chain_id: CHAIN.into() })) }
}

/// The signature, or the refusal's code and description.
fn ask(signer: &PrivvalSigner<CoordinatorGate>, request: Message) -> Result<Vec<u8>, (i32, String)> {
    match signer.answer(request).and_then(|m| m.sum) {
        Some(Sum::SignedVoteResponse(r)) => match (r.vote, r.error) {
            (Some(v), None) => Ok(v.signature),
            (_, Some(e)) => Err((e.code, e.description)),
            _ => Err((-1, "an empty answer".into())),
        },
        other => panic!("not a vote response: {other:?}"),
    }
}

/// Renews `lease` in the background while the returned handle lives.
fn keep_renewing(coord: Arc<RaftCoordinator>, lease: Lease) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = coord.renew(&lease, within(Duration::from_millis(400))).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    })
}

fn commit_index(coord: &RaftCoordinator) -> u64 {
    coord.status().raft.map_or(0, |r| r.commit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_signing_asks_the_store_about_once_per_height_not_once_per_signature() {
    let cluster = SharedCluster::start_with_holder_a(&key_id()).await;
    let coord = Arc::clone(&cluster.nodes[0]);
    let renewing = keep_renewing(Arc::clone(&coord), cluster.lease.clone());
    let signer = Arc::new(signer_for(&coord, &cluster.lease, None));
    let heights = 30u64;
    let (before, signed) = {
        let signer = Arc::clone(&signer);
        let coord = Arc::clone(&coord);
        tokio::task::spawn_blocking(move || {
            let before = commit_index(&coord);
            let mut signed = 0;
            for h in 2..2 + heights {
                for step in [Step::Prevote, Step::Precommit] {
                    ask(&signer, vote(step, h, 1)).unwrap_or_else(|e| panic!("height {h} {step}: {e:?}"));
                    signed += 1;
                }
                // The node's block interval: the next height comes a little later.
                std::thread::sleep(Duration::from_millis(20));
            }
            (before, signed)
        })
        .await
        .expect("signing")
    };
    renewing.abort();
    // Renews commit too (one each 150 ms over about 0.7 s); what is left are reservations.
    let entries = commit_index(&coord) - before;
    assert_eq!(signed, 2 * heights);
    assert!(entries <= heights + 8, "{entries} raft entries for {signed} signatures over {heights} heights");
    let watermark = coord.watermark(&key_id(), within(Duration::from_secs(2))).await.expect("read").expect("stored");
    let last = 1 + heights;
    assert!(watermark.hrs >= Hrs::end_of_height(last), "the window covers the last signature: {watermark}");
    assert!(
        watermark.hrs.height <= last + failover::producer::privval::window::MAX_LEAD,
        "the window reaches no further than the lead allows: {watermark}"
    );
}

/// The window's price and its proof: the old holder's window is skipped by the new holder, and
/// the old holder, woken up still permitted, signs nothing above its window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_holder_starts_above_every_window_and_a_woken_old_holder_signs_nothing_above_its_own() {
    let cluster = SharedCluster::start_with_holder_a(&key_id()).await;
    let (a, b) = (Arc::clone(&cluster.nodes[0]), Arc::clone(&cluster.nodes[1]));
    let old = Arc::new(signer_for(&a, &cluster.lease, None));
    {
        let old = Arc::clone(&old);
        tokio::task::spawn_blocking(move || {
            for h in 2..=10 {
                ask(&old, vote(Step::Precommit, h, 1)).unwrap_or_else(|e| panic!("height {h}: {e:?}"));
            }
        })
        .await
        .expect("old signs");
    }
    // The old holder freezes; its lease is taken over (released here, as an expiry would free
    // it), and b acquires a new epoch and reads the watermark its floor starts from.
    a.release(&cluster.lease, None, within(Duration::from_secs(2))).await.expect("release");
    let lease_b = b.acquire(&id("b"), within(Duration::from_secs(2))).await.expect("b acquires");
    let floor = b.watermark(&key_id(), within(Duration::from_secs(2))).await.expect("read").expect("stored").hrs;
    assert!(floor >= Hrs::end_of_height(10), "the floor {floor} is above the old holder's last signature");
    assert!(lease_b.epoch > cluster.lease.epoch);

    // The old holder wakes up, still permitted, and its node asks on: whatever it signs lies at
    // or below the floor b starts above.
    let signed_by_old = {
        let old = Arc::clone(&old);
        tokio::task::spawn_blocking(move || {
            let mut signed = Vec::new();
            for h in 11..=floor.height + 3 {
                match ask(&old, vote(Step::Precommit, h, 2)) {
                    Ok(_) => signed.push(h),
                    Err((c, why)) => assert_eq!(c, code::NOT_ACTIVE, "height {h}: {why}"),
                }
            }
            signed
        })
        .await
        .expect("old wakes")
    };
    assert!(
        signed_by_old.iter().all(|h| Hrs::end_of_height(*h) <= floor),
        "old signed {signed_by_old:?} above {floor}"
    );
    let after = b.watermark(&key_id(), within(Duration::from_secs(2))).await.expect("read").expect("stored").hrs;
    assert_eq!(after, floor, "a deposed holder's reservations were all refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_window_is_signed_through_and_nothing_above_it_is_reserved() {
    let cluster = SharedCluster::start_with_holder_a(&key_id()).await;
    let coord = Arc::clone(&cluster.nodes[0]);
    let signer = Arc::new(signer_for(&coord, &cluster.lease, None));
    let (top, refusal, drained) = {
        let signer = Arc::clone(&signer);
        tokio::task::spawn_blocking(move || {
            ask(&signer, vote(Step::Precommit, 5, 1)).expect("signs 5");
            let top = signer.gate().drain().expect("a window to drain");
            for h in 6..=top {
                ask(&signer, vote(Step::Prevote, h, 1)).unwrap_or_else(|e| panic!("inside the window, {h}: {e:?}"));
                assert!(!signer.gate().drained(), "the precommit of height {h} is still to come");
                ask(&signer, vote(Step::Precommit, h, 1)).unwrap_or_else(|e| panic!("inside the window, {h}: {e:?}"));
            }
            assert!(signer.gate().drained(), "the top height's precommit was signed");
            let refusal = ask(&signer, vote(Step::Precommit, top + 1, 1)).expect_err("above the drained window");
            (top, refusal, signer.gate().drained())
        })
        .await
        .expect("signing")
    };
    assert!(drained);
    assert_eq!(refusal.0, code::NOT_ACTIVE, "{}", refusal.1);
    assert!(refusal.1.contains("handing over"), "{}", refusal.1);
    let watermark = coord.watermark(&key_id(), within(Duration::from_secs(2))).await.expect("read").expect("stored");
    assert_eq!(watermark.hrs, Hrs::end_of_height(top), "the watermark is the last height signed");
}

/// Signs heights 200 ms apart until a precommit has queued the next window's reservation, which
/// then waits out the quiet (50 ms at these blocks); returns the top committed before it, at once.
fn sign_until_an_extension_is_queued(signer: &PrivvalSigner<CoordinatorGate>) -> u64 {
    for h in 2..60 {
        ask(signer, vote(Step::Prevote, h, 1)).unwrap_or_else(|e| panic!("height {h}: {e:?}"));
        ask(signer, vote(Step::Precommit, h, 1)).unwrap_or_else(|e| panic!("height {h}: {e:?}"));
        if h > 5
            && let (Some(_), Some(top)) = (signer.gate().reservation_in_flight(), signer.gate().reserved_through())
        {
            return top;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no precommit in 58 heights asked for the next window");
}

/// Waits past the quiet (and a commit) during which a queued reservation would have been sent.
const PAST_THE_QUIET: Duration = Duration::from_millis(300);

/// Signs until an extension is queued, then does `cancel` to the gate at once; after the quiet,
/// returns the top committed before, what `cancel` returned, the gate's reservation in flight
/// and the store's watermark.
async fn queue_an_extension_then<T: Send + 'static>(cancel: fn(&CoordinatorGate) -> T) -> (u64, T, Option<u64>, Hrs) {
    let cluster = SharedCluster::start_with_holder_a(&key_id()).await;
    let coord = Arc::clone(&cluster.nodes[0]);
    let signer = Arc::new(signer_for(&coord, &cluster.lease, None));
    let (before, cancelled) = {
        let signer = Arc::clone(&signer);
        tokio::task::spawn_blocking(move || {
            let before = sign_until_an_extension_is_queued(&signer);
            (before, cancel(signer.gate()))
        })
        .await
        .expect("signing")
    };
    tokio::time::sleep(PAST_THE_QUIET).await;
    let watermark = coord.watermark(&key_id(), within(Duration::from_secs(2))).await.expect("read").expect("stored");
    (before, cancelled, signer.gate().reservation_in_flight(), watermark.hrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_cancels_an_extension_still_waiting_out_the_quiet() {
    let (before, drained_top, in_flight, watermark) = queue_an_extension_then(CoordinatorGate::drain).await;
    assert_eq!(drained_top, Some(before), "the handover signs through the window committed before the drain");
    assert_eq!(in_flight, None, "the queued extension was cancelled");
    assert_eq!(watermark, Hrs::end_of_height(before), "nothing above the drained window was reserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_signer_sends_no_extension_it_queued_before() {
    let (before, (), _, watermark) = queue_an_extension_then(CoordinatorGate::revoke).await;
    assert_eq!(watermark, Hrs::end_of_height(before), "a revoked member reserves nothing more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_signer_remembers_its_last_signature_and_refuses_a_conflicting_one() {
    let cluster = SharedCluster::start_with_holder_a(&key_id()).await;
    let coord = Arc::clone(&cluster.nodes[0]);
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("signer-state-validator.bin");
    let lease = cluster.lease.clone();
    let first = {
        let (coord, path, lease) = (Arc::clone(&coord), path.clone(), lease.clone());
        tokio::task::spawn_blocking(move || {
            let signer = signer_for(&coord, &lease, Some(&path));
            ask(&signer, vote(Step::Precommit, 5, 1)).expect("signs 5")
        })
        .await
        .expect("first life")
    };
    // The process restarts inside its window: only its state file knows what it signed.
    let (again, conflicting, lower) = tokio::task::spawn_blocking(move || {
        let signer = signer_for(&coord, &lease, Some(&path));
        assert_eq!(signer.last_signed(), Some(Hrs::new(5, 0, Step::Precommit)));
        (
            ask(&signer, vote(Step::Precommit, 5, 1)),
            ask(&signer, vote(Step::Precommit, 5, 2)),
            ask(&signer, vote(Step::Prevote, 5, 1)),
        )
    })
    .await
    .expect("second life");
    assert_eq!(again.expect("the same vote again"), first, "the stored signature, not a new one");
    let (c, why) = conflicting.expect_err("another block at the signed HRS");
    assert_eq!(c, code::REFUSED, "{why}");
    assert!(why.contains("different message"), "{why}");
    let (c, why) = lower.expect_err("a step below the signed HRS");
    assert_eq!(c, code::REFUSED, "{why}");
}
