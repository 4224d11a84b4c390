//! The member daemon (docs/design.md §6–7): observe, decide, act.
//!
//! At every event — a store change, a probe, a finished action, a fence notice — and whenever
//! time alone may change the decision (`pace`: every 50 ms while something is in motion, at the
//! next renew or once per quiet turn — 1 s with the raft store, 250 ms with Consul), the loop gathers an
//! [`Observation`](crate::role::Observation) — monotonic now, the probe history, the store's
//! lease and intents, the cluster's statuses and the outcomes of earlier actions — calls the
//! pure [`role::decide`](crate::role::decide), and hands the actions
//! it returns to the executor, which runs each as a task. Each kind runs at most once at a time,
//! every call inside it has a deadline, and its result comes back as an outcome the loop applies
//! in a later turn, so a slow node or store never blocks the loop.
//!
//! Where things live:
//! - [`listeners`]: every socket the daemon serves on, bound before [`run`].
//! - `parts`: what a member is made of, as small structs (member, policies, effects, outputs).
//! - `wiring`: the parts, built from the config; the store is started with `coord::start` and
//!   used only through the `Coordinator` trait (no file here names a backend).
//! - `main_loop`: role state and probe history; each turn drains outcomes, observes, decides,
//!   reports and dispatches.
//! - `observe`: probe loops, reference loops, and the cluster-status refresher.
//! - `pace`: when the loop turns although no event came.
//! - `executor` and `actions`: the in-flight set, and one async fn per action.
//! - `embedded_node`: the simulated node served inside the daemon (demo, tests).
//! - `stop`: stopping the producer, and the graceful stop at shutdown.
//! - `report`: logs, events and gauges that follow a decision.
//! - `test_hooks`: fault injection for black-box tests, only with `FAILOVERD_TEST_HOOKS=1`.
//!
//! # Order of effects
//!
//! Like a raft `Ready`, a decision's actions carry out effects whose order is the safety
//! argument. Every action MUST keep it:
//! 1. **Arm before activating.** The self-fence thread and the watchdog device are armed for
//!    the lease's validity before `Producer::activate` is called (the promotion guard does both,
//!    under the producer lock), so a producer is never active without something that stops it
//!    when the lease runs out.
//! 2. **Disarm only after a confirmed stop.** The self-fence thread and the watchdog are
//!    disarmed only after `deactivate` or `fence` returned success; a stop that is not confirmed
//!    leaves them armed, and keeps the lease until it expires.
//! 3. **Persist before external effects.** A permission is committed in the store before it is
//!    used: the grant before the guard activates, a renew before the producer's permission and
//!    the self-fence deadline move, a checkpoint's watermark from a height already signed. Giving
//!    permission back goes the other way: the producer is stopped first, and only then does a
//!    release commit the final watermark and free the lease. So does a fenced takeover, whose
//!    grant is safe only once the old holder cannot sign: `fence_command` against it succeeds
//!    first, and only then is the store asked to move exactly the holding that was fenced.
//! 4. **Acknowledge last.** An action's result reaches `role` only as an outcome in a later
//!    observation; no action changes the loop's state itself. Every action that `role` waits on
//!    reports one, also when its task panicked.
//! 5. **Stop last.** Once the graceful stop begins, no activation starts; if the stop runs past
//!    its grace period, the producer is fenced after any action still holding it, and the lease
//!    is left to expire.
//!
//! Never here: a decision (that is `role`), a lock held across a store call in the loop, or an
//! await of the store inside a loop turn.

mod actions;
mod embedded_node;
mod executor;
pub mod listeners;
mod main_loop;
mod observe;
mod pace;
mod parts;
mod report;
mod stop;
mod test_hooks;
mod wiring;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::telemetry;

pub use listeners::Listeners;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Setup(String),
    #[error(
        "{0}; this member deactivated its producer and stopped. Fix the cause (a failed storage: a full or failing disk under data_dir; a failed timerfd: the open-file limit, LimitNOFILE) and start it again"
    )]
    StoreFailed(String),
    #[error(
        "{0}; this member deactivated its producer and stopped. Start it again; if it recurs, the kernel refuses timerfd calls to this process (a seccomp profile?)"
    )]
    TimerFailed(String),
}

/// Options that are not part of the config file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub rejoin: bool,
    /// A panic anywhere fences the producer and aborts the process (`panic_hook`). The binary
    /// sets it; tests that run members in-process do not.
    pub abort_on_panic: bool,
}

