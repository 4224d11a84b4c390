//! The decision loop. It owns the role state and the local probe history; each turn it drains
//! the outcomes of finished actions, observes, calls [`role::decide`], reports, and dispatches
//! the actions to the executor. A turn never awaits: the store is read by `observe`'s
//! refresher and its push channel, actions run as tasks.
//!
//! A turn follows every event (a store change, a probe, a finished action, a fence notice) but a
//! steady holder's renew that went through, which waits for the turn already planned
//! (`pace::outcome_waits`), and
//! otherwise comes when `pace` says time alone may change the decision, or when this member's
//! status is due to be published (once per probe interval, twice while it holds the lease) or
//! systemd's watchdog to be pinged.
//!
//! Never here: an I/O call inside a turn, a decision `role` could make, or an action's effect.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use super::executor::{ActionContext, Executor, GuardContext};
use super::observe::{self, Clock, LocalSample, Observer};
use super::pace;
use super::parts::{Effects, Member, Outputs, Policies, Sources};
use super::report::{self, Reporter};
use super::stop;
use crate::coord::{StatusReport, StoreView};
use crate::domain::{MemberStatus, MonoTime, RoleName};
use crate::events::EventKind;
use crate::fence_notice::FenceNotice;
use crate::health::{NodeHealth, ProbeHistory, Verdict, gate_signing};
use crate::kernel_timer::KernelTimer;
use crate::role::{self, Action, Decision, Observation, Outcome, Provenance, RoleState};
use crate::telemetry::FailoverReason;

/// The local node's probes and what the loop remembers about them.
#[derive(Default)]
struct LocalProbes {
    history: ProbeHistory,
    /// The local height when this member was first probed as active (see `gate_signing`).
    active_from_height: Option<u64>,
    /// The node said it produces while this member is not active (reported once per episode).
    rogue_production: bool,
}

pub(super) struct MainLoop {
    member: Arc<Member>,
    policies: Arc<Policies>,
    outputs: Arc<Outputs>,
    clock: Clock,
    executor: Executor,
    reporter: Reporter,
    role: RoleState,
    probes: LocalProbes,
    last_publish: Instant,
    /// What this member published last: a change of standing goes out at once.
    published: Option<MemberStatus>,
    /// When the loop turns next without an event (`pace`, the status, the systemd watchdog).
    next_turn: Instant,
    /// The longest wait without an event ([`observe::refresh_interval`]: the statuses' pace).
    quiet_turn: Duration,
    /// Whether the last turn left this member holding steadily ([`pace::holds_steadily`]).
    steady: bool,
    /// Rung at a turn near a probe loop's tick, which is taken with it ([`observe::TurnBell`]).
    bell: observe::TurnBell,
}

impl MainLoop {
    pub fn new(member: Arc<Member>, policies: Arc<Policies>, effects: Arc<Effects>, outputs: Arc<Outputs>) -> MainLoop {
        let clock = Clock::system();
        let local = effects.coord.statuses_are_local();
        let quiet_turn = observe::refresh_interval(local, policies.role.status_stale_after);
        let cx = ActionContext {
            member: Arc::clone(&member),
            policies: Arc::clone(&policies),
            effects,
            outputs: Arc::clone(&outputs),
        };
        MainLoop {
            quiet_turn,
            steady: false,
            bell: observe::TurnBell::new(observe::ride_early(policies.role.renew_interval, policies.probe_interval)),
            role: RoleState::new(member.kind, clock.now()),
            last_publish: Instant::now() - policies.probe_interval,
            published: None,
            next_turn: Instant::now(),
            executor: Executor::new(cx),
            reporter: Reporter::new(Arc::clone(&outputs)),
            probes: LocalProbes::default(),
            clock,
            member,
            policies,
            outputs,
        }
    }

