//! The HTTP exchanges every chain adapter makes: a JSON `GET`/`POST` and a JSON-RPC 2.0 call,
//! each bounded by a deadline and a body size cap, plus the typed readers of JSON fields the
//! chains print (decimal strings, hex quantities, booleans).
//!
//! Owns the rule that no answer can crash the daemon: a body that is too large, not JSON, of the
//! wrong shape or an error object becomes an [`ExchangeError`] that says which field, never a
//! panic. It never decides anything about the answer's meaning; that is the adapters' job.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::config::HttpUrl;
use crate::http::error_chain;

/// Largest body accepted from a node. A `/status` is ~2 KiB, a CometBFT `/commit` of 150
/// validators ~40 KiB; anything far above is a misconfigured or hostile endpoint.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

/// How many bytes of an unexpected answer are quoted in an error.
const QUOTE_BYTES: usize = 160;

/// Why an exchange with a node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("no answer before the deadline")]
    Timeout,
    #[error("cannot reach the node: {0}")]
    Unreachable(String),
    #[error("answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("the node answered with JSON-RPC error {code}: {message}")]
    Rpc { code: i64, message: String },
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// JSON-RPC's "method not found": the node does not offer this call (anvil has no
/// `net_peerCount`, for example).
pub const METHOD_NOT_FOUND: i64 = -32601;

/// One node's HTTP endpoint.
#[derive(Clone)]
pub struct JsonEndpoint {
    client: reqwest::Client,
    base: reqwest::Url,
}

impl JsonEndpoint {
    pub fn new(base: &HttpUrl, timeout: Duration) -> Result<JsonEndpoint, ExchangeError> {
        let client = crate::http::client(timeout).map_err(|e| ExchangeError::Unreachable(e.to_string()))?;
        Ok(JsonEndpoint { client, base: base.0.clone() })
    }

    pub fn base(&self) -> &reqwest::Url {
        &self.base
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, ExchangeError> {
        self.base.join(path).map_err(|e| ExchangeError::Malformed(format!("URL {}{path}: {e}", self.base)))
    }

    /// `GET base/path`, parsed as JSON.
    pub async fn get(&self, path: &str, deadline: Instant) -> Result<Value, ExchangeError> {
        let url = self.url(path)?;
        bounded(deadline, self.exchange(self.client.get(url))).await
    }

    /// `POST base/path` with a JSON body (or none), parsed as JSON.
    pub async fn post(&self, path: &str, body: Option<&Value>, deadline: Instant) -> Result<Value, ExchangeError> {
        let url = self.url(path)?;
        let request = match body {
            Some(body) => self.client.post(url).json(body),
            None => self.client.post(url),
        };
        bounded(deadline, self.exchange(request)).await
    }

    /// A JSON-RPC 2.0 call at the base URL; returns `result`.
    pub async fn call(&self, method: &str, params: Value, deadline: Instant) -> Result<Value, ExchangeError> {
        let request = rpc_request(method, params);
        let answer = bounded(deadline, self.exchange(self.client.post(self.base.clone()).json(&request))).await?;
        rpc_result(answer)
    }

    async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<Value, ExchangeError> {
        let response = request.send().await.map_err(|e| ExchangeError::Unreachable(error_chain(&e)))?;
        let status = response.status();
        let body = read_capped(response, MAX_BODY_BYTES).await?;
        if !status.is_success() {
            return Err(ExchangeError::Status { status: status.as_u16(), body: quote(&body) });
        }
        parse_json(&body)
    }
}

async fn bounded<T>(
    deadline: Instant,
    work: impl Future<Output = Result<T, ExchangeError>>,
) -> Result<T, ExchangeError> {
    tokio::time::timeout_at(deadline, work).await.unwrap_or(Err(ExchangeError::Timeout))
}

/// Reads a response body, refusing more than `limit` bytes.
pub async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, ExchangeError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ExchangeError::Unreachable(error_chain(&e)))? {
        if body.len() + chunk.len() > limit {
            return Err(ExchangeError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first bytes of an unexpected body, printable, for an error message.
pub fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTE_BYTES)]);
    let mut out: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if body.len() > QUOTE_BYTES {
        out.push('…');
    }
    out
}

