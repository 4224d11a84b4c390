//! The producers' activation log and the S1 checker.
//!
//! Three kinds of record end up in a member's log. A node that turns production on and off when
//! told (the `sim` producer's API node) records `Activate` and `Deactivate` as it applies them. A
//! validator that signs while its process runs (`sim-node --sign-while-running`, the shape of
//! CometBFT, nodeos, agave or geth) records one `Activate` with its `pid` when its process
//! starts, and nothing after: it has no off switch. The death watch ([`super::death_watch`]),
//! outside every node and every daemon, records `Exited` when it observed that process dead.
//!
//! The checker turns each member's records into windows during which one of its nodes could
//! sign, and reports every pair of windows of different nodes that overlap. A window ends only
//! at a `Deactivate` (an API node stopped signing on request) or an `Exited` (its process was
//! seen dead), never at the end of a permission: real nodes have no deadline of their own, so a
//! node whose daemon froze signs on until something kills it. `until_mono_ns` and `Extend`
//! records in logs written before that rule are read and ignored. A window that nothing ends runs
//! to the end of the observation. Records carry monotonic instants only (`MonoTime::now()`),
//! comparable across processes on one machine; nothing here reads a wall clock.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::jsonl::{self, JsonLines, JsonLinesError, Kind};
use crate::domain::MemberId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationEvent {
    /// The node began to be able to sign: an API node was turned on (or told again while on), a
    /// sign-while-running validator's process started.
    Activate,
    /// Logs written before issue 18 only: a permission's end moved. Ignored by the checker.
    Extend,
    /// An API node stopped signing on request.
    Deactivate,
    /// The node's process was observed dead from outside (by the death watch, or by whoever
    /// reaped it): a dead node signs nothing.
    Exited,
}

/// One change of a node's ability to sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationRecord {
    pub member: MemberId,
    pub event: ActivationEvent,
    /// `MonoTime::now()` when the change happened (or, for `Exited`, when it was observed).
    pub mono_ns: u64,
    /// Logs written before issue 18 only: the end of the permission the node enforced itself.
    /// Read and ignored: no real node stops at a deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_mono_ns: Option<u64>,
    /// The node's process, on the records of a sign-while-running validator (its `Activate`) and
    /// of its death (`Exited`). `None`: an API node, or an `Exited` that means "this member's
    /// node, whichever it was".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
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

/// A span of monotonic time during which one of `member`'s nodes could sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub member: MemberId,
    /// The node's process, for a sign-while-running validator; `None` for an API node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub from_ns: u64,
    pub to_ns: u64,
}

/// Two nodes able to sign at once: an S1 violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Overlap {
    pub first: Window,
    pub second: Window,
    pub overlap_ns: u64,
}

/// Each node's signing windows. A window opens at an `Activate` and ends at the `Deactivate` of
/// an API node or the `Exited` of its process (an `Exited` without a pid ends every window of
/// its member); one that nothing ends runs to `end_ns`, the end of the observation.
pub fn windows(records: &[ActivationRecord], end_ns: u64) -> Vec<Window> {
    let mut by_member: BTreeMap<&MemberId, Vec<&ActivationRecord>> = BTreeMap::new();
    for r in records {
        by_member.entry(&r.member).or_default().push(r);
    }
    let mut out = Vec::new();
    for (member, mut rs) in by_member {
        // Several writers append to one log (the node, the death watch), so lines can be out of
        // order; the instants are not.
        rs.sort_by_key(|r| r.mono_ns);
        // The start of each open window, by process (`None`: the member's API node).
        let mut open: BTreeMap<Option<u32>, u64> = BTreeMap::new();
        let mut close = |pid: Option<u32>, from: u64, to: u64| {
            if to > from {
                out.push(Window { member: member.clone(), pid, from_ns: from, to_ns: to });
            }
        };
        for r in rs {
            match (r.event, r.pid) {
                (ActivationEvent::Activate, pid) => {
                    open.entry(pid).or_insert(r.mono_ns);
                }
                (ActivationEvent::Extend, _) => {}
                (ActivationEvent::Deactivate, pid) | (ActivationEvent::Exited, pid @ Some(_)) => {
                    if let Some(from) = open.remove(&pid) {
                        close(pid, from, r.mono_ns);
                    }
                }
                (ActivationEvent::Exited, None) => {
                    for (pid, from) in std::mem::take(&mut open) {
                        close(pid, from, r.mono_ns);
                    }
                }
            }
        }
        for (pid, from) in open {
            close(pid, from, end_ns.max(from));
        }
    }
    out.sort_by_key(|w| w.from_ns);
    out
}

