//! The local Consul agent's HTTP API as the Consul coordinator uses it: a TTL check, a session
//! bound to it, KV reads (consistent or blocking), KV writes (acquire, release, check-and-set) and
//! transactions. Every call goes through the project's reqwest client (rustls with ring, no
//! OpenSSL), with the configured CA as the only root for an `https://` agent and the ACL token in
//! `X-Consul-Token`.
//!
//! Owns the mapping of Consul's answers to plain data ([`KvEntry`]) and of its failures to
//! [`AgentError`]: an answer is read into memory only up to [`ANSWER_LIMIT`], and one that is not
//! what Consul sends (not JSON, a field missing or of another type, a Value that is not base64) is
//! refused naming the field; it never panics on what the agent sends. It decides nothing about
//! leases. No call here has its own deadline: the caller bounds every one (dropping the future
//! cancels the request).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::ConsulConfig;

/// The most of one answer that is read: Consul's own KV values are at most 512 KiB, and failoverd
/// reads at most one prefix of small JSON values at a time.
pub const ANSWER_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the Consul agent at {address}: {detail}")]
    Unreachable { address: String, detail: String },
    #[error("the Consul agent answered HTTP {code} to {request}: {message}")]
    Api { request: String, code: u16, message: String },
    #[error(
        "the Consul agent's answer to {request} is malformed: {field} {problem}; is coordinator.consul.address a Consul agent?"
    )]
    Malformed { request: String, field: String, problem: String },
    #[error(
        "the Consul agent's answer to {request} is larger than {limit} bytes{}; failoverd refused to read it: check what wrote so much under coordinator.consul.prefix",
        declared.map(|n| format!(" ({n} bytes declared)")).unwrap_or_default()
    )]
    AnswerTooLarge { request: String, limit: usize, declared: Option<u64> },
    #[error("cannot encode the value for Consul key {key} as JSON: {detail}")]
    Unencodable { key: String, detail: String },
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
    /// Fails the transaction unless `key`'s ModifyIndex is `index`.
    CheckIndex { key: String, index: u64 },
    /// Releases `session`'s lock on `key`, setting `value`; fails unless `session` holds it.
    Unlock { key: String, value: Vec<u8>, session: String },
    /// Locks `key` for `session`, setting `value`; fails if another session holds it.
    Lock { key: String, value: Vec<u8>, session: String },
}

/// An answer read whole (within [`ANSWER_LIMIT`]).
struct Answer {
    /// "GET /v1/kv/…", for error messages.
    request: String,
    status: StatusCode,
    /// The `X-Consul-Index` header, as sent.
    index: Option<Vec<u8>>,
    body: Vec<u8>,
}

pub struct Agent {
    /// The agent's address as configured, for error messages.
    address: String,
    base: Url,
    http: reqwest::Client,
    /// The ACL token, marked sensitive so that no debug output of a request shows it.
    token: Option<reqwest::header::HeaderValue>,
}

