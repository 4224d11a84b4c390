//! The replicated state machine of the raft backend (docs/design.md §4): the lease, its epoch, the
//! watermark per key and the operator intents, changed only by applying [`Command`]s from the
//! raft log.
//!
//! `apply` is deterministic: no clock, no randomness, no I/O, so every member that applies the
//! same log reaches the same state. Expiry is a command (`Expire`) that the raft leader proposes
//! from its own monotonic timer; the state machine never decides that time has passed. It only
//! records what that timer needs: the TTL the holder declared with its last grant or renew, and a
//! count of refreshes (the refresh stamp), so that an `Expire` decided before a renew committed
//! changes nothing.
//!
//! The stamp must be the same on every member at every log index, or a conditional `Expire`
//! applies on some members and not on others and the state machines split. Snapshots of earlier
//! versions carry no stamp, so a state restored from one keeps none (`refreshes: None`), and so
//! does a new state: stamps start for every member at once with the replicated
//! `StartRefreshStamps` (the raft leader proposes it when its state has none). Until then an
//! `Expire` is unconditional, as it was in those versions, and a `TakeOver` is refused.
//!
//! A fenced takeover (`TakeOver`) moves the lease past a holding its caller fenced, without
//! waiting for expiry: it is granted only while that holding is still the current one and has not
//! been refreshed through the log since the caller looked (docs/design.md §5,
//! `fence_takeover_after`; not in signer mode, whose renews are not log entries).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::coord::{CoordError, Intents, Transfer, plan_import};
use crate::domain::{Epoch, Hrs, KeyId, LeaseView, MemberId, Watermark};

/// A change to the replicated state, as it travels through the raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    Acquire {
        member: MemberId,
        /// The last epoch the proposer saw: granted only if the lease is still at it. A copy of
        /// an old acquire that raft commits late (its caller long gone) is refused instead of
        /// granting a lease nobody asked for now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seen_epoch: Option<Epoch>,
        /// The lease TTL the holder runs with, in ms: the leader expires the lease this long
        /// after it applied the holder's last refresh. Absent (entries of earlier versions): the
        /// leader's own `lease_ttl + safety_margin`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    Renew {
        member: MemberId,
        epoch: Epoch,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    Release {
        member: MemberId,
        epoch: Epoch,
        final_watermark: Option<(KeyId, Hrs)>,
    },
    /// Proposed by the raft leader once the TTL passed on its clock without a renew.
    Expire {
        epoch: Epoch,
        /// The refresh count the leader's timer ran from: a renew committed before this entry
        /// (after the timer fired) makes it a no-op. Absent (earlier versions): unconditional.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refreshes: Option<u64>,
    },
    /// A fenced takeover: `member` ran the `fence_command` against `holder`, which held the
    /// lease at `epoch` with `refreshes` refreshes when `member` looked, and it succeeded.
    /// Granted (at the next epoch) only while exactly that holding is current and unrefreshed, so
    /// a stale request (the lease moved on, or the holder renewed since) changes nothing.
    TakeOver {
        member: MemberId,
        holder: MemberId,
        epoch: Epoch,
        refreshes: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    Reserve {
        epoch: Epoch,
        key: KeyId,
        hrs: Hrs,
    },
    Checkpoint {
        epoch: Epoch,
        key: KeyId,
        height: u64,
    },
    /// An import of one key. Every version decodes it and applies it alike (without the import
    /// ceiling, which the proposer checks first: entries written before the ceiling existed
    /// must replay to the state they produced then), so a one-key import — all the control API
    /// sends — is proposed as this, and a member not yet upgraded applies it too.
    Import {
        key: KeyId,
        hrs: Hrs,
    },
    /// An import of several keys, all or nothing ([`crate::coord::plan_import`]): every entry is
    /// checked before anything changes, and one refused entry refuses the command. Versions
    /// before it cannot decode it and skip it, so it is proposed only for more than one key,
    /// which the control API never sends (one cluster, one key).
    ImportAll {
        entries: Vec<(KeyId, Hrs)>,
    },
    Pause {
        paused: bool,
    },
    Transfer {
        to: MemberId,
        /// Also when the lease is free: `to` is then the next holder (promote --force).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        forced: bool,
    },
    /// Changes nothing; its answer is the state at its place in the log (a linearizable read).
    Read,
    /// Starts refresh stamps at 0 where the state keeps none; a no-op where it keeps one. A
    /// feature gate: every member starts counting at this entry. Versions before it cannot
    /// decode it and skip it; they keep no stamp.
    StartRefreshStamps,
    /// A command to one validator's state (docs/design.md §4, [`super::cluster_state`]); an
    /// unscoped command is the default validator's. Versions before `[[validators]]` cannot
    /// decode it and skip it, so a cluster serves several validators only once every member
    /// runs a version that knows them.
    Scoped {
        validator: crate::domain::ValidatorId,
        command: Box<Command>,
    },
    /// Several commands in one log entry, each applied on its own as if it were its own entry:
    /// the renews of many leases in one proposal. Never nested.
    Batch {
        commands: Vec<Command>,
    },
}

