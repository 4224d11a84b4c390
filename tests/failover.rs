//! Guarded failover end to end: three real `failoverd` processes (a and b producers, c witness),
//! each producer running a real-shaped validator (it signs while its process runs, with no
//! deadline of its own), judged from the signature ledger and from the activation logs, whose
//! windows end only where a validator's process was observed dead.

mod common;

use std::time::Duration;

use common::lab::{BLOCK, LEASE_TTL, Lab, Runner, SAFETY_MARGIN};
use failover::domain::MonoTime;
use nix::sys::signal::Signal;
use tokio::time::Instant;

/// These tests start many processes and measure time: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_daemon_fails_over_within_ttl_plus_one_second() {
    let _serial = SERIAL.lock().await;
    let mut lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    let before = lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    let killed = Instant::now();
    lab.kill9(active);
    lab.wait_signed_above(standby, before, LEASE_TTL + Duration::from_secs(5)).await;
    let took = killed.elapsed();
    assert!(took <= LEASE_TTL + Duration::from_secs(1), "failover took {took:?}");
    // The dead daemon's validator died with it (it ran as the daemon's child): never two signers.
    tokio::time::sleep(BLOCK * 3).await;
    assert!(!lab.signing(active).await, "the dead daemon's node still signs");
    let report = lab.report();
    assert!(report.is_safe(), "{report}");
    let overlaps = lab.s1_overlaps();
    assert!(overlaps.is_empty(), "two validators could sign at once: {overlaps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_daemon_fails_over_with_process_run_validators_too() {
    let _serial = SERIAL.lock().await;
    let mut lab = Lab::start_runner(Runner::Process, "", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    let before = lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    lab.kill9(active);
    lab.wait_signed_above(standby, before, LEASE_TTL + Duration::from_secs(5)).await;
    assert!(!lab.signing(active).await, "the dead daemon's node still signs");
    let report = lab.report();
    assert!(report.is_safe(), "{report}");
    let overlaps = lab.s1_overlaps();
    assert!(overlaps.is_empty(), "two validators could sign at once: {overlaps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_active_daemon_never_signs_after_its_deadline() {
    let _serial = SERIAL.lock().await;
    let lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    let before = lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    let stopped_at = MonoTime::now();
    lab.signal(active, Signal::SIGSTOP);
    lab.wait_signed_above(standby, before, LEASE_TTL * 2 + Duration::from_secs(3)).await;
    tokio::time::sleep((LEASE_TTL * 2).saturating_sub(Duration::from_millis(500))).await;
    lab.signal(active, Signal::SIGCONT);
    // Resumed, the zombie finds its deadline passed and fences; the new active keeps going.
    let resumed_height = lab.sim(standby).await.height;
    lab.wait_signed_above(standby, resumed_height + 3, Duration::from_secs(5)).await;
    assert!(!lab.signing(active).await, "the zombie signs again");
    let zombie = failover::domain::MemberId::new(common::lab::MEMBERS[active]).expect("id");
    let last = lab.records().iter().filter(|r| r.member == zombie).map(|r| r.mono_ns).max().unwrap_or(0);
    let deadline_bound = stopped_at.saturating_add(LEASE_TTL - SAFETY_MARGIN);
    assert!(
        last <= deadline_bound.as_nanos(),
        "the zombie signed after its deadline: {last} > {}",
        deadline_bound.as_nanos()
    );
    let report = lab.report();
    assert!(report.is_safe(), "{report}");
    let overlaps = lab.s1_overlaps();
    assert!(overlaps.is_empty(), "the frozen daemon's validator signed beside the new active: {overlaps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_runtime_is_fenced_by_the_deadline_thread() {
    let _serial = SERIAL.lock().await;
    let lab = Lab::start("", &[("FAILOVERD_TEST_HOOKS", "1")]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    lab.signal(active, Signal::SIGUSR2);
    // With every runtime worker blocked only the OS thread can act: it must kill the validator
    // (the node has no deadline of its own).
    let end = Instant::now() + LEASE_TTL + Duration::from_secs(3);
    loop {
        if !lab.signing(active).await {
            break;
        }
        assert!(Instant::now() < end, "the deadline thread did not fence the producer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let standby = 1 - active;
    lab.wait_signed_above(standby, 0, Duration::from_secs(5)).await;
    let report = lab.report();
    assert!(report.is_safe(), "{report}");
    assert!(lab.s1_overlaps().is_empty(), "{:?}", lab.s1_overlaps());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_fails_over_only_to_a_caught_up_standby() {
    let _serial = SERIAL.lock().await;
    let lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    // The standby lags far behind: stalling the active must not promote it.
    lab.control(standby, serde_json::json!({"behind": 10})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    lab.control(active, serde_json::json!({"stall": true})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(lab.last_signed(standby).is_none(), "a lagging standby was promoted");
    // Caught up, the standby takes over from the stalled active.
    lab.control(standby, serde_json::json!({"behind": 0})).await;
    lab.wait_signed_above(standby, 0, Duration::from_secs(8)).await;
    let report = lab.report();
    assert!(report.is_safe(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_producers_unhealthy_nobody_is_promoted() {
    let _serial = SERIAL.lock().await;
    let mut lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    for i in 0..2 {
        lab.control(i, serde_json::json!({"catching_up": true})).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The active's daemon dies while no standby is fit: nobody may take over.
    lab.kill9(active);
    tokio::time::sleep(LEASE_TTL * 3).await;
    assert!(lab.last_signed(standby).is_none(), "an unhealthy standby was promoted");
    assert!(!lab.signing(standby).await);
    let report = lab.report();
    assert!(report.is_safe(), "{report}");
    // Healthy again, the standby is promoted.
    lab.control(standby, serde_json::json!({"catching_up": false})).await;
    lab.wait_signed_above(standby, 0, Duration::from_secs(5)).await;
    assert!(lab.report().is_safe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_handover_misses_no_height() {
    use failover::proto::v1::PromoteRequest;
    let _serial = SERIAL.lock().await;
    let lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    let before = lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    lab.wait_signed_above(active, before + 3, Duration::from_secs(5)).await;
    let mut control =
        failover::api::client::connect(&lab.socket(active), Duration::from_secs(2)).await.expect("control socket");

    // Refusals first: a witness, and a standby that lags.
    let witness =
        control.promote(PromoteRequest { target: "c".into(), force: false }).await.expect_err("witness refused");
    assert_eq!(witness.code(), tonic::Code::FailedPrecondition);
    assert!(witness.message().contains("witness"), "{}", witness.message());
    lab.control(standby, serde_json::json!({"behind": 10})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lagging = control
        .promote(PromoteRequest { target: common::lab::MEMBERS[standby].into(), force: false })
        .await
        .expect_err("a lagging standby is refused");
    assert!(lagging.message().contains("behind") || lagging.message().contains("unhealthy"), "{}", lagging.message());
    lab.control(standby, serde_json::json!({"behind": 0})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let handed_at = lab.last_signed(active).expect("active signed");
    control
        .promote(PromoteRequest { target: common::lab::MEMBERS[standby].into(), force: false })
        .await
        .expect("promote accepted");
    let first = lab.wait_signed_above(standby, 0, Duration::from_secs(5)).await;
    lab.wait_signed_above(standby, first + 5, Duration::from_secs(5)).await;
    assert!(!lab.signing(active).await, "the old active still signs");
    let report = lab.report();
    assert!(report.is_safe(), "{report}\n--- a ---\n{}\n--- b ---\n{}", lab.log(0), lab.log(1));
    assert!(
        report.gaps.is_empty(),
        "the handover after height {handed_at} missed heights: {report}\n--- a ---\n{}\n--- b ---\n{}",
        lab.log(0),
        lab.log(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_holder_the_raft_leader_and_a_rising_watermark() {
    let _serial = SERIAL.lock().await;
    let lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let signed = lab.wait_signed_above(active, 2, Duration::from_secs(5)).await;
    // The active checkpoints what its node signed; every member reads the same store.
    let end = Instant::now() + Duration::from_secs(5);
    let replies = loop {
        let mut replies = Vec::new();
        for i in 0..3 {
            let mut client =
                failover::api::client::connect(&lab.socket(i), Duration::from_secs(2)).await.expect("socket");
            replies.push(client.status(failover::proto::v1::StatusRequest {}).await.expect("status").into_inner());
        }
        let caught_up = replies.iter().all(|r| r.watermark.and_then(|w| w.hrs).is_some_and(|h| h.height >= signed));
        if caught_up || Instant::now() >= end {
            break replies;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let active_name = common::lab::MEMBERS[active];
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.member, common::lab::MEMBERS[i]);
        assert_eq!(r.store_error, "", "{}", r.member);
        let lease = r.lease.as_ref().expect("lease state");
        assert_eq!(lease.holder, active_name, "{} sees another holder", r.member);
        assert!(lease.epoch > 0);
        let hrs = r.watermark.and_then(|w| w.hrs).expect("a watermark");
        assert!(hrs.height >= signed, "{}: watermark {} below signed height {signed}", r.member, hrs.height);
        let raft = r.raft.as_ref().expect("raft state");
        assert_eq!(raft.leader, replies[0].raft.as_ref().expect("raft").leader, "members disagree on the leader");
        assert!(!raft.leader.is_empty());
    }
    assert_eq!(replies[active].role, "active");
    assert_eq!(replies[1 - active].role, "standby");
    assert_eq!(replies[2].role, "witness");
}

/// The chaos suite's restart storm found this: a daemon restarted while its node still held a
/// permission gave the lease back at once, and the standby activated beside the old node. A
/// validator run by its daemon dies with it, so the old node must be observed dead before the
/// restarted member gives the lease back and the standby starts its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_holder_stops_its_node_before_giving_the_lease_back() {
    let _serial = SERIAL.lock().await;
    let mut lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    let before = lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    lab.kill9(active);
    // A node that reports catching up keeps its permission but makes its member ineligible, so
    // the standby — not the restarted member — takes the lease it gives back.
    lab.control(active, serde_json::json!({"catching_up": true})).await;
    lab.start_daemon(active, &[]);
    lab.wait_signed_above(standby, before, LEASE_TTL * 3).await;
    assert!(!lab.signing(active).await, "the old node still signs beside the new active");
    let overlaps = lab.s1_overlaps();
    assert!(overlaps.is_empty(), "two producers were allowed to sign at once: {overlaps:?}");
    let report = lab.report();
    assert!(report.is_safe(), "{report}");
}
