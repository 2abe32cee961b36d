//! `thumbnail`: decodes each photo once and writes every configured rendition
//! as a JPEG: bounding-box thumbnails (`small` 400, `medium` 800, `large`
//! 1920; never upscaled) and `clip`, a 224×224 centre crop for the CLIP
//! embedder. EXIF orientation is applied, so renditions are upright.
//!
//! JPEGs are decoded at the smallest N/8 scale (N = 1..=8) in the IDCT that
//! still covers the largest rendition (`jpeg-decoder`'s `Decoder::scale`; the
//! vendored copy in `vendor/jpeg-decoder` adds the N = 3, 5, 6, 7 IDCTs),
//! which is what makes this fast; PNG, GIF, WebP and TIFF go through the `image` crate. Resizing
//! uses `fast_image_resize` (Catmull-Rom; SIMD128 in WASM). HEIC/HEIF go
//! through `heifer` and are converted to sRGB ([`heic`]); AVIF cannot be
//! decoded yet. Config keys are documented in this crate's README.md.
//!
//! Written on `lumilio_sdk`: [`thumbnails`] and [`run`] are plain Rust, called
//! natively by the tests and through `export_stage!` in the component.

pub mod heic;
pub mod orient;
mod ycbcr;

use std::time::{Duration, Instant};

use fast_image_resize::{self as fr, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image};
use lumilio_sdk::{ConfigError, Fact, Input, Output, Rendition, StageError, export_stage, log};
use orient::Rgb;

/// How a rendition is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Fit inside a `n`×`n` box, keeping the aspect ratio; never upscale.
    Fit(u32),
    /// Scale the shorter side to `n`, then crop the centre `n`×`n`.
    Square(u32),
}

/// One rendition to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Rendition name, e.g. `small`.
    pub name: String,
    /// Its size rule.
    pub kind: Kind,
}

/// The stage's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Renditions in output order.
    pub renditions: Vec<Spec>,
    /// JPEG quality, 1–100.
    pub quality: u8,
    /// Reject (true) or only warn (false) when the format cannot be decoded.
    pub reject_unsupported: bool,
    /// Return the time of each phase as facts (`thumbnail_ms_<phase>`), for benchmarks.
    pub phase_timings: bool,
    /// Resize smaller renditions from a larger one already made (see [`CASCADE_FACTOR`])
    /// instead of each from the full decode; off only to compare the two in tests.
    pub cascade: bool,
    /// Decode JPEGs at any N/8 scale (N = 1..=8); off restricts it to 1/8, 1/4,
    /// 1/2 and 1/1 (upstream jpeg-decoder's), only to compare the two in tests.
    pub all_dct_scales: bool,
}

impl Default for Config {
    fn default() -> Self {
        let spec = |name: &str, kind| Spec {
            name: name.into(),
            kind,
        };
        Config {
            renditions: vec![
                spec("small", Kind::Fit(400)),
                spec("medium", Kind::Fit(800)),
                spec("large", Kind::Fit(1920)),
                spec("clip", Kind::Square(224)),
            ],
            quality: 80,
            reject_unsupported: true,
            phase_timings: false,
            cascade: true,
            all_dct_scales: true,
        }
    }
}

/// Reads the settings from the stage's config over the defaults; unknown
/// keys are logged. A size of 0 turns a rendition off.
pub fn parse_config(pairs: &lumilio_sdk::Config) -> Result<Config, ConfigError> {
    const SIZES: [&str; 4] = ["small", "medium", "large", "clip"];
    for k in pairs.unknown_keys(&[&SIZES[..], &["quality", "unsupported", "phase_timings"]].concat()) {
        log::info(format!("ignoring unknown config key '{k}'"));
    }
    let mut c = Config::default();
    for name in SIZES {
        let Some(n) = pairs.get_in::<u32, _>(name, 0..=16384)? else {
            continue;
        };
        let i = c
            .renditions
            .iter()
            .position(|s| s.name == name)
            .expect("default renditions");
        if n == 0 {
            c.renditions.remove(i);
        } else {
            c.renditions[i].kind = if name == "clip" {
                Kind::Square(n)
            } else {
                Kind::Fit(n)
            };
        }
    }
    c.quality = pairs.get_in("quality", 1..=100)?.unwrap_or(c.quality);
    if let Some(u) = pairs.choice("unsupported", &["reject", "skip"])? {
        c.reject_unsupported = u == "reject";
    }
    c.phase_timings = pairs.get_or("phase_timings", false)?;
    Ok(c)
}

