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
//!   a restart), is released, never used;
//! - a held lease is taken over early ([`Action::TakeOver`]) only with `fence_takeover_after`
//!   configured, by the best fit standby, after the holder was silent that long; the daemon
//!   fences the holder first and the store grants only the exact holding that was fenced.

mod fitness;
mod renew;
mod why;

use std::time::Duration;

use serde::Serialize;

pub use fitness::{TakeoverLimits, best_height, fit_to_take_over};
pub use renew::{MAX_RENEWS_IN_FLIGHT, RenewPacing};
use why::millis;
pub use why::{
    Heard, Held, NotFit, PeerProblem, PeerUnfit, Span, Successor, Takeover, Why, change_cause_word, describe_change,
};

use crate::config::Config;
use crate::coord::{Intents, StatusReport, StoreView};
use crate::domain::{Epoch, LeaseView, MemberId, MemberKind, MonoTime, RoleName};
use crate::health::{NodeHealth, Verdict};

/// How long a member waits after a failed acquire before it asks again.
pub const ACQUIRE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long an action whose failure comes back at once (a fence the producer cannot confirm, a
/// release refused or not allowed yet) waits before it is asked again. Asked at every turn, the
/// failure's own wake-up brought the next try, and the loop spun, logging each, for as long as
/// the failure lasted.
pub const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The timings and thresholds the decisions depend on, from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolePolicy {
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    pub safety_margin: Duration,
    /// How long a held lease is valid for this member after the send of a renew that commits
    /// ([`Config::holder_horizon`]): lease_ttl − safety_margin in key-holding mode, longer in
    /// signer mode. Renews are paced from it.
    pub holder_validity: Duration,
    pub priority_delay: Duration,
    pub cooldown: Duration,
    pub max_lag_on_failover: u64,
    /// A peer status older than this is ignored: it proves nothing about the peer now.
    pub status_stale_after: Duration,
    /// Fenced takeover (`failover.fence_takeover_after`): a holder silent this long is fenced
    /// and its lease taken over. `None`: a standby waits for the lease to expire.
    pub fence_takeover_after: Option<Duration>,
    /// Whether an Active checkpoints with its renews: key-holding mode. In signer mode every
    /// signature already moved the watermark, and the producer reports no height to checkpoint
    /// while it signs: a checkpoint there was a task and a loop turn per renew for nothing.
    pub checkpoints: bool,
    /// The grid renews are moved back onto (`role::renew::on_grid`), so that a member's holders
    /// renew together: `renew_interval` from the config; `None` renews at exact intervals.
    pub renew_grid: Option<Duration>,
}

impl RolePolicy {
    pub fn from_config(config: &Config) -> RolePolicy {
        let c = &config.coordinator;
        RolePolicy {
            lease_ttl: c.lease_ttl,
            renew_interval: c.renew_interval,
            safety_margin: c.safety_margin,
            holder_validity: config.holder_horizon(),
            priority_delay: config.failover.priority_delay,
            cooldown: config.failover.cooldown,
            max_lag_on_failover: config.failover.max_lag_on_failover,
            // A status is as fresh as the probe it reports, and never fresher than a lease.
            status_stale_after: config.chain_or_default().stale_after().max(c.lease_ttl),
            fence_takeover_after: config.failover.fence_takeover_after,
            checkpoints: !config.signer_mode(),
            renew_grid: Some(c.renew_interval),
        }
    }

    /// What makes a standby fit to take over, for the control API and views too.
    pub fn takeover_limits(&self) -> TakeoverLimits {
        TakeoverLimits { status_stale_after: self.status_stale_after, max_lag_on_failover: self.max_lag_on_failover }
    }

    /// A renew is due once this little validity remains: one renew interval after the last
    /// committed renew was sent. Counted from the holder's validity, not the TTL: in signer mode
    /// the validity outlasts the store's short TTL, and renews must still leave every interval.
    pub(crate) fn renew_when_remaining(&self) -> Duration {
        self.holder_validity.saturating_sub(self.renew_interval)
    }

    /// When the next renew is due for a lease valid until `deadline`: once
    /// [`Self::renew_when_remaining`] is left, moved back onto [`Self::renew_grid`].
    pub(crate) fn renew_due(&self, deadline: MonoTime) -> MonoTime {
        renew::on_grid(deadline.saturating_sub(self.renew_when_remaining()), self.renew_grid)
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
    /// A renew was refused or its outcome is unknown (it may still commit: the lease's own
    /// deadline, not this, decides when the holder must stop).
    RenewFailed {
        epoch: Epoch,
        error: String,
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

/// How the lease this member takes came to it: the guard drops its floor margin only for a
/// planned handover, and the failover metrics count each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// `failoverctl promote` (or `demote` on the active): the holder handed over.
    Planned,
    /// `failoverctl promote --force`: taken once the holder released or its lease expired.
    Forced,
    /// A takeover without an operator's transfer (the holder died, stepped down, released).
    Unplanned,
}

/// Why an active member stops producing on purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StepDown {
    /// Its node is unhealthy (`node` says how) and an eligible standby exists.
    Unhealthy { node: String },
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
            StepDown::Unhealthy { node } => write!(f, "its node is unhealthy ({node}) and an eligible standby exists"),
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
    /// A fenced takeover of the lease `holder` holds at `epoch`: the daemon checks the holding
    /// is unchanged, runs `fence_command` against `holder`, and only once that succeeded asks the
    /// store to take that exact holding over. Reports like an acquire.
    TakeOver {
        holder: MemberId,
        epoch: Epoch,
    },
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

impl Action {
    /// What this action reports when it fails with `error`: the outcome `decide` hears for it,
    /// or `None` for the actions that report nothing (a checkpoint, a release).
    pub fn failure(&self, error: String) -> Option<Outcome> {
        Some(match self {
            Action::Acquire | Action::TakeOver { .. } => Outcome::AcquireFailed { error },
            Action::Renew { epoch } => Outcome::RenewFailed { epoch: *epoch, error },
            Action::RunGuard { epoch } => Outcome::GuardFailed { epoch: *epoch, step: "guard".into(), error },
            Action::Deactivate { epoch, .. } => Outcome::DeactivateFailed { epoch: *epoch, error },
            Action::Fence { .. } => Outcome::FenceFailed { error },
            Action::Checkpoint { .. } | Action::Release { .. } => return None,
        })
    }
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
    /// The last holder other than this member the store showed, with its epoch: the cause of a
    /// takeover names it.
    pub last_holder: Option<(MemberId, Epoch)>,
    /// Why this member took (or is taking) the lease it holds; kept for the role-change lines.
    pub takeover: Option<Takeover>,
    /// The epoch of the last holding this member left.
    pub last_dropped: Option<Epoch>,
    /// Promotion-guard failures in a row (reset when a guard passes): the backoff grows with it.
    pub guard_failures: u32,
    /// The renews in flight and when the last one left. Kept across holdings, as renews of an
    /// old epoch still come back.
    pub renew: RenewPacing,
    /// When a fence was last asked for, or last reported failing, whichever came later: an
    /// unconfirmed fence is asked again [`RETRY_PAUSE`] after it, not at the turn its failure
    /// brings (an ask while one is still running is dropped by the daemon, so the failure
    /// restarts the pause).
    pub fence_asked_at: Option<MonoTime>,
    /// The epoch and time of the last release asked for of a lease the store shows this idle
    /// member holding; a release of another epoch is not held back by it.
    pub release_asked: Option<(Epoch, MonoTime)>,
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
            last_holder: None,
            takeover: None,
            last_dropped: None,
            guard_failures: 0,
            fence_asked_at: None,
            release_asked: None,
            renew: RenewPacing::default(),
        }
    }

    /// The last member other than this one that held the lease: the one the promotion guard's
    /// `fence_command` fences.
    pub fn previous_holder(&self) -> Option<&MemberId> {
        self.last_holder.as_ref().map(|(m, _)| m)
    }

    /// Whether the lease this member holds or is taking came by an operator's transfer to it,
    /// planned (the holder handed over) or forced, or without one.
    pub fn provenance(&self) -> Provenance {
        match &self.takeover {
            Some(Takeover::Transfer { forced: false, .. }) => Provenance::Planned,
            Some(Takeover::Transfer { forced: true, .. }) => Provenance::Forced,
            _ => Provenance::Unplanned,
        }
    }

    /// Whether the previous holder was fenced before this member's grant (a fenced takeover):
    /// the promotion guard need not run `fence_command` again.
    pub fn fenced_previous(&self) -> bool {
        matches!(self.takeover, Some(Takeover::HolderFenced { .. }))
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
            self.last_dropped = Some(e);
        }
        self.deadline = None;
        self.activated_at = None;
        self.takeover = None;
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
        self.fence_asked_at = Some(now);
        actions.push(Action::Fence { why });
    }
}

