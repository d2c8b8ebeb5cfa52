//! Transactions: `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`, and
//! [`run_in_transaction`], which runs one command while a transaction's keys are held (for
//! `EXEC`, and for `redis.call` in scripts).
//!
//! Between `MULTI` and `EXEC` a connection's commands are checked as
//! [`execute`](super::execute) checks any command (name, argument count, role) and, if they
//! may run in a transaction, queued: the client hears `+QUEUED`. A command that fails a
//! check is answered with its error and makes the transaction *dirty*: `EXEC` then runs
//! nothing and answers `EXECABORT`, as in Redis.
//!
//! `EXEC` asks the store for the locks of every key the queued commands name (their
//! `keys` triple in [`COMMANDS`](super::COMMANDS)) and of every watched key, and runs the
//! queue while it holds them ([`Store::transaction`](crate::store::Store::transaction)): no
//! other command on either protocol that reads or writes those keys runs in between, and
//! the writes reach the append-only file as one record, replayed all or nothing. Errors of
//! single commands are reported in their place in the reply and do not undo the others
//! (Redis's semantics; scripts differ, see `docs/RESP.md`).
//!
//! `WATCH` records each key's version ([`Store::version_of`](crate::store::Store::version_of))
//! and `EXEC` compares them again under the locks: any write, deletion or expiry of a
//! watched key gives the key a new version or none, and `EXEC` then answers null and runs
//! nothing. A key absent at `WATCH` and absent again at `EXEC` counts as unchanged even if it
//! existed in between: what the client saw still holds when its writes apply.
//!
//! Only commands whose keys can be read from their arguments may be queued: the locks are
//! taken before anything runs. `EVAL`/`EVALSHA` count: their keys are the `numkeys` after
//! `numkeys`, and each runs as a transaction nested in `EXEC`'s (its failure undoes only its
//! own writes). Commands flagged `no_multi` in the table (keyspace walks,
//! owner-wide commands, connection state such as `AUTH`) are refused in `MULTI`, and those
//! flagged `noscript` in scripts.

use std::collections::HashMap;

use bytes::Bytes;

use super::{check, invoke, key_args, lookup, Call, Client, Outcome, Result, Spec};
use crate::resp::decode::ARG_OVERHEAD;
use crate::resp::frame::{Value, OK};
use crate::resp::Shared;
use crate::server::Context;
use crate::stats::Stats;
use crate::store::Transaction;

/// Most commands one `MULTI` may queue. Redis has no such bound; a session store's
/// transactions are a handful of commands, and the queue is held in memory until `EXEC`.
pub(super) const MAX_QUEUED: usize = 10_000;

/// Most keys one connection may watch at a time.
pub(super) const MAX_WATCHED: usize = 10_000;

/// Redis's reply to a command queued in `MULTI`.
const QUEUED: Value = Value::Simple("QUEUED");

/// A connection's transaction state: the `MULTI` queue, if one is open, and the watched
/// keys.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// `Some` between `MULTI` and `EXEC`/`DISCARD`.
    multi: Option<Multi>,
    /// Each watched key, with its version when it was first watched (`None`: absent).
    watched: HashMap<Bytes, Option<u64>>,
}

/// An open `MULTI`.
#[derive(Debug, Default)]
struct Multi {
    /// The queued commands, each as sent.
    queue: Vec<Vec<Bytes>>,
    /// What the queue holds, counted as the decoder counts a request.
    bytes: usize,
    /// A command was refused while queueing: `EXEC` must answer `EXECABORT`.
    dirty: bool,
}

impl State {
    /// Whether a `MULTI` is open.
    pub(crate) fn in_multi(&self) -> bool {
        self.multi.is_some()
    }

    /// Makes an open `MULTI` fail at `EXEC`: a command the client meant to queue was
    /// refused, so running the rest would run a different transaction than the one sent.
    pub(crate) fn discard_on_exec(&mut self) {
        if let Some(multi) = &mut self.multi {
            multi.dirty = true;
            // Nothing queued will run: no sense holding it (Redis does the same).
            multi.queue = Vec::new();
        }
    }

    /// Ends any `MULTI` and forgets the watched keys (`DISCARD`, `QUIT`, after `EXEC`).
    pub(crate) fn clear(&mut self) {
        *self = State::default();
    }

