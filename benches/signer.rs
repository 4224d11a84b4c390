//! Signer-mode benchmark: `cargo bench --bench signer`.
//!
//! **What it measures: the time failoverd adds to each signature, paired.** Four remote signers
//! answer four node connections of the same kind (tendermint-p2p SecretConnection over TCP on
//! 127.0.0.1, the node side played by this benchmark):
//!
//! - *failoverd*: `PrivvalSigner` behind a real `CoordinatorGate` over member "a" of a real
//!   3-member raft cluster (mutual TLS, fsynced raft-engine, signer mode's default timings), which
//!   holds the lease and renews it every `renew_interval`, extending the gate's permission as the
//!   daemon does. Whatever the gate does per signature (a store commit, or signing inside a
//!   window reserved ahead) is what is measured.
//! - *plain*: the same `PrivvalSigner` with a gate that always allows: the same double-sign rule,
//!   no HA.
//! - *plain (second)*: another plain signer, to pair against the first: the A/A difference is
//!   what pairing alone shows on this machine when nothing is added — the noise floor.
//! - *plain, not persisted*: a plain signer without a state file, paired against *plain* to show
//!   what the fsync of the state file costs.
//!
//! The first three are `persisted` (every signature fsynced to a state file of their own before
//! it leaves, as a deployment runs them), so the paired difference failoverd − plain is what HA
//! adds, not the fsync.
//!
//! The node asks as a CometBFT node does: a proposal, a prevote, a precommit per height, heights
//! one block interval apart. Request i goes to all four signers one after the other (their order
//! rotating by height), so the i-th round trips of each side are taken under the same machine
//! conditions; the report is p50/p99 of the per-request differences failoverd − plain, with each
//! side's own p50/p99, the A/A difference and each side's drift between the two halves of the run
//! as noise, and how many requests found failoverd's confirmed window short (each waited for a
//! reservation), and the gate's own time per request measured inside failoverd. The old
//! figure, p99(failoverd) − p99(plain), is printed too, named for what it is.
//!
//! `FAILOVERD_BENCH_HEIGHTS` (default 900, about 1.5 minutes) sets the heights measured,
//! `FAILOVERD_BENCH_BLOCK_MS` (default 100) the block interval, `FAILOVERD_BENCH_RTT_MS` (default
//! 0) a round-trip time between members, made by the WAN lab's delay proxy on every directed peer
//! link (`common::cluster::Links`).
//!
//! Under `cargo test --all-targets` it only prints how to run it.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{BenchCluster, Links, Timing};
use common::raft_cluster::within;
use common::stats::{halves, line, ms, summarize};
use failover::coord::Coordinator;
use failover::domain::{Hrs, KeyId, MemberId, Step};
use failover::producer::privval::connection::{NodeAddress, NodeConnection};
use failover::producer::privval::coordinator_gate::{CoordinatorGate, Permission};
use failover::producer::privval::signer::{GateRefusal, PrivvalSigner, SignGate};
use failover::producer::privval::validator_key::ValidatorKey;
use prost::Message as _;
use tendermint_p2p::secret_connection::{SecretConnection, Version};
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::privval::{Message, SignProposalRequest, SignVoteRequest, message::Sum};
use tendermint_proto::v0_38::types::{BlockId, PartSetHeader, Proposal, Vote};

const CHAIN: &str = "bench";
/// Heights asked before the measured ones: connections, caches and the first window warm up.
const WARMUP_HEIGHTS: u64 = 30;

/// The plain signer's gate: everything is allowed. The signer's own double-sign rule still
/// judges every request.
struct AlwaysAllow;

impl SignGate for AlwaysAllow {
    fn reserve(&self, _hrs: Hrs) -> Result<(), GateRefusal> {
        Ok(())
    }
    fn may_sign(&self) -> bool {
        true
    }
}

/// failoverd's gate, timed: how long each `reserve` took inside failoverd (the gate's own time
/// per request, without the transport and the signature that both sides share).
struct Timed {
    gate: CoordinatorGate,
    spent: std::sync::Mutex<Vec<f64>>,
}

