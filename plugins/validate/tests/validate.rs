//! Native tests of the validate stage over the sample photos and hand-built
//! headers (no image encoder needed).

use lumilio_sdk::{Fact, Input, StageError, Value};
use testdata::read;
use validate::formats::{Format, crc32};
use validate::{Limits, validate};

fn chunk(ty: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(ty);
    v.extend_from_slice(data);
    let mut c = ty.to_vec();
    c.extend_from_slice(data);
    v.extend_from_slice(&crc32(&c).to_be_bytes());
    v
}

fn png(w: u32, h: u32, iend: bool) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    v.extend(chunk(b"IHDR", &ihdr));
    v.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x63, 0, 0, 0, 1, 0, 1]));
    if iend {
        v.extend(chunk(b"IEND", &[]));
    }
    v
}

const GIF_1X1: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
const WEBP_1X1: &[u8] = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00";

fn ok(bytes: &[u8]) -> (Format, u32, u32) {
    let i = validate(bytes, &Limits::default()).unwrap_or_else(|e| panic!("rejected: {e}"));
    (i.format, i.width, i.height)
}

fn rejected(bytes: &[u8]) -> String {
    validate(bytes, &Limits::default()).expect_err("should be rejected")
}

#[test]
fn every_sample_photo_is_accepted() {
    let mut n = 0;
    for f in testdata::files_under("") {
        let name = testdata::rel(&f);
        let bytes = std::fs::read(&f).unwrap();
        let r = validate(&bytes, &Limits::default());
        println!("{name}: {r:?}");
        assert!(r.is_ok(), "{name}: {r:?}");
        n += 1;
    }
    // The in-repository subset (tests/data/photos/SOURCE.md) has 83.
    assert!(n >= 80, "only {n} files");
}

#[test]
fn sample_dimensions_match_the_reference_readers() {
    let cases = [
        ("jpg/Canon_40D.jpg", Format::Jpeg, 100, 68),
        ("jpg/orientation/portrait_6.jpg", Format::Jpeg, 600, 450),
        ("tiff/Tless0.tiff", Format::Tiff, 643, 448),
        ("tiff/Arbitro.tiff", Format::Tiff, 174, 38),
        ("heic/samplefilehub.heif", Format::Heic, 640, 426),
        // exiftool gives the coded 4032 × 3024; `irot` turns it (as heif-info shows).
        (
            "heic/mobile/iphone_13_pro_max.HEIC",
            Format::Heic,
            3024,
            4032,
        ),
        (
            "heic/mobile/HMD_Nokia_8.3_5G_hdr.heif",
            Format::Heic,
            4608,
            3456,
        ),
        ("heic/IMG_5195.HEIC", Format::Heic, 2566, 3313),
    ];
    for (rel, f, w, h) in cases {
        assert_eq!(ok(&read(rel)), (f, w, h), "{rel}");
    }
}

#[test]
fn synthetic_headers_are_read() {
    assert_eq!(ok(&png(3, 2, true)), (Format::Png, 3, 2));
    assert_eq!(ok(GIF_1X1), (Format::Gif, 1, 1));
    assert_eq!(ok(WEBP_1X1), (Format::WebP, 1, 1));
}

#[test]
fn png_bomb_is_rejected_from_the_header() {
    // 100000x100000 with a valid IHDR CRC and no real data behind it.
    let e = rejected(&png(100_000, 100_000, true));
    assert!(
        e.contains("too large") && e.contains("10000000000 pixels"),
        "{e}"
    );
}

#[test]
fn pixel_limit_is_configurable() {
    let limits = Limits {
        max_pixels: 5,
        ..Limits::default()
    };
    assert!(validate(&png(3, 2, true), &limits).is_err());
    assert!(validate(&png(5, 1, true), &limits).is_ok());
}

#[test]
fn byte_limit_applies_first() {
    let limits = Limits {
        max_bytes: 10,
        ..Limits::default()
    };
    let e = validate(b"hello world, not an image", &limits).unwrap_err();
    assert!(e.contains("too large"), "{e}");
}

