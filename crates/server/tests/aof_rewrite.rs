//! Rewrite crash safety (`proto/AOF.md` section 9.2).
//!
//! A rewrite is stopped at each of its steps in turn by a hook that fails there, which leaves the
//! files exactly as a crash at that point would (the hook runs between the system calls). Loading
//! the data directory afterwards must give exactly the old state if the crash came before the
//! rename, and exactly the new one after it; the temporary file must never survive a load; and
//! the loaded file must take new writes that a further restart sees.

mod common;

use common::{del, set, touch};

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond::aof::reader::read_file;
use sessiond::aof::record::{encode_file_header, Record, Salt};
use sessiond::aof::rewrite::{finish, no_hook, write_snapshot, RewriteStep, SharedHook};
use sessiond::aof::{Aof, AofSettings, FsyncPolicy, FILE_NAME, REWRITE_FILE_NAME};
use sessiond::clock::Clock;
use sessiond::Store;
use sessiond_proto::command::{SetMode, SetOutcome};
use tempfile::TempDir;

/// 2100-01-01T00:00:00Z: a deadline every test run sees in the future.
const FAR: u64 = 4_102_444_800_000;
/// 2023-11-14T22:13:20Z: a deadline every test run sees in the past.
const PAST: u64 = 1_700_000_000_000;

/// The salt of every file these tests write. A rewrite keeps its file's salt, so the
/// snapshots they write by hand use it too.
fn salt() -> Salt {
    Salt::new(0x5e55_10d5_a17e_d000)
}

fn encode(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        record.encode(salt(), &mut out);
    }
    out
}

fn header() -> Vec<u8> {
    let mut out = Vec::new();
    encode_file_header(salt(), &mut out);
    out
}

/// The old file's history. Its highest version, 6, belongs to a key that was deleted, so only
/// a LAST_VERSION record can carry it into a rewritten file.
fn old_history() -> Vec<Record> {
    vec![
        set(b"a", b"alpha", FAR, 1),
        set(b"b", b"beta", FAR, 2),
        set(b"c", b"gamma", PAST, 3),
        set(b"d", b"delta", FAR, 4),
        touch(b"a", FAR + 1_000),
        set(b"b", b"beta 2", FAR, 5),
        set(b"f", b"phi", FAR, 6),
        del(b"f"),
        del(b"d"),
    ]
}

/// Records that arrived while the snapshot was written and that the writer had not yet
/// appended to the old file: they exist only in the rewrite's tail.
fn tail() -> Vec<Record> {
    vec![
        set(b"e", b"epsilon", FAR, 7),
        del(b"a"),
        touch(b"b", FAR + 2_000),
    ]
}

/// A store's live contents (key to value, deadline, version) and its version counter.
type State = (BTreeMap<Vec<u8>, (Vec<u8>, u64, u64)>, u64);

/// Asserts that a loaded store holds exactly `expected`'s entries and that its version
/// counter is at least `expected`'s: a load continues above the durable version reservation,
/// which is at or above the last version handed out.
#[track_caller]
fn assert_loaded(actual: State, expected: State, context: &str) {
    assert_eq!(actual.0, expected.0, "{context}");
    assert!(
        actual.1 >= expected.1,
        "{context}: the version counter is at {} after the load, below {}",
        actual.1,
        expected.1
    );
}

fn state(store: &Store) -> State {
    let entries: BTreeMap<_, _> = {
        let mut entries = BTreeMap::new();
        for shard in 0..store.shard_count() {
            store.visit_live_in_shard(shard, |key, value, expires_at_ms, version| {
                entries.insert(key.to_vec(), (value.to_vec(), expires_at_ms, version));
            });
        }
        entries
    };
    // Expired entries were dropped at load, not merely hidden.
    assert_eq!(store.len(), entries.len());
    (entries, store.last_version())
}

fn entry(
    key: &[u8],
    value: &[u8],
    expires_at_ms: u64,
    version: u64,
) -> (Vec<u8>, (Vec<u8>, u64, u64)) {
    (key.to_vec(), (value.to_vec(), expires_at_ms, version))
}

