//! What follows each decision for the operator: one log line and event per change of the store
//! (lease, maintenance mode, transfer), one sentence with its cause per role change, one line
//! when the situation behind a non-decision changes, and the gauges.
//!
//! Owns the memory that makes a line a change (the last store view, the last situation); never
//! decides and never acts. A WARN only when something went wrong or an operator should look.

use std::sync::Arc;

use crate::coord::StoreView;
use crate::domain::{MonoTime, RoleName};
use crate::events::EventKind;
use crate::health::{NodeHealth, Verdict};
use crate::role::{self, Reason, RoleState, StepDown, Why};
use crate::telemetry::{FailoverReason, Metrics};

use super::parts::Outputs;

pub(super) struct Reporter {
    outputs: Arc<Outputs>,
    /// The store as the last turn that saw a current view saw it ([`StoreView::current`]).
    last_view: Option<StoreView>,
    /// Whether the last view was current: its loss and its return are logged once each.
    caught_up: bool,
    /// The situation of the last decision, without countdowns: a change is logged.
    last_situation: Option<Why>,
}

impl Reporter {
    pub fn new(outputs: Arc<Outputs>) -> Reporter {
        Reporter { outputs, last_view: None, caught_up: true, last_situation: None }
    }

    /// Emits an event and logs a line for each change between the last view of the store and
    /// `now`. Every member's log — a witness's too — thus tells who holds the lease at any
    /// moment of a failover.
    pub fn store_changes(&mut self, now: &StoreView) {
        let events = &self.outputs.events;
        let before = self.last_view.as_ref();
        if !now.current {
            if self.caught_up {
                tracing::info!(
                    "store: not caught up with it yet (no raft leader known, or its entries not applied yet): \
                     the lease counts as unknown and no standby takes it"
                );
            }
            self.caught_up = false;
            return;
        }
        match lease_news(before.map(|b| &b.lease), self.caught_up, &now.lease) {
            LeaseNews::Changed => {
                let text = format!("lease {}", now.lease);
                tracing::info!("store: {text}");
                events.emit(EventKind::Lease, Some(now.lease.epoch()), text);
            }
            LeaseNews::CaughtUp => tracing::info!("store: caught up with it again; lease {}", now.lease),
            LeaseNews::Same => {}
        }
        self.caught_up = true;
        if before.is_some_and(|b| b.intents.paused != now.intents.paused) {
            let what =
                if now.intents.paused { "maintenance mode on (paused)" } else { "maintenance mode off (resumed)" };
            tracing::info!("store: {what}");
            events.emit(EventKind::Intent, None, what);
        }
        if before.is_some_and(|b| b.intents.transfer != now.intents.transfer)
            && let Some(t) = &now.intents.transfer
        {
            let forced = if t.forced { "forced " } else { "" };
            let text = format!("{forced}transfer to {} requested (epoch {})", t.to, t.epoch);
            tracing::info!("store: {text}");
            events.emit(EventKind::Intent, Some(t.epoch), text);
        }
        self.last_view = Some(now.clone());
    }

    /// Logs and emits what a decision changed: one sentence with its cause for a role change (a
    /// WARN only when something went wrong: a fence, a failed guard, an unhealthy node), and
    /// one line when the situation behind a non-decision changes (a WARN only when an operator
    /// should look: an active on an unhealthy node, or no member able to take over).
    pub fn decision(&self, before: &RoleState, next: &RoleState, why: &Why, height: Option<u64>, took: FailoverReason) {
        if next.role != before.role || next.epoch != before.epoch {
            self.role_change(before, next, why, height, took);
        } else if self.last_situation.as_ref() != Some(&why.situation()) && !matches!(why, Why::AcquireRetry { .. }) {
            match why.needs_attention() {
                true => tracing::warn!(role = %next.role, "{why}"),
                false => tracing::info!(role = %next.role, "{why}"),
            }
        }
        let outputs = &self.outputs;
        if next.last_reason != before.last_reason {
            outputs.last_reason.send_replace(next.last_reason.as_ref().map_or(String::new(), ToString::to_string));
        }
        // Words only when the control API asks: an active's turns come several times a second
        // per validator. Nobody waits on it, so nobody is woken (see `Outputs::why`).
        outputs.why.send_if_modified(|last| {
            if last.as_ref() != Some(why) {
                *last = Some(why.clone());
            }
            false
        });
    }

