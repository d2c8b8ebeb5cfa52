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
use std::time::{Duration, Instant};

use sessiond::aof::reader::read_file;
use sessiond::aof::record::{encode_file_header, Record};
use sessiond::aof::rewrite::{finish, no_hook, write_snapshot, RewriteStep};
use sessiond::aof::{Aof, AofSettings, FsyncPolicy, FILE_NAME, REWRITE_FILE_NAME};
use sessiond::clock::Clock;
use sessiond::Store;
use sessiond_proto::command::{SetMode, SetOutcome};
use tempfile::TempDir;

/// 2100-01-01T00:00:00Z: a deadline every test run sees in the future.
const FAR: u64 = 4_102_444_800_000;
/// 2023-11-14T22:13:20Z: a deadline every test run sees in the past.
const PAST: u64 = 1_700_000_000_000;

fn encode(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        record.encode(&mut out);
    }
    out
}

fn header() -> Vec<u8> {
    let mut out = Vec::new();
    encode_file_header(&mut out);
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

    fn records(&self) -> Vec<Record> {
        let mut records = Vec::new();
        let summary = read_file(&self.file(), |record| records.push(record), |_| {}).unwrap();
        assert_eq!(summary.torn_tail, None);
        records
    }
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
        assert_eq!(state(&store), old_state());
        aof.close();

        let hook = crash_at(stop);
        let result = write_snapshot(data.path(), &store, &hook)
            .and_then(|(file, len)| finish(data.path(), file, len, &tail_bytes, &hook));
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
            assert_eq!(state(&store), new_state(), "{stop:?}");
            // Header, one SET per live entry of the snapshot, LAST_VERSION, then the tail.
            let records = data.records();
            assert_eq!(records[2], Record::LastVersion { version: 6 }, "{stop:?}");
            assert_eq!(records.len(), 1 + 2 + tail().len(), "{stop:?}");
            assert!(on_disk.ends_with(&tail_bytes), "{stop:?}");
        } else {
            assert_eq!(state(&store), old_state(), "{stop:?}");
            assert_eq!(on_disk, old_bytes, "{stop:?}: the old file was changed");
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
        assert_eq!(last_version, version, "{stop:?}");
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
    let (file, len) = write_snapshot(data.path(), &store, &no_hook).unwrap();
    let (_, total) = finish(data.path(), file, len, &[], &no_hook).unwrap();
    assert_eq!(total, std::fs::metadata(data.file()).unwrap().len());
    assert!(total < old_bytes.len() as u64);
    assert!(!data.temp().exists());
    let (store, aof) = data.load();
    assert_eq!(state(&store), old_state());
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

    let (file, len) = write_snapshot(data.path(), &store, &no_hook).unwrap();
    finish(data.path(), file, len, &[], &no_hook).unwrap();

    let (store, aof) = data.load();
    assert_eq!(store.last_version(), deleted);
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
    let settings = AofSettings {
        rewrite_min_bytes: 4096,
        ..data.settings()
    };
    let (store, aof) = Aof::open_and_load(settings, Clock::new(), false).unwrap();
    // Many writes to few keys: the file grows, the live state does not.
    for i in 0..200u32 {
        let key = format!("session:{}", i % 4);
        store.set(key.as_bytes(), &i.to_be_bytes(), 3_600_000, SetMode::Upsert);
    }
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
    assert_eq!(state(&store), expected);
    aof.close();
}

#[test]
fn a_leftover_temporary_file_is_removed_and_never_read() {
    let data = DataDir::new();
    // A rewrite that crashed, holding records the old file does not have.
    std::fs::write(data.file(), [header(), encode(&old_history())].concat()).unwrap();
    std::fs::write(data.temp(), [header(), encode(&tail())].concat()).unwrap();
    let (store, aof) = data.load();
    assert_eq!(state(&store), old_state());
    assert!(!data.temp().exists());
    aof.close();

    // A creation that crashed before its rename: a partial header under the temporary name.
    let data = DataDir::new();
    std::fs::write(data.temp(), &header()[..5]).unwrap();
    let (store, aof) = data.load();
    assert!(store.is_empty());
    assert!(!data.temp().exists());
    aof.close();
    assert_eq!(std::fs::read(data.file()).unwrap(), header());
}
