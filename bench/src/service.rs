//! The real service for the benchmarks: a database of its own and a running
//! `lumilio serve`, both removed when dropped, and a VmRSS sampler.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::repo;

/// What every benchmark of the running service needs: the admin
/// `DATABASE_URL` (its databases are created there) and a built
/// `target/release/lumilio`.
pub fn admin_and_host() -> Result<(String, PathBuf)> {
    let admin = std::env::var("DATABASE_URL")
        .context("DATABASE_URL is not set: run `make bench`, or `eval \"$(scripts/db.sh)\"; export DATABASE_URL`")?;
    let bin = repo().join("target/release/lumilio");
    ensure!(bin.is_file(), "{} is missing: run `make build` first", bin.display());
    Ok((admin, bin))
}

/// A free port on loopback, for a server started next.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A database of its own, dropped (with FORCE) when this is dropped.
pub struct BenchDb {
    admin: String,
    /// The database's URL.
    pub url: String,
    name: String,
}

impl BenchDb {
    /// Creates `lumilio_bench_<uuid>` on the server of `admin` (DATABASE_URL).
    pub async fn create(admin: &str) -> Result<BenchDb> {
        let name = format!("lumilio_bench_{}", uuid::Uuid::new_v4().simple());
        let mut c = PgConnection::connect(admin)
            .await
            .context("connecting to DATABASE_URL")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await?;
        let (base, _) = admin
            .rsplit_once('/')
            .context("DATABASE_URL must end in /DBNAME")?;
        // Keep any ?query (sslmode etc.) on the new URL.
        let query = admin
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        Ok(BenchDb {
            admin: admin.into(),
            url: format!("{base}/{name}{query}"),
            name,
        })
    }

