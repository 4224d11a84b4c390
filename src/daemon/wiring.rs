//! Builds the parts (`parts`) of each validator a member serves from its effective config: the
//! telemetry around its store, the producer and its probes, the self-fence thread.
//!
//! Owns construction only: it never runs the loop, never decides, never acts. The stores are
//! started with `coord::start_validators` (in `daemon::run`) and used only through the
//! [`Coordinator`] trait: no backend is named here.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use super::parts::{Effects, Member, Outputs, Policies, Sources};
use crate::chain::ChainProbe;
use crate::config::{Config, ProducerKind};
use crate::coord::{Coordinator, ValidatorStore};
use crate::domain::{MemberKind, ValidatorId};
use crate::events::EventLog;
use crate::fence_notice::{FenceNotice, FenceNotices};
use crate::guard::SelfFence;
use crate::producer::Producer;
use crate::role::RolePolicy;
use crate::telemetry::{self, MeasuredStore, Metrics, Telemetry};

/// Everything [`build`] made for one validator, handed out to its owners by `daemon::run`.
pub(super) struct Parts {
    pub validator: ValidatorId,
    /// The validator's effective config.
    pub config: Config,
    pub member: Arc<Member>,
    pub policies: Arc<Policies>,
    pub effects: Arc<Effects>,
    pub outputs: Arc<Outputs>,
    pub sources: Sources,
    /// Fences done outside the loop (keeper, deadline thread, the node's exit).
    pub fence_notices: mpsc::UnboundedReceiver<FenceNotice>,
    /// Stops the simulated node served inside this daemon (`[chain.sim] serve`), after the
    /// loop's graceful stop deactivated it.
    pub embedded_node: CancellationToken,
}

fn setup<E: std::fmt::Display>(e: E) -> DaemonError {
    DaemonError::Setup(e.to_string())
}

/// How one validator's parts are built besides its store and config.
pub(super) struct Build {
    /// The member serves several validators: its metrics carry a `validator` label.
    pub labelled: bool,
    /// The backend's own metrics go into this validator's registry (only one validator's, so a
    /// member's counters are not repeated per validator).
    pub store_metrics: bool,
    pub notifier: Option<crate::telemetry::LoopNotifier>,
}

/// Builds one validator's parts over its `store`.
pub(super) async fn build(store: ValidatorStore, how: Build) -> Result<Parts, DaemonError> {
    let ValidatorStore { validator, config, store: coord } = store;
    let config = &config;
    // An embedded simulated node outlives the loop: a graceful stop deactivates it first.
    let embedded_node = CancellationToken::new();
    let me = config
        .me()
        .cloned()
        .ok_or_else(|| DaemonError::Setup(format!("member {} is not among [[members]]", config.member)))?;
    if let Some(chain) = &config.chain
        && let (Some(sim), Some(rpc)) = (&chain.sim, &chain.rpc)
    {
        super::embedded_node::start(config, sim, rpc, &embedded_node).await?;
    }
    let policies = Arc::new(Policies::from_config(config));
    let labelled = how.labelled.then_some(&validator);
    let telemetry = telemetry(config, &me, &policies.role, &coord, labelled, how.store_metrics, how.notifier);
    let coord: Arc<dyn Coordinator> = telemetry.store.clone();
    let events = Arc::new(EventLog::of_validator(me.id.clone(), labelled.cloned()));
    let (notices, fence_notices) = FenceNotices::channel();
    let producing = me.kind == MemberKind::Producer;
    let (producer, local) = match producing {
        true => {
            // Only a producer that starts keepers has the keeper binary checked (and logged).
            let launcher = match config.producer.as_ref().is_some_and(crate::producer::starts_keepers) {
                true => crate::keeper::KeeperLauncher::for_this_daemon(notices.clone()).await,
                false => crate::keeper::KeeperLauncher::this_executable(notices.clone()),
            };
            producer_and_probe(config, labelled, &policies, &coord, &telemetry, &events, launcher)?.unzip()
        }
        false => (None, None),
    };
    let mut references = Vec::new();
    if producing && let Some(chain) = &config.chain {
        for (i, url) in chain.reference_rpcs.iter().enumerate() {
            references.push(crate::chain::reference_probe(chain, i, url).map_err(setup)?);
        }
    }
    let self_fence = match &producer {
        Some(p) => Some(
            SelfFence::start(Arc::clone(p), policies.fence_timeout, notices.clone())
                .map_err(|e| DaemonError::Setup(format!("cannot start the self-fence thread: {e}")))?,
        ),
        None => None,
    };
    let effects = Effects {
        coord,
        producer,
        probe: local.clone(),
        self_fence,
        watchdog: crate::watchdog_device::WatchdogDevice::from_config(config),
        producer_ops: tokio::sync::Mutex::new(()),
        stopping: std::sync::atomic::AtomicBool::new(false),
    };
    let outputs = Outputs {
        events,
        telemetry,
        own_status: watch::Sender::new(None),
        last_reason: watch::Sender::new(String::new()),
        why: watch::Sender::new(None),
        renew_failures: std::sync::atomic::AtomicU32::new(0),
    };
    Ok(Parts {
        validator,
        config: config.clone(),
        member: Arc::new(Member { id: me.id, kind: me.kind, priority: me.priority, key: config.key_id() }),
        policies,
        effects: Arc::new(effects),
        outputs: Arc::new(outputs),
        sources: Sources { local, references },
        fence_notices,
        embedded_node,
    })
}