/// What one call of [`decide`] concluded: the next state, the actions to carry out, and why —
/// also when there is nothing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub state: RoleState,
    pub actions: Vec<Action>,
    pub why: Why,
}

/// The next state, the actions to carry out and the reason. See the module doc for the rules.
pub fn decide(state: &RoleState, obs: &Observation, policy: &RolePolicy) -> Decision {
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

    let why = match s.role {
        RoleName::Promoting | RoleName::Active | RoleName::Demoting => {
            decide_holding(&mut s, obs, policy, &mut actions)
        }
        RoleName::Fenced => {
            let why = match &s.last_reason {
                Some(Reason::Fence(why)) => why.clone(),
                _ => FenceReason::LeaseDeadline,
            };
            if !actions.iter().any(|a| matches!(a, Action::Fence { .. })) && paused_since(s.fence_asked_at, now) {
                // Not confirmed yet: ask again until the producer confirms, RETRY_PAUSE after the
                // last ask or the last failure.
                s.fence_asked_at = Some(now);
                actions.push(Action::Fence { why: why.clone() });
            }
            Why::Fenced { why }
        }
        RoleName::Witness | RoleName::Ineligible | RoleName::Standby => decide_idle(&mut s, obs, policy, &mut actions),
    };

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
        if let LeaseView::Held { holder, epoch } = &view.lease
            && holder != &obs.me
        {
            s.last_holder = Some((holder.clone(), *epoch));
        }
    }
    Decision { state: s, actions, why }
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
                let allowed = std::mem::take(&mut s.acquire_for_transfer) || may_use_grant(s, obs, policy);
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
                // A failed fenced takeover is not tried again at once: each try runs the fence
                // command, and the holder may simply be alive (it renewed).
                let pause = match (&s.takeover, policy.fence_takeover_after) {
                    (Some(Takeover::HolderFenced { .. }), Some(after)) => after.max(ACQUIRE_RETRY_PAUSE),
                    _ => ACQUIRE_RETRY_PAUSE,
                };
                s.acquire_retry_at = Some(now.saturating_add(pause));
            }
            Outcome::RenewFailed { .. } => s.renew.finished(),
            Outcome::Renewed { epoch, valid_until } => {
                s.renew.finished();
                if s.holding() && s.epoch == Some(*epoch) {
                    s.deadline = s.deadline.max(Some(*valid_until));
                }
            }
            Outcome::GuardPassed { epoch } => {
                if s.role == RoleName::Promoting && s.epoch == Some(*epoch) {
                    s.enter(RoleName::Active, now);
                    s.activated_at = Some(now);
                    s.guard_failures = 0;
                }
            }
            Outcome::GuardFailed { epoch, step, .. } => {
                if s.role == RoleName::Promoting && s.epoch == Some(*epoch) {
                    s.guard_failures = s.guard_failures.saturating_add(1);
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
            Outcome::FenceFailed { .. } => {
                if s.role == RoleName::Fenced {
                    s.fence_asked_at = Some(now);
                }
            }
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

/// Whether [`RETRY_PAUSE`] has passed since `asked` (or nothing was asked yet).
fn paused_since(asked: Option<MonoTime>, now: MonoTime) -> bool {
    asked.is_none_or(|at| now.saturating_since(at) >= RETRY_PAUSE)
}

fn decide_holding(s: &mut RoleState, obs: &Observation, policy: &RolePolicy, actions: &mut Vec<Action>) -> Why {
    let (Some(epoch), Some(deadline)) = (s.epoch, s.deadline) else {
        return Why::Fenced { why: FenceReason::LeaseDeadline };
    };
    let now = obs.now;
    let mut why = match s.role {
        RoleName::Promoting => Why::Promoting { epoch, takeover: s.takeover.clone() },
        _ => demoting_why(s, epoch),
    };
    if s.role == RoleName::Active {
        why = decide_active(s, obs, policy, epoch, actions);
    }
    // The checkpoint rides with the renew, once per renew: asked at every turn while a renew is
    // due, a checkpoint that finishes at once (nothing new signed) woke the loop for the next
    // one, and the loop spun for as long as the renew was in flight (in signer mode, renewing
    // several times a second, hundreds to thousands of turns a second).
    if now >= policy.renew_due(deadline) && s.renew.may_send(now, policy.renew_interval, policy.renew_grid) {
        s.renew.sent(now);
        actions.push(Action::Renew { epoch });
        if s.role == RoleName::Active && policy.checkpoints {
            actions.push(Action::Checkpoint { epoch });
        }
    }
    why
}

fn demoting_why(s: &RoleState, epoch: Epoch) -> Why {
    match &s.last_reason {
        Some(Reason::StepDown(why)) => Why::Demoting { epoch, why: why.clone() },
        Some(Reason::Fence(why)) => Why::Fenced { why: why.clone() },
        None => Why::Demoting { epoch, why: StepDown::GuardFailed { step: String::from("unknown") } },
    }
}

/// An active member hands over on a transfer, steps down when its node is unhealthy unless
/// something holds it, and otherwise keeps producing.
fn decide_active(
    s: &mut RoleState,
    obs: &Observation,
    policy: &RolePolicy,
    epoch: Epoch,
    actions: &mut Vec<Action>,
) -> Why {
    let now = obs.now;
    let intents = obs.store.as_ref().map(|v| &v.intents);
    if let Some(to) = transfer_away(intents, &obs.me, epoch)
        && eligible_standby(obs, policy).any(|r| &r.status.member == to)
    {
        start_step_down(s, StepDown::Transfer { to: to.clone() }, now, actions);
        return demoting_why(s, epoch);
    }
    if obs.health.verdict != Verdict::Unhealthy {
        let valid_for = s.deadline.map_or(Duration::ZERO, |d| d.saturating_since(now));
        return Why::Active { epoch, valid_for_ms: millis(valid_for), next: successor(obs, policy, false, None) };
    }
    let node = NotFit::Unhealthy { detail: health_detail(&obs.health) };
    let active_for = s.activated_at.map_or(Duration::ZERO, |at| now.saturating_since(at));
    let held = if intents.is_some_and(|i| i.paused) {
        Held::Paused
    } else if active_for < policy.cooldown {
        Held::Cooldown { remaining_ms: millis(policy.cooldown.saturating_sub(active_for)) }
    } else if eligible_standby(obs, policy).next().is_none() {
        Held::NoStandby { unfit: unfit_peers(obs, policy) }
    } else {
        start_step_down(s, StepDown::Unhealthy { node: health_detail(&obs.health) }, now, actions);
        return demoting_why(s, epoch);
    };
    Why::ActiveUnhealthy { epoch, node, held }
}

fn transfer_away<'a>(intents: Option<&'a Intents>, me: &MemberId, epoch: Epoch) -> Option<&'a MemberId> {
    intents?.transfer.as_ref().filter(|t| t.epoch == epoch && &t.to != me).map(|t| &t.to)
}

