//! What the loop observes besides its own memory: the local node (a probe loop feeding a
//! channel), the reference RPCs (their latest heights), and the cluster's statuses — read by a
//! background refresher and handed over a `watch` channel when the store is remote (Consul), so a
//! slow store never holds up a loop turn, and read by the turn itself when they are in this
//! member's memory (raft). Also the loop's clock seam.
//!
//! Owns those tasks and their latest answers; never decides, never acts, and never lets the loop
//! await the store.
//!
//! # When the store's answer is stale
//!
//! The refresher asks for the cluster's statuses after each loop turn ([`Observer::ask_again`]),
//! and on its own once its interval ([`refresh_interval`]) passed without a turn, each read bounded by
//! `call_timeout`, one at a time: a busy loop has answers as fresh as its turns, a quiet one
//! costs no more wake-ups than its turns. An answer is as old as the moment its read was sent. [`Observer::cluster`]
//! returns `None` — and the loop gives `role` an observation with `store: None`, "unknown is
//! never free" — once the newest answer is older than [`store_stale_after`]:
//! `3 × call_timeout + 2 × interval`, at most `status_stale_after`.
//! - One slow read never trips it: while a read takes up to `call_timeout`, the answer in hand
//!   is at most `2 × call_timeout + interval` old. Nor does one failed read (one more
//!   `call_timeout + interval`): "unknown" means at least two reads in a row failed.
//! - An active member given `store: None` keeps renewing on its own deadline (renewals do not
//!   read the view) and never sees its lease lost; it also sees no standby (the cluster is
//!   empty, as today after a failed read), so it does not step down for an unhealthy node.
//! - A standby given `store: None` does not acquire. The cap keeps it from acquiring on an
//!   answer older than the age at which `role` ignores any status anyway.
//!
//! With the raft store, statuses are in this member's memory (peers push theirs) and always
//! answer at once; a partitioned member's writes (acquire, renew) fail in the store instead.
//! There is no refresher then: each turn reads them itself ([`ClusterSource::Local`]), as fresh
//! as the turn, and a turn costs no second task's wake-up — a signer active for many
//! validators turns each of their loops several times a second. A quiet loop turns every
//! [`LOCAL_REFRESH_INTERVAL`] (the default probe interval), at most a quarter of
//! `status_stale_after`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::chain::{ChainProbe, ChainSample};
use crate::coord::{CoordError, Coordinator, StatusReport};
use crate::domain::{MemberId, MonoTime};
use crate::kernel_timer::KernelTimer;
use crate::role;
use crate::telemetry::Metrics;

/// The longest the refresher waits for a turn's request before it reads a remote store (Consul)
/// on its own. Peers publish their status at least once per probe interval (1 s by default; the
/// lease holder twice, and any member at once when its role or health changes), so a quiet member
/// reading four times a second misses little; a busy loop asks after every turn.
pub(super) const REFRESH_INTERVAL: Duration = Duration::from_millis(250);

/// The same when the statuses are in this member's memory ([`Coordinator::statuses_are_local`]):
/// a read cannot be slow or fail, so it need not be repeated before the next status can have
/// arrived, and a quiet loop (whose pace follows this) turns once a second, not four times — at
/// most a quarter of `status_stale_after`, so that statuses read at one quiet turn are still
/// fresh at the next.
pub(super) const LOCAL_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// How often the statuses are read without a turn asking.
pub(super) fn refresh_interval(local: bool, status_stale_after: Duration) -> Duration {
    if local { LOCAL_REFRESH_INTERVAL.min(status_stale_after / 4) } else { REFRESH_INTERVAL }
}

/// The age past which the store's answer counts as unknown (see the module doc).
pub(super) fn store_stale_after(call_timeout: Duration, status_stale_after: Duration, every: Duration) -> Duration {
    (call_timeout * 3 + every * 2).min(status_stale_after)
}

