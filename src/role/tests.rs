//! Transition tables and property tests for `decide` (docs/design.md §6–7).

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::coord::{Intents, StatusReport, StoreView, Transfer};
use crate::domain::MemberStatus;
use crate::health::{BadProbe, NodeHealth, Verdict};

fn policy() -> RolePolicy {
    RolePolicy {
        lease_ttl: Duration::from_secs(3),
        renew_interval: Duration::from_secs(1),
        safety_margin: Duration::from_millis(500),
        holder_validity: Duration::from_millis(2500),
        priority_delay: Duration::from_secs(2),
        cooldown: Duration::from_secs(30),
        max_lag_on_failover: 2,
        status_stale_after: Duration::from_secs(4),
        fence_takeover_after: None,
        checkpoints: true,
        renew_grid: None,
    }
}

/// [`policy`] with fenced takeovers after 1.5 s of silence (`failover.fence_takeover_after`).
fn fencing_policy() -> RolePolicy {
    RolePolicy { fence_takeover_after: Some(Duration::from_millis(1500)), ..policy() }
}

fn id(s: &str) -> MemberId {
    MemberId::new(s).expect("test ids are valid")
}

fn ms(n: u64) -> MonoTime {
    MonoTime::from_nanos(n * 1_000_000)
}

fn e(n: u64) -> Epoch {
    Epoch::new(n)
}

fn healthy(height: u64, lag: u64) -> NodeHealth {
    NodeHealth {
        verdict: Verdict::Healthy,
        height: Some(height),
        lag: Some(lag),
        latest_good: true,
        consecutive_bad: 0,
        last_bad: None,
    }
}

fn unhealthy() -> NodeHealth {
    NodeHealth {
        verdict: Verdict::Unhealthy,
        height: Some(100),
        lag: Some(0),
        latest_good: false,
        consecutive_bad: 3,
        last_bad: Some(BadProbe::Failed { error: "connection refused".into() }),
    }
}

fn free(epoch: u64) -> LeaseView {
    LeaseView::Free { epoch: e(epoch) }
}

fn held(holder: &str, epoch: u64) -> LeaseView {
    LeaseView::Held { holder: id(holder), epoch: e(epoch) }
}

fn peer(member: &str, role: RoleName, height: u64, priority: u32, age_ms: u64) -> StatusReport {
    StatusReport {
        status: MemberStatus {
            member: id(member),
            kind: MemberKind::Producer,
            role,
            priority,
            height: Some(height),
            healthy: true,
            epoch: None,
        },
        age: Duration::from_millis(age_ms),
    }
}

/// Member "a" at `now`, healthy at height 100, lease free at epoch 0, nobody else.
fn obs(now_ms: u64) -> Observation {
    Observation {
        now: ms(now_ms),
        me: id("a"),
        kind: MemberKind::Producer,
        priority: 100,
        store: Some(StoreView { lease: free(0), intents: Intents::default(), current: true }),
        health: healthy(100, 0),
        cluster: vec![],
        outcomes: vec![],
    }
}

impl Observation {
    fn lease(mut self, lease: LeaseView) -> Self {
        self.store.as_mut().expect("store view set").lease = lease;
        self
    }
    fn paused(mut self) -> Self {
        self.store.as_mut().expect("store view set").intents.paused = true;
        self
    }
    fn transfer(mut self, to: &str, epoch: u64) -> Self {
        self.store.as_mut().expect("store view set").intents.transfer =
            Some(Transfer { to: id(to), epoch: e(epoch), forced: false });
        self
    }
    fn no_store(mut self) -> Self {
        self.store = None;
        self
    }
    fn health(mut self, h: NodeHealth) -> Self {
        self.health = h;
        self
    }
    fn peer(mut self, r: StatusReport) -> Self {
        self.cluster.push(r);
        self
    }
    fn outcome(mut self, o: Outcome) -> Self {
        self.outcomes.push(o);
        self
    }
    fn witness(mut self) -> Self {
        self.kind = MemberKind::Witness;
        self
    }
}

fn standby() -> RoleState {
    RoleState { role: RoleName::Standby, ..RoleState::new(MemberKind::Producer, ms(0)) }
}

fn holding(role: RoleName, epoch: u64, deadline_ms: u64) -> RoleState {
    RoleState {
        role,
        epoch: Some(e(epoch)),
        deadline: Some(ms(deadline_ms)),
        seen_epoch: e(epoch - 1),
        activated_at: (role == RoleName::Active).then_some(ms(0)),
        ..RoleState::new(MemberKind::Producer, ms(0))
    }
}

fn active(epoch: u64, deadline_ms: u64) -> RoleState {
    holding(RoleName::Active, epoch, deadline_ms)
}

struct Case {
    name: &'static str,
    state: RoleState,
    obs: Observation,
    role: RoleName,
    actions: Vec<Action>,
}

fn run(cases: Vec<Case>) {
    for c in cases {
        let Decision { state: next, actions, .. } = decide(&c.state, &c.obs, &policy());
        assert_eq!(next.role, c.role, "{}: role", c.name);
        assert_eq!(actions, c.actions, "{}: actions", c.name);
    }
}

// Roles of members that hold no lease (docs/design.md §7).
#[test]
fn idle_member_transitions() {
    use RoleName::*;
    let b_higher = |age| peer("b", Standby, 100, 200, age);
    run(vec![
        Case {
            name: "healthy producer takes a free lease",
            state: standby(),
            obs: obs(1000),
            role: Standby,
            actions: vec![Action::Acquire],
        },
        Case {
            name: "fresh member becomes standby and acquires",
            state: RoleState::new(MemberKind::Producer, ms(0)),
            obs: obs(1000),
            role: Standby,
            actions: vec![Action::Acquire],
        },
        Case {
            name: "unhealthy node is ineligible",
            state: standby(),
            obs: obs(1000).health(unhealthy()),
            role: Ineligible,
            actions: vec![],
        },
        Case {
            name: "unknown health is ineligible",
            state: standby(),
            obs: obs(1000).health(NodeHealth::UNKNOWN),
            role: Ineligible,
            actions: vec![],
        },
        Case {
            name: "lag above max_lag_on_failover is ineligible",
            state: standby(),
            obs: obs(1000).health(healthy(97, 3)),
            role: Ineligible,
            actions: vec![],
        },
        Case {
            name: "lag at max_lag_on_failover is eligible",
            state: standby(),
            obs: obs(1000).health(healthy(98, 2)),
            role: Standby,
            actions: vec![Action::Acquire],
        },
        Case {
            name: "witness never acquires",
            state: RoleState::new(MemberKind::Witness, ms(0)),
            obs: obs(1000).witness(),
            role: Witness,
            actions: vec![],
        },
        Case {
            name: "paused cluster does not promote",
            state: standby(),
            obs: obs(1000).paused(),
            role: Standby,
            actions: vec![],
        },
        Case {
            name: "lease held by another: wait",
            state: standby(),
            obs: obs(1000).lease(held("b", 3)),
            role: Standby,
            actions: vec![],
        },
        Case {
            name: "store unreachable: unknown is never free",
            state: standby(),
            obs: obs(1000).no_store(),
            role: Standby,
            actions: vec![],
        },
        Case {
            name: "higher-priority eligible standby: wait priority_delay",
            state: RoleState { free_since: Some(ms(0)), ..standby() },
            obs: obs(1999).peer(b_higher(100)),
            role: Standby,
            actions: vec![],
        },
        Case {
            name: "higher-priority standby did not take it within priority_delay: acquire",
            state: RoleState { free_since: Some(ms(0)), ..standby() },
            obs: obs(2000).peer(b_higher(100)),
            role: Standby,
            actions: vec![Action::Acquire],
        },
        Case {
            name: "stale higher-priority status is ignored",
            state: standby(),
            obs: obs(1000).peer(b_higher(4001)),
            role: Standby,
            actions: vec![Action::Acquire],
        },
        Case {
            name: "lower-priority standby does not delay us",
            state: standby(),
            obs: obs(1000).peer(peer("b", Standby, 100, 50, 100)),
            role: Standby,
            actions: vec![Action::Acquire],
        },
        Case {
            name: "cooldown after our own step-down leaves the lease to another eligible standby",
            state: RoleState { stood_down_at: Some(ms(1000)), ..standby() },
            obs: obs(30_999).peer(peer("b", Standby, 100, 50, 100)),
            role: Standby,
            actions: vec![],
        },
        Case {
            name: "cooldown never keeps a free lease from the only eligible standby",
            state: RoleState { stood_down_at: Some(ms(1000)), ..standby() },
            obs: obs(30_999),
            role: Standby,
            actions: vec![Action::Acquire],
        },
        Case {
            name: "cooldown over",
            state: RoleState { stood_down_at: Some(ms(1000)), ..standby() },
            obs: obs(31_000),
            role: Standby,
            actions: vec![Action::Acquire],
        },
        Case {
            name: "a failed acquire is not asked again at once",
            state: standby(),
            obs: obs(1000).outcome(Outcome::AcquireFailed { error: "lock-delay".into() }),
            role: Standby,
            actions: vec![],
        },
        Case {
            name: "still within the retry pause after a failed acquire",
            state: RoleState { acquire_retry_at: Some(ms(1000).saturating_add(ACQUIRE_RETRY_PAUSE)), ..standby() },
            obs: obs(1099),
            role: Standby,
            actions: vec![],
        },
        Case {
            name: "retry pause over: acquire again",
            state: RoleState { acquire_retry_at: Some(ms(1100)), ..standby() },
            obs: obs(1100),
            role: Standby,
            actions: vec![Action::Acquire],
        },
        Case {
            name: "transfer target acquires at once, even paused and in cooldown",
            state: RoleState { stood_down_at: Some(ms(1000)), ..standby() },
            obs: obs(2000).lease(free(4)).paused().transfer("a", 4).peer(b_higher(100)),
            role: Standby,
            actions: vec![Action::Acquire],
        },
        Case {
            name: "transfer to another member: give it priority_delay",
            state: RoleState { free_since: Some(ms(1000)), ..standby() },
            obs: obs(2000).lease(free(4)).transfer("b", 4),
            role: Standby,
            actions: vec![],
        },
        Case {
            name: "store says we hold a lease this process never acquired: release it",
            state: RoleState::new(MemberKind::Producer, ms(0)),
            obs: obs(1000).lease(held("a", 7)),
            role: Standby,
            actions: vec![Action::Release { epoch: e(7) }],
        },
        Case {
            name: "our own pending grant shown early is not released",
            state: RoleState { acquire_pending: true, ..standby() },
            obs: obs(1000).lease(held("a", 1)),
            role: Standby,
            actions: vec![],
        },
    ]);
}

