//! One lab: three members (producers a and b, witness c) as real `failoverd run` processes, and
//! beside each producer the nodes a real deployment has, all sharing one signature ledger and one
//! activation log. The lab starts, stops, signals and restarts those processes, fills disks and
//! moves wall clocks; it judges nothing (that is `verdict`).
//!
//! In key-holding mode each producer has a sentry (`failoverd sim-node`, started by the lab: the
//! node `chain.rpc` probes, never producing) and a validator shaped like a real one (`sim-node
//! --sign-while-running`), which the member's daemon starts through its keeper as the
//! `cometbft-filepv` producer's `command`: it signs every height its sentry reports from its start
//! until its process dies, with no deadline and no switch. A death watch outside every daemon
//! records each validator's death in the activation log. In signer mode the lab's node asks its
//! member's remote signer for every signature instead.
//!
//! With `--validators N` the cluster serves N validators (see `validators`): `v1`, whose nodes
//! are the ones described above and whom the scenarios fault, and bystanders `v2`… with a node
//! of their own beside each producer (a sentry and a validator the daemon starts, or a privval
//! node), their own key, ledger and activation log, watched by the same death watch.
//!
//! Members talk over mutual TLS, as in production: at start the lab writes a CA, one member
//! certificate per member and one operator certificate (for tools that attack or drive the
//! cluster) into its directory, and every member's config names its own in `[tls]`.
//!
//! Every process is started from the runner's main thread with `PR_SET_PDEATHSIG`, so that none
//! outlives a runner that is killed outright; `Drop` kills them, unmounts and removes the
//! namespaces on every other way out.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use failover::config::TlsConfig;
use failover::domain::MonoTime;
use failover::proto::v1::{MembersReply, StatusReply};
use failover::sim::chain::SimChain;
use failover::sim::death_watch::DeathWatch;
use failover::sim::lab::node::SimNode;
use failover::sim::lab::procs::{self, Proc};
use failover::sim::lab::wan::{Links, Proxies, Wan};
use failover::sim::lab::{
    self, Chain, LabError, LogFile, MemberConfig, Metrics, Peer, Processes, Producer, Store, ValidatorCommand,
    ValidatorKind,
};
use failover::sim::ledger::SignatureRecord;
use failover::sim::node::StateReport;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::control;
use crate::net::{Namespaces, Net, PROXY_PORT, sh};
use crate::validators::{self, LabValidator};

pub use failover::sim::lab::Timings;

pub const MEMBERS: [&str; 3] = ["a", "b", "c"];
pub const PRODUCERS: usize = 2;
/// How long [`Lab::place_bystanders`] waits for a bystander to sign, and to sign where it was
/// promoted.
const PLACE_LIMIT: Duration = Duration::from_secs(10);
/// How long the lab waits before restarting a process that exited on its own.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// The operator whose certificate the lab writes beside the members'.
pub const OPERATOR: &str = "chaos";
/// How long the lab's certificates are valid: longer than any lab lives, even with a wall clock
/// moved a day ahead by the clock-jump scenario.
const CERTIFICATE_VALIDITY: Duration = Duration::from_secs(7 * 86_400);
/// Largest `/metrics` answer read.
const METRICS_LIMIT: u64 = 1 << 20;

/// How the lab is built.
#[derive(Clone, Debug)]
pub struct LabOptions {
    pub timings: Timings,
    /// Run every member under libfaketime with its own offset file, so that one member's wall
    /// clock can be moved.
    pub faketime: Option<PathBuf>,
    /// Put each producer's data_dir on its own small tmpfs, so that it can be filled.
    pub small_disks: bool,
    /// Build network namespaces (root) or use loopback.
    pub namespaces: bool,
    pub keep: bool,
    /// Signer mode: each node asks its member's remote signer (`cometbft-signer`) for every
    /// signature, instead of a validator that signs while its process runs.
    pub signer: bool,
    /// Key-holding mode: start each validator through a start script that forks it
    /// (`sh -c "<validator> & wait"`), as many real start scripts do.
    pub forking: bool,
    /// A round trip (and jitter) between every pair of members, through a delay proxy per
    /// directed link; `None`: members reach each other directly.
    pub wan: Option<Wan>,
    /// How many validators the cluster serves: 1 is the lab of before issue 22 (single-validator
    /// configs); more add bystanders `v2`… beside `v1`.
    pub validators: usize,
}

struct Member {
    name: &'static str,
    producer: bool,
    config: PathBuf,
    socket: PathBuf,
    data_dir: PathBuf,
    clock_file: PathBuf,
    /// When to restart a process that exited on its own.
    daemon_restart: Option<Instant>,
    node_restart: Option<Instant>,
}

/// An unexpected exit of a lab process, seen by [`Lab::supervise`].
#[derive(Clone, Debug)]
pub struct Exit {
    pub member: &'static str,
    /// `daemon`, `node`, `node of v2` (a bystander's), `delay proxy`.
    pub what: String,
    pub status: String,
    /// A panic or a fatal signal: a bug, not a clean refusal.
    pub crash: bool,
}

