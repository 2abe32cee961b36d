//! `lumilio user ...`: users and their API keys.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use lumilio::config::DatabaseConfig;
use lumilio::db::{self, users};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user and print its first API key (shown only this once).
    Create {
        /// Unique user name.
        name: String,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Add an API key to a user and print it (shown only this once).
    CreateKey {
        /// The user's name.
        name: String,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// List users, their active key prefixes and asset counts.
    List {
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Revoke a key, given its prefix (from `user list`) or the whole key.
    RevokeKey {
        /// Key prefix or key.
        key: String,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Print a development key for NAME, kept in FILE: reuses the key in FILE while
    /// it is valid, else creates the user and/or a new key and writes it there.
    DevKey {
        /// The user's name.
        #[arg(default_value = "dev")]
        name: String,
        /// Where the key is kept (mode 600).
        #[arg(long, default_value = ".local/dev-api-key")]
        file: PathBuf,
        #[command(flatten)]
        database: DatabaseConfig,
    },
}

/// Runs one `user` command.
pub async fn run(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create { name, database } => {
            let pool = db::connect(&database.database_url, 2).await?;
            let (id, key) = users::create(&pool, &name).await?;
            eprintln!("created user {name} ({id}); its API key follows and is not shown again");
            println!("{key}");
        }
        UserCommand::CreateKey { name, database } => {
            let pool = db::connect(&database.database_url, 2).await?;
            let key = users::create_key(&pool, &name).await?;
            eprintln!("new API key for {name}; it is not shown again");
            println!("{key}");
        }
        UserCommand::List { database } => {
            let pool = db::connect(&database.database_url, 2).await?;
            println!("{:<24} {:<36} {:>7}  active keys", "name", "id", "assets");
            for u in users::list(&pool).await? {
                println!(
                    "{:<24} {:<36} {:>7}  {}",
                    u.name,
                    u.id,
                    u.assets,
                    u.active_keys.join(", ")
                );
            }
        }
        UserCommand::RevokeKey { key, database } => {
            let pool = db::connect(&database.database_url, 2).await?;
            let prefix = users::revoke_key(&pool, &key).await?;
            println!("revoked key {prefix}…");
        }
        UserCommand::DevKey {
            name,
            file,
            database,
        } => {
            let pool = db::connect(&database.database_url, 2).await?;
            if let Ok(existing) = std::fs::read_to_string(&file)
                && users::authenticate(&pool, existing.trim()).await?.is_some()
            {
                println!("{}", existing.trim());
                return Ok(());
            }
            let key = match users::create(&pool, &name).await {
                Ok((_, key)) => key,
                Err(users::UserError::Exists(_)) => users::create_key(&pool, &name).await?,
                Err(e) => return Err(e.into()),
            };
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&file, format!("{key}\n"))
                .with_context(|| format!("cannot write {}", file.display()))?;
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            println!("{key}");
        }
    }
    Ok(())
}

