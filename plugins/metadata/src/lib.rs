//! `metadata`: reads EXIF from JPEG, TIFF, HEIC/HEIF/AVIF, PNG and WebP with
//! the pure-Rust `kamadak-exif` parser and turns the useful fields into facts:
//! `taken_at`, `make`, `model`, `lens`, `exposure_time`, `f_number`, `iso`,
//! `focal_length`, `gps_latitude`, `gps_longitude`, `gps_altitude`,
//! `orientation`, `pixel_width`, `pixel_height`, `description`.
//!
//! Missing EXIF is not an error (no facts); broken EXIF yields what could be
//! read plus a warning. This stage never rejects an asset: `validate` decides
//! what is an image. It takes no config.
//!
//! Written on `lumilio_sdk`: [`extract`] and [`run`] are plain Rust, called
//! natively by the tests and through `export_stage!` in the component.

pub mod extra;

use exif::{Exif, Field, In, Tag, Value};
use lumilio_sdk::{Fact, Input, Output, StageError, export_stage, log};

/// The metadata fields this stage reports; `None` means absent or unusable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// Capture time, `YYYY-MM-DDTHH:MM:SS` plus `±HH:MM` when known.
    pub taken_at: Option<String>,
    /// Camera maker.
    pub make: Option<String>,
    /// Camera model.
    pub model: Option<String>,
    /// Lens model.
    pub lens: Option<String>,
    /// Exposure time in seconds.
    pub exposure_time: Option<f64>,
    /// Aperture as an f-number.
    pub f_number: Option<f64>,
    /// ISO sensitivity.
    pub iso: Option<i64>,
    /// Focal length in millimetres.
    pub focal_length: Option<f64>,
    /// Latitude in degrees, negative south.
    pub gps_latitude: Option<f64>,
    /// Longitude in degrees, negative west.
    pub gps_longitude: Option<f64>,
    /// Altitude in metres, negative below sea level.
    pub gps_altitude: Option<f64>,
    /// EXIF orientation, 1–8.
    pub orientation: Option<i64>,
    /// ExifImageWidth (PixelXDimension).
    pub pixel_width: Option<i64>,
    /// ExifImageHeight (PixelYDimension).
    pub pixel_height: Option<i64>,
    /// ImageDescription.
    pub description: Option<String>,
}

impl Metadata {
    /// The fields as stage facts, in a fixed order, skipping absent ones.
    pub fn facts(&self) -> Vec<Fact> {
        let mut out = Vec::new();
        let text = |out: &mut Vec<Fact>, k: &str, v: &Option<String>| {
            if let Some(v) = v {
                out.push(Fact::text(k, v.clone()))
            }
        };
        let float = |out: &mut Vec<Fact>, k: &str, v: Option<f64>| {
            if let Some(v) = v {
                out.push(Fact::float(k, v))
            }
        };
        let int = |out: &mut Vec<Fact>, k: &str, v: Option<i64>| {
            if let Some(v) = v {
                out.push(Fact::int(k, v))
            }
        };
        text(&mut out, "taken_at", &self.taken_at);
        text(&mut out, "make", &self.make);
        text(&mut out, "model", &self.model);
        text(&mut out, "lens", &self.lens);
        float(&mut out, "exposure_time", self.exposure_time);
        float(&mut out, "f_number", self.f_number);
        int(&mut out, "iso", self.iso);
        float(&mut out, "focal_length", self.focal_length);
        float(&mut out, "gps_latitude", self.gps_latitude);
        float(&mut out, "gps_longitude", self.gps_longitude);
        float(&mut out, "gps_altitude", self.gps_altitude);
        int(&mut out, "orientation", self.orientation);
        int(&mut out, "pixel_width", self.pixel_width);
        int(&mut out, "pixel_height", self.pixel_height);
        text(&mut out, "description", &self.description);
        out
    }
}

/// What [`extract`] found: the fields, user-visible warnings and log notes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    /// The fields read.
    pub metadata: Metadata,
    /// Problems worth telling the user (e.g. damaged EXIF).
    pub warnings: Vec<String>,
    /// Lines for the host log only.
    pub log: Vec<String>,
}

