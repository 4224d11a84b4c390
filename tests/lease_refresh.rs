//! Signer mode's lease refresh outside the raft log (docs/design.md §4): real members on
//! loopback sockets with mutual TLS, raft-engine in temp dirs, signer mode's default timings
//! (lease_ttl 400 ms, renew every 150 ms, raft tick 100 ms). The holder's renews restart the raft leader's
//! expiry timer and write nothing to the log; only the holder can do that, and a holder that
//! stops renewing loses its lease on time whatever else arrives.

mod common;

use std::time::Duration;

use common::raft_cluster::{Cluster, NAMES, Timings, renews_by_path, within};
use failover::coord::raft::RaftOptions;
use failover::coord::raft::peer_gate::Refusal;
use failover::coord::{CoordError, Coordinator};
use failover::domain::{Lease, LeaseView};
use failover::proto::v1::LeaseRefresh;
use failover::sim::rogue_peer::{Answer, RoguePeer};
use failover::tls::TlsMaterial;
use tokio::time::Instant;

const T: Timings = Timings::SIGNER;

/// How late past its TTL a lease may end: the leader's check runs every tick near its expiry,
/// then one commit fsynced on every member, and scheduling on a busy 2-core machine.
fn expiry_slack() -> Duration {
    T.tick * 2 + Duration::from_millis(700)
}

/// The deadline of the test's own renews: long enough that a refresh (given half of it) is not
/// sent to the log by one slow round trip on a loaded machine. The daemon's is `call_timeout`.
const RENEW_DEADLINE: Duration = Duration::from_secs(2);

/// A signer-mode cluster whose raft leader has settled, and the producer that holds the lease
/// without leading raft: (cluster, leader, holder, lease). The holder has renewed past the new
/// leader's grace (its TTL and an election timeout from its election), so from here on only
/// the TTL since the last renew decides when the lease ends.
async fn holding_cluster(t: Timings) -> (Cluster, usize, usize, Lease) {
    let c = Cluster::start_timed(3, RaftOptions::default(), t, |_, _| None).await;
    let leader = c.leader(Duration::from_secs(10)).await;
    // Members 0 and 1 are producers, 2 the witness.
    let holder = if leader == 0 { 1 } else { 0 };
    let deadline = within(Duration::from_secs(10));
    let lease = loop {
        match c.node(holder).acquire(&c.member(holder), within(t.call_timeout)).await {
            Ok(lease) => break lease,
            Err(e) => assert!(Instant::now() < deadline, "no grant within 10 s: {e}"),
        }
        tokio::time::sleep(t.tick).await;
    };
    let held = LeaseView::Held { holder: c.member(holder), epoch: lease.epoch };
    let mut view = c.node(leader).watch();
    let applied = tokio::time::timeout(Duration::from_secs(5), view.wait_for(|v| v.lease == held)).await;
    assert!(applied.is_ok_and(|r| r.is_ok()), "the leader never applied the grant");
    let grace_over = Instant::now() + t.lease_ttl + t.election_timeout();
    while Instant::now() < grace_over {
        c.node(holder).renew(&lease, within(RENEW_DEADLINE)).await.expect("renew");
        tokio::time::sleep(t.renew_interval).await;
    }
    (c, leader, holder, lease)
}

/// Waits until the leader shows the lease free; returns when.
async fn expired_at(c: &Cluster, leader: usize) -> Instant {
    let mut view = c.node(leader).watch();
    let freed = tokio::time::timeout(Duration::from_secs(5), view.wait_for(|v| v.lease.holder().is_none())).await;
    assert!(freed.is_ok_and(|r| r.is_ok()), "the lease never expired");
    Instant::now()
}

fn material(c: &Cluster, member: usize) -> TlsMaterial {
    TlsMaterial::load(&c.pki.member(NAMES[member])).expect("member certificate loads")
}

