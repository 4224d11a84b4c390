//! The raft node: one tokio task that owns the `RawNode`, ticks it (only when a tick is due:
//! [`super::tick_clock`]), steps incoming messages,
//! proposes commands, and handles each `Ready` in the documented order — apply a received
//! snapshot, persist entries and hard state (fsynced), then send messages, apply committed
//! entries to the state machine, advance.
//!
//! It also runs the leader's expiry timer (docs/design.md §4; its rules in [`super::expiry`]):
//! only the raft leader proposes `Expire`, and only once its own monotonic clock shows the
//! holder's TTL since its last applied refresh (or, in signer mode, one it accepted outside the
//! log: [`super::refresh`]) or the end of a stall of this task — and, as a
//! new leader, the TTL plus an election timeout since it became leader. The timer is exact (a
//! sleep until it is due, not the next tick), and the `Expire` names the refresh stamp it ran
//! from, so a renew committed first makes it a no-op. Raft leadership is never the lease.
//! While the replicated state keeps no refresh stamp (restored from an earlier version's
//! snapshot), the leader proposes `StartRefreshStamps` and, until it applied, unconditional
//! `Expire`s. It sets the followers' election timeouts so that the lease holder campaigns first
//! when the leader is lost ([`super::election_order`]).
//! Storage is written inline from this task: an fsync that stalls delays the raft loop, which
//! is the safe direction (a slow store delays grants; it never extends a lease).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::{EntryType, Message, MessageType};
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::cluster_state::{ClusterState, MAX_BATCH};
use super::election_order;
use super::expiry::{ExpiryTimer, TimedHolding};
use super::fsm::{Command, FsmState, Reply};
use super::peer_gate::{PeerRefusals, Refusal, Source};
use super::refresh::{self, LeaderView, RefreshAsk, RefreshRefusal};
use super::snapshot_check::check_snapshot;
use super::storage::{RaftLog, StoreError};
use super::tick_clock::TickClock;
use super::transport::{Inbound, PeerSenders, this_run};
use crate::coord::{CoordError, StoreView};
use crate::domain::ValidatorId;
use crate::kernel_timer::KernelTimer;

/// How far behind the leader's log a peer may be and still be handed raft leadership, when no
/// peer is fully caught up: a few entries, which a live peer across a WAN is at most behind
/// (one or two appends in flight) and a dead one leaves behind within a fraction of a second
/// under steady proposals.
const TRANSFER_LAG: u64 = 4;
/// The most refreshes the node judges in one turn: one for each validator a member may serve.
const MAX_REFRESH_RUN: usize = MAX_BATCH;

/// How the node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: u64,
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// How long the leader waits without a renew before expiring when the holder declared no
    /// TTL (a holder of an earlier version): [`super::expiry::undeclared_ttl`].
    pub undeclared_ttl: Duration,
    /// Applied entries between snapshots (and log compactions).
    pub snapshot_every: u64,
    /// This member lost its disk and rejoins with the same id: it neither campaigns nor votes
    /// until it has caught up with a leader, so it cannot vote twice in a term it forgot.
    pub rejoin: bool,
    /// Raft ids of every member, and of the witnesses (preferred raft leaders).
    pub ids: std::collections::BTreeMap<crate::domain::MemberId, u64>,
    pub witnesses: Vec<u64>,
    /// The validators whose lease and intents this member watches (each gets a view); the
    /// default one always.
    pub validators: Vec<ValidatorId>,
}

/// A request from the coordinator handle.
pub enum Request {
    Propose {
        cmd: Command,
        reply: oneshot::Sender<Result<Reply, CoordError>>,
        /// Nobody waits on the answer to sign: a scoped reservation ahead may wait for the next
        /// tick and leave in one entry with the others ([`gathers`]).
        ahead: bool,
    },
    /// This member holds the lease and leads raft: refresh the expiry timer outside the log.
    Refresh { ask: RefreshAsk, reply: oneshot::Sender<Result<(), RefreshRefusal>> },
    /// Test hook (`FAILOVERD_TEST_HOOKS`): panic inside the raft task, as a bug in raft-rs would.
    Panic,
}

/// A reservation ahead a signer's thread queued (`Coordinator::queue_reserve_ahead`): the node
/// takes it at its next tick, into that tick's batch, without a wake-up of its own.
pub struct QueuedAhead {
    /// The scoped `Reserve`.
    pub cmd: Command,
    pub deadline: tokio::time::Instant,
    /// Called once with the node's answer, or with the timeout at `deadline`. Dropped uncalled
    /// only with the node; its caller hears that then (`QueuedReservation`).
    pub answer: Box<dyn FnOnce(Result<Reply, CoordError>) + Send>,
}

/// Reservations ahead queued since the node's last tick, shared by the node and its handles.
#[derive(Default)]
pub struct AheadQueue {
    queued: std::sync::Mutex<Vec<QueuedAhead>>,
    /// A reservation was ever queued here: this member runs remote signers that queue them, and
    /// its node takes every tick while it holds a lease, since a push wakes nothing.
    used: std::sync::atomic::AtomicBool,
}

impl AheadQueue {
    pub fn push(&self, ahead: QueuedAhead) {
        self.used.store(true, std::sync::atomic::Ordering::Relaxed);
        self.lock().push(ahead);
    }

    fn take(&self) -> Vec<QueuedAhead> {
        std::mem::take(&mut *self.lock())
    }

    fn used(&self) -> bool {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<QueuedAhead>> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the node reports about itself (for status, metrics and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: u64,
    pub leader: Option<u64>,
    pub is_leader: bool,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub rejoining: bool,
    /// Set when the node stopped for good (its storage or its timer failed), with a sentence that
    /// says so; every call fails.
    pub failed: Option<String>,
}

/// Where a proposal's answer goes: one caller, or, for a batch of renews, one caller per command
/// in the batch's order.
enum Answer {
    One(oneshot::Sender<Result<Reply, CoordError>>),
    Each(Vec<oneshot::Sender<Result<Reply, CoordError>>>),
}

impl Answer {
    /// Whether every caller gave up waiting.
    fn is_closed(&self) -> bool {
        match self {
            Answer::One(tx) => tx.is_closed(),
            Answer::Each(txs) => txs.iter().all(|tx| tx.is_closed()),
        }
    }

    fn send(self, result: Result<Reply, CoordError>) {
        match (self, result) {
            (Answer::One(tx), result) => {
                let _ = tx.send(result);
            }
            (Answer::Each(txs), Ok(Reply::Batch(results))) if results.len() == txs.len() => {
                for (tx, result) in txs.into_iter().zip(results) {
                    let _ = tx.send(result);
                }
            }
            (Answer::Each(txs), other) => {
                let why = match other {
                    Err(e) => e,
                    Ok(reply) => CoordError::Invalid(format!("a batch was answered with {reply:?}")),
                };
                for tx in txs {
                    let _ = tx.send(Err(why.clone()));
                }
            }
        }
    }
}

/// A proposal waiting for its entry to be applied.
struct Pending {
    reply: Answer,
    cmd: Command,
    /// The leader it went to and when: a proposal forwarded to a leader that then lost
    /// leadership is silently dropped by raft, so it is proposed again (same request id).
    leader: u64,
    at: Instant,
}

/// One raft log entry's payload.
#[derive(Serialize, Deserialize)]
struct LogEntry {
    /// Raft id of the proposing member and a number unique to its process lifetime, so that
    /// only the proposer answers its caller.
    origin: u64,
    incarnation: u64,
    request: u64,
    cmd: Command,
}

pub struct NodeTask {
    cfg: NodeConfig,
    raw: RawNode<RaftLog>,
    fsm: ClusterState,
    senders: Arc<PeerSenders>,
    inbox: mpsc::Receiver<Inbound>,
    requests: mpsc::Receiver<Request>,
    /// Each watched validator's lease and intents.
    views: BTreeMap<ValidatorId, watch::Sender<StoreView>>,
    /// The [`StoreView::current`] the views were last sent with.
    view_current: bool,
    /// The state machine changed since the views were last sent.
    views_dirty: bool,
    info: watch::Sender<NodeInfo>,
    /// Proposed and not yet applied, by request id.
    pending: HashMap<u64, Pending>,
    incarnation: u64,
    next_request: u64,
    /// The leader's expiry timer of each validator's lease: when an `Expire` may be proposed.
    /// One for every validator with state, made when it first appears.
    expiry: BTreeMap<ValidatorId, ExpiryTimer>,
    /// Raft's ticks: applied at the start of each turn, slept until when nothing is due.
    ticks: TickClock,
    /// The earliest wake this task planned for its next turn (its tick or the expiry timer): a
    /// turn that starts well after it ends a stall (see `note_turn`).
    wake_at: Instant,
    /// When the current (or last) turn started: a wake planned in the past counts from there,
    /// so a turn that itself stalled (a long fsync) still ends a stall.
    turn_started: Instant,
    /// When this member, as leader, may propose `StartRefreshStamps` again.
    stamps_next_try: Option<Instant>,
    /// The range raft-rs draws election timeouts from, in ticks: `[min, max)`.
    election_range: (usize, usize),
    rejoining: bool,
    ticks_rejoining: u64,
    last_leadership_transfer: Option<Instant>,
    /// Requests waiting for a leader to propose to, or (renews and checkpoints of scoped
    /// validators) for the next tick.
    parked: Vec<Parked>,
    /// Whether a raft tick passed in this turn: the scoped renews and checkpoints parked before
    /// it leave now, in one entry ([`flush_parked`](NodeTask::flush_parked)).
    batch_due: bool,
    /// Where refused snapshots are counted and logged.
    refusals: PeerRefusals,
    /// Reservations ahead queued by signers' threads, taken at each tick.
    ahead: Arc<AheadQueue>,
}

/// Each watched validator's lease and intents, as the node applies them.
pub type Views = BTreeMap<ValidatorId, watch::Receiver<StoreView>>;

/// Builds the raft core over `log`, restoring the state machine from its snapshot.
pub fn build(
    cfg: NodeConfig,
    log: RaftLog,
    senders: Arc<PeerSenders>,
    inbox: mpsc::Receiver<Inbound>,
    requests: mpsc::Receiver<Request>,
    refusals: PeerRefusals,
) -> Result<(NodeTask, Views, watch::Receiver<NodeInfo>), StoreError> {
    let path = log.path().to_path_buf();
    let corrupt = |detail: String| StoreError::Corrupt { path: path.clone(), detail };
    let fsm: ClusterState = match log.snapshot_data() {
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| corrupt(format!("snapshot does not decode: {e}")))?,
        None => ClusterState::default(),
    };
    let raft_cfg = raft::Config {
        id: cfg.id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        applied: log.snapshot_index(),
        check_quorum: true,
        pre_vote: true,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        ..raft::Config::default()
    };
    raft_cfg.validate().map_err(|e| corrupt(format!("raft configuration: {e}")))?;
    let election_range = (raft_cfg.min_election_tick(), raft_cfg.max_election_tick());
    let logger = slog::Logger::root(TracingDrain, slog::o!());
    let raw =
        RawNode::new(&raft_cfg, log, &logger).map_err(|e| corrupt(format!("raft refused the stored state: {e}")))?;
    let mut views = BTreeMap::new();
    let mut view_rxs = BTreeMap::new();
    for v in std::iter::once(ValidatorId::default_validator()).chain(cfg.validators.iter().cloned()) {
        let scope = fsm.scope(&v);
        let (tx, rx) = watch::channel(StoreView { lease: scope.lease(), intents: scope.intents(), current: false });
        views.insert(v.clone(), tx);
        view_rxs.insert(v, rx);
    }
    let (info, info_rx) = watch::channel(NodeInfo { id: cfg.id, rejoining: cfg.rejoin, ..NodeInfo::default() });
    let incarnation = this_run();
    let rejoining = cfg.rejoin;
    let tick = cfg.tick;
    let task = NodeTask {
        cfg,
        raw,
        fsm,
        senders,
        inbox,
        requests,
        views,
        view_current: false,
        views_dirty: false,
        info,
        pending: HashMap::new(),
        incarnation,
        next_request: 0,
        expiry: BTreeMap::new(),
        ticks: TickClock::new(tick, Instant::now()),
        wake_at: Instant::now(),
        turn_started: Instant::now(),
        stamps_next_try: None,
        election_range,
        rejoining,
        ticks_rejoining: 0,
        last_leadership_transfer: None,
        parked: Vec::new(),
        batch_due: false,
        refusals,
        ahead: Arc::default(),
    };
    let mut task = task;
    task.ensure_timers();
    Ok((task, view_rxs, info_rx))
}

/// The node's two wake-ups, kept by the kernel (`kernel_timer`): tokio's wheel woke it twice for
/// each tick more than 64 ms away.
struct NodeTimers {
    tick: KernelTimer,
    expiry: KernelTimer,
}

impl NodeTimers {
    fn new() -> std::io::Result<NodeTimers> {
        Ok(NodeTimers { tick: KernelTimer::new()?, expiry: KernelTimer::new()? })
    }

