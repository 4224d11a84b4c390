//! The member's Prometheus metrics: one registry, one field per series family, and a method per
//! thing the daemon observes. Names and labels are the contract with deploy/prometheus (alert
//! rules and their tests) and deploy/grafana; change them together.
//!
//! Recording never blocks and never fails. Label values are member ids, role names, short reason
//! words, key ids and probe source names (`local`, `reference0`, …) — never a URL (an RPC address
//! may carry an API key) and never anything from a key file.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};

use crate::domain::{LeaseView, MemberId, MemberKind, RoleName};
use crate::producer::privval::signer::SignOutcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HolderLabel {
    holder: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceResult {
    source: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    /// A store call's name, always a constant: no allocation on a call that signer mode makes
    /// hundreds of times a second with many validators.
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    member: String,
    kind: String,
}

const ROLES: [RoleName; 7] = [
    RoleName::Witness,
    RoleName::Ineligible,
    RoleName::Standby,
    RoleName::Promoting,
    RoleName::Active,
    RoleName::Demoting,
    RoleName::Fenced,
];

/// The `reason` label values of `failoverd_stepdowns_total`.
pub const STEPDOWN_REASONS: [&str; 9] = [
    "unhealthy",
    "transfer",
    "guard_failed",
    "lease_deadline",
    "lease_lost",
    "deactivate_failed",
    "inconsistent",
    "producer_stopped",
    "other",
];

/// Store call latency buckets, in seconds: from a local raft commit (~1 ms) to a call timeout.
const STORE_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

fn store_histogram() -> Histogram {
    Histogram::new(STORE_BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    role: Family<RoleLabel, Gauge>,
    active: Gauge,
    lease_held: Gauge,
    lease_holder: Family<HolderLabel, Gauge>,
    /// The holder series currently set, so a change of holder removes the old one.
    shown_holder: Mutex<Option<String>>,
    /// The role the role gauges show, set at the first turn.
    shown_role: Mutex<Option<RoleName>>,
    lease_epoch: Gauge,
    lease_remaining: Gauge<f64, AtomicU64>,
    renewals: Counter,
    renew_failures: Counter,
    loop_turns: Counter,
    probes: Family<SourceResult, Counter>,
    probe_height: Family<SourceLabel, Gauge>,
    node_healthy: Gauge,
    lag: Gauge,
    failovers: Family<ReasonLabel, Counter>,
    stepdowns: Family<ReasonLabel, Counter>,
    fences: Family<ResultLabel, Counter>,
    watermark_height: Family<KeyLabel, Gauge>,
    reservations: Family<KeyLabel, Counter>,
    refusals: Family<KeyLabel, Counter>,
    signer_requests: Family<ResultLabel, Counter>,
    raft_term: Gauge,
    raft_commit: Gauge,
    raft_is_leader: Gauge,
    store_latency: Family<OperationLabel, Histogram, fn() -> Histogram>,
    /// The latency histograms of [`FREQUENT_STORE_CALLS`], kept after their first call: a
    /// signer member active for fifty validators makes hundreds of these calls a second, and
    /// each would otherwise look its histogram up in the family.
    frequent_store_latency: [OnceLock<Histogram>; FREQUENT_STORE_CALLS.len()],
    store_errors: Family<OperationLabel, Counter>,
    webhooks: Family<ResultLabel, Counter>,
}

/// The store calls a holder makes several times a second per validator.
const FREQUENT_STORE_CALLS: [&str; 3] = ["renew", "reserve", "publish_status"];

/// Why a member became active, for `failoverd_failovers_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailoverReason {
    /// A transfer the previous holder carried out (`failoverctl promote`, `demote`, an unhealthy
    /// active handing over).
    Planned,
    /// `failoverctl promote --force`.
    Forced,
    /// The previous holder's lease ended without a handover (or there was none).
    Unplanned,
}

impl FailoverReason {
    fn as_str(self) -> &'static str {
        match self {
            FailoverReason::Planned => "planned",
            FailoverReason::Forced => "forced",
            FailoverReason::Unplanned => "unplanned",
        }
    }
}

impl Metrics {
    pub fn new(member: &MemberId, kind: MemberKind) -> Metrics {
        Metrics::with_registry(member, kind, Registry::default())
    }

