//! Judges one run from the evidence, never from what the daemons say about themselves:
//! S1 from the nodes' activation log, S2 from the signature ledger, S3 from every watermark
//! read the observer made, L1 and L2 from who signed which height when.
//!
//! With several validators on one cluster (`--validators N`), every validator's safety is judged
//! on its own evidence ([`judge_validator`]): S2 from its ledger, S1 from its activation log, S3
//! from the watermark reads of it; its liveness is measured, not judged.
//!
//! The rogue-peer scenario is judged here too ([`judge_rogue`]): every answer the hostile client
//! got against [`ROGUE_RULES`], the members' own refusal counters, lease, raft term and views.
//!
//! Pure functions over plain data: the runner gathers the evidence, this module only reads it.

use std::collections::BTreeMap;
use std::time::Duration;

use failover::sim::activation::{self, ActivationRecord};
use failover::sim::checker;
use failover::sim::ledger::SignatureRecord;
use serde::Serialize;

use crate::rogue::{Answers, Attack, Outcome, code_name};

/// One successful read of the key's watermark through a member's control API, with the
/// instants (`CLOCK_MONOTONIC`) the call started and returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WatermarkRead {
    pub member: String,
    pub start_ns: u64,
    pub end_ns: u64,
    /// (height, round, step), compared in that order as HRS are.
    pub hrs: (u64, u32, u32),
}

/// What a scenario's fault should do to the active producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Another member must take over within the L1 limit.
    Failover,
    /// The fault touches only the store or a standby: the active must stay (L2).
    NoFailover,
    /// Either is correct; only safety and a producer at the end are required.
    Either,
}

/// What the runner gathered for one run.
pub struct Evidence<'a> {
    pub records: &'a [SignatureRecord],
    pub activations: &'a [ActivationRecord],
    pub reads: &'a [WatermarkRead],
    /// When the fault began.
    pub fault_at_ns: u64,
    /// When observation ended.
    pub end_ns: u64,
    /// The member that was signing when the fault began.
    pub active_before: String,
    pub expect: Expect,
    /// More changes of signer than this in one run is flapping (L2).
    pub max_failovers: usize,
    pub l1_limit: Duration,
    /// Whether exactly one producer was signing when the run ended.
    pub active_at_end: bool,
    /// Daemon or node processes that died of a panic or a fatal signal.
    pub crashes: Vec<String>,
    /// Signer mode: every signature waits for a store commit.
    pub signer_mode: bool,
    /// The active's whole host was paused (freeze-host): an overlap of its node with the new
    /// active is the residual risk the run measures, not a violation.
    pub host_freeze: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Judgement {
    /// From the fault to the first height signed by another member.
    pub failover_s: Option<f64>,
    pub missed_heights: u64,
    /// Changes of signer over the whole run.
    pub failovers: usize,
    /// The closest one member's node came to another's being able to sign (negative: overlap).
    pub closest_handover_ms: Option<f64>,
    /// From the observed death of the node that was signing at the fault to the first height
    /// signed by another member; negative when the new active signed first.
    pub death_margin_ms: Option<f64>,
    /// Signatures by the member active before the fault made after another member took over,
    /// while that member still signed.
    pub late_signatures: usize,
    /// Overlaps measured as a known residual risk (freeze-host in key-holding mode).
    pub residual: Vec<String>,
    /// The longest of those overlaps.
    pub residual_overlap_ms: Option<f64>,
    pub violations: Vec<String>,
}

pub fn judge(e: &Evidence) -> Judgement {
    let mut j = Judgement::default();
    let mut records: Vec<&SignatureRecord> = e.records.iter().collect();
    records.sort_by_key(|r| r.mono_ns);

    // S2: no two signatures by one key at one HRS over different payloads.
    let report = checker::check(e.records);
    j.violations.extend(double_signs(&report));
    j.missed_heights = report.missed_heights();

    let windows = activation::windows(e.activations, e.end_ns);
    judge_s1(e, &windows, &mut j);

    // S3: no read returns less than a read that had completed before it started.
    j.violations.extend(watermark_regressions(e.reads));

    let first_other = judge_handover(e, &records, &windows, &mut j);
    match e.expect {
        Expect::Failover => match j.failover_s {
            None => j.violations.push(format!("L1: no other member signed after the fault on {}", e.active_before)),
            Some(s) if s > e.l1_limit.as_secs_f64() => j.violations.push(format!(
                "L1: the first height by another member came {s:.2} s after the fault (limit {:.2} s)",
                e.l1_limit.as_secs_f64()
            )),
            Some(_) => {}
        },
        Expect::NoFailover => {
            if first_other {
                j.violations.push(format!(
                    "L2: {} lost production to another member during a fault that only touched the store or a standby",
                    e.active_before
                ));
            } else if !e.signer_mode {
                // Demoted and promoted again (a self-fence, then a new lease): no change of
                // signer, but the active was demoted all the same. Only heights missed while its
                // node was stopped say so: a node that stalls (its ledger fsync on a busy disk)
                // misses heights while still running, which is no doing of failoverd. In signer
                // mode each signature waits for a store commit, so a store fault delays
                // signatures without any demotion (safety before liveness): the missed heights
                // are reported, not judged.
                let demoted = missed_while_stopped(&records, &windows, &e.active_before);
                if demoted > 0 {
                    j.violations.push(format!(
                        "L2: {} stopped producing for {demoted} heights, its node was stopped, during a fault that only touched the store or a standby",
                        e.active_before
                    ));
                }
            }
        }
        Expect::Either => {}
    }
    if j.failovers > e.max_failovers {
        j.violations.push(format!(
            "L2: the signer changed {} times in one run (at most {} expected): flapping",
            j.failovers, e.max_failovers
        ));
    }
    if !e.active_at_end {
        j.violations.push("L1: no single producer was signing when the run ended, after the fault had healed".into());
    }
    for c in &e.crashes {
        j.violations.push(format!("crash: {c}"));
    }
    j
}

