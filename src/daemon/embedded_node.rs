//! The simulated node a member can serve inside its own process (`[chain.sim]` with `rpc`), for
//! the demo and tests: it dies with the daemon, as a supervised node would.
//!
//! Owns starting that node; never touches the member's producer or store.

use tokio_util::sync::CancellationToken;

use super::DaemonError;
use crate::config::Config;

/// Runs the simulated node inside this process, on `chain.rpc`'s address: it dies with the
/// daemon, as a supervised node would.
pub(super) async fn start(
    config: &Config,
    sim: &crate::config::SimConfig,
    rpc: &crate::config::HttpUrl,
    shutdown: &CancellationToken,
) -> Result<(), DaemonError> {
    use crate::sim::node::{SimNode, SimNodeConfig};
    let key = config.key_id();
    let node = SimNode::new(SimNodeConfig {
        chain_id: sim.chain_id.clone(),
        member: config.member.clone(),
        key,
        block_interval: sim.block_interval,
        ledger: sim.ledger.clone(),
        activations: None,
        privval_listen: sim.privval_listen.as_ref().map(|a| a.0),
    })
    .map_err(|e| DaemonError::Setup(e.to_string()))?;
    let host = rpc.0.host_str().unwrap_or("127.0.0.1");
    let port = rpc.0.port_or_known_default().unwrap_or(80);
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| DaemonError::Setup(format!("chain.sim: cannot serve the simulated node on {host}:{port}: {e}")))?;
    let privval = node
        .bind_privval()
        .map_err(|e| DaemonError::Setup(format!("chain.sim: cannot listen for the signer on privval_listen: {e}")))?;
    tokio::spawn(node.serve(listener, privval, shutdown.clone()));
    tracing::info!(%rpc, "simulated node running inside this daemon");
    Ok(())
}
