//! The chaos runner behind `chaos/run`: builds labs of real members, injects the faults of
//! `scenario`, and judges every run against docs/design.md §3 (S1, S2, S3, L1, L2) with `verdict`.
//! `chaos/run bench` measures unplanned failover instead. With `--validators N` the cluster
//! serves N validators and each is judged on its own evidence. See chaos/README.md.
//!
//! It must never leave anything behind: processes die with it (PDEATHSIG), and namespaces,
//! mounts and directories are removed on every way out, including SIGINT and SIGTERM; what a
//! runner killed outright leaves is removed by the next one.

mod control;
mod lab;
mod net;
mod observe;
mod report;
mod rogue;
mod scenario;
mod timings;
mod validators;
mod verdict;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use failover::domain::MonoTime;
use failover::sim::lab::wan::Wan;
use failover::sim::{activation, ledger};

use lab::{Lab, LabOptions, MEMBERS, Timings};
use observe::Observer;
use report::{RunResult, ScenarioReport};
use scenario::{Context, Injected, Interrupted, Rng, Scenario};
use timings::ChaosTimings;
use validators::MAX_VALIDATORS;
use verdict::{Evidence, ValidatorEvidence, ValidatorReport};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How long one producer alone must have been signing, once the fault has healed, for the run to
/// count as settled: over seven of the lab's 200 ms blocks, where a node that has just died still
/// counts as signing for two.
const SETTLED_FOR: Duration = Duration::from_millis(1500);

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

#[derive(Parser)]
#[command(
    name = "chaos/run",
    about = "failoverd's chaos suite: faults against a lab of real members, judged against S1-S3, L1, L2"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Runs per scenario.
    #[arg(long, default_value_t = 1, global = true)]
    runs: u32,
    /// Seed of every random choice; the same seed replays the same choices.
    #[arg(long, global = true)]
    seed: Option<u64>,
    /// Only these scenarios (comma-separated); see --list.
    #[arg(long = "scenario", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Soak: repeat every scenario until --for has passed.
    #[arg(long)]
    long: bool,
    /// How long --long runs, such as 2h or 30m.
    #[arg(long = "for", default_value = "1h")]
    soak_for: String,
    /// Print the results as JSON on stdout (progress goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Keep every lab's directory (logs, ledger, activation log), not only failing ones.
    #[arg(long, global = true)]
    keep: bool,
    /// Use loopback and process-level faults only, even as root.
    #[arg(long, global = true)]
    loopback: bool,
    /// The failoverd binary to test (default: beside this runner's target directory).
    #[arg(long, global = true)]
    failoverd: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// `key-holding` (the nodes sign while their producer is on) or `signer` (each node asks its
    /// member's remote signer, cometbft-signer, for every signature).
    #[arg(long, global = true, default_value = "key-holding", value_parser = ["key-holding", "signer"])]
    mode: String,
    /// A WAN between every pair of members: this round trip on every link, made by a delay
    /// proxy per directed link (such as 25ms, 50ms or 100ms; 0 for none).
    #[arg(long, global = true, default_value = "0")]
    rtt: String,
    /// The most a round trip is lengthened by, at random (at most --rtt).
    #[arg(long, global = true, default_value = "0")]
    rtt_jitter: String,
    /// Validators the cluster serves (`[[validators]]`): v1 is faulted and judged as one
    /// validator is; v2… are bystanders with their own chain, key, ledger and nodes, each judged
    /// on S1, S2 and S3.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=MAX_VALIDATORS as i64))]
    validators: u8,
}

#[derive(Subcommand)]
enum Cmd {
    /// Unplanned failover: kill -9 the active's daemon and node, time to the first height
    /// signed by the new active; p50/p99 against docs/design.md §9 (at least 20 runs).
    Bench,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if args.list {
        for s in scenario::ALL {
            let needs = match (s.needs_root, s.needs_faketime) {
                (true, _) => " (root)",
                (_, true) => " (libfaketime)",
                _ => "",
            };
            println!("{:<18} {}{needs}", s.name, s.about);
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chaos: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) =
            (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
        else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        eprintln!("chaos: interrupted; cleaning up");
        INTERRUPTED.store(true, Ordering::Relaxed);
    });
    match run(&args, runtime.handle().clone()) {
        Ok(code) => code,
        Err(Interrupted) => ExitCode::from(130),
    }
}

