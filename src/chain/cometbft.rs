//! CometBFT RPC probe: `/status` (height, latest block time, `catching_up`), `/net_info` (peer
//! count) and, when our validator address is configured, `/commit?height=N` over the last
//! `signing_window` heights to tell whether our validator still signs. The simulated chain
//! speaks the `/status` part of this dialect.
//!
//! Commits already read are remembered, so a steady probe reads about one commit per block, not
//! the whole window. Never panics on a response: anything missing, mistyped or out of range
//! becomes a [`ProbeError`] that names the field.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use super::rpc::{self, JsonEndpoint, decimal_string, field};
use super::{ChainProbe, ChainSample, ProbeError};
use crate::config::HttpUrl;
use crate::domain::rfc3339;

/// Most commits read in one probe: a fresh daemon fills a long window over several probes
/// instead of sending hundreds of requests at once.
const MAX_COMMITS_PER_PROBE: usize = 16;

/// What the probe reads besides `/status`.
#[derive(Clone, Debug, Default)]
pub struct CometbftChecks {
    /// Read `/net_info` for the peer count.
    pub peers: bool,
    /// Our validator's address (hex) and how many recent commits to search for it.
    pub signing: Option<(String, u32)>,
}

pub struct CometbftProbe {
    source: String,
    endpoint: JsonEndpoint,
    checks: CometbftChecks,
    /// Height → whether our validator's signature is in that height's commit.
    commits: Mutex<BTreeMap<u64, bool>>,
}

impl CometbftProbe {
    pub fn new(
        source: impl Into<String>,
        rpc: &HttpUrl,
        timeout: Duration,
        checks: CometbftChecks,
    ) -> Result<CometbftProbe, ProbeError> {
        let source = source.into();
        let endpoint = JsonEndpoint::new(rpc, timeout).map_err(|e| ProbeError::from_exchange(&source, e))?;
        Ok(CometbftProbe { source, endpoint, checks, commits: Mutex::new(BTreeMap::new()) })
    }

    /// The heights of the signing window below `height` (whose own commit is not final yet).
    fn window(height: u64, size: u32) -> Option<std::ops::RangeInclusive<u64>> {
        let top = height.checked_sub(1).filter(|&t| t >= 1)?;
        let bottom = top.checked_sub(u64::from(size) - 1).filter(|&b| b >= 1)?;
        Some(bottom..=top)
    }

    async fn signing(
        &self,
        height: u64,
        address: &str,
        size: u32,
        deadline: Instant,
    ) -> Result<Option<bool>, ProbeError> {
        let Some(window) = Self::window(height, size) else { return Ok(None) };
        let missing: Vec<u64> = {
            let mut known = self.commits.lock().unwrap_or_else(|e| e.into_inner());
            known.retain(|h, _| window.contains(h));
            window.clone().rev().filter(|h| !known.contains_key(h)).take(MAX_COMMITS_PER_PROBE).collect()
        };
        for h in missing {
            let body = self
                .endpoint
                .get(&format!("commit?height={h}"), deadline)
                .await
                .map_err(|e| ProbeError::from_exchange(&self.source, e))?;
            let signed = signed_in_commit(&body, h, address).map_err(|d| ProbeError::malformed(&self.source, d))?;
            self.commits.lock().unwrap_or_else(|e| e.into_inner()).insert(h, signed);
        }
        let known = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        if window.clone().all(|h| known.contains_key(&h)) {
            Ok(Some(window.into_iter().any(|h| known.get(&h) == Some(&true))))
        } else {
            Ok(None)
        }
    }
}

fn rpc_error(v: &Value) -> Result<(), String> {
    match v.get("error") {
        Some(err) => Err(format!("the node answered with an error: {}", rpc::quote(err.to_string().as_bytes()))),
        None => Ok(()),
    }
}

/// Parses a `/status` body.
pub fn parse_status(v: &Value) -> Result<ChainSample, String> {
    rpc_error(v)?;
    let height =
        decimal_string(field(v, "/result/sync_info/latest_block_height")?, "result.sync_info.latest_block_height")?;
    let catching_up = rpc::boolean(field(v, "/result/sync_info/catching_up")?, "result.sync_info.catching_up")?;
    let latest_block_time_ms = match v.pointer("/result/sync_info/latest_block_time") {
        None | Some(Value::Null) => None,
        Some(t) => Some(
            rfc3339::parse_unix_millis(rpc::string(t, "result.sync_info.latest_block_time")?)
                .map_err(|e| format!("result.sync_info.latest_block_time: {e}"))?,
        ),
    };
    Ok(ChainSample { height, latest_block_time_ms, catching_up, ..ChainSample::default() })
}

