//! Format detection by magic bytes and header-only parsing of dimensions and
//! structure. Nothing here decodes pixel data; every read is bounds-checked so
//! hostile input yields an `Err`, never a panic.

use std::fmt;

/// A supported image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JPEG / JFIF / Exif.
    Jpeg,
    /// PNG (and APNG).
    Png,
    /// GIF 87a/89a.
    Gif,
    /// WebP (lossy, lossless or extended).
    WebP,
    /// Classic or Big TIFF.
    Tiff,
    /// HEIF with HEVC coding (brands heic, heix, ...).
    Heic,
    /// HEIF with another or unknown coding (brand mif1 only).
    Heif,
    /// AVIF (AV1 in HEIF).
    Avif,
}

impl Format {
    /// The IANA media type.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Gif => "image/gif",
            Format::WebP => "image/webp",
            Format::Tiff => "image/tiff",
            Format::Heic => "image/heic",
            Format::Heif => "image/heif",
            Format::Avif => "image/avif",
        }
    }

    /// A short human name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::Gif => "GIF",
            Format::WebP => "WebP",
            Format::Tiff => "TIFF",
            Format::Heic => "HEIC",
            Format::Heif => "HEIF",
            Format::Avif => "AVIF",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The list shown to users when a file is not supported.
pub const SUPPORTED: &str = "JPEG, PNG, WebP, GIF, TIFF, HEIC/HEIF, AVIF";

/// Pixel dimensions as stored in the file (before EXIF orientation; HEIF `irot` applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Recognises a supported format from the first bytes, or returns `None`.
pub fn detect(b: &[u8]) -> Option<Format> {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(Format::Jpeg);
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(Format::Png);
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return Some(Format::Gif);
    }
    if b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        return Some(Format::WebP);
    }
    if b.starts_with(b"II*\0")
        || b.starts_with(b"MM\0*")
        || b.starts_with(b"II+\0")
        || b.starts_with(b"MM\0+")
    {
        return Some(Format::Tiff);
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        return heif_brand(b);
    }
    None
}

/// Classifies an ISO-BMFF `ftyp` box by its major and compatible brands.
fn heif_brand(b: &[u8]) -> Option<Format> {
    let size = be32(b, 0).ok()? as usize;
    // (Not `clamp(16, len)`: that panics on 12..15-byte files.)
    let end = size.min(b.len()).min(4096);
    let mut brands = vec![&b[8..12]];
    // Compatible brands follow the 4-byte minor version.
    let mut i = 16;
    while i + 4 <= end {
        brands.push(&b[i..i + 4]);
        i += 4;
    }
    let has = |names: &[&[u8]]| brands.iter().any(|br| names.contains(br));
    // AVIF first: AVIF files also list mif1.
    if has(&[b"avif", b"avis"]) {
        Some(Format::Avif)
    } else if has(&[
        b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs",
    ]) {
        Some(Format::Heic)
    } else if has(&[b"mif1", b"msf1", b"mif2"]) {
        Some(Format::Heif)
    } else {
        None
    }
}

/// Describes unsupported bytes for the rejection message.
pub fn describe_unknown(b: &[u8]) -> String {
    let s = |x: &str| x.to_string();
    if b.is_empty() {
        return s("an empty file");
    }
    let starts = |m: &[u8]| b.starts_with(m);
    if starts(b"%PDF") {
        return s("a PDF document");
    }
    if starts(b"PK\x03\x04") {
        return s("a ZIP archive");
    }
    if starts(&[0x1F, 0x8B]) {
        return s("gzip-compressed data");
    }
    if starts(b"BM") && b.len() > 14 {
        return s("a BMP image, which is not supported");
    }
    if starts(b"8BPS") {
        return s("a Photoshop document");
    }
    if starts(&[0xFF, 0x0A]) || starts(b"\0\0\0\x0CJXL \r\n\x87\n") {
        return s("a JPEG XL image, which is not supported");
    }
    if starts(&[0, 0, 1, 0]) {
        return s("a Windows icon");
    }
    if starts(b"\x7FELF") || starts(b"MZ") {
        return s("an executable");
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        let brand = String::from_utf8_lossy(&b[8..12]).trim().to_string();
        return format!("an ISO media file with brand '{brand}', likely a video");
    }
    if starts(b"RIFF") {
        return s("a RIFF file that is not WebP (audio or video?)");
    }
    if starts(&[0xFF, 0xD8]) {
        return s("a truncated JPEG start marker");
    }
    let head = &b[..b.len().min(1024)];
    let text = head
        .iter()
        .filter(|&&c| {
            c == b'\n' || c == b'\r' || c == b'\t' || (0x20..0x7F).contains(&c) || c >= 0x80
        })
        .count();
    if text * 100 >= head.len() * 95 {
        let lower = String::from_utf8_lossy(head).to_ascii_lowercase();
        if lower.contains("<svg") {
            return s("an SVG drawing, which is not supported");
        }
        if lower.trim_start().starts_with("<!doctype html") || lower.contains("<html") {
            return s("an HTML page");
        }
        return s("text/plain-ish bytes");
    }
    s("unrecognised binary data")
}