    /// Applies both migration lines with `BIN migrate-up`.
    pub fn migrate(&self, bin: &Path) -> Result<()> {
        for line in ["main", "app"] {
            let out = Command::new(bin)
                .args(["migrate-up", "--line", line])
                .env("DATABASE_URL", &self.url)
                .output()?;
            ensure!(
                out.status.success(),
                "migrate-up --line {line}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// A user and its API key (`lumilio user create`), or None from a host
    /// that has no users yet and lets every request act as the local user.
    pub fn api_key(&self, bin: &Path) -> Option<String> {
        self.user(bin, "bench")
    }

    /// Creates the user `name` and returns its API key (None, with a note, when that fails).
    pub fn user(&self, bin: &Path, name: &str) -> Option<String> {
        let out = Command::new(bin)
            .args(["user", "create", name])
            .env("DATABASE_URL", &self.url)
            .output()
            .ok()?;
        let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !key.is_empty() {
            return Some(key);
        }
        println!(
            "  (no API key: `lumilio user create` said {:?}; sending requests without one)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        None
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Its own runtime on its own thread: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut c = PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut c)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// A running `lumilio serve`, killed on drop.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    child: Child,
    log: PathBuf,
    /// A client that sends the API key.
    pub client: reqwest::Client,
}

impl Server {
    /// Starts `BIN serve` on a free port with the repository's pipeline,
    /// staging and storage under `work`, plus `env`; waits for `/health`.
    pub async fn start(
        bin: &Path,
        db_url: &str,
        work: &Path,
        api_key: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Server> {
        let port = free_port()?;
        let log = work.join("server.log");
        let child = Command::new(bin)
            .arg("serve")
            .env("DATABASE_URL", db_url)
            .env("LUMILIO_LISTEN", format!("127.0.0.1:{port}"))
            .env("LUMILIO_PIPELINE", repo().join("pipeline.toml"))
            .env("STAGING_PATH", work.join("staging"))
            .env("STORAGE_PATH", work.join("storage"))
            .env("LUMILIO_CACHE_PATH", repo().join("target/bench-cache"))
            // The default, stated so the peer in 4g can match it.
            .env("LUMILIO_PROCESS_ASSET_WORKERS", "5")
            // 4e streams a file larger than the default limit (the pipeline's
            // max_bytes): it measures ingest, not the pipeline.
            .env("LUMILIO_MAX_UPLOAD_BYTES", (8u64 << 30).to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning lumilio serve")?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {key}").parse()?,
            );
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()?;
        let mut s = Server {
            base: format!("http://127.0.0.1:{port}"),
            child,
            log,
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = s.client.get(format!("{}/health", s.base)).send().await
                && r.status().is_success()
            {
                return Ok(s);
            }
            if let Some(st) = s.child.try_wait()? {
                bail!("lumilio serve exited with {st}:\n{}", s.log_tail(40));
            }
            if Instant::now() > deadline {
                bail!("lumilio serve not healthy after 90 s:\n{}", s.log_tail(40));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }

    /// `GET /metrics` as Prometheus text; an error unless 2xx.
    pub async fn metrics_text(&self) -> Result<String> {
        let r = self.client.get(format!("{}/metrics", self.base)).send().await?;
        ensure!(r.status().is_success(), "GET /metrics: {}", r.status());
        Ok(r.text().await?)
    }

    /// GET `path` as JSON; an error unless 2xx.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "GET {path}: {status} {body}");
        Ok(body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `VmRSS:`/`VmHWM:` figure of `/proc/PID/status`, in bytes.
pub fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `/proc/PID/stat`'s fields after the command name (which may hold spaces):
/// index 1 is the parent, 11/12 utime/stime, 13/14 the waited-for children's.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect())
}

/// Clock ticks as a duration.
fn ticks(t: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(t * 1_000_000_000 / hz)
}

/// User + system CPU time process `pid` has used so far (`/proc/PID/stat`).
pub fn proc_cpu(pid: u32) -> Option<Duration> {
    proc_cpu_parts(pid).map(|(user, system)| user + system)
}

/// The user and the system (kernel) CPU time of process `pid` so far, apart.
pub fn proc_cpu_parts(pid: u32) -> Option<(Duration, Duration)> {
    stat_fields(pid).map(|f| (ticks(f[11]), ticks(f[12])))
}

/// User + system CPU of a PostgreSQL cluster so far: the postmaster, its
/// exited children (reaped into its cutime/cstime) and its live children.
pub fn cluster_cpu(postmaster: Option<u32>) -> Duration {
    let Some(pm) = postmaster else {
        return Duration::ZERO;
    };
    let mut total = stat_fields(pm).map_or(0, |f| f[11] + f[12] + f[13] + f[14]);
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(f) = stat_fields(pid)
            && f[1] == u64::from(pm)
        {
            total += f[11] + f[12];
        }
    }
    ticks(total)
}

/// The postmaster of the database behind `pool`, when it runs on this machine.
pub async fn postmaster_pid(pool: &sqlx::PgPool) -> Option<u32> {
    let (backend,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        .ok()?;
    let ppid = stat_fields(backend as u32)?[1] as u32;
    Some(ppid)
}

/// Samples VmRSS every 10 ms on a thread until stopped; yields the maximum.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    /// Starts sampling process `pid`.
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(proc_status(pid, "VmRSS:").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak.max(proc_status(pid, "VmRSS:").unwrap_or(0))
        });
        RssSampler { stop, handle }
    }

    /// Stops and returns the peak VmRSS in bytes.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}


/// The last `n` lines of a log file.
fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running reference inference server (`lumilio-infer`), killed on drop.
pub struct InferServer {
    /// `http://127.0.0.1:PORT`, for `ML_SERVICE_ADDR`.
    pub addr: String,
    child: Child,
    log: PathBuf,
}

impl InferServer {
    /// Starts `bin` on a free port with `args` (e.g. `--batch-cost-ms 20`);
    /// waits until it listens.
    pub fn start(bin: &Path, work: &Path, args: &[&str]) -> Result<InferServer> {
        let port = free_port()?;
        let log = work.join("infer.log");
        let child = Command::new(bin)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            // Its per-group info lines would cost CPU that the measure shares.
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning lumilio-infer")?;
        let mut s = InferServer {
            addr: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(s);
            }
            if let Some(st) = s.child.try_wait()? {
                bail!("lumilio-infer exited with {st}:\n{}", s.log_tail(40));
            }
            if Instant::now() > deadline {
                bail!("lumilio-infer not listening after 20 s:\n{}", s.log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

impl Drop for InferServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How busy the disk holding `path` was over `window`: the share of that
/// time it had I/O in flight (`io_ticks` of `/sys/dev/block/MAJ:MIN/stat`).
/// None when the kernel does not tell (e.g. an overlay without a block device).
pub fn disk_busy(path: &Path, window: Duration) -> Option<f64> {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(path).ok()?.dev();
    let stat = PathBuf::from(format!("/sys/dev/block/{}:{}/stat", libc::major(dev), libc::minor(dev)));
    // Field 10 of the block stat file: milliseconds spent doing I/O.
    let ticks = || -> Option<u64> {
        std::fs::read_to_string(&stat).ok()?.split_whitespace().nth(9)?.parse().ok()
    };
    let (a, t) = (ticks()?, Instant::now());
    std::thread::sleep(window);
    let b = ticks()?;
    Some((b.saturating_sub(a)) as f64 / t.elapsed().as_millis().max(1) as f64)
}
