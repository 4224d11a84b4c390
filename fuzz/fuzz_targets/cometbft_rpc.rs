//! A CometBFT node's RPC answers: `/status`, `/net_info` and `/commit?height=…` (the same
//! bytes through each reader). Properties: a refusal is readable; an accepted `/status` written
//! back the way CometBFT writes it reads back to the same sample, its block time prints and
//! reads back; `/commit` says "signed" only when a signature of ours with flag 2 or 3 is there.
#![no_main]

use failover::chain::cometbft::{parse_net_info, parse_status, signed_in_commit};
use failover_fuzz::{assert_readable, assert_time_round_trips, json, rfc3339_of_millis};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const OURS: &str = "0A1B2C3D4E5F60718293A4B5C6D7E8F901234567";

fuzz_target!(|data: &[u8]| {
    let Some(v) = json(data) else { return };
    match parse_status(&v) {
        Err(e) => assert_readable(&e, "/status"),
        Ok(sample) => {
            let mut sync = json!({
                "latest_block_height": sample.height.to_string(),
                "catching_up": sample.catching_up,
            });
            if let Some(ms) = sample.latest_block_time_ms {
                assert_time_round_trips(ms, "/status latest_block_time");
                sync["latest_block_time"] = Value::String(rfc3339_of_millis(ms));
            }
            let again = parse_status(&json!({ "result": { "sync_info": sync } })).expect("its own rendering");
            assert_eq!(again, sample, "/status does not read back");
        }
    }
    match parse_net_info(&v) {
        Err(e) => assert_readable(&e, "/net_info"),
        Ok(n) => assert_eq!(parse_net_info(&json!({"result": {"n_peers": n.to_string()}})), Ok(n)),
    }
    let asked = v.pointer("/result/signed_header/commit/height").and_then(Value::as_str).and_then(|h| h.parse().ok());
    let Some(height) = asked else { return };
    match signed_in_commit(&v, height, OURS) {
        Err(e) => assert_readable(&e, "/commit"),
        Ok(signed) => {
            let ours = |s: &Value| {
                s.get("validator_address").and_then(Value::as_str).is_some_and(|a| a.eq_ignore_ascii_case(OURS))
                    && matches!(s.get("block_id_flag").and_then(Value::as_u64), Some(2 | 3))
            };
            let listed = v.pointer("/result/signed_header/commit/signatures").and_then(Value::as_array);
            assert_eq!(signed, listed.is_some_and(|sigs| sigs.iter().any(ours)), "/commit: signed is {signed}");
        }
    }
});
