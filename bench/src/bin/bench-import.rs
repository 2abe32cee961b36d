//! Issue 15 §2: a whole-library import into the real `lumilio serve` (CLIP
//! on, with the reference inference server) against the tool a user would
//! otherwise run, `vipsthumbnail`, making the same rendition sizes.
//!
//! * 15.2a: N distinct full-size photos through the native batch API
//!   (`POST /api/v1/assets/batch`), from the client's first hash until every
//!   asset is `ready` and has its CLIP embedding.
//! * 15.2b: the same photos through the Immich CLI (`immich upload`) into a
//!   fresh database and service, timed the same way.
//! * Peer: `vipsthumbnail` per rendition size (400, 800, 1920 boxes q80 and a
//!   224×224 centre crop, the command line of 3a) on the same files, with as
//!   many processes at once as cores; whole wall time.
//! * Beside wall time: user+sys CPU seconds of host, inference server,
//!   PostgreSQL and client against vips'; the host's VmHWM, and VmRSS sampled
//!   every 100 ms (the first and last quarter of the run, to show it flat).
//!
//! The photos are made once from the 12 MP phone photo and the iPhone HDR
//! photo (re-encoded with different crops and qualities, their EXIF and ICC
//! segments kept) and cached under `target/bench-import/`.
//!
//! Needs `DATABASE_URL` (an admin URL: a fresh database is created per way and
//! dropped), `target/release/lumilio`, `target/release/lumilio-infer`, the
//! plugins, `vipsthumbnail`, and the Immich CLI (`scripts/immich-cli.sh`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lumilio_bench::service::{
    BenchDb, InferServer, Server, admin_and_host, cluster_cpu, postmaster_pid, proc_cpu, proc_status,
};
use lumilio_bench::{Row, Status, Summary, env_or, repo};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const MIB: f64 = (1u64 << 20) as f64;
/// Files per batch request: about 60 MiB of full-size photos.
const BATCH_FILES: usize = 20;
/// Batch requests in flight at once (the host allows 8 uploads per key).
const BATCH_SENDERS: usize = 2;
/// `immich upload --concurrency`: as in the e2e test; the CLI's default is 1.
const IMMICH_CONCURRENCY: usize = 4;
/// Longest wait for one way to finish before the benchmark gives up.
const DEADLINE: Duration = Duration::from_secs(30 * 60);

#[tokio::main]
async fn main() -> Result<()> {
    let (admin, bin) = admin_and_host()?;
    let infer = repo().join("target/release/lumilio-infer");
    ensure!(
        infer.is_file(),
        "{} is missing: run `cargo build --release -p lumilio-infer`",
        infer.display()
    );
    let count: usize = env_or(
        "BENCH_IMPORT_COUNT",
        if lumilio_bench::quick() { 100 } else { 1000 },
    );
    let seed: u64 = env_or("BENCH_IMPORT_SEED", 1);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "issue 15 §2 benchmark: import {count} photos ({} mode, {cores} cores)",
        if lumilio_bench::quick() {
            "quick"
        } else {
            "full"
        }
    );

    let set = photo_set(count, seed)?;
    let cli = immich_cli()?;
    let work = lumilio_bench::scratch("bench-import")?;
    let mut summary = Summary::default();

    // Order: batch, vips, Immich, so that drift in the machine's load falls
    // on the peer's both sides.
    let batch = import(Way::Batch, &set, &bin, &infer, &admin, work.path()).await?;
    let vips = vips_peer(&set, cores, work.path())?;
    let immich = import(Way::Immich(&cli), &set, &bin, &infer, &admin, work.path()).await?;

    for (id, run) in [("15.2a", &batch), ("15.2b", &immich)] {
        rows(id, run, &vips, set.files.len(), cores, &mut summary);
    }
    summary.finish()
}

// ---------------------------------------------------------------------------
// The photo set

/// The generated photos, all in one folder (the Immich CLI uploads the folder).
struct PhotoSet {
    dir: PathBuf,
    files: Vec<PathBuf>,
    bytes: u64,
}