/// Reads the EXIF fields of any supported container, falling back to XMP and
/// old vendor blocks for fields EXIF lacks. Never fails: a file without
/// metadata gives empty [`Metadata`] and a log note.
pub fn extract(bytes: &[u8]) -> Extracted {
    let mut out = Extracted::default();
    let mut reader = exif::Reader::new();
    reader.continue_on_error(true);
    let exif = match reader.read_from_container(&mut std::io::Cursor::new(bytes)) {
        Ok(e) => Some(e),
        Err(e) => match e.distill_partial_result(|errs| {
            let list: Vec<String> = errs.iter().take(3).map(|e| e.to_string()).collect();
            out.warnings.push(format!(
                "some EXIF fields are damaged and were skipped ({})",
                list.join("; ")
            ));
        }) {
            Ok(e) => Some(e),
            Err(exif::Error::NotFound(_)) => None,
            Err(exif::Error::InvalidFormat("Unknown image format")) => None,
            Err(e) => {
                out.warnings
                    .push(format!("the EXIF metadata could not be read: {e}"));
                None
            }
        },
    };
    let mut m = exif.as_ref().map(from_exif).unwrap_or_default();
    let xmp = extra::Xmp::find(bytes);
    if let Some(x) = &xmp {
        fill_from_xmp(&mut m, x);
    }
    // Dates in precedence order, each from EXIF first, then XMP, then the
    // vendor blocks (the order in which exiftool prefers them).
    let x = |name: &str| {
        xmp.as_ref()
            .and_then(|x| x.get(name))
            .and_then(|s| parse_datetime(&s))
    };
    let original = exif
        .as_ref()
        .and_then(|e| exif_date(e, Tag::DateTimeOriginal, Tag::OffsetTimeOriginal))
        .or_else(|| x("exif:DateTimeOriginal"))
        .or_else(|| vendor_date(bytes, exif.as_ref(), m.make.as_deref()));
    let created = || {
        exif.as_ref()
            .and_then(|e| exif_date(e, Tag::DateTimeDigitized, Tag::OffsetTimeDigitized))
            .or_else(|| x("xmp:CreateDate"))
    };
    let modified = || {
        exif.as_ref()
            .and_then(|e| exif_date(e, Tag::DateTime, Tag::OffsetTime))
            .or_else(|| x("xmp:ModifyDate"))
    };
    m.taken_at = original
        .or_else(created)
        .or_else(modified)
        .map(|(d, off)| d + off.as_deref().unwrap_or(""));
    if let Some(c) = extra::Ciff::read(bytes) {
        m.make = m.make.or(c.make);
        m.model = m.model.or(c.model);
        m.focal_length = m.focal_length.or(c.focal_length);
    }
    if let Some(p) = extra::PictureInfo::read(bytes) {
        m.exposure_time = m.exposure_time.or(p.exposure_time);
        m.f_number = m.f_number.or(p.f_number);
    }
    if m == Metadata::default() {
        out.log.push("no EXIF or XMP metadata in this file".into());
    }
    out.metadata = m;
    out
}

/// DateTimeOriginal from CIFF, Olympus picture info or a Reconyx maker note.
fn vendor_date(
    bytes: &[u8],
    exif: Option<&Exif>,
    make: Option<&str>,
) -> Option<(String, Option<String>)> {
    let ciff = || extra::Ciff::read(bytes).and_then(|c| c.taken_at);
    let pinfo = || extra::PictureInfo::read(bytes).and_then(|p| p.taken_at);
    let reconyx = || {
        let note = exif?.get_field(Tag::MakerNote, In::PRIMARY)?;
        match &note.value {
            Value::Undefined(b, _) => extra::reconyx_taken_at(b, make),
            _ => None,
        }
    };
    ciff().or_else(pinfo).or_else(reconyx).map(|d| (d, None))
}

/// Fills fields EXIF did not have from the XMP packet.
fn fill_from_xmp(m: &mut Metadata, x: &extra::Xmp) {
    let num = |k: &str| {
        x.get(k)
            .and_then(|s| extra::number(&s))
            .filter(|v| *v > 0.0)
    };
    let int = |k: &str| num(k).filter(|v| v.fract() == 0.0).map(|v| v as i64);
    m.make = m.make.take().or_else(|| x.get("tiff:Make"));
    m.model = m.model.take().or_else(|| x.get("tiff:Model"));
    m.lens = m.lens.take().or_else(|| x.get("exifEX:LensModel"));
    m.exposure_time = m.exposure_time.or_else(|| num("exif:ExposureTime"));
    m.f_number = m.f_number.or_else(|| num("exif:FNumber"));
    m.focal_length = m.focal_length.or_else(|| num("exif:FocalLength"));
    m.iso = m
        .iso
        .or_else(|| int("exif:ISOSpeedRatings"))
        .or_else(|| int("exifEX:PhotographicSensitivity"));
    m.orientation = m
        .orientation
        .or_else(|| int("tiff:Orientation").filter(|v| (1..=8).contains(v)));
    m.pixel_width = m.pixel_width.or_else(|| int("exif:PixelXDimension"));
    m.pixel_height = m.pixel_height.or_else(|| int("exif:PixelYDimension"));
    if m.gps_latitude.is_none() && m.gps_longitude.is_none() {
        m.gps_latitude = x.get("exif:GPSLatitude").and_then(|s| extra::gps(&s));
        m.gps_longitude = x.get("exif:GPSLongitude").and_then(|s| extra::gps(&s));
    }
    if m.gps_altitude.is_none() {
        let below = x.get("exif:GPSAltitudeRef").as_deref() == Some("1");
        m.gps_altitude = x
            .get("exif:GPSAltitude")
            .and_then(|s| extra::number(&s))
            .map(|a| if below { -a } else { a });
    }
}

