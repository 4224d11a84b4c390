//! Addresses in the config: peer addresses (`host:port`), listen addresses (`ip:port`) and
//! HTTP(S) URLs, each parsed when the file is read so that a typo is reported with its line,
//! before any socket is bound.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a peer's daemon listens: `ip:port`, `[ipv6]:port` or `dns-name:port` (Kubernetes
/// headless services give DNS names). Resolved when dialled, not here.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddress {
    pub host: String,
    pub port: u16,
}

impl FromStr for PeerAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let shown = super::excerpt(s);
        let expected =
            || format!("expected host:port such as \"10.0.0.1:7100\" or \"validator-b.example:7100\", found {shown:?}");
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(PeerAddress { host: sa.ip().to_string(), port: sa.port() });
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(expected)?;
        let port: u16 = port.parse().map_err(|_| expected())?;
        if port == 0 || !is_dns_name(host) {
            return Err(expected());
        }
        Ok(PeerAddress { host: host.to_string(), port })
    }
}

impl PeerAddress {
    /// Whether only this host can reach the address: 127.0.0.0/8, ::1 or the name `localhost`.
    /// Any other name may resolve anywhere, so it does not count.
    pub fn is_loopback(&self) -> bool {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => self.host.eq_ignore_ascii_case("localhost"),
        }
    }
}

fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // A name made only of digits and dots is a mistyped IPv4 address, not a host name.
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A local socket to bind: an IP literal and a port. Host names are refused so that the
/// daemon never binds to whatever a resolver returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenAddress(pub SocketAddr);

impl FromStr for ListenAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<SocketAddr>().map(ListenAddress).map_err(|_| {
            let shown = super::excerpt(s);
            format!("expected ip:port to listen on, such as \"127.0.0.1:9464\" or \"[::]:7100\", found {shown:?}")
        })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An `http://` or `https://` URL of a node RPC or store endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HttpUrl(pub reqwest::Url);

impl FromStr for HttpUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let shown = super::excerpt(s);
        let expected =
            || format!("expected an http:// or https:// URL such as \"http://127.0.0.1:26657\", found {shown:?}");
        let url = reqwest::Url::parse(s).map_err(|_| expected())?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(expected());
        }
        Ok(HttpUrl(url))
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Url::parse adds a trailing slash to bare hosts; print it as the operator would write it.
        let s = self.0.as_str();
        f.write_str(s.strip_suffix('/').filter(|_| self.0.path() == "/").unwrap_or(s))
    }
}

macro_rules! serde_via_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_via_text!(PeerAddress, ListenAddress, HttpUrl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_address_accepts_ip_ipv6_and_dns_names() {
        assert_eq!("127.0.0.1:7101".parse::<PeerAddress>().map(|a| a.port), Ok(7101));
        assert_eq!("[::1]:7101".parse::<PeerAddress>().map(|a| a.to_string()), Ok("[::1]:7101".to_string()));
        assert_eq!(
            "failoverd-0.failoverd.validators.svc:7100".parse::<PeerAddress>().map(|a| a.host),
            Ok("failoverd-0.failoverd.validators.svc".to_string())
        );
    }

    #[test]
    fn peer_address_rejects_what_does_not_parse() {
        for bad in [
            "127.0.0.1",
            "127.0.0.1:notaport",
            "127.0.0.1:70000",
            "300.1.1.1:80",
            "-bad-:80",
            ":80",
            "host:0",
            "a b:80",
        ] {
            let err = bad.parse::<PeerAddress>().expect_err(bad);
            assert!(err.contains("expected host:port"), "{bad}: {err}");
        }
    }

    #[test]
    fn loopback_is_127_slash_8_ipv6_one_and_localhost_only() {
        for near in ["127.0.0.1:1", "127.255.0.9:1", "[::1]:1", "localhost:1", "LocalHost:1"] {
            assert!(near.parse::<PeerAddress>().is_ok_and(|a| a.is_loopback()), "{near}");
        }
        for far in ["10.0.0.1:1", "0.0.0.0:1", "[::]:1", "[::ffff:127.0.0.1]:1", "localhost.example:1", "db:1"] {
            assert!(far.parse::<PeerAddress>().is_ok_and(|a| !a.is_loopback()), "{far}");
        }
    }

    #[test]
    fn a_huge_address_is_quoted_only_in_part() {
        let err = format!("{}:1", "a".repeat(100_000)).parse::<PeerAddress>().expect_err("too long a name");
        assert!(err.len() < 300, "the message quotes {} bytes", err.len());
    }

    #[test]
    fn listen_address_needs_an_ip() {
        assert!("0.0.0.0:9464".parse::<ListenAddress>().is_ok());
        assert!("localhost:9464".parse::<ListenAddress>().is_err());
    }

    #[test]
    fn http_url_needs_http_scheme_and_host() {
        assert_eq!(
            "http://127.0.0.1:26657".parse::<HttpUrl>().map(|u| u.to_string()),
            Ok("http://127.0.0.1:26657".into())
        );
        assert!("https://rpc.example/path".parse::<HttpUrl>().is_ok());
        for bad in ["127.0.0.1:26657", "ftp://x", "http://", "not a url"] {
            assert!(bad.parse::<HttpUrl>().is_err(), "{bad}");
        }
    }
}
