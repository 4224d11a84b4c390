//! The `command` probe, for every chain without a built-in adapter (Tezos, Algorand, Cardano,
//! Polkadot, …): runs the configured command and reads what it prints on stdout.
//!
//! Two forms are accepted: a bare decimal height (`1234567`), or one JSON object
//! `{"height": 1234567, "catching_up": false, "peers": 12, "latest_block_time": "…",
//! "signing": true, "producing": false}` where only `height` is required. An unknown field is an
//! error that names it: a misspelt `catchingup` must not silently count as "in sync". A non-zero
//! exit, a timeout or any other output fails the probe with stderr's tail quoted.

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use super::rpc::{self, decimal_u64};
use super::{ChainProbe, ChainSample, ProbeError};
use crate::domain::rfc3339;
use crate::operator_command;

const FIELDS: &str = "height, catching_up, peers, latest_block_time, latest_block_time_ms, signing, producing";

pub struct CommandProbe {
    source: String,
    argv: Vec<String>,
}

impl CommandProbe {
    pub fn new(source: impl Into<String>, argv: Vec<String>) -> CommandProbe {
        CommandProbe { source: source.into(), argv }
    }
}

/// Parses what the command printed.
pub fn parse_output(stdout: &[u8]) -> Result<ChainSample, String> {
    let text = std::str::from_utf8(stdout).map_err(|e| format!("output is not UTF-8: {e}"))?.trim();
    if text.is_empty() {
        return Err("the command printed nothing; expected a height or a JSON object".into());
    }
    if text.bytes().all(|c| c.is_ascii_digit()) {
        return decimal_u64(&Value::String(text.to_string()), "height").map(ChainSample::at);
    }
    let v: Value = serde_json::from_str(text).map_err(|e| {
        format!("expected a decimal height or a JSON object, found {:?} ({e})", rpc::quote(text.as_bytes()))
    })?;
    let Value::Object(fields) = v else {
        return Err(format!("expected a decimal height or a JSON object, found {}", rpc::quote(text.as_bytes())));
    };
    let mut sample = ChainSample::at(decimal_u64(fields.get("height").ok_or("missing height")?, "height")?);
    for (name, value) in &fields {
        let optional_bool = |v: &Value| if v.is_null() { Ok(None) } else { rpc::boolean(v, name).map(Some) };
        match name.as_str() {
            "height" => {}
            "catching_up" => sample.catching_up = optional_bool(value)?.unwrap_or(false),
            "signing" => sample.signing = optional_bool(value)?,
            "producing" => sample.producing = optional_bool(value)?,
            "peers" => {
                let n = decimal_u64(value, "peers")?;
                sample.peers = Some(u32::try_from(n).map_err(|_| format!("peers: {n} is not a plausible peer count"))?);
            }
            "latest_block_time" => {
                let t = rfc3339::parse_unix_millis(rpc::string(value, name)?).map_err(|e| format!("{name}: {e}"))?;
                sample.latest_block_time_ms = Some(t);
            }
            "latest_block_time_ms" => {
                let t = decimal_u64(value, name)?;
                sample.latest_block_time_ms =
                    Some(i64::try_from(t).map_err(|_| format!("{name}: {t} is not a plausible time"))?);
            }
            other => return Err(format!("unknown field {other:?}; expected {FIELDS}")),
        }
    }
    Ok(sample)
}

#[async_trait]
impl ChainProbe for CommandProbe {
    fn source(&self) -> &str {
        &self.source
    }

    async fn probe(&self, deadline: Instant) -> Result<ChainSample, ProbeError> {
        let output = operator_command::run(&self.argv, &[], deadline).await.map_err(|e| match e {
            operator_command::CommandError::Timeout { .. } => ProbeError::Timeout { source_name: self.source.clone() },
            other => ProbeError::Unreachable { source_name: self.source.clone(), detail: other.to_string() },
        })?;
        parse_output(&output.stdout).map_err(|d| ProbeError::malformed(&self.source, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bare_height() {
        assert_eq!(parse_output(b"1234567\n"), Ok(ChainSample::at(1_234_567)));
        assert_eq!(parse_output(b"  0 "), Ok(ChainSample::at(0)));
        assert_eq!(parse_output(b"18446744073709551615"), Ok(ChainSample::at(u64::MAX)));
    }

    #[test]
    fn a_json_object() {
        let s = parse_output(
            br#"{"height":"42","catching_up":true,"peers":7,"latest_block_time":"2026-11-21T13:48:16Z","signing":false,"producing":null}"#,
        )
        .expect("valid");
        assert_eq!((s.height, s.catching_up, s.peers, s.signing, s.producing), (42, true, Some(7), Some(false), None));
        assert_eq!(s.latest_block_time_ms, Some(1_795_268_896_000));
    }

    #[test]
    fn bad_output_names_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "printed nothing"),
            (b"18446744073709551616", "does not fit"),
            (b"-1", "expected a decimal height"),
            (b"12 blocks", "expected a decimal height"),
            (b"[12]", "JSON object"),
            (br#"{"catching_up":false}"#, "missing height"),
            (br#"{"height":1,"catchingup":false}"#, "unknown field \"catchingup\""),
            (br#"{"height":1,"peers":-3}"#, "peers"),
            (br#"{"height":1,"signing":"yes"}"#, "signing"),
            (b"\xff\xfe", "UTF-8"),
        ];
        for (out, want) in cases {
            let err = parse_output(out).expect_err("refused");
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }

    #[tokio::test]
    async fn runs_the_command_and_fails_on_its_errors() {
        let soon = Instant::now() + Duration::from_secs(10);
        let ok = CommandProbe::new("local", vec!["sh".into(), "-c".into(), "echo '{\"height\": 9}'".into()]);
        assert_eq!(ok.probe(soon).await, Ok(ChainSample::at(9)));
        let failing = CommandProbe::new("local", vec!["sh".into(), "-c".into(), "echo 'rpc down' >&2; exit 1".into()]);
        let err = failing.probe(soon).await.expect_err("fails");
        assert!(err.to_string().contains("rpc down"), "{err}");
        let slow = CommandProbe::new("local", vec!["sleep".into(), "600".into()]);
        let err = slow.probe(Instant::now() + Duration::from_millis(200)).await.expect_err("times out");
        assert!(matches!(err, ProbeError::Timeout { .. }), "{err}");
    }
}