// Acquire outcomes, the guard and activation (docs/design.md §6).
#[test]
fn promotion_transitions() {
    use RoleName::*;
    let acquired = |epoch, until| Outcome::Acquired { epoch: e(epoch), valid_until: ms(until) };
    run(vec![
        Case {
            name: "acquired at a newer epoch: run the guard",
            state: RoleState { acquire_pending: true, seen_epoch: e(4), ..standby() },
            obs: obs(1000).lease(held("a", 5)).outcome(acquired(5, 3500)),
            role: Promoting,
            actions: vec![Action::RunGuard { epoch: e(5) }],
        },
        Case {
            name: "acquired at an epoch not above one seen before: never activate, release",
            state: RoleState { acquire_pending: true, seen_epoch: e(5), ..standby() },
            obs: obs(1000).lease(held("a", 5)).outcome(acquired(5, 3500)),
            role: Standby,
            actions: vec![Action::Release { epoch: e(5) }],
        },
        Case {
            name: "acquired for a transfer while paused: promote, though the grant cleared the transfer",
            state: RoleState { acquire_pending: true, acquire_for_transfer: true, seen_epoch: e(4), ..standby() },
            obs: obs(1000).lease(held("a", 5)).paused().outcome(acquired(5, 3500)),
            role: Promoting,
            actions: vec![Action::RunGuard { epoch: e(5) }],
        },
        Case {
            name: "acquired after the cluster was paused: release instead of promoting",
            state: RoleState { acquire_pending: true, seen_epoch: e(4), ..standby() },
            obs: obs(1000).lease(held("a", 5)).paused().outcome(acquired(5, 3500)),
            role: Standby,
            actions: vec![Action::Release { epoch: e(5) }],
        },
        Case {
            name: "acquired but the node became unhealthy meanwhile: release",
            state: RoleState { acquire_pending: true, seen_epoch: e(4), ..standby() },
            obs: obs(1000).lease(held("a", 5)).health(unhealthy()).outcome(acquired(5, 3500)),
            role: Ineligible,
            actions: vec![Action::Release { epoch: e(5) }],
        },
        Case {
            name: "acquired with a validity already over: fence, never run the guard",
            state: RoleState { acquire_pending: true, seen_epoch: e(4), ..standby() },
            obs: obs(4000).lease(held("a", 5)).outcome(acquired(5, 3500)),
            role: Fenced,
            actions: vec![Action::Fence { why: FenceReason::LeaseDeadline }],
        },
        Case {
            name: "guard passed: active",
            state: holding(Promoting, 5, 3500),
            obs: obs(1000).lease(held("a", 5)).outcome(Outcome::GuardPassed { epoch: e(5) }),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "guard passed for another epoch is ignored",
            state: holding(Promoting, 5, 3500),
            obs: obs(1000).lease(held("a", 5)).outcome(Outcome::GuardPassed { epoch: e(4) }),
            role: Promoting,
            actions: vec![],
        },
        Case {
            name: "guard failed: deactivate",
            state: holding(Promoting, 5, 3500),
            obs: obs(1000).lease(held("a", 5)).outcome(Outcome::GuardFailed {
                epoch: e(5),
                step: "node_healthy".into(),
                error: "lag 9".into(),
            }),
            role: Demoting,
            actions: vec![Action::Deactivate {
                epoch: e(5),
                why: StepDown::GuardFailed { step: "node_healthy".into() },
            }],
        },
        Case {
            name: "promoting with the store view still older than the grant keeps going",
            state: holding(Promoting, 5, 3500),
            obs: obs(1000).lease(free(4)),
            role: Promoting,
            actions: vec![],
        },
    ]);
}

