//! `[[validators]]`: one cluster serving several validators (issue 22, docs/design.md §4). Each
//! entry names a validator with its own `[chain]`, `[producer]` and, optionally, its own
//! `[failover]` policy and per-member priorities; the members, the coordinator, the API, the
//! metrics and TLS are shared.
//!
//! Every validator runs as a member of its own would with a single-validator config: [`derive`]
//! builds that config (the *effective* config of the validator), so every rule and default
//! written for one validator applies to each, unchanged. This module adds only what spans
//! validators: distinct ids, distinct keys, a shape every member agrees on. It never starts
//! anything.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{ChainConfig, Config, ConfigProblem, FailoverConfig, ProducerAdapter, ProducerConfig, SourceMap};
use crate::domain::{MemberId, MemberKind, ValidatorId};

/// The most validators one cluster serves: a member renews all its leases in one raft entry,
/// whose batch holds at most [`crate::coord::raft::cluster_state::MAX_BATCH`] commands.
pub const MAX_VALIDATORS: usize = 256;

/// One `[[validators]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorConfig {
    /// The validator's id: the scope of its lease and watermarks in the store, its metrics
    /// label and `failoverctl --validator`. `default` names the state a single-validator config
    /// keeps, so a cluster moving to `[[validators]]` keeps its lease and watermarks there.
    pub id: ValidatorId,
    /// This validator's priority per member, where it differs from the member's own: spreads the
    /// actives of several validators across regions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub priorities: BTreeMap<MemberId, u32>,
    /// The local node of this validator. Required on producer members, absent on witnesses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainConfig>,
    /// How this validator's node is turned on and off. Required on producer members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<ProducerConfig>,
    /// This validator's failover policy, replacing the top-level `[failover]` whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverConfig>,
    /// The config a member of this validator alone would have, made at load with the defaults
    /// the file leaves to the producer's kind; never read from or written to a file.
    #[serde(skip)]
    pub effective: Option<Box<Config>>,
}

/// The single-validator config of `v`, the `index`-th entry of `config`: the shared sections,
/// with `v`'s chain, producer, failover policy and priorities. `written` says which keys the file
/// set, so a timing it left out gets the default of `v`'s producer kind.
pub fn derive(config: &Config, v: &ValidatorConfig, index: usize, written: impl Fn(&str) -> bool) -> Config {
    let mut c = config.clone();
    c.validators = Vec::new();
    c.chain = v.chain.clone();
    c.producer = v.producer.clone();
    if let Some(f) = &v.failover {
        c.failover = f.clone();
    }
    for m in &mut c.members {
        if let Some(p) = v.priorities.get(&m.id) {
            m.priority = *p;
        }
    }
    let own_failover = v.failover.is_some();
    let kind = c.producer.as_ref().map(ProducerConfig::kind);
    super::TimingDefaults::for_producer(kind).fill(&mut c, |key| match key.strip_prefix("failover.") {
        Some(rest) if own_failover => written(&format!("validators[{index}].failover.{rest}")),
        _ => written(key),
    });
    c
}

/// Where a problem found in validator `index`'s effective config stands in the file: its own
/// sections under `validators[index]`, the shared ones where they are.
pub fn locate(problem: ConfigProblem, index: usize, v: &ValidatorConfig, map: &SourceMap<'_>) -> ConfigProblem {
    let Some(key) = &problem.key else { return problem };
    let own = ["chain", "producer"].iter().any(|s| key == s || key.starts_with(&format!("{s}.")))
        || (v.failover.is_some() && (key == "failover" || key.starts_with("failover.")));
    if !own {
        return problem;
    }
    let scoped = format!("validators[{index}].{key}");
    let position =
        map.key_position(&scoped).or_else(|| map.key_position(&format!("validators[{index}].id"))).or(problem.position);
    ConfigProblem { key: Some(scoped), position, message: problem.message }
}

/// The rules that span validators, for a config with `[[validators]]`.
pub fn check(config: &Config, map: &SourceMap<'_>) -> Vec<ConfigProblem> {
    let mut out = Problems(Vec::new(), map);
    for (section, present) in [("chain", config.chain.is_some()), ("producer", config.producer.is_some())] {
        if present {
            out.at(
                section.to_string(),
                format!(
                    "a config with [[validators]] has no top-level [{section}]: move it into the [[validators]] entry of \
                     its validator as [validators.{section}]"
                ),
            );
        }
    }
    if config.validators.len() > MAX_VALIDATORS {
        out.at(
            "validators".into(),
            format!("{} validators are listed; one cluster serves at most {MAX_VALIDATORS}", config.validators.len()),
        );
    }
    check_ids(config, &mut out);
    check_shapes(config, &mut out);
    check_nothing_shared(config, &mut out);
    out.0
}