    /// Arms the tick timer, and the expiry timer when the leader's is running (else disarms it).
    fn arm(&mut self, (tick_due, expiry): (Instant, Option<Instant>)) -> std::io::Result<()> {
        match expiry {
            Some(at) => self.expiry.arm(at.into())?,
            None => self.expiry.disarm()?,
        }
        self.tick.arm(tick_due.into())
    }
}

impl NodeTask {
    /// Runs until `shutdown` is cancelled or its storage or timers fail.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut timers = match NodeTimers::new() {
            Ok(t) => t,
            Err(e) => return self.timer_failed(&e),
        };
        loop {
            // Also before the first wake, and after the second `handle_ready` of a turn, which
            // may apply a move of the lease.
            self.order_election();
            if let Err(e) = timers.arm(self.next_wake()) {
                return self.timer_failed(&e);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                fired = timers.tick.fired() => match fired {
                    Ok(()) => self.note_turn(),
                    Err(e) => return self.timer_failed(&e),
                },
                fired = timers.expiry.fired() => match fired {
                    Ok(()) => {
                        self.note_turn();
                        self.check_expiry();
                    }
                    Err(e) => return self.timer_failed(&e),
                },
                Some(inbound) = self.inbox.recv() => {
                    self.note_turn();
                    // Refreshes that arrived together (the holders' beat) are judged in one
                    // turn, each against the same state; whatever else comes ends the run, so
                    // no refresh is judged after a raft message but before its entries apply.
                    // At most `MAX_REFRESH_RUN`, so a flood of refreshes cannot hold off ticks.
                    let mut next = Some(inbound);
                    let mut run = 0;
                    while let Some(inbound) = next.take() {
                        run += 1;
                        if !self.on_inbound(inbound) || run >= MAX_REFRESH_RUN {
                            break;
                        }
                        next = self.inbox.try_recv().ok();
                    }
                }
                Some(req) = self.requests.recv() => {
                    self.note_turn();
                    self.on_request(req);
                    // Whatever else is queued joins this turn: one proposal pass for all.
                    while let Ok(more) = self.requests.try_recv() {
                        self.on_request(more);
                    }
                    self.flush_parked();
                }
            }
            if let Err(e) = self.handle_ready() {
                return self.storage_failed(&e);
            }
            self.flush_parked();
            // A member that became leader in this turn starts its expiry wait now, and starts
            // refresh stamps at once if its state keeps none: right behind its first entry,
            // before any request it takes as leader.
            self.observe_role();
            self.start_refresh_stamps();
            if let Err(e) = self.handle_ready() {
                return self.storage_failed(&e);
            }
            self.publish_views_if_due();
            self.publish_info();
            self.batch_due = false;
        }
        // Shut down: what is still queued is never sent, and its signer hears so now rather
        // than waiting out its deadline.
        drop(self.ahead.take());
    }

    fn storage_failed(&mut self, e: &StoreError) {
        tracing::error!(error = %e, "raft storage failed; this member stops taking part in the quorum");
        self.fail(format!("the raft node stopped: its storage failed: {e}"));
    }

    fn timer_failed(&mut self, e: &std::io::Error) {
        tracing::error!(error = %e, "the raft node's timer (a timerfd) failed; this member stops taking part in the quorum");
        self.fail(format!("the raft node stopped: its timer (a timerfd) failed: {e}"));
    }

    fn fail(&mut self, why: String) {
        for Parked { reply, .. } in self.parked.drain(..) {
            let _ = reply.send(Err(CoordError::Unavailable(why.clone())));
        }
        for (_, Pending { reply, .. }) in self.pending.drain() {
            reply.send(Err(CoordError::Unavailable(why.clone())));
        }
        self.info.send_modify(|i| i.failed = Some(why));
        // Refuse every later request too; queued reservations hear that they were not sent.
        self.requests.close();
        drop(self.ahead.take());
    }

    /// Applies `n` ticks (see [`TickClock`]) and what is checked once per tick.
    fn on_ticks(&mut self, n: u32) {
        if self.rejoining {
            let before = self.ticks_rejoining;
            self.ticks_rejoining += u64::from(n);
            // Announce about once a second (every ten ticks, the first at once) until a leader
            // has replicated everything to us.
            if before / 10 != self.ticks_rejoining / 10 || before == 0 {
                let senders = Arc::clone(&self.senders);
                let me = self.cfg.id;
                tokio::spawn(async move { senders.announce_rejoin(me, Duration::from_millis(500)).await });
            }
        } else {
            for _ in 0..n {
                self.raw.tick();
            }
        }
        self.pending.retain(|_, p| !p.reply.is_closed());
        self.repropose_stranded();
        self.parked.retain(|p| !p.reply.is_closed());
        self.take_queued_ahead();
        self.batch_due = true;
        self.flush_parked();
        self.check_expiry();
        self.start_refresh_stamps();
        self.shed_leadership();
    }

    /// The raft leader should not be the lease holder: if one process held both, losing it
    /// would cost an election *and* a full TTL + margin before anyone could take over. So a
    /// leader that holds the lease hands raft leadership to a caught-up peer, a witness first.
    fn shed_leadership(&mut self) {
        if self.raw.raft.state != StateRole::Leader || self.raw.raft.lead_transferee.is_some() {
            return;
        }
        if !self.holds_lease() {
            return;
        }
        let election = self.cfg.tick * self.cfg.election_ticks as u32;
        if self.last_leadership_transfer.is_some_and(|at| at.elapsed() < election) {
            return;
        }
        // A fully caught-up peer first, a witness before a producer; else one a few entries
        // behind: raft-rs sends the transferee what it lacks before it tells it to campaign (and
        // drops new proposals meanwhile; this node parks and retries its own). Requiring a
        // fully caught-up peer starved the hand-over under a signer's steady renews and
        // reservations across a WAN (an append is nearly always in flight), and a holder frozen
        // with raft leadership is expired only after an election and the new leader's grace.
        let last = self.raw.raft.raft_log.last_index();
        let prs = self.raw.raft.prs();
        // With several validators, producers may hold leases of their own: raft leadership goes
        // only to a member that holds none, or it would pass back and forth between holders.
        let holders: std::collections::BTreeSet<u64> = self
            .fsm
            .scopes()
            .filter_map(|(_, s)| s.holder.as_ref().and_then(|h| self.cfg.ids.get(h)).copied())
            .collect();
        let within = |id: &u64, lag: u64| {
            *id != self.cfg.id
                && !holders.contains(id)
                && prs.get(*id).is_some_and(|p| p.recent_active && p.matched.saturating_add(lag) >= last)
        };
        let witnesses = &self.cfg.witnesses;
        let target = [0, TRANSFER_LAG].into_iter().find_map(|lag| {
            witnesses
                .iter()
                .copied()
                .find(|id| within(id, lag))
                .or_else(|| self.cfg.ids.values().copied().find(|id| within(id, lag)))
        });
        if let Some(to) = target {
            tracing::info!(to, "this member holds the lease: handing raft leadership to a peer");
            self.last_leadership_transfer = Some(Instant::now());
            self.raw.transfer_leader(to);
        }
    }

    fn on_message(&mut self, mut m: Message) {
        if m.get_msg_type() == MessageType::MsgSnapshot && !self.snapshot_acceptable(&m) {
            return;
        }
        if m.get_msg_type() == MessageType::MsgHeartbeat {
            let last = self.raw.raft.raft_log.last_index();
            if m.commit > last {
                // The leader only sends a commit up to what we acknowledged as persisted, so
                // this member lost its disk. Stop voting until it has everything again, and
                // never let raft commit past the entries it actually has.
                if !self.rejoining {
                    tracing::error!(
                        leader_commit = m.commit,
                        last_index = last,
                        "this member acknowledged entries it no longer has (lost or replaced disk); \
                         rejoining: no votes until it has caught up"
                    );
                    self.rejoining = true;
                    self.ticks_rejoining = 0;
                }
                m.commit = last;
            }
        }
        if self.rejoining && matches!(m.get_msg_type(), MessageType::MsgRequestVote | MessageType::MsgRequestPreVote) {
            return;
        }
        if let Err(e) = self.raw.step(m) {
            tracing::debug!(error = %e, "raft ignored a message");
        }
    }

    /// Whether the snapshot `m` carries may reach raft (see `snapshot_check`). A refused one is
    /// dropped before raft sees it, so nothing is persisted and this member keeps its log; the
    /// leader, if it is a real one, keeps replicating.
    fn snapshot_acceptable(&self, m: &Message) -> bool {
        let voters = self.cfg.ids.values().copied().collect();
        let members = self.cfg.ids.keys().cloned().collect();
        match check_snapshot(m.get_snapshot(), &voters, &members) {
            Ok(_) => true,
            Err(why) => {
                let what = format!(
                    "a snapshot from raft id {} (index {}, term {}) was not installed: {why}",
                    m.from,
                    m.get_snapshot().get_metadata().index,
                    m.get_snapshot().get_metadata().term
                );
                self.refusals.record(Refusal::Snapshot, Source::RaftId(m.from), &what);
                false
            }
        }
    }

    /// A member lost its disk: as leader, forget what it had matched and replicate from scratch
    /// (entries, or the snapshot if they were compacted). Lowering `matched` only makes commit
    /// decisions more conservative.
    fn on_rejoined(&mut self, id: u64) {
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        if let Some(pr) = self.raw.raft.mut_prs().get_mut(id)
            && pr.matched > 0
        {
            tracing::info!(raft_id = id, matched = pr.matched, "member rejoined with an empty log; replicating again");
            pr.matched = 0;
            pr.next_idx = 1;
            pr.become_probe();
        }
    }

    /// Handles one message from the peer service; true when it was a refresh.
    fn on_inbound(&mut self, inbound: Inbound) -> bool {
        match inbound {
            Inbound::Raft(messages) => {
                for m in messages {
                    self.on_message(m);
                }
                false
            }
            Inbound::Rejoined(id) => {
                self.on_rejoined(id);
                false
            }
            Inbound::Refresh { ask, reply } => {
                let _ = reply.send(self.on_refresh(&ask));
                true
            }
            Inbound::Refreshes { asks, reply } => {
                let _ = reply.send(asks.iter().map(|ask| self.on_refresh(ask)).collect());
                true
            }
        }
    }

    /// The queue of reservations ahead this node takes at each tick (shared with its handles).
    pub fn ahead_queue(&self) -> Arc<AheadQueue> {
        Arc::clone(&self.ahead)
    }

    /// The reservations ahead queued since the last tick join the parked requests, to leave in
    /// this tick's batch; a small task hands each its answer, or its timeout at its deadline.
    /// The tasks start inside the runtime, so they wake nothing.
    fn take_queued_ahead(&mut self) {
        for QueuedAhead { cmd, deadline, answer } in self.ahead.take() {
            let (reply, answered) = oneshot::channel();
            self.parked.push(Parked { cmd, reply, gathered: true });
            tokio::spawn(async move {
                let result = match tokio::time::timeout_at(deadline, answered).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(CoordError::Unavailable("the raft node stopped".into())),
                    Err(_) => Err(CoordError::Timeout { operation: "reserve" }),
                };
                answer(result);
            });
        }
    }

    fn on_request(&mut self, req: Request) {
        match req {
            // Proposed when the turn's requests are all in (`run`).
            Request::Propose { cmd, reply, ahead } => {
                let gathered = gathers(&cmd, ahead);
                self.parked.push(Parked { cmd, reply, gathered });
            }
            Request::Refresh { ask, reply } => {
                let _ = reply.send(self.on_refresh(&ask));
            }
            Request::Panic => panic!("test hook: a panic inside the raft task"),
        }
    }

    /// A lease refresh outside the log ([`refresh`]): accepted, it restarts the expiry timer as
    /// an applied renew would, and nothing is proposed.
    fn on_refresh(&mut self, ask: &RefreshAsk) -> Result<(), RefreshRefusal> {
        self.observe_role();
        let r = &self.raw.raft;
        let applied = r.raft_log.applied;
        let scope = self.fsm.scope(&ask.validator);
        let holding = holding_of(&scope);
        let timer = self.expiry.get(&ask.validator);
        let view = LeaderView {
            leads: r.state == StateRole::Leader,
            term_applied: r.raft_log.term(applied).is_ok_and(|t| t == r.term),
            holder: scope.holder.as_ref(),
            epoch: scope.epoch,
            declared_ttl_ms: scope.lease_ttl_ms,
            expire_in_flight: holding.zip(timer).is_some_and(|(h, t)| t.expire_in_flight(h)),
        };
        refresh::check(ask, &view)?;
        let now = Instant::now();
        // A holding the check accepted has state, and every validator with state has a timer.
        if let Some(timer) = self.expiry.get_mut(&ask.validator) {
            timer.refreshed(now);
        }
        self.beat_with_refresh(now);
        Ok(())
    }

    /// A heartbeat due at the next tick leaves with this refresh's answer instead
    /// ([`TickClock::take_next_early`]): the holder hears both at once, and this leader's timer
    /// does not wake it for the heartbeat alone. Only a leader with no per-tick work and no
    /// quorum check due at that tick: the tick is applied as it would be then, a little ahead
    /// of the grid, and the grid tick applies nothing when it comes.
    fn beat_with_refresh(&mut self, now: Instant) {
        let r = &self.raw.raft;
        let leads = r.state == StateRole::Leader;
        let beat_next = r.heartbeat_elapsed() + 1 >= r.heartbeat_timeout();
        let check_next = r.election_elapsed + 1 >= r.election_timeout();
        if leads && beat_next && !check_next && !self.busy() && self.ticks.take_next_early(now) {
            self.on_ticks(1);
        }
    }

    /// Proposes the requests that wait for a leader. While no leader is known, or raft drops a
    /// proposal because leadership is moving, they stay parked; their callers' deadlines bound
    /// the wait (a caller that gave up closes its channel and the request is dropped).
    ///
    /// With two validators or more besides the default one, scoped renews, checkpoints and
    /// reservations ahead wait for the next raft tick (at most one tick, 100 ms by default) and
    /// then leave together in one `Batch` entry: every validator's loop renews and checkpoints
    /// once a renew interval, and a signer reserves its next window every other height, each
    /// at its own moment; without the wait each would be an entry of its own — a commit, an
    /// fsync on every member and a message to each follower, fifty times a second at fifty
    /// validators. The wait is safe: a renew's validity counts from when its caller sent it,
    /// before the wait, so the holder's deadline only comes sooner than the leader's; a
    /// checkpoint records a height already signed, a tick later; a reservation ahead is asked
    /// while the window still covers the next heights, its heights are signed only once it
    /// committed, and the window's lead counts the wait in its measured latency.
    fn flush_parked(&mut self) {
        if self.parked.is_empty() || self.raw.raft.leader_id == raft::INVALID_ID {
            return;
        }
        let parked = std::mem::take(&mut self.parked);
        let (batched, others): (Vec<_>, Vec<_>) =
            parked.into_iter().filter(|p| !p.reply.is_closed()).partition(|p| p.gathered);
        let mut proposals: Vec<(Command, Answer)> = others.into_iter().map(|p| (p.cmd, Answer::One(p.reply))).collect();
        let gathers = serves_several(self.cfg.validators.len());
        if gathers && !self.batch_due && batched.len() < MAX_BATCH {
            self.parked = batched;
        } else if batched.len() == 1 {
            proposals.extend(batched.into_iter().map(|p| (p.cmd, Answer::One(p.reply))));
        } else {
            let mut batched = batched.into_iter().peekable();
            while batched.peek().is_some() {
                let (commands, replies): (Vec<_>, Vec<_>) =
                    batched.by_ref().take(MAX_BATCH).map(|p| (p.cmd, p.reply)).unzip();
                proposals.push((Command::Batch { commands }, Answer::Each(replies)));
            }
        }
        for (cmd, reply) in proposals {
            let id = self.next_request;
            self.next_request += 1;
            match self.propose_as(id, cmd.clone()) {
                Ok(()) => {
                    let leader = self.raw.raft.leader_id;
                    self.pending.insert(id, Pending { reply, cmd, leader, at: Instant::now() });
                }
                Err(_) => self.park_again(cmd, reply),
            }
        }
    }

    /// Parks a proposal raft dropped, its batch taken apart again.
    fn park_again(&mut self, cmd: Command, reply: Answer) {
        match (cmd, reply) {
            (Command::Batch { commands }, Answer::Each(replies)) => self
                .parked
                .extend(commands.into_iter().zip(replies).map(|(cmd, reply)| Parked { cmd, reply, gathered: true })),
            (cmd, Answer::One(reply)) => {
                // Proposed alone before: it has had its wait, and leaves at once again.
                self.parked.push(Parked { cmd, reply, gathered: false })
            }
            // Never made: a batch always has one answer per command, anything else one answer.
            (_, answer) => answer.send(Err(CoordError::Unavailable("raft dropped the proposal; retry".into()))),
        }
    }

    fn propose(&mut self, cmd: Command) -> Result<u64, CoordError> {
        let id = self.next_request;
        self.next_request += 1;
        self.propose_as(id, cmd)?;
        Ok(id)
    }

    fn propose_as(&mut self, id: u64, cmd: Command) -> Result<(), CoordError> {
        let entry = LogEntry { origin: self.cfg.id, incarnation: self.incarnation, request: id, cmd };
        let data = serde_json::to_vec(&entry).map_err(|e| CoordError::Invalid(e.to_string()))?;
        self.raw
            .propose(vec![], data)
            .map_err(|e| CoordError::Unavailable(format!("raft dropped the proposal ({e}); retry")))
    }

    /// Proposes again what was sent to a former leader, or has waited longer than an election
    /// timeout. A duplicate that does get applied is harmless: only the first application
    /// answers the caller, and every command is refused or a no-op when repeated (a repeated
    /// acquire finds the lease held; a lease this member did not ask for is released by it).
    fn repropose_stranded(&mut self) {
        let leader = self.raw.raft.leader_id;
        if leader == raft::INVALID_ID {
            return;
        }
        let patience = self.cfg.tick * self.cfg.election_ticks as u32;
        let stranded: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.leader != leader || p.at.elapsed() >= patience)
            .map(|(id, _)| *id)
            .collect();
        for id in stranded {
            let Some(cmd) = self.pending.get(&id).map(|p| p.cmd.clone()) else { continue };
            if self.propose_as(id, cmd).is_ok()
                && let Some(p) = self.pending.get_mut(&id)
            {
                p.leader = leader;
                p.at = Instant::now();
            }
        }
    }

    /// Starts a turn: applies the ticks that passed, before whatever woke the task. A turn that
    /// starts well after its planned wake ends a stall (an fsync, a starved runtime, a frozen
    /// process), from which the expiry timer starts again: a leader that could not hear renews
    /// while it stalled does not count that time against the holder.
    fn note_turn(&mut self) {
        let now = Instant::now();
        self.turn_started = now;
        let caught = self.ticks.catch_up(now, self.wake_at);
        if caught.stalled {
            self.expiry.values_mut().for_each(|t| t.stall_ended(now));
        }
        if caught.ticks > 0 {
            self.on_ticks(caught.ticks);
        }
    }

    /// When the task wakes next without a message or request: at its next due tick, or when the
    /// leader's expiry timer is due. Recorded, so the next turn can tell a stall; never before
    /// the turn that planned it started (a timer already due then is not late, but a turn that
    /// took long — an fsync — is a stall).
    ///
    /// Within the leader's watch span a tick after the last turn, off the grid
    /// ([`TickClock::plan_after_turn`]): the holder's refreshes are turns, so while they come a
    /// tick apart the tick timer does not fire between them.
    fn next_wake(&mut self) -> (Instant, Option<Instant>) {
        // Once a turn: it walks every validator's timer.
        let expiry = self.expiry_due();
        let ticks = self.ticks_until(expiry);
        if ticks == 1 && self.watching(expiry) {
            self.ticks.plan_after_turn(self.turn_started);
        } else {
            self.ticks.plan(ticks);
        }
        let expected = self.ticks.expected();
        self.wake_at = expiry.map_or(expected, |at| at.min(expected)).max(self.turn_started);
        (self.ticks.due(), expiry)
    }

    /// Ticks until one changes something: a follower's until its election timeout passes, a
    /// leader's until its next heartbeat or quorum check. Every tick while the per-tick checks
    /// have work: proposals in flight or parked, a campaign, a rejoin, a leader that holds the
    /// lease itself (it hands raft leadership on) or has refresh stamps to start.
    ///
    /// While the leader's expiry timer runs (a lease is held), every tick also for the last
    /// [`TickClock::watch_span`] before it is due, waking no later than the start of that span: a turn every
    /// tick is what lets it tell its own stall of more than two ticks from a quiet sleep
    /// (`note_turn`), so that renews it could not hear meanwhile do not count against the holder.
    /// A stall that overruns a longer sleep without being noticed ends at least 90 ms before the
    /// timer is due — the time the transport has to hand over the renews that queued up (as
    /// with a turn every tick, nothing orders them before the timer).
    #[cfg(test)]
    fn ticks_until_due(&self) -> u32 {
        self.ticks_until(self.expiry_due())
    }

    /// [`Self::ticks_until_due`] with the expiry timers' first due instant, `expiry`.
    fn ticks_until(&self, expiry: Option<Instant>) -> u32 {
        if self.busy() {
            return 1;
        }
        let ticks = self.raft_ticks();
        if self.raw.raft.state != StateRole::Leader || !self.fsm.scopes().any(|(_, s)| s.holder.is_some()) {
            return ticks;
        }
        // No due instant to count back from (the timer is not running for this holding, or its
        // due instant lies closer to the clock's origin than the watch span): every tick.
        self.watch_from(expiry).map_or(1, |at| ticks.min(self.ticks.ticks_until(at)))
    }

    /// Grid ticks until raft's own clock changes something: a follower's election timeout, a
    /// leader's next heartbeat or quorum check (one more while a tick is owed, see
    /// [`TickClock::owed`]).
    fn raft_ticks(&self) -> u32 {
        let r = &self.raw.raft;
        let left = |timeout: usize, elapsed: usize| timeout.saturating_sub(elapsed).max(1);
        let ticks = if r.state == StateRole::Leader {
            left(r.heartbeat_timeout(), r.heartbeat_elapsed()).min(left(r.election_timeout(), r.election_elapsed))
        } else {
            left(r.randomized_election_timeout(), r.election_elapsed)
        };
        // On the grid: a tick raft got early is one the next grid tick does not apply.
        u32::try_from(ticks).unwrap_or(u32::MAX).saturating_add(self.ticks.owed())
    }

    /// Whether the per-tick checks have work: proposals in flight or parked, a campaign, a
    /// rejoin, a leader that holds the lease itself or has refresh stamps to start.
    fn busy(&self) -> bool {
        let r = &self.raw.raft;
        let leads = r.state == StateRole::Leader;
        self.rejoining
            || !self.pending.is_empty()
            || !self.parked.is_empty()
            || !(leads || r.state == StateRole::Follower)
            || (leads && (self.holds_lease() || r.lead_transferee.is_some() || self.fsm.default.refreshes.is_none()))
            // A signer's reservation ahead may be queued at any moment, and queuing wakes
            // nothing: a member holding leases takes every tick, where the queue is emptied.
            || (self.ahead.used() && self.holds_lease())
    }

    /// Where the leader's watch span starts: the watch span before its first expiry timer is
    /// due (`expiry`).
    fn watch_from(&self, expiry: Option<Instant>) -> Option<Instant> {
        expiry.and_then(|due| due.checked_sub(self.ticks.watch_span()))
    }

    /// Whether only the watch span keeps the leader at a turn a tick: it leads, nothing else
    /// needs a tick (no per-tick work, no heartbeat or quorum check due at the next one), and
    /// the watch span has begun (within a tick).
    fn watching(&self, expiry: Option<Instant>) -> bool {
        let leads = self.raw.raft.state == StateRole::Leader;
        leads
            && !self.busy()
            && self.raft_ticks() > 1
            && self.watch_from(expiry).is_some_and(|at| self.ticks.ticks_until(at) <= 1)
    }

    /// Sets this member's election timeout by [`election_order`]: the lease holder campaigns
    /// first when the leader is lost. Called before every wake is planned, so a timeout raft drew
    /// anew in a turn (a new term, a new role) is set before the node sleeps on it. Raft's draw
    /// stands when no lease is held (nobody needs a leader first) and when the holder leads raft
    /// (if it is lost, no member has a holder to wait for: delaying the others would only delay
    /// the election).
    fn order_election(&mut self) {
        let holder = self.holder_id();
        let r = &self.raw.raft;
        if r.state == StateRole::Leader || holder.is_none_or(|id| id == r.leader_id) {
            return;
        }
        let drawn = self.raw.raft.randomized_election_timeout();
        let timeout = election_order::election_timeout(drawn, self.election_range, holder == Some(self.cfg.id));
        if timeout != drawn {
            self.raw.raft.set_randomized_election_timeout(timeout);
        }
    }

    /// The raft id of the member that should campaign first: the default validator's lease
    /// holder, or, when nobody holds that lease, the holder of the first validator's lease that
    /// is held (with many validators the holders differ; one of them is enough to keep the
    /// lease holder and the raft leader apart, and the order is the same on every member).
    fn holder_id(&self) -> Option<u64> {
        let holder = self.fsm.scopes().find_map(|(_, s)| s.holder.clone())?;
        self.cfg.ids.get(&holder).copied()
    }

    /// Whether this member holds any validator's lease, as it applied them.
    fn holds_lease(&self) -> bool {
        let me = self.cfg.ids.iter().find(|(_, id)| **id == self.cfg.id).map(|(m, _)| m);
        me.is_some_and(|me| self.fsm.scopes().any(|(_, s)| s.holder.as_ref() == Some(me)))
    }

    /// Tells the expiry timers whether this member leads, and in which term: called after every
    /// turn, so a member that became leader in it starts its wait from then.
    fn observe_role(&mut self) {
        let r = &self.raw.raft;
        let term = (r.state == StateRole::Leader).then_some(r.term);
        let now = Instant::now();
        self.expiry.values_mut().for_each(|t| t.observe_role(term, now));
    }

    /// Gives every validator with state an expiry timer: called after its state changed. A timer
    /// made while this member leads starts the new leader's wait from now, which only delays
    /// an expiry.
    fn ensure_timers(&mut self) {
        let r = &self.raw.raft;
        let term = (r.state == StateRole::Leader).then_some(r.term);
        let election = self.cfg.tick * self.cfg.election_ticks as u32;
        let now = Instant::now();
        for (v, _) in self.fsm.scopes() {
            if !self.expiry.contains_key(v) {
                let mut timer = ExpiryTimer::new(self.cfg.tick, election, self.cfg.undeclared_ttl);
                timer.observe_role(term, now);
                self.expiry.insert(v.clone(), timer);
            }
        }
    }

    /// When the leader's first expiry timer is due, if this member leads and a lease is held.
    fn expiry_due(&self) -> Option<Instant> {
        self.fsm.scopes().filter_map(|(v, s)| self.expiry.get(v).and_then(|t| t.due(holding_of(s)))).min()
    }

    /// The leader's expiry timers (docs/design.md §4), one per validator's lease. A proposal
    /// raft drops (a leadership transfer under way) is tried again a tick later
    /// ([`ExpiryTimer::due`]), never at once.
    fn check_expiry(&mut self) {
        let now = Instant::now();
        self.observe_role();
        let due: Vec<(ValidatorId, TimedHolding, Command)> = self
            .fsm
            .scopes()
            .filter_map(|(v, s)| {
                let holding = holding_of(s)?;
                let at = self.expiry.get(v)?.due(Some(holding))?;
                (at <= now).then(|| (v.clone(), holding, scoped(v, s.expire_command())))
            })
            .collect();
        for (v, holding, cmd) in due {
            let accepted = match self.propose(cmd) {
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!(error = %e, validator = %v, epoch = %holding.epoch, "raft dropped the lease expiry proposal; trying again next tick");
                    false
                }
            };
            if let Some(timer) = self.expiry.get_mut(&v) {
                timer.proposed(holding, now, accepted);
            }
        }
    }

    /// The leader turns refresh stamps on once, when the applied state keeps none (restored from
    /// a snapshot of an earlier version, or a new cluster): one command, so every member starts
    /// counting at the same log index. Asked again after an election timeout if it did not apply,
    /// or at the next tick if raft dropped it.
    fn start_refresh_stamps(&mut self) {
        if self.raw.raft.state != StateRole::Leader || self.fsm.default.refreshes.is_some() {
            self.stamps_next_try = None;
            return;
        }
        let now = Instant::now();
        if self.stamps_next_try.is_some_and(|at| now < at) {
            return;
        }
        let wait = match self.propose(Command::StartRefreshStamps) {
            Ok(_) => self.cfg.tick * self.cfg.election_ticks as u32,
            Err(e) => {
                tracing::debug!(error = %e, "raft dropped the proposal to start refresh stamps; trying again next tick");
                self.cfg.tick
            }
        };
        self.stamps_next_try = Some(now + wait);
    }

    fn handle_ready(&mut self) -> Result<(), StoreError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        let early = rd.take_messages();
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            // Decoded before it is persisted: a state that does not decode must never reach the
            // disk, or this member could not start again (`snapshot_acceptable` refuses it first).
            let fsm: ClusterState = serde_json::from_slice(&snap.data).map_err(|e| StoreError::Corrupt {
                path: self.raw.store().path().to_path_buf(),
                detail: format!("snapshot from the leader does not decode: {e}"),
            })?;
            self.raw.mut_store().apply_snapshot(&snap)?;
            self.fsm = fsm;
            self.ensure_timers();
            self.views_dirty = true;
        }
        // A leader's messages may leave before its own entries are on disk (raft-rs: `messages`
        // as opposed to `persisted_messages`): its own copy counts towards the quorum only once
        // persisted, so its fsync and the followers' run side by side.
        self.senders.send(early);
        let committed = rd.take_committed_entries();
        self.raw.mut_store().persist(rd.entries(), rd.hs())?;
        self.apply(committed);
        self.senders.send(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        self.senders.send(light.take_messages());
        self.apply(light.take_committed_entries());
        self.raw.advance_apply();
        self.maybe_compact()?;
        if self.rejoining {
            let log = &self.raw.raft.raft_log;
            if self.raw.raft.leader_id != raft::INVALID_ID && log.committed > 0 && log.applied >= log.committed {
                tracing::info!(term = self.raw.raft.term, "caught up with the leader; taking part in elections again");
                self.rejoining = false;
            }
        }
        Ok(())
    }

    fn apply(&mut self, entries: Vec<raft::eraftpb::Entry>) {
        if entries.is_empty() {
            return;
        }
        let before = self.fsm.clone();
        for e in entries {
            if e.data.is_empty() || e.get_entry_type() != EntryType::EntryNormal {
                continue;
            }
            let entry: LogEntry = match serde_json::from_slice(&e.data) {
                Ok(entry) => entry,
                Err(err) => {
                    // Every member skips the same bytes, so the state stays identical.
                    tracing::error!(index = e.index, error = %err, "skipping a log entry that does not decode");
                    continue;
                }
            };
            let applied = self.fsm.apply(&entry.cmd);
            self.ensure_timers();
            for v in &applied.refreshed {
                if let Some(timer) = self.expiry.get_mut(v) {
                    timer.refreshed(Instant::now());
                }
            }
            let result = applied.result;
            if entry.origin == self.cfg.id
                && entry.incarnation == self.incarnation
                && let Some(p) = self.pending.remove(&entry.request)
            {
                p.reply.send(result);
            }
        }
        if before != self.fsm {
            self.views_dirty = true;
        }
    }

    fn maybe_compact(&mut self) -> Result<(), StoreError> {
        let applied = self.raw.raft.raft_log.applied;
        let persisted = self.raw.raft.raft_log.persisted;
        let index = applied.min(persisted);
        if index < self.raw.store().snapshot_index() + self.cfg.snapshot_every {
            return Ok(());
        }
        let data = serde_json::to_vec(&self.fsm).map_err(|e| StoreError::Write {
            path: self.raw.store().path().to_path_buf(),
            detail: format!("cannot encode the state machine: {e}"),
        })?;
        self.raw.mut_store().compact(index, data)
    }

    /// Whether this node's state machine is the log's as the cluster has it
    /// ([`StoreView::current`]): it follows a known leader (or leads), an entry of the current
    /// term has committed (so the commit index it knows is the leader's, not a predecessor's it
    /// has not caught up with), it has applied everything it knows to be committed, and it is not
    /// rejoining.
    fn is_current(&self) -> bool {
        let r = &self.raw.raft;
        let log = &r.raft_log;
        r.leader_id != raft::INVALID_ID
            && log.term(log.committed).is_ok_and(|t| t == r.term)
            && log.applied >= log.committed
            && !self.rejoining
    }

    /// Publishes the views once per turn of the node, after its last `handle_ready`: when the
    /// state machine changed in it, or [`Self::is_current`] changed (a leader found or lost).
    /// Never from inside `apply`: there raft has raised the commit index before the applied one,
    /// and a view sent then would read "not current" and wake every validator's loop twice.
    fn publish_views_if_due(&mut self) {
        if self.views_dirty || self.is_current() != self.view_current {
            self.publish_view();
        }
    }

    /// Each watched validator's lease and intents, to those that changed.
    fn publish_view(&mut self) {
        let current = self.is_current();
        self.view_current = current;
        self.views_dirty = false;
        for (validator, tx) in &self.views {
            let scope = self.fsm.scope(validator);
            let view = StoreView { lease: scope.lease(), intents: scope.intents(), current };
            tx.send_if_modified(|v| {
                let changed = *v != view;
                *v = view;
                changed
            });
        }
    }

    fn publish_info(&self) {
        let r = &self.raw.raft;
        let info = NodeInfo {
            id: self.cfg.id,
            leader: (r.leader_id != raft::INVALID_ID).then_some(r.leader_id),
            is_leader: r.state == StateRole::Leader,
            term: r.term,
            commit: r.raft_log.committed,
            applied: r.raft_log.applied,
            rejoining: self.rejoining,
            failed: None,
        };
        self.info.send_if_modified(|i| {
            let changed = *i != info;
            *i = info;
            changed
        });
    }
}

