//! The supervised `process` producer: the node runs as this daemon's child, started on
//! activation and stopped on deactivation (SIGTERM, then SIGKILL after `fence_timeout`).
//!
//! The child gets `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the daemon — the kernel's
//! guarantee, not ours. Its exit is noticed at once by a task that waits on it. `fence` works
//! from the self-fence OS thread with plain syscalls: SIGKILL, then confirm the process is gone
//! or a zombie (a zombie cannot sign).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use super::{Producer, ProducerError, ProducerStatus, SignFloor};
use crate::domain::MonoTime;

pub struct ProcessProducer {
    argv: Vec<String>,
    fence_timeout: Duration,
    /// Pid of the running child, 0 when none: readable from the fence thread without locks.
    pid: Arc<AtomicI32>,
    /// Flips to `false` the moment the child exits.
    running: Mutex<Option<watch::Receiver<bool>>>,
}

impl ProcessProducer {
    pub fn new(argv: Vec<String>, fence_timeout: Duration) -> ProcessProducer {
        ProcessProducer { argv, fence_timeout, pid: Arc::new(AtomicI32::new(0)), running: Mutex::new(None) }
    }

    fn child_pid(&self) -> Option<Pid> {
        match self.pid.load(Ordering::SeqCst) {
            0 => None,
            p => Some(Pid::from_raw(p)),
        }
    }

    async fn wait_exit(&self, deadline: Instant) -> bool {
        let rx = self.running.lock().await.clone();
        let Some(mut rx) = rx else { return true };
        tokio::time::timeout_at(deadline, rx.wait_for(|running| !running)).await.is_ok()
    }
}

/// Whether `pid` can no longer run: gone, or a zombie waiting to be reaped. Anything that
/// cannot be checked counts as alive: "could not check" never means fenced.
fn is_dead(pid: Pid) -> bool {
    match kill(pid, None) {
        Err(nix::errno::Errno::ESRCH) => return true,
        Err(_) => return false,
        Ok(()) => {}
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

#[async_trait]
impl Producer for ProcessProducer {
    async fn activate(&self, _floor: SignFloor, _until: MonoTime, _deadline: Instant) -> Result<(), ProducerError> {
        let operation = "activate";
        let mut running = self.running.lock().await;
        if running.as_ref().is_some_and(|rx| *rx.borrow()) {
            return Ok(());
        }
        let (program, args) = self
            .argv
            .split_first()
            .ok_or(ProducerError::Failed { operation, detail: "producer.command is empty".into() })?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe; it touches no memory shared with the parent.
        unsafe {
            cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| ProducerError::Failed { operation, detail: format!("cannot start {program}: {e}") })?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        self.pid.store(pid, Ordering::SeqCst);
        let (tx, rx) = watch::channel(true);
        let pid_slot = Arc::clone(&self.pid);
        tokio::spawn(async move {
            let status = child.wait().await;
            tracing::warn!(pid, ?status, "the node process exited");
            let _ = pid_slot.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
            let _ = tx.send(false);
        });
        *running = Some(rx);
        Ok(())
    }

    async fn extend(&self, _until: MonoTime, _deadline: Instant) -> Result<(), ProducerError> {
        Ok(())
    }

    async fn deactivate(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        let Some(pid) = self.child_pid() else { return Ok(ProducerStatus::default()) };
        let _ = kill(pid, Signal::SIGTERM);
        let grace = (Instant::now() + self.fence_timeout).min(deadline);
        if !self.wait_exit(grace).await {
            let _ = kill(pid, Signal::SIGKILL);
            if !self.wait_exit(deadline.max(Instant::now() + Duration::from_secs(1))).await {
                return Err(ProducerError::Timeout { operation: "deactivate" });
            }
        }
        Ok(ProducerStatus::default())
    }

    fn fence(&self, timeout: Duration) -> Result<(), ProducerError> {
        let Some(pid) = self.child_pid() else { return Ok(()) };
        let _ = kill(pid, Signal::SIGKILL);
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            if is_dead(pid) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if is_dead(pid) { Ok(()) } else { Err(ProducerError::Timeout { operation: "fence" }) }
    }

    async fn status(&self, _deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        let running = self.running.lock().await.as_ref().is_some_and(|rx| *rx.borrow());
        // A child killed by the fence thread is dead before the waiting task has reaped it.
        let active = running && self.child_pid().is_some_and(|pid| !is_dead(pid));
        Ok(ProducerStatus { active, last_signed_height: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Hrs;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn floor() -> SignFloor {
        SignFloor(Hrs::ZERO)
    }

    #[tokio::test]
    async fn activate_starts_the_node_and_deactivate_stops_it() {
        let p = ProcessProducer::new(vec!["sleep".into(), "600".into()], Duration::from_secs(5));
        p.activate(floor(), MonoTime::now(), soon()).await.expect("starts");
        let pid = p.child_pid().expect("running");
        assert!(!is_dead(pid));
        assert!(p.status(soon()).await.expect("status").active);
        p.deactivate(soon()).await.expect("stops");
        assert!(!p.status(soon()).await.expect("status").active);
        assert!(is_dead(pid));
    }

    #[tokio::test]
    async fn a_node_ignoring_sigterm_is_killed_after_fence_timeout() {
        let p = ProcessProducer::new(
            vec!["sh".into(), "-c".into(), "trap '' TERM; while :; do sleep 0.05; done".into()],
            Duration::from_millis(300),
        );
        p.activate(floor(), MonoTime::now(), soon()).await.expect("starts");
        // Give the shell time to install its trap: the point is that SIGTERM is ignored.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        p.deactivate(soon()).await.expect("killed");
        assert!(started.elapsed() >= Duration::from_millis(300), "SIGKILL came before fence_timeout");
        assert!(!p.status(soon()).await.expect("status").active);
    }

    #[tokio::test]
    async fn the_nodes_own_exit_is_noticed_at_once() {
        let p = ProcessProducer::new(vec!["sh".into(), "-c".into(), "exit 3".into()], Duration::from_secs(1));
        p.activate(floor(), MonoTime::now(), soon()).await.expect("starts");
        assert!(p.wait_exit(soon()).await, "exit noticed");
        assert!(!p.status(soon()).await.expect("status").active);
    }

    #[tokio::test]
    async fn fence_kills_from_a_plain_thread() {
        let p = Arc::new(ProcessProducer::new(vec!["sleep".into(), "600".into()], Duration::from_secs(5)));
        p.activate(floor(), MonoTime::now(), soon()).await.expect("starts");
        let pid = p.child_pid().expect("running");
        let fencer = Arc::clone(&p);
        std::thread::spawn(move || fencer.fence(Duration::from_secs(2))).join().expect("thread").expect("fenced");
        assert!(is_dead(pid));
    }
}
