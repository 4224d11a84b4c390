//! Connecting to a member's control API over its unix socket (failoverctl and tests).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::proto::v1::control_client::ControlClient;

/// A client for the control API at `socket`; every call fails after `timeout`.
pub async fn connect(socket: &Path, timeout: Duration) -> Result<ControlClient<Channel>, tonic::transport::Error> {
    let path: PathBuf = socket.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://control.invalid")
        .timeout(timeout)
        .connect_timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await?;
    Ok(ControlClient::new(channel))
}
