//! Carrying raft messages and member status between members: the tonic `Peer` service (server
//! side) and one sender task per peer (client side) that batches messages onto one long-lived
//! `RaftStream` (unary `Raft` calls for a peer that does not serve it), dials again with backoff
//! when the stream ends, and never blocks the raft loop — a message that cannot be queued is
//! dropped, which raft tolerates. This member's status goes to each peer by its own
//! [`Courier`]: in order, newest first, and a peer that does not answer delays no other.
//!
//! Mutual TLS (the default): a member accepts only callers whose certificate chains to the
//! cluster's CA and names another member, and takes the sender's identity from that certificate
//! ([`PeerGate`]); it dials a peer only when the peer's certificate names the member it meant to
//! reach ([`crate::tls::client_config`]). A [`LinkFilter`] drops traffic to or from chosen peers:
//! the fault-injection hook that tests and chaos runs use to partition a member without touching
//! the network.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};

use super::peer_gate::{Caller, PeerGate, Refusal};
use super::refresh::{RefreshAsk, RefreshRefusal};
use super::refresh_desk::{RefreshDesk, Verdict};
use super::refresh_link::{RefreshLinks, SingleAsks, Streamed, describe, outcome};
use super::refresh_round::{Joined, RefreshRounds};
use super::status_link::{STATUS_HOLD, StatusLink};
use crate::config::PeerAddress;
use crate::coord::courier::Courier;
use crate::domain::{MemberId, MemberStatus, ValidatorId};
use crate::proto::v1::peer_client::PeerClient;
use crate::proto::v1::peer_server::Peer;
use crate::proto::v1::{
    LeaseRefresh, LeaseRefreshAck, LeaseRefreshAnswer, LeaseRefreshRound, LeaseRefreshRoundAnswer, MemberStatusMsg,
    RaftAck, RaftBatch, RejoinAck, RejoinNotice, StatusAck,
};
use crate::tls::TlsMaterial;

/// What the peer service hands to the raft node.
pub enum Inbound {
    Raft(Vec<Message>),
    /// The member with this raft id rejoined with an empty log.
    Rejoined(u64),
    /// The lease holder asks to refresh its holding outside the log ([`super::refresh`]).
    Refresh {
        ask: RefreshAsk,
        reply: oneshot::Sender<Result<(), RefreshRefusal>>,
    },
    /// The asks of one round of refreshes ([`super::refresh_round`]), judged in one turn; the
    /// verdicts in the order of the asks.
    Refreshes {
        asks: Vec<RefreshAsk>,
        reply: oneshot::Sender<Vec<Result<(), RefreshRefusal>>>,
    },
}

/// Why a lease refresh sent to the raft leader did not succeed; each sends the holder to the log
/// renew. The texts name no member: the caller says which leader it asked.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RefreshCallError {
    #[error("it is not a known peer")]
    UnknownPeer(u64),
    #[error("the link to it is blocked by fault injection")]
    Blocked(u64),
    #[error("no answer before the deadline")]
    Timeout,
    #[error("it runs an earlier version that takes no lease refreshes")]
    Unsupported,
    #[error("it refused the refresh: {0}")]
    Refused(String),
    #[error("the call failed: {0}")]
    Failed(String),
}

/// Messages one peer's queue holds before new ones are dropped.
const QUEUE: usize = 4096;
/// Messages sent in one RPC at most.
const BATCH: usize = 512;
const MAX_BACKOFF: Duration = Duration::from_millis(250);
/// Batches waiting to go out on a peer's stream; more are dropped, which raft tolerates.
const STREAM_QUEUE: usize = 64;
/// Deadline of a unary raft call (the fallback for peers that do not serve the stream).
const UNARY_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings on every peer connection, both ways: the backstop for what the kernel's watch
/// over the socket (`link_watch::DEAD_LINK`) cannot see, a peer process frozen while its kernel
/// still acknowledges and a link through a proxy that ends TCP; such a link is dropped within
/// interval + timeout and the stream dialled again. A peer that died is noticed at once by its
/// closed connection. A ping goes out only on a connection that received nothing for the
/// interval, but its timer wakes the member on every interval while frames flow (twice, since
/// tokio's wheel wakes at a coarse slot first): at 2 s these timers were one in eight of a signer
/// active's context switches, so the kernel now does the fast watch.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("peer address {0} is not usable as a URI: {1}")]
    BadAddress(String, String),
    #[error("cannot set up TLS to the peers: {0}")]
    Tls(String),
}

/// Peers whose traffic is dropped in both directions. Empty in normal operation.
#[derive(Clone, Default)]
pub struct LinkFilter {
    blocked: Arc<RwLock<HashSet<u64>>>,
}

impl LinkFilter {
    pub fn block(&self, peer: u64) {
        self.blocked.write().unwrap_or_else(|p| p.into_inner()).insert(peer);
    }

    pub fn unblock_all(&self) {
        self.blocked.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn is_blocked(&self, peer: u64) -> bool {
        self.blocked.read().unwrap_or_else(|p| p.into_inner()).contains(&peer)
    }
}

/// Where a status stands among its sender's: `run` differs between the sender's runs, `seq`
/// counts within one. `run` 0: a sender that does not order its statuses (earlier versions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusOrder {
    pub run: u64,
    pub seq: u64,
}

impl StatusOrder {
    /// Whether a status at `self` arrived after one at `newer` of the same run: it is older and
    /// must not replace it. Statuses of different runs, or unordered ones, always replace.
    fn is_overtaken_by(self, newer: StatusOrder) -> bool {
        self.run != 0 && self.run == newer.run && self.seq <= newer.seq
    }
}

/// One member's latest status, when it arrived (local monotonic clock) and its order.
type BoardEntry = (MemberStatus, Instant, StatusOrder);

/// The latest status each member published, per validator (a member runs one role per
/// validator). It keeps statuses only of the validators this member serves, so a peer cannot
/// grow it by naming others.
#[derive(Clone)]
pub struct StatusBoard {
    /// By validator, then member: each validator's loop reads its own at every turn.
    entries: Arc<Mutex<BTreeMap<ValidatorId, BTreeMap<MemberId, BoardEntry>>>>,
    serves: Arc<std::collections::BTreeSet<ValidatorId>>,
}

impl Default for StatusBoard {
    /// The board of a member serving the default validator alone.
    fn default() -> Self {
        StatusBoard::serving([ValidatorId::default_validator()])
    }
}

impl StatusBoard {
    /// The board of a member serving `validators`.
    pub fn serving(validators: impl IntoIterator<Item = ValidatorId>) -> StatusBoard {
        StatusBoard { entries: Arc::default(), serves: Arc::new(validators.into_iter().collect()) }
    }

    /// Whether this member serves `validator`.
    pub fn serves(&self, validator: &ValidatorId) -> bool {
        self.serves.contains(validator)
    }

    /// Records this member's own status for `validator` (its executor publishes them in order).
    pub fn put(&self, validator: &ValidatorId, status: MemberStatus) {
        self.put_in_order(validator, status, StatusOrder::default());
    }

    /// Records a peer's status for `validator` unless a later one of the same run is already
    /// here; returns whether it was recorded.
    pub fn put_in_order(&self, validator: &ValidatorId, status: MemberStatus, order: StatusOrder) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if !entries.contains_key(validator) {
            entries.insert(validator.clone(), BTreeMap::new());
        }
        let Some(board) = entries.get_mut(validator) else { return false };
        if board.get(&status.member).is_some_and(|(_, _, held)| order.is_overtaken_by(*held)) {
            return false;
        }
        board.insert(status.member.clone(), (status, Instant::now(), order));
        true
    }

    /// Every member's latest status for `validator`, with its age.
    pub fn snapshot(&self, validator: &ValidatorId) -> Vec<(MemberStatus, Duration)> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Some(board) = entries.get(validator) else { return Vec::new() };
        board.values().map(|(s, at, _)| (s.clone(), now.saturating_duration_since(*at))).collect()
    }
}

/// The server side of the `Peer` service.
pub struct PeerService {
    /// Where decoded raft messages go: the node task's inbox.
    pub inbox: mpsc::Sender<Inbound>,
    pub board: StatusBoard,
    pub filter: LinkFilter,
    /// This member's raft id: messages addressed to anyone else are refused.
    pub me: u64,
    /// Who may call, and as whom.
    pub gate: PeerGate,
    /// Ends the open raft streams when this member stops, so that peers dial again (a server
    /// that shuts down gracefully would otherwise wait for streams that never end).
    pub shutdown: CancellationToken,
}

