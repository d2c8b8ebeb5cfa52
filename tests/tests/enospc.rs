//! End-to-end tests of a full disk: the real daemon's data directory on a 2 MiB tmpfs that a
//! filler file fills up.
//!
//! While the append-only file cannot be written, writes must be refused with
//! `PERSISTENCE_FAILED` and never answered `OK` (a `GET` with touch included), reads must be
//! served, and `STATS` must say `aof_failed 1`. A `DEL` (a logout) is applied at once but
//! answered `PERSISTENCE_FAILED` until the file recovers, natively and over RESP. Once space
//! is freed, the writer's next retry (every 0.5 s) appends the records kept since the
//! failure and writes resume, even when the room freed is far less than a snapshot of the
//! data would need; after a restart everything acknowledged, and every deletion, is there.
//!
//! Mounting needs root. Without it the tests fail, loudly, unless
//! `SESSIOND_TESTS_ALLOW_MISSING=1` is set, in which case they print why and pass.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sessiond_proto::command::{Del, DelOutcome, GetReply, SetMode, SetOutcome, StatsReply, Touch};
use sessiond_proto::{Request, ResponseFrame, Status};
use sessiond_tests::resp::RespConn;
use sessiond_tests::{
    assert_error, binary, run_to_completion, set_request, Conn, Daemon, Deadline,
};

const HOUR_MS: u64 = 60 * 60 * 1000;

/// How long a graceful stop may take before the test calls it a hang.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound against a hang in the slow steps (a recovery attempt failing on the full disk),
/// with room for a loaded machine.
const RESUME_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes resume at the writer's next append retry after space is freed (every 0.5 s): this is
/// a couple of retry intervals, with room for a loaded machine. A recovery that needed a
/// whole snapshot's room would never get there on a disk freed by a few records.
const APPEND_RESUME_TIMEOUT: Duration = Duration::from_secs(3);

/// The config of the daemons here: `fsync` as given, and a RESP listener.
fn config(fsync: &str) -> String {
    format!("[aof]\nfsync = \"{fsync}\"\n\n[resp]\nlisten = \"127.0.0.1:0\"\n")
}

/// A tmpfs mounted on a fresh temporary directory; unmounted when dropped, also when the
/// test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `2m`), or says why it cannot.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`mount -t tmpfs -o size={size} tmpfs {}` failed ({}): {}",
                dir.path().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.dir.path();
        let unmounted = Command::new("umount")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        // A process still holding a file open makes the mount busy: detach it anyway, so
        // that no test leaves a mount behind.
        if !unmounted {
            let lazy = Command::new("umount").arg("-l").arg(path).status();
            if !lazy.is_ok_and(|s| s.success()) {
                eprintln!("WARNING: could not unmount the tmpfs at {}", path.display());
            }
        }
    }
}

/// A 2 MiB filesystem for the test, or `None` (after saying why) if it cannot be had and
/// `SESSIOND_TESTS_ALLOW_MISSING=1` allows skipping. Panics otherwise.
fn tiny_filesystem(test: &str) -> Option<Tmpfs> {
    match Tmpfs::mount("2m") {
        Ok(fs) => Some(fs),
        Err(reason) => {
            let message = format!(
                "{test} needs a 2 MiB tmpfs to fill, which needs root (or CAP_SYS_ADMIN): {reason}"
            );
            if std::env::var("SESSIOND_TESTS_ALLOW_MISSING").as_deref() == Ok("1") {
                eprintln!("SKIPPED {message} (SESSIOND_TESTS_ALLOW_MISSING=1)");
                None
            } else {
                panic!(
                    "{message}\nRun the tests as root, or set SESSIOND_TESTS_ALLOW_MISSING=1 to skip them."
                );
            }
        }
    }
}

/// Fills the filesystem holding `path` with a file at `path`; returns its size.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => size += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    size
}

fn stat(stats: &StatsReply, name: &str) -> u64 {
    stats
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("stat {name} missing or not a number: {stats:?}"))
}

fn value(key: &str) -> Vec<u8> {
    // About 1 KiB, so that a few dozen sessions are a measurable part of 2 MiB.
    format!("{key}:{}", "s".repeat(1000)).into_bytes()
}

/// An upsert of `key` with its [`value`], for an hour.
fn put_request(key: &str) -> Request {
    set_request(key.as_bytes(), &value(key), HOUR_MS, SetMode::Upsert)
}

/// Sessions the daemon must hold after a restart: acknowledged ones with their version,
/// and keys whose every write was refused (`None`: must be absent).
type Expected = BTreeMap<String, Option<(Vec<u8>, u64)>>;