pub struct Lab {
    pub dir: PathBuf,
    /// Each member's `[tls]` section, by member index.
    pub member_tls: Vec<TlsConfig>,
    /// The operator's certificate (`OPERATOR`): what a tool outside the cluster holds.
    pub operator_tls: TlsConfig,
    keep: bool,
    net: Net,
    exe: PathBuf,
    options: LabOptions,
    members: Vec<Member>,
    /// The first validator's (`v1`'s) ledger and activation log.
    pub ledger: PathBuf,
    pub activations: PathBuf,
    /// Every validator the cluster serves, `v1` first.
    pub validators: Vec<LabValidator>,
    /// The bystanders' nodes, `v2` first.
    bystanders: Vec<Bystander>,
    mounts: Vec<PathBuf>,
    /// Each member's daemon.
    daemons: Processes,
    /// The node the lab starts beside each producer: the sentry in key-holding mode, the privval
    /// node in signer mode.
    nodes: Processes,
    /// With a WAN: the delay proxy of every directed link, started before the members and left
    /// running whatever happens to them (they are the network).
    proxies: Option<Proxies>,
    runtime: tokio::runtime::Handle,
    pub exits: Vec<Exit>,
    /// Records each validator's death in the activation log (key-holding mode).
    death_watch: Option<DeathWatch>,
    /// What the ledger says each member signed last (key-holding mode's view of who signs).
    signed: std::sync::Mutex<LedgerTail>,
}

/// One bystander validator's processes the lab runs (the node beside each producer), when to
/// restart one that exited, and what its ledger says each member signed last.
struct Bystander {
    nodes: Processes,
    node_restart: Vec<Option<Instant>>,
    signed: std::sync::Mutex<LedgerTail>,
}

