//! Keeps README.md's configuration reference and examples/ in sync with `src/config.rs`: every
//! example and the reference parse and validate, and every field the schema has appears in the
//! reference.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use failover::config::*;
use failover::domain::{KeyId, MemberId, MemberKind};

fn reference_block() -> String {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).expect("README.md is readable");
    let start = readme.find("<!-- config-reference:start -->").expect("README has the reference start marker");
    let end = readme.find("<!-- config-reference:end -->").expect("README has the reference end marker");
    let block = &readme[start..end];
    let open = block.find("```toml\n").expect("reference is a toml code block") + "```toml\n".len();
    let close = block.rfind("```").expect("reference block is closed");
    block[open..close].to_string()
}

/// Dotted key paths of a TOML table; array-of-table entries share their array's path.
fn key_paths(value: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                out.insert(path.clone());
                key_paths(v, &path, out);
            }
        }
        toml::Value::Array(items) => {
            for item in items.iter().filter(|i| i.is_table()) {
                key_paths(item, prefix, out);
            }
        }
        _ => {}
    }
}

/// A config with every optional field set. Struct literals without `..` make this fail to
/// compile when a field is added, so the reference cannot silently miss it.
fn every_field_set() -> Config {
    let argv = Some(vec!["x".to_string()]);
    let path = Some(PathBuf::from("/x"));
    let url = |s: &str| s.parse::<HttpUrl>().expect("valid url");
    Config {
        member: MemberId::new("a").expect("id"),
        data_dir: PathBuf::from("/x"),
        peer_listen: Some("0.0.0.0:7100".parse().expect("address")),
        members: vec![MemberConfig {
            id: MemberId::new("a").expect("id"),
            peer_address: "127.0.0.1:1".parse().expect("address"),
            kind: MemberKind::Producer,
            priority: 1,
            region: "r".into(),
        }],
        coordinator: CoordinatorConfig {
            backend: Backend::Raft,
            lease_ttl: Duration::from_secs(3),
            renew_interval: Duration::from_secs(1),
            safety_margin: Duration::from_millis(500),
            call_timeout: Duration::from_millis(800),
            raft: RaftConfig {
                tick: Duration::from_millis(100),
                election_ticks: 10,
                heartbeat_ticks: 1,
                insecure_plaintext_peers: true,
            },
            consul: ConsulConfig {
                address: url("http://127.0.0.1:8500"),
                prefix: "p".into(),
                token_file: path.clone(),
                ca_file: path.clone(),
                check_ttl: Duration::from_secs(2),
                lock_delay: Duration::from_millis(500),
            },
        },
        chain: Some(ChainConfig {
            kind: ChainKind::Cometbft,
            rpc: Some(url("http://127.0.0.1:1")),
            command: argv.clone(),
            reference_rpcs: vec![url("http://127.0.0.1:2")],
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(800),
            unhealthy_after: 3,
            max_lag: 5,
            stall_after: Duration::from_secs(30),
            validator_address: Some("AB".into()),
            signing_window: 10,
            sim: Some(SimConfig {
                ledger: PathBuf::from("/x"),
                block_interval: Duration::from_secs(1),
                chain_id: "sim".into(),
                privval_listen: Some("127.0.0.1:26659".parse().expect("address")),
            }),
        }),
        producer: Some(ProducerConfig {
            key_id: KeyId::new("k").expect("key"),
            fence_timeout: Duration::from_secs(5),
            adapter: ProducerAdapter::Process(ProcessSettings { command: vec!["x".to_string()] }),
        }),
        failover: FailoverConfig {
            priority_delay: Duration::from_secs(2),
            cooldown: Duration::from_secs(30),
            max_lag_on_failover: 2,
            floor_margin: 1,
            fence_command: argv,
            fence_command_timeout: Duration::from_secs(10),
            fence_takeover_after: Some(Duration::from_secs(1)),
            import_max_ahead: 100_000,
            watchdog: WatchdogMode::Required,
            watchdog_device: PathBuf::from("/dev/watchdog0"),
        },
        api: ApiConfig { socket: PathBuf::from("/x"), listen: Some("127.0.0.1:1".parse().expect("address")) },
        metrics: MetricsConfig { enabled: true, listen: "127.0.0.1:1".parse().expect("address") },
        tls: Some(TlsConfig {
            ca_file: PathBuf::from("/x"),
            cert_file: PathBuf::from("/x"),
            key_file: PathBuf::from("/x"),
        }),
        webhooks: vec![WebhookConfig {
            url: url("https://hooks.example.com/x"),
            format: WebhookFormat::Slack,
            topics: vec![WebhookTopic::Fence],
            timeout: Duration::from_secs(5),
            attempts: 5,
        }],
        // A config with [[validators]] has no top-level [chain]/[producer]: its keys are checked
        // against README's second reference block (`readme_validators_reference_...`).
        validators: Vec::new(),
    }
}

