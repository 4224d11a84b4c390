//! `CoordinatorGate`: the [`SignGate`] of a member — this member may sign at HRS h only while it
//! holds a permission (epoch E, floor, deadline: set by the producer's activation, moved by each
//! renew, revoked on demotion or fence), h is above the floor, the deadline has not passed on
//! this machine's monotonic clock, and h's height lies inside a window of heights reserved under
//! E that the store confirmed (`reserve(E, key, end_of_height(top))` committed).
//!
//! Windows are planned by [`ReserveWindow`]: the first request of an epoch reserves and waits;
//! from then on the next window is reserved in the background while the current one still
//! covers the heights a commit takes, so a signature in steady state waits for no store round
//! trip. That reservation is asked for at a precommit and sent a quiet moment later
//! ([`ReserveWindow::quiet`]), so its log writes do not run beside the next signatures; until it
//! is sent it is only queued, and a drain, a revocation or a new epoch cancels it, so a planned
//! handover's watermark stays the top of the window being signed through. A new holder's floor
//! is at or above the top of every window (the watermark), so two members never sign one height,
//! with no timing assumption.
//!
//! It is called from the signer's connection threads and blocks them on the runtime only for a
//! reservation they must wait for; it never signs, and it answers "not active" without asking
//! the store when no epoch is set.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::signer::{GateRefusal, SignGate};
use super::window::{Plan, ReserveWindow};
use crate::coord::{CoordError, Coordinator, QueuedReservation, ReservationAnswer};
use crate::domain::{Epoch, Hrs, KeyId, MonoTime, Step, Watermark};
use crate::producer::Grant;

/// What the member may sign now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub epoch: Epoch,
    /// Never at or below this.
    pub floor: Hrs,
    /// Dead man's switch: nothing from this instant on unless extended.
    pub until: MonoTime,
}

impl From<Grant> for Permission {
    fn from(grant: Grant) -> Permission {
        Permission { epoch: grant.epoch, floor: grant.floor.0, until: grant.until }
    }
}

/// The permission and the current epoch's windows, under one lock.
struct GateState {
    permission: Option<Permission>,
    window: Option<ReserveWindow>,
    /// A reservation asked for at a precommit and waiting out the quiet: (epoch, top). Whoever
    /// takes it first decides: the task that sends it, or a drain, revocation or new epoch that
    /// cancels it.
    queued: Option<(Epoch, u64)>,
}

impl GateState {
    /// Cancels a queued reservation that was not sent: its heights count as not committed.
    fn cancel_queued(&mut self) {
        if let Some((epoch, top)) = self.queued.take()
            && let Some(window) = self.window.as_mut().filter(|w| w.epoch() == epoch)
        {
            window.answered(top, false, Duration::ZERO);
        }
    }

    /// Takes the queued reservation (`epoch`, `top`) for sending: `false` when it was cancelled,
    /// or the permission, epoch or drain changed during the quiet.
    fn take_queued(&mut self, epoch: Epoch, top: u64) -> bool {
        if self.queued != Some((epoch, top)) {
            return false;
        }
        let still_wanted = self.permission.is_some_and(|p| p.epoch == epoch)
            && self.window.as_ref().is_some_and(|w| w.epoch() == epoch && !w.draining());
        if still_wanted {
            self.queued = None;
        } else {
            self.cancel_queued();
        }
        still_wanted
    }
}

struct Shared {
    coord: Arc<dyn Coordinator>,
    /// The store holds a reservation ahead for a moment of its own
    /// ([`Coordinator::gathers_reservations_ahead`]): it is queued for that moment
    /// ([`Coordinator::queue_reserve_ahead`]), with no quiet before.
    gathered: bool,
    key: KeyId,
    state: Mutex<GateState>,
    /// Signalled whenever a background reservation is answered.
    answered: Condvar,
}

pub struct CoordinatorGate {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl CoordinatorGate {
    pub fn new(coord: Arc<dyn Coordinator>, key: KeyId, runtime: tokio::runtime::Handle, timeout: Duration) -> Self {
        let state = Mutex::new(GateState { permission: None, window: None, queued: None });
        let gathered = coord.gathers_reservations_ahead();
        let shared = Shared { coord, gathered, key, state, answered: Condvar::new() };
        CoordinatorGate { shared: Arc::new(shared), runtime, timeout }
    }

    fn state(&self) -> MutexGuard<'_, GateState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the permission; a new epoch starts with no window.
    pub fn permit(&self, permission: Permission) {
        let mut state = self.state();
        if state.window.as_ref().is_none_or(|w| w.epoch() != permission.epoch) {
            state.queued = None;
            state.window = Some(ReserveWindow::new(permission.epoch));
        }
        state.permission = Some(permission);
    }

