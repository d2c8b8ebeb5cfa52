//! Transactions against a model, under concurrency: several RESP connections run random
//! `MULTI`/`EXEC` transactions over a small key set while others read every key at once,
//! and the test checks that every `EXEC` applied all of its writes or none, and that no
//! reader ever saw a state between two transactions' writes.
//!
//! How the order is known: every writing transaction starts with `SET order ID GET`, which
//! stores its own id in the key `order` and returns the id of the transaction that ran just
//! before it. The replies link every committed transaction to its predecessor, so the
//! server's serial order is a single chain from the empty store, and replaying the chain
//! gives the model's state after each transaction. A reader that reads `order` together with
//! the data keys, atomically, must see exactly the model's state after the transaction
//! `order` names: one missing write, or one write of a later transaction, is a partial state.
//!
//! Writers: each transaction is 1 to 5 `SET key ID` / `DEL key` in random order (keys may
//! repeat), sometimes with a command that fails when `EXEC` runs it (`EXPIRE key
//! not-a-number`: Redis reports it in its place and runs the others), and sometimes after a
//! `WATCH` of a key it read (`EXEC` then applies nothing if another writer changed it).
//!
//! One transaction in five runs as a Lua script (`EVAL`) doing the same writes instead: it
//! must be just as atomic with respect to `EXEC`, and joins the same chain.
//!
//! Readers, four ways to read several keys atomically: `MGET` inside `MULTI`/`EXEC`; one
//! `GET` per key inside `MULTI`/`EXEC`; a script that returns `MGET` of its keys; and `WATCH`
//! every key, `MGET`, then an empty `MULTI`/`EXEC` that succeeds only if no key changed
//! meanwhile, which proves that the `MGET` saw one state.
//!
//! With `SESSIOND_TESTS_REFERENCE=redis-server` the same test runs against redis-server.
//! `SESSIOND_MODEL_SEED` replays a run.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sessiond_tests::reference::{RespServer, ServerSettings};
use sessiond_tests::resp::{RespConn, Value};
use sessiond_tests::seed::seed_from_env;
use sessiond_tests::{bounded, Rng};

/// The data keys; few, so that transactions collide often.
const KEYS: usize = 6;
/// The key that links each transaction to the one before it.
const ORDER: &str = "order";
const WRITERS: usize = 4;
const TRANSACTIONS_PER_WRITER: usize = 400;
const READERS: usize = 3;
/// How long the whole run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn key(i: usize) -> String {
    format!("k{i}")
}

/// One write of a transaction: the key and its new value (`None`: deleted).
type Write = (usize, Option<String>);

/// A transaction whose `EXEC` ran its commands.
#[derive(Debug, Clone)]
struct Committed {
    id: String,
    /// The id `SET order ID GET` returned: the transaction just before this one.
    predecessor: Option<String>,
    /// In the order they ran.
    writes: Vec<Write>,
}

/// What a writer did.
#[derive(Debug, Default)]
struct WriterLog {
    committed: Vec<Committed>,
    /// Transactions whose `EXEC` answered null (a watched key had changed).
    aborted: Vec<String>,
}

/// What a reader saw: the value of `order`, then each data key's.
type Snapshot = (Option<String>, Vec<Option<String>>);

/// A state of the data keys.
type State = Vec<Option<String>>;

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Bulk(data) => Some(String::from_utf8_lossy(data).into_owned()),
        Value::NullBulk | Value::Null => None,
        other => panic!("expected a bulk string or null, got {other:?}"),
    }
}

/// Whether an `EXEC` reply says that a watched key changed: null, which is the null array
/// `*-1` in RESP2 (not the null bulk string `$-1`), as Redis sends it.
fn aborted(exec: &Value) -> bool {
    matches!(exec, Value::NullArray | Value::Null)
}

fn expect_ok(value: &Value, what: &str) {
    assert_eq!(value, &Value::Simple("OK".into()), "{what}");
}

