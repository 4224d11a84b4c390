//! A webhook receiver on 127.0.0.1 for the tests: records every POSTed JSON body and answers
//! HTTP 500 to the first `fail_first` requests, 200 after.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::time::Instant;

#[derive(Default)]
struct Seen {
    requests: usize,
    bodies: Vec<serde_json::Value>,
}

pub struct WebhookReceiver {
    pub port: u16,
    seen: Arc<Mutex<Seen>>,
}

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Seen>>,
    fail_first: usize,
}

async fn hook(State(s): State<Shared>, body: String) -> StatusCode {
    let mut seen = s.seen.lock().expect("lock");
    seen.requests += 1;
    seen.bodies.push(serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)));
    if seen.requests <= s.fail_first { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
}

impl WebhookReceiver {
    pub async fn start(fail_first: usize) -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = Router::new().route("/hook", post(hook)).with_state(Shared { seen: Arc::clone(&seen), fail_first });
        tokio::spawn(async move { axum::serve(listener, app).await });
        WebhookReceiver { port, seen }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn requests(&self) -> usize {
        self.seen.lock().expect("lock").requests
    }

    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.seen.lock().expect("lock").bodies.clone()
    }

    /// Waits until a received body satisfies `pred`; returns it.
    pub async fn wait_for(&self, limit: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let end = Instant::now() + limit;
        loop {
            if let Some(b) = self.bodies().into_iter().find(|b| pred(b)) {
                return b;
            }
            assert!(Instant::now() < end, "no matching webhook within {limit:?}; got {:?}", self.bodies());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