    /// A validator's metrics on a member serving several: every series carries
    /// `validator="<id>"`, so alerts and dashboards tell the validators apart. A member with one
    /// validator uses [`Metrics::new`]: its series keep the labels they always had.
    pub fn for_validator(member: &MemberId, kind: MemberKind, validator: &crate::domain::ValidatorId) -> Metrics {
        let label = (std::borrow::Cow::Borrowed("validator"), std::borrow::Cow::Owned(validator.to_string()));
        Metrics::with_registry(member, kind, Registry::with_labels(std::iter::once(label)))
    }

    fn with_registry(member: &MemberId, kind: MemberKind, mut registry: Registry) -> Metrics {
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").to_string() }).set(1);
        registry.register("failoverd_build_info", "The failoverd version running", build);
        let member_info = Family::<MemberLabels, Gauge>::default();
        let kind = match kind {
            MemberKind::Producer => "producer",
            MemberKind::Witness => "witness",
        };
        member_info.get_or_create(&MemberLabels { member: member.to_string(), kind: kind.to_string() }).set(1);
        registry.register("failoverd_member_info", "This member's id and kind", member_info);

        let m = Metrics {
            role: Family::default(),
            active: Gauge::default(),
            lease_held: Gauge::default(),
            lease_holder: Family::default(),
            shown_holder: Mutex::new(None),
            shown_role: Mutex::new(None),
            lease_epoch: Gauge::default(),
            lease_remaining: Gauge::default(),
            renewals: Counter::default(),
            renew_failures: Counter::default(),
            loop_turns: Counter::default(),
            probes: Family::default(),
            probe_height: Family::default(),
            node_healthy: Gauge::default(),
            lag: Gauge::default(),
            failovers: Family::default(),
            stepdowns: Family::default(),
            fences: Family::default(),
            watermark_height: Family::default(),
            reservations: Family::default(),
            refusals: Family::default(),
            signer_requests: Family::default(),
            raft_term: Gauge::default(),
            raft_commit: Gauge::default(),
            raft_is_leader: Gauge::default(),
            store_latency: Family::new_with_constructor(store_histogram),
            frequent_store_latency: Default::default(),
            store_errors: Family::default(),
            webhooks: Family::default(),
            registry,
        };
        for role in ROLES {
            m.role.get_or_create(&RoleLabel { role: role.to_string() }).set(0);
        }
        // Counters that alerts take `increase()` of exist from the start: a series that first
        // appears at 1 hides its first event from `increase()`.
        for why in [FailoverReason::Planned, FailoverReason::Forced, FailoverReason::Unplanned] {
            let _ = m.failovers.get_or_create(&ReasonLabel { reason: why.as_str().to_string() });
        }
        for operation in ["acquire", "renew", "release", "reserve", "checkpoint", "watermark", "publish_status"] {
            let _ = m.store_errors.get_or_create(&OperationLabel { operation });
        }
        for reason in STEPDOWN_REASONS {
            let _ = m.stepdowns.get_or_create(&ReasonLabel { reason: reason.to_string() });
        }
        for result in ["confirmed", "unconfirmed"] {
            let _ = m.fences.get_or_create(&ResultLabel { result: result.to_string() });
        }
        let mut m = m;
        let r = &mut m.registry;
        r.register("failoverd_role", "1 for this member's current role, 0 for the others", m.role.clone());
        r.register("failoverd_active", "1 while this member is active (its producer may sign)", m.active.clone());
        r.register(
            "failoverd_lease_held",
            "1 while the store shows the lease held by any member",
            m.lease_held.clone(),
        );
        r.register(
            "failoverd_lease_holder",
            "1 for the member the store shows holding the lease",
            m.lease_holder.clone(),
        );
        r.register("failoverd_lease_epoch", "The lease epoch the store shows", m.lease_epoch.clone());
        r.register(
            "failoverd_lease_remaining_seconds",
            "Seconds until this member's own lease deadline; 0 when it holds none",
            m.lease_remaining.clone(),
        );
        r.register(
            "failoverd_lease_renewals",
            "Lease renewals that succeeded (committed, or accepted by the raft leader outside the log in signer mode)",
            m.renewals.clone(),
        );
        r.register("failoverd_lease_renew_failures", "Lease renewals that failed", m.renew_failures.clone());
        r.register(
            "failoverd_loop_turns",
            "Turns of the decision loop: a few to some tens a second at rest; hundreds for minutes means it spins",
            m.loop_turns.clone(),
        );
        r.register("failoverd_probe", "Node probes by source and result", m.probes.clone());
        r.register("failoverd_probe_height", "The height each source reported last", m.probe_height.clone());
        // A witness has no node: it exports no node health, so no node alert can fire for it.
        if kind == "producer" {
            r.register("failoverd_node_healthy", "1 while this member's node is healthy", m.node_healthy.clone());
            r.register(
                "failoverd_lag_blocks",
                "The cluster's best height minus this member's node height",
                m.lag.clone(),
            );
        }
        r.register("failoverd_failovers", "Times this member became active, by reason", m.failovers.clone());
        r.register("failoverd_stepdowns", "Times this member stopped being active, by reason", m.stepdowns.clone());
        r.register("failoverd_fences", "Fences of this member's producer, by result", m.fences.clone());
        r.register("failoverd_watermark_height", "The signing key's watermark height", m.watermark_height.clone());
        r.register("failoverd_sign_reservations", "Signatures reserved in the store", m.reservations.clone());
        r.register("failoverd_sign_refusals", "Signatures the watermark refused", m.refusals.clone());
        r.register(
            "failoverd_signer_requests",
            "Sign requests the remote signer (cometbft-signer) decided, by result: signed, repeated, refused (a double sign prevented), below_floor, not_active",
            m.signer_requests.clone(),
        );
        r.register("failoverd_raft_term", "The embedded raft node's term", m.raft_term.clone());
        r.register("failoverd_raft_commit_index", "The embedded raft node's commit index", m.raft_commit.clone());
        r.register("failoverd_raft_is_leader", "1 while this member's raft node leads", m.raft_is_leader.clone());
        r.register(
            "failoverd_store_call_duration_seconds",
            "Duration of calls to the coordination store, by operation",
            m.store_latency.clone(),
        );
        r.register("failoverd_store_call_errors", "Failed calls to the coordination store", m.store_errors.clone());
        r.register("failoverd_webhook_deliveries", "Event webhook deliveries, by result", m.webhooks.clone());
        m
    }

