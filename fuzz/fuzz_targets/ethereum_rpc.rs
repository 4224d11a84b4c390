//! An Ethereum node's JSON-RPC answers (`eth_blockNumber`, `eth_syncing`, `net_peerCount`),
//! through the JSON-RPC envelope reader first. Properties: a refusal is readable; an accepted
//! quantity written back as the shortest `0x` hex reads back to the same number; a syncing
//! object says "syncing" exactly when its current block is below its highest.
#![no_main]

use failover::chain::ethereum::{parse_block_number, parse_peer_count, parse_syncing};
use failover::chain::rpc::{hex_u64, rpc_result};
use failover_fuzz::{assert_readable, json};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Some(answer) = json(data) else { return };
    let result = rpc_result(answer);
    if let Err(e) = &result {
        assert_readable(&e.to_string(), "the JSON-RPC envelope");
    }
    if let Ok(result) = &result {
        match parse_block_number(result) {
            Err(e) => assert_readable(&e, "eth_blockNumber"),
            Ok(n) => assert_eq!(parse_block_number(&json!(format!("{n:#x}"))), Ok(n)),
        }
        match parse_syncing(result) {
            Err(e) => assert_readable(&e, "eth_syncing"),
            Ok(syncing) => {
                if let Value::Object(progress) = result {
                    let at = |f: &str| progress.get(f).and_then(|v| hex_u64(v, f).ok());
                    if let (Some(current), Some(highest)) = (at("currentBlock"), at("highestBlock")) {
                        assert_eq!(syncing, current < highest, "eth_syncing {current} of {highest}");
                    }
                }
            }
        }
    }
    match parse_peer_count(result) {
        Err(e) => assert_readable(&e.to_string(), "net_peerCount"),
        Ok(None) => {}
        Ok(Some(n)) => assert_eq!(parse_peer_count(Ok(json!(format!("{n:#x}")))).ok(), Some(Some(n))),
    }
});