    /// Moves the deadline of the current permission later; never grants one. Returns whether
    /// that revived a permission that had run out: only then need the threads that wait for it
    /// be woken (a thread sleeping until the earlier deadline reads the later one when it wakes).
    pub fn extend(&self, until: MonoTime) -> bool {
        // The clock is read under the lock, as `permission` reads it: a thread that saw the
        // permission run out saw it before this, so this sees it run out too and wakes it.
        let mut state = self.state();
        let now = MonoTime::now();
        let Some(p) = state.permission.as_mut() else { return false };
        let revived = p.until <= now && now < until;
        p.until = p.until.max(until);
        revived
    }

    pub fn revoke(&self) {
        let mut state = self.state();
        state.permission = None;
        state.window = None;
        state.queued = None;
        drop(state);
        self.shared.answered.notify_all();
    }

    /// The permission, if any and not past its deadline.
    pub fn permission(&self) -> Option<Permission> {
        self.state().permission.filter(|p| MonoTime::now() < p.until)
    }

    /// The highest height reserved and confirmed under the current permission's epoch.
    pub fn reserved_through(&self) -> Option<u64> {
        self.state().window.as_ref().and_then(ReserveWindow::committed)
    }

    /// The top of a reservation asked for in the background and not yet answered (queued for
    /// the quiet, or sent), if any.
    pub fn reservation_in_flight(&self) -> Option<u64> {
        self.state().window.as_ref().and_then(ReserveWindow::in_flight)
    }

    /// A planned handover: reserve nothing more, so that once the window is signed through the
    /// watermark is exactly the last height signed. Returns the height to sign through, once no
    /// reservation is in flight (`None`: nothing reserved).
    pub fn drain(&self) -> Option<u64> {
        let mut state = self.state();
        state.window.as_mut()?.drain();
        // An extension still waiting out the quiet is not sent: the handover signs through the
        // window already committed, and the successor starts right above it.
        state.cancel_queued();
        let deadline = std::time::Instant::now() + self.timeout;
        while state.window.as_ref().is_some_and(|w| w.in_flight().is_some()) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            state = self.shared.answered.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        state.window.as_ref().and_then(ReserveWindow::committed)
    }

    /// Whether a draining window was signed through: the node asked for the precommit of its
    /// top height, or beyond it.
    pub fn drained(&self) -> bool {
        self.state().window.as_ref().is_some_and(ReserveWindow::signed_through)
    }

    /// The plan for `hrs` under `epoch`, with how long an extension it asks for waits before it
    /// is sent (the quiet after a precommit), or `None` when the permission changed meanwhile.
    fn plan(&self, epoch: Epoch, hrs: Hrs) -> Option<(Plan, Duration)> {
        let mut state = self.state();
        let window = state.window.as_mut().filter(|w| w.epoch() == epoch)?;
        let now = std::time::Instant::now();
        let round_end = hrs.step == Step::Precommit;
        let plan = if round_end { window.plan_round_end(hrs.height, now) } else { window.plan(hrs.height, now) };
        if matches!(plan, Plan::Covered { .. }) && round_end {
            window.precommitting(hrs.height);
        }
        let quiet = if round_end { window.quiet() } else { Duration::ZERO };
        match plan {
            Plan::Covered { extend: Some(top) } => {
                window.sent(top, true);
                state.queued = Some((epoch, top));
            }
            Plan::Reserve { top } => window.sent(top, false),
            _ => {}
        }
        Some((plan, quiet))
    }