pub fn parse_json(body: &[u8]) -> Result<Value, ExchangeError> {
    serde_json::from_slice(body).map_err(|e| ExchangeError::Malformed(format!("not JSON ({e}): {}", quote(body))))
}

/// The id every request carries; an answer with another id is not ours.
const RPC_ID: u64 = 1;

pub fn rpc_request(method: &str, params: Value) -> Value {
    serde_json::json!({ "jsonrpc": "2.0", "id": RPC_ID, "method": method, "params": params })
}

/// The `result` of a JSON-RPC answer, or its `error` as [`ExchangeError::Rpc`].
pub fn rpc_result(answer: Value) -> Result<Value, ExchangeError> {
    let Value::Object(mut answer) = answer else {
        return Err(ExchangeError::Malformed(format!("expected a JSON-RPC object, found {}", kind_of(&answer))));
    };
    match answer.get("id") {
        Some(Value::Number(n)) if n.as_u64() == Some(RPC_ID) => {}
        // Some nodes answer errors with "id": null.
        Some(Value::Null) if answer.contains_key("error") => {}
        other => {
            return Err(ExchangeError::Malformed(format!(
                "id: expected {RPC_ID}, found {}",
                other.map_or_else(|| "nothing".into(), Value::to_string)
            )));
        }
    }
    if let Some(error) = answer.remove("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = error.get("message").and_then(Value::as_str).unwrap_or("(no message)");
        return Err(ExchangeError::Rpc { code, message: quote(message.as_bytes()) });
    }
    answer.remove("result").ok_or_else(|| ExchangeError::Malformed("neither result nor error in the answer".into()))
}

/// A JSON-RPC call over a plain blocking socket, for the self-fence thread (the async runtime
/// may be stalled there). Plain `http://` only; returns `result`.
pub fn blocking_call(base: &HttpUrl, method: &str, params: Value, timeout: Duration) -> Result<Value, ExchangeError> {
    let body = rpc_request(method, params).to_string();
    let answer = blocking_request(base, "POST", base.0.path(), &body, timeout)?;
    rpc_result(answer)
}

/// One blocking HTTP/1.1 request to `base`'s host; see [`blocking_call`].
pub fn blocking_request(
    base: &HttpUrl,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<Value, ExchangeError> {
    use std::net::ToSocketAddrs;
    let url = &base.0;
    if url.scheme() != "http" {
        return Err(ExchangeError::Unreachable(format!("{url}: only http:// can be reached without the runtime")));
    }
    let host = url.host_str().unwrap_or("localhost");
    let port = url.port_or_known_default().unwrap_or(80);
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| ExchangeError::Unreachable(format!("{host}:{port}: {e}")))?
        .next()
        .ok_or_else(|| ExchangeError::Unreachable(format!("{host}:{port}: no address")))?;
    let stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| ExchangeError::Unreachable(format!("{addr}: {e}")))?;
    let answer = crate::http::blocking_exchange(stream, host, (method, path, body), timeout, MAX_BODY_BYTES as u64)
        .ok_or_else(|| ExchangeError::Unreachable(format!("{addr}: no HTTP 200 answer before the deadline")))?;
    parse_json(answer.as_bytes())
}

/// What a JSON value is, for messages of the form "is X, not Y".
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value at `pointer` (`/result/sync_info`), or an error naming it in dotted form.
pub fn field<'a>(v: &'a Value, pointer: &str) -> Result<&'a Value, String> {
    v.pointer(pointer).ok_or_else(|| format!("missing {}", dotted(pointer)))
}

pub fn dotted(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// A non-negative integer printed either as a decimal string (CometBFT) or as a JSON number
/// (Antelope, Solana).
pub fn decimal_u64(v: &Value, name: &str) -> Result<u64, String> {
    match v {
        Value::String(s) if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) => {
            s.parse::<u64>().map_err(|_| format!("{name}: {s:?} does not fit in 64 bits"))
        }
        Value::String(s) => Err(format!("{name}: expected a decimal number, found {:?}", quote(s.as_bytes()))),
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{name}: expected a non-negative integer, found {n}")),
        other => Err(format!("{name}: expected a number, found {}", kind_of(other))),
    }
}

