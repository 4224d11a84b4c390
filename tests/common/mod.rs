//! Helpers shared by the integration tests: the real binaries, temp dirs with config files,
//! and a reference config to mutate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `failoverd` binary cargo built for this test run.
pub fn failoverd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_failoverd"))
}

/// Runs `failoverd` with `args` and returns its output.
pub fn run_failoverd(args: &[&str]) -> Output {
    failoverd().args(args).output().expect("the failoverd binary runs")
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A valid three-member raft config for member "a" on loopback.
pub const BASE_CONFIG: &str = r#"member = "a"
data_dir = "/tmp/failoverd-test"

[[members]]
id = "a"
peer_address = "127.0.0.1:7101"

[[members]]
id = "b"
peer_address = "127.0.0.1:7102"

[[members]]
id = "c"
peer_address = "127.0.0.1:7103"
kind = "witness"

[coordinator]
lease_ttl = "3s"
renew_interval = "1s"
safety_margin = "500ms"

[chain]
kind = "sim"
rpc = "http://127.0.0.1:26661"

[producer]
kind = "sim"
"#;

/// Writes `text` to `name` in `dir` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

/// Replaces exactly one occurrence of `from` in `text`, so a mutation that silently does
/// nothing fails the test instead of passing it.
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "fixture must contain {from:?} exactly once");
    text.replacen(from, to, 1)
}

pub mod anvil;
pub mod consul;
pub mod contract;
pub mod lab;
pub mod pki;
pub mod raft_cluster;
pub mod scrape;
pub mod webhook_receiver;
