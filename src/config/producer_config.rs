//! `[producer]`: the settings every producer has, and one typed struct per adapter that `kind`
//! names ([`ProducerAdapter`]). A setting an adapter cannot run without is a field of its struct,
//! not an `Option`: a file that leaves it out does not parse, and the problem names the
//! `[producer]` table's line. Rules that span fields or sections (an `rpc` that may come from
//! `chain.rpc`, a command or a systemd unit) are [`super::validate`]'s.
//!
//! On disk `[producer]` stays one flat table ([`ProducerSection`]): the file format does not
//! change with the adapter, a setting another adapter uses is accepted and ignored (as
//! `check-config` shows by leaving it out), and an unknown key is still refused. This module
//! never starts a producer; [`crate::producer::from_config`] does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{HttpUrl, defaults, duration_text};
use crate::domain::KeyId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProducerKind {
    /// The daemon supervises the node as its child process.
    Process,
    /// The simulated chain's producer.
    Sim,
    CometbftFilepv,
    CometbftSigner,
    Antelope,
    Ethereum,
    Solana,
    /// Operator-supplied activate/deactivate/fence commands.
    Command,
}

impl ProducerKind {
    /// The kind as the config file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProducerKind::Process => "process",
            ProducerKind::Sim => "sim",
            ProducerKind::CometbftFilepv => "cometbft-filepv",
            ProducerKind::CometbftSigner => "cometbft-signer",
            ProducerKind::Antelope => "antelope",
            ProducerKind::Ethereum => "ethereum",
            ProducerKind::Solana => "solana",
            ProducerKind::Command => "command",
        }
    }
}

/// How the `ethereum` producer turns block production on and off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EthereumMining {
    /// `miner_start` / `miner_stop`, confirmed with `eth_mining` (Clique/PoA clients).
    Miner,
    /// `evm_setIntervalMining(seconds)` / `evm_setIntervalMining(0)` (anvil, Hardhat).
    Interval,
}

/// How the local node is turned on and off: what every adapter has, and the adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ProducerSection", into = "ProducerSection")]
pub struct ProducerConfig {
    /// Name of the signing key whose watermark the cluster keeps.
    pub key_id: KeyId,
    /// How long a deactivation may take before the producer is killed.
    pub fence_timeout: Duration,
    pub adapter: ProducerAdapter,
}

/// The producer `kind` names, with the settings only it reads.
#[derive(Clone, Debug, PartialEq)]
pub enum ProducerAdapter {
    Process(ProcessSettings),
    Sim(SimSettings),
    CometbftFilepv(FilePvSettings),
    CometbftSigner(SignerSettings),
    Antelope(ApiSettings),
    Ethereum(EthereumSettings),
    Solana(CommandSettings),
    Command(CommandSettings),
}

/// `kind = "process"`: the daemon supervises the node as its child process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessSettings {
    /// argv of the node command.
    pub command: Vec<String>,
}

/// `kind = "sim"`: the simulated chain's producer.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSettings {
    /// The simulated node's API, when it is not `chain.rpc`.
    pub rpc: Option<HttpUrl>,
}

/// `kind = "cometbft-filepv"`: the node signs with a FilePV key installed only while active.
#[derive(Clone, Debug, PartialEq)]
pub struct FilePvSettings {
    /// Protected source of the validator key (`priv_validator_key.json`), mode 0600 or stricter.
    pub key_file: PathBuf,
    /// The node's home (`config/priv_validator_key.json`, `data/priv_validator_state.json`).
    pub home: PathBuf,
    /// argv of the node, supervised as a child; the other choice is `systemd_unit`.
    pub command: Option<Vec<String>>,
    /// Start and stop the node as this systemd unit instead of supervising `command`.
    pub systemd_unit: Option<String>,
    /// Deadline of each systemctl call.
    pub command_timeout: Duration,
}

/// `kind = "cometbft-signer"`: this member is the remote signer of one node or several.
#[derive(Clone, Debug, PartialEq)]
pub struct SignerSettings {
    /// Protected source of the validator key (ed25519), mode 0600 or stricter.
    pub key_file: PathBuf,
    /// Each node's `priv_validator_laddr` to dial (`tcp://[id@]host:port` or `unix:///path`):
    /// one node, or several (sentries) served at once while this member is active.
    pub priv_validator_laddr: NodeAddresses,
    /// The chain id every sign request must carry.
    pub chain_id: String,
}

