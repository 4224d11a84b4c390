//! A lab of real processes serving two validators from one cluster (`[[validators]]`): members
//! a and b are producers of both chains, c a witness, all three daemons in one raft group. Each
//! chain has its own key, its own signature ledger and, per producer, its own signing node that
//! asks its member's remote signer (`cometbft-signer`) for a precommit at every height, plus a
//! reference node that never produces.
//!
//! `hub` prefers member a (priority 200 against 100) and `osmo` prefers b, so the two chains run
//! with different actives. Judged from each chain's ledger and the processes themselves, never
//! from the daemons' words.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use failover::sim::checker::{self, LedgerReport};
use failover::sim::lab::node::SimNode;
use failover::sim::lab::{self, Chain, LogFile, MemberConfig, Metrics, Peer, Processes, Producer, Store, Timings};
use failover::sim::ledger::{self, SignatureRecord};
use tokio::time::Instant;

pub const MEMBERS: [&str; 3] = ["a", "b", "c"];
/// The two validators, and the producer each prefers.
pub const CHAINS: [(&str, usize); 2] = [("hub", 0), ("osmo", 1)];
pub const BLOCK: Duration = Duration::from_millis(200);

/// The signing nodes, one per (chain, producer), killed when dropped.
struct Nodes(Vec<Option<Child>>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct TwoChains {
    pub dir: tempfile::TempDir,
    pub pki: super::pki::ClusterPki,
    /// Each member's peer port (127.0.0.1).
    pub peer_ports: Vec<u16>,
    pub configs: Vec<PathBuf>,
    pub metrics_ports: Vec<u16>,
    /// Per chain, per producer: the signing node's `http://` address.
    pub node_urls: Vec<Vec<String>>,
    nodes: Nodes,
    references: Nodes,
    daemons: Processes,
}

/// Where chain `c`'s signatures go.
fn ledger_of(dir: &Path, chain: &str) -> PathBuf {
    dir.join(format!("ledger-{chain}.jsonl"))
}

impl TwoChains {
    pub async fn start() -> TwoChains {
        let dir = tempfile::tempdir().expect("dir");
        let timings = Timings::tests().with_block(BLOCK);
        let exe = || super::failoverd();
        let mut nodes = Vec::new();
        let mut node_urls = Vec::new();
        let mut references = Vec::new();
        let mut reference_urls = Vec::new();
        let mut privval_ports = Vec::new();
        for (chain, _) in CHAINS {
            let mut urls = Vec::new();
            let mut ports = Vec::new();
            for m in &MEMBERS[..2] {
                let port = super::lab::free_port();
                let node = SimNode {
                    member: m.to_string(),
                    listen: "127.0.0.1:0".into(),
                    ledger: ledger_of(dir.path(), chain),
                    activations: Some(dir.path().join(format!("activations-{chain}-{m}.jsonl"))),
                    privval_listen: Some(format!("127.0.0.1:{port}")),
                    block: BLOCK,
                };
                let (child, url) = node.spawn_announced(exe()).unwrap_or_else(|e| panic!("{e}"));
                nodes.push(Some(child));
                urls.push(url);
                ports.push(port);
            }
            let reference = SimNode {
                member: format!("ref-{chain}"),
                listen: "127.0.0.1:0".into(),
                ledger: dir.path().join(format!("reference-{chain}.jsonl")),
                activations: None,
                privval_listen: None,
                block: BLOCK,
            };
            let (child, url) = reference.spawn_announced(exe()).unwrap_or_else(|e| panic!("{e}"));
            references.push(Some(child));
            reference_urls.push(url);
            node_urls.push(urls);
            privval_ports.push(ports);
        }
        let keys: Vec<PathBuf> = CHAINS
            .iter()
            .enumerate()
            .map(|(c, (chain, _))| {
                let path = dir.path().join(format!("key-{chain}.json"));
                let seed = [0x40 + c as u8; 32];
                failover::producer::privval::validator_key::ValidatorKey::write_for_seed(&path, seed)
                    .expect("validator key file");
                path
            })
            .collect();
        let ports: Vec<u16> = (0..3).map(|_| super::lab::free_port()).collect();
        let metrics_ports: Vec<u16> = (0..3).map(|_| super::lab::free_port()).collect();
        let pki = super::pki::write_cluster(dir.path(), &MEMBERS, &["ops"]);
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let peers: Vec<Peer> =
            Peer::cluster(&MEMBERS, &addresses).into_iter().map(|p| Peer { priority: 100, ..p }).collect();
        let mut configs = Vec::new();
        for (i, m) in MEMBERS.iter().enumerate() {
            let tls = pki.member(m);
            let mut shared = String::new();
            let mut entries = String::new();
            for (c, (chain, preferred)) in CHAINS.iter().enumerate() {
                let producing = i < 2;
                let text = MemberConfig {
                    id: m,
                    index: i,
                    data_dir: &dir.path().join(format!("data-{m}")),
                    peers: &peers,
                    timings: &timings,
                    store: &Store::Raft,
                    socket: &dir.path().join(format!("{m}.sock")),
                    metrics: Metrics::Listen(format!("127.0.0.1:{}", metrics_ports[i])),
                    tls: Some(&tls),
                    chain: producing.then(|| Chain {
                        rpc: node_urls[c][i].clone(),
                        reference_rpcs: vec![reference_urls[c].clone()],
                        sim: None,
                    }),
                    producer: producing.then(|| Producer::Signer {
                        key_file: keys[c].clone(),
                        node_id: failover::sim::privval_node::node_id().to_string(),
                        node_address: format!("127.0.0.1:{}", privval_ports[c][i]),
                    }),
                }
                .render();
                let (common, own) = lab::split_validator_tables(&text);
                shared = common;
                let priorities: Vec<String> = MEMBERS[..2]
                    .iter()
                    .enumerate()
                    .map(|(j, p)| format!("{p} = {}", if j == *preferred { 200 } else { 100 }))
                    .collect();
                let own =
                    own.replace("[validators.producer]\n", &format!("[validators.producer]\nkey_id = \"{chain}\"\n"));
                entries.push_str(&format!(
                    "[[validators]]\nid = \"{chain}\"\npriorities = {{ {} }}\n{own}",
                    priorities.join(", ")
                ));
            }
            let path = dir.path().join(format!("{m}.toml"));
            std::fs::write(&path, format!("{shared}{entries}")).expect("config");
            configs.push(path);
        }
        let mut lab = TwoChains {
            dir,
            pki,
            peer_ports: ports,
            configs,
            metrics_ports,
            node_urls,
            nodes: Nodes(nodes),
            references: Nodes(references),
            daemons: Processes::new(MEMBERS.len()),
        };
        for i in 0..3 {
            lab.start_daemon(i);
        }
        lab
    }

    pub fn start_daemon(&mut self, i: usize) {
        let log = self.dir.path().join(format!("daemon-{}.log", MEMBERS[i]));
        let mut cmd =
            lab::daemon_command(super::failoverd(), &self.configs[i], &log, LogFile::Truncate).expect("log file");
        cmd.env("RUST_LOG", "info");
        self.daemons.start(i, MEMBERS[i], "the daemon", &mut cmd).expect("failoverd starts");
    }

    pub fn kill9(&mut self, i: usize) {
        self.daemons.kill(i);
    }

    /// Kills chain `c`'s signing node of producer `i`, as a crashed validator node.
    pub fn kill_node(&mut self, c: usize, i: usize) {
        if let Some(mut child) = self.nodes.0[c * 2 + i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("daemon-{}.log", MEMBERS[i]))).unwrap_or_default()
    }

    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.sock", MEMBERS[i]))
    }

    /// `failoverctl ARGS` against member `i`'s control socket.
    pub fn failoverctl(&self, i: usize, args: &[&str]) -> std::process::Output {
        super::failoverctl_at(&self.socket(i), args)
    }

    /// Chain `c`'s signatures so far.
    pub fn records(&self, c: usize) -> Vec<SignatureRecord> {
        ledger::read(&ledger_of(self.dir.path(), CHAINS[c].0)).unwrap_or_default()
    }

    pub fn report(&self, c: usize) -> LedgerReport {
        checker::check(&self.records(c))
    }

    /// Who signed chain `c`'s highest height, and that height.
    pub fn last_signer(&self, c: usize) -> Option<(String, u64)> {
        self.records(c).iter().max_by_key(|r| r.height).map(|r| (r.member.to_string(), r.height))
    }

    /// Waits until `member` has signed chain `c` at `n` heights above `above`; its highest.
    pub async fn wait_signing(&self, c: usize, member: &str, above: u64, n: usize, limit: Duration) -> u64 {
        let end = Instant::now() + limit;
        loop {
            let heights: Vec<u64> = self
                .records(c)
                .iter()
                .filter(|r| r.member.as_str() == member && r.height > above)
                .map(|r| r.height)
                .collect();
            if heights.len() >= n {
                return heights.into_iter().max().unwrap_or(above);
            }
            assert!(
                Instant::now() < end,
                "{member} signed chain {} at {} heights above {above} within {limit:?}\n--- a ---\n{}\n--- b ---\n{}",
                CHAINS[c].0,
                heights.len(),
                tail(&self.log(0)),
                tail(&self.log(1))
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The last lines of a log.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

impl Drop for TwoChains {
    fn drop(&mut self) {
        self.daemons.kill_all();
        lab::kill_strays(self.dir.path());
    }
}