/// Monotonic time for the loop. Production reads `CLOCK_BOOTTIME`; tests follow tokio's clock,
/// so paused time (`tokio::time::pause`) moves it too.
#[derive(Clone, Debug)]
pub(super) struct Clock {
    /// With tokio's clock: its reading and the monotonic time at the start.
    origin: Option<(Instant, MonoTime)>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { origin: None }
    }

    #[cfg(test)]
    pub fn following_tokio() -> Clock {
        Clock { origin: Some((Instant::now(), MonoTime::now())) }
    }

    pub fn now(&self) -> MonoTime {
        match self.origin {
            None => MonoTime::now(),
            Some((at, base)) => base.saturating_add(at.elapsed()),
        }
    }
}

/// One probe of the local node and when it was taken.
pub(super) type LocalSample = (MonoTime, Result<ChainSample, String>);

/// The cluster's statuses as one read returned them.
#[derive(Clone, Debug)]
pub(super) struct ClusterAnswer {
    pub reports: Vec<StatusReport>,
    /// When the read was sent: the answer is at least this old.
    pub asked_at: MonoTime,
    /// When it came back: the reports' ages were measured then.
    pub answered_at: MonoTime,
}

/// The latest heights of the reference RPCs and when they were read.
type ReferenceHeights = Arc<Mutex<Vec<Option<(MonoTime, u64)>>>>;

/// Where the loop reads the cluster's statuses.
pub(super) enum ClusterSource {
    /// A refresher reads the store (over the network) and hands each answer over; the `Notify`
    /// asks it for a new one.
    Refreshed(watch::Receiver<Option<ClusterAnswer>>, Arc<Notify>),
    /// The statuses are in this process's memory ([`Coordinator::local_cluster_status`]).
    Local(Arc<dyn Coordinator>),
}

/// The loop's view of what the background tasks saw last.
pub(super) struct Observer {
    me: MemberId,
    clock: Clock,
    stale_after: Duration,
    status_stale_after: Duration,
    cluster: ClusterSource,
    references: ReferenceHeights,
}

impl Observer {
    pub fn new(
        me: MemberId,
        clock: Clock,
        (call_timeout, refresh_every): (Duration, Duration),
        status_stale_after: Duration,
        cluster: ClusterSource,
        references: usize,
    ) -> Observer {
        let stale_after = store_stale_after(call_timeout, status_stale_after, refresh_every);
        let references = Arc::new(Mutex::new(vec![None; references]));
        Observer { me, clock, stale_after, status_stale_after, cluster, references }
    }

    /// Asks the refresher to read the cluster's statuses now, for the next turn. A request made
    /// while a read runs is served once it ends; requests never pile up. Local statuses need no
    /// asking: the next turn reads them.
    pub fn ask_again(&self) {
        if let ClusterSource::Refreshed(_, ask) = &self.cluster {
            ask.notify_one();
        }
    }

    /// Waits up to `limit` for the refresher's first answer, so the first turn has one.
    pub async fn first_answer(&mut self, limit: Duration) {
        if let ClusterSource::Refreshed(answers, _) = &mut self.cluster {
            let _ = tokio::time::timeout(limit, answers.wait_for(Option::is_some)).await;
        }
    }

    /// The other members' statuses, aged to `now`; `None` when the store's answer is stale.
    pub fn cluster(&self, now: MonoTime) -> Option<Vec<StatusReport>> {
        let answers = match &self.cluster {
            ClusterSource::Local(coord) => {
                let reports = coord.local_cluster_status()?;
                return Some(reports.into_iter().filter(|r| r.status.member != self.me).collect());
            }
            ClusterSource::Refreshed(answers, _) => answers,
        };
        let answer = answers.borrow();
        let answer = answer.as_ref().filter(|a| now.saturating_since(a.asked_at) <= self.stale_after)?;
        let waited = now.saturating_since(answer.answered_at);
        let others = answer.reports.iter().filter(|r| r.status.member != self.me);
        Some(others.map(|r| StatusReport { status: r.status.clone(), age: r.age + waited }).collect())
    }

