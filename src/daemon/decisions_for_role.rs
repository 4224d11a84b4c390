//! Decisions the daemon still makes itself that belong in `role` (issue 20): when a renew may
//! leave and how many may be in flight, whether a takeover was planned or forced, and who held
//! the lease before it became free. They are kept together here, and nowhere else in the
//! daemon, so that moving them into `role` is one cut.
//!
//! Owns that memory; never performs I/O.

use std::time::Duration;

use tokio::time::Instant;

use crate::coord::StoreView;
use crate::domain::{LeaseView, MemberId};
use crate::telemetry::FailoverReason;

/// Renewals that may be in flight at once (each sent `renew_interval` after the previous).
pub(super) const MAX_RENEWS_IN_FLIGHT: usize = 3;

/// The pace of renewals. The lease is valid from the send time of the latest committed renew,
/// so on a lossy or slow link a renew still in flight must not hold back the next one: a fresh
/// renew leaves every `renew_interval`, up to [`MAX_RENEWS_IN_FLIGHT`] at once.
#[derive(Debug, Default)]
pub(super) struct RenewPacing {
    in_flight: usize,
    last_sent: Option<Instant>,
}

impl RenewPacing {
    /// Whether a renew `role` asked for leaves now; when it does, it counts as sent.
    pub fn try_send(&mut self, renew_interval: Duration) -> bool {
        let due = self.last_sent.is_none_or(|at| at.elapsed() >= renew_interval);
        if !due || self.in_flight >= MAX_RENEWS_IN_FLIGHT {
            return false;
        }
        self.in_flight += 1;
        self.last_sent = Some(Instant::now());
        true
    }

    /// A renew came back, whatever its result.
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

/// Why this member is taking the lease, and from whom.
#[derive(Debug, Default)]
pub(super) struct Provenance {
    /// Who held the lease before it became free: the guard's fence_command target.
    previous_holder: Option<MemberId>,
    /// Whether the acquire in flight answers a transfer naming this member.
    planned: bool,
    /// Whether that transfer was forced (`failoverctl promote --force`).
    forced: bool,
}

impl Provenance {
    /// Remembers the last other holder the store showed.
    pub fn note_view(&mut self, view: &StoreView, me: &MemberId) {
        if let LeaseView::Held { holder, .. } = &view.lease
            && holder != me
        {
            self.previous_holder = Some(holder.clone());
        }
    }

    /// An acquire leaves: remember why, since the grant itself clears the transfer. Only a
    /// handover the holder carried out is planned; a forced one is not.
    pub fn note_acquire(&mut self, view: &StoreView, me: &MemberId) {
        let to_me = view.intents.transfer.as_ref().filter(|t| &t.to == me);
        self.planned = to_me.is_some_and(|t| !t.forced);
        self.forced = to_me.is_some_and(|t| t.forced);
    }

    pub fn previous_holder(&self) -> Option<MemberId> {
        self.previous_holder.clone()
    }

    pub fn planned(&self) -> bool {
        self.planned
    }

    /// How the takeover in progress counts in the failover metrics.
    pub fn failover_reason(&self) -> FailoverReason {
        match (self.planned, self.forced) {
            (true, _) => FailoverReason::Planned,
            (_, true) => FailoverReason::Forced,
            _ => FailoverReason::Unplanned,
        }
    }
}
