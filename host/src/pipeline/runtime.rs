//! The wasmtime side: one [`Engine`] with the pooling allocator, the epoch
//! ticker, the on-disk compile cache, the shared [`Linker`], and running one
//! stage call in a fresh [`Store`] with its limits.

use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{self, GuestError, LogLevel, StagePre};
use super::capture::CapturePipe;
use super::config::StageSpec;
use super::error::{RuntimeError, StageError};
use super::{AssetFacts, FactValue, StageOutput};

/// Tunables of a [`Runtime`](super::Runtime); [`Default`] suits a small server.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// How many stage instances may be alive at once (across all pipelines).
    /// Each reserves (but does not commit) 4 GiB + guard of address space
    /// per linear memory: 64 instances ≈ 0.5 TiB of *virtual* space, no RAM.
    pub max_instances: u32,
    /// Epoch tick; deadlines are enforced to within one tick.
    pub epoch_tick: Duration,
    /// Bytes of guest stderr (and, separately, stdout) kept per call; the
    /// tail is kept, and writing more never fails the guest.
    pub max_output_bytes: usize,
    /// Bytes of each memory reset with memset rather than madvise when an
    /// instance slot is reused (wasmtime's `linear_memory_keep_resident`).
    /// 0 by default: 1 MiB measured slower here (the memset dominates).
    pub keep_resident_bytes: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            max_instances: 64,
            epoch_tick: Duration::from_millis(10),
            max_output_bytes: 256 * 1024,
            keep_resident_bytes: 0,
        }
    }
}

/// Counters of how components were obtained, for tests and start-up logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoadStats {
    /// Components compiled with cranelift (cache miss).
    pub compiled: u64,
    /// Components deserialized from the on-disk cache (cache hit).
    pub cache_hits: u64,
}

/// The shared state behind [`Runtime`](super::Runtime) and every pipeline.
pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    cache_dir: PathBuf,
    engine_hash: String,
    tick: Duration,
    max_output_bytes: usize,
    stop: Arc<AtomicBool>,
    ticker: Mutex<Option<JoinHandle<()>>>,
    compiled: AtomicU64,
    cache_hits: AtomicU64,
    /// One permit per instance the pool can hold; `Pipeline::run` waits
    /// for one instead of failing when the pool is busy.
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

