//! The role logic of docs/design.md §7 as one pure function: [`decide`] takes the member's
//! [`RoleState`] and an [`Observation`] and returns the next state and the [`Action`]s the
//! daemon must carry out.
//!
//! This module never performs I/O and never reads a clock: monotonic time, the lease view, the
//! node's health, the cluster's status, the operator's intents and the outcomes of earlier
//! actions all arrive in the observation. Actions are requests; the daemon runs at most one of
//! each kind at a time and reports every result back as an [`Outcome`]. Safety rules, each
//! tested below and by property tests:
//! - a holder whose lease deadline has passed emits [`Action::Fence`] before anything else;
//! - a producer is only activated ([`Action::RunGuard`]) for a lease this process acquired,
//!   at an epoch strictly above every epoch it has seen before;
//! - a paused cluster never acquires or promotes on its own; only a transfer does;
//! - a lease this process did not acquire, but the store says it holds (for example from before
//!   a restart), is released, never used.

use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::coord::{Intents, StatusReport, StoreView};
use crate::domain::{Epoch, LeaseView, MemberId, MemberKind, MonoTime, RoleName};
use crate::health::{NodeHealth, Verdict};

/// How long a member waits after a failed acquire before it asks again.
pub const ACQUIRE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The timings and thresholds the decisions depend on, from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolePolicy {
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    pub safety_margin: Duration,
    pub priority_delay: Duration,
    pub cooldown: Duration,
    pub max_lag_on_failover: u64,
    /// A peer status older than this is ignored: it proves nothing about the peer now.
    pub status_stale_after: Duration,
}

impl RolePolicy {
    pub fn from_config(config: &Config) -> RolePolicy {
        let c = &config.coordinator;
        let probe = config.chain.as_ref().map_or(Duration::from_secs(1), |ch| ch.probe_interval);
        let unhealthy_after = config.chain.as_ref().map_or(3, |ch| ch.unhealthy_after);
        RolePolicy {
            lease_ttl: c.lease_ttl,
            renew_interval: c.renew_interval,
            safety_margin: c.safety_margin,
            priority_delay: config.failover.priority_delay,
            cooldown: config.failover.cooldown,
            max_lag_on_failover: config.failover.max_lag_on_failover,
            status_stale_after: probe.saturating_mul(unhealthy_after.saturating_add(1)).max(c.lease_ttl),
        }
    }

    /// A renew is due once this little validity remains: one renew interval after the last
    /// committed renew was sent.
    fn renew_when_remaining(&self) -> Duration {
        self.lease_ttl.saturating_sub(self.safety_margin).saturating_sub(self.renew_interval)
    }
}

/// Everything `decide` looks at, gathered by the daemon at `now`.
#[derive(Clone, Debug)]
pub struct Observation {
    pub now: MonoTime,
    pub me: MemberId,
    pub kind: MemberKind,
    pub priority: u32,
    /// The lease and intents as last read from the store; `None` when the store could not be
    /// read. Unknown never means free.
    pub store: Option<StoreView>,
    pub health: NodeHealth,
    /// Statuses published by the members (this one's own entry is ignored).
    pub cluster: Vec<StatusReport>,
    /// Results of actions the daemon carried out since the last call, oldest first.
    pub outcomes: Vec<Outcome>,
}

/// The result of an [`Action`], reported back by the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// `acquire` granted the lease at `epoch`, valid for this member until `valid_until`.
    Acquired {
        epoch: Epoch,
        valid_until: MonoTime,
    },
    /// `acquire` failed or its outcome is unknown.
    AcquireFailed {
        error: String,
    },
    Renewed {
        epoch: Epoch,
        valid_until: MonoTime,
    },
    /// Every guard step passed and the producer confirmed activation.
    GuardPassed {
        epoch: Epoch,
    },
    /// A guard step failed; the producer may have been partly activated.
    GuardFailed {
        epoch: Epoch,
        step: String,
        error: String,
    },
    Deactivated {
        epoch: Epoch,
    },
    DeactivateFailed {
        epoch: Epoch,
        error: String,
    },
    /// The producer is confirmed unable to sign.
    Fenced,
    /// Production was stopped outside the loop — by the keeper, the deadline thread, or the
    /// node's own exit — and `by` says who, `detail` why. A holder must not keep the lease.
    ProducerStopped {
        by: String,
        detail: String,
    },
    FenceFailed {
        error: String,
    },
}

