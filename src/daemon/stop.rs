//! Stopping the producer: deactivate, else fence; at start (nothing may produce outside a lease
//! this run holds) and at shutdown, where a holder stops producing and releases, so a standby
//! can take over at once, within one grace period.
//!
//! Owns the stop sequence; never decides when to stop (that is `role`, or a signal). Keeps the
//! order of effects: the self-fence thread and the watchdog are disarmed only after a confirmed
//! stop, and a release follows the confirmed stop.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::executor::ActionContext;
use super::parts::Policies;
use crate::domain::{Epoch, Hrs, KeyId, Lease};
use crate::producer::Producer;
use crate::role::Span;

/// How long the graceful stop may take before it gives up releasing. Its steps have their own
/// deadlines: a deactivation (up to two fence timeouts for a supervised node: SIGTERM, then
/// SIGKILL, or one fence timeout and a call), a fence when that is not confirmed, and a release;
/// one more call timeout covers waiting for an action still in flight on the producer. An
/// action in flight that takes longer (a guard running a slow `fence_command`) is still waited
/// for, within its own deadlines, before the fence: only then is the fence the last word.
pub(super) fn grace_period(policies: &Policies) -> Duration {
    policies.fence_timeout * 3 + policies.call_timeout * 3
}

/// Deactivates the producer, or fences it when deactivation is not confirmed; returns the last
/// height it signed, as far as it knows.
pub(super) async fn stop_producer(cx: &ActionContext, prod: &Arc<dyn Producer>) -> Result<Option<u64>, String> {
    match prod.deactivate(Instant::now() + cx.policies.fence_timeout + cx.policies.call_timeout).await {
        Ok(status) => {
            if let Some(f) = &cx.effects.self_fence {
                f.disarm();
            }
            cx.effects.watchdog.disarm();
            Ok(status.last_signed_height)
        }
        Err(e) => {
            tracing::warn!(error = %e, "deactivation not confirmed; fencing the producer");
            fence_producer(cx, prod).await.map(|()| None)
        }
    }
}

/// Fences the producer from a blocking thread (a fence must work while the runtime is busy);
/// disarms the self-fence once it is confirmed.
pub(super) async fn fence_producer(cx: &ActionContext, prod: &Arc<dyn Producer>) -> Result<(), String> {
    let fenced = Arc::clone(prod);
    let timeout = cx.policies.fence_timeout;
    match tokio::task::spawn_blocking(move || fenced.fence(timeout)).await {
        Ok(Ok(())) => {
            if let Some(f) = &cx.effects.self_fence {
                f.disarm();
            }
            cx.effects.watchdog.disarm();
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The watermark a release records: the end of the last height the node signed, for a node
/// that holds the key (the daemon knows only that it signed something at that height). A
/// producer that reserves every signature records nothing more: the watermark already is its
/// exact last reservation, and raising it to the end of the height would keep the next holder
/// from the steps the node still has to sign there (a precommit after a prevote).
pub(super) fn final_watermark(cx: &ActionContext, last_signed: Option<u64>) -> Option<(KeyId, Hrs)> {
    if cx.effects.producer.as_ref().is_some_and(|prod| prod.reserves_every_signature()) {
        return None;
    }
    last_signed.map(|h| (cx.member.key.clone(), Hrs::end_of_height(h)))
}

/// Before this member takes part: a node left producing by an earlier run, or one that started
/// producing by itself, is stopped. Returns the last height it signed, when it says.
pub(super) async fn at_start(cx: &ActionContext) -> Option<u64> {
    let prod = cx.effects.producer.as_ref()?;
    let _ops = cx.effects.producer_ops.lock().await;
    match stop_producer(cx, prod).await {
        Ok(signed) => signed,
        Err(e) => {
            tracing::error!(
                error = %e,
                "cannot confirm the producer is stopped at start; check the node, and set producer.fence_command so a fence can kill it"
            );
            None
        }
    }
}

/// On SIGTERM: a holder at `epoch` stops producing and releases `lease` (when this run was
/// granted it), within [`grace_period`]. When the grace period ends first, it waits for any
/// action still holding the producer (each has its own deadlines), fences the producer and
/// leaves the lease to expire.
pub(super) async fn graceful(cx: &ActionContext, epoch: Option<Epoch>, lease: Option<Lease>, last_signed: Option<u64>) {
    cx.effects.stopping.store(true, std::sync::atomic::Ordering::Release);
    let Some(epoch) = epoch else { return };
    tracing::info!(%epoch, "shutting down: deactivating the producer and releasing the lease");
    let grace = grace_period(&cx.policies);
    if tokio::time::timeout(grace, stop_and_release(cx, lease, last_signed)).await.is_ok() {
        return;
    }
    tracing::error!(
        %epoch,
        "the graceful stop did not finish within its grace period of {}; fencing the producer once no action holds it, and keeping the lease until it expires",
        Span(grace)
    );
    let _ops = cx.effects.producer_ops.lock().await;
    if let Some(prod) = &cx.effects.producer
        && let Err(e) = fence_producer(cx, prod).await
    {
        tracing::error!(error = %e, "the fence at shutdown was not confirmed; check the node");
    }
}

async fn stop_and_release(cx: &ActionContext, lease: Option<Lease>, mut last_signed: Option<u64>) {
    // An activation still in flight finishes first, so the stop below is the last word.
    let _ops = cx.effects.producer_ops.lock().await;
    if let Some(prod) = &cx.effects.producer {
        match stop_producer(cx, prod).await {
            Ok(signed) => last_signed = last_signed.max(signed),
            Err(e) => {
                // Releasing would let another member activate beside a producer that may still
                // sign; the lease expires instead, which its permission cannot outlast.
                tracing::error!(error = %e, "the producer could not be stopped at shutdown; keeping the lease until it expires");
                return;
            }
        }
    }
    if let Some(lease) = lease {
        let deadline = Instant::now() + cx.policies.call_timeout;
        let _ = cx.effects.coord.release(&lease, final_watermark(cx, last_signed), deadline).await;
    }
}
