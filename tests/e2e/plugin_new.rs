//! `lumilio plugin new` as a plugin author uses it: scaffold a crate, build
//! it with plain `cargo build --target wasm32-wasip2 --release` in its
//! folder, `lumilio plugin check` its pipeline.toml, `lumilio plugin run` it
//! on a sample photo. Also: the stage wit/README.md opens with is the one
//! the scaffold writes, so the guide cannot drift from what authors get.
//!
//! The nested builds reuse `target/plugin-new/target` (the crate's `target`
//! is a link to it), so only the first run compiles the SDK and wit-bindgen.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{bin, repo};

/// Bound on each nested cargo command; a cold build here takes about 1.5 min.
const CARGO_LIMIT: Duration = Duration::from_secs(600);

/// Runs `cmd` to completion within `limit`, or kills it and fails the test.
fn run_bounded(what: &str, cmd: &mut Command, limit: Duration) -> Output {
    let t = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            // SIGKILL to the one process we started (cargo); its rustc children end with it.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what} did not finish within {limit:?}");
        }
    };
    eprintln!("{what}: {:.1} s", t.elapsed().as_secs_f64());
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `cargo` in `dir`, as an author would type it (no target-dir override).
fn cargo(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(args)
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR");
    c
}

/// The first ```rust block of a Markdown file.
fn first_rust_block(md: &str) -> &str {
    let start = md.find("```rust\n").expect("a ```rust block") + "```rust\n".len();
    let len = md[start..].find("```").expect("the block's end");
    &md[start..start + len]
}

#[test]
fn plugin_new_builds_checks_and_runs() {
    let work = repo().join("target/plugin-new");
    let dir = work.join("byte-count");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(work.join("target")).unwrap();

    let out = run_bounded(
        "lumilio plugin new",
        Command::new(bin())
            .args(["plugin", "new", "byte-count", "--dir"])
            .arg(&dir),
        Duration::from_secs(10),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("created plugin byte-count"), "{said}");
    for f in ["Cargo.toml", "src/lib.rs", "README.md", "pipeline.toml"] {
        assert!(dir.join(f).is_file(), "plugin new wrote no {f}");
    }
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    let guide = std::fs::read_to_string(repo().join("wit/README.md")).unwrap();
    let minimal = first_rust_block(&guide);
    assert!(
        lib.starts_with(minimal),
        "wit/README.md's minimal stage is not what `plugin new` writes:\n{minimal}\n---\n{lib}"
    );
    // A second `plugin new` must not overwrite the author's work.
    let again = Command::new(bin())
        .args(["plugin", "new", "byte-count", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists and is not empty"));

    std::os::unix::fs::symlink(work.join("target"), dir.join("target")).unwrap();
    run_bounded(
        "cargo test (scaffold)",
        &mut cargo(&dir, &["test"]),
        CARGO_LIMIT,
    );
    run_bounded(
        "cargo build --target wasm32-wasip2 --release (scaffold)",
        &mut cargo(&dir, &["build", "--target", "wasm32-wasip2", "--release"]),
        CARGO_LIMIT,
    );

    // A release build keeps the function names that `perf` shows with
    // `plugin run --perf-map` (wit/README.md), and carries no debug info.
    let built = std::fs::read(dir.join("target/wasm32-wasip2/release/byte_count.wasm")).unwrap();
    assert!(
        built.windows(12).any(|w| w == b"10byte_count"),
        "the component has no names of the plugin's own functions"
    );
    assert!(built.len() < 1 << 20, "the component carries debug info: {} bytes", built.len());

    let cache = work.join("cache");
    let out = run_bounded(
        "lumilio plugin check",
        Command::new(bin())
            .args(["plugin", "check", "pipeline.toml", "--cache-path"])
            .arg(&cache)
            .current_dir(&dir),
        Duration::from_secs(120),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("ok  byte-count")
            && said.contains("world 0.2.0")
            && said.contains("pipeline is valid"),
        "{said}"
    );

    let photo = testdata::path("jpg/gps/DSCN0010.jpg");
    let size = std::fs::metadata(&photo).unwrap().len();
    let wasm = "target/wasm32-wasip2/release/byte_count.wasm";
    let plugin_run = |min: u64| {
        Command::new(bin())
            .args(["plugin", "run", wasm])
            .arg(&photo)
            .arg("--config")
            .arg(format!("min_bytes={min}"))
            .arg("--cache-path")
            .arg(&cache)
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let out = plugin_run(size);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stage"], "byte_count");
    assert_eq!(report["outcome"], "ok", "{report}");
    assert_eq!(report["facts"]["byte_count"], size, "{report}");

    let out = plugin_run(size + 1);
    assert_eq!(out.status.code(), Some(2), "a rejection exits 2");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "rejected", "{report}");
    let reason = format!("the file has {size} bytes, fewer than {}", size + 1);
    assert_eq!(report["error"], reason.as_str(), "{report}");
}
