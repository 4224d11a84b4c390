//! Whether a snapshot sent by a peer may be installed, decided before raft sees it and before
//! anything is written to disk (docs/design.md §5, trust model).
//!
//! The membership is static: every member is configured with the same `[[members]]`, and no
//! conf change is ever proposed. So a snapshot whose ConfState differs from that membership is
//! not something a correct leader can send — installing it would let one forged message turn a
//! member into a one-voter cluster that grants itself the lease, and an invalid ConfState makes
//! raft-rs panic. A snapshot whose state machine does not decode would be persisted and then
//! stop the member from ever starting again. Both are refused here and the member keeps its log.
//!
//! Pure: no I/O, no clock.

use std::collections::BTreeSet;

use raft::eraftpb::Snapshot;

use super::cluster_state::ClusterState;
use crate::domain::MemberId;

/// Why a snapshot is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotRefusal {
    #[error(
        "its voters are raft ids [{}], but this cluster's members are raft ids [{}]; membership never changes",
        list(found),
        list(configured)
    )]
    Voters { found: Vec<u64>, configured: Vec<u64> },
    #[error("it lists learners or a joint configuration ({0}); this cluster never changes membership")]
    JointOrLearners(String),
    #[error("its state machine does not decode: {0}")]
    State(String),
    #[error("its state names {0}, who is not a member of this cluster")]
    UnknownMember(MemberId),
}

fn list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// Checks `snapshot` against the configured voters and members; on success returns the state
/// machine it carries.
pub fn check_snapshot(
    snapshot: &Snapshot,
    voters: &BTreeSet<u64>,
    members: &BTreeSet<MemberId>,
) -> Result<ClusterState, SnapshotRefusal> {
    let conf = snapshot.get_metadata().get_conf_state();
    let found: Vec<u64> = conf.voters.clone();
    let found_set: BTreeSet<u64> = found.iter().copied().collect();
    if found_set != *voters || found_set.len() != found.len() {
        return Err(SnapshotRefusal::Voters { found, configured: voters.iter().copied().collect() });
    }
    let mut extra = Vec::new();
    if !conf.learners.is_empty() {
        extra.push(format!("learners [{}]", list(&conf.learners)));
    }
    if !conf.voters_outgoing.is_empty() {
        extra.push(format!("outgoing voters [{}]", list(&conf.voters_outgoing)));
    }
    if !conf.learners_next.is_empty() {
        extra.push(format!("next learners [{}]", list(&conf.learners_next)));
    }
    if conf.auto_leave {
        extra.push("auto_leave".to_string());
    }
    if !extra.is_empty() {
        return Err(SnapshotRefusal::JointOrLearners(extra.join(", ")));
    }
    let state: ClusterState =
        serde_json::from_slice(&snapshot.data).map_err(|e| SnapshotRefusal::State(e.to_string()))?;
    for (_, scope) in state.scopes() {
        let named = scope.holder.iter().chain(scope.transfer.as_ref().map(|t| &t.to));
        if let Some(stranger) = named.into_iter().find(|m| !members.contains(*m)) {
            return Err(SnapshotRefusal::UnknownMember(stranger.clone()));
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::ConfState;

    use super::*;
    use crate::coord::Transfer;
    use crate::coord::raft::fsm::FsmState;
    use crate::domain::Epoch;

    fn m(s: &str) -> MemberId {
        MemberId::new(s).expect("id")
    }

    fn snapshot(conf: ConfState, data: &[u8]) -> Snapshot {
        let mut s = Snapshot { data: data.to_vec().into(), ..Snapshot::default() };
        s.mut_metadata().set_conf_state(conf);
        s.mut_metadata().index = 10;
        s.mut_metadata().term = 2;
        s
    }

    fn voters(v: &[u64]) -> ConfState {
        ConfState { voters: v.to_vec(), ..ConfState::default() }
    }

    fn state_with_holder(holder: &str) -> Vec<u8> {
        let state = FsmState { holder: Some(m(holder)), epoch: Epoch::new(3), ..FsmState::default() };
        serde_json::to_vec(&state).expect("encode")
    }

    #[test]
    fn only_a_snapshot_of_the_configured_membership_with_a_decodable_state_is_installed() {
        let configured: BTreeSet<u64> = [1, 2, 3].into();
        let members: BTreeSet<MemberId> = [m("a"), m("b"), m("c")].into();
        let good = state_with_holder("a");
        let learners = ConfState { voters: vec![1, 2, 3], learners: vec![4], ..ConfState::default() };
        let joint = ConfState { voters: vec![1, 2, 3], voters_outgoing: vec![1, 2], ..ConfState::default() };
        let transfer_to_stranger = serde_json::to_vec(&FsmState {
            transfer: Some(Transfer { to: m("x"), epoch: Epoch::new(1), forced: false }),
            ..FsmState::default()
        })
        .expect("encode");
        let mut scoped_stranger = super::super::cluster_state::ClusterState::default();
        scoped_stranger.validators.insert(
            crate::domain::ValidatorId::new("osmosis").expect("id"),
            FsmState { holder: Some(m("x")), epoch: Epoch::new(2), ..FsmState::default() },
        );
        let scoped_stranger = serde_json::to_vec(&scoped_stranger).expect("encode");
        let cases: Vec<(&str, ConfState, Vec<u8>, Option<&str>)> = vec![
            ("the configured voters", voters(&[1, 2, 3]), good.clone(), None),
            ("voters in another order", voters(&[3, 1, 2]), good.clone(), None),
            ("a single voter (the forged takeover)", voters(&[2]), good.clone(), Some("its voters are raft ids [2],")),
            ("no voters (raft-rs would panic)", voters(&[]), good.clone(), Some("its voters are raft ids [],")),
            ("a stranger among the voters", voters(&[1, 2, 3, 9]), good.clone(), Some("its voters")),
            ("a voter listed twice", voters(&[1, 2, 2, 3]), good.clone(), Some("its voters")),
            ("learners", learners, good.clone(), Some("learners [4]")),
            ("a joint configuration", joint, good.clone(), Some("outgoing voters")),
            ("state that is not JSON", voters(&[1, 2, 3]), b"\x00\x01".to_vec(), Some("does not decode")),
            ("a holder who is no member", voters(&[1, 2, 3]), state_with_holder("x"), Some("names x")),
            ("a transfer to no member", voters(&[1, 2, 3]), transfer_to_stranger, Some("names x")),
            ("another validator's holder who is no member", voters(&[1, 2, 3]), scoped_stranger, Some("names x")),
        ];
        for (what, conf, data, refusal) in cases {
            let got = check_snapshot(&snapshot(conf, &data), &configured, &members);
            match (refusal, got) {
                (None, Ok(state)) => assert_eq!(state.default.holder, Some(m("a")), "{what}"),
                (Some(fragment), Err(e)) => assert!(e.to_string().contains(fragment), "{what}: {e}"),
                (want, got) => panic!("{what}: expected {want:?}, got {got:?}"),
            }
        }
    }
}
