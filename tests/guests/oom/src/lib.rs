//! `oom`: tries to allocate 2 GiB (in 16 MiB chunks, each touched), to test
//! that the host's memory cap stops it with an out-of-memory error.

// Built against 0.1.0 on purpose: the host must keep running such stages.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0/pipeline.wit", world: "stage" });

use exports::lumilio::pipeline::runner::Guest;
use lumilio::pipeline::types::{Fact, FactValue, Input, Output, StageError};

struct Oom;

impl Guest for Oom {
    fn process(_input: Input) -> Result<Output, StageError> {
        const CHUNK: usize = 16 << 20;
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        while chunks.len() * CHUNK < (2usize << 30) - CHUNK {
            let mut c = vec![0u8; CHUNK];
            c[CHUNK - 1] = 1;
            chunks.push(std::hint::black_box(c));
        }
        Ok(Output {
            facts: vec![Fact {
                key: "oom.allocated_chunks".into(),
                value: FactValue::Integer(chunks.len() as i64),
            }],
            renditions: Vec::new(),
            warnings: Vec::new(),
        })
    }
}

export!(Oom);
