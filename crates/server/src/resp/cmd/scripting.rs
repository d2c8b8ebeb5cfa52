//! Scripting commands: `EVAL`, `EVALSHA`, `SCRIPT LOAD | EXISTS | FLUSH | KILL | HELP`.
//!
//! A script runs inside one store transaction over the keys it declares in `KEYS`
//! ([`Store::transaction`](crate::store::Store::transaction)): no other command on either
//! protocol touches those keys until it ends, and its writes reach the append-only file as
//! one record. Each `redis.call` goes through
//! [`run_in_transaction`](super::transactions::run_in_transaction), which checks the command
//! as any other (name, arity, the caller's role), refuses commands flagged `noscript`, and
//! refuses a key the script did not declare: the transaction holds only declared keys, as
//! Redis Cluster requires of scripts.
//!
//! Unlike Redis, a script is all or nothing: if it ends with an error (an uncaught
//! `redis.call` error, a Lua error, the time or memory limit, a reply too large to send),
//! the transaction is rolled back and the error is the reply; nothing it wrote is visible
//! or persisted. A script that *returns* an error reply (`return redis.error_reply(...)`)
//! has not failed: its writes stand.
//!
//! Queued in `MULTI`, a script runs inside `EXEC`'s transaction, which holds the keys it
//! declares (`key_args` reads them from `numkeys`): its own transaction joins `EXEC`'s, and
//! its rollback undoes its own writes only.

use bytes::Bytes;

use super::transactions::{run_in_transaction, InTransaction};
use super::{int_arg, is, require, unknown_subcommand, Call, Outcome, Result};
use crate::access::Category;
use crate::resp::frame::{Value, OK};
use crate::resp::script::{self, Failure, Limits, Script, Sha};
use crate::store;

/// Redis's reply to `EVALSHA` with a name the cache does not have; clients (redis-py's
/// `Script`, phpredis, ioredis) recognise it and send the script's text with `EVAL`.
fn noscript() -> Value {
    Value::error("NOSCRIPT No matching script. Please use EVAL.")
}

/// `EVAL script numkeys [key ...] [arg ...]`: runs the script (and caches it for
/// `EVALSHA`, as Redis does).
pub(super) fn eval(call: &mut Call<'_>) -> Result {
    let source = call.args[1].clone();
    let sha = Sha::of(&source);
    let cache = &call.shared.scripts;
    cache.insert(sha, source.clone());
    let script = Script {
        sha,
        source,
        generation: cache.generation(),
    };
    run(call, &script)
}

/// `EVALSHA sha1 numkeys [key ...] [arg ...]`: runs a cached script, or `NOSCRIPT`.
pub(super) fn evalsha(call: &mut Call<'_>) -> Result {
    let sha = Sha::parse(&call.args[1]).ok_or_else(noscript)?;
    let cache = &call.shared.scripts;
    // The generation is read before the look-up: a flush in between makes the thread
    // recompile, never run a stale function.
    let generation = cache.generation();
    let source = cache.get(&sha).ok_or_else(noscript)?;
    run(
        call,
        &Script {
            sha,
            source,
            generation,
        },
    )
}

/// Whether command `name` declares its keys as a script does (`numkeys key ... arg ...`).
pub(super) fn declares_keys(name: &str) -> bool {
    matches!(name, "eval" | "evalsha")
}

/// The keys `EVAL`/`EVALSHA` `args` declare: `numkeys` if it is a count the arguments
/// hold, else 0 (the command then fails with [`parse_numkeys`]'s error).
pub(super) fn numkeys(args: &[Bytes]) -> i64 {
    parse_numkeys(args).map_or(0, |n| n as i64)
}

/// `args[2]`, checked as Redis checks it: a count of the arguments that follow.
fn parse_numkeys(args: &[Bytes]) -> std::result::Result<usize, Value> {
    let numkeys = args.get(2).map_or(Ok(0), |arg| int_arg(arg))?;
    let available = args.len().saturating_sub(3);
    if numkeys < 0 {
        return Err(Value::error("ERR Number of keys can't be negative"));
    }
    match usize::try_from(numkeys) {
        Ok(numkeys) if numkeys <= available => Ok(numkeys),
        _ => Err(Value::error(
            "ERR Number of keys can't be greater than number of args",
        )),
    }
}