/// What the old file loads to: `c` has expired, `d` and `f` are deleted.
fn old_state() -> State {
    (
        BTreeMap::from([
            entry(b"a", b"alpha", FAR + 1_000, 1),
            entry(b"b", b"beta 2", FAR, 5),
        ]),
        6,
    )
}

/// What the rewritten file loads to: the old state followed by the tail.
fn new_state() -> State {
    (
        BTreeMap::from([
            entry(b"b", b"beta 2", FAR + 2_000, 5),
            entry(b"e", b"epsilon", FAR, 7),
        ]),
        7,
    )
}

struct DataDir {
    dir: TempDir,
}

impl DataDir {
    fn new() -> DataDir {
        DataDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self) -> PathBuf {
        self.path().join(FILE_NAME)
    }

    fn temp(&self) -> PathBuf {
        self.path().join(REWRITE_FILE_NAME)
    }

    fn settings(&self) -> AofSettings {
        AofSettings {
            dir: self.path().to_path_buf(),
            fsync: FsyncPolicy::Always,
            rewrite_min_bytes: u64::MAX,
            rewrite_growth_percent: 100,
        }
    }

    fn load(&self) -> (Store, Aof) {
        Aof::open_and_load(self.settings(), Clock::new(), false).unwrap()
    }

    /// Loads with a writer that rewrites the file once it is past 4 KiB, calling `hook` at
    /// each step of its rewrites.
    fn load_rewriting(&self, hook: SharedHook) -> (Store, Aof) {
        let settings = AofSettings {
            rewrite_min_bytes: 4096,
            ..self.settings()
        };
        Aof::open_and_load_with_hook(settings, Clock::new(), false, hook).unwrap()
    }

    fn records(&self) -> Vec<Record> {
        let mut records = Vec::new();
        let summary = read_file(&self.file(), |record| records.push(record), |_| {}).unwrap();
        assert_eq!(summary.torn_tail, None);
        records
    }
}

/// Many writes to few keys: the file grows past 4 KiB, the live state does not.
fn grow(store: &Store) {
    for i in 0..200u32 {
        let key = format!("session:{}", i % 4);
        store.set(key.as_bytes(), &i.to_be_bytes(), 3_600_000, SetMode::Upsert);
    }
}

/// Asserts that `records` are only what the writer appends of its own at a start (a version
/// reservation and the clock), none of a client's.
fn assert_only_writer_records(records: &[Record], context: &str) {
    assert!(
        records
            .iter()
            .all(|r| matches!(r, Record::LastVersion { .. } | Record::Clock { .. })),
        "{context}: records other than the writer's own were appended: {records:?}"
    );
}

/// The records of a whole file held in memory.
fn read_records(bytes: &[u8]) -> Vec<Record> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let mut records = Vec::new();
    read_file(file.path(), |record| records.push(record), |_| {}).unwrap();
    records
}

/// A hook that fails at `stop`, as a crash right after that step would stop the rewrite.
fn crash_at(stop: RewriteStep) -> impl Fn(RewriteStep) -> io::Result<()> + Sync {
    move |step| {
        if step == stop {
            Err(io::Error::other(format!("simulated crash after {step:?}")))
        } else {
            Ok(())
        }
    }
}

