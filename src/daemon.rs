//! The member's main loop (docs/design.md §6–7): observe, decide, act.
//!
//! Every 50 ms it gathers an [`Observation`] — monotonic now, the probe history, the store's
//! lease and intents, the cluster's statuses and the outcomes of earlier actions — calls the
//! pure [`role::decide`], and starts the actions it returns as tasks. Each action runs at most
//! once at a time, every call inside it has a deadline, and its result comes back as an
//! [`Outcome`] in a later observation, so a slow node or store never blocks the loop.
//! Order of effects: the self-fence thread is armed before the producer is activated, and
//! disarmed only after deactivation or fencing is confirmed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::chain::ChainProbe;
use crate::config::{Config, ProducerKind};
use crate::coord::{Coordinator, StatusReport};
use crate::domain::{Epoch, Hrs, KeyId, Lease, LeaseView, MemberId, MemberKind, MemberStatus, MonoTime, RoleName};
use crate::events::{EventKind, EventLog};
use crate::guard::{GuardInput, GuardPolicy, PromotionGuard, SelfFence};
use crate::health::{HealthPolicy, ProbeHistory, Verdict, best_height, gate_signing};
use crate::producer::Producer;
use crate::role::{self, Action, Decision, Observation, Outcome, Reason, RolePolicy, RoleState, Span, StepDown, Why};
use crate::telemetry::{self, FailoverReason, MeasuredStore, Metrics, Telemetry};

/// How often the loop decides.
const LOOP_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Setup(String),
    #[error(
        "this member's raft store failed ({0}); it deactivated its producer and stopped. Fix the cause (a full or failing disk under data_dir) and start it again"
    )]
    StoreFailed(String),
}

/// Options that are not part of the config file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub rejoin: bool,
    /// A panic anywhere fences the producer and aborts the process (`panic_hook`). The binary
    /// sets it; tests that run members in-process do not.
    pub abort_on_panic: bool,
}

type SharedProducer = Arc<dyn Producer>;

/// Renewals that may be in flight at once (each sent `renew_interval` after the previous).
const MAX_RENEWS_IN_FLIGHT: usize = 3;

/// Results that come back from action tasks.
enum Event {
    Outcome(Outcome),
    Lease(Lease),
    LastSigned(Option<u64>),
    Done(&'static str),
}

struct Parts {
    me: MemberId,
    kind: MemberKind,
    priority: u32,
    coord: Arc<dyn Coordinator>,
    events: Arc<EventLog>,
    producer: Option<Arc<dyn Producer>>,
    probe: Option<Arc<dyn ChainProbe>>,
    self_fence: Option<SelfFence>,
    /// The Linux watchdog device, open only while the producer may be active.
    watchdog: crate::watchdog_device::WatchdogDevice,
    key: KeyId,
    call_timeout: Duration,
    fence_timeout: Duration,
    guard: GuardPolicy,
    role_policy: RolePolicy,
    health_policy: HealthPolicy,
    probe_interval: Duration,
    /// Reference RPCs (other sentries, public nodes) whose heights count toward the best height.
    references: Vec<Arc<dyn ChainProbe>>,
    /// Held by every task that changes the producer (guard, deactivate, fence), so a fence can
    /// never be overtaken by an activation still in flight.
    producer_ops: tokio::sync::Mutex<()>,
    /// Fences done outside the loop (keeper, deadline thread), taken by the loop at start.
    fence_notices: std::sync::Mutex<Option<mpsc::UnboundedReceiver<crate::fence_notice::FenceNotice>>>,
    /// Their latest heights and when they were read.
    reference_heights: std::sync::Mutex<Vec<Option<(MonoTime, u64)>>>,
    /// The status this member published last, for the control API's `Status`.
    own_status: tokio::sync::watch::Sender<Option<MemberStatus>>,
    /// Why this member last stepped down or was fenced, for `failoverctl status`.
    last_reason: tokio::sync::watch::Sender<String>,
    /// Why the last decision did what it did, or nothing, in words.
    why: tokio::sync::watch::Sender<String>,
    /// Stops the simulated node served inside this daemon (`[chain.sim] serve`), after the
    /// loop's graceful stop deactivated it.
    embedded_node: CancellationToken,
    /// Metrics, health endpoints and systemd notifications.
    telemetry: Arc<Telemetry>,
}

/// Runs one member until `shutdown`, then deactivates and releases within a grace period.
pub async fn run(
    config: Config,
    options: RunOptions,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let metrics_listener = match config.metrics.enabled {
        true => Some(tokio::net::TcpListener::bind(config.metrics.listen.0).await.map_err(|e| {
            DaemonError::Setup(format!(
                "metrics.listen: cannot listen on {}: {e}; set [metrics] listen to a free address, or enabled = false",
                config.metrics.listen.0
            ))
        })?),
        false => None,
    };
    let abort_on_panic = options.abort_on_panic;
    let parts = setup(&config, options, listener).await?;
    if abort_on_panic {
        crate::panic_hook::abort_after_fencing(parts.self_fence.clone(), parts.fence_timeout);
    }
    let parts = Arc::new(parts);
    if let Some(listener) = metrics_listener {
        let telemetry = Arc::clone(&parts.telemetry);
        let endpoints_shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = telemetry::endpoints::serve(listener, telemetry, endpoints_shutdown).await {
                tracing::error!(error = %e, "the metrics and health endpoints stopped");
            }
        });
    }
    telemetry::webhook::start(&config.webhooks, &parts.events, &parts.telemetry.metrics, &shutdown);
    let control = crate::api::ControlService {
        me: parts.me.clone(),
        kind: parts.kind,
        key: parts.key.clone(),
        coord: Arc::clone(&parts.coord),
        own_status: parts.own_status.subscribe(),
        last_reason: parts.last_reason.subscribe(),
        why: parts.why.subscribe(),
        members: config.members.clone(),
        max_lag_on_failover: config.failover.max_lag_on_failover,
        import_max_ahead: config.failover.import_max_ahead,
        status_stale_after: parts.role_policy.status_stale_after,
        call_timeout: parts.call_timeout,
        events: Arc::clone(&parts.events),
    };
    if let (Some(listen), Some(tls)) = (config.api.listen, config.tls.clone()) {
        let tcp = control.clone();
        let tcp_shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::api::serve_tcp(&listen, &tls, tcp, tcp_shutdown).await {
                tracing::error!(listen = %listen.0, error = %e, "the TCP control API is not available");
            }
        });
    }
    let socket = config.api.socket.clone();
    let api_shutdown = shutdown.clone();
    let api = tokio::spawn(async move {
        if let Err(e) = crate::api::serve(&socket, control, api_shutdown).await {
            tracing::error!(socket = %socket.display(), error = %e, "the control API is not available");
        }
    });
    let result = main_loop(Arc::clone(&parts), shutdown.clone()).await;
    // The loop also ends on its own (a failed store): everything else stops with it.
    shutdown.cancel();
    parts.embedded_node.cancel();
    let _ = api.await;
    if let Some(f) = &parts.self_fence {
        f.stop();
    }
    parts.coord.shutdown().await;
    result
}

