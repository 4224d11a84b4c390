//! The TOML configuration: its schema, its defaults (docs/design.md §7) and its loading. The lease
//! timings' defaults depend on the producer's kind ([`TimingDefaults`]): a setting the file leaves
//! out gets signer mode's short value under a `cometbft-signer` producer, the key-holding value
//! otherwise.
//!
//! Loading parses with `deny_unknown_fields` (a file that does not parse stops there, since
//! nothing else can be checked), makes relative paths absolute against the directory the file
//! is named in ([`paths`]), then [`validate`] checks the rules that span fields and [`files`]
//! what the named files hold, and every problem is reported at once with the file, line, key
//! and what to do — before the daemon binds a port or touches a node. This module never starts
//! anything; it reads key files only through the producer's own parser, to compare the key's
//! address, and never keeps or prints key material.

pub mod address;
mod applies;
pub mod duration_text;
pub mod files;
pub mod paths;
mod producer_config;
mod source_map;
pub mod validate;
pub mod validators;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use address::{HttpUrl, ListenAddress, PeerAddress};
pub use files::Depth;
pub use producer_config::{
    ApiSettings, CommandSettings, EthereumMining, EthereumSettings, FilePvSettings, NodeAddresses, ProcessSettings,
    ProducerAdapter, ProducerConfig, ProducerKind, ProducerSection, SignerSettings, SimSettings,
};
pub use source_map::{Position, SourceMap};
pub use validators::{MAX_VALIDATORS, ValidatorConfig};

use crate::domain::{KeyId, MemberId, MemberKind, ValidatorId};

/// One member's configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This member's id; must be one of `members`.
    pub member: MemberId,
    /// Where raft's log and snapshots live. Must survive restarts: losing it is a member
    /// replacement (see the README). Like every path in this file, a relative one is relative
    /// to the directory the config file is in, not to the working directory.
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// Where this member's peer service listens, when the address the others dial
    /// (`peer_address`) is not one this host can bind: NAT, a Kubernetes hostPort. Absent: it
    /// listens on its own `peer_address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<ListenAddress>,
    /// Every member of the cluster, this one included, identical on all members.
    pub members: Vec<MemberConfig>,
    #[serde(default)]
    pub coordinator: CoordinatorConfig,
    /// The local node's RPC and how it is probed. Required on producer members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainConfig>,
    /// How the local node is turned on and off. Required on producer members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<ProducerConfig>,
    #[serde(default)]
    pub failover: FailoverConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Mutual TLS for the peer service and the TCP control API. Required by the raft backend
    /// unless `coordinator.raft.insecure_plaintext_peers` opts into plaintext on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Event webhooks: failovers, fences and refusals POSTed as they happen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookConfig>,
    /// Several validators served by this cluster, each with its own chain, producer, lease and
    /// watermarks ([`validators`]). Empty: the one validator of `[chain]`/`[producer]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<ValidatorConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed (`http://` or `https://`).
    pub url: HttpUrl,
    /// `json` (one event object) or `slack` (an incoming-webhook `{"text": …}` payload).
    #[serde(default)]
    pub format: WebhookFormat,
    /// Which events: `failover` (this member became or stopped being active), `fence`, `refusal`
    /// (a promotion guard or a signature refused).
    #[serde(default = "defaults::webhook_topics")]
    pub topics: Vec<WebhookTopic>,
    /// Deadline of one delivery attempt.
    #[serde(default = "defaults::webhook_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// Attempts per event (1 s, 2 s, 4 s … apart), then it is dropped and counted.
    #[serde(default = "defaults::webhook_attempts")]
    pub attempts: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookTopic {
    Failover,
    Fence,
    Refusal,
}