/// Every adapter with every one of its settings set, so that together they name every
/// `[producer]` key; struct literals again, so an added setting cannot be missed.
fn every_adapter() -> Vec<ProducerAdapter> {
    let argv = || vec!["x".to_string()];
    let url = |s: &str| s.parse::<HttpUrl>().expect("valid url");
    let api = ApiSettings { rpc: Some(url("http://127.0.0.1:3")), fence_command: Some(argv()) };
    let commands = CommandSettings {
        activate_command: argv(),
        deactivate_command: argv(),
        fence_command: Some(argv()),
        command_timeout: Duration::from_secs(10),
    };
    vec![
        ProducerAdapter::Process(ProcessSettings { command: argv() }),
        ProducerAdapter::Sim(SimSettings { rpc: Some(url("http://127.0.0.1:3")) }),
        ProducerAdapter::CometbftFilepv(FilePvSettings {
            key_file: PathBuf::from("/x"),
            home: PathBuf::from("/x"),
            command: Some(argv()),
            systemd_unit: Some("cometbft.service".into()),
            command_timeout: Duration::from_secs(10),
        }),
        ProducerAdapter::CometbftSigner(SignerSettings {
            key_file: PathBuf::from("/x"),
            priv_validator_laddr: "tcp://127.0.0.1:26659".into(),
            chain_id: "x".into(),
        }),
        ProducerAdapter::Antelope(api.clone()),
        ProducerAdapter::Ethereum(EthereumSettings {
            api,
            mining: EthereumMining::Interval,
            block_interval: Duration::from_secs(1),
        }),
        ProducerAdapter::Solana(commands.clone()),
        ProducerAdapter::Command(commands),
    ]
}

#[test]
fn readme_reference_parses_and_validates() {
    let text = reference_block();
    if let Err(problems) = Config::parse(&text) {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        panic!("README's configuration reference does not validate:\n{}", list.join("\n"));
    }
}

#[test]
fn readme_reference_names_every_config_field() {
    let mut schema_keys = BTreeSet::new();
    for adapter in every_adapter() {
        let mut config = every_field_set();
        if let Some(p) = config.producer.as_mut() {
            p.adapter = adapter;
        }
        let schema = toml::Value::try_from(config).expect("config serialises to TOML");
        key_paths(&schema, "", &mut schema_keys);
    }
    let reference: toml::Value = toml::from_str(&reference_block()).expect("reference is TOML");
    let mut reference_keys = BTreeSet::new();
    key_paths(&reference, "", &mut reference_keys);
    let missing: Vec<&String> = schema_keys.difference(&reference_keys).collect();
    assert!(missing.is_empty(), "README's configuration reference lacks: {missing:?}");
    assert!(schema_keys.len() > 50, "the schema walk found only {} keys", schema_keys.len());
}

#[test]
fn readme_reference_defaults_match_the_code() {
    // Where the reference states a default, the code must have the same one: a config that
    // sets only what is required comes out with the reference's values.
    let reference: toml::Value = toml::from_str(&reference_block()).expect("reference is TOML");
    let minimal = "member = \"a\"\n[[members]]\nid = \"a\"\npeer_address = \"127.0.0.1:1\"\n[[members]]\nid = \"b\"\npeer_address = \"127.0.0.1:2\"\n[[members]]\nid = \"c\"\npeer_address = \"127.0.0.1:3\"\n[coordinator.raft]\ninsecure_plaintext_peers = true\n[chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:4\"\n[producer]\nkind = \"sim\"\n";
    let effective: toml::Value =
        toml::Value::try_from(Config::parse(minimal).expect("minimal config is valid")).expect("serialises");
    for path in [
        "data_dir",
        "coordinator.backend",
        "coordinator.lease_ttl",
        "coordinator.renew_interval",
        "coordinator.safety_margin",
        "coordinator.call_timeout",
        "coordinator.raft.tick",
        "coordinator.raft.election_ticks",
        "coordinator.raft.heartbeat_ticks",
        "coordinator.consul.address",
        "coordinator.consul.prefix",
        "coordinator.consul.check_ttl",
        "coordinator.consul.lock_delay",
        "chain.probe_interval",
        "chain.probe_timeout",
        "chain.unhealthy_after",
        "chain.max_lag",
        "chain.stall_after",
        "chain.signing_window",
        "producer.key_id",
        "producer.fence_timeout",
        "failover.priority_delay",
        "failover.cooldown",
        "failover.max_lag_on_failover",
        "failover.floor_margin",
        "failover.fence_command_timeout",
        "failover.watchdog",
        "failover.watchdog_device",
        "failover.import_max_ahead",
        "api.socket",
        "metrics.enabled",
        "metrics.listen",
    ] {
        let get = |v: &toml::Value| path.split('.').try_fold(v.clone(), |v, k| v.get(k).cloned());
        assert_eq!(get(&reference), get(&effective), "default of {path} differs between README and code");
    }
}