/// One produced rendition before it becomes a stage [`Rendition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumb {
    /// Rendition name.
    pub name: String,
    /// Width after orientation.
    pub width: u32,
    /// Height after orientation.
    pub height: u32,
    /// JPEG bytes.
    pub jpeg: Vec<u8>,
}

/// The result of [`thumbnails`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnails {
    /// The renditions, in config order.
    pub thumbs: Vec<Thumb>,
    /// The DCT scale the JPEG was decoded at, e.g. `1/8` (`1/1` for others).
    pub source_scale: String,
    /// The orientation that was applied (1 = none).
    pub orientation: u8,
    /// Things the renditions do not reflect (e.g. colours left as coded).
    pub warnings: Vec<String>,
    /// Where the time went, in the order the phases ran.
    pub phases: Vec<Phase>,
}

/// The time one phase of [`thumbnails`] took: `decode`, then per rendition
/// `resize NAME`, `orient NAME`, `colour NAME` (HEIF) and `encode NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// What ran, e.g. `encode small`.
    pub name: String,
    /// How long it took (wall time; the stage is single-threaded).
    pub time: Duration,
}

/// Runs `f`, recording its time as phase `name` (a no-op phase is still listed).
fn timed<T>(phases: &mut Vec<Phase>, name: impl Into<String>, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    phases.push(Phase {
        name: name.into(),
        time: start.elapsed(),
    });
    out
}

/// Why thumbnails could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThumbError {
    /// The format cannot be decoded here (e.g. AVIF).
    Unsupported(String),
    /// The file is damaged or not an image.
    Corrupt(String),
    /// Something broke that is not the file's fault.
    Internal(String),
}

/// Decodes `bytes` once and produces every rendition in `config`.
/// `orientation` overrides the file's own EXIF orientation when given.
pub fn thumbnails(
    bytes: &[u8],
    config: &Config,
    orientation: Option<u8>,
) -> Result<Thumbnails, ThumbError> {
    let mut phases = Vec::new();
    if heic::is_heif(bytes) {
        // Upright already (irot/imir); EXIF orientation must not be re-applied.
        let d = timed(&mut phases, "decode", || heic::decode(bytes))?;
        let mut t = render_all(&d.rgb, "1/1".into(), 1, config, d.colour.as_ref(), phases)?;
        t.warnings = d.warnings;
        return Ok(t);
    }
    let (orientation, decoded) = timed(&mut phases, "decode", || {
        let o = orientation
            .filter(|o| (1..=8).contains(o))
            .or_else(|| orient::exif_orientation(bytes))
            .unwrap_or(1);
        (o, decode(bytes, config))
    });
    let (src, scale) = decoded?;
    render_all(&src, scale, orientation, config, None, phases)
}

/// A smaller rendition is resized from a larger one already made when that
/// one is at least this many times its size (per side); else from the full
/// decode. At 2 the cascade stays within a fraction of a dB of resizing from
/// the full decode (tests/thumbnail.rs measures it) and saves most of the
/// resize time, which is proportional to the source's pixels.
pub const CASCADE_FACTOR: f64 = 2.0;

