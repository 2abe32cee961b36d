//! Bindings for `lumilio:pipeline@0.1.0`, generated from `wit/pipeline.wit`,
//! and the conversions between them and the module's plain Rust types.
//!
//! When the WIT package is bumped incompatibly, copy `wit/pipeline.wit` as it
//! is today to `wit/v0.1.0/pipeline.wit` and point `path` below at that copy,
//! so these bindings (and every plugin built against 0.1.0) keep working.

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use super::super::host_state::HostState;
use super::super::{AssetFacts, FactValue, Rendition, StageOutput};
use super::{GuestError, LogLevel};

wasmtime::component::bindgen!({
    path: "../wit/pipeline.wit",
    world: "stage",
    // Calls are async so that a deadline can also cancel a guest blocked in
    // a WASI host call (e.g. sleeping), not only one running wasm code.
    exports: { default: async },
    // Arguments borrow the host's data, so the file is copied once, straight
    // into the guest's memory, rather than first into an owned `Vec`.
    ownership: Borrowing { duplicate_if_necessary: true },
});

/// The WIT package version these bindings speak.
pub const VERSION: &str = "0.1.0";
/// The fully qualified name of the exported interface a 0.1.0 stage has.
pub const RUNNER_EXPORT: &str = "lumilio:pipeline/runner@0.1.0";

use self::lumilio::pipeline::types as t;

impl self::lumilio::pipeline::types::Host for HostState {}

impl self::lumilio::pipeline::host::Host for HostState {
    fn log(&mut self, level: self::lumilio::pipeline::host::LogLevel, message: String) {
        use self::lumilio::pipeline::host::LogLevel as L;
        let level = match level {
            L::Trace => LogLevel::Trace,
            L::Debug => LogLevel::Debug,
            L::Info => LogLevel::Info,
            L::Warn => LogLevel::Warn,
            L::Error => LogLevel::Error,
        };
        self.guest_log(level, &message);
    }
}

/// Adds the 0.1.0 host imports (`lumilio:pipeline/host@0.1.0`) to `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    Stage::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

/// A stage pre-instantiated against the 0.1.0 bindings.
pub struct Pre(StagePre<HostState>);

impl Pre {
    /// Checks the component's exports against the 0.1.0 world (function
    /// names and types) and wraps it.
    pub fn new(pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        Ok(Pre(StagePre::new(pre)?))
    }

    /// Instantiates the stage in `store` and calls `process` once.
    pub async fn call(
        &self,
        store: &mut Store<HostState>,
        asset: &AssetFacts,
        bytes: &[u8],
        config: &[(String, String)],
        facts: &[(String, FactValue)],
    ) -> wasmtime::Result<Result<StageOutput, GuestError>> {
        let started = std::time::Instant::now();
        let instance = self.0.instantiate_async(&mut *store).await?;
        store.data_mut().instantiated_in = started.elapsed();
        let config: Vec<(&str, &str)> = config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let facts: Vec<t::FactParam<'_>> = facts
            .iter()
            .map(|(k, v)| t::FactParam {
                key: k,
                value: fact_to_wit(v),
            })
            .collect();
        let input = t::Input {
            asset: t::Asset {
                id: &asset.id,
                file_name: &asset.file_name,
                content_type: &asset.content_type,
                size: asset.size,
                content_hash: &asset.content_hash,
            },
            bytes,
            config: &config,
            facts: &facts,
        };
        let result = instance
            .lumilio_pipeline_runner()
            .call_process(&mut *store, input)
            .await?;
        Ok(match result {
            Ok(out) => Ok(StageOutput {
                facts: out
                    .facts
                    .into_iter()
                    .map(|f| (f.key, fact_from_wit(f.value)))
                    .collect(),
                renditions: out
                    .renditions
                    .into_iter()
                    .map(|r| Rendition {
                        name: r.name,
                        content_type: r.content_type,
                        width: r.width,
                        height: r.height,
                        bytes: r.bytes,
                    })
                    .collect(),
                warnings: out.warnings,
            }),
            Err(t::StageError::Rejected(reason)) => Err(GuestError::Rejected(reason)),
            Err(t::StageError::Failed(reason)) => Err(GuestError::Failed(reason)),
        })
    }
}

fn fact_to_wit(v: &FactValue) -> t::FactValueParam<'_> {
    match v {
        FactValue::Text(s) => t::FactValueParam::Text(s),
        FactValue::Integer(i) => t::FactValueParam::Integer(*i),
        FactValue::Float(f) => t::FactValueParam::Float(*f),
        FactValue::Boolean(b) => t::FactValueParam::Boolean(*b),
    }
}

fn fact_from_wit(v: t::FactValueResult) -> FactValue {
    match v {
        t::FactValueResult::Text(s) => FactValue::Text(s),
        t::FactValueResult::Integer(i) => FactValue::Integer(i),
        t::FactValueResult::Float(f) => FactValue::Float(f),
        t::FactValueResult::Boolean(b) => FactValue::Boolean(b),
    }
}
