//! Raft backend benchmark: `cargo bench --bench raft`.
//!
//! - reserve commit latency on a 3-member loopback cluster (holder = raft leader, and holder =
//!   follower, whose proposals travel to the leader), p50/p99/max;
//! - time from killing the raft leader to the next successful acquire by a survivor;
//! - idle CPU and RSS of one member, as three `failoverd coordinator` processes with the
//!   default timings (100 ms tick).
//!
//! Under `cargo test --all-targets` it only prints how to run it.

#[path = "../tests/common/pki.rs"]
mod pki;
#[path = "../tests/common/raft_cluster.rs"]
mod raft_cluster;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use failover::coord::Coordinator;
use failover::coord::raft::RaftOptions;
use failover::domain::{Hrs, KeyId, Step};
use raft_cluster::{Cluster, NAMES, within};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<44} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().expect("samples"))
    );
}

/// Reserve latency as the active member sees it. The lease holder hands raft leadership to a
/// peer (the witness first), so its proposals travel to the leader: one more hop than a leader's.
async fn reserve_latency() -> (Vec<Duration>, String) {
    let c = Cluster::start(3).await;
    c.leader(Duration::from_secs(10)).await;
    let holder = 0;
    let node = c.node(holder);
    let lease = node.acquire(&c.member(holder), within(Duration::from_secs(5))).await.expect("grant");
    let key = KeyId::new("validator").expect("valid");
    let mut samples = Vec::new();
    for h in 1..=2200u64 {
        let started = Instant::now();
        node.reserve(lease.epoch, &key, Hrs::new(h, 0, Step::Precommit), within(Duration::from_secs(5)))
            .await
            .expect("reserve");
        if h > 200 {
            samples.push(started.elapsed());
        }
        if h % 500 == 0 {
            // Keep the lease alive as the active member would.
            node.renew(&lease, within(Duration::from_secs(5))).await.expect("renew");
        }
    }
    let leader = c.leader(Duration::from_secs(5)).await;
    (samples, format!("holder {}, raft leader {}", NAMES[holder], NAMES[leader]))
}

async fn leader_kill_to_acquire(rounds: usize) -> Vec<Duration> {
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
                    samples.push(killed.elapsed());
                    c.node(survivor).release(&lease, None, within(Duration::from_secs(5))).await.expect("release");
                    break;
                }
                Err(_) => assert!(killed.elapsed() < Duration::from_secs(20), "no acquire within 20 s"),
            }
        }
        c.restart(leader, RaftOptions::default()).await.expect("restart");
    }
    samples
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn proc_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn idle_members() {
    let dir = tempfile::tempdir().expect("dir");
    let ports: Vec<u16> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port())
        .collect();
    let mut children: Vec<Child> = Vec::new();
    for (i, name) in NAMES.iter().take(3).enumerate() {
        let mut text = format!("member = \"{name}\"\ndata_dir = \"{}\"\n", dir.path().join(name).display());
        for (j, port) in ports.iter().enumerate() {
            let kind = if j == 2 { "witness" } else { "producer" };
            text.push_str(&format!(
                "[[members]]\nid = \"{}\"\npeer_address = \"127.0.0.1:{port}\"\nkind = \"{kind}\"\n",
                NAMES[j]
            ));
        }
        if i != 2 {
            text.push_str("[chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:1\"\n[producer]\nkind = \"sim\"\n");
        }
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("config");
        let child = Command::new(env!("CARGO_BIN_EXE_failoverd"))
            .args(["coordinator", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("failoverd coordinator starts");
        children.push(child);
    }
    std::thread::sleep(Duration::from_secs(5));
    let clk = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let window = Duration::from_secs(20);
    let before: Vec<u64> = children.iter().map(|c| proc_cpu_ticks(c.id())).collect();
    std::thread::sleep(window);
    for (i, c) in children.iter().enumerate() {
        let ticks = proc_cpu_ticks(c.id()) - before[i];
        let cpu = ticks as f64 / clk / window.as_secs_f64() * 100.0;
        println!(
            "idle member {:<2} (default 100 ms tick)  CPU {cpu:>5.2} %  RSS {:>6.1} MiB",
            NAMES[i],
            proc_rss_kib(c.id()) as f64 / 1024.0
        );
    }
    for mut c in children {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = c.wait();
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("raft benchmark: run it with `cargo bench --bench raft`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    println!(
        "raft backend benchmark (3 members on 127.0.0.1, raft-engine with fsync, {} cores)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let (samples, who) = rt.block_on(reserve_latency());
    report(&format!("reserve commit latency ({who})"), samples);
    report("leader kill -> next acquire (tick 50ms, 10 ticks)", rt.block_on(leader_kill_to_acquire(10)));
    drop(rt);
    idle_members();
}
