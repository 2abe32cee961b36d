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
//! When the world changes incompatibly (say to `0.2.0`): keep the old WIT in
//! `wit/v0.1.0/pipeline.wit` and repoint `v0_1_0`'s `bindgen!` at it; add
//! `v0_2_0.rs` generated from the new `wit/pipeline.wit`; add a variant to
//! [`StagePre`] and a row to [`SUPPORTED`]. Old plugins keep running.

pub mod v0_1_0;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, Store};

use super::host_state::HostState;
use super::{AssetFacts, FactValue, StageOutput};

/// The package whose `runner` interface a stage must export.
pub const PACKAGE: &str = "lumilio:pipeline";

/// Every WIT version this host can run, newest first: (version, runner export).
pub const SUPPORTED: &[(&str, &str)] = &[(v0_1_0::VERSION, v0_1_0::RUNNER_EXPORT)];

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
    Ok(())
}

/// A stage pre-instantiated against the bindings of its WIT version.
pub enum StagePre {
    /// A stage built against `lumilio:pipeline@0.1.0`.
    V0_1_0(v0_1_0::Pre),
}

impl StagePre {
    /// Wraps `pre` in the bindings of `version` (as returned by [`detect`]),
    /// checking the exported function types.
    pub fn new(version: &str, pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        match version {
            v0_1_0::VERSION => Ok(StagePre::V0_1_0(v0_1_0::Pre::new(pre)?)),
            other => Err(wasmtime::format_err!("unsupported world version {other}")),
        }
    }

    /// The WIT version of this stage.
    pub fn version(&self) -> &'static str {
        match self {
            StagePre::V0_1_0(_) => v0_1_0::VERSION,
        }
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
        match self {
            StagePre::V0_1_0(p) => p.call(store, asset, bytes, config, facts).await,
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
