//! The privval signer against a node side built from the tendermint-rs crates: the signer dials a
//! listener that completes a real SecretConnection (tendermint-p2p) and sends privval requests
//! (tendermint-proto); sign bytes are checked against the tendermint crate and against CometBFT's
//! recorded vote sign-bytes vectors. Every new signature is reserved through a real 3-member raft
//! cluster.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raft_cluster::{SharedCluster, within};
use failover::coord::Coordinator;

use failover::coord::raft::RaftCoordinator;
use failover::domain::{Hrs, KeyId, MonoTime, Step};
use failover::producer::privval::connection::{Closer, ConnectionError, NodeAddress, NodeConnection};
use failover::producer::privval::coordinator_gate::{CoordinatorGate, Permission};
use failover::producer::privval::signer::{PrivvalSigner, SignObserver, SignOutcome, code};
use failover::producer::privval::validator_key::ValidatorKey;
use failover::sim::privval_node::{self, PrivvalRequester};
use prost::Message as _;
use tendermint_p2p::secret_connection::{SecretConnection, Version};
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::privval::{
    Message, PingRequest, PubKeyRequest, SignProposalRequest, SignVoteRequest, message::Sum,
};
use tendermint_proto::v0_38::types::{BlockId, PartSetHeader, Proposal, Vote};

const CHAIN: &str = "test_chain_id";

/// The node's end: one accepted SecretConnection, framed by hand (the node's own code path).
struct NodeSide {
    conn: SecretConnection<std::net::TcpStream>,
    /// Plaintext read but not yet consumed: SecretConnection must be read a whole chunk (up to
    /// 1024 bytes) at a time.
    pending: std::collections::VecDeque<u8>,
}

impl NodeSide {
    fn send_raw(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).expect("write");
        self.conn.flush().expect("flush");
    }

    fn send(&mut self, sum: Sum) {
        let bytes = Message { sum: Some(sum) }.encode_length_delimited_to_vec();
        self.send_raw(&bytes);
    }

    fn byte(&mut self) -> Option<u8> {
        while self.pending.is_empty() {
            let mut chunk = [0u8; 1024];
            match self.conn.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.pending.extend(&chunk[..n]),
            }
        }
        self.pending.pop_front()
    }

    /// The next message, or `None` when the signer closed the connection.
    fn receive(&mut self) -> Option<Sum> {
        let mut len: usize = 0;
        for shift in 0..10 {
            let b = self.byte()?;
            len |= usize::from(b & 0x7f) << (7 * shift);
            if b & 0x80 == 0 {
                break;
            }
        }
        let body: Option<Vec<u8>> = (0..len).map(|_| self.byte()).collect();
        Message::decode(body?.as_slice()).expect("a privval message").sum
    }

    fn ask(&mut self, sum: Sum) -> Sum {
        self.send(sum);
        self.receive().expect("an answer")
    }
}

struct Fixture {
    coords: Vec<Arc<RaftCoordinator>>,
    _dirs: Vec<tempfile::TempDir>,
    signer: Arc<PrivvalSigner<CoordinatorGate>>,
    public: [u8; 32],
    epoch: failover::domain::Epoch,
    /// Every outcome the signer reported, in order.
    outcomes: Arc<Mutex<Vec<SignOutcome>>>,
    /// Member a's lease, for a test that outlasts its TTL to renew.
    lease: failover::domain::Lease,
}