async fn setup(config: &Config, options: RunOptions, listener: tokio::net::TcpListener) -> Result<Parts, DaemonError> {
    // An embedded simulated node outlives the loop: a graceful stop deactivates it first.
    let embedded_node = CancellationToken::new();
    let me = config
        .me()
        .cloned()
        .ok_or_else(|| DaemonError::Setup(format!("member {} is not among [[members]]", config.member)))?;
    if let Some(chain) = &config.chain
        && let (Some(sim), Some(rpc)) = (&chain.sim, &chain.rpc)
    {
        start_embedded_sim(config, sim, rpc, &embedded_node).await?;
    }
    let test_hooks = std::env::var("FAILOVERD_TEST_HOOKS").as_deref() == Ok("1");
    let coord =
        crate::coord::start(config, listener, crate::coord::StartOptions { rejoin: options.rejoin, test_hooks })
            .await
            .map_err(|e| DaemonError::Setup(e.to_string()))?;
    let mut metrics = Metrics::new(&me.id, me.kind);
    metrics.register_store(coord.as_ref());
    let metrics = Arc::new(metrics);
    let measured = Arc::new(MeasuredStore::new(coord, Arc::clone(&metrics)));
    let coord: Arc<dyn Coordinator> = measured.clone();
    let role_policy = RolePolicy::from_config(config);
    let telemetry =
        Arc::new(Telemetry::new(metrics, measured, me.kind == MemberKind::Producer, role_policy.status_stale_after));
    telemetry.metrics.declare_key(config.key_id().as_str());
    if me.kind == MemberKind::Producer {
        telemetry.metrics.declare_probe_source("local");
        for i in 0..config.chain.as_ref().map_or(0, |c| c.reference_rpcs.len()) {
            telemetry.metrics.declare_probe_source(&format!("reference{i}"));
        }
    }
    let call_timeout = config.coordinator.call_timeout;
    let events = Arc::new(EventLog::new(me.id.clone()));
    let (fence_notices, fence_notices_rx) = crate::fence_notice::FenceNotices::channel();
    let (producer, probe): (Option<SharedProducer>, Option<Arc<dyn ChainProbe>>) =
        match (&config.producer, &config.chain) {
            (Some(p), Some(chain)) if me.kind == MemberKind::Producer => {
                let probe =
                    crate::chain::local_probe(chain, Some(p.kind())).map_err(|e| DaemonError::Setup(e.to_string()))?;
                let observer = (p.kind() == ProducerKind::CometbftSigner)
                    .then(|| telemetry::signer_outcomes::observer(Arc::clone(&telemetry.metrics), Arc::clone(&events)));
                let context = crate::producer::cometbft_signer::SignerContext {
                    coord: Arc::clone(&coord),
                    runtime: tokio::runtime::Handle::current(),
                    observer,
                };
                let keeping = crate::producer::NodeKeeping {
                    launcher: crate::keeper::KeeperLauncher::this_executable(fence_notices.clone()),
                    data_dir: config.data_dir.clone(),
                };
                let producer = crate::producer::from_config(p, chain, call_timeout, Some(context), &keeping)
                    .map_err(|e| DaemonError::Setup(e.to_string()))?;
                (Some(producer), Some(probe))
            }
            _ => (None, None),
        };
    let mut references: Vec<Arc<dyn ChainProbe>> = Vec::new();
    if me.kind == MemberKind::Producer
        && let Some(chain) = &config.chain
    {
        for (i, url) in chain.reference_rpcs.iter().enumerate() {
            references
                .push(crate::chain::reference_probe(chain, i, url).map_err(|e| DaemonError::Setup(e.to_string()))?);
        }
    }
    let fence_timeout = config.producer.as_ref().map_or(Duration::from_secs(5), |p| p.fence_timeout);
    let self_fence = match &producer {
        Some(p) => Some(
            SelfFence::start(Arc::clone(p), fence_timeout, fence_notices.clone())
                .map_err(|e| DaemonError::Setup(format!("cannot start the self-fence thread: {e}")))?,
        ),
        None => None,
    };
    Ok(Parts {
        me: me.id.clone(),
        kind: me.kind,
        priority: me.priority,
        coord,
        events,
        producer,
        probe,
        self_fence,
        watchdog: crate::watchdog_device::WatchdogDevice::from_config(config),
        key: config.key_id(),
        call_timeout,
        fence_timeout,
        guard: GuardPolicy {
            max_lag_on_failover: config.failover.max_lag_on_failover,
            floor_margin: config.failover.floor_margin,
            fence_command: config.failover.fence_command.clone(),
            fence_command_timeout: config.failover.fence_command_timeout,
            call_timeout,
        },
        role_policy,
        health_policy: HealthPolicy::from_config(config),
        probe_interval: config.chain.as_ref().map_or(Duration::from_secs(1), |c| c.probe_interval),
        reference_heights: std::sync::Mutex::new(vec![None; references.len()]),
        own_status: tokio::sync::watch::Sender::new(None),
        last_reason: tokio::sync::watch::Sender::new(String::new()),
        why: tokio::sync::watch::Sender::new(String::from("starting: no decision yet")),
        embedded_node,
        producer_ops: tokio::sync::Mutex::new(()),
        fence_notices: std::sync::Mutex::new(Some(fence_notices_rx)),
        references,
        telemetry,
    })
}

