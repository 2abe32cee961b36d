//! Starting the real binary against a throw-away database.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{Connection, PgConnection};

/// Every file under `dir`, recursively (none when it does not exist): staged
/// leftovers and stored files, for the tests that count them.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// The `.part` files (uploads in flight) under a server's `staging` folder.
pub fn staging_parts(staging: &Path) -> Vec<PathBuf> {
    files_under(staging)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "part"))
        .collect()
}

/// Runs `check` every `every` until it gives `Some`, and returns that; after
/// `within`, panics with `what()` (what was awaited, and what explains it).
pub async fn eventually<T>(
    within: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
    what: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("not within {within:?}: {}", what());
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until no asset is `processing`; returns how long that took. A
/// connection that cannot be opened is tried again at the next poll, so the
/// wait outlasts a database restart.
pub async fn all_done(url: &str, within: Duration, log: impl FnOnce() -> String) -> Duration {
    let start = Instant::now();
    let mut conn: Option<PgConnection> = None;
    eventually(
        within,
        Duration::from_millis(100),
        async || {
            if conn.is_none() {
                conn = PgConnection::connect(url).await.ok();
            }
            let processing = "SELECT count(*) FROM assets WHERE status = 'processing'";
            (scalar(conn.as_mut()?, processing).await == 0).then_some(())
        },
        || format!("no asset processing:\n{}", log()),
    )
    .await;
    start.elapsed()
}

/// Waits until at least `n` `process_asset` jobs are running; returns their ids.
pub async fn running_jobs(conn: &mut PgConnection, n: usize, within: Duration) -> Vec<i64> {
    let query =
        "SELECT id FROM river_job WHERE kind = 'process_asset' AND state = 'running' ORDER BY id";
    eventually(
        within,
        Duration::from_millis(50),
        async || {
            let ids: Vec<i64> = sqlx::query_scalar(query)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            (ids.len() >= n).then_some(ids)
        },
        || format!("{n} process_asset jobs running"),
    )
    .await
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `lumilio` binary cargo built for this test run.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lumilio")
}

/// `lumilio plugin run COMPONENT FILE ARGS...` with the e2e component cache:
/// its exit code and JSON report.
pub fn plugin_run(component: &Path, file: &Path, args: &[&str]) -> (i32, Value) {
    let out = Command::new(bin())
        .args(["plugin", "run"])
        .arg(component)
        .arg(file)
        .args(args)
        .arg("--cache-path")
        .arg(repo().join("target/e2e-cache"))
        .output()
        .expect("run lumilio plugin run");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "plugin run printed no JSON ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// A pipeline of one stage, the `echo` test guest sleeping `ms` per asset, so
/// that jobs are surely running when a fault is injected.
pub fn slow_pipeline(dir: &Path, ms: u64) -> PathBuf {
    let echo = repo().join("target/guests/wasm32-wasip2/release/guest_echo.wasm");
    assert!(
        echo.is_file(),
        "{} is missing: run `make guests` (make test does)",
        echo.display()
    );
    let path = dir.join("slow-pipeline.toml");
    std::fs::write(
        &path,
        format!(
            "[[stage]]\nname = \"slow\"\ncomponent = {:?}\nconfig = {{ sleep_ms = {ms} }}\n\
             timeout_ms = {}\nmemory_limit_mb = 64\n",
            echo.display().to_string(),
            ms * 4
        ),
    )
    .unwrap();
    path
}

/// The one `bigint` that `sql` selects.
pub async fn scalar(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(conn)
        .await
        .unwrap()
}

fn admin_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run the tests with `make test`, which starts a local Postgres",
    )
}

fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("DATABASE_URL ends in /dbname");
    format!("{base}/{db}")
}

/// A database of its own for one test, dropped afterwards.
pub struct TestDb {
    /// Its URL.
    pub url: String,
    name: String,
    /// The server's admin URL it was made on (and is dropped through).
    admin: String,
}

impl TestDb {
    /// Creates an empty database.
    pub async fn new() -> TestDb {
        Self::new_at(&admin_url()).await
    }

