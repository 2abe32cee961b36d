//! Issue 3 §7: the WASM pipeline against its peers, in one run.
//!
//! * 3a: the thumbnail plugin in WASM (all renditions from one decode) vs
//!   `vipsthumbnail`, one process per size, on `jpg/hdr/` and `jpg/mobile/`.
//! * 3b: the same thumbnail code in WASM vs built natively (`thumbnail::run`).
//! * 3e: 3a on the HEIC/HEIF samples (`heic/`), vipsthumbnail reading them
//!   through libheif.
//! * 3c: the metadata plugin over every file of the photo folder vs one
//!   `exiftool -j -r` process over that folder.
//! * 3d: instantiate + call of an empty stage (test guest `echo`, `noop`).
//!
//! WASM runs in-process through the `lumilio` library with compiled components
//! loaded from the cache and one warm-up call per input, so compile time never
//! counts; peers run as subprocesses, so their process start counts, as it
//! does for users. Rounds interleave ours and the peer's runs so that load
//! from other processes falls on both sides alike.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use lumilio::pipeline::{AssetFacts, Pipeline, Runtime, RuntimeOptions, Verdict};
use lumilio_bench::{Row, Status, Summary, fmt_bytes, median, ms};
use thumbnail::{Kind, stage};

fn main() -> Result<()> {
    let photos = lumilio_bench::testdata()?;
    let tmp = lumilio_bench::scratch("bench-plugins")?;
    let rt = lumilio_bench::runtime()?;
    let mut summary = Summary::default();
    println!(
        "issue 3 benchmarks (photos: {}; {} mode)",
        photos.display(),
        if lumilio_bench::quick() {
            "quick"
        } else {
            "full"
        }
    );
    thumbnails(&rt, &photos, tmp.path(), &mut summary)?;
    heic_thumbnails(&rt, &photos, tmp.path(), &mut summary)?;
    metadata(&rt, &photos, tmp.path(), &mut summary)?;
    overhead(&rt, tmp.path(), &mut summary)?;
    summary.finish()
}

/// Facts for an asset read from `path`.
fn asset(path: &Path, bytes: &[u8], content_type: &str) -> AssetFacts {
    AssetFacts {
        id: "00000000-0000-0000-0000-000000000000".into(),
        file_name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        content_type: content_type.into(),
        size: bytes.len() as u64,
        content_hash: String::new(),
    }
}

/// One vipsthumbnail call per rendition, as users run it; returns output bytes.
fn vips_all(input: &Path, specs: &[thumbnail::Spec], quality: u8, out_dir: &Path) -> Result<u64> {
    let mut bytes = 0;
    for spec in specs {
        let out = out_dir.join(format!("{}.jpg", spec.name));
        // `strip`: our renditions carry no metadata either, so the byte counts compare.
        let target = format!("{}[Q={quality},strip]", out.display());
        let mut cmd = Command::new("vipsthumbnail");
        cmd.arg(input);
        match spec.kind {
            // `>`: shrink only, as the plugin never upscales.
            Kind::Fit(n) => cmd.args(["-s", &format!("{n}x{n}>")]),
            Kind::Square(n) => cmd.args(["--smartcrop", "centre", "-s", &format!("{n}x{n}")]),
        };
        let st = cmd
            .args(["-o", &target])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .context("running vipsthumbnail")?;
        ensure!(
            st.success(),
            "vipsthumbnail failed on {} ({})",
            input.display(),
            spec.name
        );
        bytes += std::fs::metadata(&out)?.len();
    }
    Ok(bytes)
}

/// 3a and 3b.
fn thumbnails(rt: &Runtime, photos: &Path, tmp: &Path, summary: &mut Summary) -> Result<()> {
    let mut files = lumilio_bench::jpegs_in(&photos.join("jpg/hdr"))?;
    files.extend(lumilio_bench::jpegs_in(&photos.join("jpg/mobile"))?);
    ensure!(
        !files.is_empty(),
        "no JPEGs in {}/jpg/hdr or jpg/mobile",
        photos.display()
    );
    thumbnail_rows(rt, &files, ThumbRows::JPEG, photos, tmp, summary)
}

