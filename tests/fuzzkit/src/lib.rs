//! The fuzz machinery the plugins' `tests/fuzz.rs` share: a seeded
//! generator (SplitMix64) of random, mutated and synthetic image files, and
//! a runner that calls a stage's parser on each under `catch_unwind` and a
//! time bound, saving failing cases. Dev-only: plugins list it under
//! `[dev-dependencies]`, so it is never built for wasm32.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Seed of the generator; `LUMILIO_FUZZ_SEED` overrides it.
pub const DEFAULT_SEED: u64 = 0x1u64 << 40 | 0x6c75_6d69;

pub fn seed() -> u64 {
    std::env::var("LUMILIO_FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// The number of generated cases: `LUMILIO_FUZZ_CASES`, else `default`.
pub fn cases(default: usize) -> usize {
    std::env::var("LUMILIO_FUZZ_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (SplitMix64): no dependency, same stream
/// on every platform, so a failing case is reproduced from its seed alone.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// True with probability `pct`%.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    pub fn pick<'a, T>(&mut self, list: &'a [T]) -> &'a T {
        &list[self.below(list.len())]
    }
    /// A length skewed towards small values, at most `max`.
    pub fn len(&mut self, max: usize) -> usize {
        match self.below(4) {
            0 => self.below(16.min(max + 1)),
            1 => self.below(256.min(max + 1)),
            _ => self.below(max + 1),
        }
    }
    /// A 32-bit value that is often an edge case.
    pub fn extreme32(&mut self) -> u32 {
        *self.pick(&[
            0,
            1,
            2,
            7,
            8,
            0x7F,
            0x80,
            0xFF,
            0x100,
            0x7FFF,
            0x8000,
            0xFFFF,
            0x1_0000,
            0x7FFF_FFFF,
            0x8000_0000,
            0xFFFF_FFFE,
            0xFFFF_FFFF,
        ])
    }
}

/// Every image among the sample photos of at most `max_size` bytes, sorted
/// by path so the case stream is the same on every run.
pub fn samples(max_size: u64) -> Vec<(String, Vec<u8>)> {
    let exts = [
        "jpg", "jpeg", "png", "gif", "webp", "tif", "tiff", "heic", "heif", "avif",
    ];
    testdata::files_with("", &exts)
        .into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() <= max_size && m.len() > 0))
        .map(|p| {
            (
                testdata::rel(&p),
                std::fs::read(&p).expect("reading a sample photo"),
            )
        })
        .collect()
}

/// CRC-32 (IEEE), for PNG chunks that must survive the CRC check.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

pub fn png_chunk(ty: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(ty);
    out.extend_from_slice(data);
    let mut crc_in = ty.to_vec();
    crc_in.extend_from_slice(data);
    out.extend_from_slice(&crc32(&crc_in).to_be_bytes());
    out
}

/// A PNG of the given claimed size, with a valid IHDR CRC and `idat` as its data.
pub fn png(
    w: u32,
    h: u32,
    depth: u8,
    color: u8,
    idat: &[u8],
    extra: &[(&[u8; 4], Vec<u8>)],
) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    for (ty, data) in extra {
        out.extend(png_chunk(ty, data));
    }
    out.extend(png_chunk(b"IDAT", idat));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

#[allow(dead_code)]
/// A raw zlib stream of `n` zero bytes (stored blocks), i.e. an IDAT that
/// inflates to exactly what a small image needs.
pub fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(65535).collect()
    };
    for (i, c) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        out.extend_from_slice(&(c.len() as u16).to_le_bytes());
        out.extend_from_slice(&(!(c.len() as u16)).to_le_bytes());
        out.extend_from_slice(c);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// A TIFF/EXIF structure with random IFD entries: huge counts, offsets past
