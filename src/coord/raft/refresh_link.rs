//! Lease refreshes between the holder and the raft leader (signer mode, docs/design.md §4): the
//! leader's side hands each ask to its raft node and answers with the node's verdict, as a call
//! or on long-lived streams; the holder's side keeps those streams open to the current leader
//! (one per refresh in flight at once: several validators' refreshes overlap) and matches
//! answers to asks by number. A call costs a new HTTP/2 stream with headers and
//! trailers, three writes and a task; an ask on the stream is one message each way, and renews
//! come several times a second. This module decides nothing about a refresh (the node does, by
//! [`super::refresh`]), must never hand the holder the answer to another ask, and never lets a
//! caller refresh a holding its certificate does not name.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::peer_gate::{Caller, PeerGate, Refusal};
use super::refresh::RefreshAsk;
use super::transport::{Inbound, LinkFilter, RefreshCallError};
use crate::domain::{Epoch, MemberId};
use crate::proto::v1::peer_client::PeerClient;
use crate::proto::v1::{LeaseRefresh, LeaseRefreshAnswer, RefreshOutcome};

/// How long the leader waits for its own raft node's verdict.
const NODE_ANSWER: Duration = Duration::from_secs(1);
/// Answers waiting to go out on one stream; the holder asks one at a time.
const ANSWERS_QUEUE: usize = 4;
/// How long an answer may wait for the holder to take it before the stream is ended.
const ANSWER_TAKEN: Duration = Duration::from_secs(1);
/// New streams one refresh tries when each fails before answering.
const NEW_STREAM_TRIES: u32 = 3;
/// Asks waiting to go out on the holder's stream; it asks one at a time.
const ASKS_QUEUE: usize = 4;
/// Streams kept open to the leader for the next refreshes, at most: as many as leave together
/// on one beat (`refresh_beat`) at the defaults with 256 validators (a refresh each 150 ms, 7.5
/// beats to a renew interval: about 34 a beat), with room to spare.
const IDLE_LINKS: usize = 48;
/// After a leader answered that it serves no refresh stream (an earlier version), the holder
/// uses calls to it for this long, then tries the stream again (the leader may have upgraded).
const RETRY_STREAM_AFTER: Duration = Duration::from_secs(30);

/// What the leader's side made of one ask.
pub(super) enum Verdict {
    Refreshed,
    /// The node's rules refused it; the holder renews through the log.
    Refused(String),
    /// No verdict: the node is behind, stopped or late.
    Failed(Status),
    /// The link to the asker is blocked by fault injection: the ask is lost, as on a cut cable.
    Blocked,
    /// Not an ask this caller may make (a malformed member, another member's holding).
    Hostile(Status),
}

/// The leader's side: what an ask needs to reach the raft node.
#[derive(Clone)]
pub(super) struct RefreshDesk {
    pub inbox: mpsc::Sender<Inbound>,
    pub gate: PeerGate,
    pub filter: LinkFilter,
}

impl RefreshDesk {
    /// Checks `msg` from `caller` and waits for the raft node's verdict on it.
    pub async fn verdict(&self, caller: &Caller, msg: LeaseRefresh, from: Option<SocketAddr>) -> Verdict {
        let member = match MemberId::new(&msg.member) {
            Ok(member) => member,
            Err(e) => {
                let what = format!("a lease refresh names no valid member: {e}");
                self.gate.refusals.record(Refusal::Malformed, from, &what);
                return Verdict::Hostile(Status::invalid_argument(what));
            }
        };
        if let Err(status) = self.gate.check_member(caller, &member, "a lease refresh", from) {
            return Verdict::Hostile(status);
        }
        if self.gate.raft_id_of(&member).is_some_and(|id| self.filter.is_blocked(id)) {
            return Verdict::Blocked;
        }
        let validator = match crate::proto::validator_on_wire(&msg.validator) {
            Ok(v) => v,
            Err(e) => {
                let what = format!("a lease refresh from {member} names no valid validator: {e}");
                self.gate.refusals.record(Refusal::Malformed, from, &what);
                return Verdict::Hostile(Status::invalid_argument(what));
            }
        };
        let (reply, answer) = oneshot::channel();
        let ask = RefreshAsk { validator, member, epoch: Epoch::new(msg.epoch), ttl_ms: msg.ttl_ms };
        match self.inbox.try_send(Inbound::Refresh { ask, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Verdict::Failed(Status::unavailable("the raft node of the member asked is behind"));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Verdict::Failed(Status::unavailable("the raft node of the member asked has stopped"));
            }
        }
        match tokio::time::timeout(NODE_ANSWER, answer).await {
            Err(_) => {
                Verdict::Failed(Status::deadline_exceeded("the raft node of the member asked did not answer in time"))
            }
            Ok(Err(_)) => Verdict::Failed(Status::unavailable("the raft node of the member asked has stopped")),
            Ok(Ok(Err(refusal))) => Verdict::Refused(refusal.to_string()),
            Ok(Ok(Ok(()))) => Verdict::Refreshed,
        }
    }

