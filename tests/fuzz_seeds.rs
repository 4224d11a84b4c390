//! The seed corpora of the fuzz targets (fuzz/corpus/<target>/seed-*): inputs the daemon really
//! receives, built from the project's own fixtures and types, so that each fuzzer starts from
//! the accepting paths instead of guessing its way into them. The committed seeds must be
//! exactly what this file builds (FAILOVERD_WRITE_FUZZ_SEEDS=1 writes them again); every
//! target of fuzz/Cargo.toml must have seeds; and every seed that stands for a real answer
//! must still be accepted by today's parser, or the fuzzer would start from refusals only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use failover::coord::raft::cluster_state::ClusterState;
use failover::coord::raft::fsm::Command;
use failover::domain::interchange::{Entry, Interchange};
use failover::domain::{Epoch, Hrs, KeyId, MemberId, MemberKind, MemberStatus, RoleName, Step};
use failover::producer::privval::frame;
use failover::producer::privval::validator_key::ValidatorKey;
use failover::proto::v1::{self, MemberStatusMsg, PromoteRequest, RaftBatch, WatermarkEntry, WatermarkImportRequest};
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{self, MessageType};
use serde_json::json;
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::privval::{self, message::Sum};
use tendermint_proto::v0_38::types::{BlockId, PartSetHeader, Proposal, Vote};

/// The chain the privval targets sign for (fuzz/fuzz_targets/privval_request.rs).
const FUZZ_CHAIN: &str = "fuzz-chain";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn member(id: &str) -> MemberId {
    MemberId::new(id).expect("a member id")
}

/// Every seed: target, name (without the `seed-` prefix), bytes.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| out.push((target, name.to_string(), bytes));
    for file in ["a", "b", "c"] {
        let text = std::fs::read(root().join(format!("examples/local-3node/{file}.toml"))).expect("an example");
        add("config_toml", &format!("example-{file}"), text);
    }
    for file in ["failoverd.toml", "failoverd@.example.toml"] {
        add("config_toml", file, std::fs::read(root().join("systemd").join(file)).expect("the systemd config"));
    }
    interchange_seeds(&mut add);
    chain_seeds(&mut add);
    raft_seeds(&mut add);
    control_seeds(&mut add);
    privval_seeds(&mut add);
    add(
        "filepv_state",
        "state",
        failover::producer::cometbft_filepv::state_json(Hrs::new(4304, 1, Step::Prevote)).to_string().into_bytes(),
    );
    add("filepv_state", "fresh", br#"{"height":"0","round":0,"step":0}"#.to_vec());
    add("validator_key", "key", ValidatorKey::file_for_seed([7; 32]).into_bytes());
    for file in ["recorded-kv-get-locked.json", "recorded-kv-get-free.json", "recorded-kv-get-recurse.json"] {
        let text = std::fs::read(root().join("tests/fixtures/consul").join(file)).expect("a recorded Consul answer");
        add("consul_kv", file.trim_end_matches(".json"), text);
    }
    out
}

type Add<'a> = dyn FnMut(&'static str, &str, Vec<u8>) + 'a;

fn interchange_seeds(add: &mut Add<'_>) {
    let key = KeyId::new("validator-key").expect("a key id");
    let entries = [
        Entry { key: key.clone(), hrs: Hrs::new(4304, 0, Step::Precommit), epoch: Some(Epoch::new(7)) },
        Entry { key, hrs: Hrs::new(4305, u32::MAX, Step::Precommit), epoch: None },
    ];
    add("watermark_interchange", "v2", Interchange::export(Some("a".into()), &entries).render().into_bytes());
    let v1 = json!({"metadata": {"interchange_format_version": "1"},
        "data": [{"key": "validator-key", "height": "4304", "round": 0, "step": "prevote"}]});
    add("watermark_interchange", "v1", v1.to_string().into_bytes());
}