/// 3e: the same comparison on every HEIC/HEIF sample (Debian's vips reads
/// HEIF through libheif + libde265, so `vipsthumbnail` takes them directly).
fn heic_thumbnails(rt: &Runtime, photos: &Path, tmp: &Path, summary: &mut Summary) -> Result<()> {
    let files: Vec<PathBuf> = lumilio_bench::files_under(&photos.join("heic"))?
        .into_iter()
        .filter(|p| content_type(p) == "image/heic")
        .collect();
    ensure!(!files.is_empty(), "no HEIC/HEIF in {}/heic", photos.display());
    thumbnail_rows(rt, &files, ThumbRows::HEIC, photos, tmp, summary)
}

/// What one thumbnail comparison is called and which files it reads.
struct ThumbRows {
    title: &'static str,
    content_type: &'static str,
    under: &'static str,
    vips: &'static str,
    native: Option<&'static str>,
}

impl ThumbRows {
    const JPEG: ThumbRows = ThumbRows {
        title: "[3a/3b] thumbnails",
        content_type: "image/jpeg",
        under: "jpg",
        vips: "3a thumbnails: WASM plugin vs vipsthumbnail (1 call/size)",
        native: Some("3b thumbnails: WASM vs same code native"),
    };
    const HEIC: ThumbRows = ThumbRows {
        title: "[3e] HEIC/HEIF thumbnails",
        content_type: "image/heic",
        under: "heic",
        vips: "3e HEIC thumbnails: WASM plugin vs vipsthumbnail (1 call/size)",
        native: None,
    };
}

/// Times the WASM stage, the same code natively and vipsthumbnail on `files`.
fn thumbnail_rows(
    rt: &Runtime,
    files: &[PathBuf],
    rows: ThumbRows,
    photos: &Path,
    tmp: &Path,
    summary: &mut Summary,
) -> Result<()> {
    let (toml, config) = lumilio_bench::one_stage_pipeline("thumbnail", tmp)?;
    let (cfg, _) = thumbnail::parse_config(&config).map_err(anyhow::Error::msg)?;
    let pipeline = Pipeline::load(&toml, rt)?;
    let rounds = lumilio_bench::rounds(5, 2);
    let vips_dir = tmp.join("vips");
    std::fs::create_dir_all(&vips_dir)?;
    let sizes: Vec<String> = cfg
        .renditions
        .iter()
        .map(|s| match s.kind {
            Kind::Fit(n) => format!("{} {n}", s.name),
            Kind::Square(n) => format!("{} {n}x{n} crop", s.name),
        })
        .collect();
    println!(
        "\n{}: {} photos, renditions [{}] q{}, {rounds} timed rounds after 1 warm-up; per photo the median round",
        rows.title,
        files.len(),
        sizes.join(", "),
        cfg.quality
    );

    let inputs: Vec<(PathBuf, Vec<u8>)> = files
        .iter()
        .map(|p| Ok((p.clone(), std::fs::read(p)?)))
        .collect::<Result<_>>()?;
    let mut wasm_t = vec![Vec::new(); inputs.len()];
    let mut native_t = vec![Vec::new(); inputs.len()];
    let mut vips_t = vec![Vec::new(); inputs.len()];
    let (mut wasm_bytes, mut vips_bytes) = (0u64, 0u64);
    for round in 0..=rounds {
        for (i, (path, bytes)) in inputs.iter().enumerate() {
            let facts = asset(path, bytes, rows.content_type);

            let t = Instant::now();
            let report = pipeline.run_blocking(&facts, bytes);
            let wasm = t.elapsed();
            if report.verdict != Verdict::Ready {
                bail!(
                    "thumbnail (WASM) on {}: {:?}",
                    path.display(),
                    report.verdict
                );
            }

            let input = stage::Input {
                claimed_type: rows.content_type,
                bytes,
                config: &config,
                facts: &[],
            };
            let t = Instant::now();
            let out = thumbnail::run(&input)
                .map_err(|e| anyhow::anyhow!("thumbnail (native) on {}: {e:?}", path.display()))?;
            let native = t.elapsed();

            let t = Instant::now();
            let vb = vips_all(path, &cfg.renditions, cfg.quality, &vips_dir)?;
            let vips = t.elapsed();

            if round == 0 {
                // Warm-up round: not timed; record the output sizes once.
                ensure!(
                    report.renditions.len() == cfg.renditions.len(),
                    "WASM made {} renditions",
                    report.renditions.len()
                );
                ensure!(
                    out.renditions.len() == cfg.renditions.len(),
                    "native made {} renditions",
                    out.renditions.len()
                );
                wasm_bytes += report
                    .renditions
                    .iter()
                    .map(|r| r.bytes.len() as u64)
                    .sum::<u64>();
                vips_bytes += vb;
                continue;
            }
            wasm_t[i].push(ms(wasm));
            native_t[i].push(ms(native));
            vips_t[i].push(ms(vips));
        }
    }

    println!(
        "  {:<28} {:>10} {:>10} {:>14}",
        "photo", "WASM ms", "native ms", "vips x4 ms"
    );
    let (mut w_sum, mut n_sum, mut v_sum) = (0.0, 0.0, 0.0);
    for (i, (path, _)) in inputs.iter().enumerate() {
        let (w, n, v) = (
            median(wasm_t[i].clone()),
            median(native_t[i].clone()),
            median(vips_t[i].clone()),
        );
        w_sum += w;
        n_sum += n;
        v_sum += v;
        let name = path
            .strip_prefix(photos.join(rows.under))
            .unwrap_or(path)
            .display()
            .to_string();
        println!("  {name:<28} {w:>10.1} {n:>10.1} {v:>14.1}");
    }
    println!(
        "  {:<28} {w_sum:>10.1} {n_sum:>10.1} {v_sum:>14.1}",
        "total"
    );
    println!(
        "  output bytes: WASM {} vs vips {} ({:.2}x)",
        fmt_bytes(wasm_bytes),
        fmt_bytes(vips_bytes),
        wasm_bytes as f64 / vips_bytes as f64
    );

    let r = w_sum / v_sum;
    summary.push(Row {
        measure: rows.vips.into(),
        ours: format!("{w_sum:.0} ms"),
        peer: format!("{v_sum:.0} ms"),
        ratio: format!("{r:.2}x"),
        target: "<= 1.0x".into(),
        status: Status::from(r <= 1.0),
    });
    summary.push(Row {
        measure: format!("{} output bytes vs vips", &rows.vips[..2]),
        ours: fmt_bytes(wasm_bytes),
        peer: fmt_bytes(vips_bytes),
        ratio: format!("{:.2}x", wasm_bytes as f64 / vips_bytes as f64),
        target: "-".into(),
        status: Status::Info,
    });
    let r = w_sum / n_sum;
    let Some(native) = rows.native else {
        println!("  WASM vs native: {r:.2}x");
        return Ok(());
    };
    summary.push(Row {
        measure: native.into(),
        ours: format!("{w_sum:.0} ms"),
        peer: format!("{n_sum:.0} ms"),
        ratio: format!("{r:.2}x"),
        target: "<= 1.5x".into(),
        status: Status::from(r <= 1.5),
    });
    Ok(())
}