    /// Answers the asks on one stream from `caller`, in order, until the holder ends it, an ask
    /// is hostile (the stream ends with its status), the holder leaves an answer untaken for
    /// [`ANSWER_TAKEN`] or this member stops.
    pub fn serve(
        self,
        caller: Caller,
        from: Option<SocketAddr>,
        mut asks: Streaming<LeaseRefresh>,
        shutdown: CancellationToken,
    ) -> ReceiverStream<Result<LeaseRefreshAnswer, Status>> {
        let (answers, out) = mpsc::channel(ANSWERS_QUEUE);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => {
                        let _ = answers.try_send(Err(Status::unavailable("this member is stopping")));
                        return;
                    }
                    next = asks.message() => next,
                };
                // The holder ended the stream, or it broke: the holder opens another.
                let Ok(Some(ask)) = next else { return };
                let seq = ask.seq;
                let answer = match self.verdict(&caller, ask, from).await {
                    Verdict::Refreshed => Ok(answer(seq, RefreshOutcome::Refreshed, String::new())),
                    Verdict::Refused(why) => Ok(answer(seq, RefreshOutcome::Refused, why)),
                    Verdict::Failed(status) => Ok(answer(seq, RefreshOutcome::Failed, status.message().to_string())),
                    Verdict::Blocked => continue,
                    Verdict::Hostile(status) => Err(status),
                };
                let hostile = answer.is_err();
                if !hand_over(&answers, answer, &shutdown).await || hostile {
                    return;
                }
            }
        });
        ReceiverStream::new(out)
    }
}

/// Queues `answer` for the holder; false when this member stops, the stream is gone or the
/// holder has taken no answer for [`ANSWER_TAKEN`] (a peer that never reads holds no task).
async fn hand_over(
    answers: &mpsc::Sender<Result<LeaseRefreshAnswer, Status>>,
    answer: Result<LeaseRefreshAnswer, Status>,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        sent = tokio::time::timeout(ANSWER_TAKEN, answers.send(answer)) => matches!(sent, Ok(Ok(()))),
    }
}

fn answer(seq: u64, outcome: RefreshOutcome, reason: String) -> LeaseRefreshAnswer {
    LeaseRefreshAnswer { seq, outcome: outcome.into(), reason }
}

/// How a refresh on the stream ended.
pub(super) enum Streamed {
    Answered(Result<(), RefreshCallError>),
    /// The leader serves no refresh stream (an earlier version): ask it by a call.
    NotServed,
}

/// The holder's side: its streams to the raft leader, opened at the first refresh and kept
/// while that member leads. A stream carries one exchange at a time; the refreshes of several
/// validators' leases overlap, so the streams that answered wait here for the next ask, up to
/// [`IDLE_LINKS`] of them: without them each overlapping refresh would open, and a kept one
/// end, a stream (headers, trailers and a task on the leader) several hundred times a second.
#[derive(Default)]
pub(super) struct RefreshLinks {
    idle: Mutex<Vec<RefreshLink>>,
    /// The leader that answered it serves no stream, and when.
    unserved: Mutex<Option<(u64, Instant)>>,
}

struct RefreshLink {
    leader: u64,
    asks: mpsc::Sender<LeaseRefresh>,
    /// `None` until the leader answered the opening.
    answers: Option<Streaming<LeaseRefreshAnswer>>,
    /// The number of the newest ask.
    asked: u64,
}

