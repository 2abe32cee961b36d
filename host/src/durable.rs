//! The directory sync that the staging area (`ingest`) and storage share.
//! Both follow one rule to survive a power cut: a file's bytes are synced
//! before it is renamed, and the rename only lasts once its directory is
//! synced too; this is the second half.

use std::io;
use std::path::Path;

/// Flushes `dir`'s entries to disk, so that a rename into it survives a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    tests::SYNCED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir.to_owned());
    std::fs::File::open(dir)?.sync_all()
}

/// Which directories [`sync_dir`] flushed, for the durability tests of the
/// modules that call it.
#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    /// Every directory flushed, in order, by every test of the process.
    pub(super) static SYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// The directories flushed under `root`, in order (tests run in parallel:
    /// each looks only under its own folder).
    pub(crate) fn synced_under(root: &Path) -> Vec<PathBuf> {
        SYNCED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|p| p.starts_with(root))
            .cloned()
            .collect()
    }

    #[test]
    fn records_each_synced_directory() {
        let dir = tempfile::tempdir().unwrap();
        super::sync_dir(dir.path()).unwrap();
        assert_eq!(synced_under(dir.path()), [dir.path().to_owned()]);
        let missing = dir.path().join("missing");
        assert!(
            super::sync_dir(&missing).is_err(),
            "a missing directory cannot be synced"
        );
    }
}
