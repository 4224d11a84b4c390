//! What running members tell the outside world: `/metrics` (checked by promtool), `/healthz` and
//! `/readyz`, event webhooks, and systemd's notify protocol (READY=1, WATCHDOG=1 pings that stop
//! when the decision loop is stuck).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::lab::{Lab, free_port};
use common::scrape::{self, get, sample};
use common::webhook_receiver::WebhookReceiver;
use nix::sys::signal::Signal;
use tokio::time::Instant;

const MEMBERS: [&str; 3] = ["a", "b", "c"];

fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("FAILOVERD_PROMTOOL") {
        return PathBuf::from(path);
    }
    let unpacked = common::repo().join("target/prometheus/usr/bin/promtool");
    if unpacked.is_file() {
        return unpacked;
    }
    panic!(
        "promtool is not installed: run ./scripts/test (scripts/check-prometheus unpacks Debian's prometheus package into {}) or set FAILOVERD_PROMTOOL",
        unpacked.display()
    )
}

/// Waits until member `i`'s `/metrics` satisfies `pred`; returns the exposition.
/// Exported only by members whose producer is a remote signer (`cometbft-signer`).
const SIGNER_ONLY: &[&str] = &["failoverd_signer_requests_total"];

async fn wait_metrics(lab: &Lab, i: usize, limit: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
    scrape::wait_metrics(lab.metrics_ports[i], MEMBERS[i], limit, what, pred).await
}

