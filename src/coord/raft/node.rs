//! The raft node: one tokio task that owns the `RawNode`, ticks it, steps incoming messages,
//! proposes commands, and handles each `Ready` in the documented order — apply a received
//! snapshot, persist entries and hard state (fsynced), then send messages, apply committed
//! entries to the state machine, advance.
//!
//! It also runs the leader's expiry timer (docs/design.md §4): only the raft leader proposes
//! `Expire`, and only once its own monotonic clock shows the holder's TTL (the one it declared
//! with its last refresh) since the latest of its becoming leader, its last applied refresh and
//! the end of a stall of this task. The timer is exact (a sleep until it is due, not the next
//! tick), and the `Expire` names the refresh count it ran from, so a renew committed first makes
//! it a no-op. Raft leadership is never the lease.
//! Storage is written inline from this task: an fsync that stalls delays the raft loop, which
//! is the safe direction (a slow store delays grants; it never extends a lease).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::{EntryType, Message, MessageType};
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::fsm::{Command, FsmState, Reply};
use super::peer_gate::{PeerRefusals, Refusal, Source};
use super::snapshot_check::check_snapshot;
use super::storage::{RaftLog, StoreError};
use super::transport::{Inbound, PeerSenders};
use crate::coord::{CoordError, StoreView};
use crate::domain::Epoch;

/// How the node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: u64,
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// How long the leader waits without a renew before expiring when the holder declared no
    /// TTL (a holder of an earlier version): its own TTL + safety margin, as those versions did.
    pub expire_after: Duration,
    /// Applied entries between snapshots (and log compactions).
    pub snapshot_every: u64,
    /// This member lost its disk and rejoins with the same id: it neither campaigns nor votes
    /// until it has caught up with a leader, so it cannot vote twice in a term it forgot.
    pub rejoin: bool,
    /// Raft ids of every member, and of the witnesses (preferred raft leaders).
    pub ids: std::collections::BTreeMap<crate::domain::MemberId, u64>,
    pub witnesses: Vec<u64>,
}

/// A request from the coordinator handle.
pub enum Request {
    Propose {
        cmd: Command,
        reply: oneshot::Sender<Result<Reply, CoordError>>,
    },
    /// Test hook (`FAILOVERD_TEST_HOOKS`): panic inside the raft task, as a bug in raft-rs would.
    Panic,
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
    /// Set when storage failed; the node stopped and every call fails.
    pub failed: Option<String>,
}

/// A proposal waiting for its entry to be applied.
struct Pending {
    reply: oneshot::Sender<Result<Reply, CoordError>>,
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
    fsm: FsmState,
    senders: Arc<PeerSenders>,
    inbox: mpsc::Receiver<Inbound>,
    requests: mpsc::Receiver<Request>,
    view: watch::Sender<StoreView>,
    info: watch::Sender<NodeInfo>,
    /// Proposed and not yet applied, by request id.
    pending: HashMap<u64, Pending>,
    incarnation: u64,
    next_request: u64,
    leader_since: Option<Instant>,
    last_refresh: Instant,
    /// When this task last started a turn, and when it last came back from a stall (see
    /// `note_turn`): a leader that could not hear
    /// renews while it stalled does not count that time against the holder.
    last_turn: Instant,
    stall_ended: Option<Instant>,
    expire_sent: Option<(Epoch, u64, Instant)>,
    rejoining: bool,
    ticks_rejoining: u64,
    last_leadership_transfer: Option<Instant>,
    /// Requests waiting for a leader to propose to.
    parked: Vec<(Command, oneshot::Sender<Result<Reply, CoordError>>)>,
    /// Where refused snapshots are counted and logged.
    refusals: PeerRefusals,
}

