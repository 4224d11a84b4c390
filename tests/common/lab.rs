//! A lab of real processes: `failoverd sim-node` for each producer and `failoverd run` for each
//! member (a, b producers; c witness), on loopback ports, sharing one signature ledger, with
//! mutual TLS between members (certificates from failoverd's own issuing code, plus an operator
//! certificate "ops").
//! Judged from the ledger and the simulated nodes' state, never from the daemons' own words.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use failover::domain::MonoTime;
use failover::sim::activation;
use failover::sim::checker::{self, LedgerReport};
use failover::sim::ledger::{self, SignatureRecord};
use failover::sim::node::StateReport;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

pub const MEMBERS: [&str; 3] = ["a", "b", "c"];
pub const BLOCK: Duration = Duration::from_millis(200);
pub const LEASE_TTL: Duration = Duration::from_millis(1000);
pub const SAFETY_MARGIN: Duration = Duration::from_millis(200);

pub struct Lab {
    pub dir: tempfile::TempDir,
    /// The members' and the operator's certificates (in `dir`).
    pub pki: super::pki::ClusterPki,
    /// Each member's peer port (127.0.0.1).
    pub peer_ports: Vec<u16>,
    pub ledger: PathBuf,
    pub sim_urls: Vec<String>,
    sims: Vec<Child>,
    pub configs: Vec<PathBuf>,
    /// Each member's metrics and health listener (127.0.0.1).
    pub metrics_ports: Vec<u16>,
    daemons: Vec<Option<Child>>,
    client: reqwest::Client,
}

/// A free port below Linux's ephemeral range (32768+), so that no outgoing connection of any
/// process can take it between this check and the daemon's bind.
pub fn free_port() -> u16 {
    failover::demo::unused_port().expect("a free port on 127.0.0.1")
}

fn spawn_sim(member: &str, ledger: &std::path::Path, privval: Option<u16>) -> (Child, String) {
    let activations = ledger.with_file_name(format!("activations-{member}.jsonl"));
    let mut cmd = super::failoverd();
    cmd.args(["sim-node", "--listen", "127.0.0.1:0", "--member", member]);
    if let Some(port) = privval {
        cmd.arg("--privval-listen").arg(format!("127.0.0.1:{port}"));
    }
    let mut child = cmd
        .arg("--block-interval")
        .arg(format!("{}ms", BLOCK.as_millis()))
        .arg("--ledger")
        .arg(ledger)
        .arg("--activations")
        .arg(activations)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sim-node starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    let addr = line.trim().strip_prefix("listening ").expect("address line").to_string();
    (child, format!("http://{addr}"))
}

/// Where the members keep the lease.
#[derive(Clone, Debug)]
pub enum Store {
    /// The embedded raft quorum of the three members.
    Raft,
    /// Consul: member `i` talks to the agent at `agents[i]`, under `prefix`.
    Consul { agents: Vec<String>, check_ttl: Duration, lock_delay: Duration },
}

impl Lab {
    /// Starts two simulated nodes and three members; `extra` is appended to every config.
    pub async fn start(extra: &str, env: &[(&str, &str)]) -> Lab {
        Lab::start_with(Store::Raft, extra, env).await
    }

    /// [`Lab::start`] with the lease kept in `store`.
    pub async fn start_with(store: Store, extra: &str, env: &[(&str, &str)]) -> Lab {
        Lab::start_each(store, &|_, text| text + extra, env).await
    }

    /// [`Lab::start_with`] where `tweak(i, config)` returns member `i`'s final config text.
    pub async fn start_each(store: Store, tweak: &dyn Fn(usize, String) -> String, env: &[(&str, &str)]) -> Lab {
        Lab::start_full(store, tweak, env, false).await
    }

    /// Signer mode: each simulated node asks its member's remote signer (`cometbft-signer`, over
    /// privval and SecretConnection) for a precommit at every height; both members hold the same
    /// validator key, as a validator's producers do.
    pub async fn start_signer(store: Store) -> Lab {
        Lab::start_full(store, &|_, text| text, &[], true).await
    }