impl Agent {
    pub fn new(config: &ConsulConfig, token: Option<String>) -> Result<Agent, AgentError> {
        let base = config.address.0.clone();
        if base.cannot_be_a_base() {
            return Err(AgentError::Setup(format!(
                "coordinator.consul.address {} cannot have API paths appended; give it as http://host:port",
                config.address
            )));
        }
        crate::http::install_crypto_provider();
        // No redirects: the agent never sends one for these endpoints, and reqwest would carry
        // X-Consul-Token to whatever host a redirect names. A 3xx is an error instead.
        let mut http = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                AgentError::Setup(format!("cannot read coordinator.consul.ca_file {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                AgentError::Setup(format!("coordinator.consul.ca_file {} holds no PEM certificate: {e}", ca.display()))
            })?;
            if certs.is_empty() {
                return Err(AgentError::Setup(format!(
                    "coordinator.consul.ca_file {} holds no PEM certificate",
                    ca.display()
                )));
            }
            http = http.tls_certs_only(certs);
        }
        let http = http.build().map_err(|e| AgentError::Setup(crate::http::error_chain(&e)))?;
        let token = match token {
            Some(t) => {
                let mut value = reqwest::header::HeaderValue::from_str(&t).map_err(|_| {
                    AgentError::Setup(
                        "the ACL token in coordinator.consul.token_file has characters an HTTP header cannot carry"
                            .into(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Agent { address: config.address.to_string(), base, http, token })
    }

    /// The URL of `fixed` (literal path segments) followed by `tail`, each tail segment
    /// percent-encoded (a `/` inside one is encoded too).
    fn url<'a>(&self, fixed: &str, tail: impl IntoIterator<Item = &'a str>) -> Result<Url, AgentError> {
        let mut url = self.base.clone();
        url.set_query(None);
        url.path_segments_mut()
            .map_err(|()| AgentError::Setup(format!("{} cannot have API paths appended", self.address)))?
            .pop_if_empty()
            .extend(fixed.split('/'))
            .extend(tail);
        Ok(url)
    }

    /// The URL of KV `key`, its `/`-separated segments encoded one by one.
    fn kv_url(&self, key: &str) -> Result<Url, AgentError> {
        self.url("v1/kv", key.split('/'))
    }

    /// Sends one request and reads its answer, at most [`ANSWER_LIMIT`] bytes of it.
    async fn exchange(&self, method: Method, url: Url, body: Option<Vec<u8>>) -> Result<Answer, AgentError> {
        let request = format!("{method} {}", url.path());
        let unreachable = |e: reqwest::Error| AgentError::Unreachable {
            address: self.address.clone(),
            detail: format!("{request}: {}", crate::http::error_chain(&e)),
        };
        let mut builder = self.http.request(method, url);
        if let Some(token) = &self.token {
            builder = builder.header("X-Consul-Token", token.clone());
        }
        if let Some(body) = body {
            builder = builder.body(body);
        }
        let mut response = builder.send().await.map_err(unreachable)?;
        let too_large =
            |declared| AgentError::AnswerTooLarge { request: request.clone(), limit: ANSWER_LIMIT, declared };
        let declared = response.content_length();
        if let Some(n) = declared.filter(|n| *n > ANSWER_LIMIT as u64) {
            return Err(too_large(Some(n)));
        }
        let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > ANSWER_LIMIT {
                return Err(too_large(declared));
            }
            body.extend_from_slice(&chunk);
        }
        let index = response.headers().get("X-Consul-Index").map(|v| v.as_bytes().to_vec());
        Ok(Answer { status: response.status(), index, body, request })
    }

    /// [`Self::exchange`], with any status but 2xx (and those in `accepted`) an [`AgentError::Api`].
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        accepted: &[StatusCode],
    ) -> Result<Answer, AgentError> {
        let answer = self.exchange(method, url, body).await?;
        if answer.status.is_success() || accepted.contains(&answer.status) {
            return Ok(answer);
        }
        Err(AgentError::Api {
            request: answer.request,
            code: answer.status.as_u16(),
            message: crate::chain::rpc::quote(answer.body.trim_ascii()),
        })
    }

    /// Registers (or re-registers) a TTL check on the agent, passing.
    pub async fn register_ttl_check(&self, id: &str, name: &str, ttl: Duration) -> Result<(), AgentError> {
        let body = json!({
            "ID": id,
            "Name": name,
            "TTL": go_duration(ttl),
            "Status": "passing",
            "Notes": "failoverd keeps this passing; its session is bound to it",
        });
        let url = self.url("v1/agent/check/register", [])?;
        self.call(Method::PUT, url, Some(body.to_string().into_bytes()), &[]).await.map(drop)
    }

    pub async fn pass_check(&self, id: &str) -> Result<(), AgentError> {
        let url = self.url("v1/agent/check/pass", [id])?;
        self.call(Method::PUT, url, None, &[]).await.map(drop)
    }

    /// Creates a session bound to `checks` (and nothing else), releasing its locks when
    /// invalidated, with `lock_delay`.
    pub async fn create_session(
        &self,
        name: &str,
        checks: &[String],
        lock_delay: Duration,
    ) -> Result<String, AgentError> {
        let body = json!({
            "Name": name,
            "Behavior": "release",
            "LockDelay": go_duration(lock_delay),
            "NodeChecks": checks,
        });
        let url = self.url("v1/session/create", [])?;
        let answer = self.call(Method::PUT, url, Some(body.to_string().into_bytes()), &[]).await?;
        parse_session_created(&answer.request, &answer.body)
    }

    /// Whether Consul still knows session `id` (an invalidated session is gone).
    pub async fn session_alive(&self, id: &str) -> Result<bool, AgentError> {
        let url = self.url("v1/session/info", [id])?;
        let answer = self.call(Method::GET, url, None, &[StatusCode::NOT_FOUND]).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        parse_session_info(&answer.request, &answer.body, id)
    }

    pub async fn destroy_session(&self, id: &str) -> Result<(), AgentError> {
        let url = self.url("v1/session/destroy", [id])?;
        self.call(Method::PUT, url, None, &[]).await.map(drop)
    }

    /// A consistent read of `key` (every entry under it with `recurse`); `None` when absent.
    pub async fn read(&self, key: &str, recurse: bool) -> Result<Option<Vec<KvEntry>>, AgentError> {
        let mut url = self.kv_url(key)?;
        url.query_pairs_mut().append_key_only("consistent");
        if recurse {
            url.query_pairs_mut().append_key_only("recurse");
        }
        self.read_url(url).await.map(|(entries, _)| entries)
    }

    /// A blocking read of `key`: answers when its index passes `index`, or after `wait`.
    /// Returns the entries (`None`: absent) and the index to wait on next.
    pub async fn read_blocking(
        &self,
        key: &str,
        index: u64,
        wait: Duration,
    ) -> Result<(Option<Vec<KvEntry>>, u64), AgentError> {
        let mut url = self.kv_url(key)?;
        url.query_pairs_mut().append_pair("index", &index.to_string()).append_pair("wait", &go_duration(wait));
        self.read_url(url).await
    }

    async fn read_url(&self, url: Url) -> Result<(Option<Vec<KvEntry>>, u64), AgentError> {
        let answer = self.call(Method::GET, url, None, &[StatusCode::NOT_FOUND]).await?;
        let index = parse_index(&answer.request, answer.index.as_deref())?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok((None, index));
        }
        Ok((Some(parse_kv_entries(&answer.request, &answer.body)?), index))
    }

