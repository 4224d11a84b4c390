//! Hostile traffic against a running lab of real member processes with real simulated nodes
//! (docs/design.md §5, trust model), judged from outside the daemons: the signature ledger, the
//! nodes' activation logs, the members' metrics and whether their processes still run.
//!
//! - Forged snapshots (one voter that takes the lease, a ConfState raft-rs panics on, a state
//!   that does not decode), spoofed senders, an operator's certificate, a client without one,
//!   a protobuf group bomb and 300 statuses in another member's name, sent to every member:
//!   refused, no failover, no member exits, 0 double signs.
//! - A panic inside the raft task ends the process within a second, after its producer was
//!   fenced — before the permission it had would have run out.

mod common;

use std::time::Duration;

use common::lab::{LEASE_TTL, Lab, MEMBERS, SAFETY_MARGIN};
use common::scrape::{get, sample};
use failover::domain::MemberId;
use failover::sim::activation::ActivationEvent;
use failover::sim::rogue_peer::{self, Answer, ForgedSnapshot, RoguePeer};
use failover::tls::TlsMaterial;

const RAFT_IDS: [u64; 3] = [1, 2, 3];

fn material(tls: &failover::config::TlsConfig) -> TlsMaterial {
    TlsMaterial::load(tls).expect("lab certificates load")
}

fn id(s: &str) -> MemberId {
    MemberId::new(s).expect("id")
}

