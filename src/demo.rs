//! `failoverd demo`: a whole cluster on one machine, with no root and nothing to install.
//!
//! It starts N members as real `failoverd` processes on loopback (N−1 producers, one witness),
//! runs a fault schedule — kill the active's daemon, stall the active's node, a planned handover —
//! prints a live timeline, and ends with a summary judged from the shared signature ledger and
//! the validators' activation logs. Exit status 1 on any double sign. It is a showcase and a
//! smoke test; the chaos suite is where invariants are proven at length.
//!
//! In key-holding mode each producer runs a simulated sentry inside its daemon (`[chain.sim]`,
//! the node it probes and the one a stall freezes) and a real-shaped validator its daemon starts
//! through `cometbft-filepv` (`failoverd sim-node --sign-while-running`), which signs from its
//! start until its process dies. A death watch records when each validator was seen dead, so the
//! S1 overlaps in the summary come from outside every daemon. In signer mode the simulated node
//! inside each daemon asks its member's remote signer for every signature.
//!
//! The cluster is built by the shared lab ([`crate::sim::lab`]); the timeline comes from each
//! member's control API (its event stream and status), never from its log text. The members'
//! logs are written to the work dir for reading afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;

use crate::domain::MonoTime;
use crate::proto::v1::Event;
use crate::sim::death_watch::DeathWatch;
use crate::sim::lab::{self, LabError, Processes, Timings};
use crate::sim::{activation, checker, ledger};

const NAMES: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];
/// How long a member's control socket may take to answer the timeline.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a member may take to release and exit at the end.
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// kill -9 the active member's daemon (its sentry and its validator die with it).
    Kill,
    /// Freeze the active member's node: its height stops moving.
    Stall,
    /// A planned switchover to a healthy standby through the control API.
    Handover,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Fault, String> {
        match s {
            "kill" => Ok(Fault::Kill),
            "stall" => Ok(Fault::Stall),
            "handover" => Ok(Fault::Handover),
            other => Err(format!("unknown fault \"{other}\": expected kill, stall or handover")),
        }
    }
}

impl Fault {
    /// The name the timeline and the summary show. A handover is planned, not a fault.
    pub fn label(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Stall => "stall",
            Fault::Handover => "planned handover",
        }
    }
}

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub members: usize,
    pub duration: Duration,
    pub faults: Vec<Fault>,
    pub json: bool,
    /// Signer mode: the producers are `cometbft-signer`, and each simulated node asks its
    /// member's remote signer for every signature.
    pub signer: bool,
    /// Keep the work dir (configs, each member's log, the ledger) after a clean run.
    pub keep: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct FaultResult {
    pub fault: Fault,
    pub at_s: f64,
    pub active_before: Option<String>,
    pub active_after: Option<String>,
    /// From the fault to the first height signed by another member.
    pub failover_s: Option<f64>,
    pub missed_heights: Option<u64>,
    pub note: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub members: usize,
    pub duration_s: f64,
    /// The lease the members ran with (shorter than the default: see `timings_line`).
    pub lease_ttl_s: f64,
    pub signatures: usize,
    pub failovers: usize,
    pub faults: Vec<FaultResult>,
    pub missed_heights_total: u64,
    pub double_signs: usize,
    /// Key-holding mode: times two validators could sign at once, from the activation logs (S1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s1_overlaps: Option<usize>,
}

struct Member {
    name: String,
    config: PathBuf,
    /// Its daemon's log (JSON lines), appended to across restarts.
    log: PathBuf,
    socket: PathBuf,
    /// The simulated node inside its daemon (a producer's).
    rpc: Option<String>,
    /// Key-holding mode: its validator's activation log (a producer's).
    activations: Option<PathBuf>,
    /// Counts its daemon's starts, so that its timeline follower knows a new process (whose
    /// events are numbered from 1 again) from a reconnection to the same one.
    starts: Arc<AtomicU64>,
}

/// Runs the demo; returns the process exit status.
pub fn run(options: &DemoOptions) -> u8 {
    match run_inner(options) {
        Ok(summary) => {
            if options.json {
                println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
            } else {
                print_summary(&summary);
            }
            u8::from(summary.double_signs > 0)
        }
        Err(e) => {
            eprintln!("error: demo failed: {e}");
            2
        }
    }
}

