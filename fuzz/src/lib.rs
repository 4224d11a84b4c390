//! What the fuzz targets share: reading the fuzzer's bytes the way the daemon receives them,
//! and the property checks that more than one target makes. Never used by the daemon.

use std::collections::BTreeSet;

use failover::domain::MemberId;
use serde_json::Value;

/// The bytes as the daemon's JSON readers see them: parsed by serde_json, or `None` (every
/// reader refuses text that is not JSON before looking at a field).
pub fn json(data: &[u8]) -> Option<Value> {
    serde_json::from_slice(data).ok()
}

/// The bytes as text, when they are UTF-8 (what a file or header reader requires first).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A refusal the operator reads: it must say something, and stay a line a log can carry.
pub fn assert_readable(message: &str, what: &str) {
    assert!(!message.trim().is_empty(), "{what}: an empty refusal");
    assert!(message.len() <= 64 * 1024, "{what}: a refusal of {} bytes", message.len());
}

/// A time in Unix milliseconds as RFC 3339, the way nodes write block times.
pub fn rfc3339_of_millis(ms: i64) -> String {
    failover::domain::rfc3339::format_unix_nanos(i128::from(ms) * 1_000_000)
}

/// A time in Unix milliseconds that a parser accepted must print as RFC 3339 and parse back
/// to the same instant.
pub fn assert_time_round_trips(ms: i64, what: &str) {
    let text = rfc3339_of_millis(ms);
    let back = failover::domain::rfc3339::parse_unix_millis(&text);
    assert_eq!(back, Ok(ms), "{what}: {ms} ms printed as {text:?} does not read back");
}

/// The cluster the peer-message targets are members of: raft ids 1 to 3, members a, b and c.
pub fn configured_cluster() -> (BTreeSet<u64>, BTreeSet<MemberId>) {
    let members = ["a", "b", "c"].iter().map(|m| MemberId::new(*m).expect("a member id")).collect();
    ([1, 2, 3].into(), members)
}