fn decide_idle(s: &mut RoleState, obs: &Observation, policy: &RolePolicy, actions: &mut Vec<Action>) -> Why {
    let now = obs.now;
    if obs.kind == MemberKind::Witness {
        s.enter(RoleName::Witness, now);
        return Why::Witness;
    }
    let fit = self_fitness(obs, policy);
    s.enter(if fit.is_ok() { RoleName::Standby } else { RoleName::Ineligible }, now);

    let Some(view) = &obs.store else { return Why::StoreUnknown };
    match &view.lease {
        LeaseView::Held { holder, epoch } if holder == &obs.me => {
            // The store says we hold a lease this process never acquired (or already gave up):
            // never produce on it; give it back so others need not wait for expiry. An earlier
            // run's producer may still sign on it, so the release stops the producer first.
            if s.acquire_pending {
                return Why::Acquiring {
                    takeover: s.takeover.clone().unwrap_or(Takeover::FreeLease { epoch: *epoch }),
                };
            }
            let asked = s.release_asked.filter(|(e, _)| e == epoch).map(|(_, at)| at);
            if paused_since(asked, now) {
                s.release_asked = Some((*epoch, now));
                actions.push(Action::Release { epoch: *epoch });
            }
            Why::Releasing { epoch: *epoch, just_used: s.last_dropped == Some(*epoch) }
        }
        LeaseView::Held { holder, epoch } => match fit {
            Err(cause) => Why::NotEligible { cause },
            Ok(()) => fenced_takeover(s, obs, policy, holder, *epoch, actions).unwrap_or_else(|| Why::LeaseHeld {
                holder: holder.clone(),
                epoch: *epoch,
                holder_heard: heard(obs, holder, policy),
                next: successor(obs, policy, true, Some(holder)),
            }),
        },
        LeaseView::Free { epoch } => {
            if let Err(cause) = fit {
                return Why::NotEligible { cause };
            }
            if let Some(at) = s.acquire_retry_at.filter(|at| now < *at) {
                return Why::AcquireRetry { remaining_ms: millis(at.saturating_since(now)) };
            }
            if let Some(why) = lease_blocker(s, obs, policy).or_else(|| better_candidate_wait(s, obs, policy)) {
                return why;
            }
            // While an acquire is in flight, its cause stays the one it was sent with: the grant
            // clears the transfer it answers, and a store can show that before the grant itself.
            let takeover = match (&s.takeover, s.acquire_pending) {
                (Some(sent_with), true) => sent_with.clone(),
                _ => takeover_cause(s, obs, policy, view, *epoch),
            };
            s.acquire_pending = true;
            s.acquire_for_transfer = view.intents.transfer.as_ref().is_some_and(|t| t.to == obs.me);
            s.takeover = Some(takeover.clone());
            actions.push(Action::Acquire);
            Why::Acquiring { takeover }
        }
    }
}

