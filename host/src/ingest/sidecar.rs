//! XMP sidecars: the capture date a photo editor wrote beside the file.
//!
//! Only the date is read here, and only as a fallback for files whose own
//! metadata has none; the sidecar itself is kept as uploaded. XMP writes a
//! property either as an attribute (`exif:DateTimeOriginal="…"`) or as an
//! element (`<exif:DateTimeOriginal>…</…>`), so both forms are looked for,
//! without an XML parser: a sidecar that is not XMP simply yields no date.

/// Date properties in order of preference: when the photo was taken first.
const DATE_PROPERTIES: &[&str] = &[
    "exif:DateTimeOriginal",
    "photoshop:DateCreated",
    "xmp:CreateDate",
    "exif:DateTimeDigitized",
];

/// The capture time in an XMP sidecar, normalised to
/// `YYYY-MM-DDTHH:MM:SS[offset]` (the form pipeline facts use).
pub fn taken_at(xmp: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(xmp).ok()?;
    DATE_PROPERTIES
        .iter()
        .find_map(|p| property(text, p).and_then(normalise))
}

/// The value of `name`, written as an attribute or as a simple element.
fn property<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = text;
    while let Some(at) = rest.find(name) {
        let after = &rest[at + name.len()..];
        let before = rest[..at].chars().next_back();
        rest = after;
        if before == Some('<') {
            // `<exif:DateTimeOriginal>value</exif:DateTimeOriginal>`
            let body = after.strip_prefix('>')?;
            return body.split('<').next().map(str::trim);
        }
        let attr = after.trim_start();
        if let Some(v) = attr.strip_prefix('=') {
            let v = v.trim_start();
            let quote = v.chars().next().filter(|q| *q == '"' || *q == '\'')?;
            return v[1..].split(quote).next().map(str::trim);
        }
    }
    None
}

/// `2019:07:20 14:30:00`, `2019-07-20T14:30:00.5+02:00` or `2019-07-20`
/// → `2019-07-20T14:30:00[+02:00]`; anything else → `None`.
fn normalise(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return None;
    }
    let date = format!("{}-{}-{}", &raw[0..4], &raw[5..7], &raw[8..10]);
    if b.len() == 10 {
        return Some(format!("{date}T00:00:00"));
    }
    // Hours and minutes are required past the date; seconds may be missing.
    if !(matches!(b.get(10), Some(b'T' | b' ')) && digits(11..13) && digits(14..16)) {
        return None;
    }
    let (secs, mut tail) = if b.get(16) == Some(&b':') && digits(17..19) {
        (&raw[17..19], &raw[19..])
    } else {
        ("00", &raw[16..])
    };
    if let Some(frac) = tail.strip_prefix('.') {
        tail = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match tail {
        "" => "",
        "Z" => "+00:00",
        o if is_offset(o.as_bytes()) => o,
        _ => return None,
    };
    Some(format!(
        "{date}T{}:{}:{secs}{offset}",
        &raw[11..13],
        &raw[14..16]
    ))
}

/// `+HH:MM` or `-HH:MM`.
fn is_offset(o: &[u8]) -> bool {
    o.len() == 6
        && matches!(o[0], b'+' | b'-')
        && o[3] == b':'
        && [1, 2, 4, 5].iter().all(|&i| o[i].is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::taken_at;

    #[test]
    fn reads_attribute_and_element_forms() {
        let attr = br#"<x:xmpmeta><rdf:RDF><rdf:Description xmp:CreateDate="2001-01-01T00:00:00"
            exif:DateTimeOriginal="2019-07-20T14:30:12+02:00"/></rdf:RDF></x:xmpmeta>"#;
        assert_eq!(taken_at(attr).as_deref(), Some("2019-07-20T14:30:12+02:00"));
        let elem = b"<rdf:Description><photoshop:DateCreated>2018-03-04T05:06</photoshop:DateCreated></rdf:Description>";
        assert_eq!(taken_at(elem).as_deref(), Some("2018-03-04T05:06:00"));
        let exif_style = b"<x exif:DateTimeOriginal='2017:01:02 03:04:05.25Z'/>";
        assert_eq!(
            taken_at(exif_style).as_deref(),
            Some("2017-01-02T03:04:05+00:00")
        );
        assert_eq!(
            taken_at(b"<x photoshop:DateCreated=\"2016-05-06\"/>").as_deref(),
            Some("2016-05-06T00:00:00")
        );
    }

    #[test]
    fn junk_yields_nothing() {
        for junk in [
            &b"not xmp at all"[..],
            b"<x exif:DateTimeOriginal=\"yesterday\"/>",
            b"<x exif:DateTimeOriginal=\"2019-07-20T1",
            b"<x exif:DateTimeOriginal=",
            b"<exif:DateTimeOriginal>",
            b"\xff\xfe\x00",
            b"<x exif:DateTimeOriginal=\"2019-07-20T14:30:00+0200junk\"/>",
        ] {
            assert_eq!(taken_at(junk), None, "{:?}", String::from_utf8_lossy(junk));
        }
    }
}
