//! The death watch: sees from outside when a simulated validator's process dies, and records it
//! in that validator's activation log as an `Exited` record — the evidence that ends its S1
//! window (see [`super::activation`]).
//!
//! A test harness or the demo starts it over the members' activation logs; the daemon never does,
//! and it never signals, reaps or otherwise touches a process. A thread reads what was appended
//! to the logs every [`TICK`]; for each `Activate` that carries a pid it opens a pidfd
//! (`pidfd_open(2)`) and polls it. A pidfd becomes readable when its process exits, before anyone
//! reaps it, so a zombie counts as dead, as it should: it cannot sign.
//!
//! The instant recorded is when the watch saw the death (`MonoTime::now()` then), an upper bound
//! of the death itself: the process may have died up to one poll earlier, or while this thread
//! was not scheduled. That only makes a window longer, never shorter — conservative for S1. The
//! same holds for the rare cases it cannot tell apart: a pid already gone when its `Activate` is
//! read is recorded dead at once (later than it died); a pid reused by another process before the
//! watch opened it stays "alive" until that process dies; a pidfd that cannot be opened is tried
//! again on the next turn, the window open meanwhile.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::activation::{ActivationEvent, ActivationLog, ActivationRecord};
use crate::domain::{MemberId, MonoTime};

/// How often the logs are read, and the longest a poll of the pidfds waits.
pub const TICK: Duration = Duration::from_millis(20);

/// A running death watch; [`DeathWatch::stop`] (or dropping it) ends its thread.
pub struct DeathWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DeathWatch {
    /// Starts watching the processes named by `Activate` records in `logs`, those already there
    /// and those appended later. A log that does not exist yet is watched for.
    pub fn start(logs: &[PathBuf]) -> std::io::Result<DeathWatch> {
        let stop = Arc::new(AtomicBool::new(false));
        let tails: Vec<Tail> = logs.iter().map(|p| Tail::new(p.clone())).collect();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("death-watch".into())
            .spawn(move || Watcher { tails, pending: Vec::new(), watched: Vec::new() }.run(&flag))?;
        Ok(DeathWatch { stop, thread: Some(thread) })
    }

    /// Ends the watch after its current turn (at most about one [`TICK`]).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DeathWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A process the watch knows of: whose node, from which log.
#[derive(Clone)]
struct Process {
    log: usize,
    member: MemberId,
    pid: u32,
}

struct Watcher {
    tails: Vec<Tail>,
    /// Announced, not yet opened.
    pending: Vec<Process>,
    /// Opened and alive when last polled.
    watched: Vec<(Process, OwnedFd)>,
}

impl Watcher {
    fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            self.read_logs();
            self.open_pending();
            self.poll_watched();
        }
    }

    fn read_logs(&mut self) {
        for (log, tail) in self.tails.iter_mut().enumerate() {
            for r in tail.read_new() {
                match (r.event, r.pid) {
                    (ActivationEvent::Activate, Some(pid)) => {
                        self.pending.push(Process { log, member: r.member, pid });
                    }
                    // Its death is already on record (by this watch or someone else).
                    (ActivationEvent::Exited, Some(pid)) => {
                        self.pending.retain(|p| !(p.log == log && p.pid == pid));
                        self.watched.retain(|(p, _)| !(p.log == log && p.pid == pid));
                    }
                    _ => {}
                }
            }
        }
    }

    fn open_pending(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            match pidfd_open(p.pid) {
                Ok(fd) => self.watched.push((p, fd)),
                Err(Errno::ESRCH) => self.record_exit(&p),
                Err(e) => {
                    tracing::warn!(pid = p.pid, member = %p.member, error = %e, "death watch cannot open a pidfd; trying again");
                    self.pending.push(p);
                }
            }
        }
    }

    /// Waits up to one tick for a watched process to die; records every one that did.
    fn poll_watched(&mut self) {
        if self.watched.is_empty() {
            std::thread::sleep(TICK);
            return;
        }
        let dead: Vec<usize> = {
            let mut fds: Vec<PollFd> =
                self.watched.iter().map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)).collect();
            match poll(&mut fds, PollTimeout::from(TICK.as_millis() as u16)) {
                Ok(0) => Vec::new(),
                Ok(_) => fds
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(i, _)| i)
                    .collect(),
                Err(Errno::EINTR) => Vec::new(),
                Err(e) => {
                    tracing::warn!(error = %e, "death watch cannot poll its pidfds; trying again");
                    std::thread::sleep(TICK);
                    Vec::new()
                }
            }
        };
        for i in dead.into_iter().rev() {
            let (p, _fd) = self.watched.swap_remove(i);
            self.record_exit(&p);
        }
    }

    fn record_exit(&mut self, p: &Process) {
        let record = ActivationRecord {
            member: p.member.clone(),
            event: ActivationEvent::Exited,
            mono_ns: MonoTime::now().as_nanos(),
            until_mono_ns: None,
            pid: Some(p.pid),
        };
        // Unrecorded, the window stays open to the end of the observation: longer, never shorter.
        if let Err(e) = self.tails[p.log].append(&record) {
            tracing::warn!(pid = p.pid, member = %p.member, error = %e, "death watch cannot record an exit");
        }
    }
}