/// A header parse failure; the message completes "the FORMAT file ...".
pub type ParseResult<T> = Result<T, String>;

fn be16(b: &[u8], at: usize) -> ParseResult<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or_else(|| "ends inside its header".to_string())
}
fn be32(b: &[u8], at: usize) -> ParseResult<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| "ends inside its header".to_string())
}
fn be64(b: &[u8], at: usize) -> ParseResult<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_be_bytes(s.try_into().unwrap_or([0; 8])))
        .ok_or_else(|| "ends inside its header".to_string())
}
fn le16(b: &[u8], at: usize) -> ParseResult<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| "ends inside its header".to_string())
}
fn le24(b: &[u8], at: usize) -> ParseResult<u32> {
    b.get(at..at + 3)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], 0]))
        .ok_or_else(|| "ends inside its header".to_string())
}
fn le32(b: &[u8], at: usize) -> ParseResult<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| "ends inside its header".to_string())
}

/// Reads the dimensions from the header only.
pub fn dimensions(f: Format, b: &[u8]) -> ParseResult<Dims> {
    let d = match f {
        Format::Jpeg => jpeg_header(b)?.0,
        Format::Png => png_dims(b)?,
        Format::Gif => gif_dims(b)?,
        Format::WebP => webp_dims(b)?,
        Format::Tiff => Tiff::new(b)?.dims()?,
        Format::Heic | Format::Heif | Format::Avif => heif_dims(b)?,
    };
    if d.width == 0 || d.height == 0 {
        return Err(format!(
            "declares an empty size of {}x{} pixels",
            d.width, d.height
        ));
    }
    Ok(d)
}

/// Runs the cheap integrity check (truncation, missing end marker, bad CRC).
/// Call only after `dimensions` succeeded and the pixel limit passed.
pub fn integrity(f: Format, b: &[u8]) -> ParseResult<()> {
    match f {
        Format::Jpeg => jpeg_integrity(b),
        Format::Png => png_integrity(b),
        Format::Gif => gif_integrity(b),
        Format::WebP => webp_integrity(b),
        Format::Tiff => Tiff::new(b)?.integrity(),
        Format::Heic | Format::Heif | Format::Avif => heif_integrity(b),
    }
}

// ---------- JPEG ----------

/// Walks the marker segments up to the first SOS (the SDK's walker). Returns
/// the frame size and the offset where entropy-coded data starts.
fn jpeg_header(b: &[u8]) -> ParseResult<(Dims, usize)> {
    let mut dims = None;
    for seg in lumilio_sdk::jpeg::segments(b) {
        let seg = seg.map_err(|e| e.to_string())?;
        let m = seg.marker;
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        if matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC) {
            if seg.payload.len() < 6 {
                return Err("has a frame header (SOF) that is too short".into());
            }
            let h = be16(seg.payload, 1)? as u32;
            let w = be16(seg.payload, 3)? as u32;
            if h == 0 {
                return Err("leaves its height to a DNL marker, which is not supported".into());
            }
            if dims.is_none() {
                dims = Some(Dims {
                    width: w,
                    height: h,
                });
            }
        }
        if m == 0xDA {
            let Some(d) = dims else {
                return Err("has no frame header (SOF) before its image data".into());
            };
            return Ok((d, seg.end()));
        }
    }
    // The walk only ends without SOS by an error, returned above.
    Err("ends before the image data (truncated)".into())
}

