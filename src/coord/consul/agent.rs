//! The local Consul agent's HTTP API as the Consul coordinator uses it: a TTL check, a session
//! bound to it, KV reads (consistent or blocking), KV writes (acquire, release, check-and-set) and
//! transactions. Calls go through consulrs; `/v1/txn`, which consulrs lacks, goes through the
//! project's reqwest client with the same address, token and CA.
//!
//! Owns the mapping of Consul's answers to plain data ([`KvEntry`]) and of its failures to
//! [`AgentError`]; it decides nothing about leases. No call here has its own deadline: the caller
//! bounds every one (dropping the future cancels the request).

use std::time::Duration;

use consulrs::api::Features;
use consulrs::api::features::{Blocking, ConsistencyMode};
use consulrs::api::kv::requests::{ReadKeyRequest, SetKeyRequest};
use consulrs::client::{ConsulClient, ConsulClientSettingsBuilder};
use consulrs::error::ClientError;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::ConsulConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the Consul agent at {address}: {detail}")]
    Unreachable { address: String, detail: String },
    #[error("Consul answered HTTP {code}: {message}")]
    Api { code: u16, message: String },
    #[error("Consul's answer is malformed: {0}")]
    Malformed(String),
    #[error("cannot set up the Consul client: {0}")]
    Setup(String),
}

/// One KV entry as Consul returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub modify_index: u64,
    pub lock_index: u64,
    /// The session holding the key's lock, if any.
    pub session: Option<String>,
}

/// One operation of a `/v1/txn` transaction.
#[derive(Clone, Debug)]
pub enum TxnOp {
    /// Fails the transaction unless `key` is locked by `session`.
    CheckSession { key: String, session: String },
    /// Sets `key` only if its ModifyIndex is `index` (0: only if it does not exist).
    Cas { key: String, value: Vec<u8>, index: u64 },
}

pub struct Agent {
    address: String,
    client: ConsulClient,
    txn: reqwest::Client,
    token: Option<String>,
}

impl Agent {
    pub fn new(config: &ConsulConfig, token: Option<String>) -> Result<Agent, AgentError> {
        let address = config.address.0.as_str().trim_end_matches('/').to_string();
        let mut settings = ConsulClientSettingsBuilder::default();
        settings.address(address.clone()).verify(true);
        if let Some(ca) = &config.ca_file {
            settings.ca_certs(vec![ca.display().to_string()]);
        } else {
            settings.ca_certs(Vec::<String>::new());
        }
        match &token {
            Some(t) => {
                settings.token(t.clone());
            }
            None => {
                settings.token(String::new());
            }
        }
        let settings = settings.build().map_err(|e| AgentError::Setup(e.to_string()))?;
        let client = ConsulClient::new(settings).map_err(|e| AgentError::Setup(e.to_string()))?;
        crate::http::install_crypto_provider();
        let mut txn = reqwest::Client::builder().no_proxy();
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                AgentError::Setup(format!("cannot read coordinator.consul.ca_file {}: {e}", ca.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| AgentError::Setup(format!("coordinator.consul.ca_file {}: {e}", ca.display())))?;
            txn = txn.add_root_certificate(cert);
        }
        let txn = txn.build().map_err(|e| AgentError::Setup(e.to_string()))?;
        Ok(Agent { address, client, txn, token })
    }

    fn error(&self, e: ClientError) -> AgentError {
        match e {
            ClientError::APIError { code, message } => {
                AgentError::Api { code, message: message.unwrap_or_default().trim().to_string() }
            }
            ClientError::RestClientError { source } => {
                AgentError::Unreachable { address: self.address.clone(), detail: source.to_string() }
            }
            other => AgentError::Unreachable { address: self.address.clone(), detail: other.to_string() },
        }
    }

    /// Registers (or re-registers) a TTL check on the agent, passing.
    pub async fn register_ttl_check(&self, id: &str, name: &str, ttl: Duration) -> Result<(), AgentError> {
        let mut opts = consulrs::api::check::requests::RegisterCheckRequest::builder();
        opts.id(id)
            .ttl(go_duration(ttl))
            .status("passing")
            .notes("failoverd keeps this passing; its session is bound to it");
        consulrs::check::register(&self.client, name, Some(&mut opts)).await.map(|_| ()).map_err(|e| self.error(e))
    }

    pub async fn pass_check(&self, id: &str) -> Result<(), AgentError> {
        consulrs::check::pass(&self.client, id, None).await.map(|_| ()).map_err(|e| self.error(e))
    }

    /// Creates a session bound to `checks` (and nothing else), releasing its locks when
    /// invalidated, with `lock_delay`.
    pub async fn create_session(
        &self,
        name: &str,
        checks: &[String],
        lock_delay: Duration,
    ) -> Result<String, AgentError> {
        let mut opts = consulrs::api::session::requests::CreateSessionRequest::builder();
        opts.name(name).behavior("release").lock_delay(go_duration(lock_delay)).node_checks(checks.to_vec());
        let r = consulrs::session::create(&self.client, Some(&mut opts)).await.map_err(|e| self.error(e))?;
        Ok(r.response.id)
    }

