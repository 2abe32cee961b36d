//! `lumilio_sdk`: the crate every Lumilio pipeline stage is written on.
//!
//! A stage is one function from [`Input`] to [`Output`] or [`StageError`],
//! registered with [`export_stage!`]:
//!
//! ```
//! use lumilio_sdk::{Fact, Input, Output, StageError, export_stage};
//!
//! fn run(input: &Input) -> Result<Output, StageError> {
//!     let min: u64 = input.config.get_or("min", 1)?;
//!     if input.asset.size < min {
//!         return Err(StageError::rejected("the file is too small"));
//!     }
//!     let magic = input.read_at(0, 4); // only these bytes are copied in
//!     Ok(Output::default()
//!         .fact(Fact::int("byte_count", input.asset.size as i64))
//!         .fact(Fact::text("magic", format!("{magic:02x?}"))))
//! }
//!
//! export_stage!(run);
//! # assert!(run(&Input::new(vec![1, 2, 3])).is_ok());
//! ```
//!
//! The bytes are read as far as a stage needs them: [`Input::bytes`] for the
//! whole file, [`Input::read_at`] for a range, nothing for a stage that
//! looks only at facts.
//!
//! The WIT bindings (world `stage` of `lumilio:pipeline@0.2.0`) are generated
//! for wasm32 only and stay private: a stage sees plain Rust types, so the
//! same `run` is called natively by unit tests and benchmarks. Pieces more
//! than one stage needs live here too: typed config getters ([`Config`]),
//! [`log`], and a JPEG segment walker ([`jpeg`]).

mod config;
pub mod jpeg;
pub mod log;
mod types;

#[cfg(target_arch = "wasm32")]
mod wit;

pub use config::{Config, ConfigError, ConfigValue};
pub use types::{Asset, Fact, Input, Output, Rendition, StageError, Value};

/// Registers `run` as the stage's entry point, like Zed's
/// `register_extension!`: `export_stage!(run);` at the crate root, where
/// `run: fn(&Input) -> Result<Output, StageError>`.
///
/// In a wasm32 build it defines the symbol the SDK's private WIT glue calls;
/// natively it only checks `run`'s signature, so the crate's tests build.
#[macro_export]
macro_rules! export_stage {
    ($run:path) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub fn __lumilio_stage_run(
            input: &$crate::Input,
        ) -> ::core::result::Result<$crate::Output, $crate::StageError> {
            $run(input)
        }

        #[cfg(not(target_arch = "wasm32"))]
        const _: fn(&$crate::Input) -> ::core::result::Result<$crate::Output, $crate::StageError> =
            $run;
    };
}
