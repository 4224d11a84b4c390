//! Rules that span fields, checked after parsing, all at once (STYLE.md habit 10).
//!
//! [`validate`] is pure: it looks only at the parsed config. [`check_secret_files`] reads file
//! metadata (never contents) to refuse key files that group or others can read.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{Backend, ChainKind, Config, ConfigProblem, ProducerKind, SourceMap, duration_text};
use crate::domain::MemberKind;

/// Every problem in `config`, each located by `map`. Empty means valid.
pub fn validate(config: &Config, map: &SourceMap<'_>) -> Vec<ConfigProblem> {
    let mut out = Problems { map, list: Vec::new() };
    check_members(config, &mut out);
    check_lease_timings(config, &mut out);
    check_raft(config, &mut out);
    check_chain_and_producer(config, &mut out);
    check_api(config, &mut out);
    out.list
}

struct Problems<'m, 'a> {
    map: &'m SourceMap<'a>,
    list: Vec<ConfigProblem>,
}

impl Problems<'_, '_> {
    fn at(&mut self, key: &str, message: impl Into<String>) {
        self.list.push(ConfigProblem {
            key: Some(key.to_string()),
            position: self.map.key_position(key),
            message: message.into(),
        });
    }
}

fn check_members(config: &Config, out: &mut Problems<'_, '_>) {
    if config.members.is_empty() {
        out.at("members", "at least one [[members]] entry is required");
        return;
    }
    let mut ids = HashSet::new();
    let mut addresses = HashSet::new();
    for (i, m) in config.members.iter().enumerate() {
        if !ids.insert(&m.id) {
            out.at(
                &format!("members[{i}].id"),
                format!("duplicate member id {:?}: every member needs its own id", m.id.as_str()),
            );
        }
        if !addresses.insert(&m.peer_address) {
            out.at(
                &format!("members[{i}].peer_address"),
                format!("duplicate peer address {}: two members cannot listen on the same address", m.peer_address),
            );
        }
    }
    if !config.members.iter().any(|m| m.id == config.member) {
        let known: Vec<&str> = config.members.iter().map(|m| m.id.as_str()).collect();
        out.at(
            "member",
            format!("{:?} is not among the [[members]] ids ({})", config.member.as_str(), known.join(", ")),
        );
    }
    if !config.members.iter().any(|m| m.kind == MemberKind::Producer) {
        out.at("members", "no member has kind = \"producer\": the cluster would have nothing to activate");
    }
}

fn check_lease_timings(config: &Config, out: &mut Problems<'_, '_>) {
    let c = &config.coordinator;
    let d = duration_text::format;
    if c.lease_ttl <= c.renew_interval {
        out.at(
            "coordinator.renew_interval",
            format!(
                "renew_interval ({}) must be shorter than lease_ttl ({}), or the lease expires between renews",
                d(c.renew_interval),
                d(c.lease_ttl)
            ),
        );
    } else if c.safety_margin >= c.lease_ttl {
        out.at(
            "coordinator.safety_margin",
            format!("safety_margin ({}) must be shorter than lease_ttl ({})", d(c.safety_margin), d(c.lease_ttl)),
        );
    } else if c.renew_interval >= c.lease_ttl - c.safety_margin {
        out.at(
            "coordinator.renew_interval",
            format!(
                "renew_interval ({}) must be shorter than lease_ttl − safety_margin ({}), or the holder self-fences between renews",
                d(c.renew_interval),
                d(c.lease_ttl - c.safety_margin)
            ),
        );
    }
    if c.safety_margin.is_zero() {
        out.at(
            "coordinator.safety_margin",
            "safety_margin must be above zero: it absorbs clock-rate drift and scheduling delay",
        );
    }
    if c.renew_interval.is_zero() {
        out.at("coordinator.renew_interval", "renew_interval must be above zero");
    }
    if c.call_timeout.is_zero() || c.call_timeout >= c.lease_ttl {
        out.at(
            "coordinator.call_timeout",
            format!(
                "call_timeout ({}) must be above zero and shorter than lease_ttl ({})",
                d(c.call_timeout),
                d(c.lease_ttl)
            ),
        );
    }
    if c.backend == Backend::Consul {
        if c.consul.lock_delay.is_zero() {
            out.at(
                "coordinator.consul.lock_delay",
                "lock_delay must be above zero, or a new holder may overlap a session Consul just invalidated",
            );
        }
        if c.consul.check_ttl.is_zero() {
            out.at("coordinator.consul.check_ttl", "check_ttl must be above zero");
        } else if c.renew_interval >= c.consul.check_ttl.saturating_sub(c.safety_margin) {
            out.at(
                "coordinator.consul.check_ttl",
                "with Consul the holder's lease lasts check_ttl − safety_margin after each renew: check_ttl must exceed renew_interval + safety_margin",
            );
        }
        if c.consul.prefix.is_empty() || c.consul.prefix.starts_with('/') {
            out.at(
                "coordinator.consul.prefix",
                "expected a non-empty KV prefix without a leading '/', such as \"failoverd/cosmoshub\"",
            );
        }
    }
}

