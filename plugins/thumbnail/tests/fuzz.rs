//! Fuzzing the thumbnail stage's decoders (jpeg-decoder, and `image` for PNG,
//! GIF, WebP and TIFF) and its EXIF orientation reader: thousands of
//! generated inputs (random bytes, small generated images of every format,
//! mutated small sample photos, header fields set to extremes, tiny synthetic
//! files) through [`thumbnail::run`], each under `catch_unwind` and a time
//! bound. Every call must end `Ok` with well-formed renditions or with a
//! `StageError` that gives a reason. Inputs stay small (generated images are
//! at most 256x256, samples at most 256 KB) so the budget holds on two cores.
//!
//! `LUMILIO_FUZZ_CASES` raises the number of cases (default 3000) and
//! `LUMILIO_FUZZ_SEED` changes the seed; a failing case is named by seed and
//! index and its bytes are saved under `target/tmp/fuzz-thumbnail/`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lumilio_fuzzkit::*;
use lumilio_sdk::{Fact, Input, Output, StageError, Value};

/// The default pipeline's config for this stage; for odd-sized inputs only a
/// `small` of 16 to 255 px, so the (at most 256 px) JPEGs also decode at
/// every reduced N/8 scale, not only at 1/1.
fn config(bytes: &[u8]) -> Vec<(String, String)> {
    let small = (16 + bytes.len() % 240).to_string();
    let pairs = if bytes.len() % 2 == 1 {
        vec![
            ("small", small.as_str()),
            ("medium", "0"),
            ("large", "0"),
            ("clip", "0"),
        ]
    } else {
        vec![
            ("small", "400"),
            ("medium", "800"),
            ("large", "1920"),
            ("clip", "224"),
        ]
    };
    pairs
        .into_iter()
        .chain([("quality", "80"), ("unsupported", "skip")])
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn call(bytes: &[u8]) -> Result<Output, StageError> {
    let mut input = Input::new(bytes)
        .content_type("image/jpeg")
        .with_config(config(bytes));
    // Some cases carry an `orientation` fact (valid or not), as metadata would.
    if bytes.len() % 3 == 0 {
        input = input.fact(Fact::int("orientation", bytes.len() as i64 % 11 - 1));
    }
    thumbnail::run(&input)
}

/// The `thumbnail_source_scale`s seen by [`check`], to show that the fuzzing
/// reached the reduced-size IDCTs.
static SCALES: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());

fn check(r: &Result<Output, StageError>) -> Result<(), String> {
    match r {
        Ok(out) => {
            for f in out
                .facts
                .iter()
                .filter(|f| f.key == "thumbnail_source_scale")
            {
                if let Value::Text(s) = &f.value {
                    SCALES.lock().unwrap().insert(s.clone());
                }
            }
            for r in &out.renditions {
                let max = match r.name.as_str() {
                    "small" => 400,
                    "medium" => 800,
                    "large" => 1920,
                    "clip" => 224,
                    other => return Err(format!("unknown rendition {other}")),
                };
                if r.width == 0 || r.height == 0 || r.width.max(r.height) > max {
                    return Err(format!("rendition {} is {}x{}", r.name, r.width, r.height));
                }
                if r.name == "clip" && (r.width, r.height) != (224, 224) {
                    return Err(format!("clip rendition is {}x{}", r.width, r.height));
                }
                if !r.bytes.starts_with(&[0xFF, 0xD8]) || r.content_type != "image/jpeg" {
                    return Err(format!("rendition {} is not a JPEG", r.name));
                }
            }
            if out.renditions.is_empty() && out.warnings.is_empty() {
                return Err("Ok without renditions or a warning".into());
            }
            Ok(())
        }
        Err(StageError::Rejected(m)) | Err(StageError::Failed(m)) => clean_error(m),
    }
}

