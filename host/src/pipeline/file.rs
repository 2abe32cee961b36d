//! [`StageFile`]: an asset's bytes as the stages read them, in memory or in
//! its file on disk. The host's side of the WIT resource `file` (0.2.0),
//! which a stage reads as far as it needs, and what a 0.1.0 stage receives
//! whole.

use std::sync::Arc;

/// An asset's bytes as a stage reads them: the host's side of the WIT
/// resource `file` (0.2.0), and what a 0.1.0 stage receives whole. Either in
/// memory or a file on disk, read where a stage asks: a 0.2.0 stage that reads
/// a header costs the host no more memory than that header. Cloning shares
/// the bytes (and the file).
#[derive(Debug, Clone)]
pub struct StageFile(Arc<Source>);

#[derive(Debug)]
enum Source {
    Memory(Arc<[u8]>),
    Disk {
        file: std::fs::File,
        len: u64,
        /// All of it, once a 0.1.0 stage needed it whole (shared through
        /// the outer `Arc`, so kept as read, without another copy).
        whole: std::sync::OnceLock<Vec<u8>>,
    },
}

impl From<Arc<[u8]>> for StageFile {
    fn from(bytes: Arc<[u8]>) -> Self {
        StageFile::new(bytes)
    }
}

impl StageFile {
    /// The file whose content is `bytes`.
    pub fn new(bytes: Arc<[u8]>) -> Self {
        StageFile(Arc::new(Source::Memory(bytes)))
    }

    /// The file at `path`, read where the stages ask (its length now is its length).
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok(StageFile(Arc::new(Source::Disk {
            file,
            len,
            whole: std::sync::OnceLock::new(),
        })))
    }

    /// The size in bytes.
    pub fn len(&self) -> u64 {
        match &*self.0 {
            Source::Memory(b) => b.len() as u64,
            Source::Disk { len, .. } => *len,
        }
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All the bytes (from disk the first time a caller needs them whole).
    pub fn bytes(&self) -> std::io::Result<&[u8]> {
        match &*self.0 {
            Source::Memory(b) => Ok(b),
            Source::Disk { whole, .. } => {
                if let Some(b) = whole.get() {
                    return Ok(b);
                }
                let all = self.read(0, self.len())?;
                Ok(whole.get_or_init(|| all))
            }
        }
    }

    /// Up to `len` bytes from `offset`; fewer at the end, none past it.
    pub fn read(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let start = offset.min(self.len());
        let end = offset.saturating_add(len).min(self.len()).max(start);
        let n = usize::try_from(end - start).map_err(std::io::Error::other)?;
        match &*self.0 {
            // `start` is at most the length of bytes in memory, so it fits a usize.
            Source::Memory(b) => Ok(b[start as usize..][..n].to_vec()),
            Source::Disk { file, .. } => {
                use std::os::unix::fs::FileExt as _;
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, start)?;
                Ok(buf)
            }
        }
    }
}