/// Runs the simulated node inside this process, on `chain.rpc`'s address: it dies with the
/// daemon, as a supervised node would.
async fn start_embedded_sim(
    config: &Config,
    sim: &crate::config::SimConfig,
    rpc: &crate::config::HttpUrl,
    shutdown: &CancellationToken,
) -> Result<(), DaemonError> {
    use crate::sim::node::{SimNode, SimNodeConfig};
    let key = config.key_id();
    let node = SimNode::new(SimNodeConfig {
        chain_id: sim.chain_id.clone(),
        member: config.member.clone(),
        key,
        block_interval: sim.block_interval,
        ledger: sim.ledger.clone(),
        activations: None,
        privval_listen: sim.privval_listen.as_ref().map(|a| a.0),
    })
    .map_err(|e| DaemonError::Setup(e.to_string()))?;
    let host = rpc.0.host_str().unwrap_or("127.0.0.1");
    let port = rpc.0.port_or_known_default().unwrap_or(80);
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| DaemonError::Setup(format!("chain.sim: cannot serve the simulated node on {host}:{port}: {e}")))?;
    let privval = node
        .bind_privval()
        .map_err(|e| DaemonError::Setup(format!("chain.sim: cannot listen for the signer on privval_listen: {e}")))?;
    tokio::spawn(node.serve(listener, privval, shutdown.clone()));
    tracing::info!(%rpc, "simulated node running inside this daemon");
    Ok(())
}

/// The loop's own memory between decisions.
struct LoopState {
    role: RoleState,
    history: ProbeHistory,
    leases: BTreeMap<Epoch, Lease>,
    last_signed: Option<u64>,
    in_flight: HashSet<&'static str>,
    /// Renewals overlap (see `start_action`): how many are in flight and when the last left.
    renews_in_flight: usize,
    last_renew_sent: Option<Instant>,
    outcomes: Vec<Outcome>,
    /// Who held the lease before it became free: the guard's fence_command target.
    previous_holder: Option<MemberId>,
    /// Whether the acquire in flight answers a transfer naming this member.
    planned: bool,
    /// Whether that transfer was forced (`failoverctl promote --force`).
    forced: bool,
    /// The local height when this member was first probed as active (see `gate_signing`).
    active_from_height: Option<u64>,
    /// The node said it produces while this member is not active (reported once per episode).
    rogue_production: bool,
    /// The situation of the last decision, without countdowns: a change is logged.
    last_situation: Option<Why>,
}

