//! Rules that span fields, checked after parsing, all at once, and the bounds of every single
//! value (in [`limits`]).
//!
//! [`validate`] is pure: it looks only at the parsed config. What the files a config names hold
//! is [`super::files`]' concern.

mod limits;

use std::collections::HashSet;
use std::time::Duration;

use super::{
    Backend, ChainKind, Config, ConfigProblem, ProducerAdapter, ProducerConfig, SignerSettings, SourceMap,
    WatchdogMode, duration_text,
};
use crate::domain::MemberKind;

/// Every problem in `config`, each located by `map`. Empty means valid.
pub fn validate(config: &Config, map: &SourceMap<'_>) -> Vec<ConfigProblem> {
    let mut out = Problems::new(map);
    check_members(config, &mut out);
    check_lease_timings(config, &mut out);
    check_raft(config, &mut out);
    check_peer_security(config, &mut out);
    check_chain_and_producer(config, &mut out);
    check_api(config, &mut out);
    check_watchdog(config, &mut out);
    check_fence_takeover(config, &mut out);
    limits::check(config, &mut out);
    out.finish()
}

/// At most this many problems are listed, the rest only counted: a file with more has gone
/// wrong in a way the first ones show, and thousands of lines help no one at 3 a.m.
const MAX_LISTED: usize = 100;

/// The problems found so far, each located in the file by its key.
pub(super) struct Problems<'m, 'a> {
    map: &'m SourceMap<'a>,
    list: Vec<ConfigProblem>,
    unlisted: usize,
}

impl<'m, 'a> Problems<'m, 'a> {
    pub(super) fn new(map: &'m SourceMap<'a>) -> Self {
        Problems { map, list: Vec::new(), unlisted: 0 }
    }

    pub(super) fn finish(mut self) -> Vec<ConfigProblem> {
        if self.unlisted > 0 {
            self.list.push(ConfigProblem {
                key: None,
                position: None,
                message: format!("and {} more problems, not listed: fix the ones above and check again", self.unlisted),
            });
        }
        self.list
    }

    pub(super) fn at(&mut self, key: &str, message: impl Into<String>) {
        if self.list.len() >= MAX_LISTED {
            self.unlisted += 1;
            return;
        }
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
        check_consul_timings(config, out);
    }
}

/// Consul's lock-delay is what keeps a new holder out when the old holder's session ends at an
/// instant its own deadline cannot foresee (serfHealth, a destroy): it must cover the holder's
/// validity plus the safety margin, which adds up to check_ttl (src/coord/consul/mod.rs argues it).
fn check_consul_timings(config: &Config, out: &mut Problems<'_, '_>) {
    let c = &config.coordinator;
    let d = duration_text::format;
    let (check_ttl, lock_delay) = (c.consul.check_ttl, c.consul.lock_delay);
    if check_ttl.is_zero() {
        out.at("coordinator.consul.check_ttl", "check_ttl must be above zero");
    } else if c.renew_interval >= check_ttl.saturating_sub(c.safety_margin) {
        out.at(
            "coordinator.consul.check_ttl",
            "with Consul the holder's lease lasts check_ttl − safety_margin after each renew: check_ttl must exceed renew_interval + safety_margin",
        );
    }
    if check_ttl > CONSUL_MAX_LOCK_DELAY {
        out.at(
            "coordinator.consul.check_ttl",
            format!(
                "check_ttl ({}) is above {}, the longest lock-delay Consul accepts, so no coordinator.consul.lock_delay can cover the holder's validity: lower coordinator.consul.check_ttl to {} or less",
                d(check_ttl),
                d(CONSUL_MAX_LOCK_DELAY),
                d(CONSUL_MAX_LOCK_DELAY)
            ),
        );
    } else if lock_delay < check_ttl {
        out.at(
            "coordinator.consul.lock_delay",
            format!(
                "coordinator.consul.lock_delay ({}) is shorter than the holder's validity, coordinator.consul.check_ttl − coordinator.safety_margin ({} − {}), plus coordinator.safety_margin, which is coordinator.consul.check_ttl ({}): when Consul ends the holder's session early (serfHealth failing, the session destroyed) another member could take the lease while the holder still produces; set coordinator.consul.lock_delay to at least {}, or lower coordinator.consul.check_ttl",
                d(lock_delay),
                d(check_ttl),
                d(c.safety_margin),
                d(check_ttl),
                d(check_ttl)
            ),
        );
    }
}

/// Consul's own maximum session lock-delay.
const CONSUL_MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

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
    if r.election_ticks <= r.heartbeat_ticks {
        out.at(
            "coordinator.raft.election_ticks",
            format!(
                "election_ticks ({}) must be greater than heartbeat_ticks ({}, 3 unless set): lower coordinator.raft.heartbeat_ticks (1 was the default before) or raise election_ticks",
                r.election_ticks, r.heartbeat_ticks
            ),
        );
    }
    check_election_fits_the_lease(config, out);
}

