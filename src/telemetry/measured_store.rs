//! `MeasuredStore`: the daemon's view of the coordination store, with every call timed and
//! counted in [`Metrics`] and the time of the last answered call kept for `/readyz`.
//!
//! It adds no behaviour: each call goes to the wrapped coordinator unchanged and its result comes
//! back unchanged. It never retries, never times out on its own (the wrapped coordinator honours
//! the deadline) and never decides anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::Metrics;
use crate::coord::{CoordError, Coordinator, Intents, StatusReport, StoreView, Transfer};
use crate::domain::{Epoch, Hrs, KeyId, Lease, LeaseView, MemberId, MemberStatus, MonoTime, Watermark};

pub struct MeasuredStore {
    inner: Arc<dyn Coordinator>,
    metrics: Arc<Metrics>,
    /// MonoTime nanoseconds of the last call the store answered; 0 before the first.
    last_answer_nanos: AtomicU64,
}

impl MeasuredStore {
    pub fn new(inner: Arc<dyn Coordinator>, metrics: Arc<Metrics>) -> MeasuredStore {
        MeasuredStore { inner, metrics, last_answer_nanos: AtomicU64::new(0) }
    }

    /// When the store last answered a call (with a result, an error of its own such as "the lease
    /// is held" included), or `None` if it never did. Timeouts and unreachable stores don't count.
    pub fn last_answer(&self) -> Option<MonoTime> {
        match self.last_answer_nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(MonoTime::from_nanos(n)),
        }
    }

    async fn measure<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, CoordError>>,
    ) -> Result<T, CoordError> {
        let started = Instant::now();
        let result = call.await;
        let answered = !matches!(result, Err(CoordError::Timeout { .. } | CoordError::Unavailable(_)));
        self.metrics.store_call(operation, started.elapsed().as_secs_f64(), result.is_ok());
        if answered {
            self.last_answer_nanos.store(MonoTime::now().as_nanos().max(1), Ordering::Relaxed);
        }
        result
    }
}

#[async_trait]
impl Coordinator for MeasuredStore {
    async fn acquire(&self, member: &MemberId, deadline: Instant) -> Result<Lease, CoordError> {
        self.measure("acquire", self.inner.acquire(member, deadline)).await
    }

    async fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Lease, CoordError> {
        let result = self.measure("renew", self.inner.renew(lease, deadline)).await;
        self.metrics.renewed(result.is_ok());
        result
    }

    async fn release(
        &self,
        lease: &Lease,
        final_watermark: Option<(KeyId, Hrs)>,
        deadline: Instant,
    ) -> Result<(), CoordError> {
        self.measure("release", self.inner.release(lease, final_watermark, deadline)).await
    }

    async fn reserve(&self, epoch: Epoch, key: &KeyId, hrs: Hrs, deadline: Instant) -> Result<Watermark, CoordError> {
        let result = self.measure("reserve", self.inner.reserve(epoch, key, hrs, deadline)).await;
        match &result {
            Ok(w) => {
                self.metrics.reserved(key.as_str(), true);
                self.metrics.set_watermark(key.as_str(), w.hrs.height);
            }
            Err(CoordError::Refused(_) | CoordError::NotHolder { .. }) => self.metrics.reserved(key.as_str(), false),
            Err(_) => {}
        }
        result
    }

    async fn checkpoint(
        &self,
        epoch: Epoch,
        key: &KeyId,
        height: u64,
        deadline: Instant,
    ) -> Result<Watermark, CoordError> {
        let result = self.measure("checkpoint", self.inner.checkpoint(epoch, key, height, deadline)).await;
        if let Ok(w) = &result {
            self.metrics.set_watermark(key.as_str(), w.hrs.height);
        }
        result
    }

    async fn watermark(&self, key: &KeyId, deadline: Instant) -> Result<Option<Watermark>, CoordError> {
        let result = self.measure("watermark", self.inner.watermark(key, deadline)).await;
        if let Ok(Some(w)) = &result {
            self.metrics.set_watermark(key.as_str(), w.hrs.height);
        }
        result
    }

    async fn import_watermarks(
        &self,
        entries: &[(KeyId, Hrs)],
        deadline: Instant,
    ) -> Result<Vec<Watermark>, CoordError> {
        let result = self.measure("import_watermarks", self.inner.import_watermarks(entries, deadline)).await;
        if let Ok(after) = &result {
            for ((key, _), w) in entries.iter().zip(after) {
                self.metrics.set_watermark(key.as_str(), w.hrs.height);
            }
        }
        result
    }

    async fn lease(&self, deadline: Instant) -> Result<LeaseView, CoordError> {
        self.measure("lease", self.inner.lease(deadline)).await
    }

    async fn intents(&self, deadline: Instant) -> Result<Intents, CoordError> {
        self.measure("intents", self.inner.intents(deadline)).await
    }

    fn watch(&self) -> watch::Receiver<StoreView> {
        self.inner.watch()
    }

    async fn publish_status(&self, status: &MemberStatus, deadline: Instant) -> Result<(), CoordError> {
        self.measure("publish_status", self.inner.publish_status(status, deadline)).await
    }

    async fn cluster_status(&self, deadline: Instant) -> Result<Vec<StatusReport>, CoordError> {
        self.measure("cluster_status", self.inner.cluster_status(deadline)).await
    }

    async fn set_paused(&self, paused: bool, deadline: Instant) -> Result<(), CoordError> {
        self.measure("set_paused", self.inner.set_paused(paused, deadline)).await
    }

    async fn request_transfer(&self, to: &MemberId, deadline: Instant) -> Result<Transfer, CoordError> {
        self.measure("request_transfer", self.inner.request_transfer(to, deadline)).await
    }

    async fn request_forced_transfer(&self, to: &MemberId, deadline: Instant) -> Result<Transfer, CoordError> {
        self.measure("request_transfer", self.inner.request_forced_transfer(to, deadline)).await
    }
}
