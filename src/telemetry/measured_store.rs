//! `MeasuredStore`: the daemon's view of the coordination store, with every call timed and
//! counted in [`Metrics`] and the time of the last answered call kept for `/readyz`.
//!
//! It adds no behaviour: each call goes to the wrapped coordinator unchanged and its result comes
//! back unchanged. It never retries, never times out on its own (the wrapped coordinator honours
//! the deadline) and never decides anything. Every store call is one line through
//! [`MeasuredStore::measure`]; what a result tells the gauges beyond that is in `after`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::Metrics;
use crate::coord::{
    BackendStatus, CoordError, Coordinator, Holding, Intents, LeaseGrant, QueuedReservation, StatusReport, StoreView,
    Transfer,
};
use crate::domain::{Epoch, Hrs, KeyId, Lease, LeaseView, MemberId, MemberStatus, MonoTime, Watermark};

pub struct MeasuredStore {
    inner: Arc<dyn Coordinator>,
    metrics: Arc<Metrics>,
    /// MonoTime nanoseconds of the last call the store answered; 0 before the first. Shared with
    /// the answers of queued reservations, which come after the call returned.
    last_answer_nanos: Arc<AtomicU64>,
}

impl MeasuredStore {
    pub fn new(inner: Arc<dyn Coordinator>, metrics: Arc<Metrics>) -> MeasuredStore {
        MeasuredStore { inner, metrics, last_answer_nanos: Arc::new(AtomicU64::new(0)) }
    }

    /// When the store last answered a call (with a result, an error of its own such as "the lease
    /// is held" included), or `None` if it never did. Timeouts and unreachable stores don't count.
    pub fn last_answer(&self) -> Option<MonoTime> {
        match self.last_answer_nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(MonoTime::from_nanos(n)),
        }
    }

    /// Times `call` as `operation`, counts a failure, notes an answer, then hands the result to
    /// `after` for the gauges that follow it.
    async fn measure<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, CoordError>>,
        after: impl FnOnce(&Metrics, &Result<T, CoordError>),
    ) -> Result<T, CoordError> {
        let started = Instant::now();
        let result = call.await;
        counted(&self.metrics, &self.last_answer_nanos, (operation, started), &result);
        after(&self.metrics, &result);
        result
    }
}

