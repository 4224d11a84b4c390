//! The promotion guard (docs/design.md §6), the watermark floor, and the self-fence deadline thread.
//!
//! A standby activates only after every step holds, in order: (1) it holds the lease at epoch
//! E; (2) its node is healthy and within `max_lag_on_failover` of the best height; (3) the
//! optional `fence_command` against the previous holder succeeded (or, in a fenced takeover,
//! already did before the grant); (4) it has the watermark under E — as of the grant, which
//! answered with it, or read now — and computed the floor ([`promotion_floor`]: the watermark and the chain height plus
//! `floor_margin`, the margin dropped only where the store proves what the previous holder
//! signed); (5) the producer confirmed activation. Each step's outcome is recorded in a
//! [`GuardReport`] and logged. Any failure stops the guard: the caller deactivates and releases.
//! This module never decides *whether* to promote; `role` does, and it never lowers a floor
//! below the watermark it read.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::chain::ChainProbe;
use crate::coord::Coordinator;
use crate::domain::{Hrs, KeyId, Lease, MemberId, MonoTime, Watermark};
use crate::producer::{Grant, Producer, SignFloor};

/// The guard's steps, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardStep {
    LeaseHeld,
    NodeHealthy,
    FencePrevious,
    WatermarkFloor,
    Activate,
}

impl std::fmt::Display for GuardStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GuardStep::LeaseHeld => "lease_held",
            GuardStep::NodeHealthy => "node_healthy",
            GuardStep::FencePrevious => "fence_previous",
            GuardStep::WatermarkFloor => "watermark_floor",
            GuardStep::Activate => "activate",
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    pub step: GuardStep,
    pub ok: bool,
    pub detail: String,
    pub elapsed_ms: u64,
}

/// What the guard did, step by step.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GuardReport {
    pub epoch: u64,
    pub steps: Vec<StepRecord>,
    pub floor: Option<Hrs>,
}

impl GuardReport {
    pub fn failed_step(&self) -> Option<&StepRecord> {
        self.steps.iter().find(|s| !s.ok)
    }
}

/// Thresholds from the config.
#[derive(Clone, Debug)]
pub struct GuardPolicy {
    pub max_lag_on_failover: u64,
    pub floor_margin: u64,
    pub fence_command: Option<Vec<String>>,
    pub fence_command_timeout: Duration,
    pub call_timeout: Duration,
}

/// What the guard needs to know about this promotion.
pub struct GuardInput {
    pub lease: Lease,
    /// The best height known from other members' fresh statuses.
    pub cluster_best: Option<u64>,
    pub previous_holder: Option<MemberId>,
    /// A planned handover: the previous holder was asked to deactivate and release with its
    /// last signed height. Alone it drops no margin ([`promotion_floor`] says when it may).
    pub planned: bool,
    /// The lease came by a fenced takeover: `fence_command` fenced the previous holder before
    /// the store granted it, so step 3 has nothing left to do.
    pub fenced_previous: bool,
    /// The key's watermark as of the grant, when the grant answered with it (`Some(None)`: none
    /// stored). Read in the same store operation as the grant, it is what step 4 would read
    /// under epoch E, so step 4 takes it instead of a second round trip. `None`: step 4 reads.
    pub watermark_at_grant: Option<Option<Watermark>>,
}

/// The highest position that may already have been signed: the higher of the watermark and
/// the best chain height, plus `margin` whole heights for what an unplanned predecessor may
/// have signed after its last checkpoint.
pub fn sign_floor(watermark: Option<Watermark>, best_height: u64, margin: u64) -> Hrs {
    let base = watermark.map_or(Hrs::ZERO, |w| w.hrs).max(Hrs::end_of_height(best_height));
    if margin == 0 { base } else { Hrs::end_of_height(base.height.saturating_add(margin)) }
}

/// Why a promotion's floor is where it is: what [`promotion_floor`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloorBasis {
    /// Signer mode: the watermark is the top of every window an earlier holder reserved,
    /// and at a planned handover also its last signature (it drained the window).
    ExactReservation,
    /// A planned handover whose released watermark reaches the best chain height.
    ReleasedAtTip,
    /// Everything else: the higher of watermark and chain height, plus the margin.
    Margin(u64),
}

