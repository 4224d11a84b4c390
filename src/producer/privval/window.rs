//! `ReserveWindow`: which heights this member may sign without asking the store, and when to ask
//! for more (docs/design.md §6, "signer mode without a round trip per signature").
//!
//! The active reserves whole heights ahead, in one store command: `reserve(E, key,
//! end_of_height(top))` makes the watermark the window's top, so a new holder's floor lies above
//! every height this member may still sign, with no timing assumption. Inside a committed window
//! a signature needs only the local double-sign rule. The next window is asked for while the
//! current one still covers the heights a reservation takes to commit (pipelined), and how far
//! ahead is sized from the measured commit latency and block interval: far enough that signing
//! never waits for the store, no further — every height reserved and not signed is skipped at a
//! failover.
//!
//! Pure: plain data and instants in, a plan out. It never calls the store and never signs; the
//! gate ([`super::coordinator_gate`]) carries out what it plans.

use std::time::{Duration, Instant};

use crate::domain::Epoch;

/// The most heights a window reaches ahead of the height being signed, however slow the store:
/// bounds what a failover skips.
pub const MAX_LEAD: u64 = 16;

/// The longest an extension asked at a precommit waits before it is sent. Long blocks need no
/// longer quiet (the node asks nothing until the next height either way), and a request that
/// finds the window short waits for that extension, so the wait stays short.
pub const MAX_QUIET: Duration = Duration::from_millis(50);

/// What to do for a request at some height.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Inside the committed window: sign. `extend` asks (without waiting) for a window up to
    /// that height, because the current one runs out within the lead.
    Covered { extend: Option<u64> },
    /// Above the committed window, and a reservation already in flight covers it: wait for its
    /// answer, then plan again.
    AwaitInFlight,
    /// Above the committed window: reserve up to `top` and wait for it before signing.
    Reserve { top: u64 },
    /// A planned handover drains the window: nothing more is reserved, and this height is
    /// above what was.
    Drained,
}

/// How the current epoch's windows stand, with the estimates that size them.
#[derive(Clone, Debug)]
pub struct ReserveWindow {
    epoch: Epoch,
    /// Every height up to this one is reserved under `epoch` (all rounds and steps).
    committed: Option<u64>,
    /// The highest top asked for under `epoch`, answered or not: a new request goes above it,
    /// so a reservation whose answer was lost can never make the next one "not above".
    requested: Option<u64>,
    in_flight: Option<u64>,
    draining: bool,
    /// Draining, and a request came above the window: the node is done with it.
    beyond: bool,
    commit: LatencyEstimate,
    /// The newest height asked for and when it was first asked.
    newest: Option<(u64, Instant)>,
    block: Option<Duration>,
}