/// A fenced takeover (docs/design.md §5), for a fit standby while `holder` holds the lease at
/// `epoch`: with `fence_takeover_after` configured and the holder's status unheard for that long
/// (a holder never heard proves nothing), this member asks for [`Action::TakeOver`] — unless the
/// rules of a free lease hold it back (intents, guard backoff, a recent step-down, the pause after
/// a failed try) or a fit standby of higher priority exists, which takes over instead. `None`:
/// nothing to do beyond waiting for the lease.
fn fenced_takeover(
    s: &mut RoleState,
    obs: &Observation,
    policy: &RolePolicy,
    holder: &MemberId,
    epoch: Epoch,
    actions: &mut Vec<Action>,
) -> Option<Why> {
    let after = policy.fence_takeover_after?;
    let silent_for = obs.cluster.iter().find(|r| &r.status.member == holder)?.age;
    if silent_for < after {
        return None;
    }
    if s.acquire_pending {
        return s.takeover.clone().map(|takeover| Why::Acquiring { takeover });
    }
    if s.acquire_retry_at.is_some_and(|at| obs.now < at) || lease_blocker(s, obs, policy).is_some() {
        return None;
    }
    if eligible_standby(obs, policy).any(|r| r.status.priority > obs.priority) {
        return None;
    }
    let takeover = Takeover::HolderFenced { holder: holder.clone(), epoch, last_heard_ms: millis(silent_for) };
    s.acquire_pending = true;
    s.acquire_for_transfer = false;
    s.takeover = Some(takeover.clone());
    actions.push(Action::TakeOver { holder: holder.clone(), epoch });
    Some(Why::Acquiring { takeover })
}

