//! What the runner prints: a line per run as it finishes, one table per scenario at the end
//! (runs, failover time p50/p90/max, missed heights p50/max, violations), with several
//! validators a line per validator under each run and a table per validator, the same as JSON
//! with `--json`, and the benchmark's figures beside docs/design.md §9's target.

use std::process::ExitCode;

use serde::Serialize;

use failover::sim::lab::wan::Wan;
use failover::sim::ledger::SignatureRecord;

use crate::lab::Timings;
use crate::verdict::{Expect, Judgement, ValidatorReport};

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub scenario: &'static str,
    pub run: u32,
    /// Replays this run's random choices (with the same --runs and scenario list).
    pub seed: u64,
    pub active_before: Option<String>,
    pub expect: Option<Expect>,
    pub judgement: Judgement,
    /// Watermark reads the observer made (the S3 evidence).
    pub reads: usize,
    pub notes: Vec<String>,
    /// The run could not be carried out (the lab did not start, a tool failed): not a verdict
    /// on failoverd, but counted as a failure all the same.
    pub error: Option<String>,
    /// Where the evidence of a failing run was kept.
    pub kept: Option<String>,
    /// With several validators (`--validators N`): each validator's verdict, `v1` first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<ValidatorReport>,
}

impl RunResult {
    pub fn new(scenario: &'static str, run: u32, seed: u64) -> RunResult {
        RunResult {
            scenario,
            run,
            seed,
            active_before: None,
            expect: None,
            judgement: Judgement::default(),
            reads: 0,
            notes: Vec::new(),
            error: None,
            kept: None,
            validators: Vec::new(),
        }
    }

    pub fn failed(&self) -> bool {
        self.error.is_some() || !self.judgement.violations.is_empty()
    }

    /// One line for the progress output.
    pub fn line(&self) -> String {
        let j = &self.judgement;
        let mut s = format!(
            "{:<17} run {:<3} {}  active {}  failover {}  missed {}  signer changes {}  closest handover {}  watermark reads {}",
            self.scenario,
            self.run,
            if self.failed() { "FAIL" } else { "ok  " },
            self.active_before.as_deref().unwrap_or("-"),
            j.failover_s.map_or("-".into(), |s| format!("{s:.2} s")),
            j.missed_heights,
            j.failovers,
            j.closest_handover_ms.map_or("-".into(), |ms| format!("{ms:.0} ms")),
            self.reads,
        );
        if let Some(ms) = j.death_margin_ms {
            s.push_str(&format!("  old node dead {ms:.0} ms before the new active signed"));
        }
        if j.late_signatures > 0 {
            s.push_str(&format!("  late signatures {}", j.late_signatures));
        }
        if !self.notes.is_empty() {
            s.push_str(&format!("  [{}]", self.notes.join("; ")));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!("\n    error: {e}"));
        }
        for v in &self.validators {
            s.push_str(&format!("\n    {}", v.line()));
        }
        for v in &j.violations {
            s.push_str(&format!("\n    VIOLATION {v}"));
        }
        for r in &j.residual {
            s.push_str(&format!("\n    residual risk (measured, not judged): {r}"));
        }
        if let Some(k) = &self.kept {
            s.push_str(&format!("\n    evidence kept in {k}"));
        }
        s
    }
}

#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    pub scenario: &'static str,
    pub skipped: Option<String>,
    pub runs: Vec<RunResult>,
}

#[derive(Debug, Serialize)]
struct Summary {
    runs: usize,
    failed_runs: usize,
    violations: usize,
    failover_s_p50: Option<f64>,
    failover_s_p90: Option<f64>,
    failover_s_max: Option<f64>,
    missed_p50: Option<u64>,
    missed_max: Option<u64>,
    /// The old node's observed death to the new active's first signature.
    death_margin_ms_p50: Option<f64>,
    death_margin_ms_min: Option<f64>,
    death_margin_ms_max: Option<f64>,
    death_margins: usize,
    runs_with_late_signatures: usize,
    late_signatures: usize,
    late_signatures_max: Option<usize>,
    runs_with_residual: usize,
    residual_overlap_ms_p50: Option<f64>,
    residual_overlap_ms_max: Option<f64>,
}

