//! Streaming uploads to the staging directory while hashing them with BLAKE3
//! (the content address) and, for the Immich route only, SHA-1 (what Immich
//! clients check duplicates by), in the one pass over the bytes. SHA-1 costs
//! about as much as everything else per byte, so the native routes leave it
//! to the asset's worker.
//!
//! The bytes are written, and hashed with BLAKE3 as they are copied, by the
//! blocking pool while the next chunks arrive (`writer.rs`): the request's
//! task only parses (and, for the Immich route, computes SHA-1).
//!
//! The multipart framing the bytes arrive in is read here too
//! (`multipart.rs`), so that a part's body reaches the writer as slices of
//! the received chunks.
//!
//! A leaf: it sees chunks of bytes, never routes, status codes, rows or jobs. An [`Upload`]
//! that is dropped before [`Upload::finish`], or a [`Staged`] file that is
//! dropped before [`Staged::keep_as`], deletes its bytes, so an error at any
//! point leaves nothing behind in staging.

pub mod multipart;
pub mod sidecar;

mod writer;

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha1::Digest as _;
use uuid::Uuid;

use writer::Writer;

use crate::telemetry;

/// Why an upload could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body crossed the configured limit; the bytes already written are gone.
    #[error("upload is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Writing to the staging directory failed.
    #[error("cannot write to the staging directory {dir}: {source}")]
    Io {
        /// The staging directory.
        dir: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// The digests an upload computes while streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digests {
    /// BLAKE3 only (the native routes).
    Blake3,
    /// BLAKE3 and SHA-1 (the Immich route, which checks `x-immich-checksum`).
    Blake3AndSha1,
}

/// The staging directory where uploads land before a worker processes them.
#[derive(Debug, Clone)]
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// Uses `dir`, creating it if needed.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Self, IngestError> {
        let dir = dir.into();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| IngestError::Io {
                dir: dir.clone(),
                source,
            })?;
        Ok(Self { dir })
    }

    /// The staging directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a new upload of at most `limit` bytes.
    pub async fn begin(&self, limit: u64, digests: Digests) -> Result<Upload, IngestError> {
        // `.part` files are in flight; anything else here is waiting for a worker.
        let path = self.dir.join(format!("{}.part", Uuid::new_v4()));
        let created = path.clone();
        let file = telemetry::blocking(move || std::fs::File::create(created))
            .await
            .map_err(|source| self.io(source))?;
        Ok(Upload {
            file: Some(Writer::new(file, path.clone())),
            guard: Guard(Some(path)),
            sha1: (digests == Digests::Blake3AndSha1).then(sha1::Sha1::new),
            size: 0,
            limit,
            dir: self.dir.clone(),
        })
    }

    fn io(&self, source: io::Error) -> IngestError {
        IngestError::Io {
            dir: self.dir.clone(),
            source,
        }
    }
}

/// Deletes its file when dropped, unless disarmed.
#[derive(Debug)]
struct Guard(Option<PathBuf>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One upload being written to staging.
#[derive(Debug)]
pub struct Upload {
    file: Option<Writer>,
    guard: Guard,
    sha1: Option<sha1::Sha1>,
    size: u64,
    limit: u64,
    dir: PathBuf,
}

impl Upload {
    /// Appends a chunk; fails (and deletes what was written) past the limit.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), IngestError> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            // Delete the bytes now rather than at the end of the request.
            self.file = None;
            drop(Guard(self.guard.0.take()));
            return Err(IngestError::TooLarge { limit: self.limit });
        }
        if let Some(sha1) = &mut self.sha1 {
            sha1.update(&chunk);
        }
        let file = self
            .file
            .as_mut()
            .ok_or(IngestError::TooLarge { limit: self.limit })?;
        file.push(chunk)
            .await
            .map_err(|source| IngestError::Io {
                dir: self.dir.clone(),
                source,
            })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes and syncs the file, so an accepted upload survives a crash.
    pub async fn finish(mut self) -> Result<Staged, IngestError> {
        let dir = self.dir.clone();
        let io = |source| IngestError::Io { dir, source };
        let mut file = self
            .file
            .take()
            .ok_or(IngestError::TooLarge { limit: self.limit })?;
        let hash = match file.finish().await {
            Ok(hash) => hash,
            Err(e) => return Err(io(e)),
        };
        Ok(Staged {
            guard: Guard(self.guard.0.take()),
            size: self.size,
            content_hash: hash.to_hex().to_string(),
            sha1: self.sha1.take().map(|h| h.finalize().into()),
        })
    }
}

