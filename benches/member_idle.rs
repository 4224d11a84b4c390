//! Whole-member idle benchmark: `cargo bench --bench member_idle`.
//!
//! A 3-member lab of real `failoverd run` processes on 127.0.0.1 (producers "a" and "b", witness
//! "c"; mutual TLS, metrics on, the embedded raft quorum), each config written **without any
//! timing**, so every member runs at failoverd's defaults. Each producer's node is a
//! `failoverd sim-node` process of its own, so what is measured is the member and nothing of the
//! chain. Two labs, one after the other:
//!
//! - *key-holding*: `cometbft-filepv`; the active's daemon runs the validator (a sign-while-running
//!   sim-node, not counted) through its keeper process (counted with the member);
//! - *signer*: `cometbft-signer`; each simulated node asks its member's remote signer for a
//!   precommit at every height, so the active reserves every signature through the store;
//! - then, for attribution only, the key-holding configs run as `failoverd coordinator`: the
//!   quorum service alone, to tell its share from the rest of a member's.
//!
//! Once one member signs, and after a warm-up, it reads each member's `/proc/<pid>/stat`
//! (utime + stime) over a window of at least 30 s, and `VmRSS`/`VmHWM` from `/proc/<pid>/status`:
//! CPU as % of one core, memory, threads, and context switches per second (each a wake-up or a
//! preemption), with the threads that used the CPU. Noise: the same CPU over each half of the
//! window. Targets (issue 21): ≤ 0.5 % CPU and ≤ 30 MB RSS per whole member.
//!
//! `FAILOVERD_BENCH_IDLE_SECS` (default 30), `FAILOVERD_BENCH_WARMUP_SECS` (default 10) and
//! `FAILOVERD_BENCH_BLOCK_MS` (the simulated chain's block interval, default 1000) change the run;
//! `FAILOVERD_BENCH_IDLE_MODES` (a comma-separated subset of `key-holding,signer,quorum`, default
//! all three) runs fewer labs; `FAILOVERD_BENCH_EXE` measures another build's members (see
//! [`member_exe`]).
//!
//! Under `cargo test --all-targets` it only prints how to run it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::proc_stat::{Snapshot, cpu_percent, snapshot, ticks_per_second};
use failover::sim::lab::node::SimNode;
use failover::sim::lab::{
    self, Chain, LogFile, MemberConfig, Metrics, Peer, Processes, Producer, Store, Timings, ValidatorCommand,
    ValidatorKind,
};

const MEMBERS: [&str; 3] = ["a", "b", "c"];
const EXE: &str = env!("CARGO_BIN_EXE_failoverd");

/// The `failoverd` whose members are measured: this build's, or `FAILOVERD_BENCH_EXE`. Two runs
/// at once, one of them with an earlier build, measure a change side by side under the same
/// machine noise (the simulated nodes are always this build's).
fn member_exe() -> PathBuf {
    std::env::var_os("FAILOVERD_BENCH_EXE").map_or_else(|| PathBuf::from(EXE), PathBuf::from)
}
const CPU_TARGET: f64 = 0.5;
const RSS_TARGET_MB: f64 = 30.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    KeyHolding,
    Signer,
    /// For attribution only: the same key-holding configs run as `failoverd coordinator`, the
    /// quorum service alone (no probes, no producer, no control API).
    QuorumOnly,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::KeyHolding => "key-holding (cometbft-filepv)",
            Mode::Signer => "signer (cometbft-signer)",
            Mode::QuorumOnly => "quorum alone (`failoverd coordinator`, for attribution)",
        }
    }
}

/// The keys of the lab's rendered config that carry a timing: removed, so the daemon's own
/// defaults apply, whatever they are (per mode included).
const TIMING_KEYS: [(&str, &[&str]); 4] = [
    ("coordinator", &["lease_ttl", "renew_interval", "safety_margin", "call_timeout"]),
    ("failover", &["cooldown", "priority_delay", "max_lag_on_failover", "floor_margin"]),
    ("chain", &["probe_interval", "probe_timeout", "unhealthy_after", "max_lag", "stall_after"]),
    ("producer", &["fence_timeout"]),
];

/// `text` without any timing: the lab's config as an operator who set none would write it.
fn at_defaults(text: &str) -> String {
    let mut table: toml::Table = text.parse().expect("the lab renders TOML");
    for (section, keys) in TIMING_KEYS {
        if let Some(toml::Value::Table(t)) = table.get_mut(section) {
            for k in keys {
                t.remove(*k);
            }
        }
    }
    if let Some(toml::Value::Table(c)) = table.get_mut("coordinator") {
        c.remove("raft"); // tick and election_ticks
    }
    toml::to_string(&table).expect("TOML renders")
}

