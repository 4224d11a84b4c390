//! CometBFT's `priv_validator_state.json`, which failoverd reads to raise the watermark before a
//! key-holding node signs. Properties: a refusal is readable; an accepted state written the way
//! CometBFT writes it reads back to the same HRS.
#![no_main]

use failover::producer::cometbft_filepv::{parse_state, state_json};
use failover_fuzz::assert_readable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_state(data) {
        Err(e) => assert_readable(&e, "priv_validator_state.json"),
        Ok(hrs) => {
            let written = state_json(hrs).to_string();
            assert_eq!(parse_state(written.as_bytes()), Ok(hrs), "the state does not read back: {written}");
        }
    }
});
