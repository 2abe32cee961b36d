//! Fills in the SHA-1 that Immich clients check duplicates by. The native
//! upload routes leave it off their hot path (only the Immich route hashes it
//! while streaming), so the asset's worker records it ([`fill_one`]), and a
//! background pass at start-up catches assets stored before it was kept
//! (migration 004) or whose job never ran.

use sha1::Digest as _;
use sqlx::PgPool;
use tracing::{info, warn};
use uuid::Uuid;

use crate::db::assets;
use crate::storage::Storage;

/// SHA-1 of a file, read in chunks on one blocking thread (not one hop to
/// the blocking pool per chunk, as `tokio::fs` reads would be).
pub(crate) async fn sha1_of(path: &std::path::Path) -> std::io::Result<[u8; 20]> {
    use std::io::Read as _;
    let path = path.to_owned();
    let hash = crate::telemetry::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = sha1::Sha1::new();
        // Under glibc's mmap threshold, so the buffer is not a fresh mapping
        // (and 64 KiB of page faults) for every photo.
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(hasher.finalize().into());
            }
            hasher.update(&buf[..n]);
        }
    });
    hash.await.map_err(std::io::Error::other)?
}

/// Records the SHA-1 of one asset from its bytes on disk (the stored original,
/// else the staged copy); false when neither is there.
pub async fn fill_one(
    pool: &PgPool,
    storage: &Storage,
    id: Uuid,
    content_hash: &str,
) -> Result<bool, sqlx::Error> {
    let Ok(original) = storage.original_path(content_hash) else {
        return Ok(false);
    };
    let digest = match sha1_of(&original).await {
        Ok(d) => d,
        Err(_) => match sha1_of(&storage.staged_path(id)).await {
            Ok(d) => d,
            Err(_) => return Ok(false),
        },
    };
    assets::set_sha1(pool, id, &digest).await?;
    Ok(true)
}

/// Hashes every asset (of `owner`, or of everyone) without a SHA-1 whose
/// bytes are on disk (the stored original, else the staged copy; an asset
/// with neither is skipped); returns how many were filled in. The Immich
/// duplicate check calls it for its caller first, so that uploads whose worker
/// has not run yet are found too.
pub async fn fill_missing(
    pool: &PgPool,
    storage: &Storage,
    owner: Option<Uuid>,
) -> Result<usize, sqlx::Error> {
    let mut after = Uuid::nil();
    let mut filled = 0;
    loop {
        let batch = assets::missing_sha1(pool, owner, after, 100).await?;
        let Some((last, _)) = batch.last() else {
            break;
        };
        after = *last;
        for (id, hash) in batch {
            if fill_one(pool, storage, id, &hash).await? {
                filled += 1;
            }
        }
    }
    Ok(filled)
}

/// Runs [`fill_missing`] for everyone in the background, logging a failure.
pub fn spawn(pool: PgPool, storage: Storage) {
    tokio::spawn(async move {
        match fill_missing(&pool, &storage, None).await {
            Ok(0) => {}
            Ok(filled) => info!(filled, "SHA-1 recorded for assets that had none"),
            Err(e) => {
                warn!(error = %e, "SHA-1 backfill stopped; it runs again at the next start");
            }
        }
    });
}