    /// Queues `args`, within [`MAX_QUEUED`] commands and `max_bytes` bytes, counted as the
    /// decoder counts one request: the queue is held to the bound of one request, so a
    /// transaction cannot make a connection hold more than one oversized request would.
    fn push(&mut self, args: Vec<Bytes>, max_bytes: usize) -> std::result::Result<(), Value> {
        let Some(multi) = &mut self.multi else {
            return Err(Value::error("ERR no transaction is open"));
        };
        if multi.dirty {
            // `EXEC` will run nothing: the command is answered as Redis answers it, and
            // dropped.
            return Ok(());
        }
        let bytes: usize = args.iter().map(|arg| arg.len() + ARG_OVERHEAD).sum();
        if multi.queue.len() >= MAX_QUEUED {
            return Err(Value::error(format!(
                "ERR transaction too long: at most {MAX_QUEUED} commands may be queued"
            )));
        }
        if multi.bytes + bytes > max_bytes {
            return Err(Value::error(format!(
                "ERR transaction too large: the queued commands add up to more than {max_bytes} bytes"
            )));
        }
        multi.bytes += bytes;
        multi.queue.push(args);
        Ok(())
    }
}

/// Where [`run_in_transaction`] runs a command, which decides what may run and the errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::resp) enum InTransaction {
    /// A command queued in `MULTI`, run by `EXEC`.
    Exec,
    /// `redis.call` or `redis.pcall` in a script.
    Script,
}

impl InTransaction {
    /// Refuses a command that may not run here.
    fn allows(self, spec: &Spec) -> std::result::Result<(), Value> {
        match self {
            InTransaction::Exec if spec.has_flag("no_multi") || runs_immediately(spec) => {
                Err(not_in_multi())
            }
            // Redis's words.
            InTransaction::Script if spec.has_flag("noscript") => Err(Value::error(
                "ERR This Redis command is not allowed from script",
            )),
            _ => Ok(()),
        }
    }

    /// The error for a key the transaction does not hold.
    fn undeclared(self) -> Value {
        match self {
            InTransaction::Exec => {
                Value::error("ERR the transaction attempted to access a key it does not hold")
            }
            InTransaction::Script => {
                Value::error("ERR Script attempted to access a non-declared key")
            }
        }
    }
}

/// `ERR Command not allowed inside a transaction` (Redis's words).
fn not_in_multi() -> Value {
    Value::error("ERR Command not allowed inside a transaction")
}

/// Whether a command runs at once even inside `MULTI` instead of being queued: the
/// commands that end or inspect the transaction itself, and `QUIT` (Redis's list in
/// `processCommand`).
pub(super) fn runs_immediately(spec: &Spec) -> bool {
    matches!(spec.name, "exec" | "discard" | "multi" | "watch" | "quit")
}

/// Queues a command that passed [`check`] inside `MULTI`, or refuses it (and the
/// transaction) if it may not run in one or the queue is full.
pub(super) fn queue(
    spec: &'static Spec,
    args: Vec<Bytes>,
    shared: &Shared,
    client: &mut Client,
) -> Outcome {
    let queued = if spec.has_flag("no_multi") {
        Err(not_in_multi())
    } else {
        client
            .transaction
            .push(args, shared.decode_limits.max_request_bytes)
    };
    match queued {
        Ok(()) => Outcome::reply(QUEUED),
        Err(error) => {
            client.transaction.discard_on_exec();
            Outcome::reply(error)
        }
    }
}

/// Runs one command while a transaction holds its keys: the checks [`execute`](super::execute)
/// makes (name, argument count, role), whether the command may run in `context`, and whether
/// the transaction declares every key it names; then the command, through the same path as
/// any other, so that `MISCONF`, limits and statistics apply alike.
///
/// `tx` must be the transaction the caller is inside: the command's store calls take no
/// locks of their own there, and a key outside `tx` would not be protected.
pub(in crate::resp) fn run_in_transaction(
    args: Vec<Bytes>,
    ctx: &Context,
    shared: &Shared,
    client: &mut Client,
    tx: &Transaction<'_>,
    context: InTransaction,
) -> Outcome {
    let Some(name) = args.first() else {
        // Redis's words, for `redis.call()` without arguments.
        return Outcome::reply(Value::error(
            "ERR Please specify at least one argument for this redis lib call",
        ));
    };
    let spec = match check(lookup(name), &args, client).and_then(|spec| {
        context.allows(spec)?;
        if key_args(spec, &args).any(|key| !tx.declares(key)) {
            return Err(context.undeclared());
        }
        Ok(spec)
    }) {
        Ok(spec) => spec,
        Err(error) => return Outcome::reply(error),
    };
    invoke(spec, args, ctx, shared, client)
}

