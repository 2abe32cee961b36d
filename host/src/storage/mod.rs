//! Where originals, renditions and staged uploads live on disk.
//!
//! Every path is derived from a content hash (validated as 64 hex digits) or
//! an asset id, never from a client's file name. A leaf module (it uses only
//! the telemetry leaf).
//!
//! Each operation is one closure on the blocking pool ([`telemetry::blocking`]):
//! through `tokio::fs`, every `stat`, `open`, write, `fsync` and rename was a
//! hop of its own, and a photo's renditions took about twenty, each a
//! wake-up of a pool thread and of the waiting task.
//!
//! Durability: a file is synced before it is renamed into place, and the
//! directory that receives it is synced after the rename (a rename is only an
//! entry in the directory until that directory is flushed). New directories
//! are synced into their parents once, when they are made.

use std::io;
use std::path::{Path, PathBuf};

use std::fs;
use std::io::Write as _;

use uuid::Uuid;

use crate::telemetry;

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

/// [`crate::durable::sync_dir`], its error naming the directory.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    crate::durable::sync_dir(dir).map_err(io_err(dir))
}

/// Makes `dir` (under `root`) and whichever of its ancestors are missing.
/// Returns the directories whose entries changed: the parent of each
/// directory made (issue 15 §1: syncing every ancestor up to the root, made
/// or not, cost four extra `fsync`s per photo, two for the original's
/// directory and two for the renditions'). The caller syncs them after
/// its own directory: on ext4 that sync's journal commit already carries the
/// new entries, so these find little left to do. An existing `dir` costs
/// one `stat`.
fn make_dir(root: &Path, dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
    if fs::exists(dir).map_err(io_err(dir))? {
        return Ok(Vec::new());
    }
    // The missing levels, deepest first, up to the first that exists.
    let mut missing = vec![dir];
    while let Some(parent) = missing.last().and_then(|d| d.parent()) {
        if parent == root
            || !parent.starts_with(root)
            || fs::exists(parent).map_err(io_err(parent))?
        {
            break;
        }
        missing.push(parent);
    }
    let mut changed = Vec::with_capacity(missing.len());
    for new in missing.into_iter().rev() {
        match fs::create_dir(new) {
            // A concurrent worker made it, and may not have synced its parent
            // yet: the parent is synced here too.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            other => other.map_err(io_err(new))?,
        }
        changed.extend(new.parent().map(Path::to_owned));
    }
    Ok(changed)
}

/// Syncs `dir`, then the directories [`make_dir`] changed on the way to it.
fn sync_dirs(dir: &Path, changed: &[PathBuf]) -> Result<(), StorageError> {
    sync_dir(dir)?;
    changed.iter().try_for_each(|d| sync_dir(d))
}

/// [`Storage::put_original`]'s file operations.
fn move_into_place(root: &Path, staged: &Path, dest: &Path) -> Result<(), StorageError> {
    if fs::exists(dest).map_err(io_err(dest))? {
        return Ok(());
    }
    let parent = dest.parent().expect("original paths have a parent");
    let made = make_dir(root, parent)?;
    if fs::rename(staged, dest).is_err() {
        // Different file systems: copy to a temporary name, then rename, so a
        // crash never leaves a half-written original under its final name.
        let tmp = dest.with_extension("tmp");
        fs::copy(staged, &tmp).map_err(io_err(&tmp))?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, dest).map_err(io_err(dest))?;
    }
    sync_dirs(parent, &made)
}

