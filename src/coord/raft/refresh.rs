//! When the raft leader accepts a lease refresh outside the log (signer mode, docs/design.md §4).
//! Plain data in, a verdict out: it never reads a clock, touches the state machine or moves the
//! expiry timer (the node does those after an acceptance), so every rule is tested here.
//!
//! In signer mode the holder's renews only keep its lease from expiring: no double sign rests on
//! their timing, since every signature is reserved under the holder's epoch. So a renew need not
//! be a log entry, replicated and fsynced on every member several times a second: the holder asks the
//! raft leader to restart its expiry timer. The leader accepts only what a committed renew would
//! also have done, and only when nothing the log holds can undo it:
//! - it leads raft, and has applied an entry of its own term (an `Expire` proposed by an earlier
//!   leader may still sit uncommitted in its log; it commits with the first entry of the term);
//! - the holding is the applied one: the same holder and epoch, with the TTL its grant declared
//!   (a refresh never changes the TTL; a grant of an earlier version declared none);
//! - no `Expire` of this holding is in flight: a refresh leaves the refresh stamp unchanged, so
//!   an `Expire` already proposed would still apply after it.
//!
//! Anything else is refused with the reason; the holder then renews through the log, which
//! gives the authoritative answer.

use crate::domain::{Epoch, MemberId, ValidatorId};

/// A holder's request to refresh its holding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshAsk {
    /// The validator whose lease it refreshes (the default one on the wire's empty string).
    pub validator: ValidatorId,
    pub member: MemberId,
    pub epoch: Epoch,
    pub ttl_ms: u64,
}

/// What the leader's applied state and expiry timer show, at the moment of the ask.
#[derive(Clone, Copy, Debug)]
pub struct LeaderView<'a> {
    pub leads: bool,
    /// An entry of the current term has been applied here.
    pub term_applied: bool,
    pub holder: Option<&'a MemberId>,
    pub epoch: Epoch,
    /// The TTL the holding's grant or last log renew declared (ms): a refresh never changes it.
    pub declared_ttl_ms: Option<u64>,
    /// An `Expire` of the applied holding was proposed and raft took it.
    pub expire_in_flight: bool,
}

/// Why a refresh was not accepted: sent back to the holder, which renews through the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefreshRefusal {
    #[error("the member asked is not the raft leader")]
    NotLeader,
    #[error(
        "the member asked has just become raft leader and has not yet applied an entry of its own term, so an \
         expiry proposed by the previous leader may still apply"
    )]
    TermNotApplied,
    #[error("{member} does not hold the lease at epoch {epoch}: the leader's applied state shows {shown}")]
    NotHolder { member: MemberId, epoch: Epoch, shown: String },
    #[error("the refresh declares a TTL of {asked} ms but the holding declared {declared}")]
    TtlDiffers { asked: u64, declared: String },
    #[error("an expiry of the lease at epoch {epoch} is already proposed")]
    ExpireInFlight { epoch: Epoch },
}

/// Whether the leader may restart its expiry timer for `ask`.
pub fn check(ask: &RefreshAsk, view: &LeaderView<'_>) -> Result<(), RefreshRefusal> {
    if !view.leads {
        return Err(RefreshRefusal::NotLeader);
    }
    if !view.term_applied {
        return Err(RefreshRefusal::TermNotApplied);
    }
    if view.holder != Some(&ask.member) || view.epoch != ask.epoch {
        let shown = match view.holder {
            Some(h) => format!("{h} holding it at epoch {}", view.epoch),
            None => format!("the lease free after epoch {}", view.epoch),
        };
        return Err(RefreshRefusal::NotHolder { member: ask.member.clone(), epoch: ask.epoch, shown });
    }
    if view.declared_ttl_ms != Some(ask.ttl_ms) {
        let declared = view.declared_ttl_ms.map_or_else(|| "none".to_string(), |ms| format!("{ms} ms"));
        return Err(RefreshRefusal::TtlDiffers { asked: ask.ttl_ms, declared });
    }
    if view.expire_in_flight {
        return Err(RefreshRefusal::ExpireInFlight { epoch: ask.epoch });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> MemberId {
        MemberId::new(s).expect("valid id")
    }

    fn ask(member: &str, epoch: u64, ttl_ms: u64) -> RefreshAsk {
        RefreshAsk { validator: ValidatorId::default_validator(), member: m(member), epoch: Epoch::new(epoch), ttl_ms }
    }

    // Each rule refuses on its own, with a reason that names what differs; a refresh that
    // matches the applied holding is accepted.
    #[test]
    fn a_refresh_is_accepted_only_for_the_applied_holding_with_nothing_in_flight() {
        let a = m("a");
        let view = LeaderView {
            leads: true,
            term_applied: true,
            holder: Some(&a),
            epoch: Epoch::new(4),
            declared_ttl_ms: Some(400),
            expire_in_flight: false,
        };
        assert_eq!(check(&ask("a", 4, 400), &view), Ok(()));
        type Case<'v> = (&'v str, LeaderView<'v>, RefreshAsk, &'v str);
        let cases: [Case<'_>; 9] = [
            ("a follower", LeaderView { leads: false, ..view }, ask("a", 4, 400), "not the raft leader"),
            ("a new leader", LeaderView { term_applied: false, ..view }, ask("a", 4, 400), "not yet applied"),
            (
                "another holder",
                view,
                ask("b", 4, 400),
                "b does not hold the lease at epoch 4: the leader's applied state shows a holding it at epoch 4",
            ),
            ("an earlier epoch", view, ask("a", 3, 400), "a does not hold the lease at epoch 3"),
            ("a later epoch", view, ask("a", u64::MAX, 400), "at epoch 18446744073709551615"),
            ("a free lease", LeaderView { holder: None, ..view }, ask("a", 4, 400), "the lease free after epoch 4"),
            (
                "another TTL",
                view,
                ask("a", 4, u64::MAX),
                "a TTL of 18446744073709551615 ms but the holding declared 400 ms",
            ),
            ("no TTL declared", LeaderView { declared_ttl_ms: None, ..view }, ask("a", 4, 400), "declared none"),
            (
                "an expiry in flight",
                LeaderView { expire_in_flight: true, ..view },
                ask("a", 4, 400),
                "expiry of the lease at epoch 4 is already proposed",
            ),
        ];
        for (what, view, ask, reason) in cases {
            let refused = check(&ask, &view).expect_err(what);
            assert!(refused.to_string().contains(reason), "{what}: {refused}");
        }
    }
}
