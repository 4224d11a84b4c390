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
//!   deadline comes;
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

use crate::domain::{LeaseView, MemberKind, MonoTime, RoleName};
use crate::health::Verdict;
use crate::role::{Observation, RolePolicy, RoleState};

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

/// An active member in good health: until its next renew is due (`role`'s own rule,
/// [`RolePolicy::renew_when_remaining`]); once it is, a busy turn at most, or until the next
/// renew may leave or the deadline comes, whichever is first.
fn holding_turn(state: &RoleState, policy: &RolePolicy, now: MonoTime, quiet: Duration) -> Duration {
    let Some(deadline) = state.deadline else { return BUSY_TURN };
    let renew_due = deadline.saturating_sub(policy.renew_when_remaining());
    if renew_due > now {
        return renew_due.saturating_since(now).min(quiet);
    }
    // Due, and the last renew left less than renew_interval ago (`decide` sends one at once when
    // it may): an answer is an event. Time alone brings the moment the next renew may leave (a
    // renew that failed fast, or one slower than renew_interval, must not wait for a busy turn
    // on top) and the deadline.
    let next_renew = state.renew.next_send_at(policy.renew_interval);
    [next_renew, Some(deadline)]
        .into_iter()
        .flatten()
        .filter(|at| *at > now)
        .map(|at| at.saturating_since(now))
        .fold(BUSY_TURN, Duration::min)
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
        })
    }

    fn free() -> Option<StoreView> {
        Some(StoreView { lease: LeaseView::Free { epoch: Epoch::new(3) }, intents: Intents::default() })
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