/// Problems, each located by its key.
struct Problems<'m, 'a>(Vec<ConfigProblem>, &'m SourceMap<'a>);

impl Problems<'_, '_> {
    fn at(&mut self, key: String, message: String) {
        let position = self.1.key_position(&key);
        self.0.push(ConfigProblem { key: Some(key), position, message });
    }
}

/// Ids are unique, also once punctuation is set aside: some stores name a validator's parts
/// with its id's punctuation replaced (Consul's check ids), so `a.b` and `a-b` would collide.
fn check_ids(config: &Config, out: &mut Problems<'_, '_>) {
    let mut ids: BTreeMap<String, (usize, &ValidatorId)> = BTreeMap::new();
    for (i, v) in config.validators.iter().enumerate() {
        let folded: String = v.id.as_str().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        match ids.insert(folded, (i, &v.id)) {
            Some((first, same)) if *same == v.id => out.at(
                format!("validators[{i}].id"),
                format!("validator {} is listed twice (also validators[{first}])", v.id),
            ),
            Some((first, other)) => out.at(
                format!("validators[{i}].id"),
                format!(
                    "validator {} differs from validators[{first}]'s id {other} only in punctuation, which the store \
                     cannot tell apart; rename one",
                    v.id
                ),
            ),
            None => {}
        }
    }
}

/// Priorities name members; a producer member runs every validator, a witness none.
fn check_shapes(config: &Config, out: &mut Problems<'_, '_>) {
    let me = config.me().map(|m| m.kind);
    let members: BTreeSet<&MemberId> = config.members.iter().map(|m| &m.id).collect();
    for (i, v) in config.validators.iter().enumerate() {
        for member in v.priorities.keys().filter(|m| !members.contains(m)) {
            out.at(
                format!("validators[{i}].priorities.{member}"),
                format!("{member} is not among [[members]]; name only members of this cluster"),
            );
        }
        match (me, v.chain.is_some() || v.producer.is_some()) {
            (Some(MemberKind::Witness), true) => out.at(
                format!("validators[{i}].id"),
                format!(
                    "this member is a witness, so validator {} has no chain or producer here: list it with its id alone",
                    v.id
                ),
            ),
            (Some(MemberKind::Producer), false) => out.at(
                format!("validators[{i}].id"),
                format!(
                    "this member is a producer, so validator {} needs [validators.chain] and [validators.producer] here",
                    v.id
                ),
            ),
            _ => {}
        }
    }
}

