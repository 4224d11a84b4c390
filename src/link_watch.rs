//! The kernel's watch over the TCP connections between members: a link that is cut silently (a
//! black hole, a dead host, a firewall that forgets the flow) is closed by the kernel, so the
//! connection's users see an error and dial again. [`DEAD_LINK`] closes a connection
//! [`DeadLinkRule::give_up`] after the first data it sent went unacknowledged, or, when it has
//! nothing to send, that long after it last heard anything and its probes went unanswered.
//! Every member link carries raft messages or statuses at least once a second, so a cut one is
//! closed within about 4 s of the cut.
//!
//! Why the kernel and not HTTP/2 pings: a ping's timer lives in the process, and each
//! connection's timer woke an idle member about once a second (tokio re-arms it every interval
//! while frames flow and wakes twice for a deadline over 64 ms away); four connections made one
//! in eight of a signer active's context switches. The kernel already knows when data goes
//! unacknowledged (`TCP_USER_TIMEOUT`) and when a quiet connection stops answering its probes
//! (`SO_KEEPALIVE`), and watching costs the process nothing. What only a ping sees — a peer
//! process that is frozen while its kernel still acknowledges, or a link through a proxy that
//! ends TCP — is left to the transport's slower HTTP/2 pings.
//!
//! This module only sets socket options and dials; it never decides what a connection carries,
//! and a socket option the kernel refuses never stops a connection (it is logged).

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::TcpStream;

/// When the kernel gives up on a connection. The kernel counts `quiet` and `probe_every` in whole
/// seconds (a part of a second is rounded up), `give_up` in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadLinkRule {
    /// A connection that received nothing for this long (and has nothing in flight) is probed.
    pub quiet: Duration,
    /// Probes of a quiet connection are this far apart.
    pub probe_every: Duration,
    /// A connection is closed when data it sent stays unacknowledged this long, or when it heard
    /// nothing this long and a probe went unanswered.
    pub give_up: Duration,
}

/// The rule for member links: give up after 3 s, as the HTTP/2 pings it replaces did (a ping after
/// 2 s without a frame, 1 s for its answer). Three seconds lets TCP retransmit a lost segment
/// three times, on loopback (0.2, 0.6, 1.4 s) as at a WAN's timeout (0.3, 0.9, 2.1 s at 100 ms RTT),
/// and a quiet connection sends two probes (at 1 and 2 s) before the kernel gives up at 3 s, so
/// a lossy link (chaos `packet-loss`) is not mistaken for a cut one.
pub const DEAD_LINK: DeadLinkRule = DeadLinkRule {
    quiet: Duration::from_secs(1),
    probe_every: Duration::from_secs(1),
    give_up: Duration::from_secs(3),
};

impl DeadLinkRule {
    /// Sets the rule on a connected TCP socket.
    pub fn apply(&self, socket: &impl AsFd) -> io::Result<()> {
        let secs = |d: Duration| u32::try_from(d.as_millis().div_ceil(1000).max(1)).unwrap_or(u32::MAX);
        let millis = u32::try_from(self.give_up.as_millis()).unwrap_or(u32::MAX);
        setsockopt(socket, sockopt::KeepAlive, &true)?;
        setsockopt(socket, sockopt::TcpKeepIdle, &secs(self.quiet))?;
        setsockopt(socket, sockopt::TcpKeepInterval, &secs(self.probe_every))?;
        // With a user timeout set, Linux closes a probed connection by that timeout rather than
        // after a count of probes; one probe is what the count would say anyway.
        setsockopt(socket, sockopt::TcpKeepCount, &1)?;
        setsockopt(socket, sockopt::TcpUserTimeout, &millis)?;
        Ok(())
    }
}

/// Readies a member link, dialled or accepted: no Nagle (raft's messages are small, and a reply
/// must not wait behind an unacknowledged segment) and the [`DEAD_LINK`] rule.
pub fn ready_member_link(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    DEAD_LINK.apply(stream)
}

/// [`ready_member_link`], with a refusal logged rather than returned: the connection works
/// without its options, a cut of it is then noticed only by HTTP/2 pings.
pub fn ready_member_link_or_warn(stream: &TcpStream, side: &str) {
    if let Err(e) = ready_member_link(stream) {
        let peer = stream.peer_addr().map_or_else(|_| "an unknown address".to_string(), |a| a.to_string());
        tracing::warn!(%peer, side, error = %e, "cannot set TCP_NODELAY and the dead-link watch on a member connection; a silently cut link is then noticed only by HTTP/2 pings, within 11 s");
    }
}

/// Dials `host:port` and readies the connection as a member link. No deadline of its own: the
/// caller's connect timeout bounds it.
pub async fn dial_member_link(host: &str, port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect((host, port)).await?;
    ready_member_link_or_warn(&stream, "dialled");
    Ok(stream)
}

/// The host and port of a `http://host:port` URI as [`dial_member_link`] takes them (brackets
/// of an IPv6 literal removed).
pub fn host_and_port(uri: &http::Uri, default_port: u16) -> (String, u16) {
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    (host, uri.port_u16().unwrap_or(default_port))
}

/// A tonic connector for plaintext member links: [`dial_member_link`] to the channel's URI.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainMemberConnector;

type Dialled = hyper_util::rt::TokioIo<TcpStream>;

impl tower::Service<http::Uri> for PlainMemberConnector {
    type Response = Dialled;
    type Error = io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<Dialled>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(async move {
            let (host, port) = host_and_port(&uri, 80);
            Ok(hyper_util::rt::TokioIo::new(dial_member_link(&host, port).await?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::getsockopt;

    #[tokio::test]
    async fn a_dialled_member_link_carries_the_dead_link_rule_and_no_nagle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (dialled, accepted) = tokio::join!(dial_member_link("127.0.0.1", port), listener.accept());
        let dialled = dialled.expect("dial");
        let (accepted, _) = accepted.expect("accept");
        ready_member_link(&accepted).expect("ready the accepted side");
        for side in [&dialled, &accepted] {
            assert!(side.nodelay().expect("nodelay"), "Nagle is off");
            assert!(getsockopt(side, sockopt::KeepAlive).expect("keepalive"), "keep-alive probes are on");
            assert_eq!(getsockopt(side, sockopt::TcpKeepIdle).expect("idle"), 1);
            assert_eq!(getsockopt(side, sockopt::TcpKeepInterval).expect("interval"), 1);
            assert_eq!(getsockopt(side, sockopt::TcpKeepCount).expect("count"), 1);
            assert_eq!(getsockopt(side, sockopt::TcpUserTimeout).expect("user timeout"), 3000);
        }
    }

    #[test]
    fn an_ipv6_literal_is_dialled_without_its_brackets() {
        let uri: http::Uri = "http://[::1]:7100".parse().expect("uri");
        assert_eq!(host_and_port(&uri, 80), ("::1".to_string(), 7100));
        let uri: http::Uri = "http://member-b:7100".parse().expect("uri");
        assert_eq!(host_and_port(&uri, 80), ("member-b".to_string(), 7100));
    }
}
