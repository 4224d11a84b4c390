//! Carries out the actions `role` decides: at most one task per [`ActionKind`] at a time
//! (renewals overlap, paced by `role`), each an async fn in `actions` that
//! returns a [`Finished`] through a channel. The loop applies what comes back; a task never
//! touches the loop's state.
//!
//! Owns the in-flight set and the action memory the effects need: the leases this run was
//! granted (to renew and release them), the last height the producer reported signing (for a
//! release's final watermark), the outcomes not yet shown to `role`, and the courier that
//! publishes this member's status, one call at a time and newest first.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use tracing::Instrument;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::actions;
use super::parts::{Effects, Member, Outputs, Policies};
use crate::coord::courier::Courier;
use crate::domain::{Epoch, Lease, MemberId, MemberStatus, MonoTime, Watermark};
use crate::guard::GuardInput;
use crate::role::{Action, Outcome};

/// The kinds of action; one of each runs at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum ActionKind {
    Acquire,
    Renew,
    Checkpoint,
    Guard,
    Deactivate,
    Release,
    Fence,
}

impl ActionKind {
    pub fn of(action: &Action) -> ActionKind {
        match action {
            // A takeover is an acquire by other means: never both at once.
            Action::Acquire | Action::TakeOver { .. } => ActionKind::Acquire,
            Action::Renew { .. } => ActionKind::Renew,
            Action::Checkpoint { .. } => ActionKind::Checkpoint,
            Action::RunGuard { .. } => ActionKind::Guard,
            Action::Deactivate { .. } => ActionKind::Deactivate,
            Action::Release { .. } => ActionKind::Release,
            Action::Fence { .. } => ActionKind::Fence,
        }
    }
}

/// What an action task hands back when it ends.
#[derive(Debug)]
pub(super) struct Finished {
    pub kind: ActionKind,
    /// For `role`, in the next observation.
    pub outcome: Option<Outcome>,
    /// A lease the store granted or renewed.
    pub lease: Option<Lease>,
    /// With a grant: the key's watermark as of it (`None` inside: none stored).
    pub watermark_at_grant: Option<Option<Watermark>>,
    /// The last height the producer reported signing.
    pub last_signed: Option<u64>,
}

impl Finished {
    pub fn of(kind: ActionKind) -> Finished {
        Finished { kind, outcome: None, lease: None, watermark_at_grant: None, last_signed: None }
    }

    pub fn with(kind: ActionKind, outcome: Outcome) -> Finished {
        Finished { outcome: Some(outcome), ..Finished::of(kind) }
    }
}

/// What the action tasks share: read-only parts, no loop state.
#[derive(Clone)]
pub(super) struct ActionContext {
    pub member: Arc<Member>,
    pub policies: Arc<Policies>,
    pub effects: Arc<Effects>,
    pub outputs: Arc<Outputs>,
}

/// What the promotion guard needs from the loop's observation.
pub(super) struct GuardContext {
    pub cluster_best: Option<u64>,
    pub previous_holder: Option<MemberId>,
    pub planned: bool,
    /// The grant came by a fenced takeover: the fence command already ran.
    pub fenced_previous: bool,
}

pub(super) struct Executor {
    pub cx: ActionContext,
    tx: mpsc::UnboundedSender<Finished>,
    /// Where finished tasks report; the loop waits on it.
    pub finished: mpsc::UnboundedReceiver<Finished>,
    in_flight: HashSet<ActionKind>,
    leases: BTreeMap<Epoch, Lease>,
    /// The key's watermark as of each grant this run was given, for its promotion guard.
    granted_watermarks: BTreeMap<Epoch, Option<Watermark>>,
    last_signed: Option<u64>,
    outcomes: Vec<Outcome>,
    /// Renews that went through and wait for the next turn without waking the loop.
    parking: Arc<RenewParking>,
    /// This member's statuses, published in the order they were decided (a newer one replaces
    /// one not sent yet).
    statuses: Courier<MemberStatus>,
    stop_publishing: CancellationToken,
}

impl Executor {
    pub fn new(cx: ActionContext) -> Executor {
        let (tx, finished) = mpsc::unbounded_channel();
        let coord = Arc::clone(&cx.effects.coord);
        // One stuck call delays the next status by its timeout at most: never longer than a
        // standby's interval between statuses, which with Consul keeps its check passing (the
        // holder's own interval is half that; a stuck call may cost it one status).
        let timeout = cx.policies.call_timeout.min(cx.policies.status_every);
        let publish = move |status: MemberStatus| {
            let coord = Arc::clone(&coord);
            async move {
                let _ = coord.publish_status(&status, Instant::now() + timeout).await;
            }
        };
        let stop_publishing = CancellationToken::new();
        let statuses = Courier::start(publish, stop_publishing.clone());
        Executor {
            statuses,
            stop_publishing,
            cx,
            tx,
            finished,
            in_flight: HashSet::new(),
            leases: BTreeMap::new(),
            granted_watermarks: BTreeMap::new(),
            last_signed: None,
            outcomes: Vec::new(),
            parking: Arc::default(),
        }
    }