/// Why intents, a failed guard or cooldown keep this member from taking a free lease now;
/// `None` when they allow it. A transfer naming it always allows it. Otherwise:
/// - the cluster must not be paused;
/// - after its own promotion guard failed, a member backs off (`priority_delay`, doubling with
///   each failure in a row, at most `cooldown`), so a guard that keeps failing does not take,
///   fail and give back the lease every turn (each round a new epoch and a `fence_command`);
/// - a member that stood down less than `cooldown` ago leaves a free lease to another eligible
///   standby for at most twice `priority_delay` — never to nobody, and not longer, so two members that
///   both stood down recently do not leave it free for a whole cooldown: a cooldown never keeps
///   a free lease from a healthy, caught-up standby (L1).
fn lease_blocker(s: &RoleState, obs: &Observation, policy: &RolePolicy) -> Option<Why> {
    grant_blocker(s, obs, policy).or_else(|| step_down_deferral(s, obs, policy))
}

/// The rules of [`lease_blocker`] a grant is checked against again when it arrives: intents
/// and the guard backoff. The deferral after a stand-down is not among them: it is a courtesy
/// decided when the acquire is sent, and the view of how long the lease was free is reset by the
/// grant itself, so checking it again would refuse a grant the member rightly asked for.
fn grant_blocker(s: &RoleState, obs: &Observation, policy: &RolePolicy) -> Option<Why> {
    let Some(view) = &obs.store else { return Some(Why::StoreUnknown) };
    if view.intents.transfer.as_ref().is_some_and(|t| t.to == obs.me) {
        return None;
    }
    if view.intents.paused {
        return Some(Why::Paused);
    }
    let stood_down_for = s.stood_down_at.map(|at| obs.now.saturating_since(at))?;
    let backoff = guard_backoff(policy, s.guard_failures);
    if stood_down_for < backoff {
        return Some(Why::GuardBackoff {
            failures: s.guard_failures,
            remaining_ms: millis(backoff.saturating_sub(stood_down_for)),
        });
    }
    None
}

