//! N/8 IDCT scaling (the vendored jpeg-decoder's N = 3, 5, 6, 7): a scaled
//! decode must look like a full decode resized to the same size, on real
//! photos and on generated JPEGs of every layout (grayscale, 4:2:0, 4:4:4,
//! progressive, restart intervals, sizes that are not a multiple of the MCU);
//! the stage must pick the smallest N that covers the largest rendition, stay
//! close to what the 1/1-or-power-of-two path made, and still orient.

use fast_image_resize::{self as fr, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image};
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
use testdata::read;
use thumbnail::{Config, parse_config, thumbnails};

mod common;
use common::psnr;

/// Decodes `jpeg` at `n`/8 and returns (width, height, pixels), as RGB or L.
fn decode_at(jpeg: &[u8], n: u32) -> (u32, u32, Vec<u8>) {
    let mut d = jpeg_decoder::Decoder::new(jpeg);
    d.read_info().unwrap();
    let info = d.info().unwrap();
    let (w, h) = (info.width as u32, info.height as u32);
    let (rw, rh) = ((w * n).div_ceil(8) as u16, (h * n).div_ceil(8) as u16);
    assert_eq!(d.scale(rw, rh).unwrap(), (rw, rh), "{n}/8 of {w}x{h}");
    let px = d.decode().unwrap();
    let info = d.info().unwrap();
    assert_eq!((info.width, info.height), (rw, rh));
    (rw as u32, rh as u32, px)
}

/// Resizes `px` (`channels` 1 or 3) to `tw`×`th` with a box filter, which
/// averages like a reduced-size IDCT does.
fn resize(px: &[u8], (w, h): (u32, u32), (tw, th): (u32, u32), channels: usize) -> Vec<u8> {
    let kind = if channels == 1 {
        PixelType::U8
    } else {
        PixelType::U8x3
    };
    let src = fr::images::ImageRef::new(w, h, px, kind).unwrap();
    let mut dst = Image::new(tw, th, kind);
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fr::FilterType::Box));
    Resizer::new().resize(&src, &mut dst, &opts).unwrap();
    dst.into_vec()
}

/// For each N in 3, 5, 6, 7: the N/8 decode against the full decode
/// resized to the same size, above `min_db`. The same comparison for the
/// upstream 4/8 is the yardstick the new scales must reach.
fn scaled_vs_full(name: &str, jpeg: &[u8], channels: usize, min_db: f64) {
    let (w, h, full) = decode_at(jpeg, 8);
    assert_eq!(full.len(), (w * h) as usize * channels, "{name}");
    let mut dbs = Vec::new();
    for n in [3, 4, 5, 6, 7] {
        let (sw, sh, scaled) = decode_at(jpeg, n);
        let reference = resize(&full, (w, h), (sw, sh), channels);
        let db = psnr(&scaled, &reference);
        println!("{name} ({w}x{h}): {n}/8 vs full decode box-resized: {db:.1} dB");
        dbs.push(db);
        assert!(
            db > min_db,
            "{name}: {n}/8 is {db:.1} dB from the full decode"
        );
    }
    // A broken IDCT (wrong table, rows and columns swapped, a lost level
    // shift) lands far below the upstream 4/8's figure, not near it. (3/8
    // is a few dB below 4/8 on detailed photos: a box filter at a ratio of
    // 8/3 is a poorer reference.)
    let upstream = dbs[1];
    for (n, db) in [3, 5, 6, 7]
        .into_iter()
        .zip([dbs[0], dbs[2], dbs[3], dbs[4]])
    {
        assert!(
            db > upstream - 6.0,
            "{name}: {n}/8 {db:.1} dB, upstream 4/8 {upstream:.1} dB"
        );
    }
}

/// A 1003×757 test card: gradients, stripes, a diagonal edge and a
/// circle, so every frequency band and both chroma channels carry something.
fn card() -> (u16, u16, Vec<u8>) {
    let (w, h) = (1003u16, 757u16);
    let mut px = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h as i32 {
        for x in 0..w as i32 {
            let stripes = if (x / 8 + y / 12) % 2 == 0 { 40 } else { 0 };
            let edge = if x * 3 > y * 4 { 60 } else { 0 };
            let (dx, dy) = (x - 600, y - 380);
            let disc = if dx * dx + dy * dy < 150 * 150 { 90 } else { 0 };
            px.push((x * 200 / w as i32 + stripes) as u8);
            px.push((y * 150 / h as i32 + edge) as u8);
            px.push((100 + disc - stripes / 2) as u8);
        }
    }
    (w, h, px)
}

fn encode(
    px: &[u8],
    (w, h): (u16, u16),
    color: ColorType,
    set: impl FnOnce(&mut Encoder<&mut Vec<u8>>),
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out, 90);
    set(&mut e);
    e.encode(px, w, h, color).unwrap();
    out
}

#[test]
fn real_photos_scaled_decode_matches_full_decode() {
    for photo in [
        "jpg/hdr/iphone_hdr_NO.jpg",       // 3264x2448, 4:2:0
        "jpg/tests/22-canon_tags.jpg",     // Canon camera, 1600x1200, 4:2:2
        "jpg/Reconyx_HC500_Hyperfire.jpg", // 2048x1536, 4:2:2
    ] {
        scaled_vs_full(photo, &read(photo), 3, 30.0);
    }
}

