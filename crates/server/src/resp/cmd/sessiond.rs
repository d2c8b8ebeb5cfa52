//! sessiond's own commands, for what Redis has no command for: `SESSIOND.SET`,
//! `SESSIOND.SESSIONS`, `SESSIOND.ENDALL` and `SESSIOND.ROTATE`, the RESP forms of the native
//! `SET_SESSION`, `LIST_SESSIONS`, `END_ALL` and `ROTATE` (proto/PROTOCOL.md 5.10-5.13).
//!
//! The `SESSIOND.` prefix follows Redis modules' convention (`JSON.SET`, `FT.SEARCH`): no
//! Redis command has a dot in its name, so these can never shadow one, and a client calls
//! them with `execute_command("SESSIOND.SET", ...)`. Each runs the same store operation, and
//! so has the same atomicity and the same rules, as its native twin.

use bytes::Bytes;
use sessiond_proto::command::{
    LimitPolicy, OwnerLimit, SessionInfo, SessionList, SessionWriteOutcome, SetMode, MAX_OWNER_LEN,
};
use sessiond_proto::Limits;

use super::strings::check_value;
use super::{int_arg, invalid_expire, is, syntax_error, Call, Outcome, Result};
use crate::cmd::owner;
use crate::resp::frame::Value;
use crate::store::{Expiry, SessionError, SessionOptions};

/// `SESSIOND.SET key value [NX | XX | IFVERSION v] [EX s | PX ms] [OWNER owner]
/// [LIFETIME ms] [LIMIT n [REFUSE | ENDLRU]]`: `[version, ended]`, or null when NX or XX
/// prevented the write.
///
/// Without `EX`/`PX` the session expires after `resp.default_ttl`; a longer TTL than
/// `limits.max_ttl` is clamped, as `SET` clamps it.
pub(super) fn set(call: &mut Call<'_>) -> Result {
    let key = call.key(1)?;
    let value = &call.args[2];
    check_value(call, value)?;
    let mut mode = SetMode::Upsert;
    let mut ttl_ms = call.shared.settings.default_ttl_ms;
    let mut lifetime_ms = None;
    let mut binding = Binding::default();
    let mut j = 3;
    while j < call.args.len() {
        let opt = &call.args[j];
        let next = call.args.get(j + 1);
        match next {
            _ if is(opt, "nx") && mode == SetMode::Upsert => mode = SetMode::CreateOnly,
            _ if is(opt, "xx") && mode == SetMode::Upsert => mode = SetMode::UpdateOnly,
            Some(v) if is(opt, "ifversion") && mode == SetMode::Upsert => {
                mode = SetMode::IfVersion(version_arg(v)?);
                j += 1;
            }
            Some(n) if is(opt, "ex") || is(opt, "px") => {
                let scale = if is(opt, "ex") { 1000 } else { 1 };
                ttl_ms = positive(n, scale)
                    .ok_or_else(|| invalid_expire("sessiond.set"))?
                    .min(call.max_ttl_ms());
                j += 1;
            }
            Some(ms) if is(opt, "lifetime") => {
                lifetime_ms = Some(
                    positive(ms, 1)
                        .filter(|ms| *ms <= Limits::HARD_MAX_TTL_MS)
                        .ok_or_else(|| {
                            Value::error("ERR LIFETIME must be 1 to 315360000000 milliseconds")
                        })?,
                );
                j += 1;
            }
            Some(_) if binding.parse(call, &mut j)? => {}
            _ => return Err(syntax_error()),
        }
        j += 1;
    }
    binding.check()?;
    let now = call.now_ms();
    let options = SessionOptions {
        owner: binding.owner.as_deref(),
        absolute_deadline: lifetime_ms.map(|ms| now.saturating_add(ms)),
        owner_limit: binding.limit.map(owner::limit),
    };
    let result = call
        .ctx
        .store
        .set_session(key, value, Expiry::In(ttl_ms), mode, &options);
    written(result.map(owner::set_outcome), Value::Null)
}

