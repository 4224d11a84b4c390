//! Loopback ports for a lab's listeners, handed out so that two labs in one process never get
//! the same one.
//!
//! It only probes with a bind and lets go: it never keeps a port, so the member that is given one
//! must bind it itself.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::domain::MonoTime;

/// The range handed out: below Linux's ephemeral range (32768+), so that no outgoing connection
/// of any process can take a port between this check and the member's bind.
const FIRST: u16 = 20_000;
const SPAN: u32 = 12_000;
/// A prime step coprime with [`SPAN`]: consecutive calls walk the whole range before repeating.
const STEP: u32 = 7919;

/// A free port on 127.0.0.1 between 20000 and 32000, never the same twice in one process (within
/// 12 000 calls).
pub fn unused_port() -> std::io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static SEED: OnceLock<u32> = OnceLock::new();
    // One seed per process: a time-based seed per call let two labs pick the same port before
    // either bound it, and a simulated node then lost its port to the other lab's member.
    let seed = *SEED.get_or_init(|| (MonoTime::now().as_nanos() as u32) ^ std::process::id().rotate_left(16));
    for _ in 0..2000 {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = FIRST + ((step * STEP + seed % SPAN) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free port between 20000 and 32000"))
}

#[cfg(test)]
mod tests {
    use super::unused_port;

    /// Two labs in one test process pick their ports before either binds them: a port handed
    /// out twice is a member that cannot start.
    #[test]
    fn one_process_is_never_handed_the_same_port_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            let port = unused_port().expect("a free port");
            assert!((20_000..32_000).contains(&port), "{port} is outside 20000..32000");
            assert!(seen.insert(port), "port {port} was handed out twice");
        }
    }
}
