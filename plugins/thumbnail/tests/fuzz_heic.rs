//! Fuzzing the HEIC/HEIF path (heifer's container parser and HEVC decoder,
//! and this stage's colour handling): the small HEIF samples and this
//! crate's synthetic ones (10-bit, irot+imir) mutated box by box
//! (`bmff_mutate`: sizes, types and fields at extremes, boxes cut, removed or
//! repeated, bits flipped), plus byte-level mutations, through
//! [`thumbnail::run`] under `catch_unwind` and a time bound. Every call must
//! end `Ok` with four renditions or with a reason.
//!
//! `LUMILIO_FUZZ_CASES` (default 600) and `LUMILIO_FUZZ_SEED` as in fuzz.rs.

use std::path::Path;
use std::time::Duration;

use lumilio_fuzzkit::*;
use lumilio_sdk::{Input, Output, StageError};

fn call(bytes: &[u8]) -> Result<Output, StageError> {
    let config: Vec<(String, String)> = [("unsupported", "skip")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    thumbnail::run(&Input::new(bytes).content_type("image/heic").with_config(config))
}

fn check(r: &Result<Output, StageError>) -> Result<(), String> {
    match r {
        Ok(out) if out.renditions.len() == 4 || !out.warnings.is_empty() => {
            for r in &out.renditions {
                if r.width == 0 || r.height == 0 || !r.bytes.starts_with(&[0xFF, 0xD8]) {
                    return Err(format!("bad rendition {} {}x{}", r.name, r.width, r.height));
                }
            }
            Ok(())
        }
        Ok(out) => Err(format!(
            "Ok with {} renditions and no warning",
            out.renditions.len()
        )),
        Err(StageError::Rejected(m)) | Err(StageError::Failed(m)) => clean_error(m),
    }
}

#[test]
fn heif_path_survives_mutated_files() {
    let mut bases: Vec<(String, Vec<u8>)> = samples(256 << 10)
        .into_iter()
        .filter(|(_, b)| b.len() > 12 && &b[4..8] == b"ftyp")
        .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/heic");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        bases.push((name, std::fs::read(&p).unwrap()));
    }
    assert!(bases.len() >= 3, "HEIF bases: {}", bases.len());
    let n = cases(600);
    let mut rng = Rng::new(seed() ^ 0x6865_6963);
    let inputs = (0..n).map(move |i| {
        let (name, base) = rng.pick(&bases).clone();
        // Mostly one structural change, sometimes two, sometimes byte-level.
        let (mut did, mut b) = if i % 5 == 4 {
            mutate(&mut rng, &base)
        } else {
            bmff_mutate(&mut rng, &base)
        };
        if rng.chance(25) {
            let (more, m) = bmff_mutate(&mut rng, &b);
            did = format!("{did}, then {more}");
            b = m;
        }
        (format!("{name}: {did}"), b)
    });
    fuzz(
        env!("CARGO_TARGET_TMPDIR"),
        "thumbnail-heic",
        inputs,
        Duration::from_secs(5),
        call,
        check,
    );
}
