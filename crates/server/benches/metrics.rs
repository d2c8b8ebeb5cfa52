//! Micro-benchmarks of what the metrics add to each request, without any network: the clock
//! reading the connection handler takes per request, and recording the request into the
//! per-thread counters and latency histogram (`sessiond::metrics::requests`).
//!
//! Compare the sum with the server's CPU time per request (`scripts/bench-metrics request`):
//! it is the part of it the metrics are responsible for.
//!
//! Run with `cargo bench -p sessiond --bench metrics`. Not run in CI.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_main, Criterion};
use sessiond::histogram::nanos;
use sessiond::metrics::{Outcome, RequestTag, Requests};

fn bench_recording(c: &mut Criterion) {
    let mut group = c.benchmark_group("per request");
    let requests = Requests::new();
    let get = RequestTag::native(0x02, "GET", Outcome::Hit, 51);
    group.bench_function("clock reading (std)", |b| {
        b.iter(|| black_box(Instant::now()))
    });
    group.bench_function("clock reading (quanta, what the server uses)", |b| {
        b.iter(|| black_box(quanta::Instant::now()))
    });
    group.bench_function("record", |b| {
        b.iter(|| requests.record(black_box(get), black_box(3_000)))
    });
    let mut started = quanta::Instant::now();
    group.bench_function("clock reading + record", |b| {
        b.iter(|| {
            let now = quanta::Instant::now();
            requests.record(
                black_box(get),
                nanos(now.saturating_duration_since(started)),
            );
            started = now;
        })
    });
    group.finish();
}

// `criterion_group!` defines a `pub fn`, which cannot carry a doc comment.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench_recording);
}
criterion_main!(group::benches);
