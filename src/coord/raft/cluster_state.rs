//! The replicated state of every validator the cluster serves (issue 22, docs/design.md §4): one
//! [`FsmState`] — a lease, its epoch, its watermarks and its intents — per validator, in one raft
//! group.
//!
//! The default validator (a config with one top-level `[chain]`/`[producer]`) keeps its state
//! unscoped, exactly where every earlier version kept it: a snapshot of an earlier version
//! decodes into it, and a state without other validators encodes as such a snapshot. Every other
//! validator's state sits under `validators`, changed only by a [`Command::Scoped`] naming it.
//! A [`Command::Batch`] carries several commands in one log entry (the renews of many leases),
//! each applied on its own as if it were its own entry.
//!
//! Scopes never touch each other: a command scoped to one validator reads and writes only that
//! validator's state, so one validator's lease, epoch and watermarks cannot move another's. A
//! new scope starts with refresh stamps on (only versions that know scopes create one). Like
//! [`FsmState::apply`], applying is deterministic: no clock, no randomness, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::fsm::{Command, FsmState, Reply};
use crate::coord::CoordError;
use crate::domain::ValidatorId;

/// The most commands one batch may carry: a member serves at most this many validators
/// (config validation), and a renew batch holds one renew per validator it holds.
pub const MAX_BATCH: usize = 256;

/// Every validator's replicated state. Small: it is also the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The default validator's state, at the top level of the snapshot as in earlier versions.
    #[serde(flatten)]
    pub default: FsmState,
    /// Every other validator's state, by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub validators: BTreeMap<ValidatorId, FsmState>,
}

/// What applying one log entry did: its reply, and the validators whose lease it refreshed (the
/// leader restarts their expiry timers).
#[derive(Debug)]
pub struct Applied {
    pub result: Result<Reply, CoordError>,
    pub refreshed: Vec<ValidatorId>,
}

impl ClusterState {
    /// `validator`'s state; a validator never written to has a fresh one (no lease, epoch 0, no
    /// watermark), as it will when first written.
    pub fn scope(&self, validator: &ValidatorId) -> std::borrow::Cow<'_, FsmState> {
        if validator.is_default() {
            return std::borrow::Cow::Borrowed(&self.default);
        }
        match self.validators.get(validator) {
            Some(state) => std::borrow::Cow::Borrowed(state),
            None => std::borrow::Cow::Owned(new_scope()),
        }
    }

    /// Every scope that has state, the default one first. Borrowed: the raft node walks them
    /// several times a turn, and at fifty validators copies of their names cost more than the
    /// rest of the turn.
    pub fn scopes(&self) -> impl Iterator<Item = (&ValidatorId, &FsmState)> {
        static DEFAULT: std::sync::LazyLock<ValidatorId> = std::sync::LazyLock::new(ValidatorId::default_validator);
        std::iter::once((&*DEFAULT, &self.default)).chain(self.validators.iter())
    }

    fn scope_mut(&mut self, validator: &ValidatorId) -> &mut FsmState {
        if validator.is_default() {
            return &mut self.default;
        }
        self.validators.entry(validator.clone()).or_insert_with(new_scope)
    }

    /// Applies one log entry's command. An unscoped command is the default validator's, as in
    /// earlier versions. Refusals leave the state unchanged; in a batch each command is applied,
    /// or refused, on its own.
    pub fn apply(&mut self, cmd: &Command) -> Applied {
        match cmd {
            Command::Batch { commands } => {
                if commands.len() > MAX_BATCH {
                    let why = format!("a batch carries {} commands, more than {MAX_BATCH}", commands.len());
                    return Applied { result: Err(CoordError::Invalid(why)), refreshed: Vec::new() };
                }
                let mut refreshed = Vec::new();
                let mut results = Vec::with_capacity(commands.len());
                for c in commands {
                    let applied = match c {
                        Command::Batch { .. } => refused("a batch inside a batch is refused"),
                        c => self.apply_one(c),
                    };
                    refreshed.extend(applied.refreshed);
                    results.push(applied.result);
                }
                Applied { result: Ok(Reply::Batch(results)), refreshed }
            }
            c => self.apply_one(c),
        }
    }

    fn apply_one(&mut self, cmd: &Command) -> Applied {
        let (validator, inner) = match cmd {
            Command::Scoped { validator, command } => match command.as_ref() {
                Command::Scoped { .. } | Command::Batch { .. } => {
                    return refused("a scoped command must name one plain command");
                }
                inner => (validator.clone(), inner),
            },
            Command::Batch { .. } => return refused("a batch inside a batch is refused"),
            plain => (ValidatorId::default_validator(), plain),
        };
        // Only a write that succeeded keeps a new scope: a refused command or a read of a
        // validator nobody wrote to leaves the state (and the snapshot) as small as it was.
        let existed = validator.is_default() || self.validators.contains_key(&validator);
        let state = self.scope_mut(&validator);
        let result = state.apply(inner);
        let refreshed = match &result {
            Ok(_) if inner.refreshes(state.epoch) => vec![validator.clone()],
            _ => Vec::new(),
        };
        let keep = result.is_ok() && !matches!(inner, Command::Read);
        if !existed && !keep {
            self.validators.remove(&validator);
        }
        Applied { result, refreshed }
    }
}