    /// The OpenMetrics text exposition.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Prometheus' classic text format (0.0.4), as served on `/metrics`: what every Prometheus
    /// version, promtool and most other scrapers read.
    pub fn encode(&self) -> String {
        classic_text(&self.encode_openmetrics())
    }

    pub fn set_role(&self, role: RoleName) {
        // Once per change: a holder turns several times a second per validator.
        let mut shown = self.shown_role.lock().unwrap_or_else(|e| e.into_inner());
        if *shown == Some(role) {
            return;
        }
        *shown = Some(role);
        for r in ROLES {
            self.role.get_or_create(&RoleLabel { role: r.to_string() }).set(i64::from(r == role));
        }
        self.active.set(i64::from(role == RoleName::Active));
    }

    pub fn set_lease(&self, view: &LeaseView) {
        self.lease_epoch.set(gauge_value(view.epoch().get()));
        let holder = match view {
            LeaseView::Held { holder, .. } => Some(holder.as_str()),
            LeaseView::Free { .. } => None,
        };
        self.lease_held.set(i64::from(holder.is_some()));
        let mut shown = self.shown_holder.lock().unwrap_or_else(|e| e.into_inner());
        if shown.as_deref() != holder {
            let holder = holder.map(str::to_string);
            if let Some(old) = shown.take() {
                self.lease_holder.remove(&HolderLabel { holder: old });
            }
            if let Some(new) = &holder {
                self.lease_holder.get_or_create(&HolderLabel { holder: new.clone() }).set(1);
            }
            *shown = holder;
        }
    }

    pub fn set_lease_remaining(&self, seconds: f64) {
        self.lease_remaining.set(seconds.max(0.0));
    }

    pub fn renewed(&self, ok: bool) {
        if ok { &self.renewals } else { &self.renew_failures }.inc();
    }

    /// One turn of the decision loop.
    pub fn loop_turned(&self) {
        self.loop_turns.inc();
    }

    /// Creates the signature counters of `key` at zero, before its first signature.
    pub fn declare_key(&self, key: &str) {
        let label = KeyLabel { key: key.to_string() };
        let _ = self.reservations.get_or_create(&label);
        let _ = self.refusals.get_or_create(&label);
    }

    /// Creates the probe counters of `source` at zero, before its first probe.
    pub fn declare_probe_source(&self, source: &str) {
        for result in ["ok", "error"] {
            let _ = self.probes.get_or_create(&SourceResult { source: source.to_string(), result: result.to_string() });
        }
    }

