//! The daemon's side of one keeper: starting it, moving its deadline, asking it to stop or
//! fence, and turning its reports into [`FenceNotice`](crate::fence_notice::FenceNotice)s.
//!
//! Writes to the keeper are synchronous and non-blocking (a frozen keeper's full pipe never
//! blocks the deadline thread). `fence` does not rely on the keeper at all: it also kills the
//! node's process group directly and confirms that no member of it can run. A keeper that ends
//! without a final report was lost: the daemon fences the group itself and reports the fence.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tokio::time::Instant;

use super::group;
use super::message::{Control, MAX_CONTROL_LINE, Report};
use super::{KeeperProgram, KeeperSpec};
use crate::domain::MonoTime;
use crate::fence_notice::{FenceNotices, FencedBy};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeeperError {
    #[error("cannot start the keeper ({program}): {detail}")]
    Start { program: String, detail: String },
    #[error("the keeper did not confirm it holds the node: {detail}")]
    NotHolding { detail: String },
    #[error("the keeper did not confirm the node stopped before the deadline")]
    Timeout,
    #[error("the keeper ended the node another way: {0}")]
    Ended(String),
    #[error("the keeper's control pipe is closed, or full because the keeper stopped reading")]
    NotReading,
}

/// Where to find the keeper program and where to report its fences.
#[derive(Clone)]
pub struct KeeperLauncher {
    /// The keeper-alone binary of this build or the daemon's own ([`KeeperProgram`]), started
    /// from a file this process holds open, so an upgraded binary on disk never mixes versions;
    /// the built binary in tests.
    pub program: KeeperProgram,
    pub notices: FenceNotices,
}

/// How a keeper ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    Stopped,
    Released,
    Fenced(String),
    /// It exited or was killed without a final report.
    Lost(String),
}

struct Shared {
    keeper_pid: i32,
    pgid: AtomicI32,
    control: Mutex<Option<File>>,
    /// The daemon asked for the end (stop, release or fence): the final report is no news.
    asked: AtomicBool,
}

/// One running keeper.
pub struct Keeper {
    shared: Arc<Shared>,
    ended: watch::Receiver<Option<Ending>>,
}

impl KeeperLauncher {
    /// A launcher whose program is this process's own executable.
    pub fn this_executable(notices: FenceNotices) -> KeeperLauncher {
        KeeperLauncher { program: KeeperProgram::this_executable(), notices }
    }

    /// A launcher whose program is the one this daemon chose at start
    /// ([`KeeperProgram::for_this_daemon`]).
    pub async fn for_this_daemon(notices: FenceNotices) -> KeeperLauncher {
        KeeperLauncher { program: KeeperProgram::for_this_daemon().await, notices }
    }