    /// Starts `action` unless one of its kind is running — except renews, which `role` paces
    /// (several may be in flight); `guard` is asked only for a promotion guard.
    pub fn dispatch(&mut self, action: Action, guard: impl FnOnce() -> GuardContext) {
        let kind = ActionKind::of(&action);
        if kind != ActionKind::Renew && !self.in_flight.insert(kind) {
            return;
        }
        let fallback = panicked(&action, kind);
        let cx = self.cx.clone();
        let deadline = Instant::now() + cx.policies.call_timeout;
        let task: ActionTask = match action {
            Action::Acquire => Box::pin(async move { actions::acquire(&cx, deadline).await }),
            Action::TakeOver { holder, epoch } => Box::pin(async move { actions::take_over(&cx, holder, epoch).await }),
            Action::Renew { epoch } => {
                let lease = self.lease(epoch);
                Box::pin(async move { actions::renew(&cx, lease, deadline).await })
            }
            Action::Checkpoint { epoch } => Box::pin(async move { actions::checkpoint(&cx, epoch, deadline).await }),
            Action::RunGuard { epoch } => {
                let GuardContext { cluster_best, previous_holder, planned, fenced_previous } = guard();
                let input = GuardInput {
                    lease: self.lease(epoch),
                    cluster_best,
                    previous_holder,
                    planned,
                    fenced_previous,
                    watermark_at_grant: self.granted_watermarks.get(&epoch).copied(),
                };
                Box::pin(async move { actions::run_guard(&cx, epoch, input).await })
            }
            Action::Deactivate { epoch, why } => Box::pin(async move { actions::deactivate(&cx, epoch, why).await }),
            Action::Release { epoch } => {
                let (lease, known) = (self.lease(epoch), self.last_signed);
                Box::pin(async move { actions::release(&cx, lease, known).await })
            }
            Action::Fence { why } => Box::pin(async move { actions::fence(&cx, why).await }),
        };
        let (tx, parking) = (self.tx.clone(), Arc::clone(&self.parking));
        tokio::spawn(
            async move {
                // A task that panicked reports nothing but still frees its kind.
                let done = unless_panicked(task).await.unwrap_or(fallback);
                if let Some(done) = parking.park(done) {
                    let _ = tx.send(done);
                }
            }
            .in_current_span(),
        );
    }

    /// Lets a renew of `epoch` that goes through wait for the loop's next turn without waking
    /// it (`None`: every outcome wakes it). The loop says so after each turn
    /// ([`super::pace::renews_may_wait`], a rule that holds until its next turn).
    pub fn park_renews_of(&self, epoch: Option<Epoch>) {
        self.parking.open_for(epoch);
    }

    /// Applies the renews parked for this turn; until [`Self::park_renews_of`] says again,
    /// every outcome wakes the loop.
    pub fn unpark(&mut self) {
        for done in self.parking.close() {
            self.apply(done);
        }
    }

    /// Applies what a finished task handed back.
    pub fn apply(&mut self, done: Finished) {
        if let Some(o) = done.outcome {
            self.outcomes.push(o);
        }
        if let Some(l) = done.lease {
            if let Some(w) = done.watermark_at_grant {
                self.granted_watermarks.insert(l.epoch, w);
            }
            self.leases.insert(l.epoch, l);
            // Keep only the newest few: older epochs are never used again.
            while self.leases.len() > 4 {
                self.leases.pop_first();
            }
            while self.granted_watermarks.len() > 4 {
                self.granted_watermarks.pop_first();
            }
        }
        self.note_last_signed(done.last_signed);
        self.in_flight.remove(&done.kind);
    }

    /// An outcome from outside the executor (a fence notice).
    pub fn push_outcome(&mut self, outcome: Outcome) {
        self.outcomes.push(outcome);
    }

    /// The outcomes `role` has not seen yet, oldest first.
    pub fn take_outcomes(&mut self) -> Vec<Outcome> {
        std::mem::take(&mut self.outcomes)
    }

    pub fn note_last_signed(&mut self, height: Option<u64>) {
        if height.is_some() {
            self.last_signed = height;
        }
    }

    pub fn last_signed(&self) -> Option<u64> {
        self.last_signed
    }

    /// The lease granted at `epoch`, when this run was granted it.
    pub fn known_lease(&self, epoch: Epoch) -> Option<Lease> {
        self.leases.get(&epoch).cloned()
    }

