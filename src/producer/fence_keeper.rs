//! A keeper for producers that switch a node over its API (Antelope, Ethereum, generic and
//! Solana commands) when the operator gave a `fence_command`: such a node keeps producing if the
//! daemon freezes after turning it on, so a keeper outside the daemon runs the `fence_command`
//! at the lease deadline, when the daemon's pipe closes, or on a fence.
//!
//! It wraps the producer and adds only the keeper: what the API calls do is the inner
//! producer's business. Without a `fence_command` there is nothing a keeper could do, and the
//! in-daemon deadline thread is the only guard (the README names that residual risk).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Grant, Producer, ProducerError, ProducerStatus};
use crate::domain::MonoTime;
use crate::keeper::{Keeper, KeeperLauncher, KeeperSpec, Target};

pub struct FenceCommandKeeper {
    inner: Arc<dyn Producer>,
    fence_command: Vec<String>,
    fence_timeout: Duration,
    launcher: KeeperLauncher,
    keeper: Mutex<Option<Arc<Keeper>>>,
}

impl FenceCommandKeeper {
    pub fn wrap(
        inner: Arc<dyn Producer>,
        fence_command: Vec<String>,
        fence_timeout: Duration,
        launcher: KeeperLauncher,
    ) -> FenceCommandKeeper {
        FenceCommandKeeper { inner, fence_command, fence_timeout, launcher, keeper: Mutex::new(None) }
    }

    fn current(&self) -> Option<Arc<Keeper>> {
        self.keeper.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn take(&self) -> Option<Arc<Keeper>> {
        self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[async_trait]
impl Producer for FenceCommandKeeper {
    async fn activate(&self, grant: Grant, deadline: Instant) -> Result<(), ProducerError> {
        if !self.current().is_some_and(|k| k.is_holding()) {
            let spec = KeeperSpec {
                target: Target::FenceCommand { argv: self.fence_command.clone() },
                key_file: None,
                until_ns: grant.until.as_nanos(),
                fence_timeout_ms: u64::try_from(self.fence_timeout.as_millis()).unwrap_or(u64::MAX),
                record: None,
            };
            let keeper = self
                .launcher
                .start(&spec, deadline)
                .await
                .map_err(|e| ProducerError::Failed { operation: "activate", detail: e.to_string() })?;
            *self.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(keeper));
        }
        self.inner.activate(grant, deadline).await
    }

    async fn extend(&self, until: MonoTime, deadline: Instant) -> Result<(), ProducerError> {
        if let Some(k) = self.current()
            && k.is_holding()
            && let Err(e) = k.extend(until)
        {
            return Err(ProducerError::Failed { operation: "extend", detail: e.to_string() });
        }
        self.inner.extend(until, deadline).await
    }

    async fn deactivate(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        let status = self.inner.deactivate(deadline).await?;
        if let Some(k) = self.take() {
            k.release(deadline)
                .await
                .map_err(|e| ProducerError::Failed { operation: "deactivate", detail: e.to_string() })?;
        }
        Ok(status)
    }

    fn fence(&self, timeout: Duration) -> Result<(), ProducerError> {
        if let Some(k) = self.take() {
            // The keeper runs the fence_command; the inner fence below does not depend on it.
            let _ = k.fence(timeout);
        }
        self.inner.fence(timeout)
    }

    async fn status(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        self.inner.status(deadline).await
    }

    async fn newest_signature(&self, deadline: Instant) -> Result<Option<u64>, ProducerError> {
        self.inner.newest_signature(deadline).await
    }

    fn reserves_every_signature(&self) -> bool {
        self.inner.reserves_every_signature()
    }

    async fn drain_reservations(&self, limit: Duration) -> bool {
        self.inner.drain_reservations(limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Epoch, Hrs};
    use crate::producer::SignFloor;

    /// An API producer that only records calls: this test is about the keeper, which is real.
    struct Recorder;

    #[async_trait]
    impl Producer for Recorder {
        async fn activate(&self, _: Grant, _: Instant) -> Result<(), ProducerError> {
            Ok(())
        }
        async fn extend(&self, _: MonoTime, _: Instant) -> Result<(), ProducerError> {
            Ok(())
        }
        async fn deactivate(&self, _: Instant) -> Result<ProducerStatus, ProducerError> {
            Ok(ProducerStatus::default())
        }
        fn fence(&self, _: Duration) -> Result<(), ProducerError> {
            Ok(())
        }
        async fn status(&self, _: Instant) -> Result<ProducerStatus, ProducerError> {
            Ok(ProducerStatus::default())
        }
    }

    #[tokio::test]
    async fn the_keeper_runs_the_fence_command_at_the_deadline_and_not_after_a_release() {
        let dir = tempfile::tempdir().expect("dir");
        let marker = dir.path().join("fenced");
        let argv = vec!["sh".into(), "-c".into(), format!("echo fenced >> {}", marker.display())];
        let p =
            FenceCommandKeeper::wrap(Arc::new(Recorder), argv, Duration::from_secs(2), crate::keeper::test_launcher());
        let soon = || Instant::now() + Duration::from_secs(5);
        // Released in time: the fence command never runs.
        let later = MonoTime::now().saturating_add(Duration::from_millis(400));
        p.activate(Grant { epoch: Epoch::new(1), floor: SignFloor(Hrs::ZERO), until: later }, soon())
            .await
            .expect("activates");
        p.deactivate(soon()).await.expect("deactivates");
        // Left to its deadline: the keeper runs it.
        let later = MonoTime::now().saturating_add(Duration::from_millis(200));
        p.activate(Grant { epoch: Epoch::new(1), floor: SignFloor(Hrs::ZERO), until: later }, soon())
            .await
            .expect("activates");
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while !marker.exists() && std::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(std::fs::read_to_string(&marker).expect("ran"), "fenced\n", "exactly once, after the deadline");
    }
}