impl ScenarioReport {
    pub fn new(scenario: &'static str) -> ScenarioReport {
        ScenarioReport { scenario, skipped: None, runs: Vec::new() }
    }

    /// Violations plus runs that could not be carried out.
    pub fn violations(&self) -> usize {
        self.runs.iter().map(|r| r.judgement.violations.len() + usize::from(r.error.is_some())).sum()
    }

    fn summary(&self) -> Summary {
        let mut times: Vec<f64> = self.runs.iter().filter_map(|r| r.judgement.failover_s).collect();
        times.sort_by(f64::total_cmp);
        let mut missed: Vec<u64> = self.runs.iter().map(|r| r.judgement.missed_heights).collect();
        missed.sort_unstable();
        let mut margins: Vec<f64> = self.runs.iter().filter_map(|r| r.judgement.death_margin_ms).collect();
        margins.sort_by(f64::total_cmp);
        let mut late: Vec<usize> = self.runs.iter().map(|r| r.judgement.late_signatures).collect();
        late.sort_unstable();
        let mut residual: Vec<f64> = self.runs.iter().filter_map(|r| r.judgement.residual_overlap_ms).collect();
        residual.sort_by(f64::total_cmp);
        Summary {
            death_margin_ms_p50: percentile(&margins, 50),
            death_margin_ms_min: margins.first().copied(),
            death_margin_ms_max: margins.last().copied(),
            death_margins: margins.len(),
            runs_with_late_signatures: late.iter().filter(|n| **n > 0).count(),
            late_signatures: late.iter().sum(),
            late_signatures_max: late.last().copied(),
            runs_with_residual: residual.len(),
            residual_overlap_ms_p50: percentile(&residual, 50),
            residual_overlap_ms_max: residual.last().copied(),
            runs: self.runs.len(),
            failed_runs: self.runs.iter().filter(|r| r.failed()).count(),
            violations: self.violations(),
            failover_s_p50: percentile(&times, 50),
            failover_s_p90: percentile(&times, 90),
            failover_s_max: times.last().copied(),
            missed_p50: percentile(&missed, 50),
            missed_max: missed.last().copied(),
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile<T: Copy>(sorted: &[T], p: usize) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{s:.2}"))
}

fn count(v: Option<u64>) -> String {
    v.map_or("-".into(), |n| n.to_string())
}

/// How the lab's members reached each other, for a header: directly, or through a WAN.
fn network(wan: Option<&Wan>) -> String {
    wan.map_or("no WAN".into(), |w| format!("WAN {}", w.describe()))
}

/// A WAN's settings as JSON (`null` without one).
fn wan_json(wan: Option<&Wan>) -> serde_json::Value {
    wan.map_or(
        serde_json::Value::Null,
        |w| serde_json::json!({ "rtt_ms": w.rtt.as_secs_f64() * 1e3, "jitter_ms": w.jitter.as_secs_f64() * 1e3 }),
    )
}

pub fn print(reports: &[ScenarioReport], seed: u64, namespaces: bool, wan: Option<&Wan>, json: bool) {
    let validators = validator_summaries(reports);
    if json {
        #[derive(Serialize)]
        struct Scenario<'a> {
            #[serde(flatten)]
            report: &'a ScenarioReport,
            summary: Summary,
        }
        let mut out = serde_json::json!({
            "seed": seed,
            "lab": if namespaces { "namespaces" } else { "loopback" },
            "wan": wan_json(wan),
            "scenarios": reports.iter().map(|r| Scenario { report: r, summary: r.summary() }).collect::<Vec<_>>(),
        });
        if !validators.is_empty() {
            out["validators"] = serde_json::to_value(&validators).unwrap_or_default();
        }
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return;
    }
    println!();
    let served = if validators.is_empty() { String::new() } else { format!(", {} validators", validators.len()) };
    println!(
        "seed {seed}, {} lab, {}{served}",
        if namespaces { "network-namespace" } else { "loopback" },
        network(wan)
    );
    println!(
        "{:<17} {:>4} {:>6}  {:>21}  {:>13}  {:>10}",
        "scenario", "runs", "failed", "failover s p50/p90/max", "missed p50/max", "violations"
    );
    for r in reports {
        if let Some(why) = &r.skipped {
            println!("{:<17} skipped: {why}", r.scenario);
            continue;
        }
        let s = r.summary();
        println!(
            "{:<17} {:>4} {:>6}  {:>21}  {:>13}  {:>10}",
            r.scenario,
            s.runs,
            s.failed_runs,
            format!("{}/{}/{}", secs(s.failover_s_p50), secs(s.failover_s_p90), secs(s.failover_s_max)),
            format!("{}/{}", count(s.missed_p50), count(s.missed_max)),
            s.violations
        );
    }
    print_handovers(reports);
    print_validators(&validators);
    let total: usize = reports.iter().map(ScenarioReport::violations).sum();
    println!("{}", if total == 0 { "no violations".to_string() } else { format!("{total} VIOLATIONS") });
}

/// One validator over every run of a multi-validator series: its broken invariants and its
/// liveness.
#[derive(Debug, Default, Serialize)]
pub struct ValidatorSummary {
    pub validator: String,
    pub runs: usize,
    pub s1_violations: usize,
    pub s2_violations: usize,
    pub s3_violations: usize,
    pub signatures: usize,
    pub missed_p50: Option<u64>,
    pub missed_max: Option<u64>,
    /// Runs at whose end no producer was signing it (a liveness note, not a violation).
    pub runs_not_signed_at_end: usize,
}

/// Every validator's [`ValidatorSummary`] over `reports`, in the order the runs list them;
/// empty with one validator.
pub fn validator_summaries(reports: &[ScenarioReport]) -> Vec<ValidatorSummary> {
    let mut out: Vec<ValidatorSummary> = Vec::new();
    let mut missed: Vec<Vec<u64>> = Vec::new();
    for v in reports.iter().flat_map(|r| &r.runs).flat_map(|run| &run.validators) {
        let at = match out.iter().position(|s| s.validator == v.validator) {
            Some(at) => at,
            None => {
                out.push(ValidatorSummary { validator: v.validator.clone(), ..ValidatorSummary::default() });
                missed.push(Vec::new());
                out.len() - 1
            }
        };
        let s = &mut out[at];
        s.runs += 1;
        s.s1_violations += v.broken("S1");
        s.s2_violations += v.broken("S2");
        s.s3_violations += v.broken("S3");
        s.signatures += v.signatures;
        s.runs_not_signed_at_end += usize::from(!v.signing_at_end);
        missed[at].push(v.missed_heights);
    }
    for (s, mut m) in out.iter_mut().zip(missed) {
        m.sort_unstable();
        s.missed_p50 = percentile(&m, 50);
        s.missed_max = m.last().copied();
    }
    out
}

/// The table per validator (several validators only).
fn print_validators(summaries: &[ValidatorSummary]) {
    if summaries.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<10} {:>4}  {:>11}  {:>10}  {:>14}  {:>21}",
        "validator", "runs", "S1/S2/S3", "signatures", "missed p50/max", "runs not signed at end"
    );
    for s in summaries {
        println!(
            "{:<10} {:>4}  {:>11}  {:>10}  {:>14}  {:>22}",
            s.validator,
            s.runs,
            format!("{}/{}/{}", s.s1_violations, s.s2_violations, s.s3_violations),
            s.signatures,
            format!("{}/{}", count(s.missed_p50), count(s.missed_max)),
            s.runs_not_signed_at_end
        );
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |m| format!("{m:.0}"))
}

