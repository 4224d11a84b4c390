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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;

use crate::domain::{MemberId, MonoTime};
use crate::sim::activation;
use crate::sim::checker;
use crate::sim::death_watch::DeathWatch;
use crate::sim::ledger;
const NAMES: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];
const BLOCK: Duration = Duration::from_millis(500);

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
    child: Option<Child>,
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

/// A free port on 127.0.0.1 below Linux's ephemeral range (32768+): a port picked by binding
/// port 0 could be taken by some process's outgoing connection before the member binds it.
pub fn unused_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // One seed per process, and a step (7919, prime) coprime with the range: a process never
    // hands out the same port twice within 12 000 calls, even to two labs that picked their
    // ports before either bound them (a time-based seed per call did, and a simulated node
    // then lost its port to the other lab's member).
    let seed = *SEED.get_or_init(|| (MonoTime::now().as_nanos() as u32) ^ std::process::id().rotate_left(16));
    for _ in 0..2000 {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + ((step * 7919 + seed % 12_000) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free port between 20000 and 32000"))
}

fn free_port() -> std::io::Result<u16> {
    unused_port()
}

fn write_configs(dir: &Path, n: usize, signer: bool) -> std::io::Result<Vec<Member>> {
    let peer_ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_, _>>()?;
    let rpc_ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_, _>>()?;
    let privval_ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_, _>>()?;
    let key_file = dir.join("priv_validator_key.json");
    // A key from a known seed: the demo's validator protects nothing.
    crate::producer::privval::validator_key::ValidatorKey::write_for_seed(&key_file, [0xde; 32])?;
    let ledger = dir.join("ledger.jsonl");
    // The members talk over mutual TLS, as a real cluster does: a CA and one certificate per
    // member in the work dir, and one for an operator to try `failoverctl --address` with.
    let names: Vec<MemberId> = NAMES[..n].iter().filter_map(|m| MemberId::new(*m).ok()).collect();
    let operator = crate::tls::OperatorName::new("demo").map_err(std::io::Error::other)?;
    let certificates =
        crate::tls::write_cluster_files(&dir.join("tls"), "demo", &names, &[operator], Duration::from_secs(86_400))
            .map_err(std::io::Error::other)?;
    let mut members = Vec::new();
    for i in 0..n {
        let name = NAMES[i];
        let witness = i == n - 1;
        let mut text = format!("member = \"{name}\"\ndata_dir = \"{}\"\n", dir.join(name).display());
        for (j, port) in peer_ports.iter().enumerate() {
            let kind = if j == n - 1 { "witness" } else { "producer" };
            let priority = if j == 0 { 200 } else { 100 };
            text.push_str(&format!(
                "[[members]]\nid = \"{}\"\npeer_address = \"127.0.0.1:{port}\"\nkind = \"{kind}\"\npriority = {priority}\n",
                NAMES[j]
            ));
        }
        text.push_str(
            "[coordinator]\nlease_ttl = \"2s\"\nrenew_interval = \"500ms\"\nsafety_margin = \"300ms\"\ncall_timeout = \"800ms\"\n\
             [failover]\ncooldown = \"5s\"\npriority_delay = \"1s\"\n",
        );
        let socket = dir.join(format!("{name}.sock"));
        text.push_str(&format!("[api]\nsocket = \"{}\"\n[metrics]\nenabled = false\n", socket.display()));
        if let Some(tls) = names.get(i).and_then(|m| certificates.members.get(m)) {
            text.push_str(&format!(
                "[tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                tls.ca_file.display(),
                tls.cert_file.display(),
                tls.key_file.display()
            ));
        }
        let rpc = (!witness).then(|| format!("http://127.0.0.1:{}", rpc_ports[i]));
        let activations = (!witness && !signer).then(|| dir.join(format!("activations-{name}.jsonl")));
        if let Some(rpc) = &rpc {
            // Signer mode: the node inside the daemon signs through the remote signer, into the
            // shared ledger. Key-holding: it is the sentry, which never signs.
            let node_ledger = if signer { ledger.clone() } else { dir.join(format!("sentry-{name}.jsonl")) };
            text.push_str(&format!(
                "[chain]\nkind = \"sim\"\nrpc = \"{rpc}\"\nprobe_interval = \"500ms\"\nprobe_timeout = \"400ms\"\nstall_after = \"2s\"\n\
                 [chain.sim]\nledger = \"{}\"\nblock_interval = \"{}ms\"\n",
                node_ledger.display(),
                BLOCK.as_millis()
            ));
            if signer {
                let pv = privval_ports[i];
                text.push_str(&format!(
                    "privval_listen = \"127.0.0.1:{pv}\"\n[producer]\nkind = \"cometbft-signer\"\nkey_file = \"{}\"\nchain_id = \"sim\"\npriv_validator_laddr = \"tcp://{node_id}@127.0.0.1:{pv}\"\nfence_timeout = \"1s\"\n",
                    key_file.display(),
                    node_id = crate::sim::privval_node::node_id(),
                ));
            }
            if let Some(log) = &activations {
                text.push_str(&validator_producer(dir, name, rpc, log)?);
            }
        }
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text)?;
        let log = dir.join(format!("{name}.log"));
        members.push(Member { name: name.to_string(), config, log, socket, rpc, activations, child: None });
    }
    Ok(members)
}