    /// Starts a keeper for `spec` and waits (until `deadline`) for it to confirm it holds the node.
    pub async fn start(&self, spec: &KeeperSpec, deadline: Instant) -> Result<Keeper, KeeperError> {
        let checked = self.program.still_checked();
        let program = checked.to_string();
        let start_err = |detail: String| KeeperError::Start { program: program.clone(), detail };
        let json = serde_json::to_string(spec).map_err(|e| start_err(e.to_string()))?;
        let mut cmd = tokio::process::Command::new(checked.exec());
        // `ps` shows "failoverd keeper --spec …", whatever path the program was started by.
        cmd.arg0("failoverd").arg("keeper").arg("--spec").arg(json);
        cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).kill_on_drop(false);
        #[allow(unsafe_code)]
        // SAFETY: runs in the forked child before exec and only calls setsid, which is
        // async-signal-safe: the keeper gets its own session, so no signal to the daemon's
        // process group or terminal reaches it.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
        }
        let mut child = cmd.spawn().map_err(|e| start_err(e.to_string()))?;
        let Some(keeper_pid) = child.id().and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 0) else {
            return Err(lost_at_start(&mut child, "no pid for the keeper process".into()).await);
        };
        let control = child.stdin.take().ok_or_else(|| start_err("no stdin pipe".into()))?;
        let control = File::from(control.into_owned_fd().map_err(|e| start_err(e.to_string()))?);
        // tokio hands the pipe back in blocking mode. A keeper that stops reading (frozen, or
        // retrying a fence it cannot confirm) must not block the writer — the runtime's worker at
        // a renew, the deadline thread at a fence — so the writes are non-blocking again.
        if let Err(e) = non_blocking(&control) {
            return Err(lost_at_start(&mut child, format!("its control pipe cannot be made non-blocking: {e}")).await);
        }
        let stdout = child.stdout.take().ok_or_else(|| start_err("no stdout pipe".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout_at(deadline, lines.next_line()).await;
        let pgid = match first {
            Ok(Ok(Some(line))) => match Report::parse(&line) {
                Some(Report::Started { pgid }) => pgid,
                Some(Report::Holding) => 0,
                _ => return Err(lost_at_start(&mut child, format!("it said {line:?}")).await),
            },
            Ok(Ok(None)) => return Err(lost_at_start(&mut child, "it exited (see its log lines above)".into()).await),
            Ok(Err(e)) => return Err(lost_at_start(&mut child, e.to_string()).await),
            Err(_) => return Err(lost_at_start(&mut child, "no answer before the deadline".into()).await),
        };
        let shared = Arc::new(Shared {
            keeper_pid,
            pgid: AtomicI32::new(pgid),
            control: Mutex::new(Some(control)),
            asked: AtomicBool::new(false),
        });
        let (tx, ended) = watch::channel(None);
        tokio::spawn(follow(lines, child, Arc::clone(&shared), tx, self.notices.clone()));
        Ok(Keeper { shared, ended })
    }
}

// A control line fits in one pipe write (PIPE_BUF is at least 512 bytes by POSIX): on a full
// non-blocking pipe such a write fails whole, so the keeper never reads half a line.
const _: () = assert!(MAX_CONTROL_LINE <= 512);

/// Sets `O_NONBLOCK` on `file`, keeping its other status flags.
fn non_blocking(file: &File) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(file, FcntlArg::F_GETFL)?);
    fcntl(file, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}

async fn lost_at_start(child: &mut tokio::process::Child, detail: String) -> KeeperError {
    let _ = child.start_kill();
    let _ = child.wait().await;
    KeeperError::NotHolding { detail }
}

/// Reads the keeper's reports until it exits, then reaps it.
async fn follow(
    mut lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    mut child: tokio::process::Child,
    shared: Arc<Shared>,
    ended: watch::Sender<Option<Ending>>,
    notices: FenceNotices,
) {
    let mut last = None;
    while let Ok(Some(line)) = lines.next_line().await {
        match Report::parse(&line) {
            Some(Report::FenceFailed { detail }) => {
                tracing::error!(reason = %detail, "the keeper cannot confirm the node is stopped yet; it keeps trying")
            }
            Some(r) if r.is_final() => last = Some(r),
            Some(_) => {}
            None => tracing::error!(line = %line, "the keeper sent a line that is not a report; ignored"),
        }
    }
    let asked = shared.asked.load(Ordering::SeqCst);
    let ending = match last {
        Some(Report::Stopped) => Ending::Stopped,
        Some(Report::Released) => Ending::Released,
        Some(Report::Fenced { reason }) => {
            if !asked {
                notices.send(FencedBy::Keeper, reason.clone());
            }
            Ending::Fenced(reason)
        }
        _ => {
            let status = child.try_wait().ok().flatten().map_or("still running".to_string(), |s| s.to_string());
            let detail = format!("the keeper (pid {}) ended without a final report ({status})", shared.keeper_pid);
            let pgid = shared.pgid.load(Ordering::SeqCst);
            let outcome = tokio::task::spawn_blocking(move || fence_group(pgid, Duration::from_secs(5))).await;
            let done = match outcome {
                Ok(Ok(what)) => format!("{detail}; {what}"),
                Ok(Err(e)) => format!("{detail}; {e}"),
                Err(e) => format!("{detail}; the direct fence did not run: {e}"),
            };
            if !asked {
                notices.send(FencedBy::KeeperLost, done.clone());
            }
            Ending::Lost(done)
        }
    };
    let _ = ended.send(Some(ending));
    let _ = child.wait().await;
}

