//! `ApiSwitchProducer`: a producer whose node turns block production on and off over its own
//! HTTP API (Antelope's producer API, an Ethereum node's JSON-RPC). What the chains share lives
//! here: a switch counts only once the node confirms it, a node that cannot say whether it
//! produces counts as producing, and the fence stops production over a plain blocking socket
//! and falls back to the operator's `fence_command` (which should kill the node). The requests
//! themselves are each chain's [`NodeSwitch`].
//!
//! These nodes take no floor: their double-production protection is the lease, the self-fence
//! and the fence command. Nothing here decides whether the node should produce.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Grant, Producer, ProducerError, ProducerStatus};
use crate::chain::rpc::{ExchangeError, JsonEndpoint};
use crate::config::HttpUrl;
use crate::domain::MonoTime;

/// The chain-specific half of an [`ApiSwitchProducer`]: the requests that turn production on
/// and off and ask whether it is on.
#[async_trait]
pub trait NodeSwitch: Send + Sync + 'static {
    /// The request that turns production on (`on`) or off, as messages name it.
    fn request_name(&self, on: bool) -> &'static str;

    /// The query that says whether the node produces, as messages name it.
    fn query_name(&self) -> &'static str;

    /// Asks the node to turn production on or off; `Ok` once the node accepted the request.
    async fn request(&self, endpoint: &JsonEndpoint, on: bool, deadline: Instant) -> Result<(), ExchangeError>;

    /// Whether the node produces now; `None` when the node offers no way to say.
    async fn producing(&self, endpoint: &JsonEndpoint, deadline: Instant) -> Result<Option<bool>, ExchangeError>;

    /// Turns production off over a plain blocking socket and confirms it where the node can
    /// say, within `timeout`. Runtime-free: the self-fence thread calls it.
    fn stop_blocking(&self, api: &HttpUrl, timeout: Duration) -> Result<(), ExchangeError>;
}

pub struct ApiSwitchProducer<S: NodeSwitch> {
    api: HttpUrl,
    endpoint: JsonEndpoint,
    switch: S,
    fence_command: Option<Vec<String>>,
}

impl<S: NodeSwitch> ApiSwitchProducer<S> {
    /// A producer switching the node at `api` with `switch`, each exchange bounded by `timeout`.
    pub fn with_switch(
        api: &HttpUrl,
        timeout: Duration,
        switch: S,
        fence_command: Option<Vec<String>>,
    ) -> Result<ApiSwitchProducer<S>, ProducerError> {
        let endpoint = JsonEndpoint::new(api, timeout)
            .map_err(|e| ProducerError::Failed { operation: "setup", detail: e.to_string() })?;
        Ok(ApiSwitchProducer { api: api.clone(), endpoint, switch, fence_command })
    }

    /// Turns production on or off and confirms it: a node that accepted the request but still
    /// says otherwise is not switched.
    async fn turn(&self, on: bool, operation: &'static str, deadline: Instant) -> Result<(), ProducerError> {
        let fail = |e| ProducerError::from_exchange(operation, e);
        self.switch.request(&self.endpoint, on, deadline).await.map_err(fail)?;
        match self.switch.producing(&self.endpoint, deadline).await.map_err(fail)? {
            Some(now) if now != on => Err(ProducerError::Failed {
                operation,
                detail: format!(
                    "{} succeeded but {} still says production is {}",
                    self.switch.request_name(on),
                    self.switch.query_name(),
                    if now { "on" } else { "off" }
                ),
            }),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl<S: NodeSwitch> Producer for ApiSwitchProducer<S> {
    async fn activate(&self, _grant: Grant, deadline: Instant) -> Result<(), ProducerError> {
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
        let stopped = self.switch.stop_blocking(&self.api, timeout);
        super::fence_by_command(self.switch.request_name(false), stopped, self.fence_command.as_deref(), timeout)
    }

    async fn status(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        let producing = self
            .switch
            .producing(&self.endpoint, deadline)
            .await
            .map_err(|e| ProducerError::Failed { operation: "status", detail: e.to_string() })?;
        // A node that cannot say counts as active: "unknown" must never look safe.
        Ok(ProducerStatus { active: producing.unwrap_or(true), last_signed_height: None })
    }
}
