//! How an upload's bytes reach the staging file without the request's task
//! waiting for the disk, and with little CPU per byte (issue 15 §5: on two
//! cores the host's per-byte work is the upload's speed).
//!
//! * The request's task hands each chunk (a `Bytes`: shared, not copied) to
//!   [`Writer::push`]. One write runs at a time in the blocking pool and takes
//!   every chunk that arrived meanwhile (at least [`BATCH_MIN`] bytes), so the
//!   socket is read while the disk is written.
//! * The write also computes BLAKE3, [`HASH_PIECE`] bytes at a time, each
//!   piece right after it was copied (into the page cache or the aligned
//!   buffer), while it is still in the CPU's cache: the bytes are read from
//!   memory once, by the copy, instead of once by the hash and again by the
//!   copy.
//! * The first [`DIRECT_FROM`] bytes go through the page cache: a photo stays
//!   there for the worker, which reads it next. Past them the file is written
//!   with `O_DIRECT` from an aligned buffer, because the page cache's work per
//!   page (allocation, copy, ext4's delayed allocation, writeback) was the
//!   largest share of the host's CPU on a large upload, and a direct write
//!   skips all of it. The tail that does not fill a block goes through the
//!   page cache again. Where the file system refuses `O_DIRECT`, the whole
//!   file is buffered, with writeback started every [`WRITEBACK_EVERY`] bytes
//!   so that the final `fsync` has little left.

use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;

use bytes::Bytes;
use tokio::task::JoinHandle;

/// While a write runs, at most this many bytes wait for the next one; past
/// it the upload waits for the disk, so memory stays bounded (4f).
const QUEUED_MAX: usize = 8 << 20;

/// A write waits for at least this many bytes (or the end): each write is a
/// hop to the blocking pool, whose wake-ups cost more than small writes save.
const BATCH_MIN: usize = 256 << 10;

/// Bytes written through the page cache before the rest goes direct.
const DIRECT_FROM: u64 = 8 << 20;

/// One direct write (a multiple of [`ALIGN`]).
const DIRECT_BLOCK: usize = 4 << 20;

/// Alignment of a direct write's memory, file offset and length: the page
/// size, which covers the logical block size of every common disk.
const ALIGN: usize = 4096;

/// Bytes copied, then hashed, at a time: well inside the L2 cache.
const HASH_PIECE: usize = 64 << 10;

/// Writeback of buffered bytes is started every this many bytes.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// The request's side: queues chunks and keeps one write in flight.
#[derive(Debug)]
pub(super) struct Writer {
    /// The file, between writes (a write in flight holds it).
    disk: Option<Disk>,
    /// Chunks not yet handed to a write.
    queued: Vec<Bytes>,
    queued_bytes: usize,
    /// The write in flight; it gives the file back.
    busy: Option<JoinHandle<(Disk, io::Result<()>)>>,
}

impl Writer {
    /// Writes to `file`, which was just created at `path` (reopened there for
    /// the direct part).
    pub(super) fn new(file: std::fs::File, path: PathBuf) -> Self {
        Self {
            disk: Some(Disk {
                file,
                path,
                offset: 0,
                written_back: 0,
                direct: Direct::Later,
                hasher: blake3::Hasher::new(),
            }),
            queued: Vec::new(),
            queued_bytes: 0,
            busy: None,
        }
    }

    /// Queues `chunk`, and starts a write unless one runs and the queue is short.
    pub(super) async fn push(&mut self, chunk: Bytes) -> io::Result<()> {
        self.queued_bytes += chunk.len();
        self.queued.push(chunk);
        let busy = self.busy.as_ref().is_some_and(|b| !b.is_finished());
        if self.queued_bytes < BATCH_MIN || (busy && self.queued_bytes < QUEUED_MAX) {
            return Ok(());
        }
        self.settle().await?;
        self.start(false)
    }

    /// Writes what is queued, then syncs the file: the bytes are on disk.
    /// Returns their BLAKE3.
    pub(super) async fn finish(&mut self) -> io::Result<blake3::Hash> {
        self.settle().await?;
        self.start(true)?;
        self.settle().await?;
        let disk = self.disk.as_ref().ok_or_else(|| io::Error::other("the staging file was lost"))?;
        Ok(disk.hasher.finalize())
    }

    /// Waits for the write in flight, and takes the file back.
    async fn settle(&mut self) -> io::Result<()> {
        let Some(busy) = self.busy.take() else {
            return Ok(());
        };
        let (disk, result) = busy.await.map_err(io::Error::other)?;
        self.disk = Some(disk);
        result
    }

    /// Hands the queued chunks to a write in the blocking pool (none runs),
    /// and the `fsync` after them when `sync`.
    fn start(&mut self, sync: bool) -> io::Result<()> {
        let mut disk = self
            .disk
            .take()
            .ok_or_else(|| io::Error::other("the staging file was lost with a failed write"))?;
        let chunks = std::mem::take(&mut self.queued);
        self.queued_bytes = 0;
        self.busy = Some(tokio::task::spawn_blocking(move || {
            let result = chunks
                .iter()
                .try_for_each(|c| disk.write(c))
                .and_then(|()| if sync { disk.finish() } else { Ok(()) });
            (disk, result)
        }));
        Ok(())
    }
}

/// The staged file, as the blocking pool writes it.
#[derive(Debug)]
struct Disk {
    /// Opened without `O_DIRECT`: the first bytes, the tail, the `fsync`.
    file: std::fs::File,
    path: PathBuf,
    /// Bytes in the file so far (not counting a direct buffer's).
    offset: u64,
    /// Where writeback of buffered bytes was last started.
    written_back: u64,
    direct: Direct,
    /// BLAKE3 of the bytes written so far.
    hasher: blake3::Hasher,
}

