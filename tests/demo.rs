//! `failoverd demo` end to end: real member processes, the built-in faults, a JSON summary
//! judged from the ledger.

mod common;

#[test]
fn demo_fails_over_on_every_fault_without_a_double_sign() {
    let out = common::run_failoverd(&["demo", "--duration", "30s", "--faults", "kill,handover", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "demo failed:\n{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints the summary");
    assert_eq!(summary["double_signs"], 0, "{summary}");
    let faults = summary["faults"].as_array().expect("faults");
    assert_eq!(faults.len(), 2, "{summary}");
    for f in faults {
        assert!(f["active_after"].is_string(), "no failover after {f}\n{stderr}");
        assert_ne!(f["active_after"], f["active_before"], "{f}");
    }
    assert_eq!(faults[1]["fault"], "handover");
    assert_eq!(faults[1]["missed_heights"], 0, "a planned handover misses no height: {}", faults[1]);
    assert!(stderr.contains("FAULT kill -9"), "the timeline goes to stderr with --json:\n{stderr}");
    assert!(stderr.contains("lease: lease_ttl 2 s"), "the demo says what lease it runs with:\n{stderr}");
    assert_eq!(summary["lease_ttl_s"], 2.0, "{summary}");
    let dir = announced_work_dir(&stderr);
    assert!(!dir.exists(), "without --keep a clean run removes {}", dir.display());
}

#[test]
fn demo_in_signer_mode_fails_over_through_remote_signers_without_a_double_sign() {
    let out = common::run_failoverd(&[
        "demo",
        "--mode",
        "signer",
        "--duration",
        "20s",
        "--faults",
        "kill,handover",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "demo failed:\n{stderr}");
    assert!(stderr.contains("remote signers, cometbft-signer"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints the summary");
    assert_eq!(summary["double_signs"], 0, "{summary}");
    assert!(summary["signatures"].as_u64().is_some_and(|n| n >= 10), "{summary}");
    for f in summary["faults"].as_array().expect("faults") {
        assert!(f["active_after"].is_string(), "no failover after {f}\n{stderr}");
        assert_ne!(f["active_after"], f["active_before"], "{f}");
    }
}

#[test]
fn demo_rejects_bad_arguments_with_exit_2() {
    for args in [
        vec!["demo", "--faults", "explode"],
        vec!["demo", "--duration", "tenseconds"],
        vec!["demo", "--members", "2", "--duration", "10s"],
    ] {
        let out = common::run_failoverd(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The work dir the demo announced on its timeline ("work dir PATH (…").
fn announced_work_dir(timeline: &str) -> std::path::PathBuf {
    let line = timeline.lines().find_map(|l| l.trim_start().strip_prefix("work dir ")).expect("the work dir line");
    std::path::PathBuf::from(line.split(" (").next().expect("a path before the parenthesis"))
}

#[test]
fn demo_with_keep_leaves_its_work_dir_with_configs_ledger_and_each_members_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = common::failoverd()
        .args(["demo", "--duration", "10s", "--faults", "", "--keep", "--json"])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("the failoverd binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "demo failed:\n{stderr}");
    let dir = announced_work_dir(&stderr);
    assert!(dir.starts_with(tmp.path()), "{} is not under TMPDIR\n{stderr}", dir.display());
    assert!(
        stderr.contains(&format!("kept the work dir {}", dir.display())),
        "no closing word on the kept dir:\n{stderr}"
    );
    for name in ["a", "b", "c"] {
        assert!(dir.join(format!("{name}.toml")).is_file(), "config of {name} missing in {}", dir.display());
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).expect("each member's log is kept");
        assert!(log.contains(&format!("\"member\":\"{name}\"")), "{name}.log is not member {name}'s log:\n{log}");
    }
    // The producers' logs hold their role changes (the witness is a witness from its start).
    for name in ["a", "b"] {
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).expect("the producer's log");
        assert!(log.contains("\"change\":\"role\""), "{name}.log holds no role change:\n{log}");
    }
    let ledger = dir.join("ledger.jsonl");
    let check = common::run_failoverd(&["check-ledger", ledger.to_str().expect("utf-8 path")]);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stdout));
}

#[test]
fn demo_labels_the_planned_handover_as_planned_and_every_step_down_with_its_reason() {
    let out = common::run_failoverd(&["demo", "--duration", "30s", "--faults", "handover,stall", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "demo failed:\n{stderr}");
    for line in stderr.lines().filter(|l| l.contains("handover from")) {
        assert!(!line.contains("FAULT"), "a planned handover is not a fault: {line}");
    }
    assert!(stderr.contains("PLANNED handover from "), "{stderr}");
    assert!(stderr.contains("FAULT stall the node of "), "{stderr}");
    let step_downs: Vec<&str> = stderr.lines().filter(|l| l.contains(" active -> ")).collect();
    assert!(step_downs.len() >= 2, "expected a step-down for the handover and for the stall:\n{stderr}");
    for line in stderr
        .lines()
        .filter(|l| ["active", "demoting", "fenced"].iter().any(|from| l.contains(&format!(" {from} -> "))))
    {
        assert!(
            line.contains("(stepping down at epoch ")
                || line.contains("(fencing the producer at epoch ")
                || line.contains("(the producer is confirmed stopped after it "),
            "a step-down without its reason: {line}\n{stderr}"
        );
    }
    assert!(stderr.contains(": a planned handover to "), "{stderr}");
    assert!(stderr.contains(": its node is unhealthy ("), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints the summary");
    assert_eq!(summary["double_signs"], 0, "{summary}");
}
