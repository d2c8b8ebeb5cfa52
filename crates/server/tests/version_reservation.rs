//! The durable version reservation (store::versions, AOF.md section 4.6): the store hands out
//! versions only up to a ceiling whose `LAST_VERSION` record is in the file, whatever the fsync
//! policy, and a load continues above every such record.

use std::time::{Duration, Instant};

use sessiond::aof::reader::read_file;
use sessiond::aof::record::Record;
use sessiond::aof::{Aof, AofSettings, FsyncPolicy, VERSION_BLOCK};
use sessiond::clock::Clock;
use sessiond::Store;
use sessiond_proto::command::{SetMode, SetOutcome};

fn settings(dir: &std::path::Path, fsync: FsyncPolicy) -> AofSettings {
    AofSettings {
        dir: dir.to_path_buf(),
        fsync,
        rewrite_min_bytes: u64::MAX,
        rewrite_growth_percent: 100,
    }
}

/// The highest `LAST_VERSION` in the file.
fn reserved_in_file(dir: &std::path::Path) -> u64 {
    let mut highest = 0;
    read_file(
        &dir.join(sessiond::aof::FILE_NAME),
        |record| {
            if let Record::LastVersion { version } = record {
                highest = highest.max(version);
            }
        },
        |_| {},
    )
    .unwrap();
    highest
}

/// Waits until the writer has granted at least `ceiling`.
fn wait_for_grant(store: &Store, ceiling: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.version_headroom().1 < ceiling {
        assert!(
            Instant::now() < deadline,
            "no grant of {ceiling} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stored(outcome: SetOutcome) -> u64 {
    match outcome {
        SetOutcome::Stored { version } => version,
        other => panic!("{other:?}"),
    }
}

#[test]
fn versions_outrunning_the_reservation_wait_for_a_durable_one_with_every_fsync_policy() {
    for fsync in [FsyncPolicy::No, FsyncPolicy::Everysec, FsyncPolicy::Always] {
        let dir = tempfile::tempdir().unwrap();
        let (store, aof) =
            Aof::open_and_load(settings(dir.path(), fsync), Clock::new(), false).unwrap();
        // At startup the writer reserves a block before any version is handed out.
        wait_for_grant(&store, VERSION_BLOCK);
        assert!(reserved_in_file(dir.path()) >= VERSION_BLOCK, "{fsync:?}");

        // Use up the block but for a few versions (as a long run of writes would), then write
        // past its end: every version must still be covered by a record in the file.
        let (_, granted) = store.version_headroom();
        store.restore_last_version(granted - 5);
        let mut versions = Vec::new();
        for i in 0..50 {
            let key = format!("k{i}");
            versions.push(stored(store.set(
                key.as_bytes(),
                b"v",
                60_000,
                SetMode::Upsert,
            )));
        }
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{fsync:?}");
        let highest = *versions.last().unwrap();
        assert!(
            highest > granted,
            "{fsync:?}: the test did not cross the ceiling"
        );
        let (_, granted_now) = store.version_headroom();
        assert!(granted_now >= highest, "{fsync:?}");
        assert!(
            reserved_in_file(dir.path()) >= highest,
            "{fsync:?}: version {highest} was handed out before a reservation covering it \
             was in the file"
        );
        aof.close();
        drop(store);

        // A load continues above the reservation, not above the last version handed out.
        let (store, aof) =
            Aof::open_and_load(settings(dir.path(), fsync), Clock::new(), false).unwrap();
        assert!(store.last_version() >= granted_now, "{fsync:?}");
        let next = stored(store.set(b"after", b"v", 60_000, SetMode::Upsert));
        assert!(next > granted_now, "{fsync:?}");
        aof.close();
    }
}

#[test]
fn a_rewrite_keeps_the_reservation_the_old_file_had() {
    let dir = tempfile::tempdir().unwrap();
    let (store, aof) = Aof::open_and_load(
        settings(dir.path(), FsyncPolicy::Everysec),
        Clock::new(),
        false,
    )
    .unwrap();
    wait_for_grant(&store, VERSION_BLOCK);
    let (_, granted) = store.version_headroom();
    stored(store.set(b"k", b"v", 60_000, SetMode::Upsert));
    aof.close();
    let (file, len) = sessiond::aof::rewrite::write_snapshot(
        dir.path(),
        &store,
        salt_of(dir.path()),
        &sessiond::aof::rewrite::no_hook,
    )
    .unwrap();
    sessiond::aof::rewrite::finish(dir.path(), file, len, &[], &sessiond::aof::rewrite::no_hook)
        .unwrap();
    // The snapshot dropped the old reservation records but carries the ceiling, although
    // only version 1 was handed out.
    assert!(reserved_in_file(dir.path()) >= granted);
}

/// The salt in a file's header.
fn salt_of(dir: &std::path::Path) -> sessiond::aof::record::Salt {
    let bytes = std::fs::read(dir.join(sessiond::aof::FILE_NAME)).unwrap();
    let header = &bytes[..sessiond::aof::record::FILE_HEADER_LEN];
    sessiond::aof::record::Salt::new(u64::from_be_bytes(header[16..24].try_into().unwrap()))
}
