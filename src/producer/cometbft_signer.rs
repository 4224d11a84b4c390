//! The `cometbft-signer` producer: this member is the remote signer (privval) of one node or
//! several (a validator's sentries). The nodes keep no key; while this member is active, the
//! [`Dialer`] keeps one connection to each node's `priv_validator_laddr` and answers its
//! requests through the one [`PrivvalSigner`], which signs only what the [`CoordinatorGate`]
//! lets through: this member active at epoch E (the epoch of the lease the guard granted it
//! when it activated), above the activation floor, before the permission's deadline, and inside
//! a window of heights reserved in the store (S2 with no timing assumption). Every signature is
//! recorded in `signer-state-<key_id>.bin` in the member's data directory before it leaves.
//!
//! A standby holds no connection: a CometBFT node keeps one signer connection at a time, and a
//! standby holding it would make the node miss signatures. Activation wakes the dialer, which
//! dials every node at once. Deactivate and fence revoke the permission once no request is
//! being decided, then close every connection; the node then takes the active member's
//! connection. Both are local and runtime-free, so the fence always confirms.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::privval::connection::NodeAddress;
use super::privval::coordinator_gate::{CoordinatorGate, Permission};
use super::privval::dialer::Dialer;
use super::privval::signer::{PrivvalSigner, SignObserver};
use super::privval::validator_key::ValidatorKey;
use super::{Grant, Producer, ProducerError, ProducerStatus};
use crate::coord::Coordinator;
use crate::domain::{KeyId, MonoTime};

/// What the signer producer needs from the member beyond `[producer]`.
#[derive(Clone)]
pub struct SignerContext {
    pub coord: Arc<dyn Coordinator>,
    pub runtime: tokio::runtime::Handle,
    /// Told how each sign request ended (the daemon's metrics).
    pub observer: Option<SignObserver>,
}

pub struct CometbftSignerProducer {
    signer: Arc<PrivvalSigner<CoordinatorGate>>,
    dialer: Dialer,
    call_timeout: Duration,
}

fn setup(detail: String) -> ProducerError {
    ProducerError::Failed { operation: "setup", detail }
}

/// A fresh SecretConnection identity: the node does not authenticate its signer by key.
fn ephemeral_identity() -> Result<ed25519_consensus::SigningKey, ProducerError> {
    use std::io::Read;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| setup(format!("cannot read /dev/urandom for a connection key: {e}")))?;
    Ok(ed25519_consensus::SigningKey::from(seed))
}

impl CometbftSignerProducer {
    /// Loads the key, and starts the threads that connect to `nodes` while this member is
    /// active (none dials before the first activation).
    pub fn start(
        key_file: &std::path::Path,
        state_file: &std::path::Path,
        key_id: KeyId,
        chain_id: String,
        nodes: Vec<NodeAddress>,
        context: SignerContext,
        call_timeout: Duration,
    ) -> Result<CometbftSignerProducer, ProducerError> {
        let key = ValidatorKey::load(key_file).map_err(|e| setup(e.to_string()))?;
        let gate = CoordinatorGate::new(Arc::clone(&context.coord), key_id, context.runtime.clone(), call_timeout);
        if let Some(dir) = state_file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| setup(format!("cannot create {} for the signer's state file: {e}", dir.display())))?;
        }
        let mut signer =
            PrivvalSigner::new(chain_id, key, gate).persisted(state_file).map_err(|e| setup(e.to_string()))?;
        if let Some(observer) = context.observer {
            signer = signer.observed(observer);
        }
        let signer = Arc::new(signer);
        let dial_timeout = call_timeout.max(Duration::from_secs(1));
        let dialer = Dialer::start(Arc::clone(&signer), nodes, ephemeral_identity()?, dial_timeout)
            .map_err(|e| setup(format!("cannot start the privval threads: {e}")))?;
        Ok(CometbftSignerProducer { signer, dialer, call_timeout })
    }

    /// How many nodes this member holds a connection to now (none while it is a standby).
    pub fn connected_nodes(&self) -> usize {
        self.dialer.connected()
    }

    /// While signing, no last signed height is reported: every signature already moved the
    /// watermark to its exact HRS, and a key-holding checkpoint to the end of that height would
    /// refuse the next step at the same height. After a deactivation it is reported, for the
    /// final watermark.
    fn status_now(&self, after_deactivation: bool) -> ProducerStatus {
        ProducerStatus {
            active: self.signer.gate().permission().is_some(),
            last_signed_height: self.signer.newest_signed_height().filter(|_| after_deactivation),
        }
    }

    /// Revokes, waiting for a decision in flight, then closes every connection.
    fn stop_signing(&self, timeout: Duration) -> bool {
        let quiet = self.signer.quiesced(timeout, CoordinatorGate::revoke);
        self.dialer.close_all(true);
        quiet
    }
}

