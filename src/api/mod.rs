//! The operator's control API (proto/failover/v1/control.proto) on the member's unix socket and,
//! optionally, on TCP with mutual TLS.
//!
//! It reads the member's view and records operator intents through the coordinator, after
//! checking them against the cluster's published status; it never touches a producer. Only
//! operators may call it: on the socket, whoever its file mode lets in; on TCP, only a
//! certificate that names an operator (`failoverd://operator/<name>`) — a member's certificate
//! is refused. Every mutating call is logged once it is decided, in one INFO line and one
//! `operator` event: its caller (uid/pid on the socket, the operator's name on TCP), what was
//! asked, and whether it was accepted or refused, and why.

pub mod client;
mod intents;
mod router;
mod view;
mod watermark;

pub use router::{ControlRouter, VALIDATOR_HEADER, service_named};
pub use watermark::{MAX_IMPORT_ENTRIES, check_import_bound, import_entries};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::config::MemberConfig;
use crate::coord::{CoordError, Coordinator};
use crate::domain::{KeyId, MemberId, MemberKind, MemberStatus};
use crate::events::{EventKind, EventLog, EventRecord};
use crate::proto::v1::control_server::{Control, ControlServer};
use crate::proto::v1::{
    DemoteRequest, Event, EventsRequest, MembersReply, MembersRequest, PauseReply, PauseRequest, PromoteReply,
    PromoteRequest, StatusReply, StatusRequest, WatermarkExportReply, WatermarkExportRequest, WatermarkImportReply,
    WatermarkImportRequest,
};

#[derive(Clone)]
pub struct ControlService {
    /// The validator this service is about.
    pub validator: crate::domain::ValidatorId,
    pub me: MemberId,
    pub kind: MemberKind,
    pub key: KeyId,
    /// The store; its backend's own state (the embedded raft quorum) is shown in status too.
    pub coord: Arc<dyn Coordinator>,
    /// What the member's loop published last.
    pub own_status: watch::Receiver<Option<MemberStatus>>,
    /// Why this member last stepped down or was fenced, in words.
    pub last_reason: watch::Receiver<String>,
    /// Why the member's last decision did what it did, or nothing.
    /// The last decision's reason (`None` before the first); read by borrow, never awaited.
    pub why: watch::Receiver<Option<crate::role::Why>>,
    pub members: Vec<MemberConfig>,
    pub max_lag_on_failover: u64,
    /// `failover.import_max_ahead`: how far above the best height the cluster knows an import
    /// may set a watermark without `force`.
    pub import_max_ahead: u64,
    pub status_stale_after: Duration,
    pub call_timeout: Duration,
    /// The member's event stream; operator actions are recorded in it too.
    pub events: Arc<EventLog>,
}

/// Who called, for the log: peer credentials on the unix socket, the operator its certificate
/// names on TLS.
fn caller<T>(request: &Request<T>) -> String {
    if let Some(cred) = request.extensions().get::<tonic::transport::server::UdsConnectInfo>().and_then(|i| i.peer_cred)
    {
        let pid = cred.pid().map_or_else(|| "unknown".to_string(), |p| p.to_string());
        return format!("uid {} pid {pid}", cred.uid());
    }
    let address = request.remote_addr().map_or("unknown address".to_string(), |a| a.to_string());
    match crate::tls::caller_identity(request) {
        Some(Ok(identity)) => format!("{identity} from {address}"),
        _ => format!("unknown caller from {address}"),
    }
}

/// The TCP control API's admission rule: only a certificate that names an operator. A member's
/// certificate is refused — members drive each other through the store, never through this
/// API — and so is one with no failoverd identity.
fn operators_only(request: Request<()>) -> Result<Request<()>, Status> {
    let address = request.remote_addr().map_or("unknown address".to_string(), |a| a.to_string());
    match crate::tls::caller_identity(&request) {
        Some(Ok(crate::tls::PeerIdentity::Operator(_))) => Ok(request),
        Some(Ok(other)) => {
            tracing::warn!(from = %address, "control API call refused: the certificate names {other}; only operators may use it");
            Err(Status::permission_denied(format!(
                "this certificate names {other}; the control API accepts only operator certificates (`failoverd tls operator NAME`)"
            )))
        }
        Some(Err(e)) => {
            tracing::warn!(from = %address, "control API call refused: {e}");
            Err(Status::permission_denied(format!("client certificate refused: {e}")))
        }
        None => Err(Status::permission_denied("the TCP control API needs an operator certificate")),
    }
}