/// The second table: for scenarios whose runs saw the old node die or sign late, how far its
/// death came before the new active's first signature, its late signatures, and the overlaps
/// measured as residual risk.
fn print_handovers(reports: &[ScenarioReport]) {
    let rows: Vec<(&ScenarioReport, Summary)> = reports
        .iter()
        .map(|r| (r, r.summary()))
        .filter(|(_, s)| s.death_margins > 0 || s.late_signatures > 0 || s.runs_with_residual > 0)
        .collect();
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<17} {:>4}  {:>30}  {:>22}  {:>26}",
        "scenario",
        "runs",
        "old node dead before ms p50/min/max",
        "late signatures runs/total/max",
        "residual overlap runs ms p50/max"
    );
    for (r, s) in rows {
        println!(
            "{:<17} {:>4}  {:>35}  {:>30}  {:>32}",
            r.scenario,
            s.runs,
            format!(
                "{}/{}/{} (n={})",
                ms(s.death_margin_ms_p50),
                ms(s.death_margin_ms_min),
                ms(s.death_margin_ms_max),
                s.death_margins
            ),
            format!("{}/{}/{}", s.runs_with_late_signatures, s.late_signatures, s.late_signatures_max.unwrap_or(0)),
            format!("{} {}/{}", s.runs_with_residual, ms(s.residual_overlap_ms_p50), ms(s.residual_overlap_ms_max)),
        );
    }
}

