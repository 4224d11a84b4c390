//! Arbitrary bytes from a node into the privval frame decoder: it must answer with a frame, "need
//! more", or an error, never panic, and never report consuming more than it was given.
#![no_main]

use failover::producer::privval::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, used))) = frame::decode(data) {
        assert!(used <= data.len());
    }
    let _ = frame::read_message(&mut std::io::Cursor::new(data));
});
