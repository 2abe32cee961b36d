//! `lumilio plugin new`: writes a plugin crate on the SDK (a stage with a
//! native unit test, a README, and a one-stage pipeline.toml for trying it)
//! from the templates in `scaffold/`.

use std::path::{Path, PathBuf};

/// The SDK of the checkout this binary was built from.
const DEFAULT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");

const LIB_RS: &str = include_str!("scaffold/lib.rs.tmpl");
const CARGO_TOML: &str = include_str!("scaffold/Cargo.toml.tmpl");
const CARGO_TOML_MEMBER: &str = include_str!("scaffold/Cargo.member.toml.tmpl");
const CARGO_CONFIG: &str = include_str!("scaffold/cargo-config.toml.tmpl");
const PIPELINE_TOML: &str = include_str!("scaffold/pipeline.toml.tmpl");
const README_MD: &str = include_str!("scaffold/README.md.tmpl");

/// Why the crate was not written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a crate and stage name.
    #[error(
        "invalid plugin name {0:?}: use 1 to 64 lower-case letters, digits, '-' or '_', starting with a letter (it names the crate and the stage)"
    )]
    BadName(String),
    /// The target folder already has files.
    #[error("{0} already exists and is not empty: choose another --dir, or remove it first")]
    NotEmpty(PathBuf),
    /// No SDK crate where it was looked for.
    #[error(
        "the plugin SDK was not found at {0} (no Cargo.toml of lumilio-plugin-sdk there): pass --sdk PATH to plugins/sdk of a Lumilio checkout"
    )]
    SdkMissing(PathBuf),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What was written.
#[derive(Debug)]
pub struct Scaffold {
    /// The crate's folder.
    pub dir: PathBuf,
    /// The component cargo will build, relative to `dir`.
    pub component: String,
    /// Whether the crate is a member of the SDK's own workspace.
    pub member: bool,
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=64).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |source| ScaffoldError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes the crate `name` into `dir` (default `./NAME`), depending on the
/// SDK at `sdk` (default: this checkout's `plugins/sdk`). A `dir` directly
/// inside the SDK's `plugins/` folder becomes a member of that workspace;
/// anywhere else the crate is a workspace of its own.
pub fn new_plugin(
    name: &str,
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> Result<Scaffold, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    let sdk = sdk.unwrap_or(Path::new(DEFAULT_SDK));
    let sdk = std::fs::canonicalize(sdk)
        .ok()
        .filter(|p| {
            std::fs::read_to_string(p.join("Cargo.toml"))
                .is_ok_and(|t| t.contains("name = \"lumilio-plugin-sdk\""))
        })
        .ok_or_else(|| ScaffoldError::SdkMissing(sdk.to_owned()))?;
    let dir = dir
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from(name));
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ScaffoldError::NotEmpty(dir));
    }
    std::fs::create_dir_all(dir.join("src")).map_err(io(&dir))?;
    let abs = std::fs::canonicalize(&dir).map_err(io(&dir))?;
    let member = abs.parent() == sdk.parent();
    let crate_name = name.replace('-', "_");
    let target = if member { "../../target" } else { "target" };
    let sdk_toml = toml::Value::String(sdk.display().to_string()).to_string();
    let sdk_note = if member {
        "`../sdk`, as a member of the Lumilio workspace".to_owned()
    } else {
        format!("`{}` in the Lumilio checkout", sdk.display())
    };
    let render = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{target}}", target)
            .replace("{{sdk}}", &sdk_toml)
            .replace("{{sdk_note}}", &sdk_note)
    };
    let mut files = vec![
        ("src/lib.rs", LIB_RS),
        ("README.md", README_MD),
        ("pipeline.toml", PIPELINE_TOML),
        (
            "Cargo.toml",
            if member {
                CARGO_TOML_MEMBER
            } else {
                CARGO_TOML
            },
        ),
    ];
    if !member {
        // A member gets these from the Lumilio workspace.
        files.push((".cargo/config.toml", CARGO_CONFIG));
        files.push((".gitignore", "/target\n"));
    }
    for (rel, template) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, render(template)).map_err(io(&path))?;
    }
    Ok(Scaffold {
        dir,
        component: format!("{target}/wasm32-wasip2/release/{crate_name}.wasm"),
        member,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_crate_and_stage_names() {
        for ok in ["tagger", "byte-count", "places_2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Tagger",
            "2fast",
            "-x",
            "a b",
            "a/b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn refuses_a_missing_sdk_and_a_used_folder() {
        let tmp = std::env::temp_dir().join(format!("lumilio-scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let e = new_plugin("x", Some(&tmp.join("x")), Some(&tmp.join("nowhere"))).unwrap_err();
        assert!(matches!(e, ScaffoldError::SdkMissing(_)), "{e}");
        std::fs::create_dir_all(tmp.join("used")).unwrap();
        std::fs::write(tmp.join("used/file"), "").unwrap();
        let e = new_plugin("x", Some(&tmp.join("used")), None).unwrap_err();
        assert!(
            e.to_string().contains("already exists and is not empty"),
            "{e}"
        );
        let s = new_plugin("x", Some(&tmp.join("x")), None).unwrap();
        assert!(!s.member);
        let toml = std::fs::read_to_string(tmp.join("x/Cargo.toml")).unwrap();
        assert!(
            toml.contains("[workspace]") && toml.contains("plugins/sdk"),
            "{toml}"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
