//! The Ethereum producer: block production on and off over the node's JSON-RPC, either with
//! `miner_start`/`miner_stop` (Clique/PoA clients, confirmed by `eth_mining`) or with
//! `evm_setIntervalMining` (dev nodes such as anvil and Hardhat, confirmed by
//! `anvil_getIntervalMining` where the node offers it). [`ApiSwitchProducer`] does the rest.
//!
//! A node only counts as deactivated once it confirms it stopped. The fence repeats the stop over
//! a plain blocking socket (the runtime may be stalled) and, if that does not confirm, runs the
//! configured `fence_command` (which should kill the node). These nodes take no floor: their
//! double-production protection is the lease, the self-fence and the fence command.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::ProducerError;
use super::api_switch::{ApiSwitchProducer, NodeSwitch};
use crate::chain::rpc::{self, ExchangeError, JsonEndpoint, METHOD_NOT_FOUND};
pub use crate::config::EthereumMining as Mining;
use crate::config::HttpUrl;

/// An Ethereum node's JSON-RPC, in one of its two mining modes.
pub struct Ethereum {
    mining: Mining,
    interval_secs: u64,
}

pub type EthereumProducer = ApiSwitchProducer<Ethereum>;

impl EthereumProducer {
    pub fn new(
        rpc: &HttpUrl,
        timeout: Duration,
        mining: Mining,
        block_interval: Duration,
        fence_command: Option<Vec<String>>,
    ) -> Result<EthereumProducer, ProducerError> {
        let switch = Ethereum { mining, interval_secs: block_interval.as_secs().max(1) };
        ApiSwitchProducer::with_switch(rpc, timeout, switch, fence_command)
    }
}

impl Ethereum {
    fn params(&self, on: bool) -> Value {
        match (self.mining, on) {
            (Mining::Miner, _) => json!([]),
            (Mining::Interval, true) => json!([self.interval_secs]),
            (Mining::Interval, false) => json!([0]),
        }
    }
}

#[async_trait]
impl NodeSwitch for Ethereum {
    fn request_name(&self, on: bool) -> &'static str {
        match (self.mining, on) {
            (Mining::Miner, true) => "miner_start",
            (Mining::Miner, false) => "miner_stop",
            (Mining::Interval, _) => "evm_setIntervalMining",
        }
    }

    fn query_name(&self) -> &'static str {
        match self.mining {
            Mining::Miner => "eth_mining",
            Mining::Interval => "anvil_getIntervalMining",
        }
    }

    async fn request(&self, endpoint: &JsonEndpoint, on: bool, deadline: Instant) -> Result<(), ExchangeError> {
        endpoint.call(self.request_name(on), self.params(on), deadline).await.map(|_| ())
    }

    async fn producing(&self, endpoint: &JsonEndpoint, deadline: Instant) -> Result<Option<bool>, ExchangeError> {
        match endpoint.call(self.query_name(), json!([]), deadline).await {
            Ok(v) => parse_mining(self.mining, &v).map(Some).map_err(ExchangeError::Malformed),
            Err(ExchangeError::Rpc { code: METHOD_NOT_FOUND, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn stop_blocking(&self, api: &HttpUrl, timeout: Duration) -> Result<(), ExchangeError> {
        rpc::blocking_call(api, self.request_name(false), self.params(false), timeout).map(|_| ())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::Producer;

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
