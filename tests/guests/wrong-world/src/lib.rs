//! `wrong-world`: a valid component that exports something other than
//! `lumilio:pipeline/runner` and imports an interface the host does not
//! provide, to test that `check` names both problems.

wit_bindgen::generate!({
    inline: "
        package lumilio:elsewhere@0.1.0;

        interface analyzer {
            analyze: func(data: list<u8>) -> string;
        }

        interface clock {
            now: func() -> u64;
        }

        world other {
            import clock;
            export analyzer;
        }
    ",
    world: "other",
});

use exports::lumilio::elsewhere::analyzer::Guest;

struct Wrong;

impl Guest for Wrong {
    fn analyze(data: Vec<u8>) -> String {
        format!(
            "{} bytes at {}",
            data.len(),
            lumilio::elsewhere::clock::now()
        )
    }
}

export!(Wrong);