/// A member that stood down recently leaves a free lease to another eligible standby, for at
/// most twice `priority_delay` (see [`lease_blocker`]): a lower-priority standby still sees this
/// member as a fresh, eligible standby of higher priority and waits `priority_delay` for it, so
/// a deferral of only `priority_delay` would end at the same moment and the member that just
/// stood down (with a dead keeper, a stalled node) would take the lease straight back.
fn step_down_deferral(s: &RoleState, obs: &Observation, policy: &RolePolicy) -> Option<Why> {
    if obs.store.as_ref().is_some_and(|v| v.intents.transfer.as_ref().is_some_and(|t| t.to == obs.me)) {
        return None;
    }
    let stood_down_for = s.stood_down_at.map(|at| obs.now.saturating_since(at))?;
    let free_for = s.free_since.map_or(Duration::ZERO, |since| obs.now.saturating_since(since));
    let window = policy.priority_delay.saturating_mul(2);
    if stood_down_for >= policy.cooldown || free_for >= window {
        return None;
    }
    let other = eligible_standby(obs, policy).max_by_key(|r| (r.status.priority, r.status.height))?;
    Some(Why::DeferringAfterStepDown {
        to: other.status.member.clone(),
        remaining_ms: millis(policy.cooldown.saturating_sub(stood_down_for).min(window.saturating_sub(free_for))),
    })
}