#[test]
fn corrupt_png_is_rejected() {
    let e = rejected(&png(3, 2, false));
    assert!(e.contains("IEND") || e.contains("truncated"), "{e}");
    let mut bad = png(3, 2, true);
    bad[17] ^= 1; // flip a width bit without fixing the CRC
    assert!(rejected(&bad).contains("CRC"));
}

#[test]
fn truncated_jpeg_is_rejected() {
    let full = read("jpg/Canon_40D.jpg");
    for cut in [full.len() / 2, full.len() - 2, 20, 3] {
        let e = rejected(&full[..cut]);
        assert!(e.starts_with("the JPEG file"), "{cut}: {e}");
    }
}

#[test]
fn truncated_heic_and_tiff_are_rejected() {
    let h = read("heic/samplefilehub.heif");
    assert!(rejected(&h[..h.len() - 100]).contains("truncated"));
    let t = read("tiff/Tless0.tiff");
    assert!(rejected(&t[..t.len() / 2]).starts_with("the TIFF file"));
    assert!(rejected(&GIF_1X1[..GIF_1X1.len() - 4]).contains("truncated"));
    assert!(rejected(&WEBP_1X1[..WEBP_1X1.len() - 4]).contains("truncated"));
}

#[test]
fn non_images_get_a_clear_reason() {
    let e = rejected(b"just some notes\nsecond line\n");
    assert_eq!(
        e,
        "not a supported image (detected: text/plain-ish bytes); supported: JPEG, PNG, WebP, GIF, TIFF, HEIC/HEIF, AVIF"
    );
    assert!(rejected(b"%PDF-1.4 ...").contains("PDF"));
    assert!(rejected(b"").contains("empty"));
    assert!(rejected(b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom").contains("video"));
}

/// A strict prefix of a valid file is rejected with a reason, or (where the
/// cut only loses bytes the format does not need, like a TIFF's trailing
/// metadata) read exactly as the whole file; no prefix panics.
#[test]
fn every_prefix_of_a_sample_is_rejected_or_read_as_the_whole() {
    let mut cases: Vec<(String, Vec<u8>)> = [
        "jpg/Canon_40D.jpg",
        "heic/samplefilehub.heif",
        "tiff/Arbitro.tiff",
    ]
    .iter()
    .map(|r| (r.to_string(), read(r)))
    .collect();
    cases.push(("png 4x4".into(), png(4, 4, true)));
    for (name, b) in cases {
        let whole = ok(&b);
        let step = (b.len() / 400).max(1);
        let (mut rejected, mut cuts) = (0, 0);
        for cut in (0..b.len()).step_by(step) {
            cuts += 1;
            match validate(&b[..cut], &Limits::default()) {
                Err(e) => {
                    assert!(!e.is_empty(), "{name}[..{cut}]: empty reason");
                    rejected += 1;
                }
                Ok(i) => assert_eq!(
                    (i.format, i.width, i.height),
                    whole,
                    "{name}[..{cut}] of {} read differently from the whole",
                    b.len()
                ),
            }
        }
        assert!(
            rejected * 10 >= cuts * 9,
            "{name}: only {rejected} of {cuts} prefixes rejected"
        );
    }
}

#[test]
fn run_emits_facts_and_config_errors_fail() {
    let cfg = vec![("max_pixels".to_string(), "1_000".to_string())];
    let bytes = png(10, 10, true);
    let input = Input::new(bytes)
        .content_type("image/jpeg")
        .with_config(cfg);
    let out = validate::run(&input).unwrap();
    assert_eq!(
        out.facts,
        vec![
            Fact {
                key: "content_type".into(),
                value: Value::Text("image/png".into())
            },
            Fact {
                key: "width".into(),
                value: Value::Integer(10)
            },
            Fact {
                key: "height".into(),
                value: Value::Integer(10)
            },
        ]
    );
    assert_eq!(out.warnings.len(), 1, "claimed type mismatch is a warning");
    let bad = vec![("max_pixels".to_string(), "lots".to_string())];
    let input = input.with_config(bad);
    assert!(matches!(validate::run(&input), Err(StageError::Failed(_))));
}
