//! The raft leader's lease expiry timer (docs/design.md §4, L2): when the leader may propose
//! `Expire` for the current holding. Plain data over instants its caller passes in: it never
//! reads a clock, proposes, or touches the state machine (the node does those), so every rule
//! here is tested without a cluster.
//!
//! The rules, each pinned by a test below:
//! - A holding expires the TTL its holder declared after the last refresh this member applied.
//! - A member that has just become raft leader cannot know when the holder last renewed: renews
//!   sent during the election were lost or are still in flight. So a new leader first waits the
//!   TTL plus one election timeout from the moment it became leader, and nothing it saw as a
//!   follower (nor in an earlier term as leader) counts as a timer "already running".
//! - The end of a stall of the node's task restarts the wait: renews could not be heard then.
//! - A proposal raft dropped (a leadership transfer, no leader) is tried again one tick later,
//!   not at once; one raft took is asked again only after an election timeout.
//! - No `Expire` before refresh stamps started: without one it would be unconditional.
//! - A holder that declared no TTL (entries of earlier versions) is given the longest TTL a
//!   supported configuration runs with, never this member's own (possibly short) one.

use std::time::{Duration, Instant};

use crate::config::TimingDefaults;
use crate::domain::Epoch;

/// How long a holder that declared no TTL keeps its lease without a refresh: the larger of this
/// member's own `lease_ttl + safety_margin` and the key-holding default's. Holders that declared
/// none run an earlier version, whose TTL is not known here; the key-holding default is the
/// longest TTL a default configuration uses, so an old holder is never expired early by a
/// leader running signer mode's short lease.
pub fn undeclared_ttl(own_ttl_and_margin: Duration) -> Duration {
    let key_holding = TimingDefaults::KEY_HOLDING.lease_ttl + TimingDefaults::KEY_HOLDING.safety_margin;
    own_ttl_and_margin.max(key_holding)
}

/// The holding an expiry would end, as the applied state shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedHolding {
    pub epoch: Epoch,
    /// The refresh stamp, when the state keeps one (`None`: an unconditional `Expire`).
    pub refreshes: Option<u64>,
    /// The TTL the holder declared with its last refresh; `None` when it declared none.
    pub declared_ttl: Option<Duration>,
}

/// The last attempt to propose an `Expire`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Attempt {
    epoch: Epoch,
    refreshes: Option<u64>,
    at: Instant,
    /// Whether raft took the proposal (it may still be lost with a leader change).
    accepted: bool,
}

/// The leader's expiry timer.
#[derive(Clone, Debug)]
pub struct ExpiryTimer {
    /// The raft tick: the wait after a dropped proposal.
    tick: Duration,
    /// One election timeout (tick × election_ticks): the new leader's grace, and the wait before
    /// asking again after a proposal raft took but that changed nothing.
    election: Duration,
    /// The TTL for a holder that declared none ([`undeclared_ttl`]).
    undeclared: Duration,
    /// The term this member leads in, and when it saw itself become leader in it.
    leading: Option<(u64, Instant)>,
    /// When this member last applied a refresh of the lease (as leader or follower).
    last_refresh: Option<Instant>,
    stall_ended: Option<Instant>,
    attempt: Option<Attempt>,
    /// The holding (epoch, stamp) of the last `Expire` raft took in this term: it may still
    /// apply, whatever happened to later attempts (one raft dropped does not take it back).
    in_flight_expire: Option<(Epoch, Option<u64>)>,
}

impl ExpiryTimer {
    pub fn new(tick: Duration, election: Duration, undeclared: Duration) -> ExpiryTimer {
        ExpiryTimer {
            tick,
            election,
            undeclared,
            leading: None,
            last_refresh: None,
            stall_ended: None,
            attempt: None,
            in_flight_expire: None,
        }
    }

    /// Records this member's raft role at `now`: `Some(term)` while it leads in `term`. Leading
    /// in a term it did not lead in before starts the new leader's wait from `now`.
    pub fn observe_role(&mut self, leader_term: Option<u64>, now: Instant) {
        match leader_term {
            None => {
                self.leading = None;
                self.attempt = None;
                self.in_flight_expire = None;
            }
            Some(term) if self.leading.is_some_and(|(t, _)| t == term) => {}
            Some(term) => {
                self.leading = Some((term, now));
                self.attempt = None;
                self.in_flight_expire = None;
            }
        }
    }

