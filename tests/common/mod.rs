//! Helpers shared by the integration tests: the real binaries and temp dirs with config files.
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

/// Runs `failoverctl ARGS` against the member whose control socket is `socket`.
pub fn failoverctl_at(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("failoverctl runs")
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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
pub mod two_chains;
pub mod webhook_receiver;
