//! When the holder sends the next renew: the pacing half of renewing (the other half, when a
//! renew is due at all, is `RolePolicy::renew_when_remaining`).
//!
//! The lease is valid from the send time of the latest committed renew, so on a lossy or slow
//! link a renew still in flight must not hold back the next one: a fresh renew leaves every
//! `renew_interval`, up to [`MAX_RENEWS_IN_FLIGHT`] at once. Plain data; the daemon reports
//! each renew's end as an outcome and never paces on its own.

use std::time::Duration;

use serde::Serialize;

use crate::domain::MonoTime;

/// Renewals that may be in flight at once (each sent `renew_interval` after the previous).
pub const MAX_RENEWS_IN_FLIGHT: usize = 3;

/// The renews this member has in flight and when it sent the last one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RenewPacing {
    last_sent: Option<MonoTime>,
    in_flight: usize,
}

impl RenewPacing {
    /// Whether a renew may leave at `now`: `interval` after the last one, and fewer than
    /// [`MAX_RENEWS_IN_FLIGHT`] unanswered.
    pub fn may_send(&self, now: MonoTime, interval: Duration) -> bool {
        self.in_flight < MAX_RENEWS_IN_FLIGHT && self.last_sent.is_none_or(|at| now.saturating_since(at) >= interval)
    }

    pub fn sent(&mut self, now: MonoTime) {
        self.in_flight += 1;
        self.last_sent = Some(now);
    }

    /// A renew came back (committed, refused or timed out).
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// When the next renew may leave, once a renew is due: `interval` after the last one.
    /// `None` before the first, and while [`MAX_RENEWS_IN_FLIGHT`] are unanswered: then only an
    /// answer frees a place, and an answer reaches the loop as an event.
    pub fn next_send_at(&self, interval: Duration) -> Option<MonoTime> {
        if self.in_flight >= MAX_RENEWS_IN_FLIGHT {
            return None;
        }
        self.last_sent.map(|at| at.saturating_add(interval))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(500);

    fn at(ms: u64) -> MonoTime {
        MonoTime::ZERO.saturating_add(Duration::from_millis(ms))
    }

    /// (renews sent at, renews answered, now) → may a renew leave now?
    #[test]
    fn a_renew_leaves_every_interval_while_fewer_than_three_are_unanswered() {
        let cases: &[(&[u64], usize, u64, bool)] = &[
            (&[], 0, 0, true),
            (&[1_000], 0, 1_499, false),
            (&[1_000], 0, 1_500, true),
            // A slow renew does not hold back the next one…
            (&[1_000, 1_500], 0, 2_000, true),
            // …but three unanswered do.
            (&[1_000, 1_500, 2_000], 0, 2_500, false),
            (&[1_000, 1_500, 2_000], 1, 2_500, true),
            // An answer does not make the next one leave before its interval.
            (&[1_000, 1_500, 2_000], 3, 2_100, false),
        ];
        for (sent, answered, now, want) in cases {
            let mut p = RenewPacing::default();
            for s in *sent {
                p.sent(at(*s));
            }
            for _ in 0..*answered {
                p.finished();
            }
            assert_eq!(p.may_send(at(*now), INTERVAL), *want, "sent {sent:?}, answered {answered}, now {now}");
        }
    }

    #[test]
    fn an_answer_never_counts_below_zero() {
        let mut p = RenewPacing::default();
        p.finished();
        assert_eq!(p.in_flight(), 0);
        p.sent(at(0));
        assert_eq!(p.in_flight(), 1);
    }
}
