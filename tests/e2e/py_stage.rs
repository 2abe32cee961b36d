//! A stage written in Python (plugins-py/tagger, built with componentize-py by
//! scripts/componentize-py.sh) against the same WIT world as the Rust ones:
//! through `lumilio plugin run`, and in a served pipeline after `validate` and
//! `metadata`, whose facts its rules read.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;

use crate::harness::{Server, TestDb, bin, plugin_run, repo};

/// The component, built when its sources changed (idempotent) and compiled
/// into the e2e compile cache, once per run for both tests. Compiling it takes
/// tens of seconds (about 30 s on an idle 2-core machine); done here, the
/// server below starts in seconds, as it would for a self-hoster after the
/// first start or a `lumilio plugin check`.
fn tagger() -> PathBuf {
    static COMPILED: OnceLock<PathBuf> = OnceLock::new();
    COMPILED
        .get_or_init(|| {
            let out = Command::new("bash")
                .arg(repo().join("scripts/componentize-py.sh"))
                .arg("tagger")
                .output()
                .expect("run scripts/componentize-py.sh");
            assert!(
                out.status.success(),
                "building plugins-py/tagger failed (it needs python3 with pip, and PyPI the first time):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let component = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
            let dir = tempfile::tempdir().unwrap();
            let pipeline = dir.path().join("pipeline.toml");
            let toml = format!(
                "[[stage]]\nname = \"tagger\"\ncomponent = \"{}\"\n",
                component.display()
            );
            std::fs::write(&pipeline, toml).unwrap();
            let started = Instant::now();
            let out = Command::new(bin())
                .args(["plugin", "check"])
                .arg(&pipeline)
                .arg("--cache-path")
                .arg(repo().join("target/e2e-cache"))
                .output()
                .expect("run lumilio plugin check");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("world 0.2.0"),
                "plugin check on the Python stage:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "Python stage: {} MB, plugin check {:.1} s ({})",
                std::fs::metadata(&component).unwrap().len() / 1_000_000,
                started.elapsed().as_secs_f64(),
                if text.contains("cached") { "from the cache" } else { "compiled" }
            );
            component
        })
        .clone()
}

#[test]
fn plugin_run_prints_the_tags_a_python_stage_gives() {
    let component = tagger();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("2008-05-30 Screenshot.jpg");
    std::fs::write(&file, testdata::read("jpg/Canon_40D.jpg")).unwrap();

    let rules = r#"rules=[{"glob":"*screenshot*","tag":"screenshot"},{"regex":"^(\\d{4})-","tag":"year-{1}"},{"glob":"*.png","tag":"png"}]"#;
    let started = Instant::now();
    let (code, report) = plugin_run(&component, &file, &["--config", rules]);
    eprintln!(
        "plugin run on the Python stage: {:.2} s, stage call {} ms",
        started.elapsed().as_secs_f64(),
        report["duration_ms"]
    );
    assert_eq!(
        (code, &report["outcome"]),
        (0, &Value::from("ok")),
        "{report}"
    );
    assert_eq!(report["stage"], "tagger");
    assert_eq!(
        report["facts"],
        serde_json::json!({ "tags": "screenshot, year-2008" })
    );

    // The fact key is configurable; no rule matching means no fact at all.
    let (code, report) = plugin_run(
        &component,
        &file,
        &["--config", r#"rules=[{"glob":"*.png","tag":"png"}]"#, "--config", "key=labels"],
    );
    assert_eq!(
        (code, &report["facts"]),
        (0, &serde_json::json!({})),
        "{report}"
    );

    // A malformed config fails the step (not the asset) and says which key and what to write.
    let (code, report) = plugin_run(&component, &file, &["--config", r#"rules=[{"glob":"*","tag":"a,b"}]"#]);
    assert_eq!(
        (code, &report["outcome"]),
        (2, &Value::from("failed")),
        "{report}"
    );
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("rules[0].tag") && error.contains("comma"),
        "{error}"
    );
    let (_, report) = plugin_run(&component, &file, &[]);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("config rules is missing"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_stage_in_the_pipeline_tags_uploads() {
    let component = tagger();
    let release = repo().join("target/wasm32-wasip2/release");
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("pipeline.toml");
    // As a self-hoster would add it (README.md, plugins-py/tagger/README.md):
    // after `metadata`, so that rules can read the camera's make.
    let toml = format!(
        r#"
[[stage]]
name = "validate"
component = "{validate}"
config = {{ max_pixels = 100000000, max_bytes = 209715200 }}

[[stage]]
name = "metadata"
component = "{metadata}"
content_types = ["image/*"]

[[stage]]
name = "tagger"
component = "{tagger}"
timeout_ms = 5000
memory_limit_mb = 128

[[stage.config.rules]]
glob = "Screenshot*"
tag = "screenshot"

[[stage.config.rules]]
regex = '^(\d{{4}})-\d{{2}}-\d{{2}}'
tag = "year-{{1}}"

[[stage.config.rules]]
fact = "make"
glob = "canon"
tag = "canon"
"#,
        validate = release.join("validate.wasm").display(),
        metadata = release.join("metadata.wasm").display(),
        tagger = component.display(),
    );
    std::fs::write(&pipeline, toml).unwrap();

    let db = TestDb::new().await;
    db.migrate();
    let started = Instant::now();
    let server = Server::start_with(&db, &pipeline, &[]).await;
    let healthy = started.elapsed();

    let canon = testdata::read("jpg/Canon_40D.jpg");
    let nikon = testdata::read("jpg/gps/DSCN0010.jpg");
    let mut plain = nikon.clone();
    plain.extend_from_slice(b"other bytes, so not a duplicate");
    let cases = [
        ("2008-05-30 Canon_40D.jpg", canon, Some("year-2008, canon")),
        ("Screenshot_2024.jpg", nikon, Some("screenshot")),
        ("DSCN0010.jpg", plain, None),
    ];
    let mut tagged = None;
    for (name, bytes, want) in cases {
        let (code, up) = server.upload(name, bytes, "image/jpeg").await;
        tagged.get_or_insert_with(|| up["asset_id"].as_str().unwrap().to_owned());
        assert_eq!(code, 201, "{name}: {up}");
        let done = server.wait_done(up["asset_id"].as_str().unwrap()).await;
        assert_eq!(
            done["status"],
            "ready",
            "{name}: {done}\n{}",
            server.log_text()
        );
        assert_eq!(done["facts"]["tags"].as_str(), want, "{name}: {done}");
        let tagger = done["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "tagger")
            .unwrap_or_else(|| panic!("{name}: no tagger stage in {done}"));
        assert_eq!(tagger["outcome"], "ok", "{name}: {done}");
    }
    // The web app shows the stage's tags in the photo's info panel.
    let b = lumilio_browser::Browser::start("tags", 1280, 800).await;
    b.sign_in(&server.base, &server.key).await;
    b.goto(&format!("{}/#/photo/{}", server.base, tagged.unwrap()))
        .await;
    let shown = b
        .until(
            "the tags row",
            "const t = [...document.querySelectorAll('[data-field=tags] .tag')].map(e => e.textContent); \
             return t.length ? t : null",
        )
        .await;
    assert_eq!(shown, serde_json::json!(["year-2008", "canon"]));
    b.assert_clean(&server.base).await;
    b.close().await;
    eprintln!(
        "Python stage pipeline: healthy after {:.2} s, 3 assets done after {:.2} s",
        healthy.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