/// Whether window `w` is the old active's node, the one that could sign when the fault began.
fn old_node(e: &Evidence, w: &activation::Window) -> bool {
    w.member.as_str() == e.active_before && w.from_ns <= e.fault_at_ns && w.to_ns > e.fault_at_ns
}

/// S1: no two nodes able to sign at once. A window ends only where a node was turned off or its
/// process was seen dead (the death watch), never at the end of a lease. On a paused host
/// (freeze-host) the old node's overlap is the residual risk the run measures.
fn judge_s1(e: &Evidence, windows: &[activation::Window], j: &mut Judgement) {
    let s1 = overlaps(windows, |w| e.host_freeze && old_node(e, w));
    j.violations.extend(s1.violations);
    j.residual_overlap_ms = s1.residual.iter().map(|(_, ms)| *ms).reduce(f64::max);
    j.residual.extend(s1.residual.into_iter().map(|(text, _)| text));
    j.closest_handover_ms = activation::closest_handover_ns(windows).map(|ns| ns as f64 / 1e6);
}

/// The S2 violations of one ledger's check: each double sign, with its key, HRS and signers.
fn double_signs(report: &checker::LedgerReport) -> Vec<String> {
    report
        .double_signs
        .iter()
        .map(|d| format!("S2: key {} double-signed at {} by {} and {}", d.key, d.hrs, d.first.member, d.second.member))
        .collect()
}

/// S1's findings over one validator's windows.
struct S1Findings {
    violations: Vec<String>,
    /// Overlaps measured as residual risk, with their length in ms.
    residual: Vec<(String, f64)>,
}

/// Every overlap of two windows: a violation, or residual risk when `paused` says one of its
/// windows is the node of a paused host.
fn overlaps(windows: &[activation::Window], paused: impl Fn(&activation::Window) -> bool) -> S1Findings {
    let mut found = S1Findings { violations: Vec::new(), residual: Vec::new() };
    for o in activation::overlaps(windows, 0) {
        let ms = o.overlap_ns as f64 / 1e6;
        let text = format!("S1: {} and {} could both sign for {ms:.1} ms", o.first.member, o.second.member);
        if paused(&o.first) || paused(&o.second) {
            found.residual.push((format!("{text} (a paused host's node outlives its lease until it resumes)"), ms));
        } else {
            found.violations.push(text);
        }
    }
    found
}

/// What one validator of a lab serving several (`--validators N`) left behind: its own ledger,
/// activation log and watermark reads.
pub struct ValidatorEvidence<'a> {
    pub id: &'a str,
    pub records: &'a [SignatureRecord],
    pub activations: &'a [ActivationRecord],
    pub reads: &'a [WatermarkRead],
    /// When the fault began: liveness is measured from the last signature before it.
    pub fault_at_ns: u64,
    pub end_ns: u64,
    /// Signer mode: its activation log holds no signing windows, so S1 has nothing to check.
    pub signer_mode: bool,
    /// Freeze-host, for the validator whose node was paused with its host: that member and the
    /// fault's instant; an overlap of its node that could sign then is residual risk.
    pub paused: Option<(&'a str, u64)>,
    /// Whether some producer was signing it when the run ended.
    pub signing_at_end: bool,
}

/// One validator's verdict and liveness in one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ValidatorReport {
    pub validator: String,
    /// Signatures over the whole run (what S2 read).
    pub signatures: usize,
    /// From its last signature before the fault on: the distinct heights signed, and the first
    /// and last of them.
    pub heights: usize,
    pub first_height: Option<u64>,
    pub last_height: Option<u64>,
    /// Likewise: heights between two signatures nobody signed, and the longest such run.
    pub missed_heights: u64,
    pub longest_gap: u64,
    /// Likewise: the members that signed it, and how often the signer changed.
    pub signers: Vec<String>,
    pub signer_changes: usize,
    pub signing_at_end: bool,
    pub watermark_reads: usize,
    /// Whether S1 had windows to check (key-holding mode).
    pub s1_checked: bool,
    /// Its S1, S2 and S3 violations, each starting with the invariant's name.
    pub violations: Vec<String>,
    /// Overlaps measured as residual risk (freeze-host, the faulted validator).
    pub residual: Vec<String>,
    /// Liveness worth a look, never a violation: no producer signing it at the end.
    pub notes: Vec<String>,
}

impl ValidatorReport {
    /// Its violations of `invariant` (`S1`, `S2`, `S3`).
    pub fn broken(&self, invariant: &str) -> usize {
        self.violations.iter().filter(|v| v.split(':').next() == Some(invariant)).count()
    }

    /// `v2: S1 ok, S2 ok (412 signatures), S3 ok (150 reads); since the fault: heights 3-410 by
    /// b, …`.
    pub fn line(&self) -> String {
        let verdict = |invariant: &str| match self.broken(invariant) {
            0 => "ok".to_string(),
            n => format!("BROKEN ×{n}"),
        };
        let s1 = if self.s1_checked { verdict("S1") } else { "- (signer mode)".into() };
        let heights = match (self.first_height, self.last_height) {
            (Some(first), Some(last)) => format!("heights {first}-{last} by {}", self.signers.join("+")),
            _ => "no height signed".into(),
        };
        let mut line = format!(
            "{}: S1 {s1}, S2 {} ({} signatures), S3 {} ({} reads); since the fault: {heights}, missed {} (longest gap {}), signer changes {}; {}",
            self.validator,
            verdict("S2"),
            self.signatures,
            verdict("S3"),
            self.watermark_reads,
            self.missed_heights,
            self.longest_gap,
            self.signer_changes,
            if self.signing_at_end { "signing at the end" } else { "NOT signed at the end" },
        );
        for note in &self.notes {
            line.push_str(&format!("; liveness: {note}"));
        }
        line
    }
}

