//! The Antelope producer: `POST /v1/producer/resume` and `/v1/producer/pause` on nodeos's
//! producer API, each confirmed by `/v1/producer/paused`.
//!
//! The fence pauses over a plain blocking socket (the runtime may be stalled) and confirms; if it
//! cannot, it runs the configured `fence_command` (which should kill nodeos). nodeos takes no
//! floor: a resumed producer signs only its own scheduled slots, and the lease, the self-fence
//! and the fence keep a second copy of the key from being resumed at the same time.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use super::{Producer, ProducerError, ProducerStatus, SignFloor};
use crate::chain::antelope::parse_paused;
use crate::chain::rpc::{self, ExchangeError, JsonEndpoint};
use crate::config::HttpUrl;
use crate::domain::MonoTime;

pub struct AntelopeProducer {
    api: HttpUrl,
    endpoint: JsonEndpoint,
    fence_command: Option<Vec<String>>,
}

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
        let endpoint = JsonEndpoint::new(api, timeout)
            .map_err(|e| ProducerError::Failed { operation: "setup", detail: e.to_string() })?;
        Ok(AntelopeProducer { api: api.clone(), endpoint, fence_command })
    }

    async fn paused(&self, deadline: Instant) -> Result<bool, ExchangeError> {
        let v = self.endpoint.post("v1/producer/paused", None, deadline).await?;
        parse_paused(&v).map_err(ExchangeError::Malformed)
    }

    async fn turn(&self, resume: bool, operation: &'static str, deadline: Instant) -> Result<(), ProducerError> {
        let fail = |e| ProducerError::from_exchange(operation, e);
        let path = if resume { "v1/producer/resume" } else { "v1/producer/pause" };
        let answer = self.endpoint.post(path, None, deadline).await.map_err(fail)?;
        parse_ok(path, &answer).map_err(|detail| ProducerError::Failed { operation, detail })?;
        if self.paused(deadline).await.map_err(fail)? == resume {
            return Err(ProducerError::Failed {
                operation,
                detail: format!("{path} answered ok but /v1/producer/paused still says {}", !resume),
            });
        }
        Ok(())
    }

    fn pause_blocking(&self, timeout: Duration) -> Result<(), ExchangeError> {
        let end = std::time::Instant::now() + timeout;
        let left = || end.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(1));
        let path = |p: &str| format!("{}{p}", self.api.0.path().trim_end_matches('/'));
        let answer = rpc::blocking_request(&self.api, "POST", &path("/v1/producer/pause"), "", left())?;
        parse_ok("/v1/producer/pause", &answer).map_err(ExchangeError::Malformed)?;
        let paused = rpc::blocking_request(&self.api, "POST", &path("/v1/producer/paused"), "", left())?;
        match parse_paused(&paused) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ExchangeError::Malformed("the node still says it is not paused".into())),
            Err(e) => Err(ExchangeError::Malformed(e)),
        }
    }
}

#[async_trait]
impl Producer for AntelopeProducer {
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
        super::fence_by_command("pause", self.pause_blocking(timeout), self.fence_command.as_deref(), timeout)
    }

    async fn status(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        let paused = self
            .paused(deadline)
            .await
            .map_err(|e| ProducerError::Failed { operation: "status", detail: e.to_string() })?;
        Ok(ProducerStatus { active: !paused, last_signed_height: None })
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
