//! [`RaftCoordinator`]: the [`Coordinator`] contract on top of the raft node. It turns each
//! call into a command, proposes it (followers' proposals travel to the leader), and answers
//! only once the entry is applied here — or with `Timeout` at the caller's deadline. One
//! exception: in signer mode a renew refreshes the raft leader's expiry timer outside the log
//! ([`super::refresh`]), and goes through the log only when the leader refuses.
//!
//! Status (`publish_status` / `cluster_status`) travels over the peer service directly, never
//! through the log. This module never decides anything about roles; it only stores.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fsm::{Command, FsmState, Reply, STAMPS_NOT_STARTED};
use super::node::{self, NodeConfig, NodeInfo, Request};
use super::peer_gate::{PeerGate, PeerRefusals};
use super::refresh::{RefreshAsk, RefreshRefusal};
use super::refresh_beat::{BEAT, RefreshBeat};
use super::storage::{Opened, RaftLog, StoreError};
use super::transport::{
    Gathering, LinkFilter, PeerSenders, PeerService, PeerTarget, RefreshCallError, StatusBoard, TransportError,
};
use crate::config::{Config, MemberConfig};
use crate::coord::{
    BackendStatus, CoordError, Coordinator, Holding, Intents, LeaseGrant, QueuedReservation, RaftStatus, StatusReport,
    StoreView, Transfer, plan_import,
};
use crate::domain::{
    Epoch, Hrs, KeyId, Lease, LeaseView, MemberId, MemberKind, MemberStatus, MonoTime, ValidatorId, Watermark,
};
use crate::proto::v1::peer_server::PeerServer;

/// Start-up choices that are not part of the config file.
#[derive(Clone, Debug)]
pub struct RaftOptions {
    /// This member's disk was lost and it rejoins with the same id (README: replacing a
    /// member): it neither votes nor campaigns until it caught up with the leader.
    pub rejoin: bool,
    /// Applied entries between snapshots and log compactions.
    pub snapshot_every: u64,
    /// The validators besides the default one whose lease this member watches: each gets a
    /// handle ([`RaftCoordinator::for_validator`]).
    pub validators: Vec<ValidatorId>,
}

impl Default for RaftOptions {
    fn default() -> Self {
        RaftOptions { rejoin: false, snapshot_every: 1000, validators: Vec::new() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("cannot serve the peer service: {0}")]
    Serve(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsFilesError),
    #[error(
        "the raft backend needs [tls] (mutual TLS between members); make certificates with `failoverd tls ca` and \
         `failoverd tls member ID`, or set coordinator.raft.insecure_plaintext_peers = true for a trial on loopback"
    )]
    NoTls,
    #[error("{0}")]
    Config(String),
    #[error(
        "{0} is empty but this member was asked to rejoin; that is right only after a lost disk. Without --rejoin an empty \
         data_dir bootstraps a new cluster"
    )]
    RejoinWithData(String),
}

/// Raft ids: members sorted by id, numbered from 1, so every member derives the same ids
/// whatever order `[[members]]` lists them in.
pub fn raft_ids(members: &[MemberConfig]) -> BTreeMap<MemberId, u64> {
    let mut ids: Vec<&MemberId> = members.iter().map(|m| &m.id).collect();
    ids.sort();
    ids.into_iter().enumerate().map(|(i, id)| (id.clone(), i as u64 + 1)).collect()
}

/// A member of the embedded raft quorum, serving the Coordinator contract for one validator
/// (the default one, or one [`RaftCoordinator::for_validator`] named). Every handle of a member
/// shares its raft node, its peer service and its status board.
pub struct RaftCoordinator {
    shared: Arc<RaftShared>,
    /// The validator whose lease, watermarks and intents this handle reads and writes.
    validator: ValidatorId,
    view: watch::Receiver<StoreView>,
    /// The validator's lease timings (they differ by producer kind: [`Config::holder_horizon`]).
    timing: LeaseTiming,
}

/// How one validator's lease is held, from its effective config.
#[derive(Clone, Debug)]
struct LeaseTiming {
    lease_ttl: Duration,
    /// How long this member's lease is valid for it after the send of a renew that commits (or
    /// that the leader accepted outside the log) ([`Config::holder_horizon`]): below the TTL it
    /// declares in key-holding mode; in signer mode possibly above it, since no double sign rests
    /// on it there.
    holder_validity: Duration,
    /// Signer mode: renews refresh the raft leader's expiry timer outside the log
    /// ([`super::refresh`]), and go through the log only when the leader refuses.
    refresh_outside_log: bool,
}

