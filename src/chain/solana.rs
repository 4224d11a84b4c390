//! Solana JSON-RPC probe: `getSlot` for the height (slots, not blocks: the lag limits are in
//! slots on this chain) and `getHealth`, whose "node is behind" error means catching up.
//!
//! Never panics on a response; an error from `getHealth` other than "unhealthy" (-32005) fails
//! the probe.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::rpc::{ExchangeError, JsonEndpoint, decimal_u64};
use super::{ChainProbe, ChainSample, ProbeError};
use crate::config::HttpUrl;

/// `getHealth`'s error code for a node that is behind or otherwise unhealthy.
pub const NODE_UNHEALTHY: i64 = -32005;

pub struct SolanaProbe {
    source: String,
    endpoint: JsonEndpoint,
}

impl SolanaProbe {
    pub fn new(source: impl Into<String>, rpc: &HttpUrl, timeout: Duration) -> Result<SolanaProbe, ProbeError> {
        let source = source.into();
        let endpoint = JsonEndpoint::new(rpc, timeout).map_err(|e| ProbeError::from_exchange(&source, e))?;
        Ok(SolanaProbe { source, endpoint })
    }
}

pub fn parse_slot(result: &Value) -> Result<u64, String> {
    match result {
        Value::Number(_) => decimal_u64(result, "getSlot"),
        other => Err(format!("getSlot: expected a number, found {other}")),
    }
}

/// `getHealth`: `Ok(false)` when healthy, `Ok(true)` when the node says it is behind.
pub fn parse_health(answer: Result<Value, ExchangeError>) -> Result<bool, ExchangeError> {
    match answer {
        Ok(Value::String(s)) if s == "ok" => Ok(false),
        Ok(other) => Err(ExchangeError::Malformed(format!("getHealth: expected \"ok\", found {other}"))),
        Err(ExchangeError::Rpc { code: NODE_UNHEALTHY, .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl ChainProbe for SolanaProbe {
    fn source(&self) -> &str {
        &self.source
    }

    async fn probe(&self, deadline: Instant) -> Result<ChainSample, ProbeError> {
        let (slot, health) = tokio::join!(
            self.endpoint.call("getSlot", json!([]), deadline),
            self.endpoint.call("getHealth", json!([]), deadline),
        );
        let exchange = |e| ProbeError::from_exchange(&self.source, e);
        let height = parse_slot(&slot.map_err(exchange)?).map_err(|d| ProbeError::malformed(&self.source, d))?;
        let catching_up = parse_health(health).map_err(exchange)?;
        Ok(ChainSample { height, catching_up, ..ChainSample::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::super::rpc::rpc_result;
    use super::*;

    fn answer(body: &str) -> Result<Value, ExchangeError> {
        rpc_result(serde_json::from_str(body).expect("recorded body is JSON"))
    }

    #[test]
    fn parses_recorded_answers() {
        // As in Solana's RPC documentation.
        assert_eq!(parse_slot(&answer(r#"{"jsonrpc":"2.0","result":1234,"id":1}"#).expect("ok")), Ok(1234));
        assert_eq!(parse_slot(&Value::from(0u64)), Ok(0));
        assert_eq!(parse_health(answer(r#"{"jsonrpc":"2.0","result":"ok","id":1}"#)), Ok(false));
        let behind = r#"{"jsonrpc":"2.0","error":{"code":-32005,"message":"Node is behind by 42 slots","data":{"numSlotsBehind":42}},"id":1}"#;
        assert_eq!(parse_health(answer(behind)), Ok(true));
        let unknown = r#"{"jsonrpc":"2.0","error":{"code":-32005,"message":"Node is unhealthy","data":{}},"id":1}"#;
        assert_eq!(parse_health(answer(unknown)), Ok(true));
    }

    #[test]
    fn wrong_types_and_other_errors_fail_the_probe() {
        for bad in [r#""1234""#, "-1", "1.5", "null", "18446744073709551616"] {
            let v: Value = serde_json::from_str(bad).expect("json");
            assert!(parse_slot(&v).is_err(), "{bad} accepted");
        }
        assert!(parse_health(Ok(Value::from("behind"))).is_err());
        let other = r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":1}"#;
        assert!(parse_health(answer(other)).is_err());
    }
}