/// Judges one validator of a lab serving several on its own evidence: S2 (no HRS signed twice in
/// its ledger), S1 (no two of its nodes able to sign at once, key-holding mode) and S3 (no
/// watermark read of it lower than one completed before), and measures its liveness.
pub fn judge_validator(e: &ValidatorEvidence) -> ValidatorReport {
    let report = checker::check(e.records);
    let mut r = ValidatorReport {
        validator: e.id.to_string(),
        signatures: e.records.len(),
        signing_at_end: e.signing_at_end,
        watermark_reads: e.reads.len(),
        s1_checked: !e.signer_mode,
        violations: double_signs(&report),
        ..ValidatorReport::default()
    };
    let windows = activation::windows(e.activations, e.end_ns);
    let paused = |w: &activation::Window| {
        e.paused.is_some_and(|(member, at)| w.member.as_str() == member && w.from_ns <= at && w.to_ns > at)
    };
    let s1 = overlaps(&windows, paused);
    r.violations.extend(s1.violations);
    r.residual = s1.residual.into_iter().map(|(text, _)| text).collect();
    r.violations.extend(watermark_regressions(e.reads));
    measure_liveness(e, &mut r);
    if !e.signing_at_end {
        r.notes.push("no producer was signing it when the run ended, after the fault had healed".into());
    }
    r
}

/// A validator's liveness from its last signature before the fault on (from its first when it
/// signed nothing before): heights signed, heights missed between them, signers and their changes.
fn measure_liveness(e: &ValidatorEvidence, r: &mut ValidatorReport) {
    let mut records: Vec<&SignatureRecord> = e.records.iter().collect();
    records.sort_by_key(|x| x.mono_ns);
    let from = records.iter().rposition(|x| x.mono_ns <= e.fault_at_ns).unwrap_or(0);
    let records = &records[from..];
    r.signer_changes = records.windows(2).filter(|w| w[0].member != w[1].member).count();
    let heights: std::collections::BTreeSet<u64> = records.iter().map(|x| x.height).collect();
    r.heights = heights.len();
    r.first_height = heights.first().copied();
    r.last_height = heights.last().copied();
    let gaps: Vec<u64> = heights.iter().zip(heights.iter().skip(1)).map(|(a, b)| b - a - 1).collect();
    r.missed_heights = gaps.iter().sum();
    r.longest_gap = gaps.iter().copied().max().unwrap_or(0);
    let mut signers: Vec<String> = records.iter().map(|x| x.member.to_string()).collect();
    signers.sort();
    signers.dedup();
    r.signers = signers;
}

/// The handover after the fault: when another member first signed, how long before that the old
/// node was seen dead, the old active's late signatures, and the changes of signer. Returns
/// whether another member signed after the fault.
fn judge_handover(
    e: &Evidence,
    records: &[&SignatureRecord],
    windows: &[activation::Window],
    j: &mut Judgement,
) -> bool {
    let first_other = records.iter().find(|r| r.mono_ns > e.fault_at_ns && r.member.as_str() != e.active_before);
    j.failover_s = first_other.map(|r| (r.mono_ns - e.fault_at_ns) as f64 / 1e9);
    // Late: the old active signed after another member had taken over, while that member still
    // signed (a hand-back later in the run, which the other member stopped for, is not late).
    let others_last = records.iter().filter(|r| r.member.as_str() != e.active_before).map(|r| r.mono_ns).max();
    let late = |r: &SignatureRecord| {
        first_other.is_some_and(|first| {
            r.member.as_str() == e.active_before
                && r.mono_ns > first.mono_ns
                && others_last.is_some_and(|last| r.mono_ns < last)
        })
    };
    j.late_signatures = records.iter().filter(|r| late(r)).count();
    // A paused host's node signing after it resumes is the residual risk measured in S1, not
    // production moving back and forth: its late signatures are not counted as signer changes.
    let changes: Vec<&&SignatureRecord> = records.iter().filter(|r| !(e.host_freeze && late(r))).collect();
    j.failovers = changes.windows(2).filter(|w| w[0].member != w[1].member).count();
    if let Some(first) = first_other {
        j.death_margin_ms = windows
            .iter()
            .filter(|w| old_node(e, w) && w.to_ns < e.end_ns)
            .map(|w| w.to_ns)
            .max()
            .map(|died| (i128::from(first.mono_ns) - i128::from(died)) as f64 / 1e6);
    }
    first_other.is_some()
}

/// What a member must answer to one kind of hostile traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Must {
    /// Never accept it; whether the connection fails or the request is refused does not matter
    /// (a TLS handshake without a member certificate never reaches the peer service).
    NotAccept,
    /// Refuse it with this code, every time.
    Refuse(tonic::Code),
    /// Accept it at the transport (it comes honestly from a member's certificate), and then
    /// refuse it further in, raising the counter named beside it.
    Accept,
}

/// docs/design.md §5 (trust model), one line per attack: what the member must answer, and which
/// `failoverd_peer_refusals_total` reason each such answer adds to.
pub const ROGUE_RULES: [(Attack, Must, Option<&str>); 10] = [
    (Attack::Plaintext, Must::NotAccept, None),
    (Attack::NoCertificate, Must::NotAccept, None),
    (Attack::OperatorCertificate, Must::Refuse(tonic::Code::PermissionDenied), Some("not_a_member")),
    (Attack::SpoofedBatch, Must::Refuse(tonic::Code::PermissionDenied), Some("spoofed_sender")),
    (Attack::SpoofedMessage, Must::Refuse(tonic::Code::InvalidArgument), Some("malformed")),
    (Attack::SpoofedStatus, Must::Refuse(tonic::Code::PermissionDenied), Some("spoofed_sender")),
    (Attack::GroupBomb, Must::Refuse(tonic::Code::InvalidArgument), Some("malformed")),
    (Attack::SnapshotTakeover, Must::Accept, Some("snapshot")),
    (Attack::SnapshotInvalidConf, Must::Accept, Some("snapshot")),
    (Attack::SnapshotUndecodable, Must::Accept, Some("snapshot")),
];