impl RefreshLinks {
    /// Whether refreshes to `leader` go on the stream: unless it answered lately that it serves
    /// none.
    pub fn serves(&self, leader: u64) -> bool {
        match *self.unserved.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((id, at)) if id == leader => at.elapsed() >= RETRY_STREAM_AFTER,
            _ => true,
        }
    }

    /// Asks `leader` (through `client`) to refresh as `msg` says, answered by `deadline`. A
    /// kept stream that turns out to have ended (the leader restarted, the connection broke) is
    /// replaced by a new one within the same deadline, rather than failing the refresh and
    /// sending the holder to the log.
    pub async fn refresh(
        &self,
        client: &PeerClient<Channel>,
        leader: u64,
        msg: LeaseRefresh,
        deadline: Instant,
    ) -> Streamed {
        // Taken out for the exchange: a refresh that finds none idle opens its own stream.
        let held = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            // Streams to a member that no longer leads are dropped, which ends them.
            idle.retain(|l| l.leader == leader);
            idle.pop()
        };
        if let Some(link) = held {
            match self.ask_on(link, None, client, msg.clone(), deadline).await {
                Attempt::Broken(_) => {}
                done => return done.into(),
            }
        }
        // A connection that is closing fails a new stream at once ("operation was canceled")
        // and the channel dials again for the next: a few tries, within the deadline.
        let mut tries = 0;
        loop {
            tries += 1;
            let (asks, queued) = mpsc::channel(ASKS_QUEUE);
            let link = RefreshLink { leader, asks, answers: None, asked: 0 };
            match self.ask_on(link, Some(queued), client, msg.clone(), deadline).await {
                Attempt::Broken(_) if tries < NEW_STREAM_TRIES && Instant::now() < deadline => {}
                done => return done.into(),
            }
        }
    }

    /// One ask on `link`, opened first when `opening` holds its queue; the link is kept for
    /// the next ask when it answered.
    async fn ask_on(
        &self,
        mut link: RefreshLink,
        opening: Option<mpsc::Receiver<LeaseRefresh>>,
        client: &PeerClient<Channel>,
        msg: LeaseRefresh,
        deadline: Instant,
    ) -> Attempt {
        link.asked += 1;
        let seq = link.asked;
        // Queued before the stream opens: the ask goes out with the opening.
        if link.asks.try_send(LeaseRefresh { seq, ..msg }).is_err() {
            return Attempt::Broken(RefreshCallError::Failed("its refresh stream took no more asks".into()));
        }
        if let Some(queued) = opening {
            let mut client = client.clone();
            match tokio::time::timeout_at(deadline, client.refresh_stream(ReceiverStream::new(queued))).await {
                Err(_) => return Attempt::Late,
                Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                    *self.unserved.lock().unwrap_or_else(|p| p.into_inner()) = Some((link.leader, Instant::now()));
                    return Attempt::NotServed;
                }
                Ok(Err(status)) => return Attempt::Broken(RefreshCallError::Failed(describe(&status))),
                Ok(Ok(response)) => link.answers = Some(response.into_inner()),
            }
        }
        let answered = link.answer_to(seq, deadline).await;
        if let Attempt::Answered(_) = answered {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_LINKS {
                idle.push(link);
            }
        }
        answered
    }
}

/// How one ask on a stream ended.
enum Attempt {
    /// The leader answered; the stream serves the next ask.
    Answered(Result<(), RefreshCallError>),
    /// No answer (or no opening) by the deadline: the stream is dropped, which cancels the ask
    /// if the leader has not taken it yet (it may still apply one it took, as with a call).
    Late,
    /// The stream ended or misbehaved before answering.
    Broken(RefreshCallError),
    NotServed,
}

impl From<Attempt> for Streamed {
    fn from(attempt: Attempt) -> Streamed {
        match attempt {
            Attempt::Answered(result) => Streamed::Answered(result),
            Attempt::Late => Streamed::Answered(Err(RefreshCallError::Timeout)),
            Attempt::Broken(why) => Streamed::Answered(Err(why)),
            Attempt::NotServed => Streamed::NotServed,
        }
    }
}

impl RefreshLink {
    /// Waits for the answer to ask `seq`. Answers to earlier asks cannot come (a stream whose
    /// ask went unanswered is dropped), but one that did is skipped, never taken for this one.
    async fn answer_to(&mut self, seq: u64, deadline: Instant) -> Attempt {
        let Some(answers) = self.answers.as_mut() else {
            return Attempt::Broken(RefreshCallError::Failed("its refresh stream is not open".into()));
        };
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, answers.message()).await else {
                return Attempt::Late;
            };
            let answer = match next {
                Ok(Some(answer)) => answer,
                Ok(None) => return Attempt::Broken(RefreshCallError::Failed("it ended the refresh stream".into())),
                Err(status) => return Attempt::Broken(RefreshCallError::Failed(describe(&status))),
            };
            if answer.seq < seq {
                continue;
            }
            if answer.seq > seq {
                let why = format!("it answered ask {} on the refresh stream when {seq} was the newest", answer.seq);
                return Attempt::Broken(RefreshCallError::Failed(why));
            }
            return Attempt::Answered(outcome(answer));
        }
    }
}

/// What an answer on the stream says, as a call's result would.
fn outcome(answer: LeaseRefreshAnswer) -> Result<(), RefreshCallError> {
    match RefreshOutcome::try_from(answer.outcome) {
        Ok(RefreshOutcome::Refreshed) => Ok(()),
        Ok(RefreshOutcome::Refused) => Err(RefreshCallError::Refused(answer.reason)),
        Ok(RefreshOutcome::Failed) => Err(RefreshCallError::Failed(answer.reason)),
        Ok(RefreshOutcome::Unspecified) | Err(_) => {
            Err(RefreshCallError::Failed(format!("its answer names no known outcome ({})", answer.outcome)))
        }
    }
}

/// A status from the leader, as a refresh failure names it.
pub(super) fn describe(status: &Status) -> String {
    format!("{} ({})", status.message(), status.code().description())
}