/// the end or pointing at the IFD itself, sub-IFD pointers (ExifIFD, GPS,
/// Interop) that loop, and next-IFD links that cycle.
pub fn tiff_blob(rng: &mut Rng) -> Vec<u8> {
    let le = rng.chance(50);
    let mut t: Vec<u8> = if le {
        b"II*\0".to_vec()
    } else {
        b"MM\0*".to_vec()
    };
    let w16 = |v: u16| if le { v.to_le_bytes() } else { v.to_be_bytes() };
    let w32 = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
    let ifd0 = 8u32;
    t.extend_from_slice(&w32(if rng.chance(10) {
        rng.extreme32()
    } else {
        ifd0
    }));
    const TAGS: &[u16] = &[
        0x0100, 0x0101, 0x0102, 0x0103, 0x010E, 0x010F, 0x0110, 0x0111, 0x0112, 0x0115, 0x0116,
        0x0117, 0x011A, 0x0132, 0x0201, 0x0202, 0x8769, 0x8825, 0xA005, 0x829A, 0x829D, 0x8827,
        0x8833, 0x9003, 0x9004, 0x9010, 0x9011, 0x920A, 0x927C, 0xA002, 0xA003, 0xA434, 0x0000,
        0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x0006, 0xFFFF,
    ];
    let n = if rng.chance(10) {
        rng.extreme32() as u16
    } else {
        1 + rng.below(16) as u16
    };
    t.extend_from_slice(&w16(n));
    let real = (n as usize).min(16 + rng.below(8));
    let data_at = ifd0 as usize + 2 + real * 12 + 4;
    let mut data = Vec::new();
    for _ in 0..real {
        let tag = *rng.pick(TAGS);
        let ty = if rng.chance(80) {
            1 + rng.below(12) as u16
        } else {
            rng.next() as u16
        };
        let count = match rng.below(5) {
            0 => rng.extreme32(),
            1 => rng.below(64) as u32,
            _ => 1 + rng.below(4) as u32,
        };
        let value = match rng.below(6) {
            0 => ifd0,                          // points at the IFD itself
            1 => rng.extreme32(),               // past the end
            2 => (data_at + data.len()) as u32, // real data follows
            3 => 0,
            _ => rng.next() as u32,
        };
        if value as usize == data_at + data.len() {
            let len = rng.len(64);
            let mut blob = rng.bytes(len);
            if rng.chance(30) {
                blob = b"2019:07:04 12:34:56\0".to_vec();
            }
            data.extend(blob);
        }
        t.extend_from_slice(&w16(tag));
        t.extend_from_slice(&w16(ty));
        t.extend_from_slice(&w32(count));
        t.extend_from_slice(&w32(value));
    }
    // Next IFD: none, itself (a cycle), or somewhere odd.
    let odd = rng.extreme32();
    t.extend_from_slice(&w32(*rng.pick(&[0, ifd0, odd, data_at as u32])));
    t.extend(data);
    if rng.chance(20) {
        let more = rng.len(512);
        t.extend(rng.bytes(more));
    }
    t
}

