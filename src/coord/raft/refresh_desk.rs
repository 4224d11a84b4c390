//! The raft leader's side of lease refreshes (signer mode, docs/design.md §4): it checks who
//! asks, hands the asks to its raft node and answers with the node's verdicts — one ask as a
//! call or on a refresh stream, or a round of asks (the refreshes a holder of several
//! validators' leases sends together) on a round stream. It decides nothing about a refresh
//! (the node does, by [`super::refresh`]), never lets a caller refresh a holding its certificate
//! does not name, and never hands a holder an answer to another ask.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::cluster_state::MAX_BATCH;
use super::peer_gate::{Caller, PeerGate, Refusal};
use super::refresh::{RefreshAsk, RefreshRefusal};
use super::transport::{Inbound, LinkFilter};
use crate::domain::{Epoch, MemberId};
use crate::proto::v1::{LeaseRefresh, LeaseRefreshAnswer, LeaseRefreshRound, LeaseRefreshRoundAnswer, RefreshOutcome};

/// How long the leader waits for its own raft node's verdict.
const NODE_ANSWER: Duration = Duration::from_secs(1);
/// Answers waiting to go out on one stream; the holder asks one at a time.
const ANSWERS_QUEUE: usize = 4;
/// How long an answer may wait for the holder to take it before the stream is ended.
const ANSWER_TAKEN: Duration = Duration::from_secs(1);
/// The most asks in one round: one per validator a member may serve, as in a raft batch.
pub(super) const MAX_ROUND: usize = MAX_BATCH;

/// What the leader's side made of one ask, or of one round.
pub(super) enum Verdict<T> {
    /// The node's verdict: for one ask, refreshed or the reason it was refused.
    Judged(T),
    /// No verdict: the node is behind, stopped or late.
    Failed(Status),
    /// The link to the asker is blocked by fault injection: the ask is lost, as on a cut cable.
    Blocked,
    /// Not an ask this caller may make (a malformed member, another member's holding).
    Hostile(Status),
}

/// The node's verdict on one ask.
pub(super) type Judgement = Result<(), RefreshRefusal>;

/// The leader's side: what an ask needs to reach the raft node.
#[derive(Clone)]
pub(super) struct RefreshDesk {
    pub inbox: mpsc::Sender<Inbound>,
    pub gate: PeerGate,
    pub filter: LinkFilter,
}

impl RefreshDesk {
    /// Checks `msg` from `caller` and waits for the raft node's verdict on it.
    pub async fn verdict(&self, caller: &Caller, msg: LeaseRefresh, from: Option<SocketAddr>) -> Verdict<Judgement> {
        let ask = match self.ask_of(caller, &msg, from) {
            Ok(ask) => ask,
            Err(status) => return Verdict::Hostile(status),
        };
        if self.blocked(&ask.member) {
            return Verdict::Blocked;
        }
        let (reply, answer) = oneshot::channel();
        self.judged(Inbound::Refresh { ask, reply }, answer).await
    }

    /// Checks every ask of `round` from `caller` and waits for the raft node's verdicts on all
    /// of them, judged in one turn. A round that is empty, too long, names one validator twice
    /// or holds one hostile ask is hostile as a whole: none of it reaches the node.
    pub async fn round_verdict(
        &self,
        caller: &Caller,
        round: &LeaseRefreshRound,
        from: Option<SocketAddr>,
    ) -> Verdict<Vec<Judgement>> {
        let asks = match self.asks_of(caller, round, from) {
            Ok(asks) => asks,
            Err(status) => return Verdict::Hostile(status),
        };
        // Every ask names the same member (`asks_of`), so one link decides for the round.
        if self.blocked(&asks[0].member) {
            return Verdict::Blocked;
        }
        let (reply, answer) = oneshot::channel();
        match self.judged(Inbound::Refreshes { asks, reply }, answer).await {
            Verdict::Judged(judgements) if judgements.len() != round.asks.len() => Verdict::Failed(Status::internal(
                format!("the raft node judged {} of the round's {} refreshes", judgements.len(), round.asks.len()),
            )),
            other => other,
        }
    }

    /// The round's asks, or why it is hostile.
    fn asks_of(
        &self,
        caller: &Caller,
        round: &LeaseRefreshRound,
        from: Option<SocketAddr>,
    ) -> Result<Vec<RefreshAsk>, Status> {
        let count = round.asks.len();
        let malformed = |what: String| {
            self.gate.refusals.record(Refusal::Malformed, from, &what);
            Status::invalid_argument(what)
        };
        if count == 0 {
            return Err(malformed("a lease refresh round carries no refresh".into()));
        }
        if count > MAX_ROUND {
            return Err(malformed(format!("a lease refresh round carries {count} refreshes, more than {MAX_ROUND}")));
        }
        let mut seen = BTreeSet::new();
        let mut asks: Vec<RefreshAsk> = Vec::with_capacity(count);
        for msg in &round.asks {
            let ask = self.ask_of(caller, msg, from)?;
            if let Some(first) = asks.first()
                && first.member != ask.member
            {
                let (a, b) = (&first.member, &ask.member);
                return Err(malformed(format!(
                    "a lease refresh round names members {a} and {b}: a round carries one holder's refreshes"
                )));
            }
            if !seen.insert(ask.validator.clone()) {
                return Err(malformed(format!("a lease refresh round names validator {} twice", ask.validator)));
            }
            asks.push(ask);
        }
        Ok(asks)
    }