/// Stores sessions `{prefix}-0` .. `{prefix}-{n-1}`, each acknowledged.
async fn put_sessions(conn: &mut Conn, prefix: &str, n: usize, expected: &mut Expected) {
    for i in 0..n {
        let key = format!("{prefix}-{i}");
        let version = conn.put(key.as_bytes(), &value(&key), HOUR_MS).await;
        let v = value(&key);
        expected.insert(key, Some((v, version)));
    }
}

/// Writes new sessions until the daemon notices the full disk; returns the refused key.
///
/// With `everysec` the first writes after the disk filled are acknowledged before the writer
/// reaches them; with `always` only those that fit into the last partly used page are.
/// Either way, what was acknowledged must survive. The write that meets the failure may or
/// may not survive: it is not checked.
async fn write_until_refused(conn: &mut Conn, expected: &mut Expected) -> String {
    for attempt in 1..10_000 {
        let key = format!("filling-{attempt}");
        let reply = conn.exchange(&put_request(&key)).await;
        if reply.status() == Some(Status::PersistenceFailed) {
            assert_refused(&reply, "the write that met the full disk");
            return key;
        }
        let SetOutcome::Stored { version } = SetOutcome::from_frame(&reply).unwrap() else {
            panic!("{reply:?}");
        };
        expected.insert(key.clone(), Some((value(&key), version)));
    }
    panic!("the daemon never noticed the full disk");
}

/// Asserts that a write was refused because of the disk, not answered.
fn assert_refused(reply: &ResponseFrame, what: &str) {
    assert_eq!(
        reply.status(),
        Some(Status::PersistenceFailed),
        "{what} while the disk is full: {reply:?}"
    );
    assert_error(reply, Status::PersistenceFailed);
}

async fn assert_holds(daemon: &Daemon, expected: &Expected) {
    let mut conn = daemon.connect().await;
    for (key, want) in expected {
        let got = match conn.get(key.as_bytes()).await {
            GetReply::Hit(entry) => Some((entry.value.to_vec(), entry.version)),
            GetReply::Miss => None,
        };
        assert!(got == *want, "{key}: expected {want:?}, got {got:?}");
    }
}