impl Command {
    /// Whether applying it renews the lease timer of `epoch` on the leader.
    pub fn refreshes(&self, epoch: Epoch) -> bool {
        matches!(self, Command::Acquire { .. } | Command::TakeOver { .. })
            || matches!(self, Command::Renew { epoch: e, .. } if *e == epoch)
    }
}

/// Why a fenced takeover, or a look at the holding for one, is refused before refresh stamps
/// started.
pub const STAMPS_NOT_STARTED: &str = "the cluster keeps no refresh stamp yet (its state comes from a snapshot of an \
     earlier version), so a renew by the holder could not be told apart; the raft leader starts stamps with its next \
     commit: try the takeover again then";

/// The longest TTL a holder may declare (the config's own maximum of `lease_ttl`): a larger one
/// is taken as this, so no command can keep a lease from expiring for longer.
pub const MAX_DECLARED_TTL_MS: u64 = 5 * 60 * 1000;

/// What an applied command answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A grant, with the watermarks as of it: the same entry, so a read of them is linearizable
    /// with the grant (every reservation committed before it is in them, every later one of an
    /// earlier epoch is refused). The promotion guard's floor needs nothing else from the store.
    Granted {
        epoch: Epoch,
        watermarks: BTreeMap<KeyId, Watermark>,
    },
    Done,
    Watermark(Watermark),
    /// The watermarks after an `ImportAll`, in the order of its entries.
    Watermarks(Vec<Watermark>),
    TransferSet(Transfer),
    State(Box<FsmState>),
    /// A [`Command::Batch`]'s answers, in the order of its commands.
    Batch(Vec<Result<Reply, CoordError>>),
}

/// The whole replicated state. Small: it is also the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsmState {
    pub holder: Option<MemberId>,
    /// The last epoch granted (the current one while `holder` is set).
    pub epoch: Epoch,
    pub watermarks: BTreeMap<KeyId, Watermark>,
    pub paused: bool,
    pub transfer: Option<Transfer>,
    /// The TTL the current holder declared with its last grant or renew (ms), for the leader's
    /// expiry timer; `None` when it declared none (earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl_ms: Option<u64>,
    /// Grants and renews applied since refresh stamps started (`StartRefreshStamps`): what an
    /// `Expire` or a `TakeOver` is conditioned on. `None` before: in a new state, and in one
    /// restored from a snapshot of an earlier version (which has no such field). Stored as
    /// `refresh_stamp`: builds before the stamps started with one command kept a count under
    /// `refreshes` that each member started at its own log index, so it is not read back.
    #[serde(default, rename = "refresh_stamp", skip_serializing_if = "Option::is_none")]
    pub refreshes: Option<u64>,
}

impl FsmState {
    pub fn lease(&self) -> LeaseView {
        match &self.holder {
            Some(holder) => LeaseView::Held { holder: holder.clone(), epoch: self.epoch },
            None => LeaseView::Free { epoch: self.epoch },
        }
    }

    pub fn intents(&self) -> Intents {
        Intents { paused: self.paused, transfer: self.transfer.clone() }
    }

    /// The `Expire` the raft leader proposes for the current holding: conditioned on the refresh
    /// stamp when the state keeps one, unconditional (as in earlier versions) when not.
    pub fn expire_command(&self) -> Command {
        Command::Expire { epoch: self.epoch, refreshes: self.refreshes }
    }