/// With check_quorum, a raft leader cut off from its quorum goes on believing it leads for up to
/// one election timeout (tick × election_ticks) before it steps down, and only after that can a
/// new leader be elected and commit. That must fit within the holder's validity (lease_ttl −
/// safety_margin), or a deposed leader's view of the lease outlives the lease it served and any
/// leader change makes a healthy active self-fence (L2). It is a necessary condition, not a
/// guarantee: raft-rs randomises each follower's timeout up to twice election_ticks and the
/// last renew may be up to renew_interval old, so a leader change can still outlast the validity
/// of a config that passes (chaos/README, "Known limits"). Safety never rests on it: the
/// holder's validity is counted on its own clock. In signer mode the holder keeps its permission
/// for three election timeouts past its last renew whatever the TTL ([`Config::holder_horizon`]),
/// so the rule always holds there. A witness never holds the lease, and each holder declares its
/// own TTL to the store, so a witness's lease timings do not enter it.
fn check_election_fits_the_lease(config: &Config, out: &mut Problems<'_, '_>) {
    if config.me().is_some_and(|m| m.kind == MemberKind::Witness) {
        return;
    }
    let c = &config.coordinator;
    let r = &c.raft;
    if c.lease_ttl.checked_sub(c.safety_margin).is_none_or(|v| v.is_zero()) {
        return; // check_lease_timings reports the margin.
    }
    let validity = config.holder_horizon();
    let d = duration_text::format;
    let election = r.tick.checked_mul(r.election_ticks);
    if election.is_none_or(|e| e >= validity) {
        let shown = election.map_or_else(|| "too long to compute".to_string(), d);
        out.at(
            "coordinator.raft.election_ticks",
            format!(
                "one election timeout, tick × election_ticks ({} × {} = {shown}), must be shorter than lease_ttl − safety_margin ({}): a raft leader cut off from its quorum steps down only after an election timeout, and a new leader must be elected within the holder's validity, or every leader change makes a healthy active lose its lease (at least this much room is needed; an election can take up to twice as long); lower tick or election_ticks, or raise lease_ttl",
                d(r.tick),
                r.election_ticks,
                d(validity)
            ),
        );
    }
}

/// `failover.watchdog`: the device path must be absolute, and `required` needs timings that
/// leave the device a usable whole-second timeout: at least 1 s, below the holder's validity, and
/// longer than renew_interval, since the device is petted only after committed renews (a shorter
/// timeout would reset a healthy host between two of them). `automatic` with such timings runs
/// without the device and says so at start.
fn check_watchdog(config: &Config, out: &mut Problems<'_, '_>) {
    let f = &config.failover;
    if f.watchdog == WatchdogMode::Off {
        return;
    }
    if !f.watchdog_device.is_absolute() {
        out.at(
            "failover.watchdog_device",
            format!(
                "\"{}\" is not an absolute path: name the device, such as \"/dev/watchdog\" or \"/dev/watchdog0\"",
                super::excerpt(&f.watchdog_device.to_string_lossy())
            ),
        );
    }
    if f.watchdog != WatchdogMode::Required {
        return;
    }
    let c = &config.coordinator;
    if let Err(why) = crate::watchdog_device::usable_timeout(c) {
        out.at(
            "failover.watchdog",
            format!("watchdog = \"required\" cannot be met: {why}; or set watchdog = \"automatic\" or \"off\""),
        );
    }
}

/// `failover.fence_takeover_after`: a fenced takeover needs the fence command that makes it safe,
/// and a silence long enough that it is not just a late status (the holder's status goes out
/// twice per probe interval). Not in signer mode on the raft backend: there renews refresh the
/// raft leader's expiry timer outside the log, so the store shows no renew a standby could tell
/// a live holder by (docs/design.md §4).
fn check_fence_takeover(config: &Config, out: &mut Problems<'_, '_>) {
    let f = &config.failover;
    let Some(after) = f.fence_takeover_after else { return };
    const KEY: &str = "failover.fence_takeover_after";
    if config.signer_mode() && config.coordinator.backend == Backend::Raft {
        out.at(
            KEY,
            "signer mode on the raft backend takes no fenced takeover: its renews refresh the raft leader's expiry timer outside the log and leave the stored refresh stamp as it is, so a standby cannot tell a live holder from a dead one by it; the store's expiry moves the lease instead; remove fence_takeover_after",
        );
        return;
    }
    if f.fence_command.is_none() {
        out.at(
            KEY,
            "a fenced takeover needs failover.fence_command, the command that confirms the holder's node can no longer sign (powers it off, isolates it): set it, or remove fence_takeover_after",
        );
    }
    let probe = config.chain_or_default().probe_interval;
    if after < probe {
        let d = duration_text::format;
        out.at(
            KEY,
            format!(
                "fence_takeover_after ({}) is shorter than chain.probe_interval ({}): the lease holder publishes its status twice per probe interval, so a shorter silence is a late status, not a dead holder; set it to at least {}",
                d(after),
                d(probe),
                d(probe)
            ),
        );
    }
}

/// Make certificates for the peers: named in every refusal that asks for `[tls]`.
const MAKE_CERTIFICATES: &str =
    "make certificates with `failoverd tls ca --dir DIR`, then `failoverd tls member ID --dir DIR` for each member";

/// The raft backend runs with mutual TLS between peers unless a config explicitly opts into
/// plaintext on loopback (docs/design.md §5, trust model): only members may speak on the peer port,
/// and without certificates anyone who reaches it could vote, or forge a renew.
fn check_peer_security(config: &Config, out: &mut Problems<'_, '_>) {
    const OPT_IN: &str = "coordinator.raft.insecure_plaintext_peers";
    let plaintext = config.coordinator.raft.insecure_plaintext_peers;
    match (config.coordinator.backend, config.tls.is_some(), plaintext) {
        (Backend::Consul, _, true) => out.at(
            OPT_IN,
            "insecure_plaintext_peers applies to the raft backend's peer port, and backend = \"consul\" has none: remove it",
        ),
        (Backend::Raft, true, true) => out.at(
            OPT_IN,
            "insecure_plaintext_peers = true contradicts the [tls] section: remove one (keep [tls] for peers that authenticate each other)",
        ),
        (Backend::Raft, false, false) => out.at(
            "tls",
            format!(
                "the raft backend requires a [tls] section, so that only members can speak on the peer port: {MAKE_CERTIFICATES}; for a trial on one machine with loopback peer addresses only, set coordinator.raft.insecure_plaintext_peers = true instead"
            ),
        ),
        (Backend::Raft, false, true) => check_plaintext_stays_on_loopback(config, out),
        (Backend::Consul, _, false) | (Backend::Raft, true, false) => {}
    }
}

