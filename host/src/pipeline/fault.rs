//! Fault classification: what a wasmtime error from instantiate or call
//! means for the stage (out of memory, timeout, panic, trap, host problem),
//! with the guest's panic message pulled from its stderr.

use wasmtime::Trap;

use super::config::StageSpec;
use super::error::StageError;
use super::host_state::MemoryCapExceeded;

/// Turns a wasmtime error from instantiate/call into a [`StageError`].
pub(super) fn classify(e: &wasmtime::Error, spec: &StageSpec, oom: bool, stderr: String) -> StageError {
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
