//! failoverctl end to end against three running members (tests/common/lab.rs): every command,
//! its refusals and exit codes, judged from the daemons' answers and the signature ledger.

mod common;

use std::process::Output;
use std::time::Duration;

use common::lab::{Lab, MEMBERS};
use tokio::time::Instant;

fn ctl(lab: &Lab, i: usize, args: &[&str]) -> Output {
    lab.failoverctl(i, args)
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

/// Waits until every member has published a status the others can see.
async fn wait_for_statuses(lab: &Lab) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let m = json(&ctl(lab, 2, &["--json", "members"]));
        let all = m["members"].as_array().is_some_and(|a| a.iter().all(|r| r["role"].is_string()));
        if all {
            return;
        }
        assert!(Instant::now() < end, "not every member published a status: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failoverctl_reports_refuses_and_hands_over() {
    let lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    lab.wait_signed_above(active, 2, Duration::from_secs(5)).await;
    wait_for_statuses(&lab).await;

    // status and members, for people and as JSON.
    let o = ctl(&lab, standby, &["status"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("held by {}", MEMBERS[active])), "{out}");
    assert!(out.contains("MEMBER") && out.contains("witness"), "{out}");
    let s = json(&ctl(&lab, standby, &["--json", "status"]));
    assert_eq!(s["self"]["role"], "standby");
    assert_eq!(s["self"]["lease"]["holder"], MEMBERS[active]);
    let m = json(&ctl(&lab, active, &["--json", "members"]));
    let rows = m["members"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[active]["role"], "active");
    assert_eq!(rows[2]["kind"], "witness");

    // Refusals: a witness, an unknown member, exit 1 with the reason.
    let o = ctl(&lab, active, &["promote", "c"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("witness"), "{}", text(&o));
    let o = ctl(&lab, active, &["promote", "zz"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // A lagging standby is refused too, once the cluster sees it lag.
    lab.control(standby, serde_json::json!({"behind": 20})).await;
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let m = json(&ctl(&lab, active, &["--json", "members"]));
        if m["members"][standby]["lag"].as_u64().is_some_and(|l| l >= 20) {
            break;
        }
        assert!(Instant::now() < end, "the standby's lag never showed: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let o = ctl(&lab, active, &["promote", MEMBERS[standby]]);
    assert_eq!(o.status.code(), Some(1), "promoted a lagging standby: {}", text(&o));
    let why = String::from_utf8_lossy(&o.stderr);
    assert!(why.contains("behind") || why.contains("unhealthy"), "{}", text(&o));
    let o = ctl(&lab, active, &["demote"]);
    assert_eq!(o.status.code(), Some(1), "demoted with no standby fit to take over: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no standby can take over"), "{}", text(&o));
    lab.control(standby, serde_json::json!({"behind": 0})).await;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let m = json(&ctl(&lab, active, &["--json", "members"]));
        let row = &m["members"][standby];
        if row["lag"].as_u64().is_some_and(|l| l <= 1) && row["healthy"] == true {
            break;
        }
        assert!(Instant::now() < end, "the standby never caught up: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Pause and resume are replicated: every member reports them.
    let o = ctl(&lab, 2, &["pause"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(json(&ctl(&lab, standby, &["--json", "status"]))["self"]["lease"]["paused"], true);
    let o = ctl(&lab, 2, &["--json", "resume"]);
    assert_eq!(json(&o)["paused"], false);

    // A planned switchover through failoverctl misses no height. (Before the watermark import
    // below: a watermark raised above the chain makes the next active skip to it, by design.)
    let before = lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    let o = ctl(&lab, 2, &["promote", MEMBERS[standby]]);
    assert!(o.status.success(), "{}", text(&o));
    lab.wait_signed_above(standby, before, Duration::from_secs(10)).await;
    // The node marks a height signed before its ledger write returns: wait for the record.
    let end = Instant::now() + Duration::from_secs(5);
    let first_by_standby = loop {
        let first = lab.records().iter().filter(|r| r.member.as_str() == MEMBERS[standby]).map(|r| r.height).min();
        if let Some(h) = first {
            break h;
        }
        assert!(Instant::now() < end, "the standby's signature never reached the ledger");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let report = lab.report();
    assert!(report.is_safe(), "{report}");
    let gaps: Vec<_> = report.gaps.iter().filter(|g| g.from >= before && g.to < first_by_standby + 1).collect();
    assert!(gaps.is_empty(), "the planned switchover missed heights: {gaps:?}\n{report}");

    // Demote, run against the active, hands production back to the only other producer, the
    // same guarded way.
    let before = lab.wait_signed_above(standby, 0, Duration::from_secs(5)).await;
    let o = ctl(&lab, standby, &["--json", "demote"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(json(&o)["target"], MEMBERS[active]);
    lab.wait_signed_above(active, before, Duration::from_secs(10)).await;
    assert!(lab.report().is_safe());

    // Watermark export, then an import that would lower it is refused; one that raises it lands.
    let exported = json(&ctl(&lab, active, &["watermark", "export"]));
    let height: u64 = exported["data"][0]["height"].as_str().expect("height").parse().expect("decimal");
    // Format version 2: every integer a decimal string. A checkpoint covers every round of its
    // height: the highest round in the file, `*` for people.
    assert_eq!(exported["metadata"]["interchange_format_version"], "2", "{exported}");
    assert_eq!(exported["data"][0]["round"], "4294967295", "{exported}");
    let o = ctl(&lab, active, &["status"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().any(|l| l.starts_with("watermark") && l.contains("/*/precommit")), "{out}");
    let dir = tempfile::tempdir().expect("dir");
    let lower = dir.path().join("lower.json");
    let mut doc = exported.clone();
    doc["data"][0]["height"] = serde_json::json!("1");
    std::fs::write(&lower, doc.to_string()).expect("write");
    let o = ctl(&lab, active, &["watermark", "import", lower.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(1), "an import that lowers the watermark: {}", text(&o));
    let higher = dir.path().join("higher.json");
    doc["data"][0]["height"] = serde_json::json!((height + 5).to_string());
    std::fs::write(&higher, doc.to_string()).expect("write");
    let o = ctl(&lab, active, &["watermark", "import", higher.to_str().expect("path")]);
    assert!(o.status.success(), "{}", text(&o));
    let after = json(&ctl(&lab, standby, &["watermark", "export"]));
    let now: u64 = after["data"][0]["height"].as_str().expect("height").parse().expect("decimal");
    assert!(now >= height + 5, "the watermark was not raised: {after}");
    // Bad input names the field and exits 2 without calling the daemon.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, doc.to_string().replace("precommit", "commit")).expect("write");
    let o = ctl(&lab, active, &["watermark", "import", bad.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("data[0].step"), "{}", text(&o));
}

#[test]
fn an_unreachable_daemon_exits_3_and_bad_usage_exits_2() {
    let dir = tempfile::tempdir().expect("dir");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .arg("--socket")
        .arg(dir.path().join("none.sock"))
        .arg("status")
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is failoverd running?"), "{}", text(&o));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_failoverctl")).arg("launch").output().expect("runs");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .args(["--timeout", "soon", "status"])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--timeout"), "{}", text(&o));
}

#[test]
fn an_unreachable_socket_is_named_with_its_os_error_once() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("none.sock");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .arg("--socket")
        .arg(&socket)
        .arg("members")
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&socket.display().to_string()), "{stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "the OS error repeated: {stderr}");
}

/// `failoverctl ARGS` with its stdout a pipe whose reading end is already closed, as under
/// `| head -1` once head has read its line: every write fails with EPIPE.
fn into_a_closed_pipe(args: &[&std::ffi::OsStr]) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    std::process::Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("runs")
}

#[test]
fn completions_into_a_closed_pipe_exit_quietly() {
    let o = into_a_closed_pipe(&["completions".as_ref(), "bash".as_ref()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stderr.is_empty(), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_prints_until_interrupted_and_completions_print() {
    let lab = Lab::start("", &[]).await;
    lab.wait_active(Duration::from_secs(15)).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .arg("--socket")
        .arg(lab.socket(2))
        .args(["--json", "status", "--watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("failoverctl runs");
    let stdout = child.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().take(2).collect::<Result<Vec<_>, _>>()
    })
    .await
    .expect("reader")
    .expect("two lines");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        assert_eq!(v["self"]["member"], "c");
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT)
        .expect("signal");
    let status = child.wait().expect("exits");
    assert!(status.success(), "Ctrl-C ends --watch cleanly: {status}");

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .args(["completions", "bash"])
        .output()
        .expect("runs");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("failoverctl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_force_names_the_next_holder_when_the_active_is_gone() {
    let mut lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    lab.wait_signed_above(active, 2, Duration::from_secs(5)).await;
    wait_for_statuses(&lab).await;

    // Maintenance mode, then the active's daemon dies: nothing happens on its own.
    let o = ctl(&lab, 2, &["pause"]);
    assert!(o.status.success(), "{}", text(&o));
    lab.kill9(active);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let s = json(&ctl(&lab, 2, &["--json", "status"]));
        if s["self"]["lease"]["holder"].is_null() && s["self"]["lease"]["epoch"].is_u64() {
            break;
        }
        assert!(Instant::now() < end, "the dead active's lease never expired: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!lab.signing(standby).await, "a paused cluster took over on its own");

    // A planned promote cannot hand over from nobody, and says what to do instead.
    let o = ctl(&lab, 2, &["promote", MEMBERS[standby]]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"), "{}", text(&o));
    assert!(!lab.signing(standby).await);

    // --force names the next holder; it takes the free lease through every guard step.
    let o = ctl(&lab, 2, &["--json", "promote", "--force", MEMBERS[standby]]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(json(&o)["message"].as_str().is_some_and(|m| m.starts_with("forced")), "{}", text(&o));
    let end = Instant::now() + Duration::from_secs(10);
    while !lab.signing(standby).await {
        assert!(
            Instant::now() < end,
            "the named standby never took over: {}\n{}",
            text(&ctl(&lab, 2, &["--json", "status"])),
            [lab.log(0), lab.log(1), lab.log(2)].join("\n=====\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = lab.log(standby);
    for step in ["lease_held", "node_healthy", "fence_previous", "watermark_floor", "activate"] {
        assert!(log.contains(&format!("step={step}")) || log.contains(step), "guard step {step} not run:\n{log}");
    }
    assert!(lab.report().is_safe(), "{}", lab.report());
    assert_eq!(lab.s1_overlaps(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_show_the_history_and_follow_a_handover_as_it_happens() {
    use std::io::BufRead;
    let lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    lab.wait_signed_above(active, 2, Duration::from_secs(5)).await;
    wait_for_statuses(&lab).await;

    // The history: the active's own role changes and guard, as JSON lines.
    let o = ctl(&lab, active, &["--json", "events"]);
    assert!(o.status.success(), "{}", text(&o));
    let history: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert!(
        history.iter().any(|e| e["kind"] == "guard" && e["message"] == "every guard step passed: producing"),
        "{history:?}"
    );
    assert!(
        history.iter().any(|e| e["kind"] == "role" && e["message"].as_str().is_some_and(|m| m.contains("→ active")))
    );

    // Follow the standby while it is promoted through its own socket.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .arg("--socket")
        .arg(lab.socket(standby))
        .args(["--json", "events", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("failoverctl events --follow starts");
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str(&line).expect("a JSON line")).is_err() {
                return;
            }
        }
    });
    let o = ctl(&lab, standby, &["promote", MEMBERS[standby]]);
    assert!(o.status.success(), "{}", text(&o));
    let mut seen = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while !seen.iter().any(|e: &serde_json::Value| {
        e["kind"] == "role" && e["message"].as_str().is_some_and(|m| m.starts_with("promoting → active"))
    }) {
        let left = end.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) => seen.push(e),
            Err(_) => panic!("the follower never saw the standby become active: {seen:#?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let has = |kind: &str, part: &str| {
        seen.iter().any(|e| e["kind"] == kind && e["message"].as_str().is_some_and(|m| m.contains(part)))
    };
    assert!(has("operator", &format!("promote {} requested by uid", MEMBERS[standby])), "{seen:#?}");
    assert!(has("intent", &format!("transfer to {} requested", MEMBERS[standby])), "{seen:#?}");
    assert!(has("guard", "every guard step passed"), "{seen:#?}");
    let seqs: Vec<u64> = seen.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "events numbered without gaps: {seqs:?}");
}

/// An interchange document with `entries` (key, height, round, step), written to `dir/name`.
fn write_interchange(dir: &std::path::Path, name: &str, entries: &[(&str, String, u32, &str)]) -> String {
    let data: Vec<serde_json::Value> = entries
        .iter()
        .map(|(key, height, round, step)| {
            serde_json::json!({"key": key, "height": height, "round": round, "step": step})
        })
        .collect();
    let doc = serde_json::json!({"metadata": {"interchange_format_version": "1"}, "data": data});
    let path = dir.join(name);
    std::fs::write(&path, doc.to_string()).expect("write the interchange file");
    path.to_str().expect("a UTF-8 path").to_string()
}

/// The key's name and watermark height as member `i` exports them.
fn exported_watermark(lab: &Lab, i: usize) -> (String, u64) {
    let doc = json(&ctl(lab, i, &["watermark", "export"]));
    let key = doc["data"][0]["key"].as_str().unwrap_or_else(|| panic!("{} exports no watermark: {doc}", MEMBERS[i]));
    let height = doc["data"][0]["height"].as_str().expect("height").parse().expect("decimal");
    (key.to_string(), height)
}

/// Waits for the active's first checkpoint: the cluster's first watermark.
async fn wait_for_a_watermark(lab: &Lab) {
    let end = Instant::now() + Duration::from_secs(10);
    while json(&ctl(lab, 2, &["watermark", "export"]))["data"].as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < end, "the active never checkpointed a watermark");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many watermark imports member `i` has recorded as operator events.
fn import_events(lab: &Lab, i: usize) -> Vec<String> {
    let o = ctl(lab, i, &["--json", "events"]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|e| e["kind"] == "operator")
        .filter_map(|e| e["message"].as_str().filter(|m| m.contains("watermark import")).map(String::from))
        .collect()
}

/// A running lab whose members all publish statuses and whose key has a watermark, a temp dir
/// for interchange files, and the key and watermark height member c exports.
async fn lab_with_a_watermark() -> (Lab, tempfile::TempDir, String, u64) {
    let lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    lab.wait_signed_above(active, 2, Duration::from_secs(5)).await;
    wait_for_statuses(&lab).await;
    wait_for_a_watermark(&lab).await;
    let (key, height) = exported_watermark(&lab, 2);
    (lab, tempfile::tempdir().expect("dir"), key, height)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_above_import_max_ahead_is_refused_unless_forced_and_none_passes_2_to_the_53() {
    let (lab, dir, key, height) = lab_with_a_watermark().await;

    // 200,000 above a cluster at `height` is past the default bound of 100,000.
    let far = height + 200_000;
    let file = write_interchange(dir.path(), "far.json", &[(&key, far.to_string(), 0, "precommit")]);
    let o = ctl(&lab, 2, &["watermark", "import", &file]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let why = String::from_utf8_lossy(&o.stderr);
    for part in ["failover.import_max_ahead (100000)", &far.to_string(), "--force"] {
        assert!(why.contains(part), "{part} missing: {}", text(&o));
    }
    assert!(exported_watermark(&lab, 2).1 < far, "a refused import changed the watermark");

    // --force lifts that bound: applied, and every member reads it.
    let o = ctl(&lab, 2, &["watermark", "import", "--force", &file]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("→ {far}/0/precommit")), "{}", text(&o));
    for (i, member) in MEMBERS.iter().enumerate() {
        assert_eq!(exported_watermark(&lab, i).1, far, "member {member}");
    }

    // Nothing lifts the ceiling: u64::MAX would stop the key from signing for good.
    let max = write_interchange(dir.path(), "max.json", &[(&key, u64::MAX.to_string(), 0, "precommit")]);
    let o = ctl(&lab, 2, &["watermark", "import", "--force", &max]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let why = String::from_utf8_lossy(&o.stderr);
    for part in ["9007199254740992 (2^53)", "ceiling", &u64::MAX.to_string()] {
        assert!(why.contains(part), "{part} missing: {}", text(&o));
    }
    assert_eq!(exported_watermark(&lab, 2).1, far, "a refused import changed the watermark");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_previews_with_dry_run_refuses_a_bad_file_whole_and_sends_a_big_file_once() {
    let (lab, dir, key, height) = lab_with_a_watermark().await;

    // First above the chain, so that the active's checkpoints leave the watermark as it is.
    let base = height + 5_000;
    let file = write_interchange(dir.path(), "base.json", &[(&key, base.to_string(), 0, "precommit")]);
    let o = ctl(&lab, 2, &["watermark", "import", &file]);
    assert!(o.status.success(), "{}", text(&o));
    let before = json(&ctl(&lab, 2, &["watermark", "export"]));
    assert_eq!(exported_watermark(&lab, 2).1, base);

    // A dry run prints the change and writes nothing.
    let file = write_interchange(dir.path(), "next.json", &[(&key, (base + 1_000).to_string(), 0, "precommit")]);
    let o = ctl(&lab, 2, &["watermark", "import", "--dry-run", &file]);
    assert!(o.status.success(), "{}", text(&o));
    let expected = format!("dry run: {key}: {base}/0/precommit → {}/0/precommit (nothing written)", base + 1_000);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), expected, "{}", text(&o));
    assert_eq!(json(&ctl(&lab, 2, &["watermark", "export"])), before, "a dry run changed the watermark");
    let r = json(&ctl(&lab, 2, &["--json", "watermark", "import", "--dry-run", &file]));
    assert_eq!(r["dry_run"], true, "{r}");
    assert_eq!(
        (r["keys"][0]["before"]["height"].as_u64(), r["keys"][0]["after"]["height"].as_u64()),
        (Some(base), Some(base + 1_000)),
        "{r}"
    );
    assert_eq!(r["keys"][0]["changed"], true, "{r}");
    assert_eq!(json(&ctl(&lab, 2, &["watermark", "export"])), before, "a dry run changed the watermark");

    // One bad entry: exit 2 naming it, nothing sent, nothing changed.
    let imports_before = import_events(&lab, 2).len();
    let file = write_interchange(
        dir.path(),
        "bad.json",
        &[
            (&key, (base + 10).to_string(), 0, "precommit"),
            (&key, (base + 20).to_string(), 0, "commit"),
            (&key, (base + 30).to_string(), 0, "precommit"),
        ],
    );
    let o = ctl(&lab, 2, &["watermark", "import", &file]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("data[1].step"), "{}", text(&o));
    assert_eq!(import_events(&lab, 2).len(), imports_before, "a bad file reached the daemon");
    assert_eq!(json(&ctl(&lab, 2, &["watermark", "export"])), before, "a bad file changed the watermark");

    // 200,000 entries of one key, rising through heights and steps: one request, whose
    // result is the file's highest entry.
    const N: u64 = 200_000;
    let steps = ["propose", "prevote", "precommit"];
    let heights: Vec<String> = (0..N).map(|i| (base + 1 + i / 3).to_string()).collect();
    let entries: Vec<(&str, String, u32, &str)> =
        heights.iter().enumerate().map(|(i, h)| (key.as_str(), h.clone(), 0, steps[i % 3])).collect();
    let file = write_interchange(dir.path(), "big.json", &entries);
    let top = format!("{}/0/{}", base + 1 + (N - 1) / 3, steps[((N - 1) % 3) as usize]);
    let started = std::time::Instant::now();
    let o = ctl(&lab, 2, &["watermark", "import", &file]);
    let took = started.elapsed();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("{key}: {base}/0/precommit → {top}"));
    assert!(took < Duration::from_secs(10), "200,000 entries took {took:?}");
    for (i, member) in MEMBERS.iter().enumerate() {
        assert_eq!(exported_watermark(&lab, i).1, base + 1 + (N - 1) / 3, "member {member}");
    }
    let imports = import_events(&lab, 2);
    assert_eq!(imports.len(), imports_before + 1, "{imports:?}");
    assert!(imports.last().is_some_and(|m| m.contains("watermark import of 1 entry requested")), "{imports:?}");
    eprintln!("200,000 entries imported in {took:?}");
}

/// Member `i`'s view of the lease: (holder or "", epoch, transfer_to or "").
fn lease_of(lab: &Lab, i: usize) -> (String, u64, String) {
    let s = json(&ctl(lab, i, &["--json", "status"]));
    let lease = &s["self"]["lease"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    (
        text(&lease["holder"]),
        lease["epoch"].as_u64().unwrap_or_else(|| panic!("no lease epoch: {s}")),
        text(&lease["transfer_to"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_members_row_turns_unreachable_in_table_and_json() {
    let mut lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    lab.wait_signed_above(active, 2, Duration::from_secs(5)).await;
    wait_for_statuses(&lab).await;
    let m = json(&ctl(&lab, 2, &["--json", "members"]));
    assert_eq!(m["members"][active]["reachable"], true, "{m}");
    assert_eq!(m["members"][active]["role"], "active", "{m}");

    // The active's daemon dies: its last status said "active, healthy", and stays in the store.
    lab.kill9(active);
    let end = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let m = json(&ctl(&lab, 2, &["--json", "members"]));
        let row = m["members"][active].clone();
        if row["reachable"] == false {
            break row;
        }
        assert!(Instant::now() < end, "the dead member never showed as unreachable: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for field in ["role", "healthy", "height", "lag"] {
        assert!(row[field].is_null(), "the dead member's last {field} is shown: {row}");
    }
    let heard = row["last_heard_s"].as_f64().unwrap_or_else(|| panic!("no last_heard_s: {row}"));
    assert!(heard >= 1.0, "stale only after status_stale_after (1 s in the lab): {row}");

    // The table: one line for the dead member, naming it unreachable, without its last words.
    let o = ctl(&lab, 2, &["members"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(MEMBERS[active]))
        .unwrap_or_else(|| panic!("no row for {}: {out}", MEMBERS[active]));
    assert!(line.contains("unreachable (last heard "), "{out}");
    assert!(!line.contains("active") && !line.contains("healthy"), "the dead member's last role or health: {out}");
    // status carries the same table.
    let o = ctl(&lab, 2, &["status"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("unreachable (last heard "), "{}", text(&o));

    // A reader that stops early ends failoverctl quietly, with output from a daemon too.
    let socket = lab.socket(2);
    let o = into_a_closed_pipe(&["--socket".as_ref(), socket.as_os_str(), "members".as_ref()]);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demote_on_a_standby_exits_1_naming_the_active_and_moves_nothing() {
    let lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    lab.wait_signed_above(active, 2, Duration::from_secs(5)).await;
    wait_for_statuses(&lab).await;
    let (holder, epoch, _) = lease_of(&lab, 2);
    assert_eq!(holder, MEMBERS[active]);

    // The systemd README's "demote, then stop": run against the standby (and the witness).
    for i in [standby, 2] {
        let o = ctl(&lab, i, &["demote"]);
        assert_eq!(o.status.code(), Some(1), "demote on {}: {}", MEMBERS[i], text(&o));
        let why = String::from_utf8_lossy(&o.stderr);
        assert!(why.contains(&format!("{} is not the active, {} is", MEMBERS[i], MEMBERS[active])), "{}", text(&o));
        assert!(why.contains("nothing was changed"), "{}", text(&o));
    }
    // Nothing moved: the same holder at the same epoch, no transfer pending, the active signing.
    let signed = lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    lab.wait_signed_above(active, signed + 2, Duration::from_secs(5)).await;
    assert_eq!(lease_of(&lab, 2), (MEMBERS[active].to_string(), epoch, String::new()));
    assert!(!lab.signing(standby).await, "the standby took over");

    // The refusal is logged by the daemon that refused it: who, what, and why, on one line.
    let log = lab.log(standby);
    assert!(
        log.lines().any(|l| l.contains("INFO")
            && l.contains("demote requested by uid")
            && l.contains(&format!("refused: {} is not the active", MEMBERS[standby]))),
        "the refused demote was not logged with its caller and reason:\n{log}"
    );
}

/// Waits (at most 2 s) for member `i`'s validator to be signing after failoverctl reported it
/// active; `said` is what failoverctl printed.
async fn wait_signing(lab: &Lab, i: usize, said: &serde_json::Value) {
    let end = Instant::now() + Duration::from_secs(2);
    while !lab.signing(i).await {
        assert!(Instant::now() < end, "reported finished, but {} is not producing: {said}", MEMBERS[i]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_wait_reports_the_finished_handover() {
    let lab = Lab::start("", &[]).await;
    let active = lab.wait_active(Duration::from_secs(15)).await;
    let standby = 1 - active;
    lab.wait_signed_above(active, 2, Duration::from_secs(5)).await;
    wait_for_statuses(&lab).await;
    let (_, epoch, _) = lease_of(&lab, 2);

    let o = ctl(&lab, 2, &["--json", "promote", "--wait", "--wait-timeout", "20s", MEMBERS[standby]]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    assert_eq!(
        (r["finished"].clone(), r["holder"].clone()),
        (serde_json::json!(true), serde_json::json!(MEMBERS[standby])),
        "{r}"
    );
    let new_epoch = r["new_epoch"].as_u64().unwrap_or_else(|| panic!("no new epoch: {r}"));
    assert!(new_epoch > epoch, "{r}");
    // When it returns, the handover is done: the new holder says it is active, and its
    // validator process (whose own start record lands a moment after the daemon confirmed it)
    // signs.
    let m = json(&ctl(&lab, 2, &["--json", "members"]));
    assert_eq!(m["members"][standby]["role"], "active", "{m}");
    wait_signing(&lab, standby, &r).await;
    eprintln!("promote --wait returned after {} s", r["waited_s"]);

    // And back, in text: the outcome names the holder and the epoch.
    let o = ctl(&lab, standby, &["demote", "--wait"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("handover finished: {} is active at epoch", MEMBERS[active])), "{out}");
    wait_signing(&lab, active, &serde_json::json!(out)).await;
    assert!(lab.report().is_safe(), "{}", lab.report());

    // Two handovers wrote checkpoints, floors and releases (every round of a height): each HRS
    // in the logs reads as failoverctl writes it, never as Rust's Debug or the raw round.
    for (i, member) in MEMBERS.iter().enumerate() {
        let log = lab.log(i);
        let raw = log.lines().find(|l| l.contains("Hrs {") || l.contains("4294967295"));
        assert!(raw.is_none(), "{member}'s log: {raw:?}");
    }
}

// The daemon answers but its store does not (two of three raft voters are gone): the request
// was not carried out, and the daemon is there — exit 1 "not done", never 3 "did not answer".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_store_does_not_answer_exits_1_not_done() {
    let mut lab = Lab::start("", &[]).await;
    lab.wait_active(Duration::from_secs(15)).await;
    wait_for_statuses(&lab).await;
    lab.kill9(0);
    lab.kill9(1);
    let o = ctl(&lab, 2, &["--timeout", "30s", "pause"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.starts_with("failoverctl: not done: the store"), "{}", text(&o));
    assert!(!stderr.contains("did not answer:"), "{}", text(&o));
}
