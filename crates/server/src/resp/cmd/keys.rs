//! Keyspace commands: `DEL`/`UNLINK`, `EXISTS`, the `EXPIRE` family, `TTL`/`PTTL`,
//! `PERSIST`, `SCAN`, `DBSIZE`, `FLUSHDB`/`FLUSHALL`.

use sessiond_proto::command::{DelOutcome, GetReply};

use super::{int_arg, invalid_expire, is, syntax_error, Call, Outcome, Result};
use crate::resp::frame::{Value, OK};
use crate::resp::glob::Pattern;
use crate::stats::Stats;

/// `DEL key [key ...]` and `UNLINK key [key ...]`: how many keys were removed.
///
/// While the AOF cannot be written the keys are still removed (a logout must take effect at
/// once), but the reply is a `MISCONF` error, whatever was removed: a client retrying keeps
/// hearing that the deletion is not durable until the file has recovered, which writes it
/// (AOF.md section 10).
pub(super) fn del(call: &mut Call<'_>) -> Result {
    let keys = call.keys(1)?;
    let failed = call.ctx.refuse_writes();
    let stats = &call.ctx.stats;
    let mut deleted = 0;
    for key in keys {
        if call.ctx.store.del(key, None) == DelOutcome::Deleted {
            Stats::bump(&stats.del_deleted);
            deleted += 1;
        } else {
            Stats::bump(&stats.del_misses);
        }
    }
    if failed {
        return Err(Value::error(
            "MISCONF Errors writing to the AOF file: the keys are deleted in memory but the \
             deletion is not durable yet; retry until it answers an integer",
        ));
    }
    Ok(Outcome::write(Value::Integer(deleted), deleted > 0))
}

/// `EXISTS key [key ...]`: how many of the keys exist (a key named twice counts twice).
pub(super) fn exists(call: &mut Call<'_>) -> Result {
    let keys = call.keys(1)?;
    let found = keys
        .iter()
        .filter(|key| matches!(call.ctx.store.get(key, None), GetReply::Hit(_)))
        .count();
    Ok(Outcome::reply(Value::Integer(found as i64)))
}

/// `EXPIRE key seconds [NX | XX | GT | LT]`.
pub(super) fn expire(call: &mut Call<'_>) -> Result {
    expire_generic(call, true, true, "expire")
}

/// `PEXPIRE key milliseconds [NX | XX | GT | LT]`.
pub(super) fn pexpire(call: &mut Call<'_>) -> Result {
    expire_generic(call, false, true, "pexpire")
}

/// `EXPIREAT key unix-time-seconds [NX | XX | GT | LT]`.
pub(super) fn expireat(call: &mut Call<'_>) -> Result {
    expire_generic(call, true, false, "expireat")
}

/// `PEXPIREAT key unix-time-milliseconds [NX | XX | GT | LT]`.
pub(super) fn pexpireat(call: &mut Call<'_>) -> Result {
    expire_generic(call, false, false, "pexpireat")
}