impl PeerService {
    /// Checks a batch and decodes its messages: the batch must come from the caller, and every
    /// message must be a raft message from that member, addressed to this one.
    fn decode(&self, caller: &Caller, batch: RaftBatch, from: Option<SocketAddr>) -> Result<Vec<Message>, Status> {
        self.gate.check_raft_id(caller, batch.from, "a raft batch", from)?;
        let malformed = |what: String| {
            self.gate.refusals.record(Refusal::Malformed, from, &what);
            Status::invalid_argument(what)
        };
        super::peer_batch::read_batch(batch.from, self.me, &batch.messages).map_err(malformed)
    }

    /// The next message on a peer's stream, `None` at its end; this member stopping ends the
    /// stream (a server that shuts down gracefully would otherwise wait for streams that never
    /// end).
    async fn next_message<T>(&self, stream: &mut Streaming<T>) -> Result<Option<T>, Status> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Status::unavailable("this member is stopping")),
            next = stream.message() => next,
        }
    }

    /// Checks a status from `caller` and puts it on the board, unless a newer one is there.
    fn take_status(&self, caller: &Caller, msg: MemberStatusMsg, from: Option<SocketAddr>) -> Result<(), Status> {
        let order = StatusOrder { run: msg.run, seq: msg.seq };
        let validator = crate::proto::validator_on_wire(&msg.validator)
            .map_err(|e| format!("names no valid validator: {e}"))
            .and_then(|v| match self.board.serves(&v) {
                true => Ok(v),
                false => Err(format!(
                    "is about validator {v}, which this member does not serve; every member's config must list the \
                     same [[validators]]"
                )),
            })
            .map_err(|why| {
                let member: String = msg.member.chars().take(64).collect();
                let what = format!("a status from {member:?} {why}");
                self.gate.refusals.record(Refusal::Malformed, from, &what);
                Status::invalid_argument(what)
            })?;
        let status = MemberStatus::try_from(msg).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.gate.check_member(caller, &status.member, "a status", from)?;
        let member = status.member.clone();
        if !self.board.put_in_order(&validator, status, order) {
            // Normal after a call that timed out: the peer already sent a newer one.
            tracing::debug!(%member, seq = order.seq, "an older status arrived after a newer one; kept the newer");
        }
        Ok(())
    }

    fn refresh_desk(&self) -> RefreshDesk {
        RefreshDesk { inbox: self.inbox.clone(), gate: self.gate.clone(), filter: self.filter.clone() }
    }

    fn deliver(&self, messages: Vec<Message>) {
        // A full inbox means the node is behind; dropping is what the network would do.
        let _ = self.inbox.try_send(Inbound::Raft(messages));
    }

    /// The raft id traffic from `caller` is filtered by: its certificate's, or (plaintext) the
    /// one it claims.
    fn link_of(caller: &Caller, claimed: u64) -> u64 {
        match caller {
            Caller::Member { raft_id, .. } => *raft_id,
            Caller::Unauthenticated => claimed,
        }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, request: Request<RaftBatch>) -> Result<Response<RaftAck>, Status> {
        let caller = self.gate.caller(&request)?;
        let from = request.remote_addr();
        let batch = request.into_inner();
        if self.filter.is_blocked(PeerService::link_of(&caller, batch.from)) {
            return Err(Status::unavailable("link blocked by fault injection"));
        }
        self.deliver(self.decode(&caller, batch, from)?);
        Ok(Response::new(RaftAck {}))
    }

    async fn raft_stream(&self, request: Request<Streaming<RaftBatch>>) -> Result<Response<RaftAck>, Status> {
        let caller = self.gate.caller(&request)?;
        let from = request.remote_addr();
        let mut batches = request.into_inner();
        while let Some(batch) = self.next_message(&mut batches).await? {
            // A blocked link loses what it carries, as a cut cable would; the stream stays.
            if self.filter.is_blocked(PeerService::link_of(&caller, batch.from)) {
                continue;
            }
            self.deliver(self.decode(&caller, batch, from)?);
        }
        Ok(Response::new(RaftAck {}))
    }

    async fn rejoin(&self, request: Request<RejoinNotice>) -> Result<Response<RejoinAck>, Status> {
        let caller = self.gate.caller(&request)?;
        let from = request.remote_addr();
        let id = request.into_inner().raft_id;
        self.gate.check_raft_id(&caller, id, "a rejoin notice", from)?;
        if self.filter.is_blocked(id) {
            return Err(Status::unavailable("link blocked by fault injection"));
        }
        let _ = self.inbox.try_send(Inbound::Rejoined(id));
        Ok(Response::new(RejoinAck {}))
    }

    async fn publish_status(&self, request: Request<MemberStatusMsg>) -> Result<Response<StatusAck>, Status> {
        let caller = self.gate.caller(&request)?;
        let from = request.remote_addr();
        self.take_status(&caller, request.into_inner(), from)?;
        Ok(Response::new(StatusAck {}))
    }

    async fn status_stream(&self, request: Request<Streaming<MemberStatusMsg>>) -> Result<Response<StatusAck>, Status> {
        let caller = self.gate.caller(&request)?;
        let from = request.remote_addr();
        let mut statuses = request.into_inner();
        while let Some(msg) = self.next_message(&mut statuses).await? {
            self.take_status(&caller, msg, from)?;
        }
        Ok(Response::new(StatusAck {}))
    }

    async fn refresh_lease(&self, request: Request<LeaseRefresh>) -> Result<Response<LeaseRefreshAck>, Status> {
        let caller = self.gate.caller(&request)?;
        let from = request.remote_addr();
        match self.refresh_desk().verdict(&caller, request.into_inner(), from).await {
            Verdict::Judged(Ok(())) => Ok(Response::new(LeaseRefreshAck {})),
            Verdict::Judged(Err(refusal)) => Err(Status::failed_precondition(refusal.to_string())),
            Verdict::Failed(status) | Verdict::Hostile(status) => Err(status),
            Verdict::Blocked => Err(Status::unavailable("link blocked by fault injection")),
        }
    }

    type RefreshStreamStream = ReceiverStream<Result<LeaseRefreshAnswer, Status>>;

    async fn refresh_stream(
        &self,
        request: Request<Streaming<LeaseRefresh>>,
    ) -> Result<Response<Self::RefreshStreamStream>, Status> {
        let caller = self.gate.caller(&request)?;
        let from = request.remote_addr();
        Ok(Response::new(self.refresh_desk().serve(caller, from, request.into_inner(), self.shutdown.clone())))
    }

    type RefreshRoundStreamStream = ReceiverStream<Result<LeaseRefreshRoundAnswer, Status>>;

    async fn refresh_round_stream(
        &self,
        request: Request<Streaming<LeaseRefreshRound>>,
    ) -> Result<Response<Self::RefreshRoundStreamStream>, Status> {
        let caller = self.gate.caller(&request)?;
        let from = request.remote_addr();
        Ok(Response::new(self.refresh_desk().serve_rounds(caller, from, request.into_inner(), self.shutdown.clone())))
    }
}

/// One known peer: where to dial it and who it must be.
#[derive(Clone, Debug)]
pub struct PeerTarget {
    pub raft_id: u64,
    pub member: MemberId,
    pub address: PeerAddress,
}

/// Sender side: a queue and a task per peer for raft messages, a courier per peer for statuses.
pub struct PeerSenders {
    queues: HashMap<u64, mpsc::Sender<Message>>,
    channels: HashMap<u64, PeerClient<tonic::transport::Channel>>,
    /// Each validator's couriers of statuses, one per peer, made at the validator's first
    /// status: a courier keeps only the newest status, so validators never share one.
    statuses: Mutex<BTreeMap<ValidatorId, Vec<StatusCourier>>>,
    /// What a new validator's couriers are made from: each peer's raft id and client.
    status_peers: Vec<(u64, Arc<StatusLink>)>,
    shutdown: CancellationToken,
    /// This run's statuses are numbered from 1 under this run.
    run: u64,
    sent: AtomicU64,
    filter: LinkFilter,
    /// This member's refresh streams to the raft leader, while it holds a lease.
    refresh_links: RefreshLinks<SingleAsks>,
    /// With several validators: their refreshes leave together, in rounds.
    refresh_rounds: Option<RefreshRounds>,
}

