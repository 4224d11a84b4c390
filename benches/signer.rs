//! Signer-mode benchmark: `cargo bench --bench signer`.
//!
//! The added latency per signature: a node side (tendermint-p2p SecretConnection on 127.0.0.1)
//! sends SignVoteRequests at increasing heights to the `cometbft-signer` machinery of member a of
//! a 3-member raft cluster. Measured from the node: the round trip with the reservation committed
//! through raft before each signature, and — as the baseline it adds to — the same signer with a
//! gate that reserves nothing. The difference is what failoverd costs a signature (target: at most
//! 2 ms p99, docs/design.md §9). Between the two it prints the bare reservation, proposed by the raft
//! leader and by a follower, to show where the time goes.
//!
//! Under `cargo test --all-targets` it only prints how to run it.

#[path = "../tests/common/pki.rs"]
mod pki;
#[path = "../tests/common/raft_cluster.rs"]
mod raft_cluster;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use failover::coord::Coordinator;

use failover::domain::{Hrs, KeyId, MonoTime, Step};
use failover::producer::privval::connection::{NodeAddress, NodeConnection};
use failover::producer::privval::coordinator_gate::{CoordinatorGate, Permission};
use failover::producer::privval::signer::{GateRefusal, PrivvalSigner, SignGate};
use failover::producer::privval::validator_key::ValidatorKey;
use prost::Message as _;
use raft_cluster::{SharedCluster, within};
use tendermint_p2p::secret_connection::{SecretConnection, Version};
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::privval::{Message, SignVoteRequest, message::Sum};
use tendermint_proto::v0_38::types::{BlockId, PartSetHeader, Vote};

const SIGNATURES: u64 = 2000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (p50, p99) = (ms(percentile(&samples, 0.50)), ms(percentile(&samples, 0.99)));
    println!(
        "{name:<46} n={:<5} p50={p50:>7.3} ms  p99={p99:>7.3} ms  max={:>7.3} ms",
        samples.len(),
        ms(*samples.last().expect("samples"))
    );
    (p50, p99)
}

/// The baseline: signs whatever is above the last signature, reserving nothing.
struct NoReservation;

impl SignGate for NoReservation {
    fn reserve(&self, _hrs: Hrs) -> Result<(), GateRefusal> {
        Ok(())
    }
    fn may_sign(&self) -> bool {
        true
    }
}

fn key() -> ValidatorKey {
    ValidatorKey::parse(ValidatorKey::file_for_seed([3u8; 32]).as_bytes()).expect("key")
}

/// Round trips of `SIGNATURES` prevotes at heights `first..`, from a SecretConnection node.
fn round_trips<G: SignGate + 'static>(signer: Arc<PrivvalSigner<G>>, first: u64) -> Vec<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("node listens");
    let address: NodeAddress = format!("tcp://{}", listener.local_addr().expect("addr")).parse().expect("address");
    let node = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("signer dials");
        let _ = stream.set_nodelay(true);
        SecretConnection::new(stream, ed25519_consensus::SigningKey::from([4u8; 32]), Version::V0_34)
            .expect("handshake")
    });
    let (conn, _closer) =
        NodeConnection::dial(&address, &ed25519_consensus::SigningKey::from([5u8; 32]), Duration::from_secs(5))
            .expect("dial");
    let serving = std::thread::spawn(move || conn.serve(&signer));
    let mut node = node.join().expect("node");
    let mut samples = Vec::new();
    let mut chunk = [0u8; 1024];
    for height in first..first + SIGNATURES {
        let vote = Vote {
            r#type: 1,
            height: height as i64,
            round: 0,
            block_id: Some(BlockId {
                hash: vec![1; 32],
                part_set_header: Some(PartSetHeader { total: 1, hash: vec![1; 32] }),
            }),
            timestamp: Some(Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            validator_address: vec![0; 20],
            ..Vote::default()
        };
        let request =
            Message { sum: Some(Sum::SignVoteRequest(SignVoteRequest { vote: Some(vote), chain_id: "bench".into() })) };
        let started = Instant::now();
        node.write_all(&request.encode_length_delimited_to_vec()).expect("send");
        node.flush().expect("flush");
        // Answers are far below one SecretConnection chunk: one read is one answer.
        let n = node.read(&mut chunk).expect("answer");
        samples.push(started.elapsed());
        let answer = Message::decode_length_delimited(&chunk[..n]).expect("privval answer");
        match answer.sum {
            Some(Sum::SignedVoteResponse(r)) if r.error.is_none() => {}
            other => panic!("height {height} not signed: {other:?}"),
        }
    }
    drop(node);
    let _ = serving.join();
    samples
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("signer benchmark: run it with `cargo bench --bench signer`");
        return;
    }
    // One runtime shaped like the daemon's (2 workers) carries all three members: on this
    // 2-core machine, three runtimes' worth of threads measured slower (more wake-ups).
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    println!(
        "signer-mode benchmark ({SIGNATURES} prevotes over SecretConnection on 127.0.0.1, 3-member raft with fsync, {} cores)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let baseline = round_trips(Arc::new(PrivvalSigner::new("bench", key(), NoReservation)), 1);
    let (b50, b99) = report("sign round trip, no reservation (baseline)", baseline);

    let key_id = KeyId::new("validator").expect("key");
    let SharedCluster { nodes: coords, lease, dirs: _dirs, pki_dir: _pki_dir } =
        rt.block_on(SharedCluster::start_with_holder_a(&key_id));
    let epoch = lease.epoch;
    // The holder renews, as its daemon would.
    let holder = Arc::clone(&coords[0]);
    rt.spawn(async move {
        let mut lease = lease;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Ok(l) = holder.renew(&lease, within(Duration::from_secs(1))).await {
                lease = l;
            }
        }
    });
    // Where the time goes: the bare reservation, proposed by the raft leader itself and by a
    // follower (whose proposal travels to the leader and whose answer waits for the commit to
    // come back: two more network hops).
    let raft_leader = loop {
        if let Some(l) = coords.iter().position(|c| c.info().is_leader) {
            break l;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut next = 1_000_000u64;
    for (name, i) in [
        ("bare reservation, proposed by the raft leader", raft_leader),
        ("bare reservation, proposed by a follower", (raft_leader + 1) % 3),
    ] {
        let samples = rt.block_on(async {
            let mut samples = Vec::new();
            for _ in 0..SIGNATURES / 2 {
                next += 1;
                let started = Instant::now();
                coords[i]
                    .reserve(epoch, &key_id, Hrs::new(next, 0, Step::Prevote), within(Duration::from_secs(2)))
                    .await
                    .expect("reserve");
                samples.push(started.elapsed());
            }
            samples
        });
        report(name, samples);
    }
    let coord: Arc<dyn Coordinator> = coords[0].clone();
    let gate = CoordinatorGate::new(coord, key_id, rt.handle().clone(), Duration::from_secs(2));
    gate.permit(Permission { epoch, floor: Hrs::ZERO, until: MonoTime::from_nanos(u64::MAX) });
    let reserved = round_trips(Arc::new(PrivvalSigner::new("bench", key(), gate)), next + 1);
    let (r50, r99) = report("sign round trip, reserved through raft", reserved);
    println!(
        "{:<46} p50={:>7.3} ms  p99={:>7.3} ms   (target p99 <= 2 ms)",
        "added per signature",
        r50 - b50,
        r99 - b99
    );
    drop(coords);
}
