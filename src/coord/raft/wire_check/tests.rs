use protobuf::{Message as _, ProtobufEnum as _};
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata};

use super::*;

// Hand encoding, for what protobuf 2 never writes (packed repeated fields, groups, damage).

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

fn tag(field: u32, wire_type: u8) -> Vec<u8> {
    varint(u64::from(field) << 3 | u64::from(wire_type))
}

fn length_delimited(field: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = tag(field, 2);
    out.extend(varint(payload.len() as u64));
    out.extend_from_slice(payload);
    out
}

fn encode(m: &Message) -> Vec<u8> {
    m.write_to_bytes().expect("protobuf 2 encodes a raft message")
}

fn entry(entry_type: EntryType, index: u64, data: &[u8], context: &[u8]) -> Entry {
    Entry {
        entry_type,
        term: 7,
        index,
        data: data.to_vec().into(),
        context: context.to_vec().into(),
        ..Entry::default()
    }
}

fn conf_state() -> ConfState {
    ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        voters_outgoing: vec![1, 2, 5],
        learners_next: vec![5],
        auto_leave: true,
        ..ConfState::default()
    }
}

fn snapshot() -> Snapshot {
    let mut metadata = SnapshotMetadata::default();
    metadata.set_conf_state(conf_state());
    metadata.index = 4_000_000;
    metadata.term = 7;
    Snapshot {
        data: b"{\"lease\":{\"holder\":\"a\",\"epoch\":12},\"watermarks\":{}}".to_vec().into(),
        metadata: Some(metadata).into(),
        ..Snapshot::default()
    }
}

/// A message of this type with every field a real cluster could fill.
fn realistic(msg_type: MessageType) -> Message {
    let mut m = Message::default();
    m.set_msg_type(msg_type);
    m.from = 1;
    m.to = 2;
    m.term = 7;
    m.log_term = 6;
    m.index = 4_000_001;
    m.commit = 4_000_000;
    m.commit_term = 7;
    m.entries = vec![
        entry(EntryType::EntryNormal, 4_000_002, b"reserve validator 120/0/precommit epoch 12", b"proposal-9"),
        entry(EntryType::EntryConfChangeV2, 4_000_003, &[0x08, 0x01, 0x12, 0x04, 0x08, 0x02, 0x10, 0x04], b""),
        entry(EntryType::EntryNormal, 4_000_004, b"", b""),
    ]
    .into();
    m.set_snapshot(snapshot());
    m.request_snapshot = 3_999_000;
    m.reject = true;
    m.reject_hint = 3_999_999;
    m.context = b"read-index-42".to_vec().into();
    m.deprecated_priority = 5;
    // Negative: a 10-byte varint, the longest a valid message has.
    m.priority = -3;
    m
}

#[test]
fn every_message_type_protobuf_2_writes_with_realistic_content_passes_and_parses_back() {
    for &msg_type in MessageType::values() {
        let m = realistic(msg_type);
        let bytes = encode(&m);
        assert_eq!(check_raft_message(&bytes), Ok(()), "{msg_type:?}");
        assert_eq!(Message::parse_from_bytes(&bytes).expect("parses"), m, "{msg_type:?}");
    }
    assert_eq!(MessageType::values().len(), 19, "raft-proto 0.7 has 19 message types");
    assert_eq!(check_raft_message(&encode(&Message::default())), Ok(()), "an empty message");
}

#[test]
fn the_schema_tables_agree_with_raft_protos_own_descriptors() {
    use protobuf::descriptor::FieldDescriptorProto_Label as Label;
    use protobuf::descriptor::FieldDescriptorProto_Type as Type;
    let tables: [(&Schema, &protobuf::reflect::MessageDescriptor); 5] = [
        (&MESSAGE, Message::descriptor_static()),
        (&ENTRY, Entry::descriptor_static()),
        (&SNAPSHOT, Snapshot::descriptor_static()),
        (&SNAPSHOT_METADATA, SnapshotMetadata::descriptor_static()),
        (&CONF_STATE, ConfState::descriptor_static()),
    ];
    for (schema, descriptor) in tables {
        let proto_fields = descriptor.get_proto().get_field();
        assert_eq!(schema.fields.len(), proto_fields.len(), "{}", descriptor.name());
        for proto in proto_fields {
            let number = u32::try_from(proto.get_number()).expect("positive");
            let (_, ours) = schema.field(number).unwrap_or_else(|| panic!("{} field {number}", descriptor.name()));
            assert_eq!(ours.name, proto.get_name(), "{} field {number}", descriptor.name());
            let repeated = proto.get_label() == Label::LABEL_REPEATED;
            match (ours.kind, proto.get_field_type()) {
                (Kind::Varint, Type::TYPE_UINT64 | Type::TYPE_INT64 | Type::TYPE_BOOL | Type::TYPE_ENUM) => {
                    assert!(!repeated, "{}", ours.name)
                }
                (Kind::RepeatedVarint, Type::TYPE_UINT64) => assert!(repeated, "{}", ours.name),
                (Kind::Bytes, Type::TYPE_BYTES) => assert!(!repeated, "{}", ours.name),
                (Kind::Message(_), Type::TYPE_MESSAGE) => assert_eq!(ours.repeated, repeated, "{}", ours.name),
                (_, other) => panic!("{}.{} is {other:?} in raft-proto", descriptor.name(), ours.name),
            }
        }
    }
}