impl LeaseTiming {
    fn of(config: &Config) -> LeaseTiming {
        LeaseTiming {
            lease_ttl: config.coordinator.lease_ttl,
            holder_validity: config.holder_horizon(),
            refresh_outside_log: config.signer_mode(),
        }
    }
}

impl std::ops::Deref for RaftCoordinator {
    type Target = RaftShared;

    fn deref(&self) -> &RaftShared {
        &self.shared
    }
}

/// What every validator's handle of one member shares: the raft node and its peer service.
pub struct RaftShared {
    me: MemberId,
    members: Vec<MemberConfig>,
    requests: mpsc::Sender<Request>,
    /// Each watched validator's lease and intents, as the node applied them.
    views: BTreeMap<ValidatorId, watch::Receiver<StoreView>>,
    info: watch::Receiver<NodeInfo>,
    /// Why the raft node stopped, once it did: what every validator's loop waits on. The node's
    /// info changes with every commit, and fifty loops waiting on it woke at each.
    failure: watch::Receiver<Option<String>>,
    board: StatusBoard,
    senders: Arc<PeerSenders>,
    filter: LinkFilter,
    ids: BTreeMap<MemberId, u64>,
    /// The raft leader, and its term, that answered it takes no refreshes (an earlier version):
    /// renews go through the log while it leads in that term.
    refresh_unsupported: Mutex<Option<(u64, u64)>>,
    /// The last renew went through the log: a change of path is logged once.
    renewing_through_log: std::sync::atomic::AtomicBool,
    /// Renews by the way they went: `leader` (a refresh outside the log) or `log`.
    renews_by_path: Family<RenewPath, Counter>,
    /// When refreshes leave, with several validators besides the default one (`refresh_beat`).
    refresh_beat: Option<RefreshBeat>,
    /// The member serves several validators besides the default one ([`node::serves_several`],
    /// from the same list the node was given).
    several: bool,
    /// Reservations ahead queued for the node's next tick ([`Coordinator::queue_reserve_ahead`]).
    ahead: Arc<node::AheadQueue>,
    shutdown: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    refusals: PeerRefusals,
}

