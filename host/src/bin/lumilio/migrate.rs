//! `lumilio migrate-up`, `migrate-down` and `migrate-list`: both migration
//! lines (`main`: River's tables, `app`: Lumilio's).

use clap::Args;
use lumilio::config::DatabaseConfig;
use lumilio::db::{self, migrate::{self, Line, Steps}};

// Options of `migrate-up` and `migrate-down` (no `///`: clap would show it as help).
#[derive(Args)]
pub struct MigrateArgs {
    /// `main` (River) or `app` (Lumilio).
    #[arg(long, default_value = "main")]
    line: Line,
    /// At most this many migrations.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Migrate up to (or down to, exclusive) this version.
    #[arg(long, allow_negative_numbers = true)]
    target_version: Option<i64>,
    #[command(flatten)]
    database: DatabaseConfig,
}

/// Applies (`up`) or reverts migrations on one line.
pub async fn run(args: MigrateArgs, up: bool) -> anyhow::Result<()> {
    let pool = db::connect(&args.database.database_url, 2).await?;
    let steps = Steps {
        max_steps: args.max_steps,
        target_version: args.target_version,
    };
    let done = if up {
        migrate::up(&pool, args.line, steps).await?
    } else {
        migrate::down(&pool, args.line, steps).await?
    };
    let verb = if up { "applied" } else { "reverted" };
    if done.is_empty() {
        println!("line {}: nothing to do", args.line);
    }
    for m in done {
        println!(
            "line {}: {verb} {:03} {} ({:.1} ms)",
            args.line,
            m.version,
            m.name,
            m.duration.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// Prints which migrations are applied on each line.
pub async fn list(database: DatabaseConfig) -> anyhow::Result<()> {
    let pool = db::connect(&database.database_url, 2).await?;
    println!("{:<6} {:>7}  {:<50} {}", "line", "version", "name", "state");
    for m in migrate::list(&pool).await? {
        let state = if m.applied { "applied" } else { "pending" };
        println!(
            "{:<6} {:>7}  {:<50} {}",
            m.line.to_string(),
            m.version,
            m.name,
            state
        );
    }
    Ok(())
}
