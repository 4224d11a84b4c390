//! systemd's notify protocol: `READY=1` once the member takes part, `WATCHDOG=1` from the decision
//! loop (so a loop that stops turning stops the pings, and systemd restarts the service), and
//! `STOPPING=1` when it winds down.
//!
//! Owns one datagram socket to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//! It never blocks (datagrams to a local socket) and never fails the daemon: without
//! `NOTIFY_SOCKET` it does nothing, and a send that fails is logged at debug.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct SystemdNotifier {
    socket: UnixDatagram,
    target: SocketAddr,
    /// Ping interval: a quarter of `WATCHDOG_USEC`, when the watchdog is on for this process.
    watchdog_every: Option<Duration>,
    last_ping: Mutex<Option<Instant>>,
}

impl SystemdNotifier {
    /// The notifier systemd asked for through the environment, if any.
    pub fn from_env() -> Option<SystemdNotifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let target = match socket_address(path.as_encoded_bytes()) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(notify_socket = %path.to_string_lossy(), error = %e, "NOTIFY_SOCKET is unusable; not notifying systemd");
                return None;
            }
        };
        let socket = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a socket to notify systemd");
                return None;
            }
        };
        let ours = std::env::var("WATCHDOG_PID").ok().is_none_or(|pid| pid.trim() == std::process::id().to_string());
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && ours)
            .map(|u| Duration::from_micros(u) / 4);
        Some(SystemdNotifier { socket, target, watchdog_every, last_ping: Mutex::new(None) })
    }

    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_every
    }

    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=taking part");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Called on every loop iteration: pings when a quarter of the watchdog period has passed.
    pub fn loop_turned(&self) {
        let Some(every) = self.watchdog_every else { return };
        let mut last = self.last_ping.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() >= every) {
            *last = Some(Instant::now());
            drop(last);
            self.send("WATCHDOG=1");
        }
    }

    fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.target) {
            tracing::debug!(error = %e, message, "notifying systemd failed");
        }
    }
}

fn socket_address(path: &[u8]) -> std::io::Result<SocketAddr> {
    match path.split_first() {
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        Some((b'/', _)) => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path))
        }
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "expected an absolute path or @name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert!(socket_address(b"/run/systemd/notify").is_ok());
        assert!(socket_address(b"@/org/freedesktop/systemd1/notify/123").is_ok());
        assert!(socket_address(b"relative/path").is_err());
        assert!(socket_address(b"").is_err());
    }
}