/// Heights after `last_old` (the last the old active signed) and before `first_new` (the first
/// the new active signed) that nobody signed, from the ledger: what a failover cost in blocks.
pub fn skipped_heights(records: &[SignatureRecord], last_old: u64, first_new: u64) -> u64 {
    let between = last_old.saturating_add(1)..first_new;
    let signed: std::collections::BTreeSet<u64> =
        records.iter().map(|r| r.height).filter(|h| between.contains(h)).collect();
    (first_new.saturating_sub(last_old.saturating_add(1))).saturating_sub(signed.len() as u64)
}

/// What the benchmark measured, run by run.
pub struct BenchFigures<'a> {
    /// Seconds from the kill to the new active's first signature (infinite: it never came).
    pub times: &'a [f64],
    /// Heights skipped per failover ([`skipped_heights`]).
    pub skipped: &'a [u64],
    pub timings: &'a Timings,
    pub wan: Option<&'a Wan>,
}

/// What docs/design.md §9 asks of an unplanned failover in this run's setting. Key-holding: p99
/// within `lease_ttl` + 1 s. Signer mode at its defaults: p50 ≤ 0.5 s and p99 ≤ 0.8 s on loopback;
/// across a WAN of up to 100 ms round trip, p50 ≤ 1.0 s; beyond that, no target.
#[derive(Debug, PartialEq)]
pub struct FailoverTarget {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub text: String,
}

impl FailoverTarget {
    pub fn for_run(signer: bool, lease_ttl: std::time::Duration, wan: Option<&Wan>) -> Self {
        let rtt = wan.map_or(std::time::Duration::ZERO, |w| w.rtt + w.jitter);
        if !signer {
            let p99 = (lease_ttl + std::time::Duration::from_secs(1)).as_secs_f64();
            return Self {
                p50: None,
                p99: Some(p99),
                text: format!("key-holding p99 <= lease_ttl + 1 s = {p99:.2} s"),
            };
        }
        if rtt.is_zero() {
            return Self {
                p50: Some(0.5),
                p99: Some(0.8),
                text: "signer mode on loopback p50 <= 0.50 s, p99 <= 0.80 s".into(),
            };
        }
        if rtt <= std::time::Duration::from_millis(100) {
            return Self {
                p50: Some(1.0),
                p99: None,
                text: "signer mode across a WAN of up to 100 ms round trip p50 <= 1.00 s".into(),
            };
        }
        Self { p50: None, p99: None, text: "signer mode beyond 100 ms round trip".into() }
    }