impl SignGate for Timed {
    fn reserve(&self, hrs: Hrs) -> Result<(), GateRefusal> {
        let started = Instant::now();
        let result = self.gate.reserve(hrs);
        let took = ms(started.elapsed());
        self.spent.lock().unwrap_or_else(|e| e.into_inner()).push(took);
        result
    }
    fn may_sign(&self) -> bool {
        self.gate.may_sign()
    }
}

fn key() -> ValidatorKey {
    ValidatorKey::parse(ValidatorKey::file_for_seed([3u8; 32]).as_bytes()).expect("key")
}

/// The node's end of one signer connection.
struct Node {
    conn: SecretConnection<TcpStream>,
    received: Vec<u8>,
}

impl Node {
    /// Listens, lets `signer` dial in as a member does, and serves it on a thread of its own.
    fn connect<G: SignGate + 'static>(signer: Arc<PrivvalSigner<G>>) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").expect("node listens");
        let address: NodeAddress = format!("tcp://{}", listener.local_addr().expect("addr")).parse().expect("address");
        let accepting = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("signer dials");
            let _ = stream.set_nodelay(true);
            SecretConnection::new(stream, ed25519_consensus::SigningKey::from([4u8; 32]), Version::V0_34)
                .expect("handshake")
        });
        let (conn, _closer) =
            NodeConnection::dial(&address, &ed25519_consensus::SigningKey::from([5u8; 32]), Duration::from_secs(5))
                .expect("dial");
        std::thread::spawn(move || conn.serve(&signer));
        Node { conn: accepting.join().expect("node"), received: Vec::new() }
    }

    /// Sends `request` and waits for its answer: the round trip and the answer.
    fn ask(&mut self, request: &Message) -> (Duration, Message) {
        let bytes = request.encode_length_delimited_to_vec();
        let started = Instant::now();
        self.conn.write_all(&bytes).expect("send");
        self.conn.flush().expect("flush");
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(answer) = self.complete_answer() {
                return (started.elapsed(), answer);
            }
            let n = self.conn.read(&mut chunk).expect("answer");
            assert!(n > 0, "the signer closed the connection");
            self.received.extend_from_slice(&chunk[..n]);
        }
    }

    /// One whole length-delimited answer from what was received, if it is all there.
    fn complete_answer(&mut self) -> Option<Message> {
        let len = prost::encoding::decode_length_delimiter(self.received.as_slice()).ok()?;
        let total = prost::encoding::length_delimiter_len(len) + len;
        if self.received.len() < total {
            return None;
        }
        let answer = Message::decode_length_delimited(&self.received[..total]).expect("a privval answer");
        self.received.drain(..total);
        Some(answer)
    }
}

fn block_id() -> BlockId {
    BlockId { hash: vec![1; 32], part_set_header: Some(PartSetHeader { total: 1, hash: vec![1; 32] }) }
}

/// The request a node sends for `step` at `height`, round 0.
fn request(height: u64, step: Step) -> Message {
    let timestamp = Some(Timestamp { seconds: 1_700_000_000, nanos: 0 });
    let sum = match step {
        Step::Propose => Sum::SignProposalRequest(SignProposalRequest {
            proposal: Some(Proposal {
                r#type: 32,
                height: height as i64,
                round: 0,
                pol_round: -1,
                block_id: Some(block_id()),
                timestamp,
                signature: vec![],
            }),
            chain_id: CHAIN.into(),
        }),
        vote => Sum::SignVoteRequest(SignVoteRequest {
            vote: Some(Vote {
                r#type: if vote == Step::Prevote { 1 } else { 2 },
                height: height as i64,
                round: 0,
                block_id: Some(block_id()),
                timestamp,
                validator_address: vec![0; 20],
                ..Vote::default()
            }),
            chain_id: CHAIN.into(),
        }),
    };
    Message { sum: Some(sum) }
}

/// Why `answer` refused to sign, or `None` when it carries a signature; panics on any other
/// answer.
fn refusal(answer: &Message, side: &str, height: u64, step: Step) -> Option<String> {
    let refused = match &answer.sum {
        Some(Sum::SignedVoteResponse(r)) => r.error.as_ref(),
        Some(Sum::SignedProposalResponse(r)) => r.error.as_ref(),
        _ => panic!("{side}: not a signing answer at height {height} {step}"),
    };
    refused.map(|e| e.description.clone())
}