/// The floor of a promotion (guard step 4): nothing at or below it may be signed.
///
/// The margin covers signatures the previous holder may have made that the watermark does not
/// show: a key-holding node signs on its own and is only checkpointed now and then. It is
/// dropped in two cases only.
///
/// - **Signer mode** (`reserving`), planned or not: the floor is the watermark itself, without
///   the chain height or the margin. A signer-mode holder makes no signature
///   outside a window of heights whose reservation `reserve(E, key, end_of_height(top))` has
///   committed under its epoch E, and the store refuses a reservation whose epoch is not the
///   current one. The watermark read here under the new epoch (a linearizable read after the
///   grant) therefore lies at or above every HRS any earlier holder signed: windows committed
///   before the grant are in it, later ones were refused and never signed in. Signing strictly
///   above it is no double sign (S2), and the new holder's reservations only raise it (S3). The
///   chain height adds nothing (a height the chain passed without a reservation was not signed
///   by this key) and would skip the height the node asks for next; before a planned handover
///   the predecessor drains its window (reserves nothing more and signs through it), so the
///   watermark is its last signed height. This rests on every producer of this key reserving:
///   the members of one validator run one producer kind (a cluster mixing key-holding and
///   signer mode is not supported, docs/design.md §6). An unplanned takeover needs no margin
///   either: a holder that died mid-window signed nothing above the window's top, and the model
///   check (tests/model_check.rs) finds no double sign with the floor at the watermark over every
///   interleaving up to its bound, early takeovers and woken old holders included.
/// - **Planned handover, released watermark at the tip**: the previous holder stopped, then
///   released with its last signed height, and that record reaches the best chain height.
pub fn promotion_floor(
    watermark: Option<Watermark>,
    best_height: u64,
    margin: u64,
    planned: bool,
    reserving: bool,
) -> (Hrs, FloorBasis) {
    match watermark {
        Some(w) if reserving => (w.hrs, FloorBasis::ExactReservation),
        Some(w) if planned && w.hrs >= Hrs::end_of_height(best_height) => {
            (sign_floor(Some(w), best_height, 0), FloorBasis::ReleasedAtTip)
        }
        _ => (sign_floor(watermark, best_height, margin), FloorBasis::Margin(margin)),
    }
}

impl std::fmt::Display for FloorBasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FloorBasis::ExactReservation => f.write_str(
                "no margin: signer mode, the watermark is the top of every window reserved under an earlier epoch",
            ),
            FloorBasis::ReleasedAtTip => {
                f.write_str("no margin: a planned handover released at the chain's best height")
            }
            FloorBasis::Margin(m) => write!(f, "margin {m}"),
        }
    }
}

pub struct PromotionGuard<'a> {
    pub coord: &'a dyn Coordinator,
    pub producer: &'a dyn Producer,
    pub probe: &'a dyn ChainProbe,
    pub key: &'a KeyId,
    pub policy: &'a GuardPolicy,
    pub self_fence: &'a SelfFence,
    pub watchdog: &'a crate::watchdog_device::WatchdogDevice,
}