impl WebhookTopic {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookTopic::Failover => "failover",
            WebhookTopic::Fence => "fence",
            WebhookTopic::Refusal => "refusal",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: MemberId,
    /// Where this member's peer service listens (raft transport and status).
    pub peer_address: PeerAddress,
    #[serde(default = "defaults::member_kind")]
    pub kind: MemberKind,
    /// Higher is preferred: when the lease is free, a candidate waits `failover.priority_delay`
    /// if an eligible standby with a higher priority exists.
    #[serde(default = "defaults::priority")]
    pub priority: u32,
    /// Free text shown in status (for example a cloud region or a data centre).
    #[serde(default)]
    pub region: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Raft,
    Consul,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    #[serde(default = "defaults::backend")]
    pub backend: Backend,
    /// How long a lease lasts without a renew: the raft leader expires it this long after it
    /// applied the holder's last renew, or accepted it outside the log in signer mode (the holder
    /// declares its TTL with its grant and each log renew). Default by
    /// producer kind ([`TimingDefaults`]).
    #[serde(default = "defaults::lease_ttl", with = "duration_text")]
    pub lease_ttl: Duration,
    /// How often the holder renews; must leave time for at least one retry inside the TTL.
    #[serde(default = "defaults::renew_interval", with = "duration_text")]
    pub renew_interval: Duration,
    /// Subtracted from the TTL on the holder's side: covers clock-rate drift and scheduling
    /// slack, so the holder stops before anyone else can start.
    #[serde(default = "defaults::safety_margin", with = "duration_text")]
    pub safety_margin: Duration,
    /// Deadline for each call to the store.
    #[serde(default = "defaults::call_timeout", with = "duration_text")]
    pub call_timeout: Duration,
    #[serde(default)]
    pub raft: RaftConfig,
    #[serde(default)]
    pub consul: ConsulConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftConfig {
    /// Interval of raft's logical clock.
    #[serde(default = "defaults::raft_tick", with = "duration_text")]
    pub tick: Duration,
    /// Ticks without a leader's heartbeat before a follower campaigns.
    #[serde(default = "defaults::election_ticks")]
    pub election_ticks: u32,
    #[serde(default = "defaults::heartbeat_ticks")]
    pub heartbeat_ticks: u32,
    /// Peers without TLS. Only for trials on one machine: refused unless every peer address is
    /// loopback, and warned about at every start. Without it the raft backend requires `[tls]`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_plaintext_peers: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    /// The local Consul agent's HTTP API.
    #[serde(default = "defaults::consul_address")]
    pub address: HttpUrl,
    /// KV prefix under which the lock, watermarks and member status live.
    #[serde(default = "defaults::consul_prefix")]
    pub prefix: String,
    /// File holding the ACL token (mode 0600). Absent: no token. Relative: to the config file's
    /// directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// CA that signs the agent's certificate, for an `https://` address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// TTL of the agent check that the daemon keeps passing and the session is bound to.
    #[serde(default = "defaults::consul_check_ttl", with = "duration_text")]
    pub check_ttl: Duration,
    /// Consul's lock-delay: how long the servers refuse the lock after the holder's session was
    /// invalidated. At least `check_ttl` (the holder's validity, check_ttl − safety_margin, plus
    /// safety_margin), because a session can end at any instant (serfHealth, a destroy), and the
    /// holder must have stopped before the lock can be taken again. At most 1m (Consul's maximum).
    #[serde(default = "defaults::consul_lock_delay", with = "duration_text")]
    pub lock_delay: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    Cometbft,
    Ethereum,
    Antelope,
    Solana,
    Command,
    /// The simulated chain of `src/sim/` (CometBFT-style RPC), for the demo and tests.
    Sim,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    pub kind: ChainKind,
    /// The local node's RPC endpoint. Required for every kind but `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<HttpUrl>,
    /// For `kind = "command"`: argv of a command that prints a height or JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Extra RPCs (public or other sentries) whose heights count toward the best height.
    #[serde(default)]
    pub reference_rpcs: Vec<HttpUrl>,
    #[serde(default = "defaults::probe_interval", with = "duration_text")]
    pub probe_interval: Duration,
    /// Deadline of one probe.
    #[serde(default = "defaults::probe_timeout", with = "duration_text")]
    pub probe_timeout: Duration,
    /// Consecutive bad probes before the node is unhealthy.
    #[serde(default = "defaults::unhealthy_after")]
    pub unhealthy_after: u32,
    /// Blocks behind the best height before a probe counts as bad.
    #[serde(default = "defaults::max_lag")]
    pub max_lag: u64,
    /// A height that has not moved for this long counts as a stall.
    #[serde(default = "defaults::stall_after", with = "duration_text")]
    pub stall_after: Duration,
    /// CometBFT: our validator's address (hex), to detect missed signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator_address: Option<String>,
    /// CometBFT: how many recent commits to search for our signature.
    #[serde(default = "defaults::signing_window")]
    pub signing_window: u32,
    /// For `kind = "sim"`: run the simulated node inside this daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim: Option<SimConfig>,
}

/// The simulated node a daemon runs itself (demo and local trials): it serves on `chain.rpc`'s
/// address and dies with the daemon, as a supervised node would.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The signature ledger shared by every member's simulated node (relative: to the config
    /// file's directory).
    pub ledger: PathBuf,
    #[serde(default = "defaults::sim_block_interval", with = "duration_text")]
    pub block_interval: Duration,
    #[serde(default = "defaults::sim_chain_id")]
    pub chain_id: String,
    /// Signer mode: the simulated node listens here for this member's remote signer
    /// (`cometbft-signer`) and asks it for a precommit at each height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privval_listen: Option<ListenAddress>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// How long a lower-priority candidate waits for a higher-priority one.
    #[serde(default = "defaults::priority_delay", with = "duration_text")]
    pub priority_delay: Duration,
    /// Minimum time between automatic failovers (L2).
    #[serde(default = "defaults::cooldown", with = "duration_text")]
    pub cooldown: Duration,
    /// A candidate more than this many blocks behind the best height is not promoted.
    #[serde(default = "defaults::max_lag_on_failover")]
    pub max_lag_on_failover: u64,
    /// Heights added above max(watermark, chain height) when computing the activation floor.
    #[serde(default = "defaults::floor_margin")]
    pub floor_margin: u64,
    /// STONITH: argv run against the previous holder before promotion; `{member}` is replaced
    /// by its id. Absent: skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_command: Option<Vec<String>>,
    #[serde(default = "defaults::fence_command_timeout", with = "duration_text")]
    pub fence_command_timeout: Duration,
    /// Fenced takeover: a standby that has not heard the holder's status for this long runs
    /// `fence_command` against it and, once that succeeded, takes the lease over without waiting
    /// for it to expire. `fence_command` must then exit 0 only when the holder's node can no
    /// longer sign (powered off, isolated). Absent: a standby waits for the lease to expire.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration_text::option")]
    pub fence_takeover_after: Option<Duration>,
    /// How far above the best height the cluster knows an imported watermark may be, unless the
    /// import says `--force`: a typo such as an extra digit would otherwise stop the key from
    /// signing for good, since a watermark never goes down (S3).
    #[serde(default = "defaults::import_max_ahead")]
    pub import_max_ahead: u64,
    /// The Linux watchdog device, armed while this member holds the lease (Patroni-style):
    /// `off`, `automatic` (used when it can be armed, otherwise the member runs without it and
    /// says why once) or `required` (the member refuses to activate without it). Its timeout is
    /// the largest whole number of seconds below the holder's validity; it is petted only after
    /// committed renews, so a host that freezes while active is reset before another member can
    /// take the lease.
    #[serde(default)]
    pub watchdog: WatchdogMode,
    /// The device `watchdog` opens (the first watchdog is also `/dev/watchdog0`).
    #[serde(default = "defaults::watchdog_device")]
    pub watchdog_device: PathBuf,
}