/// How long a member waits after its `failures`-th promotion-guard failure in a row.
fn guard_backoff(policy: &RolePolicy, failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => policy.priority_delay.saturating_mul(1 << (n - 1).min(16)).min(policy.cooldown),
    }
}

/// Whether a grant that arrives may be used: see [`grant_blocker`].
fn may_use_grant(s: &RoleState, obs: &Observation, policy: &RolePolicy) -> bool {
    grant_blocker(s, obs, policy).is_none()
}

/// Priority delay (docs/design.md §7): wait `priority_delay` after the lease became free when a
/// fresh, eligible standby with a higher priority exists — or when a transfer names another
/// member. `None` when this member may go ahead.
fn better_candidate_wait(s: &RoleState, obs: &Observation, policy: &RolePolicy) -> Option<Why> {
    let transfer = obs.store.as_ref().and_then(|v| v.intents.transfer.as_ref());
    if transfer.is_some_and(|t| t.to == obs.me) {
        return None;
    }
    let waited = s.free_since.map_or(Duration::ZERO, |since| obs.now.saturating_since(since));
    if waited >= policy.priority_delay {
        return None;
    }
    if let Some(t) = transfer {
        return Some(Why::WaitingForTransfer { to: t.to.clone() });
    }
    // Not for the member that held the lease last: it left it (stood down, was fenced, or lost
    // it) and defers to another standby for a while (`step_down_deferral`), so waiting for it
    // would only lengthen the failover — by `priority_delay`, once the stood-down member's
    // status reaches this member before the lease change does.
    let last_holder = s.last_holder.as_ref().map(|(m, _)| m);
    let better = eligible_standby(obs, policy)
        .filter(|r| r.status.priority > obs.priority && Some(&r.status.member) != last_holder)
        .max_by_key(|r| (r.status.priority, r.status.height))?;
    Some(Why::WaitingForPriority {
        ahead: better.status.member.clone(),
        remaining_ms: millis(policy.priority_delay.saturating_sub(waited)),
    })
}

/// Why this member takes the free lease, from what it last saw of the holder.
fn takeover_cause(s: &RoleState, obs: &Observation, policy: &RolePolicy, view: &StoreView, epoch: Epoch) -> Takeover {
    let last_holder = s.last_holder.as_ref().filter(|(m, _)| m != &obs.me);
    if let Some(t) = view.intents.transfer.as_ref().filter(|t| t.to == obs.me) {
        return Takeover::Transfer { from: last_holder.map(|(m, _)| m.clone()), epoch: t.epoch, forced: t.forced };
    }
    let Some((holder, held_epoch)) = last_holder else { return Takeover::FreeLease { epoch } };
    let (holder, epoch) = (holder.clone(), *held_epoch);
    match obs.cluster.iter().find(|r| r.status.member == holder) {
        // Alive and no longer claiming to hold: it stepped down or was fenced.
        Some(r)
            if r.age <= policy.status_stale_after
                && !matches!(r.status.role, RoleName::Active | RoleName::Promoting) =>
        {
            Takeover::HolderGaveUp { holder, epoch, role: r.status.role }
        }
        // Heard within one renew interval and still claiming to hold: a live holder renews far
        // less often than it publishes, so its lease cannot have run out; it was released.
        Some(r) if r.age <= policy.renew_interval => {
            Takeover::HolderReleased { holder, epoch, last_heard_ms: millis(r.age) }
        }
        Some(r) => Takeover::HolderSilent { holder, epoch, last_heard_ms: Some(millis(r.age)) },
        None => Takeover::HolderSilent { holder, epoch, last_heard_ms: None },
    }
}