async fn main_loop(p: Arc<Parts>, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let (probe_tx, mut probes) = mpsc::channel::<(MonoTime, Result<crate::chain::ChainSample, String>)>(16);
    if let Some(probe) = &p.probe {
        tokio::spawn(probe_loop(Arc::clone(probe), p.probe_interval, probe_tx, shutdown.clone()));
    }
    for i in 0..p.references.len() {
        tokio::spawn(reference_loop(Arc::clone(&p), i, shutdown.clone()));
    }
    install_test_hooks(&shutdown);
    let mut st = LoopState {
        role: RoleState::new(p.kind, MonoTime::now()),
        history: ProbeHistory::default(),
        leases: BTreeMap::new(),
        last_signed: None,
        in_flight: HashSet::new(),
        renews_in_flight: 0,
        last_renew_sent: None,
        outcomes: Vec::new(),
        previous_holder: None,
        planned: false,
        forced: false,
        active_from_height: None,
        rogue_production: false,
        last_situation: None,
    };
    // A node left producing by an earlier run, or one that started producing by itself, is
    // stopped before this member takes part: nothing may produce outside a lease this run holds.
    if let Some(prod) = &p.producer {
        let _ops = p.producer_ops.lock().await;
        match stop_producer(&p, prod).await {
            Ok(signed) => st.last_signed = signed,
            Err(e) => tracing::error!(
                error = %e,
                "cannot confirm the producer is stopped at start; check the node, and set producer.fence_command so a fence can kill it"
            ),
        }
    }
    if let Some(n) = &p.telemetry.notifier {
        n.ready();
    }
    let mut ticker = tokio::time::interval(LOOP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_publish = Instant::now() - p.probe_interval;
    let mut store_changes = p.coord.watch();
    // A member whose raft storage failed can never renew or vote again: it stops, so that its
    // supervisor restarts it once the disk is fixed, instead of lingering as a member in name.
    let coord = Arc::clone(&p.coord);
    let store_failed = async move { coord.failed().await };
    tokio::pin!(store_failed);
    let mut fence_notices = p.fence_notices.lock().unwrap_or_else(|e| e.into_inner()).take();
    let fence_notice = async |rx: &mut Option<mpsc::UnboundedReceiver<crate::fence_notice::FenceNotice>>| match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    };
    let mut failure = None;
    let mut last_view: Option<crate::coord::StoreView> = None;
    loop {
        p.telemetry.loop_turned();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            why = &mut store_failed => {
                tracing::error!(error = %why, "raft storage failed; deactivating and stopping this member");
                failure = Some(why);
                break;
            }
            _ = ticker.tick() => {}
            // Decide at once when the lease or the intents change: a handover is a chain of
            // such wake-ups, not of loop ticks.
            Ok(()) = store_changes.changed() => {}
            Some((at, result)) = probes.recv() => {
                let cluster = p.coord.cluster_status(Instant::now() + p.call_timeout).await.unwrap_or_default();
                let best = best_height(fresh_heights(&cluster, &p).chain(std::iter::once(result.as_ref().ok().map(|s| s.height))));
                let active = st.role.role == RoleName::Active;
                let window = p.health_policy.signing_window;
                let result = result.map(|s| gate_signing(s, active, &mut st.active_from_height, window));
                let rogue = !active && result.as_ref().is_ok_and(|s| s.producing == Some(true));
                if rogue && !st.rogue_production {
                    tracing::error!(role = %st.role.role, "the local node says it is producing while this member is not active: stop it (no lease covers it)");
                }
                st.rogue_production = rogue;
                p.telemetry.metrics.probed("local", result.as_ref().ok().map(|s| s.height));
                if result.is_ok() {
                    p.telemetry.probe_succeeded();
                }
                st.history.record(at, result.as_ref().map_err(String::as_str), best, &p.health_policy);
                continue;
            }
            Some(notice) = fence_notice(&mut fence_notices) => {
                // A keeper, the deadline thread or the node's own exit stopped production:
                // `decide` turns it into a step-down, so the lease is released, not renewed.
                p.events.emit(EventKind::Fence, None, notice.to_string());
                st.outcomes.push(Outcome::ProducerStopped { by: notice.by.to_string(), detail: notice.detail });
            }
            Some(ev) = events.recv() => {
                apply_event(&mut st, ev);
                while let Ok(ev) = events.try_recv() {
                    apply_event(&mut st, ev);
                }
            }
        }
        let now = MonoTime::now();
        let view = p.coord.watch().borrow().clone();
        report_store_changes(&p.events, last_view.as_ref(), &view);
        last_view = Some(view.clone());
        if let LeaseView::Held { holder, .. } = &view.lease
            && holder != &p.me
        {
            st.previous_holder = Some(holder.clone());
        }
        let cluster: Vec<StatusReport> = p
            .coord
            .cluster_status(Instant::now() + p.call_timeout)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.status.member != p.me)
            .collect();
        let health = st.history.assess(now, &p.health_policy);
        let obs = Observation {
            now,
            me: p.me.clone(),
            kind: p.kind,
            priority: p.priority,
            store: Some(view.clone()),
            health: health.clone(),
            cluster: cluster.clone(),
            outcomes: std::mem::take(&mut st.outcomes),
        };
        let Decision { state: next, actions, why } = role::decide(&st.role, &obs, &p.role_policy);
        report_decision(&p, &st, &next, &why, health.height);
        report_metrics(&p, &next, &view, &health, now);
        if next.last_reason != st.role.last_reason {
            p.last_reason.send_replace(next.last_reason.as_ref().map_or(String::new(), ToString::to_string));
        }
        p.why.send_replace(why.to_string());
        // A pause between acquire attempts is the same situation as acquiring: the failed
        // attempt was logged with its error already.
        if !matches!(why, Why::AcquireRetry { .. }) {
            st.last_situation = Some(why.situation());
        }
        st.role = next;
        // Only a handover the holder carried out is planned; a forced one is not.
        let transfer_to_me = view.intents.transfer.as_ref().is_some_and(|t| t.to == p.me && !t.forced);
        for action in actions {
            if action == Action::Acquire && !st.in_flight.contains("acquire") {
                // Remember why we acquire: the transfer is cleared by the grant itself.
                st.planned = transfer_to_me;
                st.forced = view.intents.transfer.as_ref().is_some_and(|t| t.to == p.me && t.forced);
            }
            start_action(&mut st, action, &p, &events_tx, &cluster);
        }
        if last_publish.elapsed() >= p.probe_interval / 2 {
            last_publish = Instant::now();
            let status = MemberStatus {
                member: p.me.clone(),
                kind: p.kind,
                role: st.role.role,
                priority: p.priority,
                height: health.height,
                healthy: health.verdict == Verdict::Healthy && health.latest_good,
                epoch: st.role.epoch,
            };
            p.own_status.send_replace(Some(status.clone()));
            let coord = Arc::clone(&p.coord);
            let deadline = Instant::now() + p.call_timeout;
            tokio::spawn(async move {
                let _ = coord.publish_status(&status, deadline).await;
            });
        }
    }
    if let Some(n) = &p.telemetry.notifier {
        n.stopping();
    }
    graceful_stop(&mut st, &p).await;
    match failure {
        Some(why) => Err(DaemonError::StoreFailed(why)),
        None => Ok(()),
    }
}

