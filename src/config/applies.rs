//! Which settings a config's chosen kinds use: the coordinator backend, the chain kind, the
//! producer kind, and a few switches (`metrics.enabled`, `failover.watchdog`). The effective
//! config `check-config` prints leaves out the rest, so that what an operator reads is what
//! this member will do.
//!
//! It mirrors where each setting is read (`src/producer/mod.rs` builds the producers, the
//! coordinators read their own sections); a setting it wrongly omits is only missing from the
//! printout, never from the config.

use super::{Backend, ChainKind, Config, EthereumMining, ProducerAdapter, ProducerKind, WatchdogMode};

/// Dotted keys of the settings `config`'s kinds do not use.
pub fn unused_settings(config: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    match config.coordinator.backend {
        Backend::Raft => out.push("coordinator.consul"),
        Backend::Consul => out.push("coordinator.raft"),
    }
    if !config.metrics.enabled {
        out.push("metrics.listen");
    }
    if config.failover.watchdog == WatchdogMode::Off {
        out.push("failover.watchdog_device");
    }
    if config.failover.fence_command.is_none() {
        out.push("failover.fence_command_timeout");
    }
    if let Some(chain) = &config.chain {
        out.extend(unused_chain_settings(chain.kind));
    }
    if let Some(p) = &config.producer {
        let mining = match &p.adapter {
            ProducerAdapter::Ethereum(e) => e.mining,
            _ => EthereumMining::Miner,
        };
        out.extend(unused_producer_settings(p.kind(), mining));
    }
    out
}

fn unused_chain_settings(kind: ChainKind) -> Vec<&'static str> {
    let uses = |key: &str| match key {
        "rpc" | "reference_rpcs" => kind != ChainKind::Command,
        "command" => kind == ChainKind::Command,
        // Read from CometBFT commits, which the simulated chain serves too.
        "validator_address" | "signing_window" => matches!(kind, ChainKind::Cometbft | ChainKind::Sim),
        "sim" => kind == ChainKind::Sim,
        _ => true,
    };
    CHAIN_KIND_SETTINGS.iter().copied().filter(|k| !uses(k.trim_start_matches("chain."))).collect()
}

const CHAIN_KIND_SETTINGS: &[&str] = &[
    "chain.rpc",
    "chain.reference_rpcs",
    "chain.command",
    "chain.validator_address",
    "chain.signing_window",
    "chain.sim",
];

fn unused_producer_settings(kind: ProducerKind, mining: EthereumMining) -> Vec<&'static str> {
    use ProducerKind as K;
    let uses = |key: &str| match key {
        "command" => matches!(kind, K::Process | K::CometbftFilepv),
        "activate_command" | "deactivate_command" => matches!(kind, K::Command | K::Solana),
        // The API-driven producers run it when their node's API does not answer a fence.
        "fence_command" => matches!(kind, K::Command | K::Solana | K::Ethereum | K::Antelope),
        "key_file" => matches!(kind, K::CometbftFilepv | K::CometbftSigner),
        "command_timeout" => matches!(kind, K::Command | K::Solana | K::CometbftFilepv),
        "rpc" => matches!(kind, K::Sim | K::Ethereum | K::Antelope),
        "home" | "systemd_unit" => kind == K::CometbftFilepv,
        "priv_validator_laddr" | "chain_id" => kind == K::CometbftSigner,
        "mining" => kind == K::Ethereum,
        "block_interval" => kind == K::Ethereum && mining == EthereumMining::Interval,
        _ => true,
    };
    PRODUCER_KIND_SETTINGS.iter().copied().filter(|k| !uses(k.trim_start_matches("producer."))).collect()
}

const PRODUCER_KIND_SETTINGS: &[&str] = &[
    "producer.command",
    "producer.activate_command",
    "producer.deactivate_command",
    "producer.fence_command",
    "producer.key_file",
    "producer.command_timeout",
    "producer.rpc",
    "producer.home",
    "producer.systemd_unit",
    "producer.priv_validator_laddr",
    "producer.chain_id",
    "producer.mining",
    "producer.block_interval",
];

/// `table` without the dotted `keys` (absent ones are skipped).
pub fn remove(table: &mut toml::Table, keys: &[&str]) {
    for key in keys {
        let mut parts: Vec<&str> = key.split('.').collect();
        let Some(last) = parts.pop() else { continue };
        let mut at = Some(&mut *table);
        for part in parts {
            at = at.and_then(|t| t.get_mut(part)).and_then(toml::Value::as_table_mut);
        }
        if let Some(t) = at {
            t.remove(last);
        }
    }
}
