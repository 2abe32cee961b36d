//! Generated stage bindings, one submodule per WIT package version, behind
//! the module's plain Rust types.
//!
//! # Versioning
//!
//! Every supported version of `lumilio:pipeline` has its own submodule here,
//! named after the version (`v0_1_0` for `0.1.0`), holding the
//! `wasmtime::component::bindgen!` output for that version's `stage` world
//! and the conversions to and from [`AssetFacts`](super::AssetFacts),
//! [`FactValue`](super::FactValue) and [`Rendition`](super::Rendition).
//!
//! * **Linking.** [`add_to_linker`] adds the host imports of *every* version
//!   to the one shared `Linker`. Their names carry the version
//!   (`lumilio:pipeline/host@0.1.0`, later `...@0.2.0`), so they coexist.
//! * **Detection.** When a stage is loaded, [`detect`] looks at the names the
//!   component exports and picks the version whose runner it exports
//!   (`lumilio:pipeline/runner@0.1.0` → `v0_1_0`). Patch releases and, for
//!   `1.x` and later, minor releases are treated as compatible, as the
//!   component model's semver rules do.
//! * **Dispatch.** [`StagePre`] is an enum with one variant per version; the
//!   pipeline calls it without knowing which version it holds.
//!
//! When the world changes incompatibly (as it did to `0.2.0`): keep the old
//! WIT in `wit/vX.Y.Z/pipeline.wit` and repoint the old module's `bindgen!`
//! at it; add a module generated from the new `wit/pipeline.wit`; add a
//! variant to [`StagePre`] and a row to [`SUPPORTED`]. Old plugins keep running.

pub mod v0_1_0;
pub mod v0_2_0;

/// What reads the same in every version's module, written once: linking,
/// the pre-instantiated [`Pre`](v0_2_0::Pre) and its instantiation, the
/// `host` imports, and the conversions of facts and results. Expanded inside
/// a version's module, after its `bindgen!`, where `t` names its `types`
/// interface; the module adds only `Pre::call`, which builds its `input`.
macro_rules! version_module {
    () => {
        /// Adds this version's host imports (`lumilio:pipeline/host@VERSION`) to `linker`.
        pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
            Stage::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(linker, |s| s)
        }

        /// A stage pre-instantiated against this version's bindings.
        pub struct Pre(StagePre<HostState>);

        impl Pre {
            /// Checks the component's exports against this version's world
            /// (function names and types) and wraps it.
            pub fn new(pre: wasmtime::component::InstancePre<HostState>) -> wasmtime::Result<Self> {
                Ok(Pre(StagePre::new(pre)?))
            }

            /// A fresh instance in `store`, its instantiation time noted for the phase totals.
            async fn instantiate(&self, store: &mut wasmtime::Store<HostState>) -> wasmtime::Result<Stage> {
                let started = std::time::Instant::now();
                let instance = self.0.instantiate_async(&mut *store).await?;
                store.data_mut().instantiated_in = started.elapsed();
                Ok(instance)
            }
        }

        impl self::lumilio::pipeline::host::Host for HostState {
            fn log(&mut self, level: self::lumilio::pipeline::host::LogLevel, message: String) {
                use self::lumilio::pipeline::host::LogLevel as L;
                let level = match level {
                    L::Trace => super::LogLevel::Trace,
                    L::Debug => super::LogLevel::Debug,
                    L::Info => super::LogLevel::Info,
                    L::Warn => super::LogLevel::Warn,
                    L::Error => super::LogLevel::Error,
                };
                self.guest_log(level, &message);
            }
        }

        /// A failed read of the asset's bytes, as the error the stage fails with.
        fn read_failed(e: std::io::Error) -> wasmtime::Error {
            wasmtime::format_err!("reading the asset's bytes failed: {e}")
        }

        fn asset_to_wit(asset: &$crate::pipeline::AssetFacts) -> t::Asset<'_> {
            t::Asset {
                id: &asset.id,
                file_name: &asset.file_name,
                content_type: &asset.content_type,
                size: asset.size,
                content_hash: &asset.content_hash,
            }
        }

        fn config_to_wit(config: &[(String, String)]) -> Vec<(&str, &str)> {
            config.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
        }

        /// Earlier stages' facts as the guest receives them.
        fn facts_to_wit(facts: &[(String, $crate::pipeline::FactValue)]) -> Vec<t::FactParam<'_>> {
            facts
                .iter()
                .map(|(k, v)| t::FactParam {
                    key: k,
                    value: fact_to_wit(v),
                })
                .collect()
        }

        fn fact_to_wit(v: &$crate::pipeline::FactValue) -> t::FactValueParam<'_> {
            use $crate::pipeline::FactValue;
            match v {
                FactValue::Text(s) => t::FactValueParam::Text(s),
                FactValue::Integer(i) => t::FactValueParam::Integer(*i),
                FactValue::Float(f) => t::FactValueParam::Float(*f),
                FactValue::Boolean(b) => t::FactValueParam::Boolean(*b),
            }
        }

        fn fact_from_wit(v: t::FactValueResult) -> $crate::pipeline::FactValue {
            use $crate::pipeline::FactValue;
            match v {
                t::FactValueResult::Text(s) => FactValue::Text(s),
                t::FactValueResult::Integer(i) => FactValue::Integer(i),
                t::FactValueResult::Float(f) => FactValue::Float(f),
                t::FactValueResult::Boolean(b) => FactValue::Boolean(b),
            }
        }

        /// What `process` returned, in plain types.
        fn result_from_wit(
            result: Result<t::Output, t::StageError>,
        ) -> Result<$crate::pipeline::StageOutput, super::GuestError> {
            use super::GuestError;
            match result {
                Ok(out) => Ok($crate::pipeline::StageOutput {
                    facts: out
                        .facts
                        .into_iter()
                        .map(|f| (f.key, fact_from_wit(f.value)))
                        .collect(),
                    renditions: out
                        .renditions
                        .into_iter()
                        .map(|r| $crate::pipeline::Rendition {
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
            }
        }
    };
}
use version_module;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, Store};

use super::host_state::HostState;
use super::{AssetFacts, FactValue, StageFile, StageOutput};

/// The package whose `runner` interface a stage must export.
pub const PACKAGE: &str = "lumilio:pipeline";

/// Every WIT version this host can run, newest first: (version, runner export).
pub const SUPPORTED: &[(&str, &str)] = &[
    (v0_2_0::VERSION, v0_2_0::RUNNER_EXPORT),
    (v0_1_0::VERSION, v0_1_0::RUNNER_EXPORT),
];

/// A log level as a guest passed it, independent of the WIT version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal information.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

/// The `stage-error` a stage returned, in plain Rust types.
#[derive(Debug)]
pub enum GuestError {
    /// Bad input; do not retry.
    Rejected(String),
    /// The step broke; may retry.
    Failed(String),
}

/// Adds the host imports of every supported version to `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1_0::add_to_linker(linker)?;
    v0_2_0::add_to_linker(linker)?;
    Ok(())
}