// The holder's lease: renew, fence on deadline or loss (docs/design.md §4–6).
#[test]
fn holder_transitions() {
    use RoleName::*;
    let fence = |why| vec![Action::Fence { why }];
    run(vec![
        Case {
            name: "renew not yet due",
            state: active(5, 3500),
            obs: obs(1999).lease(held("a", 5)),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "renew due one interval after the last one was sent",
            state: active(5, 3500),
            obs: obs(2000).lease(held("a", 5)),
            role: Active,
            actions: vec![Action::Renew { epoch: e(5) }, Action::Checkpoint { epoch: e(5) }],
        },
        Case {
            name: "deadline reached: fence",
            state: active(5, 3500),
            obs: obs(3500).lease(held("a", 5)),
            role: Fenced,
            actions: fence(FenceReason::LeaseDeadline),
        },
        Case {
            name: "deadline reached while the store is unreachable: fence",
            state: active(5, 3500),
            obs: obs(3600).no_store(),
            role: Fenced,
            actions: fence(FenceReason::LeaseDeadline),
        },
        Case {
            name: "a renew arriving after the deadline does not save the lease",
            state: active(5, 3500),
            obs: obs(3600).lease(held("a", 5)).outcome(Outcome::Renewed { epoch: e(5), valid_until: ms(6000) }),
            role: Fenced,
            actions: fence(FenceReason::LeaseDeadline),
        },
        Case {
            name: "a renew before the deadline extends it",
            state: active(5, 3500),
            obs: obs(3400).lease(held("a", 5)).outcome(Outcome::Renewed { epoch: e(5), valid_until: ms(5900) }),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "store shows another holder: fence",
            state: active(5, 9000),
            obs: obs(1000).lease(held("b", 6)),
            role: Fenced,
            actions: fence(FenceReason::LeaseLost),
        },
        Case {
            name: "store shows our lease expired: fence",
            state: active(5, 9000),
            obs: obs(1000).lease(free(5)),
            role: Fenced,
            actions: fence(FenceReason::LeaseLost),
        },
        Case {
            name: "store view older than our grant: keep producing",
            state: active(5, 2600),
            obs: obs(1000).lease(held("b", 4)),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "a second grant while holding one: fence",
            state: active(5, 2500),
            obs: obs(1000).lease(held("a", 5)).outcome(Outcome::Acquired { epoch: e(6), valid_until: ms(3000) }),
            role: Fenced,
            actions: fence(FenceReason::Inconsistent),
        },
        Case {
            name: "fence not confirmed: ask again",
            state: RoleState { last_reason: Some(Reason::Fence(FenceReason::LeaseLost)), ..holding(Fenced, 5, 3500) },
            obs: obs(5000).lease(free(5)),
            role: Fenced,
            actions: fence(FenceReason::LeaseLost),
        },
        Case {
            name: "fence not confirmed, asked 100 ms ago: not asked again yet",
            state: RoleState {
                last_reason: Some(Reason::Fence(FenceReason::LeaseLost)),
                fence_asked_at: Some(ms(4900)),
                ..holding(Fenced, 5, 3500)
            },
            obs: obs(5000).lease(free(5)),
            role: Fenced,
            actions: vec![],
        },
        Case {
            name: "fence not confirmed, asked a retry pause ago: ask again",
            state: RoleState {
                last_reason: Some(Reason::Fence(FenceReason::LeaseLost)),
                fence_asked_at: Some(ms(4750)),
                ..holding(Fenced, 5, 3500)
            },
            obs: obs(5000).lease(free(5)),
            role: Fenced,
            actions: fence(FenceReason::LeaseLost),
        },
        Case {
            name: "the store still shows a lease released 100 ms ago: not asked again yet",
            state: RoleState { release_asked: Some((e(5), ms(4900))), ..RoleState::new(MemberKind::Producer, ms(0)) },
            obs: obs(5000).lease(held("a", 5)),
            role: Standby,
            actions: vec![],
        },
        Case {
            name: "the store still shows a lease released a retry pause ago: release again",
            state: RoleState { release_asked: Some((e(5), ms(4750))), ..RoleState::new(MemberKind::Producer, ms(0)) },
            obs: obs(5000).lease(held("a", 5)),
            role: Standby,
            actions: vec![Action::Release { epoch: e(5) }],
        },
        Case {
            name: "a fence that just failed, asked 500 ms ago: not asked again yet",
            state: RoleState {
                last_reason: Some(Reason::Fence(FenceReason::LeaseLost)),
                fence_asked_at: Some(ms(4500)),
                ..holding(Fenced, 5, 3500)
            },
            obs: obs(5000).lease(free(5)).outcome(Outcome::FenceFailed { error: "kill failed".into() }),
            role: Fenced,
            actions: vec![],
        },
        Case {
            name: "a lease of another epoch released 100 ms ago: release this one at once",
            state: RoleState { release_asked: Some((e(4), ms(4900))), ..RoleState::new(MemberKind::Producer, ms(0)) },
            obs: obs(5000).lease(held("a", 5)),
            role: Standby,
            actions: vec![Action::Release { epoch: e(5) }],
        },
        Case {
            name: "an active that asked a fence 100 ms ago in an earlier holding fences at once",
            state: RoleState { fence_asked_at: Some(ms(4900)), ..active(5, 6000) },
            obs: obs(5000).lease(free(5)),
            role: Fenced,
            actions: fence(FenceReason::LeaseLost),
        },
        Case {
            name: "fence confirmed: back to standby, release what the store still gives us",
            state: holding(Fenced, 5, 3500),
            obs: obs(5000).lease(held("a", 5)).outcome(Outcome::Fenced),
            role: Standby,
            actions: vec![Action::Release { epoch: e(5) }],
        },
        Case {
            name: "deactivate failed: fence",
            state: holding(Demoting, 5, 3500),
            obs: obs(1000)
                .lease(held("a", 5))
                .outcome(Outcome::DeactivateFailed { epoch: e(5), error: "timeout".into() }),
            role: Fenced,
            actions: fence(FenceReason::DeactivateFailed),
        },
        Case {
            name: "deactivated: release and stand by",
            state: holding(Demoting, 5, 3500),
            obs: obs(1000).lease(held("a", 5)).outcome(Outcome::Deactivated { epoch: e(5) }),
            role: Standby,
            actions: vec![Action::Release { epoch: e(5) }],
        },
        Case {
            name: "demoting keeps renewing so a slow deactivate does not hit the deadline",
            state: holding(Demoting, 5, 3500),
            obs: obs(2100).lease(held("a", 5)),
            role: Demoting,
            actions: vec![Action::Renew { epoch: e(5) }],
        },
    ]);
}

// Step-down: health, transfer, cooldown and pause (docs/design.md §7, L2).
#[test]
fn step_down_transitions() {
    use RoleName::*;
    let b = |height| peer("b", Standby, height, 100, 100);
    let active_long = || RoleState { activated_at: Some(ms(0)), ..active(5, 42_000) };
    let at = |now| obs(now).lease(held("a", 5));
    run(vec![
        Case {
            name: "unhealthy active with an eligible standby steps down",
            state: active_long(),
            obs: at(40_000).health(unhealthy()).peer(b(100)),
            role: Demoting,
            actions: vec![Action::Deactivate {
                epoch: e(5),
                why: StepDown::Unhealthy { node: "probe failed: connection refused; 3 bad probes in a row".into() },
            }],
        },
        Case {
            name: "unhealthy active with no standby stays",
            state: active_long(),
            obs: at(40_000).health(unhealthy()),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "a lagging standby is not eligible",
            state: active_long(),
            obs: at(40_000).health(unhealthy()).peer(b(90)),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "a stale standby status is not eligible",
            state: active_long(),
            obs: at(40_000).health(unhealthy()).peer(peer("b", Standby, 100, 100, 5000)),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "an ineligible peer is not a standby",
            state: active_long(),
            obs: at(40_000).health(unhealthy()).peer(peer("b", Ineligible, 100, 100, 100)),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "within cooldown of activation the active stays",
            state: RoleState { activated_at: Some(ms(20_000)), ..active(5, 42_000) },
            obs: at(40_000).health(unhealthy()).peer(b(100)),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "paused: no automatic step-down",
            state: active_long(),
            obs: at(40_000).paused().health(unhealthy()).peer(b(100)),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "transfer to an eligible standby at our epoch",
            state: active_long(),
            obs: at(40_000).transfer("b", 5).peer(b(100)),
            role: Demoting,
            actions: vec![Action::Deactivate { epoch: e(5), why: StepDown::Transfer { to: id("b") } }],
        },
        Case {
            name: "transfer works while paused",
            state: active_long(),
            obs: at(40_000).paused().transfer("b", 5).peer(b(100)),
            role: Demoting,
            actions: vec![Action::Deactivate { epoch: e(5), why: StepDown::Transfer { to: id("b") } }],
        },
        Case {
            name: "transfer bound to an older epoch is ignored",
            state: active_long(),
            obs: at(40_000).transfer("b", 4).peer(b(100)),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "transfer to a lagging member is ignored",
            state: active_long(),
            obs: at(40_000).transfer("b", 5).peer(b(50)),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "transfer to ourselves is ignored",
            state: active_long(),
            obs: at(40_000).transfer("a", 5).peer(b(100)),
            role: Active,
            actions: vec![],
        },
    ]);
}

#[test]
fn renew_for_another_epoch_does_not_extend_the_deadline() {
    let Decision { state: s, .. } = decide(
        &active(5, 3500),
        &obs(3400).lease(held("a", 5)).outcome(Outcome::Renewed { epoch: e(4), valid_until: ms(5900) }),
        &policy(),
    );
    assert_eq!(s.deadline, Some(ms(3500)));
    let Decision { state: s, actions, .. } = decide(&s, &obs(3500).lease(held("a", 5)), &policy());
    assert_eq!(s.role, RoleName::Fenced);
    assert_eq!(actions, vec![Action::Fence { why: FenceReason::LeaseDeadline }]);
}

#[test]
fn renew_never_shortens_the_deadline() {
    let Decision { state: s, .. } = decide(
        &active(5, 3500),
        &obs(1000).lease(held("a", 5)).outcome(Outcome::Renewed { epoch: e(5), valid_until: ms(3000) }),
        &policy(),
    );
    assert_eq!(s.deadline, Some(ms(3500)));
}

#[test]
fn released_epoch_is_never_reused() {
    // After stepping down at epoch 5, a later grant at 5 (a confused store) is not activated.
    let p = policy();
    let Decision { state: s, .. } = decide(
        &holding(RoleName::Demoting, 5, 3500),
        &obs(1000).lease(held("a", 5)).outcome(Outcome::Deactivated { epoch: e(5) }),
        &p,
    );
    let s = RoleState { stood_down_at: None, acquire_pending: true, ..s };
    let Decision { state: s, actions, .. } = decide(
        &s,
        &obs(2000).lease(held("a", 5)).outcome(Outcome::Acquired { epoch: e(5), valid_until: ms(4500) }),
        &p,
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::RunGuard { .. })), "{actions:?}");
    assert_ne!(s.role, RoleName::Promoting);
}

