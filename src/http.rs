//! The project's HTTP client: reqwest on rustls with the ring provider (no OpenSSL), with a
//! deadline on every request. Probes, adapters and tests build their clients here so that TLS
//! and timeouts are configured in one place.

use std::time::Duration;

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
