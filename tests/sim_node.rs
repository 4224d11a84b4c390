//! The simulated chain over real sockets and files: CometBFT-style `/status`, controls, the
//! shared ledger, the S2 checker catching two active producers, and the sign-while-running
//! validator (a real `failoverd sim-node` process) with the death watch observing its end.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use failover::domain::{KeyId, MemberId, MonoTime};
use failover::sim::activation::{self, ActivationEvent, ActivationRecord};
use failover::sim::checker;
use failover::sim::death_watch::DeathWatch;
use failover::sim::ledger;
use failover::sim::node::{Control, SimNode, SimNodeConfig};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const BLOCK: Duration = Duration::from_millis(100);

struct Running {
    node: SimNode,
    base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("node task").expect("node served without error");
    }
}

async fn start(ledger: &Path, member: &str) -> Running {
    let node = SimNode::new(SimNodeConfig {
        chain_id: "sim-test".into(),
        member: MemberId::new(member).expect("valid id"),
        key: KeyId::new("validator").expect("valid key"),
        block_interval: BLOCK,
        ledger: ledger.to_path_buf(),
        activations: None,
        privval_listen: None,
    })
    .expect("node opens its ledger");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("bound address"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(node.clone().serve(listener, None, shutdown.clone()));
    Running { node, base, shutdown, task }
}

fn client() -> reqwest::Client {
    failover::http::client(Duration::from_secs(2)).expect("http client")
}

async fn get_json(url: &str) -> Value {
    client().get(url).send().await.expect("GET answers").json().await.expect("JSON body")
}

async fn post_json(url: &str, body: Value) -> reqwest::Response {
    client().post(url).json(&body).send().await.expect("POST answers")
}

fn reported_height(status: &Value) -> u64 {
    status["result"]["sync_info"]["latest_block_height"]
        .as_str()
        .expect("latest_block_height is a string, as CometBFT sends it")
        .parse()
        .expect("height is a decimal number")
}

/// Waits until the simulated chain has made `height` (a known instant on the shared clock).
async fn until_chain_height(node: &SimNode, height: u64) {
    let at = node.chain().time_of(height);
    let wait = at.saturating_since(MonoTime::now());
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
}

#[tokio::test]
async fn status_has_cometbft_field_names_and_types() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = start(&dir.path().join("ledger.jsonl"), "a").await;
    let before = n.node.height_at(MonoTime::now());
    let status = get_json(&format!("{}/status", n.base)).await;
    let after = n.node.height_at(MonoTime::now());
    let height = reported_height(&status);
    assert!((before..=after).contains(&height), "{before} <= {height} <= {after}");
    let sync = &status["result"]["sync_info"];
    assert_eq!(sync["catching_up"], Value::Bool(false));
    let time = sync["latest_block_time"].as_str().expect("latest_block_time is a string");
    assert_eq!(time.len(), "2026-11-21T13:48:16.000000000Z".len(), "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    assert_eq!(status["result"]["node_info"]["network"], "sim-test");
    n.stop().await;
}

#[tokio::test]
async fn height_advances_once_per_block_interval() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = start(&dir.path().join("ledger.jsonl"), "a").await;
    let h1 = reported_height(&get_json(&format!("{}/status", n.base)).await);
    until_chain_height(&n.node, h1 + 3).await;
    let h2 = reported_height(&get_json(&format!("{}/status", n.base)).await);
    assert!(h2 >= h1 + 3, "height went from {h1} to {h2} over three block intervals");
    n.stop().await;
}

