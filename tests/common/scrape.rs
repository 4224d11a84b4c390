//! Reading a member's metrics and health listener over real HTTP.

use std::time::Duration;

use tokio::time::Instant;

/// Status and body of `GET path` on 127.0.0.1:`port`; status 0 and the error when unreachable.
pub async fn get(port: u16, path: &str) -> (u16, String) {
    let client = failover::http::client(Duration::from_secs(2)).expect("client");
    match client.get(format!("http://127.0.0.1:{port}{path}")).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// The value of the sample `series` (name and labels exactly as exposed).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

/// Waits until `/metrics` on `port` (member `name`) satisfies `pred`; returns the exposition.
pub async fn wait_metrics(port: u16, name: &str, limit: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + limit;
    loop {
        let (status, text) = get(port, "/metrics").await;
        if status == 200 && pred(&text) {
            return text;
        }
        assert!(Instant::now() < end, "member {name}: {what} within {limit:?}; /metrics said:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