fn refuse(e: CoordError) -> Status {
    match e {
        CoordError::Timeout { .. } | CoordError::Unavailable(_) => Status::unavailable(e.to_string()),
        other => Status::failed_precondition(other.to_string()),
    }
}

impl ControlService {
    /// Logs a mutating call once it is decided — who asked, what, and whether it was accepted
    /// or refused and why — as one INFO line, and records the same sentence in the event
    /// stream. `accepted` says what an accepted call did.
    fn operator_action<T>(
        &self,
        caller: &str,
        what: &str,
        result: &Result<T, Status>,
        accepted: impl FnOnce(&T) -> String,
    ) {
        let line = format!("{what} requested by {caller}: {}", outcome(result, accepted));
        tracing::info!("control: {line}");
        self.events.emit(EventKind::Operator, None, line);
    }
}

/// "accepted: …", "refused: …" or "not done: …" (the store did not answer), for the log.
fn outcome<T>(result: &Result<T, Status>, accepted: impl FnOnce(&T) -> String) -> String {
    match result {
        Ok(reply) => format!("accepted: {}", accepted(reply)),
        Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) => {
            format!("not done: {}", s.message())
        }
        Err(s) => format!("refused: {}", s.message()),
    }
}

fn wire_event(e: EventRecord) -> Event {
    Event {
        seq: e.seq,
        unix_ms: e.unix_ms,
        member: e.member.to_string(),
        validator: e.validator.map(|v| v.to_string()).unwrap_or_default(),
        kind: e.kind.as_str().to_string(),
        epoch: e.epoch.map(|e| e.get()),
        cause: e.cause.to_string(),
        message: e.message,
    }
}

type EventStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Event, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    type EventsStream = EventStream;

    async fn events(&self, request: Request<EventsRequest>) -> Result<Response<EventStream>, Status> {
        let follow = request.into_inner().follow;
        let (history, mut live) = self.events.follow();
        let stream = async_stream_of(
            history,
            follow.then(|| {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Status>>(64);
                tokio::spawn(async move {
                    loop {
                        let item = match live.recv().await {
                            Ok(e) => Ok(wire_event(e)),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => Err(Status::data_loss(
                                format!("this follower fell {n} events behind and missed them; follow again"),
                            )),
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        };
                        let end = item.is_err();
                        if tx.send(item).await.is_err() || end {
                            return;
                        }
                    }
                });
                rx
            }),
        );
        Ok(Response::new(stream))
    }

    async fn promote(&self, request: Request<PromoteRequest>) -> Result<Response<PromoteReply>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        let what = format!("promote {}{}", req.target, if req.force { " --force" } else { "" });
        let result = self.promote_to(req).await;
        self.operator_action(&caller, &what, &result, |r| r.message.clone());
        result.map(Response::new)
    }

    async fn demote(&self, request: Request<DemoteRequest>) -> Result<Response<PromoteReply>, Status> {
        let result = self.demote_active().await;
        self.operator_action(&caller(&request), "demote", &result, |r| r.message.clone());
        result.map(Response::new)
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        Ok(Response::new(self.own_view().await))
    }

    async fn members(&self, _request: Request<MembersRequest>) -> Result<Response<MembersReply>, Status> {
        Ok(Response::new(self.cluster_view().await))
    }

    async fn pause(&self, request: Request<PauseRequest>) -> Result<Response<PauseReply>, Status> {
        let result = self.set_paused(true).await;
        self.operator_action(&caller(&request), "pause", &result, |_| "maintenance mode is on".into());
        result.map(Response::new)
    }

    async fn resume(&self, request: Request<PauseRequest>) -> Result<Response<PauseReply>, Status> {
        let result = self.set_paused(false).await;
        self.operator_action(&caller(&request), "resume", &result, |_| "maintenance mode is off".into());
        result.map(Response::new)
    }

    async fn watermark_export(
        &self,
        _request: Request<WatermarkExportRequest>,
    ) -> Result<Response<WatermarkExportReply>, Status> {
        self.export_watermark().await.map(Response::new)
    }

    async fn validators(
        &self,
        _request: Request<crate::proto::v1::ValidatorsRequest>,
    ) -> Result<Response<crate::proto::v1::ValidatorsReply>, Status> {
        Ok(Response::new(crate::proto::v1::ValidatorsReply { validators: vec![self.validator.to_string()] }))
    }

    async fn watermark_import(
        &self,
        request: Request<WatermarkImportRequest>,
    ) -> Result<Response<WatermarkImportReply>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        let n = req.entries.len();
        let flags = match (req.dry_run, req.force) {
            (false, false) => "",
            (true, false) => " (dry run)",
            (false, true) => " (--force)",
            (true, true) => " (dry run, --force)",
        };
        let entries = if n == 1 { "entry" } else { "entries" };
        let what = format!("watermark import of {n} {entries}{flags}");
        let result = self.import_watermarks(req).await;
        self.operator_action(&caller, &what, &result, import_summary);
        result.map(Response::new)
    }
}