/// The epoch and holder member `i` reports (through failoverctl on its socket).
fn lease_of(lab: &Lab, i: usize) -> (String, u64) {
    let o = lab.failoverctl(i, &["--json", "status"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status JSON");
    let lease = &s["self"]["lease"];
    (lease["holder"].as_str().unwrap_or_default().to_string(), lease["epoch"].as_u64().unwrap_or_default())
}

/// Every attack against member `target`; returns how many forged snapshots it accepted at the
/// transport (they must then be refused by the snapshot check).
async fn attack(lab: &Lab, target: usize) -> u64 {
    let address = format!("127.0.0.1:{}", lab.peer_ports[target]);
    let me = RAFT_IDS[target];
    let other = (target + 1) % 3;
    let third = (target + 2) % 3;
    let target_id = id(MEMBERS[target]);
    let voters = &RAFT_IDS;
    let takeover =
        rogue_peer::forged_snapshot(ForgedSnapshot::SingleVoterTakeover, RAFT_IDS[other], me, voters, &target_id);

    // (a) no certificate, and plaintext: nothing gets through.
    for peer in [RoguePeer::connect(&address, None, true).await, RoguePeer::connect(&address, None, false).await] {
        let answer = peer.send(RAFT_IDS[other], &takeover).await;
        assert!(matches!(answer, Answer::Unreachable(_)), "member {target}: anonymous: {answer:?}");
    }
    // (b) a member's certificate claiming to be the third member.
    let member = RoguePeer::connect(&address, Some(&material(&lab.pki.member(MEMBERS[other]))), true).await;
    let spoofed =
        rogue_peer::forged_snapshot(ForgedSnapshot::SingleVoterTakeover, RAFT_IDS[third], me, voters, &target_id);
    let answer = member.send(RAFT_IDS[third], &spoofed).await;
    assert!(matches!(&answer, Answer::Refused { code: tonic::Code::PermissionDenied, .. }), "{answer:?}");
    // (c) an operator's certificate.
    let operator = RoguePeer::connect(&address, Some(&material(&lab.pki.operators["ops"])), true).await;
    let answer = operator.send(RAFT_IDS[other], &takeover).await;
    assert!(matches!(&answer, Answer::Refused { code: tonic::Code::PermissionDenied, .. }), "{answer:?}");
    // Honestly from a member's own certificate: the transport takes them, the snapshot check
    // keeps each from raft.
    let mut accepted = 0;
    for kind in
        [ForgedSnapshot::SingleVoterTakeover, ForgedSnapshot::InvalidConfState, ForgedSnapshot::UndecodableState]
    {
        let forged = rogue_peer::forged_snapshot(kind, RAFT_IDS[other], me, voters, &target_id);
        if member.send(RAFT_IDS[other], &forged).await.is_accepted() {
            accepted += 1;
        }
    }
    let answer = member.send_bytes(RAFT_IDS[other], vec![rogue_peer::group_bomb(RAFT_IDS[other], me, 100_000)]).await;
    assert!(matches!(&answer, Answer::Refused { code: tonic::Code::InvalidArgument, .. }), "{answer:?}");
    // 300 statuses in the third member's name, claiming a node far ahead of the chain.
    for _ in 0..300 {
        let answer = member.publish(rogue_peer::spoofed_status(&id(MEMBERS[third]))).await;
        assert!(matches!(&answer, Answer::Refused { code: tonic::Code::PermissionDenied, .. }), "{answer:?}");
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_spoofed_peer_traffic_changes_nothing_in_a_running_cluster() {
    let mut lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(30)).await;
    let before = lease_of(&lab, 2);
    let height = lab.wait_signed_above(active, 0, Duration::from_secs(10)).await;
    for target in 0..3 {
        assert_eq!(attack(&lab, target).await, 3, "member {target} took the honest transport of every snapshot");
    }
    // The chain goes on under the same holder: no failover, no new epoch.
    lab.wait_signed_above(active, height + 10, Duration::from_secs(20)).await;
    for (i, name) in MEMBERS.iter().enumerate() {
        assert!(lab.alive(i), "member {} exited", name);
        assert!(!lab.log(i).contains('\x1b'), "member {}'s log file carries colour codes", name);
        assert_eq!(lease_of(&lab, i), before, "member {} sees another lease", name);
        let (status, metrics) = get(lab.metrics_ports[i], "/metrics").await;
        assert_eq!(status, 200);
        let count = |reason: &str| sample(&metrics, &format!("failoverd_peer_refusals_total{{reason=\"{reason}\"}}"));
        assert_eq!(count("snapshot"), Some(3.0), "member {}:\n{metrics}", name);
        assert_eq!(count("spoofed_sender"), Some(301.0), "member {}", name);
        assert_eq!(count("not_a_member"), Some(1.0), "member {}", name);
        assert_eq!(count("malformed"), Some(1.0), "member {}", name);
    }
    let report = lab.report();
    assert!(report.is_safe(), "{report}");
    assert!(lab.s1_overlaps().is_empty(), "{:?}", lab.s1_overlaps());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_raft_task_fences_the_producer_and_ends_the_process_within_a_second() {
    let mut lab = Lab::start("", &[("FAILOVERD_TEST_HOOKS", "1")]).await;
    let active = lab.wait_active(Duration::from_secs(30)).await;
    lab.wait_signed_above(active, 1, Duration::from_secs(10)).await;
    let injected = failover::domain::MonoTime::now();
    lab.signal(active, nix::sys::signal::Signal::SIGUSR1);
    let status = lab.wait_exit(active, Duration::from_secs(1)).expect("the member exited within 1 s of the panic");
    assert!(!status.success(), "it exited with {status}");
    // The fence killed its validator on the way out: observed dead well before the lease it
    // held could have run out (its last renew came before the panic).
    let records = lab.activations(active);
    let pid = records
        .iter()
        .filter(|r| r.event == ActivationEvent::Activate)
        .filter_map(|r| r.pid)
        .next_back()
        .expect("the validator was started");
    let end = std::time::Instant::now() + Duration::from_secs(2);
    let exited = loop {
        let found =
            lab.activations(active).into_iter().find(|r| r.event == ActivationEvent::Exited && r.pid == Some(pid));
        if let Some(r) = found {
            break r;
        }
        assert!(std::time::Instant::now() < end, "the validator was not observed dead within 2 s of the panic");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let bound = injected.saturating_add(LEASE_TTL - SAFETY_MARGIN);
    assert!(
        exited.mono_ns < bound.as_nanos(),
        "the validator outlived the lease it held ({} ns after its end)",
        exited.mono_ns - bound.as_nanos()
    );
    assert!(lab.log(active).contains("a panic inside the raft task"), "{}", lab.log(active));
    // The others take over.
    let next = lab.wait_active(Duration::from_secs(20)).await;
    assert_ne!(next, active);
    assert!(lab.report().is_safe(), "{}", lab.report());
}
