//! Unit tests of the pipeline module, using the guests in `tests/guests`
//! (built by `tests/guests/build.sh`; built on demand if missing).
//!
//! Run with `cargo test --release -p lumilio --lib pipeline`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::*;

// ---------------------------------------------------------------- helpers

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The path of guest `name`'s component, building the guests once if any is missing.
fn guest(name: &str) -> PathBuf {
    static BUILD: Mutex<bool> = Mutex::new(false);
    let path = repo_root()
        .join("target/guests/wasm32-wasip2/release")
        .join(format!("guest_{}.wasm", name.replace('-', "_")));
    if !path.is_file() {
        let mut tried = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        if !path.is_file() && !*tried {
            *tried = true;
            let status = std::process::Command::new("bash")
                .arg(repo_root().join("tests/guests/build.sh"))
                .status();
            eprintln!("built test guests: {status:?}");
        }
    }
    assert!(
        path.is_file(),
        "test guest `{name}` is not built ({}); run tests/guests/build.sh",
        path.display()
    );
    path
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lumilio-pipeline-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn small_opts() -> RuntimeOptions {
    RuntimeOptions {
        max_instances: 16,
        ..RuntimeOptions::default()
    }
}

/// One runtime shared by most tests (like the real host: one per process).
fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::with_options(repo_root().join("target/pipeline-test-cache"), small_opts()).unwrap()
    })
}

/// Writes `toml` as `DIR/pipeline.toml` and returns its path.
fn write_toml(dir: &Path, toml: &str) -> PathBuf {
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, toml).unwrap();
    p
}

fn load(toml: &str) -> Pipeline {
    let dir = temp_dir("load");
    let p = write_toml(&dir, toml);
    match Pipeline::load(&p, runtime()) {
        Ok(p) => p,
        Err(e) => panic!("pipeline did not load: {e}"),
    }
}

fn load_err(toml: &str) -> (PathBuf, Vec<String>) {
    let dir = temp_dir("err");
    let p = write_toml(&dir, toml);
    match Pipeline::load(&p, runtime()) {
        Ok(_) => panic!("pipeline unexpectedly loaded"),
        Err(e) => {
            assert_eq!(e.file, p);
            (p, e.messages())
        }
    }
}

fn stage_toml(name: &str, guest_name: &str, extra: &str) -> String {
    format!(
        "[[stage]]\nname = \"{name}\"\ncomponent = '{}'\n{extra}\n",
        guest(guest_name).display()
    )
}

fn asset(content_type: &str, bytes: &[u8]) -> (AssetFacts, Arc<[u8]>) {
    (
        AssetFacts {
            id: "00000000-0000-0000-0000-000000000001".into(),
            file_name: "cat.jpg".into(),
            content_type: content_type.into(),
            size: bytes.len() as u64,
            content_hash: blake3::hash(bytes).to_hex().to_string(),
        },
        Arc::from(bytes),
    )
}

async fn run(p: &Pipeline, content_type: &str) -> PipelineReport {
    let (a, b) = asset(content_type, b"\xff\xd8\xff fake jpeg");
    p.run(a, b).await
}

/// A normal stage still runs fine on the shared runtime.
async fn assert_host_still_serves() {
    let p = load(&stage_toml(
        "after",
        "echo",
        "config = { \"fact.ok\" = true }",
    ));
    let r = run(&p, "image/jpeg").await;
    assert_eq!(r.verdict, Verdict::Ready, "{r:?}");
    assert_eq!(r.fact("ok"), Some(&FactValue::Boolean(true)));
}

fn failed(r: &PipelineReport) -> &StageError {
    match &r.stages.last().expect("no stage ran").outcome {
        StageOutcome::Failed(e) => e,
        other => panic!("expected a failed stage, got {other:?}"),
    }
}

// ---------------------------------------------------------------- happy path

#[tokio::test]
async fn echo_facts_renditions_warnings_are_merged() {
    let toml = stage_toml(
        "first",
        "echo",
        r#"config = { "fact.width" = 10, "fact.camera" = "X100", "rendition.small" = "256x128", warn = "hello" }"#,
    ) + &stage_toml(
        "second",
        "echo",
        r#"config = { "fact.width" = 20, "fact.ratio" = 1.5 }"#,
    );
    let p = load(&toml);
    assert_eq!(p.stages().len(), 2);
    assert_eq!(p.stages()[0].world_version, "0.1.0");
    let r = run(&p, "image/jpeg").await;
    assert_eq!(r.verdict, Verdict::Ready);
    assert_eq!(r.stages.len(), 2);
    assert!(r.stages.iter().all(|s| s.outcome == StageOutcome::Ok));
    // Later stages win, in place.
    assert_eq!(r.fact("width"), Some(&FactValue::Integer(20)));
    assert_eq!(r.fact("camera"), Some(&FactValue::Text("X100".into())));
    assert_eq!(r.fact("ratio"), Some(&FactValue::Float(1.5)));
    let wpos = r.facts.iter().position(|(k, _)| k == "width").unwrap();
    let rpos = r.facts.iter().position(|(k, _)| k == "ratio").unwrap();
    assert!(
        wpos < rpos,
        "a replaced fact keeps its first position: {:?}",
        r.facts
    );
    assert_eq!(r.facts.iter().filter(|(k, _)| k == "width").count(), 1);
    // The second stage saw the first stage's (merged) facts.
    assert_eq!(r.fact("echo.input_facts"), Some(&FactValue::Integer(7)));
    assert_eq!(r.fact("echo.bytes"), Some(&FactValue::Integer(13)));
    assert_eq!(
        r.fact("echo.asset_id"),
        Some(&FactValue::Text(
            "00000000-0000-0000-0000-000000000001".into()
        ))
    );
    assert_eq!(r.renditions.len(), 1);
    assert_eq!(r.renditions[0].name, "small");
    assert_eq!((r.renditions[0].width, r.renditions[0].height), (256, 128));
    assert_eq!(r.warnings, vec!["first: hello".to_string()]);
    assert_eq!(r.stages[0].warnings, vec!["hello".to_string()]);
    // FactValue serialises untagged.
    assert_eq!(
        serde_json::to_string(&r.fact("width").unwrap()).unwrap(),
        "20"
    );
    assert_eq!(
        serde_json::to_string(&FactValue::Text("a".into())).unwrap(),
        "\"a\""
    );
}

