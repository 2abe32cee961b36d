//! Fills in the SHA-1 of assets stored before it was recorded (migration
//! 004), so Immich clients' duplicate check finds them too. Runs once in the
//! background at start-up; new uploads get it while streaming in.

use sha1::Digest as _;
use sqlx::PgPool;
use tokio::io::AsyncReadExt;
use tracing::{info, warn};
use uuid::Uuid;

use crate::db::assets;
use crate::storage::Storage;

/// SHA-1 of a file, read in chunks.
async fn sha1_of(path: &std::path::Path) -> std::io::Result<[u8; 20]> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = sha1::Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

/// Hashes every asset without a SHA-1 whose bytes are on disk (the stored
/// original, else the staged copy; an asset with neither is skipped);
/// returns how many were filled in.
pub async fn backfill_sha1(pool: &PgPool, storage: &Storage) -> Result<usize, sqlx::Error> {
    let mut after = Uuid::nil();
    let mut filled = 0;
    loop {
        let batch = assets::missing_sha1(pool, after, 100).await?;
        let Some((last, _)) = batch.last() else {
            break;
        };
        after = *last;
        for (id, hash) in batch {
            let Ok(original) = storage.original_path(&hash) else {
                continue;
            };
            let digest = match sha1_of(&original).await {
                Ok(d) => d,
                Err(_) => match sha1_of(&storage.staged_path(id)).await {
                    Ok(d) => d,
                    Err(_) => continue,
                },
            };
            assets::set_sha1(pool, id, &digest).await?;
            filled += 1;
        }
    }
    if filled > 0 {
        info!(
            filled,
            "SHA-1 recorded for assets stored before it was kept"
        );
    }
    Ok(filled)
}

/// Runs [`backfill_sha1`] in the background, logging a failure.
pub fn spawn(pool: PgPool, storage: Storage) {
    tokio::spawn(async move {
        if let Err(e) = backfill_sha1(&pool, &storage).await {
            warn!(error = %e, "SHA-1 backfill stopped; it runs again at the next start");
        }
    });
}
