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
//! sleep is either noticed or ends before the timer is due. Within that span its timer waits a
//! tick and a little more after its last turn rather than for the next tick on the grid
//! ([`TickClock::plan_after_turn`]), while a turn still counts as late against that next grid
//! tick: the stall rule is unchanged, but the holder's refreshes — a turn each, a renew interval
//! apart (a tick and a half at signer mode's defaults) — keep the timer from firing while they
//! come, instead of a wake-up on the grid between every two of them.
//!
//! A leader whose heartbeat falls due at the next tick may apply that tick early, with a
//! holder's refresh ([`TickClock::take_next_early`]): the heartbeat then leaves with the
//! refresh's answer, and neither the leader's timer nor the holder's socket wakes a process
//! for it alone. Raft's clock runs at most one tick ahead of the grid, and the grid tick taken
//! early applies nothing when it comes ([`TickClock::owed`]); the grid itself does not move, so
//! the stall rule and the watch span count exactly as before.
//!
//! Owns tick arithmetic only: it never reads or changes raft's state.

use std::time::{Duration, Instant};

/// How late past its planned wake a turn may start before it counts as the end of a stall: one
/// tick and some scheduling slack, as when the node woke every tick and a gap of two ticks
/// (and the slack) between turns counted.
const STALL_SLACK: Duration = Duration::from_millis(90);

/// How much later than a tick after its last turn a node paced by its turns lets its timer fire
/// ([`TickClock::plan_after_turn`]): room for the next refresh to arrive first when refreshes
/// come up to a tick and a half apart (signer mode's 150 ms renew interval at its 100 ms tick),
/// give or take scheduling. The stall rule still counts from the next grid tick after that
/// turn, at most a tick after it, and [`STALL_SLACK`] leaves the timer's own wake 25 ms of
/// lateness before it would count as a stall.
const TURN_LEEWAY: Duration = Duration::from_millis(65);

// The timer's own wake — at most a tick and the leeway past the grid tick a turn is expected
// by, since a node behind the grid plans on the grid — must not count as a stall: what is left
// of the slack is its scheduling margin.
const _: () = assert!(TURN_LEEWAY.as_nanos() < STALL_SLACK.as_nanos());

/// The ticks to apply at the start of a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaughtUp {
    pub ticks: u32,
    /// The turn started more than a tick (and [`STALL_SLACK`]) after its planned wake.
    pub stalled: bool,
}

/// The node's tick bookkeeping: the last tick boundary and the next planned wake.
#[derive(Clone, Copy, Debug)]
pub struct TickClock {
    tick: Duration,
    /// The instant of the last applied tick: later ticks fall on whole ticks after it.
    last: Instant,
    /// Ticks after `last` at which the node planned to wake.
    planned: u32,
    /// Set by [`TickClock::plan_after_turn`]: when its timer wakes the node, off the grid.
    after_turn: Option<Instant>,
    /// The next grid tick was applied early ([`TickClock::take_next_early`]).
    owed: bool,
}

impl TickClock {
    pub fn new(tick: Duration, now: Instant) -> TickClock {
        TickClock { tick: tick.max(Duration::from_millis(1)), last: now, planned: 1, after_turn: None, owed: false }
    }

    /// When the node's timer wakes it: the planned tick, or what [`TickClock::plan_after_turn`]
    /// chose.
    pub fn due(&self) -> Instant {
        self.after_turn.unwrap_or_else(|| self.expected())
    }

    /// The instant the node expects its next turn by: the planned tick, or the next tick on the
    /// grid when paced by its turns. A turn later than a tick and [`STALL_SLACK`] after it ends
    /// a stall (see [`TickClock::catch_up`]).
    pub fn expected(&self) -> Instant {
        match self.after_turn {
            Some(_) => self.last + self.tick,
            None => self.last + self.tick * self.planned,
        }
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
        self.after_turn = None;
    }