    /// Applies one command. Refusals leave the state unchanged.
    pub fn apply(&mut self, cmd: &Command) -> Result<Reply, CoordError> {
        match cmd {
            Command::Acquire { member, seen_epoch, ttl_ms } => self.acquire(member, *seen_epoch, *ttl_ms),
            Command::TakeOver { member, holder, epoch, refreshes, ttl_ms } => {
                self.take_over(member, holder, *epoch, *refreshes, *ttl_ms)
            }
            Command::Renew { member, epoch, ttl_ms } => {
                self.check_holder(member, *epoch)?;
                self.refreshed(*ttl_ms);
                Ok(Reply::Done)
            }
            Command::Release { member, epoch, final_watermark } => {
                self.check_holder(member, *epoch)?;
                if let Some((key, hrs)) = final_watermark {
                    let current = self.watermark_or_zero(key);
                    let raised = current.raise(self.epoch, *epoch, *hrs)?;
                    self.watermarks.insert(key.clone(), raised);
                }
                self.holder = None;
                self.lease_ttl_ms = None;
                Ok(Reply::Done)
            }
            Command::Expire { epoch, refreshes } => {
                // A stamp the state does not keep cannot be checked: such an Expire changes
                // nothing (the leader proposes an unconditional one then).
                let unrefreshed = refreshes.is_none_or(|n| self.refreshes == Some(n));
                if self.holder.is_some() && self.epoch == *epoch && unrefreshed {
                    self.holder = None;
                    self.lease_ttl_ms = None;
                }
                Ok(Reply::Done)
            }
            Command::Reserve { epoch, key, hrs } => {
                let current = self.holding_epoch(*epoch)?;
                let next = self.watermark_or_zero(key).reserve(current, *epoch, *hrs)?;
                self.watermarks.insert(key.clone(), next);
                Ok(Reply::Watermark(next))
            }
            Command::Checkpoint { epoch, key, height } => {
                let current = self.holding_epoch(*epoch)?;
                let next = self.watermark_or_zero(key).raise(current, *epoch, Hrs::end_of_height(*height))?;
                self.watermarks.insert(key.clone(), next);
                Ok(Reply::Watermark(next))
            }
            Command::Import { key, hrs } => {
                let next = self.watermark_or_zero(key).import_without_ceiling(*hrs)?;
                self.watermarks.insert(key.clone(), next);
                Ok(Reply::Watermark(next))
            }
            Command::ImportAll { entries } => {
                let next = plan_import(entries, |key| self.watermarks.get(key).copied())?;
                for ((key, _), w) in entries.iter().zip(&next) {
                    self.watermarks.insert(key.clone(), *w);
                }
                Ok(Reply::Watermarks(next))
            }
            Command::Pause { paused } => {
                self.paused = *paused;
                Ok(Reply::Done)
            }
            Command::Transfer { to, forced } => {
                let holder = match (&self.holder, forced) {
                    (Some(holder), _) => Some(holder),
                    (None, true) => None,
                    (None, false) => {
                        return Err(CoordError::Invalid(
                            "no member holds the lease, so there is nothing to hand over".into(),
                        ));
                    }
                };
                if holder == Some(to) {
                    return Err(CoordError::Invalid(format!("{to} already holds the lease")));
                }
                let t = Transfer { to: to.clone(), epoch: self.epoch, forced: *forced };
                self.transfer = Some(t.clone());
                Ok(Reply::TransferSet(t))
            }
            Command::Read => Ok(Reply::State(Box::new(self.clone()))),
            Command::StartRefreshStamps => {
                self.refreshes.get_or_insert(0);
                Ok(Reply::Done)
            }
            Command::Scoped { .. } | Command::Batch { .. } => Err(CoordError::Invalid(
                "a scoped command or a batch is applied to the cluster's state, not to one validator's".into(),
            )),
        }
    }

    fn acquire(
        &mut self,
        member: &MemberId,
        seen_epoch: Option<Epoch>,
        ttl_ms: Option<u64>,
    ) -> Result<Reply, CoordError> {
        if let Some(holder) = &self.holder {
            return Err(CoordError::LeaseHeld { holder: holder.clone(), epoch: self.epoch });
        }
        if seen_epoch.is_some_and(|seen| seen != self.epoch) {
            return Err(CoordError::LeaseMoved { epoch: self.epoch });
        }
        Ok(self.grant(member, ttl_ms))
    }

    /// A fenced takeover: granted only while `holder` holds `epoch` with exactly `refreshes`
    /// grants and renews counted; anything else is refused and changes nothing.
    fn take_over(
        &mut self,
        member: &MemberId,
        holder: &MemberId,
        epoch: Epoch,
        refreshes: u64,
        ttl_ms: Option<u64>,
    ) -> Result<Reply, CoordError> {
        let Some(stamp) = self.refreshes else {
            return Err(CoordError::Unavailable(STAMPS_NOT_STARTED.into()));
        };
        if (self.holder.as_ref(), self.epoch, stamp) != (Some(holder), epoch, refreshes) {
            return Err(CoordError::LeaseMoved { epoch: self.epoch });
        }
        if member == holder {
            return Err(CoordError::Invalid(format!("{member} cannot take the lease over from itself")));
        }
        Ok(self.grant(member, ttl_ms))
    }

    /// Grants the lease to `member` at the next epoch.
    fn grant(&mut self, member: &MemberId, ttl_ms: Option<u64>) -> Reply {
        self.epoch = self.epoch.next();
        self.holder = Some(member.clone());
        self.transfer = None;
        self.refreshed(ttl_ms);
        Reply::Granted { epoch: self.epoch, watermarks: self.watermarks.clone() }
    }

    fn refreshed(&mut self, ttl_ms: Option<u64>) {
        self.refreshes = self.refreshes.map(|n| n.wrapping_add(1));
        self.lease_ttl_ms = ttl_ms.map(|t| t.min(MAX_DECLARED_TTL_MS));
    }

    fn watermark_or_zero(&self, key: &KeyId) -> Watermark {
        self.watermarks.get(key).copied().unwrap_or(Watermark::ZERO)
    }

    fn check_holder(&self, member: &MemberId, epoch: Epoch) -> Result<(), CoordError> {
        if self.holder.as_ref() == Some(member) && self.epoch == epoch {
            Ok(())
        } else {
            Err(CoordError::NotHolder { epoch, current: self.lease() })
        }
    }