async fn wait_status(port: u16, path: &str, want: u16, limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        let (status, body) = get(port, path).await;
        if status == want {
            return body;
        }
        assert!(Instant::now() < end, "{path} answered {status} ({body}), not {want}, for {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_webhooks_follow_a_planned_failover_and_a_lost_quorum() {
    let receiver = WebhookReceiver::start(0).await;
    let hooks = format!("[[webhooks]]\nurl = \"{}\"\nattempts = 3\n", receiver.url());
    let mut lab = Lab::start(&hooks, &[]).await;
    let active = lab.wait_active(Duration::from_secs(20)).await;
    let standby = 1 - active;
    let active_series = format!("failoverd_lease_holder{{holder=\"{}\"}}", MEMBERS[active]);
    // The watermark shows once the active checkpointed its first signed height.
    let text = wait_metrics(&lab, active, Duration::from_secs(10), "active with its lease and watermark shown", |t| {
        sample(t, "failoverd_active") == Some(1.0)
            && sample(t, &active_series) == Some(1.0)
            && sample(t, "failoverd_watermark_height{key=\"validator\"}").is_some_and(|h| h > 0.0)
    })
    .await;
    assert_eq!(sample(&text, "failoverd_role{role=\"active\"}"), Some(1.0));
    assert_eq!(sample(&text, "failoverd_role{role=\"standby\"}"), Some(0.0));
    assert!(sample(&text, "failoverd_lease_remaining_seconds").is_some_and(|s| s > 0.0), "{text}");
    assert!(sample(&text, "failoverd_raft_term").is_some_and(|t| t >= 1.0), "{text}");
    assert!(sample(&text, "failoverd_probe_total{source=\"local\",result=\"ok\"}").is_some_and(|n| n >= 1.0));
    assert!(text.contains("failoverd_store_call_duration_seconds_bucket{"), "{text}");

    // promtool lints the live exposition: any finding is a failure.
    let mut lint = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    {
        use std::io::Write;
        lint.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write exposition");
    }
    let lint = lint.wait_with_output().expect("promtool finishes");
    let findings = format!("{}{}", String::from_utf8_lossy(&lint.stdout), String::from_utf8_lossy(&lint.stderr));
    assert!(lint.status.success() && findings.trim().is_empty(), "promtool check metrics: {findings}");

    // Every metric the alert rules and the dashboard use is one the daemon exports (this lab's
    // producers are not remote signers; tests/signer_mode.rs reads the signer's metric).
    for file in ["deploy/prometheus/failoverd-alerts.yml", "deploy/grafana/failoverd-dashboard.json"] {
        let used = std::fs::read_to_string(common::repo().join(file)).expect("monitoring file");
        let names: std::collections::BTreeSet<&str> = used
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("failoverd_"))
            .collect();
        assert!(names.len() >= 5, "{file} uses only {names:?}");
        for name in names.into_iter().filter(|n| !SIGNER_ONLY.contains(n)) {
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            let exported =
                text.contains(&format!("# TYPE {name} ")) || text.contains(&format!("# TYPE {family} histogram"));
            assert!(exported, "{file} uses {name}, which the daemon does not export");
        }
    }

    let standby_text = wait_metrics(&lab, standby, Duration::from_secs(5), "standby", |t| {
        sample(t, "failoverd_role{role=\"standby\"}") == Some(1.0)
    })
    .await;
    assert_eq!(sample(&standby_text, "failoverd_active"), Some(0.0));
    let witness = wait_metrics(&lab, 2, Duration::from_secs(5), "witness", |t| {
        sample(t, "failoverd_role{role=\"witness\"}") == Some(1.0)
    })
    .await;
    assert!(!witness.contains("failoverd_node_healthy"), "a witness has no node:\n{witness}");
    for i in 0..3 {
        wait_status(lab.metrics_ports[i], "/healthz", 200, Duration::from_secs(5)).await;
        wait_status(lab.metrics_ports[i], "/readyz", 200, Duration::from_secs(5)).await;
    }

    // A planned switchover: counted as planned where it lands, as a transfer where it left, and
    // announced to the webhook by both.
    let o = lab.failoverctl(2, &["promote", MEMBERS[standby]]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_metrics(&lab, standby, Duration::from_secs(10), "a planned failover counted", |t| {
        sample(t, "failoverd_failovers_total{reason=\"planned\"}") == Some(1.0)
            && sample(t, "failoverd_active") == Some(1.0)
    })
    .await;
    wait_metrics(&lab, active, Duration::from_secs(5), "a step-down counted", |t| {
        sample(t, "failoverd_stepdowns_total{reason=\"transfer\"}") == Some(1.0)
            && sample(t, "failoverd_active") == Some(0.0)
    })
    .await;
    let landed = receiver
        .wait_for(Duration::from_secs(5), |b| {
            b["member"] == MEMBERS[standby]
                && b["topic"] == "failover"
                && b["message"].as_str().is_some_and(|m| m.starts_with("promoting → active"))
        })
        .await;
    assert_eq!(landed["kind"], "role");
    assert!(landed["epoch"].as_u64().is_some_and(|e| e >= 2), "{landed}");
    receiver
        .wait_for(Duration::from_secs(5), |b| {
            b["member"] == MEMBERS[active]
                && b["topic"] == "failover"
                && b["message"].as_str().is_some_and(|m| m.starts_with("active → "))
        })
        .await;
    assert!(
        receiver.bodies().iter().all(|b| b["topic"] == "failover" || b["topic"] == "fence" || b["topic"] == "refusal"),
        "only the configured topics: {:?}",
        receiver.bodies()
    );

    // The new active loses both peers: its raft node loses its leader and it is not ready; it
    // stays alive (the loop turns) and fences itself at its deadline.
    lab.kill9(active);
    lab.kill9(2);
    let why = wait_status(lab.metrics_ports[standby], "/readyz", 503, Duration::from_secs(10)).await;
    assert!(why.contains("raft quorum"), "{why}");
    wait_status(lab.metrics_ports[standby], "/healthz", 200, Duration::from_secs(1)).await;
    wait_metrics(&lab, standby, Duration::from_secs(10), "a fence counted", |t| {
        sample(t, "failoverd_fences_total{result=\"confirmed\"}") == Some(1.0)
            && sample(t, "failoverd_active") == Some(0.0)
    })
    .await;
}

/// One witness member on its own (it needs no node): enough for the loop to turn and notify.
fn lone_witness_config(dir: &std::path::Path) -> PathBuf {
    let mut text = format!("member = \"c\"\ndata_dir = \"{}\"\n", dir.join("data").display());
    for (i, m) in MEMBERS.iter().enumerate() {
        let kind = if i == 2 { "witness" } else { "producer" };
        text.push_str(&format!(
            "[[members]]\nid = \"{m}\"\npeer_address = \"127.0.0.1:{}\"\nkind = \"{kind}\"\n",
            free_port()
        ));
    }
    text.push_str(&format!(
        "[coordinator.raft]\ntick = \"50ms\"\n[api]\nsocket = \"{}\"\n[metrics]\nenabled = false\n",
        dir.join("c.sock").display()
    ));
    let pki = common::pki::write_cluster(dir, &MEMBERS, &[]);
    text.push_str(&common::pki::tls_section(&pki.member("c")));
    common::write(dir, "c.toml", &text)
}

#[test]
fn systemd_gets_ready_then_watchdog_pings_that_stop_when_the_loop_is_stuck() {
    use std::sync::mpsc;
    use std::time::Instant;

    let dir = tempfile::tempdir().expect("dir");
    let config = lone_witness_config(dir.path());
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok(n) = notify.recv(&mut buf) {
            if tx.send((String::from_utf8_lossy(&buf[..n]).to_string(), Instant::now())).is_err() {
                return;
            }
        }
    });
    let mut child = common::failoverd()
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .env("FAILOVERD_TEST_HOOKS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("failoverd starts");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let next = |limit: Duration| rx.recv_timeout(limit).ok();

    let first = next(Duration::from_secs(20));
    assert_eq!(first.as_ref().map(|(m, _)| m.as_str()), Some("READY=1\nSTATUS=taking part"), "the first message");
    // WATCHDOG_USEC = 400 ms: a turning loop pings every 100 ms.
    let mut pings = Vec::new();
    while pings.len() < 5 {
        match next(Duration::from_secs(1)) {
            Some((m, at)) if m == "WATCHDOG=1" => pings.push(at),
            Some((m, _)) => panic!("unexpected notification {m:?}"),
            None => panic!("no watchdog ping for 1 s after {} pings", pings.len()),
        }
    }
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g < Duration::from_millis(300)), "pings every ~100 ms: {gaps:?}");

    // The test hook blocks every runtime worker: the loop stops, so must the pings. One sent
    // just before the signal may still arrive; none may come after that.
    nix::sys::signal::kill(pid, Signal::SIGUSR2).expect("SIGUSR2");
    let stalled = Instant::now();
    let mut late = Vec::new();
    while let Some((m, at)) = next(Duration::from_secs(2)) {
        if at.duration_since(stalled) > Duration::from_millis(200) {
            late.push(m);
        }
        if stalled.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(late.is_empty(), "notifications after the loop was stuck: {late:?}");
}
