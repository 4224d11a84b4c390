//! A peer's `Raft` call: the `RaftBatch` protobuf, then every message walked, parsed and checked
//! for sender and addressee (coord::raft::peer_batch, what the peer service runs after the
//! caller's certificate), then the snapshot check for every snapshot it carries. Properties:
//! a refusal is readable; every message of an accepted batch is from the batch's sender and to
//! this member; a snapshot that passes the check has exactly the configured voters.
#![no_main]

use std::collections::BTreeSet;

use failover::coord::raft::peer_batch::read_batch;
use failover::coord::raft::snapshot_check::check_snapshot;
use failover::proto::v1::RaftBatch;
use failover_fuzz::{assert_readable, configured_cluster};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use raft::eraftpb::MessageType;

const ME: u64 = 1;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = RaftBatch::decode(data) else { return };
    match read_batch(batch.from, ME, &batch.messages) {
        Err(e) => assert_readable(&e, "a raft batch refusal"),
        Ok(messages) => {
            assert_eq!(messages.len(), batch.messages.len(), "a batch is read whole or not at all");
            let (voters, members) = configured_cluster();
            for m in &messages {
                assert_eq!((m.from, m.to), (batch.from, ME), "a message from someone else got through");
                if m.get_msg_type() == MessageType::MsgSnapshot
                    && check_snapshot(m.get_snapshot(), &voters, &members).is_ok()
                {
                    let conf = m.get_snapshot().get_metadata().get_conf_state();
                    assert_eq!(conf.voters.iter().copied().collect::<BTreeSet<_>>(), voters);
                    assert!(conf.learners.is_empty() && conf.voters_outgoing.is_empty());
                }
            }
        }
    }
});
