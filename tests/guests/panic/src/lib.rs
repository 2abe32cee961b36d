//! `panic`: panics with a known message, to test that the host reports it.

// Built against 0.1.0 on purpose: the host must keep running such stages.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0/pipeline.wit", world: "stage" });

use exports::lumilio::pipeline::runner::Guest;
use lumilio::pipeline::types::{Input, Output, StageError};

/// The message the tests look for.
pub const MESSAGE: &str = "guest gave up: the bytes are cursed";

struct Panic;

impl Guest for Panic {
    fn process(_input: Input) -> Result<Output, StageError> {
        panic!("{}", MESSAGE);
    }
}

export!(Panic);
