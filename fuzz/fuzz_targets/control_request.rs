//! Control API requests as the server reads them, before any store call: the validator header
//! every call meets first, a `Promote` target, and a `WatermarkImport` request's entries and
//! their bound. The first byte chooses which; the rest is the request's protobuf (or the
//! header's bytes). Properties: a refusal is readable; an accepted import names only the
//! served key, once each, at the highest HRS asked for it, and passes the bound only at or
//! below 2^53 and (without force) at most import_max_ahead above the best known height.
#![no_main]

use std::collections::BTreeMap;

use failover::api::{VALIDATOR_HEADER, check_import_bound, import_entries, service_named};
use failover::domain::{Hrs, IMPORT_HEIGHT_CEILING, KeyId, MemberId, ValidatorId};
use failover::proto::v1::{PromoteRequest, WatermarkImportRequest};
use failover_fuzz::assert_readable;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tonic::metadata::MetadataValue;

const MAX_AHEAD: u64 = 1000;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 3 {
        0 => header(rest),
        1 => {
            let Ok(req) = PromoteRequest::decode(rest) else { return };
            if let Err(e) = MemberId::new(req.target) {
                assert_readable(&format!("target: {e}"), "a promote target");
            }
        }
        _ => import(which, rest),
    }
});

fn header(bytes: &[u8]) {
    let services: BTreeMap<ValidatorId, &str> =
        ["cosmoshub", "osmosis"].iter().map(|v| (ValidatorId::new(*v).expect("a validator id"), *v)).collect();
    let Ok(value) = MetadataValue::try_from(bytes) else { return };
    match service_named(&services, Some(&value)) {
        Err(status) => assert_readable(status.message(), VALIDATOR_HEADER),
        Ok(named) => assert_eq!(value.to_str().ok(), Some(*named), "a header chose a validator it does not name"),
    }
}

fn import(which: u8, bytes: &[u8]) {
    let Ok(req) = WatermarkImportRequest::decode(bytes) else { return };
    let served = KeyId::new("validator-key").expect("a key id");
    let entries = match import_entries(&served, &req.entries) {
        Err(status) => return assert_readable(status.message(), "an import refusal"),
        Ok(entries) => entries,
    };
    assert_eq!(entries.len(), 1, "an accepted import names the served key once");
    let (key, hrs) = &entries[0];
    assert_eq!(key, &served);
    let highest = req.entries.iter().filter_map(|e| e.hrs.and_then(|h| Hrs::try_from(h).ok())).max();
    assert_eq!(Some(*hrs), highest, "the import is not the highest HRS asked for");
    let best = (which & 0x80 != 0).then_some(u64::from(which & 0x7f) * 1_000_000);
    let force = which & 0x40 != 0;
    match check_import_bound(key, hrs.height, best, MAX_AHEAD, force) {
        Err(why) => assert_readable(&why, "an import bound"),
        Ok(()) => {
            assert!(hrs.height <= IMPORT_HEIGHT_CEILING, "an import above 2^53 passed");
            if !force {
                let best = best.expect("without force a known height is needed");
                assert!(hrs.height <= best.saturating_add(MAX_AHEAD), "an import beyond import_max_ahead passed");
            }
        }
    }
}