fn failoverd_path(args: &Args) -> Result<PathBuf, String> {
    if let Some(p) = &args.failoverd {
        return Ok(p.clone());
    }
    // target/<profile>/examples/chaos → target/<profile>/failoverd
    let me = std::env::current_exe().map_err(|e| format!("cannot find this runner's path: {e}"))?;
    let p = me.parent().and_then(|d| d.parent()).map(|d| d.join("failoverd"));
    p.filter(|p| p.exists()).ok_or_else(|| "cannot find the failoverd binary; build it or pass --failoverd".into())
}

fn run(args: &Args, rt: tokio::runtime::Handle) -> Result<ExitCode, Interrupted> {
    let exe = match failoverd_path(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chaos: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let namespaces = if args.loopback {
        eprintln!("chaos: --loopback: process-level faults only");
        false
    } else {
        match net::namespaces_available() {
            Ok(()) => {
                net::remove_stale_namespaces();
                true
            }
            Err(why) => {
                eprintln!("chaos: {why}: running the process-level faults only; network and disk faults need root");
                false
            }
        }
    };
    let wan = match Wan::parse(&args.rtt, &args.rtt_jitter, ("--rtt", "--rtt-jitter")) {
        Ok(w) if w.rtt.is_zero() => None,
        Ok(w) => Some(w),
        Err(e) => {
            eprintln!("chaos: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    match &wan {
        Some(w) => eprintln!(
            "chaos: WAN: {} between every pair of members, through a delay proxy per directed link",
            w.describe()
        ),
        None => eprintln!("chaos: no WAN: members reach each other directly"),
    }
    lab::remove_stale_labs();
    let faketime = lab::find_libfaketime();
    let seed = args.seed.unwrap_or_else(|| MonoTime::now().as_nanos() ^ u64::from(std::process::id()).rotate_left(32));
    eprintln!("chaos: seed {seed} (replay with --seed {seed})");
    if let Some(Cmd::Bench) = args.command {
        if args.validators > 1 {
            eprintln!("chaos: --validators: the benchmark runs one validator");
            return Ok(ExitCode::from(2));
        }
        // Fewer than 20 runs say little about a p99.
        let runs = args.runs.max(20);
        return bench(args, &exe, (namespaces, wan), seed, runs, rt);
    }
    if args.validators > 1 {
        eprintln!(
            "chaos: {} validators on one cluster: v1 is faulted, {}; each is judged on S1, S2, S3",
            args.validators,
            if args.validators == 2 {
                "v2 is a bystander".to_string()
            } else {
                format!("v2..v{} are bystanders", args.validators)
            }
        );
    }
    let mut chosen: Vec<&'static Scenario> = Vec::new();
    if args.scenarios.is_empty() {
        chosen.extend(scenario::ALL.iter());
    } else {
        for name in &args.scenarios {
            match scenario::find(name) {
                Some(s) => chosen.push(s),
                None => {
                    eprintln!("chaos: --scenario: unknown scenario {name:?}; see --list");
                    return Ok(ExitCode::from(2));
                }
            }
        }
    }
    let soak_end = if args.long {
        match failover::config::duration_text::parse(&args.soak_for) {
            Ok(d) => Some(Instant::now() + d),
            Err(e) => {
                eprintln!("chaos: --for: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    } else {
        None
    };
    let mut reports: Vec<ScenarioReport> = chosen.iter().map(|s| ScenarioReport::new(s.name)).collect();
    let mut round = 0u32;
    loop {
        for (si, s) in chosen.iter().enumerate() {
            let skip = if s.needs_root && !namespaces {
                Some("needs root (network namespaces, nftables, tmpfs)")
            } else if s.needs_faketime && faketime.is_none() {
                Some("needs libfaketime (Debian package libfaketime)")
            } else if args.mode == "signer" {
                s.not_in_signer_mode
            } else {
                None
            };
            if let Some(why) = skip {
                if round == 0 {
                    eprintln!("chaos: {}: skipped: {why}", s.name);
                    reports[si].skipped = Some(why.to_string());
                }
                continue;
            }
            for r in 0..args.runs {
                let run_no = round * args.runs + r + 1;
                let run_seed = mix(seed, si as u64, u64::from(run_no));
                let options = LabOptions {
                    timings: timings::across(
                        if args.mode == "signer" { Timings::signer_chaos() } else { Timings::chaos() },
                        wan.as_ref(),
                    ),
                    faketime: if s.needs_faketime { faketime.clone() } else { None },
                    small_disks: s.name == "full-disk",
                    namespaces,
                    keep: args.keep,
                    signer: args.mode == "signer",
                    forking: s.name == "forking-node",
                    wan,
                    validators: usize::from(args.validators),
                };
                let result = run_once(s, run_no, run_seed, &exe, options, rt.clone())?;
                eprintln!("{}", result.line());
                reports[si].runs.push(result);
            }
        }
        round += 1;
        if soak_end.is_none_or(|end| Instant::now() >= end) {
            break;
        }
    }
    report::print(&reports, seed, namespaces, wan.as_ref(), args.json);
    let violations: usize = reports.iter().map(ScenarioReport::violations).sum();
    Ok(if violations > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut r = Rng::new(seed ^ a.wrapping_mul(0x1000_0000_01B3) ^ b.rotate_left(40));
    r.next_u64()
}

/// One run of one scenario in a fresh lab.
fn run_once(
    s: &Scenario,
    run_no: u32,
    run_seed: u64,
    exe: &std::path::Path,
    options: LabOptions,
    rt: tokio::runtime::Handle,
) -> Result<RunResult, Interrupted> {
    let timings = options.timings.clone();
    let wan_allowance = timings::wan_allowance(options.wan.as_ref());
    let mut result = RunResult::new(s.name, run_no, run_seed);
    let tag = format!("{}-{run_no}", s.name);
    let mut lab = match Lab::start(&tag, exe, options, rt.clone()) {
        Ok(l) => l,
        Err(e) => {
            result.error = Some(format!("the lab did not start: {e}"));
            return Ok(result);
        }
    };
    let observer = Observer::start(&lab, rt);
    let mut rng = Rng::new(run_seed);
    let Some(first_active) = lab.wait_active(Duration::from_secs(20), &interrupted) else {
        if interrupted() {
            return Err(Interrupted);
        }
        result.judgement.violations.push("L1: no producer became active within 20 s of the start".into());
        result.kept = keep_evidence(&mut lab);
        return Ok(result);
    };
    result.notes.extend(lab.place_bystanders(first_active, &interrupted));
    let mut cx =
        Context { lab: &mut lab, observer: &observer, rng: &mut rng, timings: &timings, interrupted: &interrupted };
    let warmup = cx.rng.between(Duration::from_secs(1), Duration::from_secs(3));
    cx.pause(warmup)?;
    let Some(active) = cx.lab.wait_active(Duration::from_secs(5), &interrupted) else {
        result.judgement.violations.push("L1: no single active producer before the fault".into());
        result.kept = keep_evidence(&mut lab);
        return Ok(result);
    };
    result.active_before = Some(MEMBERS[active].to_string());
    let mut injected = match scenario::inject(s, &mut cx, active)? {
        // A WAN lengthens every store commit a takeover waits for.
        Ok(i) => Injected { l1_limit: i.l1_limit + wan_allowance, ..i },
        Err(e) => {
            result.error = Some(e);
            result.kept = keep_evidence(&mut lab);
            return Ok(result);
        }
    };
    // Let the cluster settle after the fault healed: one producer, signing, for a while, with
    // every process that failed on the way out restarted as systemd would restart it.
    let settle_limit = timings.l1_node_limit() + wan_allowance + Duration::from_secs(3);
    let active_at_end = cx.wait_settled(settle_limit, SETTLED_FOR)?.is_some();
    // Each bystander must be signed by some producer once the fault has healed: a liveness note
    // when it is not, never a violation.
    let bystanders_signing = cx.lab.wait_bystanders(settle_limit, &interrupted);
    if interrupted() {
        return Err(Interrupted);
    }
    scenario::after_settle(cx.lab, &mut injected);
    let end = MonoTime::now();
    let reads = observer.finish();
    let first_reads = reads.first().map_or(&[][..], Vec::as_slice);
    let records = ledger::read(&lab.ledger).unwrap_or_else(|e| {
        result.error = Some(e.to_string());
        Vec::new()
    });
    let activations = activation::read(&lab.activations).unwrap_or_else(|e| {
        result.error = Some(e.to_string());
        Vec::new()
    });
    let crashes =
        lab.exits.iter().filter(|e| e.crash).map(|e| format!("{} {} {}", e.member, e.what, e.status)).collect();
    let mut exits: Vec<(String, usize)> = Vec::new();
    for e in lab.exits.iter().filter(|e| !e.crash) {
        let what = format!("{} {} exited ({})", e.member, e.what, e.status);
        match exits.iter_mut().find(|(w, _)| *w == what) {
            Some((_, n)) => *n += 1,
            None => exits.push((what, 1)),
        }
    }
    for (what, n) in exits {
        result.notes.push(if n == 1 { format!("{what}, restarted") } else { format!("{what} {n} times, restarted") });
    }
    result.notes.extend(injected.notes.iter().cloned());
    result.expect = Some(injected.expect);
    result.reads = first_reads.len();
    result.judgement = verdict::judge(&Evidence {
        records: &records,
        activations: &activations,
        reads: first_reads,
        fault_at_ns: injected.fault_at.as_nanos(),
        end_ns: end.as_nanos(),
        active_before: MEMBERS[active].to_string(),
        expect: injected.expect,
        max_failovers: injected.max_failovers,
        l1_limit: injected.l1_limit,
        active_at_end,
        crashes,
        signer_mode: lab.signer_mode(),
        host_freeze: injected.host_freeze,
    });
    result.judgement.violations.extend(injected.violations.iter().cloned());
    if let Some(rogue) = &injected.rogue {
        result.judgement.violations.extend(verdict::judge_rogue(rogue));
    }
    if lab.validators.len() > 1 {
        let first = FirstValidator {
            records: &records,
            activations: &activations,
            fault_at_ns: injected.fault_at.as_nanos(),
            paused: injected.host_freeze.then(|| (MEMBERS[active], injected.fault_at.as_nanos())),
            signing_at_end: active_at_end,
        };
        match judge_validators(&lab, first, &reads, &bystanders_signing, end) {
            Ok(each) => result.validators = each,
            Err(e) => result.error = Some(e),
        }
        // v1's invariants are judged above with L1 and L2; each bystander's count here.
        for v in result.validators.iter().skip(1) {
            result.judgement.violations.extend(v.violations.iter().map(|x| format!("{}: {x}", v.validator)));
        }
    }
    if !result.judgement.violations.is_empty() {
        result.kept = keep_evidence(&mut lab);
    }
    Ok(result)
}

/// The first validator's evidence, already read for [`verdict::judge`].
struct FirstValidator<'a> {
    records: &'a [ledger::SignatureRecord],
    activations: &'a [activation::ActivationRecord],
    fault_at_ns: u64,
    /// Freeze-host: the paused member and the fault's instant.
    paused: Option<(&'static str, u64)>,
    signing_at_end: bool,
}

/// Every validator's verdict (several validators), `v1` first: each from its own ledger,
/// activation log and the observer's watermark reads of it (`reads`, by validator);
/// `bystanders_signing` says whether some producer signed each bystander at the end.
fn judge_validators(
    lab: &Lab,
    first: FirstValidator,
    reads: &[Vec<verdict::WatermarkRead>],
    bystanders_signing: &[bool],
    end: MonoTime,
) -> Result<Vec<ValidatorReport>, String> {
    let reads_of = |k: usize| reads.get(k).map_or(&[][..], Vec::as_slice);
    let mut each = vec![verdict::judge_validator(&ValidatorEvidence {
        id: &lab.validators[0].id,
        records: first.records,
        activations: first.activations,
        reads: reads_of(0),
        fault_at_ns: first.fault_at_ns,
        end_ns: end.as_nanos(),
        signer_mode: lab.signer_mode(),
        paused: first.paused,
        signing_at_end: first.signing_at_end,
    })];
    for (k, v) in lab.validators.iter().enumerate().skip(1) {
        let records = ledger::read(&v.ledger).map_err(|e| format!("{}: {e}", v.id))?;
        let activations = activation::read(&v.activations).map_err(|e| format!("{}: {e}", v.id))?;
        each.push(verdict::judge_validator(&ValidatorEvidence {
            id: &v.id,
            records: &records,
            activations: &activations,
            reads: reads_of(k),
            fault_at_ns: first.fault_at_ns,
            end_ns: end.as_nanos(),
            signer_mode: lab.signer_mode(),
            paused: None,
            signing_at_end: bystanders_signing.get(k - 1).copied().unwrap_or(false),
        }));
    }
    Ok(each)
}

/// Keeps a failing lab's directory and says where it is.
fn keep_evidence(lab: &mut Lab) -> Option<String> {
    lab.keep_dir();
    Some(lab.dir.display().to_string())
}

/// The failover benchmark: one lab with docs/design.md §9's timings; each run kills the active's
/// daemon and node with SIGKILL and times the first height the other producer signs.
fn bench(
    args: &Args,
    exe: &std::path::Path,
    (namespaces, wan): (bool, Option<Wan>),
    seed: u64,
    runs: u32,
    rt: tokio::runtime::Handle,
) -> Result<ExitCode, Interrupted> {
    let timings = if args.mode == "signer" { Timings::signer_bench() } else { Timings::design() };
    let options = LabOptions {
        timings: timings.clone(),
        faketime: None,
        small_disks: false,
        namespaces,
        keep: args.keep,
        signer: args.mode == "signer",
        forking: false,
        wan,
        validators: 1,
    };
    let mut lab = match Lab::start("bench", exe, options, rt) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("chaos: the lab did not start: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut rng = Rng::new(seed);
    let mut times = Vec::new();
    let mut skipped = Vec::new();
    for run in 1..=runs {
        let Some(active) = lab.wait_active(Duration::from_secs(30), &interrupted) else {
            if interrupted() {
                return Err(Interrupted);
            }
            eprintln!("chaos: bench run {run}: no active producer within 30 s");
            lab.keep_dir();
            return Ok(ExitCode::from(1));
        };
        // A random phase against the renew cadence, then both of the active's processes die.
        let wait = rng.between(Duration::from_secs(2), Duration::from_secs(4));
        let end = Instant::now() + wait;
        while Instant::now() < end {
            if interrupted() {
                return Err(Interrupted);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let before = ledger::read(&lab.ledger).map(|r| r.len()).unwrap_or(0);
        let at = MonoTime::now();
        lab.kill_daemon(active);
        lab.kill_node(active);
        // The new active signs its first height a block or two after it activates: wait for
        // that record in the ledger, not for the activation.
        let limit =
            Instant::now() + timings.l1_lease_limit() + timings::wan_allowance(wan.as_ref()) + Duration::from_secs(10);
        let (records, first) = loop {
            if interrupted() {
                return Err(Interrupted);
            }
            let records = ledger::read(&lab.ledger).unwrap_or_default();
            let first = records[before.min(records.len())..]
                .iter()
                .filter(|r| r.mono_ns > at.as_nanos() && r.member.as_str() != MEMBERS[active])
                .map(|r| (r.mono_ns, r.height))
                .min();
            if first.is_some() || Instant::now() >= limit {
                break (records, first);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let last_old = records.iter().filter(|r| r.member.as_str() == MEMBERS[active]).map(|r| r.height).max();
        match first {
            Some((t, h)) => {
                let s = (t - at.as_nanos()) as f64 / 1e9;
                let m = last_old.map_or(0, |o| report::skipped_heights(&records, o, h));
                eprintln!(
                    "bench {run}/{runs}: {} killed, {} signed after {s:.3} s ({m} heights skipped)",
                    MEMBERS[active],
                    MEMBERS[1 - active]
                );
                times.push(s);
                skipped.push(m);
            }
            _ => {
                eprintln!("bench {run}/{runs}: no failover within the limit");
                times.push(f64::INFINITY);
            }
        }
        if let Err(e) = lab.start_node(active).and_then(|()| lab.start_daemon(active)) {
            eprintln!("chaos: {e}");
            return Ok(ExitCode::from(1));
        }
        if !lab.wait_back(active, Duration::from_secs(15)) {
            eprintln!("chaos: member {} did not come back", MEMBERS[active]);
            return Ok(ExitCode::from(1));
        }
    }
    let records = ledger::read(&lab.ledger).unwrap_or_default();
    let activations = activation::read(&lab.activations).unwrap_or_default();
    let safety = failover::sim::checker::check(&records);
    let overlaps = activation::overlaps(&activation::windows(&activations, MonoTime::now().as_nanos()), 0);
    let code = report::print_bench(
        &report::BenchFigures { times: &times, skipped: &skipped, timings: &timings, wan: wan.as_ref() },
        safety.double_signs.len(),
        overlaps.len(),
        args.json,
        args.mode == "signer",
    );
    Ok(code)
}
