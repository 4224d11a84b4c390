//! The Ethereum producer: block production on and off over the node's JSON-RPC, either with
//! `miner_start`/`miner_stop` (Clique/PoA clients, confirmed by `eth_mining`) or with
//! `evm_setIntervalMining` (dev nodes such as anvil and Hardhat, confirmed by
//! `anvil_getIntervalMining` where the node offers it).
//!
//! A node only counts as deactivated once it confirms it stopped. The fence repeats the stop over
//! a plain blocking socket (the runtime may be stalled) and, if that does not confirm, runs the
//! configured `fence_command` (which should kill the node). These nodes take no floor: their
//! double-production protection is the lease, the self-fence and the fence command.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Producer, ProducerError, ProducerStatus, SignFloor};
use crate::chain::rpc::{self, ExchangeError, JsonEndpoint, METHOD_NOT_FOUND};
pub use crate::config::EthereumMining as Mining;
use crate::config::HttpUrl;
use crate::domain::MonoTime;

pub struct EthereumProducer {
    rpc: HttpUrl,
    endpoint: JsonEndpoint,
    mining: Mining,
    interval_secs: u64,
    fence_command: Option<Vec<String>>,
}

impl EthereumProducer {
    pub fn new(
        rpc: &HttpUrl,
        timeout: Duration,
        mining: Mining,
        block_interval: Duration,
        fence_command: Option<Vec<String>>,
    ) -> Result<EthereumProducer, ProducerError> {
        let endpoint = JsonEndpoint::new(rpc, timeout)
            .map_err(|e| ProducerError::Failed { operation: "setup", detail: e.to_string() })?;
        let interval_secs = block_interval.as_secs().max(1);
        Ok(EthereumProducer { rpc: rpc.clone(), endpoint, mining, interval_secs, fence_command })
    }

    fn switch(&self, on: bool) -> (&'static str, Value) {
        match (self.mining, on) {
            (Mining::Miner, true) => ("miner_start", json!([])),
            (Mining::Miner, false) => ("miner_stop", json!([])),
            (Mining::Interval, true) => ("evm_setIntervalMining", json!([self.interval_secs])),
            (Mining::Interval, false) => ("evm_setIntervalMining", json!([0])),
        }
    }

    /// Whether the node mines, `None` when it cannot say.
    async fn mining(&self, deadline: Instant) -> Result<Option<bool>, ExchangeError> {
        let method = match self.mining {
            Mining::Miner => "eth_mining",
            Mining::Interval => "anvil_getIntervalMining",
        };
        match self.endpoint.call(method, json!([]), deadline).await {
            Ok(v) => parse_mining(self.mining, &v).map(Some).map_err(ExchangeError::Malformed),
            Err(ExchangeError::Rpc { code: METHOD_NOT_FOUND, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn turn(&self, on: bool, operation: &'static str, deadline: Instant) -> Result<(), ProducerError> {
        let fail = |e| ProducerError::from_exchange(operation, e);
        let (method, params) = self.switch(on);
        self.endpoint.call(method, params, deadline).await.map_err(fail)?;
        match self.mining(deadline).await.map_err(fail)? {
            Some(now) if now != on => Err(ProducerError::Failed {
                operation,
                detail: format!("{method} succeeded but the node still says mining = {now}"),
            }),
            _ => Ok(()),
        }
    }
}

/// `eth_mining` answers a boolean; `anvil_getIntervalMining` the interval in seconds, or null
/// when interval mining is off.
pub fn parse_mining(mining: Mining, v: &Value) -> Result<bool, String> {
    match mining {
        Mining::Miner => rpc::boolean(v, "eth_mining"),
        Mining::Interval => match v {
            Value::Null => Ok(false),
            Value::Number(n) => n
                .as_u64()
                .map(|secs| secs > 0)
                .ok_or_else(|| format!("anvil_getIntervalMining: expected seconds, found {n}")),
            other => Err(format!("anvil_getIntervalMining: expected seconds or null, found {other}")),
        },
    }
}

#[async_trait]
impl Producer for EthereumProducer {
    async fn activate(&self, _floor: SignFloor, _until: MonoTime, deadline: Instant) -> Result<(), ProducerError> {
        self.turn(true, "activate", deadline).await
    }

    async fn extend(&self, _until: MonoTime, _deadline: Instant) -> Result<(), ProducerError> {
        Ok(())
    }

    async fn deactivate(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        self.turn(false, "deactivate", deadline).await?;
        Ok(ProducerStatus::default())
    }

    fn fence(&self, timeout: Duration) -> Result<(), ProducerError> {
        let (method, params) = self.switch(false);
        let stopped = rpc::blocking_call(&self.rpc, method, params, timeout).map(|_| ());
        super::fence_by_command(method, stopped, self.fence_command.as_deref(), timeout)
    }

    async fn status(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        let active = self
            .mining(deadline)
            .await
            .map_err(|e| ProducerError::Failed { operation: "status", detail: e.to_string() })?;
        // A node that cannot say counts as active: "unknown" must never look safe.
        Ok(ProducerStatus { active: active.unwrap_or(true), last_signed_height: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_nodes_answer() {
        // Recorded from anvil 1.7.1: null while off, the interval while on.
        assert_eq!(parse_mining(Mining::Interval, &Value::Null), Ok(false));
        assert_eq!(parse_mining(Mining::Interval, &json!(1)), Ok(true));
        assert_eq!(parse_mining(Mining::Interval, &json!(0)), Ok(false));
        assert_eq!(parse_mining(Mining::Miner, &json!(true)), Ok(true));
        assert!(parse_mining(Mining::Miner, &json!("true")).is_err());
        assert!(parse_mining(Mining::Interval, &json!(-1)).is_err());
        assert!(parse_mining(Mining::Interval, &json!("1")).is_err());
    }

    #[test]
    fn fencing_an_unreachable_node_without_a_fence_command_is_not_confirmed() {
        let dead: HttpUrl = "http://127.0.0.1:9/".parse().expect("url");
        let p = EthereumProducer::new(&dead, Duration::from_secs(1), Mining::Interval, Duration::from_secs(1), None)
            .expect("producer");
        let err = p.fence(Duration::from_millis(500)).expect_err("cannot confirm");
        assert!(err.to_string().contains("no producer.fence_command"), "{err}");
        let with_kill = EthereumProducer::new(
            &dead,
            Duration::from_secs(1),
            Mining::Interval,
            Duration::from_secs(1),
            Some(vec!["true".into()]),
        )
        .expect("producer");
        with_kill.fence(Duration::from_millis(500)).expect("the fence command confirms");
    }
}
