//! The project's HTTP client: reqwest on rustls with the ring provider (no OpenSSL), with a
//! deadline on every request. Probes, adapters and tests build their clients here so that TLS
//! and timeouts are configured in one place.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An error with its causes ("error sending request: connection refused"): the top-level message
/// of reqwest's and tonic's errors alone hides why.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Installs ring as rustls' process-wide crypto provider, once. Safe to call repeatedly.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client whose every request fails after `timeout`, connection set-up included.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto_provider();
    reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).no_proxy().build()
}

/// One blocking HTTP/1.1 request on an open connection, for callers that are not async (the
/// demo's main thread, the chaos runner): sends it with `Connection: close`, reads at most
/// `limit` bytes of the answer, each step bounded by `timeout`, and returns the body of a 200.
pub fn blocking_exchange(
    mut stream: TcpStream,
    host: &str,
    request: (&str, &str, &str),
    timeout: Duration,
    limit: u64,
) -> Option<String> {
    let (method, path, body) = request;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    stream.take(limit).read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}
