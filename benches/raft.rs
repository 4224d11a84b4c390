//! Raft backend benchmark: `cargo bench --bench raft`.
//!
//! - **reserve commit latency** on a 3-member loopback cluster at the default timings: the
//!   holder's `reserve` until its entry is applied, renewing as its daemon would (a holder hands
//!   raft leadership to a peer, so its proposals travel to the leader; the line says which).
//! - **takeover after the holder's death, at the defaults** (lease_ttl 3 s, renew 1 s, tick
//!   100 ms, election 10 ticks, heartbeat 3 ticks): a producer holds the lease and renews it every
//!   `renew_interval`, it is killed, and the other producer acquires as its daemon would (when
//!   its store view shows the lease free, one `call_timeout` per attempt). Measured: kill → the
//!   survivor's acquire committed, and kill → a new raft leader where the holder led raft. Two
//!   cases: killed *while renewing* (after one to two renew intervals, at a random point of the
//!   cycle: the steady state, in which the holder no longer leads raft, because a leader that
//!   holds the lease hands leadership to a peer, `shed_leadership` in src/coord/raft/node.rs), and
//!   killed *while it leads raft* (at once after its acquire, before it handed leadership on: an
//!   election, then a whole TTL + margin from the new leader's start). This is the store's part of
//!   an unplanned failover; the daemon's guard and the node's first signature come on top
//!   (`chaos/run bench`).
//! - **election only, test timings**: the same kill with no lease held and a 50 ms tick, which
//!   is raft's leader election and one commit and nothing of the lease; kept apart and named so.
//!
//! `FAILOVERD_BENCH_ROUNDS` (default 20) sets the number of takeovers per case, `FAILOVERD_BENCH_SEED` the
//! jitter's seed. Whole-member idle CPU and RSS are in `benches/member_idle.rs`.
//!
//! Under `cargo test --all-targets` it only prints how to run it.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{BenchCluster, Links, Timing};
use common::raft_cluster::{Cluster, within};
use common::stats::{halves, line, line_s, ms, summarize};
use failover::coord::Coordinator;
use failover::domain::{Hrs, KeyId, LeaseView, Step};

/// Reserve latency as the lease holder sees it, renewing as its daemon would.
async fn reserve_latency(c: &BenchCluster) -> (Vec<f64>, String) {
    c.leader(Duration::from_secs(10)).await;
    let holder = 0;
    let node = c.node(holder);
    let member = failover::domain::MemberId::new("a").expect("valid");
    let lease = node.acquire(&member, within(Duration::from_secs(5))).await.expect("grant");
    let key = KeyId::new("validator").expect("valid");
    let renew_every = c.coordinator().renew_interval;
    let mut last_renew = Instant::now();
    let mut samples = Vec::new();
    for h in 1..=2200u64 {
        let started = Instant::now();
        node.reserve(lease.epoch, &key, Hrs::new(h, 0, Step::Precommit), within(Duration::from_secs(5)))
            .await
            .expect("reserve");
        if h > 200 {
            samples.push(ms(started.elapsed()));
        }
        if last_renew.elapsed() >= renew_every {
            node.renew(&lease, within(Duration::from_secs(5))).await.expect("renew");
            last_renew = Instant::now();
        }
    }
    let leader = c.leader(Duration::from_secs(10)).await;
    node.release(&lease, None, within(Duration::from_secs(5))).await.expect("release");
    let role = if leader == holder { "holder is the raft leader" } else { "holder is a follower" };
    (samples, role.to_string())
}

/// When the holder dies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// After renewing for one to two renew intervals: the steady state, in which the holder
    /// has handed raft leadership to a peer (src/coord/raft/node.rs, `shed_leadership`).
    Renewing,
    /// Right after its acquire committed, while the holder still leads raft: the worst case,
    /// an election and then a whole TTL + margin counted from the new leader's start.
    WhileLeading,
}

