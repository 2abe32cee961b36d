//! `validate`: the first pipeline stage. It recognises the image format by
//! magic bytes (JPEG, PNG, WebP, GIF, TIFF, HEIC/HEIF, AVIF), reads the
//! dimensions from the headers only, and rejects oversize files, decompression
//! bombs (too many pixels) and truncated or corrupt files before any later
//! stage decodes them.
//!
//! Facts: `content_type` (text), `width`, `height` (integer, as stored, before
//! EXIF orientation). Config: `max_pixels` (default 100_000_000) and
//! `max_bytes` (default 512 MiB).
//!
//! The logic is plain Rust ([`run`]); the WIT glue lives in `wasm.rs` and only
//! compiles for wasm32.

pub mod formats;
pub mod stage;

#[cfg(target_arch = "wasm32")]
mod wasm;

use formats::{Format, SUPPORTED};
use stage::{Fact, Input, Output, StageError};

/// Default limit on width × height.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;
/// Default limit on the file size (512 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;

/// The stage's settings, from its `config` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted width × height.
    pub max_pixels: u64,
    /// Largest accepted file size in bytes.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// What validation learned about an accepted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// The detected format.
    pub format: Format,
    /// Stored width in pixels.
    pub width: u32,
    /// Stored height in pixels.
    pub height: u32,
}

/// Parses the config pairs; unknown keys are returned as log notes.
pub fn parse_config(config: &[(String, String)]) -> Result<(Limits, Vec<String>), String> {
    let mut limits = Limits::default();
    let mut notes = Vec::new();
    for (k, v) in config {
        match k.as_str() {
            "max_pixels" => limits.max_pixels = parse_positive(k, v)?,
            "max_bytes" => limits.max_bytes = parse_positive(k, v)?,
            _ => notes.push(format!("validate: ignoring unknown config key '{k}'")),
        }
    }
    Ok((limits, notes))
}

/// Parses a positive TOML integer (underscores allowed).
fn parse_positive(key: &str, v: &str) -> Result<u64, String> {
    let clean: String = v
        .trim()
        .trim_matches('"')
        .chars()
        .filter(|&c| c != '_')
        .collect();
    match clean.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "validate: config {key} = {v:?} is not a positive whole number"
        )),
    }
}

/// Checks `bytes` against `limits`; `Err` is the human reason for rejection.
pub fn validate(bytes: &[u8], limits: &Limits) -> Result<Info, String> {
    let len = bytes.len() as u64;
    if len > limits.max_bytes {
        return Err(format!(
            "the file is too large: {} bytes, over the limit of {} bytes",
            len, limits.max_bytes
        ));
    }
    let Some(format) = formats::detect(bytes) else {
        return Err(format!(
            "not a supported image (detected: {}); supported: {SUPPORTED}",
            formats::describe_unknown(bytes)
        ));
    };
    let name = format.name();
    let dims = formats::dimensions(format, bytes).map_err(|e| format!("the {name} file {e}"))?;
    // The pixel limit is checked before anything else reads further into the
    // file, so a header claiming 100000x100000 costs nothing.
    let pixels = dims.width as u64 * dims.height as u64;
    if pixels > limits.max_pixels {
        return Err(format!(
            "the image is too large: {}x{} is {} pixels, over the limit of {} pixels",
            dims.width, dims.height, pixels, limits.max_pixels
        ));
    }
    formats::integrity(format, bytes).map_err(|e| format!("the {name} file {e}"))?;
    Ok(Info {
        format,
        width: dims.width,
        height: dims.height,
    })
}

/// The stage entry point in plain Rust: the WASM glue calls this, and so can
/// native benchmarks and tests.
pub fn run(input: &Input<'_>) -> Result<Output, StageError> {
    let (limits, log) = parse_config(input.config).map_err(StageError::Failed)?;
    let info = validate(input.bytes, &limits).map_err(StageError::Rejected)?;
    let mime = info.format.mime();
    let mut warnings = Vec::new();
    let claimed = input
        .claimed_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // Clients often send application/octet-stream; only flag a real mismatch.
    let same = claimed == mime
        || (claimed == "image/jpg" && mime == "image/jpeg")
        || (claimed == "image/heif" && mime == "image/heic")
        || (claimed == "image/heic" && mime == "image/heif");
    if claimed.starts_with("image/") && !same {
        warnings.push(format!("the upload said {claimed}, but the file is {mime}"));
    }
    Ok(Output {
        facts: vec![
            Fact::text("content_type", mime),
            Fact::int("width", info.width as i64),
            Fact::int("height", info.height as i64),
        ],
        warnings,
        log,
    })
}