/// Every pair of windows of different nodes that overlap by more than `allowed_ns`: windows of
/// two members, or of two processes of one member (one key signing from two places).
pub fn overlaps(windows: &[Window], allowed_ns: u64) -> Vec<Overlap> {
    let mut found = Vec::new();
    for (i, a) in windows.iter().enumerate() {
        for b in &windows[i + 1..] {
            if b.from_ns >= a.to_ns {
                continue;
            }
            if a.member == b.member && a.pid == b.pid {
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

/// The pids of validators that started (an `Activate` with a pid) and were not yet seen dead
/// (an `Exited` with that pid), in start order.
pub fn started_and_not_dead(records: &[ActivationRecord]) -> Vec<u32> {
    let mut records: Vec<&ActivationRecord> = records.iter().collect();
    records.sort_by_key(|r| r.mono_ns);
    let mut pids = Vec::new();
    for r in records {
        match (r.event, r.pid) {
            (ActivationEvent::Activate, Some(pid)) => pids.push(pid),
            (ActivationEvent::Exited, Some(pid)) => pids.retain(|p| *p != pid),
            _ => {}
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(member: &str, event: ActivationEvent, at: u64, until: Option<u64>) -> ActivationRecord {
        ActivationRecord {
            member: MemberId::new(member).expect("valid"),
            event,
            mono_ns: at,
            until_mono_ns: until,
            pid: None,
        }
    }

    fn proc(member: &str, event: ActivationEvent, at: u64, pid: u32) -> ActivationRecord {
        ActivationRecord { pid: Some(pid), ..rec(member, event, at, None) }
    }
    use ActivationEvent::{Activate, Deactivate, Exited, Extend};

    fn spans(ws: &[Window]) -> Vec<(&str, u64, u64)> {
        ws.iter().map(|w| (w.member.as_str(), w.from_ns, w.to_ns)).collect()
    }

    #[test]
    fn a_deactivation_ends_an_api_nodes_window_and_extensions_change_nothing() {
        let log = vec![
            rec("a", Activate, 10, Some(20)),
            rec("a", Extend, 15, Some(30)),
            rec("a", Extend, 25, Some(40)),
            rec("a", Deactivate, 33, None),
            rec("a", Extend, 35, Some(90)),
        ];
        assert_eq!(spans(&windows(&log, 100)), vec![("a", 10, 33)]);
    }

    #[test]
    fn a_permissions_end_never_ends_a_window() {
        // A node whose daemon froze or died and that nothing killed signs on.
        let log = vec![rec("a", Activate, 10, Some(20)), rec("a", Extend, 15, Some(30))];
        assert_eq!(spans(&windows(&log, 100)), vec![("a", 10, 100)]);
    }

    #[test]
    fn a_node_whose_permission_ran_out_but_observed_dead_later_overlaps_a_new_active() {
        let log = vec![proc("a", Activate, 10, 7), rec("b", Activate, 30, None), proc("a", Exited, 50, 7)];
        let mut old = rec("a", Activate, 10, Some(20));
        old.pid = Some(7);
        let with_until = vec![old, rec("b", Activate, 30, None), proc("a", Exited, 50, 7)];
        for log in [log, with_until] {
            let ws = windows(&log, 100);
            assert_eq!(spans(&ws), vec![("a", 10, 50), ("b", 30, 100)]);
            let found = overlaps(&ws, 0);
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].overlap_ns, 20);
        }
    }

    #[test]
    fn a_node_observed_dead_before_the_other_activates_does_not_overlap() {
        let mut old = rec("a", Activate, 10, Some(20));
        old.pid = Some(7);
        let log = vec![old, proc("a", Exited, 25, 7), rec("b", Activate, 30, None)];
        let ws = windows(&log, 100);
        assert_eq!(spans(&ws), vec![("a", 10, 25), ("b", 30, 100)]);
        assert!(overlaps(&ws, 0).is_empty());
        assert_eq!(closest_handover_ns(&ws), Some(5));
    }

    #[test]
    fn an_exit_ends_only_its_own_processs_window() {
        // A restarted member's new node started before the old one died: two of a's processes
        // could sign at once, which is an overlap too.
        let log = vec![proc("a", Activate, 10, 7), proc("a", Activate, 20, 8), proc("a", Exited, 30, 7)];
        let ws = windows(&log, 100);
        assert_eq!(spans(&ws), vec![("a", 10, 30), ("a", 20, 100)]);
        let found = overlaps(&ws, 0);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].first.pid, found[0].second.pid, found[0].overlap_ns), (Some(7), Some(8), 10));
    }

    #[test]
    fn an_exit_without_a_pid_ends_every_window_of_its_member() {
        let log = vec![rec("a", Activate, 10, None), proc("a", Activate, 12, 7), rec("a", Exited, 20, None)];
        assert_eq!(spans(&windows(&log, 100)), vec![("a", 10, 20), ("a", 12, 20)]);
    }

    #[test]
    fn a_deactivation_does_not_end_a_validator_that_signs_while_it_runs() {
        let log = vec![proc("a", Activate, 10, 7), rec("a", Deactivate, 20, None)];
        assert_eq!(spans(&windows(&log, 100)), vec![("a", 10, 100)]);
    }

    #[test]
    fn records_out_of_file_order_are_ordered_by_instant() {
        let log = vec![rec("a", Deactivate, 33, None), rec("a", Activate, 10, Some(50))];
        assert_eq!(spans(&windows(&log, 100)), vec![("a", 10, 33)]);
    }

    #[test]
    fn a_window_nothing_ends_runs_to_the_end_of_observation() {
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
        // b activates while a still signs: the S1 violation the checker exists for.
        let log = vec![rec("a", Activate, 10, None), rec("a", Deactivate, 30, None), rec("b", Activate, 26, None)];
        let ws = windows(&log, 100);
        let found = overlaps(&ws, 0);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].overlap_ns, 4);
        assert_eq!((found[0].first.member.as_str(), found[0].second.member.as_str()), ("a", "b"));
        assert!(overlaps(&ws, 4).is_empty(), "an overlap within the allowance is not reported");
    }

    #[test]
    fn the_same_api_node_told_twice_is_not_an_overlap() {
        let log = vec![rec("a", Activate, 10, Some(30)), rec("a", Activate, 20, Some(40))];
        let ws = windows(&log, 100);
        assert_eq!(spans(&ws), vec![("a", 10, 100)]);
        assert!(overlaps(&ws, 0).is_empty());
    }

    #[test]
    fn records_round_trip_through_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("activations.jsonl");
        let mut log = ActivationLog::open(&path).expect("open");
        let records = vec![rec("a", Activate, 1, Some(5)), rec("a", Deactivate, 3, None), proc("b", Exited, 4, 9)];
        for r in &records {
            log.append(r).expect("append");
        }
        assert_eq!(read(&path).expect("read"), records);
        let text = std::fs::read_to_string(&path).expect("text");
        assert!(text.contains(r#""pid":9"#) && !text.contains(r#""pid":null"#), "{text}");
        std::fs::write(&path, "{\"member\":\"a\"}\n").expect("write");
        match read(&path) {
            Err(ActivationLogError::Malformed { line: 1, .. }) => {}
            other => panic!("expected a malformed line 1, got {other:?}"),
        }
    }
}
