//! Connecting to a member's control API: over its unix socket, or over TCP with mutual TLS
//! (failoverctl and tests).

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

/// Why a TLS connection to the control API could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot use the TLS files: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// A client for the TCP control API at `address` (HOST:PORT), presenting `operator`'s
/// certificate and accepting only a server certificate from the same CA that names a member —
/// `member` when given, any member otherwise.
pub async fn connect_tls(
    address: &str,
    operator: &crate::tls::TlsMaterial,
    member: Option<crate::domain::MemberId>,
    timeout: Duration,
) -> Result<ControlClient<Channel>, ConnectError> {
    crate::http::install_crypto_provider();
    let config = crate::tls::client_config(operator, member)?;
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .timeout(timeout)
        .connect_timeout(timeout)
        .connect_with_connector(crate::tls::TlsConnector::new(config))
        .await?;
    Ok(ControlClient::new(channel))
}