#[tokio::test]
async fn content_types_prefer_earlier_fact_over_claim() {
    let toml = stage_toml(
        "sniff",
        "echo",
        r#"config = { "fact.content_type" = "image/jpeg" }"#,
    ) + &stage_toml(
        "images",
        "echo",
        "content_types = [\"image/*\"]\nconfig = { \"fact.ran_images\" = true }",
    ) + &stage_toml(
        "videos",
        "echo",
        "content_types = [\"video/*\"]\nconfig = { \"fact.ran_videos\" = true }",
    ) + &stage_toml(
        "jpeg",
        "echo",
        "content_types = [\"IMAGE/JPEG\"]\nconfig = { \"fact.ran_jpeg\" = true }",
    );
    let p = load(&toml);
    // The client claims octet-stream; the sniffing stage says image/jpeg.
    let r = run(&p, "application/octet-stream").await;
    assert_eq!(r.verdict, Verdict::Ready);
    let outcomes: Vec<_> = r
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("sniff", StageOutcome::Ok),
            ("images", StageOutcome::Ok),
            ("videos", StageOutcome::Skipped),
            ("jpeg", StageOutcome::Ok),
        ]
    );
    assert_eq!(r.fact("ran_images"), Some(&FactValue::Boolean(true)));
    assert_eq!(r.fact("ran_videos"), None);

    // Without such a fact the client's claim is used.
    let p = load(&stage_toml(
        "images",
        "echo",
        "content_types = [\"image/*\"]",
    ));
    assert_eq!(
        run(&p, "image/png; q=1").await.stages[0].outcome,
        StageOutcome::Ok
    );
    assert_eq!(
        run(&p, "text/plain").await.stages[0].outcome,
        StageOutcome::Skipped
    );
}