    /// Whether the figures meet every bound this target sets (`None`: it sets none).
    pub fn met(&self, p50: Option<f64>, p99: Option<f64>) -> Option<bool> {
        let within = |bound: Option<f64>, figure: Option<f64>| bound.map(|b| figure.is_some_and(|f| f <= b));
        match (within(self.p50, p50), within(self.p99, p99)) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(true) && b.unwrap_or(true)),
        }
    }
}

/// Prints the benchmark; exit 1 on a safety violation or a run that never failed over.
pub fn print_bench(f: &BenchFigures, double_signs: usize, overlaps: usize, json: bool, signer: bool) -> ExitCode {
    let (times, t) = (f.times, f.timings);
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut m = f.skipped.to_vec();
    m.sort_unstable();
    let target = FailoverTarget::for_run(signer, t.lease_ttl, f.wan);
    let (p50, p99, max) = (percentile(&sorted, 50), percentile(&sorted, 99), sorted.last().copied());
    let failed = sorted.iter().filter(|s| !s.is_finite()).count();
    if json {
        let out = serde_json::json!({
            "runs": times.len(),
            "failover_s": { "p50": p50, "p99": p99, "max": max, "all": times },
            "heights_skipped": { "n": m.len(), "p50": percentile(&m, 50), "max": m.last(), "all": f.skipped },
            "target": { "p50_s": target.p50, "p99_s": target.p99, "text": target.text, "met": target.met(p50, p99) },
            "wan": wan_json(f.wan),
            "settings": {
                "lease_ttl_ms": t.lease_ttl.as_millis() as u64,
                "renew_interval_ms": t.renew_interval.as_millis() as u64,
                "safety_margin_ms": t.safety_margin.as_millis() as u64,
                "raft_tick_ms": t.tick.as_millis() as u64,
                "block_ms": t.block.as_millis() as u64,
            },
            "runs_without_failover": failed,
            "double_signs": double_signs,
            "s1_overlaps": overlaps,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!();
        println!(
            "unplanned failover (kill -9 of the active's daemon and node -> first height signed by the new active)"
        );
        println!(
            "settings: lease_ttl {} ms, renew {} ms, safety_margin {} ms, raft tick {} ms, blocks {} ms ({}), {}",
            t.lease_ttl.as_millis(),
            t.renew_interval.as_millis(),
            t.safety_margin.as_millis(),
            t.tick.as_millis(),
            t.block.as_millis(),
            if signer { "signer mode, cometbft-signer" } else { "docs/design.md §9 defaults" },
            network(f.wan),
        );
        println!(
            "runs {}   failover p50 {} s   p99 {} s   max {} s   heights skipped per failover n={} p50 {} max {}",
            times.len(),
            secs(p50),
            secs(p99),
            secs(max),
            m.len(),
            count(percentile(&m, 50)),
            count(m.last().copied())
        );
        let verdict = match target.met(p50, p99) {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "no target at this round trip",
        };
        println!("target (docs/design.md §9): {}: {verdict}", target.text);
        println!("double signs {double_signs}, S1 overlaps {overlaps}, runs without failover {failed}");
    }
    if double_signs > 0 || overlaps > 0 || failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_validator_is_summed_over_every_run_and_one_validator_has_no_summary() {
        let validator = |id: &str, missed: u64, at_end: bool, violations: &[&str]| ValidatorReport {
            validator: id.into(),
            signatures: 10,
            missed_heights: missed,
            signing_at_end: at_end,
            violations: violations.iter().map(|v| v.to_string()).collect(),
            ..ValidatorReport::default()
        };
        let mut one = RunResult::new("kill-daemon", 1, 7);
        one.validators = vec![validator("v1", 3, true, &[]), validator("v2", 0, false, &["S2: key v2 double-signed"])];
        let mut two = RunResult::new("kill-node", 1, 8);
        two.validators = vec![validator("v1", 5, true, &[]), validator("v2", 1, true, &["S3: b read", "S1: a and b"])];
        let reports = [
            ScenarioReport { scenario: "kill-daemon", skipped: None, runs: vec![one] },
            ScenarioReport { scenario: "kill-node", skipped: None, runs: vec![two] },
        ];
        let s = validator_summaries(&reports);
        assert_eq!(s.iter().map(|x| x.validator.as_str()).collect::<Vec<_>>(), ["v1", "v2"]);
        assert_eq!((s[0].runs, s[0].signatures, s[0].missed_p50, s[0].missed_max), (2, 20, Some(3), Some(5)));
        assert_eq!(
            (s[1].s1_violations, s[1].s2_violations, s[1].s3_violations, s[1].runs_not_signed_at_end),
            (1, 1, 1, 1)
        );
        let single = [ScenarioReport {
            scenario: "kill-daemon",
            skipped: None,
            runs: vec![RunResult::new("kill-daemon", 1, 7)],
        }];
        assert!(validator_summaries(&single).is_empty());
        assert!(!serde_json::to_string(&single[0].runs[0]).unwrap_or_default().contains("validators"));
    }

    #[test]
    fn the_failover_target_follows_the_mode_and_the_round_trip() {
        use std::time::Duration;
        let wan = |ms| Wan { rtt: Duration::from_millis(ms), jitter: Duration::ZERO };
        let key_holding = FailoverTarget::for_run(false, Duration::from_secs(3), None);
        assert_eq!((key_holding.p50, key_holding.p99), (None, Some(4.0)));
        assert_eq!(key_holding.met(Some(3.3), Some(3.9)), Some(true));
        assert_eq!(key_holding.met(Some(3.3), Some(4.1)), Some(false));
        let loopback = FailoverTarget::for_run(true, Duration::from_millis(300), None);
        assert_eq!(loopback.met(Some(0.42), Some(0.76)), Some(true));
        assert_eq!(loopback.met(Some(0.52), Some(0.76)), Some(false), "p50 counts too");
        assert_eq!(loopback.met(None, None), Some(false), "no figures meet no target");
        let wan100 = FailoverTarget::for_run(true, Duration::from_millis(300), Some(&wan(100)));
        assert_eq!(wan100.met(Some(0.94), Some(2.37)), Some(true), "at 100 ms only p50 is bounded");
        assert_eq!(wan100.met(Some(1.01), Some(1.1)), Some(false));
        assert_eq!(
            FailoverTarget::for_run(true, Duration::from_millis(300), Some(&wan(150))).met(Some(9.0), None),
            None
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50), Some(10));
        assert_eq!(percentile(&v, 90), Some(18));
        assert_eq!(percentile(&v, 99), Some(20));
        assert_eq!(percentile::<u64>(&[], 50), None);
        assert_eq!(percentile(&[7u64], 99), Some(7));
    }

    fn record(member: &str, height: u64) -> SignatureRecord {
        use failover::domain::{KeyId, MemberId, Step};
        SignatureRecord {
            key: KeyId::new("validator").expect("a key id"),
            height,
            round: 0,
            step: Step::Precommit,
            payload: "00".into(),
            member: MemberId::new(member).expect("a member id"),
            mono_ns: height * 1000,
            wall_ms: 0,
        }
    }

    #[test]
    fn skipped_heights_count_only_the_heights_between_that_nobody_signed() {
        // a signed up to 10, b took over at 15; 12 was signed (by a late record) in between.
        let records: Vec<SignatureRecord> =
            [("a", 9), ("a", 10), ("a", 12), ("b", 15), ("b", 16)].iter().map(|(m, h)| record(m, *h)).collect();
        assert_eq!(skipped_heights(&records, 10, 15), 3, "11, 13 and 14");
        assert_eq!(skipped_heights(&records, 10, 11), 0, "no height between");
        assert_eq!(skipped_heights(&records, 16, 15), 0, "a new active below the old one skips nothing");
    }
}
