//! Compares the metadata stage with `exiftool -j -n` over every sample photo
//! and prints the agreement per field. Run with
//! `cargo test --release -p metadata --test exiftool -- --nocapture`.
//!
//! exiftool's answers are data in the repository
//! (`tests/data/photos/exiftool-refs.json`, written by `make exiftool-refs`),
//! so the test needs no exiftool; a sample without a reference fails it.
//!
//! A field counts as compared when either side has it, so a value that only
//! one side finds is a disagreement. Floats agree within a relative 1e-4.

use lumilio_sdk::{Fact, Value};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// exiftool's reference objects by sample path (`"jpg/Canon_40D.jpg"`).
fn references() -> serde_json::Map<String, Json> {
    let path = testdata::path("exiftool-refs.json");
    let doc: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    match doc.get("files") {
        Some(Json::Object(m)) => m.clone(),
        _ => panic!(
            "{}: no \"files\" object; run make exiftool-refs",
            path.display()
        ),
    }
}

/// A comparable value.
#[derive(Debug, Clone, PartialEq)]
enum V {
    S(String),
    I(i64),
    F(f64),
}

impl V {
    fn agrees(&self, other: &V) -> bool {
        match (self, other) {
            (V::S(a), V::S(b)) => a == b,
            (V::I(a), V::I(b)) => a == b,
            (V::F(a), V::F(b)) => (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1e-2),
            (V::I(a), V::F(b)) | (V::F(b), V::I(a)) => (*a as f64 - b).abs() < 1e-6,
            _ => false,
        }
    }
}

fn ours(facts: &[Fact]) -> BTreeMap<String, V> {
    facts
        .iter()
        .map(|f| {
            let v = match &f.value {
                Value::Text(s) => V::S(s.clone()),
                Value::Integer(i) => V::I(*i),
                Value::Float(x) => V::F(*x),
                Value::Boolean(b) => V::S(b.to_string()),
            };
            (f.key.clone(), v)
        })
        .collect()
}