async fn fixture() -> Fixture {
    let key_id = KeyId::new("validator").expect("key");
    let SharedCluster { nodes: coords, lease, dirs, pki_dir: _pki_dir } =
        SharedCluster::start_with_holder_a(&key_id).await;
    let key_path = dirs[0].path().join("priv_validator_key.json");
    ValidatorKey::write_for_seed(&key_path, [5; 32]).expect("key file");
    let key = ValidatorKey::load(&key_path).expect("key loads");
    let public = key.public_key();
    let coord: Arc<dyn Coordinator> = coords[0].clone();
    let gate = CoordinatorGate::new(coord, key_id, tokio::runtime::Handle::current(), Duration::from_secs(2));
    // No deadline here: these tests are about the protocol, not the lease.
    gate.permit(Permission { epoch: lease.epoch, floor: Hrs::ZERO, until: MonoTime::from_nanos(u64::MAX) });
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&outcomes);
    let observer: SignObserver = Arc::new(move |o, _, _: &str| seen.lock().expect("outcomes").push(o));
    let signer = Arc::new(PrivvalSigner::new(CHAIN, key, gate).observed(observer));
    Fixture { coords, _dirs: dirs, signer, public, epoch: lease.epoch, outcomes, lease }
}

/// A listening node and the signer dialling it; returns the node's end and the signer's thread
/// (its result says how the connection ended).
fn connect(
    signer: &Arc<PrivvalSigner<CoordinatorGate>>,
) -> (NodeSide, std::thread::JoinHandle<Result<(), String>>, Closer) {
    connect_with(signer, Duration::from_secs(5))
}

/// [`connect`] with the signer dialling with `timeout`, as the producer does with
/// `coordinator.call_timeout` (at least 1 s).
fn connect_with(
    signer: &Arc<PrivvalSigner<CoordinatorGate>>,
    timeout: Duration,
) -> (NodeSide, std::thread::JoinHandle<Result<(), String>>, Closer) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("node listens");
    let address: NodeAddress = format!("tcp://{}", listener.local_addr().expect("addr")).parse().expect("address");
    let node = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("the signer dials");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let node_key = ed25519_consensus::SigningKey::from([42u8; 32]);
        SecretConnection::new(stream, node_key, Version::V0_34).expect("node handshake")
    });
    let identity = ed25519_consensus::SigningKey::from([7u8; 32]);
    let (conn, closer) = NodeConnection::dial(&address, &identity, timeout).expect("dial");
    let signer = Arc::clone(signer);
    let serving = std::thread::spawn(move || conn.serve(&signer).map_err(|e| e.to_string()));
    (NodeSide { conn: node.join().expect("node thread"), pending: Default::default() }, serving, closer)
}

fn block_id(fill: u8) -> BlockId {
    BlockId { hash: vec![fill; 32], part_set_header: Some(PartSetHeader { total: 1, hash: vec![fill; 32] }) }
}

fn vote(msg_type: i32, height: i64, round: i32, block: Option<BlockId>, seconds: i64) -> Vote {
    Vote {
        r#type: msg_type,
        height,
        round,
        block_id: block,
        timestamp: Some(Timestamp { seconds, nanos: 0 }),
        validator_address: vec![0xaa; 20],
        validator_index: 0,
        ..Vote::default()
    }
}

fn sign_bytes(v: &Vote) -> Vec<u8> {
    let request =
        tendermint::vote::SignVoteRequest::try_from(SignVoteRequest { vote: Some(v.clone()), chain_id: CHAIN.into() })
            .expect("a valid vote");
    request.into_signable_vec()
}

