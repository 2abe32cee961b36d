//! The wasmtime engine: one [`Engine`] per process with the pooling
//! allocator, the epoch ticker thread for deadlines, the shared [`Linker`],
//! checking a component against the world, and running one stage call in a
//! fresh [`Store`] under its limits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::bindings::{self, GuestError, StagePre};
use super::capture::CapturePipe;
use super::config::StageSpec;
use super::error::{RuntimeError, StageError};
use super::fault::{chain, classify};
use super::host_state::HostState;
use super::{AssetFacts, FactValue, StageFile, StageOutput};

/// The process-wide WebAssembly runtime: engine, pooling allocator, epoch
/// ticker and compile cache. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

impl Runtime {
    /// Creates the runtime with default options, caching compiled components
    /// in `cache_dir` (created if missing).
    pub fn new(cache_dir: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        Self::with_options(cache_dir, RuntimeOptions::default())
    }

    /// Creates the runtime with explicit [`RuntimeOptions`].
    pub fn with_options(
        cache_dir: impl Into<PathBuf>,
        options: RuntimeOptions,
    ) -> Result<Self, RuntimeError> {
        Ok(Runtime {
            inner: RuntimeInner::new(cache_dir.into(), options)?,
        })
    }

    /// How many components this runtime compiled and how many it took from the cache.
    pub fn load_stats(&self) -> LoadStats {
        self.inner.stats()
    }

    /// The compile cache directory.
    pub fn cache_dir(&self) -> &Path {
        self.inner.cache_dir()
    }

    /// The shared state pipelines and single runs call through.
    pub(crate) fn inner(&self) -> &Arc<RuntimeInner> {
        &self.inner
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache_dir", &self.inner.cache_dir())
            .finish()
    }
}

/// Tunables of a [`Runtime`]; [`Default`] suits a small server.
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
    /// Ask Linux for transparent huge pages (`MADV_HUGEPAGE`) on the pool's
    /// linear-memory reservation, so a guest's fresh heap faults in 2 MiB at a
    /// time instead of 4 KiB: on a 2-core VM, 64 MiB of fresh 4 KiB pages cost
    /// 30–50 ms of CPU against 7–9 ms as huge pages, and a thumbnail call
    /// touches about that much. Costs: a touched 2 MiB region is resident
    /// whole while the call runs (at most 2 MiB per memory beyond what the
    /// guest touched, given back on reset as before), and a fault may compact
    /// memory when no huge page is free (the kernel's `defrag` setting); a
    /// stage whose heap is touched sparsely pays 2 MiB of zeroing per region
    /// (bench-plugins' Python stage: 4.2–4.5 ms → 4.9–5.1 ms a call; the
    /// repository's four stages were as fast or faster). Only matters where
    /// THP is `madvise` (with `always` it is the default anyway; with `never`,
    /// or off Linux, it does nothing).
    pub huge_pages: bool,
    /// Compile the checks that enforce `timeout_ms` on running wasm code
    /// (epoch interruption: a load and a compare on every loop back-edge and
    /// function entry). Off only to measure what they cost (bench-plugins
    /// 3b'): without them a stage that loops never ends.
    pub deadline_checks: bool,
    /// Append each compiled function's address and name to
    /// `/tmp/perf-PID.map`, so `perf report` names a stage's own functions
    /// instead of showing bare addresses (`lumilio plugin run --perf-map`);
    /// cached code is then read into memory rather than mapped from its file,
    /// which `perf` would name it from instead. Off by default: the file
    /// grows with every component loaded.
    pub perf_map: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            max_instances: 64,
            epoch_tick: Duration::from_millis(10),
            max_output_bytes: 256 * 1024,
            keep_resident_bytes: 0,
            huge_pages: true,
            deadline_checks: true,
            perf_map: false,
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

/// The shared state behind [`Runtime`] and every pipeline.
pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    cache_dir: PathBuf,
    engine_hash: String,
    tick: Duration,
    max_output_bytes: usize,
    /// [`RuntimeOptions::perf_map`]: also load cached code into anonymous memory.
    pub(super) perf_map: bool,
    stop: Arc<AtomicBool>,
    ticker: Mutex<Option<JoinHandle<()>>>,
    pub(super) compiled: AtomicU64,
    pub(super) cache_hits: AtomicU64,
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

/// A reservation this large is the memory pool's (4 GiB + guard per slot).
const POOL_MIN_BYTES: usize = 1 << 32;

/// The process's inaccessible private anonymous mappings of at least
/// [`POOL_MIN_BYTES`], as `(start, end)` (empty off Linux or if unreadable).
fn reservations() -> Vec<(usize, usize)> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, perms, inode) = (f.next()?, f.next()?, f.nth(2)?);
            // A path after the inode means a file or a named region.
            if perms != "---p" || inode != "0" || f.next().is_some() {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let (a, b) = (
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            );
            (b.saturating_sub(a) >= POOL_MIN_BYTES).then_some((a, b))
        })
        .collect()
}

