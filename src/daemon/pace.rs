//! When the decision loop turns although nothing happened.
//!
//! Every change the loop can learn of wakes it at once: a store change (the lease expired,
//! was released or granted; an intent), a probe of the local node, a finished action, a fence
//! notice. What is left is time alone: a renew falls due, a holding runs out, a priority delay,
//! a deferral or a backoff ends, a holder's silence grows. So:
//! - while this member is in motion — taking, giving up or fencing a holding; the lease free
//!   for it to take; a transfer asked for; an acquire pending or paused; the store unknown;
//!   its active node unhealthy; fenced takeovers configured — the loop turns every
//!   [`BUSY_TURN`], as it always did, and `role`'s waits end as promptly as before;
//! - while it holds steadily, it turns when its next renew falls due, and at the latest a quiet
//!   turn later (also before its deadline: the self-fence thread watches that too); once a renew
//!   is due it turns every [`BUSY_TURN`], or sooner when the next renew may leave or the
//!   deadline comes — with a renew in flight not before the next may leave, since a failed
//!   one is an event and one that went through waits for that turn ([`outcome_waits`]);
//! - while another member holds the lease, or for a witness, it turns once per quiet turn: only
//!   a store change can give it something to do, and a store change wakes it at once.
//!
//! The quiet turn is the pace at which the cluster's statuses are read
//! (`observe::refresh_interval`: 250 ms with a remote store; a second when the statuses are in
//! memory, at most a quarter of `status_stale_after`). It bounds what an event cannot bring: a peer's
//! status, a health verdict aging into "unknown", and the turn after a suspend (the loop's
//! timers run on `CLOCK_MONOTONIC`, which stops while the host sleeps). This member's own status
//! and systemd's watchdog ping have their own deadlines in the loop.
//!
//! Owns no state and decides nothing: `role::decide` runs at every turn, whenever it comes;
//! this only chooses when to look again. Never returns a wait longer than the quiet turn.

use std::time::Duration;

use crate::domain::{Epoch, LeaseView, MemberKind, MonoTime, RoleName};
use crate::health::Verdict;
use crate::role::{MAX_RENEWS_IN_FLIGHT, Observation, Outcome, RolePolicy, RoleState};

/// The pace while something is in motion: the loop's pace before it waited for events.
pub(super) const BUSY_TURN: Duration = Duration::from_millis(50);

/// How long the loop may wait for an event after deciding `state` from `obs`; `quiet`, the
/// longest wait.
pub(super) fn next_turn(state: &RoleState, obs: &Observation, policy: &RolePolicy, quiet: Duration) -> Duration {
    if obs.kind == MemberKind::Witness {
        return quiet;
    }
    let Some(view) = &obs.store else { return BUSY_TURN };
    let asked = state.acquire_pending || state.acquire_retry_at.is_some_and(|at| obs.now < at);
    if asked || view.intents.transfer.is_some() {
        return BUSY_TURN;
    }
    match state.role {
        RoleName::Active if obs.health.verdict != Verdict::Unhealthy => holding_turn(state, policy, obs.now, quiet),
        RoleName::Active | RoleName::Promoting | RoleName::Demoting | RoleName::Fenced => BUSY_TURN,
        RoleName::Witness | RoleName::Ineligible | RoleName::Standby => match &view.lease {
            LeaseView::Free { .. } if !view.intents.paused => BUSY_TURN,
            LeaseView::Held { holder, .. } if holder == &obs.me => BUSY_TURN,
            LeaseView::Held { .. } if policy.fence_takeover_after.is_some() => BUSY_TURN,
            _ => quiet,
        },
    }
}

/// Whether this member holds steadily: active, its node not unhealthy, no transfer asked and
/// nothing pending. Such a member turns at every renew, several times a second in signer mode,
/// and a renew it got through need not turn the loop at once ([`outcome_waits`]). Once its node
/// turns unhealthy or a transfer is asked, it is in motion again.
pub(super) fn holds_steadily(state: &RoleState, obs: &Observation) -> bool {
    state.role == RoleName::Active
        && !state.acquire_pending
        && obs.health.verdict != Verdict::Unhealthy
        && obs.store.as_ref().is_some_and(|view| view.intents.transfer.is_none())
}