fn rule(attack: Attack) -> (Must, Option<&'static str>) {
    ROGUE_RULES.iter().find(|(a, _, _)| *a == attack).map_or((Must::NotAccept, None), |(_, m, r)| (*m, *r))
}

/// A member's lease, raft term and raft failure as its control API reported them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState {
    pub holder: String,
    pub epoch: u64,
    pub term: u64,
    /// Why its raft node stopped; empty while it runs.
    pub failed: String,
}

/// What the rogue-peer scenario gathered, beyond the usual evidence.
#[derive(Clone, Debug, Default)]
pub struct RogueEvidence {
    /// Member names, by index.
    pub members: Vec<String>,
    pub answers: Answers,
    /// Each member's refusal counters by reason before the attack and after it was processed.
    pub refusals_before: Vec<Option<BTreeMap<String, u64>>>,
    pub refusals_after: Vec<Option<BTreeMap<String, u64>>>,
    /// The active's state before the attack, and every member's once the run settled.
    pub before: Option<MemberState>,
    pub after: Vec<Option<MemberState>>,
    pub forged_term: u64,
    pub spoofed_height: u64,
    /// (viewer, member shown, height) for the highest height each viewer showed for each member
    /// while the attack lasted and after it.
    pub heights_seen: Vec<(String, String, u64)>,
    /// Lab processes that exited during the run, and those not running at its end.
    pub exits: Vec<String>,
    pub not_running: Vec<String>,
}

/// The refusals member `target` must have counted, by reason, for the answers it gave.
pub fn expected_refusals(answers: &Answers, target: usize) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> =
        ROGUE_RULES.iter().filter_map(|(_, _, r)| Some((r.as_ref()?.to_string(), 0))).collect();
    for ((t, attack), tally) in answers {
        let (must, reason) = rule(*attack);
        let counted = match must {
            Must::NotAccept => 0,
            Must::Refuse(code) => tally.count(Outcome::Refused(code as i32)),
            Must::Accept => tally.count(Outcome::Accepted),
        };
        if let (true, Some(reason)) = (*t == target, reason) {
            *out.entry(reason.to_string()).or_default() += counted;
        }
    }
    out
}

/// Every way the cluster did not hold against the rogue.
pub fn judge_rogue(e: &RogueEvidence) -> Vec<String> {
    let mut v = rogue_answers(e);
    for (t, name) in e.members.iter().enumerate() {
        let (Some(Some(before)), Some(Some(after))) = (e.refusals_before.get(t), e.refusals_after.get(t)) else {
            v.push(format!(
                "rogue: member {name}'s metrics endpoint did not answer, so its refusals cannot be checked"
            ));
            continue;
        };
        for (reason, want) in expected_refusals(&e.answers, t) {
            let got =
                after.get(&reason).copied().unwrap_or(0).saturating_sub(before.get(&reason).copied().unwrap_or(0));
            if got != want {
                v.push(format!(
                    "rogue: member {name} counted {got} peer refusals for {reason} during the attack, but its answers to the rogue call for {want}"
                ));
            }
        }
    }
    v.extend(rogue_state(e));
    v.extend(e.exits.iter().map(|x| format!("rogue: {x} during the attack")));
    v.extend(e.not_running.iter().map(|x| format!("rogue: the {x} was not running at the end")));
    v
}

/// The answers against [`ROGUE_RULES`]: every attack sent to every member, none accepted that
/// came in a foreign or spoofed name, each refusal with the code the rule names.
fn rogue_answers(e: &RogueEvidence) -> Vec<String> {
    let mut v = Vec::new();
    for (t, name) in e.members.iter().enumerate() {
        for attack in Attack::ALL {
            let Some(tally) = e.answers.get(&(t, attack)).filter(|x| x.total() > 0) else {
                v.push(format!("rogue: no {} was sent to member {name}", attack.name()));
                continue;
            };
            let (must, _) = rule(attack);
            for (outcome, (n, text)) in &tally.outcomes {
                let fine = match must {
                    Must::NotAccept => *outcome != Outcome::Accepted,
                    Must::Refuse(code) => *outcome == Outcome::Refused(code as i32),
                    Must::Accept => *outcome == Outcome::Accepted,
                };
                if !fine {
                    let wanted = match must {
                        Must::NotAccept => "no acceptance".to_string(),
                        Must::Refuse(code) => format!("refused {}", code_name(code)),
                        Must::Accept => "accepted".to_string(),
                    };
                    let said = if text.is_empty() { String::new() } else { format!(" (first: {text})") };
                    v.push(format!(
                        "rogue: member {name} answered {n} of {} {} requests with {}, not {wanted}{said}",
                        tally.total(),
                        attack.name(),
                        outcome.describe()
                    ));
                }
            }
        }
    }
    v
}

/// The lease, raft terms and views against the attack: nothing moved, nothing was believed.
fn rogue_state(e: &RogueEvidence) -> Vec<String> {
    let mut v = Vec::new();
    if e.before.is_none() {
        v.push("rogue: the active did not answer Status before the attack, so its lease cannot be compared".into());
    }
    for (t, name) in e.members.iter().enumerate() {
        let Some(Some(after)) = e.after.get(t) else {
            v.push(format!("rogue: member {name} did not answer Status after the attack"));
            continue;
        };
        if let Some(before) = &e.before
            && (after.holder != before.holder || after.epoch != before.epoch)
        {
            v.push(format!(
                "rogue: member {name} shows the lease held by {} at epoch {} after the attack, {} at epoch {} before it",
                if after.holder.is_empty() { "nobody" } else { &after.holder },
                after.epoch,
                before.holder,
                before.epoch
            ));
        }
        if after.term >= e.forged_term {
            v.push(format!("rogue: member {name} is at raft term {}, the forged snapshots' term", after.term));
        }
        if !after.failed.is_empty() {
            v.push(format!("rogue: member {name}'s raft node failed: {}", after.failed));
        }
    }
    for (viewer, shown, height) in &e.heights_seen {
        if *height >= e.spoofed_height {
            v.push(format!("rogue: member {viewer} believed a spoofed status: it showed {shown} at height {height}"));
        }
    }
    v
}