/// Key-holding mode: the `[producer]` that has member `name`'s daemon install the key and the
/// signing state in the validator's home and start `failoverd sim-node --sign-while-running`
/// following the sentry at `rpc`.
fn validator_producer(dir: &Path, name: &str, rpc: &str, activations: &Path) -> std::io::Result<String> {
    let exe = std::env::current_exe()?;
    let home = dir.join(format!("home-{name}"));
    let argv: Vec<String> = vec![
        exe.display().to_string(),
        "sim-node".into(),
        "--sign-while-running".into(),
        "--follow".into(),
        rpc.into(),
        "--home".into(),
        home.display().to_string(),
        "--member".into(),
        name.into(),
        "--ledger".into(),
        dir.join("ledger.jsonl").display().to_string(),
        "--activations".into(),
        activations.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--block-interval".into(),
        format!("{}ms", BLOCK.as_millis()),
    ];
    let command = toml::Value::Array(argv.into_iter().map(toml::Value::String).collect());
    let (key_file, home) = (
        toml::Value::String(dir.join("priv_validator_key.json").display().to_string()),
        toml::Value::String(home.display().to_string()),
    );
    Ok(format!(
        "[producer]\nkind = \"cometbft-filepv\"\nkey_file = {key_file}\nhome = {home}\ncommand = {command}\nfence_timeout = \"1s\"\n"
    ))
}

fn spawn(member: &mut Member, events: &mpsc::Sender<(String, serde_json::Value)>) -> std::io::Result<()> {
    use std::io::Write;
    let exe = std::env::current_exe()?;
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&member.log)?;
    let mut child = Command::new(exe)
        .args(["--log-format", "json", "--config"])
        .arg(&member.config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(stderr) = child.stderr.take() {
        let tx = events.clone();
        let name = member.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // The log is for reading afterwards (`--keep`); a write that fails loses a
                // line of it, never the demo.
                let _ = writeln!(log, "{line}");
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send((name.clone(), v));
                }
            }
        });
    }
    member.child = Some(child);
    Ok(())
}

/// A tiny blocking HTTP client for polling and steering the simulated nodes: the demo's main
/// thread is not async.
mod sim_http {
    use std::net::TcpStream;
    use std::time::Duration;

    use crate::sim::node::StateReport;

    pub struct SimHttp;

    impl SimHttp {
        fn request(&self, rpc: &str, method: &str, path: &str, body: &str) -> Option<String> {
            let addr = rpc.strip_prefix("http://")?;
            let s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(300)).ok()?;
            crate::http::blocking_exchange(s, addr, (method, path, body), Duration::from_millis(500), 64 * 1024)
        }

