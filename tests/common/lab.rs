//! A lab of real processes: `failoverd run` for each member (a, b producers; c witness) on
//! loopback ports, with mutual TLS between members (certificates from failoverd's own issuing
//! code, plus an operator certificate "ops"), and simulated nodes sharing one signature ledger.
//!
//! Key-holding labs run real-shaped nodes: each producer has a sentry (`failoverd sim-node`, never
//! producing; its daemon probes it as `chain.rpc`, and the tests stall or slow it down) and a
//! validator its daemon starts through `[producer] kind = "cometbft-filepv"` (or `"process"`) with
//! `command = [failoverd, sim-node, --sign-while-running, --follow <sentry>, …]`, which signs from
//! its start until its process dies. The lab runs a death watch over the validators' activation
//! logs, so every window of S1 evidence ends where a process was observed dead. Signer labs run one
//! sim-node per producer that asks its member's remote signer for every signature.
//!
//! Judged from the ledger, the activation logs and the processes themselves, never from the
//! daemons' own words.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use failover::domain::MonoTime;
use failover::sim::activation;
use failover::sim::checker::{self, LedgerReport};
use failover::sim::death_watch::DeathWatch;
use failover::sim::lab::node::SimNode;
use failover::sim::lab::{
    self, Chain, LogFile, MemberConfig, Metrics, Peer, Processes, Producer, Timings, ValidatorCommand, ValidatorKind,
};
use failover::sim::ledger::{self, SignatureRecord};
use failover::sim::node::StateReport;
use nix::sys::signal::Signal;
use tokio::time::Instant;

pub use failover::sim::lab::Store;

pub const MEMBERS: [&str; 3] = ["a", "b", "c"];
/// The tests' timings ([`Timings::tests`]) the tests reason with.
pub const BLOCK: Duration = Duration::from_millis(200);
pub const LEASE_TTL: Duration = Duration::from_millis(1000);
pub const SAFETY_MARGIN: Duration = Duration::from_millis(200);

/// How a key-holding producer's daemon runs its validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    /// `kind = "cometbft-filepv"`: the daemon writes the key and the signing state at the floor
    /// into the validator's home, then starts it; the validator signs above that state.
    FilePv,
    /// `kind = "process"`: the daemon starts the validator, which signs only heights that begin
    /// after its start.
    Process,
    /// `kind = "process"` behind a start script that forks, the shape of cosmovisor: `sh -c`
    /// runs the validator in the background and waits, so the signer is the script's child and
    /// a signal to the script alone would leave it running as an orphan.
    Forking,
}

/// Which nodes the producers have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nodes {
    KeyHolding(Runner),
    /// Each node asks its member's remote signer (`cometbft-signer`) for every signature.
    Signer,
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    /// The members' and the operator's certificates (in `dir`).
    pub pki: super::pki::ClusterPki,
    /// Each member's peer port (127.0.0.1).
    pub peer_ports: Vec<u16>,
    pub ledger: PathBuf,
    /// The node each producer's daemon probes as `chain.rpc`, and the one `control` steers: the
    /// sentry in a key-holding lab, the signing node itself in a signer lab.
    pub sim_urls: Vec<String>,
    nodes: Nodes,
    sims: Sims,
    death_watch: Option<DeathWatch>,
    pub configs: Vec<PathBuf>,
    /// Each member's metrics and health listener (127.0.0.1).
    pub metrics_ports: Vec<u16>,
    daemons: Processes,
    client: reqwest::Client,
}

/// A free port below Linux's ephemeral range (32768+), so that no outgoing connection of any
/// process can take it between this check and the daemon's bind.
pub fn free_port() -> u16 {
    lab::unused_port().expect("a free port on 127.0.0.1")
}

/// Member `m`'s activation log in the lab's `dir`.
fn activation_log(dir: &std::path::Path, member: &str) -> PathBuf {
    dir.join(format!("activations-{member}.jsonl"))
}

/// An always-on `failoverd sim-node` (a sentry, a reference, or in signer mode the signing node);
/// its address.
fn spawn_sim(
    member: &str,
    ledger: &std::path::Path,
    activations: Option<PathBuf>,
    privval: Option<u16>,
    block: Duration,
) -> (Child, String) {
    let node = SimNode {
        member: member.to_string(),
        listen: "127.0.0.1:0".into(),
        ledger: ledger.to_path_buf(),
        activations,
        privval_listen: privval.map(|port| format!("127.0.0.1:{port}")),
        block,
    };
    node.spawn_announced(super::failoverd()).unwrap_or_else(|e| panic!("{e}"))
}

