//! Every socket a member serves on, bound before the daemon starts (mini-redis's
//! `run(listener, …)`): a taken port or an unwritable socket path is a start-up error that
//! names the setting, never a service that silently is not there. Tests bind port 0.
//!
//! Owns binding only; never serves (that is `api`, `telemetry::endpoints` and `coord::raft`).

use tokio::net::{TcpListener, UnixListener};

use super::DaemonError;
use crate::config::Config;

/// The bound sockets [`super::run`] serves on.
pub struct Listeners {
    /// The peer service (raft); dropped unused when members meet through Consul.
    pub peer: TcpListener,
    /// `/metrics` and the health endpoints, when `[metrics] enabled`.
    pub metrics: Option<TcpListener>,
    /// The control API's unix socket (`api.socket`).
    pub control_socket: UnixListener,
    /// The control API over mutual TLS (`api.listen`, served only with `[tls]`).
    pub control_tcp: Option<TcpListener>,
}

impl Listeners {
    /// Binds the metrics endpoint, the control socket and `api.listen` beside the already bound
    /// peer listener (bound first, so a second copy of a running member fails on its peer port
    /// before it could replace the running one's control socket).
    pub async fn bind(config: &Config, peer: TcpListener) -> Result<Listeners, DaemonError> {
        let metrics = match config.metrics.enabled {
            true => Some(TcpListener::bind(config.metrics.listen.0).await.map_err(|e| {
                DaemonError::Setup(format!(
                    "metrics.listen: cannot listen on {}: {e}; set [metrics] listen to a free address, or enabled = false",
                    config.metrics.listen.0
                ))
            })?),
            false => None,
        };
        let control_tcp = match (&config.api.listen, &config.tls) {
            (Some(listen), Some(_)) => Some(crate::api::bind_tcp(listen).await.map_err(DaemonError::Setup)?),
            _ => None,
        };
        let socket = &config.api.socket;
        let control_socket = crate::api::bind_socket(socket).map_err(|e| {
            DaemonError::Setup(format!(
                "api.socket: cannot create the control socket {}: {e}; set api.socket to a path this user may write",
                socket.display()
            ))
        })?;
        Ok(Listeners { peer, metrics, control_socket, control_tcp })
    }
}