/// Renders, orients, converts colour (`colour`, HEIF) and encodes every
/// rendition of `config` from one decoded picture, largest first, so that a
/// smaller one can be resized from a larger one that is already upright and
/// in sRGB (see [`CASCADE_FACTOR`]). Thumbs come back in config order.
fn render_all(
    src: &Rgb,
    scale: String,
    orientation: u8,
    config: &Config,
    colour: Option<&heic::Colour>,
    mut phases: Vec<Phase>,
) -> Result<Thumbnails, ThumbError> {
    let (w, h) = (src.width, src.height);
    let specs = &config.renditions;
    // Each rendition's scale against the decode, before any crop.
    let scales: Vec<f64> = specs
        .iter()
        .map(|s| target(w, h, s.kind).0 as f64 / w as f64)
        .collect();
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by(|&a, &b| scales[b].total_cmp(&scales[a]));
    let swap = orientation >= 5;
    let mut resizer = Resizer::new();
    let mut thumbs: Vec<Option<Thumb>> = vec![None; specs.len()];
    // Finished (upright, sRGB) `Fit` renditions, kept as cascade sources.
    let mut made: Vec<(f64, (u32, u32), Rgb)> = Vec::new();
    for i in order {
        let spec = &specs[i];
        let (tw, th) = match spec.kind {
            Kind::Fit(_) => target(w, h, spec.kind),
            Kind::Square(n) => (n, n),
        };
        // The part of the decode this rendition shows, as (width, height)
        // fractions of it: all of it, or the centre square.
        let (fx, fy) = match spec.kind {
            Kind::Fit(_) => (1.0, 1.0),
            Kind::Square(_) => {
                let side = w.min(h) as f64;
                (side / w as f64, side / h as f64)
            }
        };
        let from = made
            .iter()
            .filter(|(s, _, _)| config.cascade && *s >= CASCADE_FACTOR * scales[i])
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let img = if let Some((_, (mw, mh), m)) = from {
            // Already upright and converted: resize only, in upright axes.
            let (cw, ch) = (*mw as f64 * fx, *mh as f64 * fy);
            let (tw, th, cw, ch) = if swap { (th, tw, ch, cw) } else { (tw, th, cw, ch) };
            timed(&mut phases, format!("resize {}", spec.name), || {
                resize(&mut resizer, m, (tw, th), (cw, ch))
            })?
        } else {
            let (cw, ch) = (w as f64 * fx, h as f64 * fy);
            let img = timed(&mut phases, format!("resize {}", spec.name), || {
                resize(&mut resizer, src, (tw, th), (cw, ch))
            })?;
            let mut img = timed(&mut phases, format!("orient {}", spec.name), || {
                orient::apply(img, orientation)
            });
            if let Some(c) = colour {
                timed(&mut phases, format!("colour {}", spec.name), || c.apply(&mut img))?;
            }
            img
        };
        let jpeg = timed(&mut phases, format!("encode {}", spec.name), || {
            encode(&img, config.quality)
        })?;
        thumbs[i] = Some(Thumb {
            name: spec.name.clone(),
            width: img.width,
            height: img.height,
            jpeg,
        });
        if let Kind::Fit(_) = spec.kind {
            made.push((scales[i], (tw, th), img));
        }
    }
    Ok(Thumbnails {
        thumbs: thumbs.into_iter().flatten().collect(),
        source_scale: scale,
        orientation,
        warnings: Vec::new(),
        phases,
    })
}

/// Output size of a rendition from a `w`×`h` source, before any crop.
fn target(w: u32, h: u32, kind: Kind) -> (u32, u32) {
    match kind {
        Kind::Fit(n) if w.max(h) <= n => (w, h),
        Kind::Fit(n) => {
            let s = n as f64 / w.max(h) as f64;
            (
                ((w as f64 * s).round() as u32).clamp(1, n),
                ((h as f64 * s).round() as u32).clamp(1, n),
            )
        }
        Kind::Square(n) => {
            let s = n as f64 / w.min(h) as f64;
            (
                ((w as f64 * s).round() as u32).max(n),
                ((h as f64 * s).round() as u32).max(n),
            )
        }
    }
}

/// Sniffs the format and decodes to RGB8, shrinking JPEGs in the IDCT as far
/// as the largest rendition allows. Returns the image and the scale used.
fn decode(bytes: &[u8], config: &Config) -> Result<(Rgb, String), ThumbError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return decode_jpeg(bytes, config);
    }
    let img = image::load_from_memory(bytes).map_err(|e| match e {
        image::ImageError::Unsupported(u) => {
            ThumbError::Unsupported(format!("thumbnails for this format are not supported: {u}"))
        }
        image::ImageError::Limits(l) => {
            ThumbError::Corrupt(format!("the image is too large to decode: {l}"))
        }
        other => ThumbError::Corrupt(format!("the image could not be decoded: {other}")),
    })?;
    let (w, h) = (img.width(), img.height());
    let data = if img.color().has_alpha() {
        // JPEG has no alpha: composite over white, as viewers show it.
        let rgba = img.into_rgba8();
        let mut out = Vec::with_capacity(w as usize * h as usize * 3);
        for p in rgba.pixels() {
            let a = p.0[3] as u32;
            for c in 0..3 {
                out.push(((p.0[c] as u32 * a + 255 * (255 - a) + 127) / 255) as u8);
            }
        }
        out
    } else {
        img.into_rgb8().into_raw()
    };
    Ok((
        Rgb {
            width: w,
            height: h,
            data,
        },
        "1/1".into(),
    ))
}

/// Largest JPEG (width × height) this stage decodes: validate's default
/// `max_pixels`. (Other formats are bounded by `image`'s allocation limit.)
pub const MAX_JPEG_PIXELS: u64 = 100_000_000;