#[test]
fn a_producer_stopped_outside_the_loop_ends_the_holding_and_the_lease_is_released() {
    let p = policy();
    let stopped = Outcome::ProducerStopped { by: "the keeper".into(), detail: "the lease deadline passed".into() };
    let Decision { state: s, actions, .. } =
        decide(&active(5, 3500), &obs(1000).lease(held("a", 5)).outcome(stopped), &p);
    assert_eq!(s.role, RoleName::Fenced, "never 'lease held, producer fenced'");
    let why = FenceReason::ProducerStopped { by: "the keeper".into(), detail: "the lease deadline passed".into() };
    assert_eq!(actions, vec![Action::Fence { why }]);
    assert!(!actions.iter().any(|a| matches!(a, Action::Renew { .. })), "no renew after a fence");
    // The fence confirms; the member stands down and gives the lease back at once.
    let Decision { state: s, actions, .. } = decide(&s, &obs(1100).lease(held("a", 5)).outcome(Outcome::Fenced), &p);
    assert!(!s.holding());
    assert_eq!(actions, vec![Action::Release { epoch: e(5) }]);
}

#[test]
fn a_stop_reported_to_an_idle_member_changes_nothing() {
    let stopped = Outcome::ProducerStopped { by: "the keeper".into(), detail: "released".into() };
    let Decision { state: s, actions, .. } =
        decide(&standby(), &obs(1000).lease(held("b", 5)).outcome(stopped), &policy());
    assert_eq!(s.role, RoleName::Standby);
    assert!(actions.is_empty(), "{actions:?}");
}

// ---- property tests --------------------------------------------------------------------------

fn arb_lease() -> impl Strategy<Value = LeaseView> {
    prop_oneof![(0u64..6).prop_map(free), (0u64..6).prop_map(|n| held("a", n)), (0u64..6).prop_map(|n| held("b", n)),]
}

fn arb_health() -> impl Strategy<Value = NodeHealth> {
    prop_oneof![(0u64..4).prop_map(|lag| healthy(100 - lag, lag)), Just(unhealthy()), Just(NodeHealth::UNKNOWN),]
}

fn arb_outcome() -> impl Strategy<Value = (u8, u64, i64)> {
    (0u8..10, 0u64..6, -1000i64..4000)
}

fn make_outcome(kind: u8, epoch: u64, now: MonoTime, offset_ms: i64) -> Outcome {
    let until = if offset_ms >= 0 {
        now.saturating_add(Duration::from_millis(offset_ms as u64))
    } else {
        now.saturating_sub(Duration::from_millis(offset_ms.unsigned_abs()))
    };
    let epoch = e(epoch);
    match kind {
        0 => Outcome::Acquired { epoch, valid_until: until },
        1 => Outcome::AcquireFailed { error: "timeout".into() },
        2 => Outcome::Renewed { epoch, valid_until: until },
        3 => Outcome::GuardPassed { epoch },
        4 => Outcome::GuardFailed { epoch, step: "watermark".into(), error: "unreachable".into() },
        5 => Outcome::Deactivated { epoch },
        6 => Outcome::DeactivateFailed { epoch, error: "timeout".into() },
        7 => Outcome::Fenced,
        8 => Outcome::ProducerStopped { by: "the keeper".into(), detail: "deadline".into() },
        _ => Outcome::FenceFailed { error: "kill failed".into() },
    }
}

/// Lease, paused, and a transfer (to me?, epoch).
type StoreStep = (LeaseView, bool, Option<(bool, u64)>);

/// One step of a generated history: the environment mixes faithful behaviour (the store
/// reflects the member's own view, actions get their natural outcomes) with arbitrary chaos
/// (random views, random and contradictory outcomes, unreachable store).
#[derive(Debug, Clone)]
struct Step {
    advance_ms: u64,
    store: Option<StoreStep>,
    /// Show the lease as the member itself believes it is, instead of `store`'s lease.
    consistent_lease: bool,
    /// Report the natural outcome of every action of the previous step.
    reply: bool,
    health: NodeHealth,
    peer: Option<(u8, u64, u64)>,
    outcomes: Vec<(u8, u64, i64)>,
}

fn arb_step(force_paused: bool) -> impl Strategy<Value = Step> {
    (
        prop_oneof![4 => 0u64..1200, 1 => 0u64..4000],
        prop::option::weighted(
            0.9,
            (arb_lease(), prop::bool::weighted(0.2), prop::option::weighted(0.2, (any::<bool>(), 0u64..6))),
        ),
        prop::bool::weighted(0.6),
        prop::bool::weighted(0.7),
        arb_health(),
        prop::option::of((0u8..3, 95u64..101, 0u64..6000)),
        prop::collection::vec(arb_outcome(), 0..2),
    )
        .prop_map(move |(advance_ms, store, consistent_lease, reply, health, peer, outcomes)| Step {
            advance_ms,
            store: store.map(|(l, p, t)| (l, p || force_paused, if force_paused { None } else { t })),
            consistent_lease,
            reply,
            health,
            peer,
            outcomes,
        })
}

/// The natural outcome of `action` for a member in state `s` whose node is in `health`.
fn reply_to(action: &Action, s: &RoleState, now: MonoTime, health: &NodeHealth) -> Option<Outcome> {
    let valid_until = now.saturating_add(Duration::from_millis(2500));
    match action {
        Action::Acquire => Some(Outcome::Acquired { epoch: s.seen_epoch.next(), valid_until }),
        Action::Renew { epoch } => Some(Outcome::Renewed { epoch: *epoch, valid_until }),
        // Guard step 2 re-checks the node: an unhealthy one fails the guard.
        Action::RunGuard { epoch } if health.verdict == Verdict::Healthy => {
            Some(Outcome::GuardPassed { epoch: *epoch })
        }
        Action::RunGuard { epoch } => {
            Some(Outcome::GuardFailed { epoch: *epoch, step: "node_healthy".into(), error: "node unhealthy".into() })
        }
        Action::TakeOver { .. } => Some(Outcome::Acquired { epoch: s.seen_epoch.next(), valid_until }),
        Action::Deactivate { epoch, .. } => Some(Outcome::Deactivated { epoch: *epoch }),
        Action::Fence { .. } => Some(Outcome::Fenced),
        Action::Checkpoint { .. } | Action::Release { .. } => None,
    }
}

fn build(step: &Step, now: MonoTime, before: &RoleState, previous: &[Action]) -> Observation {
    let store = step.store.as_ref().map(|(lease, paused, transfer)| StoreView {
        lease: match (step.consistent_lease, before.epoch) {
            (false, _) => lease.clone(),
            (true, Some(held)) => LeaseView::Held { holder: id("a"), epoch: held },
            (true, None) => LeaseView::Free { epoch: before.seen_epoch },
        },
        intents: Intents {
            paused: *paused,
            transfer: transfer.map(|(to_me, epoch)| Transfer {
                to: id(if to_me { "a" } else { "b" }),
                epoch: e(epoch),
                forced: false,
            }),
        },
        current: true,
    });
    let cluster = step
        .peer
        .map(|(role, height, age)| {
            let role = [RoleName::Standby, RoleName::Active, RoleName::Ineligible][role as usize];
            vec![peer("b", role, height, 150, age)]
        })
        .unwrap_or_default();
    let mut outcomes: Vec<Outcome> = if step.reply {
        previous.iter().filter_map(|a| reply_to(a, before, now, &step.health)).collect()
    } else {
        vec![]
    };
    outcomes.extend(step.outcomes.iter().map(|(k, ep, off)| make_outcome(*k, *ep, now, *off)));
    Observation {
        now,
        me: id("a"),
        kind: MemberKind::Producer,
        priority: 100,
        store,
        health: step.health.clone(),
        cluster,
        outcomes,
    }
}

/// Feeds `steps` to `decide` from a fresh state of `kind`, calling `check(before, observation,
/// after, actions)` at every step.
fn drive(
    kind: MemberKind,
    steps: &[Step],
    mut check: impl FnMut(&RoleState, &Observation, &RoleState, &[Action]) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    // Fenced takeovers on: every property below holds with them too (the generated peer "b" is
    // sometimes silent for longer than 1.5 s while the store shows it holding).
    let p = fencing_policy();
    let mut now = ms(0);
    let mut s = RoleState::new(kind, now);
    let mut previous = Vec::new();
    for step in steps {
        now = now.saturating_add(Duration::from_millis(step.advance_ms));
        let mut o = build(step, now, &s, &previous);
        o.kind = kind;
        let Decision { state: next, actions, .. } = decide(&s, &o, &p);
        check(&s, &o, &next, &actions)?;
        s = next;
        previous = actions;
    }
    Ok(())
}

