//! Probing the chain: the [`ChainProbe`] trait and its sample type (DESIGN.md §6).
//!
//! A probe only reads; it never changes a node. Every call has a deadline and a response size
//! cap, and any malformed answer becomes a [`ProbeError`], never a panic — a node under attack
//! or half-upgraded must not be able to crash the daemon.

pub mod cometbft;

use async_trait::async_trait;
use tokio::time::Instant;

/// What one successful probe of a node saw.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// A source of chain heights: the local node or a reference RPC.
#[async_trait]
pub trait ChainProbe: Send + Sync {
    /// A short name for logs and metrics labels (`local`, `ref:https://…`).
    fn source(&self) -> &str;

    /// Queries the node once. MUST return by `deadline` and MUST NOT panic on any response.
    async fn probe(&self, deadline: Instant) -> Result<ChainSample, ProbeError>;
}