/// Feeds `std::hash::Hash` output into BLAKE3, so the engine's compatibility
/// hash is stable across builds of the same wasmtime (unlike `DefaultHasher`).
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        let h = self.0.finalize();
        u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap())
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl RuntimeInner {
    pub(crate) fn new(
        cache_dir: PathBuf,
        opts: RuntimeOptions,
    ) -> Result<Arc<RuntimeInner>, RuntimeError> {
        std::fs::create_dir_all(&cache_dir).map_err(|source| RuntimeError::CacheDir {
            path: cache_dir.clone(),
            source,
        })?;

        let n = opts.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            // A Rust wasm32-wasip2 component has a handful of core instances
            // (main module, WASI adapter, shims) and one or two memories.
            .total_core_instances(n * 16)
            .max_core_instances_per_component(64)
            .total_memories(n * 2)
            .max_memories_per_component(4)
            .max_memories_per_module(1)
            .total_tables(n * 8)
            // One fiber stack per concurrent async call.
            .total_stacks(n)
            .max_tables_per_component(16)
            .max_tables_per_module(4)
            // The upper bound of memory_limit_mb; the per-stage cap is
            // enforced by the store's limiter.
            .max_memory_size(4096 << 20)
            // Reset small memories/tables with memset instead of madvise on
            // reuse: cheaper for the typical stage that touches little.
            .linear_memory_keep_resident(opts.keep_resident_bytes)
            .table_keep_resident(opts.keep_resident_bytes.min(1 << 16));

        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .parallel_compilation(true);
        let engine = Engine::new(&cfg).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;

        let mut h = Blake3Hasher(blake3::Hasher::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        let engine_hash = h.0.finalize().to_hex()[..16].to_string();

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError::Linker(format!("{e:#}")))?;
        bindings::add_to_linker(&mut linker).map_err(|e| RuntimeError::Linker(format!("{e:#}")))?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            let tick = opts.epoch_tick;
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch thread: {e}")))?
        };

        Ok(Arc::new(RuntimeInner {
            engine,
            linker,
            cache_dir,
            engine_hash,
            tick: opts.epoch_tick,
            max_output_bytes: opts.max_output_bytes,
            stop,
            ticker: Mutex::new(Some(ticker)),
            compiled: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            permits: Arc::new(tokio::sync::Semaphore::new(n as usize)),
        }))
    }

    pub(crate) fn stats(&self) -> LoadStats {
        LoadStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Loads a component: from the compile cache when a matching artefact
    /// exists, else compiles it and stores the artefact (temp + rename).
    /// Returns the component, the file's BLAKE3 hex and whether it was cached.
    pub(crate) fn load_component(&self, path: &Path) -> Result<(Component, String, bool), String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        check_header(&bytes)?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let cached = self
            .cache_dir
            .join(format!("{hash}-{}.cwasm", self.engine_hash));
        if cached.is_file() {
            // SAFETY: the cache directory is written only by this host, with
            // artefacts produced by `Component::serialize` of an engine with
            // the same compatibility hash (part of the file name); wasmtime
            // additionally checks the artefact's header and engine settings.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(c) => {
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok((c, hash, true));
                }
                Err(e) => {
                    tracing::warn!(file = %cached.display(), error = %e, "discarding unusable compiled component");
                    let _ = std::fs::remove_file(&cached);
                }
            }
        }
        let component = Component::new(&self.engine, &bytes)
            .map_err(|e| format!("not a valid WebAssembly component: {}", chain(&e)))?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        match component.serialize() {
            Ok(art) => {
                if let Err(e) = write_atomic(&cached, &art) {
                    tracing::warn!(file = %cached.display(), error = %e, "cannot write compiled component to cache");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize compiled component"),
        }
        Ok((component, hash, false))
    }

    /// Checks a component against the world and pre-instantiates it. Both a
    /// missing export and an unsatisfied import are reported if both occur.
    pub(crate) fn prepare(&self, component: &Component) -> Result<StagePre, String> {
        let version = bindings::detect(component, &self.engine);
        let pre = bindings::check_imports(component, &self.engine).and_then(|()| {
            self.linker.instantiate_pre(component).map_err(
                |e| // The outermost message names the import; the causes
                // below it only add noise.
                format!("imports something the host does not provide: {e}"),
            )
        });
        match (version, pre) {
            (Ok(version), Ok(pre)) => StagePre::new(version, pre).map_err(|e| {
                format!(
                    "does not implement world `lumilio:pipeline/stage@{version}`: {}",
                    chain(&e)
                )
            }),
            (Err(export), Err(import)) => Err(format!("{export}; and it {import}")),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        }
    }

    /// Runs one call of one stage in a fresh store, under its limits.
    ///
    /// Two guards enforce `timeout_ms`: the epoch deadline traps wasm code
    /// that runs past it (checked on loop back-edges and function entries),
    /// and a `tokio` timeout drops the call (cancelling its fiber) if the
    /// guest is blocked in a host call, e.g. sleeping through `wasi:io/poll`.
    /// Must be polled on a tokio runtime (timers, WASI's async host calls).
    pub(crate) async fn call(
        &self,
        stage: &PreparedStage,
        asset: &AssetFacts,
        bytes: &[u8],
        facts: &[(String, FactValue)],
    ) -> CallResult {
        let spec = &stage.spec;
        let stderr = CapturePipe::new(self.max_output_bytes);
        let stdout = CapturePipe::new(self.max_output_bytes);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (k, v) in &stage.env {
            wasi.env(k, v);
        }
        for dir in &spec.read_only_dirs {
            let guest = dir.to_string_lossy();
            if let Err(e) = wasi.preopened_dir(dir, guest.as_ref(), FsPerms::ReadOnly) {
                return CallResult::failed(StageError::Host {
                    stage: spec.name.clone(),
                    message: format!("cannot open read_only_dirs entry {}: {e}", dir.display()),
                });
            }
        }
        let limit_bytes = (spec.memory_limit_mb as usize) << 20;
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: limit_bytes,
                used: 0,
                exceeded: false,
            },
            stage: stage.spec.name.clone(),
            asset_id: asset.id.clone(),
            log_lines: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let tick_ms = self.tick.as_millis().max(1) as u64;
        store.set_epoch_deadline(spec.timeout_ms.div_ceil(tick_ms) + 1);
        store.epoch_deadline_trap();

        let started = Instant::now();
        // The epoch trap normally fires first; the timer is a backstop with
        // one tick of grace.
        let limit = Duration::from_millis(spec.timeout_ms) + self.tick;
        let call = stage
            .pre
            .call(&mut store, asset, bytes, &spec.config, facts);
        let result = match tokio::time::timeout(limit, call).await {
            Ok(r) => r,
            Err(_elapsed) => Err(wasmtime::Error::new(Trap::Interrupt)),
        };
        let duration = started.elapsed();

        let out = stdout.text();
        if !out.trim().is_empty() {
            tracing::debug!(stage = %spec.name, asset = %asset.id, stdout = %out.trim_end(), "stage stdout");
        }
        let err_text = stderr.text();
        let outcome = match result {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(GuestError::Rejected(reason))) => Err(CallFailure::Rejected(reason)),
            Ok(Err(GuestError::Failed(reason))) => Err(CallFailure::Error(StageError::Failed {
                stage: spec.name.clone(),
                reason,
            })),
            Err(e) => Err(CallFailure::Error(classify(
                &e,
                spec,
                store.data().limiter.exceeded,
                err_text.clone(),
            ))),
        };
        if !err_text.trim().is_empty() && outcome.is_ok() {
            tracing::debug!(stage = %spec.name, asset = %asset.id, stderr = %err_text.trim_end(), "stage stderr");
        }
        CallResult { duration, outcome }
    }
}