    /// `PUT key?acquire=session`: whether the lock was taken.
    pub async fn acquire<T: Serialize>(&self, key: &str, value: &T, session: &str) -> Result<bool, AgentError> {
        self.put_kv(key, value, ("acquire", session)).await
    }

    /// `PUT key?release=session`: whether the lock was given up.
    pub async fn release<T: Serialize>(&self, key: &str, value: &T, session: &str) -> Result<bool, AgentError> {
        self.put_kv(key, value, ("release", session)).await
    }

    /// `PUT key?cas=index`: whether the write happened.
    pub async fn cas<T: Serialize>(&self, key: &str, value: &T, index: u64) -> Result<bool, AgentError> {
        self.put_kv(key, value, ("cas", &index.to_string())).await
    }

    async fn put_kv<T: Serialize>(&self, key: &str, value: &T, (name, arg): (&str, &str)) -> Result<bool, AgentError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| AgentError::Unencodable { key: key.to_string(), detail: e.to_string() })?;
        let mut url = self.kv_url(key)?;
        url.query_pairs_mut().append_pair(name, arg);
        let answer = self.call(Method::PUT, url, Some(body), &[]).await?;
        parse_bool(&answer.request, &answer.body)
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
                TxnOp::CheckIndex { key, index } => {
                    json!({"KV": {"Verb": "check-index", "Key": key, "Index": index}})
                }
                TxnOp::Unlock { key, value, session } => {
                    json!({"KV": {"Verb": "unlock", "Key": key, "Value": base64_encode(value), "Session": session}})
                }
                TxnOp::Lock { key, value, session } => {
                    json!({"KV": {"Verb": "lock", "Key": key, "Value": base64_encode(value), "Session": session}})
                }
            })
            .collect();
        let url = self.url("v1/txn", [])?;
        let body = Value::Array(body).to_string().into_bytes();
        // 409: a check or CAS failed; the transaction was rolled back.
        let answer = self.call(Method::PUT, url, Some(body), &[StatusCode::CONFLICT]).await?;
        parse_txn(&answer.request, answer.status, &answer.body, ops.len())
    }
}

fn malformed(request: &str, field: &str, problem: impl Into<String>) -> AgentError {
    AgentError::Malformed { request: request.to_string(), field: field.to_string(), problem: problem.into() }
}

/// The body as JSON.
fn parse_json(request: &str, body: &[u8]) -> Result<Value, AgentError> {
    serde_json::from_slice(body)
        .map_err(|e| malformed(request, "the body", format!("is not JSON ({e}): {}", crate::chain::rpc::quote(body))))
}

fn wrong_type(request: &str, field: &str, value: &Value, expected: &str) -> AgentError {
    malformed(request, field, format!("is {}, not {expected}", crate::chain::rpc::kind_of(value)))
}

/// Field `name` of `object` (shown as `at`), which must be present and not null.
fn required<'a>(request: &str, object: &'a Value, name: &str, at: &str) -> Result<&'a Value, AgentError> {
    match object.get(name) {
        None | Some(Value::Null) => Err(malformed(request, at, "is missing")),
        Some(v) => Ok(v),
    }
}

fn required_u64(request: &str, object: &Value, name: &str, at: &str) -> Result<u64, AgentError> {
    let value = required(request, object, name, at)?;
    value.as_u64().ok_or_else(|| wrong_type(request, at, value, "a whole number from 0 to 2^64-1"))
}

fn required_string(request: &str, object: &Value, name: &str, at: &str) -> Result<String, AgentError> {
    match required(request, object, name, at)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(wrong_type(request, at, other, "a string")),
    }
}

