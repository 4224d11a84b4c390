//! Control calls about one validator, as `failoverctl --validator ID` makes them: the request
//! carries the header the member routes by (`failover::api::VALIDATOR_HEADER`). A member that
//! serves several validators refuses a call that names none; with one validator the lab names
//! none, as every lab before issue 22 did.
//!
//! Every call is bounded by a timeout; a member that does not answer is `None`, never a hang. It
//! only reads what members say about themselves.

use std::path::Path;
use std::time::Duration;

use failover::proto::v1::{MembersReply, MembersRequest, StatusReply, StatusRequest};

/// `message` as a call about `validator` (`None`: the member's only one).
fn about<T>(validator: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(v) = validator
        && let Ok(value) = v.parse()
    {
        request.metadata_mut().insert(failover::api::VALIDATOR_HEADER, value);
    }
    request
}

/// The member's `Status` of `validator` on `socket`, or `None` when it does not answer within
/// `timeout`.
pub async fn status(socket: &Path, validator: Option<&str>, timeout: Duration) -> Option<StatusReply> {
    let call = async {
        let mut client = failover::api::client::connect(socket, timeout).await.ok()?;
        client.status(about(validator, StatusRequest {})).await.ok().map(tonic::Response::into_inner)
    };
    tokio::time::timeout(timeout, call).await.ok().flatten()
}

/// The member's view of every member (`Members`) for `validator` on `socket`, or `None` when it
/// does not answer within `timeout`.
pub async fn members(socket: &Path, validator: Option<&str>, timeout: Duration) -> Option<MembersReply> {
    let call = async {
        let mut client = failover::api::client::connect(socket, timeout).await.ok()?;
        client.members(about(validator, MembersRequest {})).await.ok().map(tonic::Response::into_inner)
    };
    tokio::time::timeout(timeout, call).await.ok().flatten()
}