async fn writes_are_refused_while_the_disk_is_full(fsync: &str) {
    let test = format!("the full-disk test with fsync = {fsync}");
    // Declared first, so it is dropped (unmounted) after the daemon has been killed.
    let Some(fs) = tiny_filesystem(&test) else {
        return;
    };
    let data_dir = fs.path().join("data");
    let filler: PathBuf = fs.path().join("filler");
    let mut daemon = Daemon::start_in(&config(fsync), &data_dir, &[]);
    let mut conn = daemon.connect().await;
    let mut expected = Expected::new();

    put_sessions(&mut conn, "before", 20, &mut expected).await;
    let filled = fill(&filler);
    assert!(filled > 0, "the filesystem was already full");
    let first_refusal = write_until_refused(&mut conn, &mut expected).await;
    println!("{test}: the write of {first_refusal} was refused");

    // Failed: the state is visible.
    let mut stats = conn.stats().await;
    let deadline = Deadline::after(Duration::from_secs(10), "STATS shows aof_failed 1");
    while stat(&stats, "aof_failed") != 1 {
        deadline.tick().await;
        stats = conn.stats().await;
    }
    let errors_at_failure = stat(&stats, "aof_write_errors");
    assert!(errors_at_failure >= 1, "{stats:?}");

    // Reads are served, and a GET with touch is served as a plain GET.
    for i in 0..20 {
        let key = format!("before-{i}");
        match conn.get(key.as_bytes()).await {
            GetReply::Hit(entry) => {
                assert_eq!(Some((entry.value.to_vec(), entry.version)), expected[&key])
            }
            GetReply::Miss => panic!("{key} cannot be read while the disk is full"),
        }
    }
    // A GET with touch is a write: it is refused, not served as a plain GET that a client
    // would take for an extended session (regression: it answered OK with the old TTL).
    let reply = conn
        .exchange(&Request::Get(sessiond_proto::command::Get {
            key: Bytes::from_static(b"before-0"),
            touch_ttl_ms: Some(5 * HOUR_MS),
        }))
        .await;
    assert_refused(&reply, "GET with touch");
    match conn.get(b"before-0").await {
        GetReply::Hit(entry) => assert!(
            entry.ttl_ms <= HOUR_MS,
            "the refused touch extended the TTL to {} ms",
            entry.ttl_ms
        ),
        GetReply::Miss => panic!("before-0 is missing"),
    }

    // Every kind of write is refused, and keeps being refused until at least one of the
    // writer's recovery attempts (after 1 s, then 2 s, ...) has failed on the full disk.
    let version_1 = expected["before-1"].as_ref().unwrap().1;
    let version_4 = expected["before-4"].as_ref().unwrap().1;
    let mut opaque = 0u32;
    let deadline = Deadline::after(
        RESUME_TIMEOUT,
        "a recovery attempt fails on the full disk (aof_write_errors grows)",
    );
    let mut round = 0;
    loop {
        round += 1;
        let key = format!("refused-{round}");
        let writes = [
            set_request(key.as_bytes(), b"new", HOUR_MS, SetMode::Upsert),
            set_request(key.as_bytes(), b"new", HOUR_MS, SetMode::CreateOnly),
            set_request(
                b"before-1",
                b"changed",
                HOUR_MS,
                SetMode::IfVersion(version_1),
            ),
            set_request(b"before-1", b"changed", HOUR_MS, SetMode::UpdateOnly),
            Request::Touch(Touch {
                key: Bytes::from_static(b"before-2"),
                ttl_ms: 5 * HOUR_MS,
            }),
        ];
        for write in writes {
            opaque += 1;
            let reply = conn.call(write.to_frame(opaque)).await;
            assert_refused(&reply, &format!("{write:?}"));
        }
        expected.insert(key, None);
        let stats = conn.stats().await;
        assert_eq!(stat(&stats, "aof_failed"), 1, "{stats:?}");
        if round >= 5 && stat(&stats, "aof_write_errors") > errors_at_failure {
            break;
        }
        deadline.tick().await;
    }
    match conn.get(b"before-2").await {
        GetReply::Hit(entry) => assert!(entry.ttl_ms <= HOUR_MS, "a refused TOUCH applied"),
        GetReply::Miss => panic!("a refused TOUCH removed before-2"),
    }

    // A logout is applied at once, but never reported durable while it is not.
    let mut resp = daemon.resp_connect().await;
    logouts_apply_but_are_not_acknowledged(&mut conn, &mut resp, &mut expected, version_4).await;

    // Free the space: writes resume at the writer's next retry.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let deadline = Deadline::after(RESUME_TIMEOUT, "writes resume after space is freed");
    let resumed_version = loop {
        let reply = conn.exchange(&put_request("resumed")).await;
        match reply.status() {
            Some(Status::Ok) => match SetOutcome::from_frame(&reply).unwrap() {
                SetOutcome::Stored { version } => break version,
                other => panic!("{other:?}"),
            },
            _ => assert_refused(&reply, "a write before the recovery"),
        }
        deadline.tick().await;
    };
    println!(
        "{test}: writes resumed {} ms after space was freed",
        freed.elapsed().as_millis()
    );
    expected.insert("resumed".into(), Some((value("resumed"), resumed_version)));
    let stats = conn.stats().await;
    assert_eq!(stat(&stats, "aof_failed"), 0, "{stats:?}");
    // Recovered by appending what was kept, not by a rewrite.
    assert_eq!(stat(&stats, "aof_rewrites"), 0, "{stats:?}");
    logouts_are_durable_after_recovery(&mut conn, &mut resp).await;

    // Every kind of write works again.
    put_sessions(&mut conn, "after", 10, &mut expected).await;
    assert!(matches!(
        conn.touch(b"before-2", 2 * HOUR_MS).await,
        sessiond_proto::command::TouchReply::Touched { .. }
    ));
    assert_eq!(conn.del(b"before-6", None).await, DelOutcome::Deleted);
    expected.insert("before-6".into(), None);
    assert_holds(&daemon, &expected).await;
    drop(conn);
    drop(resp);

    // After a restart everything acknowledged is there. With `always` a crash must not
    // lose it; with `everysec` a graceful stop flushes it.
    if fsync == "always" {
        daemon.kill9();
    } else {
        daemon.terminate(STOP_TIMEOUT);
    }
    let mut daemon = daemon.restart();
    assert_holds(&daemon, &expected).await;
    let stats = daemon.stats().await;
    assert_eq!(stat(&stats, "aof_failed"), 0);
    daemon.assert_no_panic();

    daemon.terminate(STOP_TIMEOUT);
    let check = run_to_completion(
        &binary("sessiond"),
        &[
            "check-aof".to_string(),
            daemon.aof_path().display().to_string(),
        ],
        Duration::from_secs(30),
    );
    assert!(
        check.status.success(),
        "the recovered file is not valid: {check:?}"
    );
    drop(daemon);
    drop(fs);
}