    /// A probe of `source` (`local`, `reference0`, …) and the height it read.
    pub fn probed(&self, source: &str, height: Option<u64>) {
        let result = if height.is_some() { "ok" } else { "error" };
        self.probes.get_or_create(&SourceResult { source: source.to_string(), result: result.to_string() }).inc();
        if let Some(h) = height {
            self.probe_height.get_or_create(&SourceLabel { source: source.to_string() }).set(gauge_value(h));
        }
    }

    pub fn set_health(&self, healthy: bool, lag: Option<u64>) {
        self.node_healthy.set(i64::from(healthy));
        if let Some(lag) = lag {
            self.lag.set(gauge_value(lag));
        }
    }

    pub fn became_active(&self, why: FailoverReason) {
        self.failovers.get_or_create(&ReasonLabel { reason: why.as_str().to_string() }).inc();
    }

    /// This member stopped being active; `reason` is a short word (`unhealthy`, `transfer`, …).
    pub fn stepped_down(&self, reason: &str) {
        self.stepdowns.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc();
    }

    pub fn fenced(&self, confirmed: bool) {
        let result = if confirmed { "confirmed" } else { "unconfirmed" };
        self.fences.get_or_create(&ResultLabel { result: result.to_string() }).inc();
    }

    pub fn set_watermark(&self, key: &str, height: u64) {
        self.watermark_height.get_or_create(&KeyLabel { key: key.to_string() }).set(gauge_value(height));
    }

    /// Creates the remote signer's counters at zero (members whose producer is a remote signer).
    pub fn declare_signer(&self) {
        for outcome in [
            SignOutcome::Signed,
            SignOutcome::Repeated,
            SignOutcome::Refused,
            SignOutcome::BelowFloor,
            SignOutcome::NotActive,
        ] {
            let _ = self.signer_requests.get_or_create(&ResultLabel { result: outcome.as_str().to_string() });
        }
    }

    pub fn signer_answered(&self, outcome: SignOutcome) {
        self.signer_requests.get_or_create(&ResultLabel { result: outcome.as_str().to_string() }).inc();
    }

    pub fn reserved(&self, key: &str, granted: bool) {
        let family = if granted { &self.reservations } else { &self.refusals };
        family.get_or_create(&KeyLabel { key: key.to_string() }).inc();
    }

    /// Exports the counters the store's backend keeps itself (raft: the peer requests it
    /// refused, `failoverd_peer_refusals_total{reason}`).
    pub fn register_store(&mut self, store: &dyn crate::coord::Coordinator) {
        store.register_metrics(&mut self.registry);
    }

    pub fn set_raft(&self, term: u64, commit: u64, is_leader: bool) {
        self.raft_term.set(gauge_value(term));
        self.raft_commit.set(gauge_value(commit));
        self.raft_is_leader.set(i64::from(is_leader));
    }

    pub fn store_call(&self, operation: &'static str, seconds: f64, ok: bool) {
        let label = OperationLabel { operation };
        match FREQUENT_STORE_CALLS.iter().position(|frequent| *frequent == operation) {
            // The family's histogram itself (a clone shares its counts), created on the first
            // call as any other: a series appears only once its call was made.
            Some(i) => self.frequent_store_latency[i]
                .get_or_init(|| self.store_latency.get_or_create(&label).clone())
                .observe(seconds),
            None => self.store_latency.get_or_create(&label).observe(seconds),
        }
        if !ok {
            self.store_errors.get_or_create(&label).inc();
        }
    }

    pub fn webhook_delivered(&self, ok: bool) {
        let result = if ok { "delivered" } else { "failed" };
        self.webhooks.get_or_create(&ResultLabel { result: result.to_string() }).inc();
    }
}

