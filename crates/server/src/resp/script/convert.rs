//! Redis's conversions between command replies and Lua values, both ways, as Redis
//! documents them for `EVAL` (RESP2 conversions; `redis.setresp(3)` is not supported).
//!
//! | reply                    | Lua                     | back to a reply            |
//! |--------------------------|-------------------------|----------------------------|
//! | integer                  | number                  | integer (truncated)        |
//! | bulk string              | string                  | bulk string                |
//! | null (bulk or array)     | `false`                 | null                       |
//! | array (map, set: flat)   | table, 1..n             | array, up to the first nil |
//! | status `+OK`             | `{ok = "OK"}`           | status                     |
//! | error `-ERR x`           | `{err = "ERR x"}`       | error                      |
//! |                          | `true`                  | integer 1                  |
//! |                          | `nil`, other types      | null                       |
//!
//! A script's reply is bounded as a multi-key command's is (`resp.max_reply_bytes`): a
//! table that names one large string a thousand times costs Lua a few kilobytes and the
//! reply a thousand copies. Nesting is bounded too, since a table may contain itself.

use std::borrow::Cow;

use bytes::Bytes;
use mlua::{Lua, Table, Value as Lua51};

use crate::resp::frame::{Value, OK};

/// How deeply a script's reply may nest tables (Redis stops at its Lua stack limit).
pub(crate) const MAX_REPLY_DEPTH: usize = 100;

/// Why a script's return value cannot be a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadReply {
    /// Its encoding is over `resp.max_reply_bytes`.
    TooLarge,
    /// Its tables nest more than [`MAX_REPLY_DEPTH`] deep (or contain themselves).
    TooDeep,
}

/// A command's reply as the Lua value `redis.call` returns.
pub(crate) fn to_lua(lua: &Lua, reply: Value) -> mlua::Result<Lua51> {
    Ok(match reply {
        Value::Integer(n) => Lua51::Number(n as f64),
        Value::Bulk(data) => Lua51::String(lua.create_string(&data)?),
        Value::Verbatim(text) => Lua51::String(lua.create_string(text)?),
        Value::Null | Value::NullArray => Lua51::Boolean(false),
        Value::Simple(status) => Lua51::Table(single(lua, "ok", status)?),
        Value::Error(message) => Lua51::Table(single(lua, "err", &message)?),
        Value::Array(items) | Value::Set(items) => sequence(lua, items)?,
        // RESP2 writes a map as a flat array of keys and values; so does Redis for scripts.
        Value::Map(pairs) => sequence(lua, pairs.into_iter().flat_map(|(k, v)| [k, v]))?,
    })
}

/// `{field = text}`.
fn single(lua: &Lua, field: &str, text: &str) -> mlua::Result<Table> {
    let table = lua.create_table_with_capacity(0, 1)?;
    table.raw_set(field, lua.create_string(text)?)?;
    Ok(table)
}

fn sequence(lua: &Lua, items: impl IntoIterator<Item = Value>) -> mlua::Result<Lua51> {
    let table = lua.create_table()?;
    for (i, item) in items.into_iter().enumerate() {
        table.raw_seti(i + 1, to_lua(lua, item)?)?;
    }
    Ok(Lua51::Table(table))
}

/// The error `{err = ...}` table of `redis.error_reply` and of failed commands.
pub(crate) fn error_table(lua: &Lua, message: &str) -> mlua::Result<Lua51> {
    Ok(Lua51::Table(single(lua, "err", message)?))
}

/// The `err` message of a Lua error table, if `value` is one.
pub(crate) fn error_message(value: &Lua51) -> Option<String> {
    match value {
        Lua51::Table(table) => match table.raw_get::<Lua51>("err").ok()? {
            Lua51::String(s) => Some(s.to_string_lossy()),
            _ => None,
        },
        _ => None,
    }
}

/// A script's return value as a reply, within `budget` bytes of encoding.
pub(crate) fn to_reply(value: &Lua51, budget: usize) -> Result<Value, BadReply> {
    let mut left = budget;
    reply(value, &mut left, 0)
}

