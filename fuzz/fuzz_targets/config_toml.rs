//! A member's config file (TOML) into a validated config. Properties: a refusal names at least
//! one problem, each readable; a config that passes validation prints (`check-config`) as TOML
//! that parses back into the same config and prints the same again, and every bound the
//! operator's values must respect holds.
#![no_main]

use std::time::Duration;

use failover::config::Config;
use failover_fuzz::{assert_readable, text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else { return };
    match Config::parse(text) {
        Err(problems) => {
            assert!(!problems.is_empty(), "a refused config names no problem");
            for p in &problems {
                assert_readable(&p.to_string(), "a config problem");
            }
        }
        Ok(config) => {
            assert_sane(&config);
            let printed = config.to_toml();
            let again = Config::parse(&printed)
                .unwrap_or_else(|p| panic!("a valid config printed as TOML does not parse back: {p:?}\n{printed}"));
            assert_eq!(again.to_toml(), printed, "printing the config again changes it");
            assert_eq!(again, Config::parse(&again.to_toml()).expect("parses"), "not a fixed point");
        }
    }
});

/// Bounds every valid config must respect (config/validate/limits.rs states them; this is an
/// independent reading of the ones a wrong value would hurt most).
fn assert_sane(c: &Config) {
    let co = &c.coordinator;
    assert!(co.lease_ttl > Duration::ZERO && co.lease_ttl <= Duration::from_secs(300), "lease_ttl {:?}", co.lease_ttl);
    assert!(co.renew_interval < co.lease_ttl, "renew_interval {:?} ≥ lease_ttl", co.renew_interval);
    assert!(co.raft.tick >= Duration::from_millis(1) && co.raft.tick <= Duration::from_secs(1), "raft.tick");
    for (_, v) in c.validator_configs() {
        assert!(v.coordinator.lease_ttl <= Duration::from_secs(300), "a validator's lease_ttl");
    }
    assert!(!c.members.is_empty(), "a valid config lists its members");
}