fn check_raft(config: &Config, out: &mut Problems<'_, '_>) {
    if config.coordinator.backend != Backend::Raft {
        return;
    }
    let voters = config.members.len();
    if voters < 3 {
        out.at(
            "members",
            format!("the raft backend needs at least 3 voting members (producers and witnesses), found {voters}; add a witness in a third region or use backend = \"consul\""),
        );
    }
    let r = &config.coordinator.raft;
    if r.tick.is_zero() {
        out.at("coordinator.raft.tick", "tick must be above zero");
    }
    if r.heartbeat_ticks == 0 {
        out.at("coordinator.raft.heartbeat_ticks", "heartbeat_ticks must be at least 1");
    }
    if r.election_ticks <= r.heartbeat_ticks {
        out.at(
            "coordinator.raft.election_ticks",
            format!(
                "election_ticks ({}) must be greater than heartbeat_ticks ({})",
                r.election_ticks, r.heartbeat_ticks
            ),
        );
    }
}

fn check_chain_and_producer(config: &Config, out: &mut Problems<'_, '_>) {
    let Some(me) = config.me() else { return };
    if me.kind == MemberKind::Witness {
        if config.producer.is_some() {
            out.at(
                "producer",
                "this member is a witness and never produces; remove [producer] or set its kind = \"producer\"",
            );
        }
        return;
    }
    match &config.chain {
        None => out.at("chain", "a producer member needs a [chain] section: how to probe its node"),
        Some(chain) => {
            let needs_rpc = chain.kind != ChainKind::Command;
            if needs_rpc && chain.rpc.is_none() {
                out.at(
                    "chain.rpc",
                    format!(
                        "chain kind {:?} needs rpc = \"http://…\" (the node's RPC endpoint)",
                        kind_name(&chain.kind)
                    ),
                );
            }
            if chain.kind == ChainKind::Command && chain.command.as_ref().is_none_or(|c| c.is_empty()) {
                out.at("chain.command", "chain kind \"command\" needs command = [\"program\", \"arg\", …]");
            }
            if chain.unhealthy_after == 0 {
                out.at("chain.unhealthy_after", "unhealthy_after must be at least 1");
            }
            if chain.probe_interval.is_zero() {
                out.at("chain.probe_interval", "probe_interval must be above zero");
            }
            if chain.probe_timeout.is_zero() || chain.probe_timeout > chain.probe_interval {
                out.at(
                    "chain.probe_timeout",
                    "probe_timeout must be above zero and at most probe_interval, so probes never pile up",
                );
            }
            if chain.sim.is_some() && chain.kind != ChainKind::Sim {
                out.at("chain.sim", "[chain.sim] runs a simulated node and needs kind = \"sim\"");
            }
            if chain.sim.as_ref().is_some_and(|s| s.block_interval < std::time::Duration::from_millis(10)) {
                out.at("chain.sim.block_interval", "block_interval must be at least 10ms");
            }
            if chain.stall_after <= chain.probe_interval {
                out.at("chain.stall_after", "stall_after must be longer than probe_interval");
            }
            if let Some(address) = &chain.validator_address {
                if !matches!(chain.kind, ChainKind::Cometbft | ChainKind::Sim) {
                    out.at(
                        "chain.validator_address",
                        "validator_address is read from CometBFT commits; it needs kind = \"cometbft\"",
                    );
                } else if address.len() != 40 || !address.bytes().all(|c| c.is_ascii_hexdigit()) {
                    out.at(
                        "chain.validator_address",
                        "validator_address must be 40 hex digits (the 20-byte address in priv_validator_key.json)",
                    );
                }
            }
            if !(1..=1000).contains(&chain.signing_window) {
                out.at("chain.signing_window", "signing_window must be between 1 and 1000 commits");
            }
            if chain.kind == ChainKind::Command && !chain.reference_rpcs.is_empty() {
                out.at(
                    "chain.reference_rpcs",
                    "a command chain has no RPC dialect to query references with; print their heights from the command instead",
                );
            }
        }
    }
    match &config.producer {
        None => out.at("producer", "a producer member needs a [producer] section: how to turn its node on and off"),
        Some(p) => {
            let missing = |v: &Option<Vec<String>>| v.as_ref().is_none_or(|c| c.is_empty() || c[0].is_empty());
            if p.kind == ProducerKind::Process && missing(&p.command) {
                out.at("producer.command", "producer kind \"process\" needs command = [\"/usr/bin/node\", \"arg\", …]");
            }
            if matches!(p.kind, ProducerKind::Command | ProducerKind::Solana) {
                for (key, v) in
                    [("activate_command", &p.activate_command), ("deactivate_command", &p.deactivate_command)]
                {
                    if missing(v) {
                        out.at(
                            &format!("producer.{key}"),
                            format!(
                                "producer kind {:?} needs {key} = [\"program\", \"arg\", …]",
                                producer_kind_name(p.kind)
                            ),
                        );
                    }
                }
            }
            if matches!(p.kind, ProducerKind::CometbftFilepv | ProducerKind::CometbftSigner) && p.key_file.is_none() {
                out.at(
                    "producer.key_file",
                    "CometBFT producers need key_file: the protected priv_validator_key.json source",
                );
            }
            if p.kind == ProducerKind::CometbftSigner {
                match &p.priv_validator_laddr {
                    None => out.at(
                        "producer.priv_validator_laddr",
                        "cometbft-signer needs priv_validator_laddr: the node's address for its remote signer, such as \"tcp://127.0.0.1:26659\"",
                    ),
                    Some(a) => {
                        if let Err(e) = a.parse::<crate::producer::privval::connection::NodeAddress>() {
                            out.at("producer.priv_validator_laddr", e);
                        }
                    }
                }
                if p.chain_id.as_deref().is_none_or(str::is_empty) {
                    out.at("producer.chain_id", "cometbft-signer needs chain_id: the chain the node signs for");
                }
            }
            if p.fence_timeout.is_zero() {
                out.at("producer.fence_timeout", "fence_timeout must be above zero");
            }
            if p.command_timeout.is_zero() {
                out.at("producer.command_timeout", "command_timeout must be above zero");
            }
            if p.kind == ProducerKind::CometbftFilepv {
                if p.home.is_none() {
                    out.at("producer.home", "producer kind \"cometbft-filepv\" needs home = \"/path/to/node/home\"");
                }
                match (missing(&p.command), &p.systemd_unit) {
                    (true, None) => out.at(
                        "producer.command",
                        "producer kind \"cometbft-filepv\" starts the node either as a child (command = [\"cometbft\", \"start\", …]) or as a unit (systemd_unit = \"cometbft.service\")",
                    ),
                    (false, Some(_)) => out.at(
                        "producer.systemd_unit",
                        "set either command or systemd_unit, not both: the node must have one supervisor",
                    ),
                    _ => {}
                }
            }
            if matches!(p.kind, ProducerKind::Ethereum | ProducerKind::Antelope)
                && p.rpc.is_none()
                && config.chain.as_ref().is_none_or(|c| c.rpc.is_none())
            {
                out.at("producer.rpc", "this producer drives the node over HTTP: set producer.rpc or chain.rpc");
            }
            if p.kind == ProducerKind::Ethereum
                && (p.block_interval.subsec_nanos() != 0 || p.block_interval < std::time::Duration::from_secs(1))
            {
                out.at(
                    "producer.block_interval",
                    "block_interval must be whole seconds, at least 1s (evm_setIntervalMining takes seconds)",
                );
            }
        }
    }
}