/// The `[producer]` that has member `m`'s daemon run a sign-while-running validator following
/// `sentry`.
fn validator_producer(
    runner: Runner,
    dir: &std::path::Path,
    m: &str,
    sentry: &str,
    key_file: &std::path::Path,
) -> Producer {
    Producer::Validator(ValidatorCommand {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_failoverd")),
        kind: match runner {
            Runner::FilePv => ValidatorKind::FilePv { key_file: key_file.to_path_buf() },
            Runner::Process | Runner::Forking => ValidatorKind::Process,
        },
        forking: runner == Runner::Forking,
        sentry: sentry.to_string(),
        home: dir.join(format!("home-{m}")),
        member: m.to_string(),
        ledger: dir.join("ledger.jsonl"),
        activations: activation_log(dir, m),
        block: BLOCK,
    })
}

/// Each producer's node (its sentry, or in signer mode its signing node): the processes and
/// their addresses.
fn start_nodes(
    dir: &std::path::Path,
    signer: bool,
    privval_ports: &[u16],
    block: Duration,
) -> (Vec<Child>, Vec<String>) {
    let ledger = dir.join("ledger.jsonl");
    MEMBERS[..2]
        .iter()
        .enumerate()
        .map(|(i, m)| match signer {
            true => spawn_sim(m, &ledger, Some(activation_log(dir, m)), Some(privval_ports[i]), block),
            // The sentry never produces: nothing of it may reach the shared ledger.
            false => spawn_sim(m, &dir.join(format!("sentry-ledger-{m}.jsonl")), None, None, block),
        })
        .unzip()
}

impl Lab {
    /// Starts two producers with real-shaped validators (`cometbft-filepv`) and a witness;
    /// `extra` is appended to every config.
    pub async fn start(extra: &str, env: &[(&str, &str)]) -> Lab {
        Lab::start_with(Store::Raft, extra, env).await
    }

    /// [`Lab::start`] with the lease kept in `store`.
    pub async fn start_with(store: Store, extra: &str, env: &[(&str, &str)]) -> Lab {
        Lab::start_each(store, &|_, text| text + extra, env).await
    }

    /// [`Lab::start_with`] where `tweak(i, config)` returns member `i`'s final config text.
    pub async fn start_each(store: Store, tweak: &dyn Fn(usize, String) -> String, env: &[(&str, &str)]) -> Lab {
        Lab::start_full(store, tweak, env, Nodes::KeyHolding(Runner::FilePv), BLOCK).await
    }

    /// [`Lab::start`] with the validators run by `runner`.
    pub async fn start_runner(runner: Runner, extra: &str, env: &[(&str, &str)]) -> Lab {
        Lab::start_full(Store::Raft, &|_, text| text + extra, env, Nodes::KeyHolding(runner), BLOCK).await
    }

    /// Signer mode: each simulated node asks its member's remote signer (`cometbft-signer`, over
    /// privval and SecretConnection) for a precommit at every height; both members hold the same
    /// validator key, as a validator's producers do.
    pub async fn start_signer(store: Store) -> Lab {
        Lab::start_full(store, &|_, text| text, &[], Nodes::Signer, BLOCK).await
    }

    /// [`Lab::start_signer`] with the simulated nodes making a block every `block` (the stall
    /// limit scales with it): for what depends on a block interval, such as whether a handover
    /// fits between two heights.
    pub async fn start_signer_with_blocks(store: Store, block: Duration) -> Lab {
        Lab::start_full(store, &|_, text| text, &[], Nodes::Signer, block).await
    }