    fn role_change(&self, before: &RoleState, next: &RoleState, why: &Why, height: Option<u64>, took: FailoverReason) {
        let sentence = role::describe_change(before, next, why);
        let epoch = next.epoch.or(before.epoch).map(|e| e.get());
        let cause = role::change_cause_word(next);
        let troubled = next.role == RoleName::Fenced
            || (next.role == RoleName::Demoting
                && matches!(
                    next.last_reason,
                    Some(Reason::StepDown(StepDown::Unhealthy { .. } | StepDown::GuardFailed { .. }))
                ));
        match troubled {
            true => {
                tracing::warn!(change = "role", role = %next.role, from = %before.role, epoch, cause, height, "{sentence}")
            }
            false => {
                tracing::info!(change = "role", role = %next.role, from = %before.role, epoch, cause, height, "{sentence}")
            }
        }
        self.outputs.events.emit_with_cause(EventKind::Role, next.epoch.or(before.epoch), cause, sentence);
        let metrics = &self.outputs.telemetry.metrics;
        if next.role == RoleName::Active && before.role != RoleName::Active {
            metrics.became_active(took);
        }
        if before.role == RoleName::Active && next.role != RoleName::Active {
            metrics.stepped_down(next.last_reason.as_ref().map_or("other", Reason::word));
        }
    }

    /// Remembers the situation of a decision. A pause between acquire attempts is the same
    /// situation as acquiring: the failed attempt was logged with its error already.
    pub fn note_situation(&mut self, why: &Why) {
        if !matches!(why, Why::AcquireRetry { .. }) {
            self.last_situation = Some(why.situation());
        }
    }
}

/// The gauges that follow each decision: role, lease, own deadline, node health.
pub(super) fn metrics(m: &Metrics, next: &RoleState, view: &StoreView, health: &NodeHealth, now: MonoTime) {
    m.set_role(next.role);
    m.set_lease(&view.lease);
    let holding = matches!(next.role, RoleName::Promoting | RoleName::Active | RoleName::Demoting);
    let remaining = next.deadline.filter(|_| holding).map_or(0.0, |d| d.saturating_since(now).as_secs_f64());
    m.set_lease_remaining(remaining);
    m.set_health(health.verdict == Verdict::Healthy && health.latest_good, health.lag);
}

/// What a current view says of the lease, against the last current view's.
#[derive(Debug, PartialEq, Eq)]
enum LeaseNews {
    /// Another lease: a log line and an event.
    Changed,
    /// The same lease, seen again after a spell of not being caught up (a raft election): a log
    /// line only, so that an election that moved nothing sends no lease event to webhooks.
    CaughtUp,
    Same,
}

fn lease_news(
    last_current: Option<&crate::domain::LeaseView>,
    caught_up: bool,
    now: &crate::domain::LeaseView,
) -> LeaseNews {
    match (last_current == Some(now), caught_up) {
        (false, _) => LeaseNews::Changed,
        (true, false) => LeaseNews::CaughtUp,
        (true, true) => LeaseNews::Same,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Epoch, LeaseView, MemberId};

    #[test]
    fn an_election_that_leaves_the_lease_where_it_was_is_a_line_and_no_lease_event() {
        let held = |m: &str, e: u64| LeaseView::Held { holder: MemberId::new(m).expect("id"), epoch: Epoch::new(e) };
        assert_eq!(lease_news(None, true, &held("a", 1)), LeaseNews::Changed, "the first current view");
        assert_eq!(lease_news(Some(&held("a", 1)), true, &held("a", 1)), LeaseNews::Same);
        assert_eq!(lease_news(Some(&held("a", 1)), false, &held("a", 1)), LeaseNews::CaughtUp);
        assert_eq!(lease_news(Some(&held("a", 1)), false, &held("b", 2)), LeaseNews::Changed);
        assert_eq!(
            lease_news(Some(&held("a", 1)), true, &LeaseView::Free { epoch: Epoch::new(1) }),
            LeaseNews::Changed
        );
    }
}
