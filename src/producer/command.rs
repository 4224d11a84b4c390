//! The `command` producer (any chain) and the `solana` producer (an identity switch such as
//! `agave-validator set-identity`): operator-supplied activate, deactivate and fence commands,
//! each with a deadline, their stderr quoted in errors.
//!
//! The floor reaches the commands as `FAILOVERD_FLOOR_HEIGHT`, `FAILOVERD_FLOOR_ROUND` and
//! `FAILOVERD_FLOOR_STEP` (1 propose, 2 prevote, 3 precommit), with `FAILOVERD_KEY` naming the
//! key: a command that can seed its node's own double-sign protection must sign only above it.
//! The fence runs `fence_command`, or `deactivate_command` when there is none, without the async
//! runtime. This producer cannot ask the node whether it produces, so its status is what its
//! own last confirmed command made it: "active" from the moment an activation starts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Grant, Producer, ProducerError, ProducerStatus, SignFloor};
use crate::domain::{KeyId, MonoTime};
use crate::operator_command::{self, CommandError};

pub struct CommandProducer {
    activate: Vec<String>,
    deactivate: Vec<String>,
    fence: Option<Vec<String>>,
    key: KeyId,
    /// Each command's own limit, within the caller's deadline.
    command_timeout: Duration,
    /// Set before an activation starts, cleared only by a confirmed deactivate or fence.
    maybe_active: AtomicBool,
}

impl CommandProducer {
    pub fn new(
        activate: Vec<String>,
        deactivate: Vec<String>,
        fence: Option<Vec<String>>,
        key: KeyId,
        command_timeout: Duration,
    ) -> CommandProducer {
        CommandProducer { activate, deactivate, fence, key, command_timeout, maybe_active: AtomicBool::new(false) }
    }

    fn env(&self, floor: Option<SignFloor>) -> Vec<(&'static str, String)> {
        let mut env = vec![("FAILOVERD_KEY", self.key.to_string())];
        if let Some(SignFloor(hrs)) = floor {
            env.push(("FAILOVERD_FLOOR_HEIGHT", hrs.height.to_string()));
            env.push(("FAILOVERD_FLOOR_ROUND", hrs.round.to_string()));
            env.push(("FAILOVERD_FLOOR_STEP", hrs.step.as_u8().to_string()));
        }
        env
    }

    async fn run(
        &self,
        operation: &'static str,
        argv: &[String],
        floor: Option<SignFloor>,
        deadline: Instant,
    ) -> Result<(), ProducerError> {
        let deadline = deadline.min(Instant::now() + self.command_timeout);
        match operator_command::run(argv, &self.env(floor), deadline).await {
            Ok(out) => {
                tracing::debug!(operation, stdout = %String::from_utf8_lossy(&out.stdout).trim(), "producer command done");
                Ok(())
            }
            Err(CommandError::Timeout { .. }) => Err(ProducerError::Timeout { operation }),
            Err(e) => Err(ProducerError::Failed { operation, detail: e.to_string() }),
        }
    }
}

#[async_trait]
impl Producer for CommandProducer {
    async fn activate(&self, grant: Grant, deadline: Instant) -> Result<(), ProducerError> {
        self.maybe_active.store(true, Ordering::SeqCst);
        self.run("activate", &self.activate, Some(grant.floor), deadline).await
    }

    async fn extend(&self, _until: MonoTime, _deadline: Instant) -> Result<(), ProducerError> {
        Ok(())
    }

    async fn deactivate(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        self.run("deactivate", &self.deactivate, None, deadline).await?;
        self.maybe_active.store(false, Ordering::SeqCst);
        Ok(ProducerStatus::default())
    }

    fn fence(&self, timeout: Duration) -> Result<(), ProducerError> {
        let argv = self.fence.as_ref().unwrap_or(&self.deactivate);
        match operator_command::run_blocking(argv, &self.env(None), timeout) {
            Ok(_) => {
                self.maybe_active.store(false, Ordering::SeqCst);
                Ok(())
            }
            Err(CommandError::Timeout { .. }) => Err(ProducerError::Timeout { operation: "fence" }),
            Err(e) => Err(ProducerError::Failed { operation: "fence", detail: e.to_string() }),
        }
    }

    async fn status(&self, _deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        Ok(ProducerStatus { active: self.maybe_active.load(Ordering::SeqCst), last_signed_height: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Epoch, Hrs, Step};

    fn sh(script: String) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script]
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn commands_see_the_floor_and_switch_the_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = dir.path().join("identity");
        let p = CommandProducer::new(
            sh(format!(
                "echo \"staked $FAILOVERD_KEY above $FAILOVERD_FLOOR_HEIGHT/$FAILOVERD_FLOOR_ROUND/$FAILOVERD_FLOOR_STEP\" > {}",
                identity.display()
            )),
            sh(format!("echo unstaked > {}", identity.display())),
            None,
            KeyId::new("validator").expect("key id"),
            Duration::from_secs(5),
        );
        let floor = SignFloor(Hrs::new(120, 2, Step::Prevote));
        p.activate(Grant { epoch: Epoch::new(1), floor, until: MonoTime::now() }, soon()).await.expect("activates");
        assert_eq!(std::fs::read_to_string(&identity).expect("written"), "staked validator above 120/2/2\n");
        assert!(p.status(soon()).await.expect("status").active);
        p.deactivate(soon()).await.expect("deactivates");
        assert_eq!(std::fs::read_to_string(&identity).expect("written"), "unstaked\n");
        assert!(!p.status(soon()).await.expect("status").active);
    }

    #[tokio::test]
    async fn a_failed_activation_stays_possibly_active_until_a_fence_confirms() {
        let p = CommandProducer::new(
            sh("echo 'identity file missing' >&2; exit 2".into()),
            sh("exit 1".into()),
            Some(sh("true".into())),
            KeyId::new("validator").expect("key id"),
            Duration::from_secs(5),
        );
        let err = p
            .activate(Grant { epoch: Epoch::new(1), floor: SignFloor(Hrs::ZERO), until: MonoTime::now() }, soon())
            .await
            .expect_err("fails");
        assert!(err.to_string().contains("identity file missing"), "{err}");
        assert!(p.status(soon()).await.expect("status").active, "a failed activation may have half-worked");
        assert!(p.deactivate(soon()).await.is_err());
        assert!(p.status(soon()).await.expect("status").active);
        p.fence(Duration::from_secs(5)).expect("the fence command confirms");
        assert!(!p.status(soon()).await.expect("status").active);
    }

    #[tokio::test]
    async fn a_hanging_command_times_out() {
        let p = CommandProducer::new(
            sh("sleep 600".into()),
            sh("sleep 600".into()),
            None,
            KeyId::new("validator").expect("key id"),
            Duration::from_millis(200),
        );
        let err = p
            .activate(Grant { epoch: Epoch::new(1), floor: SignFloor(Hrs::ZERO), until: MonoTime::now() }, soon())
            .await
            .expect_err("times out");
        assert_eq!(err, ProducerError::Timeout { operation: "activate" });
        assert_eq!(p.fence(Duration::from_millis(200)), Err(ProducerError::Timeout { operation: "fence" }));
    }
}