fn promotes(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Acquire | Action::TakeOver { .. } | Action::RunGuard { .. }))
}

#[test]
fn generated_sequences_reach_every_role() {
    // The property tests below only mean something if their inputs drive members through
    // promotion, activity, step-down and fencing.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut reached = std::collections::BTreeSet::new();
    for _ in 0..500 {
        let steps = prop::collection::vec(arb_step(false), 1..40).new_tree(&mut runner).expect("generate").current();
        drive(MemberKind::Producer, &steps, |_, _, after, _| {
            reached.insert(format!("{}", after.role));
            Ok(())
        })
        .expect("recording never fails");
    }
    for role in ["standby", "ineligible", "promoting", "active", "demoting", "fenced"] {
        assert!(reached.contains(role), "no generated sequence reached {role}: {reached:?}");
    }
}

/// Turns the loop would take at one instant, each fed the instant failures of the last one's
/// actions, with the store and the node unchanged; the actions of every turn.
fn turns_at_one_instant(s: &RoleState, o: &Observation, turns: usize) -> Vec<Vec<Action>> {
    let mut state = s.clone();
    let mut asked: Vec<Action> = Vec::new();
    let mut all = Vec::new();
    for _ in 0..turns {
        let failures = asked.iter().filter_map(|a| a.failure(String::from("failed at once"))).collect();
        let obs = Observation { outcomes: failures, ..o.clone() };
        let Decision { state: next, actions, .. } = decide(&state, &obs, &fencing_policy());
        state = next;
        asked = actions.clone();
        all.push(actions);
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    // (a) For any sequence of observations, a holder (Active in particular) whose lease deadline
    // has passed emits Fence, whatever else the observation says.
    #[test]
    fn expired_holder_always_fences(steps in prop::collection::vec(arb_step(false), 1..40)) {
        drive(MemberKind::Producer, &steps, |before, o, after, actions| {
            if before.holding() && before.deadline.is_none_or(|d| o.now >= d) {
                prop_assert!(actions.iter().any(|a| matches!(a, Action::Fence { .. })), "{:?} at {} -> {:?}", before, o.now, actions);
                prop_assert_ne!(after.role, RoleName::Active);
            }
            if after.role == RoleName::Active {
                prop_assert!(after.deadline.is_some_and(|d| o.now < d), "active past its deadline: {:?}", after);
            }
            Ok(())
        })?;
    }

    // (b) No member decides to activate without holding the lease at a strictly newer epoch:
    // RunGuard{E} needs an Acquired{E} outcome in the same observation, and E above every epoch
    // seen in earlier observations (other holders, free leases) and every earlier activation.
    #[test]
    fn activation_needs_a_strictly_newer_grant(steps in prop::collection::vec(arb_step(false), 1..40)) {
        let mut seen = Epoch::ZERO;
        drive(MemberKind::Producer, &steps, |_, o, _, actions| {
            for a in actions {
                if let Action::RunGuard { epoch } = a {
                    prop_assert!(*epoch > seen, "RunGuard at {} but epoch {} was seen before", epoch, seen);
                    let granted = o.outcomes.iter().any(|x| matches!(x, Outcome::Acquired { epoch: g, .. } if g == epoch));
                    prop_assert!(granted, "RunGuard without an Acquired outcome: {:?}", o.outcomes);
                    seen = seen.max(*epoch);
                }
            }
            if let Some(v) = &o.store
                && !matches!(&v.lease, LeaseView::Held { holder, .. } if holder.as_str() == "a")
            {
                seen = seen.max(v.lease.epoch());
            }
            Ok(())
        })?;
    }

    // (c) A paused cluster never promotes on its own: with no transfer intent, no Acquire and
    // no RunGuard, whatever happens.
    #[test]
    fn paused_cluster_never_promotes(steps in prop::collection::vec(arb_step(true), 1..40)) {
        drive(MemberKind::Producer, &steps, |_, _, _, actions| {
            prop_assert!(!promotes(actions), "paused cluster promoted: {:?}", actions);
            Ok(())
        })?;
    }

    // (d) The loop comes to rest: an action that fails at once wakes the loop at the instant it
    // was asked, and a decision that asks for it again at that instant makes the loop spin for
    // as long as the failure lasts (a checkpoint beside a renew in flight did, thousands of turns
    // a second; so did a fence or a release that failed at once). From any state a generated
    // history reaches, a few turns at one instant settle, and the turns after them ask nothing.
    #[test]
    fn a_member_comes_to_rest_when_every_action_fails_at_once(steps in prop::collection::vec(arb_step(false), 1..40)) {
        drive(MemberKind::Producer, &steps, |_, o, after, _| {
            let at_rest = Observation { outcomes: Vec::new(), ..o.clone() };
            let turns = turns_at_one_instant(after, &at_rest, 12);
            let late: Vec<&Vec<Action>> = turns[8..].iter().filter(|a| !a.is_empty()).collect();
            prop_assert!(late.is_empty(), "still asking at one instant after 8 turns: {:?} from {:?}", turns, after);
            Ok(())
        })?;
    }

    // A witness never asks for the lease and never activates.
    #[test]
    fn witness_never_acquires(steps in prop::collection::vec(arb_step(false), 1..30)) {
        drive(MemberKind::Witness, &steps, |_, _, _, actions| {
            prop_assert!(!promotes(actions), "witness promoted: {:?}", actions);
            Ok(())
        })?;
    }
}

/// L1 after handovers: for every combination of a recent stand-down, a recent activation and
/// the lease free, held by a dead member or held by a live one, a healthy caught-up standby
/// takes a free lease at once, waits for a held one (saying whose and how long it was silent),
/// and a cooldown only ever delays demoting a live active.
#[test]
fn a_cooldown_never_keeps_a_free_lease_from_a_caught_up_standby() {
    use RoleName::*;
    let live_b = || peer("b", Active, 100, 200, 100);
    let dead_b = || peer("b", Active, 100, 200, 9_000);
    for stood_down in [None, Some(ms(9_000))] {
        for activated in [None, Some(ms(8_000))] {
            let state = RoleState { stood_down_at: stood_down, activated_at: activated, ..standby() };
            let label = format!("stood down {stood_down:?}, activated {activated:?}");
            let d = decide(&state, &obs(10_000).lease(free(4)).peer(peer("b", Ineligible, 100, 200, 100)), &policy());
            assert_eq!(d.actions, vec![Action::Acquire], "free lease, {label}");
            assert!(matches!(d.why, Why::Acquiring { .. }), "free lease, {label}: {}", d.why);

            let d = decide(&state, &obs(10_000).lease(held("b", 4)).peer(dead_b()), &policy());
            assert!(d.actions.is_empty(), "held by a dead member, {label}");
            assert!(
                matches!(
                    &d.why,
                    Why::LeaseHeld {
                        holder_heard: Heard::Silent { age_ms: 9_000 },
                        next: Successor::Member { .. },
                        ..
                    }
                ),
                "held by a dead member, {label}: {}",
                d.why
            );
            assert!(d.why.to_string().contains("b has been silent for 9.0 s"), "{}", d.why);

            let d = decide(&state, &obs(10_000).lease(held("b", 4)).peer(live_b()), &policy());
            assert!(d.actions.is_empty(), "held by a live member, {label}");
            assert!(
                matches!(&d.why, Why::LeaseHeld { holder_heard: Heard::Recently { .. }, .. }),
                "{label}: {}",
                d.why
            );
        }
    }
    // The expired lease shows as free: the standby that stood down takes it, and says whose it was.
    let after_handover = RoleState { stood_down_at: Some(ms(9_000)), last_holder: Some((id("b"), e(4))), ..standby() };
    let d = decide(&after_handover, &obs(10_000).lease(free(4)).peer(dead_b()), &policy());
    assert_eq!(d.actions, vec![Action::Acquire]);
    assert_eq!(
        d.why.to_string(),
        "acquiring the lease: holder b stopped renewing (last heard 9.0 s ago); its lease at epoch 4 ended"
    );

    // An active: a recent activation holds a step-down, and the status says so and for how long.
    for (activated_at, standby_b, expect) in [
        (ms(39_000), peer("b", Standby, 100, 100, 100), "cooldown"),
        (ms(0), peer("b", Standby, 100, 100, 100), "step down"),
        (ms(0), peer("b", Standby, 100, 100, 9_000), "no standby"),
        (ms(39_000), peer("b", Standby, 100, 100, 9_000), "cooldown"),
    ] {
        let state = RoleState { activated_at: Some(activated_at), ..active(5, 42_000) };
        let d = decide(&state, &obs(40_000).lease(held("a", 5)).health(unhealthy()).peer(standby_b), &policy());
        match expect {
            "cooldown" => {
                assert_eq!(d.state.role, Active);
                assert!(matches!(&d.why, Why::ActiveUnhealthy { held: Held::Cooldown { remaining_ms: 29_000 }, .. }));
                assert!(d.why.to_string().contains("step-down held by cooldown for 29.0 s more"), "{}", d.why);
            }
            "step down" => assert_eq!(d.state.role, Demoting),
            _ => {
                assert_eq!(d.state.role, Active);
                assert_eq!(
                    d.why.to_string(),
                    "active at epoch 5 although the local node is unhealthy (probe failed: connection refused; 3 bad probes in a row); no eligible standby to hand over to: b is unreachable (last heard 9.0 s ago)"
                );
            }
        }
    }
}

#[test]
fn every_idle_situation_has_a_reason() {
    use RoleName::*;
    let cases: Vec<(RoleState, Observation, &str)> = vec![
        (standby(), obs(1000).no_store(), "the store could not be read, or this member has not caught up"),
        (standby(), obs(1000).paused(), "paused by operator"),
        (standby(), obs(1000).health(unhealthy()), "not eligible to take over: the local node is unhealthy"),
        (standby(), obs(1000).health(healthy(90, 10)), "10 blocks behind the best height (max_lag_on_failover 2)"),
        (standby(), obs(1000).peer(peer("b", Standby, 100, 200, 100)), "waiting 2.0 s more (priority_delay) for b"),
        (standby(), obs(1000).transfer("b", 3), "a transfer names b"),
        (standby(), obs(1000).lease(held("a", 3)), "never acquired"),
        (standby(), obs(1000).witness(), "witness"),
        (
            standby(),
            obs(1000).outcome(Outcome::AcquireFailed { error: "lock-delay".into() }),
            "the last acquire failed; asking again in 100 ms",
        ),
        (
            active(5, 3000),
            obs(1000).lease(held("a", 5)).peer(peer("b", Standby, 100, 100, 100)),
            "if this member stopped now, b (priority 100) would take over",
        ),
        (
            active(5, 3000),
            obs(1000).lease(held("a", 5)).peer(peer("b", Standby, 80, 100, 100)),
            "nobody could take over: b lags by 20 (max_lag_on_failover 2)",
        ),
        (
            RoleState { activated_at: Some(ms(900)), ..active(5, 3000) },
            obs(1000).lease(held("a", 5)).paused().health(unhealthy()),
            "paused by operator, so it keeps producing",
        ),
    ];
    for (state, o, expect) in cases {
        let d = decide(&state, &o, &policy());
        let text = d.why.to_string();
        assert!(text.contains(expect), "expected {expect:?} in {text:?}");
        assert!(!text.contains("Some(") && !text.contains("None"), "{text}");
        let _ = Active;
    }
}

/// Two members that both stood down recently (a handover, then the successor's guard failed)
/// each see the other as an eligible standby: neither leaves the free lease to the other for
/// longer than `priority_delay`, so it is not left free for a whole cooldown.
#[test]
fn members_that_both_stood_down_recently_do_not_leave_the_lease_free_past_twice_priority_delay() {
    let b = || peer("b", RoleName::Standby, 100, 100, 100);
    let recently = RoleState { stood_down_at: Some(ms(9_000)), free_since: Some(ms(9_500)), ..standby() };
    let d = decide(&recently, &obs(10_000).lease(free(4)).peer(b()), &policy());
    assert!(d.actions.is_empty());
    assert!(matches!(d.why, Why::DeferringAfterStepDown { remaining_ms: 3_500, .. }), "{}", d.why);
    let d = decide(&recently, &obs(13_500).lease(free(4)).peer(b()), &policy());
    assert_eq!(d.actions, vec![Action::Acquire], "{}", d.why);
}

/// The kill-keeper race (chaos, and the many_validators bench): active a (higher priority) is
/// fenced when its keeper dies and stands down, its node still healthy. Standby b, which sees
/// a's new status as an eligible standby of higher priority, does not wait priority_delay for
/// the member that just left the lease: it takes it at once, and a defers to b meanwhile. A
/// higher-priority standby that did not hold the lease last is still waited for.
#[test]
fn a_lower_priority_standby_does_not_wait_for_the_member_that_just_left_the_lease() {
    let (free_at, pd) = (10_000, policy().priority_delay.as_millis() as u64);
    let a_stood_down = RoleState { stood_down_at: Some(ms(free_at - 10)), free_since: Some(ms(free_at)), ..standby() };
    let mut b = RoleState { free_since: Some(ms(free_at + 10)), ..standby() };
    b.last_holder = Some((id("a"), e(4)));
    let b_obs = |now| {
        Observation { me: id("b"), priority: 100, ..obs(now).lease(free(4)) }.peer(peer(
            "a",
            RoleName::Standby,
            100,
            200,
            50,
        ))
    };
    let a_obs =
        |now| Observation { priority: 200, ..obs(now).lease(free(4)) }.peer(peer("b", RoleName::Standby, 100, 100, 50));
    let d = decide(&b, &b_obs(free_at + 10), &policy());
    assert_eq!(d.actions, vec![Action::Acquire], "b takes over at once: {}", d.why);
    for now in [free_at + 10, free_at + 10 + pd] {
        let d = decide(&a_stood_down, &a_obs(now), &policy());
        assert!(d.actions.is_empty(), "a defers to b: {}", d.why);
        assert!(matches!(d.why, Why::DeferringAfterStepDown { .. }), "{}", d.why);
    }
    // Another member held it last (c, now gone): b still waits for a, which did not leave it.
    b.last_holder = Some((id("c"), e(4)));
    let d = decide(&b, &b_obs(free_at + 10 + pd - 1), &policy());
    assert!(matches!(d.why, Why::WaitingForPriority { .. }), "b waits for a: {}", d.why);
    let d = decide(&b, &b_obs(free_at + 10 + pd), &policy());
    assert_eq!(d.actions, vec![Action::Acquire], "b takes over once its wait ends: {}", d.why);
}

/// A member whose own promotion guard keeps failing backs off before it takes the free lease
/// again — priority_delay, doubling per failure in a row, at most cooldown — even when no other
/// standby exists; a guard that passes resets it.
#[test]
fn a_member_whose_guard_keeps_failing_backs_off_before_taking_the_lease_again() {
    for (failures, backoff_ms) in [(1, 2_000), (2, 4_000), (3, 8_000), (5, 30_000), (40, 30_000)] {
        let state = RoleState { stood_down_at: Some(ms(10_000)), guard_failures: failures, ..standby() };
        let d = decide(&state, &obs(10_000 + backoff_ms - 1).lease(free(4)), &policy());
        assert!(d.actions.is_empty(), "{failures} failures, {backoff_ms} ms");
        assert!(matches!(d.why, Why::GuardBackoff { remaining_ms: 1, .. }), "{}", d.why);
        let d = decide(&state, &obs(10_000 + backoff_ms).lease(free(4)), &policy());
        assert_eq!(d.actions, vec![Action::Acquire], "{failures} failures: {}", d.why);
    }
    let promoting = RoleState { acquire_pending: false, ..holding(RoleName::Promoting, 5, 3_000) };
    let failed = Outcome::GuardFailed { epoch: e(5), step: "watermark_floor".into(), error: "store timeout".into() };
    let d = decide(&promoting, &obs(1_000).lease(held("a", 5)).outcome(failed), &policy());
    assert_eq!(d.state.guard_failures, 1);
    let promoting = RoleState { guard_failures: 3, ..promoting };
    let d =
        decide(&promoting, &obs(1_000).lease(held("a", 5)).outcome(Outcome::GuardPassed { epoch: e(5) }), &policy());
    assert_eq!(d.state.guard_failures, 0);
}

/// The deferral after a stand-down is decided when the acquire is sent: a grant that arrives
/// after the lease was free long enough is used, although the store already shows it held (so
/// the lease no longer counts as free) and another eligible standby exists.
#[test]
fn a_grant_asked_for_after_the_deferral_is_used_when_it_arrives() {
    let b = || peer("b", RoleName::Standby, 100, 100, 100);
    let asked =
        RoleState { stood_down_at: Some(ms(9_000)), free_since: Some(ms(7_000)), seen_epoch: e(4), ..standby() };
    let d = decide(&asked, &obs(11_000).lease(free(4)).peer(b()), &policy());
    assert_eq!(d.actions, vec![Action::Acquire], "{}", d.why);
    // The store shows the grant before the acquire call returns: the lease is no longer free.
    let d = decide(&d.state, &obs(11_020).lease(held("a", 5)).peer(b()), &policy());
    assert!(d.actions.is_empty() && d.state.free_since.is_none(), "{:?}", d.actions);
    let granted = Outcome::Acquired { epoch: e(5), valid_until: ms(13_500) };
    let d = decide(&d.state, &obs(11_050).lease(held("a", 5)).peer(b()).outcome(granted), &policy());
    assert_eq!(d.state.role, RoleName::Promoting, "{}", d.why);
    assert_eq!(d.actions, vec![Action::RunGuard { epoch: e(5) }]);
}

/// `active(5, 3500)` with the renews in `sent_ms` in flight.
fn active_with_renews(sent_ms: &[u64]) -> RoleState {
    let mut s = active(5, 3500);
    for at in sent_ms {
        s.renew.sent(ms(*at));
    }
    s
}

// Renew pacing (docs/design.md §6): a renew is due once little enough validity remains; a fresh
// one leaves every renew_interval even while earlier ones are unanswered, up to three at once.
#[test]
fn renew_timing() {
    use RoleName::*;
    let renewed = |epoch| Outcome::Renewed { epoch: e(epoch), valid_until: ms(3500) };
    let failed = || Outcome::RenewFailed { epoch: e(5), error: "timed out".into() };
    run(vec![
        Case {
            name: "due, none in flight: renew",
            state: active_with_renews(&[]),
            obs: obs(2000).lease(held("a", 5)),
            role: Active,
            actions: vec![Action::Renew { epoch: e(5) }, Action::Checkpoint { epoch: e(5) }],
        },
        Case {
            name: "the last renew left less than renew_interval ago: wait",
            state: active_with_renews(&[1500]),
            obs: obs(2000).lease(held("a", 5)),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "an unanswered renew does not hold back the next one",
            state: active_with_renews(&[1000]),
            obs: obs(2000).lease(held("a", 5)),
            role: Active,
            actions: vec![Action::Renew { epoch: e(5) }, Action::Checkpoint { epoch: e(5) }],
        },
        Case {
            name: "three unanswered renews hold back the fourth",
            state: active_with_renews(&[0, 500, 1000]),
            obs: obs(2000).lease(held("a", 5)),
            role: Active,
            actions: vec![],
        },
        Case {
            name: "a committed renew frees its place",
            state: active_with_renews(&[0, 500, 1000]),
            obs: obs(2000).lease(held("a", 5)).outcome(renewed(5)),
            role: Active,
            actions: vec![Action::Renew { epoch: e(5) }, Action::Checkpoint { epoch: e(5) }],
        },
        Case {
            name: "a failed renew frees its place too",
            state: active_with_renews(&[0, 500, 1000]),
            obs: obs(2000).lease(held("a", 5)).outcome(failed()),
            role: Active,
            actions: vec![Action::Renew { epoch: e(5) }, Action::Checkpoint { epoch: e(5) }],
        },
        Case {
            name: "a renew of an older epoch coming back frees its place",
            state: active_with_renews(&[0, 500, 1000]),
            obs: obs(2000).lease(held("a", 5)).outcome(renewed(4)),
            role: Active,
            actions: vec![Action::Renew { epoch: e(5) }, Action::Checkpoint { epoch: e(5) }],
        },
    ]);
    let Decision { state, .. } = decide(&active_with_renews(&[]), &obs(2000).lease(held("a", 5)), &policy());
    assert_eq!(state.renew.in_flight(), 1, "the renew sent is counted until it comes back");
}

// Where the lease a member takes came from: the guard's planned-handover floor and the failover
// metrics read it from the role state, not from the daemon.
#[test]
fn transfer_provenance() {
    let forced = |mut o: Observation| {
        if let Some(t) = o.store.as_mut().and_then(|v| v.intents.transfer.as_mut()) {
            t.forced = true;
        }
        o
    };
    let cases = [
        ("a free lease, no transfer", obs(0).lease(free(3)), Provenance::Unplanned),
        ("a transfer to this member", obs(0).lease(free(3)).transfer("a", 3), Provenance::Planned),
        ("a forced transfer to this member", forced(obs(0).lease(free(3)).transfer("a", 3)), Provenance::Forced),
        ("a transfer to another member it outlived", obs(5000).lease(free(3)).transfer("b", 3), Provenance::Unplanned),
    ];
    for (name, o, want) in cases {
        let free_for_long = RoleState { free_since: Some(ms(0)), ..standby() };
        let Decision { state, actions, .. } = decide(&free_for_long, &o, &policy());
        assert_eq!(actions, vec![Action::Acquire], "{name}: acquires");
        assert_eq!(state.provenance(), want, "{name}");
        // The provenance stays with the holding until it is left.
        let granted = o.clone().outcome(Outcome::Acquired { epoch: e(4), valid_until: ms(99_000) });
        let Decision { state, .. } = decide(&state, &granted, &policy());
        assert_eq!(state.role, RoleName::Promoting, "{name}: promoting");
        assert_eq!(state.provenance(), want, "{name}: after the grant");
    }
    assert_eq!(standby().provenance(), Provenance::Unplanned, "nothing taken, nothing planned");
}

#[test]
fn the_previous_holder_is_the_last_other_member_seen_holding() {
    let s = standby();
    let Decision { state, .. } = decide(&s, &obs(0).lease(held("b", 3)), &policy());
    assert_eq!(state.previous_holder(), Some(&id("b")));
    let Decision { state, .. } = decide(&state, &obs(100).lease(free(3)), &policy());
    assert_eq!(state.previous_holder(), Some(&id("b")), "a free lease keeps the last holder");
    let mut mine = active(5, 3500);
    mine.last_holder = Some((id("c"), e(4)));
    let Decision { state, .. } = decide(&mine, &obs(100).lease(held("a", 5)), &policy());
    assert_eq!(state.previous_holder(), Some(&id("c")), "this member's own holding is not a previous holder");
}

/// On Consul the lease and the intents are separate watches: the grant's clearing of the
/// transfer can show before the grant. An acquire in flight keeps the cause it was sent with, so
/// a planned handover stays planned (no fence_command against the healthy old active, no margin).
#[test]
fn an_acquire_in_flight_keeps_the_provenance_it_was_sent_with() {
    let free_for_long = RoleState { free_since: Some(ms(0)), ..standby() };
    let asked = decide(&free_for_long, &obs(5_000).lease(free(3)).transfer("a", 3), &policy());
    assert_eq!(asked.actions, vec![Action::Acquire]);
    assert_eq!(asked.state.provenance(), Provenance::Planned);
    let cleared = decide(&asked.state, &obs(5_050).lease(free(3)), &policy());
    assert_eq!(cleared.state.provenance(), Provenance::Planned, "the transfer cleared while the acquire was in flight");
    let granted = obs(5_100).lease(held("a", 4)).outcome(Outcome::Acquired { epoch: e(4), valid_until: ms(99_000) });
    let promoting = decide(&cleared.state, &granted, &policy());
    assert_eq!(promoting.state.role, RoleName::Promoting);
    assert_eq!(promoting.state.provenance(), Provenance::Planned);
    // A failed acquire ends it: the next one is sent with what the store shows then.
    let failed = decide(
        &cleared.state,
        &obs(5_100).lease(free(3)).outcome(Outcome::AcquireFailed { error: "x".into() }),
        &policy(),
    );
    let again = decide(&failed.state, &obs(5_300).lease(free(3)), &policy());
    assert_eq!(again.state.provenance(), Provenance::Unplanned, "{}", again.why);
}

// ---- fenced takeover (docs/design.md §5, failover.fence_takeover_after) ----------------------

/// One line per situation of a fit standby "a" (priority 100) while "b" holds the lease at
/// epoch 3, with fenced takeovers after 1.5 s of silence: does "a" ask to fence "b" and take
/// the lease over? A holder heard recently, or never heard at all, is not fenced; neither is one
/// while the cluster is paused, while a better standby exists, or right after a failed try.
#[test]
fn a_silent_holder_is_fenced_and_taken_over_only_by_the_best_fit_standby() {
    use RoleName::*;
    let take = vec![Action::TakeOver { holder: id("b"), epoch: e(3) }];
    let b_silent = |ms| peer("b", Active, 100, 200, ms);
    let c_better = peer("c", Standby, 100, 150, 100);
    let c_worse = peer("c", Standby, 100, 50, 100);
    let cases: Vec<(&str, RoleState, Observation, RolePolicy, Vec<Action>)> = vec![
        (
            "silent for fence_takeover_after",
            standby(),
            obs(9_000).lease(held("b", 3)).peer(b_silent(1_500)),
            fencing_policy(),
            take.clone(),
        ),
        ("heard just now", standby(), obs(9_000).lease(held("b", 3)).peer(b_silent(1_499)), fencing_policy(), vec![]),
        ("never heard", standby(), obs(9_000).lease(held("b", 3)), fencing_policy(), vec![]),
        ("not configured", standby(), obs(9_000).lease(held("b", 3)).peer(b_silent(60_000)), policy(), vec![]),
        ("paused", standby(), obs(9_000).lease(held("b", 3)).peer(b_silent(5_000)).paused(), fencing_policy(), vec![]),
        (
            "a better standby",
            standby(),
            obs(9_000).lease(held("b", 3)).peer(b_silent(5_000)).peer(c_better),
            fencing_policy(),
            vec![],
        ),
        (
            "a worse standby",
            standby(),
            obs(9_000).lease(held("b", 3)).peer(b_silent(5_000)).peer(c_worse),
            fencing_policy(),
            take.clone(),
        ),
        (
            "unhealthy",
            standby(),
            obs(9_000).lease(held("b", 3)).peer(b_silent(5_000)).health(unhealthy()),
            fencing_policy(),
            vec![],
        ),
        (
            "a try failed just now",
            RoleState { acquire_retry_at: Some(ms(9_500)), ..standby() },
            obs(9_000).lease(held("b", 3)).peer(b_silent(5_000)),
            fencing_policy(),
            vec![],
        ),
        (
            "a takeover in flight",
            RoleState { acquire_pending: true, ..standby() },
            obs(9_000).lease(held("b", 3)).peer(b_silent(5_000)),
            fencing_policy(),
            vec![],
        ),
    ];
    for (name, state, o, p, want) in cases {
        let d = decide(&state, &o, &p);
        assert_eq!(d.actions, want, "{name}");
        if !want.is_empty() {
            assert!(d.state.acquire_pending && d.state.fenced_previous(), "{name}: {:?}", d.state);
            assert!(d.why.to_string().contains("fencing it with fence_command"), "{name}: {}", d.why);
        }
    }
}

/// The grant of a fenced takeover is used like any other: guard at the new epoch, the guard told
/// the previous holder is fenced already. A failed try waits `fence_takeover_after` before the
/// next one (each runs the fence command), not the 100 ms of a failed acquire.
#[test]
fn a_fenced_takeover_promotes_on_its_grant_and_a_failed_one_is_not_retried_at_once() {
    use RoleName::*;
    let p = fencing_policy();
    let silent = obs(9_000).lease(held("b", 3)).peer(peer("b", Active, 100, 200, 2_000));
    let asked = decide(&standby(), &silent, &p);
    let granted = Outcome::Acquired { epoch: e(4), valid_until: ms(11_500) };
    let d = decide(&asked.state, &obs(9_100).lease(held("a", 4)).outcome(granted), &p);
    assert_eq!(d.state.role, Promoting);
    assert_eq!(d.actions, vec![Action::RunGuard { epoch: e(4) }]);
    assert!(d.state.fenced_previous());
    assert_eq!(d.state.provenance(), Provenance::Unplanned);

    let failed = Outcome::AcquireFailed { error: "the holder renewed".into() };
    let d = decide(
        &asked.state,
        &obs(9_100).lease(held("b", 3)).peer(peer("b", Active, 100, 200, 2_100)).outcome(failed),
        &p,
    );
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.state.acquire_retry_at, Some(ms(10_600)));
    let again = obs(10_600).lease(held("b", 3)).peer(peer("b", Active, 100, 200, 3_600));
    assert_eq!(decide(&d.state, &again, &p).actions, vec![Action::TakeOver { holder: id("b"), epoch: e(3) }]);
}

