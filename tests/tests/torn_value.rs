//! A crash while the daemon appends a SET whose value holds well-formed records must restart
//! on its own (`proto/AOF.md` section 6.2).
//!
//! Values are chosen by clients. With format version 1, a value holding the bytes of a
//! complete, checksummed record made a torn last SET look like damage in the middle of the
//! file (a "valid record" followed the damage), and startup refused until an operator ran
//! `--repair-aof`: any client could turn a crash into an outage. Version 2 frames every
//! record with a check salted by a secret of the data directory, which clients never see, so
//! no value bytes can pass for a record.
//!
//! The test embeds records of version 1 (exactly what the old reader accepted) and records
//! framed as version 2 with salts a client might guess, then kills the daemon and tears the
//! file inside the value, the way a crash in the middle of the append would.

use std::time::Duration;

use sessiond_proto::command::GetReply;
use sessiond_tests::Daemon;

// CRC-32C as `proto/AOF.md` section 5 writes it.
#[path = "../../crates/server/tests/common/spec_crc32c.rs"]
mod crc32c_spec;
use crc32c_spec::crc32c_of as crc32c;

const HOUR_MS: u64 = 60 * 60 * 1000;

/// Marks the end of the poisoned value, so the test finds it in the file without knowing how
/// records are framed.
const END_MARK: &[u8] = b"--end-of-poisoned-value--";

/// The body of a DEL record of `key`.
fn del_body(key: &[u8]) -> Vec<u8> {
    let mut body = vec![0x03];
    body.extend((key.len() as u16).to_be_bytes());
    body.extend(key);
    body
}

/// The body of a SET record.
fn set_body(key: &[u8], value: &[u8], version: u64) -> Vec<u8> {
    let mut body = vec![0x01];
    body.extend(version.to_be_bytes());
    body.extend(u64::MAX.to_be_bytes());
    body.extend((key.len() as u16).to_be_bytes());
    body.extend(key);
    body.extend((value.len() as u32).to_be_bytes());
    body.extend(value);
    body
}

/// A record as format version 1 frames it: `body_len`, CRC-32C of the body, body.
fn v1_record(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(crc32c(&[body]).to_be_bytes());
    out.extend(body);
    out
}

/// A record as format version 2 frames it, with a guessed `salt`.
fn v2_record(salt: u64, body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u32).to_be_bytes();
    let salt = salt.to_be_bytes();
    let mut out = len.to_vec();
    out.extend(crc32c(&[&salt, &len]).to_be_bytes());
    out.extend(crc32c(&[&salt, body]).to_be_bytes());
    out.extend(body);
    out
}

/// A value made of records that, replayed, would delete `victim` and plant `planted`.
fn poisoned_value(victim: &[u8], planted: &[u8]) -> Vec<u8> {
    let bodies = [del_body(victim), set_body(planted, b"forged", 1 << 40)];
    let mut value = b"prefix ".to_vec();
    for body in &bodies {
        value.extend(v1_record(body));
        for salt in [0, 1, u64::MAX, 0x5345_5353_414f_4600] {
            value.extend(v2_record(salt, body));
        }
    }
    value.extend(END_MARK);
    value
}

#[tokio::test]
async fn a_torn_set_whose_value_holds_records_restarts_without_repair() {
    let mut daemon = Daemon::start_with_config("[aof]\nfsync = \"always\"\n");
    let mut conn = daemon.connect().await;
    for i in 0..5u32 {
        conn.put(format!("k{i}").as_bytes(), b"kept", HOUR_MS).await;
    }
    let value = poisoned_value(b"k0", b"planted");
    conn.put(b"poisoned", &value, HOUR_MS).await;
    drop(conn);
    // With `always` the SET was on disk when it was acknowledged; SIGKILL flushes nothing more.
    daemon.kill9();

    // Tear the file inside the value, a few bytes before its end, as a crash in the middle of
    // the append leaves it: everything from there on is gone.
    let path = daemon.aof_path();
    let file = std::fs::read(&path).unwrap();
    let end = file
        .windows(END_MARK.len())
        .rposition(|w| w == END_MARK)
        .expect("the value is in the file")
        + END_MARK.len();
    std::fs::write(&path, &file[..end - 5]).unwrap();

    // The restart succeeds without --repair-aof (`restart` panics if the daemon exits).
    let daemon = daemon.restart();
    daemon
        .wait_for_log("the warning of the torn tail", |l| {
            l.contains("WARN") && l.contains("torn tail")
        })
        .await;
    let mut conn = daemon.connect().await;
    // The torn SET is gone; nothing inside its value was replayed.
    assert_eq!(conn.get(b"poisoned").await, GetReply::Miss);
    assert_eq!(conn.get(b"planted").await, GetReply::Miss);
    for i in 0..5u32 {
        match conn.get(format!("k{i}").as_bytes()).await {
            GetReply::Hit(entry) => assert_eq!(&entry.value[..], b"kept"),
            GetReply::Miss => panic!("k{i} was lost"),
        }
    }
    drop(conn);
    let mut daemon = daemon;
    daemon.terminate(Duration::from_secs(30));
}