/// A content type from the file name, as an upload client would claim it.
fn content_type(p: &Path) -> &'static str {
    match p
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("heic" | "heif") => "image/heic",
        Some("tif" | "tiff") => "image/tiff",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// One `exiftool -j -r DIR` process; returns its wall time and how many files it reported.
fn exiftool(dir: &Path) -> Result<(f64, usize)> {
    let t = Instant::now();
    let out = Command::new("exiftool")
        .args(["-j", "-r"])
        .arg(dir)
        .stderr(Stdio::null())
        .output()
        .context("running exiftool")?;
    let elapsed = ms(t.elapsed());
    // exiftool exits 1 when some file had an error but still prints the rest.
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("exiftool printed no JSON")?;
    Ok((elapsed, json.as_array().map_or(0, Vec::len)))
}

/// 3c.
fn metadata(rt: &Runtime, photos: &Path, tmp: &Path, summary: &mut Summary) -> Result<()> {
    let files = lumilio_bench::files_under(photos)?;
    let (toml, _) = lumilio_bench::one_stage_pipeline("metadata", tmp)?;
    let pipeline = Pipeline::load(&toml, rt)?;
    let rounds = lumilio_bench::rounds(5, 2);
    println!(
        "\n[3c] metadata: {} files under {} (recursive), {rounds} timed rounds after 1 warm-up",
        files.len(),
        photos.display()
    );

    // Our side reads each file too, as exiftool does.
    let pass = || -> Result<(f64, [usize; 3])> {
        let mut outcomes = [0usize; 3]; // ready, rejected, failed
        let t = Instant::now();
        for p in &files {
            let bytes = std::fs::read(p)?;
            let report = pipeline.run_blocking(&asset(p, &bytes, content_type(p)), &bytes);
            outcomes[match report.verdict {
                Verdict::Ready => 0,
                Verdict::Rejected { .. } => 1,
                Verdict::Failed { .. } => 2,
            }] += 1;
        }
        Ok((ms(t.elapsed()), outcomes))
    };
    let (_, outcomes) = pass()?;
    let (_, exif_files) = exiftool(photos)?;
    println!(
        "  ours: {} ready, {} rejected, {} failed; exiftool reported {exif_files} files",
        outcomes[0], outcomes[1], outcomes[2]
    );
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours.push(pass()?.0);
        peer.push(exiftool(photos)?.0);
    }
    let (o, p) = (median(ours), median(peer));
    println!("  metadata plugin (WASM): {o:.1} ms; exiftool -j -r: {p:.1} ms");
    let speedup = p / o;
    summary.push(Row {
        measure: format!(
            "3c metadata ({} files): WASM plugin vs exiftool -j",
            files.len()
        ),
        ours: format!("{o:.0} ms"),
        peer: format!("{p:.0} ms"),
        ratio: format!("{speedup:.1}x faster"),
        target: ">= 20x faster (aim)".into(),
        status: Status::from(speedup >= 20.0),
    });
    Ok(())
}

