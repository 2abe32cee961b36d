//! Where an asset's time goes: process-wide totals per named phase (upload
//! receive, each stage's instantiate and call, storage writes, database
//! transactions, CLIP), exported on `GET /metrics` as
//! `lumilio_phase_seconds_total` and `lumilio_phase_runs_total`.
//!
//! A phase has two totals: its wall time under its name, and the CPU time it
//! used under `NAME.cpu`. Wall time alone cannot tell work from waiting (for
//! the disk, the database, or a core other tasks hold); the CPU time is what
//! issue 15 §1's breakdown asks for. [`timed`] counts this thread's CPU time
//! over each poll of the phase's future, plus that of the work it hands to
//! the blocking pool through [`spawn_blocking`] (so file I/O belongs in
//! [`blocking`] closures, not `tokio::fs`, whose hops this module cannot see).
//!
//! A leaf every module may use: it knows only names and durations, so the
//! one-way flow of data between the other modules is kept. The totals are
//! this process's own (like the CLIP dispatcher's counters), not the
//! cluster's: `make bench` reads them before and after a run and divides by
//! the photos it sent, which gives the per-photo breakdown (issue 15 §1).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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

/// CPU nanoseconds of one running [`timed`] phase.
type CpuSink = Arc<AtomicU64>;

thread_local! {
    /// The [`timed`] phases being polled on this thread, outermost first.
    static POLLING: RefCell<Vec<CpuSink>> = const { RefCell::new(Vec::new()) };
}

/// Adds this thread's CPU time since `before` to every sink.
fn charge(sinks: &[CpuSink], before: Option<Duration>) {
    if let (Some(before), Some(after)) = (before, thread_cpu()) {
        let nanos = after.saturating_sub(before).as_nanos() as u64;
        for sink in sinks {
            sink.fetch_add(nanos, Ordering::Relaxed);
        }
    }
}

/// Awaits `work`, recording its wall time under `phase` and its CPU time
/// under `phase.cpu` (see the module's overview).
pub async fn timed<T>(phase: &str, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let cpu = CpuSink::default();
    let out = CpuCounted {
        work: std::pin::pin!(work),
        cpu: &cpu,
    }
    .await;
    since(phase, started);
    record(
        &format!("{phase}.cpu"),
        Duration::from_nanos(cpu.load(Ordering::Relaxed)),
    );
    out
}

/// A future whose polls charge their CPU time to `cpu`.
struct CpuCounted<'a, F> {
    work: Pin<&'a mut F>,
    cpu: &'a CpuSink,
}

impl<F: Future> Future for CpuCounted<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        /// Pops the phase again even when the poll panics.
        struct Open;
        impl Drop for Open {
            fn drop(&mut self) {
                POLLING.with(|p| p.borrow_mut().pop());
            }
        }
        POLLING.with(|p| p.borrow_mut().push(self.cpu.clone()));
        let open = Open;
        let before = thread_cpu();
        let out = self.work.as_mut().poll(cx);
        charge(std::slice::from_ref(self.cpu), before);
        drop(open);
        out
    }
}

/// `tokio::task::spawn_blocking`, with `work`'s CPU time charged to every
/// [`timed`] phase being polled where it is spawned (they wait for it).
pub fn spawn_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let sinks = POLLING.with(|p| p.borrow().clone());
    tokio::task::spawn_blocking(move || {
        let before = thread_cpu();
        let out = work();
        charge(&sinks, before);
        out
    })
}

/// Runs `work` on the blocking pool and waits for it ([`spawn_blocking`]);
/// a panic in it resumes here.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match spawn_blocking(work).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime that is shutting down cancels queued blocking work,
        // and it drops the task waiting here first.
        Err(e) => panic!("blocking work did not run: {e}"),
    }
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

    /// Spins until this thread has used `cpu` more CPU time.
    fn burn(cpu: Duration) {
        let start = thread_cpu().unwrap();
        let t = Instant::now();
        while thread_cpu().unwrap() - start < cpu {
            std::hint::black_box(0u64);
            assert!(t.elapsed() < Duration::from_secs(20), "spinning not counted as CPU");
        }
    }

    fn total(name: &str) -> Duration {
        snapshot()
            .into_iter()
            .find(|(k, _)| k == name)
            .map_or(Duration::ZERO, |(_, t)| t.total)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_phase_counts_its_own_and_its_blocking_work_cpu_not_its_waits() {
        let (outer, inner) = ("test.cpu_outer", "test.cpu_inner");
        timed(outer, async {
            burn(Duration::from_millis(20));
            // Waiting is wall time, not CPU time.
            tokio::time::sleep(Duration::from_millis(60)).await;
            timed(inner, blocking(|| burn(Duration::from_millis(30)))).await;
        })
        .await;
        let (wall, cpu) = (total(outer), total(&format!("{outer}.cpu")));
        let inner_cpu = total(&format!("{inner}.cpu"));
        assert!(wall >= Duration::from_millis(110), "outer wall {wall:?}");
        // The inner phase's blocking work counts toward both phases.
        assert!(inner_cpu >= Duration::from_millis(30), "inner cpu {inner_cpu:?}");
        assert!(inner_cpu < Duration::from_millis(45), "inner cpu {inner_cpu:?}");
        assert!(cpu >= Duration::from_millis(50), "outer cpu {cpu:?}");
        assert!(cpu < Duration::from_millis(75), "outer cpu {cpu:?}: the sleep was counted");
        // Work spawned outside any phase is charged to none.
        blocking(|| burn(Duration::from_millis(10))).await;
        assert_eq!(total(&format!("{outer}.cpu")), cpu);
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