fn check_api(config: &Config, out: &mut Problems<'_, '_>) {
    if config.api.listen.is_some() && config.tls.is_none() {
        out.at(
            "api.listen",
            "a TCP control listener requires a [tls] section: the control API is only served over mutual TLS on TCP",
        );
    }
    if config.api.socket.as_os_str().is_empty() {
        out.at("api.socket", "expected a path such as \"/run/failoverd/control.sock\"");
    }
    for (i, hook) in config.webhooks.iter().enumerate() {
        if hook.attempts == 0 || hook.attempts > 20 {
            out.at(&format!("webhooks[{i}].attempts"), "expected 1 to 20 attempts per event");
        }
        if hook.topics.is_empty() {
            out.at(
                &format!("webhooks[{i}].topics"),
                "expected at least one of \"failover\", \"fence\", \"refusal\", or remove the webhook",
            );
        }
        if hook.timeout.is_zero() {
            out.at(&format!("webhooks[{i}].timeout"), "expected a deadline such as \"5s\"");
        }
    }
    if config.failover.fence_command.as_ref().is_some_and(|c| c.is_empty() || c[0].is_empty()) {
        out.at(
            "failover.fence_command",
            "expected a non-empty argv such as [\"/usr/local/bin/stonith\", \"{member}\"], or remove the key",
        );
    }
}

