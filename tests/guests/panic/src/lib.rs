//! `panic`: panics with a known message, to test that the host reports it.

wit_bindgen::generate!({ path: "../../../wit/pipeline.wit", world: "stage" });

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