/// Runs one member on `listeners` until `shutdown`, then deactivates and releases within a
/// grace period: a decision loop for each validator it serves, over one store, one control API
/// and one metrics endpoint.
pub async fn run(
    config: Config,
    options: RunOptions,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let Listeners { peer, metrics, control_socket, control_tcp } = listeners;
    let all = build_validators(&config, &options, peer).await?;
    let labelled = !config.validators.is_empty();
    if options.abort_on_panic {
        let fences = all.iter().filter_map(|p| p.effects.self_fence.clone()).collect();
        let limit = all.iter().map(|p| p.policies.fence_timeout).max().unwrap_or_default();
        crate::panic_hook::abort_after_fencing(fences, limit);
    }
    if let Some(listener) = metrics {
        let telemetries =
            all.iter().map(|p| (labelled.then(|| p.validator.to_string()), Arc::clone(&p.outputs.telemetry))).collect();
        let endpoints_shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = telemetry::endpoints::serve(listener, telemetries, endpoints_shutdown).await {
                tracing::error!(error = %e, "the metrics and health endpoints stopped");
            }
        });
    }
    for p in &all {
        telemetry::webhook::start(&config.webhooks, &p.outputs.events, &p.outputs.telemetry.metrics, &shutdown);
    }
    let control = crate::api::ControlRouter::new(all.iter().map(|p| (p.validator.clone(), p.control_service())));
    if let (Some(listener), Some(tls)) = (control_tcp, config.tls.clone()) {
        let tcp = control.clone();
        let tcp_shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::api::serve_tcp(listener, &tls, tcp, tcp_shutdown).await {
                tracing::error!(error = %e, "the TCP control API is not available");
            }
        });
    }
    let socket = config.api.socket.clone();
    let api_shutdown = shutdown.clone();
    let api = tokio::spawn(async move {
        if let Err(e) = crate::api::serve_on(control_socket, control, api_shutdown).await {
            tracing::error!(socket = %socket.display(), error = %e, "the control API is not available");
        }
    });
    test_hooks::install(&shutdown);
    let (loops, ends) = main_loops(all, labelled, &shutdown);
    let results = run_loops(loops).await;
    shutdown.cancel();
    let _ = api.await;
    ends.stop().await;
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

/// Starts the store and builds every validator's parts; on a failure, stops what was built.
async fn build_validators(
    config: &Config,
    options: &RunOptions,
    peer: tokio::net::TcpListener,
) -> Result<Vec<wiring::Parts>, DaemonError> {
    let test_hooks = std::env::var("FAILOVERD_TEST_HOOKS").as_deref() == Ok("1");
    let start = crate::coord::StartOptions { rejoin: options.rejoin, test_hooks };
    let stores =
        crate::coord::start_validators(config, peer, start).await.map_err(|e| DaemonError::Setup(e.to_string()))?;
    let every_store: Vec<_> = stores.iter().map(|s| Arc::clone(&s.store)).collect();
    let labelled = !config.validators.is_empty();
    let notifiers = telemetry::LoopNotifier::for_loops(stores.len());
    let mut all = Vec::with_capacity(stores.len());
    for (i, (store, notifier)) in stores.into_iter().zip(notifiers).enumerate() {
        let how = wiring::Build { labelled, store_metrics: i == 0, notifier };
        match wiring::build(store, how).await {
            Ok(parts) => all.push(parts),
            Err(e) => {
                let built = Ends(all.iter().map(|p| (Arc::clone(&p.effects), p.embedded_node.clone())).collect());
                built.stop_parts();
                for s in every_store {
                    s.shutdown().await;
                }
                return Err(e);
            }
        }
    }
    Ok(all)
}

/// Every validator's loop, ready to run, and what is stopped once they all ended.
fn main_loops(
    all: Vec<wiring::Parts>,
    labelled: bool,
    shutdown: &CancellationToken,
) -> (Vec<impl std::future::Future<Output = Result<(), DaemonError>> + Send + 'static>, Ends) {
    let mut ends = Vec::with_capacity(all.len());
    let mut loops = Vec::with_capacity(all.len());
    for parts in all {
        let wiring::Parts {
            validator, member, policies, effects, outputs, sources, fence_notices, embedded_node, ..
        } = parts;
        ends.push((Arc::clone(&effects), embedded_node));
        let main_loop = main_loop::MainLoop::new(member, policies, effects, outputs);
        let stop = shutdown.clone();
        // Every line a validator's loop and its actions log names the validator, when there are
        // several.
        let span = match labelled {
            true => tracing::info_span!("validator", id = %validator),
            false => tracing::Span::none(),
        };
        loops.push(async move {
            // A loop that ends on its own (a failed store), or panics, stops every other
            // validator's loop with it: they share the member's store.
            let _stop_the_others = stop.clone().drop_guard();
            main_loop.run(sources, fence_notices, stop).instrument(span).await
        });
    }
    (loops, Ends(ends))
}

/// What outlives the loops: each validator's effects (its self-fence thread and store handle)
/// and its embedded node.
struct Ends(Vec<(Arc<parts::Effects>, CancellationToken)>);

impl Ends {
    /// Stops each embedded node and self-fence thread.
    fn stop_parts(&self) {
        for (effects, embedded_node) in &self.0 {
            embedded_node.cancel();
            if let Some(f) = &effects.self_fence {
                f.stop();
            }
        }
    }

    /// [`Ends::stop_parts`], then the store, once every loop did its graceful stop.
    async fn stop(self) {
        self.stop_parts();
        for (effects, _) in &self.0 {
            effects.coord.shutdown().await;
        }
    }
}

/// Runs every validator's loop to its end: the only one inline, several each as its own task, so
/// that one loop's turn never waits behind another's.
async fn run_loops<F>(mut loops: Vec<F>) -> Vec<Result<(), DaemonError>>
where
    F: std::future::Future<Output = Result<(), DaemonError>> + Send + 'static,
{
    if loops.len() == 1
        && let Some(only) = loops.pop()
    {
        return vec![only.await];
    }
    let tasks: Vec<_> = loops.into_iter().map(tokio::spawn).collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap_or_else(|e| Err(DaemonError::Setup(format!("a decision loop ended: {e}")))));
    }
    results
}
