//! Turning block production on and off: the [`Producer`] trait (docs/design.md §6).
//!
//! Nothing outside `producer/` touches a node process or a key. A producer never decides
//! whether it should be active: it is told so by the daemon, only after the promotion guard
//! passed, and it reports what it did. `fence` is synchronous on purpose: the self-fence thread
//! calls it when the tokio runtime may be stalled. A producer that runs or controls a node holds
//! it through a keeper ([`crate::keeper`]), whose fate is not the daemon's.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::domain::{Epoch, Hrs, MonoTime};

pub mod antelope;
pub mod api_switch;
pub mod cometbft_filepv;
pub mod cometbft_signer;
pub mod command;
pub mod ethereum;
pub mod fence_keeper;
pub mod privval;
pub mod process;
pub mod sim;

/// The highest position that may already have been signed, as computed by the guard
/// (`max(watermark, chain height) + margin`). A producer MUST sign only strictly above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignFloor(pub Hrs);

/// The right to produce that the promotion guard hands a producer when it activates it: the
/// lease epoch it holds, the floor it must stay above, and when the right ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The holder's lease epoch. A producer that reserves its signatures in the store reserves
    /// them under this epoch, so the store refuses them once another member holds the lease.
    pub epoch: Epoch,
    /// Never sign at or below it.
    pub floor: SignFloor,
    /// The holder's lease validity, on this machine's monotonic clock.
    pub until: MonoTime,
}

