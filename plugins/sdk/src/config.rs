//! The stage's `config` table, with typed getters.
//!
//! pipeline.toml values arrive as text that keeps its TOML meaning: strings
//! as they are, numbers and booleans as their TOML text (`1_000`, `0.5`,
//! `true`), arrays and tables as JSON. A getter returns `Ok(None)` for an
//! absent key and a [`ConfigError`] naming the key and what was expected for
//! a malformed one.

use std::fmt::Display;
use std::ops::{Bound, RangeBounds};

/// A config value that is not what the stage expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "config key `{key}` = {value:?} is not {expected}; fix it in this stage's `config` table in pipeline.toml"
)]
pub struct ConfigError {
    /// The key, e.g. `max_pixels`.
    pub key: String,
    /// The value as it arrived.
    pub value: String,
    /// What was expected, e.g. `a whole number from 1 to 100`.
    pub expected: String,
}

/// A type a config value can be read as.
pub trait ConfigValue: Sized {
    /// What a valid value looks like, for error messages (`a whole number`).
    const EXPECTED: &'static str;
    /// Parses the value's text; `None` when it is malformed.
    fn parse(text: &str) -> Option<Self>;
}

/// TOML number text: surrounding blanks and quotes trimmed (a number given
/// as a string is accepted) and `_` digit separators removed.
fn number_text(text: &str) -> String {
    text.trim()
        .trim_matches('"')
        .chars()
        .filter(|&c| c != '_')
        .collect()
}

/// Number types: `EXPECTED` names the kind; `$ok` filters parsed values.
macro_rules! numbers {
    ($expected:literal, $ok:expr, $($t:ty),*) => {$(
        impl ConfigValue for $t {
            const EXPECTED: &'static str = $expected;
            fn parse(text: &str) -> Option<Self> {
                number_text(text).parse().ok().filter(|x: &$t| $ok(*x as f64))
            }
        }
    )*};
}
numbers!(
    "a whole number",
    |_| true,
    u8,
    u16,
    u32,
    u64,
    usize,
    i8,
    i16,
    i32,
    i64
);
// `inf` and `NaN` parse as floats; no config means them.
numbers!("a finite number", f64::is_finite, f32, f64);

impl ConfigValue for bool {
    const EXPECTED: &'static str = "true or false";
    fn parse(text: &str) -> Option<Self> {
        match text.trim().trim_matches('"') {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
}

impl ConfigValue for String {
    const EXPECTED: &'static str = "text";
    fn parse(text: &str) -> Option<Self> {
        Some(text.to_owned())
    }
}

/// The stage's config pairs, in the order pipeline.toml gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pairs: Vec<(String, String)>,
}

impl From<Vec<(String, String)>> for Config {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Config { pairs }
    }
}