fn say(json: bool, line: String) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// The demo's work dir, ports, certificates, key and one config per member.
fn write_configs(dir: &Path, n: usize, signer: bool) -> Result<Vec<Member>, LabError> {
    let ports = |count| -> Result<Vec<u16>, LabError> {
        (0..count).map(|_| lab::unused_port().map_err(LabError::NoPort)).collect()
    };
    let (peer_ports, rpc_ports, privval_ports) = (ports(n)?, ports(n)?, ports(n)?);
    let key_file = dir.join("priv_validator_key.json");
    // A key from a known seed: the demo's validator protects nothing.
    crate::producer::privval::validator_key::ValidatorKey::write_for_seed(&key_file, [0xde; 32])
        .map_err(LabError::io("write the validator key", &key_file))?;
    let ledger = dir.join("ledger.jsonl");
    // The members talk over mutual TLS, as a real cluster does: a CA and one certificate per
    // member in the work dir, and one for an operator to try `failoverctl --address` with.
    let names = &NAMES[..n];
    let certificates =
        lab::certificates::write(&dir.join("tls"), "demo", names, &["demo"], Duration::from_secs(86_400))?;
    let addresses: Vec<String> = peer_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let peers = lab::Peer::cluster(names, &addresses);
    let timings = Timings::demo();
    let exe = std::env::current_exe().map_err(LabError::io("find", Path::new("this program")))?;
    let mut members = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let producer = peers[i].producer;
        let rpc = producer.then(|| format!("http://127.0.0.1:{}", rpc_ports[i]));
        let activations = (producer && !signer).then(|| dir.join(format!("activations-{name}.jsonl")));
        let socket = dir.join(format!("{name}.sock"));
        let chain = rpc.as_ref().map(|rpc| lab::Chain {
            rpc: rpc.clone(),
            reference_rpcs: Vec::new(),
            // Signer mode: the node inside the daemon signs through the remote signer, into the
            // shared ledger. Key-holding: it is the sentry, which never signs.
            sim: Some(lab::SimChain {
                ledger: if signer { ledger.clone() } else { dir.join(format!("sentry-{name}.jsonl")) },
                privval_listen: signer.then(|| format!("127.0.0.1:{}", privval_ports[i])),
            }),
        });
        let producer = match (&rpc, &activations) {
            (Some(_), None) => Some(lab::Producer::Signer {
                key_file: key_file.clone(),
                node_id: crate::sim::privval_node::node_id().to_string(),
                node_address: format!("127.0.0.1:{}", privval_ports[i]),
            }),
            (Some(rpc), Some(log)) => Some(lab::Producer::Validator(lab::ValidatorCommand {
                exe: exe.clone(),
                kind: lab::ValidatorKind::FilePv { key_file: key_file.clone() },
                forking: false,
                sentry: rpc.clone(),
                home: dir.join(format!("home-{name}")),
                member: name.to_string(),
                ledger: ledger.clone(),
                activations: log.clone(),
                block: timings.block,
            })),
            _ => None,
        };
        let text = lab::MemberConfig {
            id: name,
            index: i,
            data_dir: &dir.join(name),
            peers: &peers,
            timings: &timings,
            store: &lab::Store::Raft,
            socket: &socket,
            metrics: lab::Metrics::Disabled,
            tls: certificates.members.get(i),
            chain,
            producer,
        }
        .render();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).map_err(LabError::io("write", &config))?;
        let log = dir.join(format!("{name}.log"));
        members.push(Member { name: name.to_string(), config, log, socket, rpc, activations, starts: Arc::default() });
    }
    Ok(members)
}

