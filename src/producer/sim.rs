//! The simulated chain's API producer: turns a simulated node's signing on (above the floor) and
//! off over its `/sim/produce` control, as the Antelope producer does with `/v1/producer/*`. The
//! node has no deadline of its own: once on, it signs until told to stop or its process dies, so
//! `extend` has nothing to do, and the node of a daemon frozen while active signs on, as a real
//! API-driven node would.
//!
//! `fence` uses a plain blocking socket, not the async client: it runs on the self-fence thread
//! while the runtime may be stalled.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Grant, Producer, ProducerError, ProducerStatus};
use crate::config::HttpUrl;
use crate::domain::MonoTime;
use crate::sim::node::{Produce, StateReport};

pub struct SimProducer {
    base: reqwest::Url,
    client: reqwest::Client,
}

impl SimProducer {
    pub fn new(rpc: &HttpUrl, timeout: Duration) -> Result<SimProducer, ProducerError> {
        let client = crate::http::client(timeout)
            .map_err(|e| ProducerError::Failed { operation: "setup", detail: e.to_string() })?;
        Ok(SimProducer { base: rpc.0.clone(), client })
    }

    async fn post(
        &self,
        body: &Produce,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<StateReport, ProducerError> {
        let url =
            self.base.join("sim/produce").map_err(|e| ProducerError::Failed { operation, detail: e.to_string() })?;
        let work = async {
            let r = self
                .client
                .post(url)
                .json(body)
                .send()
                .await
                .map_err(|e| ProducerError::Failed { operation, detail: e.to_string() })?;
            if !r.status().is_success() {
                return Err(ProducerError::Failed { operation, detail: format!("HTTP {}", r.status()) });
            }
            r.json::<StateReport>().await.map_err(|e| ProducerError::Failed { operation, detail: e.to_string() })
        };
        tokio::time::timeout_at(deadline, work).await.unwrap_or(Err(ProducerError::Timeout { operation }))
    }
}

fn status_of(r: &StateReport) -> ProducerStatus {
    ProducerStatus { active: r.state.producing, last_signed_height: r.state.last_signed }
}

#[async_trait]
impl Producer for SimProducer {
    async fn activate(&self, grant: Grant, deadline: Instant) -> Result<(), ProducerError> {
        let body = Produce { active: true, floor: grant.floor.0.height };
        let r = self.post(&body, deadline, "activate").await?;
        if r.state.producing {
            Ok(())
        } else {
            Err(ProducerError::Failed { operation: "activate", detail: "the node did not confirm production".into() })
        }
    }

    async fn extend(&self, _until: MonoTime, _deadline: Instant) -> Result<(), ProducerError> {
        Ok(())
    }

    async fn deactivate(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        let r = self.post(&Produce { active: false, floor: 0 }, deadline, "deactivate").await?;
        if r.state.producing {
            return Err(ProducerError::Failed { operation: "deactivate", detail: "the node still produces".into() });
        }
        Ok(status_of(&r))
    }

    fn fence(&self, timeout: Duration) -> Result<(), ProducerError> {
        let operation = "fence";
        let fail = |detail: String| ProducerError::Failed { operation, detail };
        let host = self.base.host_str().ok_or_else(|| fail("the rpc URL has no host".into()))?;
        let port = self.base.port_or_known_default().unwrap_or(80);
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| fail(e.to_string()))?
            .next()
            .ok_or_else(|| fail("no address".into()))?;
        let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => s,
            // Nothing listens: the simulated node is not running, so it cannot sign.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(()),
            Err(e) => return Err(fail(format!("cannot reach the node: {e}"))),
        };
        stream.set_read_timeout(Some(timeout)).map_err(|e| fail(e.to_string()))?;
        stream.set_write_timeout(Some(timeout)).map_err(|e| fail(e.to_string()))?;
        let body = br#"{"active":false}"#;
        let request = format!(
            "POST /sim/produce HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(request.as_bytes()).and_then(|_| stream.write_all(body)).map_err(|e| fail(e.to_string()))?;
        let mut response = Vec::new();
        let _ = stream.take(64 * 1024).read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        if text.starts_with("HTTP/1.1 200") && text.contains("\"producing\":false") {
            Ok(())
        } else {
            Err(fail(format!("unexpected answer: {}", text.lines().next().unwrap_or(""))))
        }
    }

    async fn status(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        let operation = "status";
        let url =
            self.base.join("sim/state").map_err(|e| ProducerError::Failed { operation, detail: e.to_string() })?;
        let work = async {
            let r = self
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| ProducerError::Failed { operation, detail: e.to_string() })?;
            r.json::<StateReport>().await.map_err(|e| ProducerError::Failed { operation, detail: e.to_string() })
        };
        let r = tokio::time::timeout_at(deadline, work).await.unwrap_or(Err(ProducerError::Timeout { operation }))?;
        Ok(status_of(&r))
    }
}