/// A lazily connected channel to `target`: over TLS that accepts only `target`'s own member
/// certificate, or plaintext without `tls`.
fn channel(target: &PeerTarget, tls: Option<&TlsMaterial>) -> Result<tonic::transport::Channel, TransportError> {
    let uri = format!("http://{}", target.address);
    let ep = Endpoint::from_shared(uri.clone())
        .map_err(|e| TransportError::BadAddress(uri.clone(), e.to_string()))?
        .connect_timeout(Duration::from_millis(500))
        // No per-request timeout on the channel: the raft stream lives as long as the
        // connection. Unary calls carry their own. A connection the kernel gives up on, or that
        // stops answering pings, is dropped, which ends the stream and makes the sender dial
        // again. Both connectors ready the socket as a member link (no Nagle, the dead-link watch).
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    Ok(match tls {
        None => ep.connect_with_connector_lazy(crate::link_watch::PlainMemberConnector),
        Some(tls) => {
            let config = crate::tls::client_config(tls, Some(target.member.clone()))
                .map_err(|e| TransportError::Tls(e.to_string()))?;
            ep.connect_with_connector_lazy(crate::tls::TlsConnector::new(config))
        }
    })
}

/// A number that differs between this member's runs: its start time in nanoseconds since the
/// Unix epoch, mixed with its process id; never 0, which statuses read as "unordered". It numbers
/// this run's statuses and tags its log entries (the node's incarnation). A clock stepped back
/// between two runs makes no difference: only numbers of the same run are compared.
pub(super) fn this_run() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
    (nanos ^ u64::from(std::process::id()).rotate_left(40)).max(1)
}

/// The courier that pushes this member's statuses to the peer `id`, one call at a time.
/// A courier of one validator's statuses to one peer.
type StatusCourier = Courier<(MemberStatusMsg, Duration)>;

fn status_courier(id: u64, link: Arc<StatusLink>, filter: LinkFilter, shutdown: &CancellationToken) -> StatusCourier {
    let send = move |(msg, timeout): (MemberStatusMsg, Duration)| {
        let link = Arc::clone(&link);
        let blocked = filter.is_blocked(id);
        async move {
            if !blocked {
                link.send(msg, timeout).await;
            }
        }
    };
    Courier::start(send, shutdown.clone())
}

/// What a member's messages wait for to leave together with others: only on a member of
/// several validators, whose statuses and refreshes have others to meet.
#[derive(Clone, Copy, Debug)]
pub struct Gathering {
    /// How long a status waits for others to share its write (see [`StatusLink`]).
    pub status_hold: Duration,
    /// Whether refreshes leave in rounds (see [`RefreshRounds`]).
    pub rounds: bool,
}

impl Gathering {
    /// One validator's messages: each leaves at once.
    pub const NONE: Gathering = Gathering { status_hold: Duration::ZERO, rounds: false };
    /// Several validators' messages.
    pub const SEVERAL: Gathering = Gathering { status_hold: STATUS_HOLD, rounds: true };
}

impl PeerSenders {
    /// Starts one sender task per peer; they stop when `shutdown` is cancelled.
    pub fn start(
        me: u64,
        peers: &[PeerTarget],
        tls: Option<&TlsMaterial>,
        filter: LinkFilter,
        gathering: Gathering,
        shutdown: &CancellationToken,
    ) -> Result<PeerSenders, TransportError> {
        let mut queues = HashMap::new();
        let mut channels = HashMap::new();
        let mut status_peers = Vec::new();
        for target in peers {
            let client = PeerClient::new(channel(target, tls)?);
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.insert(target.raft_id, tx);
            channels.insert(target.raft_id, client.clone());
            // One stream per peer carries every validator's statuses.
            status_peers.push((target.raft_id, Arc::new(StatusLink::new(client.clone(), gathering.status_hold))));
            tokio::spawn(run_sender(me, target.clone(), client, rx, filter.clone(), shutdown.clone()));
        }
        Ok(PeerSenders {
            queues,
            channels,
            statuses: Mutex::new(BTreeMap::new()),
            status_peers,
            shutdown: shutdown.clone(),
            run: this_run(),
            sent: AtomicU64::new(0),
            filter,
            refresh_links: RefreshLinks::default(),
            refresh_rounds: gathering.rounds.then(RefreshRounds::default),
        })
    }

    /// Queues raft messages for their destinations; never waits.
    pub fn send(&self, messages: Vec<Message>) {
        for m in messages {
            if self.filter.is_blocked(m.to) {
                continue;
            }
            if let Some(q) = self.queues.get(&m.to) {
                let _ = q.try_send(m);
            }
        }
    }

    /// Hands `status` to every peer's courier, each call bounded by `timeout`; never waits. A
    /// peer that is slow to answer gets the newest status once its call ends and holds up no
    /// other peer.
    pub fn publish_status(&self, validator: &ValidatorId, status: &MemberStatus, timeout: Duration) {
        let seq = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let msg = MemberStatusMsg {
            run: self.run,
            seq,
            validator: crate::proto::validator_to_wire(validator),
            ..MemberStatusMsg::from(status)
        };
        let mut statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        let couriers = statuses.entry(validator.clone()).or_insert_with(|| {
            self.status_peers
                .iter()
                .map(|(id, link)| status_courier(*id, Arc::clone(link), self.filter.clone(), &self.shutdown))
                .collect()
        });
        for courier in couriers.iter() {
            courier.put((msg.clone(), timeout));
        }
    }

    /// Asks the raft leader `leader` to refresh the holding in `ask` outside the log, answering
    /// by `deadline`: on the refresh stream, or by a call to a leader that serves none.
    pub async fn refresh_lease(
        &self,
        leader: u64,
        ask: &RefreshAsk,
        deadline: tokio::time::Instant,
    ) -> Result<(), RefreshCallError> {
        if self.filter.is_blocked(leader) {
            return Err(RefreshCallError::Blocked(leader));
        }
        let client = self.channels.get(&leader).ok_or(RefreshCallError::UnknownPeer(leader))?;
        let validator = crate::proto::validator_to_wire(&ask.validator);
        let msg = LeaseRefresh {
            member: ask.member.to_string(),
            epoch: ask.epoch.get(),
            ttl_ms: ask.ttl_ms,
            seq: 0,
            validator,
        };
        if let Some(rounds) = &self.refresh_rounds
            && rounds.serves(leader)
        {
            match rounds.refresh(client, leader, msg.clone(), deadline).await {
                Joined::Answered(result) => return result,
                Joined::NotServed => {}
            }
        }
        if self.refresh_links.serves(leader) {
            match self.refresh_links.refresh(client, leader, msg.clone(), deadline).await {
                Streamed::Answered(answer) => return answer.and_then(outcome),
                Streamed::NotServed => {}
            }
        }
        match tokio::time::timeout_at(deadline, client.clone().refresh_lease(msg)).await {
            Err(_) => Err(RefreshCallError::Timeout),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(match status.code() {
                tonic::Code::Unimplemented => RefreshCallError::Unsupported,
                tonic::Code::FailedPrecondition => RefreshCallError::Refused(status.message().to_string()),
                _ => RefreshCallError::Failed(describe(&status)),
            }),
        }
    }

    /// Tells every reachable peer that this member rejoined with an empty log.
    pub async fn announce_rejoin(&self, me: u64, timeout: Duration) {
        let mut calls = tokio::task::JoinSet::new();
        for (id, client) in &self.channels {
            if self.filter.is_blocked(*id) {
                continue;
            }
            let mut client = client.clone();
            calls.spawn(async move {
                let _ = tokio::time::timeout(timeout, client.rejoin(RejoinNotice { raft_id: me })).await;
            });
        }
        while calls.join_next().await.is_some() {}
    }
}

/// How a peer's raft stream ended.
enum StreamEnd {
    Shutdown,
    /// The peer does not serve `RaftStream` (an older failoverd): use unary calls.
    Unimplemented,
    Failed {
        status: Status,
        lasted: Duration,
    },
}

/// Takes `first` and whatever else is queued, up to `BATCH`, and encodes them.
fn next_batch(me: u64, target: &PeerTarget, first: Message, rx: &mut mpsc::Receiver<Message>) -> RaftBatch {
    let mut batch = vec![first];
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(m) => batch.push(m),
            Err(_) => break,
        }
    }
    let mut messages = Vec::with_capacity(batch.len());
    for m in &batch {
        match m.write_to_bytes() {
            Ok(b) => messages.push(b),
            Err(e) => tracing::error!(peer = %target.member, error = %e, "cannot encode a raft message"),
        }
    }
    RaftBatch { from: me, messages }
}

