//! What the member tells the outside world about itself: Prometheus metrics, `/healthz` and
//! `/readyz`, systemd notifications and event webhooks (docs/design.md §10, `src/telemetry/`).
//!
//! Nothing here decides anything or touches the producer: the daemon loop reports into
//! [`Telemetry`], and the endpoints, the notifier and the webhooks only read from it. Reporting
//! never blocks the loop: atomics, a short mutex, datagrams, and bounded queues that drop (and
//! count) what a slow receiver cannot take.

pub mod endpoints;
pub mod exposition;
pub mod measured_store;
pub mod metrics;
pub mod notify;
pub mod signer_outcomes;
pub mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::coord::Coordinator;
use crate::domain::MonoTime;

pub use self::measured_store::MeasuredStore;
pub use self::metrics::{FailoverReason, Metrics};
pub use self::notify::{LoopNotifier, SystemdNotifier};

/// The loop has not turned for this long: `/healthz` fails.
pub const LOOP_STUCK_AFTER: Duration = Duration::from_secs(5);

pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    /// Readiness asks the backend's own status when it has one (the embedded raft store: its
    /// gossiped statuses answer even without a quorum), and when the store last answered if not.
    pub store: Arc<MeasuredStore>,
    pub notifier: Option<LoopNotifier>,
    loop_turned_nanos: AtomicU64,
    probe_ok_nanos: AtomicU64,
    /// Producers need a fresh node probe to be ready; witnesses have no node.
    needs_probe: bool,
    /// A store answer or a good probe older than this makes the member not ready.
    fresh_within: Duration,
}

/// The state `/healthz` and `/readyz` report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

impl Telemetry {
    pub fn new(
        metrics: Arc<Metrics>,
        store: Arc<MeasuredStore>,
        needs_probe: bool,
        fresh_within: Duration,
        notifier: Option<LoopNotifier>,
    ) -> Telemetry {
        Telemetry {
            metrics,
            store,
            notifier,
            loop_turned_nanos: AtomicU64::new(0),
            probe_ok_nanos: AtomicU64::new(0),
            needs_probe,
            fresh_within,
        }
    }

    /// Every iteration of the decision loop: the liveness heartbeat and the systemd watchdog.
    pub fn loop_turned(&self) {
        self.loop_turned_nanos.store(MonoTime::now().as_nanos().max(1), Ordering::Relaxed);
        self.metrics.loop_turned();
        if let Some(n) = &self.notifier {
            n.loop_turned();
        }
    }

    pub fn probe_succeeded(&self) {
        self.probe_ok_nanos.store(MonoTime::now().as_nanos().max(1), Ordering::Relaxed);
    }

    /// Alive: the process answers and its decision loop turned within [`LOOP_STUCK_AFTER`].
    pub fn liveness(&self) -> Check {
        match age(&self.loop_turned_nanos) {
            None => Check { ok: true, detail: "starting".into() },
            Some(a) if a <= LOOP_STUCK_AFTER => {
                Check { ok: true, detail: format!("loop turned {} ms ago", a.as_millis()) }
            }
            Some(a) => {
                Check { ok: false, detail: format!("the decision loop has not turned for {} ms", a.as_millis()) }
            }
        }
    }

    /// Ready: the store answered recently and, on a producer, the node was probed successfully
    /// recently.
    pub fn readiness(&self) -> Check {
        let mut problems = Vec::new();
        let backend = self.store.status();
        match backend.raft {
            Some(raft) => {
                if let Some(why) = backend.failed {
                    problems.push(why);
                } else if raft.leader.is_none() {
                    problems
                        .push("the raft quorum has no leader this member knows of (a majority is unreachable)".into());
                }
            }
            None => match self.store.last_answer().map(|t| MonoTime::now().saturating_since(t)) {
                None => problems.push("the coordination store has not answered yet".to_string()),
                Some(a) if a > self.fresh_within => {
                    problems.push(format!("the coordination store last answered {} ms ago", a.as_millis()))
                }
                Some(_) => {}
            },
        }
        if self.needs_probe {
            match age(&self.probe_ok_nanos) {
                None => problems.push("the node has not been probed successfully yet".to_string()),
                Some(a) if a > self.fresh_within => {
                    problems.push(format!("the last good node probe is {} ms old", a.as_millis()))
                }
                Some(_) => {}
            }
        }
        match problems.is_empty() {
            true => Check { ok: true, detail: "store reachable, node probe fresh".into() },
            false => Check { ok: false, detail: problems.join("; ") },
        }
    }
}

fn age(nanos: &AtomicU64) -> Option<Duration> {
    match nanos.load(Ordering::Relaxed) {
        0 => None,
        n => Some(MonoTime::now().saturating_since(MonoTime::from_nanos(n))),
    }
}