/// The `EXPIRE` family: 1 if the key exists and its deadline was set, 0 otherwise. A
/// deadline in the past deletes the key (and answers 1), as in Redis; a deadline beyond
/// `limits.max_ttl` is capped there.
///
/// Of the conditions, `NX` ("only if the key has no expiry") never holds, since every key
/// has one, and `XX` ("only if it has one") always does. `GT` and `LT` would need a
/// compare-and-set of the deadline that the store does not offer; they are refused rather
/// than done racily.
fn expire_generic(call: &mut Call<'_>, seconds: bool, relative: bool, name: &str) -> Result {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &call.args[3..] {
        if is(opt, "nx") {
            nx = true;
        } else if is(opt, "xx") {
            xx = true;
        } else if is(opt, "gt") {
            gt = true;
        } else if is(opt, "lt") {
            lt = true;
        } else {
            return Err(Value::error(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Value::error(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(Value::error(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    if gt || lt {
        return Err(Value::error(
            "ERR the GT and LT options are not supported by sessiond",
        ));
    }
    let mut when = int_arg(&call.args[2])?;
    if seconds {
        when = when.checked_mul(1000).ok_or_else(|| invalid_expire(name))?;
    }
    let now = call.now_ms();
    if relative {
        when = when
            .checked_add(now as i64)
            .ok_or_else(|| invalid_expire(name))?;
    }
    let key = call.key(1)?;
    let stats = &call.ctx.stats;
    if nx {
        // Every key has an expiry, so "only if it has none" never applies.
        return Ok(Outcome::reply(Value::Integer(0)));
    }
    // A negative deadline is simply one in the past.
    let at = (when.max(0) as u64).min(now + call.max_ttl_ms());
    let found = call.ctx.store.expire_at(key, at);
    Stats::bump(if found {
        &stats.touch_hits
    } else {
        &stats.touch_misses
    });
    Ok(Outcome::write(Value::Integer(i64::from(found)), found))
}

/// `TTL key`: seconds to live (rounded as Redis rounds), or -2 if the key does not exist.
/// Never -1: every key expires.
pub(super) fn ttl(call: &mut Call<'_>) -> Result {
    time_to_live(call, |ms| (ms + 500) / 1000)
}

/// `PTTL key`: milliseconds to live, or -2 if the key does not exist.
pub(super) fn pttl(call: &mut Call<'_>) -> Result {
    time_to_live(call, |ms| ms)
}

fn time_to_live(call: &Call<'_>, scale: fn(i64) -> i64) -> Result {
    let key = call.key(1)?;
    Ok(Outcome::reply(Value::Integer(
        match call.ctx.store.get(key, None) {
            GetReply::Hit(entry) => scale(entry.ttl_ms as i64),
            GetReply::Miss => -2,
        },
    )))
}

/// `PERSIST key`: always 0 ("no TTL was removed"), and the TTL stays. Sessions that never
/// expire are what sessiond exists to prevent; an application that calls `PERSIST` keeps
/// working, and its sessions still end.
pub(super) fn persist(call: &mut Call<'_>) -> Result {
    call.key(1)?;
    Ok(Outcome::reply(Value::Integer(0)))
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`: `[next-cursor, [key, ...]]`.
/// Every key present for the whole iteration is returned at least once; a key may be
/// returned more than once, as in Redis. All values are strings, so `TYPE string` filters
/// nothing and any other type matches no key.
pub(super) fn scan(call: &mut Call<'_>) -> Result {
    // Redis parses the cursor as an unsigned decimal; anything else is an invalid cursor.
    let cursor_arg = &call.args[1];
    let cursor = std::str::from_utf8(cursor_arg)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Value::error("ERR invalid cursor"))?;
    let mut pattern = None;
    let mut count = 10;
    let mut type_matches = true;
    let mut j = 2;
    while j < call.args.len() {
        let opt = &call.args[j];
        let Some(next) = call.args.get(j + 1) else {
            return Err(syntax_error());
        };
        if is(opt, "count") {
            let n = int_arg(next)?;
            if n < 1 {
                return Err(syntax_error());
            }
            count = n;
        } else if is(opt, "match") {
            pattern = Some(Pattern::new(next));
        } else if is(opt, "type") {
            type_matches = is(next, "string");
        } else {
            return Err(syntax_error());
        }
        j += 2;
    }
    let pattern = pattern.filter(|p| !p.matches_everything());
    // COUNT is a hint; a huge one must not make one call walk the whole map at once, nor
    // build a reply past the reply budget (`resp.max_reply_bytes`) even if every key it
    // finds is as long as keys may be.
    let longest_key = (call.ctx.limits.max_key_len as usize).max(1);
    let budget_keys = (call.shared.settings.max_reply_bytes / longest_key).max(1);
    let count = (count.min(100_000) as usize).min(budget_keys);
    let (next, keys) = call.ctx.store.scan(cursor, count, |key| {
        type_matches && pattern.as_ref().is_none_or(|p| p.matches(key))
    });
    Ok(Outcome::reply(Value::Array(vec![
        Value::bulk_string(next.to_string()),
        Value::Array(keys.into_iter().map(Value::Bulk).collect()),
    ])))
}

/// `DBSIZE`: entries held, including expired ones the sweep has not reclaimed yet (Redis
/// counts those too).
pub(super) fn dbsize(call: &mut Call<'_>) -> Result {
    Ok(Outcome::reply(Value::Integer(call.ctx.store.len() as i64)))
}

/// `FLUSHDB [ASYNC | SYNC]` and `FLUSHALL [ASYNC | SYNC]`: `OK` after deleting every key;
/// refused unless `resp.allow_flush` is set, because one stray command would log out every
/// user. Each deleted key is persisted as a deletion.
pub(super) fn flush(call: &mut Call<'_>) -> Result {
    match &call.args[1..] {
        [] => {}
        [mode] if is(mode, "async") || is(mode, "sync") => {}
        _ => return Err(syntax_error()),
    }
    if !call.shared.settings.allow_flush {
        let name = String::from_utf8_lossy(&call.args[0]).to_ascii_uppercase();
        return Err(Value::error(format!(
            "ERR {name} is disabled on this server (set resp.allow_flush = true in the sessiond configuration to enable it)"
        )));
    }
    let removed = call.ctx.store.clear();
    Ok(Outcome::write(OK, removed > 0))
}