/// Sends to one peer on a `RaftStream`, until the stream ends.
async fn stream_to_peer(
    me: u64,
    target: &PeerTarget,
    client: &mut PeerClient<tonic::transport::Channel>,
    rx: &mut mpsc::Receiver<Message>,
    filter: &LinkFilter,
    shutdown: &CancellationToken,
) -> StreamEnd {
    let opened = Instant::now();
    let (tx, body) = mpsc::channel::<RaftBatch>(STREAM_QUEUE);
    let mut call = std::pin::pin!(client.raft_stream(tokio_stream::wrappers::ReceiverStream::new(body)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return StreamEnd::Shutdown,
            ended = &mut call => {
                let status = match ended {
                    Err(status) if status.code() == tonic::Code::Unimplemented => return StreamEnd::Unimplemented,
                    Err(status) => status,
                    Ok(_) => Status::unavailable("the peer ended the raft stream"),
                };
                return StreamEnd::Failed { status, lasted: opened.elapsed() };
            }
            m = rx.recv() => {
                let Some(first) = m else { return StreamEnd::Shutdown };
                let batch = next_batch(me, target, first, rx);
                if filter.is_blocked(target.raft_id) {
                    continue;
                }
                // Full: the connection is not keeping up (or is dead and not yet noticed); a
                // closed queue means the call ended, which the next turn of the loop reports.
                let _ = tx.try_send(batch);
            }
        }
    }
}