impl RaftCoordinator {
    /// Opens `config.data_dir`, starts the raft node and serves the peer service on `listener`
    /// (bound by the caller to this member's peer address, or to port 0 in tests).
    pub async fn start(
        config: &Config,
        listener: TcpListener,
        options: RaftOptions,
    ) -> Result<RaftCoordinator, StartError> {
        let ids = raft_ids(&config.members);
        let me = config.member.clone();
        let my_id = *ids.get(&me).ok_or_else(|| StartError::Config(format!("member {me} is not among [[members]]")))?;
        let voters: Vec<u64> = ids.values().copied().collect();
        let existed = dir_has_entries(&config.data_dir);
        if options.rejoin && existed {
            return Err(StartError::RejoinWithData(format!(
                "data_dir {} is not empty, so this member did not lose its disk; start it without rejoin",
                config.data_dir.display()
            )));
        }
        let (log, opened) = RaftLog::open(&config.data_dir, &me, &voters)?;
        tracing::info!(member = %me, raft_id = my_id, fresh = opened == Opened::Fresh, rejoin = options.rejoin, "raft storage open");

        let tls = peer_tls(config)?;
        let filter = LinkFilter::default();
        let shutdown = CancellationToken::new();
        let targets: Vec<PeerTarget> = config
            .members
            .iter()
            .filter(|m| m.id != me)
            .map(|m| PeerTarget { raft_id: ids[&m.id], member: m.id.clone(), address: m.peer_address.clone() })
            .collect();
        // Statuses wait for others to share their write, and refreshes leave on a beat, only on a
        // member of several validators: one validator's have nothing to meet.
        let several = node::serves_several(options.validators.len());
        let gathering = if several { Gathering::SEVERAL } else { Gathering::NONE };
        let senders =
            Arc::new(PeerSenders::start(my_id, &targets, tls.as_ref(), filter.clone(), gathering, &shutdown)?);
        let (inbox_tx, inbox_rx) = mpsc::channel(1024);
        let (req_tx, req_rx) = mpsc::channel(1024);
        let c = &config.coordinator;
        let node_cfg = NodeConfig {
            id: my_id,
            tick: c.raft.tick,
            election_ticks: c.raft.election_ticks as usize,
            heartbeat_ticks: c.raft.heartbeat_ticks as usize,
            undeclared_ttl: super::expiry::undeclared_ttl(c.lease_ttl + c.safety_margin),
            snapshot_every: options.snapshot_every.max(1),
            rejoin: options.rejoin,
            ids: ids.clone(),
            witnesses: config.members.iter().filter(|m| m.kind == MemberKind::Witness).map(|m| ids[&m.id]).collect(),
            validators: options.validators.clone(),
        };
        let refusals = PeerRefusals::default();
        let (task, views, info) = node::build(node_cfg, log, Arc::clone(&senders), inbox_rx, req_rx, refusals.clone())?;
        let board = StatusBoard::serving(
            std::iter::once(ValidatorId::default_validator()).chain(options.validators.iter().cloned()),
        );
        let peers: BTreeMap<MemberId, u64> =
            ids.iter().filter(|(_, id)| **id != my_id).map(|(m, id)| (m.clone(), *id)).collect();
        let service = PeerService {
            inbox: inbox_tx,
            board: board.clone(),
            filter: filter.clone(),
            me: my_id,
            gate: PeerGate::new(peers, tls.is_some(), refusals.clone()),
            shutdown: shutdown.clone(),
        };
        let mut server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(super::transport::KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(super::transport::KEEPALIVE_TIMEOUT));
        if let Some(tls) = &tls {
            server = server.tls_config(tls.tonic_server()).map_err(|e| StartError::Serve(e.to_string()))?;
        }
        // Raft traffic is small messages: without TCP_NODELAY on the accepted side, replies
        // wait behind an unacknowledged segment, which on a lossy link means a retransmit. The
        // kernel's dead-link watch closes the accepted side of a silently cut link too.
        let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |s| {
            s.inspect(|s| crate::link_watch::ready_member_link_or_warn(s, "accepted"))
        });
        let stop = shutdown.clone();
        let server_task = tokio::spawn(async move {
            let served = server
                .add_service(PeerServer::new(service))
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned());
            if let Err(e) = served.await {
                tracing::error!(error = %e, "peer service stopped");
            }
        });
        let ahead = task.ahead_queue();
        let node_task = tokio::spawn(task.run(shutdown.clone()));
        let default = ValidatorId::default_validator();
        let view = views.get(&default).cloned().ok_or_else(|| StartError::Config("the node gave no view".into()))?;
        let refresh_beat = several.then(|| RefreshBeat::new(Instant::now(), BEAT));
        let shared = Arc::new(RaftShared {
            me,
            members: config.members.clone(),
            requests: req_tx,
            views,
            failure: failure_of(info.clone()),
            info,
            board,
            senders,
            filter,
            ids,
            refresh_unsupported: Mutex::new(None),
            renewing_through_log: std::sync::atomic::AtomicBool::new(false),
            refresh_beat,
            several,
            ahead,
            renews_by_path: Family::default(),
            shutdown,
            tasks: Mutex::new(vec![server_task, node_task]),
            refusals,
        });
        Ok(RaftCoordinator { shared, validator: default, view, timing: LeaseTiming::of(config) })
    }

    /// A handle on `validator`'s lease, watermarks and intents over this member's raft node,
    /// when the node watches it ([`RaftOptions::validators`]). Stopping any handle
    /// ([`Coordinator::shutdown`]) stops the node under all of them: the daemon stops it once,
    /// after every validator's graceful stop.
    /// `effective` is the validator's own config ([`Config::validator_configs`]): its lease
    /// timings are the handle's.
    pub fn for_validator(&self, validator: &ValidatorId, effective: &Config) -> Option<RaftCoordinator> {
        let view = self.shared.views.get(validator)?.clone();
        Some(RaftCoordinator {
            shared: Arc::clone(&self.shared),
            validator: validator.clone(),
            view,
            timing: LeaseTiming::of(effective),
        })
    }

    /// The validator this handle serves.
    pub fn validator(&self) -> &ValidatorId {
        &self.validator
    }

    /// Refused peer requests and snapshots, by reason (for metrics and tests).
    pub fn peer_refusals(&self) -> &PeerRefusals {
        &self.refusals
    }

    /// Test hook ([`crate::coord::StartOptions::test_hooks`]): SIGUSR1 makes the raft task panic,
    /// until this node stops.
    pub(in crate::coord) fn panic_on_sigusr1(&self) {
        let requests = self.requests.clone();
        let stop = self.shutdown.clone();
        tokio::spawn(async move {
            let Ok(mut usr1) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) else {
                return;
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = usr1.recv() => {
                    let _ = requests.send(Request::Panic).await;
                }
            }
        });
    }

    /// The node's own view of raft (leader, term, indexes).
    pub fn info(&self) -> NodeInfo {
        self.info.borrow().clone()
    }

    /// Resolves, with the reason, once this member's raft node has stopped for good (its storage
    /// or its timer failed); never resolves otherwise.
    pub async fn storage_failed(&self) -> String {
        let mut rx = self.failure.clone();
        // The borrowed value is let go before waiting on: it must not be held across an await.
        let failed = rx.wait_for(Option::is_some).await.map(|f| f.clone().unwrap_or_default());
        match failed {
            Ok(why) => why,
            Err(_) => std::future::pending().await,
        }
    }

    /// Waits until the node's info satisfies `pred` or `deadline` passes.
    pub async fn wait_info(&self, deadline: Instant, pred: impl Fn(&NodeInfo) -> bool) -> Option<NodeInfo> {
        let mut rx = self.info.clone();
        tokio::time::timeout_at(deadline, rx.wait_for(|i| pred(i))).await.ok()?.ok().map(|i| i.clone())
    }

    pub fn raft_id(&self, member: &MemberId) -> Option<u64> {
        self.ids.get(member).copied()
    }

    /// The member behind raft id `id`.
    pub fn member_of(&self, id: u64) -> Option<&MemberId> {
        self.ids.iter().find(|(_, i)| **i == id).map(|(m, _)| m)
    }

    /// The fault-injection hook: drop traffic to and from chosen peers.
    pub fn link_filter(&self) -> &LinkFilter {
        &self.filter
    }

    /// Stops the node abruptly, as a crash would: tasks aborted, sockets closed, nothing
    /// flushed beyond what was already fsynced. Returns once the tasks are gone and the data
    /// directory is released.
    pub async fn kill(&self) {
        self.shutdown.cancel();
        let tasks: Vec<JoinHandle<()>> = self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Stops the node and waits for its tasks to end.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let tasks: Vec<JoinHandle<()>> = self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// This validator's statuses as the peers pushed them here, aged to now.
    fn board_statuses(&self) -> Vec<StatusReport> {
        self.board.snapshot(&self.validator).into_iter().map(|(status, age)| StatusReport { status, age }).collect()
    }

    async fn call(&self, cmd: Command, deadline: Instant, operation: &'static str) -> Result<Reply, CoordError> {
        self.propose(cmd, false, deadline, operation).await
    }

    /// Proposes `cmd` for this validator and waits for its answer by `deadline`; `ahead`: a
    /// reservation nobody waits on to sign, which may wait for the next tick to leave with
    /// others (`node::gathers`).
    async fn propose(
        &self,
        cmd: Command,
        ahead: bool,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<Reply, CoordError> {
        let cmd = node::scoped(&self.validator, cmd);
        let (reply, answer) = oneshot::channel();
        match self.ask_node(Request::Propose { cmd, reply, ahead }, answer, deadline).await {
            Ok(result) => result,
            Err(NodeSilence::Late) => Err(CoordError::Timeout { operation }),
            Err(NodeSilence::Stopped) => Err(self.node_stopped()),
        }
    }

    /// Hands `request` to the raft node and waits for its `answer`, both by `deadline`.
    async fn ask_node<T>(
        &self,
        request: Request,
        answer: oneshot::Receiver<T>,
        deadline: Instant,
    ) -> Result<T, NodeSilence> {
        match tokio::time::timeout_at(deadline, self.requests.send(request)).await {
            Err(_) => return Err(NodeSilence::Late),
            Ok(Err(_)) => return Err(NodeSilence::Stopped),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Err(NodeSilence::Late),
            Ok(Err(_)) => Err(NodeSilence::Stopped),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    /// What a call to a raft node that stopped fails with: why it stopped, when it failed.
    fn node_stopped(&self) -> CoordError {
        CoordError::Unavailable(self.info().failed.unwrap_or_else(|| "the raft node has stopped".into()))
    }

    async fn read(&self, deadline: Instant, operation: &'static str) -> Result<FsmState, CoordError> {
        match self.call(Command::Read, deadline, operation).await? {
            Reply::State(s) => Ok(*s),
            other => Err(unexpected(other)),
        }
    }

    /// The TTL this member declares with each grant and renew: the leader expires its lease
    /// this long after it applied the last one, whatever the leader's own config says.
    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.timing.lease_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    async fn grant(&self, member: &MemberId, key: Option<&KeyId>, deadline: Instant) -> Result<LeaseGrant, CoordError> {
        let sent = MonoTime::now();
        // The epoch this member's applied state shows: a stale view only makes the acquire fail
        // (the loop tries again); a late copy of this proposal can never grant a later lease.
        let seen_epoch = Some(self.watch().borrow().lease.epoch());
        let cmd = Command::Acquire { member: member.clone(), seen_epoch, ttl_ms: Some(self.ttl_ms()) };
        let reply = self.call(cmd, deadline, "acquire").await?;
        self.granted(member, key, sent, reply)
    }

    fn granted(
        &self,
        member: &MemberId,
        key: Option<&KeyId>,
        sent: MonoTime,
        reply: Reply,
    ) -> Result<LeaseGrant, CoordError> {
        match reply {
            Reply::Granted { epoch, watermarks } => Ok(LeaseGrant {
                lease: self.lease_from(member, epoch, sent),
                watermark: key.and_then(|k| watermarks.get(k).copied()),
            }),
            other => Err(unexpected(other)),
        }
    }

    fn lease_from(&self, member: &MemberId, epoch: Epoch, sent: MonoTime) -> Lease {
        Lease {
            holder: member.clone(),
            epoch,
            ttl: self.timing.lease_ttl,
            valid_until: sent.saturating_add(self.timing.holder_validity),
        }
    }
}

impl Drop for RaftShared {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}

/// Why the raft node gave no answer to a request.
enum NodeSilence {
    /// Not by the deadline.
    Late,
    /// Its task has ended (storage failed, or the member is stopping).
    Stopped,
}

fn unexpected(reply: Reply) -> CoordError {
    CoordError::Invalid(format!("the state machine gave an unexpected answer: {reply:?}"))
}

/// The log entry of an import. One key (all the control API ever sends) goes as `Import`, which
/// every version of the state machine decodes and applies alike: a member not yet upgraded must
/// never skip an import and keep a lower watermark than the others (S2, S3). `Import` does not
/// check the ceiling itself, so it is checked here, before anything is proposed.
fn import_command(entries: &[(KeyId, Hrs)]) -> Result<Command, CoordError> {
    match entries {
        [(key, hrs)] => {
            plan_import(entries, |_| None)?;
            Ok(Command::Import { key: key.clone(), hrs: *hrs })
        }
        _ => Ok(Command::ImportAll { entries: entries.to_vec() }),
    }
}

/// This member's TLS material, checked to name this member; `None` only when the config opts
/// into plaintext peers (which validation allows on loopback only), with a warning every start.
fn peer_tls(config: &Config) -> Result<Option<crate::tls::TlsMaterial>, StartError> {
    match &config.tls {
        Some(tls) => {
            let material = crate::tls::TlsMaterial::load(tls)?;
            material.expect_member(&tls.cert_file, &config.member)?;
            Ok(Some(material))
        }
        None if config.coordinator.raft.insecure_plaintext_peers => {
            tracing::warn!(
                "peers talk without TLS (coordinator.raft.insecure_plaintext_peers = true): anyone who can reach the \
                 peer port can speak for any member. Only for trials on one machine; configure [tls] for real use"
            );
            Ok(None)
        }
        None => Err(StartError::NoTls),
    }
}

fn dir_has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false)
}

fn watermark_of(reply: Reply) -> Result<Watermark, CoordError> {
    match reply {
        Reply::Watermark(w) => Ok(w),
        other => Err(unexpected(other)),
    }
}

#[async_trait]
impl Coordinator for RaftCoordinator {
    async fn acquire(&self, member: &MemberId, deadline: Instant) -> Result<Lease, CoordError> {
        Ok(self.grant(member, None, deadline).await?.lease)
    }

    async fn acquire_with_watermark(
        &self,
        member: &MemberId,
        key: &KeyId,
        deadline: Instant,
    ) -> Result<LeaseGrant, CoordError> {
        self.grant(member, Some(key), deadline).await
    }

    async fn holding(&self, deadline: Instant) -> Result<Option<Holding>, CoordError> {
        let state = self.read(deadline, "holding").await?;
        let Some(holder) = state.holder else { return Ok(None) };
        // Without a stamp two looks cannot tell a renew happened between them, so no caller may
        // decide from them that the holder is dead.
        let stamp = state.refreshes.ok_or_else(|| CoordError::Unavailable(STAMPS_NOT_STARTED.into()))?;
        Ok(Some(Holding { holder, epoch: state.epoch, stamp }))
    }

    async fn take_over(
        &self,
        member: &MemberId,
        key: &KeyId,
        fenced: &Holding,
        deadline: Instant,
    ) -> Result<LeaseGrant, CoordError> {
        let sent = MonoTime::now();
        let cmd = Command::TakeOver {
            member: member.clone(),
            holder: fenced.holder.clone(),
            epoch: fenced.epoch,
            refreshes: fenced.stamp,
            ttl_ms: Some(self.ttl_ms()),
        };
        let reply = self.call(cmd, deadline, "take_over").await?;
        self.granted(member, Some(key), sent, reply)
    }

    async fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Lease, CoordError> {
        if self.timing.refresh_outside_log
            && let Some(beat) = self.refresh_beat
        {
            // Only while the wait takes at most half the time the renew has: a renew late for
            // its deadline leaves at once.
            let now = Instant::now();
            let leave = beat.next_after(now);
            if leave.saturating_duration_since(now) * 2 <= deadline.saturating_duration_since(now) {
                tokio::time::sleep_until(leave).await;
            }
        }
        let sent = MonoTime::now();
        if self.timing.refresh_outside_log {
            // Half the time at most: a late refusal or a silent leader leaves the log renew time.
            let now = Instant::now();
            match self.refresh(lease, now + deadline.saturating_duration_since(now) / 2).await {
                Ok(()) => {
                    self.renewed(RenewWay::Leader);
                    return Ok(self.lease_from(&lease.holder, lease.epoch, sent));
                }
                Err(why) => self.renewing_through_log(&why),
            }
        }
        let cmd = Command::Renew { member: lease.holder.clone(), epoch: lease.epoch, ttl_ms: Some(self.ttl_ms()) };
        self.call(cmd, deadline, "renew").await?;
        self.renewed(RenewWay::Log);
        Ok(self.lease_from(&lease.holder, lease.epoch, sent))
    }

    async fn release(
        &self,
        lease: &Lease,
        final_watermark: Option<(KeyId, Hrs)>,
        deadline: Instant,
    ) -> Result<(), CoordError> {
        let cmd = Command::Release { member: lease.holder.clone(), epoch: lease.epoch, final_watermark };
        self.call(cmd, deadline, "release").await.map(|_| ())
    }

    async fn reserve(&self, epoch: Epoch, key: &KeyId, hrs: Hrs, deadline: Instant) -> Result<Watermark, CoordError> {
        watermark_of(self.call(Command::Reserve { epoch, key: key.clone(), hrs }, deadline, "reserve").await?)
    }

    async fn reserve_ahead(
        &self,
        epoch: Epoch,
        key: &KeyId,
        hrs: Hrs,
        deadline: Instant,
    ) -> Result<Watermark, CoordError> {
        let cmd = Command::Reserve { epoch, key: key.clone(), hrs };
        watermark_of(self.propose(cmd, true, deadline, "reserve").await?)
    }

    async fn checkpoint(
        &self,
        epoch: Epoch,
        key: &KeyId,
        height: u64,
        deadline: Instant,
    ) -> Result<Watermark, CoordError> {
        watermark_of(self.call(Command::Checkpoint { epoch, key: key.clone(), height }, deadline, "checkpoint").await?)
    }

    async fn watermark(&self, key: &KeyId, deadline: Instant) -> Result<Option<Watermark>, CoordError> {
        Ok(self.read(deadline, "watermark").await?.watermarks.get(key).copied())
    }

    async fn import_watermarks(
        &self,
        entries: &[(KeyId, Hrs)],
        deadline: Instant,
    ) -> Result<Vec<Watermark>, CoordError> {
        let cmd = import_command(entries)?;
        match self.call(cmd, deadline, "import_watermarks").await {
            Ok(Reply::Watermarks(w)) => Ok(w),
            Ok(Reply::Watermark(w)) => Ok(vec![w]),
            Ok(other) => Err(unexpected(other)),
            // `Import` refuses with the bare reason; name its key as `ImportAll` would.
            Err(CoordError::Refused(reason)) if entries.len() == 1 => {
                Err(CoordError::ImportRefused { key: entries[0].0.clone(), reason })
            }
            Err(other) => Err(other),
        }
    }

    async fn lease(&self, deadline: Instant) -> Result<LeaseView, CoordError> {
        Ok(self.read(deadline, "lease").await?.lease())
    }

    async fn intents(&self, deadline: Instant) -> Result<Intents, CoordError> {
        Ok(self.read(deadline, "intents").await?.intents())
    }

    fn watch(&self) -> watch::Receiver<StoreView> {
        self.view.clone()
    }

    async fn publish_status(&self, status: &MemberStatus, deadline: Instant) -> Result<(), CoordError> {
        if status.member != self.me {
            return Err(CoordError::Invalid(format!(
                "member {} cannot publish the status of {}",
                self.me, status.member
            )));
        }
        self.board.put(&self.validator, status.clone());
        let timeout = deadline.saturating_duration_since(Instant::now());
        self.senders.publish_status(&self.validator, status, timeout);
        Ok(())
    }

    async fn cluster_status(&self, _deadline: Instant) -> Result<Vec<StatusReport>, CoordError> {
        Ok(self.board_statuses())
    }

    fn statuses_are_local(&self) -> bool {
        true
    }

    fn local_cluster_status(&self) -> Option<Vec<StatusReport>> {
        Some(self.board_statuses())
    }

    /// `node::gathers`' rule for a reservation ahead: a validator other than the default one, on
    /// a member that serves several.
    fn gathers_reservations_ahead(&self) -> bool {
        !self.validator.is_default() && self.shared.several
    }

    /// Queued for the node's next tick; refused at once, by the answer, when the node stopped
    /// or this handle does not gather (never asked then).
    fn queue_reserve_ahead(&self, reservation: QueuedReservation) {
        if let Some(why) = self.info().failed {
            reservation.answer(Err(CoordError::Unavailable(why)));
            return;
        }
        if !self.gathers_reservations_ahead() {
            let why = "this validator's reservations are not gathered: send them with reserve_ahead";
            reservation.answer(Err(CoordError::Invalid(why.into())));
            return;
        }
        let cmd = node::scoped(
            &self.validator,
            Command::Reserve { epoch: reservation.epoch, key: reservation.key.clone(), hrs: reservation.hrs },
        );
        let deadline = reservation.deadline;
        let answer = Box::new(move |reply: Result<Reply, CoordError>| reservation.answer(reply.and_then(watermark_of)));
        self.shared.ahead.push(node::QueuedAhead { cmd, deadline, answer });
    }

    async fn set_paused(&self, paused: bool, deadline: Instant) -> Result<(), CoordError> {
        self.call(Command::Pause { paused }, deadline, "set_paused").await.map(|_| ())
    }

    async fn request_transfer(&self, to: &MemberId, deadline: Instant) -> Result<Transfer, CoordError> {
        self.transfer(to, false, deadline).await
    }

    async fn request_forced_transfer(&self, to: &MemberId, deadline: Instant) -> Result<Transfer, CoordError> {
        self.transfer(to, true, deadline).await
    }

    fn status(&self) -> BackendStatus {
        let info = self.info();
        let raft = RaftStatus {
            leader: info.leader.and_then(|id| self.member_of(id)).cloned(),
            is_leader: info.is_leader,
            term: info.term,
            commit: info.commit,
            applied: info.applied,
        };
        BackendStatus { failed: info.failed, raft: Some(raft) }
    }

    async fn failed(&self) -> String {
        self.storage_failed().await
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "failoverd_peer_refusals",
            "Peer requests and snapshots this member refused, by reason: not_a_member, spoofed_sender, malformed, snapshot",
            self.refusals.family(),
        );
        registry.register(
            "failoverd_raft_lease_renews",
            "Lease renews this member made that succeeded, by path: leader (signer mode: a refresh of the raft leader's expiry timer, outside the log) or log (a raft log entry)",
            self.renews_by_path.clone(),
        );
    }

    async fn shutdown(&self) {
        RaftCoordinator::shutdown(self).await;
    }
}

