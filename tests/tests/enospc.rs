//! End-to-end tests of a full disk: the real daemon's data directory on a 2 MiB tmpfs that a
//! filler file fills up.
//!
//! While the append-only file cannot be written, writes must be refused with
//! `PERSISTENCE_FAILED` and never answered `OK` (a `GET` with touch included), reads must be
//! served, and `STATS` must say `aof_failed 1`. Once space is freed, the writer's
//! retries (backoff from 1 s up to 10 s) rewrite the file from memory and writes resume;
//! after a restart everything acknowledged is there.
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
use sessiond_tests::{assert_error, binary, run_to_completion, set_request, Daemon, Deadline};

const HOUR_MS: u64 = 60 * 60 * 1000;

/// How long a graceful stop may take before the test calls it a hang.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes resume at the writer's next retry after space is freed: at most 10 s (the longest
/// backoff) plus the rewrite itself. A bound against a hang, with room for a loaded machine.
const RESUME_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Sessions the daemon must hold after a restart: acknowledged ones with their version,
/// and keys whose every write was refused (`None`: must be absent).
type Expected = BTreeMap<String, Option<(Vec<u8>, u64)>>;

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
    let config = format!("[aof]\nfsync = \"{fsync}\"\n");
    let mut daemon = Daemon::start_in(&config, &data_dir, &[]);
    let mut conn = daemon.connect().await;
    let mut expected = Expected::new();

    for i in 0..20 {
        let key = format!("before-{i}");
        let version = conn.put(key.as_bytes(), &value(&key), HOUR_MS).await;
        let v = value(&key);
        expected.insert(key, Some((v, version)));
    }

    let filled = fill(&filler);
    assert!(filled > 0, "the filesystem was already full");

    // Write until the daemon notices. With `everysec` the first writes after the disk filled
    // are acknowledged before the writer reaches them; with `always` only those that fit
    // into the last partly used page are. Either way, what was acknowledged must survive.
    // The write that meets the failure may or may not survive: it is not checked.
    let mut opaque_writes = 0;
    let first_refusal = loop {
        opaque_writes += 1;
        assert!(
            opaque_writes < 10_000,
            "the daemon never noticed the full disk"
        );
        let key = format!("filling-{opaque_writes}");
        let reply = conn
            .exchange(&set_request(
                key.as_bytes(),
                &value(&key),
                HOUR_MS,
                SetMode::Upsert,
            ))
            .await;
        if reply.status() == Some(Status::PersistenceFailed) {
            assert_refused(&reply, "the write that met the full disk");
            break key;
        }
        let SetOutcome::Stored { version } = SetOutcome::from_frame(&reply).unwrap() else {
            panic!("{reply:?}");
        };
        expected.insert(key.clone(), Some((value(&key), version)));
    };
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
            Request::Del(Del {
                key: Bytes::from_static(b"before-3"),
                if_version: None,
            }),
            Request::Del(Del {
                key: Bytes::from_static(b"before-4"),
                if_version: Some(version_4),
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
        GetReply::Miss => panic!("a refused DEL or TOUCH removed before-2"),
    }

    // Free the space: writes resume at the writer's next retry.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let deadline = Deadline::after(RESUME_TIMEOUT, "writes resume after space is freed");
    let resumed_version = loop {
        let reply = conn
            .exchange(&set_request(
                b"resumed",
                &value("resumed"),
                HOUR_MS,
                SetMode::Upsert,
            ))
            .await;
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
    assert!(
        stat(&stats, "aof_rewrites") >= 1,
        "recovered without a rewrite: {stats:?}"
    );

    // Every kind of write works again.
    for i in 0..10 {
        let key = format!("after-{i}");
        let version = conn.put(key.as_bytes(), &value(&key), HOUR_MS).await;
        let v = value(&key);
        expected.insert(key, Some((v, version)));
    }
    assert!(matches!(
        conn.touch(b"before-2", 2 * HOUR_MS).await,
        sessiond_proto::command::TouchReply::Touched { .. }
    ));
    assert_eq!(conn.del(b"before-3", None).await, DelOutcome::Deleted);
    expected.insert("before-3".into(), None);
    assert_eq!(
        conn.del(b"before-4", Some(version_4)).await,
        DelOutcome::Deleted
    );
    expected.insert("before-4".into(), None);
    assert_holds(&daemon, &expected).await;
    drop(conn);

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

#[tokio::test]
async fn a_full_disk_refuses_writes_until_space_is_freed_with_fsync_always() {
    writes_are_refused_while_the_disk_is_full("always").await;
}

#[tokio::test]
async fn a_full_disk_refuses_writes_until_space_is_freed_with_fsync_everysec() {
    writes_are_refused_while_the_disk_is_full("everysec").await;
}