fn jpeg_integrity(b: &[u8]) -> ParseResult<()> {
    let (_, data) = jpeg_header(b)?;
    // Byte stuffing guarantees FF D9 never occurs inside entropy-coded data,
    // so its absence after the first SOS means the file was cut short.
    // Search from the end: the EOI is almost always in the last bytes.
    let rest = &b[data..];
    if rest.windows(2).rev().any(|w| w == [0xFF, 0xD9]) {
        Ok(())
    } else {
        Err("has no end-of-image marker (truncated)".into())
    }
}

// ---------- PNG ----------

fn png_dims(b: &[u8]) -> ParseResult<Dims> {
    if be32(b, 8)? != 13 || b.get(12..16) != Some(b"IHDR") {
        return Err("does not start with an IHDR chunk".into());
    }
    let w = be32(b, 16)?;
    let h = be32(b, 20)?;
    let crc = be32(b, 29)?;
    if crc32(&b[12..29]) != crc {
        return Err("has a corrupt IHDR chunk (CRC mismatch)".into());
    }
    if w > i32::MAX as u32 || h > i32::MAX as u32 {
        return Err("declares an impossible size".into());
    }
    Ok(Dims {
        width: w,
        height: h,
    })
}

fn png_integrity(b: &[u8]) -> ParseResult<()> {
    // Walk chunk headers only (no CRCs beyond IHDR) until IEND.
    let mut i = 8usize;
    let mut seen_idat = false;
    loop {
        let len =
            be32(b, i).map_err(|_| "ends without an IEND chunk (truncated)".to_string())? as usize;
        let ty = b
            .get(i + 4..i + 8)
            .ok_or("ends without an IEND chunk (truncated)")?;
        let end = i
            .checked_add(12)
            .and_then(|x| x.checked_add(len))
            .ok_or("has a corrupt chunk length")?;
        if end > b.len() {
            return Err("ends inside a chunk (truncated)".into());
        }
        if !ty.iter().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!("has a corrupt chunk at byte {i}"));
        }
        match ty {
            b"IDAT" => seen_idat = true,
            b"IEND" if !seen_idat => return Err("has no image data (IDAT)".into()),
            b"IEND" => return Ok(()),
            _ => {}
        }
        i = end;
    }
}

/// CRC-32 (IEEE), bitwise; only used on the 17-byte IHDR so speed is moot.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in data {
        c ^= x as u32;
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

// ---------- GIF ----------

fn gif_dims(b: &[u8]) -> ParseResult<Dims> {
    Ok(Dims {
        width: le16(b, 6)? as u32,
        height: le16(b, 8)? as u32,
    })
}

fn gif_integrity(b: &[u8]) -> ParseResult<()> {
    const TRUNC: &str = "ends before its trailer (truncated)";
    let flags = *b.get(10).ok_or(TRUNC)?;
    let mut i = 13usize;
    if flags & 0x80 != 0 {
        i += 3 << ((flags & 7) + 1);
    }
    let skip_sub_blocks = |mut i: usize| -> ParseResult<usize> {
        loop {
            let n = *b.get(i).ok_or(TRUNC)? as usize;
            i += 1 + n;
            if n == 0 {
                return Ok(i);
            }
        }
    };
    let mut frames = 0;
    loop {
        match *b.get(i).ok_or(TRUNC)? {
            0x3B if frames == 0 => return Err("contains no image".into()),
            0x3B => return Ok(()),
            0x21 => i = skip_sub_blocks(i + 2)?,
            0x2C => {
                let f = *b.get(i + 9).ok_or(TRUNC)?;
                i += 10;
                if f & 0x80 != 0 {
                    i += 3 << ((f & 7) + 1);
                }
                i = skip_sub_blocks(i + 1)?; // after LZW minimum code size
                frames += 1;
            }
            x => return Err(format!("has a corrupt block (0x{x:02X}) at byte {i}")),
        }
    }
}

// ---------- WebP ----------