fn decode_jpeg(bytes: &[u8], config: &Config) -> Result<(Rgb, String), ThumbError> {
    let corrupt =
        |e: jpeg_decoder::Error| ThumbError::Corrupt(format!("the JPEG could not be decoded: {e}"));
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    dec.read_info().map_err(corrupt)?;
    let info = dec
        .info()
        .ok_or_else(|| ThumbError::Corrupt("the JPEG has no frame header".into()))?;
    let (w, h) = (info.width as u32, info.height as u32);
    if w == 0 || h == 0 {
        return Err(ThumbError::Corrupt(
            "the JPEG declares an empty size".into(),
        ));
    }
    // A header claiming 65535x65535 over a few KB of data makes the decoder
    // grind through billions of pixels (over a minute natively). `validate`
    // rejects such files first, but this stage must not rely on that.
    if w as u64 * h as u64 > MAX_JPEG_PIXELS {
        return Err(ThumbError::Corrupt(format!(
            "the image is too large to decode: {w}x{h} is over {MAX_JPEG_PIXELS} pixels"
        )));
    }
    // The largest size any rendition needs, then the smallest IDCT scale
    // (k/8) that still covers it in both dimensions: e.g. 5/8 for a 3264-wide
    // photo and a 1920 rendition, where 4/8 (1632) would be too small.
    let (mut need_w, mut need_h) = (1, 1);
    for s in &config.renditions {
        let (tw, th) = target(w, h, s.kind);
        need_w = need_w.max(tw);
        need_h = need_h.max(th);
    }
    let scaled = |k: u32| ((w * k).div_ceil(8), (h * k).div_ceil(8));
    let k = (1..=8)
        .filter(|k| config.all_dct_scales || [1, 2, 4, 8].contains(k))
        .find(|&k| scaled(k).0 >= need_w && scaled(k).1 >= need_h)
        .unwrap_or(8);
    let (rw, rh) = scaled(k);
    dec.scale(
        rw.min(u16::MAX as u32) as u16,
        rh.min(u16::MAX as u32) as u16,
    )
    .map_err(corrupt)?;
    let pixels = dec.decode().map_err(corrupt)?;
    let info = dec
        .info()
        .ok_or_else(|| ThumbError::Internal("decoder lost its frame info".into()))?;
    let (dw, dh) = (info.width as u32, info.height as u32);
    let n = dw as usize * dh as usize;
    let data = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
        jpeg_decoder::PixelFormat::L16 => pixels
            .chunks_exact(2)
            .flat_map(|c| [c[0], c[0], c[0]])
            .collect(),
        jpeg_decoder::PixelFormat::CMYK32 => pixels
            .chunks_exact(4)
            .flat_map(|p| {
                // jpeg-decoder yields plain CMYK (Adobe inversion undone);
                // the naive conversion is enough for a thumbnail.
                let k = 255 - p[3] as u32;
                [
                    (255 - p[0] as u32) * k / 255,
                    (255 - p[1] as u32) * k / 255,
                    (255 - p[2] as u32) * k / 255,
                ]
                .map(|x| x as u8)
            })
            .collect(),
    };
    if data.len() < n * 3 {
        return Err(ThumbError::Corrupt(
            "the JPEG decoded to fewer pixels than it declares".into(),
        ));
    }
    // Report the effective scale (the decoder may round differently).
    let eff = (1..=8).find(|&k| scaled(k).0 >= dw).unwrap_or(8);
    Ok((
        Rgb {
            width: dw,
            height: dh,
            data,
        },
        scale_name(eff),
    ))
}

/// The scale `k`/8 as a reduced fraction: `1/8`, `1/4`, `3/8`, `1/2`, `5/8`,
/// `3/4`, `7/8` or `1/1`.
fn scale_name(k: u32) -> String {
    let d = [8, 4, 2, 1].into_iter().find(|d| k % d == 0).unwrap_or(1);
    format!("{}/{}", k / d, 8 / d)
}