impl Drop for CometbftSignerProducer {
    /// Revokes; the dialer, dropped next, closes every connection and ends its threads.
    fn drop(&mut self) {
        self.signer.gate().revoke();
    }
}

#[async_trait]
impl Producer for CometbftSignerProducer {
    /// The grant's epoch is the one every reservation carries: the store refuses a reservation
    /// under an epoch that is no longer current, so a grant that went stale signs nothing.
    async fn activate(&self, grant: Grant, _deadline: Instant) -> Result<(), ProducerError> {
        self.signer.gate().permit(Permission::from(grant));
        self.dialer.activated();
        Ok(())
    }

    async fn extend(&self, until: MonoTime, _deadline: Instant) -> Result<(), ProducerError> {
        // A renew that commits after the permission ran out revives it: the node threads and
        // the watch thread must see that, or the member would hold the lease with no node. Any
        // other renew only moves the deadline later, which wakes no thread (several a second in
        // signer mode).
        if self.signer.gate().extend(until) {
            self.dialer.permission_changed();
        }
        Ok(())
    }

    async fn deactivate(&self, _deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        let signer = Arc::clone(&self.signer);
        let timeout = self.call_timeout;
        let quiet = tokio::task::spawn_blocking(move || signer.quiesced(timeout, CoordinatorGate::revoke))
            .await
            .unwrap_or(false);
        self.dialer.close_all(false);
        if !quiet {
            return Err(ProducerError::Failed {
                operation: "deactivate",
                detail: "a signature request was still being decided; the permission is revoked".into(),
            });
        }
        Ok(self.status_now(true))
    }

    fn fence(&self, timeout: Duration) -> Result<(), ProducerError> {
        if self.stop_signing(timeout) {
            Ok(())
        } else {
            Err(ProducerError::Failed {
                operation: "fence",
                detail: "a signature request was still being decided at the fence deadline; the permission is revoked"
                    .into(),
            })
        }
    }

    async fn status(&self, _deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        Ok(self.status_now(false))
    }

    /// The newest signature's height, also while signing: a planned handover waits for the next
    /// one, so the successor takes over at the start of a block interval.
    async fn newest_signature(&self, _deadline: Instant) -> Result<Option<u64>, ProducerError> {
        Ok(self.signer.newest_signed_height())
    }

    /// Every signature lies in a window reserved through the [`CoordinatorGate`] before it is
    /// made.
    fn reserves_every_signature(&self) -> bool {
        true
    }

    async fn drain_reservations(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let signer = Arc::clone(&self.signer);
        let Ok(Some(top)) = tokio::task::spawn_blocking(move || signer.gate().drain()).await else {
            return false;
        };
        // Signed through means the top's precommit was decided; it must also have left on its
        // connection, or closing the connections next would drop it (a missed height).
        while Instant::now() < end && !(self.signer.gate().drained() && self.signer.no_answer_in_flight()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::info!(top, "the window is signed through; handing over above it");
        true
    }
}