#[tokio::test]
async fn stalled_node_freezes_and_lagging_node_reports_fewer_blocks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = start(&dir.path().join("ledger.jsonl"), "a").await;
    let r: Value = post_json(&format!("{}/sim/control", n.base), serde_json::json!({"stall": true}))
        .await
        .json()
        .await
        .expect("json");
    let frozen = r["height"].as_u64().expect("height in state report");
    until_chain_height(&n.node, frozen + 3).await;
    assert_eq!(reported_height(&get_json(&format!("{}/status", n.base)).await), frozen);

    post_json(&format!("{}/sim/control", n.base), serde_json::json!({"stall": false, "behind": 5})).await;
    let chain_before = n.node.chain().height_at(MonoTime::now());
    let h = reported_height(&get_json(&format!("{}/status", n.base)).await);
    let chain_after = n.node.chain().height_at(MonoTime::now());
    assert!((chain_before - 5..=chain_after - 5).contains(&h), "chain {chain_before}..{chain_after}, node {h}");

    post_json(&format!("{}/sim/control", n.base), serde_json::json!({"catching_up": true})).await;
    assert_eq!(get_json(&format!("{}/status", n.base)).await["result"]["sync_info"]["catching_up"], Value::Bool(true));
    n.stop().await;
}

#[tokio::test]
async fn malformed_control_is_refused_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = start(&dir.path().join("ledger.jsonl"), "a").await;
    let r = client()
        .post(format!("{}/sim/control", n.base))
        .header("content-type", "application/json")
        .body("{\"stall\": \"yes\"}")
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let text = r.text().await.expect("body");
    assert!(text.contains("stall"), "the error names the field: {text}");
    let r = post_json(&format!("{}/sim/produce", n.base), serde_json::json!({"active": true, "bogus": 1})).await;
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(!n.node.state().producing, "a refused request changed nothing");
    reported_height(&get_json(&format!("{}/status", n.base)).await);
    n.stop().await;
}

#[tokio::test]
async fn active_node_signs_every_height_once_into_the_ledger() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledger.jsonl");
    let n = start(&path, "a").await;
    let r: Value = post_json(&format!("{}/sim/produce", n.base), serde_json::json!({"active": true}))
        .await
        .json()
        .await
        .expect("json");
    let start_height = r["height"].as_u64().expect("height");
    until_chain_height(&n.node, start_height + 6).await;
    post_json(&format!("{}/sim/produce", n.base), serde_json::json!({"active": false})).await;
    n.stop().await;

    let records = ledger::read(&path).expect("ledger parses");
    assert!(records.len() >= 3, "signed only {} heights in six blocks", records.len());
    assert!(records.iter().all(|r| r.member.as_str() == "a" && r.key.as_str() == "validator"));
    let heights: Vec<u64> = records.iter().map(|r| r.height).collect();
    assert!(heights.windows(2).all(|w| w[1] > w[0]), "each height once, in order: {heights:?}");
    let report = checker::check(&records);
    assert!(report.is_safe(), "{report}");
}

#[tokio::test]
async fn two_active_producers_are_caught_as_double_signs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledger.jsonl");
    let a = start(&path, "a").await;
    let b = start(&path, "b").await;
    a.node.start_producing(0);
    b.node.start_producing(0);
    let h = a.node.height_at(MonoTime::now());
    until_chain_height(&a.node, h + 4).await;
    a.node.stop_producing();
    b.node.stop_producing();
    a.stop().await;
    b.stop().await;

    let report = checker::check(&ledger::read(&path).expect("ledger parses"));
    assert!(!report.double_signs.is_empty(), "two producers for four blocks: {report}");
    let d = &report.double_signs[0];
    assert_ne!(d.first.member, d.second.member);

    let out = common::run_failoverd(&["check-ledger", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "check-ledger exits 1 on a double sign");
}

#[tokio::test]
async fn handover_above_the_floor_leaves_no_double_sign() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledger.jsonl");
    let a = start(&path, "a").await;
    let b = start(&path, "b").await;
    a.node.start_producing(0);
    let h = a.node.height_at(MonoTime::now());
    until_chain_height(&a.node, h + 3).await;
    let last = a.node.stop_producing().expect("a signed something");
    b.node.start_producing(last);
    until_chain_height(&b.node, h + 6).await;
    b.node.stop_producing();
    a.stop().await;
    b.stop().await;

    let records = ledger::read(&path).expect("ledger parses");
    let report = checker::check(&records);
    assert!(report.is_safe(), "{report}");
    assert!(records.iter().any(|r| r.member.as_str() == "b" && r.height > last), "b took over");
    assert!(
        records.iter().filter(|r| r.member.as_str() == "b").all(|r| r.height > last),
        "b never signed at or below a's last height"
    );
}