/// Maps parsed EXIF to [`Metadata`] (dates are handled by [`extract`]).
fn from_exif(x: &Exif) -> Metadata {
    let f = |t: Tag| x.get_field(t, In::PRIMARY);
    let (lat, lon) = (
        gps_coord(x, Tag::GPSLatitude, Tag::GPSLatitudeRef, b'S'),
        gps_coord(x, Tag::GPSLongitude, Tag::GPSLongitudeRef, b'W'),
    );
    Metadata {
        taken_at: None,
        make: f(Tag::Make).and_then(text),
        model: f(Tag::Model).and_then(text),
        lens: f(Tag::LensModel).and_then(text),
        exposure_time: f(Tag::ExposureTime)
            .and_then(|v| real(v, 0))
            .filter(|v| *v > 0.0),
        f_number: f(Tag::FNumber)
            .and_then(|v| real(v, 0))
            .filter(|v| *v > 0.0),
        iso: f(Tag::PhotographicSensitivity)
            .and_then(|v| int(v, 0))
            .filter(|v| *v > 0),
        focal_length: f(Tag::FocalLength)
            .and_then(|v| real(v, 0))
            .filter(|v| *v > 0.0),
        gps_latitude: lat.filter(|v| v.abs() <= 90.0),
        gps_longitude: lon.filter(|v| v.abs() <= 180.0),
        gps_altitude: gps_altitude(x),
        orientation: f(Tag::Orientation)
            .and_then(|v| int(v, 0))
            .filter(|v| (1..=8).contains(v)),
        pixel_width: f(Tag::PixelXDimension)
            .and_then(|v| int(v, 0))
            .filter(|v| *v > 0),
        pixel_height: f(Tag::PixelYDimension)
            .and_then(|v| int(v, 0))
            .filter(|v| *v > 0),
        description: f(Tag::ImageDescription).and_then(text),
    }
}

/// A string field, trimmed of NULs and whitespace; `None` if empty.
fn text(field: &Field) -> Option<String> {
    let raw: &[u8] = match &field.value {
        Value::Ascii(parts) => parts.iter().find(|p| !p.is_empty())?,
        Value::Undefined(b, _) | Value::Byte(b) => b,
        _ => return None,
    };
    let s = decode(raw);
    let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    // Some writers pad with NULs in the middle; keep the text before them.
    let s = s.split('\0').next().unwrap_or("").trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// UTF-8 when valid, else Latin-1 (what old cameras wrote).
fn decode(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.iter().map(|&c| c as char).collect(),
    }
}

/// A numeric field as f64 (rationals, integers, floats).
fn real(field: &Field, i: usize) -> Option<f64> {
    let v = match &field.value {
        Value::Rational(v) => v.get(i).filter(|r| r.denom != 0).map(|r| r.to_f64()),
        Value::SRational(v) => v.get(i).filter(|r| r.denom != 0).map(|r| r.to_f64()),
        Value::Float(v) => v.get(i).map(|&x| x as f64),
        Value::Double(v) => v.get(i).copied(),
        _ => int(field, i).map(|x| x as f64),
    }?;
    v.is_finite().then_some(v)
}

/// An integer field (any integer width).
fn int(field: &Field, i: usize) -> Option<i64> {
    match &field.value {
        Value::SShort(v) => v.get(i).map(|&x| x as i64),
        Value::SLong(v) => v.get(i).map(|&x| x as i64),
        Value::SByte(v) => v.get(i).map(|&x| x as i64),
        other => other.get_uint(i).map(|x| x as i64),
    }
}

/// Signed degrees from a GPS (deg, min, sec) triple and its N/S or E/W ref.
fn gps_coord(x: &Exif, tag: Tag, ref_tag: Tag, negative: u8) -> Option<f64> {
    let field = x.get_field(tag, In::PRIMARY)?;
    let deg = real(field, 0)?;
    let min = real(field, 1).unwrap_or(0.0);
    let sec = real(field, 2).unwrap_or(0.0);
    let mut v = deg + min / 60.0 + sec / 3600.0;
    let r = x.get_field(ref_tag, In::PRIMARY).and_then(text);
    if r.as_deref()
        .map(|s| s.as_bytes().first() == Some(&negative))
        .unwrap_or(false)
    {
        v = -v;
    }
    Some(v)
}

