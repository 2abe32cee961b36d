//! `lumilio`: the service binary and its command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use lumilio::config::{DatabaseConfig, ServeConfig};
use lumilio::db::migrate::{self, Line, Steps};
use lumilio::{api, clip, db, ingest, pipeline, queue, storage};
use tracing::{info, warn};

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

#[derive(Subcommand)]
enum UserCommand {
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

#[derive(clap::Args)]
struct MigrateArgs {
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

#[derive(Subcommand)]
enum PluginCommand {
    /// Validate a pipeline file: keys, limits, files, and that each component implements the world.
    Check {
        /// The pipeline file.
        #[arg(env = "LUMILIO_PIPELINE", default_value = "pipeline.toml")]
        pipeline: PathBuf,
        /// Compiled-component cache.
        #[arg(long, env = "LUMILIO_CACHE_PATH", default_value = "data/cache")]
        cache_path: PathBuf,
    },
    /// Run one component on one file, without a database; print facts as JSON.
    Run {
        /// The component (.wasm).
        plugin: PathBuf,
        /// The input file.
        file: PathBuf,
        /// A config entry passed to the plugin, `key=value`; repeatable.
        #[arg(long = "config", value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// Write renditions into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The content type to claim (default: guessed from the extension).
        #[arg(long)]
        content_type: Option<String>,
        /// Compiled-component cache.
        #[arg(long, env = "LUMILIO_CACHE_PATH", default_value = "data/cache")]
        cache_path: PathBuf,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
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
        Command::Serve(cfg) => serve(cfg).await?,
        Command::MigrateUp(args) => migrate_cmd(args, true).await?,
        Command::MigrateDown(args) => migrate_cmd(args, false).await?,
        Command::MigrateList { database } => {
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
        }
        Command::Plugin(cmd) => return plugin(cmd).await,
        Command::User(cmd) => user(cmd).await?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn user(cmd: UserCommand) -> anyhow::Result<()> {
    use lumilio::db::users;
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

async fn migrate_cmd(args: MigrateArgs, up: bool) -> anyhow::Result<()> {
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

async fn plugin(cmd: PluginCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        PluginCommand::Check {
            pipeline: path,
            cache_path,
        } => {
            let runtime = pipeline::Runtime::new(cache_path)?;
            match pipeline::check(&path, &runtime) {
                Ok(stages) => {
                    for s in stages {
                        let cached = if s.from_cache { ", cached" } else { "" };
                        println!(
                            "ok  {:<16} {} (world {}, {} ms, {} MiB{cached})",
                            s.name,
                            s.component.display(),
                            s.world_version,
                            s.timeout_ms,
                            s.memory_limit_mb
                        );
                    }
                    println!("{}: pipeline is valid", path.display());
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(errors) => {
                    for m in errors.messages() {
                        eprintln!("{m}");
                    }
                    Ok(std::process::ExitCode::FAILURE)
                }
            }
        }
        PluginCommand::Run {
            plugin,
            file,
            config,
            out,
            content_type,
            cache_path,
        } => {
            let runtime = pipeline::Runtime::new(cache_path)?;
            let bytes: Arc<[u8]> = std::fs::read(&file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .into();
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("input");
            let asset = pipeline::AssetFacts {
                id: uuid::Uuid::new_v4().to_string(),
                file_name: ingest::sanitize_file_name(name),
                content_type: content_type.unwrap_or_else(|| guess_content_type(name).to_owned()),
                size: bytes.len() as u64,
                content_hash: blake3::hash(&bytes).to_hex().to_string(),
            };
            let run = pipeline::run_single(&runtime, &plugin, asset, bytes, config).await?;
            let mut renditions = Vec::new();
            if let Some(output) = &run.output {
                if let Some(dir) = &out {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                for r in &output.renditions {
                    let mut entry = serde_json::json!({
                        "name": r.name, "content_type": r.content_type,
                        "width": r.width, "height": r.height, "size": r.bytes.len(),
                    });
                    if let Some(dir) = &out {
                        let ext = if r.content_type == "image/webp" {
                            "webp"
                        } else {
                            "jpg"
                        };
                        let path = dir.join(format!("{}.{ext}", r.name));
                        std::fs::write(&path, &r.bytes)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        entry["path"] = path.display().to_string().into();
                    }
                    renditions.push(entry);
                }
            }
            let (outcome, error) = match &run.report.outcome {
                pipeline::StageOutcome::Ok => ("ok", None),
                pipeline::StageOutcome::Skipped => ("skipped", None),
                pipeline::StageOutcome::Rejected(r) => ("rejected", Some(r.clone())),
                pipeline::StageOutcome::Failed(e) => ("failed", Some(e.to_string())),
            };
            let facts: serde_json::Map<String, serde_json::Value> = run
                .output
                .iter()
                .flat_map(|o| &o.facts)
                .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                .collect();
            let report = serde_json::json!({
                "stage": run.report.name,
                "outcome": outcome,
                "error": error,
                "duration_ms": run.report.duration.as_secs_f64() * 1e3,
                "facts": facts,
                "renditions": renditions,
                "warnings": run.report.warnings,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if outcome == "ok" {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(2)
            })
        }
    }
}

fn guess_content_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "tif" | "tiff" => "image/tiff",
        "heic" | "heif" => "image/heic",
        "avif" => "image/avif",
        _ => "application/octet-stream",
    }
}

async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let pool = db::connect(&cfg.database.database_url, 20).await?;
    let pending = migrate::pending_lines(&pool).await?;
    if !pending.is_empty() {
        let cmds: Vec<String> = pending
            .iter()
            .map(|l| format!("`lumilio migrate-up --line {l}`"))
            .collect();
        bail!(
            "the database is missing migrations on line(s) {pending:?}; run {} first (`make run` does this)",
            cmds.join(" and ")
        );
    }
    let runtime = pipeline::Runtime::new(&cfg.cache_path)?;
    let pipeline = pipeline::Pipeline::load(&cfg.pipeline, &runtime).map_err(|e| {
        anyhow::anyhow!(
            "{} is broken:\n  {}\n`lumilio plugin check` shows the same list",
            cfg.pipeline.display(),
            e.messages().join("\n  ")
        )
    })?;
    info!(pipeline = %cfg.pipeline.display(), stages = pipeline.stages().len(), "pipeline loaded");
    let storage = storage::Storage::open(&cfg.staging_path, &cfg.storage_path).await?;
    let staging = ingest::Staging::open(cfg.staging_path.join("incoming")).await?;

    let stale = Duration::from_secs(cfg.stale_upload_secs);
    queue::sweep::sweep_staging(&pool, &storage, staging.dir(), stale).await;
    {
        let (pool, storage, incoming) = (pool.clone(), storage.clone(), staging.dir().to_owned());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(
                Duration::from_secs(60).min(stale.max(Duration::from_secs(1))),
            );
            loop {
                every.tick().await;
                queue::sweep::sweep_staging(&pool, &storage, &incoming, stale).await;
            }
        });
    }
    queue::backfill::spawn(pool.clone(), storage.clone());
    let clip = start_clip(&cfg).await?;
    let settings = queue::QueueSettings {
        process_asset_workers: cfg.process_asset_workers,
        rescue_after: Duration::from_secs(cfg.rescue_after_secs),
        job_timeout: Duration::from_secs(cfg.job_timeout_secs),
        process_clip_workers: cfg.clip_workers,
    };
    let stages: Arc<[api::StageLimits]> = pipeline
        .stages()
        .iter()
        .map(|s| api::StageLimits {
            name: s.name.clone(),
            world_version: s.world_version.clone(),
            timeout_ms: s.timeout_ms,
            memory_limit_mb: s.memory_limit_mb,
            content_types: s.content_types.clone(),
            read_only_dirs: s.read_only_dirs.iter().map(|d| d.display().to_string()).collect(),
            env: s.env.clone(),
        })
        .collect();
    let deps = queue::WorkerDeps {
        pool: pool.clone(),
        pipeline: Arc::new(pipeline),
        storage: storage.clone(),
        clip: clip.clone(),
    };
    let river = queue::worker_client(deps, &settings)?;
    let mut run = river.start()?;
    let stopper = run.stopper();

    let state = api::AppState {
        pool,
        river,
        staging,
        storage,
        max_upload_bytes: cfg.max_upload_bytes,
        max_batch_parts: cfg.max_batch_parts,
        clip,
        near_duplicate_distance: cfg.near_duplicate_distance,
        stages,
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (LUMILIO_LISTEN / --listen)",
                cfg.listen
            )
        })?;
    info!(listen = %cfg.listen, "serving");
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")?;
    info!("HTTP stopped; letting running jobs finish");
    stopper.stop();
    if tokio::time::timeout(Duration::from_secs(30), run.wait())
        .await
        .is_err()
    {
        warn!("jobs still running after 30 s; their jobs will be rescued and retried");
    }
    Ok(())
}

/// Connects the CLIP dispatcher when an inference service is configured and
/// checks that its embeddings fit the schema.
async fn start_clip(cfg: &ServeConfig) -> anyhow::Result<Option<clip::Dispatcher>> {
    let Some(addr) = &cfg.ml_service_addr else {
        info!("ML_SERVICE_ADDR is not set: CLIP embeddings and search are off");
        return Ok(None);
    };
    let clip_cfg = clip::ClipConfig {
        addr: addr.clone(),
        batch_size: cfg.clip_batch_size.max(1),
        window: Duration::from_millis(cfg.clip_window_ms),
        ..clip::ClipConfig::default()
    };
    let dispatcher = clip::Dispatcher::connect(clip_cfg).await?;
    match dispatcher.capabilities().await {
        Ok(caps) => {
            if let Some(dim) = caps.embedding_dim
                && dim != db::embeddings::DIMENSION
            {
                bail!(
                    "the inference service at {addr} makes {dim}-dimensional embeddings, but the database stores {}; \
                     point ML_SERVICE_ADDR at a service with {}-dimensional embeddings",
                    db::embeddings::DIMENSION,
                    db::embeddings::DIMENSION
                );
            }
            info!(addr, service = caps.service_name, models = ?caps.model_ids, runtime = caps.runtime, "CLIP inference service ready");
        }
        // Down at start-up is fine: process_clip jobs retry until it is back.
        Err(e) => {
            warn!(addr, error = %e, "CLIP inference service not reachable yet; process_clip jobs will retry")
        }
    }
    Ok(Some(dispatcher))
}

async fn shutdown_signal() {
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
    info!("shutdown signal received");
}
