//! When a holder of several validators' leases sends a refresh (signer mode): on a member-wide
//! beat. Each validator's loop renews every renew interval at its own moment, a few hundred
//! refreshes a second at fifty validators, each a message each way and a turn of the raft
//! leader's node. Waiting for the next beat (at most [`BEAT`]), the refreshes of the validators
//! due within one beat leave together: one write, one read and one turn of the leader's node for
//! all of them, and their next ones fall due together again.
//!
//! Decides nothing about a refresh and never delays one past the beat. The wait comes before
//! the refresh's validity starts to count (the holder stamps it after the wait), so it takes
//! nothing from the lease; it only starts the refresh up to a beat later, well inside the
//! margin between the renew interval and the TTL. A member of one validator (or of the default
//! one and one other) has no beat: its refreshes leave as before.

use std::time::Duration;

use tokio::time::Instant;

/// The beat's period: a small share of signer mode's 150 ms renew interval and of the 250 ms
/// between it and the 400 ms TTL.
pub const BEAT: Duration = Duration::from_millis(20);

/// A grid of instants `every` apart from `origin`, shared by every validator of a member.
#[derive(Debug, Clone, Copy)]
pub struct RefreshBeat {
    origin: Instant,
    every: Duration,
}

impl RefreshBeat {
    pub fn new(origin: Instant, every: Duration) -> RefreshBeat {
        RefreshBeat { origin, every: every.max(Duration::from_millis(1)) }
    }

    /// The first beat after `now` (a refresh exactly on a beat waits for the next: those that
    /// came a moment before it already left).
    pub fn next_after(&self, now: Instant) -> Instant {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        let every = self.every.as_nanos();
        let beats = since / every + 1;
        // Overflows only after centuries of uptime; then the refresh leaves at once.
        u64::try_from(beats * every).ok().and_then(|n| self.origin.checked_add(Duration::from_nanos(n))).unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_millis(20);

    #[test]
    fn refreshes_due_within_one_beat_leave_at_the_same_instant() {
        let origin = Instant::now();
        let beat = RefreshBeat::new(origin, EVERY);
        let at = |ms: u64| origin + Duration::from_millis(ms);
        assert_eq!(beat.next_after(at(41)), at(60));
        assert_eq!(beat.next_after(at(59)), at(60), "every refresh between two beats leaves at the second");
        assert_eq!(beat.next_after(at(60)), at(80), "one exactly on a beat waits for the next");
        assert_eq!(beat.next_after(origin), at(20));
    }

    #[test]
    fn no_refresh_waits_longer_than_one_beat() {
        let origin = Instant::now();
        let beat = RefreshBeat::new(origin, EVERY);
        for us in (0..200_000).step_by(997) {
            let now = origin + Duration::from_micros(us);
            let wait = beat.next_after(now) - now;
            assert!(wait > Duration::ZERO && wait <= EVERY, "at {us} µs the refresh would wait {wait:?}");
        }
    }
}
