//! The producers' activation log and the S1 checker: a simulated node records every change of
//! its permission to sign (activate, extend, deactivate) with the `CLOCK_MONOTONIC` instant it
//! happened and the instant the permission runs out; the checker turns each member's records
//! into the windows during which its producer could sign, and reports every pair of windows of
//! different members that overlap.
//!
//! A window ends at the earlier of a deactivation and the permission's end, whether or not the
//! node was still alive then: the checker judges what a producer was allowed to do, which
//! bounds what it did. Records carry monotonic instants only, comparable across processes on
//! one machine; nothing here reads a wall clock.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::jsonl::{self, JsonLines, JsonLinesError, Kind};
use crate::domain::MemberId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationEvent {
    /// Production turned on (or re-sent while on).
    Activate,
    /// The permission's end moved while the node was producing.
    Extend,
    /// Production turned off.
    Deactivate,
    /// The node's process was seen dead, recorded by whoever reaped it (a dead node signs
    /// nothing, whatever its permission said).
    Exited,
}

/// One change of a node's permission to sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationRecord {
    pub member: MemberId,
    pub event: ActivationEvent,
    /// `CLOCK_MONOTONIC` when the node applied the change.
    pub mono_ns: u64,
    /// The permission's end after the change; `None`: no limit (manual use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_mono_ns: Option<u64>,
}

/// Why the activation log could not be opened, written or read.
pub type ActivationLogError = JsonLinesError;

const WHAT: Kind = Kind { file: "activation log", record: "activation record" };

/// Appends records to an activation log that other nodes may share. Not fsynced: the log must
/// survive a killed process (the page cache does), not a machine crash.
pub struct ActivationLog {
    file: JsonLines,
}

impl ActivationLog {
    pub fn open(path: &Path) -> Result<ActivationLog, ActivationLogError> {
        Ok(ActivationLog { file: JsonLines::open(WHAT, path)? })
    }

    pub fn append(&mut self, record: &ActivationRecord) -> Result<(), ActivationLogError> {
        self.file.append(record)
    }
}

/// Every record of the log at `path`; a missing file is an empty log.
pub fn read(path: &Path) -> Result<Vec<ActivationRecord>, ActivationLogError> {
    jsonl::read(WHAT, path)
}

/// A span of monotonic time during which `member`'s producer was allowed to sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub member: MemberId,
    pub from_ns: u64,
    pub to_ns: u64,
}

/// Two members allowed to sign at once: an S1 violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Overlap {
    pub first: Window,
    pub second: Window,
    pub overlap_ns: u64,
}

/// Each member's signing windows. A permission without a limit that is never withdrawn runs to
/// `end_ns` (the end of the observation).
pub fn windows(records: &[ActivationRecord], end_ns: u64) -> Vec<Window> {
    let mut by_member: BTreeMap<&MemberId, Vec<&ActivationRecord>> = BTreeMap::new();
    for r in records {
        by_member.entry(&r.member).or_default().push(r);
    }
    let mut out = Vec::new();
    for (member, mut rs) in by_member {
        // Writers append after releasing the node's state lock, so lines of one node can be
        // out of order; the instants are not.
        rs.sort_by_key(|r| r.mono_ns);
        let limit = |until: Option<u64>| until.unwrap_or(end_ns);
        let mut open: Option<(u64, u64)> = None;
        let close = |out: &mut Vec<Window>, from: u64, to: u64| {
            if to > from {
                out.push(Window { member: member.clone(), from_ns: from, to_ns: to });
            }
        };
        for r in rs {
            let t = r.mono_ns;
            match (r.event, open) {
                (ActivationEvent::Activate | ActivationEvent::Extend, Some((from, until))) if t < until => {
                    open = Some((from, limit(r.until_mono_ns)));
                }
                (ActivationEvent::Activate | ActivationEvent::Extend, Some((from, until))) => {
                    // The permission lapsed before this change renewed it: two windows.
                    close(&mut out, from, until);
                    open = Some((t, limit(r.until_mono_ns)));
                }
                (ActivationEvent::Activate, None) => open = Some((t, limit(r.until_mono_ns))),
                // The node ignores an extension while it is not producing.
                (ActivationEvent::Extend, None) => {}
                (ActivationEvent::Deactivate | ActivationEvent::Exited, Some((from, until))) => {
                    close(&mut out, from, until.min(t));
                    open = None;
                }
                (ActivationEvent::Deactivate | ActivationEvent::Exited, None) => {}
            }
        }
        if let Some((from, until)) = open {
            close(&mut out, from, until.min(end_ns.max(from)));
        }
    }
    out.sort_by_key(|w| w.from_ns);
    out
}

/// Every pair of windows of different members that overlap by more than `allowed_ns`.
pub fn overlaps(windows: &[Window], allowed_ns: u64) -> Vec<Overlap> {
    let mut found = Vec::new();
    for (i, a) in windows.iter().enumerate() {
        for b in &windows[i + 1..] {
            if b.from_ns >= a.to_ns {
                continue;
            }
            if a.member == b.member {
                continue;
            }
            let overlap = a.to_ns.min(b.to_ns) - b.from_ns.max(a.from_ns);
            if overlap > allowed_ns {
                found.push(Overlap { first: a.clone(), second: b.clone(), overlap_ns: overlap });
            }
        }
    }
    found
}