/// The full-size sources: the 12 MP phone photo and the iPhone HDR photo.
const SOURCES: [&str; 2] = [
    "jpg/mobile/HMD_Nokia_8.3_5G.jpg",
    "jpg/hdr/iphone_hdr_NO.jpg",
];

/// One decoded source and the segments each re-encoding keeps.
struct Source {
    rgb: Vec<u8>,
    width: usize,
    height: usize,
    /// The APP1 `Exif\0\0…` payload, as in the file.
    exif: Option<Vec<u8>>,
    icc: Option<Vec<u8>>,
}

/// Makes (or finds, cached under `target/bench-import/`) `count` distinct
/// full-size JPEGs from the sources, keyed by count, seed and generator version.
fn photo_set(count: usize, seed: u64) -> Result<PhotoSet> {
    let dir = repo().join(format!("target/bench-import/v1-n{count}-s{seed}"));
    let done = dir.join(".complete");
    let files: Vec<PathBuf> = (0..count)
        .map(|i| dir.join(format!("IMG_{i:05}.jpg")))
        .collect();
    if !done.is_file() {
        std::fs::create_dir_all(&dir)?;
        let sources: Vec<Source> = SOURCES
            .iter()
            .map(|s| decode_source(s))
            .collect::<Result<_>>()?;
        let t = Instant::now();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| -> Result<()> {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        while let Some(path) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                            let i = index_of(path);
                            // A file from an interrupted run is whole (written by rename).
                            if !path.is_file() {
                                let bytes = variant(&sources, seed, i)?;
                                let tmp = path.with_extension("part");
                                std::fs::write(&tmp, bytes)?;
                                std::fs::rename(&tmp, path)?;
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for w in workers {
                w.join()
                    .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
            }
            Ok(())
        })?;
        // No two may share bytes, or dedup would answer instead of the pipeline.
        let mut seen = HashSet::new();
        for f in &files {
            let h = blake3::Hasher::new()
                .update_reader(std::fs::File::open(f)?)?
                .finalize();
            ensure!(seen.insert(h), "{} repeats an earlier file", f.display());
        }
        std::fs::write(&done, format!("{count}\n"))?;
        println!(
            "  generated {count} photos in {:.1} s with {threads} threads",
            t.elapsed().as_secs_f64()
        );
    }
    let mut bytes = 0;
    for f in &files {
        bytes += std::fs::metadata(f)
            .with_context(|| format!("{} (delete {} to regenerate)", f.display(), dir.display()))?
            .len();
    }
    println!(
        "  photo set: {} ({count} files, {:.0} MiB, {:.1} MiB each on average)",
        dir.display(),
        bytes as f64 / MIB,
        bytes as f64 / MIB / count.max(1) as f64
    );
    Ok(PhotoSet { dir, files, bytes })
}

