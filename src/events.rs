//! The member's event stream (`failoverctl events --follow`): role changes, guard results,
//! fences, lease and intent changes seen in the store, and operator actions, each numbered and
//! time-stamped.
//!
//! Owns a bounded history and a broadcast to followers; it never blocks the daemon loop (a slow
//! follower misses events and is told how many) and never decides anything.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

use crate::domain::{Epoch, MemberId};

/// Events kept for a follower that connects later.
pub const HISTORY: usize = 256;

/// What an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Role,
    Guard,
    Fence,
    Lease,
    Intent,
    Operator,
    /// A signature the watermark refused (signer mode).
    Refusal,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Role => "role",
            EventKind::Guard => "guard",
            EventKind::Fence => "fence",
            EventKind::Lease => "lease",
            EventKind::Intent => "intent",
            EventKind::Operator => "operator",
            EventKind::Refusal => "refusal",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub seq: u64,
    /// Wall-clock time, for people reading the stream; nothing decides by it.
    pub unix_ms: i64,
    pub member: MemberId,
    /// The validator it is about, on a member serving several (`[[validators]]`).
    pub validator: Option<crate::domain::ValidatorId>,
    pub kind: EventKind,
    pub epoch: Option<Epoch>,
    /// A short stable word for the cause (`holder_silent`, `unhealthy`, `planned`, …) on role
    /// changes; empty on other events.
    pub cause: &'static str,
    pub message: String,
}

pub struct EventLog {
    member: MemberId,
    validator: Option<crate::domain::ValidatorId>,
    seq: AtomicU64,
    history: Mutex<VecDeque<EventRecord>>,
    live: broadcast::Sender<EventRecord>,
}

impl EventLog {
    pub fn new(member: MemberId) -> EventLog {
        EventLog::of_validator(member, None)
    }

    /// The events of one validator of a member serving several: each carries its id.
    pub fn of_validator(member: MemberId, validator: Option<crate::domain::ValidatorId>) -> EventLog {
        EventLog {
            member,
            validator,
            seq: AtomicU64::new(1),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            live: broadcast::channel(HISTORY).0,
        }
    }

    /// Records an event and hands it to every follower.
    pub fn emit(&self, kind: EventKind, epoch: Option<Epoch>, message: impl Into<String>) {
        self.emit_with_cause(kind, epoch, "", message);
    }

    /// [`EventLog::emit`] with the typed cause's word (see [`EventRecord::cause`]).
    pub fn emit_with_cause(
        &self,
        kind: EventKind,
        epoch: Option<Epoch>,
        cause: &'static str,
        message: impl Into<String>,
    ) {
        let record = EventRecord {
            seq: self.seq.fetch_add(1, Ordering::SeqCst),
            unix_ms: i64::try_from(crate::domain::rfc3339::now_unix_nanos() / 1_000_000).unwrap_or(i64::MAX),
            member: self.member.clone(),
            validator: self.validator.clone(),
            kind,
            epoch,
            cause,
            message: message.into(),
        };
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(record.clone());
        // Sent under the lock, so a follower's history and live stream meet without a gap.
        let _ = self.live.send(record);
    }

    /// The history so far and a receiver of what comes after it.
    pub fn follow(&self) -> (Vec<EventRecord>, broadcast::Receiver<EventRecord>) {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        (history.iter().cloned().collect(), self.live.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_follower_gets_the_history_then_every_later_event_in_order() {
        let log = EventLog::new(MemberId::new("a").expect("id"));
        log.emit(EventKind::Role, None, "standby");
        let (history, mut live) = log.follow();
        log.emit(EventKind::Guard, Some(Epoch::new(3)), "passed");
        assert_eq!(history.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
        let next = live.recv().await.expect("live event");
        assert_eq!((next.seq, next.kind, next.epoch), (2, EventKind::Guard, Some(Epoch::new(3))));
    }

    #[test]
    fn the_history_is_bounded() {
        let log = EventLog::new(MemberId::new("a").expect("id"));
        for i in 0..(HISTORY + 10) {
            log.emit(EventKind::Lease, None, format!("{i}"));
        }
        let (history, _) = log.follow();
        assert_eq!(history.len(), HISTORY);
        assert_eq!(history[0].seq, 11);
    }
}
