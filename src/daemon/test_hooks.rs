//! Fault injection for black-box tests, on only with `FAILOVERD_TEST_HOOKS=1` (never set in
//! production): SIGUSR2 blocks every runtime worker, which is what a stalled runtime looks like,
//! so tests can show the self-fence thread acts anyway. (SIGUSR1, which makes the raft task
//! panic, is the raft backend's own hook: `coord::StartOptions::test_hooks`.)
//!
//! Owns that hook; nothing else in the daemon may depend on it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub(super) fn install(shutdown: &CancellationToken) {
    if std::env::var("FAILOVERD_TEST_HOOKS").as_deref() != Ok("1") {
        return;
    }
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let Ok(mut usr2) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2()) else {
            return;
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = usr2.recv() => {
                tracing::warn!("test hook: blocking every runtime worker");
                for _ in 0..16 {
                    tokio::spawn(async { std::thread::sleep(Duration::from_secs(3600)) });
                }
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    });
}