/// Why an active member stops producing on purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StepDown {
    /// Its node is unhealthy and an eligible standby exists.
    Unhealthy,
    /// A planned switchover to `to`.
    Transfer { to: MemberId },
    /// The promotion guard failed at `step`.
    GuardFailed { step: String },
}

/// Why a producer must be made unable to sign now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FenceReason {
    /// The holder's lease validity ended without a committed renew.
    LeaseDeadline,
    /// The store shows the lease released, expired or held by someone else.
    LeaseLost,
    /// Graceful deactivation did not confirm.
    DeactivateFailed,
    /// The store granted this member a second lease while it held one.
    Inconsistent,
    /// The keeper, the deadline thread or the node's own exit stopped production.
    ProducerStopped { by: String, detail: String },
}

/// The cause of the last step-down or fence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Reason {
    StepDown(StepDown),
    Fence(FenceReason),
}

impl std::fmt::Display for StepDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepDown::Unhealthy => f.write_str("its node is unhealthy and an eligible standby exists"),
            StepDown::Transfer { to } => write!(f, "a planned handover to {to}"),
            StepDown::GuardFailed { step } => write!(f, "the promotion guard failed at {step}"),
        }
    }
}

impl std::fmt::Display for FenceReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FenceReason::LeaseDeadline => f.write_str("the lease validity ended without a committed renew"),
            FenceReason::LeaseLost => {
                f.write_str("the store shows the lease released, expired or held by another member")
            }
            FenceReason::DeactivateFailed => f.write_str("a graceful deactivation did not confirm"),
            FenceReason::Inconsistent => f.write_str("the store granted this member a second lease while it held one"),
            FenceReason::ProducerStopped { by, detail } => write!(f, "{by} stopped the producer: {detail}"),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::StepDown(why) => write!(f, "stepped down: {why}"),
            Reason::Fence(why) => write!(f, "fenced: {why}"),
        }
    }
}

/// What the daemon must do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Acquire,
    Renew {
        epoch: Epoch,
    },
    /// Key-holding mode: raise the watermark to the producer's last signed height.
    Checkpoint {
        epoch: Epoch,
    },
    /// Guard steps 2–5 of docs/design.md §6 for the lease at `epoch`, ending with `activate(floor)`.
    RunGuard {
        epoch: Epoch,
    },
    Deactivate {
        epoch: Epoch,
        why: StepDown,
    },
    /// Give back a lease the store says this member holds while it is not holding it. The
    /// daemon first confirms the producer stopped (deactivate, else fence) and keeps the lease
    /// to expire when it cannot.
    Release {
        epoch: Epoch,
    },
    Fence {
        why: FenceReason,
    },
}

/// The member's role and what it remembers between decisions. Plain data; the daemon keeps it
/// and passes it back in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoleState {
    pub role: RoleName,
    /// The epoch of the lease held in Promoting, Active and Demoting (and Fenced, until the
    /// fence is confirmed).
    pub epoch: Option<Epoch>,
    /// End of the held lease's validity (docs/design.md §4): fence at or after it.
    pub deadline: Option<MonoTime>,
    /// When the current role was entered.
    pub since: MonoTime,
    /// The highest epoch seen in any earlier observation or holding; a new grant must exceed it.
    pub seen_epoch: Epoch,
    /// An `Acquire` was emitted and its outcome has not arrived.
    pub acquire_pending: bool,
    /// The pending acquire answers a transfer naming this member. The grant clears the transfer
    /// in the store, so whether the grant may be used cannot be judged from the store afterwards
    /// (in maintenance mode only a transfer allows taking the lease).
    pub acquire_for_transfer: bool,
    /// After a failed acquire, no new one before this time: a store that keeps refusing (the
    /// lease still held in its view, Consul's lock-delay) is not asked again at loop speed.
    pub acquire_retry_at: Option<MonoTime>,
    pub activated_at: Option<MonoTime>,
    /// Last time this member stepped down, failed its guard or was fenced: cooldown starts here.
    pub stood_down_at: Option<MonoTime>,
    /// Since when the lease has been seen free: priority delays count from here.
    pub free_since: Option<MonoTime>,
    /// Why the last step-down or fence happened, for status and events.
    pub last_reason: Option<Reason>,
}

impl RoleState {
    pub fn new(kind: MemberKind, now: MonoTime) -> RoleState {
        RoleState {
            role: if kind == MemberKind::Witness { RoleName::Witness } else { RoleName::Ineligible },
            epoch: None,
            deadline: None,
            since: now,
            seen_epoch: Epoch::ZERO,
            acquire_pending: false,
            acquire_for_transfer: false,
            acquire_retry_at: None,
            activated_at: None,
            stood_down_at: None,
            free_since: None,
            last_reason: None,
        }
    }

