//! `kill -9` during a stream of transactions, with `aof.fsync = "always"`: after each restart
//! every acknowledged transaction is whole, and no transaction, acknowledged or not, is
//! there in part.
//!
//! Each cycle, several RESP connections send `MULTI`, `SET key ID` for 2 to 4 random keys,
//! `EXEC` (each transaction pipelined in one write, with a value no other transaction
//! writes), logging when each was sent and when its `EXEC` was answered. After a random
//! delay the server is killed with transactions in flight, restarted on the same data
//! directory, and every key is read back. Keys are only ever set, never deleted.
//!
//! Requests on different connections overlap, so the judgement relies only on what real
//! time proves: a transaction acknowledged before another was sent ran first ("precedes");
//! everything from an earlier cycle precedes everything of this one.
//!
//! - Durable: for a transaction acknowledged before the kill, each of its keys holds its
//!   value or the value of a transaction that may have run after it (one that does not
//!   precede it).
//! - Whole: for a transaction whose value is on any key after the restart (so it was
//!   applied, acknowledged or not), the same holds for every one of its keys.
//!
//! A small `aof.rewrite_min_bytes` makes the server compact its file every few hundred
//! transactions, so kills also land in the middle of rewrites.
//!
//! With `SESSIOND_TESTS_REFERENCE=redis-server` the same test runs against redis-server
//! (`appendfsync always`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sessiond_tests::reference::{RespServer, ServerSettings};
use sessiond_tests::resp::{command, parse, RespConn, Value};
use sessiond_tests::seed::seed_from_env;
use sessiond_tests::{bounded, Rng, IO_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CYCLES: usize = 4;
const KEYS: usize = 8;
const CONNECTIONS: usize = 8;
/// Small, so that the append-only file is rewritten every few hundred transactions and kills
/// also land in the middle of a rewrite.
const REWRITE_MIN_BYTES: u64 = 32 * 1024;
/// Each cycle's kill comes after a random delay in this range (milliseconds).
const RUN_MS: (u64, u64) = (100, 700);
/// How long the workers may take to notice the kill and return their logs.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

fn key(i: usize) -> String {
    format!("tx:{i}")
}

/// One transaction a worker sent.
#[derive(Debug, Clone)]
struct Txn {
    id: String,
    keys: Vec<usize>,
    sent: Instant,
    /// When `EXEC` answered with every `SET` done; `None` if the connection died first.
    acknowledged: Option<Instant>,
}

impl Txn {
    /// Whether real time proves that this transaction ran before `other`.
    fn precedes(&self, other: &Txn) -> bool {
        self.acknowledged.is_some_and(|at| at < other.sent)
    }
}

/// A RESP connection to a server that is about to be killed: a write or read that fails
/// because the server is gone is an outcome, not an error, and so is a reply cut short.
struct Doomed {
    stream: TcpStream,
    buf: BytesMut,
}

impl Doomed {
    async fn connect(addr: std::net::SocketAddr) -> Doomed {
        let stream = bounded(IO_TIMEOUT, "connect", TcpStream::connect(addr))
            .await
            .expect("connect to the RESP listener");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        Doomed {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Writes `bytes`; `false` if the server is gone.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        bounded(IO_TIMEOUT, "write", self.stream.write_all(bytes))
            .await
            .is_ok()
    }

    /// The next reply; `None` if the server is gone, even in the middle of one.
    async fn recv(&mut self) -> Option<Value> {
        loop {
            if let Some(value) = parse(&mut self.buf) {
                return Some(value);
            }
            let read = bounded(IO_TIMEOUT, "read", self.stream.read_buf(&mut self.buf)).await;
            if matches!(read, Ok(0) | Err(_)) {
                return None;
            }
        }
    }
}

/// Sends transactions until the server dies; returns them all.
async fn worker(addr: std::net::SocketAddr, cycle: usize, number: usize, seed: u64) -> Vec<Txn> {
    let mut rng = Rng::new(seed);
    let mut conn = Doomed::connect(addr).await;
    let mut log = Vec::new();
    for n in 0.. {
        let id = format!("c{cycle}w{number}n{n}");
        let mut keys: Vec<usize> = Vec::new();
        let count = 2 + rng.below(3) as usize;
        while keys.len() < count {
            let k = rng.below(KEYS as u64) as usize;
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let mut bytes = command(&[b"MULTI"]);
        for &k in &keys {
            bytes.extend(command(&[b"SET", key(k).as_bytes(), id.as_bytes()]));
        }
        bytes.extend(command(&[b"EXEC"]));
        let sent = Instant::now();
        log.push(Txn {
            id: id.clone(),
            keys: keys.clone(),
            sent,
            acknowledged: None,
        });
        if !conn.send(&bytes).await {
            break;
        }
        let mut replies = Vec::new();
        for _ in 0..keys.len() + 2 {
            match conn.recv().await {
                Some(value) => replies.push(value),
                None => return log,
            }
        }
        let exec = replies.last().expect("the EXEC reply");
        let done = exec.items().len() == keys.len()
            && exec
                .items()
                .iter()
                .all(|r| *r == Value::Simple("OK".into()));
        assert!(done, "EXEC of {id}: {replies:?}");
        if let Some(txn) = log.last_mut() {
            txn.acknowledged = Some(Instant::now());
        }
    }
    log
}

/// Reads every key: which transaction's value each holds (`None`: never written).
async fn read_keys(addr: std::net::SocketAddr) -> Vec<Option<String>> {
    let mut conn = RespConn::connect(addr).await;
    let mut args = vec!["MGET".to_string()];
    args.extend((0..KEYS).map(key));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    conn.call(&args)
        .await
        .items()
        .iter()
        .map(|value| match value {
            Value::Bulk(data) => Some(String::from_utf8_lossy(data).into_owned()),
            Value::NullBulk | Value::Null => None,
            other => panic!("MGET: {other:?}"),
        })
        .collect()
}

/// Checks the keys read after a restart against this cycle's transactions (see the module
/// doc). Values of earlier cycles precede every transaction of this one.
fn judge(cycle: usize, txns: &[Txn], state: &[Option<String>]) -> Result<(), String> {
    let by_id: HashMap<&str, &Txn> = txns.iter().map(|t| (t.id.as_str(), t)).collect();
    let applied: Vec<&Txn> = state
        .iter()
        .flatten()
        .filter_map(|value| by_id.get(value.as_str()).copied())
        .collect();
    let must_be_whole = txns
        .iter()
        .filter(|t| t.acknowledged.is_some())
        .chain(applied);
    for txn in must_be_whole {
        for &k in &txn.keys {
            let holder = state[k].as_deref();
            let fine = match holder {
                Some(value) if value == txn.id => true,
                // A transaction of this cycle that may have run after `txn`.
                Some(value) => by_id.get(value).is_some_and(|other| !other.precedes(txn)),
                None => false,
            };
            if !fine {
                return Err(format!(
                    "cycle {cycle}: {} ({}) wrote {} but it holds {holder:?}, which ran \
                     before it or is from an earlier cycle",
                    txn.id,
                    if txn.acknowledged.is_some() {
                        "acknowledged"
                    } else {
                        "applied, not acknowledged"
                    },
                    key(k)
                ));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_leaves_every_transaction_whole_or_absent() {
    let seed = seed_from_env("SESSIOND_CRASH_SEED");
    let mut rng = Rng::new(seed);
    let data = tempfile::tempdir().expect("temporary directory");
    let settings = ServerSettings {
        fsync_always: true,
        rewrite_min_bytes: Some(REWRITE_MIN_BYTES),
        ..ServerSettings::default()
    };
    let mut server = RespServer::start(&settings, &data.path().join("data"));
    for cycle in 0..CYCLES {
        let addr = server.resp_addr();
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|number| tokio::spawn(worker(addr, cycle, number, rng.next_u64())))
            .collect();
        let delay = RUN_MS.0 + rng.below(RUN_MS.1 - RUN_MS.0);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill9();
        let txns: Vec<Txn> = bounded(JOIN_TIMEOUT, "the workers after the kill", async {
            let mut all = Vec::new();
            for worker in workers {
                all.extend(worker.await.expect("worker task"));
            }
            all
        })
        .await;
        server = server.restart();
        let state = read_keys(server.resp_addr()).await;
        let acknowledged = txns.iter().filter(|t| t.acknowledged.is_some()).count();
        println!(
            "{} cycle {cycle}: killed after {delay} ms; {acknowledged} of {} transactions \
             acknowledged; keys now {state:?}",
            server.name(),
            txns.len()
        );
        assert!(
            acknowledged > 0,
            "cycle {cycle}: no transaction was acknowledged"
        );
        if let Err(problem) = judge(cycle, &txns, &state) {
            panic!("{problem} (seed {seed})");
        }
    }
    server.assert_running();
}

/// The judgement itself: it must reject a transaction present on one key but not another,
/// and one overwritten by a transaction that ran before it, and accept the rest.
#[test]
fn the_judgement_rejects_partial_and_lost_transactions() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let txn = |id: &str, keys: &[usize], sent: u64, acknowledged: Option<u64>| Txn {
        id: id.to_string(),
        keys: keys.to_vec(),
        sent: at(sent),
        acknowledged: acknowledged.map(at),
    };
    let first = txn("a", &[0, 1], 0, Some(10));
    let second = txn("b", &[1, 2], 20, Some(30));
    let unacknowledged = txn("c", &[2, 3], 40, None);
    let txns = [first, second, unacknowledged];
    let state = |values: [Option<&str>; 4]| values.map(|v| v.map(str::to_string)).to_vec();
    // Whole: "b" ran after "a" and replaced its value on key 1; "c" never ran.
    assert!(judge(0, &txns, &state([Some("a"), Some("b"), Some("b"), None])).is_ok());
    // "c" ran too, whole.
    assert!(judge(
        0,
        &txns,
        &state([Some("a"), Some("b"), Some("c"), Some("c")])
    )
    .is_ok());
    // "c" in part: on key 3 but not on key 2.
    assert!(judge(
        0,
        &txns,
        &state([Some("a"), Some("b"), Some("b"), Some("c")])
    )
    .is_err());
    // "b" lost on key 2 though acknowledged.
    assert!(judge(0, &txns, &state([Some("a"), Some("b"), None, None])).is_err());
    // "a" on key 1 after "b", which "a" preceded: "b"'s write there was lost.
    assert!(judge(0, &txns, &state([Some("a"), Some("a"), Some("b"), None])).is_err());
    // A value of an earlier cycle where an acknowledged transaction wrote.
    assert!(judge(0, &txns, &state([Some("old"), Some("b"), Some("b"), None])).is_err());
}