        pub fn state(&self, rpc: &str) -> Option<StateReport> {
            serde_json::from_str(&self.request(rpc, "GET", "/sim/state", "")?).ok()
        }

        pub fn control(&self, rpc: &str, body: &str) -> bool {
            self.request(rpc, "POST", "/sim/control", body).is_some()
        }
    }
}

/// The member whose node signs now. Key-holding: whose validator process is alive (started and
/// not seen dead in its activation log, and not a zombie). Signer mode: whose remote signer
/// signed one of the last three heights.
fn active_member(members: &[Member], client: &sim_http::SimHttp, signer: bool) -> Option<usize> {
    members.iter().position(|m| match (&m.activations, signer) {
        (Some(log), false) => validator_pids(log).into_iter().any(process_alive),
        _ => {
            m.child.is_some()
                && m.rpc
                    .as_deref()
                    .and_then(|r| client.state(r))
                    .is_some_and(|s| signer && s.state.last_signed.is_some_and(|h| s.height.saturating_sub(h) <= 2))
        }
    })
}

/// The validators of one activation log that started and were not yet seen dead.
fn validator_pids(log: &Path) -> Vec<u32> {
    activation::started_and_not_dead(&activation::read(log).unwrap_or_default())
}

/// Whether process `pid` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else { return false };
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_err() {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

fn run_inner(options: &DemoOptions) -> Result<Summary, String> {
    let n = options.members;
    if !(3..=NAMES.len()).contains(&n) {
        return Err(format!("--members must be between 3 and {}", NAMES.len()));
    }
    let dir = std::env::temp_dir().join(format!("failoverd-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut members = write_configs(&dir, n, options.signer).map_err(|e| format!("cannot write configs: {e}"))?;
    let logs: Vec<PathBuf> = members.iter().filter_map(|m| m.activations.clone()).collect();
    let death_watch = DeathWatch::start(&logs).map_err(|e| format!("cannot start the death watch: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let json = options.json;
    say(
        json,
        format!(
            "failoverd demo: {} producers{} + 1 witness on 127.0.0.1, embedded raft, simulated nodes ({} ms blocks), {} s",
            n - 1,
            if options.signer { " (remote signers, cometbft-signer)" } else { "" },
            BLOCK.as_millis(),
            options.duration.as_secs()
        ),
    );
    say(
        json,
        format!(
            "  work dir {} (configs, each member's log, ledger.jsonl){}",
            dir.display(),
            if options.keep { "; kept at the end (--keep)" } else { "; removed at the end unless --keep" }
        ),
    );
    for m in &mut members {
        spawn(m, &tx).map_err(|e| format!("cannot start member {}: {e}", m.name))?;
    }
    let client = sim_http::SimHttp;
    let start = MonoTime::now();
    let secs = |t: MonoTime| t.saturating_since(start).as_secs_f64();
    let nf = options.faults.len().max(1) as u32;
    let schedule: Vec<(Duration, Fault)> =
        options.faults.iter().enumerate().map(|(i, f)| (options.duration * (i as u32 + 1) / (nf + 1), *f)).collect();
    let mut next_fault = 0;
    let mut pending: Vec<(MonoTime, usize, Fault)> = Vec::new();
    let mut restarts: Vec<(MonoTime, usize)> = Vec::new();
    let mut unstall: Vec<(MonoTime, usize)> = Vec::new();
    let mut last_active: Option<usize> = None;
    let mut results: Vec<FaultResult> = Vec::new();
    while MonoTime::now().saturating_since(start) < options.duration {
        while let Ok((name, v)) = rx.try_recv() {
            if let Some(line) = timeline_line(&name, &v) {
                say(json, format!("{:>7.1}s  {line}", secs(MonoTime::now())));
            }
        }
        let active = active_member(&members, &client, options.signer);
        if active != last_active {
            if let Some(a) = active {
                say(json, format!("{:>7.1}s  {}  is signing", secs(MonoTime::now()), members[a].name));
            }
            last_active = active;
        }
        let now = MonoTime::now();
        if next_fault < schedule.len() && now.saturating_since(start) >= schedule[next_fault].0 {
            let fault = schedule[next_fault].1;
            next_fault += 1;
            match active {
                None => results.push(FaultResult {
                    fault,
                    at_s: secs(now),
                    active_before: None,
                    active_after: None,
                    failover_s: None,
                    missed_heights: None,
                    note: "skipped: no active member at that moment".into(),
                }),
                Some(a) => {
                    let rpc = members[a].rpc.clone().unwrap_or_default();
                    let what = match fault {
                        Fault::Kill => {
                            if let Some(mut c) = members[a].child.take() {
                                let _ = c.kill();
                                let _ = c.wait();
                            }
                            restarts.push((now.saturating_add(Duration::from_secs(6)), a));
                            format!("kill -9 the daemon of {} (the active)", members[a].name)
                        }
                        Fault::Stall => {
                            client.control(&rpc, r#"{"stall": true}"#);
                            unstall.push((now.saturating_add(Duration::from_secs(8)), a));
                            format!("stall the node of {} (the active)", members[a].name)
                        }
                        Fault::Handover => {
                            let target =
                                (0..n - 1).find(|i| *i != a).map(|i| members[i].name.clone()).unwrap_or_default();
                            let answer = promote(&members[a].socket, &target);
                            format!("handover from {} to {target} (promote {target}): {answer}", members[a].name)
                        }
                    };
                    // Kills and stalls are faults; a handover is an operator's planned switchover.
                    let kind = if fault == Fault::Handover { "PLANNED" } else { "FAULT" };
                    say(json, format!("{:>7.1}s  {kind} {what}", secs(now)));
                    pending.push((now, a, fault));
                }
            }
        }
        for (at, i) in std::mem::take(&mut restarts) {
            if MonoTime::now() >= at {
                say(json, format!("{:>7.1}s  restart the daemon of {}", secs(MonoTime::now()), members[i].name));
                spawn(&mut members[i], &tx).map_err(|e| format!("cannot restart {}: {e}", members[i].name))?;
            } else {
                restarts.push((at, i));
            }
        }
        for (at, i) in std::mem::take(&mut unstall) {
            if MonoTime::now() >= at {
                client.control(members[i].rpc.as_deref().unwrap_or_default(), r#"{"stall": false}"#);
                say(json, format!("{:>7.1}s  the node of {} runs again", secs(MonoTime::now()), members[i].name));
            } else {
                unstall.push((at, i));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for m in &mut members {
        if let Some(mut c) = m.child.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }
    // The validators die with their daemons; the watch records each death it sees.
    std::thread::sleep(crate::sim::death_watch::TICK * 5);
    death_watch.stop();
    let s1_overlaps = (!options.signer).then(|| {
        let records: Vec<_> = logs.iter().flat_map(|l| activation::read(l).unwrap_or_default()).collect();
        activation::overlaps(&activation::windows(&records, MonoTime::now().as_nanos()), 0).len()
    });
    let records = ledger::read(&dir.join("ledger.jsonl")).map_err(|e| e.to_string())?;
    let report = checker::check(&records);
    for (at, before, fault) in pending {
        let old = &members[before].name;
        let first_new =
            records.iter().filter(|r| r.member.as_str() != old && r.mono_ns > at.as_nanos()).min_by_key(|r| r.mono_ns);
        // The old active may sign on after the fault (a planned handover waits for a fresh block).
        let until = first_new.map_or(u64::MAX, |r| r.mono_ns);
        let last_old = records.iter().filter(|r| r.member.as_str() == old && r.mono_ns < until).map(|r| r.height).max();
        results.push(FaultResult {
            fault,
            at_s: secs(at),
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
    let mut by_member: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &records {
        *by_member.entry(r.member.as_str()).or_default() += 1;
    }
    let summary = Summary {
        members: n,
        duration_s: options.duration.as_secs_f64(),
        signatures: records.len(),
        failovers: results.iter().filter(|r| r.active_after.is_some()).count(),
        faults: results,
        missed_heights_total: report.missed_heights(),
        double_signs: report.double_signs.len(),
        s1_overlaps,
    };
    if options.keep || summary.double_signs > 0 || std::env::var_os("FAILOVERD_DEMO_KEEP").is_some() {
        let logs: Vec<String> = members.iter().map(|m| format!("{}.log", m.name)).collect();
        say(
            json,
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

/// The timeline's line for one log event of member `name`, if it shows one: errors, guard steps
/// that failed or set the floor, and role changes, each step-down with its reason.
fn timeline_line(name: &str, v: &serde_json::Value) -> Option<String> {
    let f = &v["fields"];
    let message = f["message"].as_str();
    if v["level"].as_str() == Some("ERROR") {
        return Some(format!("{name}  error: {} {}", message.unwrap_or("?"), f["error"].as_str().unwrap_or("")));
    }
    if f["change"].as_str() == Some("role") {
        let (from, to) = (f["from"].as_str().unwrap_or("?"), f["role"].as_str().unwrap_or("?"));
        let epoch = f["epoch"].as_u64().map_or(String::new(), |e| format!("  epoch {e}"));
        let height = f["height"].as_u64().map_or(String::new(), |h| format!("  height {h}"));
        // The member's sentence is "from → to: cause"; a step-down shows its cause.
        let cause = message.and_then(|m| m.split_once(": ")).map(|(_, cause)| cause);
        let why = match (steps_down(from, to), cause) {
            (true, Some(cause)) => format!("  ({cause})"),
            (true, None) => "  (the member logged no reason)".to_string(),
            (false, _) => String::new(),
        };
        return Some(format!("{name}  {from} -> {to}{epoch}{height}{why}"));
    }
    match message {
        Some("promotion guard step") => {
            let ok = f["ok"].as_bool().unwrap_or(false);
            (!ok || f["step"].as_str() == Some("watermark_floor")).then(|| {
                format!(
                    "{name}  guard {} {}: {}",
                    f["step"].as_str().unwrap_or("?"),
                    if ok { "ok" } else { "FAILED" },
                    f["detail"].as_str().unwrap_or("")
                )
            })
        }
        _ => None,
    }
}

/// A role change that gives up (or starts giving up) a holding of the lease: the member's
/// `reason` says why.
fn steps_down(from: &str, to: &str) -> bool {
    matches!(from, "promoting" | "active" | "demoting" | "fenced")
        && matches!(to, "demoting" | "fenced" | "standby" | "ineligible")
}

fn promote(socket: &Path, target: &str) -> String {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return format!("cannot start a runtime: {e}"),
    };
    runtime.block_on(async {
        match crate::api::client::connect(socket, Duration::from_secs(2)).await {
            Err(e) => format!("cannot reach the control socket: {e}"),
            Ok(mut c) => {
                match c.promote(crate::proto::v1::PromoteRequest { target: target.to_string(), force: false }).await {
                    Ok(r) => r.into_inner().message,
                    Err(status) => format!("refused: {}", status.message()),
                }
            }
        }
    })
}

fn print_summary(s: &Summary) {
    println!();
    println!("summary ({} members, {:.0} s, {} signatures)", s.members, s.duration_s, s.signatures);
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

#[cfg(test)]
mod tests {
    use super::unused_port;

    /// Two labs in one test process pick their ports before either binds them: a port handed
    /// out twice is a member that cannot start.
    #[test]
    fn one_process_is_never_handed_the_same_port_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            let port = unused_port().expect("a free port");
            assert!((20_000..32_000).contains(&port), "{port} is outside 20000..32000");
            assert!(seen.insert(port), "port {port} was handed out twice");
        }
    }
}
