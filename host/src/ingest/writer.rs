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
//! * A full direct block is written by a thread of its own while the next
//!   block is copied and hashed: written in line, the copy waited for the
//!   disk and the disk for the copy, and a 200 MiB upload took the sum of
//!   both instead of the longer.
//! * In the direct part, BLAKE3 is fed whole [`HASH_PIECE`]s that start at a
//!   multiple of [`HASH_PIECE`] in the file, so that it hashes whole subtrees
//!   many chunks at a time; a piece that starts inside a 1 KiB chunk is
//!   hashed a block at a time, several times slower.

use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};

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
        self.busy = Some(crate::telemetry::spawn_blocking(move || {
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
    /// A second descriptor with `O_DIRECT`, its buffers and its disk thread.
    On(DirectFile),
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
            // Direct writes start at a block boundary, and hash pieces at a
            // piece boundary (a multiple of it): the bytes up to it go buffered.
            let pad = (HASH_PIECE - (self.offset % HASH_PIECE as u64) as usize) % HASH_PIECE;
            let (head, rest) = data.split_at(pad.min(data.len()));
            self.buffered(head)?;
            data = rest;
            if self.offset.is_multiple_of(HASH_PIECE as u64) {
                self.direct = open_direct(&self.path);
            }
        }
        while !data.is_empty() {
            let Direct::On(direct) = &mut self.direct else {
                return self.buffered(data);
            };
            let n = direct.buf.append(data);
            direct.buf.hash_pieces(&mut self.hasher, false);
            data = &data[n..];
            if direct.buf.is_full() {
                self.flush_direct(false)?;
            }
        }
        Ok(())
    }

    /// Writes what is left, then syncs the file.
    fn finish(&mut self) -> io::Result<()> {
        self.flush_direct(true)?;
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

    /// Hands the full direct buffer to the disk thread (after the write
    /// before it ended) and goes on with an empty one. At the `end`, waits for
    /// that write, then writes the buffer's whole blocks directly and the
    /// rest (a tail shorter than a block) buffered. If the file system
    /// refuses a direct write, that block and everything after it go buffered.
    fn flush_direct(&mut self, end: bool) -> io::Result<()> {
        let Direct::On(direct) = &mut self.direct else {
            return Ok(());
        };
        direct.buf.hash_pieces(&mut self.hasher, true);
        if let Settled::Refused(block, e) = direct.settle()? {
            return self.fall_back(&e, Some(block));
        }
        let filled = direct.buf.filled().len();
        if !end {
            direct.submit(self.offset)?;
            self.offset += filled as u64;
            return Ok(());
        }
        let blocks = filled / ALIGN * ALIGN;
        let (whole, tail) = direct.buf.filled().split_at(blocks);
        match direct.file.write_all_at(whole, self.offset) {
            Ok(()) => {
                self.offset += blocks as u64;
                self.file.write_all_at(tail, self.offset)?;
                self.offset += tail.len() as u64;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return self.fall_back(&e, None),
            Err(e) => return Err(e),
        }
        direct.buf.clear();
        Ok(())
    }

    /// After the file system refused a direct write (`error`): writes
    /// `refused` (the block that was in flight, if that was the one) and the
    /// buffer being filled through the page cache, and the rest of the file
    /// after them.
    fn fall_back(&mut self, error: &io::Error, refused: Option<AlignedBuf>) -> io::Result<()> {
        tracing::debug!(%error, "O_DIRECT refused; staging buffered");
        let Direct::On(direct) = std::mem::replace(&mut self.direct, Direct::Off) else {
            return Ok(());
        };
        if let Some(block) = refused {
            let at = self.offset - block.filled().len() as u64;
            self.file.write_all_at(block.filled(), at)?;
        }
        self.file.write_all_at(direct.buf.filled(), self.offset)?;
        self.offset += direct.buf.filled().len() as u64;
        Ok(())
    }
}

/// The direct part of the file: a buffer being filled, and at most one full
/// buffer being written by the disk thread.
#[derive(Debug)]
struct DirectFile {
    /// The file opened with `O_DIRECT` (shared with the disk thread).
    file: Arc<std::fs::File>,
    buf: AlignedBuf,
    /// The buffer that came back from the last write, for reuse.
    spare: Option<AlignedBuf>,
    /// The disk thread, started with the first full buffer.
    disk: Option<DiskThread>,
    /// Whether a buffer is with the disk thread.
    in_flight: bool,
}

/// The thread that writes full direct buffers, one at a time; it ends when
/// its sender is dropped (the upload finished or was abandoned).
#[derive(Debug)]
struct DiskThread {
    to_disk: mpsc::SyncSender<(AlignedBuf, u64)>,
    from_disk: mpsc::Receiver<(AlignedBuf, io::Result<()>)>,
}

/// What became of the write in flight.
enum Settled {
    /// Written, or there was none.
    Done,
    /// The file system refused a direct write (`EINVAL`): the buffer, still
    /// filled, to be written buffered, and the error.
    Refused(AlignedBuf, io::Error),
}

impl DirectFile {
    fn new(file: std::fs::File) -> Self {
        Self {
            file: Arc::new(file),
            buf: AlignedBuf::new(),
            spare: None,
            disk: None,
            in_flight: false,
        }
    }

    /// Sends the buffer to be written at `offset` (no write is in flight),
    /// and goes on with an empty one.
    fn submit(&mut self, offset: u64) -> io::Result<()> {
        if self.disk.is_none() {
            self.disk = Some(DiskThread::start(self.file.clone())?);
        }
        let disk = self.disk.as_ref().ok_or_else(|| io::Error::other("no staging disk thread"))?;
        let empty = self.spare.take().unwrap_or_else(AlignedBuf::new);
        let full = std::mem::replace(&mut self.buf, empty);
        disk.to_disk
            .send((full, offset))
            .map_err(|_| io::Error::other("the staging disk thread ended"))?;
        self.in_flight = true;
        Ok(())
    }

    /// Waits for the write in flight, if any.
    fn settle(&mut self) -> io::Result<Settled> {
        if !std::mem::take(&mut self.in_flight) {
            return Ok(Settled::Done);
        }
        let disk = self.disk.as_ref().ok_or_else(|| io::Error::other("no staging disk thread"))?;
        let (mut buf, result) = disk
            .from_disk
            .recv()
            .map_err(|_| io::Error::other("the staging disk thread ended"))?;
        match result {
            Ok(()) => {
                buf.clear();
                self.spare = Some(buf);
                Ok(Settled::Done)
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Settled::Refused(buf, e)),
            Err(e) => Err(e),
        }
    }
}

impl DiskThread {
    /// Starts the thread that writes to `file`.
    fn start(file: Arc<std::fs::File>) -> io::Result<Self> {
        let (to_disk, jobs) = mpsc::sync_channel::<(AlignedBuf, u64)>(1);
        let (done, from_disk) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("staging-disk".into())
            .spawn(move || {
                for (buf, offset) in jobs {
                    let result = file.write_all_at(buf.filled(), offset);
                    if done.send((buf, result)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self { to_disk, from_disk })
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
            Ok(file) => Direct::On(DirectFile::new(file)),
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
    /// Bytes from the start already hashed.
    hashed: usize,
}

impl AlignedBuf {
    fn new() -> Self {
        let raw = vec![0u8; DIRECT_BLOCK + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        Self {
            raw,
            start,
            len: 0,
            hashed: 0,
        }
    }

    /// Copies as much of `data` as fits; returns how much.
    fn append(&mut self, data: &[u8]) -> usize {
        let at = self.start + self.len;
        let n = data.len().min(DIRECT_BLOCK - self.len);
        self.raw[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Hashes the whole [`HASH_PIECE`]s appended since the last call, and
    /// with `all` the rest too. The buffer starts at a multiple of
    /// [`HASH_PIECE`] in the file, so each piece does too, but for the last.
    fn hash_pieces(&mut self, hasher: &mut blake3::Hasher, all: bool) {
        let upto = if all { self.len } else { self.len / HASH_PIECE * HASH_PIECE };
        if upto > self.hashed {
            hasher.update(&self.raw[self.start + self.hashed..self.start + upto]);
            self.hashed = upto;
        }
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
        self.hashed = 0;
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

    /// A direct block that the file system refuses while it is in flight
    /// (`EINVAL` from the disk thread) is written again through the page
    /// cache, with the block filled after it and everything that follows:
    /// no byte is lost or doubled and the hash is unchanged. The refusal is
    /// real: the first direct buffer is moved one byte off its alignment,
    /// which ext4 and XFS refuse (`EINVAL`) for `O_DIRECT` writes. (btrfs
    /// would quietly write it buffered, and the test would say so.)
    #[test]
    fn a_refused_block_in_flight_falls_back_to_buffered_writes() {
        // On the disk, not /tmp: tmpfs refuses O_DIRECT at open.
        let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/writer-test");
        std::fs::create_dir_all(base).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        let path = dir.path().join("f.part");
        let mut disk = Disk {
            file: std::fs::File::create(&path).unwrap(),
            path: path.clone(),
            offset: 0,
            written_back: 0,
            direct: Direct::Later,
            hasher: blake3::Hasher::new(),
        };
        let len = DIRECT_FROM as usize + 3 * DIRECT_BLOCK + 777;
        let data: Vec<u8> = (0..len).map(|i| (i * 13 + i / 4099) as u8).collect();
        let (head, rest) = data.split_at(DIRECT_FROM as usize);
        disk.write(head).unwrap();
        disk.direct = open_direct(&path);
        let Direct::On(direct) = &mut disk.direct else {
            panic!("the file system under target/ refused O_DIRECT at open");
        };
        assert_eq!(direct.buf.len, 0);
        direct.buf.start += 1;
        for chunk in rest.chunks(100_003) {
            disk.write(chunk).unwrap();
        }
        disk.finish().unwrap();
        assert!(
            matches!(disk.direct, Direct::Off),
            "the refused block switched the rest to buffered writes"
        );
        assert_eq!(disk.offset, len as u64);
        assert_eq!(disk.hasher.finalize(), blake3::hash(&data));
        assert!(std::fs::read(&path).unwrap() == data, "the file holds exactly the bytes written");
    }
}