fn expect_queued(value: &Value, what: &str) {
    assert_eq!(value, &Value::Simple("QUEUED".into()), "{what}");
}

/// Sends every command of `commands` in one write, then reads one reply for each.
async fn pipeline(conn: &mut RespConn, commands: &[Vec<String>]) -> Vec<Value> {
    let mut bytes = Vec::new();
    for command in commands {
        let args: Vec<&[u8]> = command.iter().map(|a| a.as_bytes()).collect();
        bytes.extend_from_slice(&sessiond_tests::resp::command(&args));
    }
    conn.send_raw(&bytes).await;
    let mut replies = Vec::with_capacity(commands.len());
    for command in commands {
        let reply = conn.recv().await;
        replies.push(reply.unwrap_or_else(|| panic!("connection closed before {command:?}")));
    }
    replies
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

async fn writer(mut conn: RespConn, number: usize, mut rng: Rng) -> WriterLog {
    let mut log = WriterLog::default();
    for t in 0..TRANSACTIONS_PER_WRITER {
        let id = format!("w{number}t{t}");
        // Optimistic locking on one key, as Redis.transaction() does: WATCH, read, then the
        // transaction, which must not run if the key changed in between.
        let watched = rng.below(10) < 3;
        if watched {
            let watched_key = key(rng.below(KEYS as u64) as usize);
            expect_ok(&conn.call(&["WATCH", &watched_key]).await, "WATCH");
            text(&conn.call(&["GET", &watched_key]).await);
        }
        let mut commands = vec![strings(&["MULTI"]), strings(&["SET", ORDER, &id, "GET"])];
        let mut writes = Vec::new();
        for _ in 0..1 + rng.below(5) {
            let k = rng.below(KEYS as u64) as usize;
            if rng.below(5) == 0 {
                commands.push(strings(&["DEL", &key(k)]));
                writes.push((k, None));
            } else {
                commands.push(strings(&["SET", &key(k), &id]));
                writes.push((k, Some(id.clone())));
            }
        }
        // Some transactions are scripts instead: they must be atomic with respect to EXEC
        // just the same.
        if !watched && rng.below(5) == 0 {
            let predecessor = scripted_transaction(&mut conn, &id, &writes).await;
            log.committed.push(Committed {
                predecessor,
                id,
                writes,
            });
            continue;
        }
        let failing = rng.below(10) == 0;
        if failing {
            let at = 2 + rng.below((commands.len() - 1) as u64) as usize;
            let k = key(rng.below(KEYS as u64) as usize);
            commands.insert(at, strings(&["EXPIRE", &k, "not-a-number"]));
        }
        commands.push(strings(&["EXEC"]));
        let replies = pipeline(&mut conn, &commands).await;
        expect_ok(&replies[0], "MULTI");
        for (reply, command) in replies[1..replies.len() - 1].iter().zip(&commands[1..]) {
            expect_queued(reply, &format!("{command:?}"));
        }
        let exec = replies.last().expect("the EXEC reply");
        let results = match exec {
            null if watched && aborted(null) => {
                log.aborted.push(id);
                continue;
            }
            Value::Array(results) => results,
            other => panic!("EXEC of {id}: {other:?}"),
        };
        assert_eq!(results.len(), commands.len() - 2, "EXEC of {id}: {exec:?}");
        for (result, command) in results.iter().zip(&commands[1..]) {
            match command[0].as_str() {
                "SET" if command[1] == ORDER => {}
                "SET" => expect_ok(result, &format!("{id}: {command:?}")),
                "DEL" => assert!(matches!(result, Value::Integer(0 | 1)), "{result:?}"),
                _ => assert!(result.is_error("ERR"), "{id}: {command:?} -> {result:?}"),
            }
        }
        log.committed.push(Committed {
            predecessor: text(&results[0]),
            id,
            writes,
        });
    }
    log
}

/// What a transaction does, as one Lua script: `SET order ID GET`, then each write
/// (`ARGV[i]` empty: `DEL`); returns the previous value of `order`.
const TRANSACTION_SCRIPT: &str = "local previous = redis.call('SET', KEYS[1], ARGV[1], 'GET') \
     for i = 2, #KEYS do \
       if ARGV[i] == '' then redis.call('DEL', KEYS[i]) \
       else redis.call('SET', KEYS[i], ARGV[i]) end \
     end \
     return previous";

/// Runs the transaction `id` with `writes` as a script (`EVAL`), declaring `order` and every
/// key it writes; returns the id of the transaction before it.
async fn scripted_transaction(conn: &mut RespConn, id: &str, writes: &[Write]) -> Option<String> {
    let numkeys = (writes.len() + 1).to_string();
    let mut args = vec!["EVAL", TRANSACTION_SCRIPT, &numkeys, ORDER];
    let names: Vec<String> = writes.iter().map(|(k, _)| key(*k)).collect();
    args.extend(names.iter().map(String::as_str));
    args.push(id);
    args.extend(
        writes
            .iter()
            .map(|(_, value)| value.as_deref().unwrap_or("")),
    );
    text(&conn.call(&args).await)
}

/// Reads `order` and every data key atomically, in one of the four ways (see the module
/// doc); `None` when the `WATCH` way saw a change and must be retried.
async fn read_all(conn: &mut RespConn, way: u64) -> Option<Snapshot> {
    let mut names = vec![ORDER.to_string()];
    names.extend((0..KEYS).map(key));
    let mut mget = vec!["MGET".to_string()];
    mget.extend(names.iter().cloned());
    let values: Vec<Value> = match way {
        0 => {
            let replies = pipeline(conn, &[strings(&["MULTI"]), mget, strings(&["EXEC"])]).await;
            replies[2].items()[0].items().to_vec()
        }
        1 => {
            let mut commands = vec![strings(&["MULTI"])];
            commands.extend(names.iter().map(|name| strings(&["GET", name])));
            commands.push(strings(&["EXEC"]));
            let replies = pipeline(conn, &commands).await;
            replies.last().expect("EXEC").items().to_vec()
        }
        2 => {
            let numkeys = names.len().to_string();
            let mut args = vec!["EVAL", "return redis.call('MGET', unpack(KEYS))", &numkeys];
            args.extend(names.iter().map(String::as_str));
            conn.call(&args).await.items().to_vec()
        }
        _ => {
            let mut watch = vec!["WATCH".to_string()];
            watch.extend(names.iter().cloned());
            let commands = [watch, mget, strings(&["MULTI"]), strings(&["EXEC"])];
            let replies = pipeline(conn, &commands).await;
            match &replies[3] {
                null if aborted(null) => return None,
                Value::Array(empty) if empty.is_empty() => {}
                other => panic!("empty EXEC: {other:?}"),
            }
            replies[1].items().to_vec()
        }
    };
    let mut values = values.iter().map(text);
    let order = values.next().expect("the value of order");
    Some((order, values.collect()))
}

async fn reader(mut conn: RespConn, done: Arc<AtomicBool>, mut rng: Rng) -> (Vec<Snapshot>, u64) {
    let mut snapshots = Vec::new();
    let mut retried = 0;
    while !done.load(Ordering::Relaxed) {
        match read_all(&mut conn, rng.below(4)).await {
            Some(snapshot) => snapshots.push(snapshot),
            None => retried += 1,
        }
    }
    (snapshots, retried)
}

/// The committed transactions in the server's order: the chain of predecessors from the
/// empty store. Panics unless they form exactly one chain.
fn serial_order(committed: Vec<Committed>) -> Vec<Committed> {
    let total = committed.len();
    let mut next: HashMap<Option<String>, Committed> = HashMap::new();
    for txn in committed {
        if let Some(other) = next.insert(txn.predecessor.clone(), txn.clone()) {
            panic!(
                "{} and {} both ran right after {:?}: two transactions' SET order GET \
                 saw the same value",
                other.id, txn.id, txn.predecessor
            );
        }
    }
    let mut order = Vec::with_capacity(total);
    let mut last = None;
    while let Some(txn) = next.remove(&last) {
        last = Some(txn.id.clone());
        order.push(txn);
    }
    assert!(
        next.is_empty(),
        "{} committed transactions are not in the chain from the empty store: {:?}",
        next.len(),
        next.values().map(|t| &t.id).collect::<Vec<_>>()
    );
    order
}

/// The model's state after each transaction, by the transaction's id (`None`: the empty
/// store before any).
fn states(order: &[Committed]) -> HashMap<Option<String>, State> {
    let mut state: State = vec![None; KEYS];
    let mut states = HashMap::from([(None, state.clone())]);
    for txn in order {
        for (k, value) in &txn.writes {
            state[*k] = value.clone();
        }
        states.insert(Some(txn.id.clone()), state.clone());
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_exec_applies_all_or_nothing_and_readers_never_see_a_partial_state() {
    let seed = seed_from_env("SESSIOND_MODEL_SEED");
    let data = tempfile::tempdir().expect("temporary directory");
    let mut server = RespServer::start(&ServerSettings::default(), &data.path().join("data"));
    let addr = server.resp_addr();
    let mut rng = Rng::new(seed);

    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let conn = RespConn::connect(addr).await;
        readers.push(tokio::spawn(reader(
            conn,
            done.clone(),
            Rng::new(rng.next_u64()),
        )));
    }
    let mut writers = Vec::new();
    for number in 0..WRITERS {
        let conn = RespConn::connect(addr).await;
        writers.push(tokio::spawn(writer(conn, number, Rng::new(rng.next_u64()))));
    }

    let (logs, reads) = bounded(RUN_TIMEOUT, "the writers and readers", async {
        let mut logs = Vec::new();
        for writer in writers {
            logs.push(writer.await.expect("writer task"));
        }
        done.store(true, Ordering::Relaxed);
        let mut reads = Vec::new();
        for reader in readers {
            reads.push(reader.await.expect("reader task"));
        }
        (logs, reads)
    })
    .await;

    let aborted: usize = logs.iter().map(|log| log.aborted.len()).sum();
    let committed: Vec<Committed> = logs.into_iter().flat_map(|log| log.committed).collect();
    let applied = committed.len();
    let order = serial_order(committed);
    let states = states(&order);

    // A transaction that EXEC aborted must have left no trace: its id is in no state.
    let committed_ids: HashSet<&str> = order.iter().map(|t| t.id.as_str()).collect();

    let mut snapshots = 0;
    let mut retried = 0;
    for (reader_snapshots, reader_retried) in &reads {
        retried += reader_retried;
        for (after, seen) in reader_snapshots {
            snapshots += 1;
            for value in seen.iter().flatten() {
                assert!(
                    committed_ids.contains(value.as_str()),
                    "a reader saw {value}, written by a transaction whose EXEC did not apply it"
                );
            }
            let expected = states
                .get(after)
                .unwrap_or_else(|| panic!("a reader saw order = {after:?}, which no EXEC set"));
            assert_eq!(
                seen, expected,
                "a reader saw a partial state: order says the last transaction was {after:?} \
                 (seed {seed})"
            );
        }
    }

    // The store ends in the model's final state.
    let mut conn = RespConn::connect(addr).await;
    let (last, final_state) = read_all(&mut conn, 0).await.expect("a final read");
    assert_eq!(last, order.last().map(|t| t.id.clone()));
    assert_eq!(&final_state, &states[&last]);

    println!(
        "{}: {applied} transactions applied in one chain, {aborted} aborted by WATCH; \
         {snapshots} atomic reads matched the model ({retried} WATCH reads retried)",
        server.name()
    );
    assert!(snapshots > 0, "the readers read nothing");
    assert!(
        applied + aborted == WRITERS * TRANSACTIONS_PER_WRITER,
        "every transaction was either applied or aborted"
    );
    server.assert_running();
}