/// The `path` label of `failoverd_raft_lease_renews_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewPath {
    path: &'static str,
}

/// Which way a renew went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RenewWay {
    /// A refresh of the raft leader's expiry timer, outside the log (signer mode).
    Leader,
    /// A `Renew` log entry.
    Log,
}

impl RenewWay {
    fn label(self) -> RenewPath {
        RenewPath { path: if self == RenewWay::Leader { "leader" } else { "log" } }
    }
}

impl RaftCoordinator {
    /// Counts a renew that succeeded the way it went; logs the return to the leader's timer.
    fn renewed(&self, way: RenewWay) {
        self.renews_by_path.get_or_create(&way.label()).inc();
        if way == RenewWay::Leader && self.renewing_through_log.swap(false, std::sync::atomic::Ordering::Relaxed) {
            tracing::info!("lease renews refresh the raft leader's expiry timer again, outside the log");
        }
    }

    /// Notes that this renew goes through the log, and why, logged at info when it is the first
    /// of a run: the log way costs every member a commit and an fsync.
    fn renewing_through_log(&self, why: &str) {
        if !self.renewing_through_log.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::info!(
                "lease renews go through the raft log, not the raft leader's expiry timer: {why}; they return to the \
                 timer once the leader takes a refresh again"
            );
        }
    }

    /// The member behind raft id `id`, for messages.
    fn name_of(&self, id: u64) -> String {
        self.member_of(id).map_or_else(|| format!("raft id {id}"), |m| format!("member {m}"))
    }

    /// Refreshes `lease` at the raft leader outside the log ([`super::refresh`]) by `deadline`:
    /// at this member's own node when it leads raft, else by a call to the leader. `Err` says
    /// why not, and the caller renews through the log.
    async fn refresh(&self, lease: &Lease, deadline: Instant) -> Result<(), String> {
        let info = self.info();
        if let Some(why) = info.failed {
            return Err(format!("on this member, {why}"));
        }
        let Some(leader) = info.leader else { return Err("no raft leader is known".into()) };
        let unsupported = *self.refresh_unsupported.lock().unwrap_or_else(|p| p.into_inner());
        if unsupported == Some((leader, info.term)) {
            return Err(format!("the raft leader, {}: {}", self.name_of(leader), RefreshCallError::Unsupported));
        }
        let ask = RefreshAsk {
            validator: self.validator.clone(),
            member: lease.holder.clone(),
            epoch: lease.epoch,
            ttl_ms: self.ttl_ms(),
        };
        if leader == info.id {
            return self.refresh_here(ask, deadline).await;
        }
        let called = self.senders.refresh_lease(leader, &ask, deadline).await;
        if matches!(called, Err(RefreshCallError::Unsupported)) {
            // Until the term changes: the member may lead again after its upgrade.
            *self.refresh_unsupported.lock().unwrap_or_else(|p| p.into_inner()) = Some((leader, info.term));
        }
        called.map_err(|e| format!("the raft leader, {}: {e}", self.name_of(leader)))
    }

    /// [`Self::refresh`] when this member leads raft itself.
    async fn refresh_here(&self, ask: RefreshAsk, deadline: Instant) -> Result<(), String> {
        let (reply, answer) = oneshot::channel::<Result<(), RefreshRefusal>>();
        match self.ask_node(Request::Refresh { ask, reply }, answer, deadline).await {
            Ok(answer) => answer.map_err(|refusal| refusal.to_string()),
            Err(NodeSilence::Late) => Err("this member's raft node did not answer the refresh in time".into()),
            Err(NodeSilence::Stopped) => Err(self.node_stopped().to_string()),
        }
    }

    async fn transfer(&self, to: &MemberId, forced: bool, deadline: Instant) -> Result<Transfer, CoordError> {
        match self.members.iter().find(|m| &m.id == to) {
            None => return Err(CoordError::Invalid(format!("{to} is not a member of this cluster"))),
            Some(m) if m.kind == MemberKind::Witness => {
                return Err(CoordError::Invalid(format!("{to} is a witness and never produces")));
            }
            Some(_) => {}
        }
        match self.call(Command::Transfer { to: to.clone(), forced }, deadline, "request_transfer").await? {
            Reply::TransferSet(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }
}

/// Why the raft node behind `info` stopped, once it did, on a channel that changes only then.
fn failure_of(mut info: watch::Receiver<NodeInfo>) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        // Ends with the node's info channel too (the node stopped without failing): the
        // failure then never comes, and waiting on it waits for ever, as on the info did.
        let failed = info.wait_for(|i| i.failed.is_some()).await.map(|i| i.failed.clone());
        if let Ok(why) = failed {
            tx.send_replace(why);
            tx.closed().await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Step, WatermarkRefusal};

    fn key() -> KeyId {
        KeyId::new("validator").expect("key")
    }

    #[test]
    fn a_one_key_import_is_the_log_entry_every_version_decodes() {
        let cmd = import_command(&[(key(), Hrs::new(4304, 0, Step::Precommit))]).expect("within the ceiling");
        // The form versions before `ImportAll` wrote and read, to the byte.
        let written = serde_json::to_string(&cmd).expect("encode");
        assert_eq!(written, r#"{"op":"import","key":"validator","hrs":{"height":4304,"round":0,"step":"precommit"}}"#);
        let two = [
            (key(), Hrs::new(1, 0, Step::Propose)),
            (KeyId::new("other").expect("key"), Hrs::new(2, 0, Step::Propose)),
        ];
        assert!(matches!(import_command(&two), Ok(Command::ImportAll { .. })));
    }

    #[test]
    fn a_one_key_import_above_the_ceiling_is_refused_before_it_is_proposed() {
        let refused = import_command(&[(key(), Hrs::new(u64::MAX, 0, Step::Precommit))]);
        assert!(
            matches!(refused, Err(CoordError::ImportRefused { reason: WatermarkRefusal::AboveCeiling { .. }, .. })),
            "{refused:?}"
        );
    }
}