fn producer_kind_name(kind: ProducerKind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn kind_name(kind: &ChainKind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Refuses secret files (TLS private key, validator key source, Consul token) that are missing
/// or readable by group or others. Reads metadata only.
pub fn check_secret_files(config: &Config, map: &SourceMap<'_>) -> Vec<ConfigProblem> {
    let mut out = Problems { map, list: Vec::new() };
    let mut secrets: Vec<(&str, &Path)> = Vec::new();
    if let Some(tls) = &config.tls {
        secrets.push(("tls.key_file", &tls.key_file));
    }
    if let Some(key) = config.producer.as_ref().and_then(|p| p.key_file.as_deref()) {
        secrets.push(("producer.key_file", key));
    }
    if let Some(token) = config.coordinator.consul.token_file.as_deref() {
        secrets.push(("coordinator.consul.token_file", token));
    }
    for (key, path) in secrets {
        match std::fs::metadata(path) {
            Err(e) => out.at(
                key,
                format!("cannot read {}: {e}; fix the path or create the file with mode 0600", path.display()),
            ),
            Ok(meta) if !meta.is_file() => out.at(key, format!("{} is not a regular file", path.display())),
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    out.at(
                        key,
                        format!(
                            "{} is readable by group or others (mode {mode:04o}); a key file must be private: run chmod 600 {}",
                            path.display(),
                            path.display()
                        ),
                    );
                }
            }
        }
    }
    if let Some(tls) = &config.tls {
        for (key, path) in [("tls.ca_file", &tls.ca_file), ("tls.cert_file", &tls.cert_file)] {
            if let Err(e) = std::fs::metadata(path) {
                out.at(key, format!("cannot read {}: {e}", path.display()));
            }
        }
    }
    out.list
}
