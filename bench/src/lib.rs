//! Shared helpers for the benchmark binaries `bench-plugins` (issue 3) and
//! `bench-ingest` (issue 4): where the repository and the sample photos are,
//! one-stage pipeline files, simple statistics, and the summary table.
//!
//! Every measure is printed beside a peer measured in the same run, with the
//! ratio and the target. A missed target prints `MISSED` but never fails the
//! run: speed is judged here, not in timed tests.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub mod service;

/// The repository root (the parent of this crate).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// The sample photo folder in this checkout (`tests/data/photos`).
pub fn testdata() -> Result<PathBuf> {
    Ok(testdata::dir())
}

/// True when `BENCH_QUICK=1`: fewer rounds, same measures.
pub fn quick() -> bool {
    std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `NAME` parsed from the environment, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `full` rounds normally, `quick` rounds under `BENCH_QUICK=1`.
pub fn rounds(full: usize, quick_rounds: usize) -> usize {
    if quick() { quick_rounds } else { full }
}

/// Files directly in `dir` (not recursive) whose extension is `.jpg`/`.jpeg`, sorted.
pub fn jpegs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_file() && is_jpeg_name(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether the file name ends in `.jpg` or `.jpeg` (any case).
pub fn is_jpeg_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
}

/// Every file under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `DIR/NAME.toml`, a pipeline holding only the stage `name` of the
/// repository's `pipeline.toml` (component made absolute, `content_types`
/// dropped so that the stage runs on every file given to it). Returns the
/// file and the stage's config as the plugin receives it (flattened to strings).
pub fn one_stage_pipeline(name: &str, dir: &Path) -> Result<(PathBuf, Vec<(String, String)>)> {
    let src = repo().join("pipeline.toml");
    let text =
        std::fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", src.display()))?;
    let stages = doc
        .get("stage")
        .and_then(|s| s.as_array())
        .context("pipeline.toml has no [[stage]]")?;
    let mut stage = stages
        .iter()
        .filter_map(|s| s.as_table())
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
        .with_context(|| format!("pipeline.toml has no stage named {name:?}"))?
        .clone();
    let component = stage
        .get("component")
        .and_then(|c| c.as_str())
        .context("stage without component")?;
    let component = repo().join(component);
    if !component.is_file() {
        bail!("{} is missing: run `make build` first", component.display());
    }
    stage.insert(
        "component".into(),
        toml::Value::String(component.display().to_string()),
    );
    stage.remove("content_types");
    let config: Vec<(String, String)> = stage
        .get("config")
        .and_then(|c| c.as_table())
        .map(|t| {
            t.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        lumilio::pipeline::config::config_value_to_string(v),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let path = write_pipeline(dir, name, stage)?;
    Ok((path, config))
}

/// Writes `DIR/NAME.toml` holding the single `[[stage]]` table `stage`.
pub fn write_pipeline(dir: &Path, name: &str, stage: toml::Table) -> Result<PathBuf> {
    let mut doc = toml::Table::new();
    doc.insert(
        "stage".into(),
        toml::Value::Array(vec![toml::Value::Table(stage)]),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&doc)?)?;
    Ok(path)
}

/// Writes `DIR/NAME.toml`, a pipeline of one empty stage (test guest `echo`
/// with `noop`): the peer for the cost of instantiate + call alone.
pub fn empty_stage_pipeline(tmp: &Path, name: &str) -> Result<PathBuf> {
    let guest = repo().join("target/guests/wasm32-wasip2/release/guest_echo.wasm");
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
    write_pipeline(tmp, name, stage)
}

/// The WASM runtime the benchmarks use, caching compiled components in
/// `target/bench-cache` so that compile time never enters a measure.
pub fn runtime() -> Result<lumilio::pipeline::Runtime> {
    Ok(lumilio::pipeline::Runtime::new(
        repo().join("target/bench-cache"),
    )?)
}

/// A scratch directory under `target/` (the same disk as the build and the
/// service's data), removed on drop.
pub fn scratch(prefix: &str) -> Result<tempfile_lite::TempDir> {
    tempfile_lite::TempDir::new_in(&repo().join("target"), prefix)
}

/// A minimal removed-on-drop directory, enough for the benchmarks.
pub mod tempfile_lite {
    use std::path::{Path, PathBuf};

    /// A directory deleted (recursively) when dropped.
    #[derive(Debug)]
    pub struct TempDir(PathBuf);

    impl TempDir {
        /// Creates `PARENT/PREFIX-PID-NANOS`.
        pub fn new_in(parent: &Path, prefix: &str) -> anyhow::Result<TempDir> {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos();
            let p = parent.join(format!("{prefix}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&p)?;
            Ok(TempDir(p))
        }

        /// Its path.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The smallest of `xs` (0 when empty): the round least slowed by other load,
/// for CPU-bound measures whose noise only ever adds time.
pub fn fastest(xs: &[f64]) -> f64 {
    xs.iter().copied().reduce(f64::min).unwrap_or(0.0)
}

/// The median of `xs` (0 when empty).
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// User + system CPU time of this process (`who = RUSAGE_SELF`) or of its
/// waited-for children (`RUSAGE_CHILDREN`), so that a CPU-bound measure can
/// be printed in CPU seconds beside wall time: a busy machine stretches wall
/// time but not the work done (issue 15 §6).
fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (user + system) this process has used so far.
pub fn cpu_self() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// CPU time (user + system) of this process's children that have been waited for.
pub fn cpu_children() -> Duration {
    rusage(libc::RUSAGE_CHILDREN)
}

/// p50 and p95 of durations, in ms (nearest rank; 0 when empty).
pub fn percentiles(mut xs: Vec<Duration>) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    xs.sort();
    let at = |q: f64| ms(xs[((xs.len() as f64 - 1.0) * q).round() as usize]);
    (at(0.5), at(0.95))
}

/// Milliseconds of a duration, as f64.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Formats bytes as KiB/MiB.
pub fn fmt_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// Whether a row met its target, or only informs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Target met.
    Ok,
    /// Target missed.
    Missed,
    /// No target: printed for context.
    Info,
    /// A target whose peer misbehaved in this run (the row says how), so
    /// neither verdict would be evidence.
    Unsure,
}

impl Status {
    /// `ok` when `met`, else `MISSED`.
    pub fn from(met: bool) -> Status {
        if met { Status::Ok } else { Status::Missed }
    }

    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missed => "MISSED",
            Status::Info => "info",
            Status::Unsure => "UNSURE",
        }
    }
}

/// One line of the summary table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured, e.g. `3a thumbnails WASM vs vipsthumbnail`.
    pub measure: String,
    /// Our figure, with its unit.
    pub ours: String,
    /// The peer's figure, with its unit (`-` when there is none).
    pub peer: String,
    /// The ratio as the target states it, e.g. `0.84x`.
    pub ratio: String,
    /// The target, e.g. `<= 1.0x`.
    pub target: String,
    /// Met, missed, or informational.
    pub status: Status,
}

impl Row {
    /// An informational row: no target, so it never decides a verdict.
    pub fn info(
        measure: impl Into<String>,
        ours: impl Into<String>,
        peer: impl Into<String>,
        ratio: impl Into<String>,
    ) -> Row {
        Row {
            measure: measure.into(),
            ours: ours.into(),
            peer: peer.into(),
            ratio: ratio.into(),
            target: "-".into(),
            status: Status::Info,
        }
    }
}

/// The rows of one benchmark binary: printed at the end and appended as
/// tab-separated lines to `$BENCH_SUMMARY` (if set) for `scripts/bench.sh`.
#[derive(Debug, Default)]
pub struct Summary {
    rows: Vec<Row>,
}

impl Summary {
    /// Adds a row and prints it at once, so a later crash keeps the figure.
    pub fn push(&mut self, row: Row) {
        println!(
            "  => {}: ours {} | peer {} | ratio {} | target {} | {}",
            row.measure,
            row.ours,
            row.peer,
            row.ratio,
            row.target,
            row.status.label()
        );
        self.rows.push(row);
    }

    /// Prints the table and appends the rows to `$BENCH_SUMMARY`.
    pub fn finish(&self) -> Result<()> {
        print!("\n{}", table(&self.rows));
        if let Some(path) = std::env::var_os("BENCH_SUMMARY") {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            for r in &self.rows {
                writeln!(
                    f,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    r.measure,
                    r.ours,
                    r.peer,
                    r.ratio,
                    r.target,
                    r.status.label()
                )?;
            }
        }
        Ok(())
    }
}

/// Renders rows as an aligned `measure | ours | peer | ratio | target | ok` table.
pub fn table(rows: &[Row]) -> String {
    let head = ["measure", "ours", "peer", "ratio", "target", "ok"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.measure.clone(),
                r.ours.clone(),
                r.peer.clone(),
                r.ratio.clone(),
                r.target.clone(),
                r.status.label().into(),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: [&str; 6]| {
        let mut s = String::new();
        for (i, (cell, w)) in c.iter().zip(width).enumerate() {
            let sep = if i == 0 { "" } else { " | " };
            let _ = write!(s, "{sep}{cell:<w$}");
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head);
    out += &line(width.map(|w| "-".repeat(w)).each_ref().map(String::as_str));
    for c in &cells {
        out += &line(c.each_ref().map(String::as_str));
    }
    out
}

/// One `vipsthumbnail` call per rendition of `specs`, as users run it (3a's
/// peer, and bench-import's): `-s NxN>` per box, `--smartcrop centre -s NxN`
/// for a square; returns the output bytes. The outputs overwrite `OUT_DIR/NAME.jpg`.
pub fn vips_all(
    input: &Path,
    specs: &[thumbnail::Spec],
    quality: u8,
    out_dir: &Path,
) -> Result<u64> {
    let mut bytes = 0;
    for spec in specs {
        let out = out_dir.join(format!("{}.jpg", spec.name));
        // `strip`: our renditions carry no metadata either, so the byte counts compare.
        let target = format!("{}[Q={quality},strip]", out.display());
        let mut cmd = std::process::Command::new("vipsthumbnail");
        cmd.arg(input);
        match spec.kind {
            // `>`: shrink only, as the plugin never upscales.
            thumbnail::Kind::Fit(n) => cmd.args(["-s", &format!("{n}x{n}>")]),
            thumbnail::Kind::Square(n) => {
                cmd.args(["--smartcrop", "centre", "-s", &format!("{n}x{n}")])
            }
        };
        let st = cmd
            .args(["-o", &target])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .status()
            .context("running vipsthumbnail")?;
        anyhow::ensure!(
            st.success(),
            "vipsthumbnail failed on {} ({})",
            input.display(),
            spec.name
        );
        bytes += std::fs::metadata(&out)?.len();
    }
    Ok(bytes)
}

/// The library's list queries as the benchmarks run them in-process
/// (bench-library, bench-queries): the same calls the list handler makes.
pub mod library {
    use std::time::{Duration, Instant};

    use chrono::{NaiveDate, NaiveDateTime};
    use lumilio::db::assets::{self, Asset, ListQuery};
    use sqlx::PgPool;
    use uuid::Uuid;

    /// Rows on one page of the web app's timeline (web/timeline.js `PAGE`).
    pub const PAGE: i64 = 200;

    /// The web app's call: ordered by date taken, one page plus one row (to
    /// know whether there is a next page), no filter.
    pub fn base_query() -> ListQuery {
        ListQuery {
            limit: PAGE + 1,
            by_taken: true,
            ..ListQuery::default()
        }
    }

    /// Midnight of 1 January of year `y`.
    pub fn year(y: i32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("a valid date")
    }

    /// One list page in-process, as the handler runs it: the list query, then
    /// its page's rendition names. Returns its time and the rows (PAGE + 1 at most).
    pub async fn db_page(
        pool: &PgPool,
        owner: Uuid,
        q: &ListQuery,
    ) -> anyhow::Result<(Duration, Vec<Asset>)> {
        let t = Instant::now();
        let rows = assets::list(pool, owner, q).await?;
        let ids: Vec<Uuid> = rows.iter().take(PAGE as usize).map(|a| a.id).collect();
        lumilio::db::browse::rendition_names(pool, &ids).await?;
        Ok((t.elapsed(), rows))
    }
}