#[tokio::test]
async fn rejection_stops_the_pipeline() {
    let toml = stage_toml("gate", "echo", r#"config = { reject = "not an image" }"#)
        + &stage_toml("never", "echo", "");
    let r = run(&load(&toml), "image/jpeg").await;
    assert_eq!(
        r.verdict,
        Verdict::Rejected {
            stage: "gate".into(),
            reason: "not an image".into()
        }
    );
    assert_eq!(r.stages.len(), 1);
    assert_eq!(
        r.stages[0].outcome,
        StageOutcome::Rejected("not an image".into())
    );
}

#[tokio::test]
async fn failure_stops_the_pipeline_and_is_retryable() {
    let toml = stage_toml("flaky", "echo", r#"config = { fail = "disk full" }"#)
        + &stage_toml("never", "echo", "");
    let r = run(&load(&toml), "image/jpeg").await;
    assert_eq!(
        r.verdict,
        Verdict::Failed {
            stage: "flaky".into(),
            error: "stage `flaky` failed: disk full".into()
        }
    );
    assert_eq!(r.stages.len(), 1);
    assert_eq!(
        failed(&r),
        &StageError::Failed {
            stage: "flaky".into(),
            reason: "disk full".into()
        }
    );
}

// ---------------------------------------------------------------- hostile guests

/// `[hostile stage (only for application/x-hostile), echo]`: the same
/// Pipeline serves a hostile asset and then a normal one.
fn hostile_pipeline(guest_name: &str, limits: &str) -> Pipeline {
    load(
        &(stage_toml(
            guest_name,
            guest_name,
            &format!("content_types = [\"application/x-hostile\"]\n{limits}"),
        ) + &stage_toml("after", "echo", "config = { \"fact.ok\" = true }")),
    )
}

/// After a hostile run: the same pipeline (hostile stage skipped) and a new
/// pipeline on the same runtime both work.
async fn assert_still_serves(p: &Pipeline, hostile: &str) {
    let r = run(p, "image/jpeg").await;
    assert_eq!(r.verdict, Verdict::Ready, "{r:?}");
    assert_eq!(r.stages[0].name, hostile);
    assert_eq!(r.stages[0].outcome, StageOutcome::Skipped);
    assert_eq!(r.fact("ok"), Some(&FactValue::Boolean(true)));
    assert_host_still_serves().await;
}

#[tokio::test]
async fn infinite_loop_stops_at_deadline() {
    let p = hostile_pipeline("spin", "timeout_ms = 200");
    for _ in 0..2 {
        let started = Instant::now();
        let r = run(&p, "application/x-hostile").await;
        let took = started.elapsed();
        let e = failed(&r);
        assert_eq!(
            e,
            &StageError::Timeout {
                stage: "spin".into(),
                limit_ms: 200
            }
        );
        assert_eq!(
            e.to_string(),
            "stage `spin` timed out after 200 ms (timeout_ms in pipeline.toml)"
        );
        assert!(e.may_succeed_on_retry());
        assert!(matches!(&r.verdict, Verdict::Failed { stage, .. } if stage == "spin"));
        assert_eq!(r.stages.len(), 1, "the pipeline stops at the failed stage");
        assert!(
            r.stages[0].duration >= Duration::from_millis(195),
            "{:?}",
            r.stages[0].duration
        );
        assert!(took < Duration::from_secs(3), "deadline overshot: {took:?}");
        assert_still_serves(&p, "spin").await;
    }
}

/// The vendored code generator's patch is in effect: the cold path of epoch
/// checks calls `new_epoch` through the trampoline that preserves every
/// register, not through the ordinary one (whose call clobbers the
/// caller-saved registers and makes checked loops spill). The trap itself is
/// `infinite_loop_stops_at_deadline`'s.
#[test]
fn epoch_checks_call_new_epoch_through_the_register_preserving_trampoline() {
    let p = hostile_pipeline("spin", "timeout_ms = 200");
    let path = runtime()
        .inner()
        .artefact_path(&p.stages()[0].component_hash);
    let artefact = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("no compiled artefact {}: {e}", path.display()));
    let has = |sym: &[u8]| artefact.windows(sym.len()).any(|w| w == sym);
    assert!(has(b"wasmtime_patchable_builtin_new_epoch\0"));
    assert!(!has(b"wasmtime_builtin_new_epoch\0"));
}

#[tokio::test]
async fn two_gib_allocation_stops_at_memory_cap() {
    let p = hostile_pipeline("oom", "memory_limit_mb = 64\ntimeout_ms = 20000");
    for _ in 0..2 {
        let r = run(&p, "application/x-hostile").await;
        let e = failed(&r);
        assert_eq!(
            e,
            &StageError::OutOfMemory {
                stage: "oom".into(),
                limit_mb: 64
            }
        );
        assert_eq!(
            e.to_string(),
            "stage `oom` ran out of memory: it tried to grow past its limit of 64 MB \
             (memory_limit_mb in pipeline.toml)"
        );
        assert!(!e.may_succeed_on_retry());
        assert_still_serves(&p, "oom").await;
    }
}

#[tokio::test]
async fn panic_message_is_in_the_error() {
    const MESSAGE: &str = "guest gave up: the bytes are cursed";
    let p = hostile_pipeline("panic", "");
    let r = run(&p, "application/x-hostile").await;
    let e = failed(&r);
    match e {
        StageError::Panic {
            stage,
            message,
            stderr,
        } => {
            assert_eq!(stage, "panic");
            assert_eq!(message, MESSAGE);
            assert!(stderr.contains("panicked at"), "{stderr}");
            assert!(stderr.contains(MESSAGE), "{stderr}");
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    assert_eq!(e.to_string(), format!("stage `panic` panicked: {MESSAGE}"));
    assert!(!e.may_succeed_on_retry());
    assert_eq!(
        r.verdict,
        Verdict::Failed {
            stage: "panic".into(),
            error: format!("stage `panic` panicked: {MESSAGE}")
        }
    );
    assert_still_serves(&p, "panic").await;
}

#[tokio::test]
async fn guest_blocked_in_host_call_stops_at_deadline() {
    // `sleep` blocks in wasi:io/poll, where no epoch check runs; the call's
    // timer cancels it.
    let p = load(
        &(stage_toml(
            "sleepy",
            "echo",
            "timeout_ms = 200\ncontent_types = [\"application/x-hostile\"]\nconfig = { sleep_ms = 30000 }",
        ) + &stage_toml("after", "echo", "config = { \"fact.ok\" = true }")),
    );
    let started = Instant::now();
    let r = run(&p, "application/x-hostile").await;
    let took = started.elapsed();
    assert_eq!(
        failed(&r),
        &StageError::Timeout {
            stage: "sleepy".into(),
            limit_ms: 200
        }
    );
    assert!(took < Duration::from_secs(3), "deadline overshot: {took:?}");
    assert_still_serves(&p, "sleepy").await;
}

#[tokio::test]
async fn chatty_stderr_does_not_fail_the_stage() {
    // 1 MiB of stderr against the 256 KiB kept by default.
    let p = load(&stage_toml(
        "chatty",
        "echo",
        "config = { stderr_bytes = 1048576 }",
    ));
    let r = run(&p, "image/jpeg").await;
    assert_eq!(r.verdict, Verdict::Ready, "{r:?}");
}

#[tokio::test]
async fn wrong_world_fails_check_with_clear_message() {
    let dir = temp_dir("wrong");
    let path = write_toml(&dir, &stage_toml("wrong", "wrong-world", ""));
    let err = check(&path, runtime()).unwrap_err();
    let wasm = guest("wrong-world");
    assert_eq!(
        err.messages(),
        vec![format!(
            "{}: stage[0] (\"wrong\").component: {} does not implement world `lumilio:pipeline/stage`: \
             missing export `lumilio:pipeline/runner@0.2.0` (it exports `lumilio:elsewhere/analyzer@0.1.0`); \
             and it imports something the host does not provide: component imports instance \
             `lumilio:elsewhere/clock@0.1.0`, but a matching implementation was not found in the linker",
            path.display(),
            wasm.display()
        )]
    );
    // run_single says the same about the file.
    let (a, b) = asset("image/jpeg", b"x");
    let e = run_single(runtime(), &wasm, a, b, vec![], vec![], 1)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("missing export `lumilio:pipeline/runner@0.2.0`"),
        "{e}"
    );
    assert_host_still_serves().await;
}

#[tokio::test]
async fn not_a_component_is_refused() {
    let dir = temp_dir("notcomp");
    std::fs::write(dir.join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.join("junk.wasm"), b"hello world").unwrap();
    let path = write_toml(
        &dir,
        "[[stage]]\nname = \"core\"\ncomponent = \"core.wasm\"\n[[stage]]\nname = \"junk\"\ncomponent = \"junk.wasm\"\n",
    );
    let err = check(&path, runtime()).unwrap_err();
    let f = path.display();
    assert_eq!(
        err.messages(),
        vec![
            format!(
                "{f}: stage[0] (\"core\").component: {}: is a core WebAssembly module, not a component \
                 (build the plugin with `--target wasm32-wasip2`)",
                dir.join("core.wasm").display()
            ),
            format!(
                "{f}: stage[1] (\"junk\").component: {}: not a WebAssembly file (no \\0asm header)",
                dir.join("junk.wasm").display()
            ),
        ]
    );
}

// ---------------------------------------------------------------- grants

#[tokio::test]
async fn no_filesystem_or_env_unless_granted() {
    let data = temp_dir("grant");
    std::fs::write(data.join("lut.bin"), b"12345").unwrap();
    // SAFETY: only this test reads or writes this variable.
    unsafe { std::env::set_var("LUMILIO_TEST_GRANT", "sesame") };
    let file = data.join("lut.bin");
    let cfg = format!(
        "config = {{ read_env = \"LUMILIO_TEST_GRANT\", read_file = '{}', write_file = '{}' }}",
        file.display(),
        data.join("new.bin").display()
    );
    let denied = load(&stage_toml("denied", "echo", &cfg));
    let r = run(&denied, "image/jpeg").await;
    assert_eq!(r.verdict, Verdict::Ready);
    assert_eq!(
        r.fact("env.LUMILIO_TEST_GRANT.missing"),
        Some(&FactValue::Boolean(true))
    );
    assert!(
        matches!(r.fact("file.error"), Some(FactValue::Text(_))),
        "{r:?}"
    );
    assert_eq!(r.fact("file.len"), None);

    let granted = load(&stage_toml(
        "granted",
        "echo",
        &format!(
            "{cfg}\nread_only_dirs = ['{}']\nenv = [\"LUMILIO_TEST_GRANT\"]",
            data.display()
        ),
    ));
    assert_eq!(
        granted.stages()[0].env,
        vec!["LUMILIO_TEST_GRANT".to_string()]
    );
    let r = run(&granted, "image/jpeg").await;
    assert_eq!(r.verdict, Verdict::Ready);
    assert_eq!(
        r.fact("env.LUMILIO_TEST_GRANT"),
        Some(&FactValue::Text("sesame".into()))
    );
    assert_eq!(r.fact("file.len"), Some(&FactValue::Integer(5)));
    // Read-only: writing fails and nothing appears on the host.
    assert!(
        matches!(r.fact("write.error"), Some(FactValue::Text(_))),
        "{r:?}"
    );
    assert!(!data.join("new.bin").exists());
}

// ---------------------------------------------------------------- cache

#[test]
fn second_load_deserializes_instead_of_compiling() {
    let cache = temp_dir("cache");
    let dir = temp_dir("cache-toml");
    let path = write_toml(
        &dir,
        &(stage_toml("a", "echo", "") + &stage_toml("b", "panic", "")),
    );

    let rt1 = Runtime::with_options(&cache, small_opts()).unwrap();
    let p1 = Pipeline::load(&path, &rt1).unwrap();
    assert_eq!(
        p1.load_stats(),
        LoadStats {
            compiled: 2,
            cache_hits: 0
        }
    );
    assert!(p1.stages().iter().all(|s| !s.from_cache));

    // A new runtime on the same directory, as after a restart.
    let rt2 = Runtime::with_options(&cache, small_opts()).unwrap();
    let p2 = Pipeline::load(&path, &rt2).unwrap();
    assert_eq!(
        p2.load_stats(),
        LoadStats {
            compiled: 0,
            cache_hits: 2
        }
    );
    assert!(p2.stages().iter().all(|s| s.from_cache));
    assert_eq!(
        rt2.load_stats(),
        LoadStats {
            compiled: 0,
            cache_hits: 2
        }
    );

    // Artefacts are named by the wasm's BLAKE3 and the engine hash; no temp
    // files are left behind.
    let names: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let echo_hash = blake3::hash(&std::fs::read(guest("echo")).unwrap())
        .to_hex()
        .to_string();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(&format!("{echo_hash}-")) && n.ends_with(".cwasm"))
    );
    assert_eq!(p2.stages()[0].component_hash, echo_hash);

    // The cached component really runs.
    let (a, b) = asset("image/jpeg", b"abc");
    let r = p2.run_blocking(&a, &b);
    assert_eq!(r.stages[0].outcome, StageOutcome::Ok);

    // A corrupt artefact is discarded and recompiled. (Replaced by rename,
    // as the host itself writes: the running artefacts are mmapped, and
    // truncating a mapped file in place would SIGBUS this process.)
    for n in &names {
        let tmp = cache.join("garbage.tmp");
        std::fs::write(&tmp, b"garbage").unwrap();
        std::fs::rename(&tmp, cache.join(n)).unwrap();
    }
    let rt3 = Runtime::with_options(&cache, small_opts()).unwrap();
    let p3 = Pipeline::load(&path, &rt3).unwrap();
    assert_eq!(
        p3.load_stats(),
        LoadStats {
            compiled: 2,
            cache_hits: 0
        }
    );
    assert_eq!(p3.run_blocking(&a, &b).stages[0].outcome, StageOutcome::Ok);
}

