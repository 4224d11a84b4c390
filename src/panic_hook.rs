//! What a panic does in a running member: log it, fence the producer, end the process.
//!
//! A panic in a task that owns safety state — the raft node, the decision loop, the self-fence
//! thread — must never leave a zombie behind: a process that is up, answers health checks, and
//! holds a dead raft node or a producer nobody drives. tokio would catch a panicking task and go
//! on without it. So the member installs this hook: the producer is fenced through the
//! self-fence thread (bounded by `fence_timeout`), then the process aborts with a non-zero
//! status, and systemd or Kubernetes restart it. The effect is `panic = "abort"` in every
//! profile, with the fence first.
//!
//! Installed only by the binaries' member and coordinator commands, never by the library on its
//! own: tests that run several members in one process keep Rust's default.

use std::time::Duration;

use crate::guard::SelfFence;

/// Makes every later panic, on any thread, fence every producer in `fences` (each validator's
/// that may be active) within `limit`, then abort the process.
pub fn abort_after_fencing(fences: Vec<SelfFence>, limit: Duration) {
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        let location = info.location().map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        tracing::error!(
            %thread,
            "panic{location}: {message}. Fencing the producer and ending the process; systemd or Kubernetes restarts it"
        );
        // Every validator's producer at once: one after another, a slow fence would leave the
        // later ones unfenced when a supervisor kills the process meanwhile.
        let confirmed = std::thread::scope(|s| {
            let each: Vec<_> = fences.iter().map(|f| s.spawn(move || f.fence_now(limit))).collect();
            each.into_iter().map(|h| h.join().unwrap_or(false)).filter(|ok| !ok).count()
        });
        if confirmed > 0 {
            tracing::error!(
                "{confirmed} producer fence(s) did not confirm within {} ms; the process ends anyway",
                limit.as_millis()
            );
        }
        std::process::abort();
    }));
}
