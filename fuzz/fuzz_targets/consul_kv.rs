//! What the Consul backend reads from Consul's KV API: a `GET /v1/kv/…` answer (entries with
//! base64 values), then each value as the backend reads it — the leader key's holder, a
//! watermark, the intents, a member's status. Properties: a refusal is readable; a value the
//! backend reads encodes as JSON and reads back the same; a lease is held exactly when the
//! entry carries a session.
#![no_main]

use failover::coord::consul::agent::parse_kv_entries;
use failover::coord::consul::{IntentsValue, LeaderValue, decode, leader_view};
use failover::domain::{LeaseView, MemberStatus, Watermark};
use failover_fuzz::assert_readable;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    let entries = match parse_kv_entries("GET /v1/kv/failoverd/?recurse", data) {
        Err(e) => return assert_readable(&e.to_string(), "a KV answer"),
        Ok(entries) => entries,
    };
    for entry in &entries {
        match leader_view(Some(entry)) {
            Err(e) => assert_readable(&e.to_string(), "the leader key"),
            Ok(LeaseView::Held { .. }) => assert!(entry.session.is_some(), "held without a session"),
            Ok(LeaseView::Free { .. }) => assert!(entry.session.is_none(), "free with a session"),
        }
        round_trips::<LeaderValue>(entry);
        round_trips::<Watermark>(entry);
        round_trips::<IntentsValue>(entry);
        round_trips::<MemberStatus>(entry);
    }
});

fn round_trips<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    entry: &failover::coord::consul::agent::KvEntry,
) {
    match decode::<T>(entry) {
        Err(e) => assert_readable(&e.to_string(), "a KV value"),
        Ok(value) => {
            let mut again = entry.clone();
            again.value = serde_json::to_vec(&value).expect("a value encodes");
            assert_eq!(decode::<T>(&again).as_ref().ok(), Some(&value), "a KV value changes through JSON");
        }
    }
}