impl PromotionGuard<'_> {
    /// Runs steps 1–5. `Ok` means the producer is active above the floor.
    pub async fn run(&self, input: &GuardInput) -> Result<GuardReport, GuardReport> {
        let mut report = GuardReport { epoch: input.lease.epoch.get(), ..GuardReport::default() };
        let epoch = input.lease.epoch;
        let record = |report: &mut GuardReport, step, started: Instant, result: Result<String, String>| {
            let (ok, detail) = match result {
                Ok(d) => (true, d),
                Err(d) => (false, d),
            };
            tracing::info!(%epoch, %step, ok, %detail, "promotion guard step");
            report.steps.push(StepRecord { step, ok, detail, elapsed_ms: started.elapsed().as_millis() as u64 });
            ok
        };
        let deadline = || Instant::now() + self.policy.call_timeout;

        // 1. The lease is ours at epoch E and still valid on our clock.
        let t = Instant::now();
        let valid = MonoTime::now() < input.lease.valid_until;
        let r = if valid {
            Ok(format!("holding epoch {epoch}"))
        } else {
            Err(format!("the lease at epoch {epoch} is already past its validity"))
        };
        if !record(&mut report, GuardStep::LeaseHeld, t, r) {
            return Err(report);
        }

        // 2. Our node, probed now, is healthy and caught up.
        let t = Instant::now();
        let local = self.probe.probe(deadline()).await;
        let r = match &local {
            Err(e) => Err(format!("cannot probe the node: {e}")),
            Ok(s) if s.catching_up => Err(format!("the node is catching up at height {}", s.height)),
            Ok(s) => {
                let best = input.cluster_best.unwrap_or(0).max(s.height);
                let lag = best - s.height;
                if lag > self.policy.max_lag_on_failover {
                    Err(format!(
                        "the node is {lag} blocks behind the best height {best} (max_lag_on_failover {})",
                        self.policy.max_lag_on_failover
                    ))
                } else {
                    Ok(format!("height {}, lag {lag}", s.height))
                }
            }
        };
        if !record(&mut report, GuardStep::NodeHealthy, t, r) {
            return Err(report);
        }
        let local_height = local.as_ref().map(|s| s.height).unwrap_or(0);

        // 3. STONITH against the previous holder, when configured.
        let t = Instant::now();
        let r = match (&self.policy.fence_command, &input.previous_holder) {
            (Some(_), Some(previous)) if input.fenced_previous => {
                Ok(format!("done before the takeover: fence_command fenced {previous}"))
            }
            (Some(argv), Some(previous)) if !input.planned => {
                run_fence_command(argv, previous, self.policy.fence_command_timeout).await
            }
            (Some(_), _) => Ok("skipped: planned handover or no previous holder".to_string()),
            (None, _) => Ok("skipped: no fence_command configured".to_string()),
        };
        if !record(&mut report, GuardStep::FencePrevious, t, r) {
            return Err(report);
        }

        // 4. The watermark under epoch E, and the floor above everything that may be signed.
        let t = Instant::now();
        let (read, source) = match input.watermark_at_grant {
            Some(w) => (Ok(w), "as of the grant"),
            None => (self.coord.watermark(self.key, deadline()).await, "read under the new epoch"),
        };
        let r = match read {
            Err(e) => Err(format!("cannot read the watermark of {}: {e}", self.key)),
            Ok(w) => {
                let best = input.cluster_best.unwrap_or(0).max(local_height);
                // When the margin may be dropped, and why that is safe: `promotion_floor`.
                let reserving = self.producer.reserves_every_signature();
                let (floor, basis) = promotion_floor(w, best, self.policy.floor_margin, input.planned, reserving);
                report.floor = Some(floor);
                Ok(format!(
                    "watermark {} ({source}), best height {best}, {basis}: floor {floor}",
                    w.map_or("none".to_string(), |w| w.to_string())
                ))
            }
        };
        if !record(&mut report, GuardStep::WatermarkFloor, t, r) {
            return Err(report);
        }

        // 5. Activate, with the self-fence armed first so a hung activation is still fenced.
        let t = Instant::now();
        let floor = report.floor.unwrap_or(Hrs::ZERO);
        // The watchdog device (failover.watchdog) is armed first too; `required` refuses here.
        if let Err(e) = self.watchdog.arm(epoch, input.lease.valid_until).await {
            record(&mut report, GuardStep::Activate, t, Err(e.to_string()));
            return Err(report);
        }
        self.self_fence.arm(input.lease.valid_until);
        let grant = Grant { epoch, floor: SignFloor(floor), until: input.lease.valid_until };
        let r = match self.producer.activate(grant, deadline()).await {
            Ok(()) => Ok(format!("producing above {floor}")),
            Err(e) => Err(e.to_string()),
        };
        if !record(&mut report, GuardStep::Activate, t, r) {
            return Err(report);
        }
        Ok(report)
    }
}

/// Runs `fence_command` against `previous` (`{member}` replaced, `FAILOVERD_PREVIOUS_HOLDER` set).
pub async fn run_fence_command(argv: &[String], previous: &MemberId, timeout: Duration) -> Result<String, String> {
    let args: Vec<String> = argv.iter().map(|a| a.replace("{member}", previous.as_str())).collect();
    crate::operator_command::run(
        &args,
        &[("FAILOVERD_PREVIOUS_HOLDER", previous.to_string())],
        Instant::now() + timeout,
    )
    .await
    .map(|_| format!("fence_command fenced {previous}"))
    .map_err(|e| format!("fence_command: {e}"))
}

