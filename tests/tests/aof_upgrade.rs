//! Upgrading over a data directory written before format version 2 (`proto/AOF.md` section
//! 12): the daemon loads the old file, converts it before it accepts a connection, and
//! serves the sessions it held.

use std::path::Path;
use std::time::Duration;

use sessiond_proto::command::GetReply;
use sessiond_tests::{Daemon, AOF_FILE_NAME};

const HOUR_MS: u64 = 60 * 60 * 1000;

/// A file of format version 1: the sample history of the format tests, which leaves `a`
/// (`alpha`, version 3) and `k\0\xff` (version 11) live and the version counter at 12.
fn v1_fixture() -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/server/tests/fixtures/aof/v1.aof");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn format_version(file: &[u8]) -> u32 {
    u32::from_be_bytes(file[8..12].try_into().unwrap())
}

#[tokio::test]
async fn a_version_1_file_is_converted_at_startup_and_its_sessions_served() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let old = v1_fixture();
    assert_eq!(format_version(&old), 1);
    std::fs::write(data_dir.join(AOF_FILE_NAME), &old).unwrap();

    let mut daemon = Daemon::start_in("", &data_dir, &[]);
    // Listening means loaded and converted: the file is already of version 2.
    let converted = std::fs::read(daemon.aof_path()).unwrap();
    assert_eq!(format_version(&converted), 2);
    daemon
        .wait_for_log("the conversion", |l| l.contains("converted"))
        .await;

    let mut conn = daemon.connect().await;
    match conn.get(b"a").await {
        GetReply::Hit(entry) => {
            assert_eq!(&entry.value[..], b"alpha");
            assert_eq!(entry.version, 3);
        }
        GetReply::Miss => panic!("the session of the old file was not loaded"),
    }
    assert!(matches!(conn.get(b"k\x00\xff").await, GetReply::Hit(_)));
    // Versions continue above the old file's counter.
    let version = conn.put(b"new", b"after the upgrade", HOUR_MS).await;
    assert!(version > 12, "version {version} after an old counter of 12");
    drop(conn);
    daemon.terminate(Duration::from_secs(30));

    // The converted file, with the new write appended, loads again.
    let daemon = daemon.restart();
    let mut conn = daemon.connect().await;
    assert!(matches!(conn.get(b"a").await, GetReply::Hit(_)));
    match conn.get(b"new").await {
        GetReply::Hit(entry) => assert_eq!(entry.version, version),
        GetReply::Miss => panic!("the write after the upgrade was lost"),
    }
}