// Thirty renews over three TTLs keep the lease at its epoch on every member while no member's
// raft log grows; once they stop, the leader expires the lease one TTL after the last, and a
// renew after that is refused by the log: the holder learns it lost the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_holders_renews_keep_its_lease_without_a_log_entry_and_it_ends_when_they_stop() {
    let (c, leader, holder, lease) = holding_cluster(T).await;
    c.node(holder).renew(&lease, within(RENEW_DEADLINE)).await.expect("the first renew");
    let commits: Vec<u64> = (0..3).map(|i| c.node(i).info().commit).collect();
    let (by_leader, by_log) = (renews_by_path(c.node(holder), "leader"), renews_by_path(c.node(holder), "log"));
    let mut last_renew = Instant::now();
    for n in 0..30 {
        tokio::time::sleep(T.renew_interval).await;
        last_renew = Instant::now();
        let renewed = c.node(holder).renew(&lease, within(RENEW_DEADLINE)).await;
        assert_eq!(renewed.map(|l| l.epoch).ok(), Some(lease.epoch), "renew {n}");
    }
    let held = LeaseView::Held { holder: c.member(holder), epoch: lease.epoch };
    for (i, commit) in commits.iter().enumerate() {
        assert_eq!(c.node(i).watch().borrow().lease, held, "member {i} after three TTLs of renews");
        assert_eq!(c.node(i).info().commit, *commit, "member {i}: the renews wrote to the raft log");
    }
    assert_eq!(renews_by_path(c.node(holder), "leader") - by_leader, 30, "the renews did not all refresh the leader");
    assert_eq!(renews_by_path(c.node(holder), "log"), by_log, "a renew went through the log");
    let ended = expired_at(&c, leader).await - last_renew;
    assert!(ended >= T.lease_ttl, "expired {ended:?} after the last renew, within its TTL");
    assert!(ended <= T.lease_ttl + expiry_slack(), "expired {ended:?} after the last renew");
    let late = c.node(holder).renew(&lease, within(RENEW_DEADLINE)).await;
    assert!(matches!(late, Err(CoordError::NotHolder { .. })), "a renew of an expired lease: {late:?}");
}

