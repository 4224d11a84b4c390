//! Asking a lab member over its control socket, as `failoverctl` does: its status, its view of
//! the members, its event stream, a planned handover.
//!
//! Every call is bounded by a timeout; a member that does not answer is an answer (`None` or an
//! error), never a hang. It reads what members say about themselves; labs judge from the ledger
//! and `/proc`, not from this.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::proto::v1::{
    Event, EventsRequest, MembersReply, MembersRequest, PromoteRequest, StatusReply, StatusRequest,
};

/// Why a control call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the control socket {}: {source}", socket.display())]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("refused: {0}")]
    Refused(String),
    #[error("no answer from {} within {} ms", socket.display(), timeout.as_millis())]
    TimedOut { socket: PathBuf, timeout: Duration },
}

/// Member's `Status` on `socket`, or `None` when it does not answer within `timeout`.
pub async fn status(socket: &Path, timeout: Duration) -> Option<StatusReply> {
    let call = async {
        let mut client = crate::api::client::connect(socket, timeout).await.ok()?;
        client.status(StatusRequest {}).await.ok().map(tonic::Response::into_inner)
    };
    tokio::time::timeout(timeout, call).await.ok().flatten()
}

/// Member's view of every member (`Members`) on `socket`, or `None` when it does not answer
/// within `timeout`.
pub async fn members(socket: &Path, timeout: Duration) -> Option<MembersReply> {
    let call = async {
        let mut client = crate::api::client::connect(socket, timeout).await.ok()?;
        client.members(MembersRequest {}).await.ok().map(tonic::Response::into_inner)
    };
    tokio::time::timeout(timeout, call).await.ok().flatten()
}

/// A planned handover to `target` asked of the member on `socket`; the member's answer.
pub async fn promote(socket: &Path, target: &str, timeout: Duration) -> Result<String, ControlError> {
    let call = async {
        let mut client = crate::api::client::connect(socket, timeout)
            .await
            .map_err(|source| ControlError::Unreachable { socket: socket.to_path_buf(), source })?;
        match client.promote(PromoteRequest { target: target.to_string(), force: false }).await {
            Ok(reply) => Ok(reply.into_inner().message),
            Err(status) => Err(ControlError::Refused(status.message().to_string())),
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(ControlError::TimedOut { socket: socket.to_path_buf(), timeout }))
}

/// The member's event history on `socket`, then each new event as it happens, until the member
/// goes away.
pub async fn follow_events(socket: &Path, timeout: Duration) -> Result<tonic::Streaming<Event>, ControlError> {
    let mut client = crate::api::client::connect(socket, timeout)
        .await
        .map_err(|source| ControlError::Unreachable { socket: socket.to_path_buf(), source })?;
    let call = client.events(EventsRequest { follow: true });
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(stream)) => Ok(stream.into_inner()),
        Ok(Err(status)) => Err(ControlError::Refused(status.message().to_string())),
        Err(_) => Err(ControlError::TimedOut { socket: socket.to_path_buf(), timeout }),
    }
}