/// `SESSIOND.SESSIONS owner [COUNT n]`: a map `total` (the owner's live sessions) and
/// `sessions`, the most recently used first, each a map of `key`, `version`, `created_ms`,
/// `last_access_ms`, `ttl_ms` and `deadline_ms` (null if none). At most `n` sessions, and
/// no more than fit `resp.max_reply_bytes`: `total` above the number listed says so.
pub(super) fn sessions(call: &mut Call<'_>) -> Result {
    let owner = owner_arg(&call.args[1])?;
    let count = match call.args.get(2) {
        None => 0,
        Some(word) if is(word, "count") && call.args.len() == 4 => {
            u32::try_from(int_arg(&call.args[3])?)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Value::error("ERR COUNT must be a positive integer"))?
        }
        Some(_) => return Err(syntax_error()),
    };
    let now = call.now_ms();
    let sessions = call
        .ctx
        .store
        .sessions_of(&owner)
        .into_iter()
        .map(|session| owner::session_info(session, now))
        .collect();
    let budget = call.shared.settings.max_reply_bytes;
    let list = SessionList::fitting_by(sessions, count, budget, |s| session_value(s).encoded_len());
    Ok(Outcome::reply(Value::Map(vec![
        (Value::bulk_static("total"), int(list.total)),
        (
            Value::bulk_static("sessions"),
            Value::Array(list.sessions.iter().map(session_value).collect()),
        ),
    ])))
}

/// `SESSIOND.ENDALL owner [EXCEPT key]`: how many of the owner's sessions were ended.
///
/// Like `DEL`, it runs while the AOF cannot be written (a logout must take effect at once)
/// and then answers `MISCONF`: the ending is not durable yet.
pub(super) fn end_all(call: &mut Call<'_>) -> Result {
    let owner = owner_arg(&call.args[1])?;
    let except = match call.args.get(2) {
        None => None,
        Some(word) if is(word, "except") && call.args.len() == 4 => Some(call.key(3)?.clone()),
        Some(_) => return Err(syntax_error()),
    };
    let failed = call.ctx.refuse_writes();
    let ended = call.ctx.store.end_all(&owner, except.as_deref());
    if failed {
        return Err(Value::error(
            "MISCONF Errors writing to the AOF file: the sessions are ended in memory but the \
             ending is not durable yet; retry until it answers an integer",
        ));
    }
    Ok(Outcome::write(int(ended), ended > 0))
}

/// `SESSIOND.ROTATE key newkey [IFVERSION v] [OWNER owner [LIMIT n [REFUSE | ENDLRU]]]`:
/// `[version, ended]`; null if `key` does not exist; `-BUSYKEY` if `newkey` does.
pub(super) fn rotate(call: &mut Call<'_>) -> Result {
    let old_key = call.key(1)?;
    let new_key = call.key(2)?;
    if old_key == new_key {
        return Err(Value::error("ERR the new key must differ from the old one"));
    }
    let mut if_version = None;
    let mut binding = Binding::default();
    let mut j = 3;
    while j < call.args.len() {
        let opt = &call.args[j];
        match call.args.get(j + 1) {
            Some(v) if is(opt, "ifversion") && if_version.is_none() => {
                if_version = Some(version_arg(v)?);
                j += 1;
            }
            Some(_) if binding.parse(call, &mut j)? => {}
            _ => return Err(syntax_error()),
        }
        j += 1;
    }
    binding.check()?;
    let bind = binding
        .owner
        .as_deref()
        .map(|owner| (owner, binding.limit.map(owner::limit)));
    let result = call.ctx.store.rotate(old_key, new_key, if_version, bind);
    written(
        result.map(owner::rotate_outcome),
        Value::error("BUSYKEY Target key name already exists."),
    )
}

/// The reply to `SESSIOND.SET` or `SESSIOND.ROTATE`, with `exists` for a key that must not
/// exist but does. The outcomes a client must tell apart from a miss are errors with codes
/// of their own, which redis-py and node-redis raise as exceptions carrying the message.
fn written(
    result: std::result::Result<SessionWriteOutcome, SessionError>,
    exists: Value,
) -> Result {
    match result {
        Ok(SessionWriteOutcome::Stored { version, ended }) => Ok(Outcome::write(
            Value::Array(vec![int(version), int(ended)]),
            true,
        )),
        Ok(SessionWriteOutcome::NotFound) => Ok(Outcome::reply(Value::Null)),
        // SET's NX: null, as Redis answers SET NX on an existing key. ROTATE's new key
        // taken: Redis's error for a target key that exists (RESTORE, COPY).
        Ok(SessionWriteOutcome::Exists) => match exists {
            Value::Error(_) => Err(exists),
            _ => Ok(Outcome::reply(exists)),
        },
        Ok(SessionWriteOutcome::VersionMismatch { current }) => Err(Value::error(format!(
            "VERSIONMISMATCH the session is at version {current}"
        ))),
        Ok(SessionWriteOutcome::OwnerLimit) => Err(Value::error(
            "OWNERLIMIT the owner has as many sessions as its limit allows",
        )),
        Err(SessionError::OutOfMemory(_)) => Err(super::strings::out_of_memory()),
        Err(error) => Err(Value::error(format!("ERR {error}"))),
    }
}