    /// Whether Consul still knows session `id` (an invalidated session is gone).
    pub async fn session_alive(&self, id: &str) -> Result<bool, AgentError> {
        match consulrs::session::read(&self.client, id, None).await {
            Ok(r) => Ok(!r.response.is_empty()),
            Err(ClientError::APIError { code: 404, .. }) => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    pub async fn destroy_session(&self, id: &str) -> Result<(), AgentError> {
        consulrs::session::delete(&self.client, id, None).await.map(|_| ()).map_err(|e| self.error(e))
    }

    /// A consistent read of `key` (every entry under it with `recurse`); `None` when absent.
    pub async fn read(&self, key: &str, recurse: bool) -> Result<Option<Vec<KvEntry>>, AgentError> {
        let features = Features { mode: Some(ConsistencyMode::CONSISTENT), ..Features::default() };
        self.read_with(key, recurse, features).await.map(|r| r.map(|(entries, _)| entries))
    }

    /// A blocking read of `key`: answers when its index passes `index`, or after `wait`.
    /// Returns the entries and the index to wait on next.
    pub async fn read_blocking(
        &self,
        key: &str,
        index: u64,
        wait: Duration,
    ) -> Result<(Option<Vec<KvEntry>>, u64), AgentError> {
        let blocking = Blocking { index, wait: Some(go_duration(wait)) };
        let features = Features { blocking: Some(blocking), ..Features::default() };
        match self.read_with(key, false, features).await? {
            Some((entries, next)) => Ok((Some(entries), next)),
            // A missing key answers 404 at once; wait a little to avoid spinning.
            None => Ok((None, index)),
        }
    }

    async fn read_with(
        &self,
        key: &str,
        recurse: bool,
        features: Features,
    ) -> Result<Option<(Vec<KvEntry>, u64)>, AgentError> {
        let mut opts = ReadKeyRequest::builder();
        opts.features(features);
        if recurse {
            opts.recurse(true);
        }
        match consulrs::kv::read(&self.client, key, Some(&mut opts)).await {
            Ok(r) => {
                let index = r.index.as_deref().and_then(|i| i.parse().ok()).unwrap_or(0);
                let entries = r.response.into_iter().map(entry).collect::<Result<Vec<_>, _>>()?;
                Ok(Some((entries, index)))
            }
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// `PUT key?acquire=session`: whether the lock was taken.
    pub async fn acquire<T: Serialize>(&self, key: &str, value: &T, session: &str) -> Result<bool, AgentError> {
        let mut opts = SetKeyRequest::builder();
        opts.acquire(session);
        self.set(key, value, &mut opts).await
    }

    /// `PUT key?release=session`: whether the lock was given up.
    pub async fn release<T: Serialize>(&self, key: &str, value: &T, session: &str) -> Result<bool, AgentError> {
        let mut opts = SetKeyRequest::builder();
        opts.release(session);
        self.set(key, value, &mut opts).await
    }

    /// `PUT key?cas=index`: whether the write happened.
    pub async fn cas<T: Serialize>(&self, key: &str, value: &T, index: u64) -> Result<bool, AgentError> {
        let mut opts = SetKeyRequest::builder();
        opts.cas(index);
        self.set(key, value, &mut opts).await
    }

    async fn set<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        opts: &mut consulrs::api::kv::requests::SetKeyRequestBuilder,
    ) -> Result<bool, AgentError> {
        consulrs::kv::set_json(&self.client, key, value, Some(opts))
            .await
            .map(|r| r.response)
            .map_err(|e| self.error(e))
    }

    /// Runs `ops` atomically: `Ok(true)` when all applied, `Ok(false)` when a check or CAS failed.
    pub async fn txn(&self, ops: &[TxnOp]) -> Result<bool, AgentError> {
        let body: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                TxnOp::CheckSession { key, session } => {
                    json!({"KV": {"Verb": "check-session", "Key": key, "Session": session}})
                }
                TxnOp::Cas { key, value, index } => {
                    json!({"KV": {"Verb": "cas", "Key": key, "Value": base64_encode(value), "Index": index}})
                }
            })
            .collect();
        let mut request = self.txn.put(format!("{}/v1/txn", self.address)).json(&body);
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        let unreachable =
            |e: reqwest::Error| AgentError::Unreachable { address: self.address.clone(), detail: e.to_string() };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(unreachable)?;
        match status {
            200 => Ok(true),
            // 409: a check or CAS failed; the transaction was rolled back.
            409 => Ok(false),
            code => Err(AgentError::Api { code, message: crate::chain::rpc::quote(text.as_bytes()) }),
        }
    }
}

fn entry(kv: consulrs::api::kv::common::KVPair) -> Result<KvEntry, AgentError> {
    let value: Vec<u8> = match kv.value {
        Some(v) => v.try_into().map_err(|e: ClientError| AgentError::Malformed(format!("{}: {e}", kv.key)))?,
        None => Vec::new(),
    };
    Ok(KvEntry { key: kv.key, value, modify_index: kv.modify_index, lock_index: kv.lock_index, session: kv.session })
}

/// A duration as Consul parses it ("1500ms").
pub fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Standard base64 with padding, as Consul's transaction API expects for values.
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_vectors() {
        // RFC 4648 §10.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn durations_in_consuls_syntax() {
        assert_eq!(go_duration(Duration::from_secs(2)), "2000ms");
        assert_eq!(go_duration(Duration::ZERO), "1ms");
    }
}
