//! Where an asset's time goes: process-wide totals per named phase (upload
//! receive, each stage's instantiate and call, storage writes, database
//! transactions, CLIP), exported on `GET /metrics` as
//! `lumilio_phase_seconds_total` and `lumilio_phase_runs_total`.
//!
//! A leaf every module may use: it knows only names and durations, so the
//! one-way flow of data between the other modules is kept. The totals are
//! this process's own (like the CLIP dispatcher's counters), not the
//! cluster's: `make bench` reads them before and after a run and divides by
//! the photos it sent, which gives the per-photo breakdown (issue 15 §1).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Running totals of one phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTotal {
    /// How many times the phase ran.
    pub runs: u64,
    /// Their summed duration.
    pub total: Duration,
}

static PHASES: Mutex<BTreeMap<String, PhaseTotal>> = Mutex::new(BTreeMap::new());

/// Adds one run of `phase` that took `took`.
pub fn record(phase: &str, took: Duration) {
    let mut phases = PHASES.lock().unwrap_or_else(|p| p.into_inner());
    // Look up before inserting, so the steady state allocates nothing.
    if let Some(t) = phases.get_mut(phase) {
        t.runs += 1;
        t.total += took;
    } else {
        phases.insert(phase.to_owned(), PhaseTotal { runs: 1, total: took });
    }
}

/// Records the time since `started` under `phase`, and returns it.
pub fn since(phase: &str, started: Instant) -> Duration {
    let took = started.elapsed();
    record(phase, took);
    took
}

/// Awaits `work`, recording how long it took under `phase`.
pub async fn timed<T>(phase: &str, work: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = work.await;
    since(phase, started);
    out
}

/// Every phase's totals so far, sorted by name.
pub fn snapshot() -> Vec<(String, PhaseTotal)> {
    let phases = PHASES.lock().unwrap_or_else(|p| p.into_inner());
    phases.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

/// CPU time this thread has used so far (user + system), where the platform
/// tells; for stage calls, which run on one blocking thread from start to end.
pub fn thread_cpu() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the call's duration.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_per_phase() {
        let name = "test.totals_add_up";
        record(name, Duration::from_millis(3));
        record(name, Duration::from_millis(4));
        let got = snapshot().into_iter().find(|(k, _)| k == name).unwrap().1;
        assert_eq!(got, PhaseTotal { runs: 2, total: Duration::from_millis(7) });
    }

    #[test]
    fn thread_cpu_moves_with_work_not_with_sleep() {
        let a = thread_cpu().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let b = thread_cpu().unwrap();
        assert!(b - a < Duration::from_millis(15), "sleeping counted as CPU: {:?}", b - a);
        // Spin until this thread's clock moves 20 ms; a clock that does not
        // move with work never gets there (a busy machine only makes it slower).
        let t = Instant::now();
        while thread_cpu().unwrap() - b < Duration::from_millis(20) {
            std::hint::black_box(0u64);
            assert!(t.elapsed() < Duration::from_secs(20), "spinning not counted as CPU");
        }
    }
}