/// `priv_validator_laddr`: the addresses of the nodes this member signs for, as written (not yet
/// parsed: [`super::validate`] parses each entry and names the one it refuses). The file writes one
/// node as a string and several as an array of strings; one is written back as a string, so a
/// config of one node reads the same as before lists existed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeAddresses(pub Vec<String>);

impl NodeAddresses {
    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The config key of entry `i`: the setting itself when it names one node, as a problem with
    /// the single-string form has always been reported, and `[i]` among several.
    pub fn key_of(&self, i: usize) -> String {
        match self.0.len() {
            1 => "producer.priv_validator_laddr".into(),
            _ => format!("producer.priv_validator_laddr[{i}]"),
        }
    }
}

impl From<&str> for NodeAddresses {
    fn from(one: &str) -> NodeAddresses {
        NodeAddresses(vec![one.to_string()])
    }
}

impl From<String> for NodeAddresses {
    fn from(one: String) -> NodeAddresses {
        NodeAddresses(vec![one])
    }
}

impl From<Vec<String>> for NodeAddresses {
    fn from(many: Vec<String>) -> NodeAddresses {
        NodeAddresses(many)
    }
}

impl Serialize for NodeAddresses {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for NodeAddresses {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<NodeAddresses, D::Error> {
        deserializer.deserialize_any(AddressesVisitor)
    }
}

/// Reads a string or an array of strings; anything else is refused saying what is expected.
struct AddressesVisitor;

impl<'de> serde::de::Visitor<'de> for AddressesVisitor {
    type Value = NodeAddresses;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the node's address for its remote signer, such as \"tcp://127.0.0.1:26659\", or an array of such \
             addresses, one per node",
        )
    }

    fn visit_str<E: serde::de::Error>(self, one: &str) -> Result<NodeAddresses, E> {
        Ok(NodeAddresses::from(one))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<NodeAddresses, A::Error> {
        let mut many = Vec::new();
        while let Some(address) = seq.next_element::<String>()? {
            many.push(address);
        }
        Ok(NodeAddresses(many))
    }
}

/// `kind = "antelope"`: production on and off over nodeos's producer API.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiSettings {
    /// The API that turns production on and off, when it is not `chain.rpc`.
    pub rpc: Option<HttpUrl>,
    /// Run when the API does not confirm a fence; should kill the node.
    pub fence_command: Option<Vec<String>>,
}

/// `kind = "ethereum"`: production on and off over the node's JSON-RPC.
#[derive(Clone, Debug, PartialEq)]
pub struct EthereumSettings {
    pub api: ApiSettings,
    pub mining: EthereumMining,
    /// `interval` mining: seconds between blocks while active.
    pub block_interval: Duration,
}

/// `kind = "command"` and `kind = "solana"`: operator-supplied commands.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandSettings {
    pub activate_command: Vec<String>,
    pub deactivate_command: Vec<String>,
    /// Run to fence when deactivation does not confirm; should kill the node.
    pub fence_command: Option<Vec<String>>,
    /// Deadline of each activate/deactivate command.
    pub command_timeout: Duration,
}

impl ProducerConfig {
    pub fn kind(&self) -> ProducerKind {
        match &self.adapter {
            ProducerAdapter::Process(_) => ProducerKind::Process,
            ProducerAdapter::Sim(_) => ProducerKind::Sim,
            ProducerAdapter::CometbftFilepv(_) => ProducerKind::CometbftFilepv,
            ProducerAdapter::CometbftSigner(_) => ProducerKind::CometbftSigner,
            ProducerAdapter::Antelope(_) => ProducerKind::Antelope,
            ProducerAdapter::Ethereum(_) => ProducerKind::Ethereum,
            ProducerAdapter::Solana(_) => ProducerKind::Solana,
            ProducerAdapter::Command(_) => ProducerKind::Command,
        }
    }

    /// The validator key source, for the CometBFT adapters.
    pub fn key_file(&self) -> Option<&Path> {
        match &self.adapter {
            ProducerAdapter::CometbftFilepv(f) => Some(&f.key_file),
            ProducerAdapter::CometbftSigner(s) => Some(&s.key_file),
            _ => None,
        }
    }

    /// The adapter's own API setting, for the adapters that drive the node over HTTP.
    pub fn rpc(&self) -> Option<&HttpUrl> {
        match &self.adapter {
            ProducerAdapter::Sim(s) => s.rpc.as_ref(),
            ProducerAdapter::Antelope(a) | ProducerAdapter::Ethereum(EthereumSettings { api: a, .. }) => a.rpc.as_ref(),
            _ => None,
        }
    }

