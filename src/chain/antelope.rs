//! Antelope (EOS, Leap, Spring) probe: `POST /v1/chain/get_info` for the head block, its time and
//! producer and the last irreversible block, and — when this member's producer is the Antelope
//! producer API — `POST /v1/producer/paused`, so status shows whether the node produces.
//!
//! Antelope has no "catching up" flag; a node that falls behind shows up as lag against the other
//! members and reference RPCs, or as a stall. Never panics on a response.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use super::rpc::{self, JsonEndpoint, decimal_u64, field};
use super::{ChainProbe, ChainSample, ProbeError};
use crate::config::HttpUrl;
use crate::domain::rfc3339;

pub struct AntelopeProbe {
    source: String,
    endpoint: JsonEndpoint,
    ask_paused: bool,
}

/// What `get_info` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainInfo {
    pub head_block_num: u64,
    pub last_irreversible_block_num: u64,
    pub head_block_producer: String,
    pub head_block_time_ms: i64,
}

impl AntelopeProbe {
    /// `ask_paused`: also read `/v1/producer/paused` (needs the node's producer_api_plugin).
    pub fn new(
        source: impl Into<String>,
        rpc: &HttpUrl,
        timeout: Duration,
        ask_paused: bool,
    ) -> Result<AntelopeProbe, ProbeError> {
        let source = source.into();
        let endpoint = JsonEndpoint::new(rpc, timeout).map_err(|e| ProbeError::from_exchange(&source, e))?;
        Ok(AntelopeProbe { source, endpoint, ask_paused })
    }
}

pub fn parse_get_info(v: &Value) -> Result<ChainInfo, String> {
    let head_block_num = decimal_u64(field(v, "/head_block_num")?, "head_block_num")?;
    let last_irreversible_block_num =
        decimal_u64(field(v, "/last_irreversible_block_num")?, "last_irreversible_block_num")?;
    if last_irreversible_block_num > head_block_num {
        return Err(format!(
            "last_irreversible_block_num {last_irreversible_block_num} is above head_block_num {head_block_num}"
        ));
    }
    let head_block_producer = rpc::string(field(v, "/head_block_producer")?, "head_block_producer")?.to_string();
    let head_block_time_ms = rfc3339::parse_unix_millis(rpc::string(field(v, "/head_block_time")?, "head_block_time")?)
        .map_err(|e| format!("head_block_time: {e}"))?;
    Ok(ChainInfo { head_block_num, last_irreversible_block_num, head_block_producer, head_block_time_ms })
}

/// `/v1/producer/paused` answers a bare `true` or `false`.
pub fn parse_paused(v: &Value) -> Result<bool, String> {
    rpc::boolean(v, "/v1/producer/paused")
}

#[async_trait]
impl ChainProbe for AntelopeProbe {
    fn source(&self) -> &str {
        &self.source
    }

    async fn probe(&self, deadline: Instant) -> Result<ChainSample, ProbeError> {
        let exchange = |e| ProbeError::from_exchange(&self.source, e);
        let info = self.endpoint.post("v1/chain/get_info", None, deadline).await.map_err(exchange)?;
        let info = parse_get_info(&info).map_err(|d| ProbeError::malformed(&self.source, d))?;
        let producing = if self.ask_paused {
            let paused = self.endpoint.post("v1/producer/paused", None, deadline).await.map_err(exchange)?;
            Some(!parse_paused(&paused).map_err(|d| ProbeError::malformed(&self.source, d))?)
        } else {
            None
        };
        Ok(ChainSample {
            height: info.head_block_num,
            latest_block_time_ms: Some(info.head_block_time_ms),
            producing,
            ..ChainSample::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `get_info` as Leap 5 prints it (ids shortened).
    const GET_INFO: &str = r#"{"server_version":"7e4e5d0a","chain_id":"aca376f206b8fc25a6ed44dbdc66547c36c6c33e3a119ffbeaef943642f0e906","head_block_num":378123456,"last_irreversible_block_num":378123120,"last_irreversible_block_id":"168a0d70","head_block_id":"168a0ec0","head_block_time":"2026-11-21T13:48:16.500","head_block_producer":"eosnationftw","virtual_block_cpu_limit":200000000,"virtual_block_net_limit":1048576000,"block_cpu_limit":199900,"block_net_limit":1048576,"server_version_string":"v5.0.2","fork_db_head_block_num":378123456,"fork_db_head_block_id":"168a0ec0","server_full_version_string":"v5.0.2-7e4e5d0a","total_cpu_weight":"380245935432","total_net_weight":"102932342233","earliest_available_block_num":1,"last_irreversible_block_time":"2026-11-21T13:45:28.000"}"#;

    #[test]
    fn parses_a_recorded_get_info() {
        let info = parse_get_info(&serde_json::from_str(GET_INFO).expect("json")).expect("valid");
        assert_eq!(info.head_block_num, 378_123_456);
        assert_eq!(info.last_irreversible_block_num, 378_123_120);
        assert_eq!(info.head_block_producer, "eosnationftw");
        assert_eq!(info.head_block_time_ms, 1_795_268_896_500);
        assert_eq!(parse_paused(&json!(true)), Ok(true));
        assert_eq!(parse_paused(&json!(false)), Ok(false));
    }

    #[test]
    fn edge_values_and_wrong_types() {
        let info = |head: Value, lib: Value| json!({"head_block_num":head,"last_irreversible_block_num":lib,"head_block_producer":"eosio","head_block_time":"2018-06-08T08:08:08.500"});
        assert_eq!(parse_get_info(&info(json!(0), json!(0))).map(|i| i.head_block_num), Ok(0));
        assert_eq!(parse_get_info(&info(json!(u64::MAX), json!(1))).map(|i| i.head_block_num), Ok(u64::MAX));
        let cases = [
            (info(json!("12"), json!(1)), None),
            (info(json!(-5), json!(0)), Some("head_block_num")),
            (info(json!(1.5), json!(0)), Some("head_block_num")),
            (info(json!(5), json!(6)), Some("above head_block_num")),
            (json!({"head_block_num":5}), Some("missing last_irreversible_block_num")),
            (
                json!({"code":500,"message":"Internal Service Error","error":{"code":3010004,"name":"chain_type_exception"}}),
                Some("missing head_block_num"),
            ),
        ];
        for (body, want) in cases {
            match (parse_get_info(&body), want) {
                (Ok(_), None) => {}
                (Err(e), Some(w)) => assert!(e.contains(w), "{e} lacks {w}"),
                (other, want) => panic!("{body}: got {other:?}, wanted an error with {want:?}"),
            }
        }
        assert!(parse_paused(&json!("false")).is_err());
        assert!(parse_paused(&json!({"paused":false})).is_err());
    }
}