    fn holding(&self) -> bool {
        matches!(self.role, RoleName::Promoting | RoleName::Active | RoleName::Demoting)
    }

    fn enter(&mut self, role: RoleName, now: MonoTime) {
        if self.role != role {
            self.role = role;
            self.since = now;
        }
    }

    /// Leaves a holding: remember its epoch so it can never be used again.
    fn drop_holding(&mut self, now: MonoTime) {
        if let Some(e) = self.epoch.take() {
            self.seen_epoch = self.seen_epoch.max(e);
        }
        self.deadline = None;
        self.activated_at = None;
        self.stood_down_at = Some(now);
        self.enter(RoleName::Ineligible, now);
    }

    fn fence_if_expired(&mut self, now: MonoTime, actions: &mut Vec<Action>) {
        if self.holding() && self.deadline.is_none_or(|d| now >= d) {
            self.fence(FenceReason::LeaseDeadline, now, actions);
        }
    }

    fn fence(&mut self, why: FenceReason, now: MonoTime, actions: &mut Vec<Action>) {
        self.last_reason = Some(Reason::Fence(why.clone()));
        self.enter(RoleName::Fenced, now);
        self.activated_at = None;
        actions.push(Action::Fence { why });
    }
}

/// The next state and the actions to carry out. See the module doc for the rules.
pub fn decide(state: &RoleState, obs: &Observation, policy: &RolePolicy) -> (RoleState, Vec<Action>) {
    let mut s = state.clone();
    let mut actions = Vec::new();
    let now = obs.now;

    // Safety first: a holding whose deadline has passed is fenced before any outcome is looked
    // at (a late renew cannot revive it), and again after them (a grant may arrive expired).
    s.fence_if_expired(now, &mut actions);
    let granted = apply_outcomes(&mut s, obs, policy, &mut actions);
    s.fence_if_expired(now, &mut actions);
    if s.holding() && lease_lost(&s, obs) {
        s.fence(FenceReason::LeaseLost, now, &mut actions);
    }
    // Guard step 1 (docs/design.md §6) held: a fresh grant that survived the checks above.
    if let Some(epoch) = granted
        && s.role == RoleName::Promoting
        && s.epoch == Some(epoch)
    {
        actions.push(Action::RunGuard { epoch });
    }

    match s.role {
        RoleName::Promoting | RoleName::Active | RoleName::Demoting => {
            decide_holding(&mut s, obs, policy, &mut actions)
        }
        RoleName::Fenced => {
            if !actions.iter().any(|a| matches!(a, Action::Fence { .. })) {
                // Not confirmed yet: ask again until the producer confirms.
                let why = match &s.last_reason {
                    Some(Reason::Fence(why)) => why.clone(),
                    _ => FenceReason::LeaseDeadline,
                };
                actions.push(Action::Fence { why });
            }
        }
        RoleName::Witness | RoleName::Ineligible | RoleName::Standby => decide_idle(&mut s, obs, policy, &mut actions),
    }

    if let Some(view) = &obs.store {
        // Our own grant — held, or being acquired and shown by the store before the acquire
        // call returned — is not an epoch "seen before" it.
        let own_grant = matches!(&view.lease, LeaseView::Held { holder, epoch }
            if holder == &obs.me && (s.acquire_pending || s.epoch == Some(*epoch)));
        if !own_grant {
            s.seen_epoch = s.seen_epoch.max(view.lease.epoch());
        }
        s.free_since = match (&view.lease, s.free_since) {
            (LeaseView::Free { .. }, None) => Some(now),
            (LeaseView::Free { .. }, since) => since,
            (LeaseView::Held { .. }, _) => None,
        };
    }
    (s, actions)
}

