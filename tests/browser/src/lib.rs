//! A headless Chromium session for the browser tests (`tests/e2e/web.rs`) and
//! the library benchmark (`bench-library`): Debian's `chromium` driven by its
//! `chromedriver` on a free loopback port, over WebDriver (`fantoccini`), with
//! a fresh profile per session. `make test-tools` installs both
//! (`scripts/apt-need.sh`); browser downloads from elsewhere fail here.
//!
//! The helpers panic with a message naming the session and what was awaited:
//! they are for tests and benchmarks, where that is the report wanted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
pub use fantoccini::{Client, Locator, key::Key};
use fantoccini::ClientBuilder;
use serde_json::{Value, json};

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver (package `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// chromedriver + one Chromium session with a fresh profile.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    name: String,
    /// Log lines that are expected (e.g. the 401 of a wrong key).
    pub allowed: Vec<String>,
}

/// chromedriver's (legacy but supported) log endpoint: the browser's console.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or("")))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

impl Browser {
    /// Starts chromedriver and a session `name` with a `width`×`height` window
    /// (phone widths under 500 px are emulated, as headless windows are wider).
    pub async fn start(name: &str, width: u32, height: u32) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: run make test-tools, or: sudo apt-get install -y chromium chromium-driver"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let webdriver = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("{webdriver}/status")).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let mut caps = caps;
        if width < 500 {
            // Headless windows are at least 500 px wide: a phone is emulated instead.
            caps["goog:chromeOptions"]["mobileEmulation"] =
                json!({ "deviceMetrics": { "width": width, "height": height, "pixelRatio": 2.0, "touch": true } });
            caps["goog:chromeOptions"]["args"][11] = json!("--window-size=500,900");
        }
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&webdriver)
            .await
            .expect("a Chromium session");
        Browser {
            client,
            driver,
            _profile: profile,
            name: name.to_owned(),
            allowed: Vec::new(),
        }
    }

    /// Saves target/web-screenshots/{test}-{what}.png.
    pub async fn shot(&self, what: &str) -> PathBuf {
        let dir = repo().join("target/web-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-{what}.png", self.name));
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Waits until `script` (a function body returning a value) is truthy; returns it.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let v = self.js(script).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                self.shot(&format!("timeout-{}", what.replace(' ', "-"))).await;
                panic!("{}: timed out waiting for {what} ({script})", self.name);
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Navigates to `url`.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The element `css` once it exists (30 s at most).
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{}: no {css}: {e}", self.name))
    }

    /// Clicks the element `css` once it exists. The page may render it anew
    /// between finding and clicking (the timeline redraws tiles on server
    /// push), so a stale element is looked up again, a few times at most.
    pub async fn click(&self, css: &str) {
        for attempt in 1.. {
            match self.find(css).await.click().await {
                Ok(_) => return,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference && attempt < 5 => {}
                Err(e) => panic!("{}: cannot click {css}: {e}", self.name),
            }
        }
    }

    /// Replaces the text of the input `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    /// The text of `css` once it exists.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// The text of `css` once it is shown and not empty.
    pub async fn shown_text(&self, css: &str) -> String {
        let script = format!(
            "const e = document.querySelector({css:?}); \
             return e && e.offsetParent !== null && e.textContent.trim() ? e.textContent : ''"
        );
        self.until(&format!("text of {css}"), &script)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Sends one key to the focused element.
    pub async fn key(&self, key: fantoccini::key::Key) {
        let active = self.client.active_element().await.unwrap();
        active.send_keys(&char::from(key).to_string()).await.unwrap();
    }

    /// Signs in with `key` on the page at `base`.
    pub async fn sign_in(&self, base: &str, key: &str) {
        self.goto(&format!("{base}/")).await;
        self.type_into("#key", key).await;
        self.click("form.signin button[type=submit]").await;
        self.until("the library", "return !!document.querySelector('header.top') && !!document.querySelector('.push.on')")
            .await;
    }

    /// Fails on console errors, page errors, CSP violations and requests off the host.
    pub async fn assert_clean(&self, base: &str) {
        let page: Value = self.js("return window.__errors || []").await;
        assert_eq!(page, json!([]), "{}: errors in the page", self.name);
        let log = self.client.issue_cmd(BrowserLog).await.unwrap_or(Value::Null);
        let severe: Vec<String> = log
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or("").to_owned())
            .filter(|m| !self.allowed.iter().any(|a| m.contains(a.as_str())))
            .collect();
        assert!(severe.is_empty(), "{}: console errors: {severe:#?}", self.name);
        let off_host: Value = self
            .js(&format!(
                "return performance.getEntriesByType('resource').map(e => e.name)\
                 .filter(n => !n.startsWith({base:?}) && !n.startsWith('blob:') && !n.startsWith('data:'))"
            ))
            .await;
        assert_eq!(off_host, json!([]), "{}: requests that left the host", self.name);
    }

    /// Ends the session and chromedriver.
    pub async fn close(self) {
        let Browser { client, mut driver, .. } = self;
        let _ = client.close().await;
        let _ = driver.kill();
        let _ = driver.wait();
    }
}

