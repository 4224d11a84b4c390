//! Event webhooks against a real HTTP receiver on 127.0.0.1: retried until accepted, given up
//! after `attempts`, in both payload formats, and never in the way of the emitter.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::webhook_receiver::WebhookReceiver;
use failover::config::{WebhookConfig, WebhookFormat, WebhookTopic};
use failover::domain::{Epoch, MemberId, MemberKind};
use failover::events::{EventKind, EventLog};
use failover::telemetry::Metrics;
use failover::telemetry::webhook;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn hook(url: &str, format: WebhookFormat, topics: Vec<WebhookTopic>, attempts: u32) -> WebhookConfig {
    WebhookConfig { url: url.parse().expect("url"), format, topics, timeout: Duration::from_secs(2), attempts }
}

fn delivered(metrics: &Metrics, result: &str) -> u64 {
    let series = format!("failoverd_webhook_deliveries_total{{result=\"{result}\"}} ");
    metrics.encode().lines().find_map(|l| l.strip_prefix(&series)?.parse().ok()).unwrap_or(0)
}

async fn wait_delivered(metrics: &Metrics, result: &str, n: u64) {
    let end = Instant::now() + Duration::from_secs(15);
    while delivered(metrics, result) < n {
        assert!(Instant::now() < end, "{n} deliveries {result} never counted:\n{}", metrics.encode());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_retried_until_accepted_and_other_topics_are_not_sent() {
    let a = MemberId::new("a").expect("id");
    let events = Arc::new(EventLog::new(a.clone()));
    let metrics = Arc::new(Metrics::new(&a, MemberKind::Producer));
    let receiver = WebhookReceiver::start(2).await;
    let shutdown = CancellationToken::new();
    webhook::start(
        &[hook(&receiver.url(), WebhookFormat::Json, vec![WebhookTopic::Fence], 5)],
        &events,
        &metrics,
        &shutdown,
    );
    let emitted = Instant::now();
    events.emit(EventKind::Role, Some(Epoch::new(3)), "promoting → active");
    events.emit(EventKind::Fence, Some(Epoch::new(3)), "producer fenced (LeaseDeadline)");
    assert!(emitted.elapsed() < Duration::from_millis(50), "emitting waited for the receiver");
    wait_delivered(&metrics, "delivered", 1).await;
    // Two refusals (HTTP 500) and the accepted third attempt, all of the fence event: the
    // failover event is not among the configured topics.
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    for b in &bodies {
        assert_eq!(b["topic"], "fence");
        assert_eq!(b["member"], "a");
        assert_eq!(b["epoch"], 3);
        assert_eq!(b["message"], "producer fenced (LeaseDeadline)");
    }
    assert_eq!(delivered(&metrics, "failed"), 0);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_receiver_is_given_up_after_its_attempts_and_slack_gets_text() {
    let a = MemberId::new("a").expect("id");
    let events = Arc::new(EventLog::new(a.clone()));
    let metrics = Arc::new(Metrics::new(&a, MemberKind::Producer));
    let slack = WebhookReceiver::start(0).await;
    let closed = format!("http://127.0.0.1:{}/hook", common::lab::free_port());
    let shutdown = CancellationToken::new();
    let all = vec![WebhookTopic::Failover, WebhookTopic::Fence, WebhookTopic::Refusal];
    webhook::start(
        &[hook(&closed, WebhookFormat::Json, all.clone(), 2), hook(&slack.url(), WebhookFormat::Slack, all, 2)],
        &events,
        &metrics,
        &shutdown,
    );
    events.emit(EventKind::Guard, Some(Epoch::new(5)), "guard failed at watermark_floor: the store is unavailable");
    let text = slack.wait_for(Duration::from_secs(5), |b| b.get("text").is_some()).await;
    assert_eq!(
        text["text"],
        "failoverd a: refusal (epoch 5): guard failed at watermark_floor: the store is unavailable"
    );
    // The dead receiver: two attempts one second apart, then the event is dropped and counted.
    wait_delivered(&metrics, "failed", 1).await;
    assert_eq!(delivered(&metrics, "delivered"), 1);
    shutdown.cancel();
}