/// The self-fence deadline, watched by a dedicated OS thread: when the armed deadline passes,
/// the thread calls `producer.fence()` itself, so a stalled tokio runtime cannot keep a
/// producer alive (docs/design.md §6). While armed it sleeps on a `CLOCK_BOOTTIME` timer set to
/// the deadline, woken early only by arming, disarming, stopping or an urgent fence ([`Alarm`]);
/// an extension only moves the deadline later and wakes nothing.
#[derive(Clone)]
pub struct SelfFence {
    shared: Arc<(Mutex<FenceState>, Condvar)>,
    /// Wakes the thread from its timer wait (arm, disarm, stop, fence now).
    bell: Arc<std::os::unix::net::UnixStream>,
}

#[derive(Default)]
struct FenceState {
    deadline: Option<MonoTime>,
    fired: u64,
    stop: bool,
    /// Fence now, whatever the deadline (a panic is ending the process).
    now: bool,
    /// Times the thread came back from its timer wait, for tests: it is not woken per renew.
    woken: u64,
}

impl SelfFence {
    /// Starts the watcher thread for `producer`.
    pub fn start(
        producer: Arc<dyn Producer>,
        fence_timeout: Duration,
        notices: crate::fence_notice::FenceNotices,
    ) -> std::io::Result<SelfFence> {
        let shared = Arc::new((Mutex::new(FenceState::default()), Condvar::new()));
        let theirs = Arc::clone(&shared);
        let (alarm, bell) = Alarm::new()?;
        std::thread::Builder::new()
            .name("self-fence".into())
            .spawn(move || watch(&theirs, &alarm, producer.as_ref(), fence_timeout, &notices))?;
        Ok(SelfFence { shared, bell: Arc::new(bell) })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FenceState> {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the thread after a change of state: from the condvar, or from its timer wait. A
    /// full socket already holds a wake-up, so a failed write loses nothing.
    fn ring(&self) {
        self.shared.1.notify_all();
        let _ = std::io::Write::write(&mut &*self.bell, &[1]);
    }

    /// Arms (or moves) the deadline: the producer may be active until `until`.
    pub fn arm(&self, until: MonoTime) {
        self.state().deadline = Some(until);
        self.ring();
    }

    /// Moves an armed deadline after a renew; does nothing when disarmed. It never rings: the
    /// deadline only moves later, and the thread, woken by its timer at the earlier one, reads
    /// the later one and sleeps again. So the thread wakes about once per lease validity, not at
    /// every renew (several a second in signer mode).
    pub fn extend(&self, until: MonoTime) {
        if let Some(d) = self.state().deadline.as_mut() {
            *d = (*d).max(until);
        }
    }

    /// The producer is confirmed inactive: nothing to watch.
    pub fn disarm(&self) {
        self.state().deadline = None;
        self.ring();
    }

    pub fn armed_until(&self) -> Option<MonoTime> {
        self.state().deadline
    }

    /// How many times the thread fenced the producer.
    pub fn fired(&self) -> u64 {
        self.state().fired
    }

    /// Ends the thread once nothing is armed: a producer that may still be active keeps its
    /// deadline watched (and fenced when it passes) until the process itself ends.
    pub fn stop(&self) {
        self.state().stop = true;
        self.ring();
    }

    /// Has the thread fence the producer at once if it may be active, and waits up to `limit`
    /// for the fence to be done. Returns whether the producer is known inactive by then. For a
    /// process about to end on a panic: it must not leave a node signing behind it.
    pub fn fence_now(&self, limit: Duration) -> bool {
        let (lock, cv) = &*self.shared;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        if s.deadline.is_none() {
            return true;
        }
        let fired_before = s.fired;
        s.now = true;
        cv.notify_all();
        let _ = std::io::Write::write(&mut &*self.bell, &[1]);
        let end = std::time::Instant::now() + limit;
        while s.fired == fired_before {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            s = cv.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }
}

/// How long the thread waits before it looks again when its timer cannot be used (it never
/// could so far): the pace of a condvar on `CLOCK_MONOTONIC`, which stops during a suspend.
const CLOCK_RECHECK: Duration = Duration::from_millis(50);

/// The thread's wait for a deadline: a `CLOCK_BOOTTIME` timer, the deadline's own clock, which
/// also runs while the host is suspended (a condvar's does not), and the reading end of the
/// bell [`SelfFence::ring`] writes to. Nothing wakes the thread in between.
struct Alarm {
    timer: nix::sys::timerfd::TimerFd,
    bell: std::os::unix::net::UnixStream,
}

impl Alarm {
    /// The alarm and the bell's writing end.
    fn new() -> std::io::Result<(Alarm, std::os::unix::net::UnixStream)> {
        use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
        let timer = TimerFd::new(ClockId::CLOCK_BOOTTIME, TimerFlags::TFD_CLOEXEC)?;
        let (bell, ringer) = std::os::unix::net::UnixStream::pair()?;
        bell.set_nonblocking(true)?;
        ringer.set_nonblocking(true)?;
        Ok((Alarm { timer, bell }, ringer))
    }

    /// Sleeps until `until` on `CLOCK_BOOTTIME` or until the bell rings, whichever comes first.
    fn sleep_until(&self, until: MonoTime) {
        use std::os::fd::AsFd;

        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
        let ns = until.as_nanos().max(1);
        let at = TimeSpec::new((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64);
        let waited = self.timer.set(Expiration::OneShot(at), TimerSetTimeFlags::TFD_TIMER_ABSTIME).and_then(|()| {
            let mut fds =
                [PollFd::new(self.timer.as_fd(), PollFlags::POLLIN), PollFd::new(self.bell.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::NONE).map(|_| ())
        });
        match waited {
            Ok(()) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::error!(error = %e, "the self-fence timer failed; watching the deadline every 50 ms instead");
                std::thread::sleep(until.saturating_since(MonoTime::now()).min(CLOCK_RECHECK));
            }
        }
        // Setting the timer again clears an expiry; the bell is drained here.
        let mut buf = [0u8; 64];
        while matches!(std::io::Read::read(&mut &self.bell, &mut buf), Ok(n) if n > 0) {}
    }
}

fn watch(
    shared: &(Mutex<FenceState>, Condvar),
    alarm: &Alarm,
    producer: &dyn Producer,
    fence_timeout: Duration,
    notices: &crate::fence_notice::FenceNotices,
) {
    let (lock, cv) = shared;
    let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if s.stop && s.deadline.is_none() {
            return;
        }
        match s.deadline {
            None => s = cv.wait(s).unwrap_or_else(|p| p.into_inner()),
            Some(d) => {
                let now = MonoTime::now();
                let urgent = s.now;
                if now < d && !urgent {
                    drop(s);
                    alarm.sleep_until(d);
                    s = lock.lock().unwrap_or_else(|p| p.into_inner());
                    s.woken += 1;
                    continue;
                }
                drop(s);
                if urgent {
                    tracing::error!("the process is ending on a panic: fencing the producer first");
                } else {
                    tracing::error!(
                        "lease deadline passed with the producer possibly active: self-fencing from the deadline thread"
                    );
                }
                let result = producer.fence(fence_timeout);
                s = lock.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(()) => {
                        s.fired += 1;
                        if !urgent {
                            notices.send(
                                crate::fence_notice::FencedBy::DeadlineThread,
                                "the lease validity ended without a committed renew",
                            );
                        }
                        // Only disarm if nobody re-armed meanwhile with a later deadline; a fence
                        // on a panic is final.
                        if urgent || s.deadline.is_some_and(|cur| cur <= MonoTime::now()) {
                            s.deadline = None;
                        }
                        cv.notify_all();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "self-fence failed; retrying");
                        drop(s);
                        std::thread::sleep(Duration::from_millis(50));
                        s = lock.lock().unwrap_or_else(|p| p.into_inner());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::domain::{Epoch, Step};
    use crate::producer::{ProducerError, ProducerStatus};

    #[test]
    fn floor_is_the_higher_of_watermark_and_chain_plus_margin() {
        let w = |h, r, s| Some(Watermark { hrs: Hrs::new(h, r, s), epoch: Epoch::new(1) });
        assert_eq!(sign_floor(None, 100, 0), Hrs::end_of_height(100));
        assert_eq!(sign_floor(None, 100, 2), Hrs::end_of_height(102));
        assert_eq!(sign_floor(w(150, 0, Step::Prevote), 100, 0), Hrs::new(150, 0, Step::Prevote));
        assert_eq!(sign_floor(w(150, 0, Step::Prevote), 100, 1), Hrs::end_of_height(151));
        assert_eq!(sign_floor(w(90, 0, Step::Prevote), 100, 1), Hrs::end_of_height(101));
    }

    /// One line per case of `promotion_floor` (docs/design.md §5, guard step 4): (watermark,
    /// best height, margin, planned, reserving) → (floor, basis).
    #[test]
    fn the_margin_is_dropped_only_where_the_watermark_is_exact() {
        use FloorBasis::*;
        let w = |h, r, s| Some(Watermark { hrs: Hrs::new(h, r, s), epoch: Epoch::new(2) });
        type Case = (Option<Watermark>, u64, u64, bool, bool, Hrs, FloorBasis);
        let cases: &[Case] = &[
            // Signer mode, planned: the exact last reservation, even when the chain moved on.
            (w(100, 0, Step::Precommit), 101, 1, true, true, Hrs::new(100, 0, Step::Precommit), ExactReservation),
            (w(100, 2, Step::Prevote), 100, 1, true, true, Hrs::new(100, 2, Step::Prevote), ExactReservation),
            // Signer mode, unplanned: the watermark is still the top of every window reserved.
            (w(100, 0, Step::Precommit), 101, 1, false, true, Hrs::new(100, 0, Step::Precommit), ExactReservation),
            (w(100, u32::MAX, Step::Precommit), 103, 1, false, true, Hrs::end_of_height(100), ExactReservation),
            // Signer mode with no watermark: nothing proves what the key signed before.
            (None, 101, 1, true, true, Hrs::end_of_height(102), Margin(1)),
            // Signer mode, planned, a window's top (the end of a height) that the chain passed:
            // the predecessor drained its window, so its top is its last signature.
            (w(100, u32::MAX, Step::Precommit), 101, 1, true, true, Hrs::end_of_height(100), ExactReservation),
            (w(101, u32::MAX, Step::Precommit), 101, 1, true, true, Hrs::end_of_height(101), ExactReservation),
            // Key-holding, planned, released at the tip: no margin.
            (w(101, u32::MAX, Step::Precommit), 101, 1, true, false, Hrs::end_of_height(101), ReleasedAtTip),
            // Key-holding, planned, but the chain is past the release: the margin stays.
            (w(100, u32::MAX, Step::Precommit), 101, 1, true, false, Hrs::end_of_height(102), Margin(1)),
            // Key-holding, unplanned.
            (w(101, u32::MAX, Step::Precommit), 101, 2, false, false, Hrs::end_of_height(103), Margin(2)),
        ];
        for (i, &(wm, best, margin, planned, reserving, floor, basis)) in cases.iter().enumerate() {
            assert_eq!(promotion_floor(wm, best, margin, planned, reserving), (floor, basis), "case {i}");
            // Never below the watermark (S2 across members, S3).
            assert!(wm.is_none_or(|w| floor >= w.hrs), "case {i}");
        }
    }

    /// A fake producer that only counts fences: these tests check that the deadline thread calls
    /// `fence`, not what a real producer does (the process and sim producers have their own tests).
    struct FenceCountingFake(AtomicU32);

    #[async_trait]
    impl Producer for FenceCountingFake {
        async fn activate(&self, _: Grant, _: Instant) -> Result<(), ProducerError> {
            Ok(())
        }
        async fn extend(&self, _: MonoTime, _: Instant) -> Result<(), ProducerError> {
            Ok(())
        }
        async fn deactivate(&self, _: Instant) -> Result<ProducerStatus, ProducerError> {
            Ok(ProducerStatus::default())
        }
        fn fence(&self, _: Duration) -> Result<(), ProducerError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn status(&self, _: Instant) -> Result<ProducerStatus, ProducerError> {
            Ok(ProducerStatus::default())
        }
    }

    fn wait_until(pred: impl Fn() -> bool, limit: Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if pred() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        pred()
    }

    #[test]
    fn deadline_thread_fences_even_when_no_runtime_runs() {
        let p = Arc::new(FenceCountingFake(AtomicU32::new(0)));
        let f = SelfFence::start(p.clone(), Duration::from_secs(1), crate::fence_notice::FenceNotices::unread())
            .expect("thread");
        f.arm(MonoTime::now().saturating_add(Duration::from_millis(100)));
        assert_eq!(p.0.load(Ordering::SeqCst), 0, "not before the deadline");
        assert!(wait_until(|| f.fired() == 1, Duration::from_secs(2)), "the thread fenced at the deadline");
        assert_eq!(p.0.load(Ordering::SeqCst), 1);
        assert_eq!(f.armed_until(), None);
        f.stop();
    }

    /// The thread sleeps on its timer until the deadline it read: a deadline moved earlier must
    /// wake it, or it would fence only at the old one.
    #[test]
    fn a_deadline_moved_earlier_fences_at_the_new_one() {
        let p = Arc::new(FenceCountingFake(AtomicU32::new(0)));
        let f = SelfFence::start(p.clone(), Duration::from_secs(1), crate::fence_notice::FenceNotices::unread())
            .expect("thread");
        f.arm(MonoTime::now().saturating_add(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(50));
        let moved = std::time::Instant::now();
        f.arm(MonoTime::now().saturating_add(Duration::from_millis(100)));
        assert!(wait_until(|| f.fired() == 1, Duration::from_secs(2)), "fenced at the earlier deadline");
        assert!(moved.elapsed() >= Duration::from_millis(100), "not before the new deadline");
        assert_eq!(p.0.load(Ordering::SeqCst), 1);
        f.stop();
    }

    /// A daemon that stops while its producer may be active (its loop ended on a failed store)
    /// must not take the deadline's watch down with it before the process ends.
    #[test]
    fn a_stop_while_armed_still_fences_at_the_deadline() {
        let p = Arc::new(FenceCountingFake(AtomicU32::new(0)));
        let f = SelfFence::start(p.clone(), Duration::from_secs(1), crate::fence_notice::FenceNotices::unread())
            .expect("thread");
        f.arm(MonoTime::now().saturating_add(Duration::from_millis(100)));
        f.stop();
        assert!(wait_until(|| f.fired() == 1, Duration::from_secs(2)), "fenced at the deadline after the stop");
        assert_eq!(p.0.load(Ordering::SeqCst), 1);
    }

    /// An extension rings no bell: ten renews 10 ms apart wake the thread at most once each for
    /// the arming, the earlier deadline and the last one (a bell per renew woke it ten times
    /// more), and it fences exactly at the last deadline, not before.
    #[test]
    fn an_extended_deadline_fences_at_its_new_end_and_renews_do_not_wake_the_thread() {
        let p = Arc::new(FenceCountingFake(AtomicU32::new(0)));
        let f = SelfFence::start(p.clone(), Duration::from_secs(1), crate::fence_notice::FenceNotices::unread())
            .expect("thread");
        f.arm(MonoTime::now().saturating_add(Duration::from_millis(100)));
        let mut last = MonoTime::now();
        for _ in 0..10 {
            last = MonoTime::now().saturating_add(Duration::from_millis(300));
            f.extend(last);
            // Renews spaced as a member sends them, so that each would have its own wake-up.
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(wait_until(|| f.fired() == 1, Duration::from_secs(2)), "fenced at the extended deadline");
        assert!(MonoTime::now() >= last, "fenced before the extended deadline");
        assert_eq!(p.0.load(Ordering::SeqCst), 1);
        let woken = f.state().woken;
        assert!(woken <= 3, "the thread woke {woken} times for one arming and ten renews");
        f.stop();
    }

    #[test]
    fn extending_or_disarming_prevents_the_fence() {
        let p = Arc::new(FenceCountingFake(AtomicU32::new(0)));
        let f = SelfFence::start(p.clone(), Duration::from_secs(1), crate::fence_notice::FenceNotices::unread())
            .expect("thread");
        f.arm(MonoTime::now().saturating_add(Duration::from_millis(150)));
        f.extend(MonoTime::now().saturating_add(Duration::from_millis(400)));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(p.0.load(Ordering::SeqCst), 0, "extended past the first deadline");
        f.disarm();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(p.0.load(Ordering::SeqCst), 0, "disarmed");
        f.extend(MonoTime::now());
        assert_eq!(f.armed_until(), None, "extend does not arm");
        f.stop();
    }
}