/// What a producer reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStatus {
    pub active: bool,
    /// The highest height the producer is known to have signed, for checkpoints.
    pub last_signed_height: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error("the producer did not confirm {operation} before the deadline")]
    Timeout { operation: &'static str },
    #[error("{operation} failed: {detail}")]
    Failed { operation: &'static str, detail: String },
}

impl ProducerError {
    /// The error of `operation` when an exchange with the node's API failed.
    pub fn from_exchange(operation: &'static str, e: crate::chain::rpc::ExchangeError) -> ProducerError {
        match e {
            crate::chain::rpc::ExchangeError::Timeout => ProducerError::Timeout { operation },
            other => ProducerError::Failed { operation, detail: other.to_string() },
        }
    }
}

/// The last resort of a fence whose API call (`attempt`, named by `what`) did not confirm: the
/// operator's `fence_command`, which should kill the node. Without one the fence is unconfirmed.
pub(crate) fn fence_by_command(
    what: &str,
    attempt: Result<(), crate::chain::rpc::ExchangeError>,
    fence_command: Option<&[String]>,
    timeout: Duration,
) -> Result<(), ProducerError> {
    let Err(api_error) = attempt else { return Ok(()) };
    let Some(argv) = fence_command else {
        return Err(ProducerError::Failed {
            operation: "fence",
            detail: format!("{what}: {api_error}; no producer.fence_command to kill the node"),
        });
    };
    crate::operator_command::run_blocking(argv, &[], timeout).map(|_| ()).map_err(|e| ProducerError::Failed {
        operation: "fence",
        detail: format!("{what}: {api_error}; producer.fence_command: {e}"),
    })
}

/// One way of running a block producer.
#[async_trait]
pub trait Producer: Send + Sync {
    /// Starts production under `grant`: never signing at or below its floor, with the right to
    /// produce ending at its `until`, and every reservation made under its epoch. Returns `Ok`
    /// only once production is confirmed; on any error the caller deactivates and treats the
    /// producer as possibly active until `fence` confirms.
    async fn activate(&self, grant: Grant, deadline: Instant) -> Result<(), ProducerError>;

    /// Moves the end of the right to produce to `until` after a renew. Producers with a keeper
    /// pass it on, so the keeper — outside this process — kills the node at `until` if no later
    /// extension comes (a frozen daemon cannot keep it signing); the others ignore it and rely
    /// on the self-fence thread. MUST NOT start production: an extension that arrives after a deactivation (it
    /// may have been in flight) is a no-op.
    async fn extend(&self, until: MonoTime, deadline: Instant) -> Result<(), ProducerError>;

    /// Stops production gracefully and returns the last status (for the final checkpoint).
    /// MUST be idempotent: deactivating an inactive producer succeeds.
    async fn deactivate(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError>;

    /// Makes sure the producer can no longer sign, by force if needed, within `timeout`.
    /// Blocking and runtime-free: it is called from the self-fence OS thread. MUST be idempotent.
    fn fence(&self, timeout: Duration) -> Result<(), ProducerError>;

    /// Whether it is producing and what it last signed.
    async fn status(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError>;

    /// The height of the newest signature while producing, for timing a planned handover right
    /// after one (the successor then has a whole block interval to take over). Unlike
    /// [`ProducerStatus::last_signed_height`] it is never checkpointed, so a producer whose every
    /// signature already moves the watermark (signer mode) can report it while active.
    async fn newest_signature(&self, deadline: Instant) -> Result<Option<u64>, ProducerError> {
        Ok(self.status(deadline).await?.last_signed_height)
    }

    /// Whether every signature this producer makes is first reserved in the store under the
    /// holder's epoch (signer mode): the watermark is then an exact bound on what it signed, and
    /// the promotion guard may use it as the floor of a planned handover (see
    /// [`crate::guard::promotion_floor`]). MUST be `false` for any producer whose node holds the key.
    fn reserves_every_signature(&self) -> bool {
        false
    }

    /// Before a planned handover, for a producer that signs inside reserved windows: reserve
    /// nothing more, and return once the node asked beyond the window (it signed through it) or
    /// `limit` passed, so the watermark the successor starts above is the last height signed and
    /// no height is skipped. `false`: this producer reserves no windows, nothing was waited for.
    async fn drain_reservations(&self, _limit: Duration) -> bool {
        false
    }
}

/// Where a producer that runs or controls a node gets its keeper, and where it records the node's
/// process group (the member's data directory).
#[derive(Clone)]
pub struct NodeKeeping {
    pub launcher: crate::keeper::KeeperLauncher,
    pub data_dir: std::path::PathBuf,
    /// The validator whose node it is, on a member serving several: each records its node's
    /// group in a file of its own, so that a restart finds every validator's orphan.
    pub validator: Option<crate::domain::ValidatorId>,
}

impl NodeKeeping {
    fn record(&self) -> std::path::PathBuf {
        match &self.validator {
            None => self.data_dir.join("node-group"),
            Some(v) => self.data_dir.join(format!("node-group-{v}")),
        }
    }
}

/// Whether the producer `p` describes starts keepers: it runs a node (`process`,
/// `cometbft-filepv`) or has a `fence_command`.
pub fn starts_keepers(p: &crate::config::ProducerConfig) -> bool {
    use crate::config::ProducerAdapter as A;
    matches!(p.adapter, A::Process(_) | A::CometbftFilepv(_)) || p.fence_command().is_some()
}

/// The producer `[producer]` describes, driving the node `[chain]` probes. `signer` is what the
/// `cometbft-signer` producer needs of the member (its store and runtime). Every setting an
/// adapter requires is already in its settings struct; only what spans sections is checked here.
pub fn from_config(
    p: &crate::config::ProducerConfig,
    chain: &crate::config::ChainConfig,
    call_timeout: Duration,
    signer: Option<cometbft_signer::SignerContext>,
    keeping: &NodeKeeping,
) -> Result<std::sync::Arc<dyn Producer>, ProducerError> {
    use crate::config::ProducerAdapter as A;
    use std::sync::Arc;
    let setup = |detail: String| ProducerError::Failed { operation: "setup", detail };
    // validate.rs refuses a config with neither; a producer built without validation still says so.
    let api = || p.rpc().or(chain.rpc.as_ref()).ok_or_else(|| setup("producer.rpc or chain.rpc is required".into()));
    let process = |argv: &[String]| {
        process::ProcessProducer::new(argv.to_vec(), p.fence_timeout, keeping.launcher.clone())
            .with_record(keeping.record())
    };
    let producer: Arc<dyn Producer> = match &p.adapter {
        A::Sim(_) => Arc::new(sim::SimProducer::new(api()?, call_timeout)?),
        A::Process(x) => Arc::new(process(&x.command)),
        A::Command(x) | A::Solana(x) => Arc::new(command::CommandProducer::new(
            x.activate_command.clone(),
            x.deactivate_command.clone(),
            x.fence_command.clone(),
            p.key_id.clone(),
            x.command_timeout,
        )),
        A::Ethereum(x) => Arc::new(ethereum::EthereumProducer::new(
            api()?,
            call_timeout,
            x.mining,
            x.block_interval,
            x.api.fence_command.clone(),
        )?),
        A::Antelope(x) => Arc::new(antelope::AntelopeProducer::new(api()?, call_timeout, x.fence_command.clone())?),
        A::CometbftFilepv(x) => {
            let runner = match &x.systemd_unit {
                Some(unit) => {
                    cometbft_filepv::NodeRunner::Systemd { systemctl: vec!["systemctl".into()], unit: unit.clone() }
                }
                None => cometbft_filepv::NodeRunner::Process(
                    process(x.command.as_deref().unwrap_or_default())
                        .with_key_file(cometbft_filepv::FilePvProducer::key_path_in(&x.home)),
                ),
            };
            Arc::new(
                cometbft_filepv::FilePvProducer::new(x.key_file.clone(), x.home.clone(), runner, x.command_timeout)
                    .with_unit_keeper(keeping.launcher.clone()),
            )
        }
        A::CometbftSigner(x) => {
            let nodes = x
                .priv_validator_laddr
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    text.parse().map_err(|e: String| setup(format!("{}: {e}", x.priv_validator_laddr.key_of(i))))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let context =
                signer.ok_or_else(|| setup("the cometbft-signer producer runs only inside a member".into()))?;
            // Beside the member's other data: a copy of the config on another machine must not
            // share it, and a restart must find it.
            let state_file = keeping.data_dir.join(format!("signer-state-{}.bin", p.key_id));
            Arc::new(cometbft_signer::CometbftSignerProducer::start(
                &x.key_file,
                &state_file,
                p.key_id.clone(),
                x.chain_id.clone(),
                nodes,
                context,
                call_timeout,
            )?)
        }
    };
    // Producers that switch a node over its API get a keeper when there is a fence_command.
    Ok(match p.fence_command() {
        Some(argv) => Arc::new(fence_keeper::FenceCommandKeeper::wrap(
            producer,
            argv.to_vec(),
            p.fence_timeout,
            keeping.launcher.clone(),
        )),
        None => producer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each validator of a member records its node's process group in a file of its own: a
    /// shared one would keep only the last validator's group, and a restart would leave the
    /// other validators' nodes running as orphans, able to sign.
    #[test]
    fn each_validator_records_its_node_group_in_its_own_file() {
        let (notices, _) = crate::fence_notice::FenceNotices::channel();
        let keeping = |validator: Option<&str>| NodeKeeping {
            launcher: crate::keeper::KeeperLauncher::this_executable(notices.clone()),
            data_dir: "/var/lib/failoverd".into(),
            validator: validator.map(|v| crate::domain::ValidatorId::new(v).expect("id")),
        };
        assert_eq!(keeping(None).record(), std::path::Path::new("/var/lib/failoverd/node-group"), "as before");
        let (hub, osmo) = (keeping(Some("hub")).record(), keeping(Some("osmo")).record());
        assert_ne!(hub, osmo);
        assert_eq!(hub, std::path::Path::new("/var/lib/failoverd/node-group-hub"));
    }
}
