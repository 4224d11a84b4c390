//! The chain adapters over real sockets. No CometBFT node or nodeos can run here, so the
//! CometBFT and Antelope sides are fakes (`FakeCometbft`, `FakeNodeos`): HTTP servers that answer
//! with the bodies recorded in the adapters' unit tests. What is tested is the adapters' HTTP
//! behaviour: every call bounded by its deadline and size cap, hostile answers turned into
//! errors, the missed-signature window read incrementally, pause/resume confirmed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use failover::chain::antelope::AntelopeProbe;
use failover::chain::cometbft::{CometbftChecks, CometbftProbe};
use failover::chain::ethereum::EthereumProbe;
use failover::chain::{ChainProbe, ProbeError};
use failover::config::HttpUrl;
use failover::domain::{Epoch, Hrs, MonoTime};
use failover::producer::antelope::AntelopeProducer;
use failover::producer::{Grant, Producer, SignFloor};
use serde_json::{Value, json};
use tokio::time::Instant;

const OURS: &str = "8C1E2C1A0B5E4D3F2A1B0C9D8E7F6A5B4C3D2E1F";

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

async fn serve(app: Router) -> HttpUrl {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/").parse().expect("url")
}

/// A fake CometBFT RPC: `/status` at a settable height, `/net_info`, and `/commit` in which our
/// validator signed only the heights in `signed`. Counts the commits asked for.
#[derive(Clone, Default)]
struct FakeCometbft {
    height: Arc<AtomicUsize>,
    signed: Arc<Mutex<Vec<u64>>>,
    commits_read: Arc<AtomicUsize>,
}

impl FakeCometbft {
    async fn start(self) -> HttpUrl {
        let app = Router::new()
            .route("/status", get(|State(f): State<FakeCometbft>| async move {
                let h = f.height.load(Ordering::SeqCst);
                axum::Json(json!({"jsonrpc":"2.0","id":-1,"result":{"sync_info":{"latest_block_height":h.to_string(),"latest_block_time":"2026-11-21T13:48:16.123456789Z","catching_up":false}}}))
            }))
            .route("/net_info", get(|| async {
                axum::Json(json!({"jsonrpc":"2.0","id":-1,"result":{"listening":true,"listeners":[],"n_peers":"4","peers":[]}}))
            }))
            .route("/commit", get(|State(f): State<FakeCometbft>, Query(q): Query<BTreeMap<String, String>>| async move {
                f.commits_read.fetch_add(1, Ordering::SeqCst);
                let h: u64 = q.get("height").and_then(|h| h.parse().ok()).unwrap_or(0);
                let ours = f.signed.lock().expect("signed").contains(&h);
                let mut signatures = vec![json!({"block_id_flag":2,"validator_address":"AA11","timestamp":"2026-11-21T13:48:16Z","signature":"c2ln"})];
                signatures.push(if ours {
                    json!({"block_id_flag":2,"validator_address":OURS,"timestamp":"2026-11-21T13:48:16Z","signature":"c2ln"})
                } else {
                    json!({"block_id_flag":1,"validator_address":"","timestamp":"0001-01-01T00:00:00Z","signature":null})
                });
                axum::Json(json!({"jsonrpc":"2.0","id":-1,"result":{"signed_header":{"header":{"height":h.to_string()},"commit":{"height":h.to_string(),"round":0,"block_id":{"hash":"AB"},"signatures":signatures}},"canonical":true}}))
            }))
            .with_state(self);
        serve(app).await
    }
}

#[tokio::test]
async fn cometbft_probe_reads_status_peers_and_the_signing_window_incrementally() {
    let fake = FakeCometbft::default();
    fake.height.store(101, Ordering::SeqCst);
    let url = fake.clone().start().await;
    let checks = CometbftChecks { peers: true, signing: Some((OURS.to_string(), 20)) };
    let probe = CometbftProbe::new("local", &url, Duration::from_secs(2), checks).expect("probe");

    // Not signed anywhere in the window: "not signing", once the whole window has been read
    // (at most 16 commits a probe).
    let first = probe.probe(soon()).await.expect("probe");
    assert_eq!((first.height, first.peers, first.signing), (101, Some(4), None), "window not read yet");
    let second = probe.probe(soon()).await.expect("probe");
    assert_eq!(second.signing, Some(false));
    assert_eq!(fake.commits_read.load(Ordering::SeqCst), 20, "each commit read once");

    // One new block, signed by us: one more commit read, and signing again.
    fake.signed.lock().expect("signed").push(101);
    fake.height.store(102, Ordering::SeqCst);
    assert_eq!(probe.probe(soon()).await.expect("probe").signing, Some(true));
    assert_eq!(fake.commits_read.load(Ordering::SeqCst), 21);
}

/// A fake nodeos producer API: paused flag, pause, resume; `broken_pause` answers ok to pause
/// but keeps producing.
#[derive(Clone)]
struct FakeNodeos {
    paused: Arc<AtomicBool>,
    broken_pause: Arc<AtomicBool>,
}

