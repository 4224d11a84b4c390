//! The Antelope producer: `POST /v1/producer/resume` and `/v1/producer/pause` on nodeos's
//! producer API, each confirmed by `/v1/producer/paused` ([`ApiSwitchProducer`] does the rest).
//!
//! The fence pauses over a plain blocking socket (the runtime may be stalled) and confirms; if it
//! cannot, it runs the configured `fence_command` (which should kill nodeos). nodeos takes no
//! floor: a resumed producer signs only its own scheduled slots, and the lease, the self-fence
//! and the fence keep a second copy of the key from being resumed at the same time.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use super::ProducerError;
use super::api_switch::{ApiSwitchProducer, NodeSwitch};
use crate::chain::antelope::parse_paused;
use crate::chain::rpc::{self, ExchangeError, JsonEndpoint};
use crate::config::HttpUrl;

/// nodeos's producer API.
pub struct Antelope;

pub type AntelopeProducer = ApiSwitchProducer<Antelope>;

const RESUME: &str = "/v1/producer/resume";
const PAUSE: &str = "/v1/producer/pause";
const PAUSED: &str = "/v1/producer/paused";

/// `pause` and `resume` answer `{"result":"ok"}`.
pub fn parse_ok(path: &str, v: &Value) -> Result<(), String> {
    match v.get("result").and_then(Value::as_str) {
        Some("ok") => Ok(()),
        _ => Err(format!("{path}: expected {{\"result\":\"ok\"}}, found {}", rpc::quote(v.to_string().as_bytes()))),
    }
}

impl AntelopeProducer {
    pub fn new(
        api: &HttpUrl,
        timeout: Duration,
        fence_command: Option<Vec<String>>,
    ) -> Result<AntelopeProducer, ProducerError> {
        ApiSwitchProducer::with_switch(api, timeout, Antelope, fence_command)
    }
}

#[async_trait]
impl NodeSwitch for Antelope {
    fn request_name(&self, on: bool) -> &'static str {
        if on { RESUME } else { PAUSE }
    }

    fn query_name(&self) -> &'static str {
        PAUSED
    }

    async fn request(&self, endpoint: &JsonEndpoint, on: bool, deadline: Instant) -> Result<(), ExchangeError> {
        let path = self.request_name(on);
        let answer = endpoint.post(path.trim_start_matches('/'), None, deadline).await?;
        parse_ok(path, &answer).map_err(ExchangeError::Malformed)
    }

    async fn producing(&self, endpoint: &JsonEndpoint, deadline: Instant) -> Result<Option<bool>, ExchangeError> {
        let v = endpoint.post(PAUSED.trim_start_matches('/'), None, deadline).await?;
        parse_paused(&v).map(|paused| Some(!paused)).map_err(ExchangeError::Malformed)
    }

    fn stop_blocking(&self, api: &HttpUrl, timeout: Duration) -> Result<(), ExchangeError> {
        let end = std::time::Instant::now() + timeout;
        let left = || end.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(1));
        let path = |p: &str| format!("{}{p}", api.0.path().trim_end_matches('/'));
        let answer = rpc::blocking_request(api, "POST", &path(PAUSE), "", left())?;
        parse_ok(PAUSE, &answer).map_err(ExchangeError::Malformed)?;
        let paused = rpc::blocking_request(api, "POST", &path(PAUSED), "", left())?;
        match parse_paused(&paused) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ExchangeError::Malformed("the node still says it is not paused".into())),
            Err(e) => Err(ExchangeError::Malformed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pause_and_resume_answers() {
        assert_eq!(parse_ok("/v1/producer/pause", &json!({"result":"ok"})), Ok(()));
        let error = json!({"code":500,"message":"Internal Service Error","error":{"code":3170000,"name":"producer_exception","what":"Producer exception","details":[]}});
        assert!(parse_ok("/v1/producer/resume", &error).expect_err("refused").contains("/v1/producer/resume"));
        assert!(parse_ok("/v1/producer/pause", &json!("ok")).is_err());
    }
}