/// The libfaketime library, where Debian's package puts it.
pub fn find_libfaketime() -> Option<PathBuf> {
    ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Removes lab directories (and their mounts) of runners that are no longer alive.
pub fn remove_stale_labs() {
    let tmp = std::env::temp_dir();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(&tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("failoverd-chaos-") else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        for line in mounts.lines() {
            if let Some(target) = line.split(' ').nth(1)
                && target.starts_with(path.to_string_lossy().as_ref())
            {
                let _ = sh("umount", &["-l", target]);
            }
        }
        let _ = std::fs::remove_dir_all(&path);
    }
}

/// Writes the lab's CA, a certificate for every member and one for [`OPERATOR`] into `dir`;
/// returns each member's `[tls]` section (by member index) and the operator's.
fn write_certificates(dir: &Path) -> Result<(Vec<TlsConfig>, TlsConfig), String> {
    let written = lab::certificates::write(dir, "chaos", &MEMBERS, &[OPERATOR], CERTIFICATE_VALIDITY)
        .map_err(|e| e.to_string())?;
    let operator_tls = written.operators.into_iter().next().ok_or("no operator certificate was written")?;
    Ok((written.members, operator_tls))
}

impl Lab {
    /// Builds the lab and starts every process; returns once each daemon's control socket
    /// answers.
    pub fn start(tag: &str, exe: &Path, options: LabOptions, runtime: tokio::runtime::Handle) -> Result<Lab, String> {
        let dir = std::env::temp_dir().join(format!("failoverd-chaos-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let net = if options.namespaces {
            Net::Namespaces(Namespaces::create(tag, &MEMBERS).map_err(|e| format!("cannot build namespaces: {e}"))?)
        } else {
            let ports = |n| -> Result<Vec<u16>, String> {
                (0..n).map(|_| lab::unused_port().map_err(|e| LabError::NoPort(e).to_string())).collect()
            };
            let peer_ports = ports(MEMBERS.len())?;
            let mut node_ports = vec![ports(MEMBERS.len())?];
            let mut privval_ports = vec![ports(MEMBERS.len())?];
            let metrics_ports = ports(MEMBERS.len())?;
            for _ in 1..options.validators {
                node_ports.push(ports(MEMBERS.len())?);
                privval_ports.push(ports(MEMBERS.len())?);
            }
            Net::Loopback { peer_ports, node_ports, privval_ports, metrics_ports }
        };
        let planned = validators::plan(&dir, options.validators);
        let (member_tls, operator_tls) = write_certificates(&dir.join("tls"))?;
        let mut lab = Lab {
            member_tls,
            operator_tls,
            ledger: planned[0].ledger.clone(),
            activations: planned[0].activations.clone(),
            bystanders: planned[1..]
                .iter()
                .map(|v| Bystander {
                    nodes: Processes::new(MEMBERS.len()),
                    node_restart: vec![None; MEMBERS.len()],
                    signed: std::sync::Mutex::new(LedgerTail::new(v.ledger.clone())),
                })
                .collect(),
            validators: planned,
            keep: options.keep,
            net,
            exe: exe.to_path_buf(),
            members: Vec::new(),
            mounts: Vec::new(),
            daemons: Processes::new(MEMBERS.len()),
            nodes: Processes::new(MEMBERS.len()),
            proxies: None,
            runtime,
            exits: Vec::new(),
            death_watch: None,
            signed: std::sync::Mutex::new(LedgerTail::new(dir.join("ledger.jsonl"))),
            options,
            dir,
        };
        // Both producers hold the same validator key: the remote signer's in signer mode, the
        // cometbft-filepv producer's key_file in key-holding mode. Each validator has its own.
        for v in &lab.validators {
            failover::producer::privval::validator_key::ValidatorKey::write_for_seed(&v.key_file, v.seed)
                .map_err(|e| format!("cannot write {}: {e}", v.key_file.display()))?;
        }
        if !lab.options.signer {
            let logs: Vec<PathBuf> = lab.validators.iter().map(|v| v.activations.clone()).collect();
            lab.death_watch = Some(DeathWatch::start(&logs).map_err(|e| format!("cannot start the death watch: {e}"))?);
        }
        for (i, name) in MEMBERS.iter().enumerate() {
            let member = lab.prepare_member(name, i < PRODUCERS)?;
            lab.members.push(member);
        }
        if lab.options.wan.is_some() {
            lab.proxies = Some(Proxies::new(lab.plan_links()?));
        }
        for i in 0..MEMBERS.len() {
            let text = lab.config_text(i);
            std::fs::write(&lab.members[i].config, text).map_err(|e| format!("cannot write a config: {e}"))?;
        }
        let links = lab.proxies.as_ref().map(|p| p.links().all().to_vec()).unwrap_or_default();
        for link in &links {
            lab.start_proxy(link)?;
        }
        for i in 0..PRODUCERS {
            lab.start_node(i)?;
            for k in 1..lab.validators.len() {
                lab.start_bystander_node(i, k)?;
            }
        }
        for i in 0..MEMBERS.len() {
            lab.start_daemon(i)?;
        }
        for (i, name) in MEMBERS.iter().enumerate() {
            if !lab.wait_answers(i, Duration::from_secs(15)) {
                return Err(format!("member {name} did not answer on its control socket within 15 s"));
            }
        }
        Ok(lab)
    }

    /// Member `name`'s directories and files: its data_dir (a small tmpfs for full-disk), its
    /// wall-clock offset file, and a producer's validator home for each validator.
    fn prepare_member(&mut self, name: &'static str, producer: bool) -> Result<Member, String> {
        let data_dir = self.dir.join(format!("data-{name}"));
        std::fs::create_dir_all(&data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        if producer && self.options.small_disks {
            let target = data_dir.to_string_lossy().to_string();
            sh("mount", &["-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", &target])
                .map_err(|e| format!("cannot mount a small disk: {e}"))?;
            self.mounts.push(data_dir.clone());
        }
        let clock_file = self.dir.join(format!("clock-{name}"));
        std::fs::write(&clock_file, "+0\n").map_err(|e| format!("cannot write {}: {e}", clock_file.display()))?;
        for k in (0..self.validators.len()).filter(|_| producer) {
            let home = validators::home(&self.dir, name, k);
            std::fs::create_dir_all(&home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
        }
        Ok(Member {
            name,
            producer,
            config: self.dir.join(format!("{name}.toml")),
            socket: self.dir.join(format!("{name}.sock")),
            data_dir,
            clock_file,
            daemon_restart: None,
            node_restart: None,
        })
    }

    /// Where each directed link's proxy listens: inside the dialling member's namespace at
    /// 127.0.0.1:[`PROXY_PORT`] + the peer's index, or on a free loopback port without
    /// namespaces; each forwards to the peer's real address, so link faults still apply.
    fn plan_links(&self) -> Result<Links, String> {
        let namespaces = matches!(self.net, Net::Namespaces(_));
        let listen = |_from: usize, to: usize| match namespaces {
            true => Ok(std::net::SocketAddr::from(([127, 0, 0, 1], PROXY_PORT + to as u16))),
            false => {
                lab::unused_port().map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p))).map_err(LabError::NoPort)
            }
        };
        Links::plan(MEMBERS.len(), listen, |to| self.net.peer_addr(to)).map_err(|e| e.to_string())
    }

    /// Starts `link`'s delay proxy as its dialling member (in its namespace), logging into
    /// `proxy-<from>-<to>.log`.
    fn start_proxy(&mut self, link: &lab::wan::Link) -> Result<(), String> {
        let Some(wan) = self.options.wan else { return Ok(()) };
        let name = format!("proxy-{}-{}.log", MEMBERS[link.from], MEMBERS[link.to]);
        let log = self.log_file(&name)?;
        let err = log.try_clone().map_err(|e| format!("cannot open {name}: {e}"))?;
        let mut command = self.net.command(link.from, &self.exe);
        command.stdout(log).stderr(err);
        self.prepare(link.from, &mut command);
        // Each link jitters on its own, replayably: the seed follows from the lab's directory
        // name (scenario and run) and the link.
        let seed = self
            .dir
            .to_string_lossy()
            .bytes()
            .fold((link.from * 31 + link.to) as u64, |h, b| h.wrapping_mul(0x100_0000_01B3) ^ u64::from(b));
        let Some(proxies) = self.proxies.as_mut() else { return Ok(()) };
        proxies.start(link, MEMBERS[link.from], command, &wan, seed).map_err(|e| e.to_string())
    }

    /// Member `i`'s config: the single-validator config of before issue 22 with one validator,
    /// else every validator's as a `[[validators]]` entry.
    fn config_text(&self, i: usize) -> String {
        let mut texts: Vec<String> = (0..self.validators.len()).map(|k| self.validator_config_text(i, k)).collect();
        match texts.len() {
            1 => texts.remove(0),
            _ => validators::member_config(&self.validators, &texts),
        }
    }

    /// Member `i`'s single-validator config for validator `k`.
    fn validator_config_text(&self, i: usize, k: usize) -> String {
        let m = &self.members[i];
        let addresses: Vec<String> = (0..MEMBERS.len()).map(|j| self.net.peer_addr(j).to_string()).collect();
        let peers = Peer::cluster(&MEMBERS, &addresses);
        let peers = match &self.proxies {
            Some(proxies) => proxies.links().peers_seen_by(i, &peers),
            None => peers,
        };
        MemberConfig {
            id: m.name,
            index: i,
            data_dir: &m.data_dir,
            peers: &peers,
            timings: &self.options.timings,
            store: &Store::Raft,
            socket: &m.socket,
            metrics: Metrics::Listen(self.net.metrics_addr(i).to_string()),
            tls: self.member_tls.get(i),
            chain: m.producer.then(|| Chain {
                rpc: format!("http://{}", self.net.validator_node_addr(i, k)),
                reference_rpcs: Vec::new(),
                sim: None,
            }),
            producer: m.producer.then(|| self.producer(i, k)),
        }
        .render()
    }

    /// Producer `i`'s `[producer]` for validator `k`.
    fn producer(&self, i: usize, k: usize) -> Producer {
        let v = &self.validators[k];
        let key_file = v.key_file.clone();
        if self.options.signer {
            // The simulated node's SecretConnection key is fixed, so the signer can check that it
            // reached that node and no other (a stock CometBFT node's listener key changes at every
            // start, so there an operator pins nothing and keeps the link private).
            return Producer::Signer {
                key_file,
                node_id: failover::sim::privval_node::node_id().to_string(),
                node_address: self.net.validator_privval_addr(i, k).to_string(),
            };
        }
        // A validator that follows the member's sentry and signs above its home's state file
        // until its process dies; with `forking`, behind a start script that forks it and waits.
        Producer::Validator(ValidatorCommand {
            exe: self.exe.clone(),
            kind: ValidatorKind::FilePv { key_file },
            forking: self.options.forking,
            sentry: format!("http://{}", self.net.validator_node_addr(i, k)),
            home: validators::home(&self.dir, MEMBERS[i], k),
            member: MEMBERS[i].to_string(),
            ledger: v.ledger.clone(),
            activations: v.activations.clone(),
            block: self.options.timings.block,
        })
    }

    fn log_file(&self, name: &str) -> Result<std::fs::File, String> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(name))
            .map_err(|e| format!("cannot open log {name}: {e}"))
    }

    /// Prepares `command` (the `failoverd` binary inside member `i`'s namespace) the lab's way:
    /// its log level, member `i`'s wall clock under libfaketime, and death with the runner.
    fn prepare(&self, i: usize, command: &mut Command) {
        // CHAOS_RUST_LOG=debug (or any filter) makes the lab's processes log more.
        command.env("RUST_LOG", std::env::var("CHAOS_RUST_LOG").unwrap_or_else(|_| "info".into()));
        if let Some(lib) = &self.options.faketime {
            // Only the wall clock moves: the design relies on CLOCK_MONOTONIC alone.
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", &self.members[i].clock_file)
                .env("FAKETIME_NO_CACHE", "1")
                .env("DONT_FAKE_MONOTONIC", "1");
        }
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
        }
    }

    /// Starts member `i`'s node of the first validator (`v1`) and waits until it answers.
    pub fn start_node(&mut self, i: usize) -> Result<(), String> {
        let mut command = self.node_command(i, 0)?;
        self.nodes.start(i, MEMBERS[i], "the node", &mut command).map_err(|e| e.to_string())?;
        self.members[i].node_restart = None;
        self.wait_node(i, 0)
    }

    /// Starts member `i`'s node of bystander `k` (`k` ≥ 1) and waits until it answers.
    fn start_bystander_node(&mut self, i: usize, k: usize) -> Result<(), String> {
        let mut command = self.node_command(i, k)?;
        let bystander = &mut self.bystanders[k - 1];
        bystander.nodes.start(i, MEMBERS[i], "a bystander's node", &mut command).map_err(|e| e.to_string())?;
        bystander.node_restart[i] = None;
        self.wait_node(i, k)
    }

    /// The command of member `i`'s node of validator `k`, logging into `node-<member>.log`
    /// (`v1`) or `node-<member>-<id>.log`.
    fn node_command(&self, i: usize, k: usize) -> Result<Command, String> {
        let v = &self.validators[k];
        // A sentry never produces, so it has nothing to record; the privval node records its
        // permission changes as before.
        let node = SimNode {
            member: MEMBERS[i].to_string(),
            listen: self.net.validator_node_addr(i, k).to_string(),
            ledger: v.ledger.clone(),
            activations: self.options.signer.then(|| v.activations.clone()),
            privval_listen: self.options.signer.then(|| self.net.validator_privval_addr(i, k).to_string()),
            block: self.options.timings.block,
        };
        let mut command = self.net.command(i, &self.exe);
        let name =
            if k == 0 { format!("node-{}.log", MEMBERS[i]) } else { format!("node-{}-{}.log", MEMBERS[i], v.id) };
        let log = self.log_file(&name)?;
        let err = log.try_clone().map_err(|e| format!("cannot open the node log of member {}: {e}", MEMBERS[i]))?;
        command.args(node.args()).stdin(Stdio::null()).stdout(log).stderr(err);
        self.prepare(i, &mut command);
        Ok(command)
    }

    /// Waits up to 10 s for member `i`'s node of validator `k` to answer.
    fn wait_node(&self, i: usize, k: usize) -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if self.node_state(i, k).is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let of = if k == 0 { String::new() } else { format!(" for {}", self.validators[k].id) };
        Err(format!("the node of member {}{of} did not answer within 10 s", MEMBERS[i]))
    }

    pub fn start_daemon(&mut self, i: usize) -> Result<(), String> {
        let log = self.dir.join(format!("daemon-{}.log", MEMBERS[i]));
        let mut command =
            lab::daemon_command(self.net.command(i, &self.exe), &self.members[i].config, &log, LogFile::Append)
                .map_err(|e| e.to_string())?;
        self.prepare(i, &mut command);
        self.daemons.start(i, MEMBERS[i], "the daemon", &mut command).map_err(|e| e.to_string())?;
        self.members[i].daemon_restart = None;
        Ok(())
    }

    pub fn signal_daemon(&self, i: usize, signal: Signal) {
        self.daemons.signal(i, signal);
    }

    /// Member `i`'s daemon process, while the lab runs one.
    pub fn daemon_pid(&self, i: usize) -> Option<i32> {
        self.daemons.pid(i)
    }

    /// Member `i`'s node process (the sentry in key-holding mode), while the lab runs one.
    pub fn node_pid(&self, i: usize) -> Option<i32> {
        self.nodes.pid(i)
    }

    /// The keeper of the first validator's node member `i`'s daemon runs now, found in `/proc`
    /// (with several validators, each has a keeper: `v1`'s is the one whose spec names its
    /// ledger).
    pub fn keeper(&self, i: usize) -> Option<Proc> {
        let daemon = self.daemon_pid(i)?;
        if self.validators.len() == 1 {
            return procs::keeper_of(daemon);
        }
        let ledger = self.ledger.display().to_string();
        procs::all().into_iter().find(|p| {
            p.ppid == daemon
                && p.session == p.pid
                && p.live()
                && p.cmdline.get(1).is_some_and(|a| a == "keeper")
                && p.mentions(&ledger)
        })
    }

    /// Member `i`'s running validators (key-holding mode), found in `/proc` by their command
    /// line; normally none or one.
    pub fn validators(&self, i: usize) -> Vec<Proc> {
        procs::validators(&self.ledger.display().to_string(), MEMBERS[i])
    }

    pub fn kill_daemon(&mut self, i: usize) {
        self.daemons.kill(i);
    }

    /// Kills member `i`'s node with SIGKILL: the sentry, and in key-holding mode its validator
    /// too (a node that dies stops signing; the death watch records when).
    pub fn kill_node(&mut self, i: usize) {
        self.nodes.kill(i);
        for v in self.validators(i) {
            let _ = kill(Pid::from_raw(v.pid), Signal::SIGKILL);
        }
    }

    /// A planned switchover, as an operator makes it: `failoverctl promote <target>` through
    /// member `via`'s control socket. Returns what failoverctl printed.
    pub fn promote(&self, via: usize, target: usize) -> Result<String, String> {
        self.promote_validator(via, self.header(), target)
    }

    /// [`Lab::promote`] of `validator` (`failoverctl --validator ID`; `None`: the only one).
    fn promote_validator(&self, via: usize, validator: Option<&str>, target: usize) -> Result<String, String> {
        let ctl = self.exe.with_file_name("failoverctl");
        let out = std::process::Command::new(&ctl)
            .arg("--socket")
            .arg(&self.members[via].socket)
            .args(validator.map(|v| ["--validator", v]).iter().flatten())
            .args(["--timeout", "10s", "promote", MEMBERS[target]])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}; build it with cargo build --bin failoverctl", ctl.display()))?;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            Ok(said)
        } else {
            Err(format!(
                "failoverctl promote {} refused ({}): {said} {}",
                MEMBERS[target],
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Moves every bystander signed on `first_active` (the producer of `v1`) to the other
    /// producer by a planned switchover through the witness, so that the validators' actives
    /// differ whatever the race for the free leases at start gave: a fault aimed at `v1`'s active
    /// then finds the bystanders' standbys on that member, not their actives. Returns what did
    /// not go so, as notes; nothing depends on it.
    pub fn place_bystanders(&mut self, first_active: usize, interrupted: &dyn Fn() -> bool) -> Vec<String> {
        let other = (first_active + 1) % PRODUCERS;
        let mut notes = Vec::new();
        self.wait_bystanders(PLACE_LIMIT, interrupted);
        for (k, v) in self.validators.iter().enumerate().skip(1) {
            if self.bystander_signing(k) != [first_active] {
                continue;
            }
            if let Err(e) = self.promote_validator(MEMBERS.len() - 1, Some(&v.id), other) {
                notes.push(format!("{} stayed on {}: {e}", v.id, MEMBERS[first_active]));
                continue;
            }
            let end = Instant::now() + PLACE_LIMIT;
            while self.bystander_signing(k) != [other] && Instant::now() < end && !interrupted() {
                std::thread::sleep(Duration::from_millis(25));
            }
            if self.bystander_signing(k) != [other] {
                notes.push(format!(
                    "{} was promoted to {} but did not sign there within {PLACE_LIMIT:?}",
                    v.id, MEMBERS[other]
                ));
            }
        }
        notes
    }

    /// SIGTERM and wait for the daemon to release and exit (SIGKILL after `grace`).
    pub fn stop_daemon(&mut self, i: usize, grace: Duration) {
        self.daemons.stop(i, grace);
    }

    /// Notices daemons and nodes that exited without being told to, records why, and restarts
    /// them a second later, as systemd's `Restart=on-failure` with `RestartSec=1` would. A delay
    /// proxy that exited is a broken network, not a member's fault: it is recorded as a crash and
    /// restarted at once.
    pub fn supervise(&mut self) {
        let exited = self.proxies.as_mut().map(Proxies::exited).unwrap_or_default();
        for (link, status) in exited {
            self.exits.push(Exit {
                member: MEMBERS[link.from],
                what: "delay proxy".into(),
                status: status.to_string(),
                crash: true,
            });
            if let Err(e) = self.start_proxy(&link) {
                eprintln!("chaos: {e}");
            }
        }
        let now = Instant::now();
        for i in 0..self.members.len() {
            let name = self.members[i].name;
            for what in ["daemon", "node"] {
                let (processes, restart_at) = match what {
                    "daemon" => (&mut self.daemons, &mut self.members[i].daemon_restart),
                    _ => (&mut self.nodes, &mut self.members[i].node_restart),
                };
                if processes.started(i) {
                    let Some(status) = processes.exited(i) else { continue };
                    *restart_at = Some(now + RESTART_DELAY);
                    let crash = crash(status);
                    self.exits.push(Exit { member: name, what: what.into(), status: status.to_string(), crash });
                    continue;
                }
                if restart_at.is_none_or(|at| now < at) {
                    continue;
                }
                *restart_at = None;
                let restarted = if what == "daemon" { self.start_daemon(i) } else { self.start_node(i) };
                if let Err(e) = restarted {
                    eprintln!("chaos: {e}");
                }
            }
        }
        self.supervise_bystanders(now);
    }

    /// [`Lab::supervise`] for the bystanders' nodes: each that exited is recorded as `node of
    /// <id>` and restarted a second later.
    fn supervise_bystanders(&mut self, now: Instant) {
        for k in 1..self.validators.len() {
            for (i, member) in MEMBERS.iter().enumerate().take(PRODUCERS) {
                let id = &self.validators[k].id;
                let b = &mut self.bystanders[k - 1];
                if b.nodes.started(i) {
                    let Some(status) = b.nodes.exited(i) else { continue };
                    b.node_restart[i] = Some(now + RESTART_DELAY);
                    self.exits.push(Exit {
                        member,
                        what: format!("node of {id}"),
                        status: status.to_string(),
                        crash: crash(status),
                    });
                    continue;
                }
                if b.node_restart[i].is_none_or(|at| now < at) {
                    continue;
                }
                b.node_restart[i] = None;
                if let Err(e) = self.start_bystander_node(i, k) {
                    eprintln!("chaos: {e}");
                }
            }
        }
    }

    /// Member `i`'s node state (of the first validator), asked from inside its namespace.
    pub fn sim_state(&self, i: usize) -> Option<StateReport> {
        self.node_state(i, 0)
    }

    /// Member `i`'s node state of validator `k`, asked from inside its namespace.
    fn node_state(&self, i: usize, k: usize) -> Option<StateReport> {
        let body = self.http(i, self.net.validator_node_addr(i, k), ("GET", "/sim/state", ""))?;
        serde_json::from_str(&body).ok()
    }

    /// `method path` with `body` to `addr` inside member `i`'s namespace; the answer's body.
    fn http(&self, i: usize, addr: std::net::SocketAddr, (method, path, body): (&str, &str, &str)) -> Option<String> {
        let s = self.net.connect(i, addr).ok()?;
        failover::http::blocking_exchange(
            s,
            &addr.to_string(),
            (method, path, body),
            Duration::from_millis(500),
            256 * 1024,
        )
    }

    pub fn signer_mode(&self) -> bool {
        self.options.signer
    }

    /// The producers whose nodes sign now. Key-holding mode: those the ledger shows signing one
    /// of the last three heights (a validator has no switch to ask). Signer mode: those whose
    /// remote signer signed one of the last three heights their node saw.
    pub fn signing(&self) -> Vec<usize> {
        if !self.options.signer {
            let height = SimChain::new(self.options.timings.block).height_at(MonoTime::now());
            let mut tail = self.signed.lock().unwrap_or_else(|p| p.into_inner());
            tail.refresh();
            return (0..PRODUCERS)
                .filter(|&i| tail.last_height(MEMBERS[i]).is_some_and(|h| height.saturating_sub(h) <= 2))
                .collect();
        }
        (0..PRODUCERS)
            .filter(|&i| {
                self.sim_state(i).is_some_and(|s| s.state.last_signed.is_some_and(|h| s.height.saturating_sub(h) <= 2))
            })
            .collect()
    }

    /// The producers that signed one of the last three heights of bystander `k` (`k` ≥ 1), read
    /// from its ledger in either mode.
    pub fn bystander_signing(&self, k: usize) -> Vec<usize> {
        let height = SimChain::new(self.options.timings.block).height_at(MonoTime::now());
        let mut tail = self.bystanders[k - 1].signed.lock().unwrap_or_else(|p| p.into_inner());
        tail.refresh();
        (0..PRODUCERS)
            .filter(|&i| tail.last_height(MEMBERS[i]).is_some_and(|h| height.saturating_sub(h) <= 2))
            .collect()
    }

    /// Waits up to `limit` until every bystander is signed by some producer, restarting crashed
    /// processes meanwhile ([`Lab::supervise`], as a scenario's pauses do); whether each was
    /// (`v2` first) when the wait ended.
    pub fn wait_bystanders(&mut self, limit: Duration, interrupted: &dyn Fn() -> bool) -> Vec<bool> {
        let end = Instant::now() + limit;
        loop {
            self.supervise();
            let signed: Vec<bool> = (1..self.validators.len()).map(|k| !self.bystander_signing(k).is_empty()).collect();
            if signed.iter().all(|s| *s) || Instant::now() >= end || interrupted() {
                return signed;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for exactly one signing producer.
    pub fn wait_active(&self, limit: Duration, interrupted: &dyn Fn() -> bool) -> Option<usize> {
        let end = Instant::now() + limit;
        while Instant::now() < end && !interrupted() {
            if let [one] = self.signing()[..] {
                return Some(one);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    pub fn sockets(&self) -> Vec<PathBuf> {
        self.members.iter().map(|m| m.socket.clone()).collect()
    }

    /// What control calls about the first validator name: nothing with one validator (as every
    /// lab before issue 22), `v1` with several (a member serving several refuses a call that
    /// names none).
    pub fn header(&self) -> Option<&str> {
        (self.validators.len() > 1).then(|| self.validators[0].id.as_str())
    }

    /// What the observer names in its calls about each validator, `v1` first: `[None]` with one
    /// validator.
    pub fn headers(&self) -> Vec<Option<String>> {
        match self.validators.len() {
            1 => vec![None],
            _ => self.validators.iter().map(|v| Some(v.id.clone())).collect(),
        }
    }

    /// Member `i`'s control API `Status` of the first validator, or `None` when it does not
    /// answer within a second.
    pub fn status(&self, i: usize) -> Option<StatusReply> {
        self.runtime.block_on(control::status(&self.members[i].socket, self.header(), Duration::from_secs(1)))
    }

    fn wait_answers(&self, i: usize, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.status(i).is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits until member `i`'s control socket answers again after a restart.
    pub fn wait_back(&self, i: usize, limit: Duration) -> bool {
        self.wait_answers(i, limit)
    }

    /// Member `i`'s view of every member (its control API `Members`), or `None` when it does not
    /// answer within a second.
    pub fn members_view(&self, i: usize) -> Option<MembersReply> {
        self.runtime.block_on(control::members(&self.members[i].socket, self.header(), Duration::from_secs(1)))
    }

    /// Member `i`'s `failoverd_peer_refusals_total` counters by reason, read from its metrics
    /// endpoint (from inside its namespace); `None` when the endpoint does not answer.
    pub fn peer_refusals(&self, i: usize) -> Option<BTreeMap<String, u64>> {
        let addr = self.net.metrics_addr(i);
        let s = self.net.connect(i, addr).ok()?;
        let body = failover::http::blocking_exchange(
            s,
            &addr.to_string(),
            ("GET", "/metrics", ""),
            Duration::from_secs(1),
            METRICS_LIMIT,
        )?;
        Some(peer_refusal_counts(&body))
    }

    /// The lab's processes that are not running now: each member's daemon and each producer's
    /// nodes, named as `daemon of a` or `node of a for v2` (a bystander's).
    pub fn not_running(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            if !self.daemons.running(i) {
                out.push(format!("daemon of {}", m.name));
            }
            if m.producer && !self.nodes.running(i) {
                out.push(format!("node of {}", m.name));
            }
            for (b, v) in self.bystanders.iter_mut().zip(&self.validators[1..]) {
                if m.producer && !b.nodes.running(i) {
                    out.push(format!("node of {} for {}", m.name, v.id));
                }
            }
        }
        out
    }

    /// Keeps the lab's directory when it is dropped (evidence of a failing run).
    pub fn keep_dir(&mut self) {
        self.keep = true;
    }

    pub fn net(&self) -> &Net {
        &self.net
    }

    pub fn net_mut(&mut self) -> &mut Net {
        &mut self.net
    }

    /// Fills member `i`'s small disk to the last byte.
    pub fn fill_disk(&self, i: usize) -> Result<u64, String> {
        let path = self.members[i].data_dir.join("chaos-filler");
        let mut f = std::fs::File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => return Err(format!("cannot fill {}: {e}", path.display())),
            }
        }
        let _ = f.sync_all();
        Ok(written)
    }

    pub fn free_disk(&self, i: usize) {
        let _ = std::fs::remove_file(self.members[i].data_dir.join("chaos-filler"));
    }

    /// Moves member `i`'s wall clock (daemon and node) by `offset`, in libfaketime's syntax
    /// ("+3600", "-86400"); the monotonic clock is left alone.
    pub fn set_clock(&self, i: usize, offset: &str) -> Result<(), String> {
        std::fs::write(&self.members[i].clock_file, format!("{offset}\n"))
            .map_err(|e| format!("cannot move the clock of member {}: {e}", MEMBERS[i]))
    }
}

/// Whether a lab process that exited with `status` crashed (a panic or a fatal signal: a bug),
/// rather than refused to go on (an error exit) or was killed by the lab.
fn crash(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.code() == Some(101)
        || status.signal().is_some_and(|s| s != Signal::SIGKILL as i32 && s != Signal::SIGTERM as i32)
}

/// The `failoverd_peer_refusals_total{reason="…"}` samples of a Prometheus text exposition,
/// by reason.
fn peer_refusal_counts(exposition: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("failoverd_peer_refusals_total{") else { continue };
        let Some((labels, value)) = rest.split_once('}') else { continue };
        let reason = labels.split(',').find_map(|l| l.trim().strip_prefix("reason=\"")?.strip_suffix('"'));
        if let (Some(reason), Ok(value)) = (reason, value.trim().parse::<f64>()) {
            counts.insert(reason.to_string(), value as u64);
        }
    }
    counts
}

/// What one ledger says each member signed last, read a little at a time: only what was
/// appended since the last look is parsed.
struct LedgerTail {
    path: PathBuf,
    offset: u64,
    /// The bytes after the last newline: a record still being written.
    partial: Vec<u8>,
    last: BTreeMap<String, u64>,
}

impl LedgerTail {
    fn new(path: PathBuf) -> LedgerTail {
        LedgerTail { path, offset: 0, partial: Vec::new(), last: BTreeMap::new() }
    }

    fn refresh(&mut self) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else { return };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = std::mem::take(&mut self.partial);
        let before = bytes.len();
        if file.read_to_end(&mut bytes).is_err() {
            self.partial = bytes;
            return;
        }
        self.offset += (bytes.len() - before) as u64;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |n| n + 1);
        self.partial = bytes.split_off(complete);
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            // A line that does not parse is the verdict's business (it reads the whole ledger).
            if let Ok(r) = serde_json::from_slice::<SignatureRecord>(line) {
                let last = self.last.entry(r.member.as_str().to_string()).or_insert(r.height);
                *last = (*last).max(r.height);
            }
        }
    }

    fn last_height(&self, member: &str) -> Option<u64> {
        self.last.get(member).copied()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Keepers and validators are not the lab's children: they go by the command lines that
        // name the lab's directory, before and after the daemons (a keeper kills its node when
        // its daemon dies, unless it was stopped or killed itself).
        lab::kill_strays(&self.dir);
        self.daemons.kill_all();
        self.nodes.kill_all();
        for b in &mut self.bystanders {
            b.nodes.kill_all();
        }
        if let Some(proxies) = self.proxies.as_mut() {
            proxies.kill_all();
        }
        lab::kill_strays(&self.dir);
        if let Some(watch) = self.death_watch.take() {
            watch.stop();
        }
        for mount in self.mounts.drain(..) {
            if let Err(e) = sh("umount", &["-l", &mount.to_string_lossy()]) {
                eprintln!("chaos: {e}");
            }
        }
        if let Net::Namespaces(ns) = &mut self.net {
            ns.remove();
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_refusals_are_read_by_reason_and_other_metrics_are_ignored() {
        let exposition = "# HELP failoverd_peer_refusals Peer requests refused.\n\
             # TYPE failoverd_peer_refusals counter\n\
             failoverd_peer_refusals_total{reason=\"not_a_member\"} 30\n\
             failoverd_peer_refusals_total{reason=\"snapshot\"} 90\n\
             failoverd_peer_refusals_created{reason=\"snapshot\"} 1.7e9\n\
             failoverd_raft_term 3\n";
        let counts = peer_refusal_counts(exposition);
        assert_eq!(counts, BTreeMap::from([("not_a_member".to_string(), 30), ("snapshot".to_string(), 90)]));
    }
}
