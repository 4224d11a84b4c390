//! `CoordinatorGate`: the [`SignGate`] of a member — this member may sign at HRS h only while it
//! holds a permission (epoch E, floor, deadline: set by the producer's activation, moved by each
//! renew, revoked on demotion or fence), h is above the floor, the deadline has not passed on
//! this machine's monotonic clock, and `reserve(E, key, h)` has committed through the
//! coordinator.
//!
//! It is called from the signer's connection threads and blocks them on the runtime for the
//! reservation; it never signs, and it answers "not active" without asking the store when no
//! epoch is set.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::signer::{GateRefusal, SignGate};
use crate::coord::{CoordError, Coordinator};
use crate::domain::{Epoch, Hrs, KeyId, MonoTime};
use crate::producer::Grant;

/// What the member may sign now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub epoch: Epoch,
    /// Never at or below this.
    pub floor: Hrs,
    /// Dead man's switch: nothing from this instant on unless extended.
    pub until: MonoTime,
}

impl From<Grant> for Permission {
    fn from(grant: Grant) -> Permission {
        Permission { epoch: grant.epoch, floor: grant.floor.0, until: grant.until }
    }
}

pub struct CoordinatorGate {
    coord: Arc<dyn Coordinator>,
    key: KeyId,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    permission: Mutex<Option<Permission>>,
}

impl CoordinatorGate {
    pub fn new(coord: Arc<dyn Coordinator>, key: KeyId, runtime: tokio::runtime::Handle, timeout: Duration) -> Self {
        CoordinatorGate { coord, key, runtime, timeout, permission: Mutex::new(None) }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Permission>> {
        self.permission.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn permit(&self, permission: Permission) {
        *self.slot() = Some(permission);
    }

    /// Moves the deadline of the current permission later; never grants one.
    pub fn extend(&self, until: MonoTime) {
        if let Some(p) = self.slot().as_mut() {
            p.until = p.until.max(until);
        }
    }

    pub fn revoke(&self) {
        *self.slot() = None;
    }

    /// The permission, if any and not past its deadline.
    pub fn permission(&self) -> Option<Permission> {
        self.slot().filter(|p| MonoTime::now() < p.until)
    }
}

impl SignGate for CoordinatorGate {
    fn may_sign(&self) -> bool {
        self.permission().is_some()
    }

    fn reserve(&self, hrs: Hrs) -> Result<(), GateRefusal> {
        let Some(Permission { epoch, floor, .. }) = self.permission() else {
            return Err(GateRefusal::NotActive);
        };
        if hrs <= floor {
            return Err(GateRefusal::BelowFloor { hrs, floor });
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let result = self.runtime.block_on(self.coord.reserve(epoch, &self.key, hrs, deadline));
        match result {
            Ok(_) if self.permission().is_some_and(|p| p.epoch == epoch) => Ok(()),
            // Demoted while the reservation was in flight: the reservation stands (the
            // watermark only rises), but this member no longer signs.
            Ok(_) => Err(GateRefusal::DemotedWhileReserving),
            Err(CoordError::Refused(why)) => Err(GateRefusal::Watermark(why)),
            Err(e @ CoordError::NotHolder { .. }) => Err(GateRefusal::NotHolder(e)),
            Err(e) => Err(GateRefusal::Unconfirmed(e)),
        }
    }
}