/// `MULTI`: `OK`; the commands that follow are queued. Nested: an error, and the open
/// transaction carries on (Redis runs `MULTI` rather than queueing it, and does not
/// count this error against the transaction).
pub(super) fn multi(call: &mut Call<'_>) -> Result {
    let transaction = &mut call.client.transaction;
    if transaction.in_multi() {
        return Err(Value::error("ERR MULTI calls can not be nested"));
    }
    transaction.multi = Some(Multi::default());
    Ok(Outcome::reply(OK))
}

/// `DISCARD`: `OK`; drops the queue and unwatches every key.
pub(super) fn discard(call: &mut Call<'_>) -> Result {
    if !call.client.transaction.in_multi() {
        return Err(Value::error("ERR DISCARD without MULTI"));
    }
    call.client.transaction.clear();
    Ok(Outcome::reply(OK))
}

/// `WATCH key [key ...]`: `OK`; the next `EXEC` aborts if any of the keys gets a new
/// version (a write), or loses it (deleted or expired), before it runs. Watching a key
/// again keeps the version seen first, as Redis does.
pub(super) fn watch(call: &mut Call<'_>) -> Result {
    if call.client.transaction.in_multi() {
        return Err(Value::error("ERR WATCH inside MULTI is not allowed"));
    }
    let keys = call.keys(1)?;
    let watched = &call.client.transaction.watched;
    let mut fresh: Vec<&Bytes> = keys
        .into_iter()
        .filter(|key| !watched.contains_key(*key))
        .collect();
    fresh.sort_unstable();
    fresh.dedup();
    if watched.len() + fresh.len() > MAX_WATCHED {
        return Err(Value::error(format!(
            "ERR too many watched keys: at most {MAX_WATCHED} per connection (UNWATCH, EXEC or DISCARD first)"
        )));
    }
    let store = &call.ctx.store;
    let versions: Vec<(Bytes, Option<u64>)> = fresh
        .into_iter()
        .map(|key| (key.clone(), store.version_of(key)))
        .collect();
    call.client.transaction.watched.extend(versions);
    Ok(Outcome::reply(OK))
}

/// `UNWATCH`: `OK`; forgets every watched key.
pub(super) fn unwatch(call: &mut Call<'_>) -> Result {
    call.client.transaction.watched = HashMap::new();
    Ok(Outcome::reply(OK))
}