fn refused(why: &str) -> Applied {
    Applied { result: Err(CoordError::Invalid(why.to_string())), refreshed: Vec::new() }
}

/// A validator's state before its first command: stamps on, since only a version that counts
/// them writes a scope.
fn new_scope() -> FsmState {
    FsmState { refreshes: Some(0), ..FsmState::default() }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{Epoch, Hrs, KeyId, MemberId, Step, Watermark};

    fn v(s: &str) -> ValidatorId {
        ValidatorId::new(s).expect("id")
    }

    fn m(s: &str) -> MemberId {
        MemberId::new(s).expect("id")
    }

    fn k() -> KeyId {
        KeyId::new("validator").expect("id")
    }

    fn scoped(validator: &str, command: Command) -> Command {
        Command::Scoped { validator: v(validator), command: Box::new(command) }
    }

    fn acquire(member: &str) -> Command {
        Command::Acquire { member: m(member), seen_epoch: None, ttl_ms: Some(400) }
    }

    #[test]
    fn each_validator_has_its_own_lease_epoch_and_watermark() {
        let mut s = ClusterState::default();
        assert!(s.apply(&scoped("osmosis", acquire("a"))).result.is_ok());
        assert!(s.apply(&scoped("osmosis", Command::Expire { epoch: Epoch::new(1), refreshes: None })).result.is_ok());
        assert!(s.apply(&scoped("osmosis", acquire("b"))).result.is_ok());
        assert!(s.apply(&acquire("a")).result.is_ok(), "the default validator's lease is free");
        let hrs = Hrs::new(9, 0, Step::Precommit);
        let reserve = Command::Reserve { epoch: Epoch::new(2), key: k(), hrs };
        assert!(s.apply(&scoped("osmosis", reserve.clone())).result.is_ok());
        assert!(
            s.apply(&reserve).result.is_err(),
            "epoch 2 is osmosis's, not the default validator's (which is at 1): refused"
        );
        assert_eq!(s.scope(&v("osmosis")).epoch, Epoch::new(2));
        assert_eq!(s.default.epoch, Epoch::new(1));
        assert_eq!(s.scope(&v("osmosis")).watermarks.get(&k()).map(|w| w.hrs), Some(hrs));
        assert_eq!(s.default.watermarks.get(&k()), None, "the default validator's watermark did not move");
        assert_eq!(s.scope(&v("cosmoshub")).lease(), crate::domain::LeaseView::Free { epoch: Epoch::ZERO });
    }

    #[test]
    fn a_batch_applies_each_command_on_its_own_and_names_the_leases_it_refreshed() {
        let mut s = ClusterState::default();
        s.apply(&scoped("x", acquire("a")));
        s.apply(&scoped("y", acquire("a")));
        let renew = |epoch| Command::Renew { member: m("a"), epoch: Epoch::new(epoch), ttl_ms: Some(400) };
        let applied = s.apply(&Command::Batch {
            commands: vec![scoped("x", renew(1)), scoped("y", renew(7)), scoped("z", renew(1))],
        });
        let Ok(Reply::Batch(results)) = applied.result else { panic!("a batch answers per command") };
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(CoordError::NotHolder { .. })), "y is at epoch 1, not 7");
        assert!(results[2].is_err(), "nobody holds z's lease");
        assert_eq!(applied.refreshed, vec![v("x")]);
        assert!(!s.validators.contains_key(&v("z")), "a refused command leaves no scope behind");
    }

    #[test]
    fn nested_scopes_and_batches_are_refused_and_change_nothing() {
        let mut s = ClusterState::default();
        let before = s.clone();
        let nested = scoped("x", scoped("y", acquire("a")));
        assert!(s.apply(&nested).result.is_err());
        let in_batch = Command::Batch { commands: vec![Command::Batch { commands: vec![acquire("a")] }] };
        let Ok(Reply::Batch(results)) = s.apply(&in_batch).result else { panic!("a batch answers per command") };
        assert!(results[0].is_err());
        let huge = Command::Batch { commands: vec![Command::Read; MAX_BATCH + 1] };
        assert!(s.apply(&huge).result.is_err());
        assert_eq!(s, before);
    }

    #[test]
    fn a_snapshot_of_an_earlier_version_is_the_default_validator_and_one_without_scopes_reads_as_one() {
        let mut old = FsmState::default();
        old.apply(&acquire("a")).expect("grant");
        old.apply(&Command::Reserve { epoch: Epoch::new(1), key: k(), hrs: Hrs::new(3, 0, Step::Prevote) })
            .expect("reserve");
        let bytes = serde_json::to_vec(&old).expect("encode");
        let restored: ClusterState = serde_json::from_slice(&bytes).expect("decode");
        assert_eq!(restored.default, old);
        assert!(restored.validators.is_empty());
        assert_eq!(serde_json::to_vec(&restored).expect("encode"), bytes, "the very bytes an earlier version writes");
        let again: FsmState = serde_json::from_slice(&serde_json::to_vec(&restored).expect("encode"))
            .expect("an earlier version decodes it");
        assert_eq!(again, old);
        let mut scoped_state = restored.clone();
        scoped_state.apply(&scoped("osmosis", acquire("b")));
        let round: ClusterState =
            serde_json::from_slice(&serde_json::to_vec(&scoped_state).expect("encode")).expect("decode");
        assert_eq!(round, scoped_state);
    }

    #[test]
    fn scoped_commands_encode_as_a_tagged_entry() {
        let c = scoped("osmosis", Command::Pause { paused: true });
        let text = serde_json::to_string(&c).expect("encode");
        assert_eq!(text, r#"{"op":"scoped","validator":"osmosis","command":{"op":"pause","paused":true}}"#);
        assert!(
            serde_json::from_str::<Command>(r#"{"op":"scoped","validator":"a/b","command":{"op":"read"}}"#).is_err()
        );
    }

    fn any_command() -> impl Strategy<Value = (u8, Command)> {
        let member = prop_oneof![Just("a"), Just("b")];
        let cmd = (member, 0u64..4, 0u64..6).prop_flat_map(|(who, epoch, height)| {
            let e = Epoch::new(epoch);
            let hrs = Hrs::new(height, 0, Step::Precommit);
            prop_oneof![
                Just(acquire(who)),
                Just(Command::Renew { member: m(who), epoch: e, ttl_ms: Some(400) }),
                Just(Command::Release { member: m(who), epoch: e, final_watermark: Some((k(), hrs)) }),
                Just(Command::Expire { epoch: e, refreshes: None }),
                Just(Command::Reserve { epoch: e, key: k(), hrs }),
                Just(Command::Checkpoint { epoch: e, key: k(), height }),
                Just(Command::Import { key: k(), hrs }),
            ]
        });
        (0u8..3, cmd)
    }

    proptest! {
        /// Scopes are independent, and each is exactly the single-validator state machine: the
        /// commands scoped to one validator leave it where that machine alone leaves it, whatever
        /// the others' commands in between or beside them in batches; no watermark ever falls (S3).
        #[test]
        fn each_scope_evolves_as_a_state_machine_of_its_own(steps in proptest::collection::vec((any_command(), any::<bool>()), 1..60)) {
            let names = ["default", "x", "y"];
            let mut cluster = ClusterState::default();
            let mut alone: Vec<FsmState> = names.iter().map(|n| cluster.scope(&v(n)).into_owned()).collect();
            let mut batch = Vec::new();
            for ((scope, cmd), flush) in steps {
                let i = usize::from(scope);
                let before = cluster.scope(&v(names[i])).watermarks.get(&k()).copied().unwrap_or(Watermark::ZERO);
                let _ = alone[i].apply(&cmd);
                batch.push(if i == 0 { cmd } else { scoped(names[i], cmd) });
                if flush {
                    cluster.apply(&Command::Batch { commands: std::mem::take(&mut batch) });
                    let after = cluster.scope(&v(names[i])).watermarks.get(&k()).copied().unwrap_or(Watermark::ZERO);
                    prop_assert!(after.hrs >= before.hrs, "S3: a watermark fell");
                }
            }
            cluster.apply(&Command::Batch { commands: batch });
            for (i, name) in names.iter().enumerate() {
                prop_assert_eq!(&*cluster.scope(&v(name)), &alone[i], "scope {}", name);
            }
        }
    }
}
