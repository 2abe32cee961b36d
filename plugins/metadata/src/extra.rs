//! Fallback sources for files whose EXIF lacks a field: the XMP packet, and
//! three old vendor formats that exiftool also reads (Canon CIFF in JPEG
//! APP0, Olympus "[picture info]" in APP12, Reconyx maker notes). Each reader
//! is bounds-checked and returns `None` on anything unexpected.

/// An XMP packet as text.
pub struct Xmp(String);

impl Xmp {
    /// Finds the first `x:xmpmeta` packet: in a JPEG's APP1 segments (so the
    /// entropy-coded data is never scanned), elsewhere anywhere in the file.
    pub fn find(bytes: &[u8]) -> Option<Xmp> {
        if bytes.starts_with(&[0xFF, 0xD8]) {
            return jpeg_segments(bytes)
                .filter(|(m, _)| *m == 0xE1)
                .find_map(|(_, p)| Self::scan(p));
        }
        Self::scan(bytes)
    }

    fn scan(bytes: &[u8]) -> Option<Xmp> {
        let start = find(bytes, b"<x:xmpmeta")?;
        let len = find(&bytes[start..], b"</x:xmpmeta>")?;
        Some(Xmp(
            String::from_utf8_lossy(&bytes[start..start + len]).into_owned()
        ))
    }

    /// The value of a simple property, as an attribute (`ns:Name="v"`), an
    /// element (`<ns:Name>v</ns:Name>`), or the first `rdf:li` inside it.
    pub fn get(&self, name: &str) -> Option<String> {
        // Adobe wrote the xmp: namespace with the prefix xap: until ~2006.
        self.get_exact(name).or_else(|| {
            self.get_exact(&name.replacen("xmp:", "xap:", 1))
                .filter(|_| name.starts_with("xmp:"))
        })
    }

    fn get_exact(&self, name: &str) -> Option<String> {
        let s = &self.0;
        let attr = format!("{name}=\"");
        if let Some(i) = s.find(&attr) {
            let rest = &s[i + attr.len()..];
            let v = &rest[..rest.find('"')?];
            return clean(v);
        }
        let open = format!("<{name}");
        let close = format!("</{name}>");
        let i = s.find(&open)?;
        let after = &s[i + open.len()..];
        // Skip to the end of the opening tag; reject prefixes of longer names.
        if !after.starts_with(['>', ' ', '\t', '\r', '\n']) {
            return None;
        }
        let body_start = after.find('>')? + 1;
        // `get`, not indexing: a closing tag before the end of the opening
        // one (`<a </a>>`, `<rdf:li</rdf:li>`) must not panic.
        let body = after.get(body_start..after.find(&close)?)?;
        if let Some(li) = body.find("<rdf:li") {
            let li = &body[li..];
            let v = li.get(li.find('>')? + 1..li.find("</rdf:li>")?)?;
            return clean(v);
        }
        clean(body)
    }
}

