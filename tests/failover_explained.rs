//! Failover never waits for nothing and explains itself: three real `failoverd` processes (a
//! and b producers, c witness) with real-shaped validators and a 30 s cooldown, driven the way
//! an operator drives them, and judged from the signature ledger, `failoverctl status` and the
//! members' own log files.

mod common;

use std::time::Duration;

use common::lab::{LEASE_TTL, Lab, MEMBERS, Store};
use failover::proto::v1::{DemoteRequest, PromoteRequest, StatusRequest};
use nix::sys::signal::Signal;
use tokio::time::Instant;

/// These tests start many processes and measure time: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A lab whose cooldown is long enough to matter (the examples use 30 s).
async fn lab_with_long_cooldown() -> Lab {
    Lab::start_each(Store::Raft, &|_, text| text.replace("cooldown = \"1s\"", "cooldown = \"30s\""), &[]).await
}

async fn why(lab: &Lab, i: usize) -> String {
    let mut control =
        failover::api::client::connect(&lab.socket(i), Duration::from_secs(2)).await.expect("control socket");
    control.status(StatusRequest {}).await.expect("status").into_inner().why
}

/// Polls member `i`'s status until its `why` contains `text`; returns it.
async fn wait_why(lab: &Lab, i: usize, text: &str, limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        let why = why(lab, i).await;
        if why.contains(text) {
            return why;
        }
        assert!(Instant::now() < end, "member {} never said {text:?}; last: {why:?}\n{}", MEMBERS[i], lab.log(i));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Planned handovers to b and back to a leave b in cooldown since its own stand-down; when a
/// then dies, b — healthy, caught up and the only producer left — takes the free lease within
/// the lease bound, and its log says whose lease ended and why it took over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_just_handed_back_takes_over_when_the_active_dies() {
    let _serial = SERIAL.lock().await;
    let mut lab = lab_with_long_cooldown().await;
    let a = lab.wait_active(Duration::from_secs(15)).await;
    let b = 1 - a;
    lab.wait_signed_above(a, 0, Duration::from_secs(5)).await;
    let mut control_a =
        failover::api::client::connect(&lab.socket(a), Duration::from_secs(2)).await.expect("control socket");
    control_a.promote(PromoteRequest { target: MEMBERS[b].into(), force: false }).await.expect("promote accepted");
    let first = lab.wait_signed_above(b, 0, Duration::from_secs(5)).await;
    lab.wait_signed_above(b, first + 2, Duration::from_secs(5)).await;
    // b hands back with `demote`, run where it belongs: on the active.
    let mut control_b =
        failover::api::client::connect(&lab.socket(b), Duration::from_secs(2)).await.expect("control socket");
    control_b.demote(DemoteRequest {}).await.expect("demote accepted");
    let back = lab.wait_signed_above(a, lab.last_signed(a).unwrap_or(0), Duration::from_secs(5)).await;
    lab.wait_signed_above(a, back + 2, Duration::from_secs(5)).await;
    let standby_why = wait_why(&lab, b, "lease held by", Duration::from_secs(3)).await;
    assert!(standby_why.contains(&format!("if {} stopped now, {} (priority", MEMBERS[a], MEMBERS[b])), "{standby_why}");

    let before = lab.last_signed(a).unwrap_or(0).max(lab.last_signed(b).unwrap_or(0));
    let killed = Instant::now();
    lab.kill9(a);
    lab.wait_signed_above(b, before, LEASE_TTL + Duration::from_secs(10)).await;
    let took = killed.elapsed();
    eprintln!("kill -9 of the active right after a handover back → the standby that handed back signs after {took:?}");
    assert!(
        took <= LEASE_TTL + Duration::from_secs(1),
        "b took {took:?} to take over a free lease (limit: lease_ttl + 1 s)\n{}",
        lab.log(b)
    );
    let log = lab.log(b);
    let takeover = log
        .lines()
        .find(|l| l.contains("standby → promoting") && l.contains(&format!("holder {} stopped renewing", MEMBERS[a])))
        .unwrap_or_else(|| panic!("no takeover line naming the silent holder in b's log:\n{log}"));
    assert!(takeover.contains("its lease at epoch") && takeover.contains("ended"), "{takeover}");
    wait_why(&lab, b, "active: lease epoch", Duration::from_secs(2)).await;
    let report = lab.report();
    assert!(report.is_safe(), "{report}");
}

/// An active whose node stalls within the cooldown of its activation keeps producing (L2), and
/// says so: its status names the cooldown and how long it still holds, and its log carries a
/// WARN with the same sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_active_held_by_its_cooldown_says_so() {
    let _serial = SERIAL.lock().await;
    let lab = lab_with_long_cooldown().await;
    let a = lab.wait_active(Duration::from_secs(15)).await;
    lab.wait_signed_above(a, 0, Duration::from_secs(5)).await;
    lab.control(a, serde_json::json!({"stall": true})).await;
    let held = wait_why(&lab, a, "step-down held by cooldown", Duration::from_secs(5)).await;
    assert!(held.contains("although the local node is unhealthy ("), "{held}");
    // The node stays stalled: more probes, more blocks missed, but one situation, one line.
    let probes_later = Instant::now() + Duration::from_secs(3);
    while Instant::now() < probes_later {
        assert!(why(&lab, a).await.contains("step-down held by cooldown"), "the situation changed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = lab.log(a);
    let warned: Vec<&str> =
        log.lines().filter(|l| l.contains(" WARN ") && l.contains("step-down held by cooldown")).collect();
    assert_eq!(warned.len(), 1, "one WARN for the held step-down, not one per probe:\n{log}");
}

/// Normal start, a planned handover and a clean stop, read from the members' log files: no
/// colour codes, no Rust debug formatting, and no WARN or ERROR, because nothing went wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_start_handover_and_stop_leave_plain_logs_without_warnings() {
    let _serial = SERIAL.lock().await;
    let mut lab = Lab::start("", &[]).await;
    let a = lab.wait_active(Duration::from_secs(15)).await;
    let b = 1 - a;
    let before = lab.wait_signed_above(a, 0, Duration::from_secs(5)).await;
    lab.wait_signed_above(a, before + 2, Duration::from_secs(5)).await;
    let mut control =
        failover::api::client::connect(&lab.socket(a), Duration::from_secs(2)).await.expect("control socket");
    control.promote(PromoteRequest { target: MEMBERS[b].into(), force: false }).await.expect("promote accepted");
    let first = lab.wait_signed_above(b, 0, Duration::from_secs(5)).await;
    lab.wait_signed_above(b, first + 2, Duration::from_secs(5)).await;
    for i in [a, 2, b] {
        lab.signal(i, Signal::SIGTERM);
        assert!(lab.wait_exit(i, Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", lab.log(i));
    }
    for (i, member) in MEMBERS.iter().enumerate() {
        let log = lab.log(i);
        assert!(!log.contains('\u{1b}'), "colour codes in {member}'s log file:\n{log}");
        for debug in ["Some(", "None", "Hrs {", "MemberId(", "Epoch("] {
            assert!(!log.contains(debug), "debug formatting ({debug}) in {member}'s log:\n{log}");
        }
        let loud: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
        assert!(
            loud.is_empty(),
            "{member} logged warnings on a normal run:\n{}\n--- whole log ---\n{log}",
            loud.join("\n")
        );
    }
    let handover = lab.log(b);
    assert!(
        handover.lines().any(|l| l.contains("standby → promoting") && l.contains("a planned handover from")),
        "{handover}"
    );
}