/// One takeover.
struct Round {
    /// Whether the killed holder still led raft when it died.
    was_leader: bool,
    /// Kill → the survivor names another leader (only when the holder led).
    to_leader: Option<f64>,
    /// Kill → the survivor's acquire committed.
    to_acquire: f64,
}

/// The member `holder` acquires the lease (the previous round's may still be expiring).
async fn acquire_as(c: &BenchCluster, holder: usize) -> failover::domain::Lease {
    let t = c.coordinator().clone();
    loop {
        if let Ok(l) = c.node(holder).acquire(&member(holder), within(t.call_timeout)).await {
            return l;
        }
        tokio::time::sleep(t.raft.tick).await;
    }
}

fn member(i: usize) -> failover::domain::MemberId {
    failover::domain::MemberId::new(common::raft_cluster::NAMES[i]).expect("valid id")
}

/// One takeover at `c`'s timings: a producer holds the lease, renewing every renew_interval,
/// and dies as `kill` says; the other producer acquires as its daemon would.
async fn one_takeover(c: &mut BenchCluster, kill: Kill, jitter: &mut common::Jitter) -> Round {
    let t = c.coordinator().clone();
    let holder = match kill {
        Kill::Renewing => jitter.below(2) as usize,
        Kill::WhileLeading => {
            // A producer must lead raft: restart a leading witness until one does.
            let mut leader = c.leader(Duration::from_secs(20)).await;
            while leader == 2 {
                c.crash(2).await;
                c.restart(2).await;
                leader = c.leader(Duration::from_secs(20)).await;
            }
            leader
        }
    };
    let lease = acquire_as(c, holder).await;
    let node = c.node(holder).clone();
    let renewing = tokio::spawn(async move {
        let mut lease = lease;
        loop {
            tokio::time::sleep(t.renew_interval).await;
            if let Ok(l) = node.renew(&lease, within(t.call_timeout)).await {
                lease = l;
            }
        }
    });
    if kill == Kill::Renewing {
        // At a random point of its renew cycle, after at least one renew.
        let cycle = t.renew_interval.as_millis() as u64;
        tokio::time::sleep(t.renew_interval + Duration::from_millis(jitter.below(cycle))).await;
    }
    let info = c.node(holder).info();
    let killed = Instant::now();
    renewing.abort();
    c.crash(holder).await;
    let survivor = c.node(1 - holder).clone();
    let new_leader = async {
        loop {
            if survivor.info().leader.is_some_and(|l| l != info.id) {
                return ms(killed.elapsed());
            }
            survivor.wait_info(within(Duration::from_millis(20)), |_| true).await;
        }
    };
    let acquired = async {
        let mut view = survivor.watch();
        loop {
            // As the daemon: decide when the store view changes, acquire a free lease.
            if matches!(view.borrow_and_update().lease, LeaseView::Free { .. })
                && let Ok(lease) = survivor.acquire(&member(1 - holder), within(t.call_timeout)).await
            {
                return (ms(killed.elapsed()), lease);
            }
            assert!(killed.elapsed() < Duration::from_secs(30), "no takeover within 30 s");
            let _ = tokio::time::timeout(t.raft.tick, view.changed()).await;
        }
    };
    let (to_leader, (to_acquire, lease)) = tokio::join!(new_leader, acquired);
    survivor.release(&lease, None, within(Duration::from_secs(5))).await.expect("release");
    c.restart(holder).await;
    c.leader(Duration::from_secs(20)).await;
    Round { was_leader: info.is_leader, to_leader: info.is_leader.then_some(to_leader), to_acquire }
}

