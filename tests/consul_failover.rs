//! Guarded failover with the lease in a real 3-server Consul cluster on loopback: each member's
//! daemon talks to its own server agent (a → server0, b → server1, c → server2), as members in
//! three regions would. Judged from Consul's own leader key, the simulated nodes' signature
//! ledger and their activation logs.

mod common;

use std::time::Duration;

use common::consul::{self, ConsulAgent};
use common::lab::{Lab, Store};
use failover::config::Config;
use failover::coord::Coordinator;
use failover::coord::consul::ConsulCoordinator;
use failover::domain::LeaseView;
use tokio::time::Instant;

const CHECK_TTL: Duration = Duration::from_millis(1000);

/// One lab at a time: three Consul servers, three daemons and two nodes per test already load
/// both cores, and the handover limit is a timing bound.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// The lab's safety margin is 200 ms, so the holder's validity is 800 ms after each renew; the
/// lock-delay must cover it plus the margin: at least the check TTL (config validation).
const LOCK_DELAY: Duration = CHECK_TTL;

async fn lab(agents: &[ConsulAgent]) -> Lab {
    let store = Store::Consul {
        agents: agents.iter().map(ConsulAgent::address).collect(),
        check_ttl: CHECK_TTL,
        lock_delay: LOCK_DELAY,
    };
    Lab::start_with(store, "", &[]).await
}

/// A reader of the lease in Consul, through agent `via` (not a member's daemon).
fn reader(lab: &Lab, agents: &[ConsulAgent], via: usize) -> ConsulCoordinator {
    let text = std::fs::read_to_string(&lab.configs[2]).expect("config");
    let text = text.replace(&agents[2].address(), &agents[via].address());
    let config = Config::parse(&text).expect("lab config parses");
    ConsulCoordinator::start(&config).expect("reader")
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(2)
}

/// Waits until Consul says `member` holds the lease; returns how long it took.
async fn wait_holder(r: &ConsulCoordinator, member: &str, limit: Duration, lab: &Lab) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(LeaseView::Held { holder, .. }) = r.lease(soon()).await
            && holder.as_str() == member
        {
            return started.elapsed();
        }
        if started.elapsed() > limit {
            panic!(
                "{member} did not hold the lease within {limit:?}\n--- a ---\n{}\n--- b ---\n{}",
                lab.log(0),
                lab.log(1)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_safe(lab: &Lab) {
    let report = lab.report();
    assert!(report.double_signs.is_empty(), "double signs: {:?}", report.double_signs);
    assert_eq!(lab.s1_overlaps(), vec![], "two producers were allowed to sign at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_holders_daemon_hands_over_within_check_ttl_plus_lock_delay() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let agents = consul::cluster().await;
    let mut lab = lab(&agents).await;
    let active = lab.wait_active(Duration::from_secs(20)).await;
    let standby = 1 - active;
    lab.wait_signed_above(active, 2, Duration::from_secs(5)).await;
    let r = reader(&lab, &agents, standby);
    lab.kill9(active);
    let took = wait_holder(&r, ["a", "b"][standby], Duration::from_secs(10), &lab).await;
    // The dead holder's check goes critical one check TTL after its last renew at most; its
    // agent syncs that to the servers at once (the cluster has settled, see `consul::cluster`),
    // which ends the session; the lock is free again after lock-delay.
    let limit = CHECK_TTL + LOCK_DELAY + Duration::from_secs(1);
    assert!(took <= limit, "the lease moved after {took:?}, above check TTL + lock-delay + 1 s = {limit:?}");
    lab.wait_signed_above(standby, 0, Duration::from_secs(5)).await;
    assert_safe(&lab);
    eprintln!("kill -9 of the holder's daemon → lease held by the standby after {took:?} (limit {limit:?})");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_consul_leader_never_double_signs() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut agents = consul::cluster().await;
    let lab = lab(&agents).await;
    let active = lab.wait_active(Duration::from_secs(20)).await;
    lab.wait_signed_above(active, 2, Duration::from_secs(5)).await;
    let leader = consul::leader_index(&agents).await.expect("a Consul leader");
    agents[leader].kill9();
    // Whatever happens — the lease survives the election, or its holder loses its agent, signs
    // until its deadline, self-fences and the lease fails over — one producer ends up signing
    // steadily, and never two at once.
    let end = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let who = lab.wait_active(end.saturating_duration_since(Instant::now())).await;
        let top = lab.last_signed(who).unwrap_or(0);
        let steady = Instant::now() + Duration::from_secs(5);
        while Instant::now() < steady && lab.last_signed(who).unwrap_or(0) < top + 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if lab.last_signed(who).unwrap_or(0) >= top + 3 {
            break who;
        }
        assert!(Instant::now() < end, "no producer signed steadily after the Consul leader was killed");
    };
    assert_safe(&lab);
    eprintln!("Consul leader server{leader} killed; producer {after} signs (it was {active})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_cut_off_from_its_agent_self_fences_and_a_standby_takes_over() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut agents = consul::cluster().await;
    let lab = lab(&agents).await;
    let active = lab.wait_active(Duration::from_secs(20)).await;
    let standby = 1 - active;
    lab.wait_signed_above(active, 2, Duration::from_secs(5)).await;
    agents[active].kill9();
    let cut = Instant::now();
    // The active cannot renew: it stops signing by its lease deadline (check TTL − margin after
    // its last renew), well before Consul can give the lease to anyone.
    let end = Instant::now() + CHECK_TTL + Duration::from_secs(2);
    while lab.signing(active).await {
        assert!(Instant::now() < end, "the active kept signing after its agent vanished\n{}", lab.log(active));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = cut.elapsed();
    let r = reader(&lab, &agents, standby);
    let took = wait_holder(&r, ["a", "b"][standby], Duration::from_secs(30), &lab).await;
    lab.wait_signed_above(standby, 0, Duration::from_secs(10)).await;
    assert_safe(&lab);
    eprintln!(
        "agent of the active killed: it stopped signing after {stopped:?}; the standby held the lease {took:?} later"
    );
    r.shutdown().await;
}