/// Whether the file is written with `O_DIRECT`.
#[derive(Debug)]
enum Direct {
    /// Not yet: the first [`DIRECT_FROM`] bytes.
    Later,
    /// A second descriptor with `O_DIRECT`, and the bytes that wait for a full block.
    On {
        file: std::fs::File,
        buf: AlignedBuf,
    },
    /// The file system refused it: buffered to the end.
    Off,
}

impl Disk {
    /// Appends `data`, hashing each piece right after copying it.
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        data.chunks(HASH_PIECE).try_for_each(|piece| self.write_piece(piece))
    }

    /// Appends and hashes at most [`HASH_PIECE`] bytes.
    fn write_piece(&mut self, mut data: &[u8]) -> io::Result<()> {
        if matches!(self.direct, Direct::Later) && self.offset >= DIRECT_FROM {
            // Direct writes start at a block boundary: the bytes up to it go buffered.
            let pad = (ALIGN - (self.offset % ALIGN as u64) as usize) % ALIGN;
            let (head, rest) = data.split_at(pad.min(data.len()));
            self.buffered(head)?;
            data = rest;
            if self.offset.is_multiple_of(ALIGN as u64) {
                self.direct = open_direct(&self.path);
            }
        }
        while !data.is_empty() {
            let Direct::On { buf, .. } = &mut self.direct else {
                return self.buffered(data);
            };
            let n = buf.append(data);
            self.hasher.update(buf.last(n));
            data = &data[n..];
            if buf.is_full() {
                self.flush_direct()?;
            }
        }
        Ok(())
    }

    /// Writes what is left, then syncs the file.
    fn finish(&mut self) -> io::Result<()> {
        self.flush_direct()?;
        self.file.sync_all()
    }

    /// Writes `data` through the page cache and hashes it, starting
    /// writeback now and then.
    fn buffered(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, self.offset)?;
        self.hasher.update(data);
        self.offset += data.len() as u64;
        if self.offset - self.written_back >= WRITEBACK_EVERY {
            start_writeback(&self.file, self.written_back, self.offset);
            self.written_back = self.offset;
        }
        Ok(())
    }

    /// Writes the direct buffer's whole blocks directly and the rest (a tail
    /// shorter than a block, at the end) buffered. If the file system refuses
    /// the direct write, all of it goes buffered, and so does the rest of the file.
    fn flush_direct(&mut self) -> io::Result<()> {
        let Direct::On { file, buf } = &mut self.direct else {
            return Ok(());
        };
        let filled = buf.filled();
        let blocks = filled.len() / ALIGN * ALIGN;
        let (direct, tail) = filled.split_at(blocks);
        match file.write_all_at(direct, self.offset) {
            Ok(()) => {
                self.offset += blocks as u64;
                self.file.write_all_at(tail, self.offset)?;
                self.offset += tail.len() as u64;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(error = %e, "O_DIRECT refused; staging buffered");
                self.file.write_all_at(filled, self.offset)?;
                self.offset += filled.len() as u64;
                self.direct = Direct::Off;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        buf.clear();
        Ok(())
    }
}

/// The staged file opened again with `O_DIRECT`, or [`Direct::Off`] where
/// that is refused (tmpfs, some network file systems) or unknown.
fn open_direct(path: &std::path::Path) -> Direct {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(file) => Direct::On {
                file,
                buf: AlignedBuf::new(),
            },
            Err(e) => {
                tracing::debug!(error = %e, "no O_DIRECT for staging; buffered");
                Direct::Off
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Direct::Off
    }
}

/// [`DIRECT_BLOCK`] bytes at an [`ALIGN`]ed address, as direct writes need.
#[derive(Debug)]
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new() -> Self {
        let raw = vec![0u8; DIRECT_BLOCK + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        Self { raw, start, len: 0 }
    }

    /// Copies as much of `data` as fits; returns how much.
    fn append(&mut self, data: &[u8]) -> usize {
        let at = self.start + self.len;
        let n = data.len().min(DIRECT_BLOCK - self.len);
        self.raw[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// The last `n` bytes appended.
    fn last(&self, n: usize) -> &[u8] {
        let end = self.start + self.len;
        &self.raw[end - n..end]
    }

    fn is_full(&self) -> bool {
        self.len == DIRECT_BLOCK
    }

    /// The bytes waiting, from the aligned start.
    fn filled(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// Starts writeback of bytes `from..to` without waiting for it, so that the
/// disk works while the upload streams. Only a hint: where it fails (or off
/// Linux) the final `fsync` does the work.
fn start_writeback(file: &std::fs::File, from: u64, to: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a plain syscall on a descriptor borrowed for its duration.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                from as libc::off64_t,
                (to - from) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, to);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte lands where it belongs across the buffered head, the
    /// boundary to direct writes (reached at an unaligned offset), full
    /// direct blocks, and a tail shorter than a block.
    #[tokio::test]
    async fn buffered_then_direct_then_tail_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let file = std::fs::File::create(&path).unwrap();
        let mut w = Writer::new(file, path.clone());
        let len = DIRECT_FROM as usize + 2 * DIRECT_BLOCK + 12_345;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4093) as u8).collect();
        // Odd chunk sizes, so that no boundary falls on a chunk's edge.
        for chunk in data.chunks(65_537) {
            w.push(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        let hash = w.finish().await.unwrap();
        assert_eq!(hash, blake3::hash(&data), "BLAKE3 of every byte, in order");
        let disk = w.disk.as_ref().unwrap();
        assert_eq!(disk.offset, len as u64);
        assert!(
            !matches!(disk.direct, Direct::Later),
            "past DIRECT_FROM the writer tried O_DIRECT"
        );
        assert!(std::fs::read(&path).unwrap() == data, "the file holds exactly the bytes pushed");
    }
}