#[test]
fn check_ledger_reports_planted_violations_and_gaps() {
    let fixtures = common::repo().join("tests/fixtures/ledger");
    let run = |name: &str, json: bool| {
        let path = fixtures.join(name);
        let mut args = vec!["check-ledger", path.to_str().expect("utf-8")];
        if json {
            args.push("--json");
        }
        common::run_failoverd(&args)
    };

    let clean = run("clean.jsonl", false);
    assert_eq!(clean.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&clean.stdout).contains("double signs (S2 violations): 0"));

    let ds = run("double_sign.jsonl", true);
    assert_eq!(ds.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&ds.stdout).expect("--json prints JSON");
    let heights: Vec<u64> = report["double_signs"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| d["hrs"]["height"].as_u64().expect("height"))
        .collect();
    assert_eq!(heights, vec![104, 105]);

    let gaps = run("gaps.jsonl", true);
    assert_eq!(gaps.status.code(), Some(0), "gaps are missed blocks, not a safety violation");
    let report: Value = serde_json::from_slice(&gaps.stdout).expect("JSON");
    assert_eq!(
        report["gaps"],
        serde_json::json!([{"key": "validator", "from": 103, "to": 106}, {"key": "validator", "from": 110, "to": 111}])
    );

    let torn = run("torn.jsonl", false);
    assert_eq!(torn.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&torn.stderr).contains("torn.jsonl:4: not a signature record"),
        "{}",
        String::from_utf8_lossy(&torn.stderr)
    );
}

#[tokio::test]
async fn sim_node_process_serves_status_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger_path = dir.path().join("ledger.jsonl");
    let mut child = common::failoverd()
        .args(["sim-node", "--listen", "127.0.0.1:0", "--member", "a", "--block-interval", "100ms", "--ledger"])
        .arg(&ledger_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sim-node starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("reader task")
    .expect("reads the first line");
    let addr = line.trim().strip_prefix("listening ").expect("first line names the address").to_string();
    let status = get_json(&format!("http://{addr}/status")).await;
    assert!(reported_height(&status) > 0);

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal the child");
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("waiter").expect("child exits");
    assert!(status.success(), "sim-node exits cleanly on SIGTERM: {status:?}");
}

/// A `failoverd sim-node --sign-while-running` process following `sentry`, with its ledger and
/// activation log in `dir`; `home` for the cometbft-filepv shape.
struct ValidatorProcess {
    child: std::process::Child,
    base: String,
}