fn verifies(public: [u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let Ok(vk) = ed25519_consensus::VerificationKey::try_from(public) else { return false };
    let Ok(sig) = <[u8; 64]>::try_from(signature) else { return false };
    vk.verify(&ed25519_consensus::Signature::from(sig), message).is_ok()
}

fn signed_vote(answer: Sum) -> Result<Vote, (i32, String)> {
    match answer {
        Sum::SignedVoteResponse(r) => match (r.vote, r.error) {
            (Some(v), None) => Ok(v),
            (_, Some(e)) => Err((e.code, e.description)),
            _ => Err((0, "empty".into())),
        },
        other => panic!("not a vote response: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signer_answers_a_secret_connection_node_and_never_signs_twice() {
    let f = fixture().await;
    let signer = Arc::clone(&f.signer);
    let public = f.public;
    let coord = Arc::clone(&f.coords[0]);
    let epoch = f.epoch;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let (mut node, serving, _closer) = connect(&signer);
        assert!(matches!(node.ask(Sum::PingRequest(PingRequest {})), Sum::PingResponse(_)));
        match node.ask(Sum::PubKeyRequest(PubKeyRequest { chain_id: CHAIN.into() })) {
            Sum::PubKeyResponse(r) => {
                let key = r.pub_key.and_then(|k| k.sum).expect("a key");
                assert_eq!(key, tendermint_proto::v0_38::crypto::public_key::Sum::Ed25519(public.to_vec()));
            }
            other => panic!("{other:?}"),
        }
        match node.ask(Sum::PubKeyRequest(PubKeyRequest { chain_id: "other-chain".into() })) {
            Sum::PubKeyResponse(r) => {
                let e = r.error.expect("refused");
                assert_eq!(e.code, code::BAD_REQUEST);
                assert!(e.description.contains("other-chain"), "{}", e.description);
            }
            other => panic!("{other:?}"),
        }

        // A prevote: signed over exactly the tendermint sign bytes.
        let prevote = vote(1, 5, 0, Some(block_id(1)), 100);
        let signed = signed_vote(
            node.ask(Sum::SignVoteRequest(SignVoteRequest { vote: Some(prevote.clone()), chain_id: CHAIN.into() })),
        )
        .expect("signed");
        assert!(verifies(public, &sign_bytes(&prevote), &signed.signature));

        // The same vote, only the timestamp differs: the stored signature and timestamp.
        let later = vote(1, 5, 0, Some(block_id(1)), 130);
        let again =
            signed_vote(node.ask(Sum::SignVoteRequest(SignVoteRequest { vote: Some(later), chain_id: CHAIN.into() })))
                .expect("repeat");
        assert_eq!(again.signature, signed.signature);
        assert_eq!(again.timestamp, Some(Timestamp { seconds: 100, nanos: 0 }));

        // Another block at the same HRS, and a step below: refused, counted.
        let before = signer.refusals();
        for conflicting in [vote(1, 5, 0, Some(block_id(2)), 100), vote(1, 4, 0, Some(block_id(1)), 100)] {
            let (code, why) = signed_vote(
                node.ask(Sum::SignVoteRequest(SignVoteRequest { vote: Some(conflicting), chain_id: CHAIN.into() })),
            )
            .expect_err("a double sign is refused");
            assert_eq!(code, code::REFUSED, "{why}");
        }
        assert_eq!(signer.refusals(), before + 2);

        // A precommit for a block: signed, and its vote extension signed over CometBFT's
        // canonical extension bytes.
        let precommit = Vote { extension: b"ext".to_vec(), ..vote(2, 5, 0, Some(block_id(1)), 101) };
        let signed = signed_vote(
            node.ask(Sum::SignVoteRequest(SignVoteRequest { vote: Some(precommit.clone()), chain_id: CHAIN.into() })),
        )
        .expect("precommit signed");
        assert!(verifies(public, &sign_bytes(&precommit), &signed.signature));
        let extension = tendermint_proto::v0_38::types::CanonicalVoteExtension {
            extension: b"ext".to_vec(),
            height: 5,
            round: 0,
            chain_id: CHAIN.into(),
        };
        assert!(verifies(public, &extension.encode_length_delimited_to_vec(), &signed.extension_signature));

        // A wrong chain id.
        let (code, _) = signed_vote(node.ask(Sum::SignVoteRequest(SignVoteRequest {
            vote: Some(vote(2, 6, 0, Some(block_id(1)), 100)),
            chain_id: "other-chain".into(),
        })))
        .expect_err("wrong chain");
        assert_eq!(code, code::BAD_REQUEST);

        // A proposal above: signed over the tendermint proposal sign bytes.
        let proposal = Proposal {
            r#type: 32,
            height: 6,
            round: 0,
            pol_round: -1,
            block_id: Some(block_id(3)),
            timestamp: Some(Timestamp { seconds: 101, nanos: 0 }),
            signature: vec![],
        };
        let signed_proposal = proposal.clone();
        match node.ask(Sum::SignProposalRequest(SignProposalRequest {
            proposal: Some(proposal.clone()),
            chain_id: CHAIN.into(),
        })) {
            Sum::SignedProposalResponse(r) => {
                let p = r.proposal.expect("signed");
                let bytes = tendermint::proposal::SignProposalRequest::try_from(SignProposalRequest {
                    proposal: Some(proposal),
                    chain_id: CHAIN.into(),
                })
                .expect("valid")
                .proposal
                .into_signable_vec(CHAIN.parse().expect("chain id"));
                assert!(verifies(public, &bytes, &p.signature));
            }
            other => panic!("{other:?}"),
        }

        // The watermark in the store moves past the signer's window (as an operator's import
        // would): the next request above the window is refused though this signer never signed
        // it, because the window it asks for is not above the watermark.
        runtime
            .block_on(coord.reserve(
                epoch,
                &KeyId::new("validator").expect("key"),
                Hrs::end_of_height(30),
                within(Duration::from_secs(2)),
            ))
            .expect("reserve");
        let (code, why) = signed_vote(node.ask(Sum::SignVoteRequest(SignVoteRequest {
            vote: Some(vote(2, 20, 0, Some(block_id(1)), 100)),
            chain_id: CHAIN.into(),
        })))
        .expect_err("below the watermark");
        assert_eq!(code, code::REFUSED, "{why}");

        // A frame that is not a privval message: the signer closes the connection cleanly.
        node.send_raw(&[0x03, 0xff, 0xff, 0xff]);
        assert!(node.receive().is_none(), "the connection is closed");
        let ended = serving.join().expect("signer thread");
        assert!(ended.as_ref().is_err_and(|e| e.contains("bad frame")), "{ended:?}");

        // Demoted: no signature, whatever the height; not even a repeat of what it signed last
        // while active.
        signer.gate().revoke();
        let answer = |sum: Sum| signer.answer(Message { sum: Some(sum) }).and_then(|m| m.sum).expect("an answer");
        let (code, _) = signed_vote(answer(Sum::SignVoteRequest(SignVoteRequest {
            vote: Some(vote(2, 50, 0, Some(block_id(1)), 100)),
            chain_id: CHAIN.into(),
        })))
        .expect_err("not active");
        assert_eq!(code, code::NOT_ACTIVE);
        match answer(Sum::SignProposalRequest(SignProposalRequest {
            proposal: Some(signed_proposal.clone()),
            chain_id: CHAIN.into(),
        })) {
            Sum::SignedProposalResponse(r) => {
                assert_eq!(r.error.map(|e| e.code), Some(code::NOT_ACTIVE));
                assert!(r.proposal.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(signer.last_signed(), Some(Hrs::new(6, 0, Step::Propose)));

        // Over a connection, a member that may not sign answers nothing: it closes the
        // connection, so that the node asks its next signer (a CometBFT node retries a request
        // that failed on its connection, but takes an error answer as final).
        let (mut node, serving, _closer) = connect(&signer);
        node.send(Sum::SignVoteRequest(SignVoteRequest {
            vote: Some(vote(2, 50, 0, Some(block_id(1)), 100)),
            chain_id: CHAIN.into(),
        }));
        assert!(node.receive().is_none(), "the connection is closed, the request unanswered");
        assert!(serving.join().expect("signer thread").is_ok(), "closed quietly");
    })
    .await
    .expect("node side");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_closes_the_connection_and_the_sign_bytes_match_cometbft_vectors() {
    let f = fixture().await;
    let signer = Arc::clone(&f.signer);
    let public = f.public;
    tokio::task::spawn_blocking(move || {
        let (mut node, serving, _closer) = connect(&signer);
        // CometBFT's recorded vectors for Vote{Height: 1, Round: 1, Type: Precommit} (zero
        // timestamp), with the chain id field of its "test_chain_id" vector appended.
        let mut expected = vec![0x30, 0x08, 0x02, 0x11, 1, 0, 0, 0, 0, 0, 0, 0, 0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0x2a];
        expected.extend([0x0b, 0x08, 0x80, 0x92, 0xb8, 0xc3, 0x98, 0xfe, 0xff, 0xff, 0xff, 0x01]);
        expected.extend([0x32, 0x0d]);
        expected.extend(CHAIN.as_bytes());
        let zero_time = Timestamp { seconds: -62_135_596_800, nanos: 0 };
        let precommit = Vote { timestamp: Some(zero_time), ..vote(2, 1, 1, None, 0) };
        assert_eq!(sign_bytes(&precommit), expected, "tendermint-rs agrees with CometBFT's vectors");
        let signed = signed_vote(
            node.ask(Sum::SignVoteRequest(SignVoteRequest { vote: Some(precommit), chain_id: CHAIN.into() })),
        )
        .expect("signed");
        assert!(verifies(public, &expected, &signed.signature), "the signature covers CometBFT's sign bytes");

        // 20 KiB announced: refused before it is read; the connection closes.
        let mut big = Vec::new();
        prost::encoding::encode_varint(20 * 1024, &mut big);
        node.send_raw(&big);
        assert!(node.receive().is_none(), "the connection is closed");
        let ended = serving.join().expect("signer thread");
        assert!(ended.as_ref().is_err_and(|e| e.contains("10 KiB")), "{ended:?}");
    })
    .await
    .expect("node side");
}

/// A CometBFT node says nothing between heights but a ping every ~3.3 s (2/3 of its 5 s
/// timeout): a link idle for longer than that, with the producer's shortest dial timeout (1 s),
/// stays open and the next request is answered on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_link_survives_more_than_five_seconds_of_silence_and_still_signs_on_the_same_connection() {
    let f = fixture().await;
    let signer = Arc::clone(&f.signer);
    let public = f.public;
    // The lease is renewed through the silence, as the active member's daemon does.
    let (coord, lease) = (Arc::clone(&f.coords[0]), f.lease.clone());
    let renewing = tokio::spawn(async move {
        loop {
            let _ = coord.renew(&lease, tokio::time::Instant::now() + Duration::from_secs(1)).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    tokio::task::spawn_blocking(move || {
        let (mut node, serving, closer) = connect_with(&signer, Duration::from_secs(1));
        assert!(matches!(node.ask(Sum::PingRequest(PingRequest {})), Sum::PingResponse(_)));
        // The silence is what is tested: nothing to wait for but time.
        std::thread::sleep(Duration::from_millis(5_500));
        assert!(!serving.is_finished(), "the signer hung up on an idle node: {:?}", serving.join());
        let precommit = vote(2, 3, 0, Some(block_id(3)), 10);
        let answer =
            node.ask(Sum::SignVoteRequest(SignVoteRequest { vote: Some(precommit.clone()), chain_id: CHAIN.into() }));
        let signed = signed_vote(answer).expect("signed after the silence");
        assert!(verifies(public, &sign_bytes(&precommit), &signed.signature));
        closer.close();
        assert!(serving.join().expect("signer thread").is_ok(), "the same connection, closed by us, ends quietly");
    })
    .await
    .expect("node side");
    renewing.abort();
}

/// A silence longer than the limit ends the connection as an idle one, never as a bad frame,
/// and the operator reads a sentence about a silent node.
#[test]
fn a_node_silent_past_the_limit_is_reported_as_idle_not_as_a_bad_frame() {
    use failover::producer::privval::connection::NODE_SILENCE_LIMIT;
    let idle = ConnectionError::Idle { address: "tcp://127.0.0.1:26659".into(), silent_for: NODE_SILENCE_LIMIT };
    let text = idle.to_string();
    assert!(text.contains("sent nothing for 15 s"), "{text}");
    assert!(!text.contains("bad frame") && !text.contains("os error"), "{text}");
    assert!(NODE_SILENCE_LIMIT >= Duration::from_secs(10), "at least twice a CometBFT node's 5 s timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_connection_on_demotion_ends_the_signer_thread() {
    let f = fixture().await;
    let signer = Arc::clone(&f.signer);
    tokio::task::spawn_blocking(move || {
        let (mut node, serving, closer) = connect(&signer);
        assert!(matches!(node.ask(Sum::PingRequest(PingRequest {})), Sum::PingResponse(_)));
        signer.gate().revoke();
        closer.close();
        assert!(serving.join().expect("signer thread").is_ok(), "a closed connection ends quietly");
        assert!(node.receive().is_none(), "the node sees the connection closed");
    })
    .await
    .expect("node side");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heights_at_the_activation_floor_are_refused_as_below_floor_and_each_outcome_is_reported() {
    let f = fixture().await;
    let signer = Arc::clone(&f.signer);
    signer.gate().permit(Permission {
        epoch: f.epoch,
        floor: Hrs::end_of_height(5),
        until: MonoTime::from_nanos(u64::MAX),
    });
    let outcomes = tokio::task::spawn_blocking(move || {
        let ask = |v: Vote| {
            let answer = signer.answer(Message {
                sum: Some(Sum::SignVoteRequest(SignVoteRequest { vote: Some(v), chain_id: CHAIN.into() })),
            });
            signed_vote(answer.and_then(|m| m.sum).expect("an answer"))
        };
        let at_floor = ask(vote(2, 5, 0, Some(block_id(1)), 100)).expect_err("height 5 is at the floor");
        assert_eq!(at_floor.0, code::REFUSED, "{at_floor:?}");
        assert!(at_floor.1.contains("activation floor"), "{at_floor:?}");
        ask(vote(2, 6, 0, Some(block_id(1)), 100)).expect("height 6 is above the floor");
        ask(vote(2, 6, 0, Some(block_id(1)), 101)).expect("the same vote, a later timestamp: the stored signature");
        let conflicting = ask(vote(2, 6, 0, Some(block_id(2)), 100)).expect_err("another block at the same HRS");
        assert_eq!(conflicting.0, code::REFUSED, "{conflicting:?}");
        signer.gate().revoke();
        let standby = ask(vote(2, 7, 0, Some(block_id(1)), 100)).expect_err("not active");
        assert_eq!(standby.0, code::NOT_ACTIVE, "{standby:?}");
    })
    .await;
    outcomes.expect("node side");
    assert_eq!(
        *f.outcomes.lock().expect("outcomes"),
        vec![
            SignOutcome::BelowFloor,
            SignOutcome::Signed,
            SignOutcome::Repeated,
            SignOutcome::Refused,
            SignOutcome::NotActive
        ]
    );
}

// The node id in priv_validator_laddr, against the project's simulated node (its key is fixed,
// so its node id is known: `privval_node::node_id()`).

/// The simulated node listening for its remote signer on a fresh port, and the port.
fn simulated_node() -> (PrivvalRequester, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("node listens");
    let port = listener.local_addr().expect("addr").port();
    (PrivvalRequester::listen(listener), port)
}

fn dial(address: &str) -> Result<(NodeConnection, Closer), ConnectionError> {
    let identity = ed25519_consensus::SigningKey::from([7u8; 32]);
    NodeConnection::dial(&address.parse().expect("an address"), &identity, Duration::from_secs(5))
}

/// The time the simulated node stamps on its precommits in these tests, whole seconds.
const VOTE_SECONDS: i64 = 1_700_000_000;

/// Has the simulated node ask for a precommit at `height` over `conn`: the signature, checked
/// against the key and CometBFT's sign bytes, or `None`. Closes the connection after.
fn precommit_over(
    node: &PrivvalRequester,
    conn: NodeConnection,
    closer: Closer,
    signer: &Arc<PrivvalSigner<CoordinatorGate>>,
    height: u64,
) -> Option<Vec<u8>> {
    let signer = Arc::clone(signer);
    let serving = std::thread::spawn(move || conn.serve(&signer).map_err(|e| e.to_string()));
    assert!(node.wait_for_signer(Duration::from_secs(5)), "the node never completed its handshake");
    let signature = node.precommit(CHAIN, height, [9; 32], VOTE_SECONDS * 1_000_000_000);
    closer.close();
    assert!(serving.join().expect("signer thread").is_ok(), "a closed connection ends quietly");
    signature
}

// In the demo the simulated node runs inside the member whose signer it asks, on the same
// one-worker runtime: a read of its signer link (`GET /sim/state`) that waited for the signer's
// answer blocked the worker the signer's reservation needed, until the self-fence ended the
// deadlock. The link is read at once while a request is out, and shows the connection held.
#[test]
fn reading_the_nodes_signer_link_never_waits_for_a_signers_answer() {
    let (node, port) = simulated_node();
    // A signer that completes its handshake and then never answers.
    let (_silent, closer) = dial(&format!("tcp://127.0.0.1:{port}")).expect("dial");
    assert!(node.wait_for_signer(Duration::from_secs(5)), "the node never completed its handshake");
    let asking = {
        let node = node.clone();
        std::thread::spawn(move || node.precommit(CHAIN, 1, [9; 32], VOTE_SECONDS * 1_000_000_000))
    };
    // The request waits for an answer up to the node's 2 s read timeout; sample the link meanwhile.
    let start = std::time::Instant::now();
    while !asking.is_finished() && start.elapsed() < Duration::from_millis(1500) {
        let read = std::time::Instant::now();
        let link = node.link();
        assert!(read.elapsed() < Duration::from_millis(300), "reading the link waited {:?}", read.elapsed());
        assert!(link.connected, "the connection in use counts as held: {link:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(asking.join().expect("the request ends"), None, "a signer that never answers gave a signature");
    closer.close();
}

#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = CapturedLog;
    fn make_writer(&'a self) -> CapturedLog {
        self.clone()
    }
}

thread_local! {
    /// Where the lines this thread logs go, while a test captures them.
    static CAPTURE: std::cell::RefCell<Option<CapturedLog>> = const { std::cell::RefCell::new(None) };
}

/// The writer of this test binary's one global subscriber: each line to the capture of the
/// thread that logged it, or nowhere. A subscriber per test (`with_default`) is not enough: the
/// tests run in parallel, and tracing's global level and per-callsite caches, rebuilt as other
/// threads' subscribers come and go, once left a line of a capturing thread unlogged.
struct ThreadCapture;

struct CaptureWriter(Option<CapturedLog>);

impl Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match &mut self.0 {
            Some(log) => log.write(bytes),
            None => Ok(bytes.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadCapture {
    type Writer = CaptureWriter;
    fn make_writer(&'a self) -> CaptureWriter {
        CaptureWriter(CAPTURE.with(|c| c.borrow().clone()))
    }
}

/// Ends a capture when `around` returns or its closure panics.
struct CaptureEnds;

impl Drop for CaptureEnds {
    fn drop(&mut self) {
        CAPTURE.with(|c| *c.borrow_mut() = None);
    }
}

impl CapturedLog {
    /// Runs `f` on this thread with what it logs captured here.
    fn around<T>(&self, f: impl FnOnce() -> T) -> T {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let subscriber = tracing_subscriber::fmt().with_writer(ThreadCapture).with_ansi(false).finish();
            tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in this binary");
        });
        CAPTURE.with(|c| *c.borrow_mut() = Some(self.clone()));
        let _ends = CaptureEnds;
        f()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_told_the_nodes_id_connects_to_that_node_and_signs_without_a_warning() {
    let f = fixture().await;
    let signer = Arc::clone(&f.signer);
    let public = f.public;
    tokio::task::spawn_blocking(move || {
        let (node, port) = simulated_node();
        let address = format!("tcp://{}@127.0.0.1:{port}", privval_node::node_id());
        let log = CapturedLog::default();
        let (conn, closer) = log.around(|| dial(&address)).expect("the node with that id is accepted");
        assert!(!log.text().contains("not authenticated"), "{}", log.text());
        let signature = precommit_over(&node, conn, closer, &signer, 5).expect("signed");
        let precommit = vote(2, 5, 0, Some(block_id(9)), VOTE_SECONDS);
        assert!(verifies(public, &sign_bytes(&precommit), &signature));
    })
    .await
    .expect("node side");
    assert_eq!(*f.outcomes.lock().expect("outcomes"), vec![SignOutcome::Signed]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_presenting_another_id_is_refused_naming_both_ids_and_nothing_is_signed() {
    let f = fixture().await;
    let signer = Arc::clone(&f.signer);
    tokio::task::spawn_blocking(move || {
        let (node, port) = simulated_node();
        let expected = tendermint::node::Id::new([0xab; 20]);
        let refused = match dial(&format!("tcp://{expected}@127.0.0.1:{port}")) {
            Ok(_) => panic!("a node with another id was accepted"),
            Err(e) => e,
        };
        let presented = privval_node::node_id();
        assert!(
            matches!(&refused, ConnectionError::WrongNode { expected: e, presented: p, .. } if *e == expected && *p == presented),
            "{refused}"
        );
        let text = refused.to_string();
        for part in [&expected.to_string(), &presented.to_string(), "priv_validator_laddr", "new privval listener key"] {
            assert!(text.contains(part), "the refusal lacks {part}: {text}");
        }
        assert!(text.contains(&format!("which node is listening at 127.0.0.1:{port}")), "{text}");
        // The node completed its side of the handshake, and finds the connection closed.
        node.wait_for_signer(Duration::from_secs(5));
        assert_eq!(node.precommit(CHAIN, 5, [9; 32], VOTE_SECONDS * 1_000_000_000), None);
        assert_eq!(signer.last_signed(), None);
    })
    .await
    .expect("node side");
    assert!(f.outcomes.lock().expect("outcomes").is_empty(), "no request reached the signer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_without_the_nodes_id_still_signs_and_says_once_at_info_that_the_node_is_not_authenticated() {
    let f = fixture().await;
    let signer = Arc::clone(&f.signer);
    tokio::task::spawn_blocking(move || {
        let (node, port) = simulated_node();
        let log = CapturedLog::default();
        let (conn, closer) = log.around(|| dial(&format!("tcp://127.0.0.1:{port}"))).expect("accepted");
        let text = log.text();
        assert_eq!(text.matches("not authenticated").count(), 1, "{text}");
        assert!(text.contains("INFO") && !text.contains("WARN"), "{text}");
        for part in [&format!("127.0.0.1:{port}"), "private network", "unix://", &privval_node::node_id().to_string()] {
            assert!(text.contains(part), "the warning lacks {part}: {text}");
        }
        assert!(precommit_over(&node, conn, closer, &signer, 5).is_some(), "signed");
    })
    .await
    .expect("node side");
    assert_eq!(*f.outcomes.lock().expect("outcomes"), vec![SignOutcome::Signed]);
}

/// CometBFT's own remote signer answers every refusal with code 0; its `privval.Errors` 1 to 5
/// are the node's connection failures. failoverd's codes follow (the table in
/// `failover::producer::privval`).
#[test]
fn refusal_codes_match_cometbfts_signer_and_not_active_is_no_connection_error_code() {
    assert_eq!(code::BAD_REQUEST, 0, "another chain or a malformed request: CometBFT answers 0");
    assert_eq!(code::REFUSED, 0, "a double sign or regression refused: CometBFT's FilePV answers 0");
    assert!(!(0..=5).contains(&code::NOT_ACTIVE), "not active must not read as a CometBFT connection error");
}