// ---------------------------------------------------------------- config validation

#[test]
fn unknown_key_is_named_with_suggestion() {
    let toml =
        stage_toml("validate", "echo", "") + &stage_toml("thumbnail", "echo", "timeot_ms = 5");
    let (p, msgs) = load_err(&toml);
    assert_eq!(
        msgs,
        vec![format!(
            "{}: stage[1] (\"thumbnail\").timeot_ms: unknown key (expected one of name, component, \
             config, timeout_ms, memory_limit_mb, content_types, read_only_dirs, env); did you mean timeout_ms?",
            p.display()
        )]
    );
}

#[test]
fn missing_component_file() {
    let (p, msgs) = load_err("[[stage]]\nname = \"thumb\"\ncomponent = \"nope/thumb.wasm\"\n");
    let dir = p.parent().unwrap();
    assert_eq!(
        msgs,
        vec![format!(
            "{}: stage[0] (\"thumb\").component: file not found: {}",
            p.display(),
            dir.join("nope/thumb.wasm").display()
        )]
    );
}

#[test]
fn duplicate_stage_names() {
    let toml = stage_toml("same", "echo", "")
        + &stage_toml("other", "echo", "")
        + &stage_toml("same", "echo", "");
    let (p, msgs) = load_err(&toml);
    assert_eq!(
        msgs,
        vec![format!(
            "{}: stage[2] (\"same\").name: duplicate stage name (also used by stage[0])",
            p.display()
        )]
    );
}