/// One session of a `SESSIOND.SESSIONS` reply.
fn session_value(session: &SessionInfo) -> Value {
    let field = Value::bulk_static;
    Value::Map(vec![
        (field("key"), Value::Bulk(session.key.clone())),
        (field("version"), int(session.version)),
        (field("created_ms"), int(session.created_ms)),
        (field("last_access_ms"), int(session.last_access_ms)),
        (field("ttl_ms"), int(session.ttl_ms)),
        (
            field("deadline_ms"),
            session.deadline_ms.map_or(Value::Null, int),
        ),
    ])
}

/// An integer reply for a `u64` (versions, counts and Unix times all fit an `i64`; a value
/// that did not would be shown as the largest one rather than wrap negative).
fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A positive integer argument times `scale`, or `None`.
fn positive(arg: &[u8], scale: u64) -> Option<u64> {
    let n = u64::try_from(int_arg(arg).ok()?).ok().filter(|n| *n > 0)?;
    n.checked_mul(scale)
}

/// A version argument: a positive integer.
fn version_arg(arg: &[u8]) -> Result<u64> {
    positive(arg, 1).ok_or_else(|| Value::error("ERR IFVERSION must be a positive integer"))
}

/// An owner argument: 1 to [`MAX_OWNER_LEN`] bytes.
fn owner_arg(arg: &Bytes) -> Result<Bytes> {
    if arg.is_empty() || arg.len() > MAX_OWNER_LEN {
        return Err(Value::error(format!(
            "ERR an owner must be 1 to {MAX_OWNER_LEN} bytes"
        )));
    }
    Ok(arg.clone())
}

/// The `OWNER owner` and `LIMIT n [REFUSE | ENDLRU]` options of `SESSIOND.SET` and
/// `SESSIOND.ROTATE`.
#[derive(Debug, Default)]
struct Binding {
    owner: Option<Bytes>,
    limit: Option<OwnerLimit>,
}

impl Binding {
    /// If `args[*j]` is `OWNER` or `LIMIT`, reads the option and moves `*j` to its last
    /// argument; otherwise says it is not one of these.
    fn parse(&mut self, call: &Call<'_>, j: &mut usize) -> Result<bool> {
        let opt = &call.args[*j];
        if is(opt, "owner") {
            let owner = call.args.get(*j + 1).ok_or_else(syntax_error)?;
            self.owner = Some(owner_arg(owner)?);
            *j += 1;
        } else if is(opt, "limit") {
            let (limit, used) = limit_args(call, *j)?;
            self.limit = Some(limit);
            *j += used;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// A limit needs an owner to apply to.
    fn check(&self) -> Result<()> {
        if self.limit.is_some() && self.owner.is_none() {
            return Err(Value::error("ERR LIMIT needs OWNER"));
        }
        Ok(())
    }
}

/// `LIMIT n [REFUSE | ENDLRU]` at `args[at]`: the limit and how many arguments after
/// `LIMIT` it used.
fn limit_args(call: &Call<'_>, at: usize) -> Result<(OwnerLimit, usize)> {
    let max = call
        .args
        .get(at + 1)
        .and_then(|n| positive(n, 1))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Value::error("ERR LIMIT must be a positive integer"))?;
    let policy = call.args.get(at + 2).and_then(|word| {
        if is(word, "refuse") {
            Some(LimitPolicy::Refuse)
        } else if is(word, "endlru") {
            Some(LimitPolicy::EndLeastRecentlyUsed)
        } else {
            None
        }
    });
    Ok(match policy {
        Some(policy) => (OwnerLimit { max, policy }, 2),
        None => (
            OwnerLimit {
                max,
                policy: LimitPolicy::Refuse,
            },
            1,
        ),
    })
}