/// Whether an active member arms the Linux watchdog device (`failover.watchdog`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchdogMode {
    /// Never opened.
    #[default]
    Off,
    /// Armed when it can be; without one (no device, no permission, a holder's validity too
    /// short for whole seconds) the member activates anyway and says why once, at INFO.
    Automatic,
    /// Activation is refused when the device cannot be armed (a guard failure naming the device
    /// and the error); a config whose timings leave no usable timeout is refused at load.
    Required,
}

impl WatchdogMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchdogMode::Off => "off",
            WatchdogMode::Automatic => "automatic",
            WatchdogMode::Required => "required",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Unix socket of the control API (mode 0660). Relative: to the config file's directory.
    #[serde(default = "defaults::api_socket")]
    pub socket: PathBuf,
    /// Optional TCP listener for the control API; requires `[tls]` (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<ListenAddress>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "defaults::metrics_enabled")]
    pub enabled: bool,
    /// Prometheus `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "defaults::metrics_listen")]
    pub listen: ListenAddress,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA that signs every member's and operator's certificate. The three paths, when relative,
    /// are relative to the config file's directory.
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    /// Private key; must be mode 0600 or stricter.
    pub key_file: PathBuf,
}

pub(crate) mod defaults {
    use super::*;

    pub fn data_dir() -> PathBuf {
        PathBuf::from("/var/lib/failoverd")
    }
    pub fn member_kind() -> MemberKind {
        MemberKind::Producer
    }
    pub fn priority() -> u32 {
        100
    }
    pub fn backend() -> Backend {
        Backend::Raft
    }
    pub fn lease_ttl() -> Duration {
        TimingDefaults::KEY_HOLDING.lease_ttl
    }
    pub fn renew_interval() -> Duration {
        TimingDefaults::KEY_HOLDING.renew_interval
    }
    pub fn safety_margin() -> Duration {
        TimingDefaults::KEY_HOLDING.safety_margin
    }
    pub fn call_timeout() -> Duration {
        TimingDefaults::KEY_HOLDING.call_timeout
    }
    pub fn raft_tick() -> Duration {
        Duration::from_millis(100)
    }
    pub fn election_ticks() -> u32 {
        10
    }
    /// Three ticks: a follower hears the leader three times within the shortest election
    /// timeout (ten ticks), and a quiet cluster sends a third of the heartbeats one per tick
    /// would. Commits do not wait for heartbeats (the leader sends each commit at once).
    pub fn heartbeat_ticks() -> u32 {
        3
    }
    pub fn consul_address() -> HttpUrl {
        HttpUrl(reqwest::Url::parse("http://127.0.0.1:8500").expect("constant URL parses"))
    }
    pub fn consul_prefix() -> String {
        "failoverd".to_string()
    }
    pub fn consul_check_ttl() -> Duration {
        Duration::from_secs(2)
    }
    /// Equal to the default check_ttl: the least that covers the holder's validity plus margin.
    pub fn consul_lock_delay() -> Duration {
        Duration::from_secs(2)
    }
    pub fn probe_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn probe_timeout() -> Duration {
        Duration::from_millis(800)
    }
    pub fn unhealthy_after() -> u32 {
        3
    }
    pub fn max_lag() -> u64 {
        5
    }
    pub fn stall_after() -> Duration {
        Duration::from_secs(30)
    }
    pub fn signing_window() -> u32 {
        10
    }
    pub fn sim_block_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn command_timeout() -> Duration {
        Duration::from_secs(10)
    }

    pub fn ethereum_mining() -> EthereumMining {
        EthereumMining::Miner
    }

    pub fn block_interval() -> Duration {
        Duration::from_secs(1)
    }

    pub fn sim_chain_id() -> String {
        "sim".to_string()
    }
    pub fn key_id() -> KeyId {
        KeyId::new("validator").expect("constant id is valid")
    }
    pub fn fence_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn priority_delay() -> Duration {
        TimingDefaults::KEY_HOLDING.priority_delay
    }
    pub fn cooldown() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_lag_on_failover() -> u64 {
        2
    }
    pub fn floor_margin() -> u64 {
        1
    }
    pub fn fence_command_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn import_max_ahead() -> u64 {
        100_000
    }
    pub fn watchdog_device() -> PathBuf {
        PathBuf::from("/dev/watchdog")
    }
    pub fn api_socket() -> PathBuf {
        PathBuf::from("/run/failoverd/control.sock")
    }
    pub fn webhook_topics() -> Vec<WebhookTopic> {
        vec![WebhookTopic::Failover, WebhookTopic::Fence, WebhookTopic::Refusal]
    }
    pub fn webhook_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn webhook_attempts() -> u32 {
        5
    }
    pub fn metrics_enabled() -> bool {
        true
    }
    pub fn metrics_listen() -> ListenAddress {
        ListenAddress("127.0.0.1:9464".parse().expect("constant address parses"))
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            backend: defaults::backend(),
            lease_ttl: defaults::lease_ttl(),
            renew_interval: defaults::renew_interval(),
            safety_margin: defaults::safety_margin(),
            call_timeout: defaults::call_timeout(),
            raft: RaftConfig::default(),
            consul: ConsulConfig::default(),
        }
    }
}

/// The lease timings a member gets for the settings its file leaves out, by its producer's kind
/// (docs/design.md §7). In signer mode every signature is reserved in the store under the
/// holder's epoch, so no double sign rests on the lease's timing: the lease only detects a dead
/// holder, and it is short — a few raft heartbeats. Key-holding mode keeps the longer lease S1
/// rests on. A witness has no producer and gets the key-holding values; they matter little there,
/// since each holder declares its own TTL to the store with every renew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimingDefaults {
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    pub safety_margin: Duration,
    pub call_timeout: Duration,
    pub priority_delay: Duration,
}

