//! Carrying this member's statuses to one peer: on one long-lived stream, unanswered, or by a
//! call to a peer that serves no stream (an earlier version). A status on the stream is one
//! message; a call is headers, a body, a response and a task on both sides, two or three times
//! a second per peer. On the stream, the statuses of all validators sent within
//! [`STATUS_HOLD`] of each other leave in one write ([`gathered`]). It sends what it is given
//! and nothing else: it never orders, merges or retries statuses (the
//! [`Courier`](crate::coord::courier::Courier) in front of it keeps only the newest), except the
//! one status a peer of an earlier version refused with its stream, which goes again by call.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::gather::{Gathered, gathered};
use crate::proto::v1::MemberStatusMsg;
use crate::proto::v1::peer_client::PeerClient;

/// Statuses waiting to go out on the stream with no hold: the courier hands over one at a time,
/// and keeps only the newest while a slow peer leaves these unsent.
const STREAM_QUEUE: usize = 4;
/// With a hold: one from each validator (at most 256) and the next from some.
const GATHERING_QUEUE: usize = 512;
/// How long a status may wait on the stream for others to share its write, on a member serving
/// several validators. Small beside the pace of statuses (twice a probe interval from a holder)
/// and the age at which a peer counts one stale (at least the lease TTL).
pub(super) const STATUS_HOLD: Duration = Duration::from_millis(50);
/// After a peer answered that it serves no status stream, statuses go to it by call for this
/// long; then the stream is tried again (the peer may have upgraded).
const RETRY_STREAM_AFTER: Duration = Duration::from_secs(30);
/// How long the status a refused stream took may take by call.
const RESEND_TIMEOUT: Duration = Duration::from_secs(1);

/// The way to one peer's status service.
pub(super) struct StatusLink {
    client: PeerClient<Channel>,
    /// The open stream, the only strong hold on its queue: dropping the link ends the stream's
    /// body, so the call ends when this member stops. Its call's task takes it out when the call
    /// ends (the peer stopped or refused a status, the connection broke), and the next status
    /// opens a new stream.
    open: Arc<Mutex<Option<OpenStream>>>,
    /// When the peer last answered that it serves no status stream.
    unserved: Arc<Mutex<Option<Instant>>>,
    /// How long a status waits on the stream for others ([`STATUS_HOLD`], or none: a member of
    /// one validator has nothing to gather).
    hold: Duration,
}

struct OpenStream {
    queue: mpsc::Sender<MemberStatusMsg>,
    /// The newest status handed to this stream: sent again by call if the peer refuses the
    /// stream as unknown.
    last: Arc<Mutex<Option<MemberStatusMsg>>>,
}

impl StatusLink {
    pub fn new(client: PeerClient<Channel>, hold: Duration) -> StatusLink {
        StatusLink { client, open: Arc::default(), unserved: Arc::default(), hold }
    }

    /// Sends `msg` within `timeout`: on the stream, or by a call when the peer serves none. A
    /// status the peer does not take in time is dropped; the next one is newer.
    pub async fn send(&self, msg: MemberStatusMsg, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if self.stream_served() {
            let (queue, last) = self.stream();
            *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
            match tokio::time::timeout_at(deadline, queue.send(msg.clone())).await {
                Ok(Ok(())) | Err(_) => return,
                // The stream ended between the look and the send: this one goes by call.
                Ok(Err(_)) => {}
            }
        }
        let mut client = self.client.clone();
        let _ = tokio::time::timeout_at(deadline, client.publish_status(msg)).await;
    }

    fn stream_served(&self) -> bool {
        self.unserved.lock().unwrap_or_else(|p| p.into_inner()).is_none_or(|at| at.elapsed() >= RETRY_STREAM_AFTER)
    }

    /// The open stream's queue and last status, or a new stream's.
    fn stream(&self) -> (mpsc::Sender<MemberStatusMsg>, Arc<Mutex<Option<MemberStatusMsg>>>) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stream) = open.as_ref() {
            return (stream.queue.clone(), Arc::clone(&stream.last));
        }
        let (queue, queued) = mpsc::channel(if self.hold.is_zero() { STREAM_QUEUE } else { GATHERING_QUEUE });
        let last = Arc::new(Mutex::new(None));
        let (slot, mine) = (Arc::downgrade(&self.open), queue.downgrade());
        let stream = gathered(queued, self.hold);
        tokio::spawn(carry(self.client.clone(), stream, slot, mine, Arc::clone(&last), Arc::clone(&self.unserved)));
        *open = Some(OpenStream { queue: queue.clone(), last: Arc::clone(&last) });
        (queue, last)
    }
}

/// Runs one stream's call until it ends, then forgets the stream; when the peer refused it as
/// unknown, notes that and sends the stream's last status by call.
async fn carry(
    mut client: PeerClient<Channel>,
    queued: Gathered<MemberStatusMsg>,
    slot: Weak<Mutex<Option<OpenStream>>>,
    mine: mpsc::WeakSender<MemberStatusMsg>,
    last: Arc<Mutex<Option<MemberStatusMsg>>>,
    unserved: Arc<Mutex<Option<Instant>>>,
) {
    let ended = client.status_stream(queued).await;
    if let Some(slot) = slot.upgrade() {
        let mut open = slot.lock().unwrap_or_else(|p| p.into_inner());
        if open.as_ref().zip(mine.upgrade()).is_some_and(|(kept, mine)| kept.queue.same_channel(&mine)) {
            *open = None;
        }
    }
    let Err(status) = ended else { return };
    if status.code() != tonic::Code::Unimplemented {
        tracing::debug!(error = %status, "a status stream to a peer ended; the next status opens another");
        return;
    }
    *unserved.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    // A newer status, sent by call meanwhile, stays: the peer keeps the newest of a run.
    let last = last.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(msg) = last {
        let _ = tokio::time::timeout(RESEND_TIMEOUT, client.publish_status(msg)).await;
    }
}
