//! A lab of real `failoverd run` processes on 127.0.0.1 serving many validators from one cluster
//! (`[[validators]]`): producers "a" and "b", witness "c", one raft group, mutual TLS, metrics
//! on. Each validator has a key of its own, a signature ledger of its own (`ledger-<id>.jsonl`)
//! and, per producer, `failoverd sim-node` processes of its own, so a member's figures hold
//! nothing of any chain:
//!
//! - *key-holding* (`cometbft-filepv`): a sentry per (validator, producer), which the daemon
//!   probes; the active's daemon starts the validator (a sign-while-running sim-node that follows
//!   that sentry) through a keeper process of its own, one keeper per validator it is active for;
//! - *signer* (`cometbft-signer`): a signing node per (validator, producer) that asks its
//!   member's remote signer for a precommit at every height.
//!
//! Each member's config is the lab's single-validator config (`MemberConfig::render`) with every
//! timing taken out, so members run at failoverd's defaults, and its `[chain]`/`[producer]` moved
//! into one `[[validators]]` entry per validator (with its own `key_id`). Validator `k` prefers a
//! (priority 200 against 100) when `k` is even and b when it is odd; both members have priority
//! 100 of their own.
//!
//! Benchmark support only: it starts, reads and kills processes of its own lab (those it started,
//! and what its daemons started, found by their command line naming the lab's directory); it
//! never judges a run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use failover::domain::MonoTime;
use failover::sim::lab::node::SimNode;
use failover::sim::lab::{
    self, Chain, LogFile, MemberConfig, Metrics, Peer, Processes, Producer, Store, Timings, ValidatorCommand,
    ValidatorKind, procs,
};
use failover::sim::ledger::{self, SignatureRecord};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub const MEMBERS: [&str; 3] = ["a", "b", "c"];
/// The producers' indices in [`MEMBERS`]: every member but the witness.
pub const PRODUCERS: [usize; 2] = [0, 1];
const EXE: &str = env!("CARGO_BIN_EXE_failoverd");
const CTL: &str = env!("CARGO_BIN_EXE_failoverctl");
/// How long a member's graceful stop may take before it is killed, when the lab ends.
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    KeyHolding,
    Signer,
}

impl Mode {
    /// The mode `FAILOVERD_BENCH_MANY_MODE` names.
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "key-holding" => Some(Mode::KeyHolding),
            "signer" => Some(Mode::Signer),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::KeyHolding => "key-holding (cometbft-filepv)",
            Mode::Signer => "signer (cometbft-signer)",
        }
    }
}

/// The keys of the lab's rendered config that carry a timing: removed, so the daemon's own
/// defaults apply (as `member_idle` does).
const TIMING_KEYS: [(&str, &[&str]); 4] = [
    ("coordinator", &["lease_ttl", "renew_interval", "safety_margin", "call_timeout", "raft"]),
    ("failover", &["cooldown", "priority_delay", "max_lag_on_failover", "floor_margin"]),
    ("chain", &["probe_interval", "probe_timeout", "unhealthy_after", "max_lag", "stall_after"]),
    ("producer", &["fence_timeout"]),
];

/// `text` (a rendered single-validator config) as a table without any timing.
fn at_defaults(text: &str) -> toml::Table {
    let mut table: toml::Table = text.parse().unwrap_or_else(|e| panic!("the lab renders TOML: {e}\n{text}"));
    for (section, keys) in TIMING_KEYS {
        if let Some(toml::Value::Table(t)) = table.get_mut(section) {
            for k in keys {
                t.remove(*k);
            }
        }
    }
    table
}

/// Validator `k`'s id.
pub fn validator_id(k: usize) -> String {
    format!("v{k:02}")
}

/// The producer validator `k` prefers: a when `k` is even and b when odd, so the actives are
/// spread (`FAILOVERD_BENCH_ACTIVES=spread`, the default); or a for every validator (`one`), so
/// one member is active for all of them.
pub fn preferred(k: usize) -> usize {
    match std::env::var("FAILOVERD_BENCH_ACTIVES").as_deref() {
        Err(_) | Ok("spread") => k % 2,
        Ok("one") => 0,
        Ok(other) => panic!("FAILOVERD_BENCH_ACTIVES={other:?}: expected spread or one"),
    }
}

/// One simulated node of the lab, kept with its arguments so that it can be started again on the
/// address it announced.
struct Node {
    spec: SimNode,
    child: Option<Child>,
}