/// A random image of at most 256x256 in a random format, encoded by a real
/// encoder, so mutations reach the decoders' inner loops.
fn generated_image(rng: &mut Rng) -> (String, Vec<u8>) {
    let (w, h) = (1 + rng.below(256) as u32, 1 + rng.below(256) as u32);
    // Smooth gradients plus noise: compressible, but not trivially.
    let noise = rng.below(64) as u32 + 1;
    let mut px = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let n = rng.next() as u32 % noise;
            px.extend_from_slice(&[
                (x * 255 / w) as u8 ^ n as u8,
                (y * 255 / h) as u8,
                ((x + y + n) % 256) as u8,
                (x ^ y) as u8,
            ]);
        }
    }
    let rgba = image::RgbaImage::from_raw(w, h, px).unwrap();
    let img = match rng.below(4) {
        0 => image::DynamicImage::ImageRgba8(rgba),
        1 => image::DynamicImage::ImageRgb8(image::DynamicImage::ImageRgba8(rgba).into_rgb8()),
        2 => image::DynamicImage::ImageLuma8(image::DynamicImage::ImageRgba8(rgba).into_luma8()),
        _ => image::DynamicImage::ImageLumaA8(
            image::DynamicImage::ImageRgba8(rgba).into_luma_alpha8(),
        ),
    };
    let fmt = *rng.pick(&["jpeg", "png", "gif", "webp", "tiff"]);
    let mut out = Vec::new();
    if fmt == "jpeg" {
        let rgb = img.into_rgb8();
        let q = 1 + rng.below(100) as u8;
        jpeg_encoder::Encoder::new(&mut out, q)
            .encode(
                rgb.as_raw(),
                w as u16,
                h as u16,
                jpeg_encoder::ColorType::Rgb,
            )
            .unwrap();
    } else {
        let (format, img) = match fmt {
            "png" => (image::ImageFormat::Png, img),
            "gif" => (
                image::ImageFormat::Gif,
                image::DynamicImage::ImageRgba8(img.into_rgba8()),
            ),
            "webp" => (
                image::ImageFormat::WebP,
                image::DynamicImage::ImageRgba8(img.into_rgba8()),
            ),
            _ if img.color() == image::ColorType::La8 => (
                image::ImageFormat::Tiff,
                image::DynamicImage::ImageRgba8(img.into_rgba8()),
            ),
            _ => (image::ImageFormat::Tiff, img),
        };
        img.write_to(&mut std::io::Cursor::new(&mut out), format)
            .unwrap();
    }
    (format!("generated {fmt} {w}x{h}"), out)
}

/// Fixed cases kept as regressions: the decompression bombs must be rejected quickly.
fn regressions() -> Vec<(String, Vec<u8>)> {
    let mut jpeg = vec![0xFF, 0xD8];
    jpeg.extend(segment(
        0xC0,
        &[
            8, 0xFF, 0xFF, 0xFF, 0xFF, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1,
        ],
    ));
    jpeg.extend_from_slice(&[0xFF, 0xD9]);
    vec![
        ("empty file".into(), Vec::new()),
        (
            "PNG bomb 100000x100000".into(),
            png(100_000, 100_000, 8, 2, &zlib_stored(&[0; 64]), &[]),
        ),
        (
            "PNG 20000x20000 with a tiny IDAT".into(),
            png(20_000, 20_000, 8, 6, &zlib_stored(&[0; 64]), &[]),
        ),
        ("JPEG SOF 65535x65535, no scan".into(), jpeg),
    ]
}

#[test]
fn thumbnail_survives_generated_inputs() {
    let n = cases(3000);
    let samples = samples(256 << 10);
    assert!(
        !samples.is_empty(),
        "the photo directory has no small images"
    );
    // Half the mutated bases are generated images, so decoders see well-formed
    // streams with a few bytes wrong, not only garbage.
    let mut rng = Rng::new(seed() ^ 0x7468_756d);
    let mut bases = samples.clone();
    for _ in 0..48 {
        bases.push(generated_image(&mut rng));
    }
    let generated: Vec<_> = (0..n / 10).map(|_| generated_image(&mut rng)).collect();
    let inputs = generated
        .into_iter()
        .chain(generate(n - n / 10, &bases, regressions()));
    fuzz(
        env!("CARGO_TARGET_TMPDIR"),
        "thumbnail",
        inputs,
        Duration::from_secs(2),
        call,
        check,
    );
    let scales = SCALES.lock().unwrap();
    assert!(
        ["3/8", "5/8", "3/4", "7/8"]
            .iter()
            .all(|s| scales.contains(*s)),
        "the N/8 IDCTs were not all reached: {scales:?}"
    );
}

/// Found by this test: a real JPEG whose SOF says 65535x65535 took over a
/// minute to decode (now refused above `MAX_JPEG_PIXELS`).
fn sof_bomb_from_sample() -> Option<(String, Vec<u8>)> {
    let (name, mut b) = samples(256 << 10)
        .into_iter()
        .find(|(n, b)| n.ends_with(".jpg") && b.starts_with(&[0xFF, 0xD8]))?;
    let (_, at) = *jpeg_markers(&b)
        .iter()
        .find(|(m, _)| matches!(m, 0xC0 | 0xC1 | 0xC2))?;
    b[at + 5..at + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    Some((format!("{name} with SOF set to 65535x65535"), b))
}

#[test]
fn thumbnail_rejects_bombs_quickly() {
    for (what, bytes) in regressions()
        .into_iter()
        .skip(1)
        .chain(sof_bomb_from_sample())
    {
        let t = Instant::now();
        let r = call(&bytes);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{what} took {:?}",
            t.elapsed()
        );
        match r {
            Err(StageError::Rejected(m)) => assert!(!m.is_empty(), "{what}"),
            other => panic!("{what}: expected a rejection, got {other:?}"),
        }
    }
}