#[test]
fn the_walk_is_never_deeper_than_the_schema() {
    fn depth(schema: &Schema) -> usize {
        schema
            .fields
            .iter()
            .map(|f| match f.kind {
                Kind::Message(inner) => 1 + depth(inner),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }
    assert_eq!(depth(&MESSAGE), MAX_NESTING);
}

#[test]
fn conf_state_lists_pass_both_packed_and_one_value_per_tag() {
    // snapshot { metadata { conf_state { voters packed [1, 300], learners 4, learners 5 } } }
    let mut packed = varint(1);
    packed.extend(varint(300));
    let mut conf = length_delimited(1, &packed);
    conf.extend(tag(2, 0));
    conf.extend(varint(4));
    conf.extend(tag(2, 0));
    conf.extend(varint(5));
    let bytes = length_delimited(9, &length_delimited(2, &length_delimited(1, &conf)));
    assert_eq!(check_raft_message(&bytes), Ok(()));
    let parsed = Message::parse_from_bytes(&bytes).expect("parses");
    let cs = parsed.get_snapshot().get_metadata().get_conf_state();
    assert_eq!((cs.voters.as_slice(), cs.learners.as_slice()), (&[1, 300][..], &[4, 5][..]));
}

#[test]
fn a_packed_run_that_ends_inside_a_varint_is_refused() {
    let conf = length_delimited(1, &[0x01, 0x80]);
    let bytes = length_delimited(9, &length_delimited(2, &length_delimited(1, &conf)));
    let refusal = check_raft_message(&bytes).expect_err("refused");
    assert!(matches!(refusal, WireRefusal::VarintTruncated { within: "packed run", .. }), "{refusal}");
    assert!(refusal.to_string().contains("snapshot.metadata.conf_state, field 1 (voters)"), "{refusal}");
}

/// A valid message followed by unknown field 99 opening `depth` nested groups.
fn group_bomb(depth: usize) -> (Vec<u8>, usize) {
    let mut bytes = encode(&realistic(MessageType::MsgAppend));
    let valid = bytes.len();
    let open = tag(99, 3);
    bytes.reserve(open.len() * depth);
    for _ in 0..depth {
        bytes.extend_from_slice(&open);
    }
    (bytes, valid)
}

#[test]
fn a_bomb_of_100_000_nested_groups_is_refused_at_its_first_tag() {
    let (bomb, valid) = group_bomb(100_000);
    // Parsed unchecked by a protobuf whose group skipping recurses (protobuf 3 before 3.7.2),
    // this overflows the stack; for the protobuf 2.28 linked here, see the child-process test.
    let refusal = check_raft_message(&bomb).expect_err("refused");
    // Refused at the first start-group tag: nothing after it was read.
    let at = Location { offset: valid, path: FieldPath::default(), field: Some(99) };
    assert_eq!(refusal, WireRefusal::Group { at, wire_type: 3 });
    let text = refusal.to_string();
    assert!(text.contains(&format!("byte {valid} in the top-level Message, field 99")), "{text}");
    assert!(text.contains("start-group"), "{text}");
}

/// Runs inside a child process (see the next test): parses the bomb with no check at all.
#[test]
#[ignore = "run in a child process by the_linked_protobuf_refuses_the_bomb_without_overflowing_its_stack"]
fn parse_the_group_bomb_unchecked() {
    let (bomb, _) = group_bomb(100_000);
    let parsed = Message::parse_from_bytes(&bomb);
    assert!(parsed.is_err(), "a nested start-group tag is not a valid unknown field");
    println!("unchecked parse ended: {}", parsed.err().map(|e| e.to_string()).unwrap_or_default());
}

/// RUSTSEC-2024-0437 lists every protobuf before 3.7.2, but the recursion it describes is in
/// protobuf 3's `CodedInputStream::skip_group`. protobuf 2.28.0, which raft-proto 0.7 links,
/// skips an unknown group in a loop and answers a *nested* start-group tag with
/// `UnexpectedWireType`: the bomb above makes it fail, not overflow. This test shows that in a
/// child process (a stack overflow aborts the whole process, so it must not happen in this
/// one) and would fail loudly if a protobuf that recurses were ever linked — the case where the
/// check in `PeerService::decode` is all that keeps a peer from crashing this member.
#[test]
fn the_linked_protobuf_refuses_the_bomb_without_overflowing_its_stack() {
    let exe = std::env::current_exe().expect("the test binary");
    let child = std::process::Command::new(exe)
        .args(["--exact", "coord::raft::wire_check::tests::parse_the_group_bomb_unchecked", "--ignored"])
        .arg("--nocapture")
        .env("RUST_MIN_STACK", "262144")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&child.stdout);
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(
        child.status.success() && stdout.contains("1 passed"),
        "the unchecked parse did not end cleanly (status {}): {stdout}{stderr}",
        child.status
    );
    assert!(stdout.contains("unchecked parse ended"), "{stdout}");
}

#[test]
fn a_single_group_is_refused_in_known_and_unknown_fields_at_any_depth() {
    let valid = encode(&realistic(MessageType::MsgHeartbeat));
    // One unknown group at the top level, closed properly: still refused.
    let mut one = valid.clone();
    one.extend(tag(40, 3));
    one.extend(tag(1, 0));
    one.extend(varint(5));
    one.extend(tag(40, 4));
    let refusal = check_raft_message(&one).expect_err("refused");
    assert!(
        matches!(refusal, WireRefusal::Group { at: Location { offset, .. }, wire_type: 3 } if offset == valid.len())
    );
    // A lone end-group tag.
    let mut end = valid.clone();
    end.extend(tag(40, 4));
    assert!(matches!(check_raft_message(&end), Err(WireRefusal::Group { wire_type: 4, .. })));
    // A known field number written as a group.
    let mut known = valid.clone();
    known.extend(tag(7, 3));
    known.extend(tag(7, 4));
    let refusal = check_raft_message(&known).expect_err("refused");
    assert!(refusal.to_string().contains("field 7 (entries)"), "{refusal}");
    // An unknown group inside ConfState, three messages down.
    let conf = [tag(1, 0), varint(1), tag(7, 3), tag(7, 4)].concat();
    let nested = length_delimited(9, &length_delimited(2, &length_delimited(1, &conf)));
    let refusal = check_raft_message(&nested).expect_err("refused");
    let text = refusal.to_string();
    assert!(text.contains("byte 8 in snapshot.metadata.conf_state, field 7 (not in the raft schema)"), "{text}");
}

#[test]
fn a_problem_inside_an_entry_names_the_entry() {
    let good = entry(EntryType::EntryNormal, 1, b"x", b"").write_to_bytes().expect("encodes");
    let bad = [tag(4, 2), vec![0x05], b"ab".to_vec()].concat();
    let bytes = [length_delimited(7, &good), length_delimited(7, &good), length_delimited(7, &bad)].concat();
    let refusal = check_raft_message(&bytes).expect_err("refused");
    assert!(matches!(refusal, WireRefusal::LengthPastEnd { length: 5, remaining: 2, .. }), "{refusal}");
    assert!(refusal.to_string().contains("in entries[2], field 4 (data)"), "{refusal}");
}

#[test]
fn an_eleven_byte_varint_is_refused() {
    let mut bytes = tag(2, 0);
    bytes.extend([0x80; 10]);
    bytes.push(0x01);
    let refusal = check_raft_message(&bytes).expect_err("refused");
    assert!(matches!(refusal, WireRefusal::VarintTooLong { at: Location { offset: 1, .. } }), "{refusal}");
    assert!(refusal.to_string().contains("byte 1 in the top-level Message, field 2 (to)"), "{refusal}");
    // Ten bytes whose last carries bits beyond 64.
    let mut wide = tag(2, 0);
    wide.extend([0xff; 9]);
    wide.push(0x02);
    assert!(matches!(check_raft_message(&wide), Err(WireRefusal::VarintOverflow { .. })));
    // The largest u64 in ten bytes is fine.
    let mut max = tag(2, 0);
    max.extend(varint(u64::MAX));
    assert_eq!(check_raft_message(&max), Ok(()));
}

#[test]
fn a_length_that_runs_past_the_end_is_refused() {
    let bytes = [tag(12, 2), varint(100), b"abc".to_vec()].concat();
    let refusal = check_raft_message(&bytes).expect_err("refused");
    assert!(matches!(refusal, WireRefusal::LengthPastEnd { length: 100, remaining: 3, .. }), "{refusal}");
    let text = refusal.to_string();
    assert!(text.contains("byte 1") && text.contains("field 12 (context)") && text.contains("100 bytes"), "{text}");
    // A length beyond 32 bits, which protobuf 2 would truncate, is past any end there is.
    let huge = [tag(50, 2), varint(1 << 32 | 1), b"a".to_vec()].concat();
    assert!(matches!(check_raft_message(&huge), Err(WireRefusal::LengthPastEnd { .. })));
}

#[test]
fn truncated_fixed_values_and_varints_are_refused() {
    let fixed64 = [tag(50, 1), vec![0; 7]].concat();
    assert!(matches!(check_raft_message(&fixed64), Err(WireRefusal::FixedTruncated { width: 8, remaining: 7, .. })));
    let fixed32 = [tag(50, 5), vec![0; 3]].concat();
    assert!(matches!(check_raft_message(&fixed32), Err(WireRefusal::FixedTruncated { width: 4, remaining: 3, .. })));
    let varint_cut = [tag(3, 0), vec![0x80, 0x80]].concat();
    assert!(matches!(check_raft_message(&varint_cut), Err(WireRefusal::VarintTruncated { within: "message", .. })));
    assert!(matches!(check_raft_message(&[0x80]), Err(WireRefusal::VarintTruncated { .. })), "a cut tag");
}

#[test]
fn a_known_field_with_the_wrong_wire_type_is_refused() {
    for (bytes, name) in [
        (length_delimited(2, b"x"), "field 2 (to)"),
        ([tag(7, 0), varint(1)].concat(), "field 7 (entries)"),
        ([tag(9, 5), vec![0; 4]].concat(), "field 9 (snapshot)"),
        ([tag(12, 1), vec![0; 8]].concat(), "field 12 (context)"),
    ] {
        let refusal = check_raft_message(&bytes).expect_err("refused");
        assert!(matches!(refusal, WireRefusal::WrongWireType { .. }), "{refusal}");
        assert!(refusal.to_string().contains(name), "{refusal}");
        assert!(Message::parse_from_bytes(&bytes).is_err(), "protobuf 2 refuses it too: {name}");
    }
    let conf = [tag(1, 1), vec![0; 8]].concat();
    let nested = length_delimited(9, &length_delimited(2, &length_delimited(1, &conf)));
    let refusal = check_raft_message(&nested).expect_err("refused");
    assert!(refusal.to_string().contains("wire type 0 (varint) or 2 (packed), found 1"), "{refusal}");
}

#[test]
fn impossible_tags_are_refused() {
    assert!(matches!(check_raft_message(&tag(0, 0)), Err(WireRefusal::FieldZero { .. })));
    for wire_type in [6, 7] {
        let bytes = [tag(50, wire_type), vec![0; 8]].concat();
        assert!(matches!(check_raft_message(&bytes), Err(WireRefusal::NoSuchWireType { .. })), "{wire_type}");
    }
    // Field 2 with 32 more bits above it: protobuf 2 would read it as field 2.
    let wide = [varint(1 << 35 | 2 << 3), varint(1)].concat();
    assert!(matches!(check_raft_message(&wide), Err(WireRefusal::TagTooWide { .. })));
}

#[test]
fn unknown_fields_of_wire_types_0_1_2_5_pass_unopened_and_protobuf_2_keeps_them() {
    let m = realistic(MessageType::MsgAppend);
    // A length-delimited unknown field whose payload would be a group if it were opened.
    let payload = [tag(1, 3), tag(1, 3), tag(1, 3)].concat();
    let extra =
        [tag(100, 0), varint(9), tag(101, 1), vec![1; 8], length_delimited(102, &payload), tag(103, 5), vec![2; 4]]
            .concat();
    let bytes = [encode(&m), extra].concat();
    assert_eq!(check_raft_message(&bytes), Ok(()));
    let parsed = Message::parse_from_bytes(&bytes).expect("parses");
    assert_eq!(parsed.get_unknown_fields().iter().count(), 4);
    assert_eq!(parsed.entries, m.entries);
}

mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        vec(any::<u8>(), 0..max)
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (0..3i32, any::<u64>(), any::<u64>(), arb_bytes(64), arb_bytes(16), any::<bool>()).prop_map(
            |(entry_type, term, index, data, context, sync_log)| {
                let mut e = Entry::default();
                e.set_entry_type(EntryType::from_i32(entry_type).expect("0..3 are entry types"));
                e.term = term;
                e.index = index;
                e.data = data.into();
                e.context = context.into();
                e.sync_log = sync_log;
                e
            },
        )
    }

    fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
        let ids = || vec(any::<u64>(), 0..5);
        let conf = (ids(), ids(), ids(), ids(), any::<bool>());
        (arb_bytes(64), proptest::option::of((proptest::option::of(conf), any::<u64>(), any::<u64>()))).prop_map(
            |(data, metadata)| {
                let mut s = Snapshot { data: data.into(), ..Snapshot::default() };
                if let Some((conf, index, term)) = metadata {
                    let mut md = SnapshotMetadata::default();
                    if let Some((voters, learners, voters_outgoing, learners_next, auto_leave)) = conf {
                        md.set_conf_state(ConfState {
                            voters,
                            learners,
                            voters_outgoing,
                            learners_next,
                            auto_leave,
                            ..ConfState::default()
                        });
                    }
                    md.index = index;
                    md.term = term;
                    s.set_metadata(md);
                }
                s
            },
        )
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let numbers = (0..19i32, any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>());
        let more = (any::<u64>(), any::<u64>(), any::<bool>(), any::<u64>(), any::<u64>(), any::<i64>());
        let parts = (vec(arb_entry(), 0..4), proptest::option::of(arb_snapshot()), arb_bytes(32));
        (numbers, more, parts).prop_map(|(n, m, (entries, snapshot, context))| {
            let mut msg = Message::default();
            msg.set_msg_type(MessageType::from_i32(n.0).expect("0..19 are message types"));
            (msg.to, msg.from, msg.term, msg.log_term, msg.index, msg.commit) = (n.1, n.2, n.3, n.4, n.5, n.6);
            (msg.commit_term, msg.request_snapshot, msg.reject, msg.reject_hint) = (m.0, m.1, m.2, m.3);
            (msg.deprecated_priority, msg.priority) = (m.4, m.5);
            msg.entries = entries.into();
            if let Some(s) = snapshot {
                msg.set_snapshot(s);
            }
            msg.context = context.into();
            msg
        })
    }

    /// Overwrites, inserts or cuts bytes of a valid encoding at chosen places.
    fn damage(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        for &(at, byte, op) in edits {
            let at = if bytes.is_empty() { 0 } else { at % bytes.len() };
            match op % 3 {
                0 if !bytes.is_empty() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => bytes.truncate(at),
            }
        }
        bytes
    }

    /// Whatever the check accepts, protobuf 2 reads without crashing, and the only thing it may
    /// still refuse is an enum value outside the schema (the check leaves enums to it).
    fn accepted_bytes_parse_the_way_they_were_walked(bytes: &[u8]) -> Result<(), TestCaseError> {
        if check_raft_message(bytes).is_ok() {
            match Message::parse_from_bytes(bytes) {
                Ok(_) => {}
                Err(protobuf::ProtobufError::WireError(protobuf::error::WireError::InvalidEnumValue(_))) => {}
                Err(e) => prop_assert!(false, "accepted, then protobuf 2 said: {}", e),
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_raft_message_protobuf_2_writes_passes_and_parses_back_equal(m in arb_message()) {
            let bytes = encode(&m);
            prop_assert_eq!(check_raft_message(&bytes), Ok(()));
            prop_assert_eq!(Message::parse_from_bytes(&bytes).expect("parses"), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_check_and_what_it_accepts_parses(bytes in arb_bytes(256)) {
            accepted_bytes_parse_the_way_they_were_walked(&bytes)?;
        }

        #[test]
        fn damaged_raft_messages_never_panic_the_check_and_what_it_accepts_parses(
            m in arb_message(),
            edits in vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
        ) {
            accepted_bytes_parse_the_way_they_were_walked(&damage(encode(&m), &edits))?;
        }
    }
}