/// Heights from other members' fresh statuses and from fresh reference RPCs.
fn fresh_heights<'a>(cluster: &'a [StatusReport], p: &'a Parts) -> impl Iterator<Item = Option<u64>> + 'a {
    let now = MonoTime::now();
    let refs: Vec<Option<u64>> = p
        .reference_heights
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|r| r.filter(|(at, _)| now.saturating_since(*at) <= p.role_policy.status_stale_after).map(|(_, h)| h))
        .collect();
    cluster
        .iter()
        .filter(move |r| r.status.member != p.me && r.age <= p.role_policy.status_stale_after)
        .map(|r| r.status.height)
        .chain(refs)
}

async fn reference_loop(p: Arc<Parts>, i: usize, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(p.probe_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let sample = p.references[i].probe(Instant::now() + p.probe_interval).await;
        p.telemetry.metrics.probed(&format!("reference{i}"), sample.as_ref().ok().map(|s| s.height));
        if let Ok(sample) = sample {
            p.reference_heights.lock().unwrap_or_else(|e| e.into_inner())[i] = Some((MonoTime::now(), sample.height));
        }
    }
}

fn apply_event(st: &mut LoopState, ev: Event) {
    match ev {
        Event::Outcome(o) => st.outcomes.push(o),
        Event::Lease(l) => {
            st.leases.insert(l.epoch, l);
            // Keep only the newest few: older epochs are never used again.
            while st.leases.len() > 4 {
                st.leases.pop_first();
            }
        }
        Event::LastSigned(h) => {
            if h.is_some() {
                st.last_signed = h;
            }
        }
        Event::Done("renew") => st.renews_in_flight = st.renews_in_flight.saturating_sub(1),
        Event::Done(kind) => {
            st.in_flight.remove(kind);
        }
    }
}

fn action_kind(a: &Action) -> &'static str {
    match a {
        Action::Acquire => "acquire",
        Action::Renew { .. } => "renew",
        Action::Checkpoint { .. } => "checkpoint",
        Action::RunGuard { .. } => "guard",
        Action::Deactivate { .. } => "deactivate",
        Action::Release { .. } => "release",
        Action::Fence { .. } => "fence",
    }
}

