//! The supervised `process` producer: the node runs under a keeper (crate::keeper), started on
//! activation and stopped on deactivation (SIGTERM to its whole process group, then SIGKILL
//! after `fence_timeout`).
//!
//! The keeper, not this daemon, is the node's parent: it starts the node as the leader of a new
//! process group, reaps it and any orphan of a forking start script, and kills the whole group
//! at the lease deadline or when this daemon's end of its pipe closes — so a frozen, crashed or
//! starved daemon cannot keep the node signing. `fence` works from the deadline thread with plain
//! syscalls: it asks the keeper and also kills the group itself. Start-up stops a group recorded
//! by an earlier run (`node-group` in the data directory), orphans included.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Grant, Producer, ProducerError, ProducerStatus};
use crate::domain::MonoTime;
use crate::keeper::{Keeper, KeeperLauncher, KeeperSpec, Target, group};

pub struct ProcessProducer {
    argv: Vec<String>,
    fence_timeout: Duration,
    launcher: KeeperLauncher,
    /// A key the node reads at start (cometbft-filepv), removed by the keeper on a fence.
    key_file: Option<PathBuf>,
    /// Where the running node's group is recorded (for a start-up after a crash).
    record: Option<PathBuf>,
    /// The keeper of the running node; readable from the deadline thread.
    keeper: Mutex<Option<std::sync::Arc<Keeper>>>,
}

impl ProcessProducer {
    pub fn new(argv: Vec<String>, fence_timeout: Duration, launcher: KeeperLauncher) -> ProcessProducer {
        ProcessProducer { argv, fence_timeout, launcher, key_file: None, record: None, keeper: Mutex::new(None) }
    }

    /// The key file the keeper removes on a fence.
    pub fn with_key_file(mut self, key_file: PathBuf) -> ProcessProducer {
        self.key_file = Some(key_file);
        self
    }

    /// Records the running node's process group at `path`.
    pub fn with_record(mut self, path: PathBuf) -> ProcessProducer {
        self.record = Some(path);
        self
    }

