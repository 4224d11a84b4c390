//! Ethereum JSON-RPC probe: `eth_blockNumber` for the height, `eth_syncing` for catching up,
//! `net_peerCount` for peers. The three calls go out together and share one deadline.
//!
//! A node that does not offer `net_peerCount` (dev nodes such as anvil answer "method not
//! found") reports unknown peers instead of failing the probe; every other error fails it.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::rpc::{ExchangeError, JsonEndpoint, METHOD_NOT_FOUND, hex_u64};
use super::{ChainProbe, ChainSample, ProbeError};
use crate::config::HttpUrl;

pub struct EthereumProbe {
    source: String,
    endpoint: JsonEndpoint,
}

impl EthereumProbe {
    pub fn new(source: impl Into<String>, rpc: &HttpUrl, timeout: Duration) -> Result<EthereumProbe, ProbeError> {
        let source = source.into();
        let endpoint = JsonEndpoint::new(rpc, timeout).map_err(|e| ProbeError::from_exchange(&source, e))?;
        Ok(EthereumProbe { source, endpoint })
    }
}

/// `eth_blockNumber`'s result.
pub fn parse_block_number(result: &Value) -> Result<u64, String> {
    hex_u64(result, "eth_blockNumber")
}

/// `eth_syncing`'s result: `false`, or an object with `currentBlock` and `highestBlock`.
pub fn parse_syncing(result: &Value) -> Result<bool, String> {
    match result {
        Value::Bool(false) => Ok(false),
        Value::Object(progress) => {
            let current = progress.get("currentBlock").ok_or("eth_syncing: missing currentBlock")?;
            let highest = progress.get("highestBlock").ok_or("eth_syncing: missing highestBlock")?;
            let (current, highest) =
                (hex_u64(current, "eth_syncing.currentBlock")?, hex_u64(highest, "eth_syncing.highestBlock")?);
            // Some clients keep reporting progress for a moment after reaching the head.
            Ok(current < highest)
        }
        Value::Bool(true) => Ok(true),
        other => Err(format!("eth_syncing: expected false or a progress object, found {other}")),
    }
}

/// `net_peerCount`'s result; `None` when the node does not offer the call.
pub fn parse_peer_count(answer: Result<Value, ExchangeError>) -> Result<Option<u32>, ExchangeError> {
    match answer {
        Ok(v) => {
            let n = hex_u64(&v, "net_peerCount").map_err(ExchangeError::Malformed)?;
            u32::try_from(n)
                .map(Some)
                .map_err(|_| ExchangeError::Malformed(format!("net_peerCount: {n} is not a plausible peer count")))
        }
        Err(ExchangeError::Rpc { code: METHOD_NOT_FOUND, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl ChainProbe for EthereumProbe {
    fn source(&self) -> &str {
        &self.source
    }

    async fn probe(&self, deadline: Instant) -> Result<ChainSample, ProbeError> {
        let e = &self.endpoint;
        let (number, syncing, peers) = tokio::join!(
            e.call("eth_blockNumber", json!([]), deadline),
            e.call("eth_syncing", json!([]), deadline),
            e.call("net_peerCount", json!([]), deadline),
        );
        let exchange = |err| ProbeError::from_exchange(&self.source, err);
        let malformed = |detail| ProbeError::malformed(&self.source, detail);
        let height = parse_block_number(&number.map_err(exchange)?).map_err(malformed)?;
        let catching_up = parse_syncing(&syncing.map_err(exchange)?).map_err(malformed)?;
        let peers = parse_peer_count(peers).map_err(exchange)?;
        Ok(ChainSample { height, catching_up, peers, ..ChainSample::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::super::rpc::rpc_result;
    use super::*;

    fn result(body: &str) -> Result<Value, ExchangeError> {
        rpc_result(serde_json::from_str(body).expect("recorded body is JSON"))
    }

    #[test]
    fn parses_recorded_answers() {
        // Recorded from anvil 1.7.1 and from geth's documentation.
        assert_eq!(parse_block_number(&result(r#"{"jsonrpc":"2.0","id":1,"result":"0x0"}"#).expect("ok")), Ok(0));
        assert_eq!(
            parse_block_number(&result(r#"{"jsonrpc":"2.0","id":1,"result":"0x15b3a2e"}"#).expect("ok")),
            Ok(22_755_886)
        );
        assert_eq!(parse_syncing(&result(r#"{"jsonrpc":"2.0","id":1,"result":false}"#).expect("ok")), Ok(false));
        let syncing = r#"{"jsonrpc":"2.0","id":1,"result":{"startingBlock":"0x384","currentBlock":"0x386","highestBlock":"0x454"}}"#;
        assert_eq!(parse_syncing(&result(syncing).expect("ok")), Ok(true));
        let done = r#"{"jsonrpc":"2.0","id":1,"result":{"startingBlock":"0x1","currentBlock":"0x454","highestBlock":"0x454"}}"#;
        assert_eq!(parse_syncing(&result(done).expect("ok")), Ok(false));
        assert_eq!(parse_peer_count(result(r#"{"jsonrpc":"2.0","id":1,"result":"0x19"}"#)), Ok(Some(25)));
    }

    #[test]
    fn a_node_without_net_peer_count_has_unknown_peers() {
        let anvil = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}"#;
        assert_eq!(parse_peer_count(result(anvil)), Ok(None));
        let other = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"boom"}}"#;
        assert!(parse_peer_count(result(other)).is_err());
    }

    #[test]
    fn wrong_types_and_huge_numbers_are_errors() {
        for bad in [r#""0x""#, "12", r#""12""#, r#""0x1ffffffffffffffff""#, "null", "{}"] {
            let v: Value = serde_json::from_str(bad).expect("json");
            assert!(parse_block_number(&v).is_err(), "{bad} accepted");
        }
        for bad in [r#""no""#, "1", r#"{"currentBlock":"0x1"}"#, r#"{"currentBlock":1,"highestBlock":"0x2"}"#] {
            let v: Value = serde_json::from_str(bad).expect("json");
            assert!(parse_syncing(&v).is_err(), "{bad} accepted");
        }
        assert!(parse_peer_count(Ok(Value::from("0xffffffffff"))).is_err());
    }
}
