//! One async fn per [`Action`](crate::role::Action), each run as its own task by the executor.
//! Each takes what it needs by value, keeps the order of effects written in the daemon's module
//! doc, and returns a [`Finished`]: the loop applies it. None reads or changes the loop's state.

use std::time::Duration;

use tokio::time::Instant;

use super::executor::{ActionContext, ActionKind, Finished};
use super::stop::{fence_producer, final_watermark, stop_producer};
use crate::coord::{Holding, LeaseGrant};
use crate::domain::{Epoch, Lease, MemberId, MonoTime};
use crate::events::EventKind;
use crate::guard::{GuardInput, PromotionGuard, run_fence_command};
use crate::producer::Producer;
use crate::role::{FenceReason, Outcome, Span, StepDown};

/// Acquires the lease, with the key's watermark as of the grant: the promotion guard's floor
/// needs no second store call, so a takeover is one commit.
pub(super) async fn acquire(cx: &ActionContext, deadline: Instant) -> Finished {
    match cx.effects.coord.acquire_with_watermark(&cx.member.id, &cx.member.key, deadline).await {
        Ok(grant) => granted(grant),
        Err(e) => {
            // Refusals are normal (the lease is held, no raft leader yet); the loop asks again
            // and its status says so.
            tracing::info!("acquire not granted: {e}");
            Finished::with(ActionKind::Acquire, Outcome::AcquireFailed { error: e.to_string() })
        }
    }
}

fn granted(grant: LeaseGrant) -> Finished {
    let LeaseGrant { lease, watermark } = grant;
    let outcome = Outcome::Acquired { epoch: lease.epoch, valid_until: lease.valid_until };
    Finished { lease: Some(lease), watermark_at_grant: Some(watermark), ..Finished::with(ActionKind::Acquire, outcome) }
}

/// A fenced takeover (docs/design.md §5) of the lease `holder` holds at `epoch`, in this order:
/// the store still shows that holding; one renew interval later it shows it unchanged (a live
/// holder renews within one, and is then left alone; validation keeps signer mode on raft, whose
/// renews leave the stamp as it is, from getting here); `fence_command` against `holder`
/// succeeded; only then the store is asked to move exactly that holding to this member. Any
/// failure reports `AcquireFailed`, and nothing is granted.
pub(super) async fn take_over(cx: &ActionContext, holder: MemberId, epoch: Epoch) -> Finished {
    let failed = |error: String| {
        tracing::info!("fenced takeover of {holder}'s lease at epoch {epoch} not done: {error}");
        Finished::with(ActionKind::Acquire, Outcome::AcquireFailed { error })
    };
    let coord = &cx.effects.coord;
    let call = || Instant::now() + cx.policies.call_timeout;
    let same = |h: &Option<Holding>| h.as_ref().is_some_and(|h| h.holder == holder && h.epoch == epoch);
    let first = match coord.holding(call()).await {
        Ok(h) if same(&h) => h,
        Ok(_) => return failed("the lease moved on before the takeover started".into()),
        Err(e) => return failed(format!("cannot read the holding: {e}")),
    };
    tokio::time::sleep(cx.policies.role.renew_interval + cx.policies.role.renew_interval / 2).await;
    let holding = match coord.holding(call()).await {
        Ok(h) if h == first => h,
        Ok(h) if same(&h) => {
            return failed(format!("{holder} renewed its lease meanwhile, so it is alive and is not fenced"));
        }
        Ok(_) => return failed("the lease moved on before the takeover started".into()),
        Err(e) => return failed(format!("cannot read the holding: {e}")),
    };
    let Some(holding) = holding else { return failed("the lease was released meanwhile".into()) };
    let guard = &cx.policies.guard;
    let Some(argv) = &guard.fence_command else { return failed("no failover.fence_command is configured".into()) };
    if let Err(e) = run_fence_command(argv, &holder, guard.fence_command_timeout).await {
        return failed(e);
    }
    tracing::info!("fence_command fenced {holder}: taking its lease at epoch {epoch} over");
    match coord.take_over(&cx.member.id, &cx.member.key, &holding, call()).await {
        Ok(grant) => granted(grant),
        Err(e) => failed(format!("the store did not grant it: {e}")),
    }
}