impl ReserveWindow {
    pub fn new(epoch: Epoch) -> ReserveWindow {
        ReserveWindow {
            epoch,
            committed: None,
            requested: None,
            in_flight: None,
            draining: false,
            beyond: false,
            commit: LatencyEstimate::default(),
            newest: None,
            block: None,
        }
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The highest height reserved and confirmed under this epoch.
    pub fn committed(&self) -> Option<u64> {
        self.committed
    }

    pub fn in_flight(&self) -> Option<u64> {
        self.in_flight
    }

    /// Reserve nothing more (a planned handover waits until the window is signed through).
    pub fn drain(&mut self) {
        self.draining = true;
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Draining, and the node has asked for the precommit of the window's top height (the last
    /// step of a height) or beyond the window: the successor can take the next height.
    pub fn signed_through(&self) -> bool {
        self.beyond
    }

    /// A precommit at `height` is being signed inside the window: when draining and `height`
    /// is the top, the window is signed through, and the successor gets the next height whole
    /// (asking beyond the window instead would hand it a height the node already asked here).
    pub fn precommitting(&mut self, height: u64) {
        if self.draining && self.committed == Some(height) {
            self.beyond = true;
        }
    }

    /// How many heights ahead of the one being signed the window should reach: enough that a
    /// reservation sent now commits (at a pessimistic latency) before the node asks beyond the
    /// window, at least one, at most [`MAX_LEAD`].
    pub fn lead(&self) -> u64 {
        match (self.commit.pessimistic(), self.block) {
            (Some(commit), Some(block)) if !block.is_zero() => {
                let heights = (commit + self.quiet()).as_nanos().div_ceil(block.as_nanos());
                (heights as u64).clamp(1, MAX_LEAD)
            }
            _ => 1,
        }
    }

    /// How long after a round's last signature an extension asked for there is sent: a quarter
    /// of the block interval, once the node has its signatures (and writes its block) and asks
    /// nothing more until the next height. Sent at once, the reservation's log writes and
    /// network work would run beside the height's remaining signatures and slow them.
    pub fn quiet(&self) -> Duration {
        self.block.map_or(Duration::ZERO, |b| (b / 4).min(MAX_QUIET))
    }

    /// The plan for a proposal or prevote at `height`, asked at `now`; notes the block interval
    /// on the way. In steady state it never extends: the precommit before asked for enough.
    pub fn plan(&mut self, height: u64, now: Instant) -> Plan {
        self.plan_for(height, height, now)
    }

    /// The plan for a precommit at `height`, the last signature of a round: when covered, the
    /// window is checked against the next height, so that an extension it asks for can be sent
    /// in the quiet before that height ([`Self::quiet`]) rather than beside a proposal.
    pub fn plan_round_end(&mut self, height: u64, now: Instant) -> Plan {
        self.plan_for(height, height.saturating_add(1), now)
    }

    /// The plan for a request at `height`, with the window measured from `from` (`height` or
    /// the next one).
    fn plan_for(&mut self, height: u64, from: u64, now: Instant) -> Plan {
        self.note_height(height, now);
        if self.committed.is_some_and(|top| height <= top) {
            let lead = self.lead();
            let short = self.committed.is_some_and(|top| top < from.saturating_add(lead));
            // Twice the lead: one window then lasts as long as a reservation takes, so the next
            // one (one in flight at a time) is asked for before this one runs short.
            let wanted = from.saturating_add(lead.saturating_mul(2));
            let extend = (short && !self.draining && self.in_flight.is_none()).then(|| self.above_requested(wanted));
            return Plan::Covered { extend };
        }
        if self.in_flight.is_some_and(|top| height <= top) {
            return Plan::AwaitInFlight;
        }
        if self.draining {
            self.beyond = true;
            return Plan::Drained;
        }
        Plan::Reserve { top: self.above_requested(height.saturating_add(self.lead())) }
    }

    /// `wanted`, or one above the highest top already asked for when that is higher.
    fn above_requested(&self, wanted: u64) -> u64 {
        match self.requested {
            Some(asked) if asked >= wanted => asked.saturating_add(1),
            _ => wanted,
        }
    }

    /// A reservation up to `top` is being sent.
    pub fn sent(&mut self, top: u64, in_background: bool) {
        self.requested = Some(self.requested.map_or(top, |r| r.max(top)));
        if in_background {
            self.in_flight = Some(top);
        }
    }

    /// The store's answer to the reservation up to `top`, sent `latency` ago: `committed` when it
    /// confirmed it. An unknown outcome counts as not committed (the heights are not signed; a
    /// later reservation goes above them).
    pub fn answered(&mut self, top: u64, committed: bool, latency: Duration) {
        if self.in_flight == Some(top) {
            self.in_flight = None;
        }
        if committed {
            self.committed = Some(self.committed.map_or(top, |c| c.max(top)));
            self.commit.sample(latency);
        }
    }

    fn note_height(&mut self, height: u64, now: Instant) {
        match self.newest {
            Some((h, _)) if height <= h => {}
            Some((h, at)) => {
                if height == h + 1 {
                    let interval = now.saturating_duration_since(at);
                    self.block = Some(match self.block {
                        None => interval,
                        // One long gap (a halt for an upgrade) moves the estimate by at most
                        // 3/8 of it: the sample counts as at most four intervals.
                        Some(b) => (b * 7 + interval.min(b * 4)) / 8,
                    });
                }
                self.newest = Some((height, now));
            }
            None => self.newest = Some((height, now)),
        }
    }
}

/// A smoothed commit latency and its mean deviation, as TCP estimates a round trip: the
/// pessimistic value is the mean plus four deviations.
#[derive(Clone, Copy, Debug, Default)]
struct LatencyEstimate {
    mean: Option<Duration>,
    deviation: Duration,
}

impl LatencyEstimate {
    fn sample(&mut self, latency: Duration) {
        match self.mean {
            None => {
                self.mean = Some(latency);
                self.deviation = latency / 2;
            }
            Some(mean) => {
                let error = mean.abs_diff(latency);
                self.deviation = (self.deviation * 3 + error) / 4;
                self.mean = Some((mean * 7 + latency) / 8);
            }
        }
    }

    fn pessimistic(&self) -> Option<Duration> {
        self.mean.map(|m| m + self.deviation * 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    /// A window that has seen blocks `block` apart and commits taking `commit`.
    fn warmed(block: Duration, commit: Duration) -> (ReserveWindow, Instant) {
        let mut w = ReserveWindow::new(Epoch::new(3));
        let mut now = Instant::now();
        for h in 1..=20 {
            w.sent(h, false);
            w.answered(h, true, commit);
            let _ = w.plan(h, now);
            now += block;
        }
        (w, now)
    }

    #[test]
    fn the_first_request_reserves_one_height_ahead_and_waits() {
        let mut w = ReserveWindow::new(Epoch::new(1));
        assert_eq!(w.plan(10, Instant::now()), Plan::Reserve { top: 11 });
    }

    #[test]
    fn a_fast_store_keeps_one_height_ahead_and_a_slow_one_more() {
        let (fast, _) = warmed(100 * MS, MS);
        assert_eq!(fast.lead(), 1);
        let (wan, _) = warmed(100 * MS, 180 * MS);
        assert!(wan.lead() >= 2 && wan.lead() <= 8, "lead {}", wan.lead());
        let (stuck, _) = warmed(10 * MS, Duration::from_secs(5));
        assert_eq!(stuck.lead(), MAX_LEAD);
    }

    #[test]
    fn inside_the_window_it_signs_and_asks_for_the_next_one_once() {
        let (mut w, now) = warmed(100 * MS, MS);
        // Committed through 20; signing 20 with a lead of 1 wants twice the lead ahead: 22.
        let Plan::Covered { extend: Some(top) } = w.plan(20, now) else { panic!("expected an extension") };
        assert_eq!(top, 22);
        w.sent(top, true);
        assert_eq!(w.plan(20, now), Plan::Covered { extend: None }, "one extension in flight at a time");
        assert_eq!(w.plan(21, now + 100 * MS), Plan::AwaitInFlight);
        w.answered(22, true, MS);
        assert_eq!(w.plan(21, now + 100 * MS), Plan::Covered { extend: None }, "22 still covers the lead");
        assert!(matches!(w.plan(21, now + 100 * MS), Plan::Covered { .. }));
    }

    #[test]
    fn the_precommit_asks_for_the_next_heights_and_the_next_proposal_asks_nothing() {
        let (mut w, now) = warmed(100 * MS, MS);
        assert_eq!(w.lead(), 1);
        assert_eq!(w.quiet(), 25 * MS);
        // Committed through 20: the precommit of 20 looks at height 21, which the window does not hold: up to 21 + 2.
        assert_eq!(w.plan_round_end(20, now), Plan::Covered { extend: Some(23) });
        w.sent(23, true);
        w.answered(23, true, MS);
        let next = now + 100 * MS;
        assert_eq!(w.plan(21, next), Plan::Covered { extend: None });
        assert_eq!(w.plan_round_end(21, next), Plan::Covered { extend: None }, "23 holds 22 with its lead");
        assert_eq!(w.plan(22, next + 100 * MS), Plan::Covered { extend: None });
        assert_eq!(w.plan_round_end(22, next + 100 * MS), Plan::Covered { extend: Some(25) });
    }

    #[test]
    fn the_quiet_is_a_quarter_block_at_most_fifty_ms_and_one_halt_does_not_stretch_it() {
        let (mut w, t0) = warmed(Duration::from_millis(100), Duration::from_millis(1));
        assert_eq!(w.quiet(), Duration::from_millis(25));
        let (long, _) = warmed(Duration::from_secs(6), Duration::from_millis(1));
        assert_eq!(long.quiet(), MAX_QUIET);
        // A one-hour halt, then blocks again at 100 ms.
        let newest = w.newest.map_or(0, |(h, _)| h);
        let resumed = t0 + Duration::from_secs(3600);
        w.plan(newest + 1, resumed);
        assert!(w.block.is_some_and(|b| b <= Duration::from_millis(138)), "one gap counts as four blocks at most");
        assert!(w.quiet() <= Duration::from_millis(35), "the next extension still goes out within a block");
    }

    #[test]
    fn the_quiet_before_sending_counts_in_the_lead() {
        // Commits of 80 ms fit one 100 ms block alone, not with a 25 ms quiet before them.
        let (w, _) = warmed(100 * MS, 80 * MS);
        assert_eq!(w.lead(), 2);
    }

    #[test]
    fn a_lost_answer_never_makes_the_next_request_land_at_or_below_it() {
        let mut w = ReserveWindow::new(Epoch::new(1));
        w.sent(11, false);
        w.answered(11, false, MS);
        assert_eq!(w.plan(10, Instant::now()), Plan::Reserve { top: 12 });
    }

    #[test]
    fn a_draining_window_signs_what_it_holds_and_reserves_nothing_more() {
        let (mut w, now) = warmed(100 * MS, MS);
        w.drain();
        assert_eq!(w.plan(20, now), Plan::Covered { extend: None });
        assert!(!w.signed_through());
        w.precommitting(19);
        assert!(!w.signed_through(), "a precommit below the top");
        w.precommitting(20);
        assert!(w.signed_through(), "the top height's precommit");
        assert_eq!(w.plan(21, now), Plan::Drained);
        assert!(w.signed_through());
    }

    proptest! {
        /// Whatever the answers and their order, a plan to sign is only ever given at or below a
        /// top the store confirmed, and every request goes strictly above every earlier one.
        #[test]
        fn signs_only_inside_confirmed_windows_and_asks_ever_higher(
            steps in proptest::collection::vec((1u64..40, any::<bool>(), 0u64..300, any::<bool>()), 1..80)
        ) {
            let mut w = ReserveWindow::new(Epoch::new(2));
            let mut confirmed: Option<u64> = None;
            let mut asked: Option<u64> = None;
            let mut pending: Vec<u64> = Vec::new();
            let start = Instant::now();
            for (i, (height, ok, latency, round_end)) in steps.into_iter().enumerate() {
                let now = start + 50 * MS * i as u32;
                let plan = if round_end { w.plan_round_end(height, now) } else { w.plan(height, now) };
                match plan {
                    Plan::Covered { extend } => {
                        prop_assert!(confirmed.is_some_and(|c| height <= c));
                        if let Some(top) = extend {
                            prop_assert!(asked.is_none_or(|a| top > a));
                            asked = Some(top);
                            w.sent(top, true);
                            pending.push(top);
                        }
                    }
                    Plan::Reserve { top } => {
                        prop_assert!(top >= height);
                        prop_assert!(asked.is_none_or(|a| top > a));
                        asked = Some(top);
                        w.sent(top, false);
                        pending.push(top);
                    }
                    Plan::AwaitInFlight | Plan::Drained => {}
                }
                if let Some(top) = pending.pop() {
                    w.answered(top, ok, MS * latency as u32);
                    if ok { confirmed = Some(confirmed.map_or(top, |c| c.max(top))); }
                }
                prop_assert_eq!(w.committed(), confirmed);
            }
        }
    }
}
