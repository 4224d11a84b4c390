//! The watermark interchange JSON an operator imports (`failoverctl watermark import`).
//! Properties: a refusal names the field; accepted entries export as version 2 and parse back
//! to the same entries; an entry is refused by the daemon's import bound exactly when its
//! height is above 2^53.
#![no_main]

use failover::domain::interchange::{self, Interchange};
use failover::domain::{IMPORT_HEIGHT_CEILING, check_import_height};
use failover_fuzz::{assert_readable, text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else { return };
    match interchange::parse(text) {
        Err(e) => assert_readable(&e.to_string(), "an interchange refusal"),
        Ok(entries) => {
            let rendered = Interchange::export(Some("fuzz".into()), &entries).render();
            let back = interchange::parse(&rendered)
                .unwrap_or_else(|e| panic!("an export of accepted entries does not parse back: {e}\n{rendered}"));
            assert_eq!(back, entries, "entries change through export and import");
            for e in &entries {
                let refused = check_import_height(e.hrs.height).is_err();
                assert_eq!(refused, e.hrs.height > IMPORT_HEIGHT_CEILING, "the import bound at {}", e.hrs.height);
            }
        }
    }
});