/// `rounds` takeovers killed as `kill` says, reported under `name`.
fn takeovers(rt: &tokio::runtime::Runtime, c: &mut BenchCluster, kill: Kill, rounds: usize, seed: u64, name: &str) {
    let mut jitter = common::Jitter::new(seed);
    let all: Vec<Round> = (0..rounds).map(|_| rt.block_on(one_takeover(c, kill, &mut jitter))).collect();
    let acquire: Vec<f64> = all.iter().map(|r| r.to_acquire).collect();
    let leading = all.iter().filter(|r| r.was_leader).count();
    println!("{}", line_s(&format!("{name}: kill -> survivor's acquire"), &summarize(&acquire)));
    println!("  {}", halves(&acquire));
    println!("  the killed holder still led raft in {leading} of {rounds} rounds");
    let to_leader: Vec<f64> = all.iter().filter_map(|r| r.to_leader).collect();
    if !to_leader.is_empty() {
        println!("{}", line_s(&format!("{name}: kill -> new raft leader"), &summarize(&to_leader)));
        if leading < rounds {
            let theirs: Vec<f64> = all.iter().filter(|r| r.was_leader).map(|r| r.to_acquire).collect();
            println!("{}", line_s(&format!("{name}: kill -> acquire, where it led raft"), &summarize(&theirs)));
        }
    }
}

/// The same kill with no lease held and the tests' 50 ms tick: raft's election and one commit.
async fn election_only(rounds: usize) -> Vec<f64> {
    let mut c = Cluster::start(3).await;
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let leader = c.leader(Duration::from_secs(10)).await;
        let survivor = (0..2).find(|i| *i != leader).expect("a producer survives");
        let killed = Instant::now();
        c.crash(leader).await;
        loop {
            match c.node(survivor).acquire(&c.member(survivor), within(Duration::from_millis(300))).await {
                Ok(lease) => {
                    samples.push(ms(killed.elapsed()));
                    c.node(survivor).release(&lease, None, within(Duration::from_secs(5))).await.expect("release");
                    break;
                }
                Err(_) => assert!(killed.elapsed() < Duration::from_secs(20), "no acquire within 20 s"),
            }
        }
        c.restart(leader, Default::default()).await.expect("restart");
    }
    samples
}

fn main() {
    if !common::benchmarking("raft") {
        return;
    }
    let rounds = common::env_number("FAILOVERD_BENCH_ROUNDS", 20).max(1) as usize;
    let seed = common::env_number("FAILOVERD_BENCH_SEED", 21);
    let links = Links::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    println!(
        "raft backend benchmark: 3 members on 127.0.0.1, {}, mutual TLS, raft-engine with fsync, {} cores, seed {seed}",
        links.describe(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("{} at the start", common::machine_load());
    let mut c = rt.block_on(BenchCluster::start(Timing::Defaults, links));
    let t = c.coordinator().clone();
    println!(
        "timings: failoverd's defaults — lease_ttl {} ms, renew_interval {} ms, safety_margin {} ms, call_timeout {} ms, \
         tick {} ms, election {} ticks, heartbeat {} tick(s)",
        t.lease_ttl.as_millis(),
        t.renew_interval.as_millis(),
        t.safety_margin.as_millis(),
        t.call_timeout.as_millis(),
        t.raft.tick.as_millis(),
        t.raft.election_ticks,
        t.raft.heartbeat_ticks
    );
    let (samples, who) = rt.block_on(reserve_latency(&c));
    println!("{}", line(&format!("reserve commit latency ({who})"), &summarize(&samples)));
    println!("  {}", halves(&samples));
    takeovers(&rt, &mut c, Kill::Renewing, rounds, seed, "killed while renewing (defaults)");
    takeovers(&rt, &mut c, Kill::WhileLeading, rounds, seed, "killed while leading raft (defaults)");
    println!(
        "  (the raft leader expires a lease lease_ttl + safety_margin = {} ms after the later of its last applied \
         renew and its own start as leader; docs/design.md §4)",
        (t.lease_ttl + t.safety_margin).as_millis()
    );
    drop(c);
    let election = rt.block_on(election_only(10));
    println!("{}", line("election only (no lease held, tick 50 ms): kill -> acquire", &summarize(&election)));
    println!("  {}", halves(&election));
    println!("{} at the end", common::machine_load());
}
