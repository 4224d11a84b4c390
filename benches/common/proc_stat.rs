//! A process's CPU time, memory and wake-ups as Linux reports them in `/proc`, which needs no
//! privilege (perf does: use it to attribute the time, as README's idle paragraph did).
//!
//! Readings only: it never signals or changes a process.

use std::collections::BTreeMap;
use std::time::Duration;

/// CPU ticks (utime + stime) from a `stat` line, read after the command name's last parenthesis.
fn stat_ticks(stat: &str) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), or a count (`Threads`).
fn status_field(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

/// One process at one instant.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// utime + stime of the whole process, in clock ticks.
    pub ticks: u64,
    pub rss_kib: u64,
    /// The peak resident set since the process started.
    pub hwm_kib: u64,
    pub threads: u64,
    /// Context switches (voluntary + involuntary) summed over its threads: each is a wake-up or
    /// a preemption.
    pub switches: u64,
    /// CPU ticks per thread name (threads of one name summed: tokio's workers share one).
    pub by_thread: BTreeMap<String, u64>,
}

/// `pid` now, or `None` when it is gone.
pub fn snapshot(pid: i32) -> Option<Snapshot> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut s = Snapshot {
        ticks: stat_ticks(&stat)?,
        rss_kib: status_field(&status, "VmRSS").unwrap_or(0),
        hwm_kib: status_field(&status, "VmHWM").unwrap_or(0),
        threads: status_field(&status, "Threads").unwrap_or(0),
        ..Snapshot::default()
    };
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let path = task.path();
        let (Ok(stat), Ok(status)) =
            (std::fs::read_to_string(path.join("stat")), std::fs::read_to_string(path.join("status")))
        else {
            continue; // a thread that ended between the listing and the read
        };
        s.switches += status_field(&status, "voluntary_ctxt_switches").unwrap_or(0)
            + status_field(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
        let name = stat.split_once(" (").and_then(|(_, rest)| rest.rsplit_once(')')).map_or("?", |(n, _)| n);
        *s.by_thread.entry(name.to_string()).or_default() += stat_ticks(&stat).unwrap_or(0);
    }
    Some(s)
}

/// Clock ticks per second (`CLK_TCK`), 100 when the system does not say.
pub fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64
}

/// CPU used between two snapshots over `window`, as a percentage of one core.
pub fn cpu_percent(before: u64, after: u64, window: Duration) -> f64 {
    after.saturating_sub(before) as f64 / ticks_per_second() / window.as_secs_f64() * 100.0
}
