//! Schema migrations on two lines, as River's CLI has them: `main` is River's
//! own schema (applied by riverqueue's migrator) and `app` is Lumilio's, from
//! the SQL files in the repository's `migrations/` folder.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use riverqueue::migrate::{Direction, MigrateOpts, PostgresMigrator};
use sqlx::{PgPool, Row};

/// One reversible migration of the `app` line.
#[derive(Debug, Clone, Copy)]
pub struct AppMigration {
    /// Monotonic version, from the file name's number.
    pub version: i64,
    /// Human-readable name, from the file name.
    pub name: &'static str,
    /// SQL applied on the way up.
    pub up: &'static str,
    /// SQL that undoes `up`.
    pub down: &'static str,
}

/// The app line, in order. A new migration is a new pair of files plus an entry here.
pub const APP_MIGRATIONS: &[AppMigration] = &[
    AppMigration {
        version: 1,
        name: "initial_schema",
        up: include_str!("../../../migrations/001_initial_schema.up.sql"),
        down: include_str!("../../../migrations/001_initial_schema.down.sql"),
    },
    AppMigration {
        version: 2,
        name: "api_keys",
        up: include_str!("../../../migrations/002_api_keys.up.sql"),
        down: include_str!("../../../migrations/002_api_keys.down.sql"),
    },
    AppMigration {
        version: 3,
        name: "clip",
        up: include_str!("../../../migrations/003_clip.up.sql"),
        down: include_str!("../../../migrations/003_clip.down.sql"),
    },
    AppMigration {
        version: 4,
        name: "client_metadata",
        up: include_str!("../../../migrations/004_client_metadata.up.sql"),
        down: include_str!("../../../migrations/004_client_metadata.down.sql"),
    },
    AppMigration {
        version: 5,
        name: "asset_events",
        up: include_str!("../../../migrations/005_asset_events.up.sql"),
        down: include_str!("../../../migrations/005_asset_events.down.sql"),
    },
    AppMigration {
        version: 6,
        name: "timeline_index",
        up: include_str!("../../../migrations/006_timeline_index.up.sql"),
        down: include_str!("../../../migrations/006_timeline_index.down.sql"),
    },
    AppMigration {
        version: 7,
        name: "key_events",
        up: include_str!("../../../migrations/007_key_events.up.sql"),
        down: include_str!("../../../migrations/007_key_events.down.sql"),
    },
    AppMigration {
        version: 8,
        name: "places",
        up: include_str!("../../../migrations/008_places.up.sql"),
        down: include_str!("../../../migrations/008_places.down.sql"),
    },
    AppMigration {
        version: 9,
        name: "filter_indexes",
        up: include_str!("../../../migrations/009_filter_indexes.up.sql"),
        down: include_str!("../../../migrations/009_filter_indexes.down.sql"),
    },
    AppMigration {
        version: 10,
        name: "place_code_index",
        up: include_str!("../../../migrations/010_place_code_index.up.sql"),
        down: include_str!("../../../migrations/010_place_code_index.down.sql"),
    },
];

/// The app line records what it applied here, apart from River's
/// `river_migration`, so that River's own down migrations never trip over it.
const APP_MIGRATION_TABLE: &str = "CREATE TABLE IF NOT EXISTS lumilio_migration (
    line text NOT NULL,
    version bigint NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (line, version))";

/// A migration line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// River's job tables.
    Main,
    /// Lumilio's own tables.
    App,
}

impl Line {
    /// Every line, in the order they must be applied.
    pub const ALL: [Line; 2] = [Line::Main, Line::App];
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Line::Main => "main",
            Line::App => "app",
        })
    }
}

impl FromStr for Line {
    type Err = MigrateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "main" => Ok(Line::Main),
            "app" => Ok(Line::App),
            other => Err(MigrateError::UnknownLine(other.to_owned())),
        }
    }
}

/// Why a migration command failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The line name is not one we know.
    #[error(
        "unknown migration line {0:?}: use `main` (River's tables) or `app` (Lumilio's tables)"
    )]
    UnknownLine(String),
    /// River's migrator failed.
    #[error("River migration failed: {0}")]
    River(#[from] riverqueue::migrate::Error),
    /// A statement of the app line failed.
    #[error("app migration {version:03} ({name}) failed: {source}")]
    App {
        /// The failing version.
        version: i64,
        /// Its name.
        name: &'static str,
        /// The database error.
        source: sqlx::Error,
    },
    /// The database could not be read.
    #[error("database error while migrating: {0}")]
    Database(#[from] sqlx::Error),
    /// A `--target-version` that is not a migration of that line.
    #[error("unknown target version {0} on line {1}")]
    UnknownVersion(i64, Line),
}

/// One applied or pending migration, for `migrate-list`.
#[derive(Debug, Clone)]
pub struct MigrationStatus {
    /// The line it belongs to.
    pub line: Line,
    /// Its version.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// Whether it is applied.
    pub applied: bool,
}

/// A migration that ran, with how long it took.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Its version.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// Database execution time.
    pub duration: Duration,
}