impl TimingDefaults {
    /// Key-holding mode (and members without a producer): docs/design.md §7's table.
    pub const KEY_HOLDING: TimingDefaults = TimingDefaults {
        lease_ttl: Duration::from_secs(3),
        renew_interval: Duration::from_secs(1),
        safety_margin: Duration::from_millis(500),
        call_timeout: Duration::from_millis(800),
        priority_delay: Duration::from_secs(2),
    };

    /// Signer mode (`cometbft-signer`): a dead holder is detected within four raft ticks
    /// (100 ms ticks); a lower-priority standby waits about one commit for a better one. The TTL
    /// outlasts one TCP retransmission timeout (200 ms at least on Linux) plus a renew interval,
    /// with 50 ms left for the link's one-way delay and scheduling, so one lost packet and its
    /// lost probe on a LAN link to the raft leader do not expire a live holder (chaos
    /// `packet-loss` at a 300 ms TTL did). Renews every 150 ms rather than 100 ms: each is two
    /// wake-ups of the holder, most of a signer active's idle CPU.
    pub const SIGNER: TimingDefaults = TimingDefaults {
        lease_ttl: Duration::from_millis(400),
        renew_interval: Duration::from_millis(150),
        safety_margin: Duration::from_millis(100),
        call_timeout: Duration::from_millis(250),
        priority_delay: Duration::from_millis(300),
    };

    /// The defaults for a member whose producer has `kind` (`None`: no producer).
    pub fn for_producer(kind: Option<ProducerKind>) -> TimingDefaults {
        match kind {
            Some(ProducerKind::CometbftSigner) => TimingDefaults::SIGNER,
            _ => TimingDefaults::KEY_HOLDING,
        }
    }

    /// Sets each of these timings that `written` says the file left out.
    fn fill(&self, config: &mut Config, written: impl Fn(&str) -> bool) {
        let c = &mut config.coordinator;
        let f = &mut config.failover;
        let slots: [(&str, &mut Duration, Duration); 5] = [
            ("coordinator.lease_ttl", &mut c.lease_ttl, self.lease_ttl),
            ("coordinator.renew_interval", &mut c.renew_interval, self.renew_interval),
            ("coordinator.safety_margin", &mut c.safety_margin, self.safety_margin),
            ("coordinator.call_timeout", &mut c.call_timeout, self.call_timeout),
            ("failover.priority_delay", &mut f.priority_delay, self.priority_delay),
        ];
        for (key, slot, default) in slots {
            if !written(key) {
                *slot = default;
            }
        }
    }
}

impl CoordinatorConfig {
    /// How long the holder treats its lease as valid after sending a renew that commits: the
    /// lease's TTL (Consul: the session's check_ttl) minus safety_margin. Zero when the margin
    /// is not shorter (validation refuses that).
    pub fn holder_validity(&self) -> Duration {
        let ttl = match self.backend {
            Backend::Raft => self.lease_ttl,
            Backend::Consul => self.consul.check_ttl,
        };
        ttl.saturating_sub(self.safety_margin)
    }
}

/// The probe settings' defaults, for a member without `[chain]` (a witness) too. The kind is a
/// placeholder: `command` names no endpoint, and nothing probes a default chain.
impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            kind: ChainKind::Command,
            rpc: None,
            command: None,
            reference_rpcs: Vec::new(),
            probe_interval: defaults::probe_interval(),
            probe_timeout: defaults::probe_timeout(),
            unhealthy_after: defaults::unhealthy_after(),
            max_lag: defaults::max_lag(),
            stall_after: defaults::stall_after(),
            validator_address: None,
            signing_window: defaults::signing_window(),
            sim: None,
        }
    }
}

impl ChainConfig {
    /// How long a probe's verdict stays fresh: the probes that make a node unhealthy, and one
    /// more interval. Older than that, a node's health is unknown, never healthy.
    pub fn stale_after(&self) -> Duration {
        self.probe_interval.saturating_mul(self.unhealthy_after.saturating_add(1))
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            tick: defaults::raft_tick(),
            election_ticks: defaults::election_ticks(),
            heartbeat_ticks: defaults::heartbeat_ticks(),
            insecure_plaintext_peers: false,
        }
    }
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            address: defaults::consul_address(),
            prefix: defaults::consul_prefix(),
            token_file: None,
            ca_file: None,
            check_ttl: defaults::consul_check_ttl(),
            lock_delay: defaults::consul_lock_delay(),
        }
    }
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            priority_delay: defaults::priority_delay(),
            cooldown: defaults::cooldown(),
            max_lag_on_failover: defaults::max_lag_on_failover(),
            floor_margin: defaults::floor_margin(),
            fence_command: None,
            fence_command_timeout: defaults::fence_command_timeout(),
            fence_takeover_after: None,
            import_max_ahead: defaults::import_max_ahead(),
            watchdog: WatchdogMode::default(),
            watchdog_device: defaults::watchdog_device(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { socket: defaults::api_socket(), listen: None }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: defaults::metrics_enabled(), listen: defaults::metrics_listen() }
    }
}

/// One thing wrong with a config file, located as precisely as the file allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key path, such as `coordinator.lease_ttl` or `members[1].id`, when known.
    pub key: Option<String>,
    pub position: Option<Position>,
    /// What is wrong and what is expected.
    pub message: String,
}