    /// The best height known: other members' fresh statuses in `cluster`, fresh reference
    /// RPCs, and `local` (this member's own probe, when given) — `role::best_height`'s rule.
    pub fn best_height(&self, cluster: &[StatusReport], now: MonoTime, local: Option<u64>) -> Option<u64> {
        let stale = self.status_stale_after;
        let refs = self.references.lock().unwrap_or_else(|e| e.into_inner());
        let refs = refs.iter().map(|r| r.filter(|(at, _)| now.saturating_since(*at) <= stale).map(|(_, h)| h));
        let peers = cluster.iter().filter(|r| r.status.member != self.me);
        role::best_height(peers, stale, refs.chain(std::iter::once(local)).collect::<Vec<_>>())
    }

    /// Starts a reference loop per probe, ticking with the member loop's turns when `bell` is
    /// given; each keeps its latest height here. Fails, starting none, when the kernel gives no
    /// timer for one.
    pub fn start_references(
        &self,
        probes: &[Arc<dyn ChainProbe>],
        interval: Duration,
        bell: Option<&TurnBell>,
        metrics: &Arc<Metrics>,
        shutdown: &CancellationToken,
    ) -> std::io::Result<()> {
        let ticks = (0..probes.len())
            .map(|i| {
                Ticks::new(&format!("reference{i}"), interval, shutdown.clone())
                    .map(|t| t.riding(bell.map(TurnBell::rider)))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        for ((i, probe), ticks) in probes.iter().enumerate().zip(ticks) {
            let task = ReferenceLoop {
                i,
                probe: Arc::clone(probe),
                heights: Arc::clone(&self.references),
                metrics: Arc::clone(metrics),
                clock: self.clock.clone(),
            };
            tokio::spawn(task.run(ticks));
        }
        Ok(())
    }
}

/// The member loop's turns, as a probe loop sees them: a turn marks the channel when a tick is
/// due within `early` of it ([`TurnBell`]), and the tick is taken with it. The turn's process is
/// awake anyway, so the probe costs no wake-up of its own: an active in signer mode turns every
/// renew interval (150 ms), and its probe timer otherwise woke it once a second for nothing else.
#[derive(Debug)]
pub(super) struct TurnRide {
    pub turns: watch::Receiver<()>,
    /// How early a tick may be taken with a turn ([`ride_early`]).
    pub early: Duration,
    /// This rider's next tick, for the bell: nanoseconds after `origin`.
    due: Arc<AtomicU64>,
    origin: Instant,
}

impl TurnRide {
    /// Tells the bell when this rider's next tick is due.
    fn set_due(&self, due: Instant) {
        let nanos = u64::try_from(due.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        self.due.store(nanos, Ordering::Relaxed);
    }
}

/// The member loop's side of the rides: at a turn it marks the channel only when some rider's
/// tick is due within `early`, so a turn wakes no probe loop that has nothing to take — with many
/// validators each turning several times a second, those wake-ups were a good part of a
/// member's work. A rider that reads its due a moment late takes the next turn or its own timer,
/// never a tick later than the timer gives it.
pub(super) struct TurnBell {
    turns: watch::Sender<()>,
    early: Duration,
    origin: Instant,
    /// Each rider's next tick (nanoseconds after `origin`).
    dues: Mutex<Vec<Arc<AtomicU64>>>,
}

impl TurnBell {
    pub fn new(early: Duration) -> TurnBell {
        TurnBell { turns: watch::Sender::new(()), early, origin: Instant::now(), dues: Mutex::new(Vec::new()) }
    }

    /// A rider of this bell's turns, its tick due at once until it says otherwise.
    pub fn rider(&self) -> TurnRide {
        let due = Arc::new(AtomicU64::new(0));
        self.dues.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::clone(&due));
        TurnRide { turns: self.turns.subscribe(), early: self.early, due, origin: self.origin }
    }

    /// A turn at `now`: marks the channel if a rider's tick is due within `early`.
    pub fn turned(&self, now: Instant) {
        let horizon = now.saturating_duration_since(self.origin) + self.early;
        let horizon = u64::try_from(horizon.as_nanos()).unwrap_or(u64::MAX);
        let dues = self.dues.lock().unwrap_or_else(|p| p.into_inner());
        if dues.iter().any(|due| due.load(Ordering::Relaxed) <= horizon) {
            self.turns.send_replace(());
        }
    }
}

/// How early a probe may ride a turn: a renew interval and a quarter, so an active's renew
/// turns, a renew interval apart give or take scheduling, always give one; but never more than
/// a quarter of the probe interval, so probes stay at least three quarters of an interval apart.
pub(super) fn ride_early(renew_interval: Duration, probe_interval: Duration) -> Duration {
    (renew_interval * 5 / 4).min(probe_interval / 4)
}

/// The pace of a background loop: a tick at once, then one every `interval` until shutdown. A
/// tick missed while a slow call ran is delayed, not made up in a burst. On a kernel timer: a
/// tokio interval of a second woke the member twice a tick (`kernel_timer`'s doc). With a
/// [`TurnRide`], a tick due soon is taken at a turn of the member's loop instead, and the next
/// is an interval after it: never later than the timer would have given it.
pub(super) struct Ticks {
    timer: KernelTimer,
    due: Instant,
    interval: Duration,
    shutdown: CancellationToken,
    /// Which loop these are (`local`, `reference0`, ...), for the log.
    probe: String,
    ride: Option<TurnRide>,
}

impl Ticks {
    /// Fails only when the kernel gives no timer (no file descriptor left): a start-up error.
    pub(super) fn new(probe: &str, interval: Duration, shutdown: CancellationToken) -> std::io::Result<Ticks> {
        let timer = KernelTimer::new()?;
        Ok(Ticks { timer, due: Instant::now(), interval, shutdown, probe: probe.to_string(), ride: None })
    }

    /// The same ticks, taken with the member loop's turns when one comes near enough.
    pub(super) fn riding(mut self, ride: Option<TurnRide>) -> Ticks {
        self.ride = ride;
        self.tell_due();
        self
    }

    fn tell_due(&self) {
        if let Some(ride) = &self.ride {
            ride.set_due(self.due);
        }
    }

    pub(super) fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for the next tick; `false` once shutdown was asked. A timer the kernel stops
    /// serving ends the loop as shutdown would, with the reason logged.
    async fn next(&mut self) -> bool {
        if let Err(e) = self.timer.arm(self.due) {
            tracing::error!(probe = %self.probe, error = %e, "a probe loop's timer cannot be armed; the loop stops");
            return false;
        }
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                fired = self.timer.fired() => return match fired {
                    Ok(()) => {
                        self.due = next_tick(self.due, self.interval, Instant::now());
                        self.tell_due();
                        true
                    }
                    Err(e) => {
                        tracing::error!(probe = %self.probe, error = %e, "a probe loop's timer failed; the loop stops");
                        false
                    }
                },
                turned = turn_of(&mut self.ride) => {
                    let Some(early) = turned else {
                        // The member's loop has ended: only the timer paces what is left.
                        self.ride = None;
                        continue;
                    };
                    let now = Instant::now();
                    if rides_turn(self.due, early, now) {
                        self.due = now + self.interval;
                        self.tell_due();
                        return true;
                    }
                }
            }
        }
    }
}