/// The index in `IMG_NNNNN.jpg`.
fn index_of(path: &Path) -> u64 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix("IMG_"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Decodes a sample at full size and keeps its EXIF and ICC segments.
fn decode_source(rel: &str) -> Result<Source> {
    let bytes = testdata::read(rel);
    let mut d = jpeg_decoder::Decoder::new(&bytes[..]);
    let rgb = d.decode().with_context(|| format!("decoding {rel}"))?;
    let info = d.info().context("no image info")?;
    ensure!(
        info.pixel_format == jpeg_decoder::PixelFormat::RGB24,
        "{rel} is not RGB ({:?})",
        info.pixel_format
    );
    Ok(Source {
        rgb,
        width: info.width.into(),
        height: info.height.into(),
        exif: app1_exif(&bytes),
        icc: d.icc_profile(),
    })
}

/// The payload of the first APP1 segment that holds EXIF (`Exif\0\0` + TIFF).
fn app1_exif(jpeg: &[u8]) -> Option<Vec<u8>> {
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF && jpeg[i + 1] != 0xDA {
        let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
        let payload = jpeg.get(i + 4..i + 2 + len)?;
        if jpeg[i + 1] == 0xE1 && payload.starts_with(b"Exif\0\0") {
            return Some(payload.to_vec());
        }
        i += 2 + len;
    }
    None
}

/// Photo `i`: a crop of 80–100% of each side of one source at a random
/// offset, re-encoded at quality 70–94 with the source's EXIF and ICC.
fn variant(sources: &[Source], seed: u64, i: u64) -> Result<Vec<u8>> {
    // The fuzz tests' repeatable generator (SplitMix64), seeded per photo.
    let mut st = lumilio_fuzzkit::Rng::new(seed.wrapping_mul(0x1_0000_0001).wrapping_add(i));
    let src = &sources[(i % sources.len() as u64) as usize];
    let mut frac = |n: usize| n * (80 + (st.next() % 21) as usize) / 100;
    let (w, h) = (frac(src.width), frac(src.height));
    let x = (st.next() % (src.width - w + 1) as u64) as usize;
    let y = (st.next() % (src.height - h + 1) as u64) as usize;
    let quality = 70 + (st.next() % 25) as u8;
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in y..y + h {
        let start = (row * src.width + x) * 3;
        rgb.extend_from_slice(&src.rgb[start..start + w * 3]);
    }
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, quality);
    if let Some(exif) = &src.exif {
        enc.add_app_segment(1, exif.clone())?;
    }
    if let Some(icc) = &src.icc {
        enc.add_icc_profile(icc)?;
    }
    enc.encode(
        &rgb,
        w.try_into()?,
        h.try_into()?,
        jpeg_encoder::ColorType::Rgb,
    )?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// One import

/// How the photos are sent.
#[derive(Clone, Copy)]
enum Way<'a> {
    /// `POST /api/v1/assets/batch` from this process.
    Batch,
    /// `immich upload`, with the wrapper script at this path.
    Immich(&'a Path),
}

impl Way<'_> {
    fn name(self) -> &'static str {
        match self {
            Way::Batch => "batch API",
            Way::Immich(_) => "Immich CLI",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Way::Batch => "batch",
            Way::Immich(_) => "immich",
        }
    }
}

/// What one import measured.
struct Import {
    way: &'static str,
    /// From the client's start until every asset is ready with its embedding.
    wall: Duration,
    /// When the client had sent everything (the rest is processing).
    sent: Duration,
    cpu: Cpu,
    /// The host's VmHWM at the end.
    hwm: u64,
    /// Host VmRSS samples over the run.
    rss: Vec<(Duration, u64)>,
}

/// CPU seconds (user + system) of each side of an import.
#[derive(Default, Clone, Copy)]
struct Cpu {
    host: Duration,
    infer: Duration,
    postgres: Duration,
    client: Duration,
}

impl Cpu {
    fn total(&self) -> Duration {
        self.host + self.infer + self.postgres + self.client
    }
}