/// Renews leave one renew interval after the last committed one was sent, counted from the
/// holder's validity: in signer mode that validity (its horizon; 2.1 s here, 3.15 s at the
/// defaults) outlasts the store's TTL (300 ms), and a pace counted from the TTL would let the
/// store expire a live holder.
#[test]
fn renews_are_paced_from_the_holders_validity_not_the_ttl() {
    let signer = RolePolicy {
        lease_ttl: Duration::from_millis(300),
        renew_interval: Duration::from_millis(100),
        safety_margin: Duration::from_millis(100),
        holder_validity: Duration::from_millis(2100),
        ..policy()
    };
    // The last committed renew left at 1000 ms: valid until 3100 ms.
    let held = active(5, 3_100);
    for (now, due) in [(1_099, false), (1_100, true), (1_250, true)] {
        let d = decide(&held, &obs(now).lease(held_by_a(5)), &signer);
        let renews = d.actions.iter().any(|a| matches!(a, Action::Renew { .. }));
        assert_eq!(renews, due, "at {now} ms");
    }
}

/// Signer mode: every signature moved the watermark already, so an Active renews without a
/// checkpoint; key-holding mode checkpoints with each renew it sends, and with none it holds back.
#[test]
fn a_signer_renews_without_checkpoints_and_a_key_holder_checkpoints_once_per_renew() {
    let signer = RolePolicy { checkpoints: false, ..policy() };
    let due = decide(&active(5, 3_000), &obs(2_000).lease(held_by_a(5)), &signer);
    assert_eq!(due.actions, vec![Action::Renew { epoch: e(5) }]);
    let key_holding = decide(&active(5, 3_000), &obs(2_000).lease(held_by_a(5)), &policy());
    assert_eq!(key_holding.actions, vec![Action::Renew { epoch: e(5) }, Action::Checkpoint { epoch: e(5) }]);
    // The next turn, its renew in flight and the loop woken by the checkpoint's answer: nothing.
    let next = decide(&key_holding.state, &obs(2_001).lease(held_by_a(5)), &policy());
    assert_eq!(next.actions, vec![]);
}