    async fn start_full(
        store: Store,
        tweak: &dyn Fn(usize, String) -> String,
        env: &[(&str, &str)],
        nodes: Nodes,
        block: Duration,
    ) -> Lab {
        let signer = nodes == Nodes::Signer;
        let dir = tempfile::tempdir().expect("dir");
        let ledger = dir.path().join("ledger.jsonl");
        let privval_ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
        let key_file = dir.path().join("priv_validator_key.json");
        failover::producer::privval::validator_key::ValidatorKey::write_for_seed(&key_file, [0x5a; 32])
            .expect("validator key file");
        let (sims, sim_urls) = start_nodes(dir.path(), signer, &privval_ports, block);
        let mut sims = Sims(sims);
        let death_watch = match nodes {
            Nodes::KeyHolding(_) => Some(
                DeathWatch::start(&MEMBERS[..2].iter().map(|m| activation_log(dir.path(), m)).collect::<Vec<_>>())
                    .expect("the death watch starts"),
            ),
            Nodes::Signer => None,
        };
        // A reference node that never produces: the best height when both producers lag.
        let (reference, reference_url) =
            spawn_sim("ref", &dir.path().join("reference-ledger.jsonl"), None, None, block);
        sims.0.push(reference);
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let metrics_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let pki = super::pki::write_cluster(dir.path(), &MEMBERS, &["ops"]);
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let peers = Peer::cluster(&MEMBERS, &addresses);
        let timings = Timings::tests().with_block(block);
        let mut configs = Vec::new();
        for (i, m) in MEMBERS.iter().enumerate() {
            let producer = i < 2;
            let tls = pki.member(m);
            let text = MemberConfig {
                id: m,
                index: i,
                data_dir: &dir.path().join(format!("data-{m}")),
                peers: &peers,
                timings: &timings,
                store: &store,
                socket: &dir.path().join(format!("{m}.sock")),
                metrics: Metrics::Listen(format!("127.0.0.1:{}", metrics_ports[i])),
                tls: matches!(store, Store::Raft).then_some(&tls),
                chain: producer.then(|| Chain {
                    rpc: sim_urls[i].clone(),
                    reference_rpcs: vec![reference_url.clone()],
                    sim: None,
                }),
                producer: producer.then(|| match nodes {
                    Nodes::KeyHolding(runner) => validator_producer(runner, dir.path(), m, &sim_urls[i], &key_file),
                    Nodes::Signer => Producer::Signer {
                        key_file: key_file.clone(),
                        node_id: failover::sim::privval_node::node_id().to_string(),
                        node_address: format!("127.0.0.1:{}", privval_ports[i]),
                    },
                }),
            }
            .render();
            let text = tweak(i, text);
            let path = dir.path().join(format!("{m}.toml"));
            std::fs::write(&path, text).expect("config");
            configs.push(path);
        }
        let mut lab = Lab {
            dir,
            pki,
            peer_ports: ports,
            ledger,
            sim_urls,
            nodes,
            sims,
            death_watch,
            configs,
            metrics_ports,
            daemons: Processes::new(MEMBERS.len()),
            client: failover::http::client(Duration::from_secs(2)).expect("client"),
        };
        for i in 0..3 {
            lab.start_daemon(i, env);
        }
        lab
    }

    pub fn start_daemon(&mut self, i: usize, env: &[(&str, &str)]) {
        let log = self.dir.path().join(format!("daemon-{}.log", MEMBERS[i]));
        let mut cmd =
            lab::daemon_command(super::failoverd(), &self.configs[i], &log, LogFile::Truncate).expect("log file");
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.daemons.start(i, MEMBERS[i], "the daemon", &mut cmd).expect("failoverd starts");
    }

    /// `failoverctl ARGS` against member `i`'s control socket.
    pub fn failoverctl(&self, i: usize, args: &[&str]) -> std::process::Output {
        super::failoverctl_at(&self.socket(i), args)
    }

