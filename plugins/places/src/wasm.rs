//! Thin WIT glue: converts generated types to and from [`crate::stage`] and
//! calls [`crate::run`]. Compiled for wasm32 only.

wit_bindgen::generate!({ path: "../../wit", world: "stage" });

use crate::stage;
use exports::lumilio::pipeline::runner::Guest;
use lumilio::pipeline::host::{LogLevel, log};
use lumilio::pipeline::types::{Fact, FactValue, Input, Output, StageError};

struct Component;

impl Guest for Component {
    fn process(input: Input) -> Result<Output, StageError> {
        let facts: Vec<stage::Fact> = input.facts.into_iter().map(from_wit).collect();
        let plain = stage::Input {
            claimed_type: &input.asset.content_type,
            bytes: &input.bytes,
            config: &input.config,
            facts: &facts,
        };
        match crate::run(&plain) {
            Ok(out) => {
                for line in &out.log {
                    log(LogLevel::Info, line);
                }
                Ok(Output {
                    facts: out.facts.into_iter().map(to_wit).collect(),
                    renditions: Vec::new(),
                    warnings: out.warnings,
                })
            }
            Err(stage::StageError::Rejected(m)) => Err(StageError::Rejected(m)),
            Err(stage::StageError::Failed(m)) => Err(StageError::Failed(m)),
        }
    }
}

fn from_wit(f: Fact) -> stage::Fact {
    let value = match f.value {
        FactValue::Text(s) => stage::Value::Text(s),
        FactValue::Integer(i) => stage::Value::Integer(i),
        FactValue::Float(x) => stage::Value::Float(x),
        FactValue::Boolean(b) => stage::Value::Boolean(b),
    };
    stage::Fact { key: f.key, value }
}

fn to_wit(f: stage::Fact) -> Fact {
    let value = match f.value {
        stage::Value::Text(s) => FactValue::Text(s),
        stage::Value::Integer(i) => FactValue::Integer(i),
        stage::Value::Float(x) => FactValue::Float(x),
        stage::Value::Boolean(b) => FactValue::Boolean(b),
    };
    Fact { key: f.key, value }
}

export!(Component);