fn js(j: &Json, k: &str) -> Option<String> {
    match j.get(k)? {
        Json::String(s) => Some(
            s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string(),
        )
        .filter(|s| !s.is_empty()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A number; for a multi-value string like "100 0" the first value.
fn jf(j: &Json, k: &str) -> Option<f64> {
    match j.get(k)? {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.split_whitespace().next()?.parse().ok(),
        _ => None,
    }
}

/// The reference facts from one exiftool JSON object.
fn theirs(j: &Json) -> BTreeMap<String, V> {
    let mut m = BTreeMap::new();
    let dates = [
        ("DateTimeOriginal", "OffsetTimeOriginal"),
        ("CreateDate", "OffsetTimeDigitized"),
        ("ModifyDate", "OffsetTime"),
    ];
    // The same precedence the stage documents; exiftool's blank dates
    // ("0000:00:00 00:00:00") are not dates, so they do not count.
    for (d, o) in dates {
        if let Some((date, own)) = js(j, d).and_then(|s| metadata::parse_datetime(&s)) {
            let off = own
                .or_else(|| {
                    js(j, o)
                        .or_else(|| js(j, "OffsetTime"))
                        .and_then(|s| metadata::parse_offset(&s))
                })
                .unwrap_or_default();
            m.insert("taken_at".into(), V::S(date + &off));
            break;
        }
    }
    for (ours, key) in [
        ("make", "Make"),
        ("model", "Model"),
        ("lens", "LensModel"),
        ("description", "ImageDescription"),
    ] {
        if let Some(s) = js(j, key) {
            m.insert(ours.into(), V::S(s));
        }
    }
    for (ours, key) in [
        ("exposure_time", "ExposureTime"),
        ("f_number", "FNumber"),
        ("focal_length", "FocalLength"),
        ("gps_latitude", "GPSLatitude"),
        ("gps_longitude", "GPSLongitude"),
        ("gps_altitude", "GPSAltitude"),
    ] {
        if let Some(x) = jf(j, key) {
            m.insert(ours.into(), V::F(x));
        }
    }
    for (ours, key) in [
        ("iso", "ISO"),
        ("orientation", "Orientation"),
        ("pixel_width", "ExifImageWidth"),
        ("pixel_height", "ExifImageHeight"),
    ] {
        if let Some(x) = jf(j, key) {
            m.insert(ours.into(), V::I(x as i64));
        }
    }
    m
}

const FIELDS: [&str; 15] = [
    "taken_at",
    "make",
    "model",
    "lens",
    "exposure_time",
    "f_number",
    "iso",
    "focal_length",
    "gps_latitude",
    "gps_longitude",
    "gps_altitude",
    "orientation",
    "pixel_width",
    "pixel_height",
    "description",
];

/// Fields that must agree on every file.
const STRICT: [&str; 7] = [
    "taken_at",
    "make",
    "model",
    "orientation",
    "gps_latitude",
    "gps_longitude",
    "gps_altitude",
];

#[test]
fn agrees_with_exiftool() {
    let refs = references();
    let files = testdata::files_under("");
    assert!(
        files.len() >= 70,
        "expected the sample photos under {}",
        testdata::dir().display()
    );

    // (compared, agreed) per field.
    let mut score: BTreeMap<&str, (u32, u32)> = FIELDS.iter().map(|f| (*f, (0, 0))).collect();
    let mut misses = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let ex = metadata::extract(&bytes);
        let got = ours(&ex.metadata.facts());
        let rel = testdata::rel(file);
        let want = theirs(refs.get(&rel).unwrap_or_else(|| {
            panic!("{rel} has no exiftool reference: run make exiftool-refs and commit the result")
        }));
        for f in FIELDS {
            let (a, b) = (got.get(f), want.get(f));
            if a.is_none() && b.is_none() {
                continue;
            }
            let s = score.get_mut(f).unwrap();
            s.0 += 1;
            if matches!((a, b), (Some(a), Some(b)) if a.agrees(b)) {
                s.1 += 1;
            } else {
                misses.push(format!("{rel}: {f}: ours {a:?}, exiftool {b:?}"));
            }
        }
    }

    println!("\nmetadata vs exiftool -j -n over {} files", files.len());
    println!(
        "{:<14} {:>8} {:>8} {:>8}",
        "field", "compared", "agreed", "percent"
    );
    let (mut tc, mut ta) = (0, 0);
    let mut failures = Vec::new();
    for f in FIELDS {
        let (c, a) = score[f];
        tc += c;
        ta += a;
        let pct = if c == 0 {
            100.0
        } else {
            100.0 * a as f64 / c as f64
        };
        println!("{f:<14} {c:>8} {a:>8} {pct:>7.1}%");
        if STRICT.contains(&f) && a < c {
            failures.push(format!("{f} is {pct:.1}%, must be 100%"));
        }
    }
    let overall = 100.0 * ta as f64 / tc.max(1) as f64;
    println!("{:<14} {tc:>8} {ta:>8} {overall:>7.1}%", "overall");
    if !misses.is_empty() {
        println!("\ndisagreements:");
        for m in &misses {
            println!("  {m}");
        }
    }
    if overall < 98.0 {
        failures.push(format!("overall agreement {overall:.1}% is below 98%"));
    }
    assert!(failures.is_empty(), "{}", failures.join("; "));
}

#[test]
fn never_panics_on_broken_files() {
    for file in testdata::files_under("") {
        let bytes = std::fs::read(&file).unwrap();
        // Every prefix length class: whole, most, half, header-only.
        for cut in [
            bytes.len(),
            bytes.len() * 9 / 10,
            bytes.len() / 2,
            4096.min(bytes.len()),
            100.min(bytes.len()),
        ] {
            let _ = metadata::extract(&bytes[..cut]);
        }
    }
}