impl ValidatorProcess {
    async fn spawn(dir: &Path, sentry: &str, home: Option<&Path>) -> ValidatorProcess {
        let mut cmd = common::failoverd();
        cmd.args(["sim-node", "--sign-while-running", "--follow", sentry, "--member", "a", "--listen", "127.0.0.1:0"])
            .args(["--block-interval", "100ms", "--chain-id", "sim-test", "--ledger"])
            .arg(dir.join("ledger.jsonl"))
            .arg("--activations")
            .arg(dir.join("activations.jsonl"));
        if let Some(home) = home {
            cmd.arg("--home").arg(home);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("validator starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .expect("reader task")
        .expect("reads the first line");
        let addr = line.trim().strip_prefix("listening ").expect("first line names the address").to_string();
        ValidatorProcess { child, base: format!("http://{addr}") }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ValidatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signed_heights(dir: &Path) -> Vec<u64> {
    ledger::read(&dir.join("ledger.jsonl")).expect("ledger parses").iter().map(|r| r.height).collect()
}

/// Waits until the ledger in `dir` holds `n` signatures; returns their heights.
async fn wait_signatures(dir: &Path, n: usize) -> Vec<u64> {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let heights = signed_heights(dir);
        if heights.len() >= n {
            return heights;
        }
        assert!(tokio::time::Instant::now() < end, "only {} signatures within 10 s", heights.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn activations(dir: &Path) -> Vec<ActivationRecord> {
    activation::read(&dir.join("activations.jsonl")).expect("activation log parses")
}

#[tokio::test]
async fn a_validator_signs_its_sentrys_heights_from_its_start_until_its_process_is_observed_dead() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sentry = start(&dir.path().join("sentry-ledger.jsonl"), "a").await;
    let watch = DeathWatch::start(&[dir.path().join("activations.jsonl")]).expect("death watch");
    let spawned_at = sentry.node.chain().height_at(MonoTime::now());
    let mut v = ValidatorProcess::spawn(dir.path(), &sentry.base, None).await;
    let heights = wait_signatures(dir.path(), 4).await;
    assert!(heights.windows(2).all(|w| w[1] > w[0]), "each height once, in order: {heights:?}");
    assert!(heights[0] > spawned_at, "signed {} which began before the process started at {spawned_at}", heights[0]);
    let status = get_json(&format!("{}/status", v.base)).await;
    assert!(reported_height(&status) >= heights[0]);
    assert_eq!(status["result"]["validator_info"]["voting_power"], "10");
    let log = activations(dir.path());
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!((log[0].event, log[0].pid, log[0].until_mono_ns), (ActivationEvent::Activate, Some(v.pid()), None));

    let killed_at = MonoTime::now();
    v.child.kill().expect("SIGKILL");
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    let exited = loop {
        if let Some(r) = activations(dir.path()).into_iter().find(|r| r.event == ActivationEvent::Exited) {
            break r;
        }
        assert!(tokio::time::Instant::now() < end, "the death watch recorded no exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    watch.stop();
    assert_eq!(exited.pid, Some(v.pid()));
    assert!(exited.mono_ns >= killed_at.as_nanos());
    let records = ledger::read(&dir.path().join("ledger.jsonl")).expect("ledger");
    assert!(records.iter().all(|r| r.mono_ns < exited.mono_ns), "a signature after the observed death");
    let windows = activation::windows(&activations(dir.path()), MonoTime::now().as_nanos());
    assert_eq!(windows.len(), 1);
    assert_eq!((windows[0].from_ns, windows[0].to_ns), (log[0].mono_ns, exited.mono_ns));
    sentry.stop().await;
}

#[tokio::test]
async fn a_stalled_sentry_gives_its_validator_nothing_new_to_sign() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sentry = start(&dir.path().join("sentry-ledger.jsonl"), "a").await;
    let _v = ValidatorProcess::spawn(dir.path(), &sentry.base, None).await;
    wait_signatures(dir.path(), 2).await;
    sentry.node.control(&Control { stall: Some(true), ..Control::default() });
    let frozen = sentry.node.height_at(MonoTime::now());
    // One poll may still have been on its way with the last height.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = signed_heights(dir.path());
    until_chain_height(&sentry.node, frozen + 4).await;
    assert_eq!(signed_heights(dir.path()), before, "signed while its sentry stood still");
    assert!(before.iter().all(|h| *h <= frozen));
    sentry.node.control(&Control { stall: Some(false), ..Control::default() });
    let after = wait_signatures(dir.path(), before.len() + 1).await;
    assert!(after.last().is_some_and(|h| *h > frozen + 3), "{after:?}");
    sentry.stop().await;
}

#[tokio::test]
async fn a_validator_has_no_switch_and_no_deadline_and_says_so_with_409() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sentry = start(&dir.path().join("sentry-ledger.jsonl"), "a").await;
    let v = ValidatorProcess::spawn(dir.path(), &sentry.base, None).await;
    for (path, body) in [
        ("/sim/produce", serde_json::json!({"active": false})),
        ("/sim/extend", serde_json::json!({"until_mono_ns": 1})),
    ] {
        let r = post_json(&format!("{}{path}", v.base), body).await;
        assert_eq!(r.status(), reqwest::StatusCode::CONFLICT, "{path}");
        let text = r.text().await.expect("body");
        assert!(text.contains("signs while it runs"), "{path}: {text}");
    }
    let r = post_json(&format!("{}/sim/control", v.base), serde_json::json!({"stall": true})).await;
    assert_eq!(r.status(), reqwest::StatusCode::CONFLICT);
    assert!(r.text().await.expect("body").contains(&sentry.base), "names its sentry");
    // Told to stop, it signs on.
    let n = signed_heights(dir.path()).len();
    wait_signatures(dir.path(), n + 2).await;
    sentry.stop().await;
}

#[tokio::test]
async fn with_a_home_a_validator_signs_only_above_its_state_file_and_rewrites_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sentry = start(&dir.path().join("sentry-ledger.jsonl"), "a").await;
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("config")).expect("config dir");
    failover::producer::privval::validator_key::ValidatorKey::write_for_seed(
        &home.join("config/priv_validator_key.json"),
        [7; 32],
    )
    .expect("key");
    let floor = sentry.node.height_at(MonoTime::now()) + 5;
    let state = home.join("data/priv_validator_state.json");
    std::fs::create_dir_all(home.join("data")).expect("data dir");
    std::fs::write(&state, format!(r#"{{"height":"{floor}","round":0,"step":3}}"#)).expect("state");
    let _v = ValidatorProcess::spawn(dir.path(), &sentry.base, Some(&home)).await;
    let heights = wait_signatures(dir.path(), 3).await;
    assert!(heights[0] > floor, "signed {} at or below the state file's {floor}", heights[0]);
    let end = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let on_disk = failover::producer::cometbft_filepv::parse_state(&std::fs::read(&state).expect("state"))
            .expect("CometBFT format");
        let last = *signed_heights(dir.path()).last().expect("signed");
        // The state is saved before the signature reaches the ledger: never behind it.
        assert!(on_disk.height >= last, "state {} behind the ledger's {last}", on_disk.height);
        if on_disk.height == last {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "the state file never caught up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sentry.stop().await;
}

#[test]
fn a_validator_without_its_key_refuses_to_start_with_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("data")).expect("data dir");
    std::fs::write(home.join("data/priv_validator_state.json"), r#"{"height":"1","round":0,"step":3}"#).expect("state");
    let ledger_path = dir.path().join("ledger.jsonl");
    let out = common::failoverd()
        .args(["sim-node", "--sign-while-running", "--follow", "http://127.0.0.1:9", "--member", "a"])
        .args(["--listen", "127.0.0.1:0", "--home"])
        .arg(&home)
        .arg("--ledger")
        .arg(&ledger_path)
        .arg("--activations")
        .arg(dir.path().join("activations.jsonl"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config/priv_validator_key.json"), "{stderr}");
    assert!(!dir.path().join("activations.jsonl").exists(), "a node that never ran recorded an activation");
    let needs_follow = common::run_failoverd(&[
        "sim-node",
        "--sign-while-running",
        "--listen",
        "127.0.0.1:0",
        "--member",
        "a",
        "--ledger",
        "l",
    ]);
    assert_eq!(needs_follow.status.code(), Some(2), "--sign-while-running without --follow");
    assert!(String::from_utf8_lossy(&needs_follow.stderr).contains("--follow"));
}

#[tokio::test]
async fn an_api_node_has_no_deadline_and_refuses_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = start(&dir.path().join("ledger.jsonl"), "a").await;
    let r = post_json(&format!("{}/sim/extend", n.base), serde_json::json!({"until_mono_ns": 1})).await;
    assert_eq!(r.status(), reqwest::StatusCode::CONFLICT);
    assert!(r.text().await.expect("body").contains("no deadline"));
    let r =
        post_json(&format!("{}/sim/produce", n.base), serde_json::json!({"active": true, "until_mono_ns": 1})).await;
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(r.text().await.expect("body").contains("until_mono_ns"), "the refusal names the field");
    assert!(!n.node.state().producing);
    n.stop().await;
}

/// A signer-mode node whose privval port is taken stops before it announces its address (exit
/// 2, naming the flag), so that whoever started it sees a start-up error, not a node that
/// answers nothing a moment later.
#[test]
fn a_node_whose_privval_port_is_taken_refuses_to_start_before_announcing_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = taken.local_addr().expect("bound address").port();
    let out = common::failoverd()
        .args(["sim-node", "--listen", "127.0.0.1:0", "--member", "a", "--block-interval", "100ms"])
        .arg("--privval-listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--ledger")
        .arg(dir.path().join("ledger.jsonl"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "announced an address: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--privval-listen"), "{stderr}");
}