/// When `holder` last published its status.
fn heard(obs: &Observation, holder: &MemberId, policy: &RolePolicy) -> Heard {
    match obs.cluster.iter().find(|r| &r.status.member == holder) {
        Some(r) if r.age <= policy.status_stale_after => Heard::Recently { age_ms: millis(r.age) },
        Some(r) => Heard::Silent { age_ms: millis(r.age) },
        None => Heard::Never,
    }
}

/// Who would take over if the active stopped now: the eligible standby with the highest
/// priority (then height), this member included when `with_me`, the holder never (its published
/// status may still be the standby it was).
fn successor(obs: &Observation, policy: &RolePolicy, with_me: bool, holder: Option<&MemberId>) -> Successor {
    let mine = (with_me && self_eligible(obs, policy)).then(|| (obs.priority, obs.health.height, obs.me.clone()));
    let best = eligible_standby(obs, policy)
        .filter(|r| Some(&r.status.member) != holder)
        .map(|r| (r.status.priority, r.status.height, r.status.member.clone()))
        .chain(mine)
        .max_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
    match best {
        Some((priority, _, id)) => Successor::Member { id, priority },
        None => Successor::Nobody { unfit: unfit_peers(obs, policy) },
    }
}

/// Each other producer that could not take over now, with the reason.
fn unfit_peers(obs: &Observation, policy: &RolePolicy) -> Vec<PeerUnfit> {
    let best = cluster_best(obs, policy);
    obs.cluster
        .iter()
        .filter(|r| r.status.member != obs.me && r.status.kind == MemberKind::Producer)
        .filter_map(|r| {
            fit_to_take_over(r, best, &policy.takeover_limits())
                .err()
                .map(|why| PeerUnfit { member: r.status.member.clone(), why })
        })
        .collect()
}

/// This member's node is fit to take over: healthy now and close enough to the best height.
fn self_fitness(obs: &Observation, policy: &RolePolicy) -> Result<(), NotFit> {
    let detail = || health_detail(&obs.health);
    match obs.health.verdict {
        Verdict::Unknown => return Err(NotFit::NotProbed),
        Verdict::Unhealthy => return Err(NotFit::Unhealthy { detail: detail() }),
        Verdict::Healthy => {}
    }
    if !obs.health.latest_good {
        return Err(NotFit::LastProbeBad { detail: detail() });
    }
    match obs.health.lag {
        None => Err(NotFit::NoHeight),
        Some(lag) if lag > policy.max_lag_on_failover => Err(NotFit::Behind { lag, max: policy.max_lag_on_failover }),
        Some(_) => Ok(()),
    }
}

fn health_detail(health: &NodeHealth) -> String {
    match &health.last_bad {
        Some(bad) => format!("{bad}; {} bad probes in a row", health.consecutive_bad),
        None => String::from("no bad probe recorded"),
    }
}

fn self_eligible(obs: &Observation, policy: &RolePolicy) -> bool {
    obs.kind == MemberKind::Producer && self_fitness(obs, policy).is_ok()
}

/// The best height among fresh statuses and this member's own node.
fn cluster_best(obs: &Observation, policy: &RolePolicy) -> Option<u64> {
    best_height(&obs.cluster, policy.status_stale_after, [obs.health.height])
}

/// Other members that could take over now, by their fresh published status.
fn eligible_standby<'a>(obs: &'a Observation, policy: &'a RolePolicy) -> impl Iterator<Item = &'a StatusReport> + 'a {
    let best = cluster_best(obs, policy);
    obs.cluster.iter().filter(move |r| {
        r.status.member != obs.me
            && r.status.kind == MemberKind::Producer
            && fit_to_take_over(r, best, &policy.takeover_limits()).is_ok()
    })
}

#[cfg(test)]
mod tests;