fn chain_seeds(add: &mut Add<'_>) {
    let status = json!({"jsonrpc":"2.0","id":-1,"result":{"sync_info":{"latest_block_height":"4304",
        "latest_block_time":"2026-11-21T13:48:16.123456789Z","catching_up":false}}});
    let net_info = json!({"jsonrpc":"2.0","id":-1,"result":{"listening":true,"listeners":[],"n_peers":"4","peers":[]}});
    let commit = json!({"jsonrpc":"2.0","id":-1,"result":{"signed_header":{"header":{"height":"4304"},
        "commit":{"height":"4304","round":0,"block_id":{"hash":"AB"},"signatures":[
            {"block_id_flag":2,"validator_address":"0A1B2C3D4E5F60718293A4B5C6D7E8F901234567","signature":"c2ln"},
            {"block_id_flag":1,"validator_address":"","signature":null}]}},"canonical":true}});
    for (name, v) in [("status", status), ("net_info", net_info), ("commit", commit)] {
        add("cometbft_rpc", name, v.to_string().into_bytes());
    }
    let eth = [
        ("block_number", json!({"jsonrpc":"2.0","id":1,"result":"0x10d0"})),
        (
            "syncing",
            json!({"jsonrpc":"2.0","id":1,"result":{"startingBlock":"0x0","currentBlock":"0x10cf","highestBlock":"0x10d0"}}),
        ),
        ("not_syncing", json!({"jsonrpc":"2.0","id":1,"result":false})),
        (
            "no_method",
            json!({"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"the method net_peerCount does not exist"}}),
        ),
    ];
    for (name, v) in eth {
        add("ethereum_rpc", name, v.to_string().into_bytes());
    }
    let info = json!({"server_version":"7e4e5d0a","head_block_num":378123456,"last_irreversible_block_num":378123120,
        "head_block_time":"2026-11-21T13:48:16.500","head_block_producer":"eosnationftw"});
    add("antelope_rpc", "get_info", info.to_string().into_bytes());
    add("antelope_rpc", "paused", b"false".to_vec());
    let solana = [
        ("slot", json!({"jsonrpc":"2.0","id":1,"result":287654321u64})),
        ("healthy", json!({"jsonrpc":"2.0","id":1,"result":"ok"})),
        (
            "behind",
            json!({"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"Node is behind by 42 slots","data":{"numSlotsBehind":42}}}),
        ),
    ];
    for (name, v) in solana {
        add("solana_rpc", name, v.to_string().into_bytes());
    }
    add("command_output", "height", b"4304\n".to_vec());
    let full = json!({"height": 4304, "catching_up": false, "peers": 12, "signing": true, "producing": null,
        "latest_block_time": "2026-11-21T13:48:16.5Z"});
    add("command_output", "object", full.to_string().into_bytes());
}

fn raft_message(kind: MessageType, from: u64, to: u64) -> eraftpb::Message {
    let mut m = eraftpb::Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = 3;
    m
}

fn raft_seeds(add: &mut Add<'_>) {
    let mut state = ClusterState::default();
    state.apply(&Command::Acquire { member: member("a"), seen_epoch: None, ttl_ms: Some(3000) });
    let state = serde_json::to_vec(&state).expect("a cluster state encodes");
    let mut append = raft_message(MessageType::MsgAppend, 2, 1);
    let renew = Command::Renew { member: member("a"), epoch: Epoch::new(1), ttl_ms: Some(3000) };
    let data = serde_json::to_vec(&renew).expect("a command encodes").into();
    append.mut_entries().push(eraftpb::Entry { index: 5, term: 3, data, ..eraftpb::Entry::default() });
    append.index = 4;
    append.log_term = 3;
    append.commit = 4;
    let mut heartbeat = raft_message(MessageType::MsgHeartbeat, 2, 1);
    heartbeat.commit = 4;
    let mut snapshot = raft_message(MessageType::MsgSnapshot, 2, 1);
    {
        let s = snapshot.mut_snapshot();
        s.data = state.clone().into();
        s.mut_metadata().index = 9;
        s.mut_metadata().term = 3;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    }
    let vote = raft_message(MessageType::MsgRequestVote, 2, 1);
    let messages = [("append", append), ("heartbeat", heartbeat), ("snapshot", snapshot), ("vote", vote)];
    for (name, m) in &messages {
        add("raft_message", name, m.write_to_bytes().expect("a raft message encodes"));
    }
    let batch =
        RaftBatch { from: 2, messages: messages.iter().map(|(_, m)| m.write_to_bytes().expect("encodes")).collect() };
    add("raft_batch", "all", batch.encode_to_vec());
    let mut with_state = vec![0x07];
    with_state.extend(&state);
    add("raft_snapshot", "held", with_state);
    add("raft_snapshot", "empty", b"\x07{}".to_vec());
}

fn control_seeds(add: &mut Add<'_>) {
    let status = MemberStatus {
        member: member("b"),
        kind: MemberKind::Producer,
        role: RoleName::Standby,
        priority: 10,
        height: Some(4304),
        healthy: true,
        epoch: Some(Epoch::new(7)),
    };
    let mut msg = MemberStatusMsg::from(&status);
    add("member_status", "standby", msg.encode_to_vec());
    msg.validator = "osmosis".into();
    add("member_status", "scoped", msg.encode_to_vec());
    let mut header = vec![0];
    header.extend(b"osmosis");
    add("control_request", "header", header);
    let mut promote = vec![1];
    promote.extend(PromoteRequest { target: "b".into(), force: true }.encode_to_vec());
    add("control_request", "promote", promote);
    let hrs = |h: u64| Some(v1::Hrs::from(Hrs::new(h, 0, Step::Precommit)));
    let import = WatermarkImportRequest {
        entries: vec![
            WatermarkEntry { key: "validator-key".into(), hrs: hrs(4304) },
            WatermarkEntry { key: "validator-key".into(), hrs: hrs(4305) },
        ],
        dry_run: true,
        force: false,
    };
    let mut bytes = vec![0x80 | 2];
    bytes.extend(import.encode_to_vec());
    add("control_request", "import", bytes);
}

fn vote(height: i64, round: i32, kind: i32) -> Vote {
    Vote {
        r#type: kind,
        height,
        round,
        block_id: Some(BlockId {
            hash: vec![0xab; 32],
            part_set_header: Some(PartSetHeader { total: 1, hash: vec![0xcd; 32] }),
        }),
        timestamp: Some(Timestamp { seconds: 1_795_000_000, nanos: 5 }),
        validator_address: vec![0; 20],
        ..Vote::default()
    }
}

fn privval_seeds(add: &mut Add<'_>) {
    let framed = |sum: Sum| frame::encode(&privval::Message { sum: Some(sum) });
    let sign_vote =
        |v: Vote| framed(Sum::SignVoteRequest(privval::SignVoteRequest { vote: Some(v), chain_id: FUZZ_CHAIN.into() }));
    let proposal = Proposal {
        r#type: 32,
        height: 4304,
        round: 0,
        pol_round: -1,
        block_id: vote(4304, 0, 1).block_id,
        timestamp: Some(Timestamp { seconds: 1_795_000_000, nanos: 0 }),
        ..Proposal::default()
    };
    let mut conversation = framed(Sum::PubKeyRequest(privval::PubKeyRequest { chain_id: FUZZ_CHAIN.into() }));
    conversation.extend(framed(Sum::PingRequest(privval::PingRequest {})));
    conversation.extend(framed(Sum::SignProposalRequest(privval::SignProposalRequest {
        proposal: Some(proposal),
        chain_id: FUZZ_CHAIN.into(),
    })));
    conversation.extend(sign_vote(vote(4304, 0, 1)));
    conversation.extend(sign_vote(vote(4304, 0, 2)));
    let mut retimed = vote(4304, 0, 2);
    retimed.timestamp = Some(Timestamp { seconds: 1_795_000_001, nanos: 0 });
    conversation.extend(sign_vote(retimed));
    conversation.extend(sign_vote(vote(4303, 0, 2)));
    add("privval_request", "conversation", conversation.clone());
    add("privval_frame", "conversation", conversation);
    add("privval_frame", "ping", framed(Sum::PingRequest(privval::PingRequest {})));
}

fn corpus(target: &str) -> PathBuf {
    root().join("fuzz/corpus").join(target)
}

#[test]
fn the_committed_fuzz_seeds_are_the_ones_the_fixtures_give() {
    let write = std::env::var_os("FAILOVERD_WRITE_FUZZ_SEEDS").is_some();
    let mut stale = Vec::new();
    for (target, name, bytes) in seeds() {
        let path = corpus(target).join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(corpus(target)).expect("the corpus directory");
            std::fs::write(&path, &bytes).expect("a seed");
        } else if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "these seeds are missing or differ from what tests/fuzz_seeds.rs builds; write them again with \
         FAILOVERD_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_seeds:\n{}",
        stale.join("\n")
    );
}

/// The `[[bin]]` names of fuzz/Cargo.toml.
fn targets() -> BTreeSet<String> {
    let manifest: toml::Table =
        std::fs::read_to_string(root().join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml").parse().expect("TOML");
    let bins = manifest.get("bin").and_then(toml::Value::as_array).expect("[[bin]] entries");
    bins.iter().filter_map(|b| b.get("name").and_then(toml::Value::as_str)).map(str::to_string).collect()
}

#[test]
fn every_fuzz_target_has_a_file_and_seeds() {
    let files: BTreeSet<String> = std::fs::read_dir(root().join("fuzz/fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".rs").map(str::to_string))
        .collect();
    assert_eq!(targets(), files, "fuzz/Cargo.toml's [[bin]] entries and fuzz/fuzz_targets/ differ");
    let seeded: BTreeMap<&str, usize> = seeds().iter().fold(BTreeMap::new(), |mut m, (t, _, _)| {
        *m.entry(*t).or_default() += 1;
        m
    });
    for target in targets() {
        assert!(seeded.get(target.as_str()).is_some_and(|n| *n > 0), "fuzz target {target} has no seeds");
    }
}

#[test]
fn the_seeds_of_real_answers_are_accepted_by_todays_parsers() {
    let all = seeds();
    let seed = |target: &str, name: &str| -> Vec<u8> {
        all.iter().find(|(t, n, _)| *t == target && n == name).map(|(_, _, b)| b.clone()).expect("a seed")
    };
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8");
    for name in ["example-a", "example-b", "example-c", "failoverd.toml"] {
        let toml = text(seed("config_toml", name));
        assert!(failover::config::Config::parse(&toml).is_ok(), "config seed {name} is refused");
    }
    for name in ["v1", "v2"] {
        assert!(failover::domain::interchange::parse(&text(seed("watermark_interchange", name))).is_ok(), "{name}");
    }
    let json = |b: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&b).expect("JSON");
    assert_eq!(
        failover::chain::cometbft::parse_status(&json(seed("cometbft_rpc", "status"))).map(|s| s.height),
        Ok(4304)
    );
    let commit = json(seed("cometbft_rpc", "commit"));
    assert_eq!(
        failover::chain::cometbft::signed_in_commit(&commit, 4304, "0A1B2C3D4E5F60718293A4B5C6D7E8F901234567"),
        Ok(true)
    );
    let info = json(seed("antelope_rpc", "get_info"));
    assert!(failover::chain::antelope::parse_get_info(&info).is_ok());
    assert!(failover::chain::command::parse_output(&seed("command_output", "object")).is_ok());
    assert!(failover::producer::cometbft_filepv::parse_state(&seed("filepv_state", "state")).is_ok());
    assert!(ValidatorKey::parse(&seed("validator_key", "key")).is_ok());
    let batch = RaftBatch::decode(seed("raft_batch", "all").as_slice()).expect("a batch");
    assert_eq!(failover::coord::raft::peer_batch::read_batch(2, 1, &batch.messages).map(|m| m.len()), Ok(4));
    let mut rest = seed("privval_request", "conversation");
    let mut frames = 0;
    while let Ok(Some((_, used))) = frame::decode(&rest) {
        rest.drain(..used);
        frames += 1;
    }
    assert_eq!((frames, rest.len()), (7, 0), "the privval conversation is seven whole frames");
}
