//! The validators one lab's cluster serves (`--validators N`, issue 22): `v1`, the validator the
//! scenarios aim their faults at and L1/L2 judge, and `v2`… `vN`, *bystanders* that share the
//! members, the raft group and the daemons with it, each with its own simulated chain, key,
//! signature ledger and activation log.
//!
//! With one validator the lab writes the single-validator member configs it always has, with no
//! id and no request header; with several, each member's config lists every validator as a
//! `[[validators]]` entry, made from the single-validator config the shared lab renders for it
//! and splits (`split_validator_tables`, as the integration tests' two-chain lab does;
//! [`member_config`]). This module only plans names and files and composes text: it starts
//! nothing and judges nothing.

use std::path::{Path, PathBuf};

use failover::sim::lab::split_validator_tables;

use crate::lab::{MEMBERS, PRODUCERS};

/// The most validators one lab serves: each bystander adds a node per producer (and in
/// key-holding mode a validator process), on machines with two cores.
pub const MAX_VALIDATORS: usize = 8;

/// The validator key seed of the lab's first validator, the key of every lab before issue 22.
const FIRST_SEED: u8 = 0x5a;

/// One validator of the lab and where its evidence goes.
#[derive(Clone, Debug)]
pub struct LabValidator {
    /// `v1`, `v2`, …: its `[[validators]]` id and metrics label (with several validators).
    pub id: String,
    /// Where its nodes record every signature.
    pub ledger: PathBuf,
    /// Where its validators record their starts (key-holding mode; the death watch records
    /// their deaths) or its nodes their permission changes (signer mode).
    pub activations: PathBuf,
    /// Its validator key, shared by its producers, of its own seed.
    pub key_file: PathBuf,
    pub seed: [u8; 32],
}

/// The lab's `count` validators with their files in `dir`. The first keeps the names every lab
/// before issue 22 used (`ledger.jsonl`, `activations.jsonl`, `priv_validator_key.json`), so
/// that one validator is exactly the lab of before.
pub fn plan(dir: &Path, count: usize) -> Vec<LabValidator> {
    (0..count.max(1))
        .map(|k| {
            let suffix = if k == 0 { String::new() } else { format!("-v{}", k + 1) };
            LabValidator {
                id: format!("v{}", k + 1),
                ledger: dir.join(format!("ledger{suffix}.jsonl")),
                activations: dir.join(format!("activations{suffix}.jsonl")),
                key_file: dir.join(format!("priv_validator_key{suffix}.json")),
                seed: [FIRST_SEED.wrapping_add(k as u8); 32],
            }
        })
        .collect()
}

/// Member `member`'s CometBFT-style home for validator `k`'s validator (key-holding mode).
pub fn home(dir: &Path, member: &str, k: usize) -> PathBuf {
    match k {
        0 => dir.join(format!("home-{member}")),
        _ => dir.join(format!("home-{member}-v{}", k + 1)),
    }
}

/// The producer validator `k` prefers: the lab's first validator keeps the cluster's priorities
/// (a first); every bystander prefers the other producer, so that the actives differ when the
/// leases go where the priorities say (nothing here depends on it).
pub fn preferred(k: usize) -> usize {
    if k == 0 { 0 } else { 1 % PRODUCERS }
}

/// One member's config serving every validator of `validators`, from the single-validator
/// config the shared lab rendered for each (`texts`, in the same order): the shared sections of
/// the first, then one `[[validators]]` entry per validator with its id, its priorities, its own
/// key id and its own tables (none on a witness).
pub fn member_config(validators: &[LabValidator], texts: &[String]) -> String {
    let mut shared = None;
    let mut entries = String::new();
    for (k, (v, text)) in validators.iter().zip(texts).enumerate() {
        let (common, own) = split_validator_tables(text);
        shared.get_or_insert(common);
        let own = own.replace("[validators.producer]\n", &format!("[validators.producer]\nkey_id = \"{}\"\n", v.id));
        entries.push_str(&format!("[[validators]]\nid = \"{}\"\n{}{own}", v.id, priorities(k)));
    }
    format!("{}{entries}", shared.unwrap_or_default())
}