/// Parses a `/net_info` body into the peer count.
pub fn parse_net_info(v: &Value) -> Result<u32, String> {
    rpc_error(v)?;
    let n = decimal_string(field(v, "/result/n_peers")?, "result.n_peers")?;
    u32::try_from(n).map_err(|_| format!("result.n_peers: {n} is not a plausible peer count"))
}

/// Whether `address` signed (for the block or nil) in a `/commit?height=…` body for `height`.
pub fn signed_in_commit(v: &Value, height: u64, address: &str) -> Result<bool, String> {
    rpc_error(v)?;
    let commit = field(v, "/result/signed_header/commit")?;
    let at = decimal_string(field(commit, "/height")?, "result.signed_header.commit.height")?;
    if at != height {
        return Err(format!("result.signed_header.commit.height: asked for {height}, the node answered {at}"));
    }
    let Value::Array(signatures) = field(commit, "/signatures")? else {
        return Err("result.signed_header.commit.signatures: expected an array".into());
    };
    for (i, sig) in signatures.iter().enumerate() {
        let name = |f: &str| format!("result.signed_header.commit.signatures[{i}].{f}");
        let flag = sig.get("block_id_flag").ok_or_else(|| format!("missing {}", name("block_id_flag")))?;
        let flag = flag.as_u64().ok_or_else(|| format!("{}: expected 1, 2 or 3", name("block_id_flag")))?;
        // 1 = absent; 2 = voted for the block; 3 = voted nil (still a signature of ours).
        if !(1..=3).contains(&flag) {
            return Err(format!("{}: expected 1, 2 or 3, found {flag}", name("block_id_flag")));
        }
        let who = match sig.get("validator_address") {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Null) | None => "",
            Some(_) => return Err(format!("{}: expected a hex string", name("validator_address"))),
        };
        if flag != 1 && who.eq_ignore_ascii_case(address) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[async_trait]
impl ChainProbe for CometbftProbe {
    fn source(&self) -> &str {
        &self.source
    }

    async fn probe(&self, deadline: Instant) -> Result<ChainSample, ProbeError> {
        let status =
            self.endpoint.get("status", deadline).await.map_err(|e| ProbeError::from_exchange(&self.source, e))?;
        let mut sample = parse_status(&status).map_err(|d| ProbeError::malformed(&self.source, d))?;
        if self.checks.peers {
            let info = self
                .endpoint
                .get("net_info", deadline)
                .await
                .map_err(|e| ProbeError::from_exchange(&self.source, e))?;
            sample.peers = Some(parse_net_info(&info).map_err(|d| ProbeError::malformed(&self.source, d))?);
        }
        if let Some((address, size)) = &self.checks.signing {
            sample.signing = self.signing(sample.height, address, *size, deadline).await?;
        }
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A `/status` answer as CometBFT v0.38 prints it (trimmed node_info).
    const STATUS: &str = r#"{"jsonrpc":"2.0","id":-1,"result":{"node_info":{"protocol_version":{"p2p":"8","block":"11","app":"0"},"id":"5576458aef205977e18fd50b274e9b5d9014525a","listen_addr":"tcp://0.0.0.0:26656","network":"cosmoshub-4","version":"0.38.12","channels":"40202122233038606100","moniker":"node","other":{"tx_index":"on","rpc_address":"tcp://0.0.0.0:26657"}},"sync_info":{"latest_block_hash":"0F4B4D0F1A2A8C3E3F3A9AE0B9DC5B0C7A6A1E6C9F8A6D1C1B0A9F8E7D6C5B4A","latest_app_hash":"5D7A1A2B","latest_block_height":"22751230","latest_block_time":"2026-11-21T13:48:16.123456789Z","earliest_block_hash":"1C2B","earliest_app_hash":"E3B0","earliest_block_height":"22500001","earliest_block_time":"2026-11-01T00:00:00Z","catching_up":false},"validator_info":{"address":"8C1E2C1A0B5E4D3F2A1B0C9D8E7F6A5B4C3D2E1F","pub_key":{"type":"tendermint/PubKeyEd25519","value":"nG0t0r9x9h2A6k1c0u1m6q2j4l5p8s7v3w0y2z4b6d8="},"voting_power":"0"}}}"#;

    const NET_INFO: &str = r#"{"jsonrpc":"2.0","id":-1,"result":{"listening":true,"listeners":["Listener(@)"],"n_peers":"2","peers":[{"node_info":{"id":"a"},"is_outbound":true,"remote_ip":"10.0.0.2"},{"node_info":{"id":"b"},"is_outbound":false,"remote_ip":"10.0.0.3"}]}}"#;

    const OURS: &str = "8C1E2C1A0B5E4D3F2A1B0C9D8E7F6A5B4C3D2E1F";

    fn commit(height: u64, signatures: Value) -> Value {
        json!({"jsonrpc":"2.0","id":-1,"result":{"signed_header":{"header":{"chain_id":"cosmoshub-4","height":height.to_string()},"commit":{"height":height.to_string(),"round":0,"block_id":{"hash":"AB"},"signatures":signatures}},"canonical":true}})
    }

    fn sig(flag: u64, address: &str) -> Value {
        json!({"block_id_flag":flag,"validator_address":address,"timestamp":"2026-11-21T13:48:16Z","signature":"c2ln"})
    }

    #[test]
    fn parses_a_recorded_status() {
        let s = parse_status(&serde_json::from_str(STATUS).expect("json")).expect("valid");
        assert_eq!((s.height, s.catching_up), (22_751_230, false));
        assert_eq!(s.latest_block_time_ms, Some(1_795_268_896_123));
        assert_eq!(parse_net_info(&serde_json::from_str(NET_INFO).expect("json")), Ok(2));
    }

    #[test]
    fn edge_values_of_status() {
        let at = |h: &str| json!({"result":{"sync_info":{"latest_block_height":h,"catching_up":true}}});
        let zero = parse_status(&at("0")).expect("height 0 is a fresh chain");
        assert_eq!((zero.height, zero.catching_up, zero.latest_block_time_ms), (0, true, None));
        assert_eq!(parse_status(&at("18446744073709551615")).expect("max").height, u64::MAX);
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let cases: &[(Value, &str)] = &[
            (json!({"result":{}}), "missing result.sync_info.latest_block_height"),
            (
                json!({"result":{"sync_info":{"latest_block_height":12,"catching_up":false}}}),
                "expected a decimal number",
            ),
            (json!({"result":{"sync_info":{"latest_block_height":"-1","catching_up":false}}}), "latest_block_height"),
            (
                json!({"result":{"sync_info":{"latest_block_height":"99999999999999999999999","catching_up":false}}}),
                "does not fit in 64 bits",
            ),
            (json!({"result":{"sync_info":{"latest_block_height":"1","catching_up":"no"}}}), "catching_up"),
            (
                json!({"result":{"sync_info":{"latest_block_height":"1","catching_up":false,"latest_block_time":"yesterday"}}}),
                "latest_block_time",
            ),
            (json!({"jsonrpc":"2.0","error":{"code":-32603,"message":"boom"}}), "answered with an error"),
            (json!([]), "missing result.sync_info"),
        ];
        for (body, want) in cases {
            let err = parse_status(body).expect_err("malformed");
            assert!(err.contains(want), "{err} lacks {want}");
        }
        assert!(parse_net_info(&json!({"result":{"n_peers":"99999999999"}})).is_err());
        assert!(parse_net_info(&json!({"result":{"n_peers":2}})).is_err(), "CometBFT prints a string");
    }

    #[test]
    fn finds_our_signature_in_a_commit() {
        let mixed = commit(10, json!([sig(2, "AA"), sig(1, ""), sig(3, &OURS.to_lowercase())]));
        assert_eq!(signed_in_commit(&mixed, 10, OURS), Ok(true), "a nil vote is still our signature");
        let absent = commit(
            10,
            json!([sig(2, "AA"), {"block_id_flag":1,"validator_address":"","timestamp":"0001-01-01T00:00:00Z","signature":null}]),
        );
        assert_eq!(signed_in_commit(&absent, 10, OURS), Ok(false));
        assert_eq!(signed_in_commit(&commit(10, json!([sig(1, OURS)])), 10, OURS), Ok(false), "flag 1 is absent");
        assert_eq!(signed_in_commit(&commit(10, json!([])), 10, OURS), Ok(false));
    }

    #[test]
    fn a_commit_for_another_height_or_of_the_wrong_shape_is_refused() {
        assert!(signed_in_commit(&commit(11, json!([])), 10, OURS).expect_err("other height").contains("asked for 10"));
        assert!(signed_in_commit(&commit(10, json!({})), 10, OURS).expect_err("object").contains("signatures"));
        assert!(
            signed_in_commit(&commit(10, json!([sig(7, OURS)])), 10, OURS)
                .expect_err("flag")
                .contains("[0].block_id_flag")
        );
        let wrong_type = commit(10, json!([{"block_id_flag":2,"validator_address":5}]));
        assert!(signed_in_commit(&wrong_type, 10, OURS).expect_err("type").contains("validator_address"));
    }

    #[test]
    fn the_signing_window_ends_below_the_latest_height() {
        assert_eq!(CometbftProbe::window(101, 100), Some(1..=100));
        assert_eq!(CometbftProbe::window(100, 100), None, "not enough history yet");
        assert_eq!(CometbftProbe::window(0, 1), None);
        assert_eq!(CometbftProbe::window(2, 1), Some(1..=1));
    }
}