#[test]
fn generated_layouts_scaled_decode_matches_full_decode() {
    let (w, h, rgb) = card();
    let luma: Vec<u8> = rgb
        .chunks_exact(3)
        .map(|p| ((p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114) / 1000) as u8)
        .collect();
    let gray = encode(&luma, (w, h), ColorType::Luma, |_| {});
    scaled_vs_full("grayscale", &gray, 1, 30.0);
    for (name, sampling, progressive, restart) in [
        ("4:2:0", SamplingFactor::R_4_2_0, false, 0),
        ("4:4:4", SamplingFactor::R_4_4_4, false, 0),
        ("4:2:2 progressive", SamplingFactor::R_4_2_2, true, 0),
        ("4:2:0 progressive", SamplingFactor::R_4_2_0, true, 0),
        ("4:2:0 restart 7", SamplingFactor::R_4_2_0, false, 7),
    ] {
        let jpeg = encode(&rgb, (w, h), ColorType::Rgb, |e| {
            e.set_sampling_factor(sampling);
            e.set_progressive(progressive);
            e.set_restart_interval(restart);
        });
        scaled_vs_full(name, &jpeg, 3, 30.0);
    }
}

/// The stage picks the smallest N/8 that covers the largest rendition, and
/// its renditions stay close to the ones the power-of-two scales made.
#[test]
fn renditions_match_the_power_of_two_path() {
    let upstream = Config {
        all_dct_scales: false,
        ..Config::default()
    };
    for (photo, scale, before) in [
        // large (1920x1440) needs more than 4/8 (1632x1224): 5/8 = 2040x1530.
        ("jpg/hdr/iphone_hdr_NO.jpg", "5/8", "1/1"),
        // 2048x1536: 1920 needs 8/8 either way; small-only needs 2/8 = 512 ...
        ("jpg/Reconyx_HC500_Hyperfire.jpg", "1/1", "1/1"),
        // 4608x1976: large (1920) fits 4/8 = 2304, not 3/8 = 1728.
        ("jpg/mobile/HMD_Nokia_8.3_5G.jpg", "1/2", "1/2"),
    ] {
        let bytes = read(photo);
        let new = thumbnails(&bytes, &Config::default(), None).unwrap();
        let old = thumbnails(&bytes, &upstream, None).unwrap();
        assert_eq!(
            (new.source_scale.as_str(), old.source_scale.as_str()),
            (scale, before),
            "{photo}"
        );
        for (n, o) in new.thumbs.iter().zip(&old.thumbs) {
            assert_eq!(
                (n.width, n.height),
                (o.width, o.height),
                "{photo} {}",
                n.name
            );
            let db = psnr(&rgb(&n.jpeg), &rgb(&o.jpeg));
            println!("{photo} {}: {scale} vs {before}: {db:.1} dB", n.name);
            assert!(db > 34.0, "{photo} {}: {db:.1} dB", n.name);
        }
    }
    // Without large and with medium at 900 on the iPhone photo: 3/8
    // (1224x918) where upstream needed 4/8 (2/8 is 816 wide).
    let bytes = read("jpg/hdr/iphone_hdr_NO.jpg");
    let pairs = [("large", "0"), ("medium", "900")].into_iter().collect();
    let new = parse_config(&pairs).unwrap();
    let old = Config {
        all_dct_scales: false,
        ..new.clone()
    };
    let new = thumbnails(&bytes, &new, None).unwrap();
    let old = thumbnails(&bytes, &old, None).unwrap();
    assert_eq!(
        (new.source_scale.as_str(), old.source_scale.as_str()),
        ("3/8", "1/2")
    );
    for (n, o) in new.thumbs.iter().zip(&old.thumbs) {
        let db = psnr(&rgb(&n.jpeg), &rgb(&o.jpeg));
        println!(
            "iphone, medium 900, no large, {}: 3/8 vs 1/2: {db:.1} dB",
            n.name
        );
        assert!(db > 34.0, "iphone, medium 900 {}: {db:.1} dB", n.name);
    }
}

/// Orientation is still applied on a 5/8 decode: orientation 6 (turn 90°
/// clockwise) gives the upright rendition turned, not mirrored or turned back.
#[test]
fn orientation_applies_to_scaled_decodes() {
    let bytes = read("jpg/hdr/iphone_hdr_NO.jpg");
    let upright = thumbnails(&bytes, &Config::default(), Some(1)).unwrap();
    let turned = thumbnails(&bytes, &Config::default(), Some(6)).unwrap();
    assert_eq!(turned.source_scale, "5/8");
    assert_eq!(turned.orientation, 6);
    for (u, t) in upright.thumbs.iter().zip(&turned.thumbs) {
        assert_eq!((t.width, t.height), (u.height, u.width), "{}", u.name);
        let (w, h) = (u.width as usize, u.height as usize);
        let px = rgb(&u.jpeg);
        // Clockwise: the output's row y, column x is the source's row
        // h-1-x, column y.
        let turn = |cw: bool| -> Vec<u8> {
            let mut out = Vec::with_capacity(px.len());
            for y in 0..w {
                for x in 0..h {
                    let (sy, sx) = if cw { (h - 1 - x, y) } else { (x, w - 1 - y) };
                    out.extend_from_slice(&px[(sy * w + sx) * 3..][..3]);
                }
            }
            out
        };
        let got = rgb(&t.jpeg);
        let (cw, ccw) = (psnr(&got, &turn(true)), psnr(&got, &turn(false)));
        println!(
            "{}: turned vs upright turned clockwise {cw:.1} dB, anticlockwise {ccw:.1} dB",
            u.name
        );
        // Both sides went through their own JPEG encode (q80, blocks on
        // different pixels), so small and detailed renditions stay near 30 dB.
        assert!(
            cw > 28.0 && cw > ccw + 10.0,
            "{}: {cw:.1} / {ccw:.1} dB",
            u.name
        );
    }
}

/// An output JPEG's pixels.
fn rgb(jpeg: &[u8]) -> Vec<u8> {
    jpeg_decoder::Decoder::new(jpeg).decode().unwrap()
}