/// Starts member `i`'s daemon, logging JSON lines into its log.
fn spawn(members: &[Member], daemons: &mut Processes, i: usize) -> Result<(), LabError> {
    let m = &members[i];
    let exe = std::env::current_exe().map_err(LabError::io("find", Path::new("this program")))?;
    let mut program = Command::new(exe);
    program.args(["--log-format", "json"]);
    let mut command = lab::daemon_command(program, &m.config, &m.log, lab::LogFile::Append)?;
    command.env("RUST_LOG", "info");
    // Counted before the start: a follower that connects to the new process sees the new count.
    m.starts.fetch_add(1, Ordering::SeqCst);
    daemons.start(i, &m.name, "the daemon", &mut command)
}

/// Follows every member's event stream over its control socket, for as long as `runtime` runs,
/// and sends the timeline's lines to `lines`.
fn follow(runtime: &tokio::runtime::Runtime, members: &[Member], lines: &mpsc::Sender<String>) {
    for m in members {
        let (name, socket, starts, lines) = (m.name.clone(), m.socket.clone(), m.starts.clone(), lines.clone());
        runtime.spawn(async move {
            let mut seen = (0u64, 0u64);
            loop {
                let Ok(mut stream) = lab::control::follow_events(&socket, CONTROL_TIMEOUT).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                // Read after connecting: a restarted daemon is counted before it starts.
                let start = starts.load(Ordering::SeqCst);
                if seen.0 != start {
                    seen = (start, 0);
                }
                while let Ok(Some(event)) = stream.message().await {
                    // A reconnection to the same daemon replays its history: show each event once.
                    if event.seq <= seen.1 {
                        continue;
                    }
                    seen.1 = event.seq;
                    let status = lab::control::status(&socket, CONTROL_TIMEOUT).await;
                    if let Some(line) = timeline_line(&name, &event, status.as_ref())
                        && lines.send(line).is_err()
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
}

/// The member whose node signs now. Key-holding: whose validator process is alive (started and
/// not seen dead in its activation log, and not a zombie). Signer mode: whose remote signer
/// signed one of the last three heights.
fn active_member(members: &[Member], daemons: &Processes, signer: bool) -> Option<usize> {
    members.iter().enumerate().position(|(i, m)| match (&m.activations, signer) {
        (Some(log), false) => activation::started_and_not_dead(&activation::read(log).unwrap_or_default())
            .into_iter()
            .any(lab::process_alive),
        _ => {
            daemons.started(i)
                && m.rpc
                    .as_deref()
                    .and_then(lab::node::state)
                    .is_some_and(|s| signer && s.state.last_signed.is_some_and(|h| s.height.saturating_sub(h) <= 2))
        }
    })
}

/// One demo run in progress: its members, their daemons and the fault schedule's state.
struct Run<'a> {
    options: &'a DemoOptions,
    members: Vec<Member>,
    daemons: Processes,
    runtime: tokio::runtime::Runtime,
    start: MonoTime,
    schedule: Vec<(Duration, Fault)>,
    next_fault: usize,
    pending: Vec<(MonoTime, usize, Fault)>,
    restarts: Vec<(MonoTime, usize)>,
    unstall: Vec<(MonoTime, usize)>,
    results: Vec<FaultResult>,
}

impl Run<'_> {
    fn secs(&self, t: MonoTime) -> f64 {
        t.saturating_since(self.start).as_secs_f64()
    }

    /// Prints a timeline line stamped with the time since the start.
    fn say_now(&self, line: String) {
        say(self.options.json, format!("{:>7.1}s  {line}", self.secs(MonoTime::now())));
    }

    /// Injects the next scheduled fault when its time has come.
    fn inject_due(&mut self, active: Option<usize>) {
        let now = MonoTime::now();
        let Some(&(at, fault)) = self.schedule.get(self.next_fault) else { return };
        if now.saturating_since(self.start) < at {
            return;
        }
        self.next_fault += 1;
        let Some(a) = active else {
            self.results.push(FaultResult {
                fault,
                at_s: self.secs(now),
                active_before: None,
                active_after: None,
                failover_s: None,
                missed_heights: None,
                note: "skipped: no active member at that moment".into(),
            });
            return;
        };
        let name = self.members[a].name.clone();
        let what = match fault {
            Fault::Kill => {
                self.daemons.kill(a);
                self.restarts.push((now.saturating_add(Duration::from_secs(6)), a));
                format!("kill -9 the daemon of {name} (the active)")
            }
            Fault::Stall => {
                lab::node::control(self.members[a].rpc.as_deref().unwrap_or_default(), r#"{"stall": true}"#);
                self.unstall.push((now.saturating_add(Duration::from_secs(8)), a));
                format!("stall the node of {name} (the active)")
            }
            Fault::Handover => {
                let n = self.members.len();
                let target = (0..n - 1).find(|i| *i != a).map(|i| self.members[i].name.clone()).unwrap_or_default();
                let answer = self.promote(a, &target);
                format!("handover from {name} to {target} (promote {target}): {answer}")
            }
        };
        // Kills and stalls are faults; a handover is an operator's planned switchover.
        let kind = if fault == Fault::Handover { "PLANNED" } else { "FAULT" };
        say(self.options.json, format!("{:>7.1}s  {kind} {what}", self.secs(now)));
        self.pending.push((now, a, fault));
    }

    /// Restarts the killed daemons and runs the stalled nodes whose time has come.
    fn heal_due(&mut self) -> Result<(), String> {
        for (at, i) in std::mem::take(&mut self.restarts) {
            if MonoTime::now() < at {
                self.restarts.push((at, i));
                continue;
            }
            self.say_now(format!("restart the daemon of {}", self.members[i].name));
            spawn(&self.members, &mut self.daemons, i)
                .map_err(|e| format!("cannot restart {}: {e}", self.members[i].name))?;
        }
        for (at, i) in std::mem::take(&mut self.unstall) {
            if MonoTime::now() < at {
                self.unstall.push((at, i));
                continue;
            }
            lab::node::control(self.members[i].rpc.as_deref().unwrap_or_default(), r#"{"stall": false}"#);
            self.say_now(format!("the node of {} runs again", self.members[i].name));
        }
        Ok(())
    }

    /// A planned handover to `target` asked of member `via`: the member's answer.
    fn promote(&self, via: usize, target: &str) -> String {
        let socket = &self.members[via].socket;
        match self.runtime.block_on(lab::control::promote(socket, target, Duration::from_secs(4))) {
            Ok(message) => message,
            Err(lab::control::ControlError::Unreachable { source, .. }) => {
                format!("cannot reach the control socket: {source}")
            }
            Err(e) => e.to_string(),
        }
    }
}

fn run_inner(options: &DemoOptions) -> Result<Summary, String> {
    let n = options.members;
    if !(3..=NAMES.len()).contains(&n) {
        return Err(format!("--members must be between 3 and {}", NAMES.len()));
    }
    let dir = std::env::temp_dir().join(format!("failoverd-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let members = write_configs(&dir, n, options.signer).map_err(|e| format!("cannot write configs: {e}"))?;
    let logs: Vec<PathBuf> = members.iter().filter_map(|m| m.activations.clone()).collect();
    let death_watch = DeathWatch::start(&logs).map_err(|e| format!("cannot start the death watch: {e}"))?;
    announce(options, &dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let mut daemons = Processes::new(n);
    for i in 0..n {
        spawn(&members, &mut daemons, i).map_err(|e| format!("cannot start member {}: {e}", members[i].name))?;
    }
    let (tx, rx) = mpsc::channel();
    follow(&runtime, &members, &tx);
    let nf = options.faults.len().max(1) as u32;
    let schedule =
        options.faults.iter().enumerate().map(|(i, f)| (options.duration * (i as u32 + 1) / (nf + 1), *f)).collect();
    let mut run = Run {
        options,
        members,
        daemons,
        runtime,
        start: MonoTime::now(),
        schedule,
        next_fault: 0,
        pending: Vec::new(),
        restarts: Vec::new(),
        unstall: Vec::new(),
        results: Vec::new(),
    };
    let mut last_active: Option<usize> = None;
    while MonoTime::now().saturating_since(run.start) < options.duration {
        while let Ok(line) = rx.try_recv() {
            run.say_now(line);
        }
        let active = active_member(&run.members, &run.daemons, options.signer);
        if active != last_active {
            if let Some(a) = active {
                run.say_now(format!("{}  is signing", run.members[a].name));
            }
            last_active = active;
        }
        run.inject_due(active);
        run.heal_due()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..n {
        run.daemons.stop(i, STOP_GRACE);
    }
    // The validators die with their daemons; the watch records each death it sees.
    lab::kill_strays(&dir);
    std::thread::sleep(crate::sim::death_watch::TICK * 5);
    death_watch.stop();
    let summary = judge(&run, &dir, &logs)?;
    if options.keep || summary.double_signs > 0 || std::env::var_os("FAILOVERD_DEMO_KEEP").is_some() {
        let logs: Vec<String> = run.members.iter().map(|m| format!("{}.log", m.name)).collect();
        say(
            options.json,
            format!(
                "kept the work dir {}: each member's config and log ({}), ledger.jsonl, tls/",
                dir.display(),
                logs.join(", ")
            ),
        );
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(summary)
}

/// The demo's first two lines: what runs, and where its files are.
fn announce(options: &DemoOptions, dir: &Path) {
    say(
        options.json,
        format!(
            "failoverd demo: {} producers{} + 1 witness on 127.0.0.1, embedded raft, simulated nodes ({} ms blocks), {} s",
            options.members - 1,
            if options.signer { " (remote signers, cometbft-signer)" } else { "" },
            Timings::demo().block.as_millis(),
            options.duration.as_secs()
        ),
    );
    say(options.json, format!("  {}", timings_line()));
    say(
        options.json,
        format!(
            "  work dir {} (configs, each member's log, ledger.jsonl){}",
            dir.display(),
            if options.keep { "; kept at the end (--keep)" } else { "; removed at the end unless --keep" }
        ),
    );
}

/// What the members run with, against failoverd's defaults: the demo's lease is shorter, so its
/// failover times are not the defaults' (docs/design.md §9; `chaos/run bench` measures those).
fn timings_line() -> String {
    let (t, defaults) = (Timings::demo(), crate::config::CoordinatorConfig::default());
    let lease = |ttl: Duration, renew: Duration| format!("lease_ttl {}, renewed every {}", secs(ttl), secs(renew));
    format!(
        "lease: {} (raft tick {} ms, election {} ticks); failoverd's defaults are {}, so a failover here is \
         quicker than at the defaults",
        lease(t.lease_ttl, t.renew_interval),
        t.tick.as_millis(),
        t.election_ticks,
        lease(defaults.lease_ttl, defaults.renew_interval),
    )
}

/// "2 s" or "500 ms".
fn secs(d: Duration) -> String {
    match d.subsec_millis() {
        0 => format!("{} s", d.as_secs()),
        _ => format!("{} ms", d.as_millis()),
    }
}

/// The summary, judged from the ledger and the activation logs alone.
fn judge(run: &Run, dir: &Path, activation_logs: &[PathBuf]) -> Result<Summary, String> {
    let s1_overlaps = (!run.options.signer).then(|| {
        let records: Vec<_> = activation_logs.iter().flat_map(|l| activation::read(l).unwrap_or_default()).collect();
        activation::overlaps(&activation::windows(&records, MonoTime::now().as_nanos()), 0).len()
    });
    let records = ledger::read(&dir.join("ledger.jsonl")).map_err(|e| e.to_string())?;
    let report = checker::check(&records);
    let mut results = run.results.clone();
    for &(at, before, fault) in &run.pending {
        let old = &run.members[before].name;
        let first_new =
            records.iter().filter(|r| r.member.as_str() != old && r.mono_ns > at.as_nanos()).min_by_key(|r| r.mono_ns);
        // The old active may sign on after the fault (a planned handover waits for a fresh block).
        let until = first_new.map_or(u64::MAX, |r| r.mono_ns);
        let last_old = records.iter().filter(|r| r.member.as_str() == old && r.mono_ns < until).map(|r| r.height).max();
        results.push(FaultResult {
            fault,
            at_s: run.secs(at),
            active_before: Some(old.clone()),
            active_after: first_new.map(|r| r.member.to_string()),
            failover_s: first_new.map(|r| MonoTime::from_nanos(r.mono_ns).saturating_since(at).as_secs_f64()),
            missed_heights: match (last_old, first_new) {
                (Some(o), Some(f)) => Some(f.height.saturating_sub(o + 1)),
                _ => None,
            },
            note: if first_new.is_some() { String::new() } else { "no other member signed afterwards".into() },
        });
    }
    results.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    Ok(Summary {
        members: run.members.len(),
        duration_s: run.options.duration.as_secs_f64(),
        lease_ttl_s: Timings::demo().lease_ttl.as_secs_f64(),
        signatures: records.len(),
        failovers: results.iter().filter(|r| r.active_after.is_some()).count(),
        faults: results,
        missed_heights_total: report.missed_heights(),
        double_signs: report.double_signs.len(),
        s1_overlaps,
    })
}

/// The timeline's line for one event of member `name`, if it shows one: role changes (each
/// step-down with its reason, with the member's node height from its status), guard results
/// (a pass with the key's watermark), fences and refused signatures.
fn timeline_line(name: &str, event: &Event, status: Option<&crate::proto::v1::StatusReply>) -> Option<String> {
    let epoch = event.epoch.map_or(String::new(), |e| format!("  epoch {e}"));
    match event.kind.as_str() {
        "role" => {
            // The member's sentence is "from → to: cause" (role::describe_change); a step-down
            // shows its cause.
            let (change, cause) =
                event.message.split_once(": ").map_or((event.message.as_str(), None), |(c, w)| (c, Some(w)));
            let Some((from, to)) = change.split_once(" → ") else {
                return Some(format!("{name}  {}{epoch}", event.message));
            };
            let height = status.and_then(|s| s.height).map_or(String::new(), |h| format!("  height {h}"));
            let why = match (steps_down(from, to), cause) {
                (true, Some(cause)) => format!("  ({cause})"),
                (true, None) => "  (the member gave no reason)".to_string(),
                (false, _) => String::new(),
            };
            Some(format!("{name}  {from} -> {to}{epoch}{height}{why}"))
        }
        "guard" => {
            let watermark = status
                .and_then(|s| s.watermark.as_ref())
                .and_then(|w| w.hrs.as_ref())
                .filter(|_| !event.message.starts_with("guard failed"))
                .map_or(String::new(), |hrs| format!("; the key's watermark is at height {}", hrs.height));
            Some(format!("{name}  guard{epoch}: {}{watermark}", event.message))
        }
        "fence" | "refusal" => Some(format!("{name}  {}", event.message)),
        _ => None,
    }
}

/// A role change that gives up (or starts giving up) a holding of the lease: the member's
/// `reason` says why.
fn steps_down(from: &str, to: &str) -> bool {
    matches!(from, "promoting" | "active" | "demoting" | "fenced")
        && matches!(to, "demoting" | "fenced" | "standby" | "ineligible")
}

fn print_summary(s: &Summary) {
    println!();
    println!(
        "summary ({} members, {:.0} s, {} signatures; failover times at lease_ttl {} s, not the default {} s)",
        s.members,
        s.duration_s,
        s.signatures,
        s.lease_ttl_s,
        crate::config::CoordinatorConfig::default().lease_ttl.as_secs_f64()
    );
    println!("  {:<16} {:>7}  {:<6} {:<6} {:>10} {:>7}  note", "event", "at", "from", "to", "failover", "missed");
    for f in &s.faults {
        println!(
            "  {:<16} {:>6.1}s  {:<6} {:<6} {:>10} {:>7}  {}",
            f.fault.label(),
            f.at_s,
            f.active_before.as_deref().unwrap_or("-"),
            f.active_after.as_deref().unwrap_or("-"),
            f.failover_s.map_or("-".into(), |s| format!("{s:.2}s")),
            f.missed_heights.map_or("-".into(), |m| m.to_string()),
            f.note
        );
    }
    println!("  failovers: {}", s.failovers);
    println!("  missed heights (all gaps): {}", s.missed_heights_total);
    println!("  double_signs: {}", s.double_signs);
    if let Some(n) = s.s1_overlaps {
        println!("  validators able to sign at once (S1 overlaps): {n}");
    }
}
