//! Measuring the host's per-call overhead (for `make bench`). Not part of
//! the library's API: built for tests and behind the `bench` feature, which
//! only the `bench/` crate enables.

use std::time::{Duration, Instant};

use super::{AssetFacts, Pipeline, StageFile};

/// Average wall-clock time of one call of the pipeline's first stage: a fresh
/// `Store`, `instantiate` from its `InstancePre`, and the `process` call, with
/// an empty asset. With a stage that returns at once (the test guest `echo`
/// with `config = { noop = "1" }`) this is the host's overhead per stage call.
/// Blocks; call it from a plain thread, not from async code.
pub fn call_overhead(pipeline: &Pipeline, iterations: u32) -> Duration {
    let inner = &pipeline.inner;
    let stage = inner.stages.first().expect("the pipeline has no stages");
    let asset = AssetFacts {
        id: "bench".into(),
        file_name: "bench.bin".into(),
        content_type: "application/octet-stream".into(),
        size: 0,
        content_hash: String::new(),
    };
    let empty = StageFile::new(std::sync::Arc::from(&[][..]));
    let iterations = iterations.max(1);
    super::run::block_on(async {
        // Warm up the pooling allocator's slots and caches.
        for _ in 0..iterations.min(50) {
            let _ = inner.runtime.call(stage, &asset, &empty, &[]).await;
        }
        let started = Instant::now();
        for _ in 0..iterations {
            let r = inner.runtime.call(stage, &asset, &empty, &[]).await;
            assert!(r.outcome.is_ok(), "the benchmark stage failed");
        }
        started.elapsed() / iterations
    })
}
