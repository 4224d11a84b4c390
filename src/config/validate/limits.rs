//! Upper (and some lower) bounds on every value an operator writes, so that no setting is so
//! large that arithmetic on it overflows, a timer never fires in practice, or a string fills
//! memory, a log line or a terminal.
//!
//! Each bound is one line of a table — the key, the limit and why — so that a refusal names the
//! field, its limit and the reason, and every limit can be read in one place (README.md's
//! configuration reference repeats them). This module only looks at the parsed config; it never
//! touches the file system.

use std::path::Path;
use std::time::Duration;

use super::Problems;
use crate::config::{Config, ProducerSection, duration_text};

/// `[producer]` in the file's flat shape, over which the bounds are stated (its adapter's settings).
fn section(c: &Config) -> Option<ProducerSection> {
    c.producer.clone().map(ProducerSection::from)
}

/// A bound on one kind of value. `key` may contain `[i]`, replaced by each entry's index when
/// `values` yields one value per entry of an array.
struct Limit<T: 'static> {
    key: &'static str,
    min: T,
    max: T,
    why: &'static str,
    values: fn(&Config) -> Vec<T>,
}

const fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Maxima of every duration that is not already bounded by another (renew_interval,
/// safety_margin and call_timeout are bounded by lease_ttl; probe_timeout by probe_interval).
/// A zero minimum means that the rule for zero lives with the field's other rules.
const DURATION_LIMITS: &[Limit<Duration>] = &[
    Limit {
        key: "coordinator.lease_ttl",
        min: Duration::ZERO,
        max: seconds(5 * 60),
        why: "a failover waits out the whole lease, so a longer one leaves the chain without a producer for longer than any hiccup is worth riding out",
        values: |c| vec![c.coordinator.lease_ttl],
    },
    Limit {
        key: "coordinator.raft.tick",
        min: Duration::from_millis(1),
        max: seconds(1),
        why: "raft's clock: elections and heartbeats are counted in ticks, and they must fit well inside a lease",
        values: |c| vec![c.coordinator.raft.tick],
    },
    Limit {
        key: "coordinator.consul.check_ttl",
        min: Duration::ZERO,
        max: seconds(5 * 60),
        why: "with Consul the lease lasts as long as this check, and a failover waits it out",
        values: |c| vec![c.coordinator.consul.check_ttl],
    },
    Limit {
        key: "coordinator.consul.lock_delay",
        min: Duration::ZERO,
        max: seconds(60),
        why: "Consul's own maximum lock-delay",
        values: |c| vec![c.coordinator.consul.lock_delay],
    },
    Limit {
        key: "chain.probe_interval",
        min: Duration::ZERO,
        max: seconds(5 * 60),
        why: "a failed node is noticed only at the next probe",
        values: |c| c.chain.iter().map(|ch| ch.probe_interval).collect(),
    },
    Limit {
        key: "chain.stall_after",
        min: Duration::ZERO,
        max: seconds(24 * 3600),
        why: "a height that has not moved for a day is a stall on any chain",
        values: |c| c.chain.iter().map(|ch| ch.stall_after).collect(),
    },
    Limit {
        key: "chain.sim.block_interval",
        min: Duration::ZERO,
        max: seconds(60),
        why: "the simulated chain is for trials, and a block a minute is slower than any chain it stands in for",
        values: |c| c.chain.iter().filter_map(|ch| ch.sim.as_ref()).map(|s| s.block_interval).collect(),
    },
    Limit {
        key: "producer.fence_timeout",
        min: Duration::ZERO,
        max: seconds(5 * 60),
        why: "a deactivation that has not confirmed by then will not, and the producer is killed instead",
        values: |c| section(c).iter().map(|p| p.fence_timeout).collect(),
    },
    Limit {
        key: "producer.command_timeout",
        min: Duration::ZERO,
        max: seconds(10 * 60),
        why: "a failover waits for activate and deactivate commands this long",
        values: |c| section(c).iter().map(|p| p.command_timeout).collect(),
    },
    Limit {
        key: "producer.block_interval",
        min: Duration::ZERO,
        max: seconds(3600),
        why: "more than an hour between blocks is no longer a chain anyone produces for",
        values: |c| section(c).iter().map(|p| p.block_interval).collect(),
    },
    Limit {
        key: "failover.priority_delay",
        min: Duration::ZERO,
        max: seconds(10 * 60),
        why: "the lease stays free while a lower-priority candidate waits, and every block meanwhile is missed",
        values: |c| vec![c.failover.priority_delay],
    },
    Limit {
        key: "failover.cooldown",
        min: Duration::ZERO,
        max: seconds(24 * 3600),
        why: "no automatic failover happens for this long after one, so a longer cooldown leaves the chain unguarded",
        values: |c| vec![c.failover.cooldown],
    },
    Limit {
        key: "failover.fence_command_timeout",
        min: Duration::ZERO,
        max: seconds(10 * 60),
        why: "a promotion waits this long for the STONITH command",
        values: |c| vec![c.failover.fence_command_timeout],
    },
    Limit {
        key: "failover.fence_takeover_after",
        min: Duration::ZERO,
        max: seconds(10 * 60),
        why: "past the lease's own expiry a fenced takeover gains nothing",
        values: |c| c.failover.fence_takeover_after.into_iter().collect(),
    },
    Limit {
        key: "webhooks[i].timeout",
        min: Duration::ZERO,
        max: seconds(60),
        why: "a receiver that has not answered in a minute will not, and the next attempt follows anyway",
        values: |c| c.webhooks.iter().map(|w| w.timeout).collect(),
    },
];

/// Bounds of every count and height an operator writes, and of the lengths of the lists.
const COUNT_LIMITS: &[Limit<u64>] = &[
    Limit {
        key: "members",
        min: 0,
        max: 32,
        why: "every member takes part in every raft commit and status round",
        values: |c| vec![c.members.len() as u64],
    },
    Limit {
        key: "coordinator.raft.heartbeat_ticks",
        min: 1,
        max: u32::MAX as u64,
        why: "a leader that never sends a heartbeat loses its followers",
        values: |c| vec![u64::from(c.coordinator.raft.heartbeat_ticks)],
    },
    Limit {
        key: "coordinator.raft.election_ticks",
        min: 0,
        max: 1000,
        why: "an election timeout of more ticks than that is slower than any lease it must fit in",
        values: |c| vec![u64::from(c.coordinator.raft.election_ticks)],
    },
    Limit {
        key: "chain.reference_rpcs",
        min: 0,
        max: 16,
        why: "each is queried at every probe",
        values: |c| c.chain.iter().map(|ch| ch.reference_rpcs.len() as u64).collect(),
    },
    Limit {
        key: "chain.unhealthy_after",
        min: 1,
        max: 1000,
        why: "consecutive bad probes: at least one must count, and a thousand already hides a dead node for that many probes",
        values: |c| c.chain.iter().map(|ch| u64::from(ch.unhealthy_after)).collect(),
    },
    Limit {
        key: "chain.max_lag",
        min: 0,
        max: 1_000_000,
        why: "blocks behind: a node a million blocks behind is not in sync by any measure",
        values: |c| c.chain.iter().map(|ch| ch.max_lag).collect(),
    },
    Limit {
        key: "chain.signing_window",
        min: 1,
        max: 1000,
        why: "commits fetched at every probe to look for our signature",
        values: |c| c.chain.iter().map(|ch| u64::from(ch.signing_window)).collect(),
    },
    Limit {
        key: "failover.max_lag_on_failover",
        min: 0,
        max: 1_000_000,
        why: "blocks behind: a candidate a million blocks behind is not in sync by any measure",
        values: |c| vec![c.failover.max_lag_on_failover],
    },
    Limit {
        key: "failover.floor_margin",
        min: 0,
        max: 1_000_000,
        why: "heights skipped at every activation: more only stops the key from signing for longer",
        values: |c| vec![c.failover.floor_margin],
    },
    Limit {
        key: "failover.import_max_ahead",
        min: 1,
        max: 1_000_000_000_000,
        why: "heights an imported watermark may lie above the best known height: zero refuses every import, and more than 10^12 is no check at all",
        values: |c| vec![c.failover.import_max_ahead],
    },
    Limit {
        key: "webhooks",
        min: 0,
        max: 16,
        why: "every event is posted to each receiver",
        values: |c| vec![c.webhooks.len() as u64],
    },
    Limit {
        key: "webhooks[i].attempts",
        min: 1,
        max: 20,
        why: "attempts per event, 1 s, 2 s, 4 s … apart: twenty already spans days",
        values: |c| c.webhooks.iter().map(|w| u64::from(w.attempts)).collect(),
    },
    Limit {
        key: "webhooks[i].topics",
        min: 0,
        max: 3,
        why: "there are three topics, each listed at most once",
        values: |c| c.webhooks.iter().map(|w| w.topics.len() as u64).collect(),
    },
];

/// How a text's length is counted: bytes where a protocol or the kernel counts bytes, characters
/// where a person reads the text.
#[derive(Clone, Copy)]
enum Measure {
    Bytes,
    Characters,
}

/// Longest texts, the URLs and paths among them (each URL in its parsed, normalised form).
const TEXT_LIMITS: &[(Measure, Limit<usize>)] = &[
    (
        Measure::Characters,
        Limit {
            key: "members[i].region",
            min: 0,
            max: 64,
            why: "free text shown in every status table",
            values: |c| c.members.iter().map(|m| m.region.chars().count()).collect(),
        },
    ),
    (
        Measure::Bytes,
        Limit {
            key: "coordinator.consul.prefix",
            min: 0,
            max: 256,
            why: "it starts every Consul key this cluster writes",
            values: |c| vec![c.coordinator.consul.prefix.len()],
        },
    ),
    (
        Measure::Bytes,
        Limit {
            key: "chain.sim.chain_id",
            min: 0,
            max: 50,
            why: "CometBFT's limit on a chain id",
            values: |c| c.chain.iter().filter_map(|ch| ch.sim.as_ref()).map(|s| s.chain_id.len()).collect(),
        },
    ),
    (
        Measure::Bytes,
        Limit {
            key: "producer.chain_id",
            min: 0,
            max: 50,
            why: "CometBFT's limit on a chain id",
            values: |c| section(c).iter().filter_map(|p| p.chain_id.as_ref()).map(String::len).collect(),
        },
    ),
    (
        Measure::Bytes,
        Limit {
            key: "producer.systemd_unit",
            min: 0,
            max: 255,
            why: "systemd's limit on a unit name",
            values: |c| section(c).iter().filter_map(|p| p.systemd_unit.as_ref()).map(String::len).collect(),
        },
    ),
    (
        Measure::Bytes,
        Limit {
            key: "coordinator.consul.address",
            min: 0,
            max: MAX_URL_BYTES,
            why: URL_WHY,
            values: |c| vec![c.coordinator.consul.address.0.as_str().len()],
        },
    ),
    (
        Measure::Bytes,
        Limit {
            key: "chain.rpc",
            min: 0,
            max: MAX_URL_BYTES,
            why: URL_WHY,
            values: |c| c.chain.iter().filter_map(|ch| ch.rpc.as_ref()).map(|u| u.0.as_str().len()).collect(),
        },
    ),
    (
        Measure::Bytes,
        Limit {
            key: "chain.reference_rpcs[i]",
            min: 0,
            max: MAX_URL_BYTES,
            why: URL_WHY,
            values: |c| c.chain.iter().flat_map(|ch| ch.reference_rpcs.iter().map(|u| u.0.as_str().len())).collect(),
        },
    ),
    (
        Measure::Bytes,
        Limit {
            key: "producer.rpc",
            min: 0,
            max: MAX_URL_BYTES,
            why: URL_WHY,
            values: |c| section(c).iter().filter_map(|p| p.rpc.as_ref()).map(|u| u.0.as_str().len()).collect(),
        },
    ),
    (
        Measure::Bytes,
        Limit {
            key: "webhooks[i].url",
            min: 0,
            max: MAX_URL_BYTES,
            why: URL_WHY,
            values: |c| c.webhooks.iter().map(|w| w.url.0.as_str().len()).collect(),
        },
    ),
];

/// Longest entry of `priv_validator_laddr`; a longer one is not parsed (nor quoted) at all. Checked
/// with the setting's other rules, which name the entry of a list.
pub(super) const MAX_LADDR_BYTES: usize = 512;
const MAX_URL_BYTES: usize = 2048;
const URL_WHY: &str = "longer URLs are refused by many servers and proxies";

/// Longest path: Linux's PATH_MAX is 4096 bytes with the terminating NUL, so 4095 usable.
const MAX_PATH_BYTES: usize = 4095;
/// Longest unix socket path: `sun_path` holds 108 bytes, the terminating NUL included.
const MAX_SOCKET_PATH_BYTES: usize = 107;
/// Most arguments of a command, and the longest argument.
const MAX_ARGS: usize = 256;
const MAX_ARG_BYTES: usize = 4096;

/// Every limit in this module, all problems at once.
pub(super) fn check(config: &Config, out: &mut Problems<'_, '_>) {
    for limit in DURATION_LIMITS {
        check_limit(limit, config, out, |v| duration_text::format(*v));
    }
    for limit in COUNT_LIMITS {
        check_limit(limit, config, out, u64::to_string);
    }
    for (measure, limit) in TEXT_LIMITS {
        let unit = match measure {
            Measure::Bytes => "bytes",
            Measure::Characters => "characters",
        };
        check_limit(limit, config, out, |n| format!("{n} {unit}"));
    }
    check_paths(config, out);
    check_commands(config, out);
    check_shapes(config, out);
}

fn check_limit<T: PartialOrd>(
    limit: &Limit<T>,
    config: &Config,
    out: &mut Problems<'_, '_>,
    show: impl Fn(&T) -> String,
) {
    for (i, value) in (limit.values)(config).iter().enumerate() {
        let key = limit.key.replace("[i]", &format!("[{i}]"));
        if *value > limit.max {
            out.at(&key, format!("{} is above the maximum of {}: {}", show(value), show(&limit.max), limit.why));
        } else if *value < limit.min {
            out.at(&key, format!("{} is below the minimum of {}: {}", show(value), show(&limit.min), limit.why));
        }
    }
}

/// Every path: at most PATH_MAX bytes and no NUL, which no file name can hold.
fn check_paths(config: &Config, out: &mut Problems<'_, '_>) {
    let c = config;
    let mut paths: Vec<(&str, &Path)> = vec![("data_dir", &c.data_dir), ("api.socket", &c.api.socket)];
    paths.push(("failover.watchdog_device", &c.failover.watchdog_device));
    let consul = &c.coordinator.consul;
    paths.extend(consul.token_file.as_deref().map(|p| ("coordinator.consul.token_file", p)));
    paths.extend(consul.ca_file.as_deref().map(|p| ("coordinator.consul.ca_file", p)));
    if let Some(sim) = c.chain.as_ref().and_then(|ch| ch.sim.as_ref()) {
        paths.push(("chain.sim.ledger", &sim.ledger));
    }
    let producer = section(c);
    if let Some(p) = &producer {
        paths.extend(p.key_file.as_deref().map(|f| ("producer.key_file", f)));
        paths.extend(p.home.as_deref().map(|f| ("producer.home", f)));
    }
    if let Some(tls) = &c.tls {
        paths.extend([
            ("tls.ca_file", &*tls.ca_file),
            ("tls.cert_file", &tls.cert_file),
            ("tls.key_file", &tls.key_file),
        ]);
    }
    for (key, path) in paths {
        let bytes = path.as_os_str().as_encoded_bytes();
        if bytes.len() > MAX_PATH_BYTES {
            out.at(key, format!("the path is {} bytes, more than the {MAX_PATH_BYTES} a path may have", bytes.len()));
        } else if bytes.contains(&0) {
            out.at(key, "the path contains a NUL character, which no file name can hold");
        } else if key == "api.socket" && bytes.len() > MAX_SOCKET_PATH_BYTES {
            out.at(
                key,
                format!(
                    "the socket path is {} bytes; a unix socket's path is at most {MAX_SOCKET_PATH_BYTES} bytes: choose a shorter one, such as \"/run/failoverd/control.sock\"",
                    bytes.len()
                ),
            );
        }
    }
}

/// Every argv: at most [`MAX_ARGS`] arguments of at most [`MAX_ARG_BYTES`] each, none with a
/// NUL (the kernel cannot pass one).
fn check_commands(config: &Config, out: &mut Problems<'_, '_>) {
    let mut commands: Vec<(&str, &[String])> = Vec::new();
    commands.extend(config.chain.as_ref().and_then(|ch| ch.command.as_deref()).map(|a| ("chain.command", a)));
    let producer = section(config);
    if let Some(p) = &producer {
        for (key, argv) in [
            ("producer.command", &p.command),
            ("producer.activate_command", &p.activate_command),
            ("producer.deactivate_command", &p.deactivate_command),
            ("producer.fence_command", &p.fence_command),
        ] {
            commands.extend(argv.as_deref().map(|a| (key, a)));
        }
    }
    commands.extend(config.failover.fence_command.as_deref().map(|a| ("failover.fence_command", a)));
    for (key, argv) in commands {
        if argv.len() > MAX_ARGS {
            out.at(key, format!("{} arguments are more than the maximum of {MAX_ARGS}", argv.len()));
            continue;
        }
        for (i, arg) in argv.iter().enumerate() {
            if arg.len() > MAX_ARG_BYTES {
                out.at(
                    &format!("{key}[{i}]"),
                    format!("argument {i} is {} bytes, more than the maximum of {MAX_ARG_BYTES}", arg.len()),
                );
            } else if arg.contains('\0') {
                out.at(
                    &format!("{key}[{i}]"),
                    format!("argument {i} contains a NUL character, which no program can receive"),
                );
            }
        }
    }
}

/// Texts that end up in a store key, a command line or a terminal.
fn check_shapes(config: &Config, out: &mut Problems<'_, '_>) {
    for (i, m) in config.members.iter().enumerate() {
        if m.region.chars().any(char::is_control) {
            out.at(
                &format!("members[{i}].region"),
                "the region contains a control character (a newline, a tab, a terminal escape); write plain text",
            );
        }
    }
    let prefix = &config.coordinator.consul.prefix;
    if !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'.' | b'-'))
        || prefix.split('/').any(|segment| matches!(segment, "" | "." | ".."))
    {
        out.at(
            "coordinator.consul.prefix",
            "expected a KV prefix of letters, digits and / _ . - without empty, \".\" or \"..\" segments and without a leading or trailing '/', such as \"failoverd/cosmoshub\"",
        );
    }
    if section(config).and_then(|p| p.systemd_unit).is_some_and(|u| !is_service_unit_name(&u)) {
        out.at(
            "producer.systemd_unit",
            "expected a service unit name such as \"cometbft.service\" or \"node@main.service\": letters, digits and : _ . @ - \\, not starting with '-' or '.'",
        );
    }
}

/// A systemd service unit name: `name.service` or `template@instance.service`, in the
/// characters systemd allows. A leading '-' would be read by systemctl as an option.
fn is_service_unit_name(unit: &str) -> bool {
    let Some(stem) = unit.strip_suffix(".service") else { return false };
    !stem.is_empty()
        && !stem.starts_with(['-', '.'])
        && stem.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'@' | b'-' | b'\\'))
}