/// [`Storage::put_renditions`]'s file operations: every file is written to a
/// temporary name, then each is synced (the first sync's journal commit
/// usually carries the others' data, so the rest find little to do), then
/// each is renamed into place, then their directory is synced once.
fn write_renditions(
    root: &Path,
    dests: &[PathBuf],
    renditions: &[(String, Vec<u8>)],
) -> Result<(), StorageError> {
    let Some(parent) = dests.first().and_then(|d| d.parent()) else {
        return Ok(());
    };
    let made = make_dir(root, parent)?;
    let mut tmps = Vec::with_capacity(dests.len());
    let written = (|| {
        let mut files = Vec::with_capacity(dests.len());
        for (dest, (_, bytes)) in dests.iter().zip(renditions) {
            let tmp = dest.with_extension(format!("{}.tmp", Uuid::new_v4()));
            let mut file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
            tmps.push(tmp);
            let tmp = tmps.last().expect("just pushed");
            file.write_all(bytes).map_err(io_err(tmp))?;
            files.push(file);
        }
        for (file, tmp) in files.iter().zip(&tmps) {
            file.sync_all().map_err(io_err(tmp))?;
        }
        for (tmp, dest) in tmps.iter().zip(dests) {
            fs::rename(tmp, dest).map_err(io_err(dest))?;
        }
        Ok(())
    })();
    if written.is_err() {
        // Leave no temporary files behind; the asset's job will be retried.
        for tmp in &tmps {
            let _ = fs::remove_file(tmp);
        }
        return written;
    }
    sync_dirs(parent, &made)
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
        let dirs = [s.staging.clone(), s.root.clone()];
        telemetry::blocking(move || {
            dirs.iter()
                .try_for_each(|dir| fs::create_dir_all(dir).map_err(io_err(dir)))
        })
        .await?;
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

    /// Moves a staged file into place as the original for `hash`; `None` when
    /// nothing is staged there (an earlier attempt moved it). Idempotent: if
    /// the original is already stored (same bytes), the staged copy is
    /// dropped. The staged file was synced when its upload finished; the
    /// rename is synced here (its directory), so the original is on disk when
    /// this returns. One hop to the blocking pool for all of it.
    pub async fn put_original(
        &self,
        staged: &Path,
        hash: &str,
    ) -> Result<Option<PathBuf>, StorageError> {
        let dest = self.original_path(hash)?;
        let (root, staged) = (self.root.clone(), staged.to_owned());
        telemetry::blocking(move || {
            if !fs::exists(&staged).unwrap_or(false) {
                return Ok(None);
            }
            move_into_place(&root, &staged, &dest).map(|()| Some(dest))
        })
        .await
    }

    /// Writes one asset's renditions, `(name, bytes)`, each atomically, and
    /// all durably, in one hop to the blocking pool. Returns the final paths,
    /// in order.
    pub async fn put_renditions(
        &self,
        hash: &str,
        renditions: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<PathBuf>, StorageError> {
        let mut dests = Vec::with_capacity(renditions.len());
        for (name, _) in &renditions {
            dests.push(self.rendition_path(hash, name)?);
        }
        let root = self.root.clone();
        telemetry::blocking(move || write_renditions(&root, &dests, &renditions).map(|()| dests))
            .await
    }

    /// Deletes the original and every rendition stored for `hash`.
    pub async fn remove_stored(&self, hash: &str) -> Result<(), StorageError> {
        let original = self.original_path(hash)?;
        let renditions = self.root.join("renditions").join(&hash[..2]).join(hash);
        telemetry::blocking(move || {
            for result in [fs::remove_file(&original), fs::remove_dir_all(&renditions)] {
                if let Err(e) = result
                    && e.kind() != io::ErrorKind::NotFound
                {
                    return Err(io_err(&original)(e));
                }
            }
            Ok(())
        })
        .await
    }

    /// Deletes a staged upload; a missing file is fine.
    pub async fn remove_staged(&self, asset: Uuid) -> Result<(), StorageError> {
        let path = self.staged_path(asset);
        telemetry::blocking(move || match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::durable::tests::synced_under;

    fn owned(renditions: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        renditions
            .iter()
            .map(|(n, b)| (n.to_string(), b.to_vec()))
            .collect()
    }

    #[tokio::test]
    async fn every_rename_into_storage_syncs_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Storage::open(tmp.path().join("staging"), tmp.path().join("storage"))
            .await
            .unwrap();
        let hash = "cd".repeat(32);
        let staged = s.staged_path(Uuid::new_v4());
        std::fs::write(&staged, b"bytes").unwrap();
        let dest = s.put_original(&staged, &hash).await.unwrap().unwrap();
        let synced = synced_under(tmp.path());
        // The original's directory is synced after the rename, then the
        // parent of each directory made for it (originals, originals/cd and
        // originals/cd/cd).
        let expect = |dirs: &[&str]| dirs.iter().map(|d| tmp.path().join(d)).collect::<Vec<_>>();
        assert_eq!(
            synced,
            expect(&[
                "storage/originals/cd/cd",
                "storage",
                "storage/originals",
                "storage/originals/cd"
            ])
        );
        assert_eq!(dest.parent(), Some(synced[0].as_path()));

        // Another original under the same first level: only the directory
        // made (cd/ef) is synced into its parent, not every ancestor again.
        let other = format!("cdef{}", "01".repeat(30));
        let staged = s.staged_path(Uuid::new_v4());
        std::fs::write(&staged, b"other").unwrap();
        let before = synced.len();
        s.put_original(&staged, &other).await.unwrap().unwrap();
        let synced = synced_under(tmp.path());
        assert_eq!(
            synced[before..],
            expect(&["storage/originals/cd/ef", "storage/originals/cd"]),
            "an existing directory is not synced again"
        );

        let before = synced.len();
        let r = s
            .put_renditions(&hash, owned(&[("small", b"thumb")]))
            .await
            .unwrap();
        let synced = synced_under(tmp.path());
        let hash_dir = format!("storage/renditions/cd/{hash}");
        assert_eq!(
            synced[before..],
            expect(&[
                &hash_dir,
                "storage",
                "storage/renditions",
                "storage/renditions/cd"
            ])
        );
        assert_eq!(r[0].parent(), Some(synced[before].as_path()));
        // More renditions in the same (now existing) directory: one sync, of
        // that directory, after all their renames.
        let before2 = synced.len();
        let more = s
            .put_renditions(&hash, owned(&[("large", b"thumb2"), ("clip", b"thumb3")]))
            .await
            .unwrap();
        let synced = synced_under(tmp.path());
        assert_eq!(
            synced[before2..],
            [r[0].parent().unwrap().to_owned()],
            "one directory sync per batch"
        );
        assert!(before2 > before);
        assert_eq!(std::fs::read(&dest).unwrap(), b"bytes");
        assert_eq!(std::fs::read(&more[1]).unwrap(), b"thumb3");
        // Nothing but the renditions themselves is left in the directory.
        let mut names: Vec<String> = std::fs::read_dir(r[0].parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["clip", "large", "small"]);
    }

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
