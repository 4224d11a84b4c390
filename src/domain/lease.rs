//! The lease as a member holds it ([`Lease`]) and as the store shows it ([`LeaseView`]), and
//! its fencing token ([`Epoch`]). Values only: granting and expiring leases is the store's job.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{MemberId, MonoTime};

/// The lease's fencing token (docs/design.md §2): strictly increases with every grant to a holder.
/// Every write that matters carries the writer's epoch, and the store refuses a stale one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(u64);

impl Epoch {
    /// No lease has ever been granted.
    pub const ZERO: Epoch = Epoch(0);

    pub const fn new(n: u64) -> Epoch {
        Epoch(n)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The epoch a new grant gets after `self`.
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A lease this member holds, as returned by the coordinator's `acquire` and `renew`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: MemberId,
    pub epoch: Epoch,
    pub ttl: Duration,
    /// The holder's own deadline: the monotonic send time of its last committed renew (or
    /// acquire) + TTL − safety margin. Past it the holder must have fenced its producer,
    /// because from then on another member may acquire (docs/design.md §4).
    pub valid_until: MonoTime,
}

/// What the store says about the lease, as any member sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum LeaseView {
    /// Nobody holds it: never granted, released, or expired. `epoch` is the last one granted,
    /// so a new grant will be above it.
    Free { epoch: Epoch },
    /// `holder` holds it at `epoch`.
    Held { holder: MemberId, epoch: Epoch },
}

impl LeaseView {
    /// The highest epoch this view proves was granted.
    pub fn epoch(&self) -> Epoch {
        match self {
            LeaseView::Free { epoch } | LeaseView::Held { epoch, .. } => *epoch,
        }
    }

    pub fn holder(&self) -> Option<&MemberId> {
        match self {
            LeaseView::Free { .. } => None,
            LeaseView::Held { holder, .. } => Some(holder),
        }
    }

    pub fn is_held_by(&self, member: &MemberId, epoch: Epoch) -> bool {
        matches!(self, LeaseView::Held { holder, epoch: e } if holder == member && *e == epoch)
    }
}

impl fmt::Display for LeaseView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseView::Free { epoch } => write!(f, "free (last epoch {epoch})"),
            LeaseView::Held { holder, epoch } => write!(f, "held by {holder} at epoch {epoch}"),
        }
    }
}
