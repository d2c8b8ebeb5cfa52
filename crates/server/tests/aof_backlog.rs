//! Writers faster than the disk are slowed down instead of growing the AOF buffer without
//! bound.

use std::time::Duration;

use sessiond::aof::{Aof, AofSettings, FsyncPolicy, MAX_BACKLOG_BYTES};
use sessiond::clock::Clock;
use sessiond_proto::command::SetMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relieve_backlog_waits_for_the_writer_to_take_what_was_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let settings = AofSettings {
        dir: dir.path().to_path_buf(),
        fsync: FsyncPolicy::No,
        rewrite_min_bytes: u64::MAX,
        rewrite_growth_percent: 100,
    };
    let (store, aof) = Aof::open_and_load(settings, Clock::new(), false).unwrap();
    let value = vec![7u8; 1024 * 1024];
    // Record well past the limit from a thread that never waits, as a burst of requests
    // applied before their handlers get to `relieve_backlog` would.
    let burst = MAX_BACKLOG_BYTES / value.len() * 3 / 2;
    let writer_store = store.clone();
    let writes = std::thread::spawn(move || {
        for i in 0..burst {
            writer_store.set(
                format!("k{}", i % 64).as_bytes(),
                &value,
                60_000,
                SetMode::Upsert,
            );
        }
    });
    writes.join().unwrap();
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
        len as usize >= burst * 1024 * 1024,
        "only {len} bytes reached the file"
    );
}