fn webp_dims(b: &[u8]) -> ParseResult<Dims> {
    let chunk = b.get(12..16).ok_or("ends inside its header")?;
    match chunk {
        b"VP8 " => {
            // Frame tag (3 bytes), start code 9D 01 2A, then 14-bit sizes.
            if b.get(23..26) != Some(&[0x9D, 0x01, 0x2A]) {
                return Err("has a corrupt VP8 frame header".into());
            }
            Ok(Dims {
                width: (le16(b, 26)? & 0x3FFF) as u32,
                height: (le16(b, 28)? & 0x3FFF) as u32,
            })
        }
        b"VP8L" => {
            if b.get(20) != Some(&0x2F) {
                return Err("has a corrupt VP8L header".into());
            }
            let v = le32(b, 21)?;
            Ok(Dims {
                width: (v & 0x3FFF) + 1,
                height: ((v >> 14) & 0x3FFF) + 1,
            })
        }
        b"VP8X" => Ok(Dims {
            width: le24(b, 24)? + 1,
            height: le24(b, 27)? + 1,
        }),
        _ => Err("has an unknown first chunk".into()),
    }
}

fn webp_integrity(b: &[u8]) -> ParseResult<()> {
    let riff = le32(b, 4)? as usize;
    if riff.saturating_add(8) > b.len() {
        return Err(format!(
            "is {} bytes but its header says {} (truncated)",
            b.len(),
            riff + 8
        ));
    }
    // Every chunk must fit inside the RIFF payload.
    let end = riff + 8;
    let mut i = 12usize;
    let mut has_image = false;
    while i + 8 <= end {
        let ty = &b[i..i + 4];
        let len = le32(b, i + 4)? as usize;
        if matches!(ty, b"VP8 " | b"VP8L" | b"ANMF") {
            has_image = true;
        }
        i = i
            .saturating_add(8)
            .saturating_add(len)
            .saturating_add(len & 1);
        if i > end {
            return Err("ends inside a chunk (truncated)".into());
        }
    }
    if !has_image {
        return Err("contains no image data".into());
    }
    Ok(())
}

// ---------- TIFF ----------

struct Tiff<'a> {
    b: &'a [u8],
    le: bool,
    big: bool,
    ifd0: u64,
}

impl<'a> Tiff<'a> {
    fn new(b: &'a [u8]) -> ParseResult<Self> {
        let le = b.starts_with(b"II");
        let mut t = Tiff {
            b,
            le,
            big: false,
            ifd0: 0,
        };
        let magic = t.u16(2)?;
        if magic == 43 {
            t.big = true;
            t.ifd0 = t.u64(8)?;
        } else {
            t.ifd0 = t.u32(4)? as u64;
        }
        if t.ifd0 < 8 || t.ifd0 >= b.len() as u64 {
            return Err("points to a first directory (IFD0) outside the file".into());
        }
        Ok(t)
    }
    fn u16(&self, at: usize) -> ParseResult<u16> {
        if self.le {
            le16(self.b, at)
        } else {
            be16(self.b, at)
        }
    }
    fn u32(&self, at: usize) -> ParseResult<u32> {
        if self.le {
            le32(self.b, at)
        } else {
            be32(self.b, at)
        }
    }
    fn u64(&self, at: usize) -> ParseResult<u64> {
        if self.le {
            self.b
                .get(at..at + 8)
                .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
                .ok_or_else(|| "ends inside its header".into())
        } else {
            be64(self.b, at)
        }
    }

    /// Calls `f(tag, type, count, value_offset_field_pos)` for each IFD0 entry.
    fn entries(
        &self,
        mut f: impl FnMut(u16, u16, u64, usize) -> ParseResult<()>,
    ) -> ParseResult<()> {
        let at = self.ifd0 as usize;
        let (n, first, size) = if self.big {
            (self.u64(at)?, at + 8, 20)
        } else {
            (self.u16(at)? as u64, at + 2, 12)
        };
        if n == 0 || n > 4096 || first as u64 + n * size as u64 > self.b.len() as u64 {
            return Err("has a corrupt first directory (IFD0)".into());
        }
        for k in 0..n as usize {
            let e = first + k * size;
            let tag = self.u16(e)?;
            let ty = self.u16(e + 2)?;
            let count = if self.big {
                self.u64(e + 4)?
            } else {
                self.u32(e + 4)? as u64
            };
            f(tag, ty, count, if self.big { e + 12 } else { e + 8 })?;
        }
        Ok(())
    }

