//! A reservation ahead handed to the store from a thread outside the runtime, without waking
//! the runtime: the remote signer's connection threads ask for the next window of heights while
//! the current one still covers the next ones, and with raft such a reservation waits for the
//! node's next tick anyway (`Coordinator::gathers_reservations_ahead`). Spawning a task for it
//! woke the runtime's worker from the signer's thread: over a quarter of that worker's wake-ups
//! on a member active for fifty signer validators. Queued, it is taken by the raft node at the
//! tick it leaves at.
//!
//! Owns the promise that whoever asked hears exactly one answer: the store's, or — when the
//! reservation is dropped before it was answered (the node stopped, the process shuts down) —
//! an error saying so. It never sends, retries or judges a reservation.

use tokio::time::Instant;

use super::CoordError;
use crate::domain::{Epoch, Hrs, KeyId, Watermark};

/// Where the answer goes; called once, on the runtime's worker.
pub type ReservationAnswer = Box<dyn FnOnce(Result<Watermark, CoordError>) + Send>;

/// `reserve_ahead(epoch, key, hrs)` by `deadline`, with the answer's destination.
pub struct QueuedReservation {
    pub epoch: Epoch,
    pub key: KeyId,
    pub hrs: Hrs,
    pub deadline: Instant,
    answer: Option<ReservationAnswer>,
}

impl QueuedReservation {
    pub fn new(epoch: Epoch, key: KeyId, hrs: Hrs, deadline: Instant, answer: ReservationAnswer) -> Self {
        QueuedReservation { epoch, key, hrs, deadline, answer: Some(answer) }
    }

    /// Hands `result` to whoever asked.
    pub fn answer(mut self, result: Result<Watermark, CoordError>) {
        if let Some(answer) = self.answer.take() {
            answer(result);
        }
    }

    /// The same reservation, its answer passed through `then` first (a layer that measures it).
    pub fn then(
        mut self,
        then: impl FnOnce(Result<Watermark, CoordError>) -> Result<Watermark, CoordError> + Send + 'static,
    ) -> QueuedReservation {
        let inner = self.answer.take();
        self.answer = Some(Box::new(move |result| {
            let result = then(result);
            if let Some(inner) = inner {
                inner(result);
            }
        }));
        self
    }
}

impl Drop for QueuedReservation {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            answer(Err(CoordError::Unavailable(
                "the reservation ahead was dropped before the store answered it (its raft node stopped, or the store queues none)"
                    .into(),
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use crate::domain::Step;

    fn queued(heard: &Arc<Mutex<Vec<String>>>) -> QueuedReservation {
        let heard = Arc::clone(heard);
        QueuedReservation::new(
            Epoch::new(3),
            KeyId::new("k").expect("key"),
            Hrs::new(10, 0, Step::Precommit),
            Instant::now(),
            Box::new(move |r| heard.lock().expect("lock").push(format!("{}", r.is_ok()))),
        )
    }

    #[test]
    fn a_reservation_dropped_unanswered_answers_once_that_the_store_did_not() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        drop(queued(&heard));
        assert_eq!(*heard.lock().expect("lock"), vec!["false".to_string()]);
    }

    #[test]
    fn an_answered_reservation_answers_once_through_each_layer() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&seen);
        let q = queued(&heard).then(move |r| {
            *counted.lock().expect("lock") += 1;
            r
        });
        q.answer(Err(CoordError::Timeout { operation: "reserve" }));
        assert_eq!(*heard.lock().expect("lock"), vec!["false".to_string()]);
        assert_eq!(*seen.lock().expect("lock"), 1, "the layer saw the answer once");
    }
}
