//! What a member is made of, as a few small structs grouped by use: who it is, its policies,
//! the effects it may cause, where it reports, and what it probes. Each is shared read-only
//! (`Arc`) by the tasks that need it; none holds the loop's state.
//!
//! Owns the shapes and the policies' derivation from the config; building the rest is `wiring`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::chain::ChainProbe;
use crate::config::{Backend, Config};
use crate::coord::Coordinator;
use crate::domain::{KeyId, MemberId, MemberKind, MemberStatus};
use crate::events::EventLog;
use crate::guard::{GuardPolicy, SelfFence};
use crate::health::HealthPolicy;
use crate::producer::Producer;
use crate::role::RolePolicy;
use crate::role::Why;
use crate::telemetry::Telemetry;

/// Who this member is.
pub(super) struct Member {
    pub id: MemberId,
    pub kind: MemberKind,
    pub priority: u32,
    /// The validator key whose watermark this member's producer advances.
    pub key: KeyId,
}

/// The timings and thresholds, from the config.
pub(super) struct Policies {
    pub role: RolePolicy,
    pub health: HealthPolicy,
    pub guard: GuardPolicy,
    /// Every store call's deadline.
    pub call_timeout: Duration,
    /// How long a fence may take (`producer.fence_timeout`).
    pub fence_timeout: Duration,
    pub probe_interval: Duration,
    /// How often a member that does not hold the lease publishes its status when nothing
    /// changes: once per probe interval, and with Consul at least three times per `check_ttl`
    /// (a standby passes its session's check when it publishes, so two may go missing).
    pub status_every: Duration,
}

/// What the member acts on. Shared by the action tasks; none of it is the loop's state.
pub(super) struct Effects {
    /// The store, measured for telemetry.
    pub coord: Arc<dyn Coordinator>,
    pub producer: Option<Arc<dyn Producer>>,
    /// The local node, probed afresh by the promotion guard.
    pub probe: Option<Arc<dyn ChainProbe>>,
    pub self_fence: Option<SelfFence>,
    /// The Linux watchdog device, open only while the producer may be active.
    pub watchdog: crate::watchdog_device::WatchdogDevice,
    /// Held by every task that changes the producer (guard, deactivate, release, fence, the
    /// graceful stop), so a fence can never be overtaken by an activation still in flight.
    pub producer_ops: tokio::sync::Mutex<()>,
    /// Set when the graceful stop begins: a promotion guard still waiting for `producer_ops`
    /// then never activates, so the stop's deactivation or fence is the last word.
    pub stopping: std::sync::atomic::AtomicBool,
}

/// Where the member reports what it sees and does.
pub(super) struct Outputs {
    pub events: Arc<EventLog>,
    /// Metrics, health endpoints and systemd notifications.
    pub telemetry: Arc<Telemetry>,
    /// The status this member published last, for the control API's `Status`.
    pub own_status: watch::Sender<Option<MemberStatus>>,
    /// Why this member last stepped down or was fenced, for `failoverctl status`.
    pub last_reason: watch::Sender<String>,
    /// Why the last decision did what it did, or nothing (`None` before the first). Read by
    /// borrow only, by the control API, which words it: set at every turn without waking
    /// anyone ([`super::report::Reporter::decision`]); never wait for a change of it.
    pub why: watch::Sender<Option<Why>>,
    /// Renews that failed in a row: the second is worth a warning, the first is not.
    pub renew_failures: std::sync::atomic::AtomicU32,
}

/// What the observers probe: the local node and the reference RPCs.
pub(super) struct Sources {
    pub local: Option<Arc<dyn ChainProbe>>,
    /// Other sentries and public nodes whose heights count toward the best height.
    pub references: Vec<Arc<dyn ChainProbe>>,
}

impl Policies {
    pub(super) fn from_config(config: &Config) -> Policies {
        let call_timeout = config.coordinator.call_timeout;
        let probe_interval = config.chain.as_ref().map_or(Duration::from_secs(1), |c| c.probe_interval);
        let status_every = match config.coordinator.backend {
            Backend::Consul => probe_interval.min(config.coordinator.consul.check_ttl / 3),
            Backend::Raft => probe_interval,
        };
        Policies {
            role: RolePolicy::from_config(config),
            health: HealthPolicy::from_config(config),
            guard: GuardPolicy {
                max_lag_on_failover: config.failover.max_lag_on_failover,
                floor_margin: config.failover.floor_margin,
                fence_command: config.failover.fence_command.clone(),
                fence_command_timeout: config.failover.fence_command_timeout,
                call_timeout,
            },
            call_timeout,
            fence_timeout: config.producer.as_ref().map_or(Duration::from_secs(5), |p| p.fence_timeout),
            probe_interval,
            status_every,
        }
    }
}
