//! The on-disk compile cache: a component's artefact is keyed by the wasm
//! file's BLAKE3 hash and the engine's compatibility hash, written with temp +
//! rename so a crash never leaves a torn artefact.

use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine::RuntimeInner;
use super::fault::chain;

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

/// Names the revision of the vendored code generator's patch; change it with the patch.
const CODEGEN_PATCH: &str = "epoch-check-preserve-all-1,zero-shuffles-1";

/// The engine's compatibility hash, 16 hex digits: part of every artefact's name.
pub(super) fn engine_hash(engine: &Engine) -> String {
    let mut h = Blake3Hasher(blake3::Hasher::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    // wasmtime's hash does not see our patch of its code generator
    // (host/vendor/wasmtime-internal-cranelift): artefacts compiled before a
    // patch changed are compiled again rather than served with the old code.
    std::hash::Hash::hash(CODEGEN_PATCH, &mut h);
    h.0.finalize().to_hex()[..16].to_string()
}

impl RuntimeInner {
    /// Where the compiled artefact of the component with BLAKE3 hex `hash` is cached.
    pub(crate) fn artefact_path(&self, hash: &str) -> PathBuf {
        self.cache_dir()
            .join(format!("{hash}-{}.cwasm", self.engine_hash()))
    }

    /// Loads a component: from the compile cache when a matching artefact
    /// exists, else compiles it and stores the artefact (temp + rename).
    /// Returns the component, the file's BLAKE3 hex and whether it was cached.
    pub(crate) fn load_component(&self, path: &Path) -> Result<(Component, String, bool), String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        check_header(&bytes)?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let cached = self.artefact_path(&hash);
        if cached.is_file() {
            // `perf` names code in a file-backed mapping from that file's
            // symbols (mangled), and only code in anonymous memory from the
            // perf map: with `perf_map`, the artefact is read, not mapped.
            // SAFETY (both): the cache directory is written only by this host,
            // with artefacts produced by `Component::serialize` of an engine
            // with the same compatibility hash (part of the file name); wasmtime
            // additionally checks the artefact's header and engine settings.
            let loaded = if self.perf_map {
                std::fs::read(&cached)
                    .map_err(wasmtime::Error::from)
                    .and_then(|art| unsafe { Component::deserialize(&self.engine, art) })
            } else {
                unsafe { Component::deserialize_file(&self.engine, &cached) }
            };
            match loaded {
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
