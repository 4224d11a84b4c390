//! The operator's control API (proto/failover/v1/control.proto) on the member's unix socket.
//!
//! It reads the member's view and records operator intents through the coordinator, after
//! checking them against the cluster's published status; it never touches a producer. Every
//! mutating call is logged with the caller's peer credentials (uid/pid on the socket).

pub mod client;
mod intents;
mod view;
mod watermark;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::config::MemberConfig;
use crate::coord::raft::RaftCoordinator;
use crate::coord::{CoordError, Coordinator};
use crate::domain::{KeyId, MemberId, MemberKind, MemberStatus};
use crate::proto::v1::control_server::{Control, ControlServer};
use crate::proto::v1::{
    DemoteRequest, MembersReply, MembersRequest, PauseReply, PauseRequest, PromoteReply, PromoteRequest, StatusReply,
    StatusRequest, WatermarkExportReply, WatermarkExportRequest, WatermarkImportReply, WatermarkImportRequest,
};

pub struct ControlService {
    pub me: MemberId,
    pub kind: MemberKind,
    pub key: KeyId,
    pub coord: Arc<dyn Coordinator>,
    /// The embedded raft backend, when it is the store: its state is shown in status.
    pub raft: Option<Arc<RaftCoordinator>>,
    /// What the member's loop published last.
    pub own_status: watch::Receiver<Option<MemberStatus>>,
    pub members: Vec<MemberConfig>,
    pub max_lag_on_failover: u64,
    pub status_stale_after: Duration,
    pub call_timeout: Duration,
}

/// Who called, for the log: peer credentials on the unix socket.
fn caller<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
        .map_or("unknown".to_string(), |c| format!("uid {} pid {:?}", c.uid(), c.pid()))
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
        let caller = caller(&request);
        let req = request.into_inner();
        tracing::info!(%caller, target = %req.target, force = req.force, "control: promote requested");
        self.promote_to(req).await.map(Response::new)
    }

    async fn demote(&self, request: Request<DemoteRequest>) -> Result<Response<PromoteReply>, Status> {
        tracing::info!(caller = %caller(&request), "control: demote requested");
        self.demote_active().await.map(Response::new)
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        Ok(Response::new(self.own_view().await))
    }

    async fn members(&self, _request: Request<MembersRequest>) -> Result<Response<MembersReply>, Status> {
        Ok(Response::new(self.cluster_view().await))
    }

    async fn pause(&self, request: Request<PauseRequest>) -> Result<Response<PauseReply>, Status> {
        tracing::info!(caller = %caller(&request), "control: pause requested");
        self.set_paused(true).await.map(Response::new)
    }

    async fn resume(&self, request: Request<PauseRequest>) -> Result<Response<PauseReply>, Status> {
        tracing::info!(caller = %caller(&request), "control: resume requested");
        self.set_paused(false).await.map(Response::new)
    }

    async fn watermark_export(
        &self,
        _request: Request<WatermarkExportRequest>,
    ) -> Result<Response<WatermarkExportReply>, Status> {
        self.export_watermark().await.map(Response::new)
    }

    async fn watermark_import(
        &self,
        request: Request<WatermarkImportRequest>,
    ) -> Result<Response<WatermarkImportReply>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        tracing::info!(%caller, key = %req.key, hrs = ?req.hrs, "control: watermark import requested");
        self.import_watermark(req).await.map(Response::new)
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