/// OpenMetrics names a counter family without its `_total` suffix and ends with `# EOF`; the
/// classic format names the family as its samples are named and has no end marker.
fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Gauges are i64: heights and indexes above i64::MAX (never seen in practice) show as the max.
fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Epoch;

    fn member(s: &str) -> MemberId {
        MemberId::new(s).expect("id")
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn role_is_a_state_set_with_every_role_present() {
        let m = Metrics::new(&member("a"), MemberKind::Producer);
        m.set_role(RoleName::Active);
        let text = m.encode();
        assert_eq!(line(&text, "failoverd_role{role=\"active\"}"), Some("failoverd_role{role=\"active\"} 1"));
        assert_eq!(line(&text, "failoverd_role{role=\"standby\"}"), Some("failoverd_role{role=\"standby\"} 0"));
        assert_eq!(line(&text, "failoverd_active "), Some("failoverd_active 1"));
        m.set_role(RoleName::Standby);
        let text = m.encode();
        assert_eq!(line(&text, "failoverd_active "), Some("failoverd_active 0"));
        assert_eq!(text.matches("failoverd_role{").count(), 7);
    }

    #[test]
    fn the_classic_format_names_counter_families_with_total_and_has_no_eof() {
        let m = Metrics::new(&member("a"), MemberKind::Producer);
        m.renewed(true);
        let text = m.encode();
        assert!(text.contains("# TYPE failoverd_lease_renewals_total counter\n"), "{text}");
        assert!(text.contains("# HELP failoverd_lease_renewals_total Lease renewals that succeeded (committed, or accepted by the raft leader outside the log in signer mode).\n"), "{text}");
        assert!(text.contains("\nfailoverd_lease_renewals_total 1\n"), "{text}");
        assert!(text.contains("# TYPE failoverd_active gauge\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(m.encode_openmetrics().ends_with("# EOF\n"));
    }

    #[test]
    fn a_new_holder_replaces_the_old_holder_series() {
        let m = Metrics::new(&member("a"), MemberKind::Producer);
        m.set_lease(&LeaseView::Held { holder: member("a"), epoch: Epoch::new(3) });
        m.set_lease(&LeaseView::Held { holder: member("b"), epoch: Epoch::new(4) });
        let text = m.encode();
        assert!(!text.contains("holder=\"a\""), "{text}");
        assert_eq!(line(&text, "failoverd_lease_holder{"), Some("failoverd_lease_holder{holder=\"b\"} 1"));
        assert_eq!(line(&text, "failoverd_lease_epoch "), Some("failoverd_lease_epoch 4"));
        m.set_lease(&LeaseView::Free { epoch: Epoch::new(4) });
        let text = m.encode();
        assert_eq!(line(&text, "failoverd_lease_holder{"), None);
        assert_eq!(line(&text, "failoverd_lease_held "), Some("failoverd_lease_held 0"));
    }

    #[test]
    fn counters_carry_the_total_suffix_and_their_labels() {
        let m = Metrics::new(&member("a"), MemberKind::Witness);
        m.became_active(FailoverReason::Planned);
        m.fenced(false);
        m.probed("reference0", None);
        m.store_call("renew", 0.003, false);
        let text = m.encode();
        assert!(text.contains("failoverd_failovers_total{reason=\"planned\"} 1"), "{text}");
        assert!(text.contains("failoverd_fences_total{result=\"unconfirmed\"} 1"), "{text}");
        assert!(text.contains("failoverd_probe_total{source=\"reference0\",result=\"error\"} 1"), "{text}");
        assert!(text.contains("failoverd_store_call_errors_total{operation=\"renew\"} 1"), "{text}");
        assert!(
            text.contains("failoverd_store_call_duration_seconds_bucket{le=\"0.005\",operation=\"renew\"} 1"),
            "{text}"
        );
        assert!(text.contains("failoverd_member_info{member=\"a\",kind=\"witness\"} 1"), "{text}");
        assert!(!text.contains("failoverd_node_healthy"), "a witness has no node: {text}");
    }

    /// A frequent call's histogram is kept after its first call, and it is the family's: every
    /// call counts in the exported series, and an operation never called exports none.
    #[test]
    fn a_frequent_store_call_counts_every_call_in_the_exported_histogram() {
        let m = Metrics::new(&member("a"), MemberKind::Producer);
        let count = |text: &str, operation: &str| {
            line(text, &format!("failoverd_store_call_duration_seconds_count{{operation=\"{operation}\"}}"))
                .map(str::to_string)
        };
        assert_eq!(count(&m.encode(), "renew"), None, "no series before the first renew");
        for _ in 0..3 {
            m.store_call("renew", 0.002, true);
        }
        m.store_call("lease", 0.002, true);
        let text = m.encode();
        assert_eq!(
            count(&text, "renew").as_deref(),
            Some("failoverd_store_call_duration_seconds_count{operation=\"renew\"} 3")
        );
        assert_eq!(
            count(&text, "lease").as_deref(),
            Some("failoverd_store_call_duration_seconds_count{operation=\"lease\"} 1")
        );
        assert_eq!(count(&text, "reserve"), None, "{text}");
    }
}