/// Splits `numkeys key... arg...` (from `args[2]`), runs the script over the keys in one
/// transaction, and rolls it back if the script fails. Inside `EXEC` that transaction is
/// nested in `EXEC`'s (which holds the keys, see `key_args`): a rollback undoes the
/// script's writes only, and its error is its place in `EXEC`'s reply.
fn run(call: &mut Call<'_>, script: &Script) -> Result {
    let numkeys = parse_numkeys(&call.args)?;
    for i in 3..3 + numkeys {
        call.key(i)?;
    }
    let keys: Vec<Bytes> = call.args[3..3 + numkeys].to_vec();
    let argv: Vec<Bytes> = call.args[3 + numkeys..].to_vec();
    let settings = &call.shared.settings;
    let limits = Limits {
        time: std::time::Duration::from_millis(settings.max_script_time_ms),
        memory: settings.max_script_memory_bytes,
        reply_bytes: settings.max_reply_bytes,
        cached_scripts: settings.max_cached_scripts,
    };
    // Taken before the keys: a script waiting for a turn holds nothing others wait for
    // (inside EXEC the keys are EXEC's, held already).
    let _turn = script::Turn::take(limits.time).map_err(|busy| failed(&busy, &script.sha))?;
    let (ctx, shared) = (call.ctx, call.shared);
    let client = &mut *call.client;
    let declared: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let mut mutated = false;
    let ran = ctx.store.transaction(&declared, |tx| {
        let result = off_the_worker(script::ran_quickly(&script.sha), || {
            let memory = Some(ctx.store.memory());
            script::run(script, &keys, &argv, &limits, memory, &mut |args| {
                let outcome =
                    run_in_transaction(args, ctx, shared, client, tx, InTransaction::Script);
                mutated |= outcome.mutated;
                outcome.value.unwrap_or(Value::Null)
            })
        });
        if result.is_err() {
            tx.rollback();
        }
        result
    });
    match ran {
        Ok(Ok(reply)) => Ok(Outcome::write(reply, mutated)),
        Ok(Err(failure)) => Err(failed(&failure, &script.sha)),
        Err(too_large) => Err(Value::error(format!("ERR {too_large}"))),
    }
}

/// The reply of a failed script, and the log line an operator needs to find it (its name,
/// never its keys or arguments, which may be session ids).
fn failed(failure: &Failure, sha: &Sha) -> Value {
    if matches!(
        failure,
        Failure::TimedOut(_) | Failure::OutOfMemory(_) | Failure::Busy(..)
    ) {
        tracing::warn!(script = sha.as_str(), ?failure, "script stopped at a limit");
    }
    failure.reply(sha)
}

/// Runs `f`, which may block for up to `resp.max_script_time_ms`, off the async worker
/// ([`store::off_the_worker`]), unless the script is known to be `quick` (its last run on
/// this thread took less than [`script::QUICK`]): the hand-over costs more than such a
/// script (phpredis's unlock ran at two thirds of the rate with it). A script that turns
/// slow on some input blocks this worker once, up to the time limit, and is handed over
/// from then on; tokio's other workers take queued connections meanwhile.
fn off_the_worker<R>(quick: bool, f: impl FnOnce() -> R) -> R {
    if quick {
        f()
    } else {
        store::off_the_worker(f)
    }
}

/// `SCRIPT LOAD script | EXISTS sha1 [sha1 ...] | FLUSH [ASYNC | SYNC] | KILL | HELP`.
pub(super) fn script(call: &mut Call<'_>) -> Result {
    let sub = &call.args[1];
    let rest = &call.args[2..];
    let cache = &call.shared.scripts;
    let reply = if is(sub, "load") && rest.len() == 1 {
        let source = rest[0].clone();
        let sha = Sha::of(&source);
        cache.insert(sha, source);
        Value::bulk_string(sha.as_str().to_owned())
    } else if is(sub, "exists") && !rest.is_empty() {
        Value::Array(
            rest.iter()
                .map(|name| {
                    let cached = Sha::parse(name).is_some_and(|sha| cache.contains(&sha));
                    Value::Integer(i64::from(cached))
                })
                .collect(),
        )
    } else if is(sub, "flush") && rest.len() <= 1 {
        if let Some(mode) = rest.first() {
            if !is(mode, "async") && !is(mode, "sync") {
                return Err(Value::error(
                    "ERR SCRIPT FLUSH only support SYNC|ASYNC option",
                ));
            }
        }
        // Forgetting every script makes every client resend its scripts: the admin's call,
        // as FLUSHDB is.
        require(&call.client.access, Category::Keyspace, "script|flush")?;
        cache.flush();
        OK
    } else if is(sub, "kill") && rest.is_empty() {
        // A script is stopped by resp.max_script_time_ms, and none is ever "busy" between
        // requests, so there is never one to kill (Redis's answer when none runs).
        return Err(Value::error("NOTBUSY No scripts in execution right now."));
    } else if is(sub, "help") && rest.is_empty() {
        Value::Array(
            [
                "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "EXISTS <sha1> [<sha1> ...]",
                "    Return information about the existence of the scripts in the script cache.",
                "FLUSH [ASYNC|SYNC]",
                "    Flush the Lua scripts cache (admin only).",
                "KILL",
                "    Scripts are stopped by resp.max_script_time_ms; there is never one to kill.",
                "LOAD <script>",
                "    Load a script into the scripts cache without executing it.",
                "HELP",
                "    Print this help.",
            ]
            .into_iter()
            .map(Value::bulk_static)
            .collect(),
        )
    } else {
        return Err(unknown_subcommand(sub, "script"));
    };
    Ok(Outcome::reply(reply))
}