    /// The current epoch, when the lease is held at `epoch`; a write from anyone else is refused.
    fn holding_epoch(&self, epoch: Epoch) -> Result<Epoch, CoordError> {
        if self.holder.is_some() && self.epoch == epoch {
            Ok(self.epoch)
        } else {
            Err(CoordError::NotHolder { epoch, current: self.lease() })
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::Step;

    fn m(s: &str) -> MemberId {
        MemberId::new(s).expect("valid")
    }
    fn k() -> KeyId {
        KeyId::new("validator").expect("valid")
    }
    fn e(n: u64) -> Epoch {
        Epoch::new(n)
    }
    fn granted(epoch: Epoch) -> Reply {
        Reply::Granted { epoch, watermarks: BTreeMap::new() }
    }
    /// A state whose refresh stamps started, as every state is one commit after a leader.
    fn stamped() -> FsmState {
        let mut s = FsmState::default();
        s.apply(&Command::StartRefreshStamps).expect("start stamps");
        s
    }
    fn take_over(member: &str, holder: &str, epoch: u64, refreshes: u64) -> Command {
        Command::TakeOver { member: m(member), holder: m(holder), epoch: e(epoch), refreshes, ttl_ms: Some(3000) }
    }

    #[test]
    fn a_grant_answers_with_the_watermarks_as_of_the_grant() {
        let mut s = FsmState::default();
        s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: None }).expect("grant");
        s.apply(&Command::Reserve { epoch: e(1), key: k(), hrs: Hrs::new(7, 0, Step::Precommit) }).expect("reserve");
        s.apply(&Command::Expire { epoch: e(1), refreshes: None }).expect("expire");
        let r = s.apply(&Command::Acquire { member: m("b"), seen_epoch: None, ttl_ms: None }).expect("grant");
        let want = Watermark { hrs: Hrs::new(7, 0, Step::Precommit), epoch: e(1) };
        assert_eq!(r, Reply::Granted { epoch: e(2), watermarks: BTreeMap::from([(k(), want)]) });
    }