/// `EXEC`: the replies of the queued commands, in order, run while the store holds every
/// key they name and every watched key; null, having run nothing, if a watched key
/// changed; `EXECABORT` if a command was refused while queueing. The transaction and the
/// watched keys are gone afterwards, whatever the answer.
///
/// The reply is bounded by `[resp] max_reply_bytes` as `MGET`'s is: once the replies add up
/// to more, each further command still runs but its reply is replaced with an error.
pub(super) fn exec(call: &mut Call<'_>) -> Result {
    if !call.client.transaction.in_multi() {
        return Err(Value::error("ERR EXEC without MULTI"));
    }
    let State { multi, watched } = std::mem::take(&mut call.client.transaction);
    let Multi { queue, dirty, .. } = multi.unwrap_or_default();
    if dirty {
        return Err(Value::error(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
    }
    // Owned copies (reference-counted, not copied) so that the queue can be moved into the
    // commands while the store holds the keys.
    let mut keys: Vec<Bytes> = watched.keys().cloned().collect();
    for args in &queue {
        if let Some(spec) = lookup(&args[0]) {
            keys.extend(key_args(spec, args).cloned());
        }
    }
    let keys: Vec<&[u8]> = keys.iter().map(|key| &key[..]).collect();
    let (ctx, shared) = (call.ctx, call.shared);
    let client = &mut *call.client;
    let ran = ctx.store.transaction(&keys, |tx| {
        if watched
            .iter()
            .any(|(key, seen)| tx.version_of(key) != *seen)
        {
            return None;
        }
        let mut replies = Replies::new(shared.settings.max_reply_bytes);
        let mut mutated = false;
        for args in queue {
            let outcome = run_in_transaction(args, ctx, shared, client, tx, InTransaction::Exec);
            mutated |= outcome.mutated;
            replies.push(outcome.value, &ctx.stats);
        }
        Some((replies.values, mutated))
    });
    match ran {
        Ok(Some((values, mutated))) => Ok(Outcome::write(Value::Array(values), mutated)),
        // Redis's null array (`*-1` in RESP2), which clients read as "aborted".
        Ok(None) => Ok(Outcome::reply(Value::NullArray)),
        Err(too_large) => Err(Value::error(format!("ERR {too_large}"))),
    }
}

/// `EXEC`'s replies, within the reply budget.
struct Replies {
    values: Vec<Value>,
    size: usize,
    budget: usize,
    over: bool,
}

impl Replies {
    fn new(budget: usize) -> Replies {
        Replies {
            values: Vec::new(),
            size: 0,
            budget,
            over: false,
        }
    }

    /// Adds one command's reply, or an error in its place once the budget is spent.
    fn push(&mut self, value: Option<Value>, stats: &Stats) {
        // A command always answers inside a transaction; only an HTTP request on the
        // port closes without one, and that is never queued.
        let value = value.unwrap_or(Value::Null);
        self.size = self.size.saturating_add(value.encoded_len());
        if !self.over && self.size > self.budget {
            self.over = true;
            Stats::bump(&stats.replies_too_large);
        }
        self.values.push(if self.over {
            Value::error(format!(
                "ERR reply too large: the transaction's replies add up to more than {} bytes \
                 (resp.max_reply_bytes); this command ran, its reply was dropped",
                self.budget
            ))
        } else {
            value
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use bytes::BytesMut;
    use sessiond_proto::command::{GetReply, SetMode};
    use sessiond_proto::Limits;

    use super::super::execute;
    use super::*;
    use crate::access::Access;
    use crate::auth::Authenticator;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::resp::frame::Version;
    use crate::slowlog::SlowLog;
    use crate::store::Store;

    /// One connection to a server without persistence or users (the admin role).
    struct Conn {
        ctx: Context,
        shared: Arc<Shared>,
        client: Client,
    }

    impl Conn {
        fn new() -> Conn {
            Conn::with(Limits::default(), Config::default().resp_settings())
        }

        fn with(limits: Limits, settings: crate::resp::Settings) -> Conn {
            let auth = Arc::new(Authenticator::open());
            let access = Access::new(&auth, IpAddr::V4(Ipv4Addr::LOCALHOST));
            Conn {
                ctx: Context {
                    store: Store::new(),
                    stats: Arc::new(Stats::new()),
                    limits,
                    aof: None,
                    auth,
                    slowlog: Arc::new(SlowLog::new(None, 1)),
                    metrics: Arc::new(Metrics::new(false)),
                },
                shared: Shared::new(settings, limits, 0, 1),
                client: Client {
                    id: 1,
                    version: Version::Resp2,
                    access,
                    name: None,
                    transaction: State::default(),
                },
            }
        }

        /// Runs one command as the connection handler would; its reply and whether it
        /// wrote.
        fn run(&mut self, args: &[&str]) -> (Value, bool) {
            let args = args.iter().map(|a| Bytes::from(a.to_string())).collect();
            let (outcome, _) = execute(args, &self.ctx, &self.shared, &mut self.client);
            (outcome.value.expect("a reply"), outcome.mutated)
        }

        fn call(&mut self, args: &[&str]) -> Value {
            self.run(args).0
        }

        fn value_of(&self, key: &str) -> Option<Bytes> {
            match self.ctx.store.get(key.as_bytes(), None) {
                GetReply::Hit(entry) => Some(entry.value),
                GetReply::Miss => None,
            }
        }

        /// `MULTI`, `SET key value`, `EXEC`: `EXEC`'s reply.
        fn set_in_multi(&mut self, key: &str, value: &str) -> Value {
            assert_eq!(self.call(&["MULTI"]), OK);
            assert_eq!(self.call(&["SET", key, value]), QUEUED);
            self.call(&["EXEC"])
        }

        /// A write by "another client", straight to the store.
        fn write_elsewhere(&self, key: &str, value: &str) {
            self.ctx
                .store
                .set(key.as_bytes(), value.as_bytes(), 60_000, SetMode::Upsert);
        }
    }

    fn bulk(s: &str) -> Value {
        Value::Bulk(Bytes::from(s.to_string()))
    }

    fn is_error(value: &Value, prefix: &str) -> bool {
        matches!(value, Value::Error(e) if e.starts_with(prefix))
    }

    fn encode(value: &Value, version: Version) -> Vec<u8> {
        let mut out = BytesMut::new();
        value.encode(version, &mut out);
        out.to_vec()
    }

    #[test]
    fn queued_commands_run_at_exec_in_order() {
        let mut c = Conn::new();
        assert_eq!(c.call(&["MULTI"]), OK);
        assert_eq!(c.call(&["SET", "k", "v1"]), QUEUED);
        assert_eq!(c.call(&["get", "k"]), QUEUED);
        assert_eq!(c.call(&["SET", "k", "v2"]), QUEUED);
        assert_eq!(c.value_of("k"), None, "nothing runs before EXEC");
        let (reply, mutated) = c.run(&["EXEC"]);
        assert_eq!(reply, Value::Array(vec![OK, bulk("v1"), OK]));
        assert!(mutated);
        assert_eq!(c.value_of("k"), Some(Bytes::from("v2")));
        assert!(!c.client.transaction.in_multi());
    }

    #[test]
    fn mset_may_be_queued() {
        // Django's RedisCache.set_many sends MULTI, MSET, EXPIRE..., EXEC.
        let mut c = Conn::new();
        c.call(&["MULTI"]);
        assert_eq!(c.call(&["MSET", "a", "1", "b", "2"]), QUEUED);
        assert_eq!(c.call(&["EXPIRE", "b", "60"]), QUEUED);
        c.call(&["GET", "b"]);
        assert_eq!(
            c.call(&["EXEC"]),
            Value::Array(vec![OK, Value::Integer(1), bulk("2")])
        );
    }

    #[test]
    fn exec_is_one_request_for_the_metrics_and_an_abort_is_a_version_mismatch() {
        use crate::metrics::Outcome as Measured;
        let mut c = Conn::new();
        let exec = |c: &mut Conn| {
            let args = vec![Bytes::from_static(b"EXEC")];
            execute(args, &c.ctx, &c.shared, &mut c.client).1
        };
        c.call(&["MULTI"]);
        assert_eq!(c.call(&["SET", "k", "v"]), QUEUED);
        let tag = exec(&mut c);
        assert_eq!((tag.command, tag.outcome), ("exec", Measured::Ok));
        c.call(&["WATCH", "k"]);
        c.write_elsewhere("k", "changed");
        c.call(&["MULTI"]);
        let tag = exec(&mut c);
        assert_eq!(
            (tag.command, tag.outcome),
            ("exec", Measured::VersionMismatch)
        );
    }

    #[test]
    fn exec_of_reads_only_does_not_wait_for_the_file() {
        let mut c = Conn::new();
        c.write_elsewhere("k", "v");
        c.call(&["MULTI"]);
        c.call(&["GET", "k"]);
        let (reply, mutated) = c.run(&["EXEC"]);
        assert_eq!(reply, Value::Array(vec![bulk("v")]));
        assert!(!mutated);
    }

    #[test]
    fn a_command_refused_while_queueing_aborts_exec() {
        for refused in [
            &["SET", "k"][..],
            &["NOSUCHCOMMAND", "x"],
            &["SCAN", "0"],
            &["FLUSHDB"],
            &["AUTH", "default", "x"],
            &["SESSIOND.ENDALL", "owner"],
        ] {
            let mut c = Conn::new();
            c.call(&["MULTI"]);
            assert_eq!(c.call(&["SET", "a", "1"]), QUEUED);
            assert!(is_error(&c.call(refused), "ERR"), "{refused:?}");
            // Later commands are still answered QUEUED, as in Redis.
            assert_eq!(c.call(&["SET", "b", "2"]), QUEUED);
            assert_eq!(
                c.call(&["EXEC"]),
                Value::error("EXECABORT Transaction discarded because of previous errors.")
            );
            assert_eq!(c.value_of("a"), None, "{refused:?}");
            assert_eq!(c.value_of("b"), None, "{refused:?}");
            assert_eq!(c.call(&["EXEC"]), Value::error("ERR EXEC without MULTI"));
        }
    }

    /// redis-py's default pipeline wraps a registered script's `EVALSHA` in `MULTI`/`EXEC`.
    #[test]
    fn scripts_run_inside_exec_and_a_failed_one_undoes_only_its_own_writes() {
        let mut c = Conn::new();
        let sha = match c.call(&[
            "SCRIPT",
            "LOAD",
            "redis.call('set', KEYS[1], ARGV[1]) return 1",
        ]) {
            Value::Bulk(sha) => String::from_utf8_lossy(&sha).into_owned(),
            other => panic!("SCRIPT LOAD answered {other:?}"),
        };
        assert_eq!(c.call(&["SET", "c", "old"]), OK);
        assert_eq!(c.call(&["MULTI"]), OK);
        assert_eq!(c.call(&["EVALSHA", &sha, "1", "a", "x"]), QUEUED);
        assert_eq!(c.call(&["SET", "b", "y"]), QUEUED);
        let failing = "redis.call('set', KEYS[1], 'new') error('stop')";
        assert_eq!(c.call(&["EVAL", failing, "1", "c"]), QUEUED);
        // Undeclared key and bad numkeys: errors in their place, the rest still runs.
        assert_eq!(
            c.call(&["EVAL", "return redis.call('get', 'b')", "0"]),
            QUEUED
        );
        assert_eq!(c.call(&["EVAL", "return 1", "5", "a"]), QUEUED);
        let (reply, mutated) = c.run(&["EXEC"]);
        assert!(mutated);
        let Value::Array(replies) = reply else {
            panic!("EXEC answered {reply:?}");
        };
        assert_eq!(replies[0], Value::Integer(1));
        assert_eq!(replies[1], OK);
        assert!(
            is_error(&replies[2], "ERR user_script:1: stop"),
            "{:?}",
            replies[2]
        );
        assert!(is_error(
            &replies[3],
            "ERR Script attempted to access a non-declared key"
        ));
        assert!(is_error(&replies[4], "ERR Number of keys can't be greater"));
        assert_eq!(c.value_of("a"), Some(Bytes::from_static(b"x")));
        assert_eq!(c.value_of("b"), Some(Bytes::from_static(b"y")));
        assert_eq!(c.value_of("c"), Some(Bytes::from_static(b"old")));
        // Scripts still may not run scripts.
        let nested = c.call(&["EVAL", "return redis.call('eval', 'return 1', '0')", "0"]);
        assert!(is_error(
            &nested,
            "ERR This Redis command is not allowed from script"
        ));
    }

    #[test]
    fn commands_flagged_no_multi_say_so() {
        let mut c = Conn::new();
        c.call(&["MULTI"]);
        assert_eq!(
            c.call(&["SCAN", "0"]),
            Value::error("ERR Command not allowed inside a transaction")
        );
    }

    #[test]
    fn errors_of_single_commands_do_not_undo_the_others() {
        let mut c = Conn::new();
        c.call(&["MULTI"]);
        c.call(&["SET", "a", "1"]);
        // Passes the queueing checks; fails when it runs.
        c.call(&["SET", "b", "2", "EX", "notanumber"]);
        c.call(&["SET", "c", "3"]);
        assert_eq!(
            c.call(&["EXEC"]),
            Value::Array(vec![
                OK,
                Value::error("ERR value is not an integer or out of range"),
                OK
            ])
        );
        assert_eq!(c.value_of("a"), Some(Bytes::from("1")));
        assert_eq!(c.value_of("b"), None);
        assert_eq!(c.value_of("c"), Some(Bytes::from("3")));
    }

    #[test]
    fn multi_or_watch_inside_multi_is_an_error_that_keeps_the_transaction() {
        for (command, error) in [
            (&["MULTI"][..], "ERR MULTI calls can not be nested"),
            (&["WATCH", "k"], "ERR WATCH inside MULTI is not allowed"),
        ] {
            let mut c = Conn::new();
            c.call(&["MULTI"]);
            assert_eq!(c.call(command), Value::error(error));
            c.call(&["SET", "k", "v"]);
            assert_eq!(c.call(&["EXEC"]), Value::Array(vec![OK]));
        }
    }

    #[test]
    fn discard_drops_the_queue_and_the_watched_keys() {
        let mut c = Conn::new();
        c.call(&["WATCH", "k"]);
        c.call(&["MULTI"]);
        c.call(&["SET", "k", "v"]);
        assert_eq!(c.call(&["DISCARD"]), OK);
        assert_eq!(c.value_of("k"), None);
        assert_eq!(
            c.call(&["DISCARD"]),
            Value::error("ERR DISCARD without MULTI")
        );
        // The watch went with it: a change of k no longer aborts.
        c.write_elsewhere("k", "other");
        assert_eq!(c.set_in_multi("k", "mine"), Value::Array(vec![OK]));
    }

    #[test]
    fn exec_without_multi_keeps_the_watched_keys() {
        let mut c = Conn::new();
        c.call(&["WATCH", "k"]);
        assert_eq!(c.call(&["EXEC"]), Value::error("ERR EXEC without MULTI"));
        c.write_elsewhere("k", "other");
        assert_eq!(c.set_in_multi("k", "mine"), Value::NullArray);
    }

    #[test]
    fn a_watched_key_that_changed_aborts_exec() {
        let mut c = Conn::new();
        c.write_elsewhere("k", "v");
        c.call(&["WATCH", "k"]);
        c.write_elsewhere("k", "changed");
        c.call(&["MULTI"]);
        c.call(&["SET", "k", "mine"]);
        c.call(&["SET", "other", "x"]);
        let (reply, mutated) = c.run(&["EXEC"]);
        assert_eq!(reply, Value::NullArray);
        assert!(!mutated);
        assert_eq!(c.value_of("k"), Some(Bytes::from("changed")));
        assert_eq!(c.value_of("other"), None, "nothing ran");
        // EXEC unwatched: the next transaction runs.
        assert_eq!(c.set_in_multi("k", "mine"), Value::Array(vec![OK]));
    }

    #[test]
    fn a_watched_key_created_or_deleted_aborts_exec() {
        let mut c = Conn::new();
        c.call(&["WATCH", "absent"]);
        c.write_elsewhere("absent", "now here");
        c.call(&["MULTI"]);
        assert_eq!(c.call(&["EXEC"]), Value::NullArray);

        c.write_elsewhere("k", "v");
        c.call(&["WATCH", "k"]);
        c.ctx.store.del(b"k", None);
        c.call(&["MULTI"]);
        assert_eq!(c.call(&["EXEC"]), Value::NullArray);
    }

    #[test]
    fn the_connections_own_writes_to_a_watched_key_abort_too() {
        let mut c = Conn::new();
        c.call(&["WATCH", "k"]);
        c.call(&["SET", "k", "v"]);
        c.call(&["MULTI"]);
        assert_eq!(c.call(&["EXEC"]), Value::NullArray);
    }

    #[test]
    fn unwatch_forgets_the_keys() {
        let mut c = Conn::new();
        c.call(&["WATCH", "k", "j"]);
        c.write_elsewhere("k", "changed");
        assert_eq!(c.call(&["UNWATCH"]), OK);
        assert_eq!(c.set_in_multi("k", "mine"), Value::Array(vec![OK]));
    }

    #[test]
    fn watch_is_bounded() {
        let mut c = Conn::new();
        let keys: Vec<String> = (0..MAX_WATCHED).map(|i| format!("k{i}")).collect();
        let mut args = vec!["WATCH"];
        args.extend(keys.iter().map(String::as_str));
        assert_eq!(c.call(&args), OK);
        // Watching a key again takes no more room.
        assert_eq!(c.call(&["WATCH", "k0", "k1"]), OK);
        assert!(is_error(
            &c.call(&["WATCH", "one-more"]),
            "ERR too many watched keys"
        ));
        c.call(&["UNWATCH"]);
        assert_eq!(c.call(&["WATCH", "one-more"]), OK);
    }

    #[test]
    fn the_queue_is_bounded_in_commands() {
        let mut c = Conn::new();
        c.call(&["MULTI"]);
        for _ in 0..MAX_QUEUED {
            assert_eq!(c.call(&["GET", "k"]), QUEUED);
        }
        assert!(is_error(&c.call(&["GET", "k"]), "ERR transaction too long"));
        assert!(is_error(&c.call(&["EXEC"]), "EXECABORT"));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let limits = Limits {
            max_key_len: 64,
            max_value_len: 64 * 1024,
            ..Limits::default()
        };
        let mut c = Conn::with(limits, Config::default().resp_settings());
        let max = c.shared.decode_limits.max_request_bytes;
        let value = "v".repeat(60 * 1024);
        c.call(&["MULTI"]);
        let mut queued = 0;
        let refused = loop {
            let reply = c.call(&["SET", "k", &value]);
            if reply != QUEUED {
                break reply;
            }
            queued += 1;
            assert!(queued * value.len() <= max, "queued past the bound");
        };
        assert!(
            is_error(&refused, "ERR transaction too large"),
            "{refused:?}"
        );
        assert!(queued > 0);
        assert!(is_error(&c.call(&["EXEC"]), "EXECABORT"));
    }

    #[test]
    fn replies_past_the_budget_become_errors_and_the_writes_still_run() {
        let mut settings = Config::default().resp_settings();
        settings.max_reply_bytes = 300;
        let mut c = Conn::with(Limits::default(), settings);
        c.write_elsewhere("big", &"x".repeat(200));
        c.call(&["MULTI"]);
        c.call(&["GET", "big"]);
        c.call(&["GET", "big"]);
        c.call(&["SET", "after", "1"]);
        let reply = c.call(&["EXEC"]);
        let items = match reply {
            Value::Array(items) => items,
            other => panic!("not an array: {other:?}"),
        };
        assert_eq!(items.len(), 3);
        assert_eq!(items[0], bulk(&"x".repeat(200)));
        assert!(is_error(&items[1], "ERR reply too large"), "{items:?}");
        assert!(is_error(&items[2], "ERR reply too large"), "{items:?}");
        assert_eq!(c.value_of("after"), Some(Bytes::from("1")));
    }

    #[test]
    fn reply_shapes_in_resp2_and_resp3() {
        let mut c = Conn::new();
        assert_eq!(encode(&c.call(&["MULTI"]), Version::Resp2), b"+OK\r\n");
        assert_eq!(
            encode(&c.call(&["SET", "k", "v"]), Version::Resp2),
            b"+QUEUED\r\n"
        );
        c.call(&["GET", "k"]);
        c.call(&["GET", "missing"]);
        let reply = c.call(&["EXEC"]);
        assert_eq!(
            encode(&reply, Version::Resp2),
            b"*3\r\n+OK\r\n$1\r\nv\r\n$-1\r\n"
        );
        assert_eq!(
            encode(&reply, Version::Resp3),
            b"*3\r\n+OK\r\n$1\r\nv\r\n_\r\n"
        );
        c.call(&["MULTI"]);
        assert_eq!(encode(&c.call(&["EXEC"]), Version::Resp2), b"*0\r\n");
        c.call(&["WATCH", "k"]);
        c.write_elsewhere("k", "changed");
        c.call(&["MULTI"]);
        let aborted = c.call(&["EXEC"]);
        assert_eq!(encode(&aborted, Version::Resp3), b"_\r\n");
        assert_eq!(encode(&aborted, Version::Resp2), b"*-1\r\n");
    }

    #[test]
    fn quit_inside_multi_runs_and_drops_the_transaction() {
        let mut c = Conn::new();
        c.call(&["MULTI"]);
        c.call(&["SET", "k", "v"]);
        let args = vec![Bytes::from_static(b"QUIT")];
        let (outcome, _) = execute(args, &c.ctx, &c.shared, &mut c.client);
        assert!(outcome.close);
        assert!(!c.client.transaction.in_multi());
        assert_eq!(c.value_of("k"), None);
    }

    /// Runs `args` as a script's `redis.call` would, inside a transaction on `declared`.
    fn script_call(c: &mut Conn, declared: &[&str], args: &[&str]) -> Value {
        let keys: Vec<&[u8]> = declared.iter().map(|k| k.as_bytes()).collect();
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::from(a.to_string())).collect();
        let Conn {
            ctx,
            shared,
            client,
        } = c;
        ctx.store
            .transaction(&keys, |tx| {
                run_in_transaction(args, ctx, shared, client, tx, InTransaction::Script)
            })
            .expect("no sink, no size limit")
            .value
            .expect("a reply")
    }

    #[test]
    fn scripts_may_touch_declared_keys_only() {
        let mut c = Conn::new();
        assert_eq!(script_call(&mut c, &["a"], &["SET", "a", "1"]), OK);
        assert_eq!(
            script_call(&mut c, &["a"], &["SET", "b", "1"]),
            Value::error("ERR Script attempted to access a non-declared key")
        );
        assert_eq!(
            script_call(&mut c, &["a"], &["MGET", "a", "b"]),
            Value::error("ERR Script attempted to access a non-declared key")
        );
        assert_eq!(c.value_of("b"), None);
        assert_eq!(
            script_call(&mut c, &["a", "b"], &["MGET", "a", "b"]),
            Value::Array(vec![bulk("1"), Value::Null])
        );
        // MSET's keys are every other argument: its values need no declaring.
        assert_eq!(
            script_call(&mut c, &["a", "b"], &["MSET", "a", "x", "b", "y"]),
            OK
        );
        assert_eq!(
            script_call(&mut c, &["a"], &["MSET", "a", "1", "c", "2"]),
            Value::error("ERR Script attempted to access a non-declared key")
        );
        assert_eq!(c.value_of("c"), None);
    }

    #[test]
    fn scripts_cannot_run_noscript_commands() {
        let mut c = Conn::new();
        for args in [
            &["MULTI"][..],
            &["SCAN", "0"],
            &["WATCH", "a"],
            &["CLIENT", "ID"],
        ] {
            assert_eq!(
                script_call(&mut c, &["a"], args),
                Value::error("ERR This Redis command is not allowed from script"),
                "{args:?}"
            );
        }
        assert!(is_error(
            &script_call(&mut c, &[], &[]),
            "ERR Please specify"
        ));
        assert!(is_error(
            &script_call(&mut c, &[], &["NOSUCH"]),
            "ERR unknown command"
        ));
    }
}
