//! `lumilio-infer`: serves the reference inference API (see the library docs and README.md).
//!
//! ```text
//! lumilio-infer [--listen 127.0.0.1:50051] [--batch-cost-ms N] [--item-cost-ms N] [--max-concurrency N]
//! ```
//! Stops gracefully (finishing open streams) on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use lumilio_infer::service::{self, Options};
use tracing::{error, info};

/// Reference inference server for Lumilio (deterministic descriptor, not a neural CLIP model).
#[derive(Parser, Debug)]
#[command(name = "lumilio-infer", version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Simulated fixed cost of each Infer stream (batch), in milliseconds.
    #[arg(long, default_value_t = 0)]
    batch_cost_ms: u64,
    /// Simulated cost of each request in a batch, in milliseconds.
    #[arg(long, default_value_t = 0)]
    item_cost_ms: u64,
    /// Batches processed at once (a GPU runs one at a time).
    #[arg(long, default_value_t = 1)]
    max_concurrency: u32,
    /// Testing only: make and report embeddings of this length instead of
    /// 512 (zero-padded or cut), to check that a host refuses the mismatch.
    #[arg(long, hide = true)]
    embedding_dim: Option<usize>,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let opts = Options {
        batch_cost: Duration::from_millis(cli.batch_cost_ms),
        item_cost: Duration::from_millis(cli.item_cost_ms),
        max_concurrency: cli.max_concurrency.max(1),
        embedding_dim: cli
            .embedding_dim
            .unwrap_or(lumilio_infer::descriptor::DIM)
            .max(1),
        ..Options::default()
    };
    let listener = match tokio::net::TcpListener::bind(cli.listen).await {
        Ok(l) => l,
        Err(e) => {
            error!(
                "cannot listen on {}: {e}; is another lumilio-infer running? pick another with --listen",
                cli.listen
            );
            std::process::exit(1);
        }
    };
    info!(
        listen = %cli.listen,
        batch_cost_ms = cli.batch_cost_ms,
        item_cost_ms = cli.item_cost_ms,
        max_concurrency = opts.max_concurrency,
        model = lumilio_infer::MODEL_ID,
        "lumilio-infer listening (reference descriptor, not a neural CLIP model)"
    );
    if let Err(e) = service::serve(listener, opts, shutdown_signal()).await {
        error!("server failed: {e}");
        std::process::exit(1);
    }
    info!("lumilio-infer stopped");
}

/// Completes on SIGTERM (service managers, CI) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    info!("shutting down: finishing open streams");
}