/// Resizes the centre `cw`×`ch` of `src` (the whole of it, or a crop) to `tw`×`th`.
fn resize(
    resizer: &mut Resizer,
    src: &Rgb,
    (tw, th): (u32, u32),
    (cw, ch): (f64, f64),
) -> Result<Rgb, ThumbError> {
    let (w, h) = (src.width, src.height);
    let whole = cw == w as f64 && ch == h as f64;
    if (tw, th) == (w, h) && whole {
        return Ok(src.clone());
    }
    let internal = |e: &dyn std::fmt::Display| ThumbError::Internal(format!("resize failed: {e}"));
    let view =
        fr::images::ImageRef::new(w, h, &src.data, PixelType::U8x3).map_err(|e| internal(&e))?;
    let mut dst = Image::new(tw, th, PixelType::U8x3);
    let mut opts =
        ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fr::FilterType::CatmullRom));
    if !whole {
        opts = opts.crop((w as f64 - cw) / 2.0, (h as f64 - ch) / 2.0, cw, ch);
    }
    resizer
        .resize(&view, &mut dst, &opts)
        .map_err(|e| internal(&e))?;
    Ok(Rgb {
        width: tw,
        height: th,
        data: dst.into_vec(),
    })
}

/// Encodes RGB8 as a baseline JPEG.
fn encode(img: &Rgb, quality: u8) -> Result<Vec<u8>, ThumbError> {
    let (w, h) = (u16::try_from(img.width), u16::try_from(img.height));
    let (Ok(w), Ok(h)) = (w, h) else {
        return Err(ThumbError::Internal(
            "rendition is too large for JPEG".into(),
        ));
    };
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode_image(ycbcr::RgbRows {
            data: &img.data,
            width: w,
            height: h,
        })
        .map_err(|e| ThumbError::Internal(format!("JPEG encoding failed: {e}")))?;
    Ok(out)
}

/// The stage entry point: the component calls it through `export_stage!`,
/// and so can native benchmarks and tests.
pub fn run(input: &Input) -> Result<Output, StageError> {
    let config = parse_config(&input.config)?;
    // An earlier stage's `orientation` fact wins (it also covers XMP, PNG and
    // WebP EXIF, which this stage does not parse); HEIF ignores it (see heic.rs).
    let hint = input
        .fact_int("orientation")
        .and_then(|o| u8::try_from(o).ok());
    match thumbnails(input.bytes(), &config, hint) {
        Ok(t) => Ok(Output {
            facts: std::iter::once(Fact::text("thumbnail_source_scale", t.source_scale))
                .chain(config.phase_timings.then_some(&t.phases).into_iter().flatten().map(|p| {
                    Fact::float(
                        format!("thumbnail_ms_{}", p.name.replace(' ', "_")),
                        p.time.as_secs_f64() * 1e3,
                    )
                }))
                .collect(),
            renditions: t
                .thumbs
                .into_iter()
                .map(|t| Rendition {
                    name: t.name,
                    content_type: "image/jpeg".into(),
                    width: t.width,
                    height: t.height,
                    bytes: t.jpeg,
                })
                .collect(),
            warnings: t.warnings,
        }),
        Err(ThumbError::Unsupported(m)) if !config.reject_unsupported => {
            Ok(Output::default().warning(m))
        }
        Err(ThumbError::Unsupported(m)) | Err(ThumbError::Corrupt(m)) => {
            Err(StageError::Rejected(m))
        }
        Err(ThumbError::Internal(m)) => Err(StageError::Failed(m)),
    }
}

export_stage!(run);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_never_upscale_boxes() {
        assert_eq!(target(4000, 3000, Kind::Fit(400)), (400, 300));
        assert_eq!(target(300, 200, Kind::Fit(400)), (300, 200));
        assert_eq!(target(4000, 3000, Kind::Square(224)), (299, 224));
    }

    #[test]
    fn scale_names_are_reduced_fractions() {
        let names: Vec<String> = (1..=8).map(scale_name).collect();
        assert_eq!(names, ["1/8", "1/4", "3/8", "1/2", "5/8", "3/4", "7/8", "1/1"]);
    }

    #[test]
    fn config_overrides_and_disables() {
        let pairs = [
            ("small", "256"),
            ("large", "0"),
            ("quality", "90"),
            ("qualty", "1"),
        ];
        let _ = log::take();
        let c = parse_config(&pairs.into_iter().collect()).unwrap();
        let logged = log::take();
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(logged[0].1.contains("'qualty'"), "{logged:?}");
        assert_eq!(c.quality, 90);
        assert_eq!(
            c.renditions
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["small", "medium", "clip"]
        );
        assert_eq!(c.renditions[0].kind, Kind::Fit(256));
        let e = parse_config(&[("quality", "0")].into_iter().collect()).unwrap_err();
        assert_eq!(e.key, "quality");
        assert_eq!(e.expected, "a whole number from 1 to 100");
    }
}
