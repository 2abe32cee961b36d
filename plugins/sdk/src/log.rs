//! Lines for the host's log (not shown to users; warnings are).
//!
//! In a component, each line goes to the host's `log` import, which tags it
//! with the stage and asset. Natively (unit tests, benchmarks) there is no
//! host: lines are printed to stderr, which the test harness captures, and
//! kept on the calling thread until [`take`] drains them, so a test can
//! assert on what a stage logged.

/// How important a line is (WIT `log-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Detail for debugging a stage.
    Debug,
    /// Normal operation.
    Info,
    /// Something odd that did not stop the stage.
    Warn,
    /// Something broke.
    Error,
}

impl Level {
    /// The level's lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Writes one line to the host's log.
pub fn log(level: Level, message: impl AsRef<str>) {
    let message = message.as_ref();
    #[cfg(target_arch = "wasm32")]
    crate::wit::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    native::record(level, message);
}

/// [`log`] at [`Level::Debug`].
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message)
}

/// [`log`] at [`Level::Info`].
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message)
}

/// [`log`] at [`Level::Warn`].
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message)
}

/// [`log`] at [`Level::Error`].
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message)
}

/// Natively: the lines logged on this thread since the last call, oldest
/// first. In a component: always empty (the host has them).
pub fn take() -> Vec<(Level, String)> {
    #[cfg(not(target_arch = "wasm32"))]
    return native::LINES.with(|l| std::mem::take(&mut *l.borrow_mut()));
    #[cfg(target_arch = "wasm32")]
    Vec::new()
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::Level;
    use std::cell::RefCell;

    /// Bound on kept lines, so a fuzz loop that never calls `take` stays small.
    const KEEP: usize = 1000;

    thread_local! {
        pub(super) static LINES: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn record(level: Level, message: &str) {
        eprintln!("[{}] {message}", level.as_str());
        LINES.with(|l| {
            let mut l = l.borrow_mut();
            if l.len() >= KEEP {
                l.remove(0);
            }
            l.push((level, message.to_owned()));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_lines_are_kept_until_taken() {
        let _ = take();
        info("one");
        warn(String::from("two"));
        assert_eq!(
            take(),
            [
                (Level::Info, "one".to_string()),
                (Level::Warn, "two".to_string())
            ]
        );
        assert!(take().is_empty());
    }
}
