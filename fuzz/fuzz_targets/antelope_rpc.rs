//! An Antelope node's answers: `/v1/chain/get_info` and `/v1/producer/paused`. Properties: a
//! refusal is readable; accepted info never has the irreversible block above the head, its head
//! block time prints and reads back, and the info written back reads back the same.
#![no_main]

use failover::chain::antelope::{parse_get_info, parse_paused};
use failover_fuzz::{assert_readable, assert_time_round_trips, json, rfc3339_of_millis};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some(v) = json(data) else { return };
    match parse_get_info(&v) {
        Err(e) => assert_readable(&e, "get_info"),
        Ok(info) => {
            assert!(info.last_irreversible_block_num <= info.head_block_num, "irreversible above head");
            assert_time_round_trips(info.head_block_time_ms, "head_block_time");
            let written = json!({
                "head_block_num": info.head_block_num,
                "last_irreversible_block_num": info.last_irreversible_block_num,
                "head_block_producer": info.head_block_producer,
                "head_block_time": rfc3339_of_millis(info.head_block_time_ms),
            });
            assert_eq!(parse_get_info(&written).as_ref(), Ok(&info), "get_info does not read back");
        }
    }
    if let Err(e) = parse_paused(&v) {
        assert_readable(&e, "paused");
    }
});
