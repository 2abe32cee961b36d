//! `echo`: a well-behaved test stage whose behaviour is driven by its config.
//!
//! Config keys (all optional):
//! * `fact.NAME = VALUE`: emit fact NAME; VALUE is parsed as integer, float,
//!   `true`/`false`, else text.
//! * `rendition.NAME = "WxH"`: emit a fake PNG rendition of that size.
//! * `warn = TEXT`: emit a warning.
//! * `log = TEXT`: write TEXT to the host log at info level.
//! * `reject = REASON` / `fail = REASON`: return that stage error.
//! * `read_env = NAME`: emit fact `env.NAME` with the variable's value, or
//!   `env.NAME.missing = true`.
//! * `read_file = PATH`: emit `file.len` (bytes read) or `file.error`.
//! * `write_file = PATH`: emit `write.ok = true` or `write.error`.
//!
//! * `sleep_ms = N`: sleep N ms (blocked in a WASI host call, not in wasm).
//! * `stderr_bytes = N`: write N bytes of text to stderr (in 1 KiB lines).
//! * `noop` (any value): return an empty output at once (for benchmarks).
//!
//! Otherwise always emits `echo.asset_id`, `echo.bytes`, `echo.size`,
//! `echo.content_type` and `echo.input_facts` (the number of facts given).

// Built against 0.1.0 on purpose: the host must keep running such stages.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0/pipeline.wit", world: "stage" });

use exports::lumilio::pipeline::runner::Guest;
use lumilio::pipeline::host::{LogLevel, log};
use lumilio::pipeline::types::{Fact, FactValue, Input, Output, Rendition, StageError};

struct Echo;

fn parse(v: &str) -> FactValue {
    if let Ok(i) = v.parse::<i64>() {
        FactValue::Integer(i)
    } else if let Ok(f) = v.parse::<f64>() {
        FactValue::Float(f)
    } else if v == "true" || v == "false" {
        FactValue::Boolean(v == "true")
    } else {
        FactValue::Text(v.to_string())
    }
}

fn fact(key: impl Into<String>, value: FactValue) -> Fact {
    Fact {
        key: key.into(),
        value,
    }
}

impl Guest for Echo {
    fn process(input: Input) -> Result<Output, StageError> {
        let mut out = Output {
            facts: Vec::new(),
            renditions: Vec::new(),
            warnings: Vec::new(),
        };
        if input.config.iter().any(|(k, _)| k == "noop") {
            return Ok(out);
        }
        out.facts.push(fact(
            "echo.asset_id",
            FactValue::Text(input.asset.id.clone()),
        ));
        out.facts.push(fact(
            "echo.bytes",
            FactValue::Integer(input.bytes.len() as i64),
        ));
        out.facts.push(fact(
            "echo.size",
            FactValue::Integer(input.asset.size as i64),
        ));
        out.facts.push(fact(
            "echo.content_type",
            FactValue::Text(input.asset.content_type.clone()),
        ));
        out.facts.push(fact(
            "echo.input_facts",
            FactValue::Integer(input.facts.len() as i64),
        ));
        for (k, v) in &input.config {
            if let Some(name) = k.strip_prefix("fact.") {
                out.facts.push(fact(name, parse(v)));
            } else if let Some(name) = k.strip_prefix("rendition.") {
                let (w, h) = v.split_once('x').unwrap_or(("1", "1"));
                out.renditions.push(Rendition {
                    name: name.to_string(),
                    content_type: "image/png".into(),
                    width: w.parse().unwrap_or(1),
                    height: h.parse().unwrap_or(1),
                    bytes: b"\x89PNG fake".to_vec(),
                });
            } else {
                match k.as_str() {
                    "warn" => out.warnings.push(v.clone()),
                    "sleep_ms" => {
                        std::thread::sleep(std::time::Duration::from_millis(
                            v.parse().unwrap_or(0),
                        ));
                    }
                    "stderr_bytes" => {
                        let n: usize = v.parse().unwrap_or(0);
                        let line = format!("{}\n", "e".repeat(1023));
                        for _ in 0..n / 1024 {
                            eprint!("{line}");
                        }
                    }
                    "log" => log(LogLevel::Info, v),
                    "reject" => return Err(StageError::Rejected(v.clone())),
                    "fail" => return Err(StageError::Failed(v.clone())),
                    "read_env" => match std::env::var(v) {
                        Ok(val) => out
                            .facts
                            .push(fact(format!("env.{v}"), FactValue::Text(val))),
                        Err(_) => out
                            .facts
                            .push(fact(format!("env.{v}.missing"), FactValue::Boolean(true))),
                    },
                    "read_file" => match std::fs::read(v) {
                        Ok(b) => out
                            .facts
                            .push(fact("file.len", FactValue::Integer(b.len() as i64))),
                        Err(e) => out
                            .facts
                            .push(fact("file.error", FactValue::Text(e.to_string()))),
                    },
                    "write_file" => match std::fs::write(v, b"x") {
                        Ok(()) => out.facts.push(fact("write.ok", FactValue::Boolean(true))),
                        Err(e) => out
                            .facts
                            .push(fact("write.error", FactValue::Text(e.to_string()))),
                    },
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}

export!(Echo);