fn start_action(
    st: &mut LoopState,
    action: Action,
    p: &Arc<Parts>,
    events: &mpsc::UnboundedSender<Event>,
    cluster: &[StatusReport],
) {
    let kind = action_kind(&action);
    if let Action::Renew { .. } = action {
        // The lease is valid from the send time of the latest committed renew, so on a lossy or
        // slow link a renew still in flight must not hold back the next one: a fresh renew
        // leaves every renew_interval, up to MAX_RENEWS_IN_FLIGHT at once.
        let due = st.last_renew_sent.is_none_or(|at| at.elapsed() >= p.role_policy.renew_interval);
        if !due || st.renews_in_flight >= MAX_RENEWS_IN_FLIGHT {
            return;
        }
        st.renews_in_flight += 1;
        st.last_renew_sent = Some(Instant::now());
    } else if !st.in_flight.insert(kind) {
        return;
    }
    let p = Arc::clone(p);
    let tx = events.clone();
    let deadline = Instant::now() + p.call_timeout;
    let lease_of = |epoch: Epoch| {
        st.leases.get(&epoch).cloned().unwrap_or(Lease {
            holder: p.me.clone(),
            epoch,
            ttl: p.role_policy.lease_ttl,
            valid_until: MonoTime::ZERO,
        })
    };
    let send = move |ev: Event| {
        let _ = tx.send(ev);
    };
    match action {
        Action::Acquire => {
            tokio::spawn(async move {
                match p.coord.acquire(&p.me, deadline).await {
                    Ok(l) => {
                        let (epoch, valid_until) = (l.epoch, l.valid_until);
                        send(Event::Lease(l));
                        send(Event::Outcome(Outcome::Acquired { epoch, valid_until }));
                    }
                    Err(e) => {
                        // Refusals are normal (the lease is held, no raft leader yet); the
                        // loop asks again and its status says so.
                        tracing::info!("acquire not granted: {e}");
                        send(Event::Outcome(Outcome::AcquireFailed { error: e.to_string() }));
                    }
                }
                send(Event::Done(kind));
            });
        }
        Action::Renew { epoch } => {
            let lease = lease_of(epoch);
            tokio::spawn(async move {
                let sent = Instant::now();
                let renewed = p.coord.renew(&lease, deadline).await;
                match &renewed {
                    Ok(_) => tracing::debug!(%epoch, took_ms = sent.elapsed().as_millis() as u64, "lease renewed"),
                    Err(e) => {
                        report_failed_renew(epoch, e, lease.valid_until, p.role_policy.renew_interval);
                        send(Event::Outcome(Outcome::RenewFailed { epoch, error: e.to_string() }));
                    }
                }
                if let Ok(l) = renewed {
                    // Only a producer that may be active gets its permission moved; the producer
                    // itself ignores an extension that arrives after it was deactivated.
                    // Only a renew moves the self-fence deadline (an acquire never does), and it
                    // does nothing while disarmed.
                    let armed = p.self_fence.as_ref().is_some_and(|f| f.armed_until().is_some());
                    if armed && let Some(prod) = &p.producer {
                        let _ = prod.extend(l.valid_until, deadline).await;
                    }
                    if let Some(f) = &p.self_fence {
                        f.extend(l.valid_until);
                    }
                    p.watchdog.lease_renewed(epoch, l.valid_until);
                    let valid_until = l.valid_until;
                    send(Event::Lease(l));
                    send(Event::Outcome(Outcome::Renewed { epoch, valid_until }));
                }
                send(Event::Done(kind));
            });
        }
        Action::Checkpoint { epoch } => {
            tokio::spawn(async move {
                if let Some(prod) = &p.producer
                    && let Ok(status) = prod.status(deadline).await
                    && let Some(h) = status.last_signed_height
                {
                    send(Event::LastSigned(Some(h)));
                    let _ = p.coord.checkpoint(epoch, &p.key, h, deadline).await;
                }
                send(Event::Done(kind));
            });
        }
        Action::RunGuard { epoch } => {
            let lease = lease_of(epoch);
            let input = GuardInput {
                lease,
                cluster_best: best_height(fresh_heights(cluster, &p).collect::<Vec<_>>()),
                previous_holder: st.previous_holder.clone(),
                planned: st.planned,
            };
            tokio::spawn(async move {
                let _ops = p.producer_ops.lock().await;
                let outcome = match (&p.producer, &p.probe, &p.self_fence) {
                    (Some(producer), Some(probe), Some(self_fence)) => {
                        let guard = PromotionGuard {
                            coord: p.coord.as_ref(),
                            producer: producer.as_ref(),
                            probe: probe.as_ref(),
                            key: &p.key,
                            policy: &p.guard,
                            self_fence,
                            watchdog: &p.watchdog,
                        };
                        match guard.run(&input).await {
                            Ok(_) => Outcome::GuardPassed { epoch },
                            Err(report) => {
                                let failed = report.failed_step();
                                Outcome::GuardFailed {
                                    epoch,
                                    step: failed.map_or("unknown".into(), |s| s.step.to_string()),
                                    error: failed.map_or(String::new(), |s| s.detail.clone()),
                                }
                            }
                        }
                    }
                    _ => Outcome::GuardFailed {
                        epoch,
                        step: "activate".into(),
                        error: "this member has no producer".into(),
                    },
                };
                match &outcome {
                    Outcome::GuardPassed { epoch } => {
                        p.events.emit(EventKind::Guard, Some(*epoch), "every guard step passed: producing")
                    }
                    Outcome::GuardFailed { epoch, step, error } => {
                        p.events.emit(EventKind::Guard, Some(*epoch), format!("guard failed at {step}: {error}"))
                    }
                    _ => {}
                }
                send(Event::Outcome(outcome));
                send(Event::Done(kind));
            });
        }
        Action::Deactivate { epoch, why } => {
            tokio::spawn(async move {
                let _ops = p.producer_ops.lock().await;
                let outcome = match &p.producer {
                    None => Outcome::Deactivated { epoch },
                    Some(prod) => {
                        if matches!(why, StepDown::Transfer { .. }) {
                            wait_for_fresh_signature(prod.as_ref(), p.role_policy.lease_ttl).await;
                        }
                        match prod.deactivate(Instant::now() + p.fence_timeout + p.call_timeout).await {
                            Ok(status) => {
                                send(Event::LastSigned(status.last_signed_height));
                                if let Some(f) = &p.self_fence {
                                    f.disarm();
                                }
                                p.watchdog.disarm();
                                Outcome::Deactivated { epoch }
                            }
                            Err(e) => Outcome::DeactivateFailed { epoch, error: e.to_string() },
                        }
                    }
                };
                send(Event::Outcome(outcome));
                send(Event::Done(kind));
            });
        }
        Action::Release { epoch } => {
            let lease = lease_of(epoch);
            let known_last_signed = st.last_signed;
            tokio::spawn(async move {
                // The lease may be one an earlier run of this daemon held, whose producer can
                // still be signing (a node outlives a killed daemon). Giving the lease back lets
                // another member activate at once, so the producer is stopped first; if that
                // cannot be confirmed, the lease is kept to expire, which the permission the
                // producer was given cannot outlast.
                let _ops = p.producer_ops.lock().await;
                let mut last_signed = known_last_signed;
                if let Some(prod) = &p.producer {
                    match stop_producer(&p, prod).await {
                        Ok(signed) => {
                            last_signed = last_signed.max(signed);
                            send(Event::LastSigned(last_signed));
                        }
                        Err(e) => {
                            tracing::error!(%epoch, error = %e, "cannot confirm the producer stopped; keeping the lease until it expires");
                            send(Event::Done(kind));
                            return;
                        }
                    }
                }
                if let Err(e) =
                    p.coord.release(&lease, final_watermark(&p, last_signed), Instant::now() + p.call_timeout).await
                {
                    tracing::debug!(%epoch, error = %e, "release not applied");
                }
                send(Event::Done(kind));
            });
        }
        Action::Fence { why } => {
            tokio::spawn(async move {
                tracing::warn!(reason = %why, "fencing the producer");
                let _ops = p.producer_ops.lock().await;
                let outcome = match &p.producer {
                    None => Outcome::Fenced,
                    Some(prod) => match fence_producer(&p, prod).await {
                        Ok(()) => Outcome::Fenced,
                        Err(error) => Outcome::FenceFailed { error },
                    },
                };
                p.telemetry.metrics.fenced(matches!(outcome, Outcome::Fenced));
                match &outcome {
                    Outcome::FenceFailed { error } => {
                        p.events.emit(EventKind::Fence, None, format!("fence not confirmed ({why}): {error}"))
                    }
                    _ => p.events.emit(EventKind::Fence, None, format!("producer fenced ({why})")),
                }
                send(Event::Outcome(outcome));
                send(Event::Done(kind));
            });
        }
    }
}

