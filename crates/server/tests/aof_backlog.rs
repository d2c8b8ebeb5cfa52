//! Writers faster than the disk are slowed down instead of growing the AOF buffer without
//! bound.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sessiond::aof::rewrite::RewriteStep;
use sessiond::aof::{Aof, AofSettings, FsyncPolicy, MAX_BACKLOG_BYTES};
use sessiond::clock::Clock;
use sessiond::Store;
use sessiond_proto::command::SetMode;

/// Settings that never fsync (the disk is not what these tests measure) and rewrite from
/// `rewrite_min_bytes` on.
fn settings(dir: &Path, rewrite_min_bytes: u64) -> AofSettings {
    AofSettings {
        dir: dir.to_path_buf(),
        fsync: FsyncPolicy::No,
        rewrite_min_bytes,
        rewrite_growth_percent: 100,
    }
}

const MIB: usize = 1024 * 1024;

/// Stores `count` values of 1 MiB over 64 keys, recording as many MiB for the writer.
fn record_mebibytes(store: &Store, count: usize) {
    let value = vec![7u8; MIB];
    for i in 0..count {
        store.set(
            format!("k{}", i % 64).as_bytes(),
            &value,
            60_000,
            SetMode::Upsert,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relieve_backlog_waits_for_the_writer_to_take_what_was_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (store, aof) =
        Aof::open_and_load(settings(dir.path(), u64::MAX), Clock::new(), false).unwrap();
    // Record well past the limit from a thread that never waits, as a burst of requests
    // applied before their handlers get to `relieve_backlog` would.
    let burst = MAX_BACKLOG_BYTES / MIB * 3 / 2;
    let writer_store = store.clone();
    std::thread::spawn(move || record_mebibytes(&writer_store, burst))
        .join()
        .unwrap();
    // Whatever the backlog is now, after relieving it everything recorded has been taken.
    tokio::time::timeout(Duration::from_secs(60), aof.relieve_backlog())
        .await
        .expect("the writer never caught up");
    assert!(
        aof.backlog_bytes() <= MAX_BACKLOG_BYTES,
        "{} bytes still waiting",
        aof.backlog_bytes()
    );
    tokio::task::spawn_blocking(move || aof.close())
        .await
        .unwrap();
    let len = std::fs::metadata(dir.path().join("appendonly.aof"))
        .unwrap()
        .len();
    assert!(
        len as usize >= burst * MIB,
        "only {len} bytes reached the file"
    );
}

/// Holds the writer thread at its first rewrite switch until the test opens the gate.
#[derive(Default)]
struct Gate {
    /// (the writer has reached the switch, the gate is open)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Gate {
    fn hold_first_switch(&self, step: RewriteStep) {
        if step != RewriteStep::Switching {
            return;
        }
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        self.changed.notify_all();
        while !state.1 {
            state = self.changed.wait(state).unwrap();
        }
    }

    fn wait_reached(&self) {
        let state = self.state.lock().unwrap();
        let (_state, timeout) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(60), |s| !s.0)
            .unwrap();
        assert!(!timeout.timed_out(), "no rewrite reached its switch");
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

/// Regression: at a rewrite's switch the writer takes every record waiting for it (they go to
/// the new file with the rewrite's tail) but did not advance what `relieve_backlog` waits
/// for, nor reset the backlog count, so a connection stopped there stayed blocked until some
/// unrelated write arrived, which on a quiet server could be never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_waiting_for_the_backlog_proceeds_after_a_rewrite_switch() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), 4096);
    let gate = Arc::new(Gate::default());
    let hook = {
        let gate = gate.clone();
        move |step| {
            gate.hold_first_switch(step);
            Ok(())
        }
    };
    let (store, aof) =
        Aof::open_and_load_with_hook(settings, Clock::new(), false, Arc::new(hook)).unwrap();
    // Grow the file past the rewrite threshold; the writer starts a rewrite and stops at its
    // switch.
    for i in 0..100u32 {
        store.set(b"grow", &[i as u8; 100], 60_000, SetMode::Upsert);
    }
    let waiting = gate.clone();
    tokio::task::spawn_blocking(move || waiting.wait_reached())
        .await
        .unwrap();

    // While the writer stands at the switch, record past the backlog limit.
    let writer_store = store.clone();
    tokio::task::spawn_blocking(move || {
        record_mebibytes(&writer_store, MAX_BACKLOG_BYTES / MIB + 8)
    })
    .await
    .unwrap();
    assert!(aof.backlog_bytes() > MAX_BACKLOG_BYTES);
    let relief = tokio::spawn({
        let aof = aof.clone();
        async move { aof.relieve_backlog().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!relief.is_finished(), "relieve_backlog did not wait");

    // The switch takes every waiting record: the connection proceeds with no further write.
    gate.open();
    tokio::time::timeout(Duration::from_secs(20), relief)
        .await
        .expect("a connection stayed blocked after the rewrite switch took the backlog")
        .unwrap();
    assert!(
        aof.backlog_bytes() <= MAX_BACKLOG_BYTES,
        "{} bytes counted as waiting after the switch took them",
        aof.backlog_bytes()
    );
    assert!(aof.rewrites() >= 1);
    tokio::task::spawn_blocking(move || aof.close())
        .await
        .unwrap();
}
