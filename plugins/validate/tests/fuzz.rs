//! Fuzzing the validate stage's header parsers: thousands of generated inputs
//! (random bytes, mutated sample photos, header fields set to extremes, tiny
//! synthetic files of every format) through [`validate::run`], each under
//! `catch_unwind` and a time bound. Every call must end `Ok` with sane facts
//! or with a `StageError` that gives a reason.
//!
//! `LUMILIO_FUZZ_CASES` raises the number of cases (default 30000) and
//! `LUMILIO_FUZZ_SEED` changes the seed; a failing case is named by seed and
//! index and its bytes are saved under `target/tmp/fuzz-validate/`.

use std::time::{Duration, Instant};

use lumilio_fuzzkit::*;
use lumilio_sdk::{Input, Output, StageError, Value};

/// The default pipeline's config for this stage.
fn config() -> Vec<(String, String)> {
    vec![
        ("max_pixels".into(), "100000000".into()),
        ("max_bytes".into(), "209715200".into()),
    ]
}

fn call(bytes: &[u8]) -> Result<Output, StageError> {
    validate::run(
        &Input::new(bytes)
            .content_type("image/jpeg")
            .with_config(config()),
    )
}

fn check(r: &Result<Output, StageError>) -> Result<(), String> {
    match r {
        Ok(out) => {
            let get = |k: &str| {
                out.facts
                    .iter()
                    .find(|f| f.key == k)
                    .map(|f| f.value.clone())
            };
            let (Some(Value::Text(ct)), Some(Value::Integer(w)), Some(Value::Integer(h))) =
                (get("content_type"), get("width"), get("height"))
            else {
                return Err(format!(
                    "accepted without content_type/width/height facts: {:?}",
                    out.facts
                ));
            };
            if !ct.starts_with("image/") {
                return Err(format!("accepted as {ct}"));
            }
            if w <= 0 || h <= 0 || (w as u64) * (h as u64) > 100_000_000 {
                return Err(format!(
                    "accepted a {w}x{h} image, outside 1..=100000000 pixels"
                ));
            }
            Ok(())
        }
        Err(StageError::Rejected(m)) | Err(StageError::Failed(m)) => clean_error(m),
    }
}

/// Fixed cases kept as regressions (and the bombs the brief names).
fn regressions() -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        ("empty file".into(), Vec::new()),
        (
            "PNG bomb 100000x100000".into(),
            png(100_000, 100_000, 8, 2, &zlib_stored(&[0; 64]), &[]),
        ),
        ("PNG 0x0".into(), png(0, 0, 8, 2, &[], &[])),
        // Found by this test: a 12..15-byte `ftyp` file panicked in
        // `heif_brand` (`clamp` with min > max).
        (
            "ftyp of 14 bytes".into(),
            b"\0\0\0\x18ftypavif\x9a\xae".to_vec(),
        ),
        ("ftyp of 12 bytes".into(), b"\0\0\0\x18ftypheic".to_vec()),
    ];
    let mut jpeg = vec![0xFF, 0xD8];
    jpeg.extend(segment(
        0xC0,
        &[
            8, 0xFF, 0xFF, 0xFF, 0xFF, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1,
        ],
    ));
    jpeg.extend_from_slice(&[0xFF, 0xD9]);
    v.push(("JPEG SOF 65535x65535".into(), jpeg));
    v
}

#[test]
fn validate_survives_generated_inputs() {
    let n = cases(30_000);
    let samples = samples(16 << 20);
    assert!(!samples.is_empty(), "the photo directory has no images");
    fuzz(
        env!("CARGO_TARGET_TMPDIR"),
        "validate",
        generate(n, &samples, regressions()),
        Duration::from_secs(2),
        call,
        check,
    );
}

#[test]
fn validate_rejects_bombs_quickly() {
    for (what, bytes) in regressions().into_iter().skip(1) {
        if what.starts_with("ftyp") {
            // Too short to hold a brand list: rejected, not a panic.
            assert!(
                matches!(call(&bytes), Err(StageError::Rejected(_))),
                "{what}"
            );
            continue;
        }
        let t = Instant::now();
        let r = call(&bytes);
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "{what} took {:?}",
            t.elapsed()
        );
        match r {
            Err(StageError::Rejected(m)) => assert!(!m.is_empty(), "{what}"),
            other => panic!("{what}: expected a rejection, got {other:?}"),
        }
    }
}