    /// The lease at `epoch`; one the store says this member holds but this run was never
    /// granted is named by its epoch alone (the store checks holder and epoch).
    fn lease(&self, epoch: Epoch) -> Lease {
        self.known_lease(epoch).unwrap_or(Lease {
            holder: self.cx.member.id.clone(),
            epoch,
            ttl: self.cx.policies.role.lease_ttl,
            valid_until: MonoTime::ZERO,
        })
    }

    /// Publishes this member's status; advisory, so nobody waits for it. One publish runs at a
    /// time, so a store or peer never applies an older status after a newer one.
    pub fn publish_status(&self, status: MemberStatus) {
        self.statuses.put(status);
    }

    /// Ends publishing, also a call in flight: the loop stopped and the store shuts down next
    /// (with Consul, a late publish would open a new session for a member that is leaving).
    pub fn stop_publishing(&self) {
        self.stop_publishing.cancel();
    }
}

/// What a task that panicked hands back (only in-process runs get here: the binary aborts on a
/// panic after fencing): its kind is free again, and `role` hears that the action failed, so
/// no state waits for an outcome that never comes.
/// An action's work, run by its task.
type ActionTask = std::pin::Pin<Box<dyn Future<Output = Finished> + Send>>;

/// Runs `task` to its end; `None` when it panicked (the panic hook has logged it).
async fn unless_panicked<T>(task: impl Future<Output = T>) -> Option<T> {
    let mut task = std::pin::pin!(task);
    std::future::poll_fn(move |cx| match std::panic::catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx))) {
        Ok(Poll::Ready(done)) => Poll::Ready(Some(done)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(_) => Poll::Ready(None),
    })
    .await
}

/// Renews that went through and may wait for the loop's next turn: kept here instead of
/// waking the loop, which takes them at its next wake-up. With many validators, each holder's
/// renews several times a second woke its loop once more each, for nothing.
#[derive(Default)]
pub(super) struct RenewParking {
    lot: Mutex<Lot>,
}

#[derive(Default)]
struct Lot {
    /// The epoch whose renews may wait; `None` while the loop turns and whenever its rule says
    /// no.
    epoch: Option<Epoch>,
    parked: Vec<Finished>,
}

impl RenewParking {
    fn lot(&self) -> std::sync::MutexGuard<'_, Lot> {
        self.lot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_for(&self, epoch: Option<Epoch>) {
        self.lot().epoch = epoch;
    }

    /// Keeps `done` if it is a renew of the epoch that may wait; otherwise hands it back.
    fn park(&self, done: Finished) -> Option<Finished> {
        let mut lot = self.lot();
        match &done.outcome {
            Some(Outcome::Renewed { epoch, .. }) if lot.epoch == Some(*epoch) => {
                lot.parked.push(done);
                None
            }
            _ => Some(done),
        }
    }

    /// What is parked, closing the lot at the same moment: a renew that ends while the loop
    /// turns wakes it, so none is left behind for a turn that may come only at its deadline.
    fn close(&self) -> Vec<Finished> {
        let mut lot = self.lot();
        lot.epoch = None;
        std::mem::take(&mut lot.parked)
    }
}

fn panicked(action: &Action, kind: ActionKind) -> Finished {
    match action.failure(String::from("its task panicked")) {
        Some(outcome) => Finished::with(kind, outcome),
        None => Finished::of(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renewed(epoch: u64) -> Finished {
        let outcome = Outcome::Renewed { epoch: Epoch::new(epoch), valid_until: MonoTime::from_nanos(1) };
        Finished::with(ActionKind::Renew, outcome)
    }

    // Only a renew of the epoch the loop opened the lot for waits there; a failed renew or a
    // renew of another epoch wakes the loop. Closing hands over what waited and, until the
    // loop opens it again, nothing more waits: no renew is left for a turn that comes late.
    #[test]
    fn only_renews_the_loop_said_may_wait_are_parked_and_none_after_it_closed() {
        let parking = RenewParking::default();
        assert!(parking.park(renewed(5)).is_some(), "parked before the loop opened the lot");
        parking.open_for(Some(Epoch::new(5)));
        assert!(parking.park(renewed(5)).is_none());
        assert!(parking.park(renewed(4)).is_some(), "a renew of another epoch was parked");
        let failed = Outcome::RenewFailed { epoch: Epoch::new(5), error: "refused".into() };
        assert!(parking.park(Finished::with(ActionKind::Renew, failed)).is_some(), "a failed renew was parked");
        let handed = parking.close();
        assert_eq!(handed.len(), 1);
        assert!(parking.park(renewed(5)).is_some(), "parked while the loop turns");
        assert!(parking.close().is_empty());
    }

    #[tokio::test]
    async fn a_task_that_panics_is_reported_as_panicked_and_others_run_to_their_end() {
        assert_eq!(unless_panicked(async { 7 }).await, Some(7));
        let panicking = async {
            if std::hint::black_box(true) {
                panic!("test: an action panics");
            }
            7
        };
        assert_eq!(unless_panicked(panicking).await, None);
    }
}
