//! Per-call store data: the WASI context, the memory limiter that traps a
//! grow past the stage's cap, the guest's `host.log` lines in `tracing`, and
//! the table that holds the call's `file` (WIT 0.2.0).

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::StageFile;
use super::bindings::LogLevel;

/// The error a memory grow past the cap traps with.
#[derive(Debug)]
pub(crate) struct MemoryCapExceeded {
    limit: usize,
    desired: usize,
}

impl std::fmt::Display for MemoryCapExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory cap exceeded: {} MiB requested, limit {} MiB",
            self.desired >> 20,
            self.limit >> 20
        )
    }
}

impl std::error::Error for MemoryCapExceeded {}

/// Caps the sum of all linear memories of one store; a grow past the cap
/// traps (rather than returning -1, which Rust guests turn into `unreachable`).
pub(crate) struct MemoryLimiter {
    limit: usize,
    used: usize,
    exceeded: bool,
}

impl MemoryLimiter {
    /// A limiter allowing `limit` bytes in all.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit,
            used: 0,
            exceeded: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            self.exceeded = true;
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                limit: self.limit,
                desired: total,
            }));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Per-call store data: WASI context, resource table, limiter and the
/// stage/asset the call belongs to (for log lines).
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    stage: String,
    asset_id: String,
    log_lines: u32,
    /// How long instantiation took, set by the bindings (for the phase totals).
    pub(crate) instantiated_in: std::time::Duration,
    /// Bytes of the asset copied into the guest: all of them for a 0.1.0
    /// stage, what it read through `file` for a 0.2.0 one.
    pub(crate) bytes_read: u64,
}

/// Log lines a single call may write through `host.log`; later ones are dropped.
const MAX_LOG_LINES: u32 = 1000;
/// Longest message passed on from `host.log`.
const MAX_LOG_BYTES: usize = 4096;

impl HostState {
    /// The state of one call of `stage` on `asset_id`, with at most `memory_limit` bytes.
    pub(super) fn new(wasi: WasiCtx, memory_limit: usize, stage: String, asset_id: String) -> Self {
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit),
            stage,
            asset_id,
            log_lines: 0,
            instantiated_in: std::time::Duration::ZERO,
            bytes_read: 0,
        }
    }

    /// Puts `file` in the call's resource table, for the guest to own.
    pub(crate) fn push_file(&mut self, file: StageFile) -> wasmtime::Result<Resource<StageFile>> {
        Ok(self.table.push(file)?)
    }

    /// The file behind a guest's handle; an unknown handle traps the guest.
    pub(crate) fn file(&self, handle: &Resource<StageFile>) -> wasmtime::Result<&StageFile> {
        Ok(self.table.get(handle)?)
    }

    /// Drops the guest's handle to its file.
    pub(crate) fn drop_file(&mut self, handle: Resource<StageFile>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }

    /// Whether the call tried to grow past its memory cap.
    pub(super) fn memory_exceeded(&self) -> bool {
        self.limiter.exceeded
    }

    /// Writes a guest's `host.log` line to `tracing`, tagged with stage and asset.
    pub(crate) fn guest_log(&mut self, level: LogLevel, message: &str) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(stage = %self.stage, asset = %self.asset_id, "stage log limit reached; further lines dropped");
            }
            return;
        }
        let mut msg = message;
        if msg.len() > MAX_LOG_BYTES {
            let mut i = MAX_LOG_BYTES;
            while !msg.is_char_boundary(i) {
                i -= 1;
            }
            msg = &msg[..i];
        }
        let (stage, asset) = (&self.stage, &self.asset_id);
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "lumilio::plugin", stage = %stage, asset = %asset, "{msg}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "lumilio::plugin", stage = %stage, asset = %asset, "{msg}")
            }
            LogLevel::Info => {
                tracing::info!(target: "lumilio::plugin", stage = %stage, asset = %asset, "{msg}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "lumilio::plugin", stage = %stage, asset = %asset, "{msg}")
            }
            LogLevel::Error => {
                tracing::error!(target: "lumilio::plugin", stage = %stage, asset = %asset, "{msg}")
            }
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