/// 3d, aside: the per-call cost with wasmtime's `linear_memory_keep_resident`
/// at 0, 64 KiB and 1 MiB, interleaved in one process so that the figures are
/// comparable on a shared machine. Printed only; the default (0) was chosen from it.
fn keep_resident_variants(tmp: &Path, pipeline_file: &Path) -> Result<()> {
    let variants = [0usize, 64 << 10, 1 << 20];
    let pipelines = variants
        .iter()
        .map(|&k| {
            let options = RuntimeOptions { keep_resident_bytes: k, ..RuntimeOptions::default() };
            let rt = Runtime::with_options(tmp.join(format!("cache-keep-{k}")), options)?;
            Ok(Pipeline::load(pipeline_file, &rt)?)
        })
        .collect::<Result<Vec<_>>>()?;
    println!("  keep_resident (µs per call, 3 interleaved rounds):");
    for round in 0..3 {
        let line: Vec<String> = variants
            .iter()
            .zip(&pipelines)
            .map(|(k, p)| {
                let t = lumilio::pipeline::bench::call_overhead(p, 2000);
                format!("{}={:.1}", fmt_bytes(*k as u64), t.as_secs_f64() * 1e6)
            })
            .collect();
        println!("    round {round}: {}", line.join("  "));
    }
    Ok(())
}

/// 3d.
fn overhead(rt: &Runtime, tmp: &Path, summary: &mut Summary) -> Result<()> {
    let guest = lumilio_bench::repo().join("target/guests/wasm32-wasip2/release/guest_echo.wasm");
    if !guest.is_file() {
        bail!(
            "{} is missing: run `tests/guests/build.sh echo` (scripts/bench.sh does)",
            guest.display()
        );
    }
    let mut stage = toml::Table::new();
    stage.insert("name".into(), "empty".into());
    stage.insert("component".into(), guest.display().to_string().into());
    let mut config = toml::Table::new();
    config.insert("noop".into(), "1".into());
    stage.insert("config".into(), config.into());
    let pipeline_file = lumilio_bench::write_pipeline(tmp, "empty", stage)?;
    let pipeline = Pipeline::load(&pipeline_file, rt)?;
    let iterations = lumilio_bench::rounds(5000, 1000) as u32;
    println!(
        "\n[3d] empty stage (guest_echo, noop): fresh Store + instantiate + call, {iterations} calls x 3 runs"
    );
    let runs: Vec<f64> = (0..3)
        .map(|_| lumilio::pipeline::bench::call_overhead(&pipeline, iterations).as_secs_f64() * 1e6)
        .collect();
    println!(
        "  per call: {}",
        runs.iter()
            .map(|u| format!("{u:.1} µs"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let us = median(runs);
    keep_resident_variants(tmp, &pipeline_file)?;
    summary.push(Row {
        measure: "3d runtime overhead: instantiate + call, empty stage".into(),
        ours: format!("{us:.1} us"),
        peer: "-".into(),
        ratio: "-".into(),
        target: "<= 50 us".into(),
        status: Status::from(us <= 50.0),
    });
    Ok(())
}