/// A copy of the repository's layout for the examples: their certificates made where their
/// comments say (target/local-3node/tls), so that an example copied to the same place under the
/// tree loads unchanged, its relative paths resolved against its own directory.
fn example_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    let tls = dir.path().join("target/local-3node/tls");
    std::fs::create_dir_all(&tls).expect("tls dir");
    common::pki::write_cluster(&tls, &["a", "b", "c"], &[]);
    dir
}

/// Loads the example at `path` (under the repository) from its copy at the same place in
/// `tree`, with every check a member makes at start.
fn load_example(path: &std::path::Path, tree: &std::path::Path) -> Result<Config, ConfigError> {
    let relative = path.strip_prefix(common::repo()).expect("an example under the repository");
    let copy = tree.join(relative);
    std::fs::create_dir_all(copy.parent().expect("a directory")).expect("example dir");
    std::fs::copy(path, &copy).expect("copy");
    Config::load_for_member(&copy)
}

#[test]
fn every_example_config_loads() {
    let tree = example_tree();
    let mut found = 0;
    let mut stack = vec![common::repo().join("examples")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples/ is readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                found += 1;
                if let Err(e) = load_example(&path, tree.path()) {
                    panic!("{} does not load:\n{e}", path.display());
                }
            }
        }
    }
    assert!(found >= 3, "expected the local-3node examples, found {found} files");
}

#[test]
fn local_3node_examples_describe_one_cluster() {
    let dir = common::repo().join("examples/local-3node");
    let tree = example_tree();
    let configs: Vec<Config> = ["a", "b", "c"]
        .iter()
        .map(|m| load_example(&dir.join(format!("{m}.toml")), tree.path()).expect("example loads"))
        .collect();
    for (c, m) in configs.iter().zip(["a", "b", "c"]) {
        assert_eq!(c.member.as_str(), m);
        assert_eq!(c.members, configs[0].members, "every member lists the same [[members]]");
        assert_eq!(c.coordinator, configs[0].coordinator);
    }
    let rpcs: BTreeSet<String> =
        configs.iter().filter_map(|c| c.chain.as_ref()?.rpc.as_ref().map(|u| u.to_string())).collect();
    assert_eq!(rpcs.len(), 2, "each producer probes its own node; the witness has none");
    // Relative to the examples' own directory, their paths name the repository's
    // target/local-3node, wherever failoverd is started from.
    let target = tree.path().canonicalize().expect("canonical").join("target/local-3node");
    for (c, m) in configs.iter().zip(["a", "b", "c"]) {
        assert_eq!(c.data_dir, target.join(m));
        assert_eq!(c.api.socket, target.join(format!("{m}.sock")));
        assert_eq!(c.tls.as_ref().map(|t| t.ca_file.clone()), Some(target.join("tls/ca.pem")));
    }
    let ledger = configs[0].chain.as_ref().and_then(|c| c.sim.as_ref()).map(|s| s.ledger.clone());
    assert_eq!(ledger, Some(target.join("ledger.jsonl")));
}

/// README's two-chain example (`[[validators]]`) parses, validates, and names every key a
/// validator entry has.
#[test]
fn readme_validators_example_parses_validates_and_names_every_validator_key() {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).expect("README.md is readable");
    let start = readme.find("<!-- validators-example:start -->").expect("README has the validators example");
    let end = readme.find("<!-- validators-example:end -->").expect("README closes the validators example");
    let block = &readme[start..end];
    let open = block.find("```toml\n").expect("a toml code block") + "```toml\n".len();
    let text = &block[open..block.rfind("```").expect("closed")];
    let config = Config::parse(text).unwrap_or_else(|p| {
        let list: Vec<String> = p.iter().map(ToString::to_string).collect();
        panic!("README's validators example does not validate:\n{}", list.join("\n"))
    });
    assert_eq!(config.validator_configs().len(), 2);
    let parsed: toml::Value = toml::from_str(text).expect("TOML");
    let mut keys = BTreeSet::new();
    for entry in parsed.get("validators").and_then(toml::Value::as_array).expect("[[validators]]") {
        keys.extend(entry.as_table().expect("a table").keys().cloned());
    }
    // Every field of the schema, from a struct literal: an added field fails to compile here.
    let any = every_field_set();
    let schema = ValidatorConfig {
        id: failover::domain::ValidatorId::new("x").expect("id"),
        priorities: [(MemberId::new("a").expect("id"), 1)].into(),
        chain: any.chain.clone(),
        producer: any.producer.clone(),
        failover: Some(any.failover.clone()),
        effective: None,
    };
    let schema = toml::Value::try_from(schema).expect("serialises");
    for field in schema.as_table().expect("a table").keys() {
        assert!(keys.contains(field), "README's validators example lacks {field}");
    }
}
