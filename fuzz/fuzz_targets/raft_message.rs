//! One raft message's bytes from a peer: the structural walk against raft's schema, then
//! protobuf 2's parse. Properties: a walk refusal is readable; what the walk accepts, protobuf
//! reads (or refuses for an unknown enum value, which the walk leaves to it), and what it reads
//! encodes to bytes the walk accepts and that parse back to the same known fields.
#![no_main]

use failover::coord::raft::wire_check::check_raft_message;
use failover_fuzz::assert_readable;
use libfuzzer_sys::fuzz_target;
use protobuf::Message as _;
use protobuf::ProtobufError;
use protobuf::error::WireError;
use raft::eraftpb::Message;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = check_raft_message(data) {
        assert_readable(&e.to_string(), "a raft message refusal");
        return;
    }
    // The walk leaves enum values to protobuf, which refuses an unknown one: that is the only
    // refusal allowed after the walk.
    let m = match Message::parse_from_bytes(data) {
        Ok(m) => m,
        Err(ProtobufError::WireError(WireError::InvalidEnumValue(_))) => return,
        Err(e) => panic!("the walk accepted what protobuf 2 refuses: {e}"),
    };
    let bytes = m.write_to_bytes().expect("a parsed message encodes");
    check_raft_message(&bytes).unwrap_or_else(|e| panic!("the walk refuses protobuf's own encoding: {e}"));
    let back = Message::parse_from_bytes(&bytes).expect("protobuf's own encoding parses");
    // Compared field by field through the text form, which leaves out unknown fields: raft
    // never reads them, and protobuf 2 keeps an empty set where a repeated singular message
    // field reset an earlier one's (so `==` tells `Some({})` from `None`).
    assert_eq!(format!("{back:?}"), format!("{m:?}"), "a raft message changes through encode and parse");
});