fn reply(value: &Lua51, left: &mut usize, depth: usize) -> Result<Value, BadReply> {
    let converted = match value {
        Lua51::Boolean(true) => Value::Integer(1),
        // Redis casts to `long long`: toward zero; NaN (undefined in C) is 0 here.
        Lua51::Number(n) => Value::Integer(*n as i64),
        Lua51::Integer(n) => Value::Integer(*n),
        Lua51::String(s) => Value::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        Lua51::Table(table) => table_reply(table, left, depth)?,
        _ => Value::Null,
    };
    // Containers were charged by their items; charge only the scalars here.
    if !matches!(converted, Value::Array(_)) {
        charge(left, converted.encoded_len())?;
    }
    Ok(converted)
}

fn charge(left: &mut usize, bytes: usize) -> Result<(), BadReply> {
    *left = left.checked_sub(bytes).ok_or(BadReply::TooLarge)?;
    Ok(())
}

fn table_reply(table: &Table, left: &mut usize, depth: usize) -> Result<Value, BadReply> {
    // Redis looks for `err`, then `ok`, with raw reads, and only string fields count.
    if let Ok(Lua51::String(message)) = table.raw_get::<Lua51>("err") {
        return Ok(Value::error(message.to_string_lossy()));
    }
    if let Ok(Lua51::String(status)) = table.raw_get::<Lua51>("ok") {
        return Ok(status_reply(&status.as_bytes()));
    }
    if depth >= MAX_REPLY_DEPTH {
        return Err(BadReply::TooDeep);
    }
    charge(left, Value::Array(Vec::new()).encoded_len())?;
    let mut items = Vec::new();
    for i in 1.. {
        let item = match table.raw_get::<Lua51>(i) {
            Ok(Lua51::Nil) | Err(_) => break,
            Ok(item) => item,
        };
        items.push(reply(&item, left, depth + 1)?);
    }
    Ok(Value::Array(items))
}

/// A status reply. The reply type holds only static status strings, so the statuses
/// commands answer are kept as such; any other status a script makes up is answered as a
/// bulk string with the same text (clients read both as a string).
fn status_reply(status: &[u8]) -> Value {
    const STATUSES: [&str; 4] = ["OK", "PONG", "QUEUED", "RESET"];
    match STATUSES.iter().find(|s| s.as_bytes() == status) {
        Some(&"OK") => OK,
        Some(s) => Value::Simple(s),
        None => Value::Bulk(Bytes::copy_from_slice(status)),
    }
}

/// A `redis.call` argument as the command's argument: strings as they are, numbers as
/// Redis writes them (integers without a fraction, others in the shortest form that reads
/// back the same). Anything else is refused, with Redis's message.
pub(crate) fn command_arg(value: &Lua51) -> Result<Bytes, &'static str> {
    match value {
        Lua51::String(s) => Ok(Bytes::copy_from_slice(&s.as_bytes())),
        Lua51::Integer(n) => Ok(Bytes::from(n.to_string())),
        Lua51::Number(n) => Ok(Bytes::from(number_text(*n).into_owned())),
        _ => Err("ERR Lua redis lib command arguments must be strings or integers"),
    }
}

