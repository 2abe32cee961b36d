//! `wrong-world`: a valid component that exports something other than
//! `lumilio:pipeline/runner`, to test that `check` refuses it clearly.

wit_bindgen::generate!({
    inline: "
        package lumilio:elsewhere@0.1.0;

        interface analyzer {
            analyze: func(data: list<u8>) -> string;
        }

        world other {
            export analyzer;
        }
    ",
    world: "other",
});

use exports::lumilio::elsewhere::analyzer::Guest;

struct Wrong;

impl Guest for Wrong {
    fn analyze(data: Vec<u8>) -> String {
        format!("{} bytes", data.len())
    }
}

export!(Wrong);