/// The largest config file or text read, in bytes. A real config is a few kilobytes; the cap is
/// far above that so that an oversized value inside a file is refused by the rule that names its
/// field, while a wrong path (a disk image, `/dev/zero`) is refused before it is read whole.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Why a config could not be loaded. Its `Display` lists every problem, one per line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "config file {path} holds at least {size} bytes, more than the {MAX_CONFIG_BYTES} bytes (16 MiB) a config may have; check that the path names a failoverd config"
    )]
    TooLarge { path: PathBuf, size: u64 },
    /// The text is not TOML, or not this schema (an unknown key, a value of the wrong type):
    /// nothing past it could be checked.
    #[error("{}", render_problems(file, std::slice::from_ref(problem)))]
    Unparsed { file: PathBuf, problem: ConfigProblem },
    #[error("{}", render_problems(file, problems))]
    Invalid { file: PathBuf, problems: Vec<ConfigProblem> },
}

fn render_problems(file: &Path, problems: &[ConfigProblem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&file.display().to_string());
        if let Some(pos) = p.position {
            out.push_str(&format!(":{}:{}", pos.line, pos.column));
        }
        out.push_str(": ");
        if let Some(key) = &p.key {
            out.push_str(key);
            out.push_str(": ");
        }
        out.push_str(&p.message);
    }
    out
}

impl ConfigError {
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Read { .. } | ConfigError::TooLarge { .. } => &[],
            ConfigError::Unparsed { problem, .. } => std::slice::from_ref(problem),
            ConfigError::Invalid { problems, .. } => problems,
        }
    }

    /// Whether checking stopped before the settings and files were looked at: a file that
    /// cannot be read or parsed has no settings to check yet.
    pub fn stopped_early(&self) -> bool {
        !matches!(self, ConfigError::Invalid { .. })
    }
}

impl Config {
    /// Reads, parses and validates a config file, with its relative paths made absolute
    /// against the file's directory, and checks the metadata of the files it names (key files
    /// private, certificates present). What `failoverctl --config` uses: it reads no key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, Depth::Metadata)
    }

    /// [`Config::load`], also reading what the files hold: the validator key parses and its
    /// address is `chain.validator_address`, the TLS files parse and name this member, the
    /// member's directories can be written. What `failoverd run`, `coordinator` and
    /// `check-config` use.
    pub fn load_for_member(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, Depth::Contents)
    }

    /// Loads `path`, reporting every problem at once: the rules of the settings and the files
    /// to `depth`. Only a file that cannot be read or parsed stops early.
    pub fn load_with(path: &Path, depth: Depth) -> Result<Config, ConfigError> {
        let text = read_bounded(path)?;
        let (mut config, map) = Config::parse_unchecked(&text)
            .map_err(|problem| ConfigError::Unparsed { file: path.to_path_buf(), problem })?;
        let base = paths::base_dir(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let written_data_dir = config.data_dir.clone();
        paths::resolve(&mut config, &base);
        for v in &mut config.validators {
            if let Some(effective) = v.effective.as_deref_mut() {
                paths::resolve(effective, &base);
                // What `to_toml` prints: the same absolute paths as the effective config.
                v.chain.clone_from(&effective.chain);
                v.producer.clone_from(&effective.producer);
            }
        }
        let mut problems = Config::validate_each(&config, &map, |c| validate::validate(c, &map));
        if depth == Depth::Contents
            && let Some(message) = paths::data_left_behind(&written_data_dir, &config.data_dir)
        {
            problems.push(ConfigProblem {
                key: Some("data_dir".into()),
                position: map.key_position("data_dir"),
                message,
            });
        }
        problems.extend(Config::validate_each(&config, &map, |c| files::check(c, &map, depth)));
        if problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid { file: path.to_path_buf(), problems }) }
    }

    /// Parses and validates config text without touching the file system. Relative paths stay
    /// as written: only [`Config::load`] knows the directory they are relative to.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigProblem>> {
        let (config, map) = Config::parse_unchecked(text).map_err(|p| vec![p])?;
        let problems = Config::validate_each(&config, &map, |c| validate::validate(c, &map));
        if problems.is_empty() { Ok(config) } else { Err(problems) }
    }

    /// The text as a config, and where each key stands, before any rule is checked. The text
    /// is parsed once, into a document that both locates keys and is deserialised.
    fn parse_unchecked(text: &str) -> Result<(Config, SourceMap<'_>), ConfigProblem> {
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigProblem {
                key: None,
                position: None,
                message: format!(
                    "the config text has {} bytes, more than the {MAX_CONFIG_BYTES} bytes (16 MiB) a config may have",
                    text.len()
                ),
            });
        }
        let document =
            toml::de::DeTable::parse(text).map_err(|e| problem_from_toml(&e, &SourceMap::without_keys(text)))?;
        let map = SourceMap::of_document(text, document.get_ref());
        let mut config =
            Config::deserialize(toml::de::Deserializer::from(document)).map_err(|e| problem_from_toml(&e, &map))?;
        // serde filled in the key-holding defaults; a signer-mode member gets its own instead.
        let kind = config.producer.as_ref().map(ProducerConfig::kind);
        TimingDefaults::for_producer(kind).fill(&mut config, |key| map.contains(key));
        let effective: Vec<Config> = config
            .validators
            .iter()
            .enumerate()
            .map(|(i, v)| validators::derive(&config, v, i, |key| map.contains(key)))
            .collect();
        for (v, e) in config.validators.iter_mut().zip(effective) {
            v.effective = Some(Box::new(e));
        }
        Ok((config, map))
    }

    /// `rules` applied to the config, or, with `[[validators]]`, to each validator's effective
    /// config (each problem located under its validator, a shared one reported once) and the
    /// rules that span validators.
    fn validate_each(
        config: &Config,
        map: &SourceMap<'_>,
        rules: impl Fn(&Config) -> Vec<ConfigProblem>,
    ) -> Vec<ConfigProblem> {
        if config.validators.is_empty() {
            return rules(config);
        }
        let mut problems = validators::check(config, map);
        for (i, v) in config.validators.iter().enumerate() {
            let effective =
                v.effective.as_deref().cloned().unwrap_or_else(|| validators::derive(config, v, i, |_| true));
            for p in rules(&effective) {
                let p = validators::locate(p, i, v, map);
                if !problems.contains(&p) {
                    problems.push(p);
                }
            }
        }
        problems
    }

    /// Every validator this member serves, with the config a member of it alone would have:
    /// the one validator of `[chain]`/`[producer]` (`default`), or each `[[validators]]` entry.
    pub fn validator_configs(&self) -> Vec<(ValidatorId, Config)> {
        if self.validators.is_empty() {
            return vec![(ValidatorId::default_validator(), self.clone())];
        }
        self.validators
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let effective = v.effective.as_deref().cloned();
                (v.id.clone(), effective.unwrap_or_else(|| validators::derive(self, v, i, |_| true)))
            })
            .collect()
    }

    /// The effective config as TOML, defaults filled in, without the settings the chosen
    /// kinds do not use (a Consul section under raft, a mining mode for a CometBFT producer):
    /// what `check-config` prints. It parses back into the same config.
    pub fn to_toml(&self) -> String {
        let rendered = toml::Table::try_from(self).and_then(|mut table| {
            applies::remove(&mut table, &applies::unused_settings(self));
            toml::to_string_pretty(&table)
        });
        rendered.unwrap_or_else(|e| format!("# cannot render the config as TOML: {e}\n"))
    }

    /// Dotted keys of the settings this config's kinds do not use, which [`Config::to_toml`]
    /// leaves out.
    pub fn unused_settings(&self) -> Vec<&'static str> {
        applies::unused_settings(self)
    }

    /// `[chain]`, or its defaults on a member without one (a witness): where the probe timings
    /// and the staleness of a probe come from, with no fallback written anywhere else.
    pub fn chain_or_default(&self) -> std::borrow::Cow<'_, ChainConfig> {
        self.chain.as_ref().map_or_else(|| std::borrow::Cow::Owned(ChainConfig::default()), std::borrow::Cow::Borrowed)
    }

    /// Signer mode: this member's producer reserves every signature in the store under the
    /// holder's epoch (`cometbft-signer`), so its lease only serves liveness.
    pub fn signer_mode(&self) -> bool {
        self.producer.as_ref().is_some_and(|p| p.kind() == ProducerKind::CometbftSigner)
    }

    /// How long this member, as holder, keeps its producer's permission after sending a renew
    /// that commits (the self-fence deadline, the producer's own deadline). Key-holding mode:
    /// [`CoordinatorConfig::holder_validity`], below the store's expiry, which S1 rests on.
    /// Signer mode: no double sign rests on it (the store refuses every reservation of an
    /// earlier epoch), so it also covers a raft leader change — three election timeouts and a
    /// renew — and a briefly slow store or a new raft leader does not make a healthy active stop
    /// (L2), while the store still expires a dead holder after its short TTL. Three: a follower
    /// campaigns up to two election timeouts after the last heartbeat, and the third carries
    /// the pre-vote and vote round trips, the new leader's first commit, a hand-over of
    /// leadership if the holder won, and the renew, from a renew sent one commit before the
    /// cut (with two, chaos `partition-leader` at 100 ms RTT failed two runs in six).
    pub fn holder_horizon(&self) -> Duration {
        let c = &self.coordinator;
        let validity = c.holder_validity();
        if !self.signer_mode() || c.backend != Backend::Raft {
            return validity;
        }
        let election = c.raft.tick.saturating_mul(c.raft.election_ticks).saturating_mul(3);
        validity.max(election.saturating_add(c.renew_interval))
    }

    /// `producer.fence_timeout`, or its default on a member without `[producer]`.
    pub fn fence_timeout(&self) -> Duration {
        self.producer.as_ref().map_or_else(defaults::fence_timeout, |p| p.fence_timeout)
    }

    /// The signing key whose watermark this member's producer uses (`validator` without one).
    pub fn key_id(&self) -> KeyId {
        self.producer.as_ref().map_or_else(defaults::key_id, |p| p.key_id.clone())
    }

    /// This member's own entry. `validate` guarantees it exists.
    pub fn me(&self) -> Option<&MemberConfig> {
        self.members.iter().find(|m| m.id == self.member)
    }
}