    /// The command run when an API-driven producer's fence does not confirm.
    pub fn fence_command(&self) -> Option<&[String]> {
        match &self.adapter {
            ProducerAdapter::Antelope(a) | ProducerAdapter::Ethereum(EthereumSettings { api: a, .. }) => {
                a.fence_command.as_deref()
            }
            ProducerAdapter::Solana(c) | ProducerAdapter::Command(c) => c.fence_command.as_deref(),
            _ => None,
        }
    }
}

/// `[producer]` as the file has it: one flat table whatever the kind. Only the conversion into
/// a [`ProducerConfig`] reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerSection {
    pub kind: ProducerKind,
    /// Name of the signing key whose watermark the cluster keeps.
    #[serde(default = "defaults::key_id")]
    pub key_id: KeyId,
    /// For `process`: argv of the node command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// For `command`: argv run to activate, deactivate and fence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate_command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivate_command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_command: Option<Vec<String>>,
    /// Protected source of the validator key (CometBFT `priv_validator_key.json`, ed25519); must
    /// be mode 0600 or stricter. Loading parses it and refuses a key whose address is not
    /// `chain.validator_address`. Relative: to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// How long a deactivation may take before the producer is killed.
    #[serde(default = "defaults::fence_timeout", with = "duration_text")]
    pub fence_timeout: Duration,
    /// Deadline of each activate/deactivate command (`command`, `solana`, systemctl).
    #[serde(default = "defaults::command_timeout", with = "duration_text")]
    pub command_timeout: Duration,
    /// The API that turns production on and off, when it is not `chain.rpc` (Antelope's producer
    /// API is often bound to localhost on another port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<HttpUrl>,
    /// CometBFT FilePV: the node's home (`config/priv_validator_key.json`,
    /// `data/priv_validator_state.json`). Relative: to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<PathBuf>,
    /// CometBFT FilePV: start and stop the node as this systemd unit instead of supervising
    /// `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// CometBFT signer: the node's `priv_validator_laddr` to dial: `tcp://host:port` with
    /// SecretConnection, answering whatever listens there (stock CometBFT's privval listener key
    /// is new at every start, so there is nothing stable to pin: keep the link private);
    /// `tcp://<node id>@host:port` for a node whose listener key is stable, which must prove
    /// that id; or `unix:///path` beside the node. An array of them names several nodes
    /// (sentries), each dialled while this member is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priv_validator_laddr: Option<NodeAddresses>,
    /// CometBFT signer: the chain id every request must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// Ethereum: `miner` (miner_start/miner_stop) or `interval` (evm_setIntervalMining).
    #[serde(default = "defaults::ethereum_mining")]
    pub mining: EthereumMining,
    /// Ethereum `interval` mining: seconds between blocks while active (whole seconds, at least 1).
    #[serde(default = "defaults::block_interval", with = "duration_text")]
    pub block_interval: Duration,
}

/// The required settings a `[producer]` table lacks for its kind, all named at once.
struct Missing {
    kind: ProducerKind,
    settings: Vec<&'static str>,
}

impl Missing {
    fn take<T>(&mut self, value: Option<T>, setting: &'static str) -> Option<T> {
        if value.is_none() {
            self.settings.push(setting);
        }
        value
    }
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.kind.as_str();
        let needs: Vec<String> = self.settings.iter().map(|s| format!("needs {}", example(self.kind, s))).collect();
        write!(f, "kind \"{kind}\" {}", needs.join(", and "))
    }
}

/// A required setting as the operator would write it, with what it is for.
fn example(kind: ProducerKind, setting: &str) -> String {
    match (kind, setting) {
        (ProducerKind::Process, "command") => "command = [\"/usr/bin/node\", \"arg\", …]".into(),
        (ProducerKind::CometbftFilepv, "home") => "home = \"/path/to/node/home\"".into(),
        (_, "key_file") => "key_file: the protected priv_validator_key.json source".into(),
        (_, "priv_validator_laddr") => {
            "priv_validator_laddr: the node's address for its remote signer, such as \"tcp://127.0.0.1:26659\"".into()
        }
        (_, "chain_id") => "chain_id: the chain the node signs for".into(),
        (_, command) => format!("{command} = [\"program\", \"arg\", …]"),
    }
}

impl TryFrom<ProducerSection> for ProducerConfig {
    type Error = String;

    /// The adapter `kind` names, or every required setting it lacks (serde reports the
    /// message at the `[producer]` table).
    fn try_from(s: ProducerSection) -> Result<ProducerConfig, String> {
        let mut missing = Missing { kind: s.kind, settings: Vec::new() };
        match adapter_of(&s, &mut missing) {
            Some(adapter) if missing.settings.is_empty() => {
                Ok(ProducerConfig { key_id: s.key_id, fence_timeout: s.fence_timeout, adapter })
            }
            _ => Err(missing.to_string()),
        }
    }
}

