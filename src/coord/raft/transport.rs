//! Carrying raft messages and member status between members: the tonic `Peer` service (server
//! side) and one sender task per peer (client side) that batches messages, reconnects with
//! backoff and never blocks the raft loop — a message that cannot be queued is dropped, which
//! raft tolerates.
//!
//! Optional mutual TLS: a member only accepts peers whose certificate chains to the cluster CA,
//! and only dials peers whose certificate names the expected member id. A [`LinkFilter`] drops
//! traffic to or from chosen peers: the fault-injection hook that tests and chaos runs use to
//! partition a member without touching the network.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::config::{PeerAddress, TlsConfig};
use crate::domain::{MemberId, MemberStatus};
use crate::proto::v1::peer_client::PeerClient;
use crate::proto::v1::peer_server::Peer;
use crate::proto::v1::{MemberStatusMsg, RaftAck, RaftBatch, RejoinAck, RejoinNotice, StatusAck};

/// What the peer service hands to the raft node.
pub enum Inbound {
    Raft(Vec<Message>),
    /// The member with this raft id rejoined with an empty log.
    Rejoined(u64),
}

/// Messages one peer's queue holds before new ones are dropped.
const QUEUE: usize = 4096;
/// Messages sent in one RPC at most.
const BATCH: usize = 512;
const MAX_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read {what} {path}: {source}")]
    ReadTls { what: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("peer address {0} is not usable as a URI: {1}")]
    BadAddress(String, String),
}

/// Certificates for mutual TLS between members.
#[derive(Clone)]
pub struct PeerTls {
    ca: Certificate,
    identity: Identity,
}

impl PeerTls {
    pub fn load(tls: &TlsConfig) -> Result<PeerTls, TransportError> {
        let read = |what, path: &std::path::Path| {
            std::fs::read(path).map_err(|source| TransportError::ReadTls { what, path: path.to_path_buf(), source })
        };
        let ca = Certificate::from_pem(read("tls.ca_file", &tls.ca_file)?);
        let identity = Identity::from_pem(read("tls.cert_file", &tls.cert_file)?, read("tls.key_file", &tls.key_file)?);
        Ok(PeerTls { ca, identity })
    }

    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity.clone()).client_ca_root(self.ca.clone())
    }

    /// Client config that accepts only a certificate naming `peer` (as a DNS SAN).
    pub fn client(&self, peer: &MemberId) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(peer.as_str())
    }
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

/// The latest status each member published, with when it arrived (local monotonic clock).
#[derive(Clone, Default)]
pub struct StatusBoard {
    entries: Arc<Mutex<BTreeMap<MemberId, (MemberStatus, Instant)>>>,
}

impl StatusBoard {
    pub fn put(&self, status: MemberStatus) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(status.member.clone(), (status, Instant::now()));
    }

    pub fn snapshot(&self) -> Vec<(MemberStatus, Duration)> {
        let now = Instant::now();
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(s, at)| (s.clone(), now.saturating_duration_since(*at)))
            .collect()
    }
}

/// The server side of the `Peer` service.
pub struct PeerService {
    /// Where decoded raft messages go: the node task's inbox.
    pub inbox: mpsc::Sender<Inbound>,
    pub board: StatusBoard,
    pub filter: LinkFilter,
    /// Raft ids of the configured members: batches from anyone else are refused.
    pub known: HashSet<u64>,
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, request: Request<RaftBatch>) -> Result<Response<RaftAck>, Status> {
        let batch = request.into_inner();
        if !self.known.contains(&batch.from) {
            return Err(Status::permission_denied(format!("raft id {} is not a member of this cluster", batch.from)));
        }
        if self.filter.is_blocked(batch.from) {
            return Err(Status::unavailable("link blocked by fault injection"));
        }
        let mut messages = Vec::with_capacity(batch.messages.len());
        for (i, bytes) in batch.messages.iter().enumerate() {
            let m = Message::parse_from_bytes(bytes)
                .map_err(|e| Status::invalid_argument(format!("messages[{i}] is not a raft message: {e}")))?;
            if m.from != batch.from {
                return Err(Status::invalid_argument(format!(
                    "messages[{i}] claims to come from raft id {} inside a batch from {}",
                    m.from, batch.from
                )));
            }
            messages.push(m);
        }
        // A full inbox means the node is behind; dropping is what the network would do.
        let _ = self.inbox.try_send(Inbound::Raft(messages));
        Ok(Response::new(RaftAck {}))
    }

    async fn rejoin(&self, request: Request<RejoinNotice>) -> Result<Response<RejoinAck>, Status> {
        let id = request.into_inner().raft_id;
        if !self.known.contains(&id) {
            return Err(Status::permission_denied(format!("raft id {id} is not a member of this cluster")));
        }
        if self.filter.is_blocked(id) {
            return Err(Status::unavailable("link blocked by fault injection"));
        }
        let _ = self.inbox.try_send(Inbound::Rejoined(id));
        Ok(Response::new(RejoinAck {}))
    }

    async fn publish_status(&self, request: Request<MemberStatusMsg>) -> Result<Response<StatusAck>, Status> {
        let status =
            MemberStatus::try_from(request.into_inner()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.board.put(status);
        Ok(Response::new(StatusAck {}))
    }
}