fn clean(v: &str) -> Option<String> {
    let v = v
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'");
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses an XMP number: an integer, a decimal or a rational `a/b`.
pub fn number(s: &str) -> Option<f64> {
    let s = s.trim();
    let v = match s.split_once('/') {
        Some((a, b)) => {
            let (a, b): (f64, f64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if b == 0.0 {
                return None;
            }
            a / b
        }
        None => s.parse().ok()?,
    };
    v.is_finite().then_some(v)
}

/// Parses an XMP GPS coordinate `DDD,MM,SSk` or `DDD,MM.mmk` (k = N/S/E/W).
pub fn gps(s: &str) -> Option<f64> {
    let s = s.trim();
    let dir = s.chars().last()?;
    let body = &s[..s.len() - dir.len_utf8()];
    let parts: Vec<f64> = body
        .split(',')
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    let v = parts.first()?
        + parts.get(1).unwrap_or(&0.0) / 60.0
        + parts.get(2).unwrap_or(&0.0) / 3600.0;
    match dir {
        'N' | 'E' => Some(v),
        'S' | 'W' => Some(-v),
        _ => None,
    }
}

/// Formats a Unix time as `YYYY-MM-DDTHH:MM:SS` (UTC, as exiftool does).
pub fn unix_to_iso(t: i64) -> Option<String> {
    if !(0..=253_402_300_799).contains(&t) {
        return None;
    }
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}

/// JPEG marker segments before SOS as (marker, payload), through the SDK's
/// walker; a damaged header ends the walk (these are fallbacks, not checks).
fn jpeg_segments(b: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    lumilio_sdk::jpeg::segments(b)
        .map_while(Result::ok)
        .map(|s| (s.marker, s.payload))
}

/// Fields from a Canon CIFF heap embedded in a JPEG APP0 segment.
#[derive(Debug, Default)]
pub struct Ciff {
    /// From CanonRawMakeModel.
    pub make: Option<String>,
    /// From CanonRawMakeModel.
    pub model: Option<String>,
    /// From TimeStamp (Unix time).
    pub taken_at: Option<String>,
    /// From FocalLength, in mm.
    pub focal_length: Option<f64>,
}

impl Ciff {
    /// Reads the CIFF heap of a JPEG, if it has one.
    pub fn read(b: &[u8]) -> Option<Ciff> {
        let (_, p) =
            jpeg_segments(b).find(|(m, p)| *m == 0xE0 && p.get(6..14) == Some(b"HEAPJPGM"))?;
        if !p.starts_with(b"II") {
            return None; // every CIFF-in-JPEG seen is little-endian
        }
        let hlen = u32::from_le_bytes(p.get(2..6)?.try_into().ok()?) as usize;
        let mut out = Ciff::default();
        heap(p.get(hlen..)?, &mut out, 0);
        Some(out)
    }
}

fn heap(h: &[u8], out: &mut Ciff, depth: u32) -> Option<()> {
    if depth > 4 || h.len() < 4 {
        return None;
    }
    let le32 = |at: usize| {
        h.get(at..at + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let le16 = |at: usize| h.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let dir = le32(h.len() - 4)?;
    let n = le16(dir)? as usize;
    for k in 0..n.min(256) {
        let e = dir + 2 + k * 10;
        let tag = le16(e)?;
        // Bit 14 set: the value sits in the entry's 8 data bytes.
        let data = if tag & 0xC000 == 0x4000 {
            h.get(e + 2..e + 10)?
        } else {
            let (size, off) = (le32(e + 2)?, le32(e + 6)?);
            h.get(off..off.checked_add(size)?)?
        };
        match tag & 0x3FFF {
            t if t & 0x3800 == 0x2800 || t & 0x3800 == 0x3000 => {
                heap(data, out, depth + 1);
            }
            0x080A => {
                let mut parts = data.split(|&c| c == 0).filter(|s| !s.is_empty());
                out.make = parts
                    .next()
                    .map(|s| String::from_utf8_lossy(s).trim().to_string());
                out.model = parts
                    .next()
                    .map(|s| String::from_utf8_lossy(s).trim().to_string());
            }
            0x180E => {
                let t = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
                out.taken_at = unix_to_iso(t as i64);
            }
            0x1029 => {
                let f = u16::from_le_bytes(data.get(2..4)?.try_into().ok()?);
                out.focal_length = (f > 0).then_some(f as f64);
            }
            _ => {}
        }
    }
    Some(())
}

/// Fields from Olympus' APP12 "[picture info]" text segment.
#[derive(Debug, Default)]
pub struct PictureInfo {
    /// TimeDate (Unix time).
    pub taken_at: Option<String>,
    /// Shutter, in microseconds.
    pub exposure_time: Option<f64>,
    /// FNumber (`F2.8`).
    pub f_number: Option<f64>,
}

impl PictureInfo {
    /// Reads the APP12 picture-info block of a JPEG, if it has one.
    pub fn read(b: &[u8]) -> Option<PictureInfo> {
        let (_, p) =
            jpeg_segments(b).find(|(m, p)| *m == 0xEC && find(p, b"[picture info]").is_some())?;
        let text = String::from_utf8_lossy(p);
        let mut out = PictureInfo::default();
        for line in text.split(['\r', '\n']) {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim();
            // `inf` and `NaN` parse as floats: only finite values are kept.
            match k.trim() {
                "TimeDate" => out.taken_at = v.parse().ok().and_then(unix_to_iso),
                "Shutter" => {
                    out.exposure_time = v
                        .parse::<f64>()
                        .ok()
                        .filter(|x| *x > 0.0 && x.is_finite())
                        .map(|x| x / 1e6)
                }
                "FNumber" => {
                    out.f_number = v
                        .trim_start_matches(['F', 'f'])
                        .parse()
                        .ok()
                        .filter(|x: &f64| *x > 0.0 && x.is_finite())
                }
                _ => {}
            }
        }
        Some(out)
    }
}

/// DateTimeOriginal from a Reconyx maker note (HyperFire layout: int16u at
/// index 0x0b = sec, min, hour, month, day, year, little-endian).
pub fn reconyx_taken_at(note: &[u8], make: Option<&str>) -> Option<String> {
    let versioned = matches!(note.get(2..4), Some([2, 0] | [3, 0]));
    if !note.starts_with(&[0x01, 0xF1]) || !(versioned || make == Some("RECONYX")) {
        return None;
    }
    let w = |i: usize| {
        note.get(2 * i..2 * i + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]) as u32)
    };
    let (s, mi, h, mo, d, y) = (w(0x0B)?, w(0x0C)?, w(0x0D)?, w(0x0E)?, w(0x0F)?, w(0x10)?);
    crate::parse_exif_datetime(&format!("{y}:{mo}:{d} {h}:{mi}:{s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times() {
        assert_eq!(unix_to_iso(0).as_deref(), Some("1970-01-01T00:00:00"));
        assert_eq!(
            unix_to_iso(909_698_819).as_deref(),
            Some("1998-10-29T22:06:59")
        );
        assert_eq!(
            unix_to_iso(951_782_400).as_deref(),
            Some("2000-02-29T00:00:00")
        );
    }

    #[test]
    fn xmp_forms() {
        let x = Xmp("<x:xmpmeta a tiff:Orientation=\"6\"><exif:ISOSpeedRatings><rdf:Seq><rdf:li>200</rdf:li></rdf:Seq></exif:ISOSpeedRatings><tiff:Make>A &amp; B</tiff:Make>".into());
        assert_eq!(x.get("tiff:Orientation").as_deref(), Some("6"));
        assert_eq!(x.get("exif:ISOSpeedRatings").as_deref(), Some("200"));
        assert_eq!(x.get("tiff:Make").as_deref(), Some("A & B"));
        assert_eq!(x.get("tiff:Model"), None);
        assert_eq!(gps("48,51.5N"), Some(48.0 + 51.5 / 60.0));
        assert_eq!(number("28/10"), Some(2.8));
    }
}