/// `pidfd_open(2)`: a descriptor that becomes readable when process `pid` exits.
#[allow(unsafe_code)]
fn pidfd_open(pid: u32) -> Result<OwnedFd, Errno> {
    let pid = nix::libc::pid_t::try_from(pid).map_err(|_| Errno::ESRCH)?;
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new descriptor or -1; it
    // reads and writes no memory of ours.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    let fd = i32::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What was appended to one activation log since the last read, and a writer for it.
struct Tail {
    path: PathBuf,
    offset: u64,
    /// The bytes after the last newline: a line still being written.
    partial: Vec<u8>,
    writer: Option<ActivationLog>,
}

impl Tail {
    fn new(path: PathBuf) -> Tail {
        Tail { path, offset: 0, partial: Vec::new(), writer: None }
    }

    /// The complete records appended since the last call. A line that does not parse is logged
    /// and skipped: one bad line must not blind the watch to the rest.
    fn read_new(&mut self) -> Vec<ActivationRecord> {
        let mut bytes = std::mem::take(&mut self.partial);
        match read_from(&self.path, self.offset, &mut bytes) {
            Ok(n) => self.offset += n,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "death watch cannot read an activation log")
            }
        }
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.partial = bytes.split_off(complete);
        bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .filter_map(|line| match serde_json::from_slice(line) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "death watch skips a line that is not an activation record");
                    None
                }
            })
            .collect()
    }

    fn append(&mut self, record: &ActivationRecord) -> Result<(), super::activation::ActivationLogError> {
        if self.writer.is_none() {
            self.writer = Some(ActivationLog::open(&self.path)?);
        }
        match &mut self.writer {
            Some(w) => w.append(record),
            None => Ok(()),
        }
    }
}

/// Appends to `into` what the file at `path` holds from `offset` on; the number of bytes read.
/// A file that does not exist yet holds nothing.
fn read_from(path: &Path, offset: u64, into: &mut Vec<u8>) -> std::io::Result<u64> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let n = file.read_to_end(into)?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::activation;
    use std::process::{Command, Stdio};

    fn activate(log: &Path, member: &str, pid: u32) {
        let record = ActivationRecord {
            member: MemberId::new(member).expect("valid"),
            event: ActivationEvent::Activate,
            mono_ns: MonoTime::now().as_nanos(),
            until_mono_ns: None,
            pid: Some(pid),
        };
        ActivationLog::open(log).and_then(|mut l| l.append(&record)).expect("append");
    }

    /// Waits up to 5 s for an `Exited` record of `pid` in `log`.
    fn wait_exited(log: &Path, pid: u32) -> ActivationRecord {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let found = activation::read(log)
                .expect("log parses")
                .into_iter()
                .find(|r| r.event == ActivationEvent::Exited && r.pid == Some(pid));
            if let Some(r) = found {
                return r;
            }
            assert!(std::time::Instant::now() < end, "no Exited record for pid {pid} within 5 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_killed_process_is_recorded_exited_after_it_died_even_as_an_unreaped_zombie() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("activations-a.jsonl");
        let watch = DeathWatch::start(std::slice::from_ref(&log)).expect("starts");
        let mut child = Command::new("sleep").arg("600").stdin(Stdio::null()).spawn().expect("sleep starts");
        activate(&log, "a", child.id());
        std::thread::sleep(TICK * 5);
        assert!(
            activation::read(&log).expect("log").iter().all(|r| r.event != ActivationEvent::Exited),
            "a live process was recorded dead"
        );
        let killed_at = MonoTime::now();
        child.kill().expect("kill");
        // Not reaped yet: a zombie is dead for the watch.
        let exited = wait_exited(&log, child.id());
        assert!(exited.mono_ns >= killed_at.as_nanos(), "the instant is an upper bound of the death");
        assert_eq!(exited.member.as_str(), "a");
        child.wait().expect("reap");
        watch.stop();
    }

    #[test]
    fn a_pid_already_gone_is_recorded_at_once_and_only_once() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("activations-b.jsonl");
        let mut child = Command::new("true").spawn().expect("true starts");
        let pid = child.id();
        child.wait().expect("reaped");
        activate(&log, "b", pid);
        let watch = DeathWatch::start(std::slice::from_ref(&log)).expect("starts");
        wait_exited(&log, pid);
        std::thread::sleep(TICK * 5);
        watch.stop();
        let exits = activation::read(&log).expect("log").iter().filter(|r| r.event == ActivationEvent::Exited).count();
        assert_eq!(exits, 1);
    }

    #[test]
    fn a_death_already_on_record_is_not_recorded_again_after_a_restart_of_the_watch() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("activations-a.jsonl");
        let mut child = Command::new("true").spawn().expect("true starts");
        let pid = child.id();
        child.wait().expect("reaped");
        activate(&log, "a", pid);
        let first = DeathWatch::start(std::slice::from_ref(&log)).expect("starts");
        wait_exited(&log, pid);
        first.stop();
        let second = DeathWatch::start(std::slice::from_ref(&log)).expect("starts again");
        std::thread::sleep(TICK * 5);
        second.stop();
        let exits = activation::read(&log).expect("log").iter().filter(|r| r.event == ActivationEvent::Exited).count();
        assert_eq!(exits, 1);
    }
}