/// A fresh database, inference server and `lumilio serve`; imports the set
/// one `way`; returns the figures. Prints where the time went.
async fn import(
    way: Way<'_>,
    set: &PhotoSet,
    bin: &Path,
    infer_bin: &Path,
    admin: &str,
    work: &Path,
) -> Result<Import> {
    let n = set.files.len();
    let work = work.join(way.dir());
    std::fs::create_dir_all(&work)?;
    let db = BenchDb::create(admin).await?;
    db.migrate(bin)?;
    let key = db
        .api_key(bin)
        .context("the import needs an API key (lumilio user create)")?;
    let infer = InferServer::start(infer_bin, &work, &[])?;
    let infer_addr = infer.addr.clone();
    let server = Server::start(
        bin,
        &db.url,
        &work,
        Some(&key),
        &[("ML_SERVICE_ADDR", &infer_addr)],
    )
    .await?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await?;
    let postmaster = postmaster_pid(&pool).await;
    println!(
        "\n[{}] {n} photos ({:.0} MiB) into a fresh database; lumilio serve (repository pipeline, 5 process_asset workers, CLIP on: lumilio-infer at {infer_addr})",
        way.name(),
        set.bytes as f64 / MIB
    );

    let result = async {
        // The Immich CLI logs in before the clock starts: it is set-up, not import.
        let home = work.join("home");
        if let Way::Immich(cli) = way {
            let out = immich(cli, &home, &["login", &server.base, &key]).output()?;
            ensure!(out.status.success(), "immich login: {}", text(&out));
        }
        let before = CpuMarks::read(&server, &infer, postmaster);
        let rss = RssSeries::start(server.pid());
        let t0 = Instant::now();
        let client_cpu = match way {
            Way::Batch => {
                let c0 = lumilio_bench::cpu_self();
                upload_batches(&server, &set.files).await?;
                lumilio_bench::cpu_self() - c0
            }
            Way::Immich(cli) => {
                let c0 = lumilio_bench::cpu_children();
                let mut cmd = immich(cli, &home, &[]);
                cmd.args(["upload", "--recursive", "--no-progress", "--concurrency"])
                    .arg(IMMICH_CONCURRENCY.to_string())
                    .arg(&set.dir);
                let out = tokio::process::Command::from(cmd).output().await?;
                let c = lumilio_bench::cpu_children() - c0;
                let said = text(&out);
                ensure!(
                    out.status.success() && said.contains(&format!("Successfully uploaded {n} new asset")),
                    "immich upload did not upload {n} new assets:\n{said}"
                );
                c
            }
        };
        let sent = t0.elapsed();
        let end = wait_done(&pool, n, t0).await?;
        let wall = end;
        let rss = rss.finish();
        let mut cpu = before.since(&server, &infer, postmaster);
        // The batch client's own polling and sampling run in this process too.
        cpu.client = client_cpu;
        let hwm = proc_status(server.pid(), "VmHWM:").unwrap_or(0);
        println!(
            "  everything sent at {:.1} s; all {n} ready with embeddings at {:.1} s: {:.2} photos/s",
            sent.as_secs_f64(),
            wall.as_secs_f64(),
            n as f64 / wall.as_secs_f64()
        );
        println!(
            "  CPU s: host {:.1}, lumilio-infer {:.1}, postgres {:.1}, client {:.1}; total {:.1} ({:.0} ms per photo)",
            cpu.host.as_secs_f64(),
            cpu.infer.as_secs_f64(),
            cpu.postgres.as_secs_f64(),
            cpu.client.as_secs_f64(),
            cpu.total().as_secs_f64(),
            cpu.total().as_secs_f64() * 1e3 / n as f64
        );
        where_time_went(&pool, &server).await?;
        Ok(Import {
            way: way.name(),
            wall,
            sent,
            cpu,
            hwm,
            rss,
        })
    }
    .await;
    if result.is_err() {
        eprintln!("--- server log (tail) ---\n{}", server.log_tail(40));
    }
    pool.close().await;
    drop(server);
    drop(infer);
    drop(db);
    result
}

