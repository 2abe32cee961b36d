//! Bindings for `lumilio:pipeline@0.1.0`, generated from `wit/v0.1.0/pipeline.wit`,
//! and the conversions between them and the module's plain Rust types.
//!
//! 0.1.0 hands every stage the whole file as `list<u8>`; plugins built
//! against it keep running beside 0.2.0 ones.

use wasmtime::Store;

use super::super::host_state::HostState;
use super::super::{AssetFacts, FactValue, StageFile};
use super::GuestError;
use crate::pipeline::StageOutput;

wasmtime::component::bindgen!({
    path: "../wit/v0.1.0/pipeline.wit",
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

impl Pre {
    /// Instantiates the stage in `store` and calls `process` once, with the
    /// whole file copied into the guest.
    pub async fn call(
        &self,
        store: &mut Store<HostState>,
        asset: &AssetFacts,
        file: &StageFile,
        config: &[(String, String)],
        facts: &[(String, FactValue)],
    ) -> wasmtime::Result<Result<StageOutput, GuestError>> {
        let instance = self.instantiate(store).await?;
        store.data_mut().bytes_read = file.len();
        let (config, facts) = (config_to_wit(config), facts_to_wit(facts));
        let input = t::Input {
            asset: asset_to_wit(asset),
            bytes: file.bytes().map_err(read_failed)?,
            config: &config,
            facts: &facts,
        };
        let result = instance
            .lumilio_pipeline_runner()
            .call_process(&mut *store, input)
            .await?;
        Ok(result_from_wit(result))
    }
}

super::version_module!();
