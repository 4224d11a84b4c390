//! The holder's side of lease refreshes (signer mode, docs/design.md §4): its streams to the raft
//! leader, for single asks or for rounds of asks ([`Exchange`]), opened at the first refresh
//! and kept while that member leads (one per exchange in flight at once: several validators'
//! refreshes overlap), with answers matched to asks by number. A call costs a new HTTP/2
//! stream with headers and trailers, three writes and a task; an ask on the stream is one
//! message each way, and renews come several times a second. This module decides nothing
//! about a refresh (the leader's node does, by [`super::refresh`]) and must never hand the
//! holder the answer to another ask.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::transport::RefreshCallError;
use crate::proto::v1::peer_client::PeerClient;
use crate::proto::v1::{LeaseRefresh, LeaseRefreshAnswer, LeaseRefreshRound, LeaseRefreshRoundAnswer, RefreshOutcome};

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

/// What travels on one kind of refresh stream: single asks ([`SingleAsks`]) or rounds
/// ([`RoundAsks`]).
pub(super) trait Exchange: Send + Sync + 'static {
    type Ask: Clone + Send + Sync + 'static;
    type Answer: Send + 'static;
    /// `ask`, numbered `seq` on its stream.
    fn numbered(ask: Self::Ask, seq: u64) -> Self::Ask;
    /// The number of the ask `answer` answers.
    fn seq_of(answer: &Self::Answer) -> u64;
    /// Opens a stream that carries `asks`.
    fn open(
        client: PeerClient<Channel>,
        asks: ReceiverStream<Self::Ask>,
    ) -> impl Future<Output = Result<tonic::Response<Streaming<Self::Answer>>, Status>> + Send;
}

/// One lease refresh per message (`RefreshStream`).
pub(super) struct SingleAsks;

impl Exchange for SingleAsks {
    type Ask = LeaseRefresh;
    type Answer = LeaseRefreshAnswer;
    fn numbered(ask: LeaseRefresh, seq: u64) -> LeaseRefresh {
        LeaseRefresh { seq, ..ask }
    }
    fn seq_of(answer: &LeaseRefreshAnswer) -> u64 {
        answer.seq
    }
    async fn open(
        mut client: PeerClient<Channel>,
        asks: ReceiverStream<LeaseRefresh>,
    ) -> Result<tonic::Response<Streaming<LeaseRefreshAnswer>>, Status> {
        client.refresh_stream(asks).await
    }
}

/// The refreshes that leave together, one round per message (`RefreshRoundStream`).
pub(super) struct RoundAsks;

impl Exchange for RoundAsks {
    type Ask = LeaseRefreshRound;
    type Answer = LeaseRefreshRoundAnswer;
    fn numbered(round: LeaseRefreshRound, seq: u64) -> LeaseRefreshRound {
        LeaseRefreshRound { seq, ..round }
    }
    fn seq_of(answer: &LeaseRefreshRoundAnswer) -> u64 {
        answer.seq
    }
    async fn open(
        mut client: PeerClient<Channel>,
        rounds: ReceiverStream<LeaseRefreshRound>,
    ) -> Result<tonic::Response<Streaming<LeaseRefreshRoundAnswer>>, Status> {
        client.refresh_round_stream(rounds).await
    }
}

/// How an exchange on the stream ended.
pub(super) enum Streamed<A> {
    Answered(Result<A, RefreshCallError>),
    /// The leader serves no such stream (an earlier version).
    NotServed,
}

/// The holder's streams of one kind to the raft leader, opened at the first refresh and kept
/// while that member leads. A stream carries one exchange at a time; the refreshes of several
/// validators' leases overlap, so the streams that answered wait here for the next ask, up to
/// [`IDLE_LINKS`] of them: without them each overlapping refresh would open, and a kept one
/// end, a stream (headers, trailers and a task on the leader) several hundred times a second.
pub(super) struct RefreshLinks<E: Exchange> {
    idle: Mutex<Vec<RefreshLink<E>>>,
    /// The leader that answered it serves no stream, and when.
    unserved: Mutex<Option<(u64, Instant)>>,
}

impl<E: Exchange> Default for RefreshLinks<E> {
    fn default() -> Self {
        RefreshLinks { idle: Mutex::new(Vec::new()), unserved: Mutex::new(None) }
    }
}

struct RefreshLink<E: Exchange> {
    leader: u64,
    asks: mpsc::Sender<E::Ask>,
    /// `None` until the leader answered the opening.
    answers: Option<Streaming<E::Answer>>,
    /// The number of the newest ask.
    asked: u64,
}

impl<E: Exchange> RefreshLinks<E> {
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
        msg: E::Ask,
        deadline: Instant,
    ) -> Streamed<E::Answer> {
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
        mut link: RefreshLink<E>,
        opening: Option<mpsc::Receiver<E::Ask>>,
        client: &PeerClient<Channel>,
        msg: E::Ask,
        deadline: Instant,
    ) -> Attempt<E::Answer> {
        link.asked += 1;
        let seq = link.asked;
        // Queued before the stream opens: the ask goes out with the opening.
        if link.asks.try_send(E::numbered(msg, seq)).is_err() {
            return Attempt::Broken(RefreshCallError::Failed("its refresh stream took no more asks".into()));
        }
        if let Some(queued) = opening {
            match tokio::time::timeout_at(deadline, E::open(client.clone(), ReceiverStream::new(queued))).await {
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
enum Attempt<A> {
    /// The leader answered; the stream serves the next ask.
    Answered(A),
    /// No answer (or no opening) by the deadline: the stream is dropped, which cancels the ask
    /// if the leader has not taken it yet (it may still apply one it took, as with a call).
    Late,
    /// The stream ended or misbehaved before answering.
    Broken(RefreshCallError),
    NotServed,
}

impl<A> From<Attempt<A>> for Streamed<A> {
    fn from(attempt: Attempt<A>) -> Streamed<A> {
        match attempt {
            Attempt::Answered(answer) => Streamed::Answered(Ok(answer)),
            Attempt::Late => Streamed::Answered(Err(RefreshCallError::Timeout)),
            Attempt::Broken(why) => Streamed::Answered(Err(why)),
            Attempt::NotServed => Streamed::NotServed,
        }
    }
}

impl<E: Exchange> RefreshLink<E> {
    /// Waits for the answer to ask `seq`. Answers to earlier asks cannot come (a stream whose
    /// ask went unanswered is dropped), but one that did is skipped, never taken for this one.
    async fn answer_to(&mut self, seq: u64, deadline: Instant) -> Attempt<E::Answer> {
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
            let answered = E::seq_of(&answer);
            if answered < seq {
                continue;
            }
            if answered > seq {
                let why = format!("it answered ask {answered} on the refresh stream when {seq} was the newest");
                return Attempt::Broken(RefreshCallError::Failed(why));
            }
            return Attempt::Answered(answer);
        }
    }
}

/// What an answer on the stream says, as a call's result would.
pub(super) fn outcome(answer: LeaseRefreshAnswer) -> Result<(), RefreshCallError> {
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