/// A JPEG segment (marker + big-endian length + payload).
pub fn segment(marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0xFF, marker];
    out.extend_from_slice(&((payload.len() + 2).min(0xFFFF) as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An ISO-BMFF box.
pub fn bmff(ty: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(ty);
    out.extend_from_slice(payload);
    out
}

/// A tiny synthetic file of some format: right magic, then a mix of
/// plausible structure and garbage. Returns (description, bytes).
pub fn synthetic(rng: &mut Rng) -> (String, Vec<u8>) {
    let garbage = |rng: &mut Rng| {
        let n = rng.len(200);
        rng.bytes(n)
    };
    match rng.below(12) {
        0 => {
            // JPEG: SOI, maybe an EXIF APP1, an SOF with random or extreme size, garbage.
            let mut b = vec![0xFF, 0xD8];
            if rng.chance(50) {
                let mut p = b"Exif\0\0".to_vec();
                p.extend(tiff_blob(rng));
                b.extend(segment(0xE1, &p));
            }
            let sof = *rng.pick(&[0xC0u8, 0xC1, 0xC2, 0xC3, 0xC9]);
            let (h, w) = if rng.chance(50) {
                (0xFFFFu16, 0xFFFFu16)
            } else {
                (rng.next() as u16, rng.next() as u16)
            };
            let comps = *rng.pick(&[1u8, 3, 4, 0, 255]);
            let mut p = vec![8];
            p.extend_from_slice(&h.to_be_bytes());
            p.extend_from_slice(&w.to_be_bytes());
            p.push(comps);
            for c in 0..comps.min(4) {
                p.extend_from_slice(&[c + 1, *rng.pick(&[0x11u8, 0x22, 0x21, 0x00, 0xFF]), 0]);
            }
            b.extend(segment(sof, &p));
            b.extend(garbage(rng));
            if rng.chance(50) {
                b.extend_from_slice(&[0xFF, 0xD9]);
            }
            ("synthetic JPEG".into(), b)
        }
        1 => {
            let (w, h) = if rng.chance(30) {
                (100_000, 100_000)
            } else {
                (rng.extreme32(), rng.extreme32())
            };
            let depth = *rng.pick(&[1u8, 2, 4, 8, 16, 0, 3]);
            let color = *rng.pick(&[0u8, 2, 3, 4, 6, 1, 7]);
            let idat = garbage(rng);
            ("synthetic PNG".into(), png(w, h, depth, color, &idat, &[]))
        }
        2 => {
            let mut b = if rng.chance(50) {
                b"GIF89a".to_vec()
            } else {
                b"GIF87a".to_vec()
            };
            b.extend_from_slice(&(rng.next() as u16).to_le_bytes());
            b.extend_from_slice(&(rng.next() as u16).to_le_bytes());
            b.extend(garbage(rng));
            ("synthetic GIF".into(), b)
        }
        3 => {
            let chunk = *rng.pick(&[b"VP8 ", b"VP8L", b"VP8X", b"ANMF", b"EXIF", b"ALPH"]);
            let body = garbage(rng);
            let mut inner = b"WEBP".to_vec();
            inner.extend_from_slice(chunk);
            let claimed = if rng.chance(30) {
                rng.extreme32()
            } else {
                body.len() as u32
            };
            inner.extend_from_slice(&claimed.to_le_bytes());
            inner.extend(body);
            let mut b = b"RIFF".to_vec();
            let riff = if rng.chance(30) {
                rng.extreme32()
            } else {
                inner.len() as u32
            };
            b.extend_from_slice(&riff.to_le_bytes());
            b.extend(inner);
            ("synthetic WebP".into(), b)
        }
        4 | 5 => ("synthetic TIFF".into(), tiff_blob(rng)),
        6 | 7 => {
            // HEIF: ftyp + meta with hdlr/pitm/iprp/ipco/ispe/ipma, sizes sometimes lying.
            let brand = *rng.pick(&[b"heic", b"mif1", b"avif", b"heix", b"msf1", b"isom"]);
            let mut ftyp = brand.to_vec();
            ftyp.extend_from_slice(&[0, 0, 0, 0]);
            ftyp.extend_from_slice(brand);
            let mut b = bmff(b"ftyp", &ftyp);
            let (w, h) = if rng.chance(30) {
                (0xFFFF_FFFF, 0xFFFF_FFFF)
            } else {
                (rng.extreme32(), rng.extreme32())
            };
            let mut ispe = vec![0, 0, 0, 0];
            ispe.extend_from_slice(&w.to_be_bytes());
            ispe.extend_from_slice(&h.to_be_bytes());
            let ipco = bmff(b"ipco", &bmff(b"ispe", &ispe));
            let mut ipma = vec![0, 0, 0, rng.byte() & 1, 0, 0, 0, 1, 0, 1, rng.byte()];
            ipma.extend(garbage(rng).into_iter().take(8));
            let mut iprp = ipco;
            iprp.extend(bmff(b"ipma", &ipma));
            let mut meta = vec![0, 0, 0, 0];
            meta.extend(bmff(b"pitm", &[0, 0, 0, 0, 0, 1]));
            meta.extend(bmff(b"iprp", &iprp));
            if rng.chance(50) {
                meta.extend(bmff(b"idat", &garbage(rng)));
            }
            let mut m = bmff(b"meta", &meta);
            if rng.chance(30) {
                // A box whose size lies: 0 (to end), 1 (64-bit size follows), huge, or smaller than its header.
                let at = rng.below(m.len().saturating_sub(8).max(1));
                let v = *rng.pick(&[0u32, 1, 7, 0xFFFF_FFFF, 0x7FFF_FFFF]);
                if at + 4 <= m.len() {
                    m[at..at + 4].copy_from_slice(&v.to_be_bytes());
                }
            }
            b.extend(m);
            if rng.chance(50) {
                b.extend(bmff(b"mdat", &garbage(rng)));
            }
            ("synthetic HEIF".into(), b)
        }
        8 => {
            // Magic only, or magic plus a few bytes.
            let magics: [&[u8]; 9] = [
                &[0xFF, 0xD8, 0xFF],
                b"\x89PNG\r\n\x1a\n",
                b"GIF89a",
                b"RIFF\0\0\0\0WEBP",
                b"II*\0",
                b"MM\0*",
                b"II+\0",
                b"\0\0\0\x18ftypheic",
                b"\0\0\0\x18ftypavif",
            ];
            let mut b = rng.pick(&magics).to_vec();
            let n = rng.below(12);
            b.extend(rng.bytes(n));
            ("magic only".into(), b)
        }
        9 => {
            // Text that looks like XMP, with tags cut and nested oddly.
            let pieces = [
                "<x:xmpmeta",
                "</x:xmpmeta>",
                "<tiff:Make",
                "</tiff:Make>",
                "<rdf:li",
                "</rdf:li>",
                ">",
                "\"",
                " ",
                "tiff:Orientation=\"",
                "exif:DateTimeOriginal=\"",
                "2019-07-04T12:34:56+02:00",
                "<exif:GPSLatitude>",
                "</exif:GPSLatitude>",
                "48,51.5N",
                "&amp;",
                "xap:CreateDate=\"",
                "\u{e9}",
                "\u{1F600}",
                "=",
            ];
            let mut s = String::from(if rng.chance(70) { "<x:xmpmeta" } else { "" });
            for _ in 0..rng.below(24) {
                s.push_str(*rng.pick(&pieces));
            }
            if rng.chance(70) {
                s.push_str("</x:xmpmeta>");
            }
            let mut b = Vec::new();
            if rng.chance(50) {
                b.extend_from_slice(&[0xFF, 0xD8]);
                let mut p = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
                p.extend_from_slice(s.as_bytes());
                b.extend(segment(0xE1, &p));
                b.extend_from_slice(&[0xFF, 0xD9]);
            } else {
                b.extend_from_slice(s.as_bytes());
            }
            ("synthetic XMP".into(), b)
        }
        10 => {
            // Canon CIFF heap in APP0, or Olympus picture info in APP12.
            let mut b = vec![0xFF, 0xD8];
            if rng.chance(50) {
                let mut p = b"II".to_vec();
                p.extend_from_slice(&(rng.extreme32().min(64)).to_le_bytes());
                p.extend_from_slice(b"HEAPJPGM");
                let len = rng.len(128);
                p.extend(rng.bytes(len));
                let near = rng.next() as u32 % 128;
                let off = *rng.pick(&[0u32, 0xFFFF_FFFF, 0x7FFF_FFFF, 4, near]);
                p.extend_from_slice(&off.to_le_bytes());
                b.extend(segment(0xE0, &p));
            } else {
                let mut p = b"[picture info]\r\n".to_vec();
                for k in ["TimeDate=", "Shutter=", "FNumber=F"] {
                    p.extend_from_slice(k.as_bytes());
                    let v = rng.pick(&[
                        "99999999999999999999",
                        "-1",
                        "NaN",
                        "inf",
                        "1e308",
                        "0",
                        "123",
                        "",
                    ]);
                    p.extend_from_slice(v.as_bytes());
                    p.extend_from_slice(b"\r\n");
                }
                b.extend(segment(0xEC, &p));
            }
            b.extend(garbage(rng));
            ("synthetic vendor block".into(), b)
        }
        _ => {
            let n = rng.len(4096);
            ("random bytes".into(), rng.bytes(n))
        }
    }
}

/// Offsets of a JPEG's marker segments up to SOS: (marker, offset of 0xFF),
/// from the SDK's walker (the one the stages use), stopping at damage.
pub fn jpeg_markers(b: &[u8]) -> Vec<(u8, usize)> {
    lumilio_sdk::jpeg::segments(b)
        .map_while(Result::ok)
        .map(|s| (s.marker, s.offset))
        .collect()
}

/// Header fields set to extremes, where the format is recognised: JPEG SOF
/// size, PNG IHDR size (with a fixed CRC), EXIF IFD counts and offsets.
pub fn extreme_header(rng: &mut Rng, b: &mut Vec<u8>) -> Option<String> {
    if b.starts_with(&[0xFF, 0xD8]) {
        let marks = jpeg_markers(b);
        if rng.chance(50)
            && let Some(&(m, at)) = marks
                .iter()
                .find(|(m, _)| matches!(m, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF))
            && at + 9 <= b.len()
        {
            let (h, w) = *rng.pick(&[
                (0xFFFFu16, 0xFFFFu16),
                (0, 0),
                (1, 0xFFFF),
                (0xFFFF, 1),
                (0, 1),
            ]);
            b[at + 5..at + 7].copy_from_slice(&h.to_be_bytes());
            b[at + 7..at + 9].copy_from_slice(&w.to_be_bytes());
            if rng.chance(30) && at + 9 < b.len() {
                b[at + 9] = *rng.pick(&[0u8, 2, 5, 255]); // component count
            }
            return Some(format!("SOF{:X} set to {w}x{h}", m & 0xF));
        }
        if let Some(&(_, at)) = marks
            .iter()
            .find(|(m, at)| *m == 0xE1 && b.get(at + 4..at + 10) == Some(b"Exif\0\0"))
        {
            let t = at + 10;
            return exif_extreme(rng, b, t).map(|s| format!("EXIF: {s}"));
        }
        return None;
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() >= 33 {
        let (w, h) = *rng.pick(&[
            (100_000u32, 100_000u32),
            (0x7FFF_FFFF, 0x7FFF_FFFF),
            (0xFFFF_FFFF, 1),
            (0, 0),
            (1, 0x7FFF_FFFF),
        ]);
        b[16..20].copy_from_slice(&w.to_be_bytes());
        b[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&b[12..29]);
        b[29..33].copy_from_slice(&crc.to_be_bytes());
        return Some(format!("PNG IHDR set to {w}x{h} with a fixed CRC"));
    }
    if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") {
        return exif_extreme(rng, b, 0).map(|s| format!("TIFF: {s}"));
    }
    None
}

/// Sets one TIFF structure field (at `t`) to an extreme: IFD0's entry count,
/// its offset (to itself or far away), an entry's count or value offset, or
/// the next-IFD link (to itself).
pub fn exif_extreme(rng: &mut Rng, b: &mut [u8], t: usize) -> Option<String> {
    let le = b.get(t..t + 2)? == b"II";
    let r32 = |b: &[u8], at: usize| {
        b.get(at..at + 4).map(|s| {
            if le {
                u32::from_le_bytes(s.try_into().unwrap())
            } else {
                u32::from_be_bytes(s.try_into().unwrap())
            }
        })
    };
    let r16 = |b: &[u8], at: usize| {
        b.get(at..at + 2).map(|s| {
            if le {
                u16::from_le_bytes(s.try_into().unwrap())
            } else {
                u16::from_be_bytes(s.try_into().unwrap())
            }
        })
    };
    let w32 = |b: &mut [u8], at: usize, v: u32| {
        if let Some(s) = b.get_mut(at..at + 4) {
            s.copy_from_slice(&if le { v.to_le_bytes() } else { v.to_be_bytes() });
        }
    };
    let w16 = |b: &mut [u8], at: usize, v: u16| {
        if let Some(s) = b.get_mut(at..at + 2) {
            s.copy_from_slice(&if le { v.to_le_bytes() } else { v.to_be_bytes() });
        }
    };
    let ifd = r32(b, t + 4)?;
    let at = t + ifd as usize;
    let n = r16(b, at)? as usize;
    match rng.below(5) {
        0 => {
            let v = *rng.pick(&[0xFFFFu16, 0x8000, 0]);
            w16(b, at, v);
            Some(format!("IFD0 entry count set to {v}"))
        }
        1 => {
            let v = *rng.pick(&[0u32, 4, 0xFFFF_FFFF, 0x7FFF_FFFF, 0xFFFF_FFF0]);
            w32(b, t + 4, v);
            Some(format!("IFD0 offset set to {v:#x}"))
        }
        2 if n > 0 => {
            let e = at + 2 + 12 * rng.below(n);
            let v = *rng.pick(&[0xFFFF_FFFFu32, 0x7FFF_FFFF, 0x1000_0000, 0x4000_0000]);
            w32(b, e + 4, v);
            Some(format!("an IFD0 entry count set to {v:#x}"))
        }
        3 if n > 0 => {
            let e = at + 2 + 12 * rng.below(n);
            let v = if rng.chance(50) { ifd } else { rng.extreme32() };
            w32(b, e + 8, v);
            // Make it an out-of-line value so the offset is followed.
            if rng.chance(50) {
                w16(b, e + 2, 2);
                w32(b, e + 4, 64);
            }
            Some(format!("an IFD0 entry value offset set to {v:#x}"))
        }
        _ => {
            let next = at + 2 + 12 * n;
            w32(b, next, ifd);
            Some("IFD0's next-IFD link points at itself".into())
        }
    }
}

/// One random mutation of `base`; returns what was done.
pub fn mutate(rng: &mut Rng, base: &[u8]) -> (String, Vec<u8>) {
    let mut b = base.to_vec();
    let mut did = Vec::new();
    // Most edits land in the headers, where the parsers are.
    let head = |rng: &mut Rng, len: usize| {
        if rng.chance(70) {
            rng.below(len.min(2048).max(1))
        } else {
            rng.below(len.max(1))
        }
    };
    for _ in 0..1 + rng.below(3) {
        if b.is_empty() {
            break;
        }
        match rng.below(9) {
            0 => {
                let k = 1 + rng.below(8);
                for _ in 0..k {
                    let i = head(rng, b.len());
                    b[i] ^= 1 << rng.below(8);
                }
                did.push(format!("{k} bit flips"));
            }
            1 => {
                let i = head(rng, b.len());
                b[i] = *rng.pick(&[0u8, 0xFF, 0x7F, 0x80, 0x01, 0xFE]);
                did.push(format!("byte {i} set"));
            }
            2 => {
                let at = rng.below(b.len() + 1);
                b.truncate(at);
                did.push(format!("truncated at {at}"));
            }
            3 => {
                let s = rng.below(b.len());
                let e = (s + 1 + rng.len(4096)).min(b.len());
                let chunk = b[s..e].to_vec();
                let at = rng.below(b.len() + 1);
                b.splice(at..at, chunk);
                did.push(format!("duplicated {s}..{e} at {at}"));
            }
            4 => {
                let s = head(rng, b.len());
                let e = (s + 1 + rng.len(4096)).min(b.len());
                b.drain(s..e);
                did.push(format!("removed {s}..{e}"));
            }
            5 => {
                let at = head(rng, b.len());
                let n = rng.len(64);
                let junk = rng.bytes(n);
                b.splice(at..at, junk);
                did.push(format!("inserted {n} random bytes at {at}"));
            }
            6 => {
                let at = head(rng, b.len());
                let v = rng.extreme32();
                let width = if rng.chance(50) { 2 } else { 4 };
                let bytes = if rng.chance(50) {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                let end = (at + width).min(b.len());
                b[at..end].copy_from_slice(&bytes[..end - at]);
                did.push(format!("{width}-byte field at {at} set to {v:#x}"));
            }
            _ => match extreme_header(rng, &mut b) {
                Some(s) => did.push(s),
                None => {
                    let at = rng.below(b.len() + 1);
                    b.truncate(at);
                    did.push(format!("truncated at {at}"));
                }
            },
        }
    }
    (did.join(", "), b)
}

/// How a case ended.
enum Outcome<T> {
    Finished(T),
    Panicked(String),
}

/// Runs every case through `call` on a worker thread, each within `limit`;
/// `check` judges a finished result (`Err` = a bad result). Panics listing
/// every failing case (with its seed and index, and its bytes saved under
/// the target directory) and stops at the first hang.
pub fn fuzz<T: Send + 'static>(
    target_tmpdir: &str,
    plugin: &str,
    inputs: impl Iterator<Item = (String, Vec<u8>)>,
    limit: Duration,
    call: fn(&[u8]) -> T,
    check: fn(&T) -> Result<(), String>,
) {
    let seed = seed();
    // `LUMILIO_FUZZ_LIMIT_MS` overrides the per-case bound (to time a slow case).
    let limit = std::env::var("LUMILIO_FUZZ_LIMIT_MS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(limit);
    let started = Instant::now();
    let mut total = 0;
    let failures_dir = PathBuf::from(target_tmpdir).join(format!("fuzz-{plugin}"));
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    // Caught panics on the worker are listed in the report, not printed;
    // any other panic (e.g. in this test itself) still prints.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("fuzz-"))
        {
            default_hook(info)
        }
    }));
    let (to_worker, jobs) = mpsc::channel::<Vec<u8>>();
    let (to_main, results) = mpsc::channel::<(Outcome<T>, Duration)>();
    let worker = std::thread::Builder::new()
        .name(format!("fuzz-{plugin}"))
        .stack_size(64 << 20)
        .spawn(move || {
            for bytes in jobs {
                let t = Instant::now();
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(&bytes)));
                let outcome = match r {
                    Ok(v) => Outcome::Finished(v),
                    Err(p) => Outcome::Panicked(
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default(),
                    ),
                };
                if to_main.send((outcome, t.elapsed())).is_err() {
                    return;
                }
            }
        })
        .unwrap();
    let mut hung = None;
    for (i, (what, bytes)) in inputs.into_iter().enumerate() {
        total += 1;
        let name = format!(
            "{plugin} case {i} (seed {seed}): {what} [{} bytes]",
            bytes.len()
        );
        let keep = bytes.clone();
        to_worker.send(bytes).unwrap();
        let save = |tag: &str| {
            let _ = std::fs::create_dir_all(&failures_dir);
            let path = failures_dir.join(format!("{tag}-seed{seed}-case{i}.bin"));
            let _ = std::fs::write(&path, &keep);
            path
        };
        match results.recv_timeout(limit) {
            Ok((outcome, took)) => {
                if took > slowest.0 {
                    slowest = (took, name.clone());
                }
                match outcome {
                    Outcome::Finished(v) => {
                        if let Err(e) = check(&v) {
                            failures.push(format!(
                                "{name}: bad result: {e} (input saved to {})",
                                save("bad").display()
                            ));
                        }
                    }
                    Outcome::Panicked(msg) => {
                        failures.push(format!(
                            "{name}: PANIC: {msg} (input saved to {})",
                            save("panic").display()
                        ));
                    }
                }
            }
            Err(_) => {
                hung = Some(format!(
                    "{name}: no answer within {limit:?} (input saved to {})",
                    save("hang").display()
                ));
                break;
            }
        }
    }
    drop(to_worker);
    if hung.is_none() {
        worker.join().unwrap();
    }
    let _ = std::panic::take_hook();
    eprintln!(
        "fuzz {plugin}: {total} cases, seed {seed}, {:.1?} in all, slowest {:.1?}: {}",
        started.elapsed(),
        slowest.0,
        slowest.1
    );
    if let Some(h) = hung {
        failures.push(h);
    }
    assert!(
        failures.is_empty(),
        "{} of {total} fuzz cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The generated case list: `n` cases mixing mutated samples, synthetic
/// files and random bytes, plus the fixed regression `extra` cases first.
pub fn generate(
    n: usize,
    samples: &[(String, Vec<u8>)],
    extra: Vec<(String, Vec<u8>)>,
) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
    let mut rng = Rng::new(seed());
    let fixed = extra.into_iter().chain(
        samples
            .iter()
            .map(|(name, b)| (format!("sample {name} as is"), b.clone())),
    );
    let random = std::iter::from_fn(move || {
        let pick = rng.below(10);
        Some(if pick < 6 && !samples.is_empty() {
            let (name, base) = rng.pick(samples);
            let (did, b) = mutate(&mut rng, base);
            (format!("sample {name}: {did}"), b)
        } else if pick < 9 {
            let (what, mut b) = synthetic(&mut rng);
            let what = if rng.chance(30) && !b.is_empty() {
                let (did, m) = mutate(&mut rng, &b);
                b = m;
                format!("{what}, then {did}")
            } else {
                what
            };
            (what, b)
        } else {
            let n = rng.len(2048);
            ("random bytes".into(), rng.bytes(n))
        })
    });
    // The fixed cases count towards `n`, but are always all run.
    let fixed: Vec<_> = fixed.collect();
    let rest = n.saturating_sub(fixed.len());
    fixed.into_iter().chain(random.take(rest))
}

