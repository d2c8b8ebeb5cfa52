//! String commands: `GET`, `SET`, `SETEX`, `PSETEX`, `GETEX`, `GETDEL`, `MGET`.
//!
//! Every session expires, so every write here sets a deadline: the one asked for, capped at
//! `limits.max_ttl` (a longer TTL is clamped rather than refused, so that an application
//! asking for "remember me for ten years" keeps working, with sessions that end at the
//! operator's maximum), or `resp.default_ttl` when the command gives none, where Redis
//! would keep the key forever.

use sessiond_proto::command::{GetReply, SetMode, SetOutcome};

use super::{int_arg, invalid_expire, is, syntax_error, Call, Outcome, Result};
use crate::resp::frame::{Value, OK};
use crate::stats::Stats;
use crate::store::{Expiry, OutOfMemory};

/// `GET key`: the value, or null.
pub(super) fn get(call: &mut Call<'_>) -> Result {
    let key = call.key(1)?;
    Ok(Outcome::reply(read(call, key, None)))
}

/// Reads `key` (sliding its deadline to now + `touch_ttl_ms` if given) and counts the hit
/// or miss as the native `GET` does.
fn read(call: &Call<'_>, key: &[u8], touch_ttl_ms: Option<u64>) -> Value {
    let stats = &call.ctx.stats;
    match call.ctx.store.get(key, touch_ttl_ms) {
        GetReply::Hit(entry) => {
            Stats::bump(&stats.get_hits);
            Value::Bulk(entry.value)
        }
        GetReply::Miss => {
            Stats::bump(&stats.get_misses);
            Value::Null
        }
    }
}

/// Which command's options [`parse_options`] reads: they accept different sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Set,
    GetEx,
}

/// An expiry option as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// `EX`: seconds from now.
    Ex,
    /// `PX`: milliseconds from now.
    Px,
    /// `EXAT`: Unix time in seconds.
    ExAt,
    /// `PXAT`: Unix time in milliseconds.
    PxAt,
}

impl Unit {
    fn seconds(self) -> bool {
        matches!(self, Unit::Ex | Unit::ExAt)
    }

    fn relative(self) -> bool {
        matches!(self, Unit::Ex | Unit::Px)
    }
}

#[derive(Debug, Default)]
struct Options {
    nx: bool,
    xx: bool,
    get: bool,
    keepttl: bool,
    persist: bool,
    /// The unit and the index of its argument.
    expire: Option<(Unit, usize)>,
}

/// Reads `SET`'s or `GETEX`'s options from argument `from` on, with Redis's rules for
/// which may be combined (anything else is `ERR syntax error`).
fn parse_options(call: &Call<'_>, from: usize, command: Command) -> Result<Options> {
    let args = &call.args;
    let mut o = Options::default();
    let mut j = from;
    while j < args.len() {
        let opt = &args[j];
        let has_next = j + 1 < args.len();
        let set = command == Command::Set;
        if is(opt, "nx") && !o.xx && set {
            o.nx = true;
        } else if is(opt, "xx") && !o.nx && set {
            o.xx = true;
        } else if is(opt, "get") && set {
            o.get = true;
        } else if is(opt, "keepttl") && !o.persist && o.expire.is_none() && set {
            o.keepttl = true;
        } else if is(opt, "persist")
            && command == Command::GetEx
            && o.expire.is_none()
            && !o.keepttl
        {
            o.persist = true;
        } else if let Some(unit) = [
            ("ex", Unit::Ex),
            ("px", Unit::Px),
            ("exat", Unit::ExAt),
            ("pxat", Unit::PxAt),
        ]
        .into_iter()
        .find_map(|(name, unit)| is(opt, name).then_some(unit))
        // A unit may be repeated (the last one wins, as in Redis) but not mixed.
        .filter(|&unit| {
            !o.keepttl && !o.persist && o.expire.is_none_or(|(u, _)| u == unit) && has_next
        }) {
            o.expire = Some((unit, j + 1));
            j += 1;
        } else {
            return Err(syntax_error());
        }
        j += 1;
    }
    Ok(o)
}