/// Counts a store call that `started` as `operation` and ended with `result`, and notes an
/// answer (a timeout or an unreachable store is none).
fn counted<T>(
    metrics: &Metrics,
    last_answer_nanos: &AtomicU64,
    (operation, started): (&'static str, Instant),
    result: &Result<T, CoordError>,
) {
    let answered = !matches!(result, Err(CoordError::Timeout { .. } | CoordError::Unavailable(_)));
    metrics.store_call(operation, started.elapsed().as_secs_f64(), result.is_ok());
    if answered {
        last_answer_nanos.store(MonoTime::now().as_nanos().max(1), Ordering::Relaxed);
    }
}

/// For calls whose result the gauges do not follow.
fn nothing<T>(_: &Metrics, _: &Result<T, CoordError>) {}

/// A watermark the store answered with for `key`: the gauge follows it.
fn follow(m: &Metrics, key: &KeyId, answered: Option<&Watermark>) {
    if let Some(w) = answered {
        m.set_watermark(key.as_str(), w.hrs.height);
    }
}

/// A reservation's answer for `key`: counted, and the gauge follows a confirmed one.
fn reserved(m: &Metrics, key: &KeyId, result: &Result<Watermark, CoordError>) {
    match result {
        Ok(w) => {
            m.reserved(key.as_str(), true);
            follow(m, key, Some(w));
        }
        Err(CoordError::Refused(_) | CoordError::NotHolder { .. }) => m.reserved(key.as_str(), false),
        Err(_) => {}
    }
}

#[async_trait]
impl Coordinator for MeasuredStore {
    async fn acquire(&self, member: &MemberId, deadline: Instant) -> Result<Lease, CoordError> {
        self.measure("acquire", self.inner.acquire(member, deadline), nothing).await
    }

    async fn acquire_with_watermark(
        &self,
        member: &MemberId,
        key: &KeyId,
        deadline: Instant,
    ) -> Result<LeaseGrant, CoordError> {
        let call = self.inner.acquire_with_watermark(member, key, deadline);
        self.measure("acquire", call, |m, r| follow(m, key, r.as_ref().ok().and_then(|g| g.watermark.as_ref()))).await
    }

    async fn holding(&self, deadline: Instant) -> Result<Option<Holding>, CoordError> {
        self.measure("holding", self.inner.holding(deadline), nothing).await
    }

    async fn take_over(
        &self,
        member: &MemberId,
        key: &KeyId,
        fenced: &Holding,
        deadline: Instant,
    ) -> Result<LeaseGrant, CoordError> {
        let call = self.inner.take_over(member, key, fenced, deadline);
        self.measure("take_over", call, |m, r| follow(m, key, r.as_ref().ok().and_then(|g| g.watermark.as_ref()))).await
    }

    async fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Lease, CoordError> {
        self.measure("renew", self.inner.renew(lease, deadline), |m, r| m.renewed(r.is_ok())).await
    }

    async fn release(&self, lease: &Lease, last: Option<(KeyId, Hrs)>, deadline: Instant) -> Result<(), CoordError> {
        self.measure("release", self.inner.release(lease, last, deadline), nothing).await
    }

    async fn reserve(&self, epoch: Epoch, key: &KeyId, hrs: Hrs, deadline: Instant) -> Result<Watermark, CoordError> {
        self.measure("reserve", self.inner.reserve(epoch, key, hrs, deadline), |m, r| reserved(m, key, r)).await
    }

    async fn reserve_ahead(
        &self,
        epoch: Epoch,
        key: &KeyId,
        hrs: Hrs,
        deadline: Instant,
    ) -> Result<Watermark, CoordError> {
        let call = self.inner.reserve_ahead(epoch, key, hrs, deadline);
        self.measure("reserve", call, |m, r| reserved(m, key, r)).await
    }

    async fn checkpoint(
        &self,
        epoch: Epoch,
        key: &KeyId,
        height: u64,
        deadline: Instant,
    ) -> Result<Watermark, CoordError> {
        let call = self.inner.checkpoint(epoch, key, height, deadline);
        self.measure("checkpoint", call, |m, r| follow(m, key, r.as_ref().ok())).await
    }

    async fn watermark(&self, key: &KeyId, deadline: Instant) -> Result<Option<Watermark>, CoordError> {
        let call = self.inner.watermark(key, deadline);
        self.measure("watermark", call, |m, r| follow(m, key, r.as_ref().ok().and_then(Option::as_ref))).await
    }

    async fn import_watermarks(
        &self,
        entries: &[(KeyId, Hrs)],
        deadline: Instant,
    ) -> Result<Vec<Watermark>, CoordError> {
        self.measure("import_watermarks", self.inner.import_watermarks(entries, deadline), |m, r| {
            for ((key, _), w) in entries.iter().zip(r.iter().flatten()) {
                follow(m, key, Some(w));
            }
        })
        .await
    }

    async fn lease(&self, deadline: Instant) -> Result<LeaseView, CoordError> {
        self.measure("lease", self.inner.lease(deadline), nothing).await
    }

    async fn intents(&self, deadline: Instant) -> Result<Intents, CoordError> {
        self.measure("intents", self.inner.intents(deadline), nothing).await
    }

    fn watch(&self) -> watch::Receiver<StoreView> {
        self.inner.watch()
    }

    async fn publish_status(&self, status: &MemberStatus, deadline: Instant) -> Result<(), CoordError> {
        self.measure("publish_status", self.inner.publish_status(status, deadline), nothing).await
    }

    async fn cluster_status(&self, deadline: Instant) -> Result<Vec<StatusReport>, CoordError> {
        self.measure("cluster_status", self.inner.cluster_status(deadline), nothing).await
    }

    fn statuses_are_local(&self) -> bool {
        self.inner.statuses_are_local()
    }

    fn gathers_reservations_ahead(&self) -> bool {
        self.inner.gathers_reservations_ahead()
    }

    /// Measured as `reserve_ahead` is, from the hand-over to the answer.
    fn queue_reserve_ahead(&self, reservation: QueuedReservation) {
        let (metrics, last_answer) = (Arc::clone(&self.metrics), Arc::clone(&self.last_answer_nanos));
        let (key, started) = (reservation.key.clone(), Instant::now());
        self.inner.queue_reserve_ahead(reservation.then(move |result| {
            counted(&metrics, &last_answer, ("reserve", started), &result);
            reserved(&metrics, &key, &result);
            result
        }));
    }

    /// Not measured: a read of memory, as many times a second as the loop turns.
    fn local_cluster_status(&self) -> Option<Vec<StatusReport>> {
        self.inner.local_cluster_status()
    }

    async fn set_paused(&self, paused: bool, deadline: Instant) -> Result<(), CoordError> {
        self.measure("set_paused", self.inner.set_paused(paused, deadline), nothing).await
    }

    async fn request_transfer(&self, to: &MemberId, deadline: Instant) -> Result<Transfer, CoordError> {
        self.measure("request_transfer", self.inner.request_transfer(to, deadline), nothing).await
    }

    async fn request_forced_transfer(&self, to: &MemberId, deadline: Instant) -> Result<Transfer, CoordError> {
        self.measure("request_transfer", self.inner.request_forced_transfer(to, deadline), nothing).await
    }

    fn status(&self) -> BackendStatus {
        self.inner.status()
    }

    async fn failed(&self) -> String {
        self.inner.failed().await
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.register_metrics(registry);
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}