/// What an accepted import did, per key, for the log.
fn import_summary(r: &WatermarkImportReply) -> String {
    let keys: Vec<String> = r
        .changes
        .iter()
        .map(|c| {
            let after = c.after.and_then(|w| w.hrs).and_then(|h| crate::domain::Hrs::try_from(h).ok());
            match (after, c.changed) {
                (Some(h), true) => format!("{} raised to {h}", c.key),
                (Some(h), false) => format!("{} unchanged at {h}", c.key),
                (None, _) => format!("{} unchanged", c.key),
            }
        })
        .collect();
    let dry = if r.dry_run { "nothing written (dry run); " } else { "" };
    format!("{dry}{}", keys.join(", "))
}

/// The history, then (when following) what `live` delivers.
fn async_stream_of(
    history: Vec<EventRecord>,
    live: Option<tokio::sync::mpsc::Receiver<Result<Event, Status>>>,
) -> EventStream {
    use tokio_stream::StreamExt;
    let past = tokio_stream::iter(history.into_iter().map(|e| Ok(wire_event(e))));
    match live {
        None => Box::pin(past),
        Some(rx) => Box::pin(past.chain(tokio_stream::wrappers::ReceiverStream::new(rx))),
    }
}

/// Serves the control API on TCP with mutual TLS until `shutdown`: a client must present a
/// certificate signed by `tls.ca_file`, or the handshake fails, and that certificate must name
/// an operator, or every call is refused.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    tls: &crate::config::TlsConfig,
    service: impl Control,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let tls = crate::tls::TlsMaterial::load(tls).map_err(|e| e.to_string())?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .tls_config(tls.tonic_server())
        .map_err(|e| format!("TLS for api.listen: {e}"))?
        .add_service(ControlServer::with_interceptor(service, operators_only))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(|e| e.to_string())
}

/// Binds `listen` for [`serve_tcp`]; the error names the address and the setting.
pub async fn bind_tcp(listen: &crate::config::ListenAddress) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(listen.0)
        .await
        .map_err(|e| format!("cannot listen on {} (api.listen): {e}", listen.0))
}

/// Creates the control socket at `socket` (mode 0660), replacing a stale one.
pub fn bind_socket(socket: &Path) -> std::io::Result<UnixListener> {
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
    Ok(listener)
}

/// Serves the control API on a socket [`bind_socket`] created, until `shutdown`.
pub async fn serve_on(
    listener: UnixListener,
    service: impl Control,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(ControlServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(std::io::Error::other)
}