/// The absolute deadline (Unix ms) an expiry option asks for, validated as Redis validates
/// it (`name` is the command, for the error), and capped at now + `limits.max_ttl`.
fn deadline(call: &Call<'_>, unit: Unit, arg: &[u8], name: &str) -> Result<u64> {
    let n = int_arg(arg)?;
    if n <= 0 || (unit.seconds() && n > i64::MAX / 1000) {
        return Err(invalid_expire(name));
    }
    let ms = if unit.seconds() { n * 1000 } else { n } as u64;
    let now = call.now_ms();
    let at = if unit.relative() {
        now.checked_add(ms).ok_or_else(|| invalid_expire(name))?
    } else {
        ms
    };
    Ok(at.min(now + call.max_ttl_ms()))
}

/// Refuses a value over `limits.max_value_bytes`.
pub(super) fn check_value(call: &Call<'_>, value: &[u8]) -> Result<()> {
    let max = call.ctx.limits.max_value_len as usize;
    if value.len() > max {
        return Err(Value::error(format!(
            "ERR value is too large ({} bytes; limits.max_value_bytes is {max})",
            value.len()
        )));
    }
    Ok(())
}

/// The reply to a write the memory limit refused: Redis's words, so that clients and
/// operators recognise the condition.
pub(super) fn out_of_memory() -> Value {
    Value::error("OOM command not allowed when used memory > 'maxmemory'.")
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT unix-s | PXAT unix-ms | KEEPTTL]`:
/// `OK`, or null if NX/XX prevented the write; with `GET`, the previous value (or null)
/// whether or not the write happened.
///
/// Without an expiry option the key expires after `resp.default_ttl`; with `KEEPTTL` it
/// keeps its deadline, or gets the default one if it is new.
pub(super) fn set(call: &mut Call<'_>) -> Result {
    let options = parse_options(call, 3, Command::Set)?;
    let expiry = match options.expire {
        Some((unit, at)) => Expiry::At(deadline(call, unit, &call.args[at], "set")?),
        None if options.keepttl => Expiry::KeepOr(call.shared.settings.default_ttl_ms),
        None => Expiry::In(call.shared.settings.default_ttl_ms),
    };
    let mode = if options.nx {
        SetMode::CreateOnly
    } else if options.xx {
        SetMode::UpdateOnly
    } else {
        SetMode::Upsert
    };
    write(call, expiry, mode, options.get)
}

/// Writes `args[2]` under `args[1]` and builds `SET`'s reply.
fn write(call: &Call<'_>, expiry: Expiry, mode: SetMode, get: bool) -> Result {
    let key = call.key(1)?;
    let value = &call.args[2];
    check_value(call, value)?;
    let store = &call.ctx.store;
    let stats = &call.ctx.stats;
    let mut previous = None;
    let outcome = match store.set_limited(key, value, expiry, mode, get.then_some(&mut previous)) {
        Ok(outcome) => outcome,
        // Counted in STATS memory_refused, by the store.
        Err(OutOfMemory) => return Err(out_of_memory()),
    };
    let reply = match (get, outcome) {
        (true, _) => previous.map_or(Value::Null, |entry| Value::Bulk(entry.value)),
        (false, SetOutcome::Stored { .. }) => OK,
        (false, _) => Value::Null,
    };
    let stored = matches!(outcome, SetOutcome::Stored { .. });
    Stats::bump(if stored {
        &stats.set_stored
    } else {
        &stats.set_rejected
    });
    Ok(Outcome::write(reply, stored))
}

/// `SETEX key seconds value`: `OK`.
pub(super) fn setex(call: &mut Call<'_>) -> Result {
    set_with_ttl(call, Unit::Ex, "setex")
}

/// `PSETEX key milliseconds value`: `OK`.
pub(super) fn psetex(call: &mut Call<'_>) -> Result {
    set_with_ttl(call, Unit::Px, "psetex")
}

fn set_with_ttl(call: &mut Call<'_>, unit: Unit, name: &str) -> Result {
    let at = deadline(call, unit, &call.args[2], name)?;
    // SETEX's argument order is key, TTL, value; `write` reads the value from args[2].
    call.args.swap(2, 3);
    write(call, Expiry::At(at), SetMode::Upsert, false)
}

/// `GETEX key [EX s | PX ms | EXAT unix-s | PXAT unix-ms | PERSIST]`: the value (or null),
/// after moving its deadline. A deadline in the past deletes the key, as in Redis.
/// `PERSIST` reads without changing the TTL: sessions cannot be made permanent.
pub(super) fn getex(call: &mut Call<'_>) -> Result {
    let options = parse_options(call, 2, Command::GetEx)?;
    let key = call.key(1)?;
    let Some((unit, at)) = options.expire else {
        return Ok(Outcome::reply(read(call, key, None)));
    };
    let at = deadline(call, unit, &call.args[at], "getex")?;
    let now = call.now_ms();
    if at <= now {
        return getdel_key(call, key);
    }
    let value = read(call, key, Some(at - now));
    let mutated = value != Value::Null;
    Ok(Outcome::write(value, mutated))
}

/// `GETDEL key`: the value (or null), after deleting the key.
pub(super) fn getdel(call: &mut Call<'_>) -> Result {
    let key = call.key(1)?;
    getdel_key(call, key)
}

fn getdel_key(call: &Call<'_>, key: &[u8]) -> Result {
    let stats = &call.ctx.stats;
    Ok(match call.ctx.store.getdel(key) {
        GetReply::Hit(entry) => {
            Stats::bump(&stats.get_hits);
            Stats::bump(&stats.del_deleted);
            Outcome::write(Value::Bulk(entry.value), true)
        }
        GetReply::Miss => {
            Stats::bump(&stats.get_misses);
            Outcome::reply(Value::Null)
        }
    })
}

/// `MSET key value [key value ...]`: `OK`. Every key expires after `resp.default_ttl`, as
/// after a `SET` without a TTL.
///
/// All or nothing, as in Redis: the writes run as one store transaction, so no other client
/// sees some of them without the others, and the append-only file holds them in one record.
/// If the memory limit refuses one write, those before it are undone. (Django's cache sends
/// `MSET` in its `set_many`.)
pub(super) fn mset(call: &mut Call<'_>) -> Result {
    if call.args.len().is_multiple_of(2) {
        return Err(super::wrong_arity("mset"));
    }
    let mut pairs = Vec::with_capacity(call.args.len() / 2);
    for at in (1..call.args.len()).step_by(2) {
        let key = call.key(at)?;
        let value = &call.args[at + 1];
        check_value(call, value)?;
        pairs.push((key, value));
    }
    let keys: Vec<&[u8]> = pairs.iter().map(|(key, _)| &key[..]).collect();
    let store = &call.ctx.store;
    let expiry = Expiry::In(call.shared.settings.default_ttl_ms);
    let written = store.transaction(&keys, |tx| {
        for (key, value) in &pairs {
            if store
                .set_limited(key, value, expiry, SetMode::Upsert, None)
                .is_err()
            {
                tx.rollback();
                return Err(OutOfMemory);
            }
        }
        Ok(())
    });
    match written {
        Ok(Ok(())) => {
            for _ in &pairs {
                Stats::bump(&call.ctx.stats.set_stored);
            }
            Ok(Outcome::write(OK, true))
        }
        Ok(Err(OutOfMemory)) => Err(out_of_memory()),
        Err(too_large) => Err(Value::error(format!("ERR {too_large}"))),
    }
}

/// `MGET key [key ...]`: an array with each value, or null for a missing key.
///
/// The reply is bounded by `[resp] max_reply_bytes`: a request of a few kilobytes can name
/// a 1 MiB value thousands of times, and a reply built in full once took the server past
/// 2 GiB and aborted it. Values are read one by one and the command stops with an error as
/// soon as their sum passes the budget, so the server never holds more than the budget plus
/// one value for it.
pub(super) fn mget(call: &mut Call<'_>) -> Result {
    let keys = call.keys(1)?;
    let budget = call.shared.settings.max_reply_bytes;
    let mut size = 0usize;
    let mut values = Vec::with_capacity(keys.len());
    for key in &keys {
        let value = read(call, key, None);
        size = size.saturating_add(value.encoded_len());
        if size > budget {
            Stats::bump(&call.ctx.stats.replies_too_large);
            return Err(Value::error(format!(
                "ERR reply too large: the values add up to more than {budget} bytes \
                 (resp.max_reply_bytes); ask for fewer keys at a time"
            )));
        }
        values.push(value);
    }
    Ok(Outcome::reply(Value::Array(values)))
}