async fn run_sender(
    me: u64,
    target: PeerTarget,
    mut client: PeerClient<tonic::transport::Channel>,
    mut rx: mpsc::Receiver<Message>,
    filter: LinkFilter,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut streaming = true;
    loop {
        if streaming {
            match stream_to_peer(me, &target, &mut client, &mut rx, &filter, &shutdown).await {
                StreamEnd::Shutdown => return,
                StreamEnd::Unimplemented => {
                    tracing::info!(peer = %target.member, "peer does not serve the raft stream; sending batch by batch");
                    streaming = false;
                    continue;
                }
                StreamEnd::Failed { status, lasted } => {
                    // A stream that had been up ending is worth a line; a peer that stays down
                    // would otherwise log every attempt.
                    if lasted > MAX_BACKOFF * 4 {
                        tracing::info!(
                            peer = %target.member,
                            "raft stream to the peer ended after {}: {}; dialling again",
                            crate::role::Span(lasted),
                            status.message()
                        );
                        backoff = Duration::from_millis(50);
                    } else {
                        tracing::debug!(peer = %target.member, error = %status, "raft stream not established; backing off");
                    }
                }
            }
        } else {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = rx.recv() => match m { Some(m) => m, None => return },
            };
            let batch = next_batch(me, &target, first, &mut rx);
            if filter.is_blocked(target.raft_id) {
                continue;
            }
            let sent = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(UNARY_TIMEOUT, client.raft(batch)) => r,
            };
            match sent {
                Ok(Ok(_)) => {
                    backoff = Duration::from_millis(50);
                    continue;
                }
                Ok(Err(status)) => {
                    tracing::debug!(peer = %target.member, error = %status, "raft batch not delivered; backing off")
                }
                Err(_) => tracing::debug!(peer = %target.member, "raft batch not acknowledged in time; backing off"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        // What queued up while the peer was unreachable is stale; raft resends.
        while rx.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use raft::eraftpb::MessageType;
    use tokio_stream::wrappers::TcpListenerStream;

    use super::super::cluster_state::MAX_BATCH;
    use super::*;
    use crate::domain::Epoch;
    use crate::proto::v1::peer_server::PeerServer;

    const ME: u64 = 1;
    const PEER: u64 = 2;

    /// What a peer serves: this version, or an earlier one.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Serves {
        Everything,
        /// The version before refresh and status streams: raft streams, refreshes and statuses
        /// by call.
        RaftStreamOnly,
        /// Before raft streams and refreshes.
        NoStreams,
        /// The version before rounds of refreshes: everything else.
        NoRounds,
    }

    /// The real service, counting how batches and refreshes arrive; as an earlier failoverd
    /// when `serves` says.
    struct CountingPeer {
        inner: PeerService,
        serves: Serves,
        unary_calls: Arc<AtomicUsize>,
        streams: Arc<AtomicUsize>,
        refresh_calls: Arc<AtomicUsize>,
        refresh_streams: Arc<AtomicUsize>,
        round_streams: Arc<AtomicUsize>,
        status_calls: Arc<AtomicUsize>,
        status_streams: Arc<AtomicUsize>,
        /// Notified when a sender ends its status stream.
        status_stream_ended: Arc<tokio::sync::Notify>,
        /// The height of each status that arrived, in the order its handler ran.
        heights: Arc<Mutex<Vec<u64>>>,
    }

    #[tonic::async_trait]
    impl Peer for CountingPeer {
        async fn raft(&self, request: Request<RaftBatch>) -> Result<Response<RaftAck>, Status> {
            self.unary_calls.fetch_add(1, Ordering::SeqCst);
            self.inner.raft(request).await
        }
        async fn raft_stream(&self, request: Request<Streaming<RaftBatch>>) -> Result<Response<RaftAck>, Status> {
            if self.serves == Serves::NoStreams {
                return Err(Status::unimplemented("failover.v1.Peer/RaftStream"));
            }
            self.streams.fetch_add(1, Ordering::SeqCst);
            self.inner.raft_stream(request).await
        }
        async fn rejoin(&self, request: Request<RejoinNotice>) -> Result<Response<RejoinAck>, Status> {
            self.inner.rejoin(request).await
        }
        async fn publish_status(&self, request: Request<MemberStatusMsg>) -> Result<Response<StatusAck>, Status> {
            self.status_calls.fetch_add(1, Ordering::SeqCst);
            let height = request.get_ref().height;
            self.heights.lock().unwrap_or_else(|p| p.into_inner()).extend(height);
            self.inner.publish_status(request).await
        }
        async fn status_stream(
            &self,
            request: Request<Streaming<MemberStatusMsg>>,
        ) -> Result<Response<StatusAck>, Status> {
            if matches!(self.serves, Serves::RaftStreamOnly | Serves::NoStreams) {
                return Err(Status::unimplemented("failover.v1.Peer/StatusStream"));
            }
            self.status_streams.fetch_add(1, Ordering::SeqCst);
            // The service's own loop, recording each height as it is taken.
            let caller = self.inner.gate.caller(&request)?;
            let mut statuses = request.into_inner();
            while let Some(msg) = self.inner.next_message(&mut statuses).await? {
                self.heights.lock().unwrap_or_else(|p| p.into_inner()).extend(msg.height);
                self.inner.take_status(&caller, msg, None)?;
            }
            self.status_stream_ended.notify_one();
            Ok(Response::new(StatusAck {}))
        }
        async fn refresh_lease(&self, request: Request<LeaseRefresh>) -> Result<Response<LeaseRefreshAck>, Status> {
            if self.serves == Serves::NoStreams {
                return Err(Status::unimplemented("failover.v1.Peer/RefreshLease"));
            }
            self.refresh_calls.fetch_add(1, Ordering::SeqCst);
            self.inner.refresh_lease(request).await
        }
        type RefreshStreamStream = ReceiverStream<Result<LeaseRefreshAnswer, Status>>;
        async fn refresh_stream(
            &self,
            request: Request<Streaming<LeaseRefresh>>,
        ) -> Result<Response<Self::RefreshStreamStream>, Status> {
            if matches!(self.serves, Serves::RaftStreamOnly | Serves::NoStreams) {
                return Err(Status::unimplemented("failover.v1.Peer/RefreshStream"));
            }
            self.refresh_streams.fetch_add(1, Ordering::SeqCst);
            self.inner.refresh_stream(request).await
        }
        type RefreshRoundStreamStream = ReceiverStream<Result<LeaseRefreshRoundAnswer, Status>>;
        async fn refresh_round_stream(
            &self,
            request: Request<Streaming<LeaseRefreshRound>>,
        ) -> Result<Response<Self::RefreshRoundStreamStream>, Status> {
            if self.serves != Serves::Everything {
                return Err(Status::unimplemented("failover.v1.Peer/RefreshRoundStream"));
            }
            self.round_streams.fetch_add(1, Ordering::SeqCst);
            self.inner.refresh_round_stream(request).await
        }
    }

    /// A member that takes calls and never answers a status (its HTTP/2 pings it answers, so the
    /// connection stays up): a frozen handler.
    struct SilentPeer;

    #[tonic::async_trait]
    impl Peer for SilentPeer {
        async fn raft(&self, _: Request<RaftBatch>) -> Result<Response<RaftAck>, Status> {
            Ok(Response::new(RaftAck {}))
        }
        async fn raft_stream(&self, _: Request<Streaming<RaftBatch>>) -> Result<Response<RaftAck>, Status> {
            Ok(Response::new(RaftAck {}))
        }
        async fn rejoin(&self, _: Request<RejoinNotice>) -> Result<Response<RejoinAck>, Status> {
            Ok(Response::new(RejoinAck {}))
        }
        async fn publish_status(&self, _: Request<MemberStatusMsg>) -> Result<Response<StatusAck>, Status> {
            std::future::pending().await
        }
        async fn status_stream(&self, _: Request<Streaming<MemberStatusMsg>>) -> Result<Response<StatusAck>, Status> {
            std::future::pending().await
        }
        async fn refresh_lease(&self, _: Request<LeaseRefresh>) -> Result<Response<LeaseRefreshAck>, Status> {
            std::future::pending().await
        }
        type RefreshStreamStream = ReceiverStream<Result<LeaseRefreshAnswer, Status>>;
        async fn refresh_stream(
            &self,
            _: Request<Streaming<LeaseRefresh>>,
        ) -> Result<Response<Self::RefreshStreamStream>, Status> {
            std::future::pending().await
        }
        type RefreshRoundStreamStream = ReceiverStream<Result<LeaseRefreshRoundAnswer, Status>>;
        async fn refresh_round_stream(
            &self,
            _: Request<Streaming<LeaseRefreshRound>>,
        ) -> Result<Response<Self::RefreshRoundStreamStream>, Status> {
            std::future::pending().await
        }
    }

    struct Served {
        inbox: mpsc::Receiver<Inbound>,
        board: StatusBoard,
        heights: Arc<Mutex<Vec<u64>>>,
        unary_calls: Arc<AtomicUsize>,
        streams: Arc<AtomicUsize>,
        refresh_calls: Arc<AtomicUsize>,
        refresh_streams: Arc<AtomicUsize>,
        round_streams: Arc<AtomicUsize>,
        status_calls: Arc<AtomicUsize>,
        status_streams: Arc<AtomicUsize>,
        status_stream_ended: Arc<tokio::sync::Notify>,
        stop: CancellationToken,
    }

    /// Serves the peer service on `listener` until `stop`.
    fn serve(listener: tokio::net::TcpListener, serves: Serves) -> Served {
        let (inbox_tx, inbox) = mpsc::channel(1024);
        let stop = CancellationToken::new();
        let (unary_calls, streams) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (refresh_calls, refresh_streams) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let round_streams = Arc::new(AtomicUsize::new(0));
        let (status_calls, status_streams) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let status_stream_ended = Arc::new(tokio::sync::Notify::new());
        let board = StatusBoard::default();
        let heights = Arc::new(Mutex::new(Vec::new()));
        let peer = CountingPeer {
            inner: PeerService {
                inbox: inbox_tx,
                board: board.clone(),
                filter: LinkFilter::default(),
                me: PEER,
                gate: PeerGate::new(
                    BTreeMap::from([(MemberId::new("a").expect("id"), ME), (MemberId::new("c").expect("id"), 3)]),
                    false,
                    super::super::peer_gate::PeerRefusals::default(),
                ),
                shutdown: stop.clone(),
            },
            serves,
            unary_calls: Arc::clone(&unary_calls),
            streams: Arc::clone(&streams),
            refresh_calls: Arc::clone(&refresh_calls),
            refresh_streams: Arc::clone(&refresh_streams),
            round_streams: Arc::clone(&round_streams),
            status_calls: Arc::clone(&status_calls),
            status_streams: Arc::clone(&status_streams),
            status_stream_ended: Arc::clone(&status_stream_ended),
            heights: Arc::clone(&heights),
        };
        spawn_server(peer, listener, &stop);
        Served {
            inbox,
            board,
            heights,
            unary_calls,
            streams,
            refresh_calls,
            refresh_streams,
            round_streams,
            status_calls,
            status_streams,
            status_stream_ended,
            stop,
        }
    }

    /// Serves `peer` on `listener` until `stop` is cancelled.
    fn spawn_server<P: Peer>(peer: P, listener: tokio::net::TcpListener, stop: &CancellationToken) {
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(PeerServer::new(peer))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), until.cancelled_owned())
                .await;
        });
    }

    /// The same port again, once the server that had it let it go (a restarted member).
    async fn listen_again(port: u16) -> tokio::net::TcpListener {
        loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => return l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn listen() -> (tokio::net::TcpListener, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        (listener, port)
    }

    fn heartbeat(commit: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.from = ME;
        m.to = PEER;
        m.commit = commit;
        m
    }

    /// A peer on 127.0.0.1 that serves the stream or only unary calls, its port, and this
    /// member's senders to it with the token that stops them.
    async fn peer_and_sender(serves: Serves) -> (Served, u16, PeerSenders, CancellationToken) {
        peer_and_sender_with(serves, Gathering::NONE).await
    }

    /// The same, with this member's senders gathering as `gathering` says.
    async fn peer_and_sender_with(
        serves: Serves,
        gathering: Gathering,
    ) -> (Served, u16, PeerSenders, CancellationToken) {
        let (listener, port) = listen().await;
        let peer = serve(listener, serves);
        let shutdown = CancellationToken::new();
        let targets = [target(PEER, "b", port)];
        let senders =
            PeerSenders::start(ME, &targets, None, LinkFilter::default(), gathering, &shutdown).expect("senders");
        (peer, port, senders, shutdown)
    }

    fn target(raft_id: u64, member: &str, port: u16) -> PeerTarget {
        PeerTarget {
            raft_id,
            member: MemberId::new(member).expect("id"),
            address: format!("127.0.0.1:{port}").parse().expect("address"),
        }
    }

    fn senders_to(port: u16, shutdown: &CancellationToken) -> PeerSenders {
        PeerSenders::start(ME, &[target(PEER, "b", port)], None, LinkFilter::default(), Gathering::NONE, shutdown)
            .expect("senders")
    }

    /// This member's (`a`'s) status at `height`.
    fn status_at(height: u64) -> MemberStatus {
        MemberStatus {
            member: MemberId::new("a").expect("id"),
            kind: crate::domain::MemberKind::Producer,
            role: crate::domain::RoleName::Standby,
            priority: 100,
            height: Some(height),
            healthy: true,
            epoch: None,
        }
    }

    /// Waits up to 10 s for `board` to hold `a`'s status at `height`.
    async fn board_shows(board: &StatusBoard, height: u64) {
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        while !board.snapshot(&ValidatorId::default_validator()).iter().any(|(s, _)| s.height == Some(height)) {
            assert!(
                tokio::time::Instant::now() < end,
                "the peer never saw height {height}: {:?}",
                board.snapshot(&ValidatorId::default_validator())
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The commit numbers of the next `n` heartbeats to arrive, failing after 10 s.
    async fn receive(inbox: &mut mpsc::Receiver<Inbound>, n: usize) -> Vec<u64> {
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await {
                Ok(Some(Inbound::Raft(ms))) => got.extend(ms.iter().map(|m| m.commit)),
                Ok(Some(Inbound::Rejoined(_) | Inbound::Refresh { .. } | Inbound::Refreshes { .. })) => {}
                Ok(None) | Err(_) => panic!("only {} of {n} messages arrived: {got:?}", got.len()),
            }
        }
        got
    }

    /// Sends heartbeats numbered from `first`, one every 20 ms, until one arrives (its number)
    /// or 10 s pass (`None`): what goes out while a link is being set up may be lost.
    async fn send_until_heard(senders: &PeerSenders, inbox: &mut mpsc::Receiver<Inbound>, first: u64) -> Option<u64> {
        for commit in first..first + 500 {
            senders.send(vec![heartbeat(commit)]);
            if let Ok(Some(Inbound::Raft(ms))) = tokio::time::timeout(Duration::from_millis(20), inbox.recv()).await {
                return ms.last().map(|m| m.commit);
            }
        }
        None
    }

    /// Sends heartbeats `from..to` one call each, spaced so the stream carries several batches.
    async fn send_range(senders: &PeerSenders, range: std::ops::Range<u64>) {
        for commit in range {
            senders.send(vec![heartbeat(commit)]);
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn raft_messages_reach_the_peer_in_order_on_one_stream() {
        let (mut peer, _, senders, shutdown) = peer_and_sender(Serves::Everything).await;
        // The first message opens the stream; the rest follow it.
        senders.send(vec![heartbeat(0)]);
        assert_eq!(receive(&mut peer.inbox, 1).await, vec![0]);
        send_range(&senders, 1..300).await;
        assert_eq!(receive(&mut peer.inbox, 299).await, (1..300).collect::<Vec<u64>>());
        assert_eq!(peer.streams.load(Ordering::SeqCst), 1, "one stream carried everything");
        assert_eq!(peer.unary_calls.load(Ordering::SeqCst), 0);
        shutdown.cancel();
        peer.stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_does_not_serve_the_stream_gets_batches_call_by_call() {
        let (mut peer, _, senders, shutdown) = peer_and_sender(Serves::NoStreams).await;
        // What went out before the peer said "unimplemented" is lost, as on a lossy link; raft
        // resends. So keep sending until messages arrive, then check the rest come in order.
        let first = send_until_heard(&senders, &mut peer.inbox, 0).await;
        let next = first.expect("nothing arrived over unary calls") + 1;
        send_range(&senders, next..next + 50).await;
        let got = receive(&mut peer.inbox, 50).await;
        assert_eq!(got, (next..next + 50).collect::<Vec<u64>>());
        assert!(peer.unary_calls.load(Ordering::SeqCst) >= 1);
        shutdown.cancel();
        peer.stop.cancel();
    }

    fn refresh_ask() -> RefreshAsk {
        RefreshAsk {
            validator: crate::domain::ValidatorId::default_validator(),
            member: MemberId::new("a").expect("id"),
            epoch: Epoch::new(7),
            ttl_ms: 400,
        }
    }

    fn within_5s() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(5)
    }

    /// Plays the raft node: answers the next refreshes with `answers`, in order.
    async fn node_answers(inbox: &mut mpsc::Receiver<Inbound>, answers: Vec<Result<(), RefreshRefusal>>) {
        for answer in answers {
            match tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await {
                Ok(Some(Inbound::Refresh { ask: got, reply })) => {
                    assert_eq!(got, refresh_ask());
                    let _ = reply.send(answer);
                }
                _ => panic!("no refresh reached the node"),
            }
        }
    }

    /// One refresh from `senders`, which the leader's node (`inbox`) answers with `answer`.
    async fn refreshed(
        senders: &PeerSenders,
        inbox: &mut mpsc::Receiver<Inbound>,
        answer: Result<(), RefreshRefusal>,
    ) -> Result<(), RefreshCallError> {
        let ask = refresh_ask();
        let (result, ()) =
            tokio::join!(senders.refresh_lease(PEER, &ask, within_5s()), node_answers(inbox, vec![answer]));
        result
    }

    // Refreshes reach the leader's node as asked, one stream carries them all, and each answer
    // comes back: accepted, or refused with the node's reason. A leader of the version before
    // streams of refreshes gets them as calls, with the same answers; one of an earlier version
    // answers "unimplemented", which the holder reads as "renew through the log".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refreshes_ride_one_stream_and_a_leader_without_it_gets_calls() {
        for serves in [Serves::Everything, Serves::RaftStreamOnly] {
            let (mut peer, _, senders, shutdown) = peer_and_sender(serves).await;
            let refused = || Err(RefreshRefusal::ExpireInFlight { epoch: Epoch::new(7) });
            let calls = async {
                let mut answers = Vec::new();
                for _ in 0..3 {
                    answers.push(senders.refresh_lease(PEER, &refresh_ask(), within_5s()).await);
                }
                answers
            };
            let (answers, ()) = tokio::join!(calls, node_answers(&mut peer.inbox, vec![Ok(()), refused(), Ok(())]));
            assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
            assert!(
                matches!(&answers[1], Err(RefreshCallError::Refused(m)) if m.contains("already proposed")),
                "{answers:?}"
            );
            let (streams, calls) =
                (peer.refresh_streams.load(Ordering::SeqCst), peer.refresh_calls.load(Ordering::SeqCst));
            match serves {
                Serves::Everything => assert_eq!((streams, calls), (1, 0), "three refreshes on one stream"),
                _ => assert_eq!((streams, calls), (0, 3), "three refreshes by call"),
            }
            let unknown = senders.refresh_lease(99, &refresh_ask(), within_5s()).await;
            assert!(matches!(unknown, Err(RefreshCallError::UnknownPeer(99))), "{unknown:?}");
            shutdown.cancel();
            peer.stop.cancel();
        }

        let (older, _, senders, shutdown) = peer_and_sender(Serves::NoStreams).await;
        let answer = senders.refresh_lease(PEER, &refresh_ask(), within_5s()).await;
        assert!(matches!(answer, Err(RefreshCallError::Unsupported)), "{answer:?}");
        shutdown.cancel();
        older.stop.cancel();
    }

    // An answer that comes after its ask's deadline is never taken for a later ask's: a late
    // "refreshed" must not confirm a refresh the leader refused. The stream of the late ask is
    // dropped (the leader drops what it had not yet taken) and the next ask opens another.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_answer_on_the_refresh_stream_never_answers_a_later_ask() {
        let (mut peer, _, senders, shutdown) = peer_and_sender(Serves::Everything).await;
        let ask = refresh_ask();
        let opened = refreshed(&senders, &mut peer.inbox, Ok(())).await;
        assert!(opened.is_ok(), "{opened:?}");
        let late = senders.refresh_lease(PEER, &ask, tokio::time::Instant::now() + Duration::from_millis(200));
        let held = async {
            match tokio::time::timeout(Duration::from_secs(10), peer.inbox.recv()).await {
                Ok(Some(Inbound::Refresh { reply, .. })) => reply,
                _ => panic!("no refresh reached the node"),
            }
        };
        let (late, late_reply) = tokio::join!(late, held);
        assert!(matches!(late, Err(RefreshCallError::Timeout)), "{late:?}");
        let _ = late_reply.send(Ok(()));
        let refused = Err(RefreshRefusal::ExpireInFlight { epoch: Epoch::new(7) });
        let next = refreshed(&senders, &mut peer.inbox, refused).await;
        assert!(matches!(&next, Err(RefreshCallError::Refused(m)) if m.contains("already proposed")), "{next:?}");
        assert_eq!(peer.refresh_streams.load(Ordering::SeqCst), 2, "the late ask's stream was kept");
        shutdown.cancel();
        peer.stop.cancel();
    }

    // The refreshes of several validators' leases overlap: each takes a stream of its own, and
    // the streams that answered carry the next round's refreshes instead of new ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_refreshes_reuse_the_streams_that_answered() {
        const AT_ONCE: usize = 4;
        let (mut peer, _, senders, shutdown) = peer_and_sender(Serves::Everything).await;
        let ask = refresh_ask();
        for round in 0..5 {
            let asks = (0..AT_ONCE).map(|_| senders.refresh_lease(PEER, &ask, within_5s()));
            // The node answers only once every ask of the round arrived: they all overlap.
            let node = async {
                let mut replies = Vec::new();
                while replies.len() < AT_ONCE {
                    match tokio::time::timeout(Duration::from_secs(10), peer.inbox.recv()).await {
                        Ok(Some(Inbound::Refresh { reply, .. })) => replies.push(reply),
                        _ => panic!("round {round}: only {} refreshes reached the node", replies.len()),
                    }
                }
                replies.into_iter().for_each(|reply| drop(reply.send(Ok(()))));
            };
            let (answers, ()) = tokio::join!(futures::future::join_all(asks), node);
            assert!(answers.iter().all(Result::is_ok), "round {round}: {answers:?}");
        }
        let (streams, calls) = (peer.refresh_streams.load(Ordering::SeqCst), peer.refresh_calls.load(Ordering::SeqCst));
        assert_eq!((streams, calls), (AT_ONCE, 0), "five rounds of {AT_ONCE} overlapping refreshes");
        shutdown.cancel();
        peer.stop.cancel();
    }

    // A leader that restarted ended the holder's stream; the holder's next refresh finds the
    // kept stream gone and asks on a new one within the same deadline, rather than failing
    // once and renewing through the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_after_the_leader_restarted_is_answered_on_a_new_stream() {
        let (mut old, port, senders, shutdown) = peer_and_sender(Serves::Everything).await;
        let ask = refresh_ask();
        let first = refreshed(&senders, &mut old.inbox, Ok(())).await;
        assert!(first.is_ok(), "{first:?}");
        old.stop.cancel();
        let listener = listen_again(port).await;
        let mut new = serve(listener, Serves::Everything);
        let second = senders.refresh_lease(PEER, &ask, within_5s());
        let node = async {
            let _ = tokio::time::timeout(Duration::from_secs(6), node_answers(&mut new.inbox, vec![Ok(())])).await;
        };
        let (second, ()) = tokio::join!(second, node);
        assert!(second.is_ok(), "{second:?}");
        assert_eq!(new.refresh_streams.load(Ordering::SeqCst), 1);
        shutdown.cancel();
        new.stop.cancel();
    }

    // A member of the cluster that sends a refresh naming no member, on its stream, gets the
    // stream ended with the reason, and nothing reaches the node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_stream_carrying_a_nameless_ask_is_ended_with_the_reason() {
        let (mut peer, _, senders, shutdown) = peer_and_sender(Serves::Everything).await;
        let nameless = LeaseRefresh { member: String::new(), epoch: 7, ttl_ms: 400, seq: 1, validator: String::new() };
        let mut client = senders.channels.get(&PEER).expect("a channel").clone();
        let ended = match client.refresh_stream(tokio_stream::once(nameless)).await {
            Ok(answers) => answers.into_inner().message().await.expect_err("the stream is ended"),
            Err(status) => status,
        };
        assert_eq!(ended.code(), tonic::Code::InvalidArgument, "{ended}");
        assert!(ended.message().contains("names no valid member"), "{ended}");
        assert!(peer.inbox.try_recv().is_err(), "the nameless ask reached the node");
        shutdown.cancel();
        peer.stop.cancel();
    }

    /// The ask of validator `v{k}`'s holding.
    fn ask_of(k: usize) -> RefreshAsk {
        RefreshAsk { validator: ValidatorId::new(format!("v{k}")).expect("id"), ..refresh_ask() }
    }

    /// Plays the raft node for one round: takes the next inbound, which must be a round, and
    /// refuses the asks of `refused` validators; the validators the round named.
    async fn node_judges_round(inbox: &mut mpsc::Receiver<Inbound>, refused: &[usize]) -> Vec<ValidatorId> {
        match tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await {
            Ok(Some(Inbound::Refreshes { asks, reply })) => {
                let refused: Vec<ValidatorId> = refused.iter().map(|k| ask_of(*k).validator).collect();
                let verdicts = asks
                    .iter()
                    .map(|a| match refused.contains(&a.validator) {
                        true => Err(RefreshRefusal::ExpireInFlight { epoch: a.epoch }),
                        false => Ok(()),
                    })
                    .collect();
                let _ = reply.send(verdicts);
                asks.into_iter().map(|a| a.validator).collect()
            }
            Ok(Some(Inbound::Refresh { ask, .. })) => panic!("{} was refreshed alone, not in a round", ask.validator),
            _ => panic!("no round of refreshes reached the node"),
        }
    }

    // A holder of several validators' leases sends the refreshes asked together as one round,
    // which the leader's node judges in one go; each refresh gets the verdict on its own ask
    // (here validator v2's is refused), and the next round rides the same stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refreshes_asked_together_leave_as_one_round_and_each_gets_its_own_verdict() {
        const AT_ONCE: usize = 5;
        let (mut peer, _, senders, shutdown) = peer_and_sender_with(Serves::Everything, Gathering::SEVERAL).await;
        for round in 0..3 {
            let asks: Vec<RefreshAsk> = (0..AT_ONCE).map(ask_of).collect();
            let calls = futures::future::join_all(asks.iter().map(|a| senders.refresh_lease(PEER, a, within_5s())));
            let (answers, named) = tokio::join!(calls, node_judges_round(&mut peer.inbox, &[2]));
            let mut named: Vec<String> = named.iter().map(ToString::to_string).collect();
            named.sort();
            assert_eq!(named, ["v0", "v1", "v2", "v3", "v4"], "round {round}");
            for (k, answer) in answers.iter().enumerate() {
                match k {
                    2 => assert!(
                        matches!(answer, Err(RefreshCallError::Refused(m)) if m.contains("already proposed")),
                        "round {round}: v2: {answer:?}"
                    ),
                    _ => assert!(answer.is_ok(), "round {round}: v{k}: {answer:?}"),
                }
            }
        }
        let streams = (peer.round_streams.load(Ordering::SeqCst), peer.refresh_streams.load(Ordering::SeqCst));
        assert_eq!(streams, (1, 0), "three rounds on one round stream, no refresh alone");
        shutdown.cancel();
        peer.stop.cancel();
    }

    // A leader of the version before rounds answers "unimplemented" to the round stream: the
    // refreshes of that round, and the next ones, go alone on its refresh stream, with the same
    // verdicts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_without_rounds_gets_each_refresh_alone() {
        const AT_ONCE: usize = 3;
        let (mut peer, _, senders, shutdown) = peer_and_sender_with(Serves::NoRounds, Gathering::SEVERAL).await;
        for round in 0..2 {
            let asks: Vec<RefreshAsk> = (0..AT_ONCE).map(ask_of).collect();
            let calls = futures::future::join_all(asks.iter().map(|a| senders.refresh_lease(PEER, a, within_5s())));
            let node = async {
                for _ in 0..AT_ONCE {
                    match tokio::time::timeout(Duration::from_secs(10), peer.inbox.recv()).await {
                        Ok(Some(Inbound::Refresh { reply, .. })) => drop(reply.send(Ok(()))),
                        _ => panic!("round {round}: a refresh did not reach the node alone"),
                    }
                }
            };
            let (answers, ()) = tokio::join!(calls, node);
            assert!(answers.iter().all(Result::is_ok), "round {round}: {answers:?}");
        }
        assert_eq!(peer.round_streams.load(Ordering::SeqCst), 0);
        assert!(peer.refresh_streams.load(Ordering::SeqCst) >= 1, "the refreshes went on refresh streams");
        shutdown.cancel();
        peer.stop.cancel();
    }

    // A round the leader must not judge ends the round stream with a status naming what was
    // wrong, and no ask of it reaches the node: none, too many, two holders, one validator
    // twice, a member that is not in the cluster, a validator name that is no name.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hostile_refresh_round_is_refused_whole_with_the_reason() {
        let (mut peer, _, senders, shutdown) = peer_and_sender(Serves::Everything).await;
        let wire = |k: usize, member: &str| LeaseRefresh {
            member: member.into(),
            epoch: 7,
            ttl_ms: 400,
            seq: 0,
            validator: format!("v{k}"),
        };
        let round = |asks: Vec<LeaseRefresh>| LeaseRefreshRound { seq: 1, asks };
        let cases = [
            ("no ask", round(vec![]), tonic::Code::InvalidArgument, "carries no refresh".to_string()),
            (
                "too many",
                round((0..=MAX_BATCH).map(|k| wire(k, "a")).collect()),
                tonic::Code::InvalidArgument,
                format!("carries {} refreshes, more than {MAX_BATCH}", MAX_BATCH + 1),
            ),
            (
                "a stranger",
                round(vec![wire(0, "a"), wire(1, "z")]),
                tonic::Code::PermissionDenied,
                "no other member of this cluster".into(),
            ),
            (
                "two holders",
                round(vec![wire(0, "a"), wire(1, "c")]),
                tonic::Code::InvalidArgument,
                "names members a and c: a round carries one holder's refreshes".into(),
            ),
            (
                "twice",
                round(vec![wire(0, "a"), wire(0, "a")]),
                tonic::Code::InvalidArgument,
                "names validator v0 twice".into(),
            ),
            (
                "no validator name",
                round(vec![LeaseRefresh { validator: "no such/name".into(), ..wire(0, "a") }]),
                tonic::Code::InvalidArgument,
                "names no valid validator".into(),
            ),
        ];
        let client = senders.channels.get(&PEER).expect("a channel").clone();
        for (what, hostile, code, reason) in cases {
            let ended = match client.clone().refresh_round_stream(tokio_stream::once(hostile)).await {
                Ok(answers) => answers.into_inner().message().await.expect_err("the stream is ended"),
                Err(status) => status,
            };
            assert_eq!(ended.code(), code, "{what}: {ended}");
            assert!(ended.message().contains(&reason), "{what}: {ended}");
            assert!(peer.inbox.try_recv().is_err(), "{what}: an ask of the round reached the node");
        }
        shutdown.cancel();
        peer.stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_never_answers_holds_up_no_status_to_the_others() {
        let (listener, port) = listen().await;
        let peer = serve(listener, Serves::Everything);
        let (silent, silent_port) = listen().await;
        let stop_silent = CancellationToken::new();
        spawn_server(SilentPeer, silent, &stop_silent);
        let shutdown = CancellationToken::new();
        let targets = [target(PEER, "b", port), target(3, "c", silent_port)];
        let senders =
            PeerSenders::start(ME, &targets, None, LinkFilter::default(), Gathering::NONE, &shutdown).expect("senders");
        // Each call may wait a minute; the silent peer's first one never ends, and `board_shows`
        // gives up after 10 s: what reaches `b` cannot have waited for `c`.
        let patient = Duration::from_secs(60);
        for height in 1..=3 {
            senders.publish_status(&ValidatorId::default_validator(), &status_at(height), patient);
            board_shows(&peer.board, height).await;
        }
        // A burst ends with its newest status, and every status arrived after the one before.
        for height in 4..=200 {
            senders.publish_status(&ValidatorId::default_validator(), &status_at(height), patient);
        }
        board_shows(&peer.board, 200).await;
        let heights = peer.heights.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert!(heights.windows(2).all(|w| w[0] < w[1]), "statuses arrived out of order: {heights:?}");
        assert_eq!(heights.last(), Some(&200));
        let (streams, calls) = (peer.status_streams.load(Ordering::SeqCst), peer.status_calls.load(Ordering::SeqCst));
        assert_eq!((streams, calls), (1, 0), "statuses on one stream");
        shutdown.cancel();
        stop_silent.cancel();
        peer.stop.cancel();
    }

    // A peer of the version before status streams gets every status by call, in order; a peer
    // that ends the stream (it stopped, or refused a status) gets the next status on a new one;
    // a member that stops ends its stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statuses_go_by_call_to_a_peer_without_the_stream_and_on_a_new_stream_after_one_ends() {
        let (peer, _, senders, shutdown) = peer_and_sender(Serves::RaftStreamOnly).await;
        let patient = Duration::from_secs(10);
        for height in 1..=3 {
            senders.publish_status(&ValidatorId::default_validator(), &status_at(height), patient);
            board_shows(&peer.board, height).await;
        }
        assert_eq!(peer.status_calls.load(Ordering::SeqCst), 3, "the first status and the rest by call");
        shutdown.cancel();
        peer.stop.cancel();

        let (listener, port) = listen().await;
        let first = serve(listener, Serves::Everything);
        let shutdown = CancellationToken::new();
        let senders = senders_to(port, &shutdown);
        senders.publish_status(&ValidatorId::default_validator(), &status_at(1), patient);
        board_shows(&first.board, 1).await;
        first.stop.cancel();
        // The same port, served again: the old stream ended with the first server.
        let listener = listen_again(port).await;
        let second = serve(listener, Serves::Everything);
        for height in 2.. {
            senders.publish_status(&ValidatorId::default_validator(), &status_at(height), patient);
            if tokio::time::timeout(Duration::from_millis(200), board_shows(&second.board, height)).await.is_ok() {
                break;
            }
            assert!(height < 50, "no status reached the restarted peer");
        }
        assert_eq!(second.status_streams.load(Ordering::SeqCst), 1, "a new stream to the restarted peer");
        // A member that stops ends its status streams: no call outlives it at the peer.
        shutdown.cancel();
        drop(senders);
        let ended = tokio::time::timeout(Duration::from_secs(5), second.status_stream_ended.notified()).await;
        assert!(ended.is_ok(), "the stopped member's status stream is still open at the peer");
        second.stop.cancel();
    }

    #[test]
    fn an_older_status_of_the_same_run_never_replaces_a_newer_one() {
        let board = StatusBoard::default();
        let d = ValidatorId::default_validator();
        let order = |run, seq| StatusOrder { run, seq };
        let height = |board: &StatusBoard| board.snapshot(&d).first().and_then(|(s, _)| s.height);
        assert!(board.put_in_order(&d, status_at(2), order(7, 2)));
        assert!(!board.put_in_order(&d, status_at(1), order(7, 1)), "seq 1 arrived after seq 2");
        assert!(!board.put_in_order(&d, status_at(1), order(7, 2)), "the same seq twice");
        assert_eq!(height(&board), Some(2));
        // A restarted sender counts again from 1 under a new run; an earlier version sends no order.
        assert!(board.put_in_order(&d, status_at(3), order(8, 1)));
        assert!(board.put_in_order(&d, status_at(4), order(0, 0)));
        assert!(board.put_in_order(&d, status_at(5), order(0, 0)));
        assert_eq!(height(&board), Some(5));
    }

    #[test]
    fn each_validator_keeps_its_own_statuses_and_the_order_of_one_does_not_hide_another() {
        let board = StatusBoard::default();
        let (a, b) = (ValidatorId::new("cosmoshub").expect("id"), ValidatorId::new("osmosis").expect("id"));
        let order = |seq| StatusOrder { run: 7, seq };
        assert!(board.put_in_order(&a, status_at(10), order(2)));
        assert!(board.put_in_order(&b, status_at(20), order(1)), "b's first status, sent before a's newest");
        let height = |v: &ValidatorId| board.snapshot(v).first().and_then(|(s, _)| s.height);
        assert_eq!((height(&a), height(&b)), (Some(10), Some(20)));
        assert!(board.snapshot(&ValidatorId::default_validator()).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_that_stops_ends_its_streams_and_the_sender_reaches_its_successor() {
        let (mut old, port, senders, shutdown) = peer_and_sender(Serves::Everything).await;
        senders.send(vec![heartbeat(1)]);
        assert_eq!(receive(&mut old.inbox, 1).await, vec![1]);
        old.stop.cancel();
        // The same address, served anew (a restarted member).
        let listener = listen_again(port).await;
        let mut new = serve(listener, Serves::Everything);
        let arrived = send_until_heard(&senders, &mut new.inbox, 2).await;
        assert!(arrived.is_some(), "the restarted member never heard from the sender");
        assert_eq!(new.streams.load(Ordering::SeqCst), 1);
        shutdown.cancel();
        new.stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_from_outside_the_cluster_is_refused_naming_the_raft_id() {
        let (listener, port) = listen().await;
        let mut peer = serve(listener, Serves::Everything);
        let mut client = PeerClient::connect(format!("http://127.0.0.1:{port}")).await.expect("connect");
        let mut stranger = heartbeat(7);
        stranger.from = 9;
        let batch = RaftBatch { from: 9, messages: vec![stranger.write_to_bytes().expect("encode")] };
        let refused = client.raft_stream(tokio_stream::iter(vec![batch])).await.expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("raft id 9"), "{}", refused.message());
        assert!(peer.inbox.try_recv().is_err(), "nothing from a stranger reaches the node");
        // A member that lies about who sent a message inside its batch is refused too.
        let mut forged = heartbeat(8);
        forged.from = 3;
        let batch = RaftBatch { from: ME, messages: vec![forged.write_to_bytes().expect("encode")] };
        let refused = client.raft_stream(tokio_stream::iter(vec![batch])).await.expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("messages[0]"), "{}", refused.message());
        peer.stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_carrying_a_nested_group_bomb_is_refused_before_parsing_and_nothing_is_delivered() {
        let (listener, port) = listen().await;
        let mut peer = serve(listener, Serves::Everything);
        let mut client = PeerClient::connect(format!("http://127.0.0.1:{port}")).await.expect("connect");
        let mut bomb = heartbeat(1).write_to_bytes().expect("encode");
        let valid = bomb.len();
        // Field 99, start group (tag 0x9b 0x06), opened 100,000 times.
        bomb.extend([0x9b, 0x06].repeat(100_000));
        let batch = RaftBatch { from: ME, messages: vec![heartbeat(0).write_to_bytes().expect("encode"), bomb] };
        let refused = client.raft(batch).await.expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        let text = refused.message();
        assert!(text.contains("messages[1]") && text.contains(&format!("byte {valid}")), "{text}");
        assert!(text.contains("field 99") && text.contains("start-group"), "{text}");
        assert!(peer.inbox.try_recv().is_err(), "not even the good message before it is delivered");
        peer.stop.cancel();
    }
}