/// One known peer: where to dial it and who it must be.
#[derive(Clone, Debug)]
pub struct PeerTarget {
    pub raft_id: u64,
    pub member: MemberId,
    pub address: PeerAddress,
}

/// Sender side: a queue and a task per peer.
pub struct PeerSenders {
    queues: HashMap<u64, mpsc::Sender<Message>>,
    channels: HashMap<u64, PeerClient<tonic::transport::Channel>>,
    filter: LinkFilter,
}

fn endpoint(target: &PeerTarget, tls: Option<&PeerTls>) -> Result<Endpoint, TransportError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = format!("{scheme}://{}", target.address);
    let mut ep = Endpoint::from_shared(uri.clone())
        .map_err(|e| TransportError::BadAddress(uri.clone(), e.to_string()))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(1))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        ep = ep.tls_config(tls.client(&target.member)).map_err(|e| TransportError::BadAddress(uri, e.to_string()))?;
    }
    Ok(ep)
}

impl PeerSenders {
    /// Starts one sender task per peer; they stop when `shutdown` is cancelled.
    pub fn start(
        me: u64,
        peers: &[PeerTarget],
        tls: Option<&PeerTls>,
        filter: LinkFilter,
        shutdown: &CancellationToken,
    ) -> Result<PeerSenders, TransportError> {
        let mut queues = HashMap::new();
        let mut channels = HashMap::new();
        for target in peers {
            let client = PeerClient::new(endpoint(target, tls)?.connect_lazy());
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.insert(target.raft_id, tx);
            channels.insert(target.raft_id, client.clone());
            tokio::spawn(run_sender(me, target.clone(), client, rx, filter.clone(), shutdown.clone()));
        }
        Ok(PeerSenders { queues, channels, filter })
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

    /// Pushes `status` to every reachable peer, each call bounded by `timeout`.
    pub async fn publish_status(&self, status: &MemberStatus, timeout: Duration) {
        let msg = MemberStatusMsg::from(status);
        let mut calls = tokio::task::JoinSet::new();
        for (id, client) in &self.channels {
            if self.filter.is_blocked(*id) {
                continue;
            }
            let mut client = client.clone();
            let msg = msg.clone();
            calls.spawn(async move {
                let _ = tokio::time::timeout(timeout, client.publish_status(msg)).await;
            });
        }
        while calls.join_next().await.is_some() {}
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

async fn run_sender(
    me: u64,
    target: PeerTarget,
    mut client: PeerClient<tonic::transport::Channel>,
    mut rx: mpsc::Receiver<Message>,
    filter: LinkFilter,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if filter.is_blocked(target.raft_id) {
            continue;
        }
        let mut messages = Vec::with_capacity(batch.len());
        for m in &batch {
            match m.write_to_bytes() {
                Ok(b) => messages.push(b),
                Err(e) => tracing::error!(peer = %target.member, error = %e, "cannot encode a raft message"),
            }
        }
        let sent = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = client.raft(RaftBatch { from: me, messages }) => r,
        };
        match sent {
            Ok(_) => backoff = Duration::from_millis(50),
            Err(status) => {
                tracing::debug!(peer = %target.member, error = %status, "raft batch not delivered; backing off");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                // What queued up while the peer was unreachable is stale; raft resends.
                while rx.try_recv().is_ok() {}
            }
        }
    }
}
