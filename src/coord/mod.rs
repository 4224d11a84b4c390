//! The coordination store's contract (docs/design.md §4): the [`Coordinator`] trait that the raft
//! and Consul backends implement and that one contract test suite checks.
//!
//! This module owns the contract, not a backend. It never decides roles (that is `role`) and
//! never touches a producer; a backend only stores the lease, the watermarks and the operator
//! intents, and refuses writes that carry a stale epoch.
//!
//! Callers outside `coord` start a backend with [`start`] and hold it as `Arc<dyn Coordinator>`:
//! what they need beyond the store's contents (readiness, `failoverctl status`, a failed store,
//! shutdown) is in the trait, so no caller names a backend type.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::domain::{Epoch, Hrs, KeyId, Lease, LeaseView, MemberId, MemberStatus, Watermark, WatermarkRefusal};

pub mod consul;
pub(crate) mod courier;
mod queued_reservation;
pub mod raft;
mod start;

pub use queued_reservation::{QueuedReservation, ReservationAnswer};
pub use start::{StartError, StartOptions, ValidatorStore, start, start_validators};

/// Operator intents, replicated through the store so that every member sees the same ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Intents {
    /// Maintenance mode: nothing happens automatically (docs/design.md §7).
    pub paused: bool,
    /// A planned switchover in progress.
    pub transfer: Option<Transfer>,
}

/// A planned switchover: the holder at `epoch` hands over to `to`. Bound to the epoch so that a
/// stale request can never move a later holder.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Transfer {
    pub to: MemberId,
    pub epoch: Epoch,
    /// Named by `promote --force`: the previous holder did not hand over, so the target's guard
    /// treats it as unplanned (STONITH, the full floor margin).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

/// What [`Coordinator::acquire_with_watermark`] and [`Coordinator::take_over`] grant: the lease,
/// and the watermark of the key the grantee signs with as the store had it at the grant (`None`:
/// none stored). Linearizable with the grant: every write acknowledged before it is in it, and
/// every later write of an earlier epoch is refused, so the promotion guard's floor needs no
/// second read of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub lease: Lease,
    pub watermark: Option<Watermark>,
}

/// A holding as the store shows it, bound to a `stamp` that changes whenever the holding does in
/// a way that proves the holder alive: raft counts its grants and log renews (signer mode renews
/// outside the log and moves it only by a grant, so it takes no fenced takeover); Consul's is the
/// lock's ModifyIndex, which a lock, unlock or release changes (a Consul renew writes nothing).
/// What a fenced takeover names, so that it moves exactly the holding its caller fenced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    pub holder: MemberId,
    pub epoch: Epoch,
    pub stamp: u64,
}

/// What [`Coordinator::watch`] delivers: the latest lease and intents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreView {
    pub lease: LeaseView,
    pub intents: Intents,
    /// Whether the lease and intents are the store's as it answers now: with raft, this member
    /// follows a known leader and has applied everything it knows to be committed; with Consul,
    /// the leader key was read. Before that (a start, a raft election, a member catching up), a
    /// free lease may only be the empty state of a member that has not heard the log yet, and a
    /// lease that no member could be granted: the loop treats the view as unknown, so no standby
    /// spends its priority wait against a store that cannot grant anything.
    pub current: bool,
}

/// One member's published status as seen by the reader, with its age measured on the reader's
/// monotonic clock (clocks of different machines are never compared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    pub status: crate::domain::MemberStatus,
    pub age: Duration,
}