/// Heights `member` skipped between two of its own signatures while its node could not sign
/// throughout (no one window covers both signatures): the heights a demotion cost.
fn missed_while_stopped(records: &[&SignatureRecord], windows: &[activation::Window], member: &str) -> u64 {
    let mut own: Vec<&SignatureRecord> = records.iter().copied().filter(|r| r.member.as_str() == member).collect();
    own.sort_by_key(|r| r.height);
    own.windows(2)
        .filter(|pair| pair[1].height > pair[0].height + 1)
        .filter(|pair| {
            !windows
                .iter()
                .any(|w| w.member.as_str() == member && w.from_ns <= pair[0].mono_ns && pair[1].mono_ns <= w.to_ns)
        })
        .map(|pair| pair[1].height - pair[0].height - 1)
        .sum()
}

/// Every read that returned a lower watermark than a read that had already returned before it
/// began (reads are linearizable, so that is a decrease of the replicated watermark).
pub fn watermark_regressions(reads: &[WatermarkRead]) -> Vec<String> {
    let mut by_start: Vec<&WatermarkRead> = reads.iter().collect();
    by_start.sort_by_key(|r| r.start_ns);
    let mut by_end: Vec<&WatermarkRead> = reads.iter().collect();
    by_end.sort_by_key(|r| r.end_ns);
    let mut found = Vec::new();
    let mut highest: Option<&WatermarkRead> = None;
    let mut next_done = 0;
    for r in by_start {
        while next_done < by_end.len() && by_end[next_done].end_ns < r.start_ns {
            let done = by_end[next_done];
            if highest.is_none_or(|h| done.hrs > h.hrs) {
                highest = Some(done);
            }
            next_done += 1;
        }
        if let Some(h) = highest
            && r.hrs < h.hrs
        {
            found.push(format!(
                "S3: {} read watermark {:?} after {} had read {:?} ({:.1} ms earlier)",
                r.member,
                r.hrs,
                h.member,
                h.hrs,
                (r.start_ns - h.end_ns) as f64 / 1e6
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use failover::domain::{KeyId, MemberId, Step};
    use failover::sim::activation::ActivationEvent;

    use super::*;

    fn read(member: &str, start: u64, end: u64, height: u64) -> WatermarkRead {
        WatermarkRead { member: member.into(), start_ns: start, end_ns: end, hrs: (height, 0, 3) }
    }

    fn sig(member: &str, height: u64, at: u64) -> SignatureRecord {
        SignatureRecord {
            key: KeyId::new("validator").expect("valid"),
            height,
            round: 0,
            step: Step::Precommit,
            payload: format!("{member}{height}"),
            member: MemberId::new(member).expect("valid"),
            mono_ns: at,
            wall_ms: 0,
        }
    }

    /// Process `pid` of `member`'s validator started (`Activate`) or was seen dead (`Exited`).
    fn node(member: &str, event: ActivationEvent, at: u64, pid: u32) -> ActivationRecord {
        ActivationRecord {
            member: MemberId::new(member).expect("valid"),
            event,
            mono_ns: at,
            until_mono_ns: None,
            pid: Some(pid),
        }
    }

    fn evidence<'a>(
        records: &'a [SignatureRecord],
        activations: &'a [ActivationRecord],
        expect: Expect,
    ) -> Evidence<'a> {
        Evidence {
            records,
            activations,
            reads: &[],
            fault_at_ns: 1_000_000_000,
            end_ns: 10_000_000_000,
            active_before: "a".into(),
            expect,
            max_failovers: 1,
            l1_limit: Duration::from_secs(3),
            active_at_end: true,
            crashes: Vec::new(),
            signer_mode: false,
            host_freeze: false,
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_read_lower_than_a_completed_read_is_a_regression() {
        let reads = [read("a", 0, 10, 5), read("b", 20, 30, 4)];
        let found = watermark_regressions(&reads);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("S3: b read"));
    }

    #[test]
    fn overlapping_reads_may_return_in_any_order() {
        // b started before a's read returned: linearizability allows either value.
        let reads = [read("a", 0, 10, 5), read("b", 5, 30, 4), read("c", 40, 50, 5)];
        assert!(watermark_regressions(&reads).is_empty());
    }

    #[test]
    fn rising_reads_are_clean() {
        let reads: Vec<_> = (0..10).map(|i| read(if i % 2 == 0 { "a" } else { "b" }, i * 10, i * 10 + 5, i)).collect();
        assert!(watermark_regressions(&reads).is_empty());
    }

    #[test]
    fn a_clean_failover_is_measured_and_has_no_violation() {
        let records = [sig("a", 1, S / 2), sig("a", 2, S - 1), sig("b", 5, 3 * S)];
        let acts = [
            node("a", ActivationEvent::Activate, 0, 7),
            node("a", ActivationEvent::Exited, S + S / 2, 7),
            node("b", ActivationEvent::Activate, 2 * S, 8),
        ];
        let j = judge(&evidence(&records, &acts, Expect::Failover));
        assert!(j.violations.is_empty(), "{:?}", j.violations);
        assert_eq!(j.failover_s, Some(2.0));
        assert_eq!(j.failovers, 1);
        assert_eq!(j.missed_heights, 2);
        assert_eq!(j.closest_handover_ms, Some(500.0));
        assert_eq!(j.death_margin_ms, Some(1500.0), "a seen dead at 1.5 s, b's first signature at 3 s");
        assert_eq!(j.late_signatures, 0);
    }

    #[test]
    fn a_hand_back_after_the_new_active_stopped_is_not_a_late_signature() {
        let records = [sig("a", 1, S / 2), sig("b", 15, 3 * S), sig("b", 16, 4 * S), sig("a", 30, 8 * S)];
        let j = judge(&Evidence { max_failovers: 2, ..evidence(&records, &[], Expect::Failover) });
        assert_eq!(j.late_signatures, 0);
        assert_eq!(j.failovers, 2);
        let interleaved = [sig("a", 1, S / 2), sig("b", 15, 3 * S), sig("a", 16, 4 * S), sig("b", 17, 5 * S)];
        assert_eq!(judge(&evidence(&interleaved, &[], Expect::Failover)).late_signatures, 1);
    }

    #[test]
    fn a_node_that_outlives_its_lease_overlaps_the_new_active_whatever_its_permission_said() {
        // a's lease ended at 1.5 s (until_mono_ns, as logs before issue 18 carried it), but its
        // process was seen dead only at 2.5 s, after b's validator started at 2 s.
        let records = [sig("a", 1, S / 2), sig("b", 5, 3 * S)];
        let mut old = node("a", ActivationEvent::Activate, 0, 7);
        old.until_mono_ns = Some(S + S / 2);
        let acts =
            [old, node("b", ActivationEvent::Activate, 2 * S, 8), node("a", ActivationEvent::Exited, 2 * S + S / 2, 7)];
        let j = judge(&evidence(&records, &acts, Expect::Failover));
        assert_eq!(j.violations, vec!["S1: a and b could both sign for 500.0 ms".to_string()]);
        assert_eq!(j.death_margin_ms, Some(500.0));
    }

    #[test]
    fn a_paused_hosts_overlap_and_late_signatures_are_measured_as_residual_risk_but_a_double_sign_is_still_a_violation()
    {
        // a's host paused at 1 s; b took over at 3 s; a resumed at 7 s and signed height 35
        // before its keeper killed it at 7.1 s.
        let records = [sig("a", 1, S / 2), sig("b", 15, 3 * S), sig("a", 35, 7 * S), sig("b", 36, 7 * S + S / 5)];
        let acts = [
            node("a", ActivationEvent::Activate, 0, 7),
            node("b", ActivationEvent::Activate, 2 * S, 8),
            node("a", ActivationEvent::Exited, 7 * S + S / 10, 7),
        ];
        let freeze = Evidence { host_freeze: true, ..evidence(&records, &acts, Expect::Failover) };
        let j = judge(&freeze);
        assert!(j.violations.is_empty(), "{:?}", j.violations);
        assert_eq!(j.residual.len(), 1, "{:?}", j.residual);
        assert!(j.residual[0].starts_with("S1: a and b could both sign for 5100.0 ms"), "{:?}", j.residual);
        assert_eq!(j.residual_overlap_ms, Some(5100.0));
        assert_eq!(j.late_signatures, 1);
        assert_eq!(j.death_margin_ms, Some(-4100.0));
        // The same late signature at a height b signed too is a double sign, paused host or not.
        let records =
            [sig("a", 1, S / 2), sig("b", 15, 3 * S), sig("b", 35, 6 * S), sig("a", 35, 7 * S), sig("b", 36, 8 * S)];
        let j = judge(&Evidence { records: &records, ..freeze });
        assert_eq!(j.violations.len(), 1, "{:?}", j.violations);
        assert!(j.violations[0].starts_with("S2: key validator double-signed at"), "{:?}", j.violations);
        // Without the pause the overlap is a violation.
        let j = judge(&evidence(&records, &acts, Expect::Failover));
        assert!(j.violations.iter().any(|v| v.starts_with("S1: a and b")), "{:?}", j.violations);
    }

    #[test]
    fn each_invariant_is_reported_when_broken() {
        let records = [sig("a", 1, S / 2), sig("a", 2, 2 * S), sig("b", 2, 2 * S)];
        let acts = [node("a", ActivationEvent::Activate, 0, 7), node("b", ActivationEvent::Activate, S, 8)];
        let mut e = evidence(&records, &acts, Expect::NoFailover);
        let reads = [read("a", 0, 10, 5), read("b", 20, 30, 4)];
        e.reads = &reads;
        e.active_at_end = false;
        e.crashes = vec!["daemon of b".into()];
        let j = judge(&e);
        let kinds: Vec<&str> = j.violations.iter().map(|v| v.split(':').next().unwrap_or("")).collect();
        assert_eq!(kinds, vec!["S2", "S1", "S3", "L2", "L1", "crash"], "{:?}", j.violations);
    }

    #[test]
    fn a_late_or_missing_failover_breaks_l1() {
        let records = [sig("a", 1, S / 2), sig("b", 30, 9 * S)];
        let j = judge(&evidence(&records, &[], Expect::Failover));
        assert!(j.violations.iter().any(|v| v.starts_with("L1: the first height")), "{:?}", j.violations);
        let records = [sig("a", 1, S / 2), sig("a", 2, 2 * S)];
        let j = judge(&evidence(&records, &[], Expect::Failover));
        assert!(j.violations.iter().any(|v| v.starts_with("L1: no other member")), "{:?}", j.violations);
    }

    #[test]
    fn an_active_that_stops_producing_without_a_failover_breaks_l2() {
        // A self-fence on a slow store, then the same member takes the lease again.
        let records = [sig("a", 1, S / 2), sig("a", 2, 2 * S), sig("a", 9, 4 * S)];
        let j = judge(&evidence(&records, &[], Expect::NoFailover));
        assert!(j.violations.iter().any(|v| v.contains("stopped producing for 6 heights")), "{:?}", j.violations);
        let records = [sig("a", 1, S / 2), sig("a", 2, 2 * S), sig("a", 3, 4 * S)];
        assert!(judge(&evidence(&records, &[], Expect::NoFailover)).violations.is_empty());
    }

    #[test]
    fn heights_a_running_node_misses_are_reported_but_do_not_break_l2() {
        // The node stalled for six heights, but its process ran throughout: no demotion.
        let records = [sig("a", 1, S / 2), sig("a", 2, 2 * S), sig("a", 9, 4 * S)];
        let acts = [node("a", ActivationEvent::Activate, 0, 7)];
        let j = judge(&evidence(&records, &acts, Expect::NoFailover));
        assert!(j.violations.is_empty(), "{:?}", j.violations);
        assert_eq!(j.missed_heights, 6);
        // The node was killed at 3 s and a new one started at 3.5 s: a demotion.
        let acts = [
            node("a", ActivationEvent::Activate, 0, 7),
            node("a", ActivationEvent::Exited, 3 * S, 7),
            node("a", ActivationEvent::Activate, 3 * S + S / 2, 9),
        ];
        let j = judge(&evidence(&records, &acts, Expect::NoFailover));
        assert!(j.violations.iter().any(|v| v.contains("stopped producing for 6 heights")), "{:?}", j.violations);
    }

    #[test]
    fn in_signer_mode_a_store_fault_may_delay_signatures_but_not_move_them() {
        let stalled = [sig("a", 1, S / 2), sig("a", 2, 2 * S), sig("a", 9, 4 * S)];
        let j = judge(&Evidence { signer_mode: true, ..evidence(&stalled, &[], Expect::NoFailover) });
        assert!(j.violations.is_empty(), "{:?}", j.violations);
        assert_eq!(j.missed_heights, 6);
        let moved = [sig("a", 1, S / 2), sig("a", 2, 2 * S), sig("b", 3, 4 * S)];
        let j = judge(&Evidence { signer_mode: true, max_failovers: 5, ..evidence(&moved, &[], Expect::NoFailover) });
        assert!(j.violations.iter().any(|v| v.contains("lost production")), "{:?}", j.violations);
    }

    /// A rogue-peer run in which every member answered every attack as the rules say and
    /// counted it, and nothing moved.
    fn clean_rogue() -> RogueEvidence {
        use crate::rogue::Tally;
        let members: Vec<String> = ["a", "b", "c"].iter().map(|m| m.to_string()).collect();
        let mut answers = Answers::new();
        let mut counts = BTreeMap::new();
        for t in 0..members.len() {
            for (attack, must, reason) in ROGUE_RULES {
                let (outcome, n) = match must {
                    Must::NotAccept => (Outcome::Unreachable, 10),
                    Must::Refuse(code) => (Outcome::Refused(code as i32), 10),
                    Must::Accept => (Outcome::Accepted, 10),
                };
                let mut tally = Tally::default();
                tally.outcomes.insert(outcome, (n, String::new()));
                answers.insert((t, attack), tally);
                if let Some(r) = reason {
                    *counts.entry((t, r.to_string())).or_insert(0u64) += n;
                }
            }
        }
        let after = |t: usize| -> Option<BTreeMap<String, u64>> {
            Some(counts.iter().filter(|((i, _), _)| *i == t).map(|((_, r), n)| (r.clone(), 2 + n)).collect())
        };
        let state = MemberState { holder: "a".into(), epoch: 1, term: 2, failed: String::new() };
        RogueEvidence {
            refusals_before: (0..3)
                .map(|_| {
                    Some(BTreeMap::from([
                        ("snapshot".to_string(), 2),
                        ("malformed".into(), 2),
                        ("spoofed_sender".into(), 2),
                        ("not_a_member".into(), 2),
                    ]))
                })
                .collect(),
            refusals_after: (0..3).map(after).collect(),
            before: Some(state.clone()),
            after: vec![Some(state); 3],
            forged_term: 1000,
            spoofed_height: 1_000_000_000,
            heights_seen: vec![("a".into(), "b".into(), 500)],
            members,
            answers,
            ..RogueEvidence::default()
        }
    }

    #[test]
    fn a_rogue_run_answered_and_counted_by_the_rules_has_no_violation() {
        let e = clean_rogue();
        assert!(judge_rogue(&e).is_empty(), "{:?}", judge_rogue(&e));
        assert_eq!(expected_refusals(&e.answers, 0)["spoofed_sender"], 20);
    }

    #[test]
    fn a_spoofed_status_that_is_accepted_is_a_violation_naming_member_and_attack() {
        let mut e = clean_rogue();
        let tally = e.answers.get_mut(&(2, Attack::SpoofedStatus)).expect("tally");
        tally.outcomes.insert(Outcome::Accepted, (1, String::new()));
        let v = judge_rogue(&e);
        assert!(
            v.iter().any(|x| x.contains("member c answered 1 of 11 spoofed status requests with accepted")),
            "{v:?}"
        );
    }

    #[test]
    fn a_refusal_with_another_code_or_no_connection_is_a_violation_for_a_certificate_holder() {
        let mut e = clean_rogue();
        let tally = e.answers.get_mut(&(0, Attack::OperatorCertificate)).expect("tally");
        tally.outcomes.insert(Outcome::Unreachable, (2, "connection reset".into()));
        let v = judge_rogue(&e);
        assert!(
            v.iter().any(|x| x.contains("with unreachable, not refused PERMISSION_DENIED (first: connection reset)")),
            "{v:?}"
        );
    }

    #[test]
    fn a_forged_snapshot_accepted_but_not_counted_as_refused_is_a_violation() {
        let mut e = clean_rogue();
        if let Some(Some(after)) = e.refusals_after.get_mut(1) {
            after.insert("snapshot".into(), 2 + 29);
        }
        let v = judge_rogue(&e);
        assert_eq!(v, vec!["rogue: member b counted 29 peer refusals for snapshot during the attack, but its answers to the rogue call for 30".to_string()]);
    }

    #[test]
    fn a_moved_lease_an_adopted_term_a_believed_status_and_a_dead_process_are_each_violations() {
        let mut e = clean_rogue();
        e.after[0] = Some(MemberState { holder: "b".into(), epoch: 2, term: 2, failed: String::new() });
        e.after[1] = Some(MemberState { holder: "a".into(), epoch: 1, term: 1000, failed: "panicked".into() });
        e.after[2] = None;
        e.heights_seen.push(("c".into(), "a".into(), 1_000_000_000));
        e.exits.push("daemon of c exited (signal: 6)".into());
        e.not_running.push("daemon of c".into());
        e.answers.remove(&(1, Attack::GroupBomb));
        let v = judge_rogue(&e);
        e.before = None;
        assert!(judge_rogue(&e).iter().any(|x| x.contains("did not answer Status before the attack")));
        for fragment in [
            "no group bomb was sent to member b",
            "member a shows the lease held by b at epoch 2 after the attack, a at epoch 1 before it",
            "member b is at raft term 1000",
            "member b's raft node failed: panicked",
            "member c did not answer Status",
            "member c believed a spoofed status: it showed a at height 1000000000",
            "daemon of c exited (signal: 6) during the attack",
            "the daemon of c was not running at the end",
        ] {
            assert!(v.iter().any(|x| x.contains(fragment)), "{fragment}: {v:?}");
        }
    }

    fn bystander<'a>(
        records: &'a [SignatureRecord],
        activations: &'a [ActivationRecord],
        reads: &'a [WatermarkRead],
    ) -> ValidatorEvidence<'a> {
        ValidatorEvidence {
            id: "v2",
            records,
            activations,
            reads,
            fault_at_ns: 2 * S,
            end_ns: 10 * S,
            signer_mode: false,
            paused: None,
            signing_at_end: true,
        }
    }

    #[test]
    fn a_bystander_that_kept_signing_is_clean_and_its_liveness_is_measured_from_the_fault() {
        // b signed before the fault (a planned placement moved it from a); after the fault it
        // skipped heights 5 and 6.
        let records = [sig("a", 1, S / 2), sig("b", 3, S), sig("b", 4, 2 * S - 1), sig("b", 7, 3 * S)];
        let acts = [
            node("a", ActivationEvent::Activate, 0, 7),
            node("a", ActivationEvent::Exited, S - S / 10, 7),
            node("b", ActivationEvent::Activate, S - S / 20, 8),
        ];
        let reads = [read("a", 0, 10, 3), read("c", 20, 30, 4)];
        let r = judge_validator(&bystander(&records, &acts, &reads));
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!((r.signatures, r.heights, r.first_height, r.last_height), (4, 2, Some(4), Some(7)));
        assert_eq!((r.missed_heights, r.longest_gap, r.signer_changes), (2, 2, 0));
        assert_eq!(r.signers, ["b"]);
        assert_eq!(r.watermark_reads, 2);
        assert_eq!(
            r.line(),
            "v2: S1 ok, S2 ok (4 signatures), S3 ok (2 reads); since the fault: heights 4-7 by b, missed 2 (longest gap 2), signer changes 0; signing at the end"
        );
    }

    #[test]
    fn each_invariant_of_a_bystander_is_judged_on_its_own_evidence() {
        let records = [sig("b", 1, S / 2), sig("b", 2, S), sig("a", 2, S + 1)];
        let acts = [node("b", ActivationEvent::Activate, 0, 8), node("a", ActivationEvent::Activate, S / 2, 7)];
        let reads = [read("a", 0, 10, 5), read("b", 20, 30, 4)];
        let r = judge_validator(&bystander(&records, &acts, &reads));
        let kinds: Vec<&str> = r.violations.iter().map(|v| v.split(':').next().unwrap_or("")).collect();
        assert_eq!(kinds, ["S2", "S1", "S3"], "{:?}", r.violations);
        assert_eq!((r.broken("S1"), r.broken("S2"), r.broken("S3")), (1, 1, 1));
        assert!(r.line().starts_with("v2: S1 BROKEN ×1, S2 BROKEN ×1 (3 signatures), S3 BROKEN ×1"), "{}", r.line());
    }

    #[test]
    fn a_paused_hosts_overlap_is_residual_only_for_the_node_that_was_paused() {
        let acts = [
            node("a", ActivationEvent::Activate, 0, 7),
            node("b", ActivationEvent::Activate, 3 * S, 8),
            node("a", ActivationEvent::Exited, 4 * S, 7),
        ];
        let paused = ValidatorEvidence { paused: Some(("a", 2 * S)), ..bystander(&[], &acts, &[]) };
        let r = judge_validator(&paused);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.residual.len(), 1, "{:?}", r.residual);
        let r = judge_validator(&ValidatorEvidence { paused: Some(("b", 2 * S)), ..paused });
        assert_eq!(r.broken("S1"), 1, "{:?}", r.violations);
    }

    #[test]
    fn a_bystander_nobody_signs_at_the_end_is_a_liveness_note_not_a_violation() {
        let records = [sig("b", 1, S / 2)];
        let e = ValidatorEvidence { signing_at_end: false, signer_mode: true, ..bystander(&records, &[], &[]) };
        let r = judge_validator(&e);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.notes.len(), 1);
        assert!(r.line().contains("S1 - (signer mode)") && r.line().contains("NOT signed at the end; liveness: "));
    }

    #[test]
    fn flapping_is_an_l2_violation() {
        let records = [sig("a", 1, S / 2), sig("b", 2, 2 * S), sig("a", 3, 3 * S), sig("b", 4, 4 * S)];
        let j = judge(&evidence(&records, &[], Expect::Either));
        assert_eq!(j.failovers, 3);
        assert!(j.violations.iter().any(|v| v.contains("flapping")), "{:?}", j.violations);
    }
}