/// Whether a finished action's outcome may wait for the turn the loop already planned, `turn_in`
/// from `now`, instead of turning it now: only a renew of the current holding that went
/// through, while it holds steadily, with a renew place free, and only while that turn comes a
/// busy turn or more before the deadline in hand. That outcome moves the deadline later and
/// frees the renew's place, and nothing else: the next renew leaves at the turn `holding_turn`
/// planned for it either way. A turn planned at (or near) the deadline would fence the holder
/// before applying it (`decide` checks the deadline first), so then it turns at once, as
/// does anything else — a failed renew above all, which sends the next one at its interval.
pub(super) fn outcome_waits(
    outcome: &Outcome,
    state: &RoleState,
    steady: bool,
    now: MonoTime,
    turn_in: Duration,
) -> bool {
    matches!(outcome, Outcome::Renewed { epoch, .. } if renews_may_wait(state, steady, now, turn_in) == Some(*epoch))
}

/// The epoch whose renews that go through may wait for the turn planned `turn_in` from `now`
/// ([`outcome_waits`]); `None`: none may. Decided after a turn, it holds until the next: the
/// deadline and the planned turn are both fixed instants until then.
pub(super) fn renews_may_wait(state: &RoleState, steady: bool, now: MonoTime, turn_in: Duration) -> Option<Epoch> {
    let place_free = state.renew.in_flight() < MAX_RENEWS_IN_FLIGHT;
    let before_deadline = state.deadline.is_some_and(|d| d.saturating_since(now) >= turn_in + BUSY_TURN);
    state.epoch.filter(|_| steady && place_free && before_deadline)
}