/// A failed renew is worth a warning only when it is not the first in a row: one renew can
/// miss its deadline on a busy machine, during a raft leader change, or while the cluster shuts
/// down, and the next leaves within a renew interval. Two in a row mean the store is in trouble:
/// unless a renew commits before the lease ends, this member fences itself. During this
/// member's own graceful stop a failed renew is expected (it is releasing the lease).
fn report_failed_renew(cx: &ActionContext, epoch: Epoch, error: &crate::coord::CoordError, valid_until: MonoTime) {
    use std::sync::atomic::Ordering;
    let in_a_row = cx.outputs.renew_failures.fetch_add(1, Ordering::AcqRel) + 1;
    let left = Span(valid_until.saturating_since(MonoTime::now()));
    if in_a_row >= 2 && !cx.effects.stopping.load(Ordering::Acquire) {
        tracing::warn!(%epoch, %error, "lease renewal failed ({in_a_row} in a row) with {left} of the lease left; unless a renew commits in time this member fences itself when it ends");
    } else {
        tracing::info!(%epoch, %error, "lease renewal failed with {left} of the lease left; the next renew leaves within a renew interval");
    }
}

/// Renews first (persist), then moves the producer's permission, the self-fence deadline and
/// the watchdog to the new validity.
pub(super) async fn renew(cx: &ActionContext, lease: Lease, deadline: Instant) -> Finished {
    let epoch = lease.epoch;
    let sent = Instant::now();
    let l = match cx.effects.coord.renew(&lease, deadline).await {
        Ok(l) => l,
        Err(e) => {
            report_failed_renew(cx, epoch, &e, lease.valid_until);
            return Finished::with(ActionKind::Renew, Outcome::RenewFailed { epoch, error: e.to_string() });
        }
    };
    tracing::debug!(%epoch, took_ms = sent.elapsed().as_millis() as u64, "lease renewed");
    cx.outputs.renew_failures.store(0, std::sync::atomic::Ordering::Release);
    // Only a producer that may be active gets its permission moved; the producer itself
    // ignores an extension that arrives after it was deactivated. Only a renew moves the
    // self-fence deadline (an acquire never does), and it does nothing while disarmed.
    let fx = &cx.effects;
    let armed = fx.self_fence.as_ref().is_some_and(|f| f.armed_until().is_some());
    if armed
        && let Some(prod) = &fx.producer
        && let Err(e) = prod.extend(l.valid_until, deadline).await
    {
        // The producer keeps its earlier deadline (the safe direction): its keeper or the
        // self-fence stops the node then, unless a later renew reaches it.
        tracing::warn!(%epoch, error = %e, "the lease was renewed but the producer's deadline did not move; it stops at the earlier one unless a later renew reaches it");
    }
    if let Some(f) = &fx.self_fence {
        f.extend(l.valid_until);
    }
    fx.watchdog.lease_renewed(epoch, l.valid_until);
    let outcome = Outcome::Renewed { epoch, valid_until: l.valid_until };
    Finished { lease: Some(l), ..Finished::with(ActionKind::Renew, outcome) }
}

/// Key-holding mode: raises the watermark to the last height the producer signed.
pub(super) async fn checkpoint(cx: &ActionContext, epoch: Epoch, deadline: Instant) -> Finished {
    let mut done = Finished::of(ActionKind::Checkpoint);
    if let Some(prod) = &cx.effects.producer
        && let Ok(status) = prod.status(deadline).await
        && let Some(h) = status.last_signed_height
    {
        done.last_signed = Some(h);
        let _ = cx.effects.coord.checkpoint(epoch, &cx.member.key, h, deadline).await;
    }
    done
}

/// The promotion guard (docs/design.md §6), under the producer lock: it arms the self-fence
/// and the watchdog before it activates.
pub(super) async fn run_guard(cx: &ActionContext, epoch: Epoch, input: GuardInput) -> Finished {
    let fx = &cx.effects;
    let _ops = fx.producer_ops.lock().await;
    let stopping = fx.stopping.load(std::sync::atomic::Ordering::Acquire);
    let outcome = match (&fx.producer, &fx.probe, &fx.self_fence) {
        _ if stopping => Outcome::GuardFailed {
            epoch,
            step: "activate".into(),
            error: "this member is shutting down, so it does not activate".into(),
        },
        (Some(producer), Some(probe), Some(self_fence)) => {
            let guard = PromotionGuard {
                coord: fx.coord.as_ref(),
                producer: producer.as_ref(),
                probe: probe.as_ref(),
                key: &cx.member.key,
                policy: &cx.policies.guard,
                self_fence,
                watchdog: &fx.watchdog,
            };
            match guard.run(&input).await {
                Ok(_) => Outcome::GuardPassed { epoch },
                Err(report) => {
                    let failed = report.failed_step();
                    Outcome::GuardFailed {
                        epoch,
                        step: failed.map_or("unknown".into(), |s| s.step.to_string()),
                        error: failed.map_or(String::new(), |s| s.detail.clone()),
                    }
                }
            }
        }
        _ => Outcome::GuardFailed { epoch, step: "activate".into(), error: "this member has no producer".into() },
    };
    let events = &cx.outputs.events;
    match &outcome {
        Outcome::GuardPassed { epoch } => {
            events.emit(EventKind::Guard, Some(*epoch), "every guard step passed: producing")
        }
        Outcome::GuardFailed { epoch, step, error } => {
            events.emit(EventKind::Guard, Some(*epoch), format!("guard failed at {step}: {error}"))
        }
        _ => {}
    }
    Finished::with(ActionKind::Guard, outcome)
}

