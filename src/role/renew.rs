//! When the holder sends the next renew: the pacing half of renewing (the other half, when a
//! renew is due at all, is `RolePolicy::renew_when_remaining`).
//!
//! The lease is valid from the send time of the latest committed renew, so on a lossy or slow
//! link a renew still in flight must not hold back the next one: a fresh renew leaves every
//! `renew_interval`, up to [`MAX_RENEWS_IN_FLIGHT`] at once. Plain data; the daemon reports
//! each renew's end as an outcome and never paces on its own.
//!
//! With a grid ([`RolePolicy::renew_grid`](crate::role::RolePolicy)), every moment a renew
//! becomes due is moved back to the grid's last point at or before it: the grid's points are
//! multiples of `renew_interval` on the boot-time clock, the same for every validator of a
//! member. After at most one renew that leaves early, each holder renews on the grid, so a
//! member's holders turn, renew and refresh together instead of at fifty scattered instants.
//! Renewing early is always safe: a lease is valid from the send of its latest committed renew.

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

/// `at`, moved back to the last point of `grid` at or before it (multiples of the grid on the
/// boot-time clock); `at` itself without a grid.
pub fn on_grid(at: MonoTime, grid: Option<Duration>) -> MonoTime {
    let step = grid.map_or(0, |g| u64::try_from(g.as_nanos()).unwrap_or(u64::MAX));
    match step {
        0 => at,
        step => MonoTime::from_nanos(at.as_nanos() - at.as_nanos() % step),
    }
}

impl RenewPacing {
    /// Whether a renew may leave at `now`: `interval` after the last one (moved back onto `grid`),
    /// and fewer than [`MAX_RENEWS_IN_FLIGHT`] unanswered.
    pub fn may_send(&self, now: MonoTime, interval: Duration, grid: Option<Duration>) -> bool {
        self.in_flight < MAX_RENEWS_IN_FLIGHT
            && self.last_sent.is_none_or(|at| now >= on_grid(at.saturating_add(interval), grid))
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
    pub fn next_send_at(&self, interval: Duration, grid: Option<Duration>) -> Option<MonoTime> {
        if self.in_flight >= MAX_RENEWS_IN_FLIGHT {
            return None;
        }
        self.last_sent.map(|at| on_grid(at.saturating_add(interval), grid))
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
            assert_eq!(p.may_send(at(*now), INTERVAL, None), *want, "sent {sent:?}, answered {answered}, now {now}");
        }
    }

    /// On a grid, the next renew leaves at the grid's last point at or before `interval` after
    /// the previous one: one early renew puts a holder on the grid, and it stays there however
    /// late each send leaves its point.
    #[test]
    fn on_a_grid_a_renew_leaves_at_the_last_grid_point_and_stays_on_the_grid() {
        let grid = Some(INTERVAL);
        let mut p = RenewPacing::default();
        p.sent(at(1_230));
        p.finished();
        assert_eq!(p.next_send_at(INTERVAL, grid), Some(at(1_500)), "270 ms early, onto the grid");
        assert!(!p.may_send(at(1_499), INTERVAL, grid));
        assert!(p.may_send(at(1_500), INTERVAL, grid));
        // Sent 7 ms after its point: the next point is still one interval on.
        p.sent(at(1_507));
        p.finished();
        assert_eq!(p.next_send_at(INTERVAL, grid), Some(at(2_000)));
        assert_eq!(p.next_send_at(INTERVAL, None), Some(at(2_007)), "without a grid the lateness adds up");
        assert_eq!(on_grid(at(2_000), grid), at(2_000), "a grid point is its own");
        assert_eq!(on_grid(at(2_000), Some(Duration::ZERO)), at(2_000), "a zero grid is none");
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