/// Before a planned handover: wait until the producer has just signed a new height, so the
/// successor has a whole block interval to take over and no height is missed.
/// One renew that fails while the lease has more than a renew interval left is no trouble:
/// the next leaves within a renew interval (on a busy machine or during a raft leader change a
/// store can miss one deadline). Less than that left is worth a warning: unless a renew commits
/// in time, this member fences itself at the lease's end.
fn report_failed_renew(epoch: Epoch, error: &crate::coord::CoordError, valid_until: MonoTime, interval: Duration) {
    let left = Span(valid_until.saturating_since(MonoTime::now()));
    if valid_until.saturating_since(MonoTime::now()) <= interval {
        tracing::warn!(%epoch, %error, "lease renewal failed with {left} of the lease left; unless a renew commits in time this member fences itself when it ends");
    } else {
        tracing::info!(%epoch, %error, "lease renewal failed with {left} of the lease left; the next renew leaves within a renew interval");
    }
}

async fn wait_for_fresh_signature(producer: &dyn Producer, limit: Duration) {
    let end = Instant::now() + limit;
    let first = producer.newest_signature(end).await.ok().flatten();
    if first.is_none() {
        return;
    }
    while Instant::now() < end {
        match producer.newest_signature(end).await {
            Ok(newest) if newest != first => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => return,
        }
    }
}

async fn probe_loop(
    probe: Arc<dyn ChainProbe>,
    interval: Duration,
    tx: mpsc::Sender<(MonoTime, Result<crate::chain::ChainSample, String>)>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let result = probe.probe(Instant::now() + interval).await.map_err(|e| e.to_string());
        if tx.send((MonoTime::now(), result)).await.is_err() {
            return;
        }
    }
}

/// Deactivates the producer, or fences it when deactivation is not confirmed; returns the last
/// height it signed, as far as it knows.
async fn stop_producer(p: &Parts, prod: &SharedProducer) -> Result<Option<u64>, String> {
    match prod.deactivate(Instant::now() + p.fence_timeout + p.call_timeout).await {
        Ok(status) => {
            if let Some(f) = &p.self_fence {
                f.disarm();
            }
            p.watchdog.disarm();
            Ok(status.last_signed_height)
        }
        Err(e) => {
            tracing::warn!(error = %e, "deactivation not confirmed; fencing the producer");
            fence_producer(p, prod).await.map(|()| None)
        }
    }
}

/// The watermark a release records: the end of the last height the node signed, for a node
/// that holds the key (the daemon knows only that it signed something at that height). A
/// producer that reserves every signature records nothing more: the watermark already is its
/// exact last reservation, and raising it to the end of the height would keep the next holder
/// from the steps the node still has to sign there (a precommit after a prevote).
fn final_watermark(p: &Parts, last_signed: Option<u64>) -> Option<(KeyId, Hrs)> {
    if p.producer.as_ref().is_some_and(|prod| prod.reserves_every_signature()) {
        return None;
    }
    last_signed.map(|h| (p.key.clone(), Hrs::end_of_height(h)))
}

/// Emits an event and logs a line for each change between two views of the store: the lease,
/// maintenance mode, a transfer. Every member's log — a witness's too — thus tells who holds
/// the lease at any moment of a failover.
fn report_store_changes(events: &EventLog, before: Option<&crate::coord::StoreView>, now: &crate::coord::StoreView) {
    if before.map(|b| &b.lease) != Some(&now.lease) {
        let text = format!("lease {}", now.lease);
        tracing::info!("store: {text}");
        events.emit(EventKind::Lease, Some(now.lease.epoch()), text);
    }
    if before.is_some_and(|b| b.intents.paused != now.intents.paused) {
        let what = if now.intents.paused { "maintenance mode on (paused)" } else { "maintenance mode off (resumed)" };
        tracing::info!("store: {what}");
        events.emit(EventKind::Intent, None, what);
    }
    if before.is_some_and(|b| b.intents.transfer != now.intents.transfer)
        && let Some(t) = &now.intents.transfer
    {
        let forced = if t.forced { "forced " } else { "" };
        let text = format!("{forced}transfer to {} requested (epoch {})", t.to, t.epoch);
        tracing::info!("store: {text}");
        events.emit(EventKind::Intent, Some(t.epoch), text);
    }
}

