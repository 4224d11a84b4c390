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