/// With a renew grid (1 s here), a holder whose renew falls due off the grid renews at the grid's
/// last point before, and the renew after that is due on the grid again, however late the first
/// left: a member's holders renew together. Without one, at the exact moment.
#[test]
fn with_a_renew_grid_a_holder_renews_on_the_grid_points() {
    let grid = RolePolicy { renew_grid: Some(Duration::from_secs(1)), ..policy() };
    let renews = |state: &RoleState, now: u64, policy: &RolePolicy| {
        let d = decide(state, &obs(now).lease(held_by_a(5)), policy);
        (d.actions.iter().any(|a| matches!(a, Action::Renew { .. })), d.state)
    };
    // Valid until 3.7 s: due at 2.2 s (1.5 s of validity left), on the grid at 2.0 s.
    let held = active(5, 3_700);
    assert!(!renews(&held, 1_999, &grid).0);
    assert!(renews(&held, 2_000, &grid).0, "at the grid point before it was due");
    assert!(!renews(&held, 2_000, &policy()).0, "without a grid, not yet");
    assert!(renews(&held, 2_200, &policy()).0, "without a grid, when due");
    // Sent 30 ms after its point and committed: valid until 2.03 + 2.5 s, next due 3.03 s, on the
    // grid at 3.0 s; the pacing agrees (one interval after 2.03 s, moved back onto the grid).
    let (_, mut sent) = renews(&held, 2_030, &grid);
    sent.deadline = Some(ms(4_530));
    sent.renew.finished();
    assert!(!renews(&sent, 2_999, &grid).0);
    assert!(renews(&sent, 3_000, &grid).0, "on the grid again");
}

fn held_by_a(epoch: u64) -> LeaseView {
    held("a", epoch)
}
