//! CometBFT-style RPC probe: `GET /status` (`result.sync_info.latest_block_height` as a decimal
//! string, `catching_up`). The simulated chain speaks the same dialect.
//!
//! Never panics on a response: bodies are capped, and anything missing, mistyped or out of range
//! becomes a [`ProbeError::Malformed`] that names the field.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use super::{ChainProbe, ChainSample, ProbeError};
use crate::config::HttpUrl;

/// Largest `/status` body accepted.
pub const MAX_STATUS_BYTES: usize = 64 * 1024;

pub struct CometbftProbe {
    source: String,
    client: reqwest::Client,
    status_url: reqwest::Url,
}

impl CometbftProbe {
    pub fn new(source: impl Into<String>, rpc: &HttpUrl, timeout: Duration) -> Result<CometbftProbe, ProbeError> {
        let source = source.into();
        let status_url = rpc
            .0
            .join("status")
            .map_err(|e| ProbeError::Malformed { source_name: source.clone(), detail: format!("rpc URL: {e}") })?;
        let client = crate::http::client(timeout)
            .map_err(|e| ProbeError::Unreachable { source_name: source.clone(), detail: e.to_string() })?;
        Ok(CometbftProbe { source, client, status_url })
    }
}

/// Reads a response body, refusing more than `limit` bytes.
pub async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Option<reqwest::Error>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Some)? {
        if body.len() + chunk.len() > limit {
            return Err(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a `/status` body.
pub fn parse_status(body: &[u8]) -> Result<ChainSample, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(err) = v.get("error") {
        return Err(format!("the node answered with an error: {err}"));
    }
    let sync = v.pointer("/result/sync_info").ok_or("missing result.sync_info")?;
    let height = match sync.get("latest_block_height") {
        Some(Value::String(s)) => s
            .parse::<u64>()
            .map_err(|_| format!("result.sync_info.latest_block_height: expected a decimal u64, found {s:?}"))?,
        Some(other) => return Err(format!("result.sync_info.latest_block_height: expected a string, found {other}")),
        None => return Err("missing result.sync_info.latest_block_height".into()),
    };
    let catching_up = match sync.get("catching_up") {
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("result.sync_info.catching_up: expected true or false, found {other}")),
        None => return Err("missing result.sync_info.catching_up".into()),
    };
    Ok(ChainSample { height, latest_block_time_ms: None, catching_up, peers: None, signing: None })
}

#[async_trait]
impl ChainProbe for CometbftProbe {
    fn source(&self) -> &str {
        &self.source
    }

    async fn probe(&self, deadline: Instant) -> Result<ChainSample, ProbeError> {
        let source_name = || self.source.clone();
        let work = async {
            let response = self
                .client
                .get(self.status_url.clone())
                .send()
                .await
                .map_err(|e| ProbeError::Unreachable { source_name: source_name(), detail: e.to_string() })?;
            if !response.status().is_success() {
                return Err(ProbeError::Malformed {
                    source_name: source_name(),
                    detail: format!("HTTP {}", response.status()),
                });
            }
            let body = read_capped(response, MAX_STATUS_BYTES).await.map_err(|e| match e {
                Some(e) => ProbeError::Unreachable { source_name: source_name(), detail: e.to_string() },
                None => ProbeError::TooLarge { source_name: source_name(), limit: MAX_STATUS_BYTES },
            })?;
            parse_status(&body).map_err(|detail| ProbeError::Malformed { source_name: source_name(), detail })
        };
        tokio::time::timeout_at(deadline, work)
            .await
            .unwrap_or_else(|_| Err(ProbeError::Timeout { source_name: source_name() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cometbft_status() {
        let body = br#"{"jsonrpc":"2.0","id":-1,"result":{"sync_info":{"latest_block_height":"12345","latest_block_time":"2026-11-21T13:48:16.000000001Z","catching_up":false}}}"#;
        let s = parse_status(body).expect("valid");
        assert_eq!((s.height, s.catching_up), (12345, false));
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "not JSON"),
            (br#"{"result":{}}"#, "missing result.sync_info"),
            (br#"{"result":{"sync_info":{"latest_block_height":12,"catching_up":false}}}"#, "expected a string"),
            (br#"{"result":{"sync_info":{"latest_block_height":"-1","catching_up":false}}}"#, "expected a decimal u64"),
            (
                br#"{"result":{"sync_info":{"latest_block_height":"99999999999999999999999","catching_up":false}}}"#,
                "expected a decimal u64",
            ),
            (br#"{"result":{"sync_info":{"latest_block_height":"1","catching_up":"no"}}}"#, "catching_up"),
            (br#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"boom"}}"#, "error"),
        ];
        for (body, want) in cases {
            let err = parse_status(body).expect_err("malformed");
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }
}