    /// The timer's next wake a tick and [`TURN_LEEWAY`] after `turn`, the start of the node's
    /// last turn, instead of at the next tick on the grid; a turn is still expected by that tick
    /// ([`TickClock::expected`]), as when the node planned one tick. Any turn before the wake (a
    /// refresh) plans anew. The ticks planned are the whole ticks that end by the wake, so a node
    /// paced by its turns applies its ticks as the grid would, without falling behind.
    ///
    /// A node whose next grid tick has already passed (a turn late, but not a stall, applies no
    /// more ticks than planned) plans that tick, as [`TickClock::plan`] would: it wakes at once
    /// and catches up.
    pub fn plan_after_turn(&mut self, turn: Instant) {
        if self.last + self.tick <= turn {
            return self.plan(1);
        }
        let wake = turn + self.tick + TURN_LEEWAY;
        self.planned = self.ticks_until(wake);
        self.after_turn = Some(wake);
    }

    /// Whether the caller may apply the next grid tick now, ahead of its time: it is still to
    /// come, at most a tick away, and no tick is owed already. The grid does not move: the turn
    /// that passes that grid tick applies one tick fewer ([`TickClock::catch_up`]), so raft's
    /// clock is never more than a tick ahead, and lateness still counts against the grid.
    pub fn take_next_early(&mut self, now: Instant) -> bool {
        let next = self.last + self.tick;
        if self.owed || next <= now || next > now + self.tick {
            return false;
        }
        self.owed = true;
        true
    }

