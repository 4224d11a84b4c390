//! Many validators on one cluster: `cargo bench --bench many_validators`.
//!
//! One 3-member cluster of real `failoverd run` processes (producers "a" and "b", witness "c";
//! mutual TLS, metrics on, the embedded raft quorum) serving N validators through
//! `[[validators]]` (benches/common/many_lab.rs), each config written **without any timing**, so
//! every member runs at failoverd's defaults. Every validator has its own key, its own signature
//! ledger and its own `failoverd sim-node` processes, one per producer, never measured: what is
//! measured is the members (each daemon, and in key-holding mode the keeper it starts per
//! validator it is active for). Validator k prefers a when k is even and b when it is odd, and a
//! cold start places it there; the actives per member are still read and printed, not assumed.
//!
//! For each N (1, 10 and 50 by default), after every validator signs and a warm-up:
//!
//! 1. **Idle cost**: each member's CPU (utime + stime from `/proc/<pid>/stat`) over a window, as %
//!    of one core, with the same over each half of the window as the machine's noise; its memory
//!    (the daemon's `VmRSS` plus each keeper's `RssAnon`: a keeper runs the daemon's binary, whose
//!    pages it shares; and every `VmRSS` summed, member_idle's figure), threads and context
//!    switches per second. Targets at N=50 (issue 22): ≤ 2 % CPU and ≤ 64 MB per member; every N
//!    is shown against them.
//! 2. **Signatures per second** over the window, from the ledgers: in signer mode each one is a
//!    reservation through the store (the active's signer reserves every height it signs).
//! 3. **Failover of one validator while the others sign**: SIGKILL of that validator's signing
//!    process on its active member (key-holding: the validator its daemon runs; signer: the node
//!    that asks the signer), and the time until the other producer's signature of that chain
//!    (from the ledger's `CLOCK_BOOTTIME` stamps, judged outside the daemons). Each repetition
//!    takes the next validator (N=1: the same one, back and forth), and only once its active has
//!    held it for the cooldown, so every figure is a failover at steady state, never a step-down
//!    held by the cooldown. A killed signing node is started again (signer mode); a killed
//!    key-holding validator is its daemon's to start at its next activation. The heights the
//!    other validators missed meanwhile are counted.
//!
//! `FAILOVERD_BENCH_VALIDATORS` (default `1,10,50`), `FAILOVERD_BENCH_MANY_MODE` (`key-holding`,
//! the default, or `signer`, or both comma-separated), `FAILOVERD_BENCH_IDLE_SECS` (default 30),
//! `FAILOVERD_BENCH_WARMUP_SECS` (default 10), `FAILOVERD_BENCH_BLOCK_MS` (default 1000) and
//! `FAILOVERD_BENCH_FAILOVERS` (default 5) change the run; `FAILOVERD_BENCH_ACTIVES=one` has every
//! validator prefer a (default `spread`: even ones a, odd ones b), to measure a member active for
//! all of them. `FAILOVERD_BENCH_LABS` (default 1) runs each case in that many fresh labs and
//! ends with each member's CPU over them (median, least, most): on this 2-core machine one lab's
//! figure for the same build lands anywhere within about ±0.4 points of the median (the phases of
//! 50 chains' blocks against the members' timers differ from lab to lab), while the halves of
//! one window agree, so a single lab is one draw, not the figure.
//!
//! Under `cargo test --all-targets` it only prints how to run it.

mod common;
#[path = "common/many_lab.rs"]
mod many_lab;

use std::time::{Duration, Instant};

use common::proc_stat::{Snapshot, cpu_percent, snapshot, ticks_per_second};
use common::stats;
use failover::domain::MonoTime;
use many_lab::{MEMBERS, ManyLab, Mode, PRODUCERS};

const CPU_TARGET: f64 = 2.0;
const RSS_TARGET_MB: f64 = 64.0;
/// The longest wait for every validator to sign after the members start.
const START_LIMIT: Duration = Duration::from_secs(240);
/// The longest wait for one failover.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);
/// How much longer than the cooldown an active holds its validator before its node is killed.
const SETTLE_MARGIN: Duration = Duration::from_secs(2);

/// Stops the benchmark over a bad setting, naming it.
fn refuse(message: String) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}