/// A stage that passed every check: its spec, bindings and snapshot of the
/// environment it was granted.
pub(crate) struct PreparedStage {
    pub(crate) spec: StageSpec,
    pub(crate) pre: StagePre,
    pub(crate) env: Vec<(String, String)>,
}

/// What went wrong in one call.
pub(crate) enum CallFailure {
    /// The stage returned `rejected`.
    Rejected(String),
    /// Anything else.
    Error(StageError),
}

/// The result of one call of one stage.
pub(crate) struct CallResult {
    pub(crate) duration: Duration,
    pub(crate) outcome: Result<StageOutput, CallFailure>,
}

impl CallResult {
    fn failed(e: StageError) -> CallResult {
        CallResult {
            duration: Duration::ZERO,
            outcome: Err(CallFailure::Error(e)),
        }
    }
}

/// Turns a wasmtime error from instantiate/call into a [`StageError`].
fn classify(e: &wasmtime::Error, spec: &StageSpec, oom: bool, stderr: String) -> StageError {
    let stage = spec.name.clone();
    if oom || e.downcast_ref::<MemoryCapExceeded>().is_some() {
        return StageError::OutOfMemory {
            stage,
            limit_mb: spec.memory_limit_mb,
        };
    }
    let trap = e.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) {
        return StageError::Timeout {
            stage,
            limit_ms: spec.timeout_ms,
        };
    }
    if let Some(message) = panic_message(&stderr) {
        return StageError::Panic {
            stage,
            message,
            stderr,
        };
    }
    let message = match trap {
        Some(t) => t.to_string(),
        None => chain(e),
    };
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return StageError::Host { stage, message };
    }
    StageError::Trap {
        stage,
        message,
        stderr,
    }
}

/// Extracts the panic message from a Rust guest's stderr: the text after
/// `panicked at FILE:LINE:COL:` (current format) or inside
/// `panicked at 'MESSAGE', FILE` (old format).
pub(crate) fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.find("panicked at ")? + "panicked at ".len();
    let rest = &stderr[start..];
    if let Some(old) = rest.strip_prefix('\'')
        && let Some(end) = old.rfind("', ")
    {
        return Some(old[..end].to_string());
    }
    let (loc_line, after) = rest.split_once('\n').unwrap_or((rest, ""));
    // `src/lib.rs:10:5:` alone on its line, message on the following lines.
    let inline = loc_line
        .trim_end()
        .strip_suffix(':')
        .map(|_| "")
        .unwrap_or_else(|| {
            // `src/lib.rs:10:5: message` on one line.
            loc_line.splitn(4, ':').nth(3).map(str::trim).unwrap_or("")
        });
    let mut lines: Vec<&str> = Vec::new();
    if !inline.is_empty() {
        lines.push(inline);
    }
    for l in after.lines() {
        if l.starts_with("note: ") || l.starts_with("stack backtrace:") || l.starts_with("thread '")
        {
            break;
        }
        lines.push(l);
    }
    let msg = lines.join("\n").trim().to_string();
    if msg.is_empty() { None } else { Some(msg) }
}

/// `error: cause: root cause`, one line.
pub(crate) fn chain(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly file (no \\0asm header)".into());
    }
    // Core modules have layer 0 (bytes 6..8), components layer 1.
    if bytes[6..8] == [0, 0] {
        return Err(
            "is a core WebAssembly module, not a component (build the plugin with \
                    `--target wasm32-wasip2`)"
                .into(),
        );
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{}.{}.{nanos}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artefact"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

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
    limiter: MemoryLimiter,
    stage: String,
    asset_id: String,
    log_lines: u32,
}

/// Log lines a single call may write through `host.log`; later ones are dropped.
const MAX_LOG_LINES: u32 = 1000;
/// Longest message passed on from `host.log`.
const MAX_LOG_BYTES: usize = 4096;

impl HostState {
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