/// The shortest time between one member's window ending and another member's starting: how
/// close the cluster came to two producers at once. `None` with fewer than two members' windows.
pub fn closest_handover_ns(windows: &[Window]) -> Option<i128> {
    let mut closest: Option<i128> = None;
    for (i, a) in windows.iter().enumerate() {
        for b in &windows[i + 1..] {
            if a.member != b.member {
                let gap = i128::from(b.from_ns) - i128::from(a.to_ns);
                closest = Some(closest.map_or(gap, |c| c.min(gap)));
            }
        }
    }
    closest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(member: &str, event: ActivationEvent, at: u64, until: Option<u64>) -> ActivationRecord {
        ActivationRecord { member: MemberId::new(member).expect("valid"), event, mono_ns: at, until_mono_ns: until }
    }
    use ActivationEvent::{Activate, Deactivate, Exited, Extend};

    fn spans(ws: &[Window]) -> Vec<(&str, u64, u64)> {
        ws.iter().map(|w| (w.member.as_str(), w.from_ns, w.to_ns)).collect()
    }

    #[test]
    fn extensions_continue_a_window_and_deactivation_ends_it() {
        let log = vec![
            rec("a", Activate, 10, Some(20)),
            rec("a", Extend, 15, Some(30)),
            rec("a", Extend, 25, Some(40)),
            rec("a", Deactivate, 33, None),
        ];
        assert_eq!(spans(&windows(&log, 100)), vec![("a", 10, 33)]);
    }

    #[test]
    fn a_window_ends_at_its_permission_when_the_node_never_deactivates() {
        // A killed node, or a zombie daemon that never withdrew the permission.
        let log = vec![rec("a", Activate, 10, Some(20)), rec("a", Extend, 15, Some(30))];
        assert_eq!(spans(&windows(&log, 100)), vec![("a", 10, 30)]);
    }

    #[test]
    fn a_dead_node_signs_nothing_after_it_was_reaped() {
        let log = vec![rec("a", Activate, 10, Some(50)), rec("a", Exited, 20, None), rec("b", Activate, 25, Some(60))];
        let ws = windows(&log, 100);
        assert_eq!(spans(&ws), vec![("a", 10, 20), ("b", 25, 60)]);
        assert!(overlaps(&ws, 0).is_empty());
    }

    #[test]
    fn an_extension_after_the_permission_lapsed_starts_a_new_window() {
        let log = vec![rec("a", Activate, 10, Some(20)), rec("a", Extend, 25, Some(40))];
        assert_eq!(spans(&windows(&log, 100)), vec![("a", 10, 20), ("a", 25, 40)]);
    }

    #[test]
    fn an_extension_while_not_producing_opens_nothing() {
        let log =
            vec![rec("a", Activate, 10, Some(20)), rec("a", Deactivate, 12, None), rec("a", Extend, 13, Some(90))];
        assert_eq!(spans(&windows(&log, 100)), vec![("a", 10, 12)]);
    }

    #[test]
    fn records_out_of_file_order_are_ordered_by_instant() {
        let log = vec![rec("a", Deactivate, 33, None), rec("a", Activate, 10, Some(50))];
        assert_eq!(spans(&windows(&log, 100)), vec![("a", 10, 33)]);
    }

    #[test]
    fn an_unlimited_permission_runs_to_the_end_of_observation() {
        let log = vec![rec("a", Activate, 10, None)];
        assert_eq!(spans(&windows(&log, 100)), vec![("a", 10, 100)]);
    }

    #[test]
    fn a_clean_handover_has_no_overlap_and_reports_its_gap() {
        let log =
            vec![rec("a", Activate, 10, Some(30)), rec("a", Deactivate, 25, None), rec("b", Activate, 27, Some(60))];
        let ws = windows(&log, 100);
        assert!(overlaps(&ws, 0).is_empty());
        assert_eq!(closest_handover_ns(&ws), Some(2));
    }

    #[test]
    fn a_planted_overlap_is_found_with_its_length() {
        // b activates while a's permission still runs: the S1 violation the checker exists for.
        let log = vec![rec("a", Activate, 10, Some(30)), rec("b", Activate, 26, Some(60))];
        let ws = windows(&log, 100);
        let found = overlaps(&ws, 0);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].overlap_ns, 4);
        assert_eq!((found[0].first.member.as_str(), found[0].second.member.as_str()), ("a", "b"));
        assert!(overlaps(&ws, 4).is_empty(), "an overlap within the allowance is not reported");
    }

    #[test]
    fn the_same_member_twice_is_not_an_overlap() {
        let log = vec![rec("a", Activate, 10, Some(30)), rec("a", Activate, 20, Some(40))];
        assert!(overlaps(&windows(&log, 100), 0).is_empty());
    }

    #[test]
    fn records_round_trip_through_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("activations.jsonl");
        let mut log = ActivationLog::open(&path).expect("open");
        let records = vec![rec("a", Activate, 1, Some(5)), rec("a", Deactivate, 3, None)];
        for r in &records {
            log.append(r).expect("append");
        }
        assert_eq!(read(&path).expect("read"), records);
        std::fs::write(&path, "{\"member\":\"a\"}\n").expect("write");
        match read(&path) {
            Err(ActivationLogError::Malformed { line: 1, .. }) => {}
            other => panic!("expected a malformed line 1, got {other:?}"),
        }
    }
}