#[test]
fn a_crash_at_any_step_of_a_rewrite_loads_the_old_or_the_new_state() {
    let old_bytes = [header(), encode(&old_history())].concat();
    let tail_bytes = encode(&tail());
    for stop in RewriteStep::ALL {
        let data = DataDir::new();
        std::fs::write(data.file(), &old_bytes).unwrap();

        // The store the rewrite snapshots is the one the old file loads to, as in the server.
        let (store, aof) = data.load();
        assert_loaded(state(&store), old_state(), "before the rewrite");
        aof.close();
        // The old file as the load left it: the writer appends its version reservation and
        // clock records to it.
        let old_bytes = std::fs::read(data.file()).unwrap();

        let hook = crash_at(stop);
        let result = write_snapshot(data.path(), &store, salt(), &hook).and_then(|(file, len)| {
            finish(data.path(), file, len, &tail_bytes, &hook).map_err(io::Error::from)
        });
        assert!(
            result.is_err(),
            "{stop:?}: the hook did not stop the rewrite"
        );
        drop(store);

        let renamed = matches!(stop, RewriteStep::Renamed | RewriteStep::DirSynced);
        assert_eq!(data.temp().exists(), !renamed, "{stop:?}: temporary file");

        let (store, aof) = data.load();
        assert!(
            !data.temp().exists(),
            "{stop:?}: the load left the temporary file"
        );
        let on_disk = std::fs::read(data.file()).unwrap();
        if renamed {
            assert_loaded(state(&store), new_state(), &format!("{stop:?}"));
            // Header, one SET per live entry of the snapshot, LAST_VERSION, CLOCK, then the
            // tail.
            let records = data.records();
            // The reservation the loaded store held, at least the last version handed out.
            assert!(
                matches!(records[2], Record::LastVersion { version } if version >= 6),
                "{stop:?}: {:?}",
                records[2]
            );
            assert!(matches!(records[3], Record::Clock { .. }), "{stop:?}");
            assert_eq!(records[4..4 + tail().len()], tail()[..], "{stop:?}");
            assert_only_writer_records(&records[4 + tail().len()..], &format!("{stop:?}"));
        } else {
            assert_loaded(state(&store), old_state(), &format!("{stop:?}"));
            assert!(
                on_disk.starts_with(&old_bytes),
                "{stop:?}: the old file was changed"
            );
            let records = data.records();
            let old_records = read_records(&old_bytes).len();
            assert_only_writer_records(&records[old_records..], &format!("{stop:?}"));
        }

        // Whichever file was loaded takes new writes, and the next start sees them.
        let expected = state(&store);
        let version = expected.1 + 1;
        assert_eq!(
            store.set(b"after", b"x", 3_600_000, SetMode::CreateOnly),
            SetOutcome::Stored { version },
            "{stop:?}"
        );
        aof.close();
        let (store, aof) = data.load();
        let (entries, last_version) = state(&store);
        assert!(last_version >= version, "{stop:?}");
        assert_eq!(entries.len(), expected.0.len() + 1, "{stop:?}");
        assert_eq!(entries[&b"after"[..]].2, version, "{stop:?}");
        aof.close();
    }
}

#[test]
fn a_complete_rewrite_compacts_the_file_and_keeps_the_state() {
    let data = DataDir::new();
    let old_bytes = [header(), encode(&old_history())].concat();
    std::fs::write(data.file(), &old_bytes).unwrap();
    let (store, aof) = data.load();
    aof.close();
    let (file, len) = write_snapshot(data.path(), &store, salt(), &no_hook).unwrap();
    let (_, total) = finish(data.path(), file, len, &[], &no_hook).unwrap();
    assert_eq!(total, std::fs::metadata(data.file()).unwrap().len());
    assert!(total < old_bytes.len() as u64);
    assert!(!data.temp().exists());
    let (store, aof) = data.load();
    assert_loaded(state(&store), old_state(), "after the load");
    aof.close();
}

/// Regression: a rewrite used to keep no trace of versions that only deleted or expired
/// entries carried, so after a restart the server handed them out again, and a client still
/// holding one could make an if-version write against an entry it had never read.
#[test]
fn a_rewrite_keeps_versions_of_deleted_entries_from_being_handed_out_again() {
    let data = DataDir::new();
    let (store, aof) = data.load();
    let stored = |outcome| match outcome {
        SetOutcome::Stored { version } => version,
        other => panic!("{other:?}"),
    };
    stored(store.set(b"kept", b"1", 3_600_000, SetMode::Upsert));
    let deleted = stored(store.set(b"gone", b"1", 3_600_000, SetMode::Upsert));
    store.del(b"gone", None);
    aof.close();

    let (file, len) = write_snapshot(data.path(), &store, salt(), &no_hook).unwrap();
    finish(data.path(), file, len, &[], &no_hook).unwrap();

    let (store, aof) = data.load();
    assert!(store.last_version() >= deleted);
    let recreated = stored(store.set(b"gone", b"2", 3_600_000, SetMode::CreateOnly));
    assert!(
        recreated > deleted,
        "version {deleted} was handed out twice"
    );
    aof.close();
}