impl From<&[(String, String)]> for Config {
    fn from(pairs: &[(String, String)]) -> Self {
        Config {
            pairs: pairs.to_vec(),
        }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Config {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Config {
            pairs: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl Config {
    /// Adds a pair.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.pairs.push((key.into(), value.into()));
    }

    /// All pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The raw text of `key`; when it repeats (`--config` twice), the last.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn error(&self, key: &str, value: &str, expected: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            value: value.into(),
            expected: expected.into(),
        }
    }

    /// `key` read as `T`; `Ok(None)` when absent.
    pub fn get<T: ConfigValue>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => T::parse(v)
                .map(Some)
                .ok_or_else(|| self.error(key, v, T::EXPECTED)),
        }
    }

    /// `key` read as `T`, or `default` when absent.
    pub fn get_or<T: ConfigValue>(&self, key: &str, default: T) -> Result<T, ConfigError> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// `key` read as `T` and checked against `range` (`1..`, `0..=100`).
    pub fn get_in<T, R>(&self, key: &str, range: R) -> Result<Option<T>, ConfigError>
    where
        T: ConfigValue + PartialOrd + Display,
        R: RangeBounds<T>,
    {
        let expected = || match (range.start_bound(), range.end_bound()) {
            (Bound::Included(a), Bound::Included(b)) => format!("{} from {a} to {b}", T::EXPECTED),
            (Bound::Included(a), Bound::Excluded(b)) => {
                format!("{} from {a} to below {b}", T::EXPECTED)
            }
            (Bound::Included(a), Bound::Unbounded) => format!("{} of at least {a}", T::EXPECTED),
            (Bound::Excluded(a), _) => format!("{} above {a}", T::EXPECTED),
            (Bound::Unbounded, Bound::Included(b)) => format!("{} of at most {b}", T::EXPECTED),
            (Bound::Unbounded, Bound::Excluded(b)) => format!("{} below {b}", T::EXPECTED),
            (Bound::Unbounded, Bound::Unbounded) => T::EXPECTED.to_string(),
        };
        let Some(v) = self.raw(key) else {
            return Ok(None);
        };
        match T::parse(v) {
            Some(x) if range.contains(&x) => Ok(Some(x)),
            _ => Err(self.error(key, v, expected())),
        }
    }

    /// `key` as one of `options` (quotes trimmed); `Ok(None)` when absent.
    pub fn choice<'o>(
        &self,
        key: &str,
        options: &[&'o str],
    ) -> Result<Option<&'o str>, ConfigError> {
        let Some(v) = self.raw(key) else {
            return Ok(None);
        };
        let t = v.trim().trim_matches('"');
        options
            .iter()
            .find(|o| **o == t)
            .copied()
            .map(Some)
            .ok_or_else(|| {
                let list: Vec<String> = options.iter().map(|o| format!("{o:?}")).collect();
                self.error(key, v, format!("one of {}", list.join(", ")))
            })
    }

    /// Keys not in `known`, in order, each once: for a "ignoring unknown
    /// config key" log line, which catches typos without failing the step.
    pub fn unknown_keys<'a>(&'a self, known: &[&str]) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        for (k, _) in &self.pairs {
            if !known.contains(&k.as_str()) && !out.contains(&k.as_str()) {
                out.push(k);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Config {
        pairs.iter().copied().collect()
    }

    #[test]
    fn numbers_keep_their_toml_meaning() {
        let c = cfg(&[
            ("max", "1_000"),
            ("ratio", "0.5"),
            ("on", "true"),
            ("q", "\"80\""),
        ]);
        assert_eq!(c.get::<u64>("max"), Ok(Some(1000)));
        assert_eq!(c.get::<f64>("ratio"), Ok(Some(0.5)));
        assert_eq!(c.get::<bool>("on"), Ok(Some(true)));
        assert_eq!(c.get::<u8>("q"), Ok(Some(80)));
        assert_eq!(c.get::<u64>("absent"), Ok(None));
        assert_eq!(c.get_or::<u64>("absent", 7), Ok(7));
    }

    #[test]
    fn errors_name_the_key_and_what_was_expected() {
        let c = cfg(&[
            ("max", "lots"),
            ("quality", "0"),
            ("mode", "fast"),
            ("x", "inf"),
        ]);
        let e = c.get::<u64>("max").unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.value.as_str(), e.expected.as_str()),
            ("max", "lots", "a whole number")
        );
        assert!(
            e.to_string()
                .starts_with("config key `max` = \"lots\" is not a whole number;"),
            "{e}"
        );
        let e = c.get_in::<u8, _>("quality", 1..=100).unwrap_err();
        assert_eq!(e.expected, "a whole number from 1 to 100");
        assert_eq!(
            c.get_in::<u64, _>("quality", 1..).unwrap_err().expected,
            "a whole number of at least 1"
        );
        let e = c.choice("mode", &["reject", "skip"]).unwrap_err();
        assert_eq!(e.expected, r#"one of "reject", "skip""#);
        assert_eq!(c.get::<f64>("x").unwrap_err().expected, "a finite number");
        // A config error fails the step; it does not reject the asset.
        assert!(
            matches!(crate::StageError::from(e), crate::StageError::Failed(m) if m.contains("`mode`"))
        );
    }

    #[test]
    fn the_last_repeat_wins_and_unknown_keys_are_listed_once() {
        let c = cfg(&[("a", "1"), ("b", "2"), ("a", "3"), ("b", "4")]);
        assert_eq!(c.get::<i32>("a"), Ok(Some(3)));
        assert_eq!(c.unknown_keys(&["a"]), ["b"]);
        assert_eq!(c.choice("a", &["1", "3"]), Ok(Some("3")));
    }
}
