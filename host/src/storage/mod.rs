//! Where originals, renditions and staged uploads live on disk.
//!
//! Every path is derived from a content hash (validated as 64 hex digits) or
//! an asset id, never from a client's file name. A leaf module.

use std::io;
use std::path::{Path, PathBuf};

use tokio::fs;
use uuid::Uuid;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The hash is not 64 lower-case hex digits, so no path is derived from it.
    #[error("refusing to derive a storage path from {0:?}: not a BLAKE3 hex digest")]
    BadHash(String),
    /// The rendition name is not `[a-z0-9_-]{1,64}`.
    #[error("refusing to store a rendition named {0:?}: names are 1-64 of a-z, 0-9, _ and -")]
    BadName(String),
    /// A file operation failed.
    #[error("storage I/O on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The staging and storage directories.
#[derive(Debug, Clone)]
pub struct Storage {
    staging: PathBuf,
    root: PathBuf,
}

fn check_hash(hash: &str) -> Result<(), StorageError> {
    if hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(StorageError::BadHash(hash.to_owned()))
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Storage {
    /// Uses these directories, creating them if needed.
    pub async fn open(
        staging: impl Into<PathBuf>,
        root: impl Into<PathBuf>,
    ) -> Result<Self, StorageError> {
        let s = Self {
            staging: staging.into(),
            root: root.into(),
        };
        for dir in [&s.staging, &s.root] {
            fs::create_dir_all(dir).await.map_err(io_err(dir))?;
        }
        Ok(s)
    }

    /// The staging directory.
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    /// Where an accepted upload waits for its worker.
    pub fn staged_path(&self, asset: Uuid) -> PathBuf {
        self.staging.join(asset.to_string())
    }

    /// Where the original with this content hash lives.
    pub fn original_path(&self, hash: &str) -> Result<PathBuf, StorageError> {
        check_hash(hash)?;
        Ok(self
            .root
            .join("originals")
            .join(&hash[..2])
            .join(&hash[2..4])
            .join(hash))
    }

    /// Where a rendition of the original with this hash lives.
    pub fn rendition_path(&self, hash: &str, name: &str) -> Result<PathBuf, StorageError> {
        check_hash(hash)?;
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(StorageError::BadName(name.to_owned()));
        }
        Ok(self
            .root
            .join("renditions")
            .join(&hash[..2])
            .join(hash)
            .join(name))
    }

    /// Moves a staged file into place as the original for `hash`. Idempotent:
    /// if the original is already stored (same bytes), the staged copy is dropped.
    pub async fn put_original(&self, staged: &Path, hash: &str) -> Result<PathBuf, StorageError> {
        let dest = self.original_path(hash)?;
        if fs::try_exists(&dest).await.map_err(io_err(&dest))? {
            return Ok(dest);
        }
        let parent = dest.parent().expect("original paths have a parent");
        fs::create_dir_all(parent).await.map_err(io_err(parent))?;
        if fs::rename(staged, &dest).await.is_err() {
            // Different file systems: copy to a temporary name, then rename, so a
            // crash never leaves a half-written original under its final name.
            let tmp = dest.with_extension("tmp");
            fs::copy(staged, &tmp).await.map_err(io_err(&tmp))?;
            fs::File::open(&tmp)
                .await
                .map_err(io_err(&tmp))?
                .sync_all()
                .await
                .map_err(io_err(&tmp))?;
            fs::rename(&tmp, &dest).await.map_err(io_err(&dest))?;
        }
        Ok(dest)
    }

    /// Writes a rendition atomically (temporary file, then rename).
    pub async fn put_rendition(
        &self,
        hash: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<PathBuf, StorageError> {
        let dest = self.rendition_path(hash, name)?;
        let parent = dest.parent().expect("rendition paths have a parent");
        fs::create_dir_all(parent).await.map_err(io_err(parent))?;
        let tmp = dest.with_extension(format!("{}.tmp", Uuid::new_v4()));
        fs::write(&tmp, bytes).await.map_err(io_err(&tmp))?;
        fs::rename(&tmp, &dest).await.map_err(io_err(&dest))?;
        Ok(dest)
    }

    /// Deletes the original and every rendition stored for `hash`.
    pub async fn remove_stored(&self, hash: &str) -> Result<(), StorageError> {
        let original = self.original_path(hash)?;
        let renditions = self.root.join("renditions").join(&hash[..2]).join(hash);
        for result in [
            fs::remove_file(&original).await,
            fs::remove_dir_all(&renditions).await,
        ] {
            if let Err(e) = result
                && e.kind() != io::ErrorKind::NotFound
            {
                return Err(io_err(&original)(e));
            }
        }
        Ok(())
    }

    /// Deletes a staged upload; a missing file is fine.
    pub async fn remove_staged(&self, asset: Uuid) -> Result<(), StorageError> {
        let path = self.staged_path(asset);
        match fs::remove_file(&path).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paths_come_from_hashes_only() {
        let s = Storage {
            staging: "/s".into(),
            root: "/r".into(),
        };
        let h = "ab".repeat(32);
        assert_eq!(
            s.original_path(&h).unwrap(),
            PathBuf::from(format!("/r/originals/ab/ab/{h}"))
        );
        assert!(matches!(
            s.original_path("../../etc/passwd"),
            Err(StorageError::BadHash(_))
        ));
        assert!(matches!(
            s.rendition_path(&h, "../x"),
            Err(StorageError::BadName(_))
        ));
        assert!(s.rendition_path(&h, "small").unwrap().ends_with("small"));
    }
}
