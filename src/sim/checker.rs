//! The S2 checker: reads a signature ledger and reports every double sign (one key, one HRS,
//! two different payloads) and every gap in the signed heights (missed blocks).
//!
//! Double signs are safety violations; gaps are liveness costs, reported so that failover
//! time can be measured in missed heights.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::ledger::SignatureRecord;
use crate::domain::{Hrs, KeyId, MemberId};

/// Two signatures by one key at one HRS over different payloads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DoubleSign {
    pub key: KeyId,
    pub hrs: Hrs,
    pub first: Signer,
    pub second: Signer,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Signer {
    pub member: MemberId,
    pub payload: String,
    pub mono_ns: u64,
}

/// Heights `from..=to` of `key` that no record covers, between signed heights.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub key: KeyId,
    pub from: u64,
    pub to: u64,
}

impl Gap {
    pub fn missed(&self) -> u64 {
        self.to - self.from + 1
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LedgerReport {
    pub records: usize,
    pub double_signs: Vec<DoubleSign>,
    pub gaps: Vec<Gap>,
}

impl LedgerReport {
    /// S2 holds for this ledger.
    pub fn is_safe(&self) -> bool {
        self.double_signs.is_empty()
    }

    pub fn missed_heights(&self) -> u64 {
        self.gaps.iter().map(Gap::missed).sum()
    }
}

/// Checks a whole ledger.
pub fn check(records: &[SignatureRecord]) -> LedgerReport {
    let mut first_at: BTreeMap<(&KeyId, Hrs), &SignatureRecord> = BTreeMap::new();
    let mut double_signs = Vec::new();
    let mut heights: BTreeMap<&KeyId, BTreeSet<u64>> = BTreeMap::new();
    for r in records {
        heights.entry(&r.key).or_default().insert(r.height);
        match first_at.get(&(&r.key, r.hrs())) {
            None => {
                first_at.insert((&r.key, r.hrs()), r);
            }
            Some(first) if first.payload != r.payload => double_signs.push(DoubleSign {
                key: r.key.clone(),
                hrs: r.hrs(),
                first: signer(first),
                second: signer(r),
            }),
            Some(_) => {}
        }
    }
    let mut gaps = Vec::new();
    for (key, hs) in heights {
        let mut prev: Option<u64> = None;
        for &h in &hs {
            if let Some(p) = prev
                && h > p + 1
            {
                gaps.push(Gap { key: key.clone(), from: p + 1, to: h - 1 });
            }
            prev = Some(h);
        }
    }
    LedgerReport { records: records.len(), double_signs, gaps }
}

fn signer(r: &SignatureRecord) -> Signer {
    Signer { member: r.member.clone(), payload: r.payload.clone(), mono_ns: r.mono_ns }
}

impl fmt::Display for LedgerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "records: {}", self.records)?;
        writeln!(f, "double signs (S2 violations): {}", self.double_signs.len())?;
        for d in &self.double_signs {
            writeln!(
                f,
                "  key {} at {}: {} signed {} and {} signed {}",
                d.key,
                d.hrs,
                d.first.member,
                short(&d.first.payload),
                d.second.member,
                short(&d.second.payload)
            )?;
        }
        writeln!(f, "gaps: {} ({} missed heights)", self.gaps.len(), self.missed_heights())?;
        for g in &self.gaps {
            writeln!(f, "  key {}: heights {}..={} ({} missed)", g.key, g.from, g.to, g.missed())?;
        }
        Ok(())
    }
}

fn short(payload: &str) -> &str {
    payload.get(..12).unwrap_or(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Step;

    fn rec(key: &str, height: u64, round: u32, step: Step, payload: &str, member: &str) -> SignatureRecord {
        SignatureRecord {
            key: KeyId::new(key).expect("valid"),
            height,
            round,
            step,
            payload: payload.to_string(),
            member: MemberId::new(member).expect("valid"),
            mono_ns: height,
            wall_ms: 0,
        }
    }

    fn run(heights: impl IntoIterator<Item = u64>, member: &str) -> Vec<SignatureRecord> {
        heights.into_iter().map(|h| rec("k", h, 0, Step::Precommit, &format!("p{h}"), member)).collect()
    }

    #[test]
    fn clean_ledger_has_no_violation_and_no_gap() {
        let mut l = run(1..=5, "a");
        l.extend(run(6..=9, "b"));
        let r = check(&l);
        assert!(r.is_safe());
        assert!(r.gaps.is_empty());
        assert_eq!(r.records, 9);
    }

    #[test]
    fn planted_double_sign_is_found_with_both_signers() {
        let mut l = run(1..=5, "a");
        l.push(rec("k", 3, 0, Step::Precommit, "other", "b"));
        let r = check(&l);
        assert_eq!(r.double_signs.len(), 1);
        let d = &r.double_signs[0];
        assert_eq!(d.hrs, Hrs::new(3, 0, Step::Precommit));
        assert_eq!((d.first.member.as_str(), d.second.member.as_str()), ("a", "b"));
        assert!(!r.is_safe());
    }

    #[test]
    fn same_payload_twice_is_not_a_double_sign() {
        let mut l = run(1..=3, "a");
        l.push(rec("k", 2, 0, Step::Precommit, "p2", "a"));
        assert!(check(&l).is_safe());
    }

    #[test]
    fn different_steps_or_rounds_or_keys_are_not_double_signs() {
        let l = vec![
            rec("k", 1, 0, Step::Prevote, "x", "a"),
            rec("k", 1, 0, Step::Precommit, "y", "a"),
            rec("k", 1, 1, Step::Prevote, "z", "a"),
            rec("j", 1, 0, Step::Prevote, "w", "b"),
        ];
        assert!(check(&l).is_safe());
    }

    #[test]
    fn planted_gaps_are_reported_as_inclusive_ranges() {
        let mut l = run(1..=3, "a");
        l.extend(run(7..=8, "b"));
        l.extend(run(10..=10, "b"));
        let r = check(&l);
        assert_eq!(
            r.gaps,
            vec![
                Gap { key: KeyId::new("k").expect("valid"), from: 4, to: 6 },
                Gap { key: KeyId::new("k").expect("valid"), from: 9, to: 9 }
            ]
        );
        assert_eq!(r.missed_heights(), 4);
        assert!(r.is_safe());
    }

    #[test]
    fn gaps_are_per_key() {
        let mut l = run(1..=2, "a");
        l.push(rec("j", 10, 0, Step::Precommit, "q", "a"));
        assert!(check(&l).gaps.is_empty());
    }

    #[test]
    fn three_way_conflict_reports_each_extra_signer() {
        let l = vec![
            rec("k", 5, 0, Step::Precommit, "x", "a"),
            rec("k", 5, 0, Step::Precommit, "y", "b"),
            rec("k", 5, 0, Step::Precommit, "z", "c"),
        ];
        assert_eq!(check(&l).double_signs.len(), 2);
    }
}