/// Marks the reservations made since `before` `MADV_HUGEPAGE`. The flag
/// stays on the range through wasmtime's `mprotect` and `MADV_DONTNEED`;
/// a failure only costs speed, so it is logged, not returned.
fn advise_huge_pages(before: &[(usize, usize)]) {
    let new: Vec<_> = reservations()
        .into_iter()
        .filter(|r| !before.contains(r))
        .collect();
    if new.is_empty() {
        tracing::debug!("no memory pool reservation found; huge pages not requested");
    }
    for (a, b) in new {
        #[cfg(target_os = "linux")]
        // SAFETY: advice only; the range is a mapping of this process that
        // nothing reads yet, and MADV_HUGEPAGE does not change its contents.
        let rc = unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        #[cfg(not(target_os = "linux"))]
        let rc = 0;
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "MADV_HUGEPAGE on the memory pool failed"
            );
        }
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
            .epoch_interruption(opts.deadline_checks)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .parallel_compilation(true);
        if opts.perf_map {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        // The pooling allocator reserves every slot's address space in
        // `Engine::new`; wasmtime does not expose where, so the new large
        // inaccessible mappings it leaves are the reservation.
        let before = opts.huge_pages.then(reservations);
        let engine = Engine::new(&cfg).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        if let Some(before) = before {
            advise_huge_pages(&before);
        }

        let engine_hash = super::cache::engine_hash(&engine);

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
            perf_map: opts.perf_map,
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

    /// The engine's compatibility hash, part of every cached artefact's name.
    pub(super) fn engine_hash(&self) -> &str {
        &self.engine_hash
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
        file: &StageFile,
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
        let state = HostState::new(
            wasi.build(),
            limit_bytes,
            stage.spec.name.clone(),
            asset.id.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let tick_ms = self.tick.as_millis().max(1) as u64;
        store.set_epoch_deadline(spec.timeout_ms.div_ceil(tick_ms) + 1);
        store.epoch_deadline_trap();

        let started = Instant::now();
        let cpu_before = crate::telemetry::thread_cpu();
        // The epoch trap normally fires first; the timer is a backstop with
        // one tick of grace.
        let limit = Duration::from_millis(spec.timeout_ms) + self.tick;
        let call = stage
            .pre
            .call(&mut store, asset, file, &spec.config, facts);
        let result = match tokio::time::timeout(limit, call).await {
            Ok(r) => r,
            Err(_elapsed) => Err(wasmtime::Error::new(Trap::Interrupt)),
        };
        let duration = started.elapsed();
        let bytes_read = store.data().bytes_read;
        record_phases(&spec.name, duration, store.data().instantiated_in, cpu_before);

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
                store.data().memory_exceeded(),
                err_text.clone(),
            ))),
        };
        if !err_text.trim().is_empty() && outcome.is_ok() {
            tracing::debug!(stage = %spec.name, asset = %asset.id, stderr = %err_text.trim_end(), "stage stderr");
        }
        CallResult {
            duration,
            bytes_read,
            outcome,
        }
    }
}

/// Adds one call to the stage's phase totals ([`crate::telemetry`]): its wall
/// time, the part of it spent instantiating, and this thread's CPU time over
/// the call (the call runs on one thread from start to end).
fn record_phases(stage: &str, wall: Duration, instantiate: Duration, cpu_before: Option<Duration>) {
    use crate::telemetry::{record, thread_cpu};
    record(&format!("stage.{stage}.call"), wall);
    record(&format!("stage.{stage}.instantiate"), instantiate);
    if let (Some(before), Some(after)) = (cpu_before, thread_cpu()) {
        record(&format!("stage.{stage}.cpu"), after.saturating_sub(before));
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
    /// Bytes of the asset copied into the guest.
    pub(crate) bytes_read: u64,
    pub(crate) outcome: Result<StageOutput, CallFailure>,
}

impl CallResult {
    fn failed(e: StageError) -> CallResult {
        CallResult {
            duration: Duration::ZERO,
            bytes_read: 0,
            outcome: Err(CallFailure::Error(e)),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// `VmFlags` of each mapping in `/proc/self/smaps` starting at one of `starts`.
    fn vm_flags(starts: &[usize]) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut out = Vec::new();
        let mut current = false;
        for line in smaps.lines() {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                if current {
                    out.push(flags.trim().to_string());
                }
            } else if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, _)) = range.split_once('-') {
                    if let Ok(a) = usize::from_str_radix(a, 16) {
                        current = starts.contains(&a);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn huge_pages_mark_the_memory_pool() {
        let before = reservations();
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::with_options(
            dir.path(),
            RuntimeOptions {
                max_instances: 2,
                ..RuntimeOptions::default()
            },
        )
        .unwrap();
        let new: Vec<usize> = reservations()
            .into_iter()
            .filter(|r| !before.contains(r))
            .map(|r| r.0)
            .collect();
        assert!(!new.is_empty(), "no memory pool reservation appeared");
        let flags = vm_flags(&new);
        assert!(!flags.is_empty(), "{new:x?} not in smaps");
        // Another test's runtime made meanwhile may be among them, and not
        // advised yet: ours must be, so at least one carries the flag.
        assert!(
            flags.iter().any(|f| f.split(' ').any(|x| x == "hg")),
            "no MADV_HUGEPAGE (VmFlags `hg`) on {new:x?}: {flags:?}"
        );
        drop(rt);
    }
}