#[test]
fn limits_out_of_range() {
    let toml = stage_toml("a", "echo", "timeout_ms = 0\nmemory_limit_mb = 4097")
        + &stage_toml("b", "echo", "timeout_ms = 600001\nmemory_limit_mb = 0")
        + &stage_toml("ok", "echo", "timeout_ms = 600000\nmemory_limit_mb = 4096");
    let (p, msgs) = load_err(&toml);
    let f = p.display();
    assert_eq!(
        msgs,
        vec![
            format!("{f}: stage[0] (\"a\").timeout_ms: 0 is out of range (expected 1..=600000)"),
            format!(
                "{f}: stage[0] (\"a\").memory_limit_mb: 4097 is out of range (expected 1..=4096)"
            ),
            format!(
                "{f}: stage[1] (\"b\").timeout_ms: 600001 is out of range (expected 1..=600000)"
            ),
            format!("{f}: stage[1] (\"b\").memory_limit_mb: 0 is out of range (expected 1..=4096)"),
        ]
    );
}

#[test]
fn empty_pipeline() {
    for toml in ["", "# nothing\n", "stage = []\n"] {
        let (p, msgs) = load_err(toml);
        assert_eq!(
            msgs,
            vec![format!(
                "{}: stage: the pipeline has no stages (add at least one [[stage]] table)",
                p.display()
            )]
        );
    }
}

#[test]
fn wrong_types_missing_keys_and_bad_values() {
    let toml = format!(
        "[[stage]]\ncomponent = 'x.wasm'\n\
         [[stage]]\nname = \"t\"\ncomponent = '{echo}'\ntimeout_ms = \"5s\"\ncontent_types = [\"image\", 3]\nconfig = 5\n\
         [[stage]]\nname = \"bad name\"\ncomponent = '{echo}'\n\
         [[stage]]\nname = \"g\"\ncomponent = '{echo}'\nread_only_dirs = ['/definitely/not/here']\nenv = [\"A=B\"]\n\
         [[stage]]\nname = \"nc\"\n",
        echo = guest("echo").display()
    );
    let (p, msgs) = load_err(&toml);
    let f = p.display();
    let dir = p.parent().unwrap();
    assert_eq!(
        msgs,
        vec![
            format!("{f}: stage[0].name: missing (every stage needs a unique name)"),
            format!(
                "{f}: stage[0].component: file not found: {}",
                dir.join("x.wasm").display()
            ),
            format!("{f}: stage[1] (\"t\").config: expected a table, found an integer"),
            format!("{f}: stage[1] (\"t\").timeout_ms: expected an integer, found a string"),
            format!("{f}: stage[1] (\"t\").content_types[1]: expected a string, found an integer"),
            format!(
                "{f}: stage[1] (\"t\").content_types[0]: invalid content type pattern \"image\" \
                 (expected e.g. \"image/jpeg\" or \"image/*\")"
            ),
            format!(
                "{f}: stage[2].name: invalid stage name \"bad name\" (use 1 to 64 letters, digits, '-', '_' or '.')"
            ),
            format!(
                "{f}: stage[3] (\"g\").read_only_dirs[0]: directory not found: /definitely/not/here"
            ),
            format!("{f}: stage[3] (\"g\").env[0]: invalid environment variable name \"A=B\""),
            format!(
                "{f}: stage[4] (\"nc\").component: missing (the path of the stage's .wasm component)"
            ),
        ]
    );
}

