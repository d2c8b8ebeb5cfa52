//! Versions are never handed out twice for the life of a data directory, however the process
//! dies (PROTOCOL.md section 6.1, AOF.md section 4.6).
//!
//! Versions are visible as soon as a write is applied, before its record is durable. Under
//! fsync `everysec` a `kill -9` loses the records the writer had not yet handed to the kernel;
//! a server that resumed its counter from the highest version in the file would hand those
//! numbers out again, to different writes, and an if-version write based on a read from
//! before the crash would then succeed against data it never saw.
//!
//! The test writes from several connections as fast as they can, collects every version any
//! reply carried, kills the daemon in the middle, restarts it on the same data directory and
//! does it again; no version may ever be seen twice.

use std::collections::HashMap;
use std::time::Duration;

use sessiond_proto::command::{GetReply, SetMode, SetOutcome};
use sessiond_tests::{bounded, set_request, Conn, Daemon, Rng};

const TTL_MS: u64 = 60 * 60 * 1000;
const CONNECTIONS: usize = 4;
const PIPELINE: usize = 32;
const CYCLES: usize = 4;

/// Writes pipelined SETs on one connection until the server goes away; returns every version
/// a reply carried.
async fn write_until_killed(mut conn: Conn, worker: usize) -> Vec<u64> {
    let mut versions = Vec::new();
    let mut opaque = 0u32;
    loop {
        for i in 0..PIPELINE {
            opaque = opaque.wrapping_add(1);
            // A small key space per worker: both creates and overwrites.
            let key = format!("w{worker}-k{}", (opaque as usize + i) % 64);
            let request = set_request(key.as_bytes(), b"value", TTL_MS, SetMode::Upsert);
            if !conn.feed_lossy(request.to_frame(opaque)).await {
                return versions;
            }
        }
        if !conn.flush_lossy().await {
            return versions;
        }
        for _ in 0..PIPELINE {
            let Some(reply) = conn.recv_lossy().await else {
                return versions;
            };
            match SetOutcome::from_frame(&reply) {
                Ok(SetOutcome::Stored { version }) => versions.push(version),
                other => panic!("unexpected reply to an upsert: {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_never_reissued_after_kill9_with_fsync_everysec() {
    let mut daemon = Daemon::start_with_config("[aof]\nfsync = \"everysec\"\n");
    let mut rng = Rng::new(0x5eed_0001);
    // Every version seen, with the cycle that saw it.
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for cycle in 0..CYCLES {
        let mut workers = Vec::new();
        for worker in 0..CONNECTIONS {
            let conn = daemon.connect().await;
            workers.push(tokio::spawn(write_until_killed(conn, worker)));
        }
        tokio::time::sleep(Duration::from_millis(200 + rng.below(300))).await;
        daemon.kill9();
        let mut in_cycle = 0;
        for worker in workers {
            let versions = bounded(
                Duration::from_secs(30),
                "a writer to notice the kill",
                worker,
            )
            .await
            .expect("writer task");
            in_cycle += versions.len();
            for version in versions {
                assert_ne!(version, 0, "0 is never a version");
                if let Some(earlier) = seen.insert(version, cycle) {
                    panic!(
                        "version {version} was handed out in cycle {earlier} and again in \
                         cycle {cycle}"
                    );
                }
            }
        }
        assert!(in_cycle > 0, "cycle {cycle} wrote nothing");
        println!("cycle {cycle}: {in_cycle} versions, all new");
        daemon = daemon.restart();
    }

    // After the last restart the counter is still above everything seen, for a create and
    // for an overwrite, and a read returns a version that was seen or is new.
    let mut conn = daemon.connect().await;
    let highest = seen.keys().copied().max().unwrap_or(0);
    let created = conn.put(b"fresh", b"value", TTL_MS).await;
    assert!(created > highest, "{created} is not above {highest}");
    if let GetReply::Hit(entry) = conn.get(b"w0-k1").await {
        let overwritten = conn.put(b"w0-k1", b"again", TTL_MS).await;
        assert!(overwritten > entry.version.max(highest));
    }
}

/// Without persistence nothing survives a restart, but clients may still hold versions from
/// before it, and a session id written again afterwards must not be handed one of them.
#[tokio::test]
async fn without_persistence_a_restart_never_hands_out_an_earlier_version() {
    let mut daemon = Daemon::start_with_config("[aof]\nenabled = false\n");
    let mut conn = daemon.connect().await;
    let mut before = 0;
    for _ in 0..100 {
        before = conn.put(b"session", b"v", TTL_MS).await;
    }
    daemon.terminate(Duration::from_secs(30));
    let daemon = daemon.restart();
    let mut conn = daemon.connect().await;
    assert!(matches!(conn.get(b"session").await, GetReply::Miss));
    let after = conn.put(b"session", b"v", TTL_MS).await;
    assert!(
        after > before,
        "version {after} after the restart is not above {before} from before it"
    );
}
