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

/// PEM contents of the CA, the client certificate and its key.
pub struct TlsFiles {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// A client for the TCP control API at `address` (HOST:PORT), presenting `files`' certificate
/// and accepting only a server certificate for `server_name` signed by `files.ca`.
pub async fn connect_tls(
    address: &str,
    server_name: &str,
    files: &TlsFiles,
    timeout: Duration,
) -> Result<ControlClient<Channel>, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    crate::http::install_crypto_provider();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&files.ca))
        .identity(Identity::from_pem(&files.cert, &files.key))
        .domain_name(server_name);
    let channel = Endpoint::from_shared(format!("https://{address}"))?
        .tls_config(tls)?
        .timeout(timeout)
        .connect_timeout(timeout)
        .connect()
        .await?;
    Ok(ControlClient::new(channel))
}
