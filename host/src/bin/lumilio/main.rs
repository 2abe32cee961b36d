//! `lumilio`: the service binary and its command line. One file per command
//! group (`serve`, `migrate`, `plugin`, `user`); the service itself is
//! assembled in the library ([`lumilio::app`]).

mod migrate;
mod plugin;
mod serve;
mod user;

use clap::{Parser, Subcommand};
use lumilio::config::{DatabaseConfig, ServeConfig};

use migrate::MigrateArgs;
use plugin::PluginCommand;
use user::UserCommand;

/// Lumilio host: a self-hosted photo ingest service.
#[derive(Parser)]
#[command(name = "lumilio", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API and work the queues.
    Serve(ServeConfig),
    /// Apply pending migrations on one line (`main`: River's tables, `app`: Lumilio's).
    MigrateUp(MigrateArgs),
    /// Revert migrations on one line (one step unless --max-steps or --target-version says otherwise).
    MigrateDown(MigrateArgs),
    /// Show which migrations are applied on each line.
    MigrateList {
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Check and try WASM plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Manage users and their API keys.
    #[command(subcommand)]
    User(UserCommand),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,riverqueue=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime starts");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Serve(cfg) => serve::run(cfg).await?,
        Command::MigrateUp(args) => migrate::run(args, true).await?,
        Command::MigrateDown(args) => migrate::run(args, false).await?,
        Command::MigrateList { database } => migrate::list(database).await?,
        Command::Plugin(cmd) => return plugin::run(cmd).await,
        Command::User(cmd) => user::run(cmd).await?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