/// Sends every file in batches of `BATCH_FILES`, `BATCH_SENDERS` requests at a
/// time; each part is streamed from its file and named by its BLAKE3 hash,
/// which the sender computes first (that read warms the page cache, as a
/// client's would).
async fn upload_batches(server: &Server, files: &[PathBuf]) -> Result<()> {
    let batches: Arc<Vec<Vec<PathBuf>>> =
        Arc::new(files.chunks(BATCH_FILES).map(<[PathBuf]>::to_vec).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..BATCH_SENDERS {
        let (batches, next, client, base) = (
            batches.clone(),
            next.clone(),
            server.client.clone(),
            server.base.clone(),
        );
        senders.push(tokio::spawn(async move {
            while let Some(batch) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                let paths = batch.clone();
                let hashes = tokio::task::spawn_blocking(move || {
                    paths
                        .iter()
                        .map(|p| {
                            let mut h = blake3::Hasher::new();
                            h.update_reader(std::fs::File::open(p)?)?;
                            Ok((
                                h.finalize().to_hex().to_string(),
                                std::fs::metadata(p)?.len(),
                            ))
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .await??;
                let mut form = reqwest::multipart::Form::new();
                for (path, (hash, len)) in batch.iter().zip(hashes) {
                    let file = tokio::fs::File::open(path).await?;
                    let body = reqwest::Body::wrap_stream(
                        tokio_util::io::ReaderStream::with_capacity(file, 256 << 10),
                    );
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                    let part = reqwest::multipart::Part::stream_with_length(body, len)
                        .file_name(name.unwrap_or_default())
                        .mime_str("image/jpeg")?;
                    form = form.part(hash, part);
                }
                let r = client
                    .post(format!("{base}/api/v1/assets/batch"))
                    .multipart(form)
                    .send()
                    .await?;
                let status = r.status();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                ensure!(
                    status.is_success(),
                    "batch upload answered {status}: {body}"
                );
                let results = body["results"].as_array().context("no results")?;
                ensure!(
                    results.len() == batch.len(),
                    "{} results for {} parts",
                    results.len(),
                    batch.len()
                );
                if let Some(bad) = results.iter().find(|r| r["status"] != "processing") {
                    bail!("a part was not queued as new: {bad}");
                }
            }
            anyhow::Ok(())
        }));
    }
    for s in senders {
        s.await??;
    }
    Ok(())
}

/// Polls the database every 100 ms until `n` assets exist, none is
/// processing, and every ready one has its embedding; returns the time since
/// `t0`. Fails if any asset ends other than ready.
async fn wait_done(pool: &PgPool, n: usize, t0: Instant) -> Result<Duration> {
    loop {
        let (total, processing, ready, embedded): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status = 'processing'), \
                    count(*) FILTER (WHERE status = 'ready'), \
                    (SELECT count(*) FROM embeddings) \
             FROM assets",
        )
        .fetch_one(pool)
        .await?;
        if total as usize >= n && processing == 0 {
            if ready as usize != n {
                let other: Vec<(String, Option<String>)> = sqlx::query_as(
                    "SELECT status, reason FROM assets WHERE status <> 'ready' LIMIT 5",
                )
                .fetch_all(pool)
                .await?;
                bail!(
                    "{} of {n} assets did not end ready, e.g. {other:?}",
                    n as i64 - ready
                );
            }
            if embedded >= ready {
                return Ok(t0.elapsed());
            }
        }
        ensure!(
            t0.elapsed() < DEADLINE,
            "not done after {} s: {total} assets, {processing} processing, {ready} ready, {embedded} embedded",
            DEADLINE.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints where an import's time went: each stage's time (`stage_results`),
/// each job kind's run time and queue wait (`river_job`), and the CLIP
/// dispatcher's batches (`/metrics`).
async fn where_time_went(pool: &PgPool, server: &Server) -> Result<()> {
    let stages: Vec<(String, i64, f64, f64)> = sqlx::query_as(
        "SELECT stage, count(*), avg(duration_ms)::float8, (sum(duration_ms) / 1000)::float8 \
         FROM stage_results GROUP BY stage ORDER BY min(position)",
    )
    .fetch_all(pool)
    .await?;
    for (stage, count, mean, sum) in stages {
        println!("  stage {stage:<10} {count:>5} runs, mean {mean:7.1} ms, sum {sum:7.1} s");
    }
    let jobs: Vec<(String, i64, f64, f64, f64)> = sqlx::query_as(
        "SELECT kind, count(*), \
                avg(extract(epoch FROM finalized_at - attempted_at))::float8 * 1000, \
                sum(extract(epoch FROM finalized_at - attempted_at))::float8, \
                avg(extract(epoch FROM attempted_at - scheduled_at))::float8 * 1000 \
         FROM river_job WHERE state = 'completed' GROUP BY kind ORDER BY kind",
    )
    .fetch_all(pool)
    .await?;
    for (kind, count, mean, sum, wait) in jobs {
        println!(
            "  job {kind:<14} {count:>5} completed, run mean {mean:7.1} ms (sum {sum:7.1} s), queue wait mean {wait:8.1} ms"
        );
    }
    let metrics = server.metrics_text().await?;
    for line in metrics.lines().filter(|l| l.starts_with("lumilio_clip_")) {
        println!("  {line}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The peer

/// What the vips peer measured.
struct Vips {
    wall: Duration,
    cpu: Duration,
}

/// `vipsthumbnail` per rendition size (3a's command line) on every file,
/// `procs` files at a time, each with vips' default thread pool, as users run it.
fn vips_peer(set: &PhotoSet, procs: usize, work: &Path) -> Result<Vips> {
    let (_, config) = lumilio_bench::one_stage_pipeline("thumbnail", work)?;
    let cfg = thumbnail::parse_config(&config.into())?;
    println!(
        "\n[vips] vipsthumbnail, {} calls per photo (the thumbnail stage's sizes, q{}), {procs} processes at once, on the same {} files",
        cfg.renditions.len(),
        cfg.quality,
        set.files.len()
    );
    let next = AtomicUsize::new(0);
    let c0 = lumilio_bench::cpu_children();
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..procs)
            .map(|w| {
                let (next, cfg) = (&next, &cfg);
                s.spawn(move || -> Result<()> {
                    let out = work.join(format!("vips-{w}"));
                    std::fs::create_dir_all(&out)?;
                    while let Some(f) = set.files.get(next.fetch_add(1, Ordering::Relaxed)) {
                        lumilio_bench::vips_all(f, &cfg.renditions, cfg.quality, &out)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a vips thread panicked"))??;
        }
        Ok(())
    })?;
    let wall = t.elapsed();
    let cpu = lumilio_bench::cpu_children() - c0;
    println!(
        "  {:.1} s, {:.2} photos/s; CPU {:.1} s ({:.0} ms per photo)",
        wall.as_secs_f64(),
        set.files.len() as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e3 / set.files.len() as f64
    );
    Ok(Vips { wall, cpu })
}

// ---------------------------------------------------------------------------
// Rows

/// The summary rows of one way against vips.
fn rows(id: &str, run: &Import, vips: &Vips, n: usize, cores: usize, summary: &mut Summary) {
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let r = vips.wall.as_secs_f64() / run.wall.as_secs_f64();
    summary.push(Row {
        measure: format!(
            "{id} import {n} photos via {} (upload to ready + CLIP) vs vipsthumbnail x{cores} procs",
            run.way
        ),
        ours: format!("{:.2} photos/s ({:.1} s)", rate(run.wall), run.wall.as_secs_f64()),
        peer: format!("{:.2} photos/s ({:.1} s)", rate(vips.wall), vips.wall.as_secs_f64()),
        ratio: format!("{r:.2}x faster"),
        target: ">= 2.0x (stretch 3x)".into(),
        status: Status::from(r >= 2.0),
    });
    let c = run.cpu;
    summary.push(Row::info(
        format!("{id}' CPU user+sys: host+infer+postgres+client vs vips"),
        format!(
            "{:.1} s (host {:.1}, infer {:.1}, pg {:.1}, client {:.1})",
            c.total().as_secs_f64(),
            c.host.as_secs_f64(),
            c.infer.as_secs_f64(),
            c.postgres.as_secs_f64(),
            c.client.as_secs_f64()
        ),
        format!("{:.1} s", vips.cpu.as_secs_f64()),
        format!(
            "{:.2}x less",
            vips.cpu.as_secs_f64() / c.total().as_secs_f64()
        ),
    ));
    let (first, last) = quarters(&run.rss);
    summary.push(Row {
        measure: format!("{id}'' host RSS over the run: max VmRSS last quarter vs first quarter"),
        ours: format!(
            "{:.0} MiB (VmHWM {:.0} MiB)",
            last as f64 / MIB,
            run.hwm as f64 / MIB
        ),
        peer: format!("{:.0} MiB", first as f64 / MIB),
        ratio: format!("{:.2}x", last as f64 / first.max(1) as f64),
        target: "<= 1.2x (flat)".into(),
        status: Status::from(last as f64 <= 1.2 * first as f64),
    });
    println!(
        "  {}: sent in {:.1} s of {:.1} s",
        run.way,
        run.sent.as_secs_f64(),
        run.wall.as_secs_f64()
    );
}

/// The largest VmRSS in the first and in the last quarter of the samples' time span.
fn quarters(samples: &[(Duration, u64)]) -> (u64, u64) {
    let end = samples.last().map_or(Duration::ZERO, |s| s.0);
    let max_in = |keep: &dyn Fn(Duration) -> bool| {
        samples
            .iter()
            .filter(|s| keep(s.0))
            .map(|s| s.1)
            .max()
            .unwrap_or(0)
    };
    (max_in(&|t| t * 4 <= end), max_in(&|t| t * 4 >= end * 3))
}

// ---------------------------------------------------------------------------
// Processes, CPU and memory

/// `immich --config-directory HOME/immich ARGS` with a clean environment.
fn immich(cli: &Path, home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(cli);
    cmd.arg("--config-directory")
        .arg(home.join("immich"))
        .args(args)
        .env("HOME", home)
        .env_remove("IMMICH_INSTANCE_URL")
        .env_remove("IMMICH_API_KEY");
    cmd
}

/// The Immich CLI's wrapper, installed by `scripts/immich-cli.sh` (idempotent).
fn immich_cli() -> Result<PathBuf> {
    let out = Command::new("bash")
        .arg(repo().join("scripts/immich-cli.sh"))
        .output()
        .context("running scripts/immich-cli.sh")?;
    ensure!(
        out.status.success(),
        "installing @immich/cli failed (it needs npm):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// CPU readings at the start of an import.
struct CpuMarks {
    host: Duration,
    infer: Duration,
    postgres: Duration,
}

impl CpuMarks {
    fn read(server: &Server, infer: &InferServer, postmaster: Option<u32>) -> CpuMarks {
        CpuMarks {
            host: proc_cpu(server.pid()).unwrap_or_default(),
            infer: proc_cpu(infer.pid()).unwrap_or_default(),
            postgres: cluster_cpu(postmaster),
        }
    }

    /// CPU used since these marks (the client's is filled in by the caller).
    fn since(&self, server: &Server, infer: &InferServer, postmaster: Option<u32>) -> Cpu {
        let now = CpuMarks::read(server, infer, postmaster);
        Cpu {
            host: now.host.saturating_sub(self.host),
            infer: now.infer.saturating_sub(self.infer),
            postgres: now.postgres.saturating_sub(self.postgres),
            client: Duration::ZERO,
        }
    }
}

/// VmRSS of a process sampled every 100 ms on a thread, with the time of each sample.
struct RssSeries {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(Duration, u64)>>,
}

impl RssSeries {
    fn start(pid: u32) -> RssSeries {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut out = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                out.push((t0.elapsed(), proc_status(pid, "VmRSS:").unwrap_or(0)));
                std::thread::sleep(Duration::from_millis(100));
            }
            out.push((t0.elapsed(), proc_status(pid, "VmRSS:").unwrap_or(0)));
            out
        });
        RssSeries { stop, handle }
    }

    fn finish(self) -> Vec<(Duration, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_keep_the_exif_segment_and_differ() {
        let sources = [decode_source(SOURCES[0]).unwrap()];
        let exif = sources[0].exif.clone().expect("the phone photo has EXIF");
        let a = variant(&sources, 1, 0).unwrap();
        let b = variant(&sources, 1, 1).unwrap();
        assert_ne!(a, b);
        assert_eq!(app1_exif(&a), Some(exif));
        let mut d = jpeg_decoder::Decoder::new(&a[..]);
        d.read_info().unwrap();
        let info = d.info().unwrap();
        // A crop of at least 80% of each side: still full-size.
        assert!(
            usize::from(info.width) * 5 >= sources[0].width * 4,
            "{info:?}"
        );
        assert!(
            usize::from(info.height) * 5 >= sources[0].height * 4,
            "{info:?}"
        );
    }

    #[test]
    fn quarters_take_the_largest_sample_at_each_end() {
        let s = |secs: u64, rss| (Duration::from_secs(secs), rss);
        let samples = [s(0, 10), s(1, 30), s(2, 99), s(3, 20), s(4, 40)];
        assert_eq!(quarters(&samples), (30, 40));
    }
}
