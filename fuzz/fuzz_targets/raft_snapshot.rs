//! The snapshot a peer sends (its ConfState and its state machine, the cluster state as JSON),
//! checked before raft sees it. The first byte chooses the voters it claims; the rest is the
//! state machine. Properties: a refusal is readable; an accepted snapshot has exactly the
//! configured voters, names no stranger as holder or transfer target, and its state encodes
//! and passes the check again as the same state.
#![no_main]

use std::collections::BTreeSet;

use failover::coord::raft::snapshot_check::check_snapshot;
use failover_fuzz::{assert_readable, configured_cluster};
use libfuzzer_sys::fuzz_target;
use raft::eraftpb::Snapshot;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, state)) = data.split_first() else { return };
    let (voters, members) = configured_cluster();
    let mut snapshot = Snapshot { data: state.to_vec().into(), ..Snapshot::default() };
    let conf = snapshot.mut_metadata().mut_conf_state();
    // Bits 0..4 say which of raft ids 1 to 4 are voters; bit 5 repeats one; 6 and 7 add a
    // learner or an outgoing voter.
    conf.voters = (1..=4).filter(|id| shape & (1 << (id - 1)) != 0).collect();
    if shape & 0x20 != 0 {
        conf.voters.push(1);
    }
    if shape & 0x40 != 0 {
        conf.learners.push(4);
    }
    if shape & 0x80 != 0 {
        conf.voters_outgoing.push(2);
    }
    let claimed = snapshot.get_metadata().get_conf_state();
    let claimed_set: BTreeSet<u64> = claimed.voters.iter().copied().collect();
    let same_members = claimed_set == voters
        && claimed_set.len() == claimed.voters.len()
        && claimed.learners.is_empty()
        && claimed.voters_outgoing.is_empty();
    match check_snapshot(&snapshot, &voters, &members) {
        Err(e) => assert_readable(&e.to_string(), "a snapshot refusal"),
        Ok(state) => {
            assert!(same_members, "a snapshot with {:?} got through", snapshot.get_metadata());
            for (_, scope) in state.scopes() {
                let named = scope.holder.iter().chain(scope.transfer.as_ref().map(|t| &t.to));
                assert!(named.into_iter().all(|m| members.contains(m)), "a stranger in an accepted state");
            }
            snapshot.data = serde_json::to_vec(&state).expect("a state encodes").into();
            let again = check_snapshot(&snapshot, &voters, &members).expect("its own encoding passes");
            assert_eq!(again, state, "the state changes through encode and check");
        }
    }
});
