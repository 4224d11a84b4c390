//! Real Ethereum dev nodes for the tests: anvil, from the npm package `@foundry-rs/anvil` that
//! ./scripts/test installs under target/npm-tools. Each node starts with mining off
//! (`--no-mining`) and is read only through its own JSON-RPC.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

/// Where anvil is: `$FAILOVERD_ANVIL`, else the platform binary ./scripts/test installed (not
/// npm's node wrapper: kill -9 must hit the node itself), else `anvil` on PATH.
pub fn anvil_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FAILOVERD_ANVIL") {
        return PathBuf::from(path);
    }
    let installed = super::repo().join("target/npm-tools/node_modules/@foundry-rs");
    if let Ok(entries) = std::fs::read_dir(&installed) {
        for entry in entries.flatten() {
            let bin = entry.path().join("bin/anvil");
            if entry.file_name().to_string_lossy().starts_with("anvil-") && bin.is_file() {
                return bin;
            }
        }
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("anvil")).find(|p| p.is_file()));
    on_path.unwrap_or_else(|| {
        panic!(
            "anvil is not installed: run ./scripts/test (it installs @foundry-rs/anvil from npm into {}) or set FAILOVERD_ANVIL",
            installed.display()
        )
    })
}

pub struct Anvil {
    child: std::sync::Mutex<Option<Child>>,
    pub url: String,
    client: reqwest::Client,
}

impl Anvil {
    /// Starts anvil on `port` with mining off and waits until it answers.
    pub async fn start(port: u16) -> Anvil {
        let child = Command::new(anvil_binary())
            .args(["--no-mining", "--host", "127.0.0.1", "--port", &port.to_string(), "--silent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("anvil starts");
        let node = Anvil {
            child: std::sync::Mutex::new(Some(child)),
            url: format!("http://127.0.0.1:{port}/"),
            client: failover::http::client(Duration::from_millis(500)).expect("client"),
        };
        let end = Instant::now() + Duration::from_secs(20);
        while node.height().await.is_none() {
            assert!(Instant::now() < end, "anvil on port {port} did not answer within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    pub async fn call(&self, method: &str, params: Value) -> Option<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let answer: Value = self.client.post(&self.url).json(&body).send().await.ok()?.json().await.ok()?;
        answer.get("result").cloned()
    }

    /// The node's block number; `None` when it does not answer.
    pub async fn height(&self) -> Option<u64> {
        let hex = self.call("eth_blockNumber", json!([])).await?;
        u64::from_str_radix(hex.as_str()?.trim_start_matches("0x"), 16).ok()
    }

    /// Whether the node says interval mining is on; `None` when it does not answer.
    pub async fn mining(&self) -> Option<bool> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "anvil_getIntervalMining", "params": []});
        let answer: Value = self.client.post(&self.url).json(&body).send().await.ok()?.json().await.ok()?;
        Some(answer.get("result")?.as_u64().is_some_and(|secs| secs > 0))
    }

    /// kill -9 of the node, and reaps it.
    pub fn kill9(&self) {
        let taken = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut child) = taken {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.kill9();
    }
}
