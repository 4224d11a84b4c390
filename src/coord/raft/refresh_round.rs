//! Rounds of lease refreshes (signer mode, on a member holding several validators' leases):
//! the refreshes that leave on one beat (`refresh_beat`) go to the raft leader as one message,
//! are judged in one turn of its node and come back as one answer, which is handed to each
//! refresh. At fifty validators that is a message each way every beat instead of one per lease,
//! a few hundred a second on the holder and on the leader.
//!
//! A refresh joins the round that is gathering, or starts one; the round leaves [`ROUND_HOLD`]
//! after its first refresh joined (the validators woken by one beat join within a fraction of
//! that) and before the earliest deadline among them. It never judges, merges or retries a
//! refresh: each gets the answer to its own ask, or the round's failure, and a leader that
//! serves no rounds (an earlier version) sends every refresh back to be asked alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::refresh_desk::MAX_ROUND;
use super::refresh_link::{RefreshLinks, RoundAsks, Streamed, outcome};
use super::transport::RefreshCallError;
use crate::proto::v1::peer_client::PeerClient;
use crate::proto::v1::{LeaseRefresh, LeaseRefreshRound, LeaseRefreshRoundAnswer};

/// How long a round gathers after its first refresh: long enough for every validator woken by
/// the same beat to join, short beside the refresh's budget (half of a 150 ms renew interval's
/// margin at the defaults).
pub(super) const ROUND_HOLD: Duration = Duration::from_millis(2);

/// What became of one refresh sent with a round.
pub(super) enum Joined {
    Answered(Result<(), RefreshCallError>),
    /// The leader serves no rounds: ask it alone.
    NotServed,
}

/// One refresh waiting for its round to leave.
struct Waiting {
    leader: u64,
    client: PeerClient<Channel>,
    ask: LeaseRefresh,
    deadline: Instant,
    reply: oneshot::Sender<Joined>,
}

/// This member's gathering round and its round streams to the leader.
#[derive(Default)]
pub(super) struct RefreshRounds {
    gathering: Arc<Mutex<Vec<Waiting>>>,
    links: Arc<RefreshLinks<RoundAsks>>,
}

impl RefreshRounds {
    /// Whether refreshes to `leader` go in rounds: unless it answered lately that it serves none.
    pub fn serves(&self, leader: u64) -> bool {
        self.links.serves(leader)
    }

    /// Sends `ask` to `leader` (through `client`) with the round that is gathering, answered by
    /// `deadline`.
    pub async fn refresh(
        &self,
        client: &PeerClient<Channel>,
        leader: u64,
        ask: LeaseRefresh,
        deadline: Instant,
    ) -> Joined {
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting { leader, client: client.clone(), ask, deadline, reply };
        let starts = {
            let mut gathering = self.gathering.lock().unwrap_or_else(|p| p.into_inner());
            gathering.push(waiting);
            gathering.len() == 1
        };
        if starts {
            // A task of its own: the round must leave even if this refresh's caller gives up.
            tokio::spawn(send_round(Arc::clone(&self.gathering), Arc::clone(&self.links)));
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Joined::Answered(Err(RefreshCallError::Timeout)),
            Ok(Err(_)) => Joined::Answered(Err(RefreshCallError::Failed("its round ended without an answer".into()))),
            Ok(Ok(joined)) => joined,
        }
    }
}

/// After [`ROUND_HOLD`], sends the refreshes gathered, one round per leader they name (one but
/// while leadership moves), at most [`MAX_ROUND`] in a round.
async fn send_round(gathering: Arc<Mutex<Vec<Waiting>>>, links: Arc<RefreshLinks<RoundAsks>>) {
    tokio::time::sleep(ROUND_HOLD).await;
    let mut waiting = std::mem::take(&mut *gathering.lock().unwrap_or_else(|p| p.into_inner()));
    while !waiting.is_empty() {
        let leader = waiting[0].leader;
        let (mut round, rest): (Vec<_>, Vec<_>) = waiting.into_iter().partition(|w| w.leader == leader);
        waiting = rest;
        if round.len() > MAX_ROUND {
            waiting.extend(round.split_off(MAX_ROUND));
        }
        tokio::spawn(exchange(Arc::clone(&links), round));
    }
}

/// One round to its leader; each refresh gets its answer.
async fn exchange(links: Arc<RefreshLinks<RoundAsks>>, round: Vec<Waiting>) {
    let Some(first) = round.first() else { return };
    let (leader, client) = (first.leader, first.client.clone());
    let deadline = round.iter().map(|w| w.deadline).min().unwrap_or_else(Instant::now);
    let msg = LeaseRefreshRound { seq: 0, asks: round.iter().map(|w| w.ask.clone()).collect() };
    match links.refresh(&client, leader, msg, deadline).await {
        Streamed::NotServed => {
            for w in round {
                let _ = w.reply.send(Joined::NotServed);
            }
        }
        Streamed::Answered(Err(why)) => {
            for w in round {
                let _ = w.reply.send(Joined::Answered(Err(why.clone())));
            }
        }
        Streamed::Answered(Ok(answer)) => hand_out(round, answer),
    }
}

/// Gives each refresh of `round` its own answer; a round answered with another count of
/// answers than it had asks fails every refresh (none can be matched with certainty).
fn hand_out(round: Vec<Waiting>, answer: LeaseRefreshRoundAnswer) {
    let in_order = answer.answers.iter().zip(1..).all(|(a, place)| a.seq == place);
    if answer.answers.len() != round.len() || !in_order {
        let why = if in_order {
            format!("it answered {} refreshes to a round of {}", answer.answers.len(), round.len())
        } else {
            "it answered a round's refreshes out of their order".to_string()
        };
        for w in round {
            let _ = w.reply.send(Joined::Answered(Err(RefreshCallError::Failed(why.clone()))));
        }
        return;
    }
    for (w, one) in round.into_iter().zip(answer.answers) {
        let _ = w.reply.send(Joined::Answered(outcome(one)));
    }
}