struct Lab {
    dir: tempfile::TempDir,
    daemons: Processes,
    nodes: Vec<Child>,
    configs: Vec<PathBuf>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..MEMBERS.len() {
            self.daemons.stop(i, Duration::from_secs(15));
        }
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
        lab::kill_strays(self.dir.path());
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| lab::unused_port().expect("a free port on 127.0.0.1")).collect()
}

/// Producer `m`'s node: its sentry (key-holding) or the node that asks its signer.
fn start_node(dir: &Path, mode: Mode, m: &str, privval_port: u16, block: Duration) -> (Child, String) {
    let node = SimNode {
        member: m.to_string(),
        listen: "127.0.0.1:0".into(),
        ledger: match mode {
            Mode::Signer => dir.join("ledger.jsonl"),
            _ => dir.join(format!("sentry-{m}.jsonl")),
        },
        activations: (mode == Mode::Signer).then(|| dir.join(format!("activations-{m}.jsonl"))),
        privval_listen: (mode == Mode::Signer).then(|| format!("127.0.0.1:{privval_port}")),
        block,
    };
    node.spawn_announced(Command::new(EXE)).unwrap_or_else(|e| panic!("{e}"))
}

fn producer(dir: &Path, mode: Mode, m: &str, node: &str, privval_port: u16, block: Duration) -> Producer {
    let key_file = dir.join("priv_validator_key.json");
    match mode {
        Mode::Signer => Producer::Signer {
            key_file,
            node_id: failover::sim::privval_node::node_id().to_string(),
            node_address: format!("127.0.0.1:{privval_port}"),
        },
        Mode::KeyHolding | Mode::QuorumOnly => Producer::Validator(ValidatorCommand {
            exe: PathBuf::from(EXE),
            kind: ValidatorKind::FilePv { key_file },
            forking: false,
            sentry: node.to_string(),
            home: dir.join(format!("home-{m}")),
            member: m.to_string(),
            ledger: dir.join("ledger.jsonl"),
            activations: dir.join(format!("activations-{m}.jsonl")),
            block,
        }),
    }
}

fn start_lab(mode: Mode, block: Duration) -> Lab {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    failover::producer::privval::validator_key::ValidatorKey::write_for_seed(
        &d.join("priv_validator_key.json"),
        [7; 32],
    )
    .expect("validator key");
    let certificates = lab::certificates::write(&d.join("tls"), "bench", &MEMBERS, &[], Duration::from_secs(86_400))
        .unwrap_or_else(|e| panic!("{e}"));
    let (peer_ports, metrics_ports, privval_ports) = (free_ports(3), free_ports(3), free_ports(2));
    let addresses: Vec<String> = peer_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let peers = Peer::cluster(&MEMBERS, &addresses);
    let mut lab = Lab { dir, daemons: Processes::new(3), nodes: Vec::new(), configs: Vec::new() };
    // Only for rendering: every timing it writes is taken out again (`at_defaults`).
    let timings = Timings::tests();
    for (i, m) in MEMBERS.iter().enumerate() {
        let d = lab.dir.path();
        let url = match mode {
            // The quorum alone reads a producer's [chain] and [producer] but never uses them.
            Mode::QuorumOnly => (i < 2).then(|| "http://127.0.0.1:1".to_string()),
            _ => (i < 2).then(|| start_node(d, mode, m, privval_ports[i], block)).map(|(child, url)| {
                lab.nodes.push(child);
                url
            }),
        };
        let text = MemberConfig {
            id: m,
            index: i,
            data_dir: &d.join(format!("data-{m}")),
            peers: &peers,
            timings: &timings,
            store: &Store::Raft,
            socket: &d.join(format!("{m}.sock")),
            metrics: Metrics::Listen(format!("127.0.0.1:{}", metrics_ports[i])),
            tls: certificates.members.get(i),
            chain: url.as_ref().map(|rpc| Chain { rpc: rpc.clone(), reference_rpcs: Vec::new(), sim: None }),
            producer: url.as_ref().map(|rpc| producer(d, mode, m, rpc, privval_ports[i], block)),
        }
        .render();
        let path = d.join(format!("{m}.toml"));
        std::fs::write(&path, at_defaults(&text)).expect("config");
        let log = d.join(format!("{m}.log"));
        let mut program = Command::new(member_exe());
        if mode == Mode::QuorumOnly {
            program.arg("coordinator");
        }
        let mut command =
            lab::daemon_command(program, &path, &log, LogFile::Truncate).unwrap_or_else(|e| panic!("{e}"));
        // `failoverd --config FILE` is `failoverd run --config FILE`; its default log level.
        command.env_remove("RUST_LOG");
        lab.daemons.start(i, m, "the daemon", &mut command).unwrap_or_else(|e| panic!("{e}"));
        lab.configs.push(path);
    }
    lab
}

