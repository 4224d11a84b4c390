//! What the `command` probe's program prints: a decimal height or a JSON object. Properties: a
//! refusal is readable; an accepted sample written back as the JSON object the probe documents
//! reads back to the same sample.
#![no_main]

use failover::chain::command::parse_output;
use failover_fuzz::{assert_readable, assert_time_round_trips, rfc3339_of_millis};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    match parse_output(data) {
        Err(e) => assert_readable(&e, "command output"),
        Ok(sample) => {
            let mut written = json!({ "height": sample.height, "catching_up": sample.catching_up });
            if let Some(n) = sample.peers {
                written["peers"] = json!(n);
            }
            if let Some(s) = sample.signing {
                written["signing"] = json!(s);
            }
            if let Some(p) = sample.producing {
                written["producing"] = json!(p);
            }
            if let Some(ms) = sample.latest_block_time_ms {
                assert_time_round_trips(ms, "latest_block_time");
                written["latest_block_time"] = json!(rfc3339_of_millis(ms));
            }
            let again = parse_output(written.to_string().as_bytes()).expect("its own rendering");
            assert_eq!(again, sample, "command output does not read back");
        }
    }
});
