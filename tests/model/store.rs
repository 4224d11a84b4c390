//! The store side of the model: every command a member sends is applied by the real replicated
//! state machine, `failover::coord::raft::fsm::FsmState::apply`, so the model checks the store
//! code that ships rather than a copy of its rules. This file only translates between the model's
//! small values and the library's types, and says which reply, if any, goes back.
//!
//! A refused command sends no reply: a real member learns of the refusal and stops, which only
//! removes behaviour, so leaving the member unaware is the stronger check.

use failover::coord::raft::fsm::{Command, FsmState, Reply};
use failover::domain::{Epoch, Hrs, KeyId, MemberId, Watermark};

use super::state::{M, Msg, Store};

/// How the store side behaves: as shipped, or with a seeded bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreVariant {
    Real,
    /// A release writes its final height over the watermark instead of raising it (an S3 bug).
    ReleaseOverwritesWatermark,
}

fn member_id(m: M) -> MemberId {
    MemberId::new(format!("m{m}")).expect("m followed by digits is a valid member id")
}

fn member_index(id: &MemberId) -> M {
    id.as_str()[1..].parse().expect("the model names its members m0, m1, ...")
}

fn key() -> KeyId {
    KeyId::new("validator-key").expect("a valid key id")
}

fn epoch(e: u8) -> Epoch {
    Epoch::new(u64::from(e))
}

fn small(e: Epoch) -> u8 {
    u8::try_from(e.get()).expect("the model's epochs stay below 256")
}

/// A height as the store keeps it: every round and step of it counts as reserved.
fn hrs(height: u8) -> Hrs {
    Hrs::end_of_height(u64::from(height))
}

fn height(h: Hrs) -> u8 {
    assert_eq!(h, Hrs::end_of_height(h.height), "the model only ever stores whole heights");
    u8::try_from(h.height).expect("the model's heights stay below 256")
}

fn to_fsm(store: &Store) -> FsmState {
    let mut fsm = FsmState { holder: store.holder.map(member_id), epoch: epoch(store.epoch), ..FsmState::default() };
    if store.watermark_epoch > 0 {
        let w = Watermark { hrs: hrs(store.watermark), epoch: epoch(store.watermark_epoch) };
        fsm.watermarks.insert(key(), w);
    }
    fsm
}

fn from_fsm(fsm: &FsmState) -> Store {
    let w = fsm.watermarks.get(&key()).copied().unwrap_or(Watermark::ZERO);
    let watermark = if w == Watermark::ZERO { 0 } else { height(w.hrs) };
    Store {
        holder: fsm.holder.as_ref().map(member_index),
        epoch: small(fsm.epoch),
        watermark,
        watermark_epoch: small(w.epoch),
    }
}

/// Runs one command through the real state machine.
fn run(store: &Store, command: &Command) -> (Store, Option<Reply>) {
    let mut fsm = to_fsm(store);
    let answer = fsm.apply(command).ok();
    (from_fsm(&fsm), answer)
}

/// A member's Acquire is applied: the reply to send, if the lease was granted.
pub fn acquire(store: &Store, member: M) -> (Store, Option<Msg>) {
    let (next, answer) = run(store, &Command::Acquire { member: member_id(member), seen_epoch: None, ttl_ms: None });
    let reply = answer.map(|answer| match answer {
        Reply::Granted { epoch: e, .. } => Msg::Granted { member, epoch: small(e) },
        other => panic!("the store answered Acquire with {other:?}"),
    });
    (next, reply)
}

/// A member's ReadWatermark (sent under `epoch`) is applied: a read through the log.
pub fn read(store: &Store, member: M, epoch: u8) -> Msg {
    match run(store, &Command::Read).1 {
        Some(Reply::State(fsm)) => Msg::Watermark { member, epoch, watermark: from_fsm(&fsm).watermark },
        other => panic!("the store answered a read with {other:?}"),
    }
}

/// A request from the network (ReserveWindow or Release) is applied: the new state and the
/// reply to send, if any.
pub fn apply(store: &Store, request: Msg, variant: StoreVariant) -> (Store, Option<Msg>) {
    let command = match request {
        Msg::ReserveWindow { epoch: e, top, .. } => Command::Reserve { epoch: epoch(e), key: key(), hrs: hrs(top) },
        Msg::Release { member, epoch: e, last_signed } => Command::Release {
            member: member_id(member),
            epoch: epoch(e),
            final_watermark: (last_signed > 0).then(|| (key(), hrs(last_signed))),
        },
        reply => panic!("{reply:?} is a reply, not a request to the store"),
    };
    let (mut next, answer) = run(store, &command);
    let reply = match (request, answer) {
        (_, None) => None,
        (Msg::ReserveWindow { member, epoch, top }, Some(Reply::Watermark(_))) => {
            Some(Msg::Reserved { member, epoch, top })
        }
        (Msg::Release { .. }, Some(Reply::Done)) => None,
        (request, Some(answer)) => panic!("the store answered {request:?} with {answer:?}"),
    };
    if let (StoreVariant::ReleaseOverwritesWatermark, Msg::Release { last_signed, .. }) = (variant, request) {
        // Only a release the state machine accepted (it freed the lease) writes.
        if store.holder.is_some() && next.holder.is_none() {
            next.watermark = last_signed;
        }
    }
    (next, reply)
}

/// The raft leader proposes `Expire` for the current epoch: in the model, at any moment.
pub fn expire(store: &Store) -> Store {
    run(store, &Command::Expire { epoch: epoch(store.epoch), refreshes: None }).0
}