#[allow(dead_code)]
/// A `Result` from a stage is clean when it is `Ok` or carries a reason.
pub fn clean_error(reason: &str) -> Result<(), String> {
    if reason.trim().is_empty() {
        Err("a StageError with an empty reason".into())
    } else {
        Ok(())
    }
}

/// The ISO-BMFF boxes of `b` (HEIF, AVIF, MP4), depth first: `(type, start,
/// header length, end)`. Container boxes (`meta`, `iprp`, `ipco`, `iinf`,
/// `dinf`, `iref`) are entered; a size that runs past its parent ends the walk
/// of that level, so damaged files still yield what is readable.
pub fn bmff_boxes(b: &[u8]) -> Vec<([u8; 4], usize, usize, usize)> {
    fn walk(b: &[u8], start: usize, end: usize, depth: u32, out: &mut Vec<([u8; 4], usize, usize, usize)>) {
        let mut i = start;
        while i + 8 <= end && depth < 8 {
            let size = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
            let ty = [b[i + 4], b[i + 5], b[i + 6], b[i + 7]];
            let (size, hdr) = match size {
                0 => (end - i, 8),
                1 if i + 16 <= end => (
                    u64::from_be_bytes(b[i + 8..i + 16].try_into().unwrap()) as usize,
                    16,
                ),
                s => (s, 8),
            };
            if size < hdr || i.saturating_add(size) > end {
                return;
            }
            out.push((ty, i, hdr, i + size));
            // Full boxes among containers carry 4 bytes of version/flags first.
            let skip = match &ty {
                b"meta" => Some(4),
                b"iinf" => Some(if b.get(i + hdr) == Some(&0) { 6 } else { 8 }),
                b"iref" => Some(4),
                b"iprp" | b"ipco" | b"dinf" => Some(0),
                _ => None,
            };
            if let Some(skip) = skip {
                walk(b, i + hdr + skip, i + size, depth + 1, out);
            }
            i += size;
        }
    }
    let mut out = Vec::new();
    walk(b, 0, b.len(), 0, &mut out);
    out
}