// The peer port refuses every refresh that is not the holder's own, with the reason, by call,
// alone on a refresh stream and in a round alike: another member's certificate claiming the holder (spoofed_sender),
// an operator's certificate, a member that is none of the cluster, an empty name, the wrong
// epoch, an absurd TTL, a refresh sent to a follower. A member that keeps forging refreshes,
// by call, on streams and in rounds, for a silent holder does not keep its lease alive: it ends one TTL
// after the holder's last renew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_is_not_the_holders_own_is_refused_and_the_lease_still_expires() {
    let (c, leader, holder, lease) = holding_cluster(T).await;
    let other = (0..3).find(|i| *i != holder && *i != leader).expect("a third member");
    let address = |i: usize| format!("127.0.0.1:{}", c.ports[i]);
    let forger = RoguePeer::connect(&address(leader), Some(&material(&c, other)), true).await;
    let as_holder = RoguePeer::connect(&address(leader), Some(&material(&c, holder)), true).await;
    let operator_tls = TlsMaterial::load(&c.pki.operators["ops"]).expect("operator certificate loads");
    let operator = RoguePeer::connect(&address(leader), Some(&operator_tls), true).await;
    let to_follower = RoguePeer::connect(&address(other), Some(&material(&c, holder)), true).await;
    let ttl_ms = u64::try_from(T.lease_ttl.as_millis()).expect("ms");
    let honest = LeaseRefresh {
        member: NAMES[holder].into(),
        epoch: lease.epoch.get(),
        ttl_ms,
        seq: 0,
        validator: String::new(),
    };
    let spoofed_before = c.node(leader).peer_refusals().count(Refusal::SpoofedSender);

    use tonic::Code::{FailedPrecondition, InvalidArgument, PermissionDenied};
    let cases: [(&str, &RoguePeer, LeaseRefresh, tonic::Code, &str); 7] = [
        ("another member's certificate", &forger, honest.clone(), PermissionDenied, "claiming to be member"),
        ("an operator's certificate", &operator, honest.clone(), PermissionDenied, "only members speak"),
        (
            "no such member",
            &as_holder,
            LeaseRefresh { member: "zz".into(), ..honest.clone() },
            PermissionDenied,
            "zz, which is no other member",
        ),
        (
            "an empty name",
            &as_holder,
            LeaseRefresh { member: String::new(), ..honest.clone() },
            InvalidArgument,
            "names no valid member",
        ),
        (
            "the wrong epoch",
            &as_holder,
            LeaseRefresh { epoch: u64::MAX, ..honest.clone() },
            FailedPrecondition,
            "does not hold the lease at epoch 18446744073709551615",
        ),
        (
            "an absurd TTL",
            &as_holder,
            LeaseRefresh { ttl_ms: u64::MAX, ..honest.clone() },
            FailedPrecondition,
            "declares a TTL of 18446744073709551615 ms",
        ),
        ("a follower", &to_follower, honest.clone(), FailedPrecondition, "not the raft leader"),
    ];
    for (what, peer, refresh, code, reason) in cases {
        let (by_call, on_stream) =
            (peer.refresh_lease(refresh.clone()).await, peer.refresh_on_stream(refresh.clone()).await);
        let in_round = peer.refresh_in_round(vec![refresh]).await;
        for (way, answer) in [("call", by_call), ("stream", on_stream), ("round", in_round)] {
            match answer {
                Answer::Refused { code: got, message } => {
                    assert_eq!(got, code, "{what}, by {way}: {message}");
                    assert!(message.contains(reason), "{what}, by {way}: {message}");
                }
                other => panic!("{what}, by {way}: {other:?}"),
            }
        }
    }
    let spoofed = c.node(leader).peer_refusals().count(Refusal::SpoofedSender) - spoofed_before;
    assert_eq!(spoofed, 3, "the spoofed refreshes, by call, alone and in a round, are counted as spoofed_sender");

    // The holder renews once more, then falls silent while another member forges its refreshes.
    c.node(holder).renew(&lease, within(RENEW_DEADLINE)).await.expect("renew");
    let last_renew = Instant::now();
    let forging = async {
        loop {
            let forged = [
                forger.refresh_lease(honest.clone()).await,
                forger.refresh_on_stream(honest.clone()).await,
                forger.refresh_in_round(vec![honest.clone()]).await,
            ];
            for answer in forged {
                assert!(
                    matches!(&answer, Answer::Refused { code: PermissionDenied, .. }),
                    "a forged refresh was not refused as spoofed: {answer:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ended = tokio::select! {
        at = expired_at(&c, leader) => at - last_renew,
        _ = forging => unreachable!("forges until the lease ends"),
    };
    assert!(ended <= T.lease_ttl + expiry_slack(), "expired {ended:?} after the holder's last renew");
}

// Key-holding mode keeps log renews: its S1 rests on the lease's timing, and a raft leader deposed
// without knowing it could accept a refresh the new leader never hears of. Each renew is a commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_holding_holders_renews_are_raft_log_entries() {
    let t = Timings::TEST;
    let (c, leader, holder, lease) = holding_cluster(t).await;
    let before = c.node(leader).info().commit;
    let (by_leader, by_log) = (renews_by_path(c.node(holder), "leader"), renews_by_path(c.node(holder), "log"));
    for n in 0..5 {
        let renewed = c.node(holder).renew(&lease, within(t.call_timeout)).await;
        assert_eq!(renewed.map(|l| l.epoch).ok(), Some(lease.epoch), "renew {n}");
    }
    // The holder hears of a commit from the leader before the leader publishes its own index
    // at the end of that turn: waited for, not read at once.
    let after = c.node(leader).wait_info(within(t.call_timeout), |i| i.commit >= before + 5).await;
    let after = after.map_or_else(|| c.node(leader).info().commit, |i| i.commit);
    assert!(after >= before + 5, "five renews, {} commits", after - before);
    assert_eq!(renews_by_path(c.node(holder), "leader"), by_leader, "a key-holding renew went outside the log");
    assert_eq!(renews_by_path(c.node(holder), "log") - by_log, 5);
}
