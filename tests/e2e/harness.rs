//! Starting the real binary against a throw-away database.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{Connection, PgConnection};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The `lumilio` binary cargo built for this test run.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lumilio")
}

fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run the tests with `make test`, which starts a local Postgres")
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
}

impl TestDb {
    /// Creates an empty database.
    pub async fn new() -> TestDb {
        let name = format!("lumilio_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url()).await.expect("connect to DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
        TestDb { url: with_db(&admin_url(), &name), name }
    }

    /// A connection to it.
    pub async fn conn(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    /// Runs `lumilio ARGS --database-url URL` and returns its output.
    pub fn lumilio(&self, args: &[&str]) -> Output {
        Command::new(bin()).args(args).env("DATABASE_URL", &self.url).output().expect("run lumilio")
    }

    /// Creates a user and returns its API key.
    pub fn user(&self, name: &str) -> String {
        let out = self.lumilio(&["user", "create", name]);
        assert!(out.status.success(), "user create: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Applies both migration lines.
    pub fn migrate(&self) {
        for line in ["main", "app"] {
            let out = self.lumilio(&["migrate-up", "--line", line]);
            assert!(out.status.success(), "migrate-up --line {line}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let url = admin_url();
        let name = self.name.clone();
        // Drop needs its own runtime: the test's may be shutting down.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
                if let Ok(mut c) = PgConnection::connect(&url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut c)
                        .await;
                }
            })
        })
        .join();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
}

impl Server {
    /// Starts the server on `db` with the repository's default pipeline.
    pub async fn start(db: &TestDb) -> Server {
        Self::start_with(db, &repo().join("pipeline.toml"), &[]).await
    }

    /// Starts the server with a pipeline file and extra environment.
    pub async fn start_with(db: &TestDb, pipeline: &Path, env: &[(&str, &str)]) -> Server {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = data.path().join("server.log");
        let child = Command::new(bin())
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("LUMILIO_LISTEN", format!("127.0.0.1:{port}"))
            .env("LUMILIO_PIPELINE", pipeline)
            .env("STAGING_PATH", data.path().join("staging"))
            .env("STORAGE_PATH", data.path().join("storage"))
            // Shared across tests so each component compiles once per run.
            .env("LUMILIO_CACHE_PATH", repo().join("target/e2e-cache"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn lumilio serve");
        let key = db.user(&format!("owner-{port}"));
        let mut server = Server { base: format!("http://127.0.0.1:{port}"), data, key, child, log };
        server.wait_healthy().await;
        server
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
            assert!(Instant::now() < deadline, "lumilio serve not healthy after 60 s:\n{}", self.log_text());
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
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = key {
            headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        }
        reqwest::Client::builder().default_headers(headers).build().unwrap()
    }

    /// Uploads bytes as multipart field `file`; returns (status, body).
    pub async fn upload(&self, name: &str, bytes: Vec<u8>, content_type: &str) -> (u16, Value) {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()).mime_str(content_type).unwrap();
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
        let r = self.client().get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls an asset until its status is no longer `processing`.
    pub async fn wait_done(&self, asset_id: &str) -> Value {
        self.wait_done_as(&self.client(), asset_id).await
    }

    /// [`Server::wait_done`] with another user's client.
    pub async fn wait_done_as(&self, client: &reqwest::Client, asset_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = client.get(format!("{}/api/v1/assets/{asset_id}", self.base)).send().await.unwrap();
            let code = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(code, 200, "{body}");
            if body["status"] != "processing" {
                return body;
            }
            assert!(Instant::now() < deadline, "asset {asset_id} still processing after 60 s:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
