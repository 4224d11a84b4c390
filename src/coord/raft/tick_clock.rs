//! When the raft node applies its ticks. raft-rs counts time in ticks, but in a quiet cluster
//! most ticks change nothing: a follower's only matter once its election timeout would pass, a
//! leader's once a heartbeat or a quorum check falls due. So the node sleeps until the tick at
//! which something happens ([`TickClock::plan`]), and at the start of every turn applies the
//! ticks that passed since the last one ([`TickClock::catch_up`]) — before the message or
//! request that woke it, so raft sees the same ticks, in the same order against its messages,
//! as it would with a tick every interval. An idle follower then wakes only for the leader's
//! heartbeats, an idle leader once per heartbeat while no lease expiry is near.
//!
//! A turn that starts more than a tick (and some slack) after the wake it planned ends a stall
//! of the task (a slow fsync, a starved runtime, a frozen process): the ticks that were due by
//! the planned wake are applied, the stall's own time adds none (as with a ticker that delays
//! missed ticks, which loses only the late ones), and the node's expiry timer is told (see
//! `NodeTask::note_turn`). Applying a single tick instead would make a follower that slept
//! towards its election timeout and woke a little late (a loaded host) start its whole timeout
//! again: the chaos suite saw elections after a cut leader delayed past the holder's horizon.
//! A node that plans one tick ahead notices any gap of more than two ticks and the slack between
//! turns, as it did when it woke every tick: the leader keeps that pace for the last
//! [`TickClock::watch_span`] before its expiry timer is due, so that a stall overrunning a longer
//! sleep is either noticed or ends before the timer is due.
//!
//! Owns tick arithmetic only: it never reads or changes raft's state.

use std::time::{Duration, Instant};

/// How late past its planned wake a turn may start before it counts as the end of a stall: one
/// tick and some scheduling slack, as when the node woke every tick and a gap of two ticks
/// (and the slack) between turns counted.
const STALL_SLACK: Duration = Duration::from_millis(50);

/// The ticks to apply at the start of a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaughtUp {
    pub ticks: u32,
    /// The turn started more than a tick (and [`STALL_SLACK`]) after its planned wake.
    pub stalled: bool,
}

/// The node's tick bookkeeping: the last tick boundary and the next planned wake.
#[derive(Debug)]
pub struct TickClock {
    tick: Duration,
    /// The instant of the last applied tick: later ticks fall on whole ticks after it.
    last: Instant,
    /// Ticks after `last` at which the node planned to wake.
    planned: u32,
}

impl TickClock {
    pub fn new(tick: Duration, now: Instant) -> TickClock {
        TickClock { tick: tick.max(Duration::from_millis(1)), last: now, planned: 1 }
    }

    /// When the planned tick falls due: the node's timer sleeps until then.
    pub fn due(&self) -> Instant {
        self.last + self.tick * self.planned
    }

    /// How long before a deadline the node must turn every tick again. A turn up to a tick and
    /// [`STALL_SLACK`] late is not a stall, so a sleep may overrun its wake that much unnoticed;
    /// one planned to end at least this long before the deadline — the fewest whole ticks longer
    /// than that lateness and another [`STALL_SLACK`] — ends unnoticed at the latest a slack
    /// before it, time for what queued up meanwhile to be heard.
    pub fn watch_span(&self) -> Duration {
        let late = self.tick + STALL_SLACK * 2;
        let ticks = late.as_nanos() / self.tick.as_nanos() + 1;
        self.tick * u32::try_from(ticks).unwrap_or(u32::MAX)
    }

    /// Whole ticks after the last applied one that end by `at` (at least one).
    pub fn ticks_until(&self, at: Instant) -> u32 {
        let ticks = at.saturating_duration_since(self.last).as_nanos() / self.tick.as_nanos();
        u32::try_from(ticks).unwrap_or(u32::MAX).max(1)
    }

    /// The next wake: `ticks` (at least one) after the last applied tick.
    pub fn plan(&mut self, ticks: u32) {
        self.planned = ticks.max(1);
    }

