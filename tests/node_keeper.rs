//! The keeper against real daemons and real-shaped validators (`sim-node --sign-while-running`,
//! which signs for as long as its process runs): a frozen daemon, a forking start script, a
//! killed keeper. Judged from the signature ledger and from deaths the lab's death watch observed
//! from outside the daemons, never from the daemons' own words.

mod common;

use std::time::Duration;

use common::lab::{LEASE_TTL, Lab, MEMBERS, Runner};
use failover::domain::MemberId;
use failover::keeper::group;
use failover::sim::activation::ActivationEvent;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The first instant member `i`'s validator was observed dead after `after` (nanoseconds).
fn observed_death(lab: &Lab, i: usize, after: u64) -> Option<u64> {
    lab.activations(i)
        .iter()
        .filter(|r| r.event == ActivationEvent::Exited && r.mono_ns >= after)
        .map(|r| r.mono_ns)
        .min()
}

/// The first signature of member `i` after `after` (nanoseconds).
fn first_signature(lab: &Lab, i: usize, after: u64) -> Option<u64> {
    let id = MemberId::new(MEMBERS[i]).expect("id");
    lab.records().iter().filter(|r| r.member == id && r.mono_ns >= after).map(|r| r.mono_ns).min()
}

async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGSTOP of the active daemon for 2 × lease_ttl; returns the margin (ns) between the old
/// validator's observed death and the new active's first signature.
async fn freeze_active_daemon(runner: Runner) -> i64 {
    let lab = Lab::start_runner(runner, "", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    let before = lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    let stopped = failover::domain::MonoTime::now().as_nanos();
    lab.signal(active, Signal::SIGSTOP);
    lab.wait_signed_above(standby, before, LEASE_TTL * 2 + Duration::from_secs(3)).await;
    tokio::time::sleep(LEASE_TTL * 2).await;
    lab.signal(active, Signal::SIGCONT);
    let dead = observed_death(&lab, active, stopped).expect("the frozen daemon's validator was observed dead");
    let first = first_signature(&lab, standby, stopped).expect("the standby signed");
    assert!(dead < first, "the new active signed {} ms before the old validator died", (dead - first) / 1_000_000);
    let overlaps = lab.s1_overlaps();
    assert!(overlaps.is_empty(), "two validators could sign at once: {overlaps:?}");
    let report = lab.report();
    assert!(report.is_safe(), "{report}");
    (first - dead) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_daemon_cannot_keep_its_process_run_node_signing() {
    let _serial = SERIAL.lock().await;
    let margin = freeze_active_daemon(Runner::Process).await;
    eprintln!("process runner: the old validator died {} ms before the new active signed", margin / 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_daemon_cannot_keep_its_filepv_node_signing() {
    let _serial = SERIAL.lock().await;
    let margin = freeze_active_daemon(Runner::FilePv).await;
    eprintln!("cometbft-filepv: the old validator died {} ms before the new active signed", margin / 1_000_000);
}

/// Not part of the suite: the margin figures of the closing note.
/// `cargo test --test node_keeper -- --ignored --nocapture sigstop_margins`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (40 labs, about 8 minutes), not a test"]
async fn sigstop_margins_over_twenty_runs() {
    let _serial = SERIAL.lock().await;
    for (name, runner) in [("process", Runner::Process), ("cometbft-filepv", Runner::FilePv)] {
        let mut margins = Vec::new();
        for _ in 0..20 {
            margins.push(freeze_active_daemon(runner).await);
        }
        margins.sort_unstable();
        let ms = |ns: i64| ns as f64 / 1e6;
        eprintln!(
            "{name}: n={} margin (old validator observed dead -> new active's first signature) p50 {:.0} ms, min {:.0} ms, max {:.0} ms",
            margins.len(),
            ms(margins[margins.len() / 2]),
            ms(margins[0]),
            ms(margins[margins.len() - 1])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_forking_script_is_handed_over_and_killed_without_an_orphan() {
    use failover::proto::v1::PromoteRequest;
    let _serial = SERIAL.lock().await;
    let mut lab = Lab::start_runner(Runner::Forking, "", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    let old_group = lab.validator_group(active).expect("the validator's group");
    assert!(group::live_members(old_group).expect("/proc") >= 2, "the script and the validator it forked");

    // A planned handover: the whole group stops, not just the script.
    let mut control =
        failover::api::client::connect(&lab.socket(active), Duration::from_secs(2)).await.expect("control socket");
    control.promote(PromoteRequest { target: MEMBERS[standby].into(), force: false }).await.expect("promote");
    let first = lab.wait_signed_above(standby, 0, Duration::from_secs(10)).await;
    lab.wait_signed_above(standby, first + 3, Duration::from_secs(5)).await;
    assert_eq!(group::live_members(old_group).expect("/proc"), 0, "an orphan of the old node outlived the handover");
    assert!(lab.validator_pids(active).is_empty(), "the old validator was never observed dead");

    // kill -9 of the new active's daemon: its keeper kills the whole group at once.
    let new_group = lab.validator_group(standby).expect("the new validator's group");
    let killed = failover::domain::MonoTime::now().as_nanos();
    lab.kill9(standby);
    wait_for(Duration::from_secs(5), "the keeper killed the dead daemon's node group", || {
        group::live_members(new_group).is_ok_and(|n| n == 0)
    })
    .await;
    wait_for(Duration::from_secs(2), "the death watch saw it", || observed_death(&lab, standby, killed).is_some())
        .await;
    let dead = observed_death(&lab, standby, killed).expect("observed dead");
    eprintln!(
        "forking node: the keeper killed the group {} ms after the daemon's kill -9",
        (dead - killed) / 1_000_000
    );
    lab.wait_signed_above(active, first, LEASE_TTL + Duration::from_secs(8)).await;
    let overlaps = lab.s1_overlaps();
    assert!(overlaps.is_empty(), "two validators could sign at once: {overlaps:?}");
    let report = lab.report();
    assert!(report.is_safe(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_keeper_makes_the_daemon_fence_its_node_and_step_down() {
    let _serial = SERIAL.lock().await;
    let lab = Lab::start_runner(Runner::Forking, "", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    let group_id = lab.validator_group(active).expect("the validator's group");
    let keeper = lab.keeper_pid(active).expect("the active daemon's keeper");
    kill(Pid::from_raw(keeper), Signal::SIGKILL).expect("kill the keeper");
    // The daemon notices, kills the group itself (the validator is the script's child: the
    // keeper's death signal reaches only the script) and stands down; the standby takes over.
    wait_for(Duration::from_secs(5), "the daemon killed the node group", || {
        group::live_members(group_id).is_ok_and(|n| n == 0)
    })
    .await;
    lab.wait_signed_above(standby, 0, LEASE_TTL + Duration::from_secs(8)).await;
    let log = lab.log(active);
    assert!(log.contains("keeper"), "the log says the keeper was lost:\n{log}");
    let status = lab.failoverctl(active, &["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("last       fenced: the daemon itself (its keeper died) stopped the producer"),
        "status says why:\n{status}"
    );
    let overlaps = lab.s1_overlaps();
    assert!(overlaps.is_empty(), "two validators could sign at once: {overlaps:?}");
    assert!(lab.report().is_safe());
}

/// A daemon with its build's `failoverd-keeper` beside it (as `cargo build` leaves them) starts
/// its keepers from that binary, which carries a fraction of the daemon binary's private memory;
/// `ps` names them `failoverd-keepe` (the kernel keeps 15 bytes) and the log says which it chose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_starts_its_keepers_from_the_keeper_alone_binary_of_its_build() {
    let _serial = SERIAL.lock().await;
    let lab = Lab::start_runner(Runner::Forking, "", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    let keeper = lab.keeper_pid(active).expect("the active daemon's keeper");
    let exe = std::fs::read_link(format!("/proc/{keeper}/exe")).expect("the keeper's executable");
    assert_eq!(exe.file_name().and_then(|n| n.to_str()), Some("failoverd-keeper"), "{}", exe.display());
    let comm = std::fs::read_to_string(format!("/proc/{keeper}/comm")).expect("the keeper's name");
    assert_eq!(comm.trim_end(), "failoverd-keepe");
    let log = lab.log(active);
    assert!(log.contains("keepers run the keeper-alone binary of this build"), "{log}");
    assert!(lab.report().is_safe());
}
