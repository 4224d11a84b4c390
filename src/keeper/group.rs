//! A node's process group: who is in it, killing all of it, and the record that lets a later
//! start-up find a group that outlived both its daemon and its keeper.
//!
//! Only plain syscalls and `/proc` reads: the deadline thread and the keeper call these while no
//! async runtime can be relied on. "Could not check" never counts as "empty".

use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Members of process group `pgid` that can still run (zombies excluded: they cannot sign).
pub fn live_members(pgid: i32) -> std::io::Result<usize> {
    let mut live = 0;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // A process that exits while we look is simply gone.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if let Some((state, group)) = state_and_group(&stat)
            && group == pgid
            && state != 'Z'
        {
            live += 1;
        }
    }
    Ok(live)
}

/// The state letter and process group of a `/proc/<pid>/stat` line.
fn state_and_group(stat: &str) -> Option<(char, i32)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

/// The start time (clock ticks since boot) of `pid`, from `/proc/<pid>/stat`.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Field 22 of stat; `rest` starts at field 3.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Sends `signal` to every process of the group; a group already gone is not an error.
pub fn signal_group(pgid: i32, signal: Signal) -> Result<(), Errno> {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// SIGKILLs the group until no member can run, for up to `timeout`; `reap` runs between tries
/// (the keeper reaps its children there, so that they do not linger as members). Returns how
/// many live members were left.
pub fn kill_until_empty(pgid: i32, timeout: Duration, mut reap: impl FnMut()) -> usize {
    let end = std::time::Instant::now() + timeout;
    loop {
        let _ = signal_group(pgid, Signal::SIGKILL);
        reap();
        let left = live_members(pgid).unwrap_or(usize::MAX);
        if left == 0 || std::time::Instant::now() >= end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What is recorded about a running node group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    pub pgid: i32,
    /// The group leader's start time, to tell our leader from a later process with its pid.
    pub leader_start: u64,
    /// This boot's id: after a reboot nothing of the group can be left.
    pub boot_id: String,
}

pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

impl GroupRecord {
    pub fn of(pgid: i32) -> GroupRecord {
        GroupRecord { pgid, leader_start: start_time(pgid).unwrap_or(0), boot_id: boot_id() }
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{} {} {}\n", self.pgid, self.leader_start, self.boot_id))?;
        std::fs::rename(&tmp, path)
    }

    /// `None` when there is no record; a record that does not parse is an error naming it.
    pub fn read(path: &Path) -> Result<Option<GroupRecord>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut f = text.split_ascii_whitespace();
        let bad = || format!("{} is not a node group record (expected: pgid start boot_id)", path.display());
        let pgid = f.next().and_then(|s| s.parse::<i32>().ok()).filter(|p| *p > 1).ok_or_else(bad)?;
        let leader_start = f.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let boot_id = f.next().ok_or_else(bad)?.to_string();
        Ok(Some(GroupRecord { pgid, leader_start, boot_id }))
    }
}

/// Start-up cleanup: stops the group recorded at `path` (a node left running by an earlier run,
/// orphans included) and removes the record. Returns the group that was stopped, if any.
pub fn stop_recorded(path: &Path, timeout: Duration) -> Result<Option<i32>, String> {
    let Some(record) = GroupRecord::read(path)? else { return Ok(None) };
    let ours = record.boot_id == boot_id()
        // A live leader with another start time is a different process that reuses the pid.
        && start_time(record.pgid).is_none_or(|t| t == record.leader_start);
    let stopped = if ours && live_members(record.pgid).map_err(|e| format!("cannot read /proc: {e}"))? > 0 {
        let left = kill_until_empty(record.pgid, timeout, || {});
        if left > 0 {
            return Err(format!(
                "the node group {} left by an earlier run still has {left} live processes after SIGKILL",
                record.pgid
            ));
        }
        Some(record.pgid)
    } else {
        None
    };
    match std::fs::remove_file(path) {
        Ok(()) => Ok(stopped),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(stopped),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_spaces_and_parentheses_in_the_name_parse() {
        let line = "4242 (node (x) y) S 1 4240 4240 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        assert_eq!(state_and_group(line), Some(('S', 4240)));
        assert_eq!(state_and_group("garbage"), None);
    }

    #[test]
    fn our_own_group_has_a_live_member_and_a_record_round_trips() {
        let me = nix::unistd::getpgrp().as_raw();
        assert!(live_members(me).expect("proc") >= 1);
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("node-group");
        let r = GroupRecord { pgid: 77, leader_start: 123, boot_id: "b".into() };
        r.write(&path).expect("write");
        assert_eq!(GroupRecord::read(&path), Ok(Some(r)));
    }

    #[test]
    fn a_truncated_or_absurd_record_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("node-group");
        for text in ["", "12", "1 5 boot", "-4 5 boot", "abc 5 boot"] {
            std::fs::write(&path, text).expect("write");
            let e = GroupRecord::read(&path).expect_err(text);
            assert!(e.contains("node-group") && e.contains("not a node group record"), "{e}");
        }
        assert_eq!(GroupRecord::read(&dir.path().join("absent")), Ok(None));
    }

    #[test]
    fn a_record_from_another_boot_is_dropped_without_signalling_anyone() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("node-group");
        let me = nix::unistd::getpgrp().as_raw();
        GroupRecord { pgid: me, leader_start: 0, boot_id: "another-boot".into() }.write(&path).expect("write");
        assert_eq!(stop_recorded(&path, Duration::from_secs(1)), Ok(None));
        assert!(!path.exists());
    }
}