    /// Starts the observers, runs turns until `shutdown` or a failed store, then stops
    /// gracefully.
    pub async fn run(
        mut self,
        sources: Sources,
        mut fence_notices: mpsc::UnboundedReceiver<FenceNotice>,
        shutdown: CancellationToken,
    ) -> Result<(), DaemonError> {
        // Before anything starts: a timer that cannot be made is a start-up error.
        let mut wake = KernelTimer::new().map_err(|e| {
            DaemonError::Setup(format!(
                "cannot create the loop's timer (a timerfd): {e}; if it says too many open files, raise the service's LimitNOFILE"
            ))
        })?;
        let probing = sources.local.is_some();
        let (mut observer, mut probes) = self.start_observers(sources, &shutdown).map_err(|e| {
            DaemonError::Setup(format!(
                "cannot create a probe loop's timer (a timerfd): {e}; if it says too many open files, raise the service's LimitNOFILE"
            ))
        })?;
        let signed = stop::at_start(&self.executor.cx).await;
        self.executor.note_last_signed(signed);
        if let Some(n) = &self.outputs.telemetry.notifier {
            n.ready();
        }
        observer.first_answer(self.policies.call_timeout).await;
        let mut store_changes = self.executor.cx.effects.coord.watch();
        // A member whose raft node stopped (its storage or its timer failed) can never renew or
        // vote again: it stops, so that its supervisor restarts it once the cause is fixed,
        // instead of lingering in name.
        let coord = Arc::clone(&self.executor.cx.effects.coord);
        let store_failed = async move { coord.failed().await };
        tokio::pin!(store_failed);
        let mut failure = None;
        loop {
            if let Err(e) = wake.arm(self.next_turn) {
                failure = Some(DaemonError::TimerFailed(format!("the loop's timer (a timerfd) failed: {e}")));
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                why = &mut store_failed => {
                    tracing::error!(error = %why, "deactivating and stopping this member");
                    failure = Some(DaemonError::StoreFailed(why));
                    break;
                }
                fired = wake.fired() => if let Err(e) = fired {
                    failure = Some(DaemonError::TimerFailed(format!("the loop's timer (a timerfd) failed: {e}")));
                    break;
                },
                // Decide at once when the lease or the intents change: a handover is a chain of
                // such wake-ups, not of loop ticks.
                Ok(()) = store_changes.changed() => {}
                // A probe can change the node's health: decide on it at once.
                sample = probes.recv(), if probing => match sample {
                    Some(sample) => self.record_probe(&observer, sample),
                    // The probe loop ends only at shutdown or when its timer failed (it logged
                    // how): a member that no longer sees its node stops, as for the loop's timer.
                    None if !shutdown.is_cancelled() => {
                        failure = Some(DaemonError::TimerFailed(
                            "the local node's probe loop's timer (a timerfd) failed (its error is logged above)".into(),
                        ));
                        break;
                    }
                    // Shutdown was asked: stop here, with no turn in between.
                    None => break,
                },
                Some(notice) = fence_notices.recv() => {
                    // A keeper, the deadline thread or the node's own exit stopped production:
                    // `decide` turns it into a step-down, so the lease is released, not renewed.
                    self.outputs.events.emit(EventKind::Fence, None, notice.to_string());
                    self.executor.push_outcome(Outcome::ProducerStopped { by: notice.by.to_string(), detail: notice.detail });
                }
                Some(done) = self.executor.finished.recv() => {
                    let mut waits = self.waits_for_planned_turn(&done);
                    self.executor.apply(done);
                    while let Ok(done) = self.executor.finished.try_recv() {
                        waits &= self.waits_for_planned_turn(&done);
                        self.executor.apply(done);
                    }
                    if waits {
                        // The outcomes stay queued for the turn already planned.
                        continue;
                    }
                }
            }
            self.outputs.telemetry.loop_turned();
            self.turn(&observer, &store_changes);
        }
        if let Some(DaemonError::TimerFailed(why)) = &failure {
            tracing::error!(error = %why, "deactivating and stopping this member");
        }
        if let Some(n) = &self.outputs.telemetry.notifier {
            n.stopping();
        }
        // Nothing more is published once the loop stopped: the store is about to shut down.
        self.executor.stop_publishing();
        let epoch = self.role.epoch;
        let lease = epoch.and_then(|e| self.executor.known_lease(e));
        stop::graceful(&self.executor.cx, epoch, lease, self.executor.last_signed()).await;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Starts the probe loops and the refresher; fails when the kernel gives no timer for a
    /// probe loop (a start-up error: the member stops, and what started stops with it).
    fn start_observers(
        &self,
        sources: Sources,
        shutdown: &CancellationToken,
    ) -> std::io::Result<(Observer, mpsc::Receiver<LocalSample>)> {
        let (probe_tx, probes) = mpsc::channel(16);
        let policies = &self.policies;
        if let Some(local) = sources.local {
            let ticks = observe::Ticks::new("local", policies.probe_interval, shutdown.clone())?
                .riding(Some(self.bell.rider()));
            tokio::spawn(observe::probe_loop(local, ticks, self.clock.clone(), probe_tx));
        }
        let coord = Arc::clone(&self.executor.cx.effects.coord);
        let timing = (policies.call_timeout, self.quiet_turn);
        let cluster = observe::start_refresher(coord, timing, self.clock.clone(), shutdown);
        let observer = Observer::new(
            self.member.id.clone(),
            self.clock.clone(),
            timing,
            policies.role.status_stale_after,
            cluster,
            sources.references.len(),
        );
        let metrics = &self.outputs.telemetry.metrics;
        observer.start_references(&sources.references, policies.probe_interval, Some(&self.bell), metrics, shutdown)?;
        Ok((observer, probes))
    }

    /// Whether `done` may wait for the turn already planned ([`pace::outcome_waits`]).
    fn waits_for_planned_turn(&self, done: &super::executor::Finished) -> bool {
        let turn_in = self.next_turn.saturating_duration_since(Instant::now());
        let now = self.clock.now();
        done.outcome.as_ref().is_some_and(|o| pace::outcome_waits(o, &self.role, self.steady, now, turn_in))
    }

    /// Records one probe of the local node in the history; no decision follows it.
    fn record_probe(&mut self, observer: &Observer, (at, result): LocalSample) {
        let now = self.clock.now();
        let cluster = observer.cluster(now).unwrap_or_default();
        let local = result.as_ref().ok().map(|s| s.height);
        let best = observer.best_height(&cluster, now, local);
        let active = self.role.role == RoleName::Active;
        let p = &mut self.probes;
        let window = self.policies.health.signing_window;
        let result = result.map(|s| gate_signing(s, active, &mut p.active_from_height, window));
        let rogue = !active && result.as_ref().is_ok_and(|s| s.producing == Some(true));
        if rogue && !p.rogue_production {
            tracing::error!(role = %self.role.role, "the local node says it is producing while this member is not active: stop it (no lease covers it)");
        }
        p.rogue_production = rogue;
        let telemetry = &self.outputs.telemetry;
        telemetry.metrics.probed("local", result.as_ref().ok().map(|s| s.height));
        if result.is_ok() {
            telemetry.probe_succeeded();
        }
        p.history.record(at, result.as_ref().map_err(String::as_str), best, &self.policies.health);
    }

    /// One turn: observe, decide, report, dispatch. `store` is the loop's own receiver of the
    /// store's view (the one its select waits on).
    fn turn(&mut self, observer: &Observer, store: &watch::Receiver<StoreView>) {
        self.executor.unpark();
        let now = self.clock.now();
        let view = store.borrow().clone();
        self.reporter.store_changes(&view);
        let cluster = observer.cluster(now);
        let health = self.probes.history.assess(now, &self.policies.health);
        let obs = Observation {
            now,
            me: self.member.id.clone(),
            kind: self.member.kind,
            priority: self.member.priority,
            // A view the store does not stand behind yet (`StoreView::current`) is unknown too.
            store: (cluster.is_some() && view.current).then(|| view.clone()),
            health: health.clone(),
            cluster: cluster.unwrap_or_default(),
            outcomes: self.executor.take_outcomes(),
        };
        let Decision { state: next, actions, why } = role::decide(&self.role, &obs, &self.policies.role);
        self.reporter.decision(&self.role, &next, &why, health.height, failover_reason(next.provenance()));
        let metrics = &self.outputs.telemetry.metrics;
        report::metrics(metrics, &next, &view, &health, now);
        if let Some(raft) = self.executor.cx.effects.coord.status().raft {
            metrics.set_raft(raft.term, raft.commit, raft.is_leader);
        }
        self.reporter.note_situation(&why);
        self.role = next;
        self.dispatch(actions, &obs.cluster, observer, now);
        let paced = Instant::now() + pace::next_turn(&self.role, &obs, &self.policies.role, self.quiet_turn);
        self.publish_status(&health, paced);
        self.steady = pace::holds_steadily(&self.role, &obs);
        observer.ask_again();
        self.bell.turned(Instant::now());
        self.next_turn = self.next_turn_after(paced);
        let turn_in = self.next_turn.saturating_duration_since(Instant::now());
        self.executor.park_renews_of(pace::renews_may_wait(&self.role, self.steady, self.clock.now(), turn_in));
    }

    /// The next turn without an event: when `pace` says time alone may change the decision
    /// (`paced`), at the latest when this member's status is due again or systemd's watchdog
    /// wants a ping.
    fn next_turn_after(&self, paced: Instant) -> Instant {
        let now = Instant::now();
        let publish = self.last_publish + self.publish_every();
        let ping =
            self.outputs.telemetry.notifier.as_ref().and_then(|n| n.watchdog_interval()).map(|every| now + every);
        paced.min(publish).min(ping.unwrap_or(paced))
    }

    fn dispatch(&mut self, actions: Vec<Action>, cluster: &[StatusReport], observer: &Observer, now: MonoTime) {
        for action in actions {
            let role = &self.role;
            let guard = || GuardContext {
                cluster_best: observer.best_height(cluster, now, None),
                previous_holder: role.previous_holder().cloned(),
                planned: role.provenance() == Provenance::Planned,
                fenced_previous: role.fenced_previous(),
            };
            self.executor.dispatch(action, guard);
        }
    }

    /// How often this member's status goes out when its standing does not change: twice per
    /// probe interval while it holds the lease or is acquiring it (a fenced takeover watches the
    /// holder's silence, and `fence_takeover_after` may be as short as one probe interval: peers
    /// that see the grant then hold a status at most half an interval old — whatever this
    /// member's own config says, since it is the standbys' setting that watches), else
    /// [`Policies::status_every`].
    fn publish_every(&self) -> Duration {
        if self.role.epoch.is_some() || self.role.acquire_pending {
            (self.policies.probe_interval / 2).min(self.policies.status_every)
        } else {
            self.policies.status_every
        }
    }

    /// Hands this member's status to the control API at every turn, and to the peers when its
    /// standing changed (role, health, epoch), [`Self::publish_every`] passed, or a new height
    /// was probed and half a probe interval passed: the probe's turn carries it, so a peer never
    /// reads a height much older than one probe.
    ///
    /// A status due before the next paced turn (`paced`), when that turn is at most a third of
    /// [`Self::publish_every`] away, goes out with this turn: an active's renew turns, every
    /// 150 ms in signer mode (a third of its 500 ms status pace is 167 ms), carry its statuses
    /// instead of a wake-up of their own. The gap between two statuses never grows; a member
    /// without a paced turn that near publishes on time, not early.
    fn publish_status(&mut self, health: &NodeHealth, paced: Instant) {
        let status = MemberStatus {
            member: self.member.id.clone(),
            kind: self.member.kind,
            role: self.role.role,
            priority: self.member.priority,
            height: health.height,
            healthy: health.verdict == Verdict::Healthy && health.latest_good,
            epoch: self.role.epoch,
        };
        self.outputs.own_status.send_if_modified(|own| {
            let changed = own.as_ref() != Some(&status);
            if changed {
                *own = Some(status.clone());
            }
            changed
        });
        let changed = self.published.as_ref().is_none_or(|last| !same_standing(last, &status));
        let since = self.last_publish.elapsed();
        let moved = self.published.as_ref().is_some_and(|last| last.height != status.height)
            && since >= self.policies.probe_interval / 2;
        let every = self.publish_every();
        let until_paced = paced.saturating_duration_since(Instant::now());
        let early = if until_paced <= every / 3 { until_paced } else { Duration::ZERO };
        if !changed && !moved && since + early < every {
            return;
        }
        self.last_publish = Instant::now();
        self.published = Some(status.clone());
        self.executor.publish_status(status);
    }
}

/// Whether `b` tells the peers nothing `a` did not, but a newer height.
fn same_standing(a: &MemberStatus, b: &MemberStatus) -> bool {
    (a.kind, a.role, a.priority, a.healthy, a.epoch, a.height.is_some())
        == (b.kind, b.role, b.priority, b.healthy, b.epoch, b.height.is_some())
}

/// How a takeover counts in the failover metrics.
fn failover_reason(provenance: Provenance) -> FailoverReason {
    match provenance {
        Provenance::Planned => FailoverReason::Planned,
        Provenance::Forced => FailoverReason::Forced,
        Provenance::Unplanned => FailoverReason::Unplanned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Epoch, MemberId, MemberKind, RoleName};

    fn status() -> MemberStatus {
        MemberStatus {
            member: MemberId::new("b").expect("id"),
            kind: MemberKind::Producer,
            role: RoleName::Standby,
            priority: 100,
            height: Some(10),
            healthy: true,
            epoch: None,
        }
    }

    /// A newer height alone waits for the next regular publish; anything a peer decides on
    /// goes out at once.
    #[test]
    fn a_new_height_alone_is_not_a_change_of_standing_but_role_health_and_epoch_are() {
        let base = status();
        assert!(same_standing(&base, &MemberStatus { height: Some(11), ..status() }));
        for changed in [
            MemberStatus { role: RoleName::Promoting, ..status() },
            MemberStatus { healthy: false, ..status() },
            MemberStatus { epoch: Some(Epoch::new(3)), ..status() },
            MemberStatus { priority: 50, ..status() },
            MemberStatus { height: None, ..status() },
        ] {
            assert!(!same_standing(&base, &changed), "{changed:?} is a change of standing");
        }
    }
}