/// Why a store operation failed. `Timeout` and `Unavailable` mean "outcome unknown": the write
/// may still take effect, and callers must act as if it might have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    #[error("the lease is held by {holder} at epoch {epoch}; wait for it to be released or to expire")]
    LeaseHeld { holder: MemberId, epoch: Epoch },
    /// An acquire refused because the lease moved on (to `epoch`) while it was in flight: raft
    /// refuses an acquire that names an epoch this member saw before the store moved on, Consul
    /// one whose lock was freed again before it was confirmed. The outcome is known: nothing was
    /// granted. Unlike `Unavailable`, the store answered.
    #[error("the lease moved on to epoch {epoch} while this acquire was in flight, so nothing was granted; ask again")]
    LeaseMoved { epoch: Epoch },
    #[error("this member does not hold the lease at epoch {epoch} (the store has {current}); stop producing")]
    NotHolder { epoch: Epoch, current: LeaseView },
    #[error(transparent)]
    Refused(#[from] WatermarkRefusal),
    #[error("no watermark is stored for key {0}; import one with `failoverctl watermark import` before producing")]
    NoWatermark(KeyId),
    #[error("the store did not answer before the deadline ({operation}); the outcome is unknown")]
    Timeout { operation: &'static str },
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the request was refused: {0}")]
    Invalid(String),
    /// One entry of an import batch was refused, so the whole batch changed nothing.
    #[error("the import changed nothing: the entry for key {key} was refused: {reason}")]
    ImportRefused { key: KeyId, reason: WatermarkRefusal },
}

/// The watermarks an import leaves, in the order of `entries`, given each key's current one
/// (`None`: none stored): the one rule both backends apply and the control API's dry run
/// previews. All or nothing: refuses the whole batch when it is empty, names a key twice, or any
/// entry would lower its key's watermark or pass [`crate::domain::IMPORT_HEIGHT_CEILING`].
/// An entry equal to its key's watermark leaves it as it is.
pub fn plan_import(
    entries: &[(KeyId, Hrs)],
    current: impl Fn(&KeyId) -> Option<Watermark>,
) -> Result<Vec<Watermark>, CoordError> {
    if entries.is_empty() {
        return Err(CoordError::Invalid("an import names no key; give at least one entry".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (key, _) in entries {
        if !seen.insert(key) {
            return Err(CoordError::Invalid(format!(
                "key {key} appears more than once in one import; send only its highest entry"
            )));
        }
    }
    entries
        .iter()
        .map(|(key, hrs)| {
            current(key)
                .unwrap_or(Watermark::ZERO)
                .import(*hrs)
                .map_err(|reason| CoordError::ImportRefused { key: key.clone(), reason })
        })
        .collect()
}

/// What a backend says about itself, beyond the store's contents: plain data for `/readyz`,
/// `failoverctl status` and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendStatus {
    /// Set once the store failed on this member for good, with why (raft: its node stopped
    /// because its storage or its timer failed). Every call fails from then on; the daemon deactivates and stops.
    pub failed: Option<String>,
    /// The embedded raft quorum as this member sees it; `None` with an external store (Consul),
    /// whose health shows only in whether it answers.
    pub raft: Option<RaftStatus>,
}

/// This member's view of the embedded raft quorum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftStatus {
    /// The leader this member knows of; `None` while no leader is known (a majority unreachable).
    pub leader: Option<MemberId>,
    pub is_leader: bool,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
}

/// The coordination store. All methods are bounded by `deadline`, except the four about the
/// backend itself ([`Coordinator::status`], [`Coordinator::failed`],
/// [`Coordinator::register_metrics`], [`Coordinator::shutdown`]).
///
/// Contract, for every implementation (checked by the contract suite in `tests/`):
/// - A method MUST return by its deadline; if the outcome is unknown then, it returns
///   [`CoordError::Timeout`]. Callers treat an unknown outcome as "may have happened".
/// - Epochs strictly increase across grants; a write carrying an epoch other than the
///   current one is refused with [`CoordError::NotHolder`] or [`WatermarkRefusal::StaleEpoch`].
/// - A watermark never decreases (S3), whatever the sequence of calls, restarts and leader
///   changes.
/// - Expiry is decided only by the store's own monotonic timers, never by a member's clock.
#[async_trait]
pub trait Coordinator: Send + Sync {
    /// Takes the lease for `member`. MUST succeed only when nobody holds it (never granted,
    /// released or expired) — a pending transfer does not lift this: the old holder releases
    /// first. The returned epoch MUST be greater than every epoch granted before. Clears any
    /// pending transfer.
    async fn acquire(&self, member: &MemberId, deadline: Instant) -> Result<Lease, CoordError>;

    /// [`Coordinator::acquire`], answering also with `key`'s watermark as of the grant, in the
    /// same store operation (see [`LeaseGrant`]): a takeover is one commit.
    async fn acquire_with_watermark(
        &self,
        member: &MemberId,
        key: &KeyId,
        deadline: Instant,
    ) -> Result<LeaseGrant, CoordError>;

    /// The current holding with its stamp, or `None` when the lease is free (linearizable).
    async fn holding(&self, deadline: Instant) -> Result<Option<Holding>, CoordError>;

    /// A fenced takeover (docs/design.md §5): grants `member` the lease at a new epoch while
    /// `fenced` — holder, epoch and stamp, as [`Coordinator::holding`] showed it before the
    /// caller's `fence_command` confirmed the holder's node dead — is still exactly the current
    /// holding. Anything else (the lease moved on, was released, or the holder refreshed it
    /// since) is refused with [`CoordError::LeaseMoved`] and changes nothing. Only a member that
    /// ran the fence command successfully may call it: the store cannot tell a fenced holder from
    /// a live one, the fence command does. Clears any pending transfer, like an acquire.
    async fn take_over(
        &self,
        member: &MemberId,
        key: &KeyId,
        fenced: &Holding,
        deadline: Instant,
    ) -> Result<LeaseGrant, CoordError>;

    /// Extends `lease`. MUST be refused unless `lease` is the current holder at the current
    /// epoch. The returned lease's `valid_until` is computed from the send time of this call.
    /// Raft in signer mode refreshes the raft leader's expiry timer outside the log: a leader
    /// deposed without knowing it may accept one until check-quorum steps it down, which no
    /// double sign rests on there (docs/design.md §4).
    async fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Lease, CoordError>;

    /// Gives the lease up, first raising the key's watermark to `final_watermark` (the last
    /// HRS the producer signed) under the lease's epoch. Same holder rule as `renew`.
    async fn release(
        &self,
        lease: &Lease,
        final_watermark: Option<(KeyId, Hrs)>,
        deadline: Instant,
    ) -> Result<(), CoordError>;

    /// Signer mode, before every signature: advance `key`'s watermark to `hrs`. MUST be refused
    /// unless `epoch` is current and `hrs` is strictly above the watermark. On `Ok` the
    /// reservation is durable on a quorum.
    async fn reserve(&self, epoch: Epoch, key: &KeyId, hrs: Hrs, deadline: Instant) -> Result<Watermark, CoordError>;

    /// `reserve` for a window ahead that no signature waits on yet: same rule and same answer,
    /// but the store may hold it a moment to commit it together with other validators' work
    /// (raft gathers it into the next tick's batch). By default, `reserve`.
    async fn reserve_ahead(
        &self,
        epoch: Epoch,
        key: &KeyId,
        hrs: Hrs,
        deadline: Instant,
    ) -> Result<Watermark, CoordError> {
        self.reserve(epoch, key, hrs, deadline).await
    }

    /// Whether [`Coordinator::reserve_ahead`] waits for a moment of the store's own (raft's next
    /// tick) to leave with others: the signer then sends it at once, since a quiet of its own
    /// before would only add to that wait.
    fn gathers_reservations_ahead(&self) -> bool {
        false
    }

    /// [`Coordinator::reserve_ahead`] from a thread outside the runtime, without waking it: a
    /// store that [gathers reservations ahead](Coordinator::gathers_reservations_ahead) takes
    /// the reservation with the work it sends at its own moment, and answers it then. Only asked
    /// of such a store; any other drops it, which answers that it was not sent.
    fn queue_reserve_ahead(&self, reservation: QueuedReservation) {
        drop(reservation);
    }

    /// Key-holding mode: raise `key`'s watermark to the end of `height`. Same epoch rule; a
    /// height at or below the watermark leaves it unchanged.
    async fn checkpoint(
        &self,
        epoch: Epoch,
        key: &KeyId,
        height: u64,
        deadline: Instant,
    ) -> Result<Watermark, CoordError>;

    /// `key`'s watermark, or `None` when none was ever stored. Reads MUST be linearizable:
    /// a watermark read under epoch E reflects every write acknowledged before.
    async fn watermark(&self, key: &KeyId, deadline: Instant) -> Result<Option<Watermark>, CoordError>;

    /// An operator's import, as ONE store command, all or nothing: each key's watermark moves
    /// up to its entry's HRS. MUST follow [`plan_import`] against the watermarks at the moment
    /// the command takes effect: when any entry is refused (it would lower its key's watermark,
    /// passes the import ceiling, or its key appears twice) nothing changes. Returns the
    /// watermarks after, in the order of `entries`. Needs no lease.
    async fn import_watermarks(
        &self,
        entries: &[(KeyId, Hrs)],
        deadline: Instant,
    ) -> Result<Vec<Watermark>, CoordError>;

    /// The lease as the store sees it now (linearizable).
    async fn lease(&self, deadline: Instant) -> Result<LeaseView, CoordError>;

    /// The operator intents as the store sees them now.
    async fn intents(&self, deadline: Instant) -> Result<Intents, CoordError>;

    /// A change stream of the lease and intents. Delivers the latest view, not every step.
    fn watch(&self) -> watch::Receiver<StoreView>;

    /// Publishes this member's status. Advisory: not part of the replicated log.
    async fn publish_status(&self, status: &MemberStatus, deadline: Instant) -> Result<(), CoordError>;

    /// The latest status each member published, with its age.
    async fn cluster_status(&self, deadline: Instant) -> Result<Vec<StatusReport>, CoordError>;

    /// Whether [`Coordinator::cluster_status`] answers from this process's memory (peers push
    /// their statuses here), so a read never waits on, or fails with, a remote call: the daemon
    /// then reads it once per status cadence instead of polling.
    fn statuses_are_local(&self) -> bool {
        false
    }

    /// [`Coordinator::cluster_status`] read from this process's memory, when the statuses are
    /// there ([`Coordinator::statuses_are_local`]): a loop turn reads it itself, with no task
    /// between. `None` for a store read over the network.
    fn local_cluster_status(&self) -> Option<Vec<StatusReport>> {
        None
    }

    /// Maintenance mode on or off.
    async fn set_paused(&self, paused: bool, deadline: Instant) -> Result<(), CoordError>;

    /// Asks the current holder (at the current epoch) to hand over to `to`.
    async fn request_transfer(&self, to: &MemberId, deadline: Instant) -> Result<Transfer, CoordError>;

    /// `promote --force`: like [`Coordinator::request_transfer`], and also when the lease is
    /// free, naming `to` the next holder (bound to the last epoch). Never frees a held lease: `to`
    /// still acquires only once the holder released or the store expired it.
    async fn request_forced_transfer(&self, to: &MemberId, deadline: Instant) -> Result<Transfer, CoordError>;

    /// The backend's own state, now. MUST not wait on the store: readiness and status ask it.
    fn status(&self) -> BackendStatus;

    /// Resolves, with the reason, once the store has failed on this member for good (the same
    /// reason [`BackendStatus::failed`] shows); never resolves otherwise.
    async fn failed(&self) -> String;

    /// Adds the counters the backend keeps itself to the member's metrics registry (raft: the
    /// peer requests it refused).
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry);

    /// Stops the backend's tasks and gives up what this member holds in the store by being
    /// connected (Consul: its session, with the locks it holds). Waits for them to end.
    async fn shutdown(&self);
}
