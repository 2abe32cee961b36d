//! The sample photos every test and benchmark reads, from `tests/data/photos`
//! inside the checkout (origin and licences in its `SOURCE.md`).
//!
//! One helper instead of a `photos()` per crate: paths are relative to the
//! photo folder (`"jpg/gps/DSCN0010.jpg"`), and a missing file is a test
//! failure that names it, never a silent skip.

use std::path::{Path, PathBuf};

/// The photo folder, `tests/data/photos` in this checkout.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/photos")
}

/// The path of one sample, e.g. `path("jpg/Canon_40D.jpg")`; panics if it is missing.
pub fn path(rel: &str) -> PathBuf {
    let p = dir().join(rel);
    assert!(
        p.exists(),
        "sample photo {} is missing: it should be in the repository (tests/data/photos/SOURCE.md)",
        p.display()
    );
    p
}

/// The bytes of one sample; panics with its path if it cannot be read.
pub fn read(rel: &str) -> Vec<u8> {
    let p = path(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading sample photo {}: {e}", p.display()))
}

/// Every file under `sub` (`""` for all), recursively, sorted by path so that
/// runs are repeatable; `SOURCE.md` and the reference data are left out.
pub fn files_under(sub: &str) -> Vec<PathBuf> {
    let root = path(sub);
    let mut files = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for e in entries {
            let p = e.unwrap_or_else(|e| panic!("{}: {e}", d.display())).path();
            if p.is_dir() {
                stack.push(p);
            } else if !matches!(p.extension().and_then(|x| x.to_str()), Some("md" | "json")) {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// `files_under(sub)` restricted to the given lower-case extensions.
pub fn files_with(sub: &str, exts: &[&str]) -> Vec<PathBuf> {
    files_under(sub)
        .into_iter()
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| exts.contains(&x.to_ascii_lowercase().as_str()))
        })
        .collect()
}

/// A sample's path relative to the photo folder, `/`-separated, for messages and keys.
pub fn rel(p: &Path) -> String {
    p.strip_prefix(dir())
        .unwrap_or(p)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