#[test]
fn toml_syntax_and_top_level_errors() {
    let (p, msgs) = load_err("[[stage]]\nname = \"a\nx = 1\n");
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].starts_with(&format!("{}: line 2, column ", p.display()))
            && msgs[0].contains("invalid TOML"),
        "{msgs:?}"
    );
    let (p, msgs) = load_err(&(stage_toml("a", "echo", "") + "[stages]\nx = 1\n"));
    assert_eq!(
        msgs,
        vec![format!(
            "{}: stages: unknown key (expected stage); did you mean stage?",
            p.display()
        )]
    );
}

#[test]
fn all_errors_are_collected_together() {
    let toml = stage_toml("a", "echo", "timeot_ms = 5")
        + &stage_toml("a", "echo", "")
        + &stage_toml("w", "wrong-world", "")
        + "[[stage]]\nname = \"m\"\ncomponent = 'missing.wasm'\nmemory_limit_mb = 9999\n";
    let (p, msgs) = load_err(&toml);
    let f = p.display();
    let keys: Vec<&str> = msgs
        .iter()
        .map(|m| {
            m.strip_prefix(&format!("{f}: "))
                .unwrap()
                .split(": ")
                .next()
                .unwrap()
        })
        .collect();
    // The file's own problems in file order, then component problems.
    assert_eq!(
        keys,
        vec![
            "stage[0] (\"a\").timeot_ms",
            "stage[1] (\"a\").name",
            "stage[3] (\"m\").component",
            "stage[3] (\"m\").memory_limit_mb",
            "stage[2] (\"w\").component",
        ],
        "{msgs:#?}"
    );
    assert!(msgs[1].ends_with("duplicate stage name (also used by stage[0])"));
    assert!(msgs[4].contains("missing export `lumilio:pipeline/runner@0.2.0`"));
}

