//! A Solana node's JSON-RPC answers (`getSlot`, `getHealth`), through the envelope reader.
//! Properties: a refusal is readable; an accepted slot written back reads back the same; health
//! is "behind" only for the node's own unhealthy error.
#![no_main]

use failover::chain::rpc::rpc_result;
use failover::chain::solana::{parse_health, parse_slot};
use failover_fuzz::{assert_readable, json};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some(answer) = json(data) else { return };
    let result = rpc_result(answer);
    if let Ok(result) = &result {
        match parse_slot(result) {
            Err(e) => assert_readable(&e, "getSlot"),
            Ok(slot) => assert_eq!(parse_slot(&json!(slot)), Ok(slot)),
        }
    }
    let was_error = result.is_err();
    match parse_health(result) {
        Err(e) => assert_readable(&e.to_string(), "getHealth"),
        Ok(behind) => assert!(!behind || was_error, "\"behind\" from an answer that was not the node's error"),
    }
});