/// Panics unless `answer` carries a signature.
fn assert_signed(answer: &Message, side: &str, height: u64, step: Step) {
    if let Some(why) = refusal(answer, side, height, step) {
        panic!("{side} refused height {height} {step}: {why}");
    }
}

/// How often a warm-up request refused is asked again, as a node asks again at its next step.
const WARMUP_RETRIES: usize = 5;

/// The sides, in the order of [`paired_run`]'s samples.
const NAMES: [&str; 4] = ["failoverd", "plain", "plain (second)", "plain, not persisted"];

/// What the node saw of failoverd's window while it asked.
#[derive(Default)]
struct WindowSeen {
    /// Measured requests asked above the window the store had confirmed when they were sent:
    /// each of them waited for a reservation (or, a step later, for the same one).
    above: usize,
    /// For each measured height, how many heights the confirmed window reached beyond it when
    /// its proposal was asked.
    lead: Vec<u64>,
    /// Why each warm-up request that was refused was refused (it was then asked again).
    warmup_refusals: Vec<String>,
}

/// Round trips of the four sides, request by request (in [`NAMES`]' order), heights `block`
/// apart as a node asks them, and what the node saw of failoverd's window.
fn paired_run(
    nodes: &mut [Node; 4],
    failoverd: &PrivvalSigner<Timed>,
    first: u64,
    heights: u64,
    block: Duration,
) -> ([Vec<f64>; 4], WindowSeen) {
    let mut samples: [Vec<f64>; 4] = Default::default();
    let mut seen = WindowSeen::default();
    let start = Instant::now();
    for (i, height) in (first..first + WARMUP_HEIGHTS + heights).enumerate() {
        // The next height comes one block interval after the previous one began.
        if let Some(wait) = (start + block * i as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let measured = height >= first + WARMUP_HEIGHTS;
        for step in [Step::Propose, Step::Prevote, Step::Precommit] {
            let message = request(height, step);
            let window = failoverd.gate().gate.reserved_through();
            if measured {
                if window.is_none_or(|top| top < height) {
                    seen.above += 1;
                }
                if step == Step::Propose {
                    seen.lead.push(window.map_or(0, |top| top.saturating_sub(height)));
                }
            }
            // The order rotates by height, so no side is always first after a pause.
            for k in 0..4 {
                let side = (k + height as usize) % 4;
                let (mut rtt, mut answer) = nodes[side].ask(&message);
                // Warming up, a refusal is counted and the request asked again: the first
                // window's reservation waits for the store, which may take longer than
                // call_timeout over a slow link. Measured requests must all be signed.
                for _ in 0..WARMUP_RETRIES {
                    match refusal(&answer, NAMES[side], height, step) {
                        Some(why) if !measured && side == 0 => seen.warmup_refusals.push(why),
                        _ => break,
                    }
                    (rtt, answer) = nodes[side].ask(&message);
                }
                assert_signed(&answer, NAMES[side], height, step);
                if measured {
                    samples[side].push(ms(rtt));
                }
            }
        }
    }
    (samples, seen)
}

fn differences(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// Where the time goes: bare reservations proposed by the raft leader and by a follower.
fn breakdown(rt: &tokio::runtime::Runtime, c: &BenchCluster, key: &KeyId, count: usize, mut next: u64) {
    let epoch = rt.block_on(c.node(0).lease(within(Duration::from_secs(2)))).expect("lease").epoch();
    let leader = rt.block_on(c.leader(Duration::from_secs(10)));
    for (name, i) in [("bare reserve() by the raft leader", leader), ("bare reserve() by a follower", (leader + 1) % 3)]
    {
        let samples = rt.block_on(async {
            let mut samples = Vec::new();
            for _ in 0..count {
                next += 1;
                let started = Instant::now();
                let done =
                    c.node(i).reserve(epoch, key, Hrs::new(next, 0, Step::Prevote), within(Duration::from_secs(2)));
                if done.await.is_ok() {
                    samples.push(ms(started.elapsed()));
                }
            }
            samples
        });
        if !samples.is_empty() {
            println!("{}", line(name, &summarize(&samples)));
        }
    }
}

/// A signer that records every signature in a state file of its own under `dir`.
fn persisted<G: SignGate>(signer: PrivvalSigner<G>, dir: &tempfile::TempDir, name: &str) -> PrivvalSigner<G> {
    signer.persisted(&dir.path().join(name)).expect("a new sign-state file")
}

/// Starts member "a" holding the lease with the watermark at height 1, renewing it in the
/// background as its daemon does; failoverd's signer over it, its state file in `dir`.
fn holder(
    rt: &tokio::runtime::Runtime,
    c: &BenchCluster,
    key_id: &KeyId,
    dir: &tempfile::TempDir,
) -> Arc<PrivvalSigner<Timed>> {
    let timings = c.coordinator().clone();
    let a = MemberId::new("a").expect("id");
    let lease = rt.block_on(async {
        // An acquire sent before raft has a leader waits for the election, and its lease counts
        // from when it was sent: acquire once a leader is agreed, and renew before permitting.
        c.leader(Duration::from_secs(20)).await;
        let lease = loop {
            match c.node(0).acquire(&a, within(Duration::from_secs(2))).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(timings.raft.tick).await,
            }
        };
        c.node(0)
            .import_watermarks(&[(key_id.clone(), Hrs::new(1, 0, Step::Propose))], within(Duration::from_secs(5)))
            .await
            .expect("import the watermark");
        c.node(0).renew(&lease, within(timings.call_timeout)).await.expect("the first renew")
    });
    let coord: Arc<dyn Coordinator> = c.node(0).clone();
    let gate = CoordinatorGate::new(coord, key_id.clone(), rt.handle().clone(), timings.call_timeout);
    gate.permit(Permission { epoch: lease.epoch, floor: Hrs::ZERO, until: lease.valid_until });
    let gate = Timed { gate, spent: std::sync::Mutex::new(Vec::new()) };
    let failoverd = Arc::new(persisted(PrivvalSigner::new(CHAIN, key(), gate), dir, "failoverd"));
    // The holder renews every renew_interval and moves the gate's deadline, as its daemon does.
    let (member, signer) = (c.node(0).clone(), Arc::clone(&failoverd));
    rt.spawn(async move {
        let mut lease = lease;
        let started = std::time::Instant::now();
        let mut sent = tokio::time::Instant::now();
        loop {
            // A renew interval after the last one was sent, not after it was answered, as the
            // daemon paces them: at 100 ms RTT an answer takes most of an interval. One that
            // took longer than an interval is followed at once, not by a burst to catch up.
            sent = (sent + timings.renew_interval).max(tokio::time::Instant::now());
            tokio::time::sleep_until(sent).await;
            match member.renew(&lease, within(timings.call_timeout)).await {
                Ok(l) => {
                    signer.gate().gate.extend(l.valid_until);
                    lease = l;
                }
                Err(e) => eprintln!("the holder's renew failed {} ms into the run: {e}", started.elapsed().as_millis()),
            }
        }
    });
    failoverd
}

/// What the node saw of failoverd's window: how often a request found it short.
fn report_window(seen: &WindowSeen, requests: usize) {
    let mut lead = seen.lead.clone();
    lead.sort_unstable();
    let at = |p: f64| lead.get(((p * lead.len() as f64).ceil() as usize).clamp(1, lead.len().max(1)) - 1);
    println!(
        "  failoverd's window: {} of {requests} requests were asked above the confirmed window (each waited for a \
         reservation); heights confirmed beyond a height at its proposal: min {}, p50 {}, max {}",
        seen.above,
        lead.first().unwrap_or(&0),
        at(0.5).unwrap_or(&0),
        lead.last().unwrap_or(&0)
    );
    if let Some(first) = seen.warmup_refusals.first() {
        println!(
            "  warm-up: failoverd refused {} requests, each then asked again (none measured); the first: {first}",
            seen.warmup_refusals.len()
        );
    }
}

fn main() {
    if !common::benchmarking("signer") {
        return;
    }
    let heights = common::env_number("FAILOVERD_BENCH_HEIGHTS", 900).max(2);
    let block = Duration::from_millis(common::env_number("FAILOVERD_BENCH_BLOCK_MS", 100));
    let links = Links::from_env();
    // One runtime shaped like the daemon's (2 workers) carries the three members.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let c = rt.block_on(BenchCluster::start(Timing::SignerDefaults, links));
    let timings = c.coordinator().clone();
    println!(
        "signer-mode benchmark: 3-member raft on 127.0.0.1 ({}, mutual TLS, fsync, signer mode's default timings: \
         lease_ttl {} ms, renew {} ms (refreshes outside the log), tick {} ms), SecretConnection signers persisting every signature (fsync), blocks {} ms apart, \
         {} cores",
        links.describe(),
        timings.lease_ttl.as_millis(),
        timings.renew_interval.as_millis(),
        timings.raft.tick.as_millis(),
        block.as_millis(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("{} at the start", common::machine_load());
    let key_id = KeyId::new("validator").expect("key");
    let state = tempfile::tempdir().expect("a directory for the sign-state files");
    let failoverd = holder(&rt, &c, &key_id, &state);
    let mut nodes = [
        Node::connect(Arc::clone(&failoverd)),
        Node::connect(Arc::new(persisted(PrivvalSigner::new(CHAIN, key(), AlwaysAllow), &state, "plain"))),
        Node::connect(Arc::new(persisted(PrivvalSigner::new(CHAIN, key(), AlwaysAllow), &state, "plain2"))),
        Node::connect(Arc::new(PrivvalSigner::new(CHAIN, key(), AlwaysAllow))),
    ];
    let ([fo, plain, plain2, bare], seen) = paired_run(&mut nodes, &failoverd, 2, heights, block);
    // Read after the run: a holder hands raft leadership to a peer soon after its acquire.
    let leader = rt.block_on(c.leader(Duration::from_secs(10)));
    let (sf, sp) = (summarize(&fo), summarize(&plain));
    let role = if leader == 0 { "the raft leader" } else { "a raft follower" };
    println!(
        "{heights} heights x (proposal, prevote, precommit) {} ms apart, after {WARMUP_HEIGHTS} heights of warm-up; \
         the holder \"a\" is {role}",
        block.as_millis()
    );
    println!("{}", line("round trip, plain signer (no HA, persisted)", &sp));
    println!("{}", line("round trip, failoverd signer (persisted)", &sf));
    let added = differences(&fo, &plain);
    println!("{}", line("ADDED per request, paired (failoverd - plain)", &summarize(&added)));
    println!("  target (issue 21): p99 of the added time <= 0.3 ms");
    println!("  added     {}", halves(&added));
    for (k, step) in ["proposal", "prevote", "precommit"].iter().enumerate() {
        let of_step: Vec<f64> = added.iter().skip(k).step_by(3).copied().collect();
        println!("{}", line(&format!("  added, {step}s only"), &summarize(&of_step)));
    }
    report_window(&seen, fo.len());
    let spent = failoverd.gate().spent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let measured = &spent[spent.len().saturating_sub(fo.len())..];
    println!("{}", line("  failoverd's gate alone, inside failoverd (reserve() per request)", &summarize(measured)));
    println!("{}", line("noise: A/A paired difference (plain - plain)", &summarize(&differences(&plain2, &plain))));
    println!("  plain     {}", halves(&plain));
    println!("  failoverd {}", halves(&fo));
    println!(
        "{}",
        line("fsync of the state file: plain persisted - plain not persisted", &summarize(&differences(&plain, &bare)))
    );
    println!("{}", line("round trip, plain signer not persisted", &summarize(&bare)));
    println!(
        "  for comparison, the old figure p99(failoverd) - p99(plain) = {:.3} ms: a difference of two tails, not the \
         p99 of the added time",
        sf.p99 - sp.p99
    );
    drop(nodes);
    let bare_reserves = if links == Links::Direct { 1000 } else { 100 };
    breakdown(&rt, &c, &key_id, bare_reserves, 10_000_000);
    println!("{} at the end", common::machine_load());
}