/// Validator `k`'s `priorities` line: 200 for the producer it prefers, 100 for the other;
/// nothing for the lab's first validator, which keeps the members' own.
fn priorities(k: usize) -> String {
    if k == 0 {
        return String::new();
    }
    let each: Vec<String> = MEMBERS[..PRODUCERS]
        .iter()
        .enumerate()
        .map(|(j, m)| format!("{m} = {}", if j == preferred(k) { 200 } else { 100 }))
        .collect();
    format!("priorities = {{ {} }}\n", each.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_validator_keeps_the_files_of_a_lab_with_one_validator() {
        let lab = plan(Path::new("/tmp/lab"), 3);
        let names: Vec<(&str, PathBuf, PathBuf)> =
            lab.iter().map(|v| (v.id.as_str(), v.ledger.clone(), v.key_file.clone())).collect();
        assert_eq!(names[0], ("v1", "/tmp/lab/ledger.jsonl".into(), "/tmp/lab/priv_validator_key.json".into()));
        assert_eq!(names[2], ("v3", "/tmp/lab/ledger-v3.jsonl".into(), "/tmp/lab/priv_validator_key-v3.json".into()));
        assert_eq!(lab[0].seed, [0x5a; 32]);
        assert_ne!(lab[1].seed, lab[0].seed, "each validator signs with a key of its own");
        assert_eq!(home(Path::new("/tmp/lab"), "a", 0), PathBuf::from("/tmp/lab/home-a"));
        assert_eq!(home(Path::new("/tmp/lab"), "a", 1), PathBuf::from("/tmp/lab/home-a-v2"));
        assert_eq!(plan(Path::new("/tmp/lab"), 0).len(), 1);
    }

    #[test]
    fn every_validator_becomes_an_entry_with_its_own_tables_and_the_shared_sections_come_once() {
        let single = |rpc: &str, key: &str| {
            format!(
                "member = \"a\"\n[[members]]\nid = \"a\"\n[coordinator]\nlease_ttl = \"3000ms\"\n[chain]\nkind = \"sim\"\nrpc = \"{rpc}\"\n[producer]\nkind = \"cometbft-signer\"\nkey_file = \"{key}\"\n[tls]\nca_file = \"/ca\"\n"
            )
        };
        let lab = plan(Path::new("/tmp/lab"), 2);
        let text = member_config(&lab, &[single("http://n1", "/k1"), single("http://n2", "/k2")]);
        assert_eq!(text.matches("[coordinator]").count(), 1, "{text}");
        assert_eq!(text.matches("[tls]").count(), 1, "{text}");
        assert!(!text.contains("\n[chain]") && !text.contains("\n[producer]"), "{text}");
        assert!(
            text.contains("[[validators]]\nid = \"v1\"\n[validators.chain]\nkind = \"sim\"\nrpc = \"http://n1\"\n")
        );
        assert!(
            text.contains("[validators.producer]\nkey_id = \"v2\"\nkind = \"cometbft-signer\"\nkey_file = \"/k2\"")
        );
        assert!(text.contains("id = \"v2\"\npriorities = { a = 100, b = 200 }\n"), "{text}");
        assert!(!text.contains("id = \"v1\"\npriorities"), "v1 keeps the members' priorities: {text}");
    }

    #[test]
    fn a_witness_lists_each_validator_by_id_alone() {
        let witness = "member = \"c\"\n[coordinator]\nlease_ttl = \"3000ms\"\n[api]\nsocket = \"/s\"\n".to_string();
        let lab = plan(Path::new("/tmp/lab"), 2);
        let text = member_config(&lab, &[witness.clone(), witness]);
        assert!(
            text.ends_with(
                "[[validators]]\nid = \"v1\"\n[[validators]]\nid = \"v2\"\npriorities = { a = 100, b = 200 }\n"
            ),
            "{text}"
        );
    }
}