    /// Member `i`'s control socket.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.sock", MEMBERS[i]))
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("daemon-{}.log", MEMBERS[i]))).unwrap_or_default()
    }

    pub fn signal(&self, i: usize, s: Signal) {
        assert!(self.daemons.signal(i, s), "signal the daemon of {}", MEMBERS[i]);
    }

    /// Waits up to `limit` for daemon `i` to exit on its own; its exit status, if it did.
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> Option<std::process::ExitStatus> {
        self.daemons.wait_exit(i, limit)
    }

    /// Whether daemon `i` is still running.
    pub fn alive(&mut self, i: usize) -> bool {
        self.daemons.running(i)
    }

    /// Member `i`'s activation log: each start of its validator (with its pid) and each death
    /// the death watch observed.
    pub fn activations(&self, i: usize) -> Vec<activation::ActivationRecord> {
        activation::read(&activation_log(self.dir.path(), MEMBERS[i])).expect("log parses")
    }

    /// The pids of member `i`'s validators that started and were not yet observed dead.
    pub fn validator_pids(&self, i: usize) -> Vec<u32> {
        activation::started_and_not_dead(&self.activations(i))
    }

    /// The process group of member `i`'s running validator (the group its keeper started).
    pub fn validator_group(&self, i: usize) -> Option<i32> {
        let pid = *self.validator_pids(i).last()?;
        Some(lab::procs::read(i32::try_from(pid).ok()?)?.pgrp)
    }

    /// The pid of the keeper member `i`'s daemon started (a `failoverd keeper` child of it).
    pub fn keeper_pid(&self, i: usize) -> Option<i32> {
        Some(lab::procs::keeper_of(self.daemons.pid(i)?)?.pid)
    }

    pub fn kill9(&mut self, i: usize) {
        self.daemons.kill(i);
    }

    /// The state of the node member `i`'s daemon probes: its sentry in a key-holding lab (which
    /// never signs: read [`Lab::last_signed`] for what the member signed).
    pub async fn sim(&self, i: usize) -> StateReport {
        self.client
            .get(format!("{}/sim/state", self.sim_urls[i]))
            .send()
            .await
            .unwrap_or_else(|e| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("sim-{}.log", MEMBERS[i])));
                panic!("the simulated node of {} does not answer: {e}\nits stderr: {log:?}", MEMBERS[i])
            })
            .json()
            .await
            .expect("state JSON")
    }

    /// Stalls, slows down or makes catch up the node member `i`'s daemon probes.
    pub async fn control(&self, i: usize, body: serde_json::Value) {
        let r = self
            .client
            .post(format!("{}/sim/control", self.sim_urls[i]))
            .json(&body)
            .send()
            .await
            .expect("sim answers");
        assert!(r.status().is_success());
    }

    /// Whether member `i`'s node can sign now. Key-holding: one of its validator processes is
    /// alive (not a zombie), whatever its daemon believes. Signer: its remote signer signed one
    /// of the last three heights.
    pub async fn signing(&self, i: usize) -> bool {
        match self.nodes {
            Nodes::KeyHolding(_) => self.validator_pids(i).into_iter().any(lab::process_alive),
            Nodes::Signer => {
                let height = self.sim(i).await.height;
                self.last_signed(i).is_some_and(|h| height.saturating_sub(h) <= 2)
            }
        }
    }

    /// Waits until exactly one node signs; returns it.
    pub async fn wait_active(&self, limit: Duration) -> usize {
        let end = Instant::now() + limit;
        loop {
            let mut active = Vec::new();
            for i in 0..2 {
                if self.signing(i).await {
                    active.push(i);
                }
            }
            if active.len() == 1 {
                return active[0];
            }
            if Instant::now() >= end {
                let tail = |i: usize| {
                    let log = self.log(i);
                    let lines: Vec<&str> = log.lines().collect();
                    lines[lines.len().saturating_sub(15)..].join("\n")
                };
                panic!(
                    "no single active producer within {limit:?}: {active:?}\n--- a ---\n{}\n--- b ---\n{}\n--- c ---\n{}",
                    tail(0),
                    tail(1),
                    tail(2)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The highest height member `i` signed, from the ledger.
    pub fn last_signed(&self, i: usize) -> Option<u64> {
        self.records().iter().filter(|r| r.member.as_str() == MEMBERS[i]).map(|r| r.height).max()
    }

    /// Waits until member `i` has signed a height above `height` (from the ledger).
    pub async fn wait_signed_above(&self, i: usize, height: u64, limit: Duration) -> u64 {
        let end = Instant::now() + limit;
        loop {
            if let Some(h) = self.last_signed(i)
                && h > height
            {
                return h;
            }
            assert!(Instant::now() < end, "node {i} signed nothing above {height} within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn records(&self) -> Vec<SignatureRecord> {
        ledger::read(&self.ledger).expect("ledger parses")
    }

    pub fn report(&self) -> LedgerReport {
        checker::check(&self.records())
    }

    /// Every pair of nodes able to sign at once (S1), from the activation logs: a validator's
    /// window ends only where the death watch saw its process dead.
    pub fn s1_overlaps(&self) -> Vec<activation::Overlap> {
        let records: Vec<_> = (0..2).flat_map(|i| self.activations(i)).collect();
        activation::overlaps(&activation::windows(&records, MonoTime::now().as_nanos()), 0)
    }
}

/// The lab's simulated nodes, killed when dropped — also when the lab's construction panics
/// half-way (a test's config tweak that finds nothing to change), so none outlives its test
/// holding the test runner's descriptors.
struct Sims(Vec<Child>);

impl Drop for Sims {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.daemons.kill_all();
        // A keeper or validator its daemon did not take down goes too: only this lab's, found by
        // their command lines naming its directory.
        lab::kill_strays(self.dir.path());
        if let Some(watch) = self.death_watch.take() {
            watch.stop();
        }
    }
}