/// The `X-Consul-Index` header: a decimal number Consul sends with every KV read.
fn parse_index(request: &str, header: Option<&[u8]>) -> Result<u64, AgentError> {
    const FIELD: &str = "the X-Consul-Index header";
    let header = header.ok_or_else(|| malformed(request, FIELD, "is missing"))?;
    std::str::from_utf8(header).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| {
        malformed(request, FIELD, format!("is {}, not a whole number", crate::chain::rpc::quote(header)))
    })
}

/// A `GET /v1/kv/…` answer: an array of entries, each Value standard base64 (or null: empty).
/// Public for the fuzz target `consul_kv`.
pub fn parse_kv_entries(request: &str, body: &[u8]) -> Result<Vec<KvEntry>, AgentError> {
    let json = parse_json(request, body)?;
    let Value::Array(items) = json else { return Err(wrong_type(request, "the body", &json, "an array of entries")) };
    let mut entries = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |name: &str| format!("[{i}].{name}");
        if !item.is_object() {
            return Err(wrong_type(request, &format!("[{i}]"), item, "an object"));
        }
        let value = match item.get("Value") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(text)) => BASE64
                .decode(text)
                .map_err(|e| malformed(request, &at("Value"), format!("is not standard base64: {e}")))?,
            Some(other) => return Err(wrong_type(request, &at("Value"), other, "a base64 string")),
        };
        let session = match item.get("Session") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(wrong_type(request, &at("Session"), other, "a session id")),
        };
        entries.push(KvEntry {
            key: required_string(request, item, "Key", &at("Key"))?,
            value,
            modify_index: required_u64(request, item, "ModifyIndex", &at("ModifyIndex"))?,
            lock_index: required_u64(request, item, "LockIndex", &at("LockIndex"))?,
            session,
        });
    }
    Ok(entries)
}

/// A `PUT /v1/session/create` answer: `{"ID": "…"}`.
fn parse_session_created(request: &str, body: &[u8]) -> Result<String, AgentError> {
    let json = parse_json(request, body)?;
    if !json.is_object() {
        return Err(wrong_type(request, "the body", &json, "an object"));
    }
    let id = required_string(request, &json, "ID", "ID")?;
    if id.is_empty() {
        return Err(malformed(request, "ID", "is empty"));
    }
    Ok(id)
}

/// A `GET /v1/session/info/:id` answer: `[]` once the session is gone, else its one entry.
fn parse_session_info(request: &str, body: &[u8], id: &str) -> Result<bool, AgentError> {
    let json = parse_json(request, body)?;
    let items = match &json {
        Value::Null => return Ok(false),
        Value::Array(items) => items,
        other => return Err(wrong_type(request, "the body", other, "an array of sessions")),
    };
    let mut alive = false;
    for (i, item) in items.iter().enumerate() {
        if !item.is_object() {
            return Err(wrong_type(request, &format!("[{i}]"), item, "an object"));
        }
        alive |= required_string(request, item, "ID", &format!("[{i}].ID"))? == id;
    }
    if !items.is_empty() && !alive {
        return Err(malformed(request, "[0].ID", format!("is not the session asked about ({id})")));
    }
    Ok(alive)
}

/// A KV write's answer: `true` or `false`.
fn parse_bool(request: &str, body: &[u8]) -> Result<bool, AgentError> {
    match parse_json(request, body)? {
        Value::Bool(b) => Ok(b),
        other => Err(wrong_type(request, "the body", &other, "true or false")),
    }
}

/// A `/v1/txn` answer: 200 with one result per operation and no errors (applied), or 409 with
/// the errors (rolled back). Anything else cannot say whether the write happened.
fn parse_txn(request: &str, status: StatusCode, body: &[u8], ops: usize) -> Result<bool, AgentError> {
    let json = parse_json(request, body)?;
    if !json.is_object() {
        return Err(wrong_type(request, "the body", &json, "an object"));
    }
    let errors = match json.get("Errors") {
        None | Some(Value::Null) => 0,
        Some(Value::Array(errors)) => errors.len(),
        Some(other) => return Err(wrong_type(request, "Errors", other, "an array")),
    };
    if status == StatusCode::CONFLICT {
        if errors == 0 {
            return Err(malformed(request, "Errors", "is empty in a 409 answer, which says the transaction failed"));
        }
        return Ok(false);
    }
    if errors != 0 {
        return Err(malformed(request, "Errors", format!("lists {errors} errors in a {status} answer")));
    }
    match required(request, &json, "Results", "Results")? {
        Value::Array(results) if results.len() == ops => Ok(true),
        Value::Array(results) => {
            Err(malformed(request, "Results", format!("has {} results for {ops} operations", results.len())))
        }
        other => Err(wrong_type(request, "Results", other, "an array")),
    }
}

/// A duration as Consul parses it ("1500ms").
pub fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Standard base64 with padding, as Consul's KV and transaction APIs carry values.
pub fn base64_encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

#[cfg(test)]
mod tests;
