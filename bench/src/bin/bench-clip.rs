//! Issue 5 §6: the CLIP batch dispatcher against the original one-worker setup.
//!
//! Starts the reference inference server (`target/release/lumilio-infer`, one
//! batch at a time, 20 ms per batch plus 1 ms per request: each image is two
//! requests, `clip_image_embed` and `smart_classify`, so 2 ms per image) and
//! drives the host's `lumilio::clip::Dispatcher` in-process with its defaults
//! (batch 8, window 1500 ms), fed by W tasks that stand in for the River
//! `process_clip` workers: each takes the next item of a queue that never runs
//! dry (saturation) and awaits `submit`.
//!
//! * 5a: mean batch fill ratio with W = 16 (the host's `LUMILIO_CLIP_WORKERS`).
//! * 5b: CLIP items/s with W = 16 vs one worker with batch size 1, whose
//!   items never wait for the window (the server's serial speed: the fair peer).
//! * 5b': p50/p95 latency from a worker taking the item to `submit` returning
//!   (the embedding's database write is not part of it).
//! * 5b'': context: W = 16 vs W = 1 with the default window (the original
//!   configuration, whose lone items wait out the window).
//!
//! Images are the 224×224 `clip` renditions of the sample JPEGs, made once
//! with the thumbnail plugin's native code and the repository's config.

use std::path::Path;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lumilio::clip::{ClipConfig, Dispatcher, DispatcherMetrics};
use lumilio_bench::service::InferServer;
use lumilio_bench::{Row, Status, Summary, repo};
use uuid::Uuid;

/// The server: 20 ms per batch.
const BATCH_COST_MS: u64 = 20;
/// 1 ms per request = 2 ms per image (embed + classify), the "2 ms per item".
const REQUEST_COST_MS: u64 = 1;
/// The host's default `LUMILIO_CLIP_WORKERS`.
const WORKERS: usize = 16;

#[tokio::main]
async fn main() -> Result<()> {
    let infer = repo().join("target/release/lumilio-infer");
    ensure!(
        infer.is_file(),
        "{} is missing: run `cargo build --release -p lumilio-infer`",
        infer.display()
    );
    let photos = lumilio_bench::testdata()?;
    let work = lumilio_bench::scratch("bench-clip")?;
    let quick = lumilio_bench::quick();
    println!(
        "issue 5 benchmarks (photos: {}; {} mode)",
        photos.display(),
        if quick { "quick" } else { "full" }
    );

    let images = Arc::new(clip_renditions(&photos, work.path())?);
    let server = InferServer::start(
        &infer,
        work.path(),
        &[
            "--batch-cost-ms",
            &BATCH_COST_MS.to_string(),
            "--item-cost-ms",
            &REQUEST_COST_MS.to_string(),
        ],
    )?;
    let defaults = ClipConfig::default();
    println!(
        "\n[5a/5b] CLIP dispatcher in-process against lumilio-infer --batch-cost-ms {BATCH_COST_MS} --item-cost-ms {REQUEST_COST_MS} \
         (one batch at a time; the item cost is per request and an image is 2 requests, so {BATCH_COST_MS} ms per batch + {} ms per image); \
         batch size {}, window {} ms; {} distinct 224x224 clip JPEGs, cycled",
        2 * REQUEST_COST_MS,
        defaults.batch_size,
        defaults.window.as_millis(),
        images.len()
    );
    println!(
        "  latency = a worker taking the item -> submit returning the embedding and labels (the DB write is not included)"
    );

    let result = async {
        let cfg = ClipConfig {
            addr: server.addr.clone(),
            ..ClipConfig::default()
        };
        // W = 16 for a fixed number of items (a multiple of the batch size);
        // W = 1 for a fixed number of items or a time bound, whichever comes first:
        // each of its batches holds one item and waits out the window.
        let many_items = if quick { 240 } else { 800 };
        let (one_items, one_bound) = if quick {
            (8, Duration::from_secs(12))
        } else {
            (20, Duration::from_secs(30))
        };
        let many = run(&cfg, &images, WORKERS, many_items, Duration::from_secs(60)).await?;
        // The original set-up: no idle flush, so each lone item waits out the window.
        let windowed = ClipConfig {
            idle: cfg.window,
            ..cfg.clone()
        };
        let one = run(&windowed, &images, 1, one_items, one_bound).await?;
        // Context only: one worker whose every item is sent at once (batch size 1),
        // i.e. the server's serial speed without the window.
        let serial_cfg = ClipConfig {
            batch_size: 1,
            ..cfg.clone()
        };
        let serial_items = if quick { 40 } else { 120 };
        let serial = run(
            &serial_cfg,
            &images,
            1,
            serial_items,
            Duration::from_secs(20),
        )
        .await?;
        Ok::<_, anyhow::Error>((many, one, serial))
    }
    .await;
    if result.is_err() {
        eprintln!("--- lumilio-infer log (tail) ---\n{}", server.log_tail(40));
    }
    drop(server);
    let (many, one, serial) = result?;

    println!();
    println!(
        "  {:<30} | {:>5} | {:>7} | {:>10} | {:>8} | {:>8} | {:>8}",
        "config", "items", "batches", "fill ratio", "items/s", "p50", "p95"
    );
    println!("  {}", "-".repeat(30 + 5 + 7 + 10 + 8 + 8 + 8 + 18));
    for (r, note) in [(&many, ""), (&one, ""), (&serial, ", batch 1")] {
        println!(
            "  {:<30} | {:>5} | {:>7} | {:>10.3} | {:>8.1} | {:>5.0} ms | {:>5.0} ms",
            format!(
                "{} process_clip worker{}{note}",
                r.workers,
                if r.workers == 1 { "" } else { "s" }
            ),
            r.items,
            r.metrics.batches_sent,
            r.metrics.mean_fill_ratio(),
            r.per_sec(),
            r.p(0.50),
            r.p(0.95)
        );
    }

    let mut summary = Summary::default();
    let fill = many.metrics.mean_fill_ratio();
    summary.push(Row {
        measure: format!("5a CLIP batch fill ratio, {WORKERS} workers at saturation"),
        ours: format!("{fill:.2}"),
        peer: format!("{:.3} (1 worker)", one.metrics.mean_fill_ratio()),
        ratio: "-".into(),
        target: ">= 0.9".into(),
        status: Status::from(fill >= 0.9),
    });
    // The fair peer leads (issue 15 §6): one worker with batch size 1 never
    // waits for the window, so it is the server's serial speed; batching must
    // beat that, not only the one-worker set-up whose items wait out the window.
    let speedup = many.per_sec() / serial.per_sec();
    summary.push(Row {
        measure: format!(
            "5b CLIP items/s, {WORKERS} workers vs 1 worker with batch size 1 (no window wait)"
        ),
        ours: format!("{:.1} items/s", many.per_sec()),
        peer: format!("{:.1} items/s", serial.per_sec()),
        ratio: format!("{speedup:.1}x"),
        target: ">= 5x".into(),
        status: Status::from(speedup >= 5.0),
    });
    summary.push(Row::info(
        format!(
            "5b'' CLIP items/s, {WORKERS} workers vs 1 worker with the default window (the original set-up)"
        ),
        format!("{:.1} items/s", many.per_sec()),
        format!("{:.2} items/s", one.per_sec()),
        format!("{:.1}x", many.per_sec() / one.per_sec()),
    ));
    summary.push(Row::info(
        "5b' CLIP latency p50/p95 (take item -> submit returns; no DB write)",
        format!("{:.0}/{:.0} ms", many.p(0.50), many.p(0.95)),
        format!("{:.0}/{:.0} ms", one.p(0.50), one.p(0.95)),
        "-",
    ));
    summary.finish()
}

