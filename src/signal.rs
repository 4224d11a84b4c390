//! The one place that listens for termination signals (SIGTERM, SIGINT), so that every
//! long-running command shuts down the same way.

/// Resolves when the process is asked to stop. If a signal handler cannot be installed, that
/// signal is simply not awaited (the process can still be killed).
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