/// A fully written upload, deleted on drop unless kept.
#[derive(Debug)]
pub struct Staged {
    guard: Guard,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the bytes, lower-case hex.
    pub content_hash: String,
    /// SHA-1 of the bytes, when [`Digests::Blake3AndSha1`] asked for it.
    pub sha1: Option<[u8; 20]>,
}

impl Staged {
    /// Where the bytes are now.
    pub fn path(&self) -> &Path {
        self.guard
            .0
            .as_deref()
            .expect("a staged file has a path until kept")
    }

    /// Moves the file to `dest` (in the same directory tree) and keeps it.
    /// The bytes were synced by [`Upload::finish`]; the rename is synced here
    /// (`dest`'s directory), so the kept file is on disk when this returns.
    pub async fn keep_as(mut self, dest: &Path) -> io::Result<()> {
        let from = self
            .guard
            .0
            .take()
            .expect("a staged file has a path until kept");
        // One hop to the blocking pool for the rename and the sync.
        let (moving, to) = (from.clone(), dest.to_owned());
        let renamed = telemetry::blocking(move || {
            std::fs::rename(&moving, &to)?;
            Ok::<_, io::Error>(to.parent().map_or(Ok(()), crate::durable::sync_dir))
        })
        .await;
        match renamed {
            Ok(synced) => synced,
            Err(e) => {
                self.guard.0 = Some(from);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[tokio::test]
    async fn hashes_while_streaming_and_keeps() {
        let dir = std::env::temp_dir().join(format!("lumilio-ingest-{}", Uuid::new_v4()));
        let staging = Staging::open(&dir).await.unwrap();
        let mut up = staging.begin(1024, Digests::Blake3AndSha1).await.unwrap();
        up.write(Bytes::from_static(b"hello ")).await.unwrap();
        up.write(Bytes::from_static(b"world")).await.unwrap();
        let staged = up.finish().await.unwrap();
        assert_eq!(staged.size, 11);
        assert_eq!(
            staged.content_hash,
            blake3::hash(b"hello world").to_hex().to_string()
        );
        assert_eq!(
            hex(&staged.sha1.unwrap()),
            "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed",
            "SHA-1 of the same bytes, from the same pass"
        );
        let mut native = staging.begin(1024, Digests::Blake3).await.unwrap();
        native.write(Bytes::from_static(b"hello world")).await.unwrap();
        let native = native.finish().await.unwrap();
        assert_eq!(native.content_hash, staged.content_hash);
        assert_eq!(native.sha1, None, "SHA-1 only when asked for");
        drop(native);
        let dest = dir.join("kept");
        staged.keep_as(&dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
        assert!(
            crate::durable::tests::synced_under(&dir).contains(&dir),
            "keep_as syncs the directory it renamed into"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn over_limit_or_dropped_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("lumilio-ingest-{}", Uuid::new_v4()));
        let staging = Staging::open(&dir).await.unwrap();
        let mut up = staging.begin(4, Digests::Blake3).await.unwrap();
        assert!(matches!(
            up.write(Bytes::from_static(b"12345")).await,
            Err(IngestError::TooLarge { limit: 4 })
        ));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "over-limit bytes deleted at once"
        );
        drop(up);
        let mut up = staging.begin(100, Digests::Blake3).await.unwrap();
        up.write(Bytes::from_static(b"abc")).await.unwrap();
        drop(up);
        let staged = {
            let mut up = staging.begin(100, Digests::Blake3).await.unwrap();
            up.write(Bytes::from_static(b"abc")).await.unwrap();
            up.finish().await.unwrap()
        };
        drop(staged);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "dropped uploads leave no bytes"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Makes a client's file name safe to store and show: the last path
/// component only, no control characters, at most 255 bytes. Never used to
/// build a path.
pub fn sanitize_file_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let trimmed = cleaned.trim().trim_start_matches('.');
    let mut out = String::new();
    for c in trimmed.chars() {
        if out.len() + c.len_utf8() > 255 {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        "upload".to_owned()
    } else {
        out
    }
}

#[cfg(test)]
mod name_tests {
    use super::sanitize_file_name as s;

    #[test]
    fn strips_paths_controls_and_length() {
        assert_eq!(s("../../etc/passwd"), "passwd");
        assert_eq!(s("/abs/photo.jpg"), "photo.jpg");
        assert_eq!(s("C:\\x\\y.jpg"), "y.jpg");
        assert_eq!(s("a\0b\nc.jpg"), "abc.jpg");
        assert_eq!(s(".."), "upload");
        assert_eq!(s(""), "upload");
        assert!(s(&"é".repeat(10_000)).len() <= 255);
    }
}