    /// Waits (bounded by the call timeout) until the background reservation is answered.
    fn await_in_flight(&self, epoch: Epoch) {
        let deadline = std::time::Instant::now() + self.timeout;
        let mut state = self.state();
        loop {
            let pending = state.window.as_ref().is_some_and(|w| w.epoch() == epoch && w.in_flight().is_some());
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !pending || left.is_zero() {
                return;
            }
            state = self.shared.answered.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Hands `reserve(epoch, key, end_of_height(top))` to a store that gathers reservations
    /// ahead, without waiting for it and without waking the runtime from this thread
    /// ([`Coordinator::queue_reserve_ahead`]): the store sends it at its next tick, as it would
    /// have held a task's. The window counts it in flight from now on, as
    /// [`Self::reserve_in_background`] does, and hears its answer the same way.
    fn queue_reservation(&self, epoch: Epoch, top: u64) {
        let shared = Arc::clone(&self.shared);
        if !shared.state.lock().unwrap_or_else(|e| e.into_inner()).take_queued(epoch, top) {
            shared.answered.notify_all();
            return;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let sent = std::time::Instant::now();
        let answered = Arc::clone(&shared);
        let answer: ReservationAnswer =
            Box::new(move |result| record_ahead(&answered, epoch, top, &result, sent.elapsed()));
        let reservation = QueuedReservation::new(epoch, shared.key.clone(), Hrs::end_of_height(top), deadline, answer);
        shared.coord.queue_reserve_ahead(reservation);
    }

    /// Sends `reserve(epoch, key, end_of_height(top))` `after` from now, without waiting for it.
    /// The window counts it in flight from now on, so nothing else is asked meanwhile.
    fn reserve_in_background(&self, epoch: Epoch, top: u64, after: Duration) {
        let shared = Arc::clone(&self.shared);
        let timeout = self.timeout;
        self.runtime.spawn(async move {
            if !after.is_zero() {
                // On the kernel's timer: tokio's wheel wakes the member twice for a quiet that
                // crosses one of its 64 ms slots, as most do.
                crate::kernel_timer::sleep(after).await;
            }
            let taken = shared.state.lock().unwrap_or_else(|e| e.into_inner()).take_queued(epoch, top);
            if !taken {
                // Cancelled during the quiet (a drain, a revocation, a new epoch): nothing is
                // sent, and whoever waits for the window hears so now.
                shared.answered.notify_all();
                return;
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let sent = std::time::Instant::now();
            let result = shared.coord.reserve_ahead(epoch, &shared.key, Hrs::end_of_height(top), deadline).await;
            record_ahead(&shared, epoch, top, &result, sent.elapsed());
        });
    }

    /// Reserves up to `top` and waits for the answer.
    fn reserve_now(&self, epoch: Epoch, top: u64) -> Result<(), GateRefusal> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let sent = std::time::Instant::now();
        let result = self.runtime.block_on(self.shared.coord.reserve(
            epoch,
            &self.shared.key,
            Hrs::end_of_height(top),
            deadline,
        ));
        record(&self.shared, epoch, top, &result, sent.elapsed());
        match result {
            Ok(_) => Ok(()),
            Err(CoordError::Refused(why)) => Err(GateRefusal::Watermark(why)),
            Err(e @ CoordError::NotHolder { .. }) => {
                // The store says another epoch is current: this member signs nothing more in
                // this epoch, and the connection closes at the node's next request, so the node
                // takes its next signer's dial instead of hearing refusals from this one.
                let mut state = self.state();
                if state.permission.is_some_and(|p| p.epoch == epoch) {
                    state.permission = None;
                    state.window = None;
                }
                Err(GateRefusal::NotHolder(e))
            }
            Err(e) => Err(GateRefusal::Unconfirmed(e)),
        }
    }
}

/// [`record`] for a reservation ahead, whose failure only the log tells: nobody waits on it.
fn record_ahead(shared: &Shared, epoch: Epoch, top: u64, result: &Result<Watermark, CoordError>, latency: Duration) {
    if let Err(e) = result {
        tracing::info!(%epoch, top, error = %e, "a reservation ahead was not confirmed; the next request reserves again");
    }
    record(shared, epoch, top, result, latency);
}

/// Notes the store's answer to a reservation up to `top` in the window of `epoch`.
fn record(shared: &Shared, epoch: Epoch, top: u64, result: &Result<Watermark, CoordError>, latency: Duration) {
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(window) = state.window.as_mut().filter(|w| w.epoch() == epoch) {
        window.answered(top, result.is_ok(), latency);
    }
    drop(state);
    shared.answered.notify_all();
}

impl SignGate for CoordinatorGate {
    fn may_sign(&self) -> bool {
        self.permission().is_some()
    }

    fn reserve(&self, hrs: Hrs) -> Result<(), GateRefusal> {
        let Some(Permission { epoch, floor, .. }) = self.permission() else {
            return Err(GateRefusal::NotActive);
        };
        if hrs <= floor {
            return Err(GateRefusal::BelowFloor { hrs, floor });
        }
        // At most: wait for a reservation in flight, then reserve once more.
        for _ in 0..3 {
            match self.plan(epoch, hrs) {
                None => return Err(GateRefusal::DemotedWhileReserving),
                Some((Plan::Covered { extend }, quiet)) => {
                    if let Some(top) = extend {
                        match self.shared.gathered {
                            true => self.queue_reservation(epoch, top),
                            false => self.reserve_in_background(epoch, top, quiet),
                        }
                    }
                    return Ok(());
                }
                Some((Plan::AwaitInFlight, _)) => self.await_in_flight(epoch),
                Some((Plan::Drained, _)) => return Err(GateRefusal::HandingOver { hrs }),
                Some((Plan::Reserve { top }, _)) => {
                    self.reserve_now(epoch, top)?;
                    // Demoted while the reservation was in flight: the reservation stands (the
                    // watermark only rises), but this member no longer signs.
                    if self.permission().is_none_or(|p| p.epoch != epoch) {
                        return Err(GateRefusal::DemotedWhileReserving);
                    }
                }
            }
        }
        Err(GateRefusal::Unconfirmed(CoordError::Timeout { operation: "reserve" }))
    }
}
