//! `validate`: the first pipeline stage. It recognises the image format by
//! magic bytes (JPEG, PNG, WebP, GIF, TIFF, HEIC/HEIF, AVIF), reads the
//! dimensions from the headers only, and rejects oversize files, decompression
//! bombs (too many pixels) and truncated or corrupt files before any later
//! stage decodes them.
//!
//! Facts: `content_type` (text), `width`, `height` (integer, as stored, before
//! EXIF orientation; for HEIF/AVIF after the container's `irot`, which is part
//! of the image). Config: `max_pixels` (default 100_000_000) and
//! `max_bytes` (default 512 MiB).
//!
//! Written on `lumilio_sdk`: [`run`] is plain Rust, called natively by the
//! tests and through `export_stage!` in the component.

pub mod formats;

use formats::{Format, SUPPORTED};
use lumilio_sdk::{Config, ConfigError, Fact, Input, Output, StageError, export_stage, log};

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

/// Reads the limits from the stage's config; unknown keys are logged.
pub fn parse_config(config: &Config) -> Result<Limits, ConfigError> {
    const KEYS: [&str; 2] = ["max_pixels", "max_bytes"];
    for k in config.unknown_keys(&KEYS) {
        log::info(format!("ignoring unknown config key '{k}'"));
    }
    let d = Limits::default();
    Ok(Limits {
        max_pixels: config.get_in("max_pixels", 1..)?.unwrap_or(d.max_pixels),
        max_bytes: config.get_in("max_bytes", 1..)?.unwrap_or(d.max_bytes),
    })
}

/// Bytes at the start of a file that [`screen`] needs: every format's magic
/// (an ISO-BMFF `ftyp` box is read up to this far).
pub const HEAD: usize = 4096;

/// The checks that need only the file's size and its first [`HEAD`] bytes:
/// its size against the limit, and a supported format. `Err` is the reason.
pub fn screen(len: u64, head: &[u8], limits: &Limits) -> Result<Format, String> {
    if len > limits.max_bytes {
        return Err(format!(
            "the file is too large: {} bytes, over the limit of {} bytes",
            len, limits.max_bytes
        ));
    }
    formats::detect(head).ok_or_else(|| {
        format!(
            "not a supported image (detected: {}); supported: {SUPPORTED}",
            formats::describe_unknown(head)
        )
    })
}

/// Checks `bytes` against `limits`; `Err` is the human reason for rejection.
pub fn validate(bytes: &[u8], limits: &Limits) -> Result<Info, String> {
    let format = screen(bytes.len() as u64, &bytes[..bytes.len().min(HEAD)], limits)?;
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

/// The stage entry point: the component calls it through `export_stage!`,
/// and so can native benchmarks and tests.
pub fn run(input: &Input) -> Result<Output, StageError> {
    let limits = parse_config(&input.config)?;
    // A file that is too large or not an image is turned away on its first
    // bytes, without copying the rest of it into the stage.
    screen(input.asset.size, &input.read_at(0, HEAD), &limits).map_err(StageError::Rejected)?;
    let info = validate(input.bytes(), &limits).map_err(StageError::Rejected)?;
    let mime = info.format.mime();
    let mut warnings = Vec::new();
    let claimed = input
        .asset
        .content_type
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
        renditions: Vec::new(),
        warnings,
    })
}

export_stage!(run);