    /// docs/design.md §4: the leader's timer may fire while a renew is on its way; the `Expire`
    /// it proposed carries the refresh count the timer ran from, and a renew committed first
    /// makes it a no-op, so a briefly slow leader does not take the lease from a live holder.
    #[test]
    fn an_expire_decided_before_a_renew_committed_changes_nothing() {
        let mut s = stamped();
        s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: Some(300) }).expect("grant");
        let timer_fired = s.expire_command();
        s.apply(&Command::Renew { member: m("a"), epoch: e(1), ttl_ms: Some(300) }).expect("renew");
        s.apply(&timer_fired).expect("a no-op");
        assert_eq!(s.lease(), LeaseView::Held { holder: m("a"), epoch: e(1) });
        s.apply(&s.expire_command()).expect("expire");
        assert_eq!(s.lease(), LeaseView::Free { epoch: e(1) });
        assert_eq!(s.lease_ttl_ms, None, "a free lease has no declared TTL");
    }

    #[test]
    fn the_declared_ttl_follows_the_last_refresh_and_is_capped() {
        let mut s = FsmState::default();
        s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: Some(400) }).expect("grant");
        assert_eq!(s.lease_ttl_ms, Some(400));
        s.apply(&Command::Renew { member: m("a"), epoch: e(1), ttl_ms: Some(u64::MAX) }).expect("renew");
        assert_eq!(s.lease_ttl_ms, Some(MAX_DECLARED_TTL_MS));
        s.apply(&Command::Renew { member: m("a"), epoch: e(1), ttl_ms: None }).expect("renew");
        assert_eq!(s.lease_ttl_ms, None, "a renew of an earlier version declares none");
        s.apply(&Command::Release { member: m("a"), epoch: e(1), final_watermark: None }).expect("release");
        assert_eq!(s.lease_ttl_ms, None);
    }

    /// docs/design.md §5, fenced takeover: one line per request against a holding of `a` at
    /// epoch 1 with 2 refreshes (a grant and a renew): (request, granted?). A request that names
    /// another holder, another epoch or an older refresh count — stale, or forged without
    /// having looked — changes nothing.
    #[test]
    fn a_takeover_is_granted_only_for_the_exact_holding_that_was_fenced() {
        let cases: &[(Command, bool)] = &[
            (take_over("b", "a", 1, 2), true),
            (take_over("b", "a", 1, 1), false), // the holder renewed since the caller looked
            (take_over("b", "a", 0, 2), false), // an earlier epoch
            (take_over("b", "a", 2, 2), false), // an epoch not granted yet
            (take_over("b", "c", 1, 2), false), // another holder
            (take_over("a", "a", 1, 2), false), // from itself
        ];
        for (i, (cmd, granted)) in cases.iter().enumerate() {
            let mut s = stamped();
            s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: Some(3000) }).expect("grant");
            s.apply(&Command::Renew { member: m("a"), epoch: e(1), ttl_ms: Some(3000) }).expect("renew");
            s.apply(&Command::Reserve { epoch: e(1), key: k(), hrs: Hrs::new(5, 0, Step::Prevote) }).expect("reserve");
            let before = s.clone();
            let r = s.apply(cmd);
            if *granted {
                assert!(
                    matches!(&r, Ok(Reply::Granted { epoch, watermarks }) if *epoch == e(2) && watermarks.len() == 1),
                    "case {i}: {r:?}"
                );
                assert_eq!(s.lease(), LeaseView::Held { holder: m("b"), epoch: e(2) }, "case {i}");
                // The fenced holder's writes are refused from now on.
                let stale = s.apply(&Command::Reserve { epoch: e(1), key: k(), hrs: Hrs::new(6, 0, Step::Prevote) });
                assert!(matches!(stale, Err(CoordError::NotHolder { .. })), "case {i}");
            } else {
                assert!(r.is_err(), "case {i}: {r:?}");
                assert_eq!(s, before, "case {i}: a refused takeover changed the state");
            }
        }
        // A free lease is never "taken over": it is acquired.
        let mut s = stamped();
        s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: None }).expect("grant");
        s.apply(&Command::Expire { epoch: e(1), refreshes: None }).expect("expire");
        assert!(s.apply(&take_over("b", "a", 1, 1)).is_err());
    }

    // A snapshot written by a version without refresh stamps, at the point where the log below
    // had granted `a` the lease and renewed it twice.
    const OLD_SNAPSHOT: &str =
        r#"{"holder":"a","epoch":1,"watermarks":{},"paused":false,"transfer":null,"lease_ttl_ms":300}"#;

    fn old_log() -> Vec<Command> {
        let renew = Command::Renew { member: m("a"), epoch: e(1), ttl_ms: Some(300) };
        vec![Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: Some(300) }, renew.clone(), renew]
    }

    /// In-place upgrade: one member replayed the whole log, another restored the earlier
    /// version's snapshot and applied only what followed. Whatever the leader proposes from its
    /// own state, both stay identical — before stamps started, at the entry that starts them,
    /// and after (docs/design.md §4: apply is deterministic).
    #[test]
    fn a_member_restored_from_an_old_snapshot_agrees_with_one_that_replayed_the_log() {
        let renew = Command::Renew { member: m("a"), epoch: e(1), ttl_ms: Some(300) };
        for leader_replayed in [true, false] {
            let mut replayed = FsmState::default();
            for c in old_log() {
                replayed.apply(&c).expect("old log applies");
            }
            let mut restored: FsmState = serde_json::from_str(OLD_SNAPSHOT).expect("an old snapshot decodes");
            assert_eq!(restored.refreshes, None, "an old snapshot has no stamp, and none is made up");
            // After the upgrade: one more renew, then the leader's timer fires and it proposes.
            replayed.apply(&renew).expect("renew");
            restored.apply(&renew).expect("renew");
            let leader = if leader_replayed { &replayed } else { &restored };
            let expire = leader.expire_command();
            assert_eq!(expire, Command::Expire { epoch: e(1), refreshes: None }, "no stamp: unconditional");
            assert_eq!(replayed.apply(&expire), restored.apply(&expire));
            assert_eq!(replayed, restored, "leader replayed: {leader_replayed}");
            // Stamps start at one index for both; from then on conditional expiry agrees too.
            for s in [&mut replayed, &mut restored] {
                s.apply(&Command::StartRefreshStamps).expect("start");
                s.apply(&Command::Acquire { member: m("b"), seen_epoch: None, ttl_ms: Some(300) }).expect("grant");
            }
            let stale = replayed.expire_command();
            for s in [&mut replayed, &mut restored] {
                s.apply(&Command::Renew { member: m("b"), epoch: e(2), ttl_ms: Some(300) }).expect("renew");
                s.apply(&stale).expect("a no-op");
                s.apply(&Command::StartRefreshStamps).expect("a second start is a no-op");
            }
            assert_eq!(replayed, restored);
            assert_eq!(replayed.refreshes, Some(2));
            assert_eq!(replayed.lease(), LeaseView::Held { holder: m("b"), epoch: e(2) });
        }
    }

    /// Before stamps started, a takeover is refused with the reason (and changes nothing), and
    /// an Expire conditioned on a stamp the state does not keep changes nothing either.
    #[test]
    fn without_refresh_stamps_a_takeover_is_refused_and_a_conditional_expire_does_nothing() {
        let mut s = FsmState::default();
        s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: Some(300) }).expect("grant");
        let before = s.clone();
        let r = s.apply(&take_over("b", "a", 1, 0));
        assert!(matches!(&r, Err(CoordError::Unavailable(why)) if why.contains("no refresh stamp yet")), "{r:?}");
        s.apply(&Command::Expire { epoch: e(1), refreshes: Some(0) }).expect("a no-op");
        assert_eq!(s, before);
        s.apply(&Command::StartRefreshStamps).expect("start");
        s.apply(&Command::Renew { member: m("a"), epoch: e(1), ttl_ms: Some(300) }).expect("renew");
        assert!(matches!(s.apply(&take_over("b", "a", 1, 1)), Ok(Reply::Granted { .. })));
    }

    // The entries earlier versions wrote still decode, and new states round-trip through a
    // snapshot with their stamp.
    #[test]
    fn old_entries_decode_and_stamps_survive_a_snapshot() {
        let old: &[(&str, Command)] = &[
            (r#"{"op":"expire","epoch":3}"#, Command::Expire { epoch: e(3), refreshes: None }),
            (r#"{"op":"expire","epoch":3,"refreshes":7}"#, Command::Expire { epoch: e(3), refreshes: Some(7) }),
            (r#"{"op":"renew","member":"a","epoch":3}"#, Command::Renew { member: m("a"), epoch: e(3), ttl_ms: None }),
        ];
        for (text, want) in old {
            assert_eq!(&serde_json::from_str::<Command>(text).expect("decodes"), want, "{text}");
        }
        let start = serde_json::to_string(&Command::StartRefreshStamps).expect("encode");
        assert_eq!(start, r#"{"op":"start_refresh_stamps"}"#);
        let mut s = stamped();
        s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: Some(300) }).expect("grant");
        let back: FsmState = serde_json::from_slice(&serde_json::to_vec(&s).expect("encode")).expect("decode");
        assert_eq!(back, s);
        assert_eq!(back.refreshes, Some(1));
    }

    /// Builds between the conditional `Expire` and `StartRefreshStamps` wrote a per-member count
    /// as `refreshes`; members disagreed on it, so it is ignored and stamps start afresh.
    #[test]
    fn a_count_kept_by_an_interim_build_is_not_taken_for_a_stamp() {
        let interim = r#"{"holder":"a","epoch":1,"watermarks":{},"paused":false,"transfer":null,"lease_ttl_ms":300,"refreshes":5}"#;
        let restored: FsmState = serde_json::from_str(interim).expect("an interim snapshot decodes");
        assert_eq!(restored.refreshes, None);
        let mut replayed = FsmState::default();
        for c in old_log() {
            replayed.apply(&c).expect("old log applies");
        }
        let mut restored = restored;
        for s in [&mut replayed, &mut restored] {
            s.apply(&Command::StartRefreshStamps).expect("start");
            s.apply(&Command::Renew { member: m("a"), epoch: e(1), ttl_ms: Some(300) }).expect("renew");
        }
        assert_eq!(replayed, restored, "both count from the same entry");
    }

    #[test]
    fn acquire_only_when_free_and_epochs_increase() {
        let mut s = FsmState::default();
        assert_eq!(s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: None }), Ok(granted(e(1))));
        assert!(matches!(
            s.apply(&Command::Acquire { member: m("b"), seen_epoch: None, ttl_ms: None }),
            Err(CoordError::LeaseHeld { .. })
        ));
        assert!(matches!(
            s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: None }),
            Err(CoordError::LeaseHeld { .. })
        ));
        s.apply(&Command::Expire { epoch: e(1), refreshes: None }).expect("expire");
        assert_eq!(s.apply(&Command::Acquire { member: m("b"), seen_epoch: None, ttl_ms: None }), Ok(granted(e(2))));
    }

    #[test]
    fn expire_of_an_older_epoch_does_not_touch_the_new_holder() {
        let mut s = FsmState::default();
        s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: None }).expect("grant");
        s.apply(&Command::Release { member: m("a"), epoch: e(1), final_watermark: None }).expect("release");
        s.apply(&Command::Acquire { member: m("b"), seen_epoch: None, ttl_ms: None }).expect("grant");
        s.apply(&Command::Expire { epoch: e(1), refreshes: None }).expect("expire is a no-op");
        assert_eq!(s.lease(), LeaseView::Held { holder: m("b"), epoch: e(2) });
    }

    #[test]
    fn stale_holder_cannot_renew_reserve_checkpoint_or_release() {
        let mut s = FsmState::default();
        s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: None }).expect("grant");
        s.apply(&Command::Expire { epoch: e(1), refreshes: None }).expect("expire");
        s.apply(&Command::Acquire { member: m("b"), seen_epoch: None, ttl_ms: None }).expect("grant");
        let stale = [
            Command::Renew { member: m("a"), epoch: e(1), ttl_ms: None },
            Command::Reserve { epoch: e(1), key: k(), hrs: Hrs::new(10, 0, Step::Propose) },
            Command::Checkpoint { epoch: e(1), key: k(), height: 10 },
            Command::Release { member: m("a"), epoch: e(1), final_watermark: Some((k(), Hrs::end_of_height(10))) },
        ];
        for c in &stale {
            assert!(matches!(s.apply(c), Err(CoordError::NotHolder { .. })), "{c:?}");
        }
        assert!(s.watermarks.is_empty());
    }

    #[test]
    fn reserve_after_expiry_is_refused_even_at_the_same_epoch() {
        let mut s = FsmState::default();
        s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: None }).expect("grant");
        s.apply(&Command::Expire { epoch: e(1), refreshes: None }).expect("expire");
        let r = s.apply(&Command::Reserve { epoch: e(1), key: k(), hrs: Hrs::new(1, 0, Step::Propose) });
        assert!(matches!(r, Err(CoordError::NotHolder { .. })));
    }

    #[test]
    fn release_raises_the_watermark_then_frees() {
        let mut s = FsmState::default();
        s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: None }).expect("grant");
        s.apply(&Command::Release {
            member: m("a"),
            epoch: e(1),
            final_watermark: Some((k(), Hrs::end_of_height(42))),
        })
        .expect("release");
        assert_eq!(s.watermarks[&k()].hrs, Hrs::end_of_height(42));
        assert_eq!(s.lease(), LeaseView::Free { epoch: e(1) });
    }

    #[test]
    fn a_late_copy_of_an_old_acquire_is_refused() {
        let mut s = FsmState::default();
        s.apply(&Command::Acquire { member: m("b"), seen_epoch: Some(e(0)), ttl_ms: None }).expect("grant at epoch 1");
        s.apply(&Command::Release { member: m("b"), epoch: e(1), final_watermark: None }).expect("release");
        // a's acquire from when the lease was at epoch 0, committed only now.
        assert!(matches!(
            s.apply(&Command::Acquire { member: m("a"), seen_epoch: Some(e(0)), ttl_ms: None }),
            Err(CoordError::LeaseMoved { epoch }) if epoch == e(1)
        ));
        assert_eq!(s.holder, None);
        assert_eq!(
            s.apply(&Command::Acquire { member: m("a"), seen_epoch: Some(e(1)), ttl_ms: None }),
            Ok(granted(e(2)))
        );
    }

    #[test]
    fn transfer_needs_a_holder_and_another_target_and_is_cleared_by_acquire() {
        let mut s = FsmState::default();
        assert!(s.apply(&Command::Transfer { to: m("b"), forced: false }).is_err());
        s.apply(&Command::Acquire { member: m("a"), seen_epoch: None, ttl_ms: None }).expect("grant");
        assert!(s.apply(&Command::Transfer { to: m("a"), forced: false }).is_err());
        assert_eq!(
            s.apply(&Command::Transfer { to: m("b"), forced: false }),
            Ok(Reply::TransferSet(Transfer { to: m("b"), epoch: e(1), forced: false }))
        );
        s.apply(&Command::Release { member: m("a"), epoch: e(1), final_watermark: None }).expect("release");
        assert!(s.transfer.is_some(), "the target still needs to see it");
        s.apply(&Command::Acquire { member: m("b"), seen_epoch: None, ttl_ms: None }).expect("grant");
        assert_eq!(s.transfer, None);
    }

    #[test]
    fn commands_round_trip_through_json() {
        let c = Command::Reserve { epoch: e(3), key: k(), hrs: Hrs::new(9, 1, Step::Prevote) };
        let bytes = serde_json::to_vec(&c).expect("encode");
        assert_eq!(serde_json::from_slice::<Command>(&bytes).expect("decode"), c);
    }

    fn k2() -> KeyId {
        KeyId::new("validator-2").expect("valid")
    }

    // One line per case (docs/design.md §3 S3; an import is all or nothing): starting from k at
    // 10/0/precommit and no k2, (entries, refused?, k's height after, k2's height after).
    #[test]
    fn import_all_applies_every_entry_or_none() {
        use Step::*;
        type Case = (Vec<(KeyId, Hrs)>, bool, u64, Option<u64>);
        let cases: Vec<Case> = vec![
            (vec![(k(), Hrs::new(20, 0, Propose)), (k2(), Hrs::new(5, 0, Propose))], false, 20, Some(5)),
            (vec![(k(), Hrs::new(10, 0, Precommit)), (k2(), Hrs::new(5, 0, Propose))], false, 10, Some(5)),
            (vec![(k2(), Hrs::new(5, 0, Propose)), (k(), Hrs::new(9, 0, Precommit))], true, 10, None),
            (vec![(k(), Hrs::new(20, 0, Propose)), (k2(), Hrs::new(1 << 54, 0, Propose))], true, 10, None),
            (vec![(k(), Hrs::new(20, 0, Propose)), (k(), Hrs::new(21, 0, Propose))], true, 10, None),
            (vec![], true, 10, None),
        ];
        for (i, (entries, refused, k_after, k2_after)) in cases.into_iter().enumerate() {
            let mut s = FsmState::default();
            s.apply(&Command::ImportAll { entries: vec![(k(), Hrs::new(10, 0, Precommit))] }).expect("seed");
            let before = s.clone();
            let r = s.apply(&Command::ImportAll { entries: entries.clone() });
            assert_eq!(r.is_err(), refused, "case {i}: {r:?}");
            if refused {
                assert_eq!(s, before, "case {i}: a refused import changed the state");
            } else {
                let after: Vec<Hrs> = match r {
                    Ok(Reply::Watermarks(w)) => w.iter().map(|w| w.hrs).collect(),
                    other => panic!("case {i}: {other:?}"),
                };
                assert_eq!(after, entries.iter().map(|(_, h)| *h).collect::<Vec<_>>(), "case {i}");
            }
            assert_eq!(s.watermarks[&k()].hrs.height, k_after, "case {i}");
            assert_eq!(s.watermarks.get(&k2()).map(|w| w.hrs.height), k2_after, "case {i}");
        }
    }

    #[test]
    fn a_refused_import_names_the_entry_that_was_refused() {
        let mut s = FsmState::default();
        s.apply(&Command::ImportAll { entries: vec![(k2(), Hrs::end_of_height(50))] }).expect("seed");
        let r = s.apply(&Command::ImportAll {
            entries: vec![(k(), Hrs::end_of_height(60)), (k2(), Hrs::end_of_height(40))],
        });
        assert!(matches!(r, Err(CoordError::ImportRefused { key, .. }) if key == k2()));
    }

    // Logs written before ImportAll hold `import` entries: they still decode and apply as they
    // did then, without the ceiling, so a member replaying them reaches the same state.
    #[test]
    fn an_import_entry_written_by_an_earlier_version_still_decodes_and_applies() {
        let cases: &[(&str, Hrs)] = &[
            (
                r#"{"op":"import","key":"validator","hrs":{"height":4304,"round":0,"step":"precommit"}}"#,
                Hrs::new(4304, 0, Step::Precommit),
            ),
            (
                r#"{"op":"import","key":"validator","hrs":{"height":18446744073709551615,"round":0,"step":"propose"}}"#,
                Hrs::new(u64::MAX, 0, Step::Propose),
            ),
        ];
        for (text, hrs) in cases {
            let cmd: Command = serde_json::from_str(text).expect("an old entry decodes");
            assert_eq!(cmd, Command::Import { key: k(), hrs: *hrs });
            let mut s = FsmState::default();
            assert_eq!(s.apply(&cmd), Ok(Reply::Watermark(Watermark { hrs: *hrs, epoch: Epoch::ZERO })), "{text}");
            assert_eq!(s.watermarks[&k()].hrs, *hrs);
        }
    }

    fn arb_cmd() -> impl Strategy<Value = Command> {
        let member = prop::sample::select(vec!["a", "b", "c"]).prop_map(m);
        let epoch = (0u64..6).prop_map(e);
        let hrs = (0u64..20, 0u32..3, prop::sample::select(Step::ALL.to_vec())).prop_map(|(h, r, s)| Hrs::new(h, r, s));
        prop_oneof![
            member.clone().prop_map(|member| Command::Acquire { member, seen_epoch: None, ttl_ms: None }),
            (member.clone(), epoch.clone()).prop_map(|(member, epoch)| Command::Renew { member, epoch, ttl_ms: None }),
            (member.clone(), epoch.clone(), prop::option::of(hrs.clone())).prop_map(|(member, epoch, h)| {
                Command::Release { member, epoch, final_watermark: h.map(|h| (k(), h)) }
            }),
            (epoch.clone(), prop::option::of(0u64..8))
                .prop_map(|(epoch, refreshes)| Command::Expire { epoch, refreshes }),
            (member.clone(), member.clone(), epoch.clone(), 0u64..8).prop_map(|(member, holder, epoch, refreshes)| {
                Command::TakeOver { member, holder, epoch, refreshes, ttl_ms: None }
            }),
            (epoch.clone(), hrs.clone()).prop_map(|(epoch, hrs)| Command::Reserve { epoch, key: k(), hrs }),
            (epoch, 0u64..20).prop_map(|(epoch, height)| Command::Checkpoint { epoch, key: k(), height }),
            hrs.clone().prop_map(|hrs| Command::Import { key: k(), hrs }),
            prop::collection::vec((prop::sample::select(vec![k(), k2()]), hrs), 0..3)
                .prop_map(|entries| Command::ImportAll { entries }),
            any::<bool>().prop_map(|paused| Command::Pause { paused }),
            member.prop_map(|to| Command::Transfer { to, forced: false }),
            Just(Command::StartRefreshStamps),
        ]
    }

    proptest! {
        // S3 and the epoch rules hold for any log: the watermark never decreases, grants get
        // strictly increasing epochs, and a successful reserve is strictly above what was there.
        #[test]
        fn any_log_keeps_watermarks_monotonic_and_epochs_increasing(cmds in prop::collection::vec(arb_cmd(), 1..80)) {
            let mut s = FsmState::default();
            let mut last_grant = Epoch::ZERO;
            for c in &cmds {
                let before = s.clone();
                let r = s.apply(c);
                let wm_before = before.watermarks.get(&k()).map(|w| w.hrs).unwrap_or(Hrs::ZERO);
                let wm_after = s.watermarks.get(&k()).map(|w| w.hrs).unwrap_or(Hrs::ZERO);
                prop_assert!(wm_after >= wm_before, "{:?} lowered the watermark", c);
                match (&r, c) {
                    (Ok(Reply::Granted { epoch, .. }), _) => {
                        prop_assert!(*epoch > last_grant);
                        last_grant = *epoch;
                    }
                    (Ok(_), Command::Reserve { .. }) => prop_assert!(wm_after > wm_before),
                    (Err(_), _) => prop_assert_eq!(&s, &before, "a refusal changed the state"),
                    _ => {}
                }
            }
        }

        // Deterministic apply: the same log gives the same state and the same answers.
        #[test]
        fn apply_is_deterministic(cmds in prop::collection::vec(arb_cmd(), 1..60)) {
            let (mut a, mut b) = (FsmState::default(), FsmState::default());
            for c in &cmds {
                prop_assert_eq!(a.apply(c), b.apply(c));
            }
            prop_assert_eq!(a, b);
        }
    }
}