    /// The ask `msg` makes, or why `caller` may not make it.
    fn ask_of(&self, caller: &Caller, msg: &LeaseRefresh, from: Option<SocketAddr>) -> Result<RefreshAsk, Status> {
        let member = MemberId::new(&msg.member).map_err(|e| {
            let what = format!("a lease refresh names no valid member: {e}");
            self.gate.refusals.record(Refusal::Malformed, from, &what);
            Status::invalid_argument(what)
        })?;
        self.gate.check_member(caller, &member, "a lease refresh", from)?;
        let validator = crate::proto::validator_on_wire(&msg.validator).map_err(|e| {
            let what = format!("a lease refresh from {member} names no valid validator: {e}");
            self.gate.refusals.record(Refusal::Malformed, from, &what);
            Status::invalid_argument(what)
        })?;
        Ok(RefreshAsk { validator, member, epoch: Epoch::new(msg.epoch), ttl_ms: msg.ttl_ms })
    }

    fn blocked(&self, member: &MemberId) -> bool {
        self.gate.raft_id_of(member).is_some_and(|id| self.filter.is_blocked(id))
    }

    /// Hands `inbound` to the raft node and waits for what it sends on `answer`.
    async fn judged<T>(&self, inbound: Inbound, answer: oneshot::Receiver<T>) -> Verdict<T> {
        match self.inbox.try_send(inbound) {
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
            Ok(Ok(judged)) => Verdict::Judged(judged),
        }
    }

    /// Answers the asks on one stream from `caller`, in order, until the holder ends it, an ask
    /// is hostile (the stream ends with its status), the holder leaves an answer untaken for
    /// [`ANSWER_TAKEN`] or this member stops.
    pub fn serve(
        self,
        caller: Caller,
        from: Option<SocketAddr>,
        asks: Streaming<LeaseRefresh>,
        shutdown: CancellationToken,
    ) -> ReceiverStream<Result<LeaseRefreshAnswer, Status>> {
        let asker = Arc::new((self, caller));
        serve_stream(asks, shutdown, move |ask: LeaseRefresh| {
            let asker = Arc::clone(&asker);
            async move {
                let (desk, caller) = &*asker;
                let seq = ask.seq;
                match desk.verdict(caller, ask, from).await {
                    Verdict::Judged(judgement) => Some(Ok(judged(seq, judgement))),
                    Verdict::Failed(status) => Some(Ok(failed(seq, &status))),
                    Verdict::Blocked => None,
                    Verdict::Hostile(status) => Some(Err(status)),
                }
            }
        })
    }

    /// As [`Self::serve`], for rounds: each answered with one answer per ask, in their order.
    pub fn serve_rounds(
        self,
        caller: Caller,
        from: Option<SocketAddr>,
        rounds: Streaming<LeaseRefreshRound>,
        shutdown: CancellationToken,
    ) -> ReceiverStream<Result<LeaseRefreshRoundAnswer, Status>> {
        let asker = Arc::new((self, caller));
        serve_stream(rounds, shutdown, move |round: LeaseRefreshRound| {
            let asker = Arc::clone(&asker);
            async move {
                let (desk, caller) = &*asker;
                let places = 1..=round.asks.len() as u64;
                let answers = match desk.round_verdict(caller, &round, from).await {
                    Verdict::Judged(judgements) => places.zip(judgements).map(|(i, j)| judged(i, j)).collect(),
                    Verdict::Failed(status) => places.map(|i| failed(i, &status)).collect(),
                    Verdict::Blocked => return None,
                    Verdict::Hostile(status) => return Some(Err(status)),
                };
                Some(Ok(LeaseRefreshRoundAnswer { seq: round.seq, answers }))
            }
        })
    }
}

/// Answers each message on `incoming` with what `answer` makes of it, in order, on the stream
/// returned: nothing for a message lost to fault injection (`None`), and the stream's end for
/// a hostile one (`Err`).
fn serve_stream<In, Out, F, Fut>(
    mut incoming: Streaming<In>,
    shutdown: CancellationToken,
    answer: F,
) -> ReceiverStream<Result<Out, Status>>
where
    In: Send + 'static,
    Out: Send + 'static,
    F: Fn(In) -> Fut + Send + 'static,
    Fut: Future<Output = Option<Result<Out, Status>>> + Send,
{
    let (answers, out) = mpsc::channel(ANSWERS_QUEUE);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = answers.try_send(Err(Status::unavailable("this member is stopping")));
                    return;
                }
                next = incoming.message() => next,
            };
            // The holder ended the stream, or it broke: the holder opens another.
            let Ok(Some(msg)) = next else { return };
            let Some(reply) = answer(msg).await else { continue };
            let hostile = reply.is_err();
            if !hand_over(&answers, reply, &shutdown).await || hostile {
                return;
            }
        }
    });
    ReceiverStream::new(out)
}

/// Queues `answer` for the holder; false when this member stops, the stream is gone or the
/// holder has taken no answer for [`ANSWER_TAKEN`] (a peer that never reads holds no task).
async fn hand_over<T>(
    answers: &mpsc::Sender<Result<T, Status>>,
    answer: Result<T, Status>,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        sent = tokio::time::timeout(ANSWER_TAKEN, answers.send(answer)) => matches!(sent, Ok(Ok(()))),
    }
}

fn judged(seq: u64, judgement: Judgement) -> LeaseRefreshAnswer {
    match judgement {
        Ok(()) => answer(seq, RefreshOutcome::Refreshed, String::new()),
        Err(refusal) => answer(seq, RefreshOutcome::Refused, refusal.to_string()),
    }
}

fn failed(seq: u64, status: &Status) -> LeaseRefreshAnswer {
    answer(seq, RefreshOutcome::Failed, status.message().to_string())
}

fn answer(seq: u64, outcome: RefreshOutcome, reason: String) -> LeaseRefreshAnswer {
    LeaseRefreshAnswer { seq, outcome: outcome.into(), reason }
}
