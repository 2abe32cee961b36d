//! `lumilio serve`: the service itself, built by [`lumilio::app::serve`].

use lumilio::config::ServeConfig;

/// Serves until SIGINT or SIGTERM.
pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    lumilio::app::serve(cfg).await?;
    Ok(())
}