struct Settings {
    counts: Vec<usize>,
    modes: Vec<Mode>,
    window: Duration,
    warmup: Duration,
    block: Duration,
    failovers: usize,
    /// Fresh labs per case.
    labs: usize,
}

/// The comma-separated items of `name`, or of `default` when it is unset.
fn list(name: &str, default: &str) -> Vec<String> {
    let text = std::env::var(name).unwrap_or_else(|_| default.into());
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

impl Settings {
    fn from_env() -> Settings {
        let max = failover::config::MAX_VALIDATORS;
        let counts = list("FAILOVERD_BENCH_VALIDATORS", "1,10,50")
            .iter()
            .map(|n| match n.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => refuse(format!("FAILOVERD_BENCH_VALIDATORS: {n:?} is not a count from 1 to {max}; e.g. 1,10,50")),
            })
            .collect();
        let modes = list("FAILOVERD_BENCH_MANY_MODE", "key-holding")
            .iter()
            .map(|m| {
                Mode::parse(m).unwrap_or_else(|| {
                    refuse(format!(
                        "FAILOVERD_BENCH_MANY_MODE: {m:?}: use key-holding, signer or both, comma-separated"
                    ))
                })
            })
            .collect();
        Settings {
            counts,
            modes,
            window: Duration::from_secs(common::env_number("FAILOVERD_BENCH_IDLE_SECS", 30).max(2)),
            warmup: Duration::from_secs(common::env_number("FAILOVERD_BENCH_WARMUP_SECS", 10)),
            block: Duration::from_millis(common::env_number("FAILOVERD_BENCH_BLOCK_MS", 1000).max(100)),
            failovers: common::env_number("FAILOVERD_BENCH_FAILOVERS", 5) as usize,
            labs: (common::env_number("FAILOVERD_BENCH_LABS", 1) as usize).clamp(1, 50),
        }
    }
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// Process `pid`'s anonymous resident memory (`RssAnon` of `/proc/<pid>/status`: its heap and
/// stacks, none of the binary it shares with the daemon), 0 when unread.
fn anon_kib(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix("RssAnon:")?.split_whitespace().next()?.parse().ok()).unwrap_or(0)
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

/// One member over the window.
struct MemberFigures {
    cpu: f64,
    halves: (f64, f64),
    daemon_cpu: f64,
    /// Daemon and keepers, summed.
    rss_mb: f64,
    /// The daemon's RSS and each keeper's anonymous memory: what the member adds to the machine
    /// (a keeper's binary pages are the daemon's).
    own_mb: f64,
    daemon_rss_mb: f64,
    daemon_peak_mb: f64,
    threads: u64,
    keepers: usize,
    switches: f64,
    busiest: String,
}

impl MemberFigures {
    fn within_target(&self) -> bool {
        self.cpu <= CPU_TARGET && self.own_mb <= RSS_TARGET_MB
    }
}

fn cpu_sum(a: &[Snapshot], b: &[Snapshot], window: Duration) -> f64 {
    a.iter().zip(b).map(|(x, y)| cpu_percent(x.ticks, y.ticks, window)).sum()
}

/// One member's figures from its snapshots at the window's start, middle and end.
fn figures(
    pids: &[(&str, i32)],
    start: &[Snapshot],
    middle: &[Snapshot],
    end: &[Snapshot],
    window: Duration,
) -> MemberFigures {
    let half = window / 2;
    let switches: u64 = start.iter().zip(end).map(|(a, b)| b.switches.saturating_sub(a.switches)).sum();
    let (first, last) = (start.first().cloned().unwrap_or_default(), end.first().cloned().unwrap_or_default());
    MemberFigures {
        cpu: cpu_sum(start, end, window),
        halves: (cpu_sum(start, middle, half), cpu_sum(middle, end, window - half)),
        daemon_cpu: cpu_percent(first.ticks, last.ticks, window),
        rss_mb: mb(end.iter().map(|s| s.rss_kib).sum()),
        daemon_rss_mb: mb(last.rss_kib),
        own_mb: mb(last.rss_kib + pids.iter().skip(1).map(|(_, p)| anon_kib(*p)).sum::<u64>()),
        daemon_peak_mb: mb(last.hwm_kib),
        threads: last.threads,
        keepers: pids.len().saturating_sub(1),
        switches: switches as f64 / window.as_secs_f64(),
        busiest: busiest_threads(&first, &last, window),
    }
}

/// Measures every member over `window` (two halves); the figures and the window's bounds.
fn measure(lab: &ManyLab, window: Duration) -> (Vec<MemberFigures>, (MonoTime, MonoTime)) {
    let all: Vec<Vec<(&str, i32)>> = (0..MEMBERS.len()).map(|i| lab.member_pids(i)).collect();
    let take = || -> Vec<Vec<Snapshot>> {
        all.iter().map(|pids| pids.iter().map(|(_, p)| snapshot(*p).unwrap_or_default()).collect()).collect()
    };
    let from = MonoTime::now();
    let start = take();
    std::thread::sleep(window / 2);
    let middle = take();
    std::thread::sleep(window - window / 2);
    let end = take();
    let to = MonoTime::now();
    let members = (0..MEMBERS.len()).map(|i| figures(&all[i], &start[i], &middle[i], &end[i], window)).collect();
    (members, (from, to))
}

fn print_member(i: usize, f: &MemberFigures, actives: usize) {
    println!(
        "  {} (active for {actives:>2}) CPU {:>5.2} % of one core (halves {:.2} / {:.2})  memory {:>5.1} MB \
         (RSS summed {:.1} MB)  {:>6.1} context switches/s   {}",
        MEMBERS[i],
        f.cpu,
        f.halves.0,
        f.halves.1,
        f.own_mb,
        f.rss_mb,
        f.switches,
        if f.within_target() { "within the N=50 target" } else { "OVER the N=50 target" }
    );
    println!(
        "      daemon CPU {:>5.2} %  RSS {:>5.1} MB  peak {:>5.1} MB  {} threads; {} keeper(s) CPU {:.2} %  RSS {:.1} MB",
        f.daemon_cpu,
        f.daemon_rss_mb,
        f.daemon_peak_mb,
        f.threads,
        f.keepers,
        f.cpu - f.daemon_cpu,
        f.rss_mb - f.daemon_rss_mb
    );
    println!("      daemon's busiest threads: {}", f.busiest);
}

/// Waits until every validator signs; how long that took, or the validators that did not.
fn wait_all_signing(lab: &ManyLab, block: Duration) -> Result<Duration, Vec<String>> {
    let started = Instant::now();
    loop {
        let silent: Vec<String> = (0..lab.ids.len())
            .filter(|k| lab.signing_member(*k, block * 3).is_none())
            .map(|k| lab.ids[k].clone())
            .collect();
        if silent.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > START_LIMIT {
            return Err(silent);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Signatures of every validator stamped within `[from, to]`.
fn signatures_between(lab: &ManyLab, (from, to): (MonoTime, MonoTime)) -> usize {
    let inside = |ns: u64| (from.as_nanos()..=to.as_nanos()).contains(&ns);
    (0..lab.ids.len()).map(|k| lab.records(k).iter().filter(|r| inside(r.mono_ns)).count()).sum()
}

/// How many validators each member holds: by the witness's `failoverctl status`, and by who
/// signed each validator last (its ledger).
fn actives(lab: &ManyLab, block: Duration) -> ([usize; 3], [usize; 3]) {
    let mut by_status = [0; 3];
    match lab.holders(2) {
        Ok(holders) => {
            for h in holders.iter().flatten() {
                if let Some(i) = MEMBERS.iter().position(|m| m == h) {
                    by_status[i] += 1;
                }
            }
        }
        Err(e) => println!("  NOTE: the holders could not be read from c: {e}"),
    }
    let mut by_ledger = [0; 3];
    for k in 0..lab.ids.len() {
        if let Some(i) = lab.signing_member(k, block * 3) {
            by_ledger[i] += 1;
        }
    }
    (by_status, by_ledger)
}

/// Error and warning lines of a member's log after its first `skip` lines: their counts and the
/// first few distinct messages.
fn log_findings(log: &str, skip: usize) -> (usize, usize, Vec<String>) {
    let (mut errors, mut warnings, mut seen) = (0, 0, Vec::new());
    for line in log.lines().skip(skip) {
        let error = line.contains(" ERROR ");
        if !error && !line.contains(" WARN ") {
            continue;
        }
        if error {
            errors += 1
        } else {
            warnings += 1
        }
        // The message without its timestamp, shortened.
        let text: String = line.split_once(' ').map_or(line, |(_, rest)| rest).trim().chars().take(220).collect();
        if seen.len() < 4 && !seen.contains(&text) {
            seen.push(text);
        }
    }
    (errors, warnings, seen)
}

/// Prints each member's errors and warnings after line `from[i]` of its log; the lines read now.
fn report_logs(lab: &ManyLab, from: &[usize], when: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    for (i, m) in MEMBERS.iter().enumerate() {
        let log = lab.log(i);
        let (errors, warnings, seen) = log_findings(&log, from.get(i).copied().unwrap_or(0));
        println!("  {m} log {when}: {errors} error and {warnings} warning lines");
        for s in seen {
            println!("      {s}");
        }
        lines.push(log.lines().count());
    }
    lines
}

/// When `member` began the run of signatures of validator `k` that is its latest (none when
/// another member signed last).
fn holding_since(lab: &ManyLab, k: usize, member: usize) -> Option<MonoTime> {
    let mut records = lab.records(k);
    records.sort_by_key(|r| r.mono_ns);
    let mut since = None;
    for r in records.iter().rev() {
        if r.member.as_str() != MEMBERS[member] {
            break;
        }
        since = Some(r.mono_ns);
    }
    since.map(MonoTime::from_nanos)
}

/// Waits until validator `k`'s active has held it for `hold`; that active, or `None` when none
/// did within `hold` and a minute.
fn settled_holder(lab: &ManyLab, k: usize, hold: Duration, block: Duration) -> Option<usize> {
    let end = Instant::now() + hold + Duration::from_secs(60);
    while Instant::now() < end {
        if let Some(i) = lab.signing_member(k, block * 3)
            && let Some(since) = holding_since(lab, k, i)
        {
            let held = MonoTime::now().saturating_since(since);
            if held >= hold {
                return Some(i);
            }
            std::thread::sleep((hold - held).min(Duration::from_secs(1)));
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// The first signature of validator `k` by member `to` stamped after `after`, within the limit.
fn first_signature_by(lab: &ManyLab, k: usize, to: usize, after: MonoTime) -> Option<MonoTime> {
    let end = Instant::now() + FAILOVER_LIMIT;
    while Instant::now() < end {
        let first = lab
            .records(k)
            .iter()
            .filter(|r| r.member.as_str() == MEMBERS[to] && r.mono_ns > after.as_nanos())
            .map(|r| r.mono_ns)
            .min();
        if let Some(ns) = first {
            return Some(MonoTime::from_nanos(ns));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// One failover of validator `k`: when its signing process was killed and how long until the
/// other producer signed (ms), or why there was none.
fn fail_over(lab: &mut ManyLab, k: usize, hold: Duration, block: Duration) -> Result<(MonoTime, f64), String> {
    let id = lab.ids[k].clone();
    let from = settled_holder(lab, k, hold, block).ok_or(format!("{id}: no steady active to kill"))?;
    let to = PRODUCERS.into_iter().find(|p| *p != from).ok_or("one producer only")?;
    let killed_at = MonoTime::now();
    let killed = lab.kill_signing(k, from);
    if killed == 0 {
        return Err(format!("{id}: no signing process of {} found to kill", MEMBERS[from]));
    }
    let signed = first_signature_by(lab, k, to, killed_at);
    lab.restart_node(k, from);
    let signed = signed.ok_or(format!(
        "{id}: {} did not sign within {} s of {}'s signing process being killed",
        MEMBERS[to],
        FAILOVER_LIMIT.as_secs(),
        MEMBERS[from]
    ))?;
    let took = signed.saturating_since(killed_at);
    println!("    {id}: {} -> {} in {:.2} s", MEMBERS[from], MEMBERS[to], took.as_secs_f64());
    Ok((killed_at, stats::ms(took)))
}

/// A validator's change of signer: another member signed a height after `from` signed the one
/// before.
struct Change {
    k: usize,
    from: String,
    to: String,
    at: MonoTime,
}

/// Every validator's changes of signer stamped within `[from, to]`.
fn signer_changes(lab: &ManyLab, (from, to): (MonoTime, MonoTime)) -> Vec<Change> {
    let mut changes = Vec::new();
    for k in 0..lab.ids.len() {
        let mut records = lab.records(k);
        records.sort_by_key(|r| r.mono_ns);
        for w in records.windows(2) {
            if w[0].member != w[1].member && (from.as_nanos()..=to.as_nanos()).contains(&w[1].mono_ns) {
                let (a, b) = (w[0].member.to_string(), w[1].member.to_string());
                changes.push(Change { k, from: a, to: b, at: MonoTime::from_nanos(w[1].mono_ns) });
            }
        }
    }
    changes.sort_by_key(|c| c.at);
    changes
}

/// Prints the changes of signer within `span` that no kill in `kills` (validator, when) explains.
fn report_changes(lab: &ManyLab, span: (MonoTime, MonoTime), kills: &[(usize, MonoTime)], when: &str) -> usize {
    let explained =
        |c: &Change| kills.iter().any(|(k, t)| *k == c.k && c.at >= *t && c.at.saturating_since(*t) <= FAILOVER_LIMIT);
    let all = signer_changes(lab, span);
    let unexplained: Vec<&Change> = all.iter().filter(|c| !explained(c)).collect();
    println!("  signer changes {when}: {} ({} not caused by a kill of that validator)", all.len(), unexplained.len());
    for c in unexplained.iter().take(8) {
        println!(
            "      {}: {} -> {} at +{:.1} s",
            lab.ids[c.k],
            c.from,
            c.to,
            c.at.saturating_since(span.0).as_secs_f64()
        );
    }
    if unexplained.len() > 8 {
        println!("      ... and {} more", unexplained.len() - 8);
    }
    unexplained.len()
}

/// Heights the validators other than `moved` did not sign between their first and last signature
/// within `[from, to]`, and how many they signed.
fn missed_heights(lab: &ManyLab, moved: &[usize], (from, to): (MonoTime, MonoTime)) -> (u64, usize) {
    let (mut missed, mut signed) = (0, 0);
    for k in (0..lab.ids.len()).filter(|k| !moved.contains(k)) {
        let mut heights: Vec<u64> = lab
            .records(k)
            .iter()
            .filter(|r| (from.as_nanos()..=to.as_nanos()).contains(&r.mono_ns))
            .map(|r| r.height)
            .collect();
        heights.sort_unstable();
        heights.dedup();
        if let (Some(lo), Some(hi)) = (heights.first(), heights.last()) {
            missed += hi - lo + 1 - heights.len() as u64;
            signed += heights.len();
        }
    }
    (missed, signed)
}

/// The failovers: each repetition the next validator, once its active held it for `hold`.
fn failovers(lab: &mut ManyLab, count: usize, hold: Duration, block: Duration) -> Option<stats::Summary> {
    if count == 0 {
        return None;
    }
    println!(
        "  failovers: SIGKILL of the active's signing process, {count} times, each once its active held it {} s",
        hold.as_secs()
    );
    let n = lab.ids.len();
    let from = MonoTime::now();
    let (mut samples, mut kills) = (Vec::new(), Vec::new());
    for r in 0..count {
        match fail_over(lab, r % n, hold, block) {
            Ok((at, ms)) => {
                kills.push((r % n, at));
                samples.push(ms);
            }
            Err(e) => println!("    NO FAILOVER: {e}"),
        }
    }
    // Long enough for a failover that one of them caused to show in the ledgers.
    std::thread::sleep(block * 5);
    let span = (from, MonoTime::now());
    report_changes(lab, span, &kills, "during the failovers");
    let moved: Vec<usize> = (0..count.min(n)).collect();
    let (missed, signed) = missed_heights(lab, &moved, span);
    if n > 1 {
        println!("    the {} other validators meanwhile: {signed} heights signed, {missed} missed", n - moved.len());
    }
    if samples.is_empty() {
        return None;
    }
    let summary = stats::summarize(&samples);
    println!("  {}", stats::line_s(&format!("failover of one validator of {n}"), &summary));
    Some(summary)
}

/// What one lab measured, for the closing table.
struct Outcome {
    mode: Mode,
    n: usize,
    members: Vec<MemberFigures>,
    actives: [usize; 3],
    signatures_per_s: f64,
    failover: Option<stats::Summary>,
    took: Duration,
}

/// The timings in effect for the first validator (none are set in the configs): its cooldown and
/// renew interval.
fn print_effective(lab: &ManyLab) -> (Duration, Duration) {
    let config = match failover::config::Config::load(&lab.configs[0]) {
        Ok(c) => c,
        Err(e) => {
            println!("  NOTE: a's config does not load here: {e}");
            return (Duration::from_secs(30), Duration::from_secs(1));
        }
    };
    let Some((_, c)) = config.validator_configs().into_iter().next() else {
        return (config.failover.cooldown, config.coordinator.renew_interval);
    };
    println!(
        "  in effect (none set in the configs): lease_ttl {} ms, renew_interval {} ms, raft tick {} ms, \
         probe_interval {} ms, cooldown {} s",
        c.coordinator.lease_ttl.as_millis(),
        c.coordinator.renew_interval.as_millis(),
        c.coordinator.raft.tick.as_millis(),
        c.chain.as_ref().map_or(0, |ch| ch.probe_interval.as_millis()),
        c.failover.cooldown.as_secs()
    );
    (c.failover.cooldown, c.coordinator.renew_interval)
}

/// Runs one lab of `n` validators in `mode` and reports it.
fn run(mode: Mode, n: usize, s: &Settings) -> Outcome {
    let began = Instant::now();
    println!("\n== {} mode, {n} validator(s), {} ms blocks ==", mode.name(), s.block.as_millis());
    let lab_start = MonoTime::now();
    let mut lab = ManyLab::start(mode, n, s.block);
    let (cooldown, renew_interval) = print_effective(&lab);
    match wait_all_signing(&lab, s.block) {
        Ok(t) => println!("  every validator signs {:.1} s after the start", t.as_secs_f64()),
        Err(silent) => println!("  NOT EVERY VALIDATOR SIGNS after {} s: {}", START_LIMIT.as_secs(), silent.join(", ")),
    }
    let all_signing = MonoTime::now();
    report_changes(&lab, (lab_start, all_signing), &[], "from the start until every validator signed");
    std::thread::sleep(s.warmup);
    println!(
        "  {} processes in the lab; warm-up {} s, then a {} s window (CPU resolution {:.3} %); {}",
        lab.process_count(),
        s.warmup.as_secs(),
        s.window.as_secs(),
        100.0 / ticks_per_second() / s.window.as_secs_f64(),
        common::machine_load()
    );
    let commit_before = (lab.raft_commit(2), Instant::now());
    let (members, window) = measure(&lab, s.window);
    let commit_after = (lab.raft_commit(2), Instant::now());
    let (by_status, by_ledger) = actives(&lab, s.block);
    for (i, f) in members.iter().enumerate() {
        print_member(i, f, by_status[i]);
    }
    println!(
        "  actives: a {} / b {} by c's status; a {} / b {} by the ledgers (who signed last)",
        by_status[0], by_status[1], by_ledger[0], by_ledger[1]
    );
    let signatures = signatures_between(&lab, window) as f64 / window.1.saturating_since(window.0).as_secs_f64();
    let what = match mode {
        Mode::Signer => "reservations/s (signatures, each reserved through the store)",
        Mode::KeyHolding => "signatures/s (the validators hold their keys: no reservation)",
    };
    println!(
        "  {what}: {signatures:.2} over the window, {:.2} expected at one a block",
        n as f64 / s.block.as_secs_f64()
    );
    let renews = n as f64 / renew_interval.as_secs_f64();
    match (commit_before.0, commit_after.0) {
        (Some(a), Some(b)) => println!(
            "  raft: {:.1} entries/s committed over the window (c's commit index); {renews:.1} renews/s were due",
            b.saturating_sub(a) as f64 / commit_after.1.duration_since(commit_before.1).as_secs_f64()
        ),
        _ => println!("  raft: c did not report its commit index"),
    }
    report_changes(&lab, (all_signing, window.1), &[], "during the warm-up and the window");
    let lines = report_logs(&lab, &[], "until the window's end");
    let failover = failovers(&mut lab, s.failovers, cooldown + SETTLE_MARGIN, s.block);
    report_logs(&lab, &lines, "during the failovers");
    drop(lab);
    println!("  run took {:.0} s", began.elapsed().as_secs_f64());
    Outcome { mode, n, members, actives: by_status, signatures_per_s: signatures, failover, took: began.elapsed() }
}

fn print_summary(outcomes: &[Outcome]) {
    println!(
        "\nsummary (CPU % of one core with the window's halves; memory: daemon RSS + keepers' RssAnon, and all RSS \
         summed; ctx = context switches/s)"
    );
    println!(
        "{:<12} {:>3} {:>3}  {:<22} {:>7} {:>7} {:>7} {:>8}",
        "mode", "N", "mbr", "CPU % (halves)", "mem MB", "RSS MB", "ctx/s", "actives"
    );
    for o in outcomes {
        let mode = match o.mode {
            Mode::KeyHolding => "key-holding",
            Mode::Signer => "signer",
        };
        for (i, f) in o.members.iter().enumerate() {
            println!(
                "{mode:<12} {:>3} {:>3}  {:<22} {:>7.1} {:>7.1} {:>7.1} {:>8}",
                o.n,
                MEMBERS[i],
                format!("{:.2} ({:.2}/{:.2})", f.cpu, f.halves.0, f.halves.1),
                f.own_mb,
                f.rss_mb,
                f.switches,
                o.actives[i]
            );
        }
        let failover = o.failover.map_or("none".into(), |f| {
            format!("n={} p50={:.2} s p99/max={:.2} s", f.n, f.p50 / 1000.0, f.max / 1000.0)
        });
        println!(
            "{mode:<12} {:>3}      signatures/s {:.2}; failover {failover}; run {:.0} s",
            o.n,
            o.signatures_per_s,
            o.took.as_secs_f64()
        );
    }
}

/// Each member's CPU over the labs of one case (`labs` consecutive outcomes): the median and the
/// range, and how many labs were within the target.
fn print_over_labs(outcomes: &[Outcome], labs: usize) {
    println!("\nover {labs} labs per case (CPU % of one core: median, least–most; within the {CPU_TARGET} % target)");
    for case in outcomes.chunks(labs) {
        let mode = case[0].mode.name();
        for (i, name) in MEMBERS.iter().enumerate() {
            let cpus: Vec<f64> = case.iter().filter_map(|o| o.members.get(i)).map(|f| f.cpu).collect();
            let s = stats::summarize(&cpus);
            let within = cpus.iter().filter(|c| **c <= CPU_TARGET).count();
            println!(
                "{mode:<24} {:>3} {name:>3}  n={} median {:.2}  {:.2}–{:.2}  {within}/{} within",
                case[0].n,
                s.n,
                s.p50,
                s.min,
                s.max,
                cpus.len()
            );
        }
    }
}

fn main() {
    if !common::benchmarking("many_validators") {
        return;
    }
    let settings = Settings::from_env();
    println!(
        "many validators on one cluster: 3 `failoverd run` members on 127.0.0.1 at the defaults, {} cores; \
         targets at N=50: <= {CPU_TARGET} % CPU and <= {RSS_TARGET_MB} MB per member (daemon + keepers; memory: the \
         daemon's RSS and each keeper's RssAnon, whose binary pages are the daemon's)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("each validator's chain: `failoverd sim-node` processes of its own, one per producer, not measured");
    if settings.window < Duration::from_secs(30) {
        println!("NOTE: a window under 30 s ({} s) is too short for the targets' figures", settings.window.as_secs());
    }
    println!("{} at the start", common::machine_load());
    let began = Instant::now();
    let mut outcomes = Vec::new();
    for mode in &settings.modes {
        for n in &settings.counts {
            for _ in 0..settings.labs {
                outcomes.push(run(*mode, *n, &settings));
            }
        }
    }
    print_summary(&outcomes);
    if settings.labs > 1 {
        print_over_labs(&outcomes, settings.labs);
    }
    println!("{} at the end; {:.0} s in all", common::machine_load(), began.elapsed().as_secs_f64());
}