    /// This member applied a refresh (a grant or a log renew) at `now`, or, as leader, accepted
    /// one outside the log ([`super::refresh`]).
    pub fn refreshed(&mut self, now: Instant) {
        self.last_refresh = Some(now);
    }

    /// This member's task came back from a stall at `now`: renews could not be heard before.
    pub fn stall_ended(&mut self, now: Instant) {
        self.stall_ended = Some(now);
    }

    /// When an `Expire` of `holding` is due, if this member leads. Never before refresh stamps
    /// started: an unconditional `Expire` could undo a renew that committed after the timer
    /// fired, while its holder still counts on it, and the stamps start one commit after a
    /// leader takes over a state without them.
    pub fn due(&self, holding: Option<TimedHolding>) -> Option<Instant> {
        let (_, since) = self.leading?;
        let holding = holding.filter(|h| h.refreshes.is_some())?;
        let ttl = holding.declared_ttl.unwrap_or(self.undeclared);
        let mut due = since + ttl + self.election;
        for seen in [self.last_refresh, self.stall_ended].into_iter().flatten() {
            due = due.max(seen + ttl);
        }
        match self.attempt {
            Some(a) if a.epoch == holding.epoch && a.refreshes == holding.refreshes => {
                let wait = if a.accepted { self.election } else { self.tick };
                Some(due.max(a.at + wait))
            }
            _ => Some(due),
        }
    }

    /// Whether an `Expire` of `holding` was proposed in this term and raft took it: it may still
    /// apply, and a refresh outside the log ([`super::refresh`]) would not stop it. Only a new
    /// term or a changed holding (the `Expire` applied, or a log renew moved the stamp) ends it.
    pub fn expire_in_flight(&self, holding: TimedHolding) -> bool {
        self.in_flight_expire == Some((holding.epoch, holding.refreshes))
    }

