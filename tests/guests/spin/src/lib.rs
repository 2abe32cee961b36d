//! `spin`: loops forever, to test that the host's deadline stops it.

// Built against 0.1.0 on purpose: the host must keep running such stages.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0/pipeline.wit", world: "stage" });

use exports::lumilio::pipeline::runner::Guest;
use lumilio::pipeline::types::{Input, Output, StageError};

struct Spin;

impl Guest for Spin {
    fn process(input: Input) -> Result<Output, StageError> {
        let mut x: u64 = input.bytes.len() as u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

export!(Spin);