#[test]
fn the_writer_rewrites_a_grown_file_by_itself() {
    let data = DataDir::new();
    let (store, aof) = data.load_rewriting(Arc::new(no_hook));
    grow(&store);
    store.del(b"session:3", None);
    // The rewrite runs in the background; wait for it (it takes milliseconds; the deadline is
    // only there so that a broken writer fails the test instead of hanging it).
    let deadline = Instant::now() + Duration::from_secs(30);
    while aof.rewrites() == 0 {
        assert!(Instant::now() < deadline, "no rewrite after 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    store.set(b"session:9", b"late", 3_600_000, SetMode::Upsert);
    let expected = state(&store);
    aof.close();

    // Without compaction the file would hold every record written.
    let history = 16 + 202 * encode(&[set(b"session:0", &[0; 4], FAR, 1)]).len() as u64;
    let file_len = std::fs::metadata(data.file()).unwrap().len();
    assert!(
        file_len < history,
        "the file was not compacted: {file_len} bytes"
    );
    assert!(!data.temp().exists());
    let records = data.records();
    let snapshot_end = records
        .iter()
        .position(|r| matches!(r, Record::LastVersion { .. }))
        .expect("a rewritten file has a LAST_VERSION record");
    assert!(
        records[..snapshot_end]
            .iter()
            .all(|r| matches!(r, Record::Set { .. })),
        "a snapshot is SET records, then LAST_VERSION"
    );
    let (store, aof) = data.load();
    assert_loaded(state(&store), expected, "after the load");
    aof.close();
}

#[test]
fn a_leftover_temporary_file_is_removed_and_never_read() {
    let data = DataDir::new();
    // A rewrite that crashed, holding records the old file does not have.
    std::fs::write(data.file(), [header(), encode(&old_history())].concat()).unwrap();
    std::fs::write(data.temp(), [header(), encode(&tail())].concat()).unwrap();
    let (store, aof) = data.load();
    assert_loaded(state(&store), old_state(), "after the load");
    assert!(!data.temp().exists());
    aof.close();

    // A creation that crashed before its rename: a partial header under the temporary name.
    let data = DataDir::new();
    std::fs::write(data.temp(), &header()[..5]).unwrap();
    let (store, aof) = data.load();
    assert!(store.is_empty());
    assert!(!data.temp().exists());
    aof.close();
    // A new file of its own (with a salt of its own): a header and nothing but the writer's
    // own version reservation and clock records.
    assert!(data
        .records()
        .iter()
        .all(|r| matches!(r, Record::LastVersion { .. } | Record::Clock { .. })));
}

/// Waits (polling) until `done` holds; a bound only so that a broken writer fails the test
/// instead of hanging it.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "after 30 s: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Regression: when the directory fsync after a rewrite's rename failed, the writer went on
/// appending to the old file, which no name pointed to any more, so every later write was
/// lost at the next start without a word. It must enter the failed state (writes refused)
/// and recover by a rewrite that completes, after which everything in memory is on disk.
#[test]
fn a_rewrite_that_fails_after_its_rename_refuses_writes_until_a_rewrite_completes() {
    let data = DataDir::new();
    // Fails right after the rename, where the directory fsync happens, until cleared.
    let dir_sync_fails = Arc::new(AtomicBool::new(true));
    let hook = {
        let fails = dir_sync_fails.clone();
        move |step| {
            if step == RewriteStep::Renamed && fails.load(Ordering::SeqCst) {
                Err(io::Error::other("simulated failure of the directory fsync"))
            } else {
                Ok(())
            }
        }
    };
    let (store, aof) = data.load_rewriting(Arc::new(hook));
    grow(&store);
    wait_until("the rewrite failed", || aof.write_errors() >= 1);
    assert!(
        aof.is_failed(),
        "writes are accepted after a rewrite failed past its rename"
    );

    // Applied in memory (as a DEL while failed is, or a write that raced the failure); the
    // recovery rewrite must bring it to disk.
    store.set(b"late", b"x", 3_600_000, SetMode::Upsert);
    dir_sync_fails.store(false, Ordering::SeqCst);
    wait_until("the recovery rewrite succeeded", || !aof.is_failed());
    assert!(aof.rewrites() >= 1);
    store.set(b"after", b"y", 3_600_000, SetMode::Upsert);
    let expected = state(&store);
    aof.close();
    assert!(!data.temp().exists());

    let (store, aof) = data.load();
    assert_loaded(state(&store), expected, "after the load");
    aof.close();
}