fn number_text(n: f64) -> Cow<'static, str> {
    // Exactly representable integers print without ".0", as Redis's `%.17g` does.
    if n.fract() == 0.0 && n.abs() < 1e17 {
        Cow::Owned(format!("{}", n as i64))
    } else if n.is_nan() {
        Cow::Borrowed("nan")
    } else if n.is_infinite() {
        Cow::Borrowed(if n > 0.0 { "inf" } else { "-inf" })
    } else {
        // `{:?}` is the shortest text that reads back as the same double.
        Cow::Owned(format!("{n:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(lua: &Lua, reply: Value) -> Value {
        let value = to_lua(lua, reply).unwrap();
        to_reply(&value, usize::MAX).unwrap()
    }

    #[test]
    fn replies_to_lua_and_back() {
        let lua = Lua::new();
        let bulk = Value::bulk_static("v");
        assert_eq!(round_trip(&lua, Value::Integer(-7)), Value::Integer(-7));
        assert_eq!(round_trip(&lua, bulk.clone()), bulk);
        assert_eq!(round_trip(&lua, OK), OK);
        let error = Value::error("ERR no");
        assert_eq!(round_trip(&lua, error.clone()), error);
        let nested = Value::Array(vec![Value::Integer(1), Value::Array(vec![bulk.clone()])]);
        assert_eq!(round_trip(&lua, nested.clone()), nested);
        // RESP3-only shapes come back as their RESP2 form.
        let map = Value::Map(vec![(bulk.clone(), Value::Integer(2))]);
        assert_eq!(
            round_trip(&lua, map),
            Value::Array(vec![bulk.clone(), Value::Integer(2)])
        );
        assert_eq!(
            round_trip(&lua, Value::Verbatim("txt".into())),
            Value::bulk_static("txt")
        );
    }

    #[test]
    fn null_is_false_in_lua_and_false_is_null_back() {
        let lua = Lua::new();
        assert_eq!(to_lua(&lua, Value::Null).unwrap(), Lua51::Boolean(false));
        assert_eq!(round_trip(&lua, Value::Null), Value::Null);
        // An array stops at the first nil, but a null inside is `false` and is kept.
        let with_null = Value::Array(vec![Value::Integer(1), Value::Null, Value::Integer(3)]);
        assert_eq!(round_trip(&lua, with_null.clone()), with_null);
    }

    fn eval(lua: &Lua, code: &str) -> Result<Value, BadReply> {
        to_reply(&lua.load(code).eval::<Lua51>().unwrap(), 1 << 20)
    }

    #[test]
    fn lua_values_to_replies_as_redis_documents() {
        let lua = Lua::new();
        assert_eq!(eval(&lua, "return 3.99"), Ok(Value::Integer(3)));
        assert_eq!(eval(&lua, "return -3.99"), Ok(Value::Integer(-3)));
        assert_eq!(eval(&lua, "return true"), Ok(Value::Integer(1)));
        assert_eq!(eval(&lua, "return false"), Ok(Value::Null));
        assert_eq!(eval(&lua, "return nil"), Ok(Value::Null));
        assert_eq!(eval(&lua, "return 'x'"), Ok(Value::bulk_static("x")));
        assert_eq!(
            eval(&lua, "return {1, 'a', nil, 4}"),
            Ok(Value::Array(vec![
                Value::Integer(1),
                Value::bulk_static("a")
            ]))
        );
        assert_eq!(eval(&lua, "return {ok = 'OK'}"), Ok(OK));
        assert_eq!(
            eval(&lua, "return {ok = 'Fine'}"),
            Ok(Value::bulk_static("Fine"))
        );
        assert_eq!(
            eval(&lua, "return {err = 'MY error'}"),
            Ok(Value::error("MY error"))
        );
        // `err` wins over `ok`, and a non-string `err` is not an error.
        assert_eq!(
            eval(&lua, "return {err = 'E x', ok = 'OK'}"),
            Ok(Value::error("E x"))
        );
        assert_eq!(
            eval(&lua, "return {err = 1, 5}"),
            Ok(Value::Array(vec![Value::Integer(5)]))
        );
        assert_eq!(eval(&lua, "return function() end"), Ok(Value::Null));
    }

    #[test]
    fn replies_are_bounded_in_size_and_depth() {
        let lua = Lua::new();
        let wide =
            "local s = string.rep('x', 1000) local t = {} for i = 1, 2000 do t[i] = s end return t";
        assert_eq!(eval(&lua, wide), Err(BadReply::TooLarge));
        assert_eq!(
            eval(&lua, "local t = {} t[1] = t return t"),
            Err(BadReply::TooDeep)
        );
    }

    #[test]
    fn command_arguments_are_strings_or_numbers() {
        let lua = Lua::new();
        let arg = |code: &str| command_arg(&lua.load(code).eval::<Lua51>().unwrap());
        assert_eq!(arg("return 'k'"), Ok(Bytes::from_static(b"k")));
        assert_eq!(arg("return 10"), Ok(Bytes::from_static(b"10")));
        assert_eq!(arg("return -2.5"), Ok(Bytes::from_static(b"-2.5")));
        assert_eq!(arg("return 0.1"), Ok(Bytes::from_static(b"0.1")));
        assert!(arg("return {}").is_err());
        assert!(arg("return true").is_err());
        assert!(arg("return nil").is_err());
    }
}
