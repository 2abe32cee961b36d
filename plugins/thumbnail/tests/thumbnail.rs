//! Native tests of the thumbnail stage: sizes, DCT scaling, orientation (all
//! eight, against the upright `_1` sample), no upscaling, non-JPEG input,
//! and robustness on broken files (HEIC/HEIF: tests/heic.rs).

use lumilio_sdk::{Fact, Input, Value};
use std::path::Path;
use std::time::Instant;
use testdata::read;
use thumbnail::{Config, ThumbError, parse_config, thumbnails};

mod common;
use common::psnr;

fn sizes(t: &thumbnail::Thumbnails) -> Vec<(&str, u32, u32)> {
    t.thumbs
        .iter()
        .map(|t| (t.name.as_str(), t.width, t.height))
        .collect()
}

/// Decodes an output JPEG to RGB and checks it matches the reported size.
fn decode(jpeg: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut d = jpeg_decoder::Decoder::new(jpeg);
    let px = d.decode().expect("output decodes");
    let info = d.info().unwrap();
    assert_eq!((info.width as u32, info.height as u32), (w, h));
    px
}

/// Pearson correlation of 8×8 block-average luma, skipping the centre cells
/// where the samples print their number. Correlation rather than a plain
/// difference because the samples differ in brightness (some carry an ICC
/// profile).
fn similarity(a: &[u8], b: &[u8], w: u32, h: u32) -> f64 {
    let grid = |px: &[u8]| {
        let mut cells = [0f64; 64];
        let mut counts = [0f64; 64];
        for y in 0..h {
            for x in 0..w {
                let c = ((y * 8 / h) * 8 + x * 8 / w) as usize;
                let i = ((y * w + x) * 3) as usize;
                cells[c] +=
                    0.299 * px[i] as f64 + 0.587 * px[i + 1] as f64 + 0.114 * px[i + 2] as f64;
                counts[c] += 1.0;
            }
        }
        (0..64)
            .filter(|c| !((2..6).contains(&(c % 8)) && (2..6).contains(&(c / 8))))
            .map(|c| cells[c] / counts[c])
            .collect::<Vec<_>>()
    };
    let (ga, gb) = (grid(a), grid(b));
    let n = ga.len() as f64;
    let (ma, mb) = (ga.iter().sum::<f64>() / n, gb.iter().sum::<f64>() / n);
    let cov: f64 = ga.iter().zip(&gb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ga.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = gb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt().max(1e-9)
}

#[test]
fn default_sizes_from_a_large_jpeg() {
    let bytes = read("jpg/hdr/iphone_hdr_NO.jpg"); // 3264x2448
    let start = Instant::now();
    let t = thumbnails(&bytes, &Config::default(), None).unwrap();
    println!(
        "iphone_hdr_NO.jpg, 4 renditions: {:?} (decoded at {})",
        start.elapsed(),
        t.source_scale
    );
    assert_eq!(
        sizes(&t),
        vec![
            ("small", 400, 300),
            ("medium", 800, 600),
            ("large", 1920, 1440),
            ("clip", 224, 224)
        ]
    );
    assert_eq!(
        t.source_scale, "5/8",
        "large (1920) needs more than 4/8 of 3264 (1632), 5/8 is 2040"
    );
    for th in &t.thumbs {
        decode(&th.jpeg, th.width, th.height);
    }
}

#[test]
fn shrink_on_load_when_renditions_are_small() {
    let bytes = read("jpg/mobile/HMD_Nokia_8.3_5G.jpg"); // 4608x1976
    // medium (800 px wide) needs 1/4 (1152x494).
    let c = parse_config(&[("large", "0")].into_iter().collect()).unwrap();
    let t = thumbnails(&bytes, &c, None).unwrap();
    assert_eq!(t.source_scale, "1/4");
    assert_eq!(
        sizes(&t),
        vec![
            ("small", 400, 172),
            ("medium", 800, 343),
            ("clip", 224, 224)
        ]
    );
    // small (400 px) and clip (224 px short side) both fit in 1/8 (576x247).
    let c = parse_config(&[("medium", "0"), ("large", "0")].into_iter().collect()).unwrap();
    assert_eq!(thumbnails(&bytes, &c, None).unwrap().source_scale, "1/8");
}

#[test]
fn never_upscales_boxes() {
    let bytes = read("jpg/Canon_40D.jpg"); // 100x68
    let t = thumbnails(&bytes, &Config::default(), None).unwrap();
    assert_eq!(
        sizes(&t),
        vec![
            ("small", 100, 68),
            ("medium", 100, 68),
            ("large", 100, 68),
            ("clip", 224, 224)
        ]
    );
}

/// `small`, made from the full decode, and `clip`, which the cascade cuts
/// from a larger rendition that is already upright: both must be upright.
#[test]
fn all_eight_orientations_come_out_upright() {
    for (base, k) in [("landscape", 0), ("landscape", 3), ("portrait", 0), ("portrait", 3)] {
        let reference = thumbnails(
            &read(&format!("jpg/orientation/{base}_1.jpg")),
            &Config::default(),
            None,
        )
        .unwrap();
        let r = &reference.thumbs[k];
        let ref_px = decode(&r.jpeg, r.width, r.height);
        let base = format!("{base} {}", r.name);
        // The metric must tell a wrong transform apart: compare with the
        // reference turned 180°.
        let flipped: Vec<u8> = ref_px.chunks_exact(3).rev().flatten().copied().collect();
        let mirrored: Vec<u8> = ref_px
            .chunks_exact(3 * r.width as usize)
            .flat_map(|row| {
                row.chunks_exact(3)
                    .rev()
                    .flatten()
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect();
        for (what, px) in [("180° turn", &flipped), ("mirror", &mirrored)] {
            let r = similarity(px, &ref_px, r.width, r.height);
            println!("{base}: similarity to its {what}: {r:.2}");
            assert!(
                r < 0.8,
                "{base}: the metric cannot tell a {what} apart ({r:.2})"
            );
        }
        for n in 1..=8 {
            let file = format!("jpg/orientation/{}_{n}.jpg", base.split(' ').next().unwrap());
            let t = thumbnails(
                &read(&file),
                &Config::default(),
                None,
            )
            .unwrap();
            assert_eq!(t.orientation, n, "{base}_{n} orientation read from EXIF");
            let s = &t.thumbs[k];
            assert_eq!((s.width, s.height), (r.width, r.height), "{base}_{n} size");
            let sim = similarity(
                &decode(&s.jpeg, s.width, s.height),
                &ref_px,
                s.width,
                s.height,
            );
            println!("{base}_{n}: similarity to {base}_1 {sim:.3}");
            if let Some(dir) = std::env::var_os("THUMB_DUMP") {
                let px = decode(&s.jpeg, s.width, s.height);
                image::RgbImage::from_raw(s.width, s.height, px)
                    .unwrap()
                    .save(Path::new(&dir).join(format!("{}_{n}.png", base.replace(' ', "_"))))
                    .unwrap();
            }
            assert!(
                sim > 0.95,
                "{base}_{n} is not upright (similarity {sim:.3})"
            );
        }
    }
}

#[test]
fn orientation_fact_overrides_exif() {
    let bytes = read("jpg/orientation/landscape_6.jpg"); // stored 450x600
    let input = Input::new(bytes).content_type("image/jpeg");
    let out = thumbnail::run(&input.clone().fact(Fact {
        key: "orientation".into(),
        value: Value::Integer(1),
    }))
    .unwrap();
    assert_eq!(
        (out.renditions[0].width, out.renditions[0].height),
        (300, 400)
    );
    let out = thumbnail::run(&input).unwrap();
    assert_eq!(
        (out.renditions[0].width, out.renditions[0].height),
        (400, 300)
    );
    assert_eq!(
        out.facts,
        vec![Fact {
            key: "thumbnail_source_scale".into(),
            value: Value::Text("1/1".into())
        }]
    );
}

#[test]
fn png_with_alpha_and_tiff_are_supported() {
    let img = image::RgbaImage::from_fn(1000, 500, |x, _| {
        image::Rgba([200, (x % 256) as u8, 0, if x < 500 { 255 } else { 0 }])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let t = thumbnails(&png, &Config::default(), None).unwrap();
    assert_eq!(
        sizes(&t),
        vec![
            ("small", 400, 200),
            ("medium", 800, 400),
            ("large", 1000, 500),
            ("clip", 224, 224)
        ]
    );
    // The transparent right half is composited over white.
    let px = decode(&t.thumbs[0].jpeg, 400, 200);
    let right = &px[(100 * 400 + 390) * 3..(100 * 400 + 391) * 3];
    assert!(right.iter().all(|&c| c > 240), "{right:?}");

    let t = thumbnails(&read("tiff/Tless0.tiff"), &Config::default(), None).unwrap();
    assert_eq!(t.thumbs[0].width, 400);
}

/// Broken and truncated files end in a clean error or in renditions that
/// really decode at their stated size; a 200-byte prefix never yields any.
#[test]
fn broken_files_give_clean_results() {
    let mut files = testdata::files_under("jpg/invalid");
    files.extend(testdata::files_under("jpg/tests"));
    assert!(files.len() >= 10, "broken samples: {files:?}");
    let (mut ok, mut err) = (0, 0);
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for cut in [bytes.len(), bytes.len() / 2, 200.min(bytes.len())] {
            let name = format!("{} [..{cut}]", testdata::rel(&f));
            match thumbnails(&bytes[..cut], &Config::default(), None) {
                Ok(t) => {
                    assert!(cut > 200, "{name}: thumbnails from a 200-byte prefix");
                    assert!(!t.thumbs.is_empty(), "{name}: Ok with no renditions");
                    for th in &t.thumbs {
                        decode(&th.jpeg, th.width, th.height);
                    }
                    ok += 1;
                }
                Err(ThumbError::Corrupt(m) | ThumbError::Unsupported(m)) => {
                    assert!(!m.is_empty(), "{name}: an error without a reason");
                    err += 1;
                }
                Err(e) => panic!("{name}: not the file's fault? {e:?}"),
            }
        }
    }
    println!("broken files: {ok} gave renditions, {err} clean errors");
    assert!(
        err > 0 && ok > 0,
        "{ok} ok / {err} errors: the samples should give both"
    );
    assert!(matches!(
        thumbnails(b"not an image", &Config::default(), None),
        Err(ThumbError::Corrupt(_) | ThumbError::Unsupported(_))
    ));
}

/// Renditions resized from a larger rendition (the cascade) stay close to
/// those resized from the full decode, on the real phone photos; and the
/// cascade is really taken (the smaller renditions then carry no orient
/// phase), so this test compares two different paths.
#[test]
fn cascaded_renditions_match_direct_ones() {
    for photo in ["jpg/hdr/iphone_hdr_NO.jpg", "jpg/mobile/HMD_Nokia_8.3_5G.jpg"] {
        let bytes = read(photo);
        let cascaded = thumbnails(&bytes, &Config::default(), None).unwrap();
        let direct_config = Config {
            cascade: false,
            ..Config::default()
        };
        let direct = thumbnails(&bytes, &direct_config, None).unwrap();
        assert_eq!(sizes(&cascaded), sizes(&direct), "{photo}");
        let oriented = |t: &thumbnail::Thumbnails| {
            t.phases
                .iter()
                .filter(|p| p.name.starts_with("orient "))
                .count()
        };
        let resize_ms = |t: &thumbnail::Thumbnails| {
            t.phases
                .iter()
                .filter(|p| p.name.starts_with("resize "))
                .map(|p| p.time.as_secs_f64() * 1e3)
                .sum::<f64>()
        };
        // Information only (timing targets live in `make bench`).
        println!(
            "{photo}: resize total {:.1} ms cascaded, {:.1} ms direct",
            resize_ms(&cascaded),
            resize_ms(&direct)
        );
        assert_eq!(oriented(&direct), 4, "{photo}: {:?}", direct.phases);
        assert!(oriented(&cascaded) < 4, "{photo}: no cascade: {:?}", cascaded.phases);
        for (c, d) in cascaded.thumbs.iter().zip(&direct.thumbs) {
            let db = psnr(
                &decode(&c.jpeg, c.width, c.height),
                &decode(&d.jpeg, d.width, d.height),
            );
            println!("{photo} {}: cascaded vs direct {db:.1} dB", c.name);
            assert!(db > 36.0, "{photo} {}: {db:.1} dB", c.name);
        }
    }
}
