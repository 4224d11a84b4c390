//! Fault injection for black-box tests, on only with `FAILOVERD_TEST_HOOKS=1` (never set in
//! production): SIGUSR2 blocks every runtime worker, which is what a stalled runtime looks like,
//! so tests can show the self-fence thread acts anyway; SIGUSR1 makes the raft task panic, so
//! tests can show a panic ends the process after fencing.
//!
//! Owns those two hooks; nothing else in the daemon may depend on them.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::wiring::Backends;

pub(super) fn install(shutdown: &CancellationToken, backends: &Backends) {
    if std::env::var("FAILOVERD_TEST_HOOKS").as_deref() != Ok("1") {
        return;
    }
    if let Some(raft) = backends.raft() {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(mut usr1) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) else {
                return;
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = usr1.recv() => raft.inject_panic().await,
            }
        });
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
