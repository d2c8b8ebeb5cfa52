//! Micro-benchmarks of the store and the AOF record encoder, without any network.
//!
//! The store holds 100,000 entries with 51-byte keys (`session:` and a 43-digit id, as
//! `sessiond-bench` writes them) and 1 KiB values, the shape of the default load-generator
//! workload. Operations visit the keys in a fixed scattered order, so consecutive operations
//! touch different shards, as concurrent clients would:
//!
//! - `get` (plain read), `get+touch` (read and slide the deadline: the session workload's
//!   read), `set upsert` (overwrite an existing entry), `set if-version` (the versioned write,
//!   always with the current version, so it always succeeds);
//! - `sweep step`: one step of the expiry sweep (one lock hold, up to 256 buckets) when
//!   nothing has expired, the steady-state cost the sweep adds every tick; and a full sweep
//!   cycle reclaiming 100,000 entries that have all expired, the cost of a mass expiry;
//! - `aof encode`: what [`MutationSink::record`](sessiond::store::MutationSink) does per write
//!   under the shard lock: encoding a SET (1 KiB), TOUCH or DEL record.
//!
//! Run with `cargo bench -p sessiond --bench store`. Not run in CI: timings on a shared
//! machine say nothing, and the build alone (under `cargo clippy --all-targets`) keeps the
//! code compiling.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, BatchSize, Criterion};
use sessiond::aof::record::{encode_mutation, encode_set, Salt};
use sessiond::store::sweep::SweepCursor;
use sessiond::store::{Expiry, Mutation};
use sessiond::Store;
use sessiond_proto::command::{SetMode, SetOutcome};

/// The daemon's allocator, so allocation costs (value copies on write) match the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENTRIES: usize = 100_000;
const VALUE_LEN: usize = 1024;
const TTL_MS: u64 = 30 * 60 * 1000;
/// Step through the keys by a prime, so consecutive operations land on unrelated shards.
const STRIDE: usize = 7919;

fn keys() -> Vec<Vec<u8>> {
    (0..ENTRIES)
        .map(|i| format!("session:{i:0>43}").into_bytes())
        .collect()
}

fn value() -> Vec<u8> {
    (0..VALUE_LEN).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A store holding every key in `keys` with `expiry`; returns it with each key's version.
fn filled(keys: &[Vec<u8>], value: &[u8], expiry: Expiry) -> (Store, Vec<u64>) {
    let store = Store::new();
    let versions = keys
        .iter()
        .map(
            |key| match store.set_with(key, value, expiry, SetMode::Upsert) {
                SetOutcome::Stored { version } => version,
                _ => 0,
            },
        )
        .collect();
    (store, versions)
}

/// Cycles through `0..ENTRIES` in the scattered order.
struct KeyOrder(usize);

impl KeyOrder {
    fn next(&mut self) -> usize {
        self.0 = (self.0 + STRIDE) % ENTRIES;
        self.0
    }
}

fn bench_operations(c: &mut Criterion) {
    let keys = keys();
    let value = value();
    let (store, mut versions) = filled(&keys, &value, Expiry::In(TTL_MS));
    let mut order = KeyOrder(0);

    let mut group = c.benchmark_group("store 100k x 1KiB");
    group.bench_function("get", |b| {
        b.iter(|| black_box(store.get(&keys[order.next()], None)))
    });
    group.bench_function("get+touch", |b| {
        b.iter(|| black_box(store.get(&keys[order.next()], Some(TTL_MS))))
    });
    group.bench_function("set upsert", |b| {
        b.iter(|| black_box(store.set(&keys[order.next()], &value, TTL_MS, SetMode::Upsert)))
    });
    // Versions changed under the upserts above: read them back before the versioned writes.
    for (key, version) in keys.iter().zip(versions.iter_mut()) {
        if let sessiond_proto::command::GetReply::Hit(entry) = store.get(key, None) {
            *version = entry.version;
        }
    }
    group.bench_function("set if-version", |b| {
        b.iter(|| {
            let i = order.next();
            let outcome = store.set(&keys[i], &value, TTL_MS, SetMode::IfVersion(versions[i]));
            if let SetOutcome::Stored { version } = outcome {
                versions[i] = version;
            }
            black_box(outcome)
        })
    });
    group.finish();
}

fn bench_sweep(c: &mut Criterion) {
    let keys = keys();
    let value = value();
    let (live, _) = filled(&keys, &value, Expiry::In(TTL_MS));
    let mut group = c.benchmark_group("sweep 100k x 1KiB");
    let mut cursor = SweepCursor::default();
    // A zero budget stops after one lock hold: exactly one step.
    group.bench_function("step, nothing expired", |b| {
        b.iter(|| black_box(live.sweep(&mut cursor, Duration::ZERO)))
    });
    drop(live);

    // Every entry's deadline (Unix ms 1) has long passed; one full cycle reclaims them all.
    // Building the store is the setup and is not timed; freeing the entries is.
    group.sample_size(10);
    group.bench_function("full cycle, all expired", |b| {
        b.iter_batched(
            || filled(&keys, &value, Expiry::At(1)).0,
            |store| {
                let mut cursor = SweepCursor::default();
                black_box(store.sweep(&mut cursor, Duration::MAX))
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn bench_aof_encoder(c: &mut Criterion) {
    let key = format!("session:{:0>43}", 12345).into_bytes();
    let value = value();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let salt = Salt::new(0x0123_4567_89ab_cdef);
    let mut group = c.benchmark_group("aof encode");
    group.bench_function("SET 1KiB", |b| {
        b.iter(|| {
            buf.clear();
            encode_set(
                black_box(&key),
                &value,
                1_700_000_000_000,
                42,
                salt,
                &mut buf,
            );
            black_box(buf.len())
        })
    });
    group.bench_function("TOUCH", |b| {
        b.iter(|| {
            buf.clear();
            let touch = Mutation::Touch {
                key: black_box(&key),
                expires_at_ms: 1_700_000_000_000,
            };
            encode_mutation(&touch, salt, &mut buf);
            black_box(buf.len())
        })
    });
    group.bench_function("DEL", |b| {
        b.iter(|| {
            buf.clear();
            encode_mutation(
                &Mutation::Del {
                    key: black_box(&key),
                },
                salt,
                &mut buf,
            );
            black_box(buf.len())
        })
    });
    group.finish();
}

// `criterion_group!` defines a `pub fn`, which cannot carry a doc comment.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(
        benches,
        super::bench_operations,
        super::bench_sweep,
        super::bench_aof_encoder
    );
}
criterion_main!(group::benches);
