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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::{Intents, Transfer};
    use crate::domain::Epoch;

    const RENEW_INTERVAL: Duration = Duration::from_secs(1);

    fn id(name: &str) -> MemberId {
        MemberId::new(name).expect("member id")
    }

    #[tokio::test(start_paused = true)]
    async fn a_renew_leaves_every_renew_interval_while_earlier_ones_are_still_in_flight() {
        let mut pacing = RenewPacing::default();
        assert!(pacing.try_send(RENEW_INTERVAL), "the first renew leaves at once");
        assert!(!pacing.try_send(RENEW_INTERVAL), "not again before renew_interval");
        tokio::time::advance(RENEW_INTERVAL - Duration::from_millis(1)).await;
        assert!(!pacing.try_send(RENEW_INTERVAL), "not a millisecond early");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(pacing.try_send(RENEW_INTERVAL), "a slow renew in flight does not hold back the next");
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_three_renews_are_in_flight_and_one_coming_back_frees_a_place() {
        let mut pacing = RenewPacing::default();
        for _ in 0..MAX_RENEWS_IN_FLIGHT {
            assert!(pacing.try_send(RENEW_INTERVAL));
            tokio::time::advance(RENEW_INTERVAL).await;
        }
        assert!(!pacing.try_send(RENEW_INTERVAL), "a fourth renew while three are in flight");
        pacing.finished();
        assert!(pacing.try_send(RENEW_INTERVAL), "a renew that came back frees its place");
    }

    fn view(holder: Option<&str>, transfer: Option<(&str, bool)>) -> StoreView {
        let epoch = Epoch::new(7);
        let lease = match holder {
            Some(h) => LeaseView::Held { holder: id(h), epoch },
            None => LeaseView::Free { epoch },
        };
        let transfer = transfer.map(|(to, forced)| Transfer { to: id(to), epoch, forced });
        StoreView { lease, intents: Intents { paused: false, transfer } }
    }

    #[test]
    fn a_takeover_counts_as_planned_only_for_a_transfer_to_this_member_that_was_not_forced() {
        let me = id("a");
        // (transfer in the store when the acquire leaves, how the takeover counts)
        let cases = [
            (None, FailoverReason::Unplanned),
            (Some(("a", false)), FailoverReason::Planned),
            (Some(("a", true)), FailoverReason::Forced),
            (Some(("b", false)), FailoverReason::Unplanned),
            (Some(("b", true)), FailoverReason::Unplanned),
        ];
        for (transfer, expected) in cases {
            let mut provenance = Provenance::default();
            provenance.note_acquire(&view(Some("b"), transfer), &me);
            assert_eq!(provenance.failover_reason(), expected, "transfer {transfer:?}");
            assert_eq!(provenance.planned(), expected == FailoverReason::Planned, "transfer {transfer:?}");
        }
    }

    #[test]
    fn the_previous_holder_is_the_last_other_member_the_store_showed_holding() {
        let me = id("a");
        let mut provenance = Provenance::default();
        provenance.note_view(&view(Some("b"), None), &me);
        provenance.note_view(&view(None, None), &me);
        provenance.note_view(&view(Some("a"), None), &me);
        assert_eq!(provenance.previous_holder(), Some(id("b")));
        provenance.note_view(&view(Some("c"), None), &me);
        assert_eq!(provenance.previous_holder(), Some(id("c")));
    }
}