    /// The ticks that passed by `now`, at most the planned ones. `woke_for`, the earliest wake
    /// the task planned (its tick or another timer), tells a stall from a quiet sleep.
    pub fn catch_up(&mut self, now: Instant, woke_for: Instant) -> CaughtUp {
        let stalled = now.saturating_duration_since(woke_for) > self.tick + STALL_SLACK;
        let passed = now.saturating_duration_since(self.last).as_nanos() / self.tick.as_nanos().max(1);
        let ticks = u32::try_from(passed).unwrap_or(u32::MAX).min(self.planned);
        if stalled {
            // The stall's own time adds no ticks: the next tick is a whole tick from now.
            self.last = now;
        } else {
            self.last += self.tick * ticks;
        }
        self.planned = self.planned.saturating_sub(ticks).max(1);
        CaughtUp { ticks, stalled }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    #[test]
    fn a_turn_between_ticks_applies_the_whole_ticks_that_passed_and_keeps_the_boundary() {
        let t0 = Instant::now();
        let mut clock = TickClock::new(TICK, t0);
        clock.plan(10);
        assert_eq!(clock.due(), t0 + TICK * 10);
        let woke = t0 + Duration::from_millis(350);
        assert_eq!(clock.catch_up(woke, clock.due()), CaughtUp { ticks: 3, stalled: false });
        // The boundary stays on whole ticks from the start, and the plan keeps its instant.
        assert_eq!(clock.due(), t0 + TICK * 10);
        assert_eq!(clock.catch_up(t0 + Duration::from_millis(399), clock.due()).ticks, 0);
        assert_eq!(clock.catch_up(t0 + Duration::from_millis(400), clock.due()).ticks, 1);
    }

    #[test]
    fn a_turn_at_its_planned_wake_applies_the_planned_ticks() {
        let t0 = Instant::now();
        let mut clock = TickClock::new(TICK, t0);
        clock.plan(3);
        let due = clock.due();
        assert_eq!(clock.catch_up(due, due), CaughtUp { ticks: 3, stalled: false });
        clock.plan(3);
        assert_eq!(clock.due(), t0 + TICK * 6);
    }

    // A frozen process must not come back with its election timeout passed many times over, or
    // a leader with ten heartbeats to send at once: only what was due by its planned wake. And a
    // follower that slept towards its election timeout and woke late still reaches it: it does
    // not start the whole timeout again.
    #[test]
    fn a_stall_adds_no_ticks_beyond_the_planned_ones_and_is_reported() {
        let t0 = Instant::now();
        let mut clock = TickClock::new(TICK, t0);
        clock.plan(12);
        let thawed = t0 + Duration::from_secs(10);
        assert_eq!(clock.catch_up(thawed, clock.due()), CaughtUp { ticks: 12, stalled: true });
        clock.plan(1);
        assert_eq!(clock.due(), thawed + TICK, "the next tick is a whole tick after the stall ended");
    }

    // One tick planned (a leader near its expiry): a gap of more than two ticks and the
    // slack between turns is a stall, the rule from when the node woke every tick.
    #[test]
    fn planned_a_tick_ahead_a_gap_of_two_ticks_and_the_slack_is_a_stall() {
        let t0 = Instant::now();
        let mut clock = TickClock::new(TICK, t0);
        clock.plan(1);
        let gap = TICK * 2 + STALL_SLACK;
        assert!(!clock.catch_up(t0 + gap - Duration::from_millis(1), clock.due()).stalled);
        let mut clock = TickClock::new(TICK, t0);
        clock.plan(1);
        assert!(clock.catch_up(t0 + gap + Duration::from_millis(1), clock.due()).stalled);
    }

    #[test]
    fn the_watch_span_is_the_fewest_whole_ticks_longer_than_an_unnoticed_late_turn_and_a_slack() {
        for (tick, span) in [(100, 300), (50, 200), (20, 140), (250, 500), (1, 102), (1000, 2000)] {
            let clock = TickClock::new(Duration::from_millis(tick), Instant::now());
            let got = clock.watch_span();
            assert_eq!(got, Duration::from_millis(span), "tick {tick} ms");
            let late = clock.tick + STALL_SLACK * 2;
            assert!(got > late && got - clock.tick <= late, "tick {tick} ms");
        }
    }

    #[test]
    fn a_turn_slightly_late_is_not_a_stall() {
        let t0 = Instant::now();
        let mut clock = TickClock::new(TICK, t0);
        clock.plan(3);
        let late = clock.due() + TICK;
        assert_eq!(clock.catch_up(late, t0 + TICK * 3), CaughtUp { ticks: 3, stalled: false });
        // The tick boundary keeps its phase: the one it missed is applied at the next turn.
        clock.plan(1);
        assert_eq!(clock.due(), t0 + TICK * 4);
    }

    #[test]
    fn an_early_wake_for_another_timer_is_not_a_stall() {
        let t0 = Instant::now();
        let mut clock = TickClock::new(TICK, t0);
        clock.plan(20);
        let expiry_due = t0 + Duration::from_millis(250);
        assert_eq!(clock.catch_up(expiry_due, expiry_due), CaughtUp { ticks: 2, stalled: false });
    }
}