    /// Records a proposal of an `Expire` of `holding` at `now`, and whether raft took it.
    pub fn proposed(&mut self, holding: TimedHolding, now: Instant, accepted: bool) {
        self.attempt = Some(Attempt { epoch: holding.epoch, refreshes: holding.refreshes, at: now, accepted });
        if accepted {
            self.in_flight_expire = Some((holding.epoch, holding.refreshes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);
    const ELECTION: Duration = Duration::from_millis(1000);
    const UNDECLARED: Duration = Duration::from_millis(3500);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn holding(ttl: Option<u64>) -> TimedHolding {
        TimedHolding { epoch: Epoch::new(1), refreshes: Some(4), declared_ttl: ttl.map(ms) }
    }

    fn timer() -> ExpiryTimer {
        ExpiryTimer::new(TICK, ELECTION, UNDECLARED)
    }

    // L2 (docs/design.md §3): a new raft leader waits the holder's TTL plus one election timeout
    // from the moment it became leader, whatever it saw before. One line per case: when it became
    // leader and when it last applied a refresh (ms after t0), the declared TTL, and when the
    // Expire is due (ms after t0).
    #[test]
    fn a_new_leader_waits_the_ttl_and_an_election_timeout_before_expiring() {
        let cases: &[(u64, Option<u64>, u64, u64)] = &[
            (0, None, 300, 1300),         // no refresh seen: TTL + election timeout from the change
            (500, Some(400), 300, 1800),  // a refresh seen as follower does not start the timer
            (500, Some(1700), 300, 2000), // a refresh applied as leader: TTL from it
            (500, Some(1200), 300, 1800), // ... but never before the new leader's grace
            (0, Some(0), 3000, 4000),     // key-holding TTL: the same rule
        ];
        for (i, (leader_at, refresh_at, ttl, due_at)) in cases.iter().enumerate() {
            let t0 = Instant::now();
            let mut t = timer();
            if let Some(r) = refresh_at.filter(|r| r < leader_at) {
                t.refreshed(t0 + ms(r));
            }
            t.observe_role(Some(7), t0 + ms(*leader_at));
            if let Some(r) = refresh_at.filter(|r| r >= leader_at) {
                t.refreshed(t0 + ms(r));
            }
            assert_eq!(t.due(Some(holding(Some(*ttl)))), Some(t0 + ms(*due_at)), "case {i}");
        }
    }

    #[test]
    fn a_timer_is_not_inherited_from_an_earlier_term() {
        let t0 = Instant::now();
        let mut t = timer();
        t.observe_role(Some(3), t0);
        t.proposed(holding(Some(300)), t0 + ms(1300), true);
        // Leadership lost and regained between two looks: a new term restarts the wait.
        t.observe_role(Some(5), t0 + ms(1400));
        assert_eq!(t.due(Some(holding(Some(300)))), Some(t0 + ms(1400 + 1300)));
        // Observing the same term again changes nothing.
        t.observe_role(Some(5), t0 + ms(2000));
        assert_eq!(t.due(Some(holding(Some(300)))), Some(t0 + ms(1400 + 1300)));
        // A follower has no timer.
        t.observe_role(None, t0 + ms(2100));
        assert_eq!(t.due(Some(holding(Some(300)))), None);
    }

    #[test]
    fn a_stall_of_the_leader_restarts_the_ttl() {
        let t0 = Instant::now();
        let mut t = timer();
        t.observe_role(Some(1), t0);
        t.stall_ended(t0 + ms(5000));
        assert_eq!(t.due(Some(holding(Some(300)))), Some(t0 + ms(5300)));
    }

    // A proposal raft dropped (during a leadership transfer) is asked again at the next tick, not
    // at once: the node's loop sleeps until `due`, so a due in the past would spin.
    #[test]
    fn a_dropped_expire_is_proposed_again_one_tick_later_not_at_once() {
        let t0 = Instant::now();
        let mut t = timer();
        t.observe_role(Some(1), t0);
        let h = holding(Some(300));
        let first = t.due(Some(h)).expect("due");
        t.proposed(h, first, false);
        assert!(!t.expire_in_flight(h), "a dropped proposal is not in flight");
        assert_eq!(t.due(Some(h)), Some(first + TICK));
        t.proposed(h, first + TICK, true);
        assert_eq!(t.due(Some(h)), Some(first + TICK + ELECTION), "a proposal raft took is asked again later");
        // Another holding (a renew committed) is not held back by the attempt.
        let renewed = TimedHolding { refreshes: Some(5), ..h };
        assert_eq!(t.due(Some(renewed)), Some(first));
        assert!(t.expire_in_flight(h), "the Expire raft took is in flight");
        assert!(!t.expire_in_flight(renewed), "an Expire named the stamp before the renew: a no-op, not in flight");
        // Asked again and dropped (a leadership transfer): the one raft took may still apply.
        t.proposed(h, first + TICK + ELECTION, false);
        assert!(t.expire_in_flight(h), "a dropped second try does not take back the first");
        t.observe_role(Some(2), first + TICK * 30);
        assert!(
            !t.expire_in_flight(h),
            "a new term: this member's log may have lost it, and a new leader applies its term first"
        );
        assert_eq!(t.due(None), None, "nothing to expire while the lease is free");
    }

    #[test]
    fn a_holder_that_declared_no_ttl_gets_the_longest_default_ttl() {
        let cases: &[(u64, u64)] = &[
            (400, 3500),    // signer mode's 300 ms + 100 ms: the key-holding default instead
            (3500, 3500),   // key-holding's own
            (10000, 10000), // a member configured longer keeps its own
        ];
        for (own, want) in cases {
            assert_eq!(undeclared_ttl(ms(*own)), ms(*want), "own {own} ms");
        }
        let t0 = Instant::now();
        let mut t = ExpiryTimer::new(TICK, ELECTION, undeclared_ttl(ms(400)));
        t.observe_role(Some(1), t0);
        t.refreshed(t0 + ms(2000));
        assert_eq!(t.due(Some(holding(None))), Some(t0 + ms(2000 + 3500)));
    }

    #[test]
    fn no_expire_is_due_before_refresh_stamps_started() {
        let now = Instant::now();
        let mut timer = ExpiryTimer::new(TICK, ELECTION, UNDECLARED);
        timer.observe_role(Some(2), now);
        let unstamped = TimedHolding { refreshes: None, ..holding(Some(300)) };
        assert_eq!(timer.due(Some(unstamped)), None);
        assert_eq!(timer.due(Some(holding(Some(300)))), Some(now + ms(300) + ELECTION));
    }
}