/// The member whose node signed last, once one has signed within the last `recent`.
fn signing_member(ledger: &Path, recent: Duration) -> Option<usize> {
    let records = failover::sim::ledger::read(ledger).ok()?;
    let last = records.iter().max_by_key(|r| r.mono_ns)?;
    let age = failover::domain::MonoTime::now().saturating_since(failover::domain::MonoTime::from_nanos(last.mono_ns));
    (age < recent).then(|| MEMBERS.iter().position(|m| *m == last.member.as_str())).flatten()
}

/// One member's processes: its daemon and, when it has one, its keeper.
fn member_pids(daemons: &Processes, i: usize) -> Vec<(&'static str, i32)> {
    let Some(daemon) = daemons.pid(i) else { return Vec::new() };
    let mut pids = vec![("daemon", daemon)];
    if let Some(keeper) = lab::procs::keeper_of(daemon) {
        pids.push(("keeper", keeper.pid));
    }
    pids
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// The threads that used the CPU between `a` and `b`, busiest first.
fn busiest_threads(a: &Snapshot, b: &Snapshot, window: Duration) -> String {
    let mut used: Vec<(String, f64)> = b
        .by_thread
        .iter()
        .map(|(name, t)| (name.clone(), cpu_percent(a.by_thread.get(name).copied().unwrap_or(0), *t, window)))
        .filter(|(_, cpu)| *cpu > 0.0)
        .collect();
    used.sort_by(|x, y| y.1.total_cmp(&x.1));
    let shown: Vec<String> = used.iter().take(5).map(|(n, c)| format!("{n} {c:.2} %")).collect();
    if shown.is_empty() { "none measurable".into() } else { shown.join(", ") }
}

/// Measures every member of `lab` over `window` (two halves), and prints one block per member.
fn measure(lab: &Lab, active: Option<usize>, window: Duration) -> bool {
    let all: Vec<Vec<(&str, i32)>> = (0..3).map(|i| member_pids(&lab.daemons, i)).collect();
    let take = || -> Vec<Vec<Snapshot>> {
        all.iter().map(|pids| pids.iter().map(|(_, p)| snapshot(*p).unwrap_or_default()).collect()).collect()
    };
    let start = take();
    std::thread::sleep(window / 2);
    let middle = take();
    std::thread::sleep(window - window / 2);
    let end = take();
    let mut met = true;
    for i in 0..3 {
        let role = match i {
            2 => "witness",
            _ if active == Some(i) => "active",
            _ if active.is_some() => "standby",
            _ => "producer",
        };
        let cpu = |a: &[Snapshot], b: &[Snapshot], w| -> f64 {
            a.iter().zip(b).map(|(x, y)| cpu_percent(x.ticks, y.ticks, w)).sum()
        };
        let total = cpu(&start[i], &end[i], window);
        let (h1, h2) = (cpu(&start[i], &middle[i], window / 2), cpu(&middle[i], &end[i], window - window / 2));
        let rss: u64 = end[i].iter().map(|s| s.rss_kib).sum();
        let hwm: u64 = end[i].iter().map(|s| s.hwm_kib).sum();
        let ok = total <= CPU_TARGET && mb(rss) <= RSS_TARGET_MB;
        met &= ok;
        println!(
            "  {} ({role:<7}) CPU {total:>5.2} % of one core  RSS {:>5.1} MB  peak {:>5.1} MB   {}",
            MEMBERS[i],
            mb(rss),
            mb(hwm),
            if ok { "within target" } else { "OVER TARGET" }
        );
        println!("      noise: CPU {h1:.2} % in the first half, {h2:.2} % in the second");
        for (k, (what, _)) in all[i].iter().enumerate() {
            let (a, b) = (&start[i][k], &end[i][k]);
            let switches = b.switches.saturating_sub(a.switches) as f64 / window.as_secs_f64();
            println!(
                "      {what:<6} CPU {:>5.2} %  RSS {:>5.1} MB  peak {:>5.1} MB  {} threads  {switches:>6.1} context switches/s",
                cpu_percent(a.ticks, b.ticks, window),
                mb(b.rss_kib),
                mb(b.hwm_kib),
                b.threads
            );
            println!("             busiest threads: {}", busiest_threads(a, b, window));
        }
    }
    met
}

/// Runs one lab in `mode` and reports its members; whether every member met the targets.
fn run(mode: Mode, block: Duration, warmup: Duration, window: Duration) -> bool {
    let lab = start_lab(mode, block);
    let config = failover::config::Config::load(&lab.configs[0]).expect("the lab's config loads");
    let c = &config.coordinator;
    println!(
        "\n{} mode, {} ms blocks; in effect (none set in the configs): lease_ttl {} ms, renew_interval {} ms, \
         raft tick {} ms, probe_interval {} ms",
        mode.name(),
        block.as_millis(),
        c.lease_ttl.as_millis(),
        c.renew_interval.as_millis(),
        c.raft.tick.as_millis(),
        config.chain.as_ref().map_or(0, |ch| ch.probe_interval.as_millis())
    );
    let ledger = lab.dir.path().join("ledger.jsonl");
    let started = Instant::now();
    let active = (mode != Mode::QuorumOnly).then(|| {
        loop {
            if let Some(a) = signing_member(&ledger, block * 3) {
                break a;
            }
            assert!(started.elapsed() < Duration::from_secs(90), "no member signed within 90 s; logs in {:?}", lab.dir);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let signs = active.map_or(String::new(), |a| {
        format!("{} signs {:.1} s after the start; ", MEMBERS[a], started.elapsed().as_secs_f64())
    });
    println!(
        "  {signs}warm-up {} s, then a {} s window (CPU resolution {:.3} %)",
        warmup.as_secs(),
        window.as_secs(),
        100.0 / ticks_per_second() / window.as_secs_f64()
    );
    std::thread::sleep(warmup);
    let met = measure(&lab, active, window);
    if active.is_some() && signing_member(&ledger, block * 3) != active {
        println!("  NOTE: the active member changed during the window; the figures include a failover");
    }
    met
}

fn main() {
    if !common::benchmarking("member_idle") {
        return;
    }
    let window = Duration::from_secs(common::env_number("FAILOVERD_BENCH_IDLE_SECS", 30).max(1));
    let warmup = Duration::from_secs(common::env_number("FAILOVERD_BENCH_WARMUP_SECS", 10));
    let block = Duration::from_millis(common::env_number("FAILOVERD_BENCH_BLOCK_MS", 1000).max(100));
    println!(
        "whole-member idle benchmark: 3 `failoverd run` members on 127.0.0.1 at the defaults, {} cores; \
         targets <= {CPU_TARGET} % CPU and <= {RSS_TARGET_MB} MB RSS per member (daemon + keeper)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    if window < Duration::from_secs(30) {
        println!("NOTE: a window under 30 s ({} s) is too short for the targets' figures", window.as_secs());
    }
    println!("members run {}", member_exe().display());
    println!("{} at the start", common::machine_load());
    let modes = std::env::var("FAILOVERD_BENCH_IDLE_MODES").unwrap_or_else(|_| "key-holding,signer,quorum".into());
    let wanted: Vec<&str> = modes.split(',').map(str::trim).collect();
    if let Some(unknown) = wanted.iter().find(|m| !["key-holding", "signer", "quorum"].contains(m)) {
        panic!(
            "FAILOVERD_BENCH_IDLE_MODES names {unknown:?}: use a comma-separated subset of key-holding,signer,quorum"
        );
    }
    let verdict = |met: bool| if met { "every member within target" } else { "over target" };
    let mut summary = Vec::new();
    if wanted.contains(&"key-holding") {
        summary.push(format!("key-holding: {}", verdict(run(Mode::KeyHolding, block, warmup, window))));
    }
    if wanted.contains(&"signer") {
        summary.push(format!("signer: {}", verdict(run(Mode::Signer, block, warmup, window))));
    }
    if wanted.contains(&"quorum") {
        run(Mode::QuorumOnly, block, warmup, window);
    }
    println!("\n{}", summary.join("; "));
    println!("{} at the end", common::machine_load());
}