    /// Reads value `idx` of an integer array entry (SHORT, LONG or LONG8).
    fn value(&self, ty: u16, count: u64, field: usize, idx: u64) -> ParseResult<u64> {
        let width = match ty {
            3 => 2,
            4 | 13 => 4,
            16 => 8,
            _ => return Err(format!("has an unexpected field type {ty}")),
        };
        let inline = if self.big { 8 } else { 4 };
        let base = if count * width <= inline {
            field as u64
        } else if self.big {
            self.u64(field)?
        } else {
            self.u32(field)? as u64
        };
        let at = usize::try_from(base + idx * width)
            .map_err(|_| "has an offset outside the file".to_string())?;
        match width {
            2 => Ok(self.u16(at)? as u64),
            4 => Ok(self.u32(at)? as u64),
            _ => self.u64(at),
        }
    }

    fn dims(&self) -> ParseResult<Dims> {
        let (mut w, mut h) = (None, None);
        self.entries(|tag, ty, count, field| {
            if count >= 1 && (tag == 256 || tag == 257) {
                let v = self.value(ty, count, field, 0)?;
                let v = u32::try_from(v).map_err(|_| "declares an impossible size".to_string())?;
                if tag == 256 { w = Some(v) } else { h = Some(v) }
            }
            Ok(())
        })?;
        match (w, h) {
            (Some(width), Some(height)) => Ok(Dims { width, height }),
            _ => Err("has no ImageWidth/ImageLength in its first directory".into()),
        }
    }

    /// Checks that every strip or tile of IFD0 lies inside the file.
    fn integrity(&self) -> ParseResult<()> {
        let (mut offs, mut lens) = (None, None);
        self.entries(|tag, ty, count, field| {
            match tag {
                273 | 324 => offs = Some((ty, count, field)),
                279 | 325 => lens = Some((ty, count, field)),
                _ => {}
            }
            Ok(())
        })?;
        let (Some((oty, on, of)), Some((lty, ln, lf))) = (offs, lens) else {
            return Err("has no strip or tile offsets in its first directory".into());
        };
        if on != ln || on == 0 || on > 1 << 24 {
            return Err("has mismatched strip/tile tables".into());
        }
        let len = self.b.len() as u64;
        for k in 0..on {
            let o = self.value(oty, on, of, k)?;
            let n = self.value(lty, ln, lf, k)?;
            if o.saturating_add(n) > len {
                return Err("has image data past the end of the file (truncated)".into());
            }
        }
        Ok(())
    }
}

// ---------- HEIF / AVIF (ISO-BMFF) ----------

/// One ISO-BMFF box: type and payload range within the buffer.
struct BoxRef {
    ty: [u8; 4],
    body: std::ops::Range<usize>,
}

/// Lists the boxes in `b[range]`; fails if a box overruns the range.
fn boxes(b: &[u8], range: std::ops::Range<usize>) -> ParseResult<Vec<BoxRef>> {
    let mut out = Vec::new();
    let mut i = range.start;
    while i < range.end {
        if range.end - i < 8 {
            return Err("ends inside a box header (truncated)".into());
        }
        let size32 = be32(b, i)? as u64;
        let mut ty = [0u8; 4];
        ty.copy_from_slice(&b[i + 4..i + 8]);
        let (hdr, size) = match size32 {
            0 => (8, (range.end - i) as u64),
            1 => (16, be64(b, i + 8)?),
            n => (8, n),
        };
        if size < hdr as u64 || size > (range.end - i) as u64 {
            let name = String::from_utf8_lossy(&ty).into_owned();
            return Err(format!(
                "has a '{name}' box that runs past its end (truncated)"
            ));
        }
        let end = i + size as usize;
        out.push(BoxRef {
            ty,
            body: i + hdr..end,
        });
        i = end;
        if out.len() > 100_000 {
            return Err("has too many boxes".into());
        }
    }
    Ok(out)
}

fn find<'a>(list: &'a [BoxRef], ty: &[u8; 4]) -> Option<&'a BoxRef> {
    list.iter().find(|x| &x.ty == ty)
}