/// The adapter of `s.kind` with its settings from `s`; `None` when a required one is missing
/// (each one missing is added to `missing`).
fn adapter_of(s: &ProducerSection, missing: &mut Missing) -> Option<ProducerAdapter> {
    let api = || ApiSettings { rpc: s.rpc.clone(), fence_command: s.fence_command.clone() };
    let commands = |missing: &mut Missing| {
        let activate = missing.take(s.activate_command.clone(), "activate_command");
        let deactivate = missing.take(s.deactivate_command.clone(), "deactivate_command");
        Some(CommandSettings {
            activate_command: activate?,
            deactivate_command: deactivate?,
            fence_command: s.fence_command.clone(),
            command_timeout: s.command_timeout,
        })
    };
    Some(match s.kind {
        ProducerKind::Process => {
            ProducerAdapter::Process(ProcessSettings { command: missing.take(s.command.clone(), "command")? })
        }
        ProducerKind::Sim => ProducerAdapter::Sim(SimSettings { rpc: s.rpc.clone() }),
        ProducerKind::CometbftFilepv => {
            let key_file = missing.take(s.key_file.clone(), "key_file");
            let home = missing.take(s.home.clone(), "home");
            ProducerAdapter::CometbftFilepv(FilePvSettings {
                key_file: key_file?,
                home: home?,
                command: s.command.clone(),
                systemd_unit: s.systemd_unit.clone(),
                command_timeout: s.command_timeout,
            })
        }
        ProducerKind::CometbftSigner => {
            let key_file = missing.take(s.key_file.clone(), "key_file");
            let laddr = missing.take(s.priv_validator_laddr.clone(), "priv_validator_laddr");
            let chain_id = missing.take(s.chain_id.clone(), "chain_id");
            ProducerAdapter::CometbftSigner(SignerSettings {
                key_file: key_file?,
                priv_validator_laddr: laddr?,
                chain_id: chain_id?,
            })
        }
        ProducerKind::Antelope => ProducerAdapter::Antelope(api()),
        ProducerKind::Ethereum => ProducerAdapter::Ethereum(EthereumSettings {
            api: api(),
            mining: s.mining,
            block_interval: s.block_interval,
        }),
        ProducerKind::Solana => ProducerAdapter::Solana(commands(missing)?),
        ProducerKind::Command => ProducerAdapter::Command(commands(missing)?),
    })
}

impl From<ProducerConfig> for ProducerSection {
    fn from(p: ProducerConfig) -> ProducerSection {
        let mut s = ProducerSection {
            kind: p.kind(),
            key_id: p.key_id,
            command: None,
            activate_command: None,
            deactivate_command: None,
            fence_command: None,
            key_file: None,
            fence_timeout: p.fence_timeout,
            command_timeout: defaults::command_timeout(),
            rpc: None,
            home: None,
            systemd_unit: None,
            priv_validator_laddr: None,
            chain_id: None,
            mining: defaults::ethereum_mining(),
            block_interval: defaults::block_interval(),
        };
        match p.adapter {
            ProducerAdapter::Process(x) => s.command = Some(x.command),
            ProducerAdapter::Sim(x) => s.rpc = x.rpc,
            ProducerAdapter::CometbftFilepv(x) => {
                (s.key_file, s.home, s.command) = (Some(x.key_file), Some(x.home), x.command);
                (s.systemd_unit, s.command_timeout) = (x.systemd_unit, x.command_timeout);
            }
            ProducerAdapter::CometbftSigner(x) => {
                (s.key_file, s.priv_validator_laddr, s.chain_id) =
                    (Some(x.key_file), Some(x.priv_validator_laddr), Some(x.chain_id));
            }
            ProducerAdapter::Antelope(x) => (s.rpc, s.fence_command) = (x.rpc, x.fence_command),
            ProducerAdapter::Ethereum(x) => {
                (s.rpc, s.fence_command) = (x.api.rpc, x.api.fence_command);
                (s.mining, s.block_interval) = (x.mining, x.block_interval);
            }
            ProducerAdapter::Solana(x) | ProducerAdapter::Command(x) => {
                (s.activate_command, s.deactivate_command) = (Some(x.activate_command), Some(x.deactivate_command));
                (s.fence_command, s.command_timeout) = (x.fence_command, x.command_timeout);
            }
        }
        s
    }
}