/// Whether a member serving `others` validators besides the default one shares its work among
/// them: scoped renews, checkpoints and reservations ahead wait for the tick and batch, statuses
/// wait to share a write, refreshes leave on a beat. With one other there is nothing to share.
pub fn serves_several(others: usize) -> bool {
    others > 1
}

/// A request waiting for a leader, or for the next tick.
struct Parked {
    cmd: Command,
    reply: oneshot::Sender<Result<Reply, CoordError>>,
    /// It waits for the next tick and leaves in a `Batch` ([`gathers`]).
    gathered: bool,
}

/// Whether `cmd` (`ahead`: a reservation nobody waits on yet) is what `flush_parked` holds for
/// the next tick and batches: a renew, a checkpoint or a reservation ahead of a validator other
/// than the default one. A reservation a signature waits for leaves at once. The default
/// validator's commands always leave at once and alone, as before: a member of an earlier
/// version cannot decode a `Batch` and would skip it, and a single-validator cluster may be in
/// a rolling upgrade. Scoped commands exist only once every member knows `[[validators]]`.
fn gathers(cmd: &Command, ahead: bool) -> bool {
    matches!(cmd, Command::Scoped { command, .. }
        if matches!(command.as_ref(), Command::Renew { .. } | Command::Checkpoint { .. })
            || ahead && matches!(command.as_ref(), Command::Reserve { .. }))
}