/// Applies the outcomes in order; returns the epoch of a fresh grant to promote on, if any.
fn apply_outcomes(
    s: &mut RoleState,
    obs: &Observation,
    policy: &RolePolicy,
    actions: &mut Vec<Action>,
) -> Option<Epoch> {
    let now = obs.now;
    let mut granted = None;
    for outcome in &obs.outcomes {
        match outcome {
            Outcome::Acquired { epoch, valid_until } => {
                s.acquire_pending = false;
                if s.holding() || s.role == RoleName::Fenced {
                    // A second grant while one is held: the store and this member disagree about
                    // who holds what. Stop producing; the stray grant is released below as stale.
                    if s.holding() {
                        s.fence(FenceReason::Inconsistent, now, actions);
                    }
                    continue;
                }
                if *epoch <= s.seen_epoch {
                    // Not newer than what was seen before: never activate on it (released as stale).
                    continue;
                }
                let allowed = std::mem::take(&mut s.acquire_for_transfer) || may_take_lease(s, obs, policy);
                if s.role != RoleName::Standby || !self_eligible(obs, policy) || !allowed {
                    continue;
                }
                s.epoch = Some(*epoch);
                s.deadline = Some(*valid_until);
                s.enter(RoleName::Promoting, now);
                granted = Some(*epoch);
            }
            Outcome::AcquireFailed { .. } => {
                s.acquire_pending = false;
                s.acquire_for_transfer = false;
                s.acquire_retry_at = Some(now.saturating_add(ACQUIRE_RETRY_PAUSE));
            }
            Outcome::Renewed { epoch, valid_until } => {
                if s.holding() && s.epoch == Some(*epoch) {
                    s.deadline = s.deadline.max(Some(*valid_until));
                }
            }
            Outcome::GuardPassed { epoch } => {
                if s.role == RoleName::Promoting && s.epoch == Some(*epoch) {
                    s.enter(RoleName::Active, now);
                    s.activated_at = Some(now);
                }
            }
            Outcome::GuardFailed { epoch, step, .. } => {
                if s.role == RoleName::Promoting && s.epoch == Some(*epoch) {
                    start_step_down(s, StepDown::GuardFailed { step: step.clone() }, now, actions);
                }
            }
            Outcome::Deactivated { epoch } => {
                if s.role == RoleName::Demoting && s.epoch == Some(*epoch) {
                    s.drop_holding(now);
                }
            }
            Outcome::DeactivateFailed { epoch, .. } => {
                if s.role == RoleName::Demoting && s.epoch == Some(*epoch) {
                    s.fence(FenceReason::DeactivateFailed, now, actions);
                }
            }
            Outcome::Fenced => {
                if s.role == RoleName::Fenced {
                    s.drop_holding(now);
                }
            }
            Outcome::FenceFailed { .. } => {}
            Outcome::ProducerStopped { by, detail } => {
                // Confirm with a fence of our own (idempotent), then stand down and release:
                // never "lease held, producer fenced".
                if s.holding() {
                    s.fence(FenceReason::ProducerStopped { by: by.clone(), detail: detail.clone() }, now, actions);
                }
            }
        }
    }
    granted
}

fn start_step_down(s: &mut RoleState, why: StepDown, now: MonoTime, actions: &mut Vec<Action>) {
    let Some(epoch) = s.epoch else { return };
    s.last_reason = Some(Reason::StepDown(why.clone()));
    s.enter(RoleName::Demoting, now);
    actions.push(Action::Deactivate { epoch, why });
}

/// The store shows that the held lease is gone: released, expired, or granted to someone else.
/// A view older than the grant (a lower epoch) proves nothing and is ignored.
fn lease_lost(s: &RoleState, obs: &Observation) -> bool {
    let (Some(held), Some(view)) = (s.epoch, &obs.store) else { return false };
    let seen = view.lease.epoch();
    seen > held || (seen == held && !view.lease.is_held_by(&obs.me, held))
}

fn decide_holding(s: &mut RoleState, obs: &Observation, policy: &RolePolicy, actions: &mut Vec<Action>) {
    let (Some(epoch), Some(deadline)) = (s.epoch, s.deadline) else { return };
    let now = obs.now;
    if s.role == RoleName::Active {
        let intents = obs.store.as_ref().map(|v| &v.intents);
        if let Some(to) = transfer_away(intents, &obs.me, epoch)
            && eligible_standby(obs, policy).any(|r| &r.status.member == to)
        {
            start_step_down(s, StepDown::Transfer { to: to.clone() }, now, actions);
        } else if obs.health.verdict == Verdict::Unhealthy
            && !intents.is_some_and(|i| i.paused)
            && s.activated_at.is_some_and(|at| now.saturating_since(at) >= policy.cooldown)
            && eligible_standby(obs, policy).next().is_some()
        {
            start_step_down(s, StepDown::Unhealthy, now, actions);
        }
    }
    if deadline.saturating_since(now) <= policy.renew_when_remaining() {
        actions.push(Action::Renew { epoch });
        if s.role == RoleName::Active {
            actions.push(Action::Checkpoint { epoch });
        }
    }
}