/// Builds the raft core over `log`, restoring the state machine from its snapshot.
pub fn build(
    cfg: NodeConfig,
    log: RaftLog,
    senders: Arc<PeerSenders>,
    inbox: mpsc::Receiver<Inbound>,
    requests: mpsc::Receiver<Request>,
    refusals: PeerRefusals,
) -> Result<(NodeTask, watch::Receiver<StoreView>, watch::Receiver<NodeInfo>), StoreError> {
    let path = log.path().to_path_buf();
    let corrupt = |detail: String| StoreError::Corrupt { path: path.clone(), detail };
    let fsm: FsmState = match log.snapshot_data() {
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| corrupt(format!("snapshot does not decode: {e}")))?,
        None => FsmState::default(),
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
    let logger = slog::Logger::root(TracingDrain, slog::o!());
    let raw =
        RawNode::new(&raft_cfg, log, &logger).map_err(|e| corrupt(format!("raft refused the stored state: {e}")))?;
    let view0 = StoreView { lease: fsm.lease(), intents: fsm.intents() };
    let (view, view_rx) = watch::channel(view0);
    let (info, info_rx) = watch::channel(NodeInfo { id: cfg.id, rejoining: cfg.rejoin, ..NodeInfo::default() });
    let incarnation =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(40);
    let rejoining = cfg.rejoin;
    let task = NodeTask {
        cfg,
        raw,
        fsm,
        senders,
        inbox,
        requests,
        view,
        info,
        pending: HashMap::new(),
        incarnation,
        next_request: 0,
        leader_since: None,
        last_refresh: Instant::now(),
        last_turn: Instant::now(),
        stall_ended: None,
        expire_sent: None,
        rejoining,
        ticks_rejoining: 0,
        last_leadership_transfer: None,
        parked: Vec::new(),
        refusals,
    };
    Ok((task, view_rx, info_rx))
}