    /// Creates an empty database on the server of `admin` (e.g. an [`OwnDb`]).
    pub async fn new_at(admin: &str) -> TestDb {
        let name = format!("lumilio_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(admin)
            .await
            .expect("connect to the admin database URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        TestDb {
            url: with_db(admin, &name),
            name,
            admin: admin.to_owned(),
        }
    }

    /// A connection to it.
    pub async fn conn(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    /// Runs `lumilio ARGS --database-url URL` and returns its output.
    pub fn lumilio(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("DATABASE_URL", &self.url)
            .output()
            .expect("run lumilio")
    }

    /// Creates a user and returns its API key.
    pub fn user(&self, name: &str) -> String {
        let out = self.lumilio(&["user", "create", name]);
        assert!(
            out.status.success(),
            "user create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Applies both migration lines.
    pub fn migrate(&self) {
        for line in ["main", "app"] {
            let out = self.lumilio(&["migrate-up", "--line", line]);
            assert!(
                out.status.success(),
                "migrate-up --line {line}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let url = self.admin.clone();
        let name = self.name.clone();
        // Drop needs its own runtime: the test's may be shutting down.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(mut c) = PgConnection::connect(&url).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                })
        })
        .join();
    }
}

/// A PostgreSQL server of one test's own, run by `scripts/db.sh` in its own
/// cluster directory and port, so that the test can crash and restart it
/// without touching the database every other test shares. Destroyed on drop.
pub struct OwnDb {
    /// Its `lumilio` database, as `scripts/db.sh start` printed it.
    pub url: String,
    dir: PathBuf,
    port: u16,
}

impl OwnDb {
    /// Makes a new cluster (initdb, a few seconds) and starts it.
    pub fn start() -> OwnDb {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        // Under /var/tmp, as scripts/db.sh's own default: the server user must
        // traverse it, and the socket path must stay short.
        let dir = PathBuf::from(format!("/var/tmp/lumilio-pg-e2e-{}", &tag[..12]));
        let mut own = OwnDb {
            url: String::new(),
            dir,
            port: free_port(),
        };
        own.url = own.start_again();
        own
    }

    fn db_sh(&self, cmd: &str) -> Output {
        Command::new("bash")
            .arg(repo().join("scripts/db.sh"))
            .arg(cmd)
            .env_remove("DATABASE_URL")
            .env("LUMILIO_PG_DIR", &self.dir)
            .env("LUMILIO_PG_PORT", self.port.to_string())
            .output()
            .expect("run scripts/db.sh")
    }

    /// Stops the server as a crash would (`scripts/db.sh crash`: `pg_ctl stop -m immediate`).
    pub fn crash(&self) {
        let out = self.db_sh("crash");
        assert!(
            out.status.success(),
            "scripts/db.sh crash: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server again on the same cluster and port (WAL recovery
    /// after a crash); returns the URL it printed.
    pub fn start_again(&self) -> String {
        let out = self.db_sh("start");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "scripts/db.sh start: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("DATABASE_URL="))
            .expect("scripts/db.sh start prints DATABASE_URL=...")
            .to_owned()
    }
}

impl Drop for OwnDb {
    fn drop(&mut self) {
        let _ = self.db_sh("destroy");
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `lumilio-infer` (the bundled, non-semantic inference service),
/// killed on drop.
pub struct Infer(Child);

impl Infer {
    /// Starts it on a free port; returns it with its gRPC address.
    pub fn start() -> (Infer, String) {
        let port = free_port();
        (Infer::start_on(port), format!("http://127.0.0.1:{port}"))
    }

    /// Starts it on `port` (the outage test restarts it on the same one).
    pub fn start_on(port: u16) -> Infer {
        let bin = repo().join("target/release/lumilio-infer");
        assert!(bin.exists(), "{} is missing: run `make build`", bin.display());
        let child = Command::new(bin)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Infer(child)
    }
}

impl Infer {
    /// Starts it on `port` with extra arguments (e.g. `--batch-cost-ms`),
    /// its log in `log`, for the tests that kill it or read what it did.
    pub fn start_logged(port: u16, args: &[&str], log: &Path) -> Infer {
        let bin = repo().join("target/release/lumilio-infer");
        assert!(bin.exists(), "{} is missing: run `make build`", bin.display());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(bin)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Infer(child)
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Infer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `lumilio serve`, killed on drop.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its data directory (staging, storage, cache).
    pub data: tempfile::TempDir,
    /// The API key of the user the helpers act as.
    pub key: String,
    child: Child,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts the server on `db` with the repository's default pipeline.
    pub async fn start(db: &TestDb) -> Server {
        Self::start_with(db, &repo().join("pipeline.toml"), &[]).await
    }

    /// Starts the server with a pipeline file and extra environment.
    pub async fn start_with(db: &TestDb, pipeline: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_at(&db.url, db, pipeline, env).await
    }

    /// Like [`Server::start_with`], with the server reaching the database at
    /// `database_url` (e.g. through a fault-injecting proxy).
    pub async fn start_at(
        database_url: &str,
        db: &TestDb,
        pipeline: &Path,
        env: &[(&str, &str)],
    ) -> Server {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = data.path().join("server.log");
        let mut all: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), database_url.into()),
            ("LUMILIO_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("LUMILIO_PIPELINE".into(), pipeline.display().to_string()),
            (
                "STAGING_PATH".into(),
                data.path().join("staging").display().to_string(),
            ),
            (
                "STORAGE_PATH".into(),
                data.path().join("storage").display().to_string(),
            ),
            // Shared across tests so each component compiles once per run.
            (
                "LUMILIO_CACHE_PATH".into(),
                repo().join("target/e2e-cache").display().to_string(),
            ),
        ];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let key = db.user(&format!("owner-{port}"));
        let child = Self::spawn(&all, &log);
        let mut server = Server {
            base: format!("http://127.0.0.1:{port}"),
            data,
            key,
            child,
            log,
            env: all,
        };
        server.wait_healthy().await;
        server
    }

    fn spawn(env: &[(String, String)], log: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Command::new(bin())
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn lumilio serve")
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the process again on the same port, database and data.
    pub async fn restart(&mut self) {
        self.kill9();
        self.child = Self::spawn(&self.env, &self.log);
        self.wait_healthy().await;
    }

    /// Sends SIGTERM and waits up to `within` for the exit; returns its status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The process id (for `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/health", self.base)).await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("lumilio serve exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "lumilio serve not healthy after 60 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client that sends this server's API key.
    pub fn client(&self) -> reqwest::Client {
        Self::client_with(Some(&self.key))
    }

    /// A client that sends `key`, or no key at all.
    pub fn client_with(key: Option<&str>) -> reqwest::Client {
        Self::builder_with(key).build().unwrap()
    }

    /// A client that opens a new connection for every request, for requests
    /// refused before their bodies are read: the server then closes the
    /// connection, and a pooled client could race that close (broken pipe).
    pub fn client_without_reuse(&self) -> reqwest::Client {
        Self::builder_with(Some(&self.key))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    }

    fn builder_with(key: Option<&str>) -> reqwest::ClientBuilder {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = key {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {key}").parse().unwrap(),
            );
        }
        reqwest::Client::builder().default_headers(headers)
    }

    /// Uploads bytes as multipart field `file`; returns (status, body).
    pub async fn upload(&self, name: &str, bytes: Vec<u8>, content_type: &str) -> (u16, Value) {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(name.to_owned())
            .mime_str(content_type)
            .unwrap();
        let form = reqwest::multipart::Form::new().part("file", part);
        let r = self
            .client()
            .post(format!("{}/api/v1/assets", self.base))
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `GET` a JSON path.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.client()
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of the sample `name` (labels included, as `/metrics` spells
    /// them) in a `/metrics` text.
    pub fn sample(metrics: &str, name: &str) -> Option<f64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// DELETE `path` with this server's API key; the status code.
    pub async fn delete(&self, path: &str) -> u16 {
        let r = self
            .client()
            .delete(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }

    /// Polls an asset until its status is no longer `processing` (60 s at most).
    pub async fn wait_done(&self, asset_id: &str) -> Value {
        self.wait_done_as(&self.client(), asset_id).await
    }

    /// [`Server::wait_done`] with another user's client.
    pub async fn wait_done_as(&self, client: &reqwest::Client, asset_id: &str) -> Value {
        self.wait_done_within(client, asset_id, Duration::from_secs(60)).await
    }

    /// [`Server::wait_done_as`], for up to `within`.
    pub async fn wait_done_within(
        &self,
        client: &reqwest::Client,
        asset_id: &str,
        within: Duration,
    ) -> Value {
        let last = std::cell::RefCell::new(Value::Null);
        let check = async || {
            let r = client
                .get(format!("{}/api/v1/assets/{asset_id}", self.base))
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(code, 200, "{body}");
            if body["status"] != "processing" {
                return Some(body);
            }
            *last.borrow_mut() = body;
            None
        };
        let what = || {
            let (last, log) = (last.borrow(), self.log_text());
            format!("asset {asset_id} done (still processing):\n{last}\n{log}")
        };
        eventually(within, Duration::from_millis(100), check, what).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of Postgres that can cut every connection and refuse
/// new ones, to test a database outage against the real server.
pub struct Proxy {
    /// Port it listens on.
    pub port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    /// Proxies 127.0.0.1:PORT to the database server of `url`.
    pub async fn start(url: &str) -> Proxy {
        let after_at = url.rsplit_once('@').map(|(_, h)| h).unwrap_or(url);
        let upstream = after_at.split('/').next().unwrap().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (d, c) = (down.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: connection refused, as a stopped server would
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { port, down, conns }
    }

    /// The database URL through this proxy.
    pub fn url(&self, url: &str) -> String {
        let (userinfo, rest) = url.rsplit_once('@').unwrap();
        let db = rest.split_once('/').map(|(_, d)| d).unwrap_or("");
        format!("{userinfo}@127.0.0.1:{}/{db}", self.port)
    }

    /// Cuts every connection and refuses new ones (`true`), or lets them through again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }
}

#[tokio::test]
#[should_panic(expected = "not within 50ms: a condition that never holds")]
async fn eventually_gives_up_after_within_with_what() {
    let never = async || None::<()>;
    let what = || "a condition that never holds".into();
    let (within, every) = (Duration::from_millis(50), Duration::from_millis(10));
    eventually(within, every, never, what).await;
}

#[tokio::test]
async fn eventually_returns_the_first_value_given() {
    let mut calls = 0;
    let third = async || {
        calls += 1;
        (calls == 3).then_some(calls)
    };
    let what = || "the third call".into();
    let (within, every) = (Duration::from_secs(5), Duration::from_millis(1));
    let got = eventually(within, every, third, what).await;
    assert_eq!(got, 3);
}
