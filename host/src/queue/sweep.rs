//! Cleans staging after crashes: `.part` files of uploads that died
//! mid-stream, and staged files whose upload never committed. [`spawn`]
//! sweeps once at start-up and then periodically in the background.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sqlx::PgPool;
use tracing::{info, warn};
use uuid::Uuid;

use crate::storage::Storage;

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Abandoned partial uploads.
    pub parts: usize,
    /// Staged files with no asset row.
    pub orphans: usize,
}

fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() >= age)
        .unwrap_or(false)
}

/// Removes files older than `age`: an upload in progress writes continuously,
/// so only uploads whose process died are that old.
pub async fn sweep_staging(
    pool: &PgPool,
    storage: &Storage,
    incoming: &Path,
    age: Duration,
) -> Swept {
    let mut swept = Swept::default();
    if let Ok(entries) = std::fs::read_dir(incoming) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "part")
                && older_than(&p, age)
                && std::fs::remove_file(&p).is_ok()
            {
                swept.parts += 1;
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(storage.staging_dir()) {
        for e in entries.flatten() {
            let p = e.path();
            let Some(id) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| Uuid::parse_str(n).ok())
            else {
                continue;
            };
            if !older_than(&p, age) {
                continue;
            }
            // Staged but never committed (the host died between the two).
            match crate::db::assets::get_any(pool, id).await {
                Ok(None) => {
                    if std::fs::remove_file(&p).is_ok() {
                        swept.orphans += 1;
                    }
                }
                Ok(Some(_)) => {}
                Err(err) => warn!(%err, "staging sweep could not check an asset; will retry"),
            }
        }
    }
    if swept != Swept::default() {
        info!(
            parts = swept.parts,
            orphans = swept.orphans,
            "swept abandoned uploads from staging"
        );
    }
    swept
}

/// Sweeps once (before the host accepts uploads), then every minute in the
/// background, or every `age` when that is shorter.
pub async fn spawn(pool: PgPool, storage: Storage, incoming: PathBuf, age: Duration) {
    sweep_staging(&pool, &storage, &incoming, age).await;
    tokio::spawn(async move {
        let mut every =
            tokio::time::interval(Duration::from_secs(60).min(age.max(Duration::from_secs(1))));
        loop {
            every.tick().await;
            sweep_staging(&pool, &storage, &incoming, age).await;
        }
    });
}