/// The next turn of the member's loop, with how early a tick may ride it; `None` once the loop
/// ended, and pending for ever without a ride.
async fn turn_of(ride: &mut Option<TurnRide>) -> Option<Duration> {
    match ride {
        Some(r) => r.turns.changed().await.ok().map(|()| r.early),
        None => std::future::pending().await,
    }
}

/// Whether a turn at `now` takes the tick due at `due`: it is due within `early`.
fn rides_turn(due: Instant, early: Duration, now: Instant) -> bool {
    now + early >= due
}

/// A tick taken later than this after its time moves the grid (tokio's `Interval` rule).
const LATE_TICK: Duration = Duration::from_millis(5);

/// The tick after one `due` that was taken at `now`: an interval after it, or an interval after
/// `now` when it was taken late (a slow probe held the loop), so ticks never come in a burst.
fn next_tick(due: Instant, interval: Duration, now: Instant) -> Instant {
    if now > due + LATE_TICK { now + interval } else { due + interval }
}

/// Probes the local node at each of `ticks` and sends each result with its time.
pub(super) async fn probe_loop(
    probe: Arc<dyn ChainProbe>,
    mut ticks: Ticks,
    clock: Clock,
    tx: mpsc::Sender<LocalSample>,
) {
    let interval = ticks.interval();
    while ticks.next().await {
        let result = probe.probe(Instant::now() + interval).await.map_err(|e| e.to_string());
        if tx.send((clock.now(), result)).await.is_err() {
            return;
        }
    }
}