/// A producer member's producer, and the probe of the node it drives.
type ProducerAndProbe = (Arc<dyn Producer>, Arc<dyn ChainProbe>);

/// A producer member's producer and local-node probe, when its config names both.
fn producer_and_probe(
    config: &Config,
    validator: Option<&ValidatorId>,
    policies: &Policies,
    coord: &Arc<dyn Coordinator>,
    telemetry: &Arc<Telemetry>,
    events: &Arc<EventLog>,
    launcher: crate::keeper::KeeperLauncher,
) -> Result<Option<ProducerAndProbe>, DaemonError> {
    let (Some(p), Some(chain)) = (&config.producer, &config.chain) else { return Ok(None) };
    let probe = crate::chain::local_probe(chain, Some(p.kind())).map_err(setup)?;
    let observer = (p.kind() == ProducerKind::CometbftSigner)
        .then(|| telemetry::signer_outcomes::observer(Arc::clone(&telemetry.metrics), Arc::clone(events)));
    let context = crate::producer::cometbft_signer::SignerContext {
        coord: Arc::clone(coord),
        runtime: tokio::runtime::Handle::current(),
        observer,
    };
    let keeping = crate::producer::NodeKeeping {
        launcher,
        data_dir: config.data_dir.clone(),
        // The default validator keeps the record earlier versions wrote, so a restart after a
        // move to [[validators]] still finds its orphan.
        validator: validator.filter(|v| !v.is_default()).cloned(),
    };
    let producer =
        crate::producer::from_config(p, chain, policies.call_timeout, Some(context), &keeping).map_err(setup)?;
    Ok(Some((producer, probe)))
}

impl Parts {
    /// The control API's service over this member's parts.
    pub fn control_service(&self) -> crate::api::ControlService {
        let config = &self.config;
        crate::api::ControlService {
            validator: self.validator.clone(),
            me: self.member.id.clone(),
            kind: self.member.kind,
            key: self.member.key.clone(),
            coord: Arc::clone(&self.effects.coord),
            own_status: self.outputs.own_status.subscribe(),
            last_reason: self.outputs.last_reason.subscribe(),
            why: self.outputs.why.subscribe(),
            members: config.members.clone(),
            max_lag_on_failover: config.failover.max_lag_on_failover,
            import_max_ahead: config.failover.import_max_ahead,
            status_stale_after: self.policies.role.status_stale_after,
            call_timeout: self.policies.call_timeout,
            events: Arc::clone(&self.outputs.events),
        }
    }
}

/// The telemetry around `coord`, which it measures.
fn telemetry(
    config: &Config,
    me: &crate::config::MemberConfig,
    role: &RolePolicy,
    coord: &Arc<dyn Coordinator>,
    labelled: Option<&ValidatorId>,
    store_metrics: bool,
    notifier: Option<crate::telemetry::LoopNotifier>,
) -> Arc<Telemetry> {
    let mut metrics = match labelled {
        Some(v) => Metrics::for_validator(&me.id, me.kind, v),
        None => Metrics::new(&me.id, me.kind),
    };
    if store_metrics {
        metrics.register_store(coord.as_ref());
    }
    let metrics = Arc::new(metrics);
    let measured = Arc::new(MeasuredStore::new(Arc::clone(coord), Arc::clone(&metrics)));
    let producing = me.kind == MemberKind::Producer;
    let telemetry = Arc::new(Telemetry::new(metrics, measured, producing, role.status_stale_after, notifier));
    telemetry.metrics.declare_key(config.key_id().as_str());
    if producing {
        telemetry.metrics.declare_probe_source("local");
        for i in 0..config.chain.as_ref().map_or(0, |c| c.reference_rpcs.len()) {
            telemetry.metrics.declare_probe_source(&format!("reference{i}"));
        }
    }
    telemetry
}
