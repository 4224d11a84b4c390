//! Holding what one outgoing stream carries for a moment, so that messages sent close together
//! leave in one write. A member sends each peer a status per validator once or twice a second,
//! each validator at its own moment: at fifty validators, one message apiece would be a TLS
//! record, a write and a wake-up of the peer a hundred times a second. Held for a moment and
//! handed to tonic back to back, they are encoded into one buffer and leave as one write.
//!
//! Owns no message and decides nothing about one: it never drops, reorders or merges what it
//! is given, and delays each message by at most the hold.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_stream::Stream;

/// The messages from `queue` in order, each run of them that came within `hold` of the run's
/// first message released together once `hold` passed (a zero `hold`: each as it comes, with
/// no timer). Ends when `queue` is closed and empty.
pub(super) fn gathered<T: Unpin>(queue: mpsc::Receiver<T>, hold: Duration) -> Gathered<T> {
    Gathered { queue, hold, held: VecDeque::new(), timer: None, releasing: false, closed: false }
}

pub(super) struct Gathered<T> {
    queue: mpsc::Receiver<T>,
    hold: Duration,
    held: VecDeque<T>,
    /// Runs from the first message of the held run.
    timer: Option<Pin<Box<Sleep>>>,
    /// The hold passed: the held run goes out, one message per poll, until it is empty.
    releasing: bool,
    closed: bool,
}

impl<T: Unpin> Stream for Gathered<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        while !this.closed {
            match this.queue.poll_recv(cx) {
                Poll::Ready(Some(message)) => this.held.push_back(message),
                Poll::Ready(None) => this.closed = true,
                Poll::Pending => break,
            }
        }
        if !this.releasing {
            if this.held.is_empty() {
                return if this.closed { Poll::Ready(None) } else { Poll::Pending };
            }
            let hold = this.hold;
            if hold.is_zero() {
                this.releasing = true;
                let next = this.held.pop_front();
                this.releasing = !this.held.is_empty();
                return Poll::Ready(next);
            }
            let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(hold)));
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.timer = None;
            this.releasing = true;
        }
        let next = this.held.pop_front();
        this.releasing = !this.held.is_empty();
        Poll::Ready(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use tokio_stream::StreamExt;

    const HOLD: Duration = Duration::from_millis(50);

    #[tokio::test(start_paused = true)]
    async fn messages_sent_within_the_hold_are_released_together_and_in_order() {
        let (tx, rx) = mpsc::channel(8);
        let mut out = std::pin::pin!(gathered(rx, HOLD));
        let start = tokio::time::Instant::now();
        tx.send(1).await.expect("open");
        assert!(out.next().now_or_never().is_none(), "the first message waits for the hold");
        tokio::time::sleep(HOLD / 2).await;
        tx.send(2).await.expect("open");
        tx.send(3).await.expect("open");
        assert_eq!(out.next().await, Some(1));
        assert_eq!(start.elapsed(), HOLD, "released when the hold after the first message passed");
        // The rest of the run is ready at once: tonic encodes it into the same write.
        assert_eq!(out.next().now_or_never(), Some(Some(2)));
        assert_eq!(out.next().now_or_never(), Some(Some(3)));
        assert!(out.next().now_or_never().is_none(), "nothing else was sent");
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_hold_each_message_leaves_as_it_comes() {
        let (tx, rx) = mpsc::channel(8);
        let mut out = std::pin::pin!(gathered(rx, Duration::ZERO));
        tx.send(1).await.expect("open");
        assert_eq!(out.next().now_or_never(), Some(Some(1)), "no wait, no timer");
        tx.send(2).await.expect("open");
        assert_eq!(out.next().now_or_never(), Some(Some(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_after_the_release_starts_the_next_run_and_a_closed_queue_ends_the_stream() {
        let (tx, rx) = mpsc::channel(8);
        let mut out = std::pin::pin!(gathered(rx, HOLD));
        tx.send("a").await.expect("open");
        assert_eq!(out.next().await, Some("a"));
        tx.send("b").await.expect("open");
        let start = tokio::time::Instant::now();
        drop(tx);
        assert_eq!(out.next().await, Some("b"), "a message sent before the close is not lost");
        assert_eq!(start.elapsed(), HOLD, "it waited its own hold");
        assert_eq!(out.next().await, None);
    }
}