struct ReferenceLoop {
    i: usize,
    probe: Arc<dyn ChainProbe>,
    heights: ReferenceHeights,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl ReferenceLoop {
    async fn run(self, mut ticks: Ticks) {
        let interval = ticks.interval();
        while ticks.next().await {
            let sample = self.probe.probe(Instant::now() + interval).await;
            self.metrics.probed(&format!("reference{}", self.i), sample.as_ref().ok().map(|s| s.height));
            if let Ok(sample) = sample {
                self.heights.lock().unwrap_or_else(|e| e.into_inner())[self.i] =
                    Some((self.clock.now(), sample.height));
            }
        }
    }
}

/// Where the loop reads the cluster's statuses: straight from memory when the store keeps them
/// there; else a refresher over the store's `cluster_status`, whose latest answer the loop reads
/// and whose next it asks for through the `Notify`.
pub(super) fn start_refresher(
    coord: Arc<dyn Coordinator>,
    (call_timeout, every): (Duration, Duration),
    clock: Clock,
    shutdown: &CancellationToken,
) -> ClusterSource {
    if coord.statuses_are_local() {
        return ClusterSource::Local(coord);
    }
    let (tx, rx) = watch::channel(None);
    let ask = Arc::new(Notify::new());
    let read = move |deadline| {
        let coord = Arc::clone(&coord);
        async move { coord.cluster_status(deadline).await }
    };
    tokio::spawn(refresh_cluster(read, (call_timeout, every), clock, tx, Arc::clone(&ask), shutdown.clone()));
    ClusterSource::Refreshed(rx, ask)
}

/// Reads the cluster's statuses with `read` (given the read's deadline) at once, then each time
/// `ask` is notified or `every` passed since the last read ended, and publishes each
/// answer on `tx`; a failed read leaves the last one.
pub(super) async fn refresh_cluster<F, Fut>(
    read: F,
    (call_timeout, every): (Duration, Duration),
    clock: Clock,
    tx: watch::Sender<Option<ClusterAnswer>>,
    ask: Arc<Notify>,
    shutdown: CancellationToken,
) where
    F: Fn(Instant) -> Fut,
    Fut: Future<Output = Result<Vec<StatusReport>, CoordError>>,
{
    loop {
        let asked_at = clock.now();
        let read = tokio::time::timeout(call_timeout, read(Instant::now() + call_timeout));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            answer = read => match answer {
                Ok(Ok(reports)) => {
                    tx.send_replace(Some(ClusterAnswer { reports, asked_at, answered_at: clock.now() }));
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "cluster statuses not read"),
                Err(_) => tracing::debug!("cluster statuses not read before the deadline"),
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ask.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
#[path = "observe_tests.rs"]
mod tests;