/// The holding a validator's expiry timer runs for, as this member applied it.
fn holding_of(state: &FsmState) -> Option<TimedHolding> {
    state.holder.as_ref()?;
    Some(TimedHolding {
        epoch: state.epoch,
        refreshes: state.refreshes,
        declared_ttl: state.lease_ttl_ms.map(Duration::from_millis),
    })
}

/// `cmd` addressed to `validator`'s state: unscoped for the default validator, as every
/// version before `[[validators]]` wrote it.
pub fn scoped(validator: &ValidatorId, cmd: Command) -> Command {
    if validator.is_default() { cmd } else { Command::Scoped { validator: validator.clone(), command: Box::new(cmd) } }
}

/// Forwards raft-rs's slog records to tracing at debug level.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        tracing::debug!(target: "raft", "{}", record.msg());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::coord::raft::transport::Gathering;
    use crate::coord::raft::transport::LinkFilter;
    use crate::domain::{Epoch, LeaseView, MemberId};

    const TICK: Duration = Duration::from_millis(20);

    impl NodeTask {
        /// The default validator's expiry timer, which every node has.
        fn default_timer(&mut self) -> &mut ExpiryTimer {
            self.expiry.get_mut(&ValidatorId::default_validator()).expect("the default validator's timer")
        }
    }

    // Only another validator's renews, checkpoints and reservations ahead wait for the tick and
    // batch: the default validator's leave at once as plain entries (a member of an earlier
    // version cannot decode a batch), and a reservation a signature waits on never waits.
    #[test]
    fn only_renews_checkpoints_and_reservations_ahead_of_scoped_validators_wait_for_the_tick() {
        let osmo = ValidatorId::new("osmo").expect("id");
        let key = crate::domain::KeyId::new("k").expect("id");
        let renew =
            Command::Renew { member: MemberId::new("a").expect("id"), epoch: Epoch::new(3), ttl_ms: Some(3000) };
        let checkpoint = Command::Checkpoint { epoch: Epoch::new(3), key: key.clone(), height: 9 };
        let reserve = Command::Reserve { epoch: Epoch::new(3), key, hrs: crate::domain::Hrs::end_of_height(9) };
        let release =
            Command::Release { member: MemberId::new("a").expect("id"), epoch: Epoch::new(3), final_watermark: None };
        assert!(gathers(&scoped(&osmo, renew.clone()), false));
        assert!(gathers(&scoped(&osmo, checkpoint.clone()), false));
        assert!(gathers(&scoped(&osmo, reserve.clone()), true), "a reservation ahead");
        assert!(!gathers(&renew, false), "the default validator's renew");
        assert!(!gathers(&checkpoint, false), "the default validator's checkpoint");
        assert!(!gathers(&reserve, true), "the default validator's reservation ahead");
        assert!(!gathers(&scoped(&osmo, reserve), false), "a reservation a signature waits on");
        assert!(!gathers(&scoped(&osmo, release.clone()), true), "a release, even marked ahead");
        assert!(!gathers(&scoped(&osmo, release), false), "a release");
    }

    /// A one-member node on a real raft-engine directory, not running: the test takes its turns.
    fn one_member(dir: &std::path::Path) -> NodeTask {
        one_member_ticking(dir, 3, 1)
    }

    /// [`one_member`] with its election and heartbeat ticks.
    fn one_member_ticking(dir: &std::path::Path, election_ticks: usize, heartbeat_ticks: usize) -> NodeTask {
        one_member_serving(dir, (election_ticks, heartbeat_ticks), Vec::new())
    }

    /// [`one_member`] with its (election, heartbeat) ticks, watching `validators`.
    fn one_member_serving(dir: &std::path::Path, ticks: (usize, usize), validators: Vec<ValidatorId>) -> NodeTask {
        let (election_ticks, heartbeat_ticks) = ticks;
        let me = MemberId::new("a").expect("valid");
        let (log, _) = RaftLog::open(dir, &me, &[1]).expect("open the raft dir");
        let senders =
            PeerSenders::start(1, &[], None, LinkFilter::default(), Gathering::NONE, &CancellationToken::new())
                .expect("senders");
        let (_, inbox) = mpsc::channel(1);
        let (_, requests) = mpsc::channel(1);
        let cfg = NodeConfig {
            id: 1,
            tick: TICK,
            election_ticks,
            heartbeat_ticks,
            undeclared_ttl: Duration::from_secs(60),
            snapshot_every: 1000,
            rejoin: false,
            ids: BTreeMap::from([(me, 1)]),
            witnesses: Vec::new(),
            validators,
        };
        let (task, _, _) = build(cfg, log, Arc::new(senders), inbox, requests, PeerRefusals::default()).expect("build");
        task
    }

    // With several validators, reservations ahead of two validators wait for the tick and leave
    // in one entry; a reservation a signature waits on leaves at once, alone.
    #[test]
    fn reservations_ahead_of_two_validators_leave_at_the_tick_in_one_entry() {
        let dir = tempfile::tempdir().expect("dir");
        let ids = ["osmo", "juno"].map(|v| ValidatorId::new(v).expect("id"));
        let mut task = one_member_serving(dir.path(), (3, 1), ids.to_vec());
        lead(&mut task);
        let key = crate::domain::KeyId::new("k").expect("id");
        let reserve = |top| Command::Reserve {
            epoch: Epoch::new(1),
            key: key.clone(),
            hrs: crate::domain::Hrs::end_of_height(top),
        };
        let mut answers = Vec::new();
        for (validator, top, ahead) in [(&ids[0], 12, true), (&ids[1], 30, true), (&ids[0], 11, false)] {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            task.on_request(Request::Propose { cmd: scoped(validator, reserve(top)), reply, ahead });
        }
        let before = task.pending.len();
        task.flush_parked();
        assert_eq!(task.pending.len(), before + 1, "only the reservation a signature waits on left at once");
        assert_eq!(task.parked.len(), 2, "both reservations ahead wait for the tick");
        task.on_ticks(1);
        assert!(task.parked.is_empty(), "the tick sent what waited for it");
        assert_eq!(batch_sizes(&task), vec![2], "both reservations ahead left in one entry");
    }

    /// The number of commands in each `Batch` entry in flight.
    fn batch_sizes(task: &NodeTask) -> Vec<usize> {
        let batches = task.pending.values().filter_map(|p| match &p.cmd {
            Command::Batch { commands } => Some(commands.len()),
            _ => None,
        });
        batches.collect()
    }

    /// A scoped reservation ahead `top` for `validator`, queued as a signer's thread queues it;
    /// its answer goes to `heard`.
    fn queue_ahead(
        queue: &AheadQueue,
        validator: &ValidatorId,
        top: u64,
        deadline: tokio::time::Instant,
        heard: &mpsc::UnboundedSender<(u64, Result<Reply, CoordError>)>,
    ) {
        let key = crate::domain::KeyId::new("k").expect("id");
        let hrs = crate::domain::Hrs::end_of_height(top);
        let cmd = scoped(validator, Command::Reserve { epoch: Epoch::new(1), key, hrs });
        let heard = heard.clone();
        let answer = Box::new(move |r| {
            let _ = heard.send((top, r));
        });
        queue.push(QueuedAhead { cmd, deadline, answer });
    }

    /// Reservations ahead queued by signers' threads wait in the queue, not in the node's
    /// channel (queuing wakes nothing): the next tick takes them into its batch, and each caller
    /// hears its own answer by its deadline — here its timeout, since nothing applies the entry.
    #[tokio::test(start_paused = true)]
    async fn queued_reservations_ahead_leave_at_the_next_tick_in_one_entry_and_each_hears_by_its_deadline() {
        let dir = tempfile::tempdir().expect("dir");
        let ids = ["osmo", "juno"].map(|v| ValidatorId::new(v).expect("id"));
        let mut task = one_member_serving(dir.path(), (3, 1), ids.to_vec());
        lead(&mut task);
        let queue = task.ahead_queue();
        let (tx, mut heard) = mpsc::unbounded_channel();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(250);
        queue_ahead(&queue, &ids[0], 12, deadline, &tx);
        queue_ahead(&queue, &ids[1], 30, deadline, &tx);
        let before = task.pending.len();
        task.flush_parked();
        assert_eq!((task.pending.len(), task.parked.len()), (before, 0), "nothing left before the tick");
        task.on_ticks(1);
        assert!(queue.take().is_empty(), "the tick took the queue");
        assert_eq!(batch_sizes(&task), vec![2], "both queued reservations left in one entry");
        let mut tops = Vec::new();
        for _ in 0..2 {
            let (top, answer) = heard.recv().await.expect("every caller hears");
            assert!(matches!(answer, Err(CoordError::Timeout { .. })), "{top}: {answer:?}");
            tops.push(top);
        }
        tops.sort_unstable();
        assert_eq!(tops, vec![12, 30]);
        let heard_at = tokio::time::Instant::now();
        assert!(heard_at >= deadline && heard_at < deadline + Duration::from_millis(5), "heard at the deadline");
    }

    /// A node that stops drops what is queued, and whoever queued it hears that it was not sent.
    #[tokio::test]
    async fn a_node_that_stops_answers_every_queued_reservation_that_it_was_not_sent() {
        let dir = tempfile::tempdir().expect("dir");
        let ids = ["osmo", "juno"].map(|v| ValidatorId::new(v).expect("id"));
        let mut task = one_member_serving(dir.path(), (3, 1), ids.to_vec());
        let (tx, mut heard) = mpsc::unbounded_channel();
        let reservation = crate::coord::QueuedReservation::new(
            Epoch::new(1),
            crate::domain::KeyId::new("k").expect("id"),
            crate::domain::Hrs::end_of_height(7),
            tokio::time::Instant::now() + Duration::from_secs(1),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let cmd = scoped(
            &ids[0],
            Command::Reserve { epoch: Epoch::new(1), key: reservation.key.clone(), hrs: reservation.hrs },
        );
        let deadline = reservation.deadline;
        let answer = Box::new(move |r: Result<Reply, CoordError>| {
            reservation.answer(r.and_then(|_| Err(CoordError::Invalid("never applied here".into()))))
        });
        task.ahead_queue().push(QueuedAhead { cmd, deadline, answer });
        task.fail("the raft node stopped: its storage failed: test".into());
        let answer = heard.recv().await.expect("the caller hears");
        assert!(
            matches!(&answer, Err(CoordError::Unavailable(why)) if why.contains("dropped before the store answered")),
            "{answer:?}"
        );
    }

    // A quiet follower sleeps until its election timeout, a quiet leader until its heartbeat
    // (also while its expiry timer is far from due); anyone with a proposal in flight wakes every
    // tick.
    #[test]
    fn the_node_wakes_for_the_tick_that_changes_something() {
        let dir = tempfile::tempdir().expect("dir");
        let mut task = one_member_ticking(dir.path(), 10, 3);
        let timeout = task.raw.raft.randomized_election_timeout();
        assert!(timeout >= 10, "randomized in [10, 20): {timeout}");
        assert_eq!(task.ticks_until_due(), timeout as u32, "a follower: its election timeout");
        task.on_ticks(4);
        assert_eq!(task.ticks_until_due(), timeout as u32 - 4, "the ticks applied count");

        lead(&mut task);
        assert_eq!(task.ticks_until_due(), 3, "a leader with nothing to expire: its next heartbeat");
        task.on_ticks(2);
        assert_eq!(task.ticks_until_due(), 1);
        task.on_ticks(1);
        assert_eq!(task.ticks_until_due(), 3);

        type MakeBusy = fn(&mut NodeTask);
        let cases: [(&str, MakeBusy); 4] = [
            ("a transfer under way", |t| t.raw.raft.lead_transferee = Some(2)),
            ("rejoining", |t| t.rejoining = true),
            ("a request parked", |t| {
                let (reply, _) = oneshot::channel();
                t.parked.push(Parked { cmd: Command::StartRefreshStamps, reply, gathered: false })
            }),
            ("a proposal in flight", |t| {
                let (reply, _) = oneshot::channel();
                let pending = Pending {
                    reply: Answer::One(reply),
                    cmd: Command::StartRefreshStamps,
                    leader: 1,
                    at: Instant::now(),
                };
                t.pending.insert(7, pending);
            }),
        ];
        for (what, busy) in cases {
            let dir = tempfile::tempdir().expect("dir");
            let mut other = one_member_ticking(dir.path(), 10, 3);
            lead(&mut other);
            busy(&mut other);
            assert_eq!(other.ticks_until_due(), 1, "{what}: every tick");
        }

        let holder = MemberId::new("b").expect("valid");
        commit(&mut task, Command::Acquire { member: holder, seen_epoch: None, ttl_ms: Some(60_000) });
        task.observe_role();
        assert_eq!(task.ticks_until_due(), 3, "a leader whose expiry timer is far from due: its next heartbeat");
    }

    // Whatever raft draws at each new term, the holder's election timeout is a tick past the
    // shortest and every other member's at least two ticks longer (election_order).
    #[test]
    fn the_holder_campaigns_first_at_every_term() {
        let dir = tempfile::tempdir().expect("dir");
        let mut task = one_member_ticking(dir.path(), 10, 3);
        lead(&mut task);
        let me = MemberId::new("a").expect("valid");
        commit(&mut task, Command::Acquire { member: me, seen_epoch: None, ttl_ms: Some(1_000) });
        assert!(task.holds_lease());
        let mut drawn = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let term = task.raw.raft.term + 1;
            task.raw.raft.become_follower(term, raft::INVALID_ID);
            drawn.insert(task.raw.raft.randomized_election_timeout());
            task.order_election();
            assert_eq!(task.raw.raft.randomized_election_timeout(), 11, "the holder: a tick past the shortest");
            assert_eq!(task.ticks_until_due(), 11, "and the node sleeps on that");
        }
        assert!(drawn.len() > 1, "raft kept drawing: {drawn:?}");
        let b = MemberId::new("b").expect("valid");
        task.cfg.ids.insert(b.clone(), 2);
        task.fsm.default.holder = Some(b);
        for _ in 0..50 {
            let term = task.raw.raft.term + 1;
            task.raw.raft.become_follower(term, raft::INVALID_ID);
            task.order_election();
            let timeout = task.raw.raft.randomized_election_timeout();
            assert!((13..20).contains(&timeout), "not the holder: {timeout} ticks");
        }
        // The holder leads raft: if it is lost nobody has a holder to wait for; raft's draw stands.
        let term = task.raw.raft.term + 1;
        task.raw.raft.become_follower(term, 2);
        task.raw.raft.set_randomized_election_timeout(10);
        task.order_election();
        assert_eq!(task.raw.raft.randomized_election_timeout(), 10);
        // No lease held: raft's own draw stands.
        task.fsm.default.holder = None;
        task.raw.raft.set_randomized_election_timeout(10);
        task.order_election();
        assert_eq!(task.raw.raft.randomized_election_timeout(), 10);
    }

    /// A leader whose ticks wake it only when due (elections at 100 ticks, heartbeats 50 apart,
    /// so only the expiry bounds a sleep), with `b` holding at a TTL of `ttl_ms`.
    fn ticking_leader_with_holder_b(dir: &std::path::Path, ttl_ms: u64) -> NodeTask {
        let mut task = one_member_ticking(dir, 100, 50);
        lead(&mut task);
        let holder = MemberId::new("b").expect("valid");
        commit(&mut task, Command::Acquire { member: holder, seen_epoch: None, ttl_ms: Some(ttl_ms) });
        task
    }

    /// Starts a leader's tick clock and expiry timer at `now`: leadership long ago, so the
    /// holder's TTL decides, and the holder's last refresh now.
    fn clocks_from_a_refresh(task: &mut NodeTask, now: Instant) {
        task.ticks = TickClock::new(TICK, now);
        let mut timer = ExpiryTimer::new(TICK, TICK * 100, Duration::from_secs(60));
        let term = task.raw.raft.term;
        timer.observe_role(Some(term), now.checked_sub(Duration::from_secs(5)).unwrap_or(now));
        timer.refreshed(now);
        task.expiry.insert(ValidatorId::default_validator(), timer);
    }

    // The leader sleeps towards its expiry only so far that a stall it does not notice (a turn
    // up to a tick and 90 ms late) still ends 90 ms before the timer is due; for the last stretch it
    // turns every tick, as before. Heartbeats far apart here, so only the expiry bounds a sleep.
    #[test]
    fn the_leader_turns_every_tick_only_near_its_expiry() {
        let dir = tempfile::tempdir().expect("dir");
        let mut task = one_member_ticking(dir.path(), 100, 50);
        lead(&mut task);
        let span = task.ticks.watch_span();
        assert_eq!(span, TICK * 11, "the whole ticks beyond a tick and twice 90 ms");
        // The holder's last refresh now, its TTL `ttl`: leadership long ago, so the TTL decides.
        let mut expire_in = |ttl: Duration| {
            let holder = MemberId::new("b").expect("valid");
            commit(
                &mut task,
                Command::Acquire { member: holder, seen_epoch: None, ttl_ms: u64::try_from(ttl.as_millis()).ok() },
            );
            clocks_from_a_refresh(&mut task, Instant::now());
            let due = task.expiry_due().expect("the expiry timer runs");
            let ticks = task.ticks_until_due();
            task.ticks.plan(ticks);
            let wake = task.ticks.due();
            let epoch = task.fsm.default.epoch;
            let member = MemberId::new("b").expect("valid");
            commit(&mut task, Command::Release { member, epoch, final_watermark: None });
            (ticks, wake, due)
        };
        let (ticks, _, _) = expire_in(Duration::from_secs(60));
        assert_eq!(ticks, 50, "far from due: the next heartbeat");
        let (ticks, wake, due) = expire_in(TICK * 20);
        assert_eq!(ticks, 9, "20 ticks from due: sleep up to the watch span");
        assert!(wake + span <= due && due < wake + span + TICK, "the wake falls at the watch span: {:?}", due - wake);
        let (ticks, _, _) = expire_in(TICK * 7);
        assert_eq!(ticks, 1, "within the watch span: every tick");
    }

    // Within the watch span the leader's timer waits a tick (and a little) after its last turn,
    // not for the next tick on the grid: the holder's refreshes, up to a tick and a half apart,
    // are turns that keep it from firing. A turn is still expected by the next grid tick, as
    // before.
    #[test]
    fn within_the_watch_span_the_leader_wakes_a_tick_after_its_last_turn() {
        let dir = tempfile::tempdir().expect("dir");
        // Heartbeats 50 ticks apart, so only the expiry bounds the sleep; a TTL of one watch
        // span (11 ticks of 20 ms): refreshed now, the holding is due a span from now.
        let mut task = ticking_leader_with_holder_b(dir.path(), 220);
        assert_eq!(task.ticks.watch_span(), TICK * 11);
        // The clocks start now, not when the member was built (opening it takes a while).
        let now = Instant::now();
        clocks_from_a_refresh(&mut task, now);
        task.wake_at = now;
        task.note_turn();
        let turn = task.turn_started;
        let (tick_due, expiry) = task.next_wake();
        assert!(task.watching(task.expiry_due()), "a watch span from due");
        let expected = task.ticks.expected();
        assert!(expected > turn && expected <= turn + TICK, "expected by the next grid tick: {:?}", expected - turn);
        assert_eq!(task.wake_at, expected, "a stall counts from that tick");
        let past = tick_due.saturating_duration_since(turn + TICK);
        assert!(
            past > Duration::ZERO && past < Duration::from_millis(90),
            "the timer waits a little past a tick: {past:?}"
        );
        assert!(expiry.is_some_and(|e| e > tick_due), "the expiry timer runs beyond the tick");

        // A heartbeat due at every tick (heartbeat_ticks 1) keeps the leader on the grid.
        let dir = tempfile::tempdir().expect("dir");
        let mut beating = leader_with_holder_b(dir.path(), 140, TICK * 3);
        beating.default_timer().refreshed(Instant::now());
        assert!(!beating.watching(beating.expiry_due()), "a heartbeat due at the next tick");
        // Far from due (a TTL of 60 s): the grid, as before.
        let dir = tempfile::tempdir().expect("dir");
        let mut far = ticking_leader_with_holder_b(dir.path(), 60_000);
        far.default_timer().refreshed(Instant::now());
        assert!(!far.watching(far.expiry_due()), "60 s from due");
    }

    // A turn that blocks (an fsync) while renews wait in the inbox is a stall like a late wake:
    // the expiry timer starts again from its end, so those renews do not count against the
    // holder.
    #[test]
    fn a_turn_that_blocks_ends_a_stall_and_moves_the_expiry() {
        let dir = tempfile::tempdir().expect("dir");
        let mut task = one_member(dir.path());
        lead(&mut task);
        let ttl = Duration::from_secs(1);
        let holder = MemberId::new("a").expect("valid");
        commit(&mut task, Command::Acquire { member: holder, seen_epoch: None, ttl_ms: Some(1000) });
        task.next_wake();
        task.note_turn();
        let before = task.expiry_due().expect("the expiry timer runs");
        std::thread::sleep(TICK * 10);
        task.next_wake();
        task.note_turn();
        let after = task.expiry_due().expect("the expiry timer runs");
        assert!(after >= task.turn_started + ttl, "the timer starts again from the stall's end");
        assert!(after > before, "{after:?} is not later than {before:?}");
    }

    fn refresh_ask(member: &str, epoch: u64, ttl_ms: u64) -> RefreshAsk {
        RefreshAsk {
            validator: ValidatorId::default_validator(),
            member: MemberId::new(member).expect("valid"),
            epoch: Epoch::new(epoch),
            ttl_ms,
        }
    }

    /// A one-member leader in `dir` whose state shows "b" holding the lease at epoch 1 with
    /// `ttl_ms`, and whose expiry timer (election timeout `election`) started long ago, so the TTL
    /// since the last refresh decides when it is due.
    fn leader_with_holder_b(dir: &std::path::Path, ttl_ms: u64, election: Duration) -> NodeTask {
        let mut task = one_member(dir);
        lead(&mut task);
        let holder = MemberId::new("b").expect("valid");
        commit(&mut task, Command::Acquire { member: holder, seen_epoch: None, ttl_ms: Some(ttl_ms) });
        task.expiry.insert(ValidatorId::default_validator(), ExpiryTimer::new(TICK, election, Duration::from_secs(60)));
        let long_ago = Instant::now().checked_sub(Duration::from_secs(5)).unwrap_or_else(Instant::now);
        let term = task.raw.raft.term;
        task.default_timer().observe_role(Some(term), long_ago);
        task
    }

    // A heartbeat due at the next tick leaves with a refresh's answer, the tick taken early; one
    // further off waits for its tick, and a refused refresh moves nothing.
    #[test]
    fn a_refresh_carries_the_heartbeat_due_at_the_next_tick() {
        let dir = tempfile::tempdir().expect("dir");
        let mut task = ticking_leader_with_holder_b(dir.path(), 1000);
        let heartbeat = task.raw.raft.heartbeat_timeout();
        // The node's own tick clock at a second: the next grid tick is always within reach.
        let tick = Duration::from_secs(1);
        let ticked_to = |task: &mut NodeTask, elapsed: usize| {
            while task.raw.raft.heartbeat_elapsed() != elapsed {
                task.raw.tick();
            }
            task.ticks = TickClock::new(tick, Instant::now());
        };
        ticked_to(&mut task, heartbeat - 2);
        assert_eq!(task.on_refresh(&refresh_ask("b", 1, 1000)), Ok(()));
        assert_eq!(task.raw.raft.heartbeat_elapsed(), heartbeat - 2, "a heartbeat two ticks off waits");
        assert_eq!(task.on_refresh(&refresh_ask("c", 1, 1000)).map_err(|_| "refused"), Err("refused"));
        ticked_to(&mut task, heartbeat - 1);
        assert_eq!(task.on_refresh(&refresh_ask("c", 1, 1000)).map_err(|_| "refused"), Err("refused"));
        assert_eq!(task.raw.raft.heartbeat_elapsed(), heartbeat - 1, "a refused refresh beats nothing");
        assert_eq!(task.on_refresh(&refresh_ask("b", 1, 1000)), Ok(()));
        assert_eq!(task.raw.raft.heartbeat_elapsed(), 0, "the heartbeat left with the refresh");
        assert_eq!(task.raft_ticks(), u32::try_from(heartbeat).expect("small") + 1, "planned on the grid");
        let grid_tick = task.ticks.expected();
        let turn = task.ticks.catch_up(grid_tick + Duration::from_millis(1), grid_tick);
        assert_eq!(turn.ticks, 0, "the grid tick taken early applies nothing when it comes");
    }

    // An accepted refresh moves the leader's expiry timer as an applied renew would, and
    // proposes nothing: the log does not grow.
    #[test]
    fn a_refresh_moves_the_leaders_expiry_timer_and_writes_nothing_to_the_log() {
        let dir = tempfile::tempdir().expect("dir");
        let mut task = leader_with_holder_b(dir.path(), 1000, TICK * 3);
        task.default_timer().refreshed(Instant::now());
        let before = task.expiry_due().expect("the timer runs");
        let last = task.raw.raft.raft_log.last_index();
        std::thread::sleep(TICK * 2);
        assert_eq!(task.on_refresh(&refresh_ask("b", 1, 1000)), Ok(()));
        let after = task.expiry_due().expect("the timer runs");
        assert!(after >= before + TICK * 2, "the refresh did not move the timer: {:?}", after - before);
        task.handle_ready().expect("storage");
        assert_eq!(task.raw.raft.raft_log.last_index(), last, "a refresh wrote to the log");
        assert_eq!(
            task.on_refresh(&refresh_ask("b", 1, 999)),
            Err(RefreshRefusal::TtlDiffers { asked: 999, declared: "1000 ms".into() })
        );
        let unchanged = task.expiry_due().expect("the timer runs");
        assert_eq!(unchanged, after, "a refused refresh moved the timer");
    }

    // An Expire raft took names the refresh stamp, which a refresh outside the log leaves as it
    // is: while it is in flight a refresh is refused (the holder renews through the log, behind
    // it), and once it applied the holder holds nothing to refresh.
    #[test]
    fn a_refresh_is_refused_while_an_expire_is_in_flight_and_after_it_applied() {
        let dir = tempfile::tempdir().expect("dir");
        let mut task = leader_with_holder_b(dir.path(), 1, TICK);
        task.check_expiry();
        assert_eq!(
            task.on_refresh(&refresh_ask("b", 1, 1)),
            Err(RefreshRefusal::ExpireInFlight { epoch: Epoch::new(1) })
        );
        for _ in 0..10 {
            task.handle_ready().expect("storage");
        }
        assert_eq!(task.fsm.default.lease(), LeaseView::Free { epoch: Epoch::new(1) });
        let refused = task.on_refresh(&refresh_ask("b", 1, 1));
        assert!(matches!(refused, Err(RefreshRefusal::NotHolder { .. })), "{refused:?}");
    }

    // A member refuses a refresh as a follower, and as a new leader until it has applied an
    // entry of its own term: an Expire an earlier leader proposed may sit in its log until then.
    #[test]
    fn a_refresh_needs_a_leader_that_applied_its_own_term() {
        let dir = tempfile::tempdir().expect("dir");
        let mut task = one_member(dir.path());
        assert_eq!(task.on_refresh(&refresh_ask("b", 1, 1000)), Err(RefreshRefusal::NotLeader));
        lead(&mut task);
        let holder = MemberId::new("b").expect("valid");
        commit(&mut task, Command::Acquire { member: holder, seen_epoch: None, ttl_ms: Some(1000) });
        assert_eq!(task.on_refresh(&refresh_ask("b", 1, 1000)), Ok(()));
        let term = task.raw.raft.term;
        task.raw.raft.become_follower(term + 1, raft::INVALID_ID);
        assert_eq!(task.on_refresh(&refresh_ask("b", 1, 1000)), Err(RefreshRefusal::NotLeader));
        task.raw.campaign().expect("campaign");
        assert_eq!(task.raw.raft.state, StateRole::Leader);
        assert_eq!(task.on_refresh(&refresh_ask("b", 1, 1000)), Err(RefreshRefusal::TermNotApplied));
        for _ in 0..10 {
            task.handle_ready().expect("storage");
        }
        assert_eq!(task.on_refresh(&refresh_ask("b", 1, 1000)), Ok(()));
    }

    /// Makes the single member of `task`'s cluster its raft leader, with refresh stamps started.
    fn lead(task: &mut NodeTask) {
        task.raw.campaign().expect("campaign");
        task.handle_ready().expect("storage");
        task.observe_role();
        assert_eq!(task.raw.raft.state, StateRole::Leader);
        commit(task, Command::StartRefreshStamps);
    }

    /// Proposes `cmd` and takes turns until it is applied.
    fn commit(task: &mut NodeTask, cmd: Command) {
        task.propose(cmd).expect("raft takes the proposal");
        for _ in 0..10 {
            task.handle_ready().expect("storage");
        }
        let log = &task.raw.raft.raft_log;
        assert_eq!(log.applied, log.last_index(), "the proposal was applied");
    }

    /// The run loop's expiry branch: sleep until the timer is due, then check it; for `span`.
    /// With `transferring`, the leadership transfer stays under way: raft aborts one after an
    /// election timeout of ticks, and each turn applies its ticks. Returns how many times the timer fired.
    fn run_expiry_branch(task: &mut NodeTask, span: Duration, transferring: bool) -> u32 {
        let end = Instant::now() + span;
        let mut fired = 0;
        while let (_, Some(due)) = task.next_wake()
            && due < end
        {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if transferring {
                task.raw.raft.election_elapsed = 0;
            }
            task.note_turn();
            task.check_expiry();
            fired += 1;
            assert!(fired < 10_000, "the expiry timer spins");
        }
        fired
    }

    // A leader whose Expire raft drops (a leadership transfer under way) waits a tick before it
    // proposes again: its loop sleeps until the timer is due, so a due that stays in the past
    // would spin the task (and log) without pause until the transfer ends.
    #[test]
    fn a_dropped_expire_proposal_is_retried_each_tick_not_in_a_busy_loop() {
        let dir = tempfile::tempdir().expect("dir");
        let mut task = one_member(dir.path());
        lead(&mut task);
        let holder = MemberId::new("a").expect("valid");
        commit(&mut task, Command::Acquire { member: holder.clone(), seen_epoch: None, ttl_ms: Some(1) });
        let held = LeaseView::Held { holder, epoch: Epoch::new(1) };
        assert_eq!(task.fsm.default.lease(), held);

        // raft drops every proposal while a leadership transfer is under way.
        task.raw.raft.lead_transferee = Some(2);
        let span = Duration::from_millis(400);
        let fired = run_expiry_branch(&mut task, span, true);
        let most = (span.as_millis() / TICK.as_millis()) as u32 + 2;
        assert!(fired <= most, "the timer fired {fired} times in {span:?}, more than once a tick ({most})");
        assert!(fired >= 2, "the dropped Expire was never proposed again ({fired})");
        task.handle_ready().expect("storage");
        assert_eq!(task.fsm.default.lease(), held, "nothing was proposed while raft dropped proposals");

        // The transfer ended: the next try goes through and the lease expires.
        task.raw.raft.lead_transferee = None;
        run_expiry_branch(&mut task, TICK * 2, false);
        task.handle_ready().expect("storage");
        assert_eq!(task.fsm.default.lease(), LeaseView::Free { epoch: Epoch::new(1) });
    }
}