/// A stage pre-instantiated against the bindings of its WIT version.
pub enum StagePre {
    /// A stage built against `lumilio:pipeline@0.1.0`.
    V0_1_0(v0_1_0::Pre),
    /// A stage built against `lumilio:pipeline@0.2.0`.
    V0_2_0(v0_2_0::Pre),
}

impl StagePre {
    /// Wraps `pre` in the bindings of `version` (as returned by [`detect`]),
    /// checking the exported function types.
    pub fn new(version: &str, pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        match version {
            v0_1_0::VERSION => Ok(StagePre::V0_1_0(v0_1_0::Pre::new(pre)?)),
            v0_2_0::VERSION => Ok(StagePre::V0_2_0(v0_2_0::Pre::new(pre)?)),
            other => Err(wasmtime::format_err!("unsupported world version {other}")),
        }
    }

    /// The WIT version of this stage.
    pub fn version(&self) -> &'static str {
        match self {
            StagePre::V0_1_0(_) => v0_1_0::VERSION,
            StagePre::V0_2_0(_) => v0_2_0::VERSION,
        }
    }

    /// Instantiates the stage in `store` and calls `process` once on `file`.
    pub async fn call(
        &self,
        store: &mut Store<HostState>,
        asset: &AssetFacts,
        file: &StageFile,
        config: &[(String, String)],
        facts: &[(String, FactValue)],
    ) -> wasmtime::Result<Result<StageOutput, GuestError>> {
        match self {
            StagePre::V0_1_0(p) => p.call(store, asset, file, config, facts).await,
            StagePre::V0_2_0(p) => p.call(store, asset, file, config, facts).await,
        }
    }
}

/// Splits `lumilio:pipeline/runner@0.1.0` into (`lumilio:pipeline/runner`, `0.1.0`).
fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once('@') {
        Some((base, v)) => (base, Some(v)),
        None => (name, None),
    }
}

/// Whether a component built against `have` can be run with bindings for
/// `want` (semver: same major, and same minor while major is 0).
fn compatible(have: &str, want: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let v = v.split(['-', '+']).next()?;
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parse(have), parse(want)) {
        (Some((hm, hn)), Some((wm, wn))) => hm == wm && (hm != 0 || hn == wn),
        _ => false,
    }
}

/// Finds which supported WIT version `component` implements, by the name of
/// the runner interface it exports. The error says what is missing.
pub fn detect(component: &Component, engine: &Engine) -> Result<&'static str, String> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let runner = format!("{PACKAGE}/runner");
    for name in &exports {
        let (base, version) = split_version(name);
        if base != runner {
            continue;
        }
        let Some(version) = version else { continue };
        for (supported, _) in SUPPORTED {
            if compatible(version, supported) {
                return Ok(supported);
            }
        }
        return Err(format!(
            "exports `{name}`, but this host supports only {}",
            supported_list()
        ));
    }
    let found = if exports.is_empty() {
        "nothing".to_string()
    } else {
        exports
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "does not implement world `{PACKAGE}/stage`: missing export `{}` (it exports {found})",
        SUPPORTED[0].1
    ))
}

/// Checks the component's imports for a `lumilio:pipeline/host` of a version
/// the host does not provide; other missing imports are reported by the linker.
pub fn check_imports(component: &Component, engine: &Engine) -> Result<(), String> {
    let ty = component.component_type();
    let host = format!("{PACKAGE}/host");
    for (name, _) in ty.imports(engine) {
        let (base, version) = split_version(name);
        if base == host {
            let ok = version.is_some_and(|v| SUPPORTED.iter().any(|(s, _)| compatible(v, s)));
            if !ok {
                return Err(format!(
                    "imports `{name}`, but this host provides only {}",
                    SUPPORTED
                        .iter()
                        .map(|(v, _)| format!("`{host}@{v}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    Ok(())
}

fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|(_, e)| format!("`{e}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_compat() {
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(compatible("0.1.3", "0.1.0"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(compatible("1.4.0", "1.0.0"));
        assert!(!compatible("2.0.0", "1.0.0"));
        assert_eq!(split_version("a:b/c@0.1.0"), ("a:b/c", Some("0.1.0")));
    }
}