/// While the file is failed: a native DEL (plain, and at a version) and a RESP DEL remove
/// the session at once, yet are answered `PERSISTENCE_FAILED` / `MISCONF`, also when retried
/// on the now absent key.
async fn logouts_apply_but_are_not_acknowledged(
    conn: &mut Conn,
    resp: &mut RespConn,
    expected: &mut Expected,
    version_4: u64,
) {
    let dels = [
        ("before-3", None),
        ("before-4", Some(version_4)),
        // Retried: the key is gone, and the deletion is still not durable.
        ("before-3", None),
    ];
    for (i, (key, if_version)) in dels.into_iter().enumerate() {
        let del = Request::Del(Del {
            key: Bytes::copy_from_slice(key.as_bytes()),
            if_version,
        });
        let reply = conn.call(del.to_frame(9_000 + i as u32)).await;
        assert_refused(&reply, &format!("DEL {key} {if_version:?}"));
        assert_eq!(
            conn.get(key.as_bytes()).await,
            GetReply::Miss,
            "{key} still works after its DEL while the disk is full"
        );
        expected.insert(key.into(), None);
    }
    for _ in 0..2 {
        let reply = resp.call(&["DEL", "before-5"]).await;
        assert!(
            reply.is_error("MISCONF"),
            "RESP DEL while failed: {reply:?}"
        );
        assert_eq!(resp.call(&["EXISTS", "before-5"]).await.int(), 0);
    }
    expected.insert("before-5".into(), None);
}

/// Once the file has recovered, the deletions made while it was failed are durable: a retry
/// answers `NOT_FOUND` (natively) and 0 (RESP), not an error.
async fn logouts_are_durable_after_recovery(conn: &mut Conn, resp: &mut RespConn) {
    assert_eq!(conn.del(b"before-3", None).await, DelOutcome::NotFound);
    assert_eq!(conn.del(b"before-4", None).await, DelOutcome::NotFound);
    assert_eq!(resp.call(&["DEL", "before-5"]).await.int(), 0);
}

#[tokio::test]
async fn a_full_disk_refuses_writes_until_space_is_freed_with_fsync_always() {
    writes_are_refused_while_the_disk_is_full("always").await;
}

#[tokio::test]
async fn a_full_disk_refuses_writes_until_space_is_freed_with_fsync_everysec() {
    writes_are_refused_while_the_disk_is_full("everysec").await;
}

/// Regression: recovering from a full disk used to need room for a whole snapshot of the
/// data (a rewrite from memory), so on a disk where a little room came back writes stayed
/// refused for as long as the data did not fit twice. Now the records kept since the failure
/// are appended as soon as they fit.
#[tokio::test]
async fn writes_resume_when_a_few_records_fit_though_a_snapshot_does_not() {
    let test = "the partly freed disk test";
    let Some(fs) = tiny_filesystem(test) else {
        return;
    };
    let data_dir = fs.path().join("data");
    let filler: PathBuf = fs.path().join("filler");
    let mut daemon = Daemon::start_in(&config("always"), &data_dir, &[]);
    let mut conn = daemon.connect().await;
    let mut expected = Expected::new();

    // About 400 KiB of live data: a snapshot needs that much room.
    put_sessions(&mut conn, "live", 400, &mut expected).await;
    let filled = fill(&filler);
    assert!(filled > 0, "the filesystem was already full");
    write_until_refused(&mut conn, &mut expected).await;
    let stats = conn.stats().await;
    assert_eq!(stat(&stats, "aof_failed"), 1, "{stats:?}");

    // Free 32 KiB: room for the record that met the full disk and a handful more, and less
    // than a tenth of a snapshot.
    let filler_file = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    filler_file.set_len(filled - 32 * 1024).unwrap();
    drop(filler_file);
    let freed = Instant::now();
    let deadline = Deadline::after(
        APPEND_RESUME_TIMEOUT,
        "writes resume once a few records fit",
    );
    let mut round = 0;
    loop {
        round += 1;
        let key = format!("resumed-{round}");
        let reply = conn.exchange(&put_request(&key)).await;
        if reply.status() == Some(Status::Ok) {
            let SetOutcome::Stored { version } = SetOutcome::from_frame(&reply).unwrap() else {
                panic!("{reply:?}");
            };
            expected.insert(key.clone(), Some((value(&key), version)));
            break;
        }
        assert_refused(&reply, "a write before the recovery");
        expected.insert(key, None);
        deadline.tick().await;
    }
    println!(
        "{test}: writes resumed {} ms after 32 KiB were freed",
        freed.elapsed().as_millis()
    );
    let stats = conn.stats().await;
    assert_eq!(stat(&stats, "aof_failed"), 0, "{stats:?}");
    assert_eq!(stat(&stats, "aof_rewrites"), 0, "{stats:?}");

    // A few more fit.
    put_sessions(&mut conn, "after", 5, &mut expected).await;
    drop(conn);

    // Acknowledged under `always`: a crash loses none of it.
    daemon.kill9();
    std::fs::remove_file(&filler).unwrap();
    let mut daemon = daemon.restart();
    assert_holds(&daemon, &expected).await;
    daemon.assert_no_panic();
    daemon.terminate(STOP_TIMEOUT);
    drop(daemon);
    drop(fs);
}