/// No two validators sign with one key or drive one node: each would be moved by its own lease,
/// so one node could sign for two validators at once, or one key twice. Nor do two arm the one
/// watchdog device, which opens once.
fn check_nothing_shared(config: &Config, out: &mut Problems<'_, '_>) {
    let mut seen: BTreeMap<(&'static str, String), usize> = BTreeMap::new();
    let mut watchdog: Option<usize> = None;
    for (i, v) in config.validators.iter().enumerate() {
        let Some(p) = &v.producer else { continue };
        for (what, key, value) in shared_things(p) {
            if let Some(first) = seen.insert((what, value.clone()), i) {
                out.at(
                    format!("validators[{i}].producer.{key}"),
                    format!(
                        "{what} {value} is also validators[{first}]'s: two validators must never share a key or a node, or \
                         one lease could let it sign for the other; give each its own"
                    ),
                );
            }
        }
        let effective = v.effective.as_deref().map_or(&config.failover, |e| &e.failover);
        if effective.watchdog != super::WatchdogMode::Off {
            match watchdog {
                Some(first) => out.at(
                    format!("validators[{i}].id"),
                    format!(
                        "validators[{first}] already arms the watchdog device {}, which opens once: set \
                         watchdog = \"off\" in [validators.failover] of every validator but one",
                        effective.watchdog_device.display()
                    ),
                ),
                None => watchdog = Some(i),
            }
        }
    }
}

/// What of `p` no two validators may share: (what it is, its key, its value normalised).
fn shared_things(p: &ProducerConfig) -> Vec<(&'static str, &'static str, String)> {
    let path = |p: &std::path::Path| normal(p).display().to_string();
    let mut things = vec![("key", "key_id", p.key_id.to_string())];
    match &p.adapter {
        ProducerAdapter::CometbftFilepv(f) => {
            things.push(("key file", "key_file", path(&f.key_file)));
            things.push(("node home", "home", path(&f.home)));
            things.extend(f.systemd_unit.iter().map(|u| ("systemd unit", "systemd_unit", u.clone())));
        }
        ProducerAdapter::CometbftSigner(s) => {
            things.push(("key file", "key_file", path(&s.key_file)));
            things.extend(s.priv_validator_laddr.iter().map(|a| ("node address", "priv_validator_laddr", a.clone())));
        }
        _ => {}
    }
    things
}

/// `path` with `.` and `..` folded away lexically, so `/a/../k` and `/k` are one file.
fn normal(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SHARED: &str = "member = \"a\"\n[[members]]\nid = \"a\"\npeer_address = \"127.0.0.1:1\"\npriority = 5\n[[members]]\nid = \"b\"\npeer_address = \"127.0.0.1:2\"\n[[members]]\nid = \"c\"\npeer_address = \"127.0.0.1:3\"\nkind = \"witness\"\n[coordinator.raft]\ninsecure_plaintext_peers = true\n";

    fn validator(id: &str, port: u16, extra: &str) -> String {
        format!(
            "[[validators]]\nid = \"{id}\"\n{extra}[validators.chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:{port}\"\n[validators.producer]\nkind = \"sim\"\nkey_id = \"{id}-key\"\n"
        )
    }

    fn problems(text: &str) -> Vec<String> {
        Config::parse(text).err().unwrap_or_default().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn each_validator_runs_with_its_own_chain_producer_and_priorities() {
        let text = format!(
            "{SHARED}{}{}",
            validator("cosmoshub", 4, ""),
            validator("osmosis", 5, "priorities = { a = 50, b = 200 }\n")
        );
        let config = Config::parse(&text).expect("two validators");
        let each = config.validator_configs();
        let ids: Vec<&str> = each.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["cosmoshub", "osmosis"]);
        let (_, hub) = &each[0];
        let (_, osmo) = &each[1];
        assert_eq!(hub.key_id().as_str(), "cosmoshub-key");
        assert_eq!(osmo.key_id().as_str(), "osmosis-key");
        assert_eq!(hub.members.iter().map(|m| m.priority).collect::<Vec<_>>(), [5, 100, 100]);
        assert_eq!(osmo.members.iter().map(|m| m.priority).collect::<Vec<_>>(), [50, 200, 100]);
        assert!(hub.validators.is_empty() && hub.chain.is_some());
        assert_eq!(Config::parse(&config.to_toml()).map(|c| c.validator_configs()), Ok(each), "to_toml round-trips");
    }

    #[test]
    fn timings_the_file_leaves_out_follow_each_validators_producer() {
        let signer = "[[validators]]\nid = \"hub\"\n[validators.chain]\nkind = \"cometbft\"\nrpc = \"http://127.0.0.1:4\"\n[validators.producer]\nkind = \"cometbft-signer\"\nkey_id = \"hub\"\nkey_file = \"/k\"\npriv_validator_laddr = \"tcp://127.0.0.1:26659\"\nchain_id = \"hub-4\"\n";
        let text = format!("{SHARED}{signer}{}", validator("sim", 5, ""));
        let config = Config::parse(&text).expect("parses");
        let each = config.validator_configs();
        assert_eq!(each[0].1.coordinator.lease_ttl, Duration::from_millis(400), "signer mode's default");
        assert_eq!(each[1].1.coordinator.lease_ttl, Duration::from_secs(3), "key-holding default");
        let written = format!("{SHARED}[coordinator]\nlease_ttl = \"2s\"\n{signer}");
        let config = Config::parse(&written).expect("parses");
        assert_eq!(config.validator_configs()[0].1.coordinator.lease_ttl, Duration::from_secs(2), "written: kept");
    }

    #[test]
    fn hostile_validator_lists_are_refused_with_the_entry_named() {
        let two = |a: String, b: String| format!("{SHARED}{a}{b}");
        let cases: Vec<(String, &str)> = vec![
            (two(validator("x", 4, ""), validator("x", 5, "")), "validators[1].id: validator x is listed twice"),
            (
                two(validator("x", 4, ""), validator("y", 5, "").replace("y-key", "x-key")),
                "validators[1].producer.key_id: key x-key is also validators[0]'s",
            ),
            (
                format!("{SHARED}[chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:9\"\n{}", validator("x", 4, "")),
                "chain: a config with [[validators]] has no top-level [chain]",
            ),
            (
                format!("{SHARED}{}", validator("x", 4, "priorities = { z = 1 }\n")),
                "validators[0].priorities.z: z is not among [[members]]",
            ),
            (format!("{SHARED}[[validators]]\nid = \"x\"\n"), "needs [validators.chain] and [validators.producer]"),
            (
                format!("{SHARED}{}", validator("x", 4, "")).replace("member = \"a\"", "member = \"c\""),
                "this member is a witness, so validator x has no chain or producer here",
            ),
            (
                format!("{SHARED}{}", validator("x", 4, "")).replace("rpc = \"http://127.0.0.1:4\"\n", ""),
                "validators[0].chain",
            ),
        ];
        for (text, expected) in cases {
            let found = problems(&text);
            assert!(found.iter().any(|p| p.contains(expected)), "expected {expected:?} in {found:#?}\n{text}");
        }
        let bad_id = format!("{SHARED}{}", validator("a/b", 4, ""));
        let refused = Config::parse(&bad_id).expect_err("a / in an id");
        assert!(refused[0].to_string().contains("validators"), "{refused:?}");
    }

    #[test]
    fn a_shared_problem_is_reported_once_not_once_per_validator() {
        let text = format!("{SHARED}{}{}", validator("x", 4, ""), validator("y", 5, ""))
            .replace("insecure_plaintext_peers = true", "insecure_plaintext_peers = true\nelection_ticks = 1");
        let found = problems(&text);
        let election: Vec<&String> = found.iter().filter(|p| p.contains("election_ticks")).collect();
        assert_eq!(election.len(), 1, "{found:#?}");
    }

    fn filepv(id: &str, key: &str, home: &str, unit: &str) -> String {
        format!(
            "[[validators]]\nid = \"{id}\"\n[validators.chain]\nkind = \"cometbft\"\nrpc = \"http://127.0.0.1:4\"\n\
             [validators.producer]\nkind = \"cometbft-filepv\"\nkey_id = \"{id}\"\nkey_file = \"{key}\"\nhome = \"{home}\"\n\
             systemd_unit = \"{unit}\"\n"
        )
    }

    #[test]
    fn two_validators_never_share_a_node_a_key_file_or_the_watchdog() {
        let two = |a: String, b: String| format!("{SHARED}{a}{b}");
        let cases: Vec<(String, &str)> = vec![
            (
                two(filepv("x", "/k/x", "/n/x", "x.service"), filepv("y", "/k/y", "/n/x/../x", "y.service")),
                "validators[1].producer.home: node home /n/x is also validators[0]'s",
            ),
            (
                two(filepv("x", "/k/x", "/n/x", "x.service"), filepv("y", "/k/./x", "/n/y", "y.service")),
                "validators[1].producer.key_file: key file /k/x is also validators[0]'s",
            ),
            (
                two(filepv("x", "/k/x", "/n/x", "node.service"), filepv("y", "/k/y", "/n/y", "node.service")),
                "validators[1].producer.systemd_unit: systemd unit node.service is also validators[0]'s",
            ),
            (
                two(filepv("a.b", "/k/x", "/n/x", "x.service"), filepv("a-b", "/k/y", "/n/y", "y.service")),
                "validators[1].id: validator a-b differs from validators[0]'s id a.b only in punctuation",
            ),
            (
                two(filepv("x", "/k/x", "/n/x", "x.service"), filepv("y", "/k/y", "/n/y", "y.service"))
                    .replace("[coordinator.raft]", "[failover]\nwatchdog = \"automatic\"\n[coordinator.raft]"),
                "validators[0] already arms the watchdog device /dev/watchdog, which opens once",
            ),
        ];
        for (text, expected) in cases {
            let found = problems(&text);
            assert!(found.iter().any(|p| p.contains(expected)), "expected {expected:?} in {found:#?}\n{text}");
        }
        let apart = two(filepv("x", "/k/x", "/n/x", "x.service"), filepv("y", "/k/y", "/n/y", "y.service"));
        let found = problems(&apart);
        assert!(found.iter().all(|p| !p.contains("is also validators")), "{found:#?}");
    }
}