/// Kills process group `pgid` (0: none) and confirms no member can run.
fn fence_group(pgid: i32, timeout: Duration) -> Result<String, String> {
    if pgid == 0 {
        return Ok("no node group to kill".into());
    }
    match group::kill_until_empty(pgid, timeout, || {}) {
        0 => Ok(format!("killed the node's process group {pgid}")),
        left => Err(format!("process group {pgid} still has {left} live processes after SIGKILL")),
    }
}

/// Whether `pid` can no longer run: gone, or a zombie waiting to be reaped. A pid that names
/// no single process (0 or below: a whole group) is never "dead".
fn is_dead(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match kill(Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::ESRCH) => return true,
        Err(_) => return false,
        Ok(()) => {}
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

impl Keeper {
    /// Writes one control line; false when the keeper's pipe is gone or full.
    fn send(&self, c: Control) -> bool {
        let mut buf = [0u8; MAX_CONTROL_LINE];
        let line = c.encode(&mut buf);
        let mut control = self.shared.control.lock().unwrap_or_else(|p| p.into_inner());
        match control.as_mut() {
            Some(f) => f.write_all(line).is_ok(),
            None => false,
        }
    }

    /// The keeper's own pid.
    pub fn keeper_pid(&self) -> i32 {
        self.shared.keeper_pid
    }

    /// The node's process group, for a keeper that started one.
    pub fn pgid(&self) -> Option<i32> {
        Some(self.shared.pgid.load(Ordering::SeqCst)).filter(|p| *p > 0)
    }

    /// Whether the keeper still holds the node (no final report, not lost).
    pub fn is_holding(&self) -> bool {
        self.ended.borrow().is_none()
    }

    pub fn ending(&self) -> Option<Ending> {
        self.ended.borrow().clone()
    }

    /// Moves the deadline after a committed renew; `NotReading` when the line could not be
    /// written (the keeper keeps its earlier deadline).
    pub fn extend(&self, until: MonoTime) -> Result<(), KeeperError> {
        if self.send(Control::Extend { until }) { Ok(()) } else { Err(KeeperError::NotReading) }
    }

    async fn wait_end(&self, deadline: Instant) -> Result<Ending, KeeperError> {
        let mut rx = self.ended.clone();
        match tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await {
            Ok(Ok(e)) => Ok(e.clone().unwrap_or(Ending::Lost(String::new()))),
            _ => Err(KeeperError::Timeout),
        }
    }

    /// Stops the node gracefully (SIGTERM to its group, SIGKILL after `grace`) and waits for it.
    pub async fn stop(&self, grace: Duration, deadline: Instant) -> Result<(), KeeperError> {
        self.shared.asked.store(true, Ordering::SeqCst);
        if !self.send(Control::Stop { grace }) {
            return Err(KeeperError::NotReading);
        }
        match self.wait_end(deadline).await? {
            Ending::Stopped | Ending::Fenced(_) => Ok(()),
            Ending::Released => Err(KeeperError::Ended("released instead of stopped".into())),
            Ending::Lost(d) => Err(KeeperError::Ended(d)),
        }
    }

    /// The daemon stopped the node itself: the keeper exits without acting.
    pub async fn release(&self, deadline: Instant) -> Result<(), KeeperError> {
        self.shared.asked.store(true, Ordering::SeqCst);
        if !self.send(Control::Release) {
            return Err(KeeperError::NotReading);
        }
        self.wait_end(deadline).await.map(|_| ())
    }

    /// Blocking and runtime-free: asks the keeper to fence, kills the node's group directly as
    /// well, and confirms within `timeout` that no member of the group can run and the keeper
    /// has ended.
    pub fn fence(&self, timeout: Duration) -> Result<(), String> {
        self.shared.asked.store(true, Ordering::SeqCst);
        self.send(Control::Fence);
        let end = std::time::Instant::now() + timeout;
        let killed = fence_group(self.shared.pgid.load(Ordering::SeqCst), timeout)?;
        while !is_dead(self.shared.keeper_pid) {
            if std::time::Instant::now() >= end {
                // The node is dead (above); a keeper stuck in its own fence is killed so that it
                // does not act later on a node this daemon may start again.
                // Never kill(0) or kill(-n): that would signal this daemon's own group.
                if self.shared.keeper_pid > 0 {
                    let _ = kill(Pid::from_raw(self.shared.keeper_pid), Signal::SIGKILL);
                }
                tracing::error!(outcome = %killed, "the keeper did not exit after a fence and was killed");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        // Closing our end is the keeper's signal to fence: a handle dropped without a stop or
        // release never leaves a node running unheld.
        self.shared.control.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keeper::Target;

    /// A keeper that stops reading (frozen here; one retrying a fence it cannot confirm does the
    /// same) fills its control pipe. The daemon's writes then fail at once instead of blocking
    /// the runtime's only worker at every renew, or the deadline thread at a fence, and the fence
    /// still kills the node's group and ends the keeper.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_keeper_that_stops_reading_blocks_no_write_and_its_node_is_still_fenced() {
        let far = MonoTime::now().saturating_add(Duration::from_secs(600));
        let spec = KeeperSpec {
            target: Target::Group { argv: vec!["sleep".into(), "600".into()] },
            key_file: None,
            until_ns: far.as_nanos(),
            fence_timeout_ms: 2_000,
            record: None,
        };
        let launcher = crate::keeper::test_launcher();
        let keeper = Arc::new(launcher.start(&spec, Instant::now() + Duration::from_secs(10)).await.expect("holds"));
        let pgid = keeper.pgid().expect("the node runs in a group of its own");
        let _cleanup = KillOnDrop(vec![keeper.keeper_pid(), -pgid]);
        kill(Pid::from_raw(keeper.keeper_pid()), Signal::SIGSTOP).expect("freeze the keeper");
        let writer = Arc::clone(&keeper);
        let writes = tokio::task::spawn_blocking(move || (0..20_000).filter(|_| writer.extend(far).is_ok()).count());
        let written = match tokio::time::timeout(Duration::from_secs(10), writes).await {
            Ok(written) => written.expect("the writes ran"),
            Err(_) => {
                // Ends the blocked write (its pipe closes) and the node, so the test can end.
                drop(_cleanup);
                panic!("a write to a keeper that stopped reading blocked");
            }
        };
        // A pipe holds 64 KiB by default: a few thousand lines, never all twenty thousand.
        assert!((1..20_000).contains(&written), "{written} of 20000 lines written");
        let fencer = Arc::clone(&keeper);
        let fenced = tokio::task::spawn_blocking(move || fencer.fence(Duration::from_secs(2))).await.expect("ran");
        assert!(fenced.is_ok(), "{fenced:?}");
        assert_eq!(group::kill_until_empty(pgid, Duration::from_millis(10), || {}), 0, "the node's group is dead");
        // Its reports end when it dies: awaited, not polled.
        let ended = keeper.wait_end(Instant::now() + Duration::from_secs(2)).await;
        assert!(ended.is_ok(), "the frozen keeper was not killed: {ended:?}");
        assert!(is_dead(keeper.keeper_pid()), "the frozen keeper was killed");
    }

    /// SIGKILLs these pids (a negative one: a process group) when the test ends, however it ends:
    /// a stopped keeper never reads the pipe it would otherwise exit on.
    struct KillOnDrop(Vec<i32>);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            for pid in self.0.iter().filter(|p| **p != 0) {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
    }
}