/// Reads a config file of at most [`MAX_CONFIG_BYTES`], refusing a larger one before reading
/// it whole: by its size when it is a regular file, by what was read otherwise (a pipe, a device).
fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_error = |source| ConfigError::Read { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    if size > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge { path: path.to_path_buf(), size });
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge { path: path.to_path_buf(), size: bytes.len() as u64 });
    }
    String::from_utf8(bytes).map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

fn problem_from_toml(e: &toml::de::Error, map: &SourceMap<'_>) -> ConfigProblem {
    let span = e.span();
    ConfigProblem {
        key: span.as_ref().and_then(|s| map.path_at(s)).map(str::to_string),
        position: span.map(|s| map.position(s.start)),
        // The parser quotes the offending value; a megabyte of it would bury the message.
        message: shorten(e.message().trim(), 1024).into_owned(),
    }
}

/// An operator's value as messages quote it: whole when short, else its start and end.
pub(crate) fn excerpt(text: &str) -> std::borrow::Cow<'_, str> {
    shorten(text, 64)
}

/// `text` if it has at most `max_chars` characters, else its first and last characters around
/// a `…`, so that the end of a message ("expected …") survives.
fn shorten(text: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    let count = text.chars().count();
    if count <= max_chars {
        return std::borrow::Cow::Borrowed(text);
    }
    let head: String = text.chars().take(max_chars / 2).collect();
    let tail: String = text.chars().skip(count - max_chars / 2).collect();
    std::borrow::Cow::Owned(format!("{head}…{tail}"))
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(pos) = self.position {
            write!(f, "{}:{}: ", pos.line, pos.column)?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const VALID: &str = "member = \"a\"\n[[members]]\nid = \"a\"\npeer_address = \"127.0.0.1:1\"\npriority = 5\n[[members]]\nid = \"b\"\npeer_address = \"127.0.0.1:2\"\n[[members]]\nid = \"c\"\npeer_address = \"127.0.0.1:3\"\nkind = \"witness\"\n[coordinator]\nlease_ttl = \"3s\"\n[coordinator.raft]\ninsecure_plaintext_peers = true\n[chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:4\"\n[producer]\nkind = \"sim\"\n";

    #[test]
    fn valid_text_parses_with_defaults() {
        let c = Config::parse(VALID).expect("valid");
        assert_eq!(c.coordinator.renew_interval, Duration::from_secs(1));
        assert_eq!(c.me().map(|m| m.priority), Some(5));
        assert_eq!(c.members[1].priority, 100);
        assert_eq!(c.members[2].kind, MemberKind::Witness);
    }

    /// `ChainConfig::default()` is what a `[chain]` that sets only its kind gets, so code that
    /// falls back to it (a witness has no `[chain]`) reads the same timings as the file's.
    #[test]
    fn the_default_chain_has_the_timings_of_an_unset_chain() {
        let parsed = Config::parse(VALID).expect("valid").chain.expect("[chain]");
        let default = ChainConfig { kind: parsed.kind, rpc: parsed.rpc.clone(), ..ChainConfig::default() };
        assert_eq!(parsed, default);
        assert_eq!(default.stale_after(), Duration::from_secs(4), "three bad probes a second apart, and one more");
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::parse(VALID).expect("valid");
        assert_eq!(Config::parse(&c.to_toml()), Ok(c));
    }

    /// The keys of the problems `VALID` with `[chain]` and `[producer]` replaced has.
    fn problems_with(chain_and_producer: &str) -> Vec<String> {
        let base = VALID.split("[chain]").next().expect("prefix");
        match Config::parse(&format!("{base}{chain_and_producer}")) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(|p| p.key.clone().unwrap_or_default()).collect(),
        }
    }

    #[test]
    fn each_adapter_needs_what_it_uses() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[chain]\nkind = \"ethereum\"\nrpc = \"http://127.0.0.1:8545\"\n[producer]\nkind = \"ethereum\"\nmining = \"interval\"\n",
                &[],
            ),
            (
                "[chain]\nkind = \"ethereum\"\nrpc = \"http://127.0.0.1:8545\"\n[producer]\nkind = \"ethereum\"\nblock_interval = \"1500ms\"\n",
                &["producer.block_interval"],
            ),
            (
                "[chain]\nkind = \"command\"\ncommand = [\"height\"]\n[producer]\nkind = \"antelope\"\n",
                &["producer.rpc"],
            ),
            (
                "[chain]\nkind = \"command\"\ncommand = [\"height\"]\nreference_rpcs = [\"http://127.0.0.1:9\"]\n[producer]\nkind = \"solana\"\nactivate_command = []\ndeactivate_command = [\"\"]\n",
                &["chain.reference_rpcs", "producer.activate_command", "producer.deactivate_command"],
            ),
            (
                "[chain]\nkind = \"cometbft\"\nrpc = \"http://127.0.0.1:26657\"\nvalidator_address = \"ABCD\"\nsigning_window = 0\n[producer]\nkind = \"cometbft-filepv\"\nkey_file = \"/k\"\nhome = \"/h\"\n",
                &["chain.validator_address", "producer.command", "chain.signing_window"],
            ),
            (
                "[chain]\nkind = \"cometbft\"\nrpc = \"http://127.0.0.1:26657\"\n[producer]\nkind = \"cometbft-filepv\"\nkey_file = \"/k\"\nhome = \"/h\"\ncommand = [\"cometbft\"]\nsystemd_unit = \"cometbft.service\"\n",
                &["producer.systemd_unit"],
            ),
            (
                "[chain]\nkind = \"solana\"\nrpc = \"http://127.0.0.1:8899\"\nvalidator_address = \"8C1E2C1A0B5E4D3F2A1B0C9D8E7F6A5B4C3D2E1F\"\n[producer]\nkind = \"solana\"\nactivate_command = [\"on\"]\ndeactivate_command = [\"off\"]\ncommand_timeout = \"0s\"\n",
                &["chain.validator_address", "producer.command_timeout"],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(problems_with(text), *want, "{text}");
        }
    }

    /// A setting an adapter cannot run without is part of its struct: leaving it out stops the
    /// parse at the `[producer]` table, naming every setting that kind lacks.
    #[test]
    fn a_required_producer_setting_left_out_is_a_parse_error_at_the_producer_table() {
        let base = VALID.split("[chain]").next().expect("prefix");
        let chain = "[chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:4\"\n";
        let producer_line = base.lines().count() + chain.lines().count() + 1;
        let cases: &[(&str, &[&str])] = &[
            ("kind = \"process\"\n", &["needs command = ["]),
            ("kind = \"command\"\nactivate_command = [\"on\"]\n", &["needs deactivate_command = ["]),
            ("kind = \"solana\"\n", &["needs activate_command = [", "and needs deactivate_command = ["]),
            ("kind = \"cometbft-filepv\"\ncommand = [\"n\"]\n", &["needs key_file: the protected", "needs home = "]),
            (
                "kind = \"cometbft-filepv\"\nkey_file = \"/k\"\ncommand = [\"n\"]\n",
                &["\"cometbft-filepv\" needs home = "],
            ),
            (
                "kind = \"cometbft-signer\"\nkey_file = \"/k\"\n",
                &["\"cometbft-signer\" needs priv_validator_laddr: ", "needs chain_id: the chain"],
            ),
        ];
        for (producer, wants) in cases {
            let text = format!("{base}{chain}[producer]\n{producer}");
            let problems = Config::parse(&text).expect_err("a required setting is missing");
            assert_eq!(problems.len(), 1, "{producer}: {problems:?}");
            let p = &problems[0];
            assert_eq!(p.position.map(|at| at.line), Some(producer_line), "{producer}: {p}");
            for want in *wants {
                assert!(p.message.contains(want), "{producer}: {p}");
            }
        }
    }

    #[test]
    fn a_signer_address_whose_node_id_is_not_40_hex_characters_is_refused_naming_the_field() {
        let signer = |laddr: &str| {
            format!(
                "[chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:4\"\n[producer]\nkind = \"cometbft-signer\"\nkey_file = \"/k\"\nchain_id = \"c\"\npriv_validator_laddr = \"{laddr}\"\n"
            )
        };
        let good = "tcp://C0FFEE0000000000000000000000000000C0FFEE@127.0.0.1:26659";
        assert_eq!(problems_with(&signer(good)), Vec::<String>::new());
        let base = VALID.split("[chain]").next().expect("prefix");
        let bad = signer("tcp://f00d@127.0.0.1:26659");
        let problems = Config::parse(&format!("{base}{bad}")).expect_err("a short node id");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key.as_deref(), Some("producer.priv_validator_laddr"));
        assert!(problems[0].message.contains("has 4 characters, not 40"), "{}", problems[0].message);
    }

    #[test]
    fn a_witness_member_needs_no_chain_or_producer() {
        let text = VALID.replace("member = \"a\"", "member = \"c\"").replace("[producer]\nkind = \"sim\"\n", "");
        assert!(Config::parse(&text).is_ok());
        let with_producer = VALID.replace("member = \"a\"", "member = \"c\"");
        let problems = Config::parse(&with_producer).expect_err("a witness with [producer] is refused");
        assert_eq!(problems[0].key.as_deref(), Some("producer"));
    }

    #[test]
    fn consul_backend_allows_two_members() {
        let text = VALID
            .replace("[[members]]\nid = \"c\"\npeer_address = \"127.0.0.1:3\"\nkind = \"witness\"\n", "")
            .replace("[coordinator]\n", "[coordinator]\nbackend = \"consul\"\n")
            .replace("[coordinator.raft]\ninsecure_plaintext_peers = true\n", "");
        assert!(Config::parse(&text).is_ok(), "{:?}", Config::parse(&text));
    }

    #[test]
    fn renew_that_outlasts_the_holders_validity_is_refused() {
        let text = VALID.replace("lease_ttl = \"3s\"", "lease_ttl = \"3s\"\nrenew_interval = \"2600ms\"");
        let problems = Config::parse(&text).expect_err("renew after the holder's own deadline");
        assert!(problems[0].message.contains("lease_ttl − safety_margin"), "{problems:?}");
    }

    #[test]
    fn a_file_above_the_size_cap_is_refused_by_its_size_before_it_is_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("huge.toml");
        let file = std::fs::File::create(&path).expect("create");
        // Sparse: the size is what counts, and nothing of it is read.
        file.set_len(MAX_CONFIG_BYTES + 1).expect("set_len");
        let err = Config::load(&path).expect_err("above the cap");
        assert!(matches!(err, ConfigError::TooLarge { size, .. } if size == MAX_CONFIG_BYTES + 1), "{err}");
        let message = err.to_string();
        assert!(message.contains("16777217 bytes") && message.contains("16 MiB"), "{message}");
    }

    #[test]
    fn text_above_the_size_cap_is_refused_before_parsing() {
        let text = " ".repeat(MAX_CONFIG_BYTES as usize + 1);
        let problems = Config::parse(&text).expect_err("above the cap");
        assert!(problems[0].message.contains("more than the 16777216 bytes (16 MiB)"), "{problems:?}");
    }

    #[test]
    fn a_ten_megabyte_region_is_refused_naming_it_without_quoting_it() {
        let text = VALID.replace("priority = 5\n", &format!("priority = 5\nregion = \"{}\"\n", "r".repeat(10_000_000)));
        let problems = Config::parse(&text).expect_err("a 10 MB region");
        assert_eq!(problems.len(), 1, "one problem");
        assert_eq!(problems[0].key.as_deref(), Some("members[0].region"));
        assert_eq!(problems[0].position.map(|p| p.line), Some(6));
        assert!(problems[0].message.contains("10000000 characters is above the maximum of 64"), "{}", problems[0]);
    }

    #[test]
    fn a_parse_error_quotes_a_huge_value_only_in_part() {
        let text = VALID.replace("kind = \"witness\"", &format!("kind = \"{}\"", "w".repeat(1_000_000)));
        let problems = Config::parse(&text).expect_err("an unknown kind");
        assert!(problems[0].message.len() < 2000, "the message has {} bytes", problems[0].message.len());
        assert!(problems[0].message.contains("expected `producer` or `witness`"), "{}", problems[0].message);
    }

    proptest! {
        // Bad input gets an error, never a panic: arbitrary text, and the valid text with a
        // random slice cut out or a random character put in.
        #[test]
        fn parse_never_panics(text in ".{0,400}") {
            let _ = Config::parse(&text);
        }

        #[test]
        fn parse_never_panics_on_damaged_config(at in 0usize..400, len in 0usize..30, c in any::<char>()) {
            let at = at.min(VALID.len());
            let mut text: String = VALID.chars().take(at).collect();
            text.push(c);
            text.extend(VALID.chars().skip(at + len));
            if let Err(problems) = Config::parse(&text) {
                prop_assert!(!problems.is_empty());
                prop_assert!(problems.iter().all(|p| !p.message.is_empty()));
            }
        }
    }
}