impl Node {
    fn start(mut spec: SimNode) -> (Node, String) {
        let (child, url) = spec.spawn_announced(Command::new(EXE)).unwrap_or_else(|e| panic!("{e}"));
        spec.listen = url.trim_start_matches("http://").to_string();
        (Node { spec, child: Some(child) }, url)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct ManyLab {
    pub dir: tempfile::TempDir,
    pub mode: Mode,
    pub ids: Vec<String>,
    pub configs: Vec<PathBuf>,
    /// Per validator, per producer.
    nodes: Vec<Vec<Node>>,
    daemons: Processes,
}

impl Drop for ManyLab {
    fn drop(&mut self) {
        // Every member is asked to stop at once, so none waits for the others' graceful stops.
        for i in 0..MEMBERS.len() {
            self.daemons.signal(i, Signal::SIGTERM);
        }
        for i in 0..MEMBERS.len() {
            self.daemons.wait_exit(i, STOP_GRACE);
            self.daemons.kill(i);
        }
        for node in self.nodes.iter_mut().flatten() {
            node.kill();
        }
        lab::kill_strays(self.dir.path());
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| lab::unused_port().expect("a free port on 127.0.0.1")).collect()
}

/// Validator `k`'s key file, with a seed of its own.
fn write_key(dir: &Path, k: usize) -> PathBuf {
    let path = dir.join(format!("key-{}.json", validator_id(k)));
    let mut seed = [7u8; 32];
    seed[..8].copy_from_slice(&(k as u64 + 1).to_le_bytes());
    failover::producer::privval::validator_key::ValidatorKey::write_for_seed(&path, seed).expect("validator key");
    path
}

/// What member configs need of one validator on one producer.
struct Own {
    url: String,
    privval_port: u16,
}

impl ManyLab {
    /// Starts the nodes of `n` validators, then the three members.
    pub fn start(mode: Mode, n: usize, block: Duration) -> ManyLab {
        let dir = tempfile::tempdir().expect("dir");
        let ids: Vec<String> = (0..n).map(validator_id).collect();
        let mut lab =
            ManyLab { dir, mode, ids, configs: Vec::new(), nodes: Vec::new(), daemons: Processes::new(MEMBERS.len()) };
        let keys: Vec<PathBuf> = (0..n).map(|k| write_key(lab.dir.path(), k)).collect();
        let mut own: Vec<Vec<Own>> = Vec::new();
        for k in 0..n {
            own.push(lab.start_nodes(k, block));
        }
        let certificates =
            lab::certificates::write(&lab.dir.path().join("tls"), "bench", &MEMBERS, &[], Duration::from_secs(86_400))
                .unwrap_or_else(|e| panic!("{e}"));
        let (peer_ports, metrics_ports) = (free_ports(3), free_ports(3));
        let addresses: Vec<String> = peer_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let peers: Vec<Peer> =
            Peer::cluster(&MEMBERS, &addresses).into_iter().map(|p| Peer { priority: 100, ..p }).collect();
        for (i, m) in MEMBERS.iter().enumerate() {
            let shared = Shared {
                peers: &peers,
                metrics: format!("127.0.0.1:{}", metrics_ports[i]),
                tls: certificates.members.get(i),
                block,
            };
            let text = lab.member_config(i, &shared, &own, &keys);
            let path = lab.dir.path().join(format!("{m}.toml"));
            std::fs::write(&path, text).expect("config");
            lab.configs.push(path);
        }
        for i in 0..MEMBERS.len() {
            lab.start_daemon(i);
        }
        lab
    }

    /// Validator `k`'s nodes, one per producer: its sentry (key-holding) or its signing node.
    fn start_nodes(&mut self, k: usize, block: Duration) -> Vec<Own> {
        let d = self.dir.path().to_path_buf();
        let id = validator_id(k);
        let privval_ports = free_ports(PRODUCERS.len());
        let mut own = Vec::new();
        let mut nodes = Vec::new();
        for (j, &i) in PRODUCERS.iter().enumerate() {
            let m = MEMBERS[i];
            let signer = self.mode == Mode::Signer;
            let spec = SimNode {
                member: m.to_string(),
                listen: "127.0.0.1:0".into(),
                ledger: match self.mode {
                    Mode::Signer => self.ledger(k),
                    Mode::KeyHolding => d.join(format!("sentry-{id}-{m}.jsonl")),
                },
                activations: signer.then(|| d.join(format!("activations-{id}-{m}.jsonl"))),
                privval_listen: signer.then(|| format!("127.0.0.1:{}", privval_ports[j])),
                block,
            };
            let (node, url) = Node::start(spec);
            nodes.push(node);
            own.push(Own { url, privval_port: privval_ports[j] });
        }
        self.nodes.push(nodes);
        own
    }

    /// Member `i`'s config: what every validator shares, then one `[[validators]]` entry each.
    fn member_config(&self, i: usize, shared: &Shared, own: &[Vec<Own>], keys: &[PathBuf]) -> String {
        let mut top = toml::Table::new();
        let mut entries = Vec::new();
        for (k, id) in self.ids.iter().enumerate() {
            let mine = own[k].get(i);
            let text = self.single_config(i, shared, mine, &keys[k], k);
            let mut table = at_defaults(&text);
            let mut entry = toml::Table::new();
            entry.insert("id".into(), id.clone().into());
            let priorities: toml::Table = PRODUCERS
                .iter()
                .map(|&p| (MEMBERS[p].to_string(), toml::Value::from(if p == preferred(k) { 200 } else { 100 })))
                .collect();
            entry.insert("priorities".into(), priorities.into());
            if let Some(chain) = table.remove("chain") {
                entry.insert("chain".into(), chain);
            }
            if let Some(mut producer) = table.remove("producer") {
                if let toml::Value::Table(p) = &mut producer {
                    p.insert("key_id".into(), id.clone().into());
                }
                entry.insert("producer".into(), producer);
            }
            entries.push(toml::Value::Table(entry));
            top = table;
        }
        top.insert("validators".into(), toml::Value::Array(entries));
        toml::to_string(&top).expect("TOML renders")
    }

    /// Member `i`'s config as if it served validator `k` alone (`mine`: its node there).
    fn single_config(&self, i: usize, shared: &Shared, mine: Option<&Own>, key_file: &Path, k: usize) -> String {
        let d = self.dir.path();
        let m = MEMBERS[i];
        // Only for rendering: every timing it writes is taken out again (`at_defaults`).
        let timings = Timings::tests().with_block(shared.block);
        let producer = mine.map(|own| match self.mode {
            Mode::Signer => Producer::Signer {
                key_file: key_file.to_path_buf(),
                node_id: failover::sim::privval_node::node_id().to_string(),
                node_address: format!("127.0.0.1:{}", own.privval_port),
            },
            Mode::KeyHolding => Producer::Validator(ValidatorCommand {
                exe: PathBuf::from(EXE),
                kind: ValidatorKind::FilePv { key_file: key_file.to_path_buf() },
                forking: false,
                sentry: own.url.clone(),
                home: d.join(format!("home-{}-{m}", self.ids[k])),
                member: m.to_string(),
                ledger: self.ledger(k),
                activations: d.join(format!("activations-{}-{m}.jsonl", self.ids[k])),
                block: shared.block,
            }),
        });
        MemberConfig {
            id: m,
            index: i,
            data_dir: &d.join(format!("data-{m}")),
            peers: shared.peers,
            timings: &timings,
            store: &Store::Raft,
            socket: &self.socket(i),
            metrics: Metrics::Listen(shared.metrics.clone()),
            tls: shared.tls,
            chain: mine.map(|own| Chain { rpc: own.url.clone(), reference_rpcs: Vec::new(), sim: None }),
            producer,
        }
        .render()
    }

    fn start_daemon(&mut self, i: usize) {
        let log = self.log_path(i);
        let mut command = lab::daemon_command(Command::new(EXE), &self.configs[i], &log, LogFile::Truncate)
            .unwrap_or_else(|e| panic!("{e}"));
        // `failoverd --config FILE` is `failoverd run --config FILE`, at its default log level.
        command.env_remove("RUST_LOG");
        self.daemons.start(i, MEMBERS[i], "the daemon", &mut command).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.sock", MEMBERS[i]))
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", MEMBERS[i]))
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// Where validator `k`'s signatures go, from both producers.
    pub fn ledger(&self, k: usize) -> PathBuf {
        self.dir.path().join(format!("ledger-{}.jsonl", validator_id(k)))
    }

    /// Validator `k`'s signatures so far (none when its ledger is not written yet).
    pub fn records(&self, k: usize) -> Vec<SignatureRecord> {
        ledger::read(&self.ledger(k)).unwrap_or_default()
    }

    /// The member that signed validator `k` last, when that was within `recent`.
    pub fn signing_member(&self, k: usize, recent: Duration) -> Option<usize> {
        let records = self.records(k);
        let last = records.iter().max_by_key(|r| r.mono_ns)?;
        let age = MonoTime::now().saturating_since(MonoTime::from_nanos(last.mono_ns));
        (age < recent).then(|| MEMBERS.iter().position(|m| *m == last.member.as_str())).flatten()
    }

    /// Every validator's holder as member `i` reports it (`failoverctl --json status`), by
    /// validator index: `None` for a free lease.
    pub fn holders(&self, i: usize) -> Result<Vec<Option<String>>, String> {
        let out = Command::new(CTL)
            .arg("--socket")
            .arg(self.socket(i))
            .args(["--json", "status"])
            .output()
            .map_err(|e| format!("failoverctl: {e}"))?;
        if !out.status.success() {
            return Err(format!("failoverctl status: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("failoverctl status: not JSON: {e}"))?;
        let holder = |view: &serde_json::Value| view["self"]["lease"]["holder"].as_str().map(str::to_string);
        let Some(list) = json["validators"].as_array() else {
            // One validator is shown as a single-validator member's status.
            return Ok(vec![holder(&json)]);
        };
        let mut holders = vec![None; self.ids.len()];
        for view in list {
            if let Some(k) = self.ids.iter().position(|id| view["validator"].as_str() == Some(id)) {
                holders[k] = holder(view);
            }
        }
        Ok(holders)
    }

    /// The raft commit index member `i` reports (`failoverctl --validator <first> --json status`:
    /// one validator's status, the cheapest ask), or `None` when it does not answer.
    pub fn raft_commit(&self, i: usize) -> Option<u64> {
        let out = Command::new(CTL)
            .arg("--socket")
            .arg(self.socket(i))
            .args(["--validator", self.ids.first()?, "--json", "status"])
            .output()
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        json["self"]["raft"]["commit"].as_u64()
    }

    /// Member `i`'s processes: its daemon and every keeper it started (one per validator whose
    /// node it runs, in key-holding mode).
    pub fn member_pids(&self, i: usize) -> Vec<(&'static str, i32)> {
        let Some(daemon) = self.daemons.pid(i) else { return Vec::new() };
        let mut pids = vec![("daemon", daemon)];
        let keepers = procs::all().into_iter().filter(|p| {
            p.ppid == daemon && p.session == p.pid && p.live() && p.cmdline.get(1).is_some_and(|a| a == "keeper")
        });
        pids.extend(keepers.map(|p| ("keeper", p.pid)));
        pids
    }

    /// How many processes name this lab's directory (members, keepers, nodes, validators).
    pub fn process_count(&self) -> usize {
        let dir = format!("{}/", self.dir.path().display());
        procs::all().iter().filter(|p| p.live() && p.mentions(&dir)).count()
    }

    /// Kills validator `k`'s signing process on member `i` with SIGKILL, as a crashed node: its
    /// validator (key-holding) or its signing node (signer). How many processes were killed.
    pub fn kill_signing(&mut self, k: usize, i: usize) -> usize {
        match self.mode {
            Mode::Signer => {
                let node = &mut self.nodes[k][i];
                let had = node.child.is_some();
                node.kill();
                usize::from(had)
            }
            Mode::KeyHolding => {
                let ledger = self.ledger(k).display().to_string();
                let mut killed = 0;
                for p in procs::validators(&ledger, MEMBERS[i]) {
                    if kill(Pid::from_raw(p.pid), Signal::SIGKILL).is_ok() {
                        killed += 1;
                    }
                }
                killed
            }
        }
    }

    /// Starts validator `k`'s node on member `i` again, on the address it had, once it was killed
    /// (signer mode; a key-holding member's daemon starts its validator itself).
    pub fn restart_node(&mut self, k: usize, i: usize) {
        let node = &mut self.nodes[k][i];
        if self.mode == Mode::Signer && node.child.is_none() {
            let (restarted, _) = Node::start(node.spec.clone());
            *node = restarted;
        }
    }
}

/// What every validator's entry of one member shares.
struct Shared<'a> {
    peers: &'a [Peer],
    metrics: String,
    tls: Option<&'a failover::config::TlsConfig>,
    block: Duration,
}
