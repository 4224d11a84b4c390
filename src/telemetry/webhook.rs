//! Event webhooks: failovers, fences and refusals from the member's [`EventLog`], POSTed to each
//! configured URL as a JSON event or a Slack-compatible `{"text": …}` payload.
//!
//! Each webhook is its own task following the event log, so a slow or dead receiver delays only
//! its own deliveries: the daemon loop emits into the log and never waits. An event is tried
//! `attempts` times (1 s, 2 s, 4 s … apart, at most 30 s), then dropped and counted; events that
//! arrive faster than a receiver takes them wait in the log's bounded buffer, and what overflows
//! it is dropped and counted. The URL is never logged (an incoming-webhook URL is a secret).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use crate::config::{WebhookConfig, WebhookFormat, WebhookTopic};
use crate::events::{EventKind, EventLog, EventRecord};

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Which webhook topic an event belongs to, if any.
pub fn topic_of(record: &EventRecord) -> Option<WebhookTopic> {
    match record.kind {
        EventKind::Fence => Some(WebhookTopic::Fence),
        EventKind::Guard if record.message.starts_with("guard failed") => Some(WebhookTopic::Refusal),
        EventKind::Refusal => Some(WebhookTopic::Refusal),
        EventKind::Role => {
            let (from, to) = record.message.split_once(" → ")?;
            let to = to.split([' ', ':']).next().unwrap_or(to);
            (from == "active" || to == "active").then_some(WebhookTopic::Failover)
        }
        _ => None,
    }
}

/// The body POSTed for `record`.
pub fn payload(format: WebhookFormat, topic: WebhookTopic, record: &EventRecord) -> serde_json::Value {
    match format {
        WebhookFormat::Json => with_validator(
            json!({
                "member": record.member.as_str(),
                "topic": topic.as_str(),
                "kind": record.kind.as_str(),
                "epoch": record.epoch.map(|e| e.get()),
                "cause": (!record.cause.is_empty()).then_some(record.cause),
                "seq": record.seq,
                "unix_ms": record.unix_ms,
                "message": record.message,
            }),
            record,
        ),
        WebhookFormat::Slack => {
            let epoch = record.epoch.map_or(String::new(), |e| format!(" (epoch {e})"));
            let validator = record.validator.as_ref().map_or(String::new(), |v| format!(" [{v}]"));
            json!({
                "text": format!(
                    "failoverd {}{validator}: {}{epoch}: {}",
                    record.member,
                    topic.as_str(),
                    record.message
                ),
            })
        }
    }
}

/// `body` with the record's validator, on a member serving several; a member with one sends
/// the body it always sent.
fn with_validator(mut body: serde_json::Value, record: &EventRecord) -> serde_json::Value {
    if let (Some(v), Some(map)) = (&record.validator, body.as_object_mut()) {
        map.insert("validator".into(), json!(v.as_str()));
    }
    body
}

/// Starts one delivery task per webhook; they end with `shutdown`.
pub fn start(hooks: &[WebhookConfig], events: &Arc<EventLog>, metrics: &Arc<Metrics>, shutdown: &CancellationToken) {
    for (index, hook) in hooks.iter().enumerate() {
        let client = match crate::http::client(hook.timeout) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(webhook = index, error = %e, "cannot build the HTTP client of a webhook; it stays off");
                continue;
            }
        };
        let (_, live) = events.follow();
        tokio::spawn(deliver_all(index, hook.clone(), client, live, Arc::clone(metrics), shutdown.clone()));
    }
}

async fn deliver_all(
    index: usize,
    hook: WebhookConfig,
    client: reqwest::Client,
    mut live: tokio::sync::broadcast::Receiver<EventRecord>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let record = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = live.recv() => r,
        };
        let record = match record {
            Ok(r) => r,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(webhook = index, missed, "events came faster than the webhook took them; dropped");
                for _ in 0..missed {
                    metrics.webhook_delivered(false);
                }
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Some(topic) = topic_of(&record).filter(|t| hook.topics.contains(t)) else { continue };
        let body = payload(hook.format, topic, &record);
        let delivered = tokio::select! {
            _ = shutdown.cancelled() => return,
            d = deliver(&client, &hook, &body) => d,
        };
        metrics.webhook_delivered(delivered.is_ok());
        if let Err(e) = delivered {
            tracing::warn!(webhook = index, seq = record.seq, topic = topic.as_str(), error = %e, "webhook delivery failed; event dropped");
        }
    }
}

/// POSTs `body` until a 2xx answer or `attempts` failures; returns the last failure.
async fn deliver(client: &reqwest::Client, hook: &WebhookConfig, body: &serde_json::Value) -> Result<(), String> {
    let mut backoff = Duration::from_secs(1);
    let mut last = String::new();
    for attempt in 1..=hook.attempts {
        match client.post(hook.url.0.clone()).json(body).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            // The status only: the receiver's body may echo the URL's secret part.
            Ok(r) => last = format!("attempt {attempt}: HTTP {}", r.status()),
            Err(e) => last = format!("attempt {attempt}: {}", e.without_url()),
        }
        if attempt < hook.attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Epoch, MemberId};

    fn record(kind: EventKind, message: &str) -> EventRecord {
        EventRecord {
            seq: 7,
            unix_ms: 1_700_000_000_000,
            member: MemberId::new("a").expect("id"),
            validator: None,
            kind,
            epoch: Some(Epoch::new(4)),
            cause: "",
            message: message.into(),
        }
    }

    #[test]
    fn role_changes_into_or_out_of_active_are_failovers_and_others_are_not() {
        let topic = |m: &str| topic_of(&record(EventKind::Role, m));
        assert_eq!(topic("promoting → active"), Some(WebhookTopic::Failover));
        assert_eq!(topic("active → demoting (StepDown(Unhealthy))"), Some(WebhookTopic::Failover));
        assert_eq!(topic("active → fenced (Fence(LeaseDeadline))"), Some(WebhookTopic::Failover));
        assert_eq!(topic("standby → promoting"), None);
        assert_eq!(topic("ineligible → standby"), None);
        assert_eq!(topic("no arrow here"), None);
    }

    #[test]
    fn fences_and_failed_guards_have_their_topics() {
        assert_eq!(topic_of(&record(EventKind::Fence, "producer fenced")), Some(WebhookTopic::Fence));
        assert_eq!(
            topic_of(&record(EventKind::Guard, "guard failed at watermark_floor: x")),
            Some(WebhookTopic::Refusal)
        );
        assert_eq!(topic_of(&record(EventKind::Guard, "every guard step passed: producing")), None);
        assert_eq!(topic_of(&record(EventKind::Lease, "lease free")), None);
    }

    #[test]
    fn payloads_in_both_formats() {
        let r = record(EventKind::Fence, "producer fenced (LeaseDeadline)");
        let j = payload(WebhookFormat::Json, WebhookTopic::Fence, &r);
        assert_eq!(j["member"], "a");
        assert_eq!(j["topic"], "fence");
        assert_eq!(j["epoch"], 4);
        assert_eq!(j["message"], "producer fenced (LeaseDeadline)");
        let s = payload(WebhookFormat::Slack, WebhookTopic::Fence, &r);
        assert_eq!(s["text"], "failoverd a: fence (epoch 4): producer fenced (LeaseDeadline)");
        assert_eq!(s.as_object().map(|o| o.len()), Some(1));
    }
}