/// Plaintext peers are allowed only where no other host can reach them.
fn check_plaintext_stays_on_loopback(config: &Config, out: &mut Problems<'_, '_>) {
    let refuse = |what: String| {
        format!(
            "{what} is not a loopback address (127.0.0.0/8, ::1 or localhost), and insecure_plaintext_peers = true allows plaintext peers on loopback only: configure [tls] instead ({MAKE_CERTIFICATES})"
        )
    };
    for (i, m) in config.members.iter().enumerate() {
        if !m.peer_address.is_loopback() {
            let key = format!("members[{i}].peer_address");
            let message = refuse(format!("{key} {}", m.peer_address));
            out.at(&key, message);
        }
    }
    if let Some(listen) = config.peer_listen.filter(|l| !l.0.ip().is_loopback()) {
        out.at("peer_listen", refuse(format!("peer_listen {listen}")));
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
        Some(p) => check_producer(config, p, out),
    }
}

/// The rules of `[producer]` that its parsing cannot state: every required setting is there
/// (its adapter's struct has it), but an argv may be empty, an `rpc` may come from `chain.rpc`,
/// and a FilePV node has exactly one supervisor.
fn check_producer(config: &Config, p: &ProducerConfig, out: &mut Problems<'_, '_>) {
    let empty = |argv: &[String]| argv.first().is_none_or(|program| program.is_empty());
    let kind = p.kind().as_str();
    if p.fence_timeout.is_zero() {
        out.at("producer.fence_timeout", "fence_timeout must be above zero");
    }
    match &p.adapter {
        ProducerAdapter::Process(x) if empty(&x.command) => {
            out.at("producer.command", "producer kind \"process\" needs command = [\"/usr/bin/node\", \"arg\", …]")
        }
        ProducerAdapter::Process(_) | ProducerAdapter::Sim(_) => {}
        ProducerAdapter::Command(x) | ProducerAdapter::Solana(x) => {
            for (key, argv) in
                [("activate_command", &x.activate_command), ("deactivate_command", &x.deactivate_command)]
            {
                if empty(argv) {
                    out.at(
                        &format!("producer.{key}"),
                        format!("producer kind \"{kind}\" needs {key} = [\"program\", \"arg\", …]"),
                    );
                }
            }
            check_command_timeout(x.command_timeout, out);
        }
        ProducerAdapter::CometbftSigner(x) => check_signer(config, x, out),
        ProducerAdapter::CometbftFilepv(x) => {
            check_command_timeout(x.command_timeout, out);
            match (x.command.as_deref().is_none_or(empty), &x.systemd_unit) {
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
        ProducerAdapter::Antelope(_) | ProducerAdapter::Ethereum(_) => {
            if p.rpc().is_none() && config.chain.as_ref().is_none_or(|c| c.rpc.is_none()) {
                out.at("producer.rpc", "this producer drives the node over HTTP: set producer.rpc or chain.rpc");
            }
            if let ProducerAdapter::Ethereum(e) = &p.adapter
                && (e.block_interval.subsec_nanos() != 0 || e.block_interval < std::time::Duration::from_secs(1))
            {
                out.at(
                    "producer.block_interval",
                    "block_interval must be whole seconds, at least 1s (evm_setIntervalMining takes seconds)",
                );
            }
        }
    }
}

fn check_command_timeout(timeout: std::time::Duration, out: &mut Problems<'_, '_>) {
    if timeout.is_zero() {
        out.at("producer.command_timeout", "command_timeout must be above zero");
    }
}

/// The signer's node addresses parse, and its chain is the simulated node's when there is one.
fn check_signer(config: &Config, x: &SignerSettings, out: &mut Problems<'_, '_>) {
    check_node_addresses(&x.priv_validator_laddr, out);
    match config.chain.as_ref().and_then(|c| c.sim.as_ref()) {
        _ if x.chain_id.is_empty() => {
            out.at("producer.chain_id", "cometbft-signer needs chain_id: the chain the node signs for")
        }
        Some(sim) if x.chain_id != sim.chain_id => out.at(
            "producer.chain_id",
            format!(
                "the signer signs for chain \"{}\", but the simulated node (chain.sim.chain_id) runs chain \"{}\": every signature would be refused; set producer.chain_id = \"{}\"",
                super::excerpt(&x.chain_id),
                super::excerpt(&sim.chain_id),
                super::excerpt(&sim.chain_id)
            ),
        ),
        _ => {}
    }
}

/// Most nodes one member dials: a validator's sentries, not a fleet.
const MAX_SIGNER_NODES: usize = 16;

/// `priv_validator_laddr`: at least one node and at most [`MAX_SIGNER_NODES`]; each entry a node
/// address no longer than [`limits::MAX_LADDR_BYTES`]; no node twice. Every refusal names its
/// entry.
fn check_node_addresses(list: &crate::config::NodeAddresses, out: &mut Problems<'_, '_>) {
    use crate::producer::privval::connection::NodeAddress;
    const KEY: &str = "producer.priv_validator_laddr";
    if list.is_empty() {
        out.at(KEY, "the list names no node: write the node's address for its remote signer, such as \"tcp://127.0.0.1:26659\", or one per node in an array");
        return;
    }
    if list.len() > MAX_SIGNER_NODES {
        out.at(
            KEY,
            format!(
                "{} nodes are more than the maximum of {MAX_SIGNER_NODES}: one member signs for one validator's nodes",
                list.len()
            ),
        );
        return;
    }
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let key = list.key_of(i);
        // An overlong address is refused without being quoted.
        if text.len() > limits::MAX_LADDR_BYTES {
            out.at(
                &key,
                format!(
                    "{} bytes is above the maximum of {} bytes: a tcp://host:port or unix:///path address",
                    text.len(),
                    limits::MAX_LADDR_BYTES
                ),
            );
            continue;
        }
        let address = match text.parse::<NodeAddress>() {
            Ok(address) => address,
            Err(e) => {
                out.at(&key, e);
                continue;
            }
        };
        // One node is one endpoint, whether or not an entry pins its id.
        let endpoint = address.endpoint();
        match seen.iter().find(|(e, _)| *e == endpoint) {
            Some((_, first)) => out.at(
                &key,
                format!(
                    "\"{}\" is the node of entry {first} again: a member keeps one connection per node, so list each node once",
                    super::excerpt(text)
                ),
            ),
            None => seen.push((endpoint, i)),
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

fn kind_name(kind: &ChainKind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::{
        ApiSettings, CommandSettings, EthereumMining, EthereumSettings, FilePvSettings, HttpUrl, MemberConfig,
        ProcessSettings, TlsConfig, WebhookTopic,
    };
    use crate::domain::MemberId;

    /// A valid raft member on loopback with plaintext peers, a simulated chain and a webhook:
    /// every rule below is one change to it.
    const BASE: &str = r#"member = "a"
[[members]]
id = "a"
peer_address = "127.0.0.1:7101"
[[members]]
id = "b"
peer_address = "127.0.0.1:7102"
[[members]]
id = "c"
peer_address = "127.0.0.1:7103"
kind = "witness"
[coordinator.raft]
insecure_plaintext_peers = true
[chain]
kind = "sim"
rpc = "http://127.0.0.1:26657"
[chain.sim]
ledger = "/tmp/ledger.jsonl"
[producer]
kind = "sim"
[[webhooks]]
url = "https://hooks.example.com/x"
"#;

    fn base() -> Config {
        Config::parse(BASE).expect("the base config is valid")
    }

    fn problems_after(tweak: fn(&mut Config)) -> Vec<ConfigProblem> {
        let mut config = base();
        tweak(&mut config);
        validate(&config, &SourceMap::new(""))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn url(text: &str) -> HttpUrl {
        text.parse().expect("a valid URL")
    }

    fn long_url(bytes: usize) -> HttpUrl {
        let start = "http://127.0.0.1:1/";
        url(&format!("{start}{}", "a".repeat(bytes - start.len())))
    }

    /// Switches the base config from plaintext peers to `[tls]`.
    fn with_tls(c: &mut Config) -> &mut TlsConfig {
        c.coordinator.raft.insecure_plaintext_peers = false;
        c.tls.insert(TlsConfig { ca_file: "/ca.pem".into(), cert_file: "/m.pem".into(), key_file: "/m.key".into() })
    }

    fn argv(n: usize) -> Option<Vec<String>> {
        Some(vec!["x".to_string(); n])
    }

    fn members(n: usize) -> Vec<MemberConfig> {
        let mut list = base().members;
        for i in list.len()..n {
            list.push(MemberConfig {
                id: MemberId::new(format!("m{i}")).expect("id"),
                peer_address: format!("127.0.0.1:{}", 8000 + i).parse().expect("address"),
                kind: MemberKind::Witness,
                priority: 1,
                region: String::new(),
            });
        }
        list
    }

    fn chain(c: &mut Config) -> &mut crate::config::ChainConfig {
        c.chain.as_mut().expect("the base config has [chain]")
    }

    fn sim(c: &mut Config) -> &mut crate::config::SimConfig {
        chain(c).sim.as_mut().expect("the base config has [chain.sim]")
    }

    fn producer(c: &mut Config) -> &mut crate::config::ProducerConfig {
        c.producer.as_mut().expect("the base config has [producer]")
    }

    /// Switches the base config's producer to `adapter`, valid as given, and returns it.
    fn adapter(c: &mut Config, adapter: ProducerAdapter) -> &mut ProducerAdapter {
        let p = producer(c);
        p.adapter = adapter;
        &mut p.adapter
    }

    fn process(c: &mut Config) -> &mut ProcessSettings {
        let ProducerAdapter::Process(x) =
            adapter(c, ProducerAdapter::Process(ProcessSettings { command: vec!["node".into()] }))
        else {
            unreachable!("just set")
        };
        x
    }

    fn commands(c: &mut Config) -> &mut CommandSettings {
        let settings = CommandSettings {
            activate_command: vec!["on".into()],
            deactivate_command: vec!["off".into()],
            fence_command: None,
            command_timeout: secs(10),
        };
        let ProducerAdapter::Command(x) = adapter(c, ProducerAdapter::Command(settings)) else {
            unreachable!("just set")
        };
        x
    }

    fn ethereum(c: &mut Config) -> &mut EthereumSettings {
        let settings = EthereumSettings {
            api: ApiSettings { rpc: None, fence_command: None },
            mining: EthereumMining::Interval,
            block_interval: secs(1),
        };
        let ProducerAdapter::Ethereum(x) = adapter(c, ProducerAdapter::Ethereum(settings)) else {
            unreachable!("just set")
        };
        x
    }

    fn filepv(c: &mut Config) -> &mut FilePvSettings {
        let settings = FilePvSettings {
            key_file: "/k".into(),
            home: "/h".into(),
            command: Some(vec!["cometbft".into()]),
            systemd_unit: None,
            command_timeout: secs(10),
        };
        let ProducerAdapter::CometbftFilepv(x) = adapter(c, ProducerAdapter::CometbftFilepv(settings)) else {
            unreachable!("just set")
        };
        x
    }

    /// A signer without the simulated node, whose chain id it would have to match.
    fn signer(c: &mut Config) -> &mut SignerSettings {
        chain(c).sim = None;
        let settings = SignerSettings {
            key_file: "/k".into(),
            priv_validator_laddr: "tcp://127.0.0.1:26659".into(),
            chain_id: "sim".into(),
        };
        let ProducerAdapter::CometbftSigner(x) = adapter(c, ProducerAdapter::CometbftSigner(settings)) else {
            unreachable!("just set")
        };
        x
    }

    fn laddrs(list: &[&str]) -> crate::config::NodeAddresses {
        list.iter().map(|a| a.to_string()).collect::<Vec<_>>().into()
    }

    /// Switches the base config to the Consul backend (which has no peer port to secure).
    fn consul(c: &mut Config) -> &mut crate::config::ConsulConfig {
        c.coordinator.backend = Backend::Consul;
        c.coordinator.raft.insecure_plaintext_peers = false;
        &mut c.coordinator.consul
    }

    /// (the change, the key refused, a fragment of the message): one line per rule.
    type Case = (fn(&mut Config), &'static str, &'static str);

    #[rustfmt::skip]
    const REFUSED: &[Case] = &[
        // Peers: TLS by default, plaintext only on loopback and only for raft.
        (|c| c.coordinator.raft.insecure_plaintext_peers = false, "tls", "`failoverd tls ca --dir DIR`, then `failoverd tls member ID --dir DIR`"),
        (|c| c.members[1].peer_address = "10.0.0.2:7100".parse().expect("address"), "members[1].peer_address", "members[1].peer_address 10.0.0.2:7100 is not a loopback address"),
        (|c| c.members[2].peer_address = "db.internal:7100".parse().expect("address"), "members[2].peer_address", "db.internal:7100 is not a loopback"),
        (|c| c.peer_listen = Some("0.0.0.0:7100".parse().expect("address")), "peer_listen", "peer_listen 0.0.0.0:7100 is not a loopback"),
        (|c| { with_tls(c); c.coordinator.raft.insecure_plaintext_peers = true }, "coordinator.raft.insecure_plaintext_peers", "contradicts the [tls] section: remove one"),
        (|c| c.coordinator.backend = Backend::Consul, "coordinator.raft.insecure_plaintext_peers", "backend = \"consul\" has none"),
        // Raft's election timeout fits inside the holder's validity, strictly.
        (|c| c.coordinator.raft.election_ticks = 30, "coordinator.raft.election_ticks", "(100ms × 30 = 3s), must be shorter than lease_ttl − safety_margin (2s500ms)"),
        (|c| c.coordinator.raft.tick = ms(250), "coordinator.raft.election_ticks", "(250ms × 10 = 2s500ms), must be shorter"),
        // Durations.
        (|c| c.coordinator.lease_ttl = secs(301), "coordinator.lease_ttl", "5m1s is above the maximum of 5m"),
        (|c| c.coordinator.raft.tick = Duration::ZERO, "coordinator.raft.tick", "0 is below the minimum of 1ms"),
        (|c| c.coordinator.raft.tick = ms(1001), "coordinator.raft.tick", "1s1ms is above the maximum of 1s"),
        (|c| c.coordinator.consul.check_ttl = secs(301), "coordinator.consul.check_ttl", "above the maximum of 5m"),
        (|c| c.coordinator.consul.lock_delay = secs(61), "coordinator.consul.lock_delay", "1m1s is above the maximum of 1m: Consul's own maximum"),
        // Consul's lock-delay covers the holder's validity plus margin, whatever ends its session.
        (|c| { consul(c).lock_delay = ms(1999) }, "coordinator.consul.lock_delay", "coordinator.consul.lock_delay (1s999ms) is shorter than the holder's validity, coordinator.consul.check_ttl − coordinator.safety_margin (2s − 500ms), plus coordinator.safety_margin, which is coordinator.consul.check_ttl (2s)"),
        (|c| { consul(c).lock_delay = ms(500) }, "coordinator.consul.lock_delay", "set coordinator.consul.lock_delay to at least 2s"),
        (|c| { consul(c).lock_delay = Duration::ZERO }, "coordinator.consul.lock_delay", "(0) is shorter than"),
        (|c| { let consul = consul(c); consul.check_ttl = secs(61); consul.lock_delay = secs(60) }, "coordinator.consul.check_ttl", "check_ttl (1m1s) is above 1m, the longest lock-delay Consul accepts"),
        (|c| chain(c).probe_interval = secs(301), "chain.probe_interval", "above the maximum of 5m"),
        (|c| chain(c).stall_after = secs(24 * 3600 + 1), "chain.stall_after", "24h1s is above the maximum of 24h"),
        (|c| sim(c).block_interval = secs(61), "chain.sim.block_interval", "above the maximum of 1m"),
        (|c| producer(c).fence_timeout = secs(301), "producer.fence_timeout", "above the maximum of 5m"),
        (|c| commands(c).command_timeout = secs(601), "producer.command_timeout", "above the maximum of 10m"),
        (|c| ethereum(c).block_interval = secs(3601), "producer.block_interval", "above the maximum of 1h"),
        (|c| c.failover.priority_delay = secs(601), "failover.priority_delay", "above the maximum of 10m"),
        (|c| c.failover.cooldown = secs(24 * 3600 + 1), "failover.cooldown", "above the maximum of 24h"),
        (|c| c.failover.fence_command_timeout = secs(601), "failover.fence_command_timeout", "above the maximum of 10m"),
        (|c| c.webhooks[0].timeout = secs(61), "webhooks[0].timeout", "above the maximum of 1m"),
        // Counts.
        (|c| c.members = members(33), "members", "33 is above the maximum of 32"),
        (|c| c.coordinator.raft.heartbeat_ticks = 0, "coordinator.raft.heartbeat_ticks", "0 is below the minimum of 1"),
        (|c| c.coordinator.raft.election_ticks = 1001, "coordinator.raft.election_ticks", "1001 is above the maximum of 1000"),
        (|c| chain(c).reference_rpcs = vec![url("http://127.0.0.1:9"); 17], "chain.reference_rpcs", "17 is above the maximum of 16"),
        (|c| chain(c).unhealthy_after = 0, "chain.unhealthy_after", "0 is below the minimum of 1"),
        (|c| chain(c).unhealthy_after = 1001, "chain.unhealthy_after", "1001 is above the maximum of 1000"),
        (|c| chain(c).max_lag = 1_000_001, "chain.max_lag", "above the maximum of 1000000"),
        (|c| chain(c).signing_window = 0, "chain.signing_window", "below the minimum of 1"),
        (|c| chain(c).signing_window = 1001, "chain.signing_window", "above the maximum of 1000"),
        (|c| c.failover.max_lag_on_failover = 1_000_001, "failover.max_lag_on_failover", "above the maximum of 1000000"),
        (|c| c.failover.floor_margin = 1_000_001, "failover.floor_margin", "above the maximum of 1000000"),
        (|c| c.failover.import_max_ahead = 0, "failover.import_max_ahead", "0 is below the minimum of 1"),
        (|c| c.failover.import_max_ahead = 1_000_000_000_001, "failover.import_max_ahead", "above the maximum of 1000000000000"),
        (|c| c.webhooks = vec![c.webhooks[0].clone(); 17], "webhooks", "17 is above the maximum of 16"),
        (|c| c.webhooks[0].attempts = 0, "webhooks[0].attempts", "below the minimum of 1"),
        (|c| c.webhooks[0].attempts = 21, "webhooks[0].attempts", "above the maximum of 20"),
        (|c| c.webhooks[0].topics = [WebhookTopic::Fence; 4].to_vec(), "webhooks[0].topics", "4 is above the maximum of 3"),
        // Texts.
        (|c| c.members[0].region = "x".repeat(65), "members[0].region", "65 characters is above the maximum of 64 characters"),
        (|c| c.members[0].region = "eu\u{1b}[2Jwest".into(), "members[0].region", "control character"),
        (|c| c.coordinator.consul.prefix = "p".repeat(257), "coordinator.consul.prefix", "257 bytes is above the maximum of 256 bytes"),
        (|c| c.coordinator.consul.prefix = String::new(), "coordinator.consul.prefix", "expected a KV prefix"),
        (|c| c.coordinator.consul.prefix = "/failoverd".into(), "coordinator.consul.prefix", "expected a KV prefix"),
        (|c| c.coordinator.consul.prefix = "failoverd/".into(), "coordinator.consul.prefix", "expected a KV prefix"),
        (|c| c.coordinator.consul.prefix = "a//b".into(), "coordinator.consul.prefix", "expected a KV prefix"),
        (|c| c.coordinator.consul.prefix = "a/../b".into(), "coordinator.consul.prefix", "expected a KV prefix"),
        (|c| c.coordinator.consul.prefix = "a b?".into(), "coordinator.consul.prefix", "expected a KV prefix"),
        (|c| sim(c).chain_id = "c".repeat(51), "chain.sim.chain_id", "51 bytes is above the maximum of 50 bytes: CometBFT's limit"),
        (|c| signer(c).chain_id = "c".repeat(51), "producer.chain_id", "51 bytes is above the maximum of 50 bytes"),
        (|c| filepv(c).systemd_unit = Some(format!("{}.service", "u".repeat(248))), "producer.systemd_unit", "256 bytes is above the maximum of 255 bytes"),
        (|c| filepv(c).systemd_unit = Some("--now.service".into()), "producer.systemd_unit", "expected a service unit name"),
        (|c| filepv(c).systemd_unit = Some("cometbft".into()), "producer.systemd_unit", "expected a service unit name"),
        (|c| filepv(c).systemd_unit = Some("a b.service".into()), "producer.systemd_unit", "expected a service unit name"),
        (|c| signer(c).priv_validator_laddr = format!("tcp://{}", "h".repeat(507)).into(), "producer.priv_validator_laddr", "513 bytes is above the maximum of 512 bytes"),
        (|c| signer(c).priv_validator_laddr = laddrs(&["tcp://127.0.0.1:1", &format!("tcp://{}", "h".repeat(507))]), "producer.priv_validator_laddr[1]", "513 bytes is above the maximum of 512 bytes"),
        (|c| signer(c).priv_validator_laddr = laddrs(&[]), "producer.priv_validator_laddr", "the list names no node"),
        (|c| signer(c).priv_validator_laddr = laddrs(&["tcp://127.0.0.1:1", "127.0.0.1:2"]), "producer.priv_validator_laddr[1]", "expected tcp://<node id>@host:port"),
        (|c| signer(c).priv_validator_laddr = laddrs(&["tcp://10.0.0.1:1", "unix:///pv.sock", "tcp://c0ffee0000000000000000000000000000c0ffee@10.0.0.1:1"]), "producer.priv_validator_laddr[2]", "is the node of entry 0 again"),
        (|c| signer(c).priv_validator_laddr = laddrs(&["unix:///pv.sock"; 17]), "producer.priv_validator_laddr", "17 nodes are more than the maximum of 16"),
        (|c| c.coordinator.consul.address = long_url(2049), "coordinator.consul.address", "2049 bytes is above the maximum of 2048 bytes"),
        (|c| chain(c).rpc = Some(long_url(2049)), "chain.rpc", "above the maximum of 2048 bytes"),
        (|c| chain(c).reference_rpcs = vec![long_url(2049)], "chain.reference_rpcs[0]", "above the maximum of 2048 bytes"),
        (|c| ethereum(c).api.rpc = Some(long_url(2049)), "producer.rpc", "above the maximum of 2048 bytes"),
        (|c| c.webhooks[0].url = long_url(2049), "webhooks[0].url", "above the maximum of 2048 bytes"),
        // Paths.
        (|c| c.data_dir = PathBuf::from("/".repeat(4096)), "data_dir", "the path is 4096 bytes, more than the 4095"),
        (|c| filepv(c).home = "/var/lib/node\0/x".into(), "producer.home", "NUL character"),
        (|c| c.api.socket = PathBuf::from(format!("/run/{}", "s".repeat(103))), "api.socket", "the socket path is 108 bytes; a unix socket's path is at most 107 bytes"),
        (|c| c.coordinator.consul.token_file = Some(PathBuf::from("/".repeat(4096))), "coordinator.consul.token_file", "more than the 4095"),
        (|c| sim(c).ledger = "/l\0".into(), "chain.sim.ledger", "NUL character"),
        (|c| with_tls(c).key_file = "/".repeat(4096).into(), "tls.key_file", "more than the 4095"),
        // Commands.
        (|c| chain(c).command = argv(257), "chain.command", "257 arguments are more than the maximum of 256"),
        (|c| process(c).command = vec!["node".into(), "a".repeat(4097)], "producer.command[1]", "argument 1 is 4097 bytes, more than the maximum of 4096"),
        (|c| commands(c).activate_command = vec!["x".to_string(); 257], "producer.activate_command", "257 arguments"),
        (|c| commands(c).deactivate_command = vec!["off\0".into()], "producer.deactivate_command[0]", "argument 0 contains a NUL character"),
        (|c| commands(c).fence_command = argv(257), "producer.fence_command", "257 arguments"),
        (|c| c.failover.fence_command = Some(vec!["stonith".into(), "{member}\0".into()]), "failover.fence_command[1]", "NUL character"),
    ];

    #[test]
    fn each_rule_refuses_its_case_naming_the_field_and_the_limit() {
        assert_eq!(validate(&base(), &SourceMap::new(BASE)), Vec::new(), "the base config is valid");
        for (i, (tweak, key, fragment)) in REFUSED.iter().enumerate() {
            let problems = problems_after(*tweak);
            assert!(
                problems.iter().any(|p| p.key.as_deref() == Some(*key) && p.message.contains(fragment)),
                "case {i}: expected {key} with {fragment:?}, found {problems:#?}"
            );
        }
    }

    /// Changes that sit exactly on a limit, or use what a rule allows: all stay valid.
    const ALLOWED: &[fn(&mut Config)] = &[
        // Sentries: several nodes, each once.
        |c| {
            signer(c).priv_validator_laddr =
                laddrs(&["tcp://10.0.0.1:26659", "tcp://10.0.0.2:26659", "unix:///run/pv.sock"])
        },
        // The test labs' timing: 50ms × 10 = 500ms < 1s − 200ms.
        |c| {
            c.coordinator.raft.tick = ms(50);
            c.coordinator.lease_ttl = secs(1);
            c.coordinator.safety_margin = ms(200);
            c.coordinator.renew_interval = ms(300);
            c.coordinator.call_timeout = ms(800);
        },
        |c| {
            with_tls(c);
            c.members[1].peer_address = "10.0.0.2:7100".parse().expect("address");
            c.peer_listen = Some("0.0.0.0:7100".parse().expect("address"));
        },
        |c| {
            c.coordinator.backend = Backend::Consul;
            c.coordinator.raft.insecure_plaintext_peers = false;
            c.members[1].peer_address = "10.0.0.2:7100".parse().expect("address");
        },
        |c| {
            c.members[1].peer_address = "[::1]:7100".parse().expect("address");
            c.members[2].peer_address = "localhost:7100".parse().expect("address");
            c.peer_listen = Some("127.0.0.2:7100".parse().expect("address"));
        },
        |c| c.coordinator.lease_ttl = secs(300),
        |c| c.coordinator.raft.tick = ms(1),
        |c| {
            c.coordinator.lease_ttl = secs(300);
            c.coordinator.raft.tick = secs(1);
            c.coordinator.raft.election_ticks = 200;
        },
        |c| c.coordinator.consul.lock_delay = secs(60),
        |c| {
            let consul = consul(c);
            consul.check_ttl = secs(60);
            consul.lock_delay = secs(60);
        },
        |c| {
            let consul = consul(c);
            consul.check_ttl = ms(1500);
            consul.lock_delay = ms(1500);
            c.coordinator.renew_interval = ms(900);
        },
        |c| c.failover.cooldown = secs(24 * 3600),
        |c| c.members = members(32),
        |c| c.members[0].region = "é".repeat(64),
        |c| c.failover.import_max_ahead = 1_000_000_000_000,
        |c| chain(c).max_lag = 1_000_000,
        |c| c.webhooks = vec![c.webhooks[0].clone(); 16],
        |c| c.coordinator.consul.prefix = "failoverd/cosmoshub-4/v1.2_x".into(),
        |c| {
            let f = filepv(c);
            f.command = None;
            f.systemd_unit = Some("cometbft@main-1.service".into());
        },
        |c| signer(c).chain_id = "c".repeat(50),
        |c| process(c).command = vec!["a".repeat(4096); 256],
        |c| c.api.socket = PathBuf::from(format!("/run/{}", "s".repeat(102))),
        |c| c.data_dir = PathBuf::from("/".repeat(4095)),
        |c| chain(c).rpc = Some(long_url(2048)),
    ];

    #[test]
    fn values_on_a_limit_or_within_it_stay_valid() {
        for (i, tweak) in ALLOWED.iter().enumerate() {
            assert_eq!(problems_after(*tweak), Vec::new(), "case {i}");
        }
    }

    /// docs/design.md §9: the five timings a file leaves out default by the producer's kind; what
    /// the file sets stays, and signer mode's short lease passes the election rule (its horizon
    /// covers three election timeouts) where a key-holding producer's would not.
    #[test]
    fn lease_timings_default_by_producer_kind_and_signer_mode_passes_the_election_rule() {
        use crate::config::TimingDefaults;
        let signer = BASE.replace(
            "[producer]\nkind = \"sim\"\n",
            "[producer]\nkind = \"cometbft-signer\"\nkey_file = \"/k\"\nchain_id = \"sim\"\npriv_validator_laddr = \"tcp://127.0.0.1:26659\"\n",
        );
        let c = Config::parse(&signer).expect("signer mode at its defaults is valid");
        let d = TimingDefaults::SIGNER;
        let got = (c.coordinator.lease_ttl, c.coordinator.renew_interval, c.coordinator.safety_margin);
        assert_eq!(got, (d.lease_ttl, d.renew_interval, d.safety_margin));
        assert_eq!((c.coordinator.call_timeout, c.failover.priority_delay), (d.call_timeout, d.priority_delay));
        assert_eq!(c.holder_horizon(), ms(3150), "three 1 s election timeouts and a renew");
        let k = base();
        assert_eq!(k.coordinator.lease_ttl, TimingDefaults::KEY_HOLDING.lease_ttl);
        assert_eq!(k.holder_horizon(), k.coordinator.lease_ttl - k.coordinator.safety_margin);
        let written = signer.replace("[coordinator.raft]\n", "[coordinator]\nlease_ttl = \"2s\"\n[coordinator.raft]\n");
        let c = Config::parse(&written).expect("valid");
        assert_eq!(
            (c.coordinator.lease_ttl, c.coordinator.renew_interval),
            (secs(2), d.renew_interval),
            "a written value stays"
        );
        let short = |c: &mut Config| {
            c.coordinator.lease_ttl = ms(300);
            c.coordinator.renew_interval = ms(100);
            c.coordinator.safety_margin = ms(100);
            c.coordinator.call_timeout = ms(250);
        };
        let keys: Vec<Option<String>> = problems_after(short).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec![Some("coordinator.raft.election_ticks".to_string())],
            "key-holding needs the election inside its validity"
        );
        let witness = |c: &mut Config| {
            c.coordinator.lease_ttl = ms(300);
            c.coordinator.renew_interval = ms(100);
            c.coordinator.safety_margin = ms(100);
            c.coordinator.call_timeout = ms(250);
            c.member =
                c.members.iter().find(|m| m.kind == MemberKind::Witness).map(|m| m.id.clone()).expect("a witness");
            c.chain = None;
            c.producer = None;
        };
        assert_eq!(problems_after(witness), Vec::new(), "a witness never holds: its TTL does not enter the rule");
    }

    /// `failover.fence_takeover_after` needs the fence command that makes it safe, and a silence
    /// of at least one probe interval.
    #[test]
    fn a_fenced_takeover_needs_a_fence_command_and_at_least_a_probe_interval_of_silence() {
        let without_command = problems_after(|c| {
            c.failover.fence_command = None;
            c.failover.fence_takeover_after = Some(secs(2));
        });
        assert_eq!(without_command.len(), 1, "{without_command:?}");
        assert!(without_command[0].message.contains("needs failover.fence_command"), "{}", without_command[0]);
        let too_soon = problems_after(|c| {
            c.failover.fence_command = Some(vec!["stonith".into(), "{member}".into()]);
            c.failover.fence_takeover_after = Some(ms(999));
        });
        assert_eq!(too_soon.len(), 1, "{too_soon:?}");
        assert!(too_soon[0].message.contains("shorter than chain.probe_interval (1s)"), "{}", too_soon[0]);
        let fine = problems_after(|c| {
            c.failover.fence_command = Some(vec!["stonith".into(), "{member}".into()]);
            c.failover.fence_takeover_after = Some(secs(1));
        });
        assert_eq!(fine, Vec::new());
        let signer_mode = problems_after(|c| {
            c.failover.fence_command = Some(vec!["stonith".into(), "{member}".into()]);
            c.failover.fence_takeover_after = Some(secs(1));
            signer(c);
        });
        assert_eq!(signer_mode.len(), 1, "{signer_mode:?}");
        assert!(
            signer_mode[0].message.contains("signer mode on the raft backend takes no fenced takeover"),
            "{}",
            signer_mode[0]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let problems = problems_after(|c| {
            c.coordinator.lease_ttl = secs(3600);
            c.members[0].region = "x".repeat(100);
            c.failover.floor_margin = u64::MAX;
            c.members[1].peer_address = "10.0.0.2:7100".parse().expect("address");
        });
        let keys: Vec<&str> = problems.iter().filter_map(|p| p.key.as_deref()).collect();
        for key in ["coordinator.lease_ttl", "members[0].region", "failover.floor_margin", "members[1].peer_address"] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }

    #[test]
    fn beyond_a_hundred_problems_the_rest_are_counted_not_listed() {
        let problems = problems_after(|c| {
            c.webhooks[0].attempts = 0;
            c.webhooks = vec![c.webhooks[0].clone(); 250];
        });
        assert_eq!(problems.len(), MAX_LISTED + 1);
        let last = problems.last().expect("a summary");
        assert!(last.message.contains("and 151 more problems, not listed"), "{last}");
    }

    #[test]
    fn an_overlong_laddr_is_refused_without_being_quoted() {
        let problems = problems_after(|c| {
            signer(c).priv_validator_laddr = format!("bogus://{}", "h".repeat(100_000)).into();
        });
        assert!(problems.iter().any(|p| p.key.as_deref() == Some("producer.priv_validator_laddr")), "{problems:?}");
        assert!(problems.iter().all(|p| p.message.len() < 1000), "a message quotes the address");
    }
}