/// The 224×224 `clip` rendition of every sample JPEG (top of `jpg/`) that decodes,
/// made with the thumbnail plugin's native code and the repository's thumbnail config.
fn clip_renditions(photos: &Path, tmp: &Path) -> Result<Vec<Vec<u8>>> {
    let (_, pairs) = lumilio_bench::one_stage_pipeline("thumbnail", tmp)?;
    let mut cfg = thumbnail::parse_config(&pairs.into())?;
    cfg.renditions.retain(|s| s.name == "clip");
    ensure!(
        !cfg.renditions.is_empty(),
        "the thumbnail stage of pipeline.toml makes no `clip` rendition"
    );
    let mut out = Vec::new();
    for p in lumilio_bench::jpegs_in(&photos.join("jpg"))? {
        let bytes = std::fs::read(&p)?;
        if let Ok(t) = thumbnail::thumbnails(&bytes, &cfg, None) {
            out.extend(t.thumbs.into_iter().map(|t| t.jpeg));
        }
    }
    ensure!(
        out.len() >= 8,
        "only {} clip renditions from {}/jpg; need at least 8 distinct images",
        out.len(),
        photos.display()
    );
    Ok(out)
}

/// What one configuration did.
struct RunResult {
    workers: usize,
    items: usize,
    elapsed: Duration,
    /// Per-item latency in ms, sorted.
    latencies: Vec<f64>,
    metrics: DispatcherMetrics,
}

impl RunResult {
    fn per_sec(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile, in ms.
    fn p(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let rank = (q * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

/// `workers` tasks pull items until `items` were taken or `bound` has passed,
/// each awaiting `submit` on a fresh dispatcher (so its counters are this run's).
/// Throughput = items completed / first take to last completion.
async fn run(
    cfg: &ClipConfig,
    images: &Arc<Vec<Vec<u8>>>,
    workers: usize,
    items: usize,
    bound: Duration,
) -> Result<RunResult> {
    let dispatcher = Dispatcher::connect(cfg.clone()).await?;
    // Open the connection before the clock starts.
    dispatcher.health().await?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (d, next, images) = (dispatcher.clone(), next.clone(), images.clone());
        tasks.push(tokio::spawn(async move {
            let mut done: Vec<(f64, Instant)> = Vec::new();
            loop {
                if start.elapsed() >= bound {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items {
                    break;
                }
                let taken = Instant::now();
                let image = images[i % images.len()].clone();
                let res = d.submit(Uuid::new_v4(), image, "image/jpeg").await;
                let end = Instant::now();
                res.with_context(|| format!("submit of item {i}"))?;
                done.push(((end - taken).as_secs_f64() * 1e3, end));
            }
            Ok::<_, anyhow::Error>(done)
        }));
    }
    let mut latencies = Vec::new();
    let mut last = start;
    for t in tasks {
        for (lat, end) in t.await?? {
            latencies.push(lat);
            last = last.max(end);
        }
    }
    if latencies.is_empty() {
        bail!("{workers} worker(s) completed no item within {bound:?}");
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let metrics = dispatcher.metrics();
    ensure!(
        metrics.items_failed == 0,
        "{} items failed: {metrics:?}",
        metrics.items_failed
    );
    let r = RunResult {
        workers,
        items: latencies.len(),
        elapsed: last - start,
        latencies,
        metrics,
    };
    println!(
        "  {workers:>2} worker(s): {} items in {:.2} s, {} batches ({} items sent)",
        r.items,
        r.elapsed.as_secs_f64(),
        r.metrics.batches_sent,
        r.metrics.items_sent
    );
    Ok(r)
}