impl FakeNodeos {
    async fn start(self) -> HttpUrl {
        let app = Router::new()
            .route("/v1/chain/get_info", post(|| async {
                axum::Json(json!({"server_version":"7e4e5d0a","head_block_num":378123456,"last_irreversible_block_num":378123120,"head_block_time":"2026-11-21T13:48:16.500","head_block_producer":"eosnationftw"}))
            }))
            .route("/v1/producer/paused", post(|State(f): State<FakeNodeos>| async move { axum::Json(Value::Bool(f.paused.load(Ordering::SeqCst))) }))
            .route("/v1/producer/pause", post(|State(f): State<FakeNodeos>| async move {
                if !f.broken_pause.load(Ordering::SeqCst) {
                    f.paused.store(true, Ordering::SeqCst);
                }
                axum::Json(json!({"result":"ok"}))
            }))
            .route("/v1/producer/resume", post(|State(f): State<FakeNodeos>| async move {
                f.paused.store(false, Ordering::SeqCst);
                axum::Json(json!({"result":"ok"}))
            }))
            .with_state(self);
        serve(app).await
    }
}

/// A grant from the bottom of the chain: the API-switched producers read none of it.
fn grant() -> Grant {
    Grant { epoch: Epoch::new(1), floor: SignFloor(Hrs::ZERO), until: MonoTime::now() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn antelope_producer_resumes_pauses_and_fences_with_confirmation() {
    let fake = FakeNodeos { paused: Arc::new(AtomicBool::new(true)), broken_pause: Arc::new(AtomicBool::new(false)) };
    let url = fake.clone().start().await;
    let probe = AntelopeProbe::new("local", &url, Duration::from_secs(2), true).expect("probe");
    let s = probe.probe(soon()).await.expect("probe");
    assert_eq!((s.height, s.producing), (378_123_456, Some(false)));

    let producer = Arc::new(AntelopeProducer::new(&url, Duration::from_secs(2), None).expect("producer"));
    producer.activate(grant(), soon()).await.expect("resumes");
    assert!(!fake.paused.load(Ordering::SeqCst));
    assert_eq!(probe.probe(soon()).await.expect("probe").producing, Some(true));
    producer.deactivate(soon()).await.expect("pauses");
    assert!(fake.paused.load(Ordering::SeqCst));

    producer.activate(grant(), soon()).await.expect("resumes");
    let fencer = Arc::clone(&producer);
    tokio::task::spawn_blocking(move || fencer.fence(Duration::from_secs(2))).await.expect("thread").expect("fenced");
    assert!(fake.paused.load(Ordering::SeqCst), "the fence paused the node over a blocking socket");

    // A node that says ok but keeps producing is not deactivated, and not fenced.
    producer.activate(grant(), soon()).await.expect("resumes");
    fake.broken_pause.store(true, Ordering::SeqCst);
    let err = producer.deactivate(soon()).await.expect_err("unconfirmed");
    assert!(err.to_string().contains("still says"), "{err}");
    let fencer = Arc::clone(&producer);
    let err = tokio::task::spawn_blocking(move || fencer.fence(Duration::from_secs(2))).await.expect("thread");
    assert!(err.expect_err("unconfirmed").to_string().contains("no producer.fence_command"));
}

/// A raw TCP server that answers every connection with `response` (after `delay`).
fn hostile(response: Vec<u8>, delay: Duration) -> HttpUrl {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let response = response.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                std::thread::sleep(delay);
                let _ = stream.write_all(&response);
            });
        }
    });
    format!("http://{addr}/").parse().expect("url")
}

fn http(body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut r =
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra_headers}Connection: close\r\n\r\n")
            .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Which probe errors a hostile answer may produce.
type ErrorKind = fn(&ProbeError) -> bool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_become_probe_errors_within_the_deadline() {
    let huge = http(&vec![b' '; 2 * 1024 * 1024], "");
    let cases: Vec<(&str, Vec<u8>, Duration, ErrorKind)> = vec![
        ("a 2 MiB body", huge, Duration::ZERO, |e| matches!(e, ProbeError::TooLarge { .. })),
        ("no answer", Vec::new(), Duration::from_secs(30), |e| matches!(e, ProbeError::Timeout { .. })),
        ("a truncated body", http(b"{\"result\":{\"sync_in", "Content-Length: 400\r\n"), Duration::ZERO, |e| {
            matches!(e, ProbeError::Unreachable { .. } | ProbeError::Malformed { .. })
        }),
        ("binary garbage", http(&[0xff, 0x00, 0xfe, 0x07], ""), Duration::ZERO, |e| {
            matches!(e, ProbeError::Malformed { .. })
        }),
        (
            "an HTTP 500",
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nboom".to_vec(),
            Duration::ZERO,
            |e| matches!(e, ProbeError::NodeError { .. }),
        ),
        ("not HTTP at all", b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(), Duration::ZERO, |e| {
            matches!(e, ProbeError::Unreachable { .. })
        }),
    ];
    for (what, response, delay, expected) in cases {
        let url = hostile(response, delay);
        let probes: Vec<Box<dyn ChainProbe>> = vec![
            Box::new(
                CometbftProbe::new("local", &url, Duration::from_secs(60), CometbftChecks::default()).expect("probe"),
            ),
            Box::new(EthereumProbe::new("local", &url, Duration::from_secs(60)).expect("probe")),
            Box::new(AntelopeProbe::new("local", &url, Duration::from_secs(60), false).expect("probe")),
        ];
        for probe in probes {
            let started = Instant::now();
            let err = probe.probe(Instant::now() + Duration::from_millis(500)).await.expect_err(what);
            assert!(expected(&err), "{what}: unexpected {err:?}");
            assert!(started.elapsed() < Duration::from_secs(3), "{what}: the deadline was not kept");
            assert!(err.to_string().starts_with("local: "), "{what}: {err}");
        }
    }
}
