//! Starting the backend the config names, for callers that only need the [`Coordinator`] contract
//! (the daemon, `failoverd coordinator`).
//!
//! This is the one place outside a backend's own module that chooses between backends; it never
//! decides anything else and adds no behaviour to the backend it starts.

use std::sync::Arc;

use tokio::net::TcpListener;

use super::consul::ConsulCoordinator;
use super::raft::{RaftCoordinator, RaftOptions};
use super::{CoordError, Coordinator};
use crate::config::{Backend, Config};
use crate::domain::ValidatorId;

/// Start-up choices that are not part of the config file.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Raft: this member's disk was lost and it rejoins with the same id (README: replacing a
    /// member). Consul ignores it.
    pub rejoin: bool,
    /// Raft: SIGUSR1 makes the raft task panic, so tests can show that a panic ends the process
    /// after fencing (`FAILOVERD_TEST_HOOKS=1`). Never set in production.
    pub test_hooks: bool,
}

/// Why the backend did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Raft(#[from] super::raft::StartError),
    #[error(transparent)]
    Consul(CoordError),
    #[error("validator {0} has no store: the raft node was started without it")]
    NoValidatorStore(ValidatorId),
}

/// Starts the backend `config.coordinator.backend` names. The raft backend serves its peer
/// service on `listener` (bound by the caller to this member's peer address, or port 0 in tests);
/// Consul does not use it and closes it, since members meet through Consul.
pub async fn start(
    config: &Config,
    listener: TcpListener,
    options: StartOptions,
) -> Result<Arc<dyn Coordinator>, StartError> {
    match config.coordinator.backend {
        Backend::Raft => {
            let raft_options = RaftOptions { rejoin: options.rejoin, ..RaftOptions::default() };
            let raft = RaftCoordinator::start(config, listener, raft_options).await?;
            if options.test_hooks {
                raft.panic_on_sigusr1();
            }
            Ok(Arc::new(raft))
        }
        Backend::Consul => {
            drop(listener);
            Ok(Arc::new(ConsulCoordinator::start(config).map_err(StartError::Consul)?))
        }
    }
}

/// One validator's store, with the config a member of it alone would have.
pub struct ValidatorStore {
    pub validator: ValidatorId,
    pub config: Config,
    pub store: Arc<dyn Coordinator>,
}

/// Starts the backend for every validator `config` serves ([`Config::validator_configs`]), in
/// the config's order. Raft: one node, one raft group, a handle per validator sharing it (the
/// node stops with the first handle's [`Coordinator::shutdown`]). Consul: a session per validator,
/// each under its own prefix, `<prefix>/validators/<id>` (the default validator keeps `<prefix>`).
pub async fn start_validators(
    config: &Config,
    listener: TcpListener,
    options: StartOptions,
) -> Result<Vec<ValidatorStore>, StartError> {
    let each = config.validator_configs();
    match config.coordinator.backend {
        Backend::Raft => {
            let validators = each.iter().map(|(v, _)| v.clone()).filter(|v| !v.is_default()).collect();
            let raft_options = RaftOptions { rejoin: options.rejoin, validators, ..RaftOptions::default() };
            let raft = RaftCoordinator::start(config, listener, raft_options).await?;
            if options.test_hooks {
                raft.panic_on_sigusr1();
            }
            let mut stores = Vec::with_capacity(each.len());
            for (validator, effective) in each {
                let handle = raft
                    .for_validator(&validator, &effective)
                    .ok_or_else(|| StartError::NoValidatorStore(validator.clone()))?;
                stores.push(ValidatorStore { validator, config: effective, store: Arc::new(handle) });
            }
            Ok(stores)
        }
        Backend::Consul => {
            drop(listener);
            let mut stores = Vec::with_capacity(each.len());
            for (validator, mut effective) in each {
                if !validator.is_default() {
                    let prefix = effective.coordinator.consul.prefix.trim_end_matches('/').to_string();
                    effective.coordinator.consul.prefix = format!("{prefix}/validators/{validator}");
                }
                let store = ConsulCoordinator::start(&effective).map_err(StartError::Consul)?;
                stores.push(ValidatorStore { validator, config: effective, store: Arc::new(store) });
            }
            Ok(stores)
        }
    }
}