    /// The grid ticks the caller's raft clock is ahead: 1 after [`TickClock::take_next_early`]
    /// until the turn that passes that tick, else 0. A wait planned in raft's ticks is this
    /// many grid ticks longer.
    pub fn owed(&self) -> u32 {
        u32::from(self.owed)
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
        // The first grid tick passed was applied early.
        let early = u32::from(self.owed && ticks > 0);
        if early > 0 {
            self.owed = false;
        }
        CaughtUp { ticks: ticks - early, stalled }
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

    // Refreshes a tick apart, each a turn: paced by its turns the node's timer never fires, it
    // applies every tick the grid would (not one a turn, falling behind), and the stall rule is
    // the one of a node planned a tick ahead: late against the next grid tick.
    #[test]
    fn paced_by_its_turns_a_node_keeps_the_grids_ticks_and_its_stall_rule() {
        let t0 = Instant::now();
        let mut clock = TickClock::new(TICK, t0);
        let mut applied = 0;
        let mut turn = t0;
        for _ in 0..50 {
            clock.plan_after_turn(turn);
            assert_eq!(clock.due(), turn + TICK + TURN_LEEWAY, "the timer leaves the next refresh room");
            let mut on_grid = clock;
            on_grid.plan(1);
            assert_eq!(
                clock.expected(),
                on_grid.expected(),
                "expected by the next grid tick, as when planned one tick"
            );
            // The next refresh comes 110 ms later: before the timer, after the next grid tick.
            let next = turn + Duration::from_millis(110);
            let caught = clock.catch_up(next, clock.expected());
            assert!(!caught.stalled, "a turn {:?} after the last is no stall", next - turn);
            applied += caught.ticks;
            turn = next;
        }
        let elapsed = u32::try_from((turn - t0).as_millis() / TICK.as_millis()).expect("small");
        assert_eq!(applied, elapsed, "paced by its turns, the node fell behind the grid");

        // At every phase against the grid: the timer's own wake is no stall, a turn later than a
        // tick and the slack past the next grid tick is.
        for phase_ms in (0..100).step_by(5) {
            let mut clock = TickClock::new(TICK, t0);
            let turn = t0 + Duration::from_millis(phase_ms);
            clock.catch_up(turn, clock.expected());
            clock.plan_after_turn(turn);
            let (expected, due) = (clock.expected(), clock.due());
            assert!(expected > turn && expected <= turn + TICK, "phase {phase_ms} ms");
            let mut woken = clock;
            assert!(!woken.catch_up(due, expected).stalled, "phase {phase_ms} ms: the timer's wake");
            let late = expected + TICK + STALL_SLACK + Duration::from_millis(1);
            assert!(clock.catch_up(late, expected).stalled, "phase {phase_ms} ms: a late turn");
        }
    }

    // A turn a tick late (no stall) applies only the planned tick, so the next grid tick has
    // passed: the node plans it, as on the grid, instead of waiting another tick.
    #[test]
    fn a_node_behind_the_grid_plans_the_overdue_tick() {
        let t0 = Instant::now();
        let mut clock = TickClock::new(TICK, t0);
        clock.plan(1);
        let late = t0 + TICK * 2 + Duration::from_millis(20);
        assert_eq!(clock.catch_up(late, clock.expected()), CaughtUp { ticks: 1, stalled: false });
        clock.plan_after_turn(late);
        assert_eq!((clock.expected(), clock.due()), (t0 + TICK * 2, t0 + TICK * 2), "the overdue tick, at once");
        assert!(!clock.catch_up(late + Duration::from_millis(1), clock.expected()).stalled);
    }

    #[test]
    fn a_tick_taken_early_applies_nothing_at_its_grid_time_and_keeps_the_grid() {
        let t0 = Instant::now();
        let mut clock = TickClock::new(TICK, t0);
        clock.plan(3);
        let refresh = t0 + Duration::from_millis(30);
        let (expected, due) = (clock.expected(), clock.due());
        assert!(clock.take_next_early(refresh), "the tick at 100 ms, taken at 30 ms");
        assert_eq!(clock.owed(), 1);
        assert!(!clock.take_next_early(refresh), "never a second tick ahead of the grid");
        assert_eq!((clock.expected(), clock.due()), (expected, due), "the grid and the plan stay");
        assert_eq!(clock.catch_up(t0 + Duration::from_millis(60), due).ticks, 0, "before the grid tick");
        assert_eq!(clock.owed(), 1, "still owed until a turn passes the grid tick");
        let at_grid = t0 + TICK + Duration::from_millis(5);
        assert_eq!(
            clock.catch_up(at_grid, due),
            CaughtUp { ticks: 0, stalled: false },
            "the grid tick applies nothing"
        );
        assert_eq!(clock.owed(), 0);
        let next = t0 + TICK * 3 + Duration::from_millis(5);
        assert_eq!(clock.catch_up(next, due).ticks, 2, "the ticks after it fall where they did");
        // A turn that passes the owed tick and more applies one fewer; lateness counts as ever.
        let mut late = TickClock::new(TICK, t0);
        late.plan(3);
        assert!(late.take_next_early(t0 + Duration::from_millis(90)));
        let woke = late.due() + TICK + STALL_SLACK + Duration::from_millis(1);
        assert_eq!(late.catch_up(woke, late.due()), CaughtUp { ticks: 2, stalled: true });
        // Nor is one taken when its time has come (a turn applies it) or is more than a tick away.
        let mut due = TickClock::new(TICK, t0);
        assert!(!due.take_next_early(t0 + TICK));
        assert!(!due.take_next_early(t0 - Duration::from_millis(1)));
    }

    #[test]
    fn planning_on_the_grid_again_forgets_the_turn() {
        let t0 = Instant::now();
        let mut clock = TickClock::new(TICK, t0);
        clock.plan_after_turn(t0 + Duration::from_millis(40));
        clock.plan(3);
        assert_eq!((clock.expected(), clock.due()), (t0 + TICK * 3, t0 + TICK * 3));
    }

    #[test]
    fn the_watch_span_is_the_fewest_whole_ticks_longer_than_an_unnoticed_late_turn_and_a_slack() {
        for (tick, span) in [(100, 300), (50, 250), (20, 220), (250, 500), (1, 182), (1000, 2000)] {
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
