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

#[cfg(test)]
mod tests {
    use super::*;

    /// Member a of a valid three-member cluster, with `extra` appended (`[api]`, `[metrics]`).
    fn config(extra: &str) -> Config {
        let members = (1..=3)
            .map(|i| {
                let kind = if i == 3 { "witness" } else { "producer" };
                format!("[[members]]\nid = \"m{i}\"\npeer_address = \"127.0.0.1:{i}\"\nkind = \"{kind}\"\n")
            })
            .collect::<String>();
        let text = format!(
            "member = \"m1\"\n{members}[coordinator.raft]\ninsecure_plaintext_peers = true\n[chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:4\"\n[producer]\nkind = \"sim\"\n{extra}"
        );
        Config::parse(&text).expect("a valid config")
    }

    fn socket_in(dir: &tempfile::TempDir) -> String {
        dir.path().join("api.sock").display().to_string()
    }

    async fn peer() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").await.expect("a free port")
    }

    fn refused(result: Result<Listeners, DaemonError>) -> String {
        match result {
            Ok(_) => panic!("the bind succeeded"),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn a_taken_metrics_port_is_a_start_up_error_naming_metrics_listen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = taken.local_addr().expect("its address").port();
        let extra = format!(
            "[api]\nsocket = \"{}\"\n[metrics]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n",
            socket_in(&dir)
        );
        let error = refused(Listeners::bind(&config(&extra), peer().await).await);
        let expected = format!("metrics.listen: cannot listen on 127.0.0.1:{port}: ");
        assert!(error.starts_with(&expected), "{error}");
        assert!(error.ends_with("set [metrics] listen to a free address, or enabled = false"), "{error}");
    }

    #[tokio::test]
    async fn a_control_socket_that_cannot_be_created_is_a_start_up_error_naming_api_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("not-a-directory");
        std::fs::write(&file, "").expect("a file");
        let socket = file.join("api.sock");
        let extra = format!("[api]\nsocket = \"{}\"\n[metrics]\nenabled = false\n", socket.display());
        let error = refused(Listeners::bind(&config(&extra), peer().await).await);
        let expected = format!("api.socket: cannot create the control socket {}: ", socket.display());
        assert!(error.starts_with(&expected), "{error}");
    }

    #[tokio::test]
    async fn every_listener_is_bound_before_the_member_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let extra =
            format!("[api]\nsocket = \"{}\"\n[metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"\n", socket_in(&dir));
        let listeners = Listeners::bind(&config(&extra), peer().await).await.expect("bound");
        assert!(listeners.metrics.is_some());
        assert!(listeners.control_tcp.is_none(), "api.listen is served only with [tls]");
        let connected = tokio::net::UnixStream::connect(dir.path().join("api.sock")).await;
        assert!(connected.is_ok(), "the control socket accepts before run: {connected:?}");
    }
}