    fn current(&self) -> Option<std::sync::Arc<Keeper>> {
        self.keeper.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn take(&self) -> Option<std::sync::Arc<Keeper>> {
        self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The running node's process group.
    pub fn node_group(&self) -> Option<i32> {
        self.current().and_then(|k| k.pgid())
    }

    /// Stops a group an earlier run recorded (start-up), orphans included.
    fn stop_recorded(&self, operation: &'static str) -> Result<(), ProducerError> {
        let Some(path) = &self.record else { return Ok(()) };
        match group::stop_recorded(path, self.fence_timeout) {
            Ok(Some(pgid)) => {
                tracing::info!(pgid, record = %path.display(), "stopped a node process group left running by an earlier run");
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(detail) => Err(ProducerError::Failed { operation, detail }),
        }
    }
}

#[async_trait]
impl Producer for ProcessProducer {
    async fn activate(&self, grant: Grant, deadline: Instant) -> Result<(), ProducerError> {
        let (operation, until) = ("activate", grant.until);
        if let Some(k) = self.current().filter(|k| k.is_holding()) {
            // Already running: the keeper's deadline follows this activation's validity.
            return k.extend(until).map_err(|e| ProducerError::Failed { operation, detail: e.to_string() });
        }
        if self.argv.is_empty() {
            return Err(ProducerError::Failed { operation, detail: "producer.command is empty".into() });
        }
        self.stop_recorded(operation)?;
        let spec = KeeperSpec {
            target: Target::Group { argv: self.argv.clone() },
            key_file: self.key_file.clone(),
            until_ns: until.as_nanos(),
            fence_timeout_ms: u64::try_from(self.fence_timeout.as_millis()).unwrap_or(u64::MAX),
            record: self.record.clone(),
        };
        let keeper = self
            .launcher
            .start(&spec, deadline)
            .await
            .map_err(|e| ProducerError::Failed { operation, detail: e.to_string() })?;
        if let Some(pgid) = keeper.pgid() {
            tracing::info!(pgid, "the node runs in its own process group, held by a keeper");
        }
        *self.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::sync::Arc::new(keeper));
        Ok(())
    }

    async fn extend(&self, until: MonoTime, _deadline: Instant) -> Result<(), ProducerError> {
        match self.current() {
            Some(k) if k.is_holding() => {
                k.extend(until).map_err(|e| ProducerError::Failed { operation: "extend", detail: e.to_string() })
            }
            _ => Ok(()),
        }
    }

    async fn deactivate(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        let Some(keeper) = self.current() else {
            self.stop_recorded("deactivate")?;
            return Ok(ProducerStatus::default());
        };
        if keeper.is_holding() {
            let grace = self.fence_timeout.min(deadline.saturating_duration_since(Instant::now()));
            let wait = deadline.max(Instant::now() + grace + self.fence_timeout);
            if let Err(e) = keeper.stop(grace, wait).await {
                let timeout = self.fence_timeout;
                let k = std::sync::Arc::clone(&keeper);
                tokio::task::spawn_blocking(move || k.fence(timeout))
                    .await
                    .map_err(|j| ProducerError::Failed { operation: "deactivate", detail: j.to_string() })?
                    .map_err(|d| ProducerError::Failed { operation: "deactivate", detail: format!("{e}; {d}") })?;
            }
        }
        self.take();
        Ok(ProducerStatus::default())
    }

    fn fence(&self, timeout: Duration) -> Result<(), ProducerError> {
        let Some(keeper) = self.current() else { return self.stop_recorded("fence") };
        keeper.fence(timeout).map_err(|detail| ProducerError::Failed { operation: "fence", detail })?;
        self.take();
        Ok(())
    }

    async fn status(&self, _deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        let active = self.current().is_some_and(|k| k.is_holding());
        Ok(ProducerStatus { active, last_signed_height: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Hrs;
    use crate::fence_notice::{FenceNotice, FenceNotices, FencedBy};
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::os::unix::process::CommandExt;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// A grant from the bottom of the chain until `until`: the process producer reads only `until`.
    fn grant(until: MonoTime) -> Grant {
        Grant { epoch: crate::domain::Epoch::new(1), floor: crate::producer::SignFloor(Hrs::ZERO), until }
    }

    fn later(ms: u64) -> MonoTime {
        MonoTime::now().saturating_add(Duration::from_millis(ms))
    }

    fn producer(
        script: &str,
        fence_timeout: Duration,
    ) -> (ProcessProducer, tokio::sync::mpsc::UnboundedReceiver<FenceNotice>) {
        let (notices, rx) = FenceNotices::channel();
        let launcher = KeeperLauncher { notices, ..crate::keeper::test_launcher() };
        (ProcessProducer::new(vec!["sh".into(), "-c".into(), script.into()], fence_timeout, launcher), rx)
    }

    fn live(pgid: i32) -> usize {
        group::live_members(pgid).expect("/proc")
    }

    /// Waits for `cond`, checking every 5 ms, up to `limit`.
    async fn eventually(limit: Duration, cond: impl Fn() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cond()
    }

    #[tokio::test]
    async fn a_forking_node_is_stopped_as_a_whole_group() {
        // The shape of cosmovisor and start scripts: the signer is a grandchild of the command.
        let (p, _rx) = producer("sleep 600 & sleep 600; wait", Duration::from_secs(2));
        p.activate(grant(later(60_000)), soon()).await.expect("starts");
        let pgid = p.node_group().expect("a group");
        assert!(eventually(Duration::from_secs(2), || live(pgid) == 3).await, "sh and two sleeps run");
        assert!(p.status(soon()).await.expect("status").active);
        p.deactivate(soon()).await.expect("stops");
        assert_eq!(live(pgid), 0, "no process of the group is left, grandchildren included");
        assert!(!p.status(soon()).await.expect("status").active);
    }

    #[tokio::test]
    async fn a_node_ignoring_sigterm_is_killed_after_fence_timeout() {
        let (p, _rx) = producer("trap '' TERM; echo armed; while :; do sleep 0.05; done", Duration::from_millis(300));
        p.activate(grant(later(60_000)), soon()).await.expect("starts");
        let pgid = p.node_group().expect("a group");
        // The shell has installed its trap once its loop runs a sleep.
        assert!(eventually(Duration::from_secs(2), || live(pgid) >= 2).await);
        let started = Instant::now();
        p.deactivate(soon()).await.expect("killed");
        assert!(started.elapsed() >= Duration::from_millis(300), "SIGKILL came before fence_timeout");
        assert_eq!(live(pgid), 0);
    }

    #[tokio::test]
    async fn the_keeper_kills_the_group_at_the_deadline_without_the_daemon() {
        let (p, mut rx) = producer("sleep 600 & sleep 600", Duration::from_secs(2));
        p.activate(grant(later(300)), soon()).await.expect("starts");
        let pgid = p.node_group().expect("a group");
        let notice = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("in time").expect("notice");
        assert_eq!(notice.by, FencedBy::Keeper);
        assert!(notice.detail.contains("deadline"), "{}", notice.detail);
        assert_eq!(live(pgid), 0, "the orphaned sleep died with the group");
        assert!(!p.status(soon()).await.expect("status").active);
    }

    #[tokio::test]
    async fn an_extension_moves_the_keepers_deadline() {
        let (p, mut rx) = producer("sleep 600", Duration::from_secs(2));
        p.activate(grant(later(300)), soon()).await.expect("starts");
        p.extend(later(60_000), soon()).await.expect("extended");
        let pgid = p.node_group().expect("a group");
        // Past the first deadline, nothing happened.
        assert!(tokio::time::timeout(Duration::from_millis(800), rx.recv()).await.is_err(), "no fence");
        assert!(live(pgid) > 0, "the node still runs");
        p.deactivate(soon()).await.expect("stops");
    }

    #[tokio::test]
    async fn a_dropped_daemon_side_makes_the_keeper_kill_the_node() {
        let (p, _rx) = producer("sleep 600", Duration::from_secs(2));
        p.activate(grant(later(60_000)), soon()).await.expect("starts");
        let pgid = p.node_group().expect("a group");
        // What the kernel does to the pipe when the daemon dies.
        drop(p);
        assert!(eventually(Duration::from_secs(5), || live(pgid) == 0).await, "the keeper killed the group");
    }

    #[tokio::test]
    async fn a_killed_keeper_is_noticed_and_the_daemon_kills_the_group_itself() {
        let (p, mut rx) = producer("trap '' HUP; sleep 600 & sleep 600", Duration::from_secs(2));
        p.activate(grant(later(60_000)), soon()).await.expect("starts");
        let pgid = p.node_group().expect("a group");
        let keeper = p.current().expect("keeper").keeper_pid();
        kill(Pid::from_raw(keeper), Signal::SIGKILL).expect("kill the keeper");
        let notice = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("in time").expect("notice");
        assert_eq!(notice.by, FencedBy::KeeperLost);
        assert!(notice.detail.contains(&format!("killed the node's process group {pgid}")), "{}", notice.detail);
        assert_eq!(live(pgid), 0);
        assert!(!p.status(soon()).await.expect("status").active);
    }

    #[tokio::test]
    async fn the_nodes_own_exit_is_reported_as_a_stop() {
        let (p, mut rx) = producer("exit 3", Duration::from_secs(1));
        p.activate(grant(later(60_000)), soon()).await.expect("starts");
        let notice = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("in time").expect("notice");
        assert!(notice.detail.contains("exited by itself (exit status 3)"), "{}", notice.detail);
        assert!(!p.status(soon()).await.expect("status").active);
    }

    #[tokio::test]
    async fn fence_kills_the_group_from_a_plain_thread() {
        let (p, _rx) = producer("sleep 600 & sleep 600", Duration::from_secs(5));
        p.activate(grant(later(60_000)), soon()).await.expect("starts");
        let pgid = p.node_group().expect("a group");
        let p = std::sync::Arc::new(p);
        let fencer = std::sync::Arc::clone(&p);
        std::thread::spawn(move || fencer.fence(Duration::from_secs(2))).join().expect("thread").expect("fenced");
        assert_eq!(live(pgid), 0);
    }

    #[tokio::test]
    async fn start_up_stops_a_group_an_earlier_run_left_behind() {
        let dir = tempfile::tempdir().expect("dir");
        let record = dir.path().join("node-group");
        // An earlier run's node and its orphan, in their own group, with neither daemon nor keeper.
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 600 & sleep 600"])
            .process_group(0)
            .spawn()
            .expect("spawn");
        let pgid = i32::try_from(leader.id()).expect("pid");
        assert!(eventually(Duration::from_secs(2), || live(pgid) == 3).await);
        group::GroupRecord::of(pgid).write(&record).expect("record");
        let (p, _rx) = producer("true", Duration::from_secs(2));
        let p = p.with_record(record.clone());
        p.deactivate(soon()).await.expect("stops the leftover group");
        let _ = leader.wait();
        assert!(eventually(Duration::from_secs(2), || live(pgid) == 0).await);
        assert!(!record.exists());
    }
}
