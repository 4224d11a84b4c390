//! The operator's control API (proto/failover/v1/control.proto) on the member's unix socket.
//!
//! It reads the member's view and records operator intents through the coordinator, after
//! checking them against the cluster's published status; it never touches a producer. Every
//! mutating call is logged with the caller's peer credentials (uid/pid on the socket).

pub mod client;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::coord::raft::RaftCoordinator;
use crate::coord::{CoordError, Coordinator};
use crate::domain::{KeyId, LeaseView, MemberId, MemberKind, MemberStatus, RoleName};
use crate::proto::v1::control_server::{Control, ControlServer};
use crate::proto::v1::{LeaseState, PromoteReply, PromoteRequest, RaftState, StatusReply, StatusRequest};

pub struct ControlService {
    pub me: MemberId,
    pub kind: MemberKind,
    pub key: KeyId,
    pub coord: Arc<dyn Coordinator>,
    pub raft: Arc<RaftCoordinator>,
    /// What the member's loop published last.
    pub own_status: watch::Receiver<Option<MemberStatus>>,
    pub members: Vec<(MemberId, MemberKind)>,
    pub max_lag_on_failover: u64,
    pub status_stale_after: Duration,
    pub call_timeout: Duration,
}

fn refuse(e: CoordError) -> Status {
    match e {
        CoordError::Timeout { .. } | CoordError::Unavailable(_) => Status::unavailable(e.to_string()),
        other => Status::failed_precondition(other.to_string()),
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn promote(&self, request: Request<PromoteRequest>) -> Result<Response<PromoteReply>, Status> {
        let caller = request
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .map_or("unknown".to_string(), |c| format!("uid {} pid {:?}", c.uid(), c.pid()));
        let req = request.into_inner();
        tracing::info!(%caller, target = %req.target, force = req.force, "control: promote requested");
        if req.force {
            return Err(Status::unimplemented("promote --force is not available yet"));
        }
        let target = MemberId::new(req.target.clone()).map_err(|e| Status::invalid_argument(format!("target: {e}")))?;
        match self.members.iter().find(|(id, _)| id == &target) {
            None => return Err(Status::failed_precondition(format!("{target} is not a member of this cluster"))),
            Some((_, MemberKind::Witness)) => {
                return Err(Status::failed_precondition(format!("{target} is a witness and never produces")));
            }
            Some(_) => {}
        }
        let deadline = Instant::now() + self.call_timeout;
        let cluster = self.coord.cluster_status(deadline).await.map_err(refuse)?;
        let best = cluster.iter().filter(|r| r.age <= self.status_stale_after).filter_map(|r| r.status.height).max();
        let Some(report) = cluster.iter().find(|r| r.status.member == target) else {
            return Err(Status::failed_precondition(format!("{target} has published no status; is it running?")));
        };
        if report.age > self.status_stale_after {
            return Err(Status::failed_precondition(format!(
                "{target}'s status is {:?} old; is it running?",
                report.age
            )));
        }
        if report.status.role != RoleName::Standby || !report.status.healthy {
            return Err(Status::failed_precondition(format!(
                "{target} is {} and {}; only a healthy standby can take over",
                report.status.role,
                if report.status.healthy { "healthy" } else { "unhealthy" }
            )));
        }
        let lag = match (best, report.status.height) {
            (Some(b), Some(h)) => b.saturating_sub(h),
            _ => u64::MAX,
        };
        if lag > self.max_lag_on_failover {
            return Err(Status::failed_precondition(format!(
                "{target} is {lag} blocks behind (max_lag_on_failover {})",
                self.max_lag_on_failover
            )));
        }
        let transfer = self.coord.request_transfer(&target, deadline).await.map_err(refuse)?;
        Ok(Response::new(PromoteReply {
            target: transfer.to.to_string(),
            epoch: transfer.epoch.get(),
            message: format!("handing over from epoch {} to {}", transfer.epoch, transfer.to),
        }))
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let own = self.own_status.borrow().clone();
        let deadline = Instant::now() + self.call_timeout;
        let (lease, watermark, intents) = tokio::join!(
            self.coord.lease(deadline),
            self.coord.watermark(&self.key, deadline),
            self.coord.intents(deadline)
        );
        let mut store_errors = Vec::new();
        let lease = match (lease, intents) {
            (Ok(lease), Ok(intents)) => {
                let (holder, epoch) = match lease {
                    LeaseView::Free { epoch } => (String::new(), epoch.get()),
                    LeaseView::Held { holder, epoch } => (holder.to_string(), epoch.get()),
                };
                Some(LeaseState {
                    holder,
                    epoch,
                    paused: intents.paused,
                    transfer_to: intents.transfer.map(|t| t.to.to_string()).unwrap_or_default(),
                })
            }
            (Err(e), _) | (_, Err(e)) => {
                store_errors.push(format!("lease: {e}"));
                None
            }
        };
        let watermark = match watermark {
            Ok(w) => w.map(Into::into),
            Err(e) => {
                store_errors.push(format!("watermark: {e}"));
                None
            }
        };
        let info = self.raft.info();
        let leader = info.leader.and_then(|id| self.raft.member_of(id)).map(ToString::to_string).unwrap_or_default();
        Ok(Response::new(StatusReply {
            member: self.me.to_string(),
            kind: self.kind.to_string(),
            role: own.as_ref().map(|s| s.role.to_string()).unwrap_or_default(),
            height: own.as_ref().and_then(|s| s.height),
            healthy: own.as_ref().is_some_and(|s| s.healthy),
            lease,
            key: self.key.to_string(),
            watermark,
            store_error: store_errors.join("; "),
            raft: Some(RaftState {
                leader,
                term: info.term,
                commit: info.commit,
                applied: info.applied,
                failed: info.failed.unwrap_or_default(),
            }),
        }))
    }
}

/// Serves the control API on `socket` (mode 0660) until `shutdown`.
pub async fn serve(socket: &Path, service: ControlService, shutdown: CancellationToken) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(ControlServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(std::io::Error::other)
}
