//! Delivers the newest version of a value that keeps changing — a member's published status —
//! with one call at a time, so that an older version can never land after a newer one.
//!
//! A status published by separate concurrent calls can arrive out of order: a "demoting" sent a
//! moment before the "standby" that follows it may be applied last, and peers then refuse a
//! handover to a member that already stands by, until its next status. A courier sends the
//! latest value it holds, waits for that call to end (or time out), and only then sends the
//! value that replaced it meanwhile; the versions in between are skipped, never reordered.
//!
//! Owns the sending task; never retries a failed call on its own (the next version is the
//! retry) and never blocks the caller, who only replaces the value.

use std::future::Future;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The caller's side: each [`Courier::put`] replaces what has not been sent yet.
pub struct Courier<T> {
    latest: watch::Sender<Option<T>>,
}

impl<T: Clone + Send + Sync + 'static> Courier<T> {
    /// Starts the sending task: `send` is called with each newest value, one call at a time.
    /// The task ends when the courier is dropped or `shutdown` is cancelled; `send` bounds its
    /// own call.
    pub fn start<F, Fut>(send: F, shutdown: CancellationToken) -> Courier<T>
    where
        F: Fn(T) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (latest, rx) = watch::channel(None);
        tokio::spawn(deliver(rx, send, shutdown));
        Courier { latest }
    }

    /// Hands `value` over for sending; never waits.
    pub fn put(&self, value: T) {
        self.latest.send_replace(Some(value));
    }
}

async fn deliver<T, F, Fut>(mut rx: watch::Receiver<Option<T>>, send: F, shutdown: CancellationToken)
where
    T: Clone,
    F: Fn(T) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let Some(value) = rx.borrow_and_update().clone() else { continue };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            () = send(value) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use tokio::sync::{Notify, mpsc};

    use super::*;

    type Call = Pin<Box<dyn Future<Output = ()> + Send>>;

    /// A receiver whose first call blocks until `release` is notified, recording what arrives.
    fn recorder(release: Arc<Notify>) -> (impl Fn(u32) -> Call, mpsc::UnboundedReceiver<u32>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let first = Arc::new(Mutex::new(true));
        let send = move |v: u32| {
            let tx = tx.clone();
            let release = Arc::clone(&release);
            let first = Arc::clone(&first);
            let call: Call = Box::pin(async move {
                let block = std::mem::replace(&mut *first.lock().unwrap_or_else(|p| p.into_inner()), false);
                if block {
                    release.notified().await;
                }
                let _ = tx.send(v);
            });
            call
        };
        (send, rx)
    }

    /// The next value to arrive; `None` once the courier's task ended. Fails after 10 s, so a
    /// value that never comes fails the test instead of hanging it.
    async fn next(arrived: &mut mpsc::UnboundedReceiver<u32>) -> Option<u32> {
        tokio::time::timeout(std::time::Duration::from_secs(10), arrived.recv()).await.expect("nothing arrived in 10 s")
    }

    #[tokio::test]
    async fn values_put_during_a_slow_call_arrive_after_it_newest_only_never_reordered() {
        let release = Arc::new(Notify::new());
        let (send, mut arrived) = recorder(Arc::clone(&release));
        let courier = Courier::start(send, CancellationToken::new());
        courier.put(1);
        // On this single-threaded runtime the task now takes 1 and blocks in its first call.
        tokio::task::yield_now().await;
        courier.put(2);
        courier.put(3);
        courier.put(4);
        release.notify_one();
        assert_eq!(next(&mut arrived).await, Some(1));
        assert_eq!(next(&mut arrived).await, Some(4), "only the newest value follows the slow call");
        courier.put(5);
        assert_eq!(next(&mut arrived).await, Some(5));
        drop(courier);
        assert_eq!(next(&mut arrived).await, None, "the task ends with its courier");
    }

    /// A courier to a [`recorder`] nobody releases, and the token that stops it.
    fn stuck() -> (Courier<u32>, mpsc::UnboundedReceiver<u32>, CancellationToken) {
        let (send, arrived) = recorder(Arc::new(Notify::new()));
        let shutdown = CancellationToken::new();
        (Courier::start(send, shutdown.clone()), arrived, shutdown)
    }

    #[tokio::test]
    async fn a_cancelled_courier_sends_nothing_more() {
        let (courier, mut arrived, shutdown) = stuck();
        shutdown.cancel();
        courier.put(1);
        assert_eq!(next(&mut arrived).await, None, "a cancelled courier drops its sender and sends nothing");
    }

    #[tokio::test]
    async fn cancelling_ends_a_call_that_never_returns() {
        let (courier, mut arrived, shutdown) = stuck();
        courier.put(1);
        tokio::task::yield_now().await;
        // The first call hangs for good (nobody releases it); cancelling must still end the task.
        shutdown.cancel();
        assert_eq!(next(&mut arrived).await, None, "the hanging call was abandoned and the task ended");
        drop(courier);
    }
}