fn heif_dims(b: &[u8]) -> ParseResult<Dims> {
    // Only the top level up to `meta` has to be intact for the header read;
    // a truncated mdat is reported by `heif_integrity`.
    let mut i = 0usize;
    let meta = loop {
        if i + 8 > b.len() {
            return Err("has no 'meta' box".into());
        }
        let size32 = be32(b, i)? as u64;
        let (hdr, size) = match size32 {
            0 => (8, (b.len() - i) as u64),
            1 => (16, be64(b, i + 8)?),
            n => (8, n),
        };
        if size < hdr || size > (b.len() - i) as u64 {
            return Err("has a box that runs past its end (truncated)".into());
        }
        if &b[i + 4..i + 8] == b"meta" {
            break i + hdr as usize..i + size as usize;
        }
        i += size as usize;
    };
    // `meta` is a full box: skip version and flags.
    let children = boxes(b, meta.start + 4..meta.end)?;
    let primary = find(&children, b"pitm").and_then(|p| {
        let v = *b.get(p.body.start)?;
        if v == 0 {
            be16(b, p.body.start + 4).ok().map(u32::from)
        } else {
            be32(b, p.body.start + 4).ok()
        }
    });
    let iprp = find(&children, b"iprp").ok_or("has no item properties ('iprp')")?;
    let iprp_children = boxes(b, iprp.body.clone())?;
    let ipco = find(&iprp_children, b"ipco").ok_or("has no item property container ('ipco')")?;
    let props = boxes(b, ipco.body.clone())?;
    let ispe_of = |p: &BoxRef| -> Option<Dims> {
        // Full box header (4 bytes), then width and height.
        Some(Dims {
            width: be32(b, p.body.start + 4).ok()?,
            height: be32(b, p.body.start + 8).ok()?,
        })
    };
    // Preferred: the ispe associated with the primary item via ipma, turned by
    // its `irot`: the rotation is part of the HEIF image (readers must apply
    // it), so a portrait iPhone photo is 3024 × 4032 as libheif reports it.
    if let (Some(primary), Some(ipma)) = (primary, find(&iprp_children, b"ipma")) {
        if let Some(idx) = ipma_props(b, ipma, primary) {
            let of_item = || idx.iter().filter_map(|&i| props.get(i.wrapping_sub(1) as usize));
            let quarter_turns = of_item()
                .find(|p| &p.ty == b"irot")
                .and_then(|p| b.get(p.body.start))
                .map_or(0, |angle| angle & 3);
            if let Some(d) = of_item().filter(|p| &p.ty == b"ispe").find_map(ispe_of) {
                return Ok(if quarter_turns % 2 == 1 {
                    Dims { width: d.height, height: d.width }
                } else {
                    d
                });
            }
        }
    }
    // Fallback: the largest ispe (grids are larger than their tiles).
    props
        .iter()
        .filter(|p| &p.ty == b"ispe")
        .filter_map(ispe_of)
        .max_by_key(|d| d.width as u64 * d.height as u64)
        .ok_or_else(|| "has no image size property ('ispe')".to_string())
}

/// Property indices (1-based) associated with `item` in an `ipma` box.
fn ipma_props(b: &[u8], ipma: &BoxRef, item: u32) -> Option<Vec<u16>> {
    let start = ipma.body.start;
    let version = *b.get(start)?;
    let flags = be32(b, start).ok()? & 0x00FF_FFFF;
    let n = be32(b, start + 4).ok()?;
    let mut i = start + 8;
    for _ in 0..n.min(1 << 20) {
        let id = if version < 1 {
            let v = be16(b, i).ok()? as u32;
            i += 2;
            v
        } else {
            let v = be32(b, i).ok()?;
            i += 4;
            v
        };
        let count = *b.get(i)? as usize;
        i += 1;
        let mut idx = Vec::with_capacity(count);
        for _ in 0..count {
            if flags & 1 != 0 {
                idx.push(be16(b, i).ok()? & 0x7FFF);
                i += 2;
            } else {
                idx.push((*b.get(i)? & 0x7F) as u16);
                i += 1;
            }
        }
        if i > ipma.body.end {
            return None;
        }
        if id == item {
            return Some(idx);
        }
    }
    None
}

fn heif_integrity(b: &[u8]) -> ParseResult<()> {
    let top = boxes(b, 0..b.len())?;
    if find(&top, b"mdat").is_none() && find(&top, b"idat").is_none() {
        // Images may live in meta/idat, but a file with neither holds nothing.
        let meta = find(&top, b"meta").ok_or("has no 'meta' box")?;
        let inner = boxes(b, meta.body.start + 4..meta.body.end)?;
        if find(&inner, b"idat").is_none() {
            return Err("contains no image data ('mdat')".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn unknown_text_is_described() {
        assert_eq!(describe_unknown(b"hello world\n"), "text/plain-ish bytes");
        assert_eq!(describe_unknown(b""), "an empty file");
        assert_eq!(describe_unknown(b"%PDF-1.7"), "a PDF document");
    }
}