/// Fences the producer from a blocking thread (a fence must work while the runtime is busy);
/// disarms the self-fence once it is confirmed.
async fn fence_producer(p: &Parts, prod: &SharedProducer) -> Result<(), String> {
    let fenced = Arc::clone(prod);
    let timeout = p.fence_timeout;
    match tokio::task::spawn_blocking(move || fenced.fence(timeout)).await {
        Ok(Ok(())) => {
            if let Some(f) = &p.self_fence {
                f.disarm();
            }
            p.watchdog.disarm();
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Logs and emits what a decision changed: one sentence with its cause for a role change (a
/// WARN only when something went wrong: a fence, a failed guard, an unhealthy node), and one
/// line when the situation behind a non-decision changes (a WARN only when an operator should
/// look: an active on an unhealthy node, or no member able to take over).
fn report_decision(p: &Parts, st: &LoopState, next: &RoleState, why: &Why, height: Option<u64>) {
    let before = &st.role;
    if next.role != before.role || next.epoch != before.epoch {
        let sentence = role::describe_change(before, next, why);
        let epoch = next.epoch.or(before.epoch).map(|e| e.get());
        let cause = role::change_cause_word(next);
        let troubled = next.role == RoleName::Fenced
            || (next.role == RoleName::Demoting
                && matches!(
                    next.last_reason,
                    Some(Reason::StepDown(StepDown::Unhealthy { .. } | StepDown::GuardFailed { .. }))
                ));
        match troubled {
            true => {
                tracing::warn!(change = "role", role = %next.role, from = %before.role, epoch, cause, height, "{sentence}")
            }
            false => {
                tracing::info!(change = "role", role = %next.role, from = %before.role, epoch, cause, height, "{sentence}")
            }
        }
        p.events.emit_with_cause(EventKind::Role, next.epoch.or(before.epoch), cause, sentence);
        let metrics = &p.telemetry.metrics;
        if next.role == RoleName::Active && before.role != RoleName::Active {
            metrics.became_active(match (st.planned, st.forced) {
                (true, _) => FailoverReason::Planned,
                (_, true) => FailoverReason::Forced,
                _ => FailoverReason::Unplanned,
            });
        }
        if before.role == RoleName::Active && next.role != RoleName::Active {
            metrics.stepped_down(next.last_reason.as_ref().map_or("other", Reason::word));
        }
    } else if st.last_situation.as_ref() != Some(&why.situation()) && !matches!(why, Why::AcquireRetry { .. }) {
        match why.needs_attention() {
            true => tracing::warn!(role = %next.role, "{why}"),
            false => tracing::info!(role = %next.role, "{why}"),
        }
    }
}

/// The gauges that follow each decision: role, lease, own deadline, node health, raft.
fn report_metrics(
    p: &Parts,
    next: &RoleState,
    view: &crate::coord::StoreView,
    health: &crate::health::NodeHealth,
    now: MonoTime,
) {
    let m = &p.telemetry.metrics;
    m.set_role(next.role);
    m.set_lease(&view.lease);
    let holding = matches!(next.role, RoleName::Promoting | RoleName::Active | RoleName::Demoting);
    let remaining = next.deadline.filter(|_| holding).map_or(0.0, |d| d.saturating_since(now).as_secs_f64());
    m.set_lease_remaining(remaining);
    m.set_health(health.verdict == Verdict::Healthy && health.latest_good, health.lag);
    if let Some(raft) = p.coord.status().raft {
        m.set_raft(raft.term, raft.commit, raft.is_leader);
    }
}

/// On SIGTERM: a holder stops producing and releases, so a standby can take over at once.
async fn graceful_stop(st: &mut LoopState, p: &Parts) {
    let Some(epoch) = st.role.epoch else { return };
    tracing::info!(%epoch, "shutting down: deactivating the producer and releasing the lease");
    // An activation still in flight finishes first, so the stop below is the last word.
    let _ops = p.producer_ops.lock().await;
    if let Some(prod) = &p.producer {
        match stop_producer(p, prod).await {
            Ok(signed) => st.last_signed = st.last_signed.max(signed),
            Err(e) => {
                // Releasing would let another member activate beside a producer that may still
                // sign; the lease expires instead, which its permission cannot outlast.
                tracing::error!(error = %e, "the producer could not be stopped at shutdown; keeping the lease until it expires");
                return;
            }
        }
    }
    if let Some(lease) = st.leases.get(&epoch).cloned() {
        let _ = p.coord.release(&lease, final_watermark(p, st.last_signed), Instant::now() + p.call_timeout).await;
    }
}

/// With `FAILOVERD_TEST_HOOKS=1`, SIGUSR2 blocks every runtime worker: what a stalled runtime
/// looks like, so tests can show the self-fence thread acts anyway; SIGUSR1 makes the raft task
/// panic (installed by the raft backend, `coord::StartOptions::test_hooks`), so tests can show a
/// panic ends the process after fencing. Never set in production.
fn install_test_hooks(shutdown: &CancellationToken) {
    if std::env::var("FAILOVERD_TEST_HOOKS").as_deref() != Ok("1") {
        return;
    }
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let Ok(mut usr2) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2()) else {
            return;
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = usr2.recv() => {
                tracing::warn!("test hook: blocking every runtime worker");
                for _ in 0..16 {
                    tokio::spawn(async { std::thread::sleep(Duration::from_secs(3600)) });
                }
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    });
}