/// A non-negative integer that must be printed as a decimal string, as CometBFT prints every
/// 64-bit number (a bare JSON number there means the answer is not what we think it is).
pub fn decimal_string(v: &Value, name: &str) -> Result<u64, String> {
    match v {
        Value::String(_) => decimal_u64(v, name),
        other => Err(format!("{name}: expected a decimal number in a string, found {}", kind_of(other))),
    }
}

/// An Ethereum quantity: `0x` and 1 to 16 hex digits.
pub fn hex_u64(v: &Value, name: &str) -> Result<u64, String> {
    let Value::String(s) = v else {
        return Err(format!("{name}: expected a hex quantity string, found {}", kind_of(v)));
    };
    let digits = s
        .strip_prefix("0x")
        .filter(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| format!("{name}: expected a hex quantity like \"0x1b4\", found {:?}", quote(s.as_bytes())))?;
    let digits = digits.trim_start_matches('0');
    if digits.len() > 16 {
        return Err(format!("{name}: {s:?} does not fit in 64 bits"));
    }
    if digits.is_empty() { Ok(0) } else { u64::from_str_radix(digits, 16).map_err(|e| format!("{name}: {e}")) }
}

pub fn boolean(v: &Value, name: &str) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| format!("{name}: expected true or false, found {}", kind_of(v)))
}

pub fn string<'a>(v: &'a Value, name: &str) -> Result<&'a str, String> {
    v.as_str().ok_or_else(|| format!("{name}: expected a string, found {}", kind_of(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimal_numbers_in_either_form() {
        assert_eq!(decimal_u64(&json!("0"), "h"), Ok(0));
        assert_eq!(decimal_u64(&json!("18446744073709551615"), "h"), Ok(u64::MAX));
        assert_eq!(decimal_u64(&json!(42), "h"), Ok(42));
        for bad in [
            json!("18446744073709551616"),
            json!("-1"),
            json!(""),
            json!(" 1"),
            json!(-1),
            json!(1.5),
            json!(null),
            json!([1]),
        ] {
            let err = decimal_u64(&bad, "result.height").expect_err("refused");
            assert!(err.starts_with("result.height: "), "{err}");
        }
    }

    #[test]
    fn hex_quantities() {
        assert_eq!(hex_u64(&json!("0x0"), "n"), Ok(0));
        assert_eq!(hex_u64(&json!("0x1b4"), "n"), Ok(436));
        assert_eq!(hex_u64(&json!("0xffffffffffffffff"), "n"), Ok(u64::MAX));
        assert_eq!(hex_u64(&json!("0x000000000000000000001"), "n"), Ok(1));
        for bad in [json!("0x"), json!("1b4"), json!("0x1g"), json!("0x10000000000000000"), json!(436), json!(null)] {
            assert!(hex_u64(&bad, "n").is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn json_rpc_answers() {
        assert_eq!(rpc_result(json!({"jsonrpc":"2.0","id":1,"result":"0x2"})), Ok(json!("0x2")));
        assert_eq!(
            rpc_result(json!({"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}})),
            Err(ExchangeError::Rpc { code: METHOD_NOT_FOUND, message: "Method not found".into() })
        );
        assert!(matches!(
            rpc_result(json!({"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid request"}})),
            Err(ExchangeError::Rpc { code: -32600, .. })
        ));
        for bad in [json!({"jsonrpc":"2.0","id":7,"result":1}), json!({"jsonrpc":"2.0","id":1}), json!([1]), json!("x")]
        {
            assert!(matches!(rpc_result(bad), Err(ExchangeError::Malformed(_))));
        }
    }

    #[test]
    fn quotes_are_short_and_printable() {
        let long = vec![b'a'; 1000];
        assert_eq!(quote(&long).chars().count(), QUOTE_BYTES + 1);
        assert_eq!(quote(b"a\nb\x00c"), "a b c");
    }
}
