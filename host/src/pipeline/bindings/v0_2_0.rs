//! Bindings for `lumilio:pipeline@0.2.0`, generated from `wit/pipeline.wit`,
//! and the conversions between them and the module's plain Rust types.
//!
//! 0.2.0 hands a stage a `file` resource instead of the file's bytes: the
//! guest asks for the ranges it needs (`file.read`), so a stage that checks
//! a header, or reads no bytes at all, costs no copy of a large file.

use wasmtime::Store;
use wasmtime::component::Resource;

use super::super::host_state::HostState;
use super::super::{AssetFacts, FactValue, StageFile};
use super::GuestError;
use crate::pipeline::StageOutput;

wasmtime::component::bindgen!({
    path: "../wit/pipeline.wit",
    world: "stage",
    // Calls are async so that a deadline can also cancel a guest blocked in
    // a WASI host call (e.g. sleeping), not only one running wasm code.
    exports: { default: async },
    // A handle the guest forged or already dropped traps the guest.
    imports: { "lumilio:pipeline/types.[method]file.read": trappable },
    with: { "lumilio:pipeline/types.file": crate::pipeline::StageFile },
    ownership: Borrowing { duplicate_if_necessary: true },
});

/// The WIT package version these bindings speak.
pub const VERSION: &str = "0.2.0";
/// The fully qualified name of the exported interface a 0.2.0 stage has.
pub const RUNNER_EXPORT: &str = "lumilio:pipeline/runner@0.2.0";

use self::lumilio::pipeline::types as t;

impl t::Host for HostState {}

impl t::HostFile for HostState {
    fn read(
        &mut self,
        file: Resource<StageFile>,
        offset: u64,
        len: u32,
    ) -> wasmtime::Result<Vec<u8>> {
        let bytes = self
            .file(&file)?
            .read(offset, len.into())
            .map_err(read_failed)?;
        self.bytes_read += bytes.len() as u64;
        Ok(bytes)
    }

    fn drop(&mut self, file: Resource<StageFile>) -> wasmtime::Result<()> {
        self.drop_file(file)
    }
}

impl Pre {
    /// Instantiates the stage in `store` and calls `process` once, with a
    /// `file` the guest reads the bytes through.
    pub async fn call(
        &self,
        store: &mut Store<HostState>,
        asset: &AssetFacts,
        file: &StageFile,
        config: &[(String, String)],
        facts: &[(String, FactValue)],
    ) -> wasmtime::Result<Result<StageOutput, GuestError>> {
        let instance = self.instantiate(store).await?;
        let handle = store.data_mut().push_file(file.clone())?;
        let (config, facts) = (config_to_wit(config), facts_to_wit(facts));
        let input = t::Input {
            asset: asset_to_wit(asset),
            config: &config,
            facts: &facts,
        };
        let result = instance
            .lumilio_pipeline_runner()
            .call_process(&mut *store, input, handle)
            .await?;
        Ok(result_from_wit(result))
    }
}

super::version_module!();