/// An active member in good health: until its next renew is due (`role`'s own rule,
/// [`RolePolicy::renew_when_remaining`]); once it is, a busy turn at most, or until the next
/// renew may leave or the deadline comes, whichever is first.
fn holding_turn(state: &RoleState, policy: &RolePolicy, now: MonoTime, quiet: Duration) -> Duration {
    let Some(deadline) = state.deadline else { return BUSY_TURN };
    let renew_due = policy.renew_due(deadline);
    if renew_due > now {
        return renew_due.saturating_since(now).min(quiet);
    }
    // Due, and the last renew left less than renew_interval ago (`decide` sends one at once when
    // it may). Time alone brings the moment the next renew may leave (a renew that failed fast,
    // or one slower than renew_interval, must not wait for a busy turn on top) and the deadline.
    // While a renew is in flight, nothing else: a failed one is an event, and one that went
    // through waits for the next renew's turn (`outcome_waits`), so the loop sleeps until then;
    // otherwise a busy turn at most.
    let next_renew = state.renew.next_send_at(policy.renew_interval, policy.renew_grid);
    let longest = match next_renew {
        Some(at) if state.renew.in_flight() > 0 && at > now => quiet,
        _ => BUSY_TURN,
    };
    [next_renew, Some(deadline)]
        .into_iter()
        .flatten()
        .filter(|at| *at > now)
        .map(|at| at.saturating_since(now))
        .fold(longest, Duration::min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::{Intents, StoreView, Transfer};
    use crate::domain::{Epoch, MemberId};
    use crate::health::NodeHealth;

    /// The quiet turn with a remote store.
    const QUIET_TURN: Duration = super::super::observe::REFRESH_INTERVAL;
    const VALIDITY: Duration = Duration::from_millis(2500);
    const RENEW: Duration = Duration::from_secs(1);

    fn policy() -> RolePolicy {
        RolePolicy {
            lease_ttl: Duration::from_secs(3),
            renew_interval: RENEW,
            safety_margin: Duration::from_millis(500),
            holder_validity: VALIDITY,
            priority_delay: Duration::from_secs(2),
            cooldown: Duration::from_secs(30),
            max_lag_on_failover: 5,
            status_stale_after: Duration::from_secs(3),
            fence_takeover_after: None,
            checkpoints: true,
            renew_grid: None,
        }
    }

    fn id(name: &str) -> MemberId {
        MemberId::new(name).expect("member id")
    }

    fn ms(n: u64) -> MonoTime {
        MonoTime::from_nanos(n * 1_000_000)
    }

    fn held_by(name: &str) -> Option<StoreView> {
        Some(StoreView {
            lease: LeaseView::Held { holder: id(name), epoch: Epoch::new(3) },
            intents: Intents::default(),
            current: true,
        })
    }

    fn free() -> Option<StoreView> {
        Some(StoreView { lease: LeaseView::Free { epoch: Epoch::new(3) }, intents: Intents::default(), current: true })
    }

    fn observation(kind: MemberKind, store: Option<StoreView>, verdict: Verdict) -> Observation {
        Observation {
            now: ms(10_000),
            me: id("a"),
            kind,
            priority: 1,
            store,
            health: NodeHealth { verdict, ..NodeHealth::UNKNOWN },
            cluster: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    fn state(role: RoleName) -> RoleState {
        RoleState { role, ..RoleState::new(MemberKind::Producer, ms(0)) }
    }

    /// Active at epoch 3 with `left_ms` of its validity left.
    fn active(left_ms: u64) -> RoleState {
        RoleState { epoch: Some(Epoch::new(3)), deadline: Some(ms(10_000 + left_ms)), ..state(RoleName::Active) }
    }

    /// Active with 1.5 s of validity left (a renew due) and a renew sent `ago_ms` before now.
    fn sent_ago(left_ms: u64, ago_ms: u64) -> RoleState {
        let mut s = active(left_ms);
        s.renew.sent(ms(10_000 - ago_ms));
        s
    }

    fn three_in_flight() -> RoleState {
        let mut s = active(1_500);
        for ago in [990, 980, 970] {
            s.renew.sent(ms(10_000 - ago));
        }
        s
    }

    /// One line per case: (situation, state, observation) → the wait before the next turn.
    #[test]
    fn the_loop_turns_at_the_old_pace_while_in_motion_and_waits_for_events_while_quiet() {
        use RoleName::*;
        use Verdict::*;
        let producer = |store, verdict| observation(MemberKind::Producer, store, verdict);
        let transfer = {
            let mut v = held_by("b").expect("view");
            v.intents.transfer = Some(Transfer { to: id("a"), epoch: Epoch::new(3), forced: false });
            Some(v)
        };
        let paused_free = {
            let mut v = free().expect("view");
            v.intents.paused = true;
            Some(v)
        };
        let pending = RoleState { acquire_pending: true, ..state(Standby) };
        let retrying = RoleState { acquire_retry_at: Some(ms(10_050)), ..state(Standby) };
        let cases: Vec<(&str, RoleState, Observation, Duration)> = vec![
            ("standby, another holds", state(Standby), producer(held_by("b"), Healthy), QUIET_TURN),
            ("ineligible, another holds", state(Ineligible), producer(held_by("b"), Unhealthy), QUIET_TURN),
            ("witness, lease free", state(Witness), observation(MemberKind::Witness, free(), Unknown), QUIET_TURN),
            ("standby, lease free", state(Standby), producer(free(), Healthy), BUSY_TURN),
            ("standby, lease free but paused", state(Standby), producer(paused_free, Healthy), QUIET_TURN),
            ("standby, store unknown", state(Standby), producer(None, Healthy), BUSY_TURN),
            ("standby, a transfer asked", state(Standby), producer(transfer, Healthy), BUSY_TURN),
            ("standby, acquire pending", pending, producer(held_by("b"), Healthy), BUSY_TURN),
            ("standby, acquire retry ahead", retrying, producer(held_by("b"), Healthy), BUSY_TURN),
            ("standby, the store says it holds", state(Standby), producer(held_by("a"), Healthy), BUSY_TURN),
            ("promoting", state(Promoting), producer(held_by("a"), Healthy), BUSY_TURN),
            ("demoting", state(Demoting), producer(held_by("a"), Healthy), BUSY_TURN),
            ("fenced", state(Fenced), producer(held_by("a"), Healthy), BUSY_TURN),
            // Renew due once 1.5 s of the 2.5 s validity is left.
            ("active, renew due in 100 ms", active(1_600), producer(held_by("a"), Healthy), Duration::from_millis(100)),
            ("active, renew due in 1 s", active(2_500), producer(held_by("a"), Healthy), QUIET_TURN),
            ("active, renew due now", active(1_500), producer(held_by("a"), Healthy), BUSY_TURN),
            ("active, renew overdue", active(200), producer(held_by("a"), Healthy), BUSY_TURN),
            (
                "active, renew due, deadline in 20 ms",
                active(20),
                producer(held_by("a"), Healthy),
                Duration::from_millis(20),
            ),
            (
                "active, renew in flight, next in 30 ms",
                sent_ago(1_500, 970),
                producer(held_by("a"), Healthy),
                Duration::from_millis(30),
            ),
            // A backstop: `decide` sends a renew that may leave, so it is never left for later.
            ("active, renew in flight, next past", sent_ago(1_500, 1_200), producer(held_by("a"), Healthy), BUSY_TURN),
            ("active, three renews in flight", three_in_flight(), producer(held_by("a"), Healthy), BUSY_TURN),
            ("active, node unhealthy", active(2_500), producer(held_by("a"), Unhealthy), BUSY_TURN),
            ("active, node unknown", active(2_500), producer(held_by("a"), Unknown), QUIET_TURN),
        ];
        for (what, state, obs, want) in cases {
            assert_eq!(next_turn(&state, &obs, &policy(), QUIET_TURN), want, "{what}");
        }
    }

    #[test]
    fn only_a_healthy_active_with_no_transfer_asked_holds_steadily() {
        use RoleName::*;
        use Verdict::*;
        let holding = observation(MemberKind::Producer, held_by("a"), Healthy);
        assert!(holds_steadily(&active(1_000), &holding), "a healthy holder only renews");
        let unhealthy = observation(MemberKind::Producer, held_by("a"), Unhealthy);
        assert!(!holds_steadily(&active(1_000), &unhealthy), "an unhealthy holder looks for a successor");
        let mut asked = observation(MemberKind::Producer, held_by("a"), Healthy);
        if let Some(view) = asked.store.as_mut() {
            view.intents.transfer = Some(Transfer { to: id("b"), epoch: Epoch::new(3), forced: false });
        }
        assert!(!holds_steadily(&active(1_000), &asked), "a holder asked to hand over watches its successor");
        let unknown = observation(MemberKind::Producer, None, Healthy);
        assert!(!holds_steadily(&active(1_000), &unknown), "an unknown store is news");
        for role in [Standby, Promoting, Demoting, Fenced, Witness, Ineligible] {
            assert!(!holds_steadily(&state(role), &holding), "{role:?} is in motion or does not hold");
        }
    }

    #[test]
    fn only_a_steady_holders_renew_that_went_through_waits_for_the_planned_turn() {
        let renewed = |epoch| Outcome::Renewed { epoch: Epoch::new(epoch), valid_until: ms(12_000) };
        let now = ms(10_000);
        let turn_in = Duration::from_millis(150);
        let holder = sent_ago(1_500, 850);
        assert!(outcome_waits(&renewed(3), &holder, true, now, turn_in));
        assert!(!outcome_waits(&renewed(3), &holder, false, now, turn_in), "a holder in motion decides on it at once");
        assert!(!outcome_waits(&renewed(2), &holder, true, now, turn_in), "a renew of an earlier holding is news");
        let failed = Outcome::RenewFailed { epoch: Epoch::new(3), error: "timed out".into() };
        assert!(!outcome_waits(&failed, &holder, true, now, turn_in), "a failed renew sends the next at its interval");
        // The turn planned at the deadline would fence before applying the renew: not then,
        // nor within a busy turn of it.
        let near = sent_ago(200, 850);
        assert!(!outcome_waits(&renewed(3), &near, true, now, Duration::from_millis(200)));
        assert!(!outcome_waits(&renewed(3), &near, true, now, Duration::from_millis(151)));
        assert!(outcome_waits(&renewed(3), &near, true, now, Duration::from_millis(150)));
        // Three in flight: the answer frees the place the next renew needs, so it turns now.
        assert!(!outcome_waits(&renewed(3), &three_in_flight(), true, now, turn_in));
    }

    /// The renew's answer is an event when it fails and waits for this turn when it goes
    /// through: a holder with a renew in flight sleeps until the next renew may leave.
    #[test]
    fn a_holder_with_a_renew_in_flight_sleeps_until_the_next_may_leave() {
        let obs = observation(MemberKind::Producer, held_by("a"), Verdict::Healthy);
        // Sent 850 ms ago with a 1 s interval: the next leaves in 150 ms, longer than a busy turn.
        assert_eq!(next_turn(&sent_ago(1_500, 850), &obs, &policy(), QUIET_TURN), Duration::from_millis(150));
        // Never past the deadline, nor longer than the quiet turn.
        assert_eq!(next_turn(&sent_ago(100, 850), &obs, &policy(), QUIET_TURN), Duration::from_millis(100));
        assert_eq!(next_turn(&sent_ago(1_500, 100), &obs, &policy(), QUIET_TURN), QUIET_TURN);
    }

    /// With a renew grid the loop turns at the grid point the renew was moved back to, where
    /// `decide` finds it due; a turn at the unmoved moment would renew off the grid.
    #[test]
    fn with_a_renew_grid_the_holder_turns_at_the_grid_point() {
        let obs = observation(MemberKind::Producer, held_by("a"), Verdict::Healthy);
        let grid = RolePolicy { renew_grid: Some(Duration::from_millis(160)), ..policy() };
        // Due 200 ms from now (at 10.2 s); the grid's last point before it is 10.08 s.
        assert_eq!(next_turn(&active(1_700), &obs, &policy(), QUIET_TURN), Duration::from_millis(200));
        assert_eq!(next_turn(&active(1_700), &obs, &grid, QUIET_TURN), Duration::from_millis(80));
        // A renew in flight since 9.15 s: the next may leave one interval after it (10.15 s), on
        // the grid at 10.08 s.
        assert_eq!(next_turn(&sent_ago(1_500, 850), &obs, &policy(), QUIET_TURN), Duration::from_millis(150));
        assert_eq!(next_turn(&sent_ago(1_500, 850), &obs, &grid, QUIET_TURN), Duration::from_millis(80));
    }

    #[test]
    fn fenced_takeovers_keep_a_standby_at_the_old_pace() {
        let policy = RolePolicy { fence_takeover_after: Some(Duration::from_secs(2)), ..policy() };
        let obs = observation(MemberKind::Producer, held_by("b"), Verdict::Healthy);
        assert_eq!(next_turn(&state(RoleName::Standby), &obs, &policy, QUIET_TURN), BUSY_TURN);
    }

    #[test]
    fn no_wait_is_longer_than_the_quiet_turn() {
        let obs = observation(MemberKind::Producer, held_by("a"), Verdict::Healthy);
        for left_ms in [1_501, 2_000, 2_500, 60_000] {
            assert!(next_turn(&active(left_ms), &obs, &policy(), QUIET_TURN) <= QUIET_TURN, "{left_ms} ms left");
        }
    }

    // With the statuses in memory the quiet turn is a second: a quiet member turns once a
    // second, an active one still when its renew falls due, and nothing in motion slows down.
    #[test]
    fn a_longer_quiet_turn_slows_only_the_quiet_states() {
        use RoleName::*;
        use Verdict::*;
        let quiet = Duration::from_secs(1);
        let producer = |store, verdict| observation(MemberKind::Producer, store, verdict);
        let cases: Vec<(&str, RoleState, Observation, Duration)> = vec![
            ("standby, another holds", state(Standby), producer(held_by("b"), Healthy), quiet),
            ("witness", state(Witness), observation(MemberKind::Witness, held_by("b"), Unknown), quiet),
            ("standby, lease free", state(Standby), producer(free(), Healthy), BUSY_TURN),
            ("active, renew due in 100 ms", active(1_600), producer(held_by("a"), Healthy), Duration::from_millis(100)),
            ("active, renew due in 1 s", active(2_500), producer(held_by("a"), Healthy), quiet),
            ("active, renew due in 2 s", active(3_500), producer(held_by("a"), Healthy), quiet),
            ("active, node unhealthy", active(2_500), producer(held_by("a"), Unhealthy), BUSY_TURN),
        ];
        for (what, state, obs, want) in cases {
            assert_eq!(next_turn(&state, &obs, &policy(), quiet), want, "{what}");
        }
    }
}
