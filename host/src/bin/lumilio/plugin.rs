//! `lumilio plugin check` and `lumilio plugin run`: trying WASM stages
//! without a database; `lumilio plugin new`: a new stage on the SDK.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use lumilio::{ingest, pipeline};

mod scaffold;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Validate a pipeline file: keys, limits, files, and that each component implements the world.
    Check {
        /// The pipeline file.
        #[arg(env = "LUMILIO_PIPELINE", default_value = "pipeline.toml")]
        pipeline: PathBuf,
        /// Compiled-component cache.
        #[arg(long, env = "LUMILIO_CACHE_PATH", default_value = "data/cache")]
        cache_path: PathBuf,
    },
    /// Write a new plugin crate on the SDK: a stage, its unit test, a README and a one-stage pipeline.toml.
    New {
        /// The plugin's name: lower-case letters, digits, '-' or '_' (it names the crate and the stage).
        name: String,
        /// The crate's folder (default: ./NAME); it must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The SDK crate to depend on (default: plugins/sdk of the checkout this binary was built from).
        #[arg(long, env = "LUMILIO_SDK")]
        sdk: Option<PathBuf>,
    },
    /// Run one component on one file, without a database; print facts as JSON.
    Run {
        /// The component (.wasm).
        plugin: PathBuf,
        /// The input file.
        file: PathBuf,
        /// A config entry passed to the plugin, `key=value`; repeatable.
        #[arg(long = "config", value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// A fact an earlier stage would have found, `key=value`; repeatable.
        /// Whole numbers become integers, other numbers floats, `true`/`false`
        /// booleans, anything else text (`key=text:42` keeps `42` as text).
        #[arg(long = "fact", value_parser = parse_fact)]
        fact: Vec<(String, pipeline::FactValue)>,
        /// Write renditions into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The content type to claim (default: guessed from the extension).
        #[arg(long)]
        content_type: Option<String>,
        /// Call the stage this many times (a fresh instance each, as in
        /// service) and add `runs` (count, min, median, max ms) to the report.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        repeat: u32,
        /// Write /tmp/perf-PID.map so that `perf record` and `perf report`
        /// name the stage's functions (see wit/README.md, "Time and profile it").
        #[arg(long)]
        perf_map: bool,
        /// Compiled-component cache.
        #[arg(long, env = "LUMILIO_CACHE_PATH", default_value = "data/cache")]
        cache_path: PathBuf,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn parse_fact(s: &str) -> Result<(String, pipeline::FactValue), String> {
    use pipeline::FactValue;
    let (key, value) = parse_key_value(s)?;
    let value = if let Some(text) = value.strip_prefix("text:") {
        FactValue::Text(text.to_owned())
    } else if let Ok(i) = value.parse::<i64>() {
        FactValue::Integer(i)
    } else if let Some(f) = value.parse::<f64>().ok().filter(|f| f.is_finite()) {
        FactValue::Float(f)
    } else if let Ok(b) = value.parse::<bool>() {
        FactValue::Boolean(b)
    } else {
        FactValue::Text(value)
    };
    Ok((key, value))
}

/// Runs one `plugin` command; exit code 2 when the stage did not succeed.
pub async fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::New { name, dir, sdk } => {
            let s = scaffold::new_plugin(&name, dir.as_deref(), sdk.as_deref())?;
            let d = s.dir.display();
            let kind = if s.member {
                "a member of the Lumilio workspace"
            } else {
                "a workspace of its own"
            };
            println!("created plugin {name} in {d} ({kind})");
            println!("next:");
            println!("  cd {d}");
            println!("  cargo test");
            println!("  cargo build --target wasm32-wasip2 --release");
            println!("  lumilio plugin check pipeline.toml");
            println!("  lumilio plugin run {} PHOTO", s.component);
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Check {
            pipeline: path,
            cache_path,
        } => {
            let runtime = pipeline::Runtime::new(cache_path)?;
            match pipeline::check(&path, &runtime) {
                Ok(stages) => {
                    for s in stages {
                        let cached = if s.from_cache { ", cached" } else { "" };
                        println!(
                            "ok  {:<16} {} (world {}, {} ms, {} MiB{cached})",
                            s.name,
                            s.component.display(),
                            s.world_version,
                            s.timeout_ms,
                            s.memory_limit_mb
                        );
                    }
                    println!("{}: pipeline is valid", path.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    for m in errors.messages() {
                        eprintln!("{m}");
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        PluginCommand::Run {
            plugin,
            file,
            config,
            fact,
            out,
            content_type,
            repeat,
            perf_map,
            cache_path,
        } => {
            let options = pipeline::RuntimeOptions {
                perf_map,
                ..pipeline::RuntimeOptions::default()
            };
            let runtime = pipeline::Runtime::with_options(cache_path, options)?;
            let bytes: Arc<[u8]> = std::fs::read(&file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .into();
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("input");
            let asset = pipeline::AssetFacts {
                id: uuid::Uuid::new_v4().to_string(),
                file_name: ingest::sanitize_file_name(name),
                content_type: content_type.unwrap_or_else(|| guess_content_type(name).to_owned()),
                size: bytes.len() as u64,
                content_hash: blake3::hash(&bytes).to_hex().to_string(),
            };
            let run =
                pipeline::run_single(&runtime, &plugin, asset, bytes, config, fact, repeat).await?;
            let mut renditions = Vec::new();
            if let Some(output) = &run.output {
                if let Some(dir) = &out {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                for r in &output.renditions {
                    let mut entry = serde_json::json!({
                        "name": r.name, "content_type": r.content_type,
                        "width": r.width, "height": r.height, "size": r.bytes.len(),
                    });
                    if let Some(dir) = &out {
                        let ext = if r.content_type == "image/webp" {
                            "webp"
                        } else {
                            "jpg"
                        };
                        let path = dir.join(format!("{}.{ext}", r.name));
                        std::fs::write(&path, &r.bytes)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        entry["path"] = path.display().to_string().into();
                    }
                    renditions.push(entry);
                }
            }
            let (outcome, error) = match &run.report.outcome {
                pipeline::StageOutcome::Ok => ("ok", None),
                pipeline::StageOutcome::Skipped => ("skipped", None),
                pipeline::StageOutcome::Rejected(r) => ("rejected", Some(r.clone())),
                pipeline::StageOutcome::Failed(e) => ("failed", Some(e.to_string())),
            };
            let facts: serde_json::Map<String, serde_json::Value> = run
                .output
                .iter()
                .flat_map(|o| &o.facts)
                .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                .collect();
            let mut report = serde_json::json!({
                "stage": run.report.name,
                "outcome": outcome,
                "error": error,
                "duration_ms": run.report.duration.as_secs_f64() * 1e3,
                "facts": facts,
                "renditions": renditions,
                "warnings": run.report.warnings,
            });
            if repeat > 1 {
                report["runs"] = runs_summary(&run.durations);
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if outcome == "ok" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}

/// `count`, `min_ms`, `median_ms` and `max_ms` of the calls' durations.
fn runs_summary(durations: &[std::time::Duration]) -> serde_json::Value {
    let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |i: usize| ms.get(i).copied().unwrap_or_default();
    serde_json::json!({
        "count": ms.len(),
        "min_ms": at(0),
        "median_ms": at(ms.len() / 2),
        "max_ms": at(ms.len().saturating_sub(1)),
    })
}

fn guess_content_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "tif" | "tiff" => "image/tiff",
        "heic" | "heif" => "image/heic",
        "avif" => "image/avif",
        _ => "application/octet-stream",
    }
}