fn transfer_away<'a>(intents: Option<&'a Intents>, me: &MemberId, epoch: Epoch) -> Option<&'a MemberId> {
    intents?.transfer.as_ref().filter(|t| t.epoch == epoch && &t.to != me).map(|t| &t.to)
}

fn decide_idle(s: &mut RoleState, obs: &Observation, policy: &RolePolicy, actions: &mut Vec<Action>) {
    let now = obs.now;
    if obs.kind == MemberKind::Witness {
        s.enter(RoleName::Witness, now);
        return;
    }
    let eligible = self_eligible(obs, policy);
    s.enter(if eligible { RoleName::Standby } else { RoleName::Ineligible }, now);

    let Some(view) = &obs.store else { return };
    match &view.lease {
        LeaseView::Held { holder, epoch } if holder == &obs.me => {
            // The store says we hold a lease this process never acquired (or already gave up):
            // never produce on it; give it back so others need not wait for expiry. An earlier
            // run's producer may still sign on it, so the release stops the producer first.
            if !s.acquire_pending {
                actions.push(Action::Release { epoch: *epoch });
            }
        }
        LeaseView::Held { .. } => {}
        LeaseView::Free { .. } => {
            let retry_due = s.acquire_retry_at.is_none_or(|at| now >= at);
            if eligible && retry_due && may_take_lease(s, obs, policy) && waited_for_better_candidates(s, obs, policy) {
                s.acquire_pending = true;
                s.acquire_for_transfer = view.intents.transfer.as_ref().is_some_and(|t| t.to == obs.me);
                actions.push(Action::Acquire);
            }
        }
    }
}

/// Intents and cooldown allow this member to take a free lease: a transfer naming it always
/// does; otherwise the cluster must not be paused and this member's cooldown must be over.
fn may_take_lease(s: &RoleState, obs: &Observation, policy: &RolePolicy) -> bool {
    let Some(view) = &obs.store else { return false };
    if view.intents.transfer.as_ref().is_some_and(|t| t.to == obs.me) {
        return true;
    }
    !view.intents.paused && s.stood_down_at.is_none_or(|at| obs.now.saturating_since(at) >= policy.cooldown)
}

/// Priority delay (docs/design.md §7): wait `priority_delay` after the lease became free when a
/// fresh, eligible standby with a higher priority exists — or when a transfer names another
/// member.
fn waited_for_better_candidates(s: &RoleState, obs: &Observation, policy: &RolePolicy) -> bool {
    let transfer_to_me = obs.store.as_ref().and_then(|v| v.intents.transfer.as_ref()).is_some_and(|t| t.to == obs.me);
    if transfer_to_me {
        return true;
    }
    let transfer_to_other = obs.store.as_ref().and_then(|v| v.intents.transfer.as_ref()).is_some();
    let better_exists = eligible_standby(obs, policy).any(|r| r.status.priority > obs.priority);
    if !(transfer_to_other || better_exists) {
        return true;
    }
    let free_since = s.free_since.unwrap_or(obs.now);
    obs.now.saturating_since(free_since) >= policy.priority_delay
}

/// This member's node is fit to take over: healthy now and close enough to the best height.
fn self_eligible(obs: &Observation, policy: &RolePolicy) -> bool {
    obs.kind == MemberKind::Producer
        && obs.health.verdict == Verdict::Healthy
        && obs.health.latest_good
        && obs.health.lag.is_some_and(|lag| lag <= policy.max_lag_on_failover)
}

/// Other members that could take over now, by their fresh published status.
fn eligible_standby<'a>(obs: &'a Observation, policy: &'a RolePolicy) -> impl Iterator<Item = &'a StatusReport> + 'a {
    let best = obs
        .cluster
        .iter()
        .filter(|r| r.age <= policy.status_stale_after)
        .filter_map(|r| r.status.height)
        .chain(obs.health.height)
        .max();
    obs.cluster.iter().filter(move |r| {
        r.status.member != obs.me
            && r.age <= policy.status_stale_after
            && r.status.kind == MemberKind::Producer
            && r.status.role == RoleName::Standby
            && r.status.healthy
            && match (best, r.status.height) {
                (Some(best), Some(h)) => best.saturating_sub(h) <= policy.max_lag_on_failover,
                _ => false,
            }
    })
}

#[cfg(test)]
mod tests;
