//! Starting and stopping a lab's member processes: each member's daemon (and, in the labs that
//! run them apart, its simulated node), one slot per member.
//!
//! It signals only the processes it started, and the strays of one lab found by their command
//! line naming that lab's directory; never a process by name.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{LabError, procs};

/// Whether process `pid` can still run: it exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    procs::alive(pid)
}

/// How a member's log file is opened at each start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFile {
    /// One log across restarts.
    Append,
    /// A fresh log at each start.
    Truncate,
}

/// `program --config <config>` for a member's daemon (`program` is the `failoverd` binary, or a
/// command that runs it, such as `ip netns exec`), with its stderr (the log) into `log` and
/// nothing on its stdin or stdout. The lab adds its own arguments and environment.
pub fn daemon_command(mut program: Command, config: &Path, log: &Path, mode: LogFile) -> Result<Command, LabError> {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(mode == LogFile::Append)
        .truncate(mode == LogFile::Truncate)
        .open(log)
        .map_err(LabError::io("open the log", log))?;
    program.arg("--config").arg(config).stdin(Stdio::null()).stdout(Stdio::null()).stderr(file);
    Ok(program)
}

/// One process slot per member: empty when that member's process is not running (never
/// started, stopped, killed, or seen exited).
pub struct Processes {
    slots: Vec<Option<Child>>,
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

impl Processes {
    pub fn new(members: usize) -> Processes {
        Processes { slots: (0..members).map(|_| None).collect() }
    }

    /// Starts `command` as member `i`'s process (`what`, for the error: "the daemon").
    pub fn start(&mut self, i: usize, member: &str, what: &'static str, command: &mut Command) -> Result<(), LabError> {
        let child = command.spawn().map_err(|source| LabError::Spawn { what, member: member.to_string(), source })?;
        self.slots[i] = Some(child);
        Ok(())
    }

    /// Member `i`'s process id, while its slot holds one.
    pub fn pid(&self, i: usize) -> Option<i32> {
        self.slots[i].as_ref().map(|c| pid_of(c).as_raw())
    }

    /// Whether member `i` has a process that has not exited.
    pub fn running(&mut self, i: usize) -> bool {
        self.slots[i].as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` to member `i`'s process; false when there is none or it is gone.
    pub fn signal(&self, i: usize, signal: Signal) -> bool {
        self.slots[i].as_ref().is_some_and(|c| kill(pid_of(c), signal).is_ok())
    }

    /// SIGKILL member `i`'s process and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.slots[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM member `i`'s process and wait up to `grace` for it to release and exit; SIGKILL
    /// after that. Its exit status, when it exited by itself.
    pub fn stop(&mut self, i: usize, grace: Duration) -> Option<ExitStatus> {
        let pid = pid_of(self.slots[i].as_ref()?);
        let _ = kill(pid, Signal::SIGTERM);
        let status = self.wait_exit(i, grace);
        self.kill(i);
        status
    }

    /// Waits up to `limit` for member `i`'s process to exit by itself; its exit status, if it did
    /// (the slot is then empty).
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited(i) {
                return Some(status);
            }
            if self.slots[i].is_none() || Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Member `i`'s exit status if its process has exited (the slot is then empty).
    pub fn exited(&mut self, i: usize) -> Option<ExitStatus> {
        let status = self.slots[i].as_mut()?.try_wait().ok()??;
        self.slots[i] = None;
        Some(status)
    }

    /// Whether member `i`'s slot holds a process (running or not yet seen exited).
    pub fn started(&self, i: usize) -> bool {
        self.slots[i].is_some()
    }

    /// Kills every member's process, stopped ones too (continued first, so that none is left
    /// frozen if the SIGKILL is refused).
    pub fn kill_all(&mut self) {
        for i in 0..self.slots.len() {
            self.signal(i, Signal::SIGCONT);
            self.kill(i);
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// SIGKILLs every process whose command line names `dir` (one lab's directory): the keepers and
/// validators its daemons started, which are not the lab's children. A pid is checked again
/// right before its signal, so a process that reused it is left alone.
pub fn kill_strays(dir: &Path) {
    // A file inside the dir, not the dir's name alone: `/tmp/lab-12` must not match `/tmp/lab-123`.
    let dir = format!("{}/", dir.display());
    for p in procs::all().into_iter().filter(|p| p.mentions(&dir)) {
        if procs::read(p.pid).is_some_and(|again| again.mentions(&dir)) {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
    }
}
