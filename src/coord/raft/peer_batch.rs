//! A peer's raft batch read into raft messages: every message walked against the raft schema
//! first ([`super::wire_check`]), then parsed, then checked to come from the member the batch
//! claims and to be addressed to this one. All or nothing: one bad message refuses the batch.
//!
//! Pure, so that the daemon's peer service and the fuzz target `raft_batch` read the same
//! bytes the same way. It never decides whether raft should act on a message, and never
//! checks who the caller is (the peer service's [`super::peer_gate`] does that first).

use protobuf::Message as _;
use raft::eraftpb::Message;

/// The messages of a batch that claims to come from raft id `from`, sent to this member (raft
/// id `me`), or the operator's sentence naming the first message that is wrong.
pub fn read_batch(from: u64, me: u64, messages: &[Vec<u8>]) -> Result<Vec<Message>, String> {
    let mut read = Vec::with_capacity(messages.len());
    for (i, bytes) in messages.iter().enumerate() {
        // protobuf 2 must never see a group (RUSTSEC-2024-0437) or bytes it would read
        // differently from the raft schema: walked first, refused with the byte and field.
        super::wire_check::check_raft_message(bytes).map_err(|e| {
            format!("messages[{i}] from raft id {from} is not parsed: {e}; nothing in this batch was delivered")
        })?;
        let m = Message::parse_from_bytes(bytes).map_err(|e| format!("messages[{i}] is not a raft message: {e}"))?;
        if m.from != from {
            return Err(format!("messages[{i}] claims to come from raft id {} inside a batch from {from}", m.from));
        }
        if m.to != me {
            return Err(format!("messages[{i}] is addressed to raft id {}, not to this member (raft id {me})", m.to));
        }
        read.push(m);
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(from: u64, to: u64) -> Vec<u8> {
        let m = Message { from, to, ..Message::default() };
        m.write_to_bytes().expect("a raft message encodes")
    }

    #[test]
    fn a_batch_is_read_only_when_every_message_is_from_its_sender_and_to_this_member() {
        let read = read_batch(2, 1, &[bytes(2, 1), bytes(2, 1)]).expect("a well-formed batch");
        assert_eq!(read.len(), 2);
        let spoofed = read_batch(2, 1, &[bytes(2, 1), bytes(3, 1)]).expect_err("a message from someone else");
        assert!(spoofed.starts_with("messages[1] claims to come from raft id 3"), "{spoofed}");
        let misrouted = read_batch(2, 1, &[bytes(2, 3)]).expect_err("a message for someone else");
        assert!(misrouted.contains("addressed to raft id 3"), "{misrouted}");
        let group = read_batch(2, 1, &[vec![0x0b]]).expect_err("a start-group tag");
        assert!(group.contains("nothing in this batch was delivered"), "{group}");
    }
}
