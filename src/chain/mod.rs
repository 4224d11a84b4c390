//! Probing the chain: the [`ChainProbe`] trait and its sample type (docs/design.md §7).
//!
//! A probe only reads; it never changes a node. Every call has a deadline and a response size
//! cap, and any malformed answer becomes a [`ProbeError`], never a panic — a node under attack
//! or half-upgraded must not be able to crash the daemon.

pub mod antelope;
pub mod cometbft;
pub mod command;
pub mod ethereum;
pub mod rpc;
pub mod solana;

use async_trait::async_trait;
use tokio::time::Instant;

/// What one successful probe of a node saw. Fields a chain cannot tell stay `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainSample {
    pub height: u64,
    /// The latest block's time as the chain states it (Unix milliseconds). Informational: stall
    /// detection uses the monotonic time at which the height last moved.
    pub latest_block_time_ms: Option<i64>,
    /// The node says it is still syncing.
    pub catching_up: bool,
    pub peers: Option<u32>,
    /// Whether our validator signed recently, where the chain can tell (CometBFT commits).
    pub signing: Option<bool>,
    /// Whether the node says it is producing (Antelope's `/v1/producer/paused`): a member that is
    /// not active logs an error when its node produces on its own, which no lease covers.
    pub producing: Option<bool>,
}

impl ChainSample {
    /// A sample that knows only the height.
    pub fn at(height: u64) -> ChainSample {
        ChainSample { height, ..ChainSample::default() }
    }
}

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("{source_name}: no answer before the deadline")]
    Timeout { source_name: String },
    #[error("{source_name}: cannot reach the node: {detail}")]
    Unreachable { source_name: String, detail: String },
    #[error("{source_name}: malformed response: {detail}")]
    Malformed { source_name: String, detail: String },
    #[error("{source_name}: response larger than {limit} bytes")]
    TooLarge { source_name: String, limit: usize },
    #[error("{source_name}: the node answered with an error: {detail}")]
    NodeError { source_name: String, detail: String },
}

impl ProbeError {
    /// The probe error for a failed exchange with the node behind `source`.
    pub fn from_exchange(source: &str, error: rpc::ExchangeError) -> ProbeError {
        use rpc::ExchangeError as E;
        let source_name = source.to_string();
        match error {
            E::Timeout => ProbeError::Timeout { source_name },
            E::Unreachable(detail) => ProbeError::Unreachable { source_name, detail },
            E::TooLarge(limit) => ProbeError::TooLarge { source_name, limit },
            E::Malformed(detail) => ProbeError::Malformed { source_name, detail },
            e @ (E::Status { .. } | E::Rpc { .. }) => ProbeError::NodeError { source_name, detail: e.to_string() },
        }
    }

    pub fn malformed(source: &str, detail: impl Into<String>) -> ProbeError {
        ProbeError::Malformed { source_name: source.to_string(), detail: detail.into() }
    }
}

/// A source of chain heights: the local node or a reference RPC.
#[async_trait]
pub trait ChainProbe: Send + Sync {
    /// A short name for logs and metrics labels (`local`, `ref:https://…`).
    fn source(&self) -> &str;

    /// Queries the node once. MUST return by `deadline` and MUST NOT panic on any response.
    async fn probe(&self, deadline: Instant) -> Result<ChainSample, ProbeError>;
}

/// The probe of this member's own node, as `[chain]` describes it. `producer` tells which extra
/// signals are worth reading (Antelope's paused flag only means something to its producer API).
pub fn local_probe(
    chain: &crate::config::ChainConfig,
    producer: Option<crate::config::ProducerKind>,
) -> Result<std::sync::Arc<dyn ChainProbe>, ProbeError> {
    use crate::config::{ChainKind, ProducerKind};
    let source = "local";
    if chain.kind == ChainKind::Command {
        let argv = chain.command.clone().unwrap_or_default();
        return Ok(std::sync::Arc::new(command::CommandProbe::new(source, argv)));
    }
    let rpc = chain.rpc.as_ref().ok_or_else(|| ProbeError::malformed(source, "chain.rpc is required"))?;
    let checks = cometbft::CometbftChecks {
        peers: chain.kind == ChainKind::Cometbft,
        // The simulated chain serves no commits.
        signing: chain
            .validator_address
            .clone()
            .filter(|_| chain.kind == ChainKind::Cometbft)
            .map(|a| (a, chain.signing_window)),
    };
    let ask_paused = producer == Some(ProducerKind::Antelope);
    rpc_probe(chain.kind, source.to_string(), rpc, chain.probe_timeout, checks, ask_paused)
}

/// A probe of a reference RPC: same dialect as the local node, height and sync state only.
pub fn reference_probe(
    chain: &crate::config::ChainConfig,
    index: usize,
    url: &crate::config::HttpUrl,
) -> Result<std::sync::Arc<dyn ChainProbe>, ProbeError> {
    let source = format!("ref{index}:{url}");
    let kind = match chain.kind {
        // A command has no URL; its references are taken to speak CometBFT's `/status`.
        crate::config::ChainKind::Command => crate::config::ChainKind::Cometbft,
        other => other,
    };
    rpc_probe(kind, source, url, chain.probe_timeout, cometbft::CometbftChecks::default(), false)
}

fn rpc_probe(
    kind: crate::config::ChainKind,
    source: String,
    rpc: &crate::config::HttpUrl,
    timeout: std::time::Duration,
    checks: cometbft::CometbftChecks,
    ask_paused: bool,
) -> Result<std::sync::Arc<dyn ChainProbe>, ProbeError> {
    use crate::config::ChainKind;
    Ok(match kind {
        ChainKind::Cometbft | ChainKind::Sim | ChainKind::Command => {
            std::sync::Arc::new(cometbft::CometbftProbe::new(source, rpc, timeout, checks)?)
        }
        ChainKind::Ethereum => std::sync::Arc::new(ethereum::EthereumProbe::new(source, rpc, timeout)?),
        ChainKind::Antelope => std::sync::Arc::new(antelope::AntelopeProbe::new(source, rpc, timeout, ask_paused)?),
        ChainKind::Solana => std::sync::Arc::new(solana::SolanaProbe::new(source, rpc, timeout)?),
    })
}
