//! The process's stop signal (SIGTERM or Ctrl-C), for everything that must
//! wind down with the server: graceful HTTP shutdown in `app`, and the event
//! streams in `api::events`, which would otherwise hold it up. A leaf.

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