/// Altitude in metres; GPSAltitudeRef 1 means below sea level.
fn gps_altitude(x: &Exif) -> Option<f64> {
    let alt = real(x.get_field(Tag::GPSAltitude, In::PRIMARY)?, 0)?;
    let below = x
        .get_field(Tag::GPSAltitudeRef, In::PRIMARY)
        .and_then(|f| int(f, 0))
        == Some(1);
    Some(if below { -alt } else { alt })
}

/// An EXIF date with its matching offset tag, or OffsetTime as a fallback.
fn exif_date(x: &Exif, date_tag: Tag, offset_tag: Tag) -> Option<(String, Option<String>)> {
    let (date, own) = x
        .get_field(date_tag, In::PRIMARY)
        .and_then(text)
        .and_then(|s| parse_datetime(&s))?;
    let offset = own.or_else(|| {
        [offset_tag, Tag::OffsetTime].into_iter().find_map(|t| {
            x.get_field(t, In::PRIMARY)
                .and_then(text)
                .and_then(|s| parse_offset(&s))
        })
    });
    Some((date, offset))
}

/// Turns an EXIF or XMP date (`YYYY:MM:DD HH:MM:SS`, `YYYY-MM-DDTHH:MM[:SS][.f][Z|±HH:MM]`)
/// into `YYYY-MM-DDTHH:MM:SS` and the offset it carries, if any. `None` for
/// blank, date-only or impossible values.
pub fn parse_datetime(s: &str) -> Option<(String, Option<String>)> {
    let s = s.trim();
    let (body, offset) = if let Some(b) = s.strip_suffix('Z') {
        (b, Some("+00:00".to_string()))
    } else if s.len() > 16 && matches!(s.as_bytes()[s.len() - 6], b'+' | b'-') {
        (&s[..s.len() - 6], Some(parse_offset(&s[s.len() - 6..])?))
    } else {
        (s, None)
    };
    Some((parse_exif_datetime(body)?, offset))
}

/// Turns `YYYY:MM:DD HH:MM:SS` (separators vary in the wild) into
/// `YYYY-MM-DDTHH:MM:SS`, ignoring fractions and zones; `None` for blank or
/// impossible dates.
pub fn parse_exif_datetime(s: &str) -> Option<String> {
    let digits: Vec<u32> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .take(6)
        .map(|p| p.parse::<u32>().ok())
        .collect::<Option<Vec<_>>>()?;
    if digits.len() < 5 {
        return None;
    }
    let (y, mo, d, h, mi) = (digits[0], digits[1], digits[2], digits[3], digits[4]);
    let sec = digits.get(5).copied().unwrap_or(0);
    if !(1800..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    Some(format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}"))
}

/// Normalises an EXIF offset like `+02:00`; `None` if blank or malformed.
pub fn parse_offset(s: &str) -> Option<String> {
    let b = s.trim().as_bytes();
    if b.len() == 1 && b[0] == b'Z' {
        return Some("+00:00".into());
    }
    if b.len() != 6 || !(b[0] == b'+' || b[0] == b'-') || b[3] != b':' {
        return None;
    }
    let h: u32 = std::str::from_utf8(&b[1..3]).ok()?.parse().ok()?;
    let m: u32 = std::str::from_utf8(&b[4..6]).ok()?.parse().ok()?;
    (h <= 14 && m < 60).then(|| format!("{}{h:02}:{m:02}", b[0] as char))
}

/// The stage entry point: the component calls it through `export_stage!`,
/// and so can native benchmarks and tests.
pub fn run(input: &Input) -> Result<Output, StageError> {
    let ex = extract(input.bytes());
    for line in &ex.log {
        log::info(line);
    }
    Ok(Output {
        facts: ex.metadata.facts(),
        renditions: Vec::new(),
        warnings: ex.warnings,
    })
}

export_stage!(run);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_offsets() {
        assert_eq!(
            parse_exif_datetime("2008:05:30 15:56:01").as_deref(),
            Some("2008-05-30T15:56:01")
        );
        assert_eq!(parse_exif_datetime("0000:00:00 00:00:00"), None);
        assert_eq!(parse_exif_datetime("    :  :     :  :  "), None);
        assert_eq!(parse_offset("+02:00").as_deref(), Some("+02:00"));
        assert_eq!(parse_offset("   :  "), None);
        assert_eq!(
            parse_datetime("2005:12:17 22:03:32Z"),
            Some(("2005-12-17T22:03:32".into(), Some("+00:00".into())))
        );
        assert_eq!(
            parse_datetime("2013-09-24T15:13+02:00"),
            Some(("2013-09-24T15:13:00".into(), Some("+02:00".into())))
        );
        assert_eq!(parse_datetime("2003:08:31"), None);
    }

    #[test]
    fn garbage_gives_nothing() {
        assert_eq!(extract(b"not an image").metadata, Metadata::default());
        assert_eq!(extract(&[]).metadata, Metadata::default());
    }
}
