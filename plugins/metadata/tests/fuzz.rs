//! Fuzzing the metadata stage's parsers (kamadak-exif, and the XMP, CIFF,
//! picture-info and Reconyx readers in `extra.rs`): thousands of generated
//! inputs (random bytes, mutated sample photos, EXIF IFDs with huge counts
//! and self-pointing offsets, tiny synthetic files of every format) through
//! [`metadata::run`], each under `catch_unwind` and a time bound. This stage
//! never rejects, so every call must end `Ok` with sane facts.
//!
//! `LUMILIO_FUZZ_CASES` raises the number of cases (default 20000) and
//! `LUMILIO_FUZZ_SEED` changes the seed; a failing case is named by seed and
//! index and its bytes are saved under `target/tmp/fuzz-metadata/`.

use std::time::Duration;

use lumilio_fuzzkit::*;
use lumilio_sdk::{Input, Output, StageError, Value};

fn call(bytes: &[u8]) -> Result<Output, StageError> {
    metadata::run(&Input::new(bytes).content_type("image/jpeg"))
}

fn check(r: &Result<Output, StageError>) -> Result<(), String> {
    let out = match r {
        Ok(out) => out,
        Err(e) => {
            return Err(format!(
                "the metadata stage never rejects, but answered {e:?}"
            ));
        }
    };
    for f in &out.facts {
        match (f.key.as_str(), &f.value) {
            ("orientation", Value::Integer(o)) if !(1..=8).contains(o) => {
                return Err(format!("orientation {o}"));
            }
            ("gps_latitude", Value::Float(v)) if !(v.abs() <= 90.0) => {
                return Err(format!("latitude {v}"));
            }
            ("gps_longitude", Value::Float(v)) if !(v.abs() <= 180.0) => {
                return Err(format!("longitude {v}"));
            }
            (k, Value::Float(v)) if !v.is_finite() => return Err(format!("{k} = {v}")),
            ("taken_at", Value::Text(t))
                if !(t.len() == 19 || t.len() == 25) || t.as_bytes().get(10) != Some(&b'T') =>
            {
                return Err(format!("taken_at {t:?}"));
            }
            (k, Value::Text(t)) if t.trim().is_empty() => return Err(format!("{k} is blank")),
            _ => {}
        }
    }
    if out.warnings.iter().any(|w| w.trim().is_empty()) {
        return Err("a blank warning".into());
    }
    Ok(())
}

/// Fixed cases kept as regressions.
fn regressions() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = vec![("empty file".into(), Vec::new())];
    // EXIF whose IFD0 links to itself, with an entry count of 65535.
    let mut t = b"MM\0*\0\0\0\x08\xFF\xFF".to_vec();
    t.extend_from_slice(&[0x01, 0x0F, 0, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 8]);
    t.extend_from_slice(&[0, 0, 0, 8]);
    let mut jpeg = vec![0xFF, 0xD8];
    let mut p = b"Exif\0\0".to_vec();
    p.extend_from_slice(&t);
    jpeg.extend(segment(0xE1, &p));
    jpeg.extend_from_slice(&[0xFF, 0xD9]);
    v.push(("EXIF IFD0 pointing at itself, 65535 entries".into(), jpeg));
    v.push(("TIFF IFD0 pointing at itself".into(), t));
    // Found by this test: XMP with a closing tag inside the opening one
    // panicked slicing `begin > end` in `Xmp::get`.
    v.push((
        "XMP `<tiff:Make </tiff:Make>>`".into(),
        b"<x:xmpmeta <tiff:Make </tiff:Make>></x:xmpmeta>".to_vec(),
    ));
    v.push((
        "XMP `<rdf:li</rdf:li>`".into(),
        b"<x:xmpmeta><exif:ISOSpeedRatings><rdf:li</rdf:li></exif:ISOSpeedRatings></x:xmpmeta>"
            .to_vec(),
    ));
    // Found by this test: Olympus picture info `Shutter=inf` gave an
    // infinite exposure_time fact (not representable in JSON).
    v.push((
        "picture info Shutter=inf, FNumber=Finf".into(),
        picture_info("Shutter=inf\r\nFNumber=Finf\r\n"),
    ));
    v
}

fn picture_info(text: &str) -> Vec<u8> {
    let mut b = vec![0xFF, 0xD8];
    let mut p = b"[picture info]\r\n".to_vec();
    p.extend_from_slice(text.as_bytes());
    b.extend(segment(0xEC, &p));
    b.extend_from_slice(&[0xFF, 0xD9]);
    b
}

#[test]
fn metadata_regressions_give_clean_facts() {
    for (what, bytes) in regressions() {
        let out = call(&bytes).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        check(&Ok(out.clone())).unwrap_or_else(|e| panic!("{what}: {e}"));
        if what.starts_with("picture info") {
            assert!(
                out.facts
                    .iter()
                    .all(|f| f.key != "exposure_time" && f.key != "f_number"),
                "{what}: {:?}",
                out.facts
            );
        }
    }
    let out = call(&picture_info("Shutter=2000\r\nFNumber=F2.8\r\n")).unwrap();
    assert!(
        out.facts
            .iter()
            .any(|f| f.key == "f_number" && f.value == Value::Float(2.8)),
        "{:?}",
        out.facts
    );
}

#[test]
fn metadata_survives_generated_inputs() {
    let n = cases(20_000);
    let samples = samples(16 << 20);
    assert!(!samples.is_empty(), "the photo directory has no images");
    fuzz(
        env!("CARGO_TARGET_TMPDIR"),
        "metadata",
        generate(n, &samples, regressions()),
        Duration::from_secs(2),
        call,
        check,
    );
}
