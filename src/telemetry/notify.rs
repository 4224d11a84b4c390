//! systemd's notify protocol: `READY=1` once the member takes part, `WATCHDOG=1` from the decision
//! loop (so a loop that stops turning stops the pings, and systemd restarts the service), and
//! `STOPPING=1` when it winds down. A member serving several validators runs a loop per
//! validator ([`LoopNotifier`]): it is ready once every loop is, and pings only when every loop
//! turned since the last ping, so one stuck loop among many still stops the pings.
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
    /// Per loop: whether it turned since the last ping, and whether it is ready.
    loops: Mutex<Vec<LoopMarks>>,
}

#[derive(Clone, Copy, Default)]
struct LoopMarks {
    turned: bool,
    ready: bool,
}

/// One decision loop's side of the member's notifier.
pub struct LoopNotifier {
    shared: std::sync::Arc<SystemdNotifier>,
    slot: usize,
}

impl LoopNotifier {
    /// One notifier per loop of `loops` over the notifier systemd asked for, if any.
    pub fn for_loops(loops: usize) -> Vec<Option<LoopNotifier>> {
        match SystemdNotifier::from_env() {
            None => (0..loops).map(|_| None).collect(),
            Some(mut n) => {
                n.loops = Mutex::new(vec![LoopMarks::default(); loops]);
                let shared = std::sync::Arc::new(n);
                (0..loops).map(|slot| Some(LoopNotifier { shared: std::sync::Arc::clone(&shared), slot })).collect()
            }
        }
    }

    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.shared.watchdog_every
    }

    /// This loop takes part; `READY=1` once every loop does.
    pub fn ready(&self) {
        let all = self.shared.mark(self.slot, |m| m.ready = true, |m| m.ready);
        if all {
            self.shared.ready();
        }
    }

    pub fn stopping(&self) {
        self.shared.stopping();
    }

    /// Called on every iteration of this loop: pings once every loop turned since the last
    /// ping and a quarter of the watchdog period has passed.
    pub fn loop_turned(&self) {
        if self.shared.watchdog_every.is_none() {
            return;
        }
        if self.shared.mark(self.slot, |m| m.turned = true, |m| m.turned) {
            self.shared.loop_turned();
        }
    }
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
        Some(SystemdNotifier {
            socket,
            target,
            watchdog_every,
            last_ping: Mutex::new(None),
            loops: Mutex::new(vec![LoopMarks::default()]),
        })
    }

    /// Sets loop `slot`'s mark; whether every loop's mark is now `set`.
    fn mark(&self, slot: usize, mark: impl Fn(&mut LoopMarks), set: impl Fn(&LoopMarks) -> bool) -> bool {
        let mut loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = loops.get_mut(slot) {
            mark(m);
        }
        loops.iter().all(set)
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
            self.loops.lock().unwrap_or_else(|e| e.into_inner()).iter_mut().for_each(|m| m.turned = false);
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