impl NodeTask {
    /// Runs until `shutdown` is cancelled or storage fails.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let expiry = self.expiry_due();
            let expiry_timer = async move {
                match expiry {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    self.note_turn();
                    self.on_tick();
                }
                _ = expiry_timer => {
                    self.note_turn();
                    self.check_expiry();
                }
                Some(inbound) = self.inbox.recv() => match inbound {
                    Inbound::Raft(messages) => {
                        self.note_turn();
                        for m in messages {
                            self.on_message(m);
                        }
                    }
                    Inbound::Rejoined(id) => self.on_rejoined(id),
                },
                Some(req) = self.requests.recv() => {
                    self.note_turn();
                    self.on_request(req);
                }
            }
            if let Err(e) = self.handle_ready() {
                tracing::error!(error = %e, "raft storage failed; this member stops taking part in the quorum");
                self.fail(e.to_string());
                return;
            }
            self.flush_parked();
            if let Err(e) = self.handle_ready() {
                tracing::error!(error = %e, "raft storage failed; this member stops taking part in the quorum");
                self.fail(e.to_string());
                return;
            }
            self.publish_info();
        }
    }

    fn fail(&mut self, why: String) {
        for (_, reply) in self.parked.drain(..) {
            let _ = reply.send(Err(CoordError::Unavailable(format!("raft storage failed: {why}"))));
        }
        for (_, Pending { reply, .. }) in self.pending.drain() {
            let _ = reply.send(Err(CoordError::Unavailable(format!("raft storage failed: {why}"))));
        }
        self.info.send_modify(|i| i.failed = Some(why));
        // Refuse every later request too.
        self.requests.close();
    }

    fn on_tick(&mut self) {
        if self.rejoining {
            self.ticks_rejoining += 1;
            // Announce about once a second until a leader has replicated everything to us.
            if self.ticks_rejoining % 10 == 1 {
                let senders = Arc::clone(&self.senders);
                let me = self.cfg.id;
                tokio::spawn(async move { senders.announce_rejoin(me, Duration::from_millis(500)).await });
            }
        } else {
            self.raw.tick();
        }
        self.pending.retain(|_, p| !p.reply.is_closed());
        self.repropose_stranded();
        self.parked.retain(|(_, reply)| !reply.is_closed());
        self.flush_parked();
        self.check_expiry();
        self.shed_leadership();
    }

    /// The raft leader should not be the lease holder: if one process held both, losing it
    /// would cost an election *and* a full TTL + margin before anyone could take over. So a
    /// leader that holds the lease hands raft leadership to a caught-up peer, a witness first.
    fn shed_leadership(&mut self) {
        if self.raw.raft.state != StateRole::Leader || self.raw.raft.lead_transferee.is_some() {
            return;
        }
        let holder_id = self.fsm.holder.as_ref().and_then(|h| self.cfg.ids.get(h).copied());
        if holder_id != Some(self.cfg.id) {
            return;
        }
        let election = self.cfg.tick * self.cfg.election_ticks as u32;
        if self.last_leadership_transfer.is_some_and(|at| at.elapsed() < election) {
            return;
        }
        let last = self.raw.raft.raft_log.last_index();
        let prs = self.raw.raft.prs();
        let caught_up =
            |id: &u64| *id != self.cfg.id && prs.get(*id).is_some_and(|p| p.recent_active && p.matched == last);
        let target = self
            .cfg
            .witnesses
            .iter()
            .copied()
            .find(|id| caught_up(id))
            .or_else(|| self.cfg.ids.values().copied().find(|id| caught_up(id)));
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

    fn on_request(&mut self, req: Request) {
        match req {
            Request::Propose { cmd, reply } => {
                self.parked.push((cmd, reply));
                self.flush_parked();
            }
            Request::Panic => panic!("test hook: a panic inside the raft task"),
        }
    }

    /// Proposes the requests that wait for a leader. While no leader is known, or raft drops a
    /// proposal because leadership is moving, they stay parked; their callers' deadlines bound
    /// the wait (a caller that gave up closes its channel and the request is dropped).
    fn flush_parked(&mut self) {
        if self.parked.is_empty() || self.raw.raft.leader_id == raft::INVALID_ID {
            return;
        }
        let parked = std::mem::take(&mut self.parked);
        for (cmd, reply) in parked {
            if reply.is_closed() {
                continue;
            }
            let id = self.next_request;
            self.next_request += 1;
            match self.propose_as(id, cmd.clone()) {
                Ok(()) => {
                    let leader = self.raw.raft.leader_id;
                    self.pending.insert(id, Pending { reply, cmd, leader, at: Instant::now() });
                }
                Err(_) => self.parked.push((cmd, reply)),
            }
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

    /// Records the start of a turn. Turns come at least every tick, so one that starts more
    /// than two ticks (and 50 ms of slack) after the last ends a stall (an fsync, a starved
    /// runtime), from which the expiry timer starts again.
    fn note_turn(&mut self) {
        let now = Instant::now();
        let stall = self.cfg.tick * 2 + Duration::from_millis(50);
        if now.saturating_duration_since(self.last_turn) > stall {
            self.stall_ended = Some(now);
        }
        self.last_turn = now;
    }

    /// How long the holder's lease lasts without a refresh, as the store should count it: the
    /// TTL it declared, or for a holder that declared none this member's TTL + margin.
    fn expire_after(&self) -> Duration {
        self.fsm.lease_ttl_ms.map_or(self.cfg.expire_after, Duration::from_millis)
    }

    /// When the leader's expiry timer is due, if this member leads and a lease is held.
    fn expiry_due(&self) -> Option<Instant> {
        if self.raw.raft.state != StateRole::Leader || self.fsm.holder.is_none() {
            return None;
        }
        let since = self.leader_since?;
        let base = [Some(since), Some(self.last_refresh), self.stall_ended].into_iter().flatten().max()?;
        let due = base + self.expire_after();
        // Once proposed, ask again only after a while (the first may have been dropped).
        match self.expire_sent {
            Some((e, n, at)) if e == self.fsm.epoch && n == self.fsm.refreshes => {
                Some(due.max(at + self.cfg.tick * 10))
            }
            _ => Some(due),
        }
    }

    /// The leader's expiry timer (docs/design.md §4).
    fn check_expiry(&mut self) {
        let now = Instant::now();
        if self.raw.raft.state != StateRole::Leader {
            self.leader_since = None;
            self.expire_sent = None;
            return;
        }
        self.leader_since.get_or_insert(now);
        if self.expiry_due().is_none_or(|due| now < due) {
            return;
        }
        let (epoch, refreshes) = (self.fsm.epoch, self.fsm.refreshes);
        match self.propose(Command::Expire { epoch, refreshes: Some(refreshes) }) {
            Ok(_) => self.expire_sent = Some((epoch, refreshes, now)),
            Err(e) => tracing::warn!(error = %e, %epoch, "could not propose lease expiry"),
        }
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
            let fsm: FsmState = serde_json::from_slice(&snap.data).map_err(|e| StoreError::Corrupt {
                path: self.raw.store().path().to_path_buf(),
                detail: format!("snapshot from the leader does not decode: {e}"),
            })?;
            self.raw.mut_store().apply_snapshot(&snap)?;
            self.fsm = fsm;
            self.publish_view();
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
        let before = (self.fsm.lease(), self.fsm.intents());
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
            let result = self.fsm.apply(&entry.cmd);
            if result.is_ok() && entry.cmd.refreshes(self.fsm.epoch) {
                self.last_refresh = Instant::now();
            }
            if entry.origin == self.cfg.id
                && entry.incarnation == self.incarnation
                && let Some(p) = self.pending.remove(&entry.request)
            {
                let _ = p.reply.send(result);
            }
        }
        if before != (self.fsm.lease(), self.fsm.intents()) {
            self.publish_view();
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

    fn publish_view(&self) {
        let view = StoreView { lease: self.fsm.lease(), intents: self.fsm.intents() };
        self.view.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
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