/// A planned or unhealthy step-down: deactivates, and disarms only once that is confirmed.
pub(super) async fn deactivate(cx: &ActionContext, epoch: Epoch, why: StepDown) -> Finished {
    let fx = &cx.effects;
    let _ops = fx.producer_ops.lock().await;
    let Some(prod) = &fx.producer else {
        return Finished::with(ActionKind::Deactivate, Outcome::Deactivated { epoch });
    };
    if matches!(why, StepDown::Transfer { .. }) {
        // At least 3 s: signer mode's lease is 300 ms, and draining a window takes a block
        // interval or two, while the holder's permission outlasts its lease.
        wait_for_fresh_signature(prod.as_ref(), cx.policies.role.lease_ttl.max(Duration::from_secs(3))).await;
    }
    match prod.deactivate(Instant::now() + cx.policies.fence_timeout + cx.policies.call_timeout).await {
        Ok(status) => {
            if let Some(f) = &fx.self_fence {
                f.disarm();
            }
            fx.watchdog.disarm();
            let done = Finished::with(ActionKind::Deactivate, Outcome::Deactivated { epoch });
            Finished { last_signed: status.last_signed_height, ..done }
        }
        Err(e) => Finished::with(ActionKind::Deactivate, Outcome::DeactivateFailed { epoch, error: e.to_string() }),
    }
}

/// Gives back a lease the store says this member holds while it is not holding it.
pub(super) async fn release(cx: &ActionContext, lease: Lease, known_last_signed: Option<u64>) -> Finished {
    let epoch = lease.epoch;
    let mut done = Finished::of(ActionKind::Release);
    // The lease may be one an earlier run of this daemon held, whose producer can still be
    // signing (a node outlives a killed daemon). Giving the lease back lets another member
    // activate at once, so the producer is stopped first; if that cannot be confirmed, the lease
    // is kept to expire, which the permission the producer was given cannot outlast.
    let _ops = cx.effects.producer_ops.lock().await;
    let mut last_signed = known_last_signed;
    if let Some(prod) = &cx.effects.producer {
        match stop_producer(cx, prod).await {
            Ok(signed) => {
                last_signed = last_signed.max(signed);
                done.last_signed = last_signed;
            }
            Err(e) => {
                tracing::error!(%epoch, error = %e, "cannot confirm the producer stopped; keeping the lease until it expires");
                return done;
            }
        }
    }
    let watermark = final_watermark(cx, last_signed);
    let deadline = Instant::now() + cx.policies.call_timeout;
    if let Err(e) = cx.effects.coord.release(&lease, watermark, deadline).await {
        tracing::debug!(%epoch, error = %e, "release not applied");
    }
    done
}

pub(super) async fn fence(cx: &ActionContext, why: FenceReason) -> Finished {
    tracing::warn!(reason = %why, "fencing the producer");
    let _ops = cx.effects.producer_ops.lock().await;
    let outcome = match &cx.effects.producer {
        None => Outcome::Fenced,
        Some(prod) => match fence_producer(cx, prod).await {
            Ok(()) => Outcome::Fenced,
            Err(error) => Outcome::FenceFailed { error },
        },
    };
    cx.outputs.telemetry.metrics.fenced(matches!(outcome, Outcome::Fenced));
    let events = &cx.outputs.events;
    match &outcome {
        Outcome::FenceFailed { error } => {
            events.emit(EventKind::Fence, None, format!("fence not confirmed ({why}): {error}"))
        }
        _ => events.emit(EventKind::Fence, None, format!("producer fenced ({why})")),
    }
    Finished::with(ActionKind::Fence, outcome)
}

/// Before a planned handover: a producer that signs inside reserved windows reserves nothing
/// more and signs through its window, so the watermark is its last signature and the successor
/// misses no height; any other waits until it has just signed a new height, so the successor has
/// a whole block interval to take over.
async fn wait_for_fresh_signature(producer: &dyn Producer, limit: Duration) {
    if producer.drain_reservations(limit).await {
        return;
    }
    let end = Instant::now() + limit;
    let first = producer.newest_signature(end).await.ok().flatten();
    if first.is_none() {
        return;
    }
    while Instant::now() < end {
        match producer.newest_signature(end).await {
            Ok(newest) if newest != first => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => return,
        }
    }
}
