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
use std::sync::Arc;
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
        let task = match action {
            Action::Acquire => tokio::spawn(async move { actions::acquire(&cx, deadline).await }.in_current_span()),
            Action::TakeOver { holder, epoch } => {
                tokio::spawn(async move { actions::take_over(&cx, holder, epoch).await }.in_current_span())
            }
            Action::Renew { epoch } => {
                let lease = self.lease(epoch);
                tokio::spawn(async move { actions::renew(&cx, lease, deadline).await }.in_current_span())
            }
            Action::Checkpoint { epoch } => {
                tokio::spawn(async move { actions::checkpoint(&cx, epoch, deadline).await }.in_current_span())
            }
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
                tokio::spawn(async move { actions::run_guard(&cx, epoch, input).await }.in_current_span())
            }
            Action::Deactivate { epoch, why } => {
                tokio::spawn(async move { actions::deactivate(&cx, epoch, why).await }.in_current_span())
            }
            Action::Release { epoch } => {
                let (lease, known) = (self.lease(epoch), self.last_signed);
                tokio::spawn(async move { actions::release(&cx, lease, known).await }.in_current_span())
            }
            Action::Fence { why } => tokio::spawn(async move { actions::fence(&cx, why).await }.in_current_span()),
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // A task that panicked reports nothing but still frees its kind.
            let done = task.await.unwrap_or(fallback);
            let _ = tx.send(done);
        });
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
fn panicked(action: &Action, kind: ActionKind) -> Finished {
    match action.failure(String::from("its task panicked")) {
        Some(outcome) => Finished::with(kind, outcome),
        None => Finished::of(kind),
    }
}