    async fn start_full(
        store: Store,
        tweak: &dyn Fn(usize, String) -> String,
        env: &[(&str, &str)],
        signer: bool,
    ) -> Lab {
        let dir = tempfile::tempdir().expect("dir");
        let ledger = dir.path().join("ledger.jsonl");
        let mut sims = Vec::new();
        let mut sim_urls = Vec::new();
        let privval_ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
        let key_file = dir.path().join("priv_validator_key.json");
        if signer {
            failover::producer::privval::validator_key::ValidatorKey::write_for_seed(&key_file, [0x5a; 32])
                .expect("validator key file");
        }
        for (i, m) in MEMBERS[..2].iter().enumerate() {
            let (child, url) = spawn_sim(m, &ledger, signer.then_some(privval_ports[i]));
            sims.push(child);
            sim_urls.push(url);
        }
        // A reference node that never produces: the best height when both producers lag.
        let (reference, reference_url) = spawn_sim("ref", &dir.path().join("reference-ledger.jsonl"), None);
        sims.push(reference);
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let metrics_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let pki = super::pki::write_cluster(dir.path(), &MEMBERS, &["ops"]);
        let mut configs = Vec::new();
        for (i, m) in MEMBERS.iter().enumerate() {
            let mut text =
                format!("member = \"{m}\"\ndata_dir = \"{}\"\n", dir.path().join(format!("data-{m}")).display());
            for (j, port) in ports.iter().enumerate() {
                let (kind, prio) = match j {
                    0 => ("producer", 200),
                    1 => ("producer", 100),
                    _ => ("witness", 100),
                };
                text.push_str(&format!(
                    "[[members]]\nid = \"{}\"\npeer_address = \"127.0.0.1:{port}\"\nkind = \"{kind}\"\npriority = {prio}\n",
                    MEMBERS[j]
                ));
            }
            text.push_str(&format!(
                "[coordinator]\nlease_ttl = \"{}ms\"\nrenew_interval = \"250ms\"\nsafety_margin = \"{}ms\"\ncall_timeout = \"400ms\"\n\
                 [coordinator.raft]\ntick = \"50ms\"\nelection_ticks = 10\n\
                 [failover]\ncooldown = \"1s\"\npriority_delay = \"300ms\"\nmax_lag_on_failover = 2\n\
                 [api]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{}\"\n",
                LEASE_TTL.as_millis(),
                SAFETY_MARGIN.as_millis(),
                dir.path().join(format!("{m}.sock")).display(),
                metrics_ports[i]
            ));
            if let Store::Consul { agents, check_ttl, lock_delay } = &store {
                text = text.replacen("[coordinator]\n", "[coordinator]\nbackend = \"consul\"\n", 1);
                text.push_str(&format!(
                    "[coordinator.consul]\naddress = \"{}\"\nprefix = \"lab\"\ncheck_ttl = \"{}ms\"\nlock_delay = \"{}ms\"\n",
                    agents[i],
                    check_ttl.as_millis(),
                    lock_delay.as_millis()
                ));
            }
            if i < 2 {
                text.push_str(&format!(
                    "[chain]\nkind = \"sim\"\nrpc = \"{}\"\nreference_rpcs = [\"{reference_url}\"]\nprobe_interval = \"200ms\"\nprobe_timeout = \"150ms\"\nunhealthy_after = 3\nmax_lag = 5\nstall_after = \"700ms\"\n\
                     [producer]\nkind = \"sim\"\nfence_timeout = \"500ms\"\n",
                    sim_urls[i]
                ));
                if signer {
                    text = text.replace(
                        "[producer]\nkind = \"sim\"\n",
                        &format!(
                            "[producer]\nkind = \"cometbft-signer\"\nkey_file = \"{}\"\nchain_id = \"sim\"\npriv_validator_laddr = \"tcp://{}@127.0.0.1:{}\"\n",
                            key_file.display(),
                            failover::sim::privval_node::node_id(),
                            privval_ports[i]
                        ),
                    );
                }
            }
            if matches!(store, Store::Raft) {
                text.push_str(&super::pki::tls_section(&pki.member(m)));
            }
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
            sims,
            configs,
            metrics_ports,
            daemons: vec![None, None, None],
            client: failover::http::client(Duration::from_secs(2)).expect("client"),
        };
        for i in 0..3 {
            lab.start_daemon(i, env);
        }
        lab
    }

    pub fn start_daemon(&mut self, i: usize, env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.dir.path().join(format!("daemon-{}.log", MEMBERS[i]))).expect("log file");
        let mut cmd = super::failoverd();
        cmd.arg("--config").arg(&self.configs[i]).stdout(Stdio::null()).stderr(log).env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.daemons[i] = Some(cmd.spawn().expect("failoverd starts"));
    }

    /// `failoverctl ARGS` against member `i`'s control socket.
    pub fn failoverctl(&self, i: usize, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_failoverctl"))
            .arg("--socket")
            .arg(self.socket(i))
            .args(args)
            .output()
            .expect("failoverctl runs")
    }

    /// Member `i`'s control socket.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.sock", MEMBERS[i]))
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("daemon-{}.log", MEMBERS[i]))).unwrap_or_default()
    }

    fn pid(&self, i: usize) -> Pid {
        Pid::from_raw(i32::try_from(self.daemons[i].as_ref().expect("running").id()).expect("pid"))
    }

    pub fn signal(&self, i: usize, s: Signal) {
        kill(self.pid(i), s).expect("signal the daemon");
    }

    /// Waits up to `limit` for daemon `i` to exit on its own; its exit status, if it did.
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = std::time::Instant::now() + limit;
        let child = self.daemons[i].as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.daemons[i] = None;
                return Some(status);
            }
            if std::time::Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether daemon `i` is still running.
    pub fn alive(&mut self, i: usize) -> bool {
        self.daemons[i].as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Member `i`'s activation log: every change of its node's permission to sign.
    pub fn activations(&self, i: usize) -> Vec<activation::ActivationRecord> {
        activation::read(&self.dir.path().join(format!("activations-{}.jsonl", MEMBERS[i]))).expect("log parses")
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.daemons[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn sim(&self, i: usize) -> StateReport {
        self.client
            .get(format!("{}/sim/state", self.sim_urls[i]))
            .send()
            .await
            .expect("sim answers")
            .json()
            .await
            .expect("state JSON")
    }

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

    /// Whether node `i` is signing now: producing, with a live permission.
    pub async fn signing(&self, i: usize) -> bool {
        let s = self.sim(i).await.state;
        s.producing && s.produce_until.is_none_or(|u| MonoTime::now().as_nanos() < u)
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

    /// Waits until node `i` has signed a height above `height`.
    pub async fn wait_signed_above(&self, i: usize, height: u64, limit: Duration) -> u64 {
        let end = Instant::now() + limit;
        loop {
            if let Some(h) = self.sim(i).await.state.last_signed
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

    /// Every pair of producers allowed to sign at once (S1), from the nodes' activation logs.
    pub fn s1_overlaps(&self) -> Vec<activation::Overlap> {
        let mut records = Vec::new();
        for m in &MEMBERS[..2] {
            records
                .extend(activation::read(&self.dir.path().join(format!("activations-{m}.jsonl"))).expect("log parses"));
        }
        activation::overlaps(&activation::windows(&records, MonoTime::now().as_nanos()), 0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.daemons.iter_mut().flatten() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
        for c in &mut self.sims {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