#[test]
fn config_values_become_strings() {
    let toml = stage_toml(
        "c",
        "echo",
        r#"config = { s = "text", i = 42, f = 1.5, b = true, arr = [1, "x"], t = { k = 1, n = [true] } }"#,
    );
    let mut issues = Vec::new();
    let specs = config::parse(&toml, Path::new("."), &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
    let cfg: std::collections::BTreeMap<_, _> = specs[0].config.iter().cloned().collect();
    assert_eq!(cfg["s"], "text");
    assert_eq!(cfg["i"], "42");
    assert_eq!(cfg["f"], "1.5");
    assert_eq!(cfg["b"], "true");
    assert_eq!(cfg["arr"], r#"[1,"x"]"#);
    assert_eq!(cfg["t"], r#"{"k":1,"n":[true]}"#);
    assert_eq!(specs[0].timeout_ms, config::DEFAULT_TIMEOUT_MS);
    assert_eq!(specs[0].memory_limit_mb, config::DEFAULT_MEMORY_LIMIT_MB);
}

// ---------------------------------------------------------------- misc units

#[test]
fn content_type_patterns() {
    use config::content_type_matches as m;
    assert!(m("image/*", "image/jpeg"));
    assert!(m("image/*", "Image/PNG; charset=x"));
    assert!(m("*/*", "video/mp4"));
    assert!(m("image/jpeg", "image/jpeg"));
    assert!(!m("image/jpeg", "image/png"));
    assert!(!m("image/*", "video/mp4"));
    assert!(!m("image/*", "garbage"));
}

#[test]
fn panic_message_extraction() {
    use fault::panic_message as pm;
    let new = "\nthread '<unnamed>' panicked at src/lib.rs:17:9:\nguest gave up\nsecond line\nnote: run with `RUST_BACKTRACE=1`\n";
    assert_eq!(pm(new).as_deref(), Some("guest gave up\nsecond line"));
    let one = "thread 'main' panicked at src/lib.rs:1:2: inline message\n";
    assert_eq!(pm(one).as_deref(), Some("inline message"));
    let old = "thread 'main' panicked at 'old style', src/lib.rs:1:2\n";
    assert_eq!(pm(old).as_deref(), Some("old style"));
    assert_eq!(pm("no panic here"), None);
}

#[test]
fn host_log_goes_to_tracing_with_stage_name() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let p = load(&stage_toml(
        "logger",
        "echo",
        r#"config = { log = "hello from the guest" }"#,
    ));
    let (a, b) = asset("image/jpeg", b"x");
    let r = tracing::subscriber::with_default(subscriber, || p.run_blocking(&a, &b));
    assert_eq!(r.verdict, Verdict::Ready);
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(out.contains("hello from the guest"), "{out}");
    assert!(out.contains("stage=logger"), "{out}");
}

#[tokio::test]
async fn run_single_runs_one_component() {
    let (a, b) = asset("image/jpeg", b"abcd");
    let out = run_single(
        runtime(),
        &guest("echo"),
        a.clone(),
        b.clone(),
        vec![
            ("fact.k".into(), "v".into()),
            ("rendition.thumb".into(), "64x48".into()),
        ],
        vec![],
        1,
    )
    .await
    .unwrap();
    assert_eq!(out.report.name, "guest_echo");
    assert_eq!(out.report.outcome, StageOutcome::Ok);
    let o = out.output.unwrap();
    assert!(o.facts.contains(&("k".into(), FactValue::Text("v".into()))));
    assert_eq!(o.renditions[0].name, "thumb");

    let missing = run_single(
        runtime(),
        Path::new("/nope.wasm"),
        a.clone(),
        b.clone(),
        vec![],
        vec![],
        1,
    )
    .await;
    assert_eq!(
        missing.unwrap_err().messages(),
        vec!["/nope.wasm: component: file not found: /nope.wasm".to_string()]
    );
}

/// `run_single` calls a stage the number of times asked, each call timed,
/// and does not call again a stage that did not succeed.
#[tokio::test]
async fn run_single_times_each_call_and_stops_at_a_failure() {
    let (a, b) = asset("image/jpeg", b"abcd");
    let config = vec![("fact.k".to_string(), "v".to_string())];
    let out = run_single(runtime(), &guest("echo"), a.clone(), b.clone(), config, vec![], 3)
        .await
        .unwrap();
    assert_eq!(out.report.outcome, StageOutcome::Ok);
    assert_eq!(out.durations.len(), 3, "{:?}", out.durations);
    assert!(out.durations.iter().all(|d| !d.is_zero()), "{:?}", out.durations);
    assert_eq!(out.durations[2], out.report.duration, "the report is the last call's");
    assert!(out.output.is_some());

    let validate = repo_root().join("target/wasm32-wasip2/release/validate.wasm");
    let (a, b) = asset("image/jpeg", b"definitely not an image");
    let out = run_single(runtime(), &validate, a, b, vec![], vec![], 3).await.unwrap();
    assert!(matches!(out.report.outcome, StageOutcome::Rejected(_)), "{:?}", out.report.outcome);
    assert_eq!(out.durations.len(), 1, "a rejected call is not repeated");
}

/// With `perf_map`, loading a component lists its functions by name in
/// `/tmp/perf-PID.map`, which is what `perf report` reads for JIT code.
#[tokio::test]
async fn perf_map_names_the_components_functions() {
    let map = PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    let opts = RuntimeOptions {
        perf_map: true,
        ..small_opts()
    };
    let rt = Runtime::with_options(dir.path(), opts).unwrap();
    // A real plugin: built with its name section, as `cargo build --release` leaves it.
    let validate = repo_root().join("target/wasm32-wasip2/release/validate.wasm");
    let (a, b) = asset("image/jpeg", b"not an image");
    let out = run_single(&rt, &validate, a, b, vec![], vec![], 1).await.unwrap();
    assert!(matches!(out.report.outcome, StageOutcome::Rejected(_)), "{:?}", out.report.outcome);
    let text = std::fs::read_to_string(&map).unwrap_or_default();
    // Removed once: wasmtime keeps the file open for the process and writes
    // later loads to it unlinked, so nothing recreates the path.
    let _ = std::fs::remove_file(&map);
    // Lines are `ADDRESS SIZE NAME`; the guest's export and its Rust
    // functions are there, demangled.
    let names: Vec<&str> = text.lines().filter_map(|l| l.splitn(3, ' ').nth(2)).collect();
    assert!(names.iter().any(|n| n.ends_with("#process")), "{} lines: {:.2000}", names.len(), text);
    assert!(
        names.iter().any(|n| n.starts_with("validate::") && !n.contains("_ZN")),
        "no demangled plugin function among {} names: {:.2000}",
        names.len(),
        text
    );

    // From the cache (the run above filled it), the code must not be a
    // mapping of the artefact: `perf` would name it from that file instead.
    let mapped_from_cache = |perf_map: bool| {
        let rt = Runtime::with_options(dir.path(), RuntimeOptions { perf_map, ..small_opts() }).unwrap();
        let (_component, _, cached) = rt.inner().load_component(&validate).unwrap();
        assert!(cached, "the artefact was not taken from the cache");
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.contains(dir.path().to_str().unwrap())
    };
    assert!(mapped_from_cache(false), "without perf_map the artefact is mapped (the check sees it)");
    assert!(!mapped_from_cache(true), "with perf_map the cached code is in anonymous memory");
}

/// The real `validate` plugin rejects garbage (`make test` builds it first).
#[tokio::test]
async fn real_validate_plugin_rejects_garbage() {
    let wasm = repo_root().join("target/wasm32-wasip2/release/validate.wasm");
    assert!(
        wasm.is_file(),
        "{} is not built: run `make build` (make test does)",
        wasm.display()
    );
    let (a, b) = asset("image/jpeg", b"definitely not an image");
    let r = run_single(runtime(), &wasm, a, b, vec![], vec![], 1).await.unwrap();
    assert!(
        matches!(r.report.outcome, StageOutcome::Rejected(_)),
        "validate should reject garbage: {:?}",
        r.report.outcome
    );
}

/// A 0.1.0 stage (the `echo` guest) and a 0.2.0 one (the real `validate`
/// plugin) run in one pipeline. The 0.1.0 stage receives the whole file; the
/// 0.2.0 stage reads what it needs: a photo whole (its integrity is checked
/// to the last byte), a 16 MiB file that is not an image only as far as its
/// first bytes, which is enough to turn it away.
#[tokio::test]
async fn stages_of_both_world_versions_run_and_read_only_what_they_need() {
    let validate = repo_root().join("target/wasm32-wasip2/release/validate.wasm");
    assert!(
        validate.is_file(),
        "{} is not built: run `make build`",
        validate.display()
    );
    let toml = stage_toml("old", "echo", "")
        + &format!(
            "[[stage]]\nname = \"validate\"\ncomponent = '{}'\n",
            validate.display()
        );
    let p = load(&toml);
    let versions: Vec<&str> = p.stages().iter().map(|s| s.world_version.as_str()).collect();
    assert_eq!(versions, ["0.1.0", "0.2.0"]);

    let photo = testdata::read("jpg/Canon_40D.jpg");
    let (a, b) = asset("image/jpeg", &photo);
    let r = p.run(a, b).await;
    assert_eq!(r.verdict, Verdict::Ready, "{r:?}");
    let len = photo.len() as u64;
    assert_eq!(r.stages[0].bytes_read, len, "0.1.0 gets a copy of everything");
    // validate reads its first 4 KiB to screen the file, then all of it.
    let read = r.stages[1].bytes_read;
    assert!(
        (len..=len + 4096).contains(&read),
        "validate read {read} bytes of a {len}-byte photo"
    );

    let junk = vec![b'x'; 16 << 20];
    let (a, b) = asset("image/jpeg", &junk);
    let r = p.run(a, b).await;
    assert!(
        matches!(&r.verdict, Verdict::Rejected { stage, reason }
            if stage == "validate" && reason.contains("not a supported image")),
        "{:?}",
        r.verdict
    );
    assert_eq!(
        r.stages[0].bytes_read,
        junk.len() as u64,
        "0.1.0 gets a copy of everything"
    );
    assert!(
        (1..=4096).contains(&r.stages[1].bytes_read),
        "validate read {} bytes of a 16 MiB non-image",
        r.stages[1].bytes_read
    );
}

/// A file in memory and the same bytes on disk read alike, at the edges too.
#[test]
fn stage_files_in_memory_and_on_disk_read_the_same_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("asset.bin");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let files = [
        StageFile::new(Arc::from(&data[..])),
        StageFile::open(&path).unwrap(),
    ];
    for f in &files {
        assert_eq!(f.len(), 10_000);
        assert_eq!(f.read(0, 4).unwrap(), &data[..4]);
        assert_eq!(f.read(9_990, 100).unwrap(), &data[9_990..], "cut at the end");
        assert!(f.read(10_000, 5).unwrap().is_empty(), "at the end");
        assert!(f.read(u64::MAX, u64::MAX).unwrap().is_empty(), "past it");
        assert_eq!(f.bytes().unwrap(), &data[..]);
    }
    // Shortened on disk after it was opened: a read says so, it does not
    // return bytes that are not there.
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(100).unwrap();
    assert!(StageFile::open(&path).unwrap().read(0, 10).is_ok());
    assert!(files[1].read(50, 200).is_err());
}

/// The thumbnail component gives what the same code built natively
/// (`thumbnail::thumbnails`) gives, on photos whose renditions are and are
/// not a multiple of 16 pixels wide. The WASM build has SIMD128 paths of its
/// own (the colour conversion before encoding, the decoder's IDCT and colour
/// conversion, the resizer), so a pixel may round differently (the builds
/// differ by at most 6 levels, and by under 0.004 on average), but a wrong
/// lane, channel or coefficient shows at once.
#[tokio::test]
async fn thumbnail_component_matches_its_native_build() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::with_options(dir.path(), small_opts()).unwrap();
    let wasm = repo_root().join("target/wasm32-wasip2/release/thumbnail.wasm");
    let photos = repo_root().join("tests/data/photos/jpg");
    let pixels = |jpeg: &[u8]| jpeg_decoder::Decoder::new(jpeg).decode().unwrap();
    let mut widths = Vec::new();
    for name in [
        "hdr/iphone_hdr_NO.jpg",
        "mobile/HMD_Nokia_8.3_5G.jpg",
        "orientation/portrait_6.jpg",
    ] {
        let bytes = std::fs::read(photos.join(name)).unwrap();
        let native = thumbnail::thumbnails(&bytes, &thumbnail::Config::default(), None).unwrap();
        let (a, b) = asset("image/jpeg", &bytes);
        let out = run_single(&rt, &wasm, a, b, vec![], vec![], 1).await.unwrap();
        let output = out.output.unwrap_or_else(|| panic!("{name}: {:?}", out.report.outcome));
        assert_eq!(output.renditions.len(), native.thumbs.len(), "{name}");
        for (w, n) in output.renditions.iter().zip(&native.thumbs) {
            assert_eq!((&w.name, w.width, w.height), (&n.name, n.width, n.height), "{name}");
            let (wp, np) = (pixels(&w.bytes), pixels(&n.jpeg));
            assert_eq!(wp.len(), np.len(), "{name} {}", n.name);
            let diffs = wp.iter().zip(&np).map(|(a, b)| a.abs_diff(*b) as u64);
            let (max, sum) = diffs.fold((0, 0), |(m, s), d| (m.max(d), s + d));
            let mean = sum as f64 / np.len() as f64;
            assert!(
                max <= 8 && mean < 0.01,
                "{name}: rendition {} is off the native build's by {max} at most, {mean:.4} on average",
                n.name
            );
            widths.push(n.width);
        }
    }
    assert!(widths.iter().any(|w| w % 16 != 0), "widths {widths:?}");
}
