//! `CoordinatorGate`: the [`SignGate`] of a member — this member may sign at HRS h only while it
//! is active at epoch E (set by the daemon on activation, cleared on demotion or fence) and
//! `reserve(E, key, h)` has committed through the coordinator within the deadline.
//!
//! It is called from the signer's connection threads and blocks them on the runtime for the
//! reservation; it never signs, and it answers "not active" without asking the store when no
//! epoch is set.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::signer::{GateRefusal, SignGate};
use crate::coord::{CoordError, Coordinator};
use crate::domain::{Epoch, Hrs, KeyId};

pub struct CoordinatorGate {
    coord: Arc<dyn Coordinator>,
    key: KeyId,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    epoch: Mutex<Option<Epoch>>,
}

impl CoordinatorGate {
    pub fn new(coord: Arc<dyn Coordinator>, key: KeyId, runtime: tokio::runtime::Handle, timeout: Duration) -> Self {
        CoordinatorGate { coord, key, runtime, timeout, epoch: Mutex::new(None) }
    }

    /// The epoch this member is active at, or `None` when it may not sign.
    pub fn set_epoch(&self, epoch: Option<Epoch>) {
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) = epoch;
    }

    pub fn epoch(&self) -> Option<Epoch> {
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SignGate for CoordinatorGate {
    fn reserve(&self, hrs: Hrs) -> Result<(), GateRefusal> {
        let Some(epoch) = self.epoch() else {
            return Err(GateRefusal::NotActive("this member is not the active signer".into()));
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let result = self.runtime.block_on(self.coord.reserve(epoch, &self.key, hrs, deadline));
        match result {
            Ok(_) if self.epoch() == Some(epoch) => Ok(()),
            // Demoted while the reservation was in flight: the reservation stands (the
            // watermark only rises), but this member no longer signs.
            Ok(_) => Err(GateRefusal::NotActive("demoted while reserving".into())),
            Err(CoordError::Refused(why)) => Err(GateRefusal::Watermark(why.to_string())),
            Err(e @ CoordError::NotHolder { .. }) => Err(GateRefusal::NotActive(e.to_string())),
            Err(e) => Err(GateRefusal::NotActive(format!("reservation not confirmed: {e}"))),
        }
    }
}