/// One structure-aware change to an ISO-BMFF file: a box's size, type or
/// first payload fields set to an extreme, a box cut, removed or repeated, or
/// bytes inside one box flipped. Returns (what was done, the new bytes).
pub fn bmff_mutate(rng: &mut Rng, base: &[u8]) -> (String, Vec<u8>) {
    let boxes = bmff_boxes(base);
    if boxes.is_empty() {
        return mutate(rng, base);
    }
    let (ty, start, hdr, end) = *rng.pick(&boxes);
    let name = String::from_utf8_lossy(&ty).to_string();
    let mut b = base.to_vec();
    let did = match rng.below(7) {
        0 => {
            let v = rng.extreme32();
            b[start..start + 4].copy_from_slice(&v.to_be_bytes());
            format!("{name} size = {v}")
        }
        1 => {
            let types: [&[u8; 4]; 10] =
                [b"grid", b"hvc1", b"iden", b"iovl", b"av01", b"mime", b"ispe", b"irot", b"meta", b"\0\0\0\0"];
            let t = *rng.pick(&types);
            b[start + 4..start + 8].copy_from_slice(t);
            format!("{name} renamed {}", String::from_utf8_lossy(t))
        }
        2 => {
            // A 16- or 32-bit field early in the payload (counts, ids, widths).
            let at = start + hdr + rng.below((end - start - hdr).clamp(1, 24));
            let v = rng.extreme32().to_be_bytes();
            let n = if rng.chance(50) { 2 } else { 4 };
            for k in 0..n {
                if let Some(x) = b.get_mut(at + k) {
                    *x = v[4 - n + k];
                }
            }
            format!("{name} field at +{} = extreme", at - start)
        }
        3 => {
            let cut = start + rng.below(end - start);
            b.truncate(cut);
            format!("cut inside {name} at {cut}")
        }
        4 => {
            b.drain(start..end);
            format!("{name} removed")
        }
        5 => {
            let copy = b[start..end].to_vec();
            b.splice(end..end, copy);
            format!("{name} repeated")
        }
        _ => {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let at = start + rng.below(end - start);
                b[at] ^= 1 << rng.below(8);
            }
            format!("{n} bits flipped in {name}")
        }
    };
    (did, b)
}