/// Options shared by up and down, mirroring River's CLI flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct Steps {
    /// At most this many migrations.
    pub max_steps: Option<usize>,
    /// Stop at this version (down: excluded; `-1`/`0` removes the line).
    pub target_version: Option<i64>,
}

/// Applies pending migrations on `line`.
pub async fn up(pool: &PgPool, line: Line, steps: Steps) -> Result<Vec<Applied>, MigrateError> {
    match line {
        Line::Main => river(pool, Direction::Up, steps).await,
        Line::App => app(pool, Direction::Up, steps).await,
    }
}

/// Reverts applied migrations on `line`; without a limit it reverts one, as River does.
pub async fn down(pool: &PgPool, line: Line, steps: Steps) -> Result<Vec<Applied>, MigrateError> {
    match line {
        Line::Main => river(pool, Direction::Down, steps).await,
        Line::App => app(pool, Direction::Down, steps).await,
    }
}

async fn river(
    pool: &PgPool,
    direction: Direction,
    steps: Steps,
) -> Result<Vec<Applied>, MigrateError> {
    let mut opts = MigrateOpts::new();
    if let Some(n) = steps.max_steps {
        opts = opts.with_max_steps(n);
    }
    if let Some(v) = steps.target_version {
        opts = opts.with_target_version(v);
    }
    let result = PostgresMigrator::new(pool.clone())
        .migrate(direction, opts)
        .await?;
    Ok(result
        .versions
        .into_iter()
        .map(|v| Applied {
            version: v.version,
            name: v.name.to_owned(),
            duration: v.duration,
        })
        .collect())
}

async fn app_applied(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query(APP_MIGRATION_TABLE).execute(pool).await?;
    let rows =
        sqlx::query("SELECT version FROM lumilio_migration WHERE line = 'app' ORDER BY version")
            .fetch_all(pool)
            .await?;
    Ok(rows.iter().map(|r| r.get::<i64, _>(0)).collect())
}

async fn app(
    pool: &PgPool,
    direction: Direction,
    steps: Steps,
) -> Result<Vec<Applied>, MigrateError> {
    if let Some(t) = steps.target_version
        && t > 0
        && !APP_MIGRATIONS.iter().any(|m| m.version == t)
    {
        return Err(MigrateError::UnknownVersion(t, Line::App));
    }
    let applied = app_applied(pool).await?;
    let selected: Vec<&AppMigration> = match direction {
        Direction::Up => APP_MIGRATIONS
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .filter(|m| steps.target_version.is_none_or(|t| m.version <= t))
            .take(steps.max_steps.unwrap_or(usize::MAX))
            .collect(),
        Direction::Down => APP_MIGRATIONS
            .iter()
            .rev()
            .filter(|m| applied.contains(&m.version))
            .filter(|m| steps.target_version.is_none_or(|t| m.version > t))
            // Like River: down reverts one step unless told otherwise.
            .take(
                steps
                    .max_steps
                    .unwrap_or(if steps.target_version.is_some() {
                        usize::MAX
                    } else {
                        1
                    }),
            )
            .collect(),
    };
    let mut done = Vec::new();
    for m in selected {
        let started = std::time::Instant::now();
        let sql = match direction {
            Direction::Up => m.up,
            Direction::Down => m.down,
        };
        let fail = |source| MigrateError::App {
            version: m.version,
            name: m.name,
            source,
        };
        // Each migration and its record commit together.
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(fail)?;
        let record = match direction {
            Direction::Up => sqlx::query(
                "INSERT INTO lumilio_migration (line, version, name) VALUES ('app', $1, $2)",
            )
            .bind(m.version)
            .bind(m.name),
            Direction::Down => {
                sqlx::query("DELETE FROM lumilio_migration WHERE line = 'app' AND version = $1")
                    .bind(m.version)
            }
        };
        record.execute(&mut *tx).await.map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        done.push(Applied {
            version: m.version,
            name: m.name.to_owned(),
            duration: started.elapsed(),
        });
    }
    Ok(done)
}

/// Every known migration on every line, with whether it is applied.
pub async fn list(pool: &PgPool) -> Result<Vec<MigrationStatus>, MigrateError> {
    let main = PostgresMigrator::new(pool.clone())
        .existing_versions()
        .await?;
    let app = app_applied(pool).await?;
    let mut out = Vec::new();
    for m in PostgresMigrator::all_versions() {
        out.push(MigrationStatus {
            line: Line::Main,
            version: m.version,
            name: m.name.to_owned(),
            applied: main.contains(&m.version),
        });
    }
    for m in APP_MIGRATIONS {
        out.push(MigrationStatus {
            line: Line::App,
            version: m.version,
            name: m.name.to_owned(),
            applied: app.contains(&m.version),
        });
    }
    Ok(out)
}

/// Lines that still have pending migrations; empty when the schema is current.
pub async fn pending_lines(pool: &PgPool) -> Result<Vec<Line>, MigrateError> {
    let status = list(pool).await?;
    Ok(Line::ALL
        .into_iter()
        .filter(|line| status.iter().any(|s| s.line == *line && !s.applied))
        .collect())
}
