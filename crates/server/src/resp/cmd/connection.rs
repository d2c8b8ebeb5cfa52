//! Connection commands: `PING`, `ECHO`, `AUTH`, `HELLO`, `SELECT`, `CLIENT`, `QUIT`.

use bytes::Bytes;

use super::{int_arg, is, syntax_error, unknown_subcommand, wrong_arity, Call, Outcome, Result};
use crate::auth::DEFAULT_USER;
use crate::resp::frame::{Value, Version, OK};

/// The Redis version whose commands and replies the RESP listener follows, as `HELLO` and
/// `INFO` report it. Clients that check the version before using a command (`GETEX` is 6.2,
/// `SET ... NX GET` 7.0) see one that has them.
pub(crate) const REDIS_COMPAT_VERSION: &str = "7.2.0";

/// `PING [message]`: `PONG`, or the message.
pub(super) fn ping(call: &mut Call<'_>) -> Result {
    Ok(Outcome::reply(match &call.args[1..] {
        [] => Value::Simple("PONG"),
        [message] => Value::Bulk(message.clone()),
        _ => return Err(wrong_arity("ping")),
    }))
}

/// `ECHO message`: the message.
pub(super) fn echo(call: &mut Call<'_>) -> Result {
    Ok(Outcome::reply(Value::Bulk(call.args[1].clone())))
}

/// `AUTH [username] password`: `OK`, or `WRONGPASS`. Users are `[[auth.users]]`, and
/// `default` (the deprecated `resp.password`); `AUTH password` is `AUTH default password`,
/// as in Redis. On a server without users, `AUTH password` is Redis's error for that case,
/// and `AUTH default anything` succeeds (Redis's default user has `nopass`).
pub(super) fn auth(call: &mut Call<'_>) -> Result {
    let (username, password) = match &call.args[1..] {
        [password] => (None, password.clone()),
        [username, password] => (Some(username.clone()), password.clone()),
        _ => return Err(syntax_error()),
    };
    if username.is_none() && !call.client.access.required() {
        return Err(Value::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ));
    }
    match authenticate(call, username.as_deref(), &password) {
        Ok(()) => Ok(Outcome::reply(OK)),
        Err(failed) => Ok(failed),
    }
}

/// Checks a username and password; on success the connection is that user. A failure is
/// the `WRONGPASS` outcome to answer with, possibly delayed (see
/// [`Access::login`](crate::access::Access::login)).
fn authenticate(
    call: &mut Call<'_>,
    username: Option<&[u8]>,
    password: &[u8],
) -> std::result::Result<(), Outcome> {
    let wrongpass = |delay| Outcome {
        delay,
        ..Outcome::reply(Value::error(
            "WRONGPASS invalid username-password pair or user is disabled.",
        ))
    };
    let user = match username {
        None => DEFAULT_USER,
        // A name that is not UTF-8 is no configured user's; it still counts as a failure.
        Some(name) => std::str::from_utf8(name).unwrap_or("\u{fffd}"),
    };
    // Without users every client is already the admin; only `default` is a name then, as
    // in a Redis without ACLs.
    if !call.client.access.required() && user != DEFAULT_USER {
        return Err(wrongpass(None));
    }
    let ctx = call.ctx;
    match call
        .client
        .access
        .login(&ctx.auth, &ctx.stats, user, password)
    {
        Ok(_) => Ok(()),
        Err(failed) => Err(wrongpass(failed.delay)),
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`: switches to RESP2 or
/// RESP3 and answers with a map describing the server, in the new protocol.
pub(super) fn hello(call: &mut Call<'_>) -> Result {
    let mut version = None;
    if let Some(arg) = call.args.get(1) {
        let n = super::super::decode::parse_i64(arg).ok_or_else(|| {
            Value::error("ERR Protocol version is not an integer or out of range")
        })?;
        version = Some(match n {
            2 => Version::Resp2,
            3 => Version::Resp3,
            _ => return Err(Value::error("NOPROTO unsupported protocol version")),
        });
    }
    let mut credentials = None;
    let mut name = None;
    let mut j = 2;
    while j < call.args.len() {
        let opt = &call.args[j];
        let more = call.args.len() - 1 - j;
        if is(opt, "auth") && more >= 2 {
            credentials = Some((call.args[j + 1].clone(), call.args[j + 2].clone()));
            j += 3;
        } else if is(opt, "setname") && more >= 1 {
            name = Some(call.args[j + 1].clone());
            j += 2;
        } else {
            return Err(Value::error(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    if let Some((username, password)) = credentials {
        if let Err(failed) = authenticate(call, Some(&username), &password) {
            return Ok(failed);
        }
    }
    if !call.client.access.is_authenticated() {
        return Err(Value::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        ));
    }
    if let Some(name) = name {
        set_name(call, name)?;
    }
    if let Some(version) = version {
        call.client.version = version;
    }
    let s = Value::bulk_static;
    Ok(Outcome::reply(Value::Map(vec![
        (s("server"), s("sessiond")),
        (s("version"), s(REDIS_COMPAT_VERSION)),
        (s("proto"), Value::Integer(call.client.version.number())),
        (s("id"), Value::Integer(call.client.id as i64)),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Value::Array(Vec::new())),
    ])))
}

/// `SELECT index`: only database 0 exists.
pub(super) fn select(call: &mut Call<'_>) -> Result {
    match int_arg(&call.args[1])? {
        0 => Ok(Outcome::reply(OK)),
        _ => Err(Value::error("ERR DB index is out of range")),
    }
}

/// `CLIENT ID | GETNAME | SETNAME name | SETINFO LIB-NAME|LIB-VER value | HELP`.
pub(super) fn client(call: &mut Call<'_>) -> Result {
    let sub = call.args[1].clone();
    let argc = call.args.len();
    let arity = |n: usize, name: &str| {
        if argc == n {
            Ok(())
        } else {
            Err(wrong_arity(&format!("client|{name}")))
        }
    };
    if is(&sub, "id") {
        arity(2, "id")?;
        Ok(Outcome::reply(Value::Integer(call.client.id as i64)))
    } else if is(&sub, "getname") {
        arity(2, "getname")?;
        Ok(Outcome::reply(
            call.client.name.clone().map_or(Value::Null, Value::Bulk),
        ))
    } else if is(&sub, "setname") {
        arity(3, "setname")?;
        set_name(call, call.args[2].clone())?;
        Ok(Outcome::reply(OK))
    } else if is(&sub, "setinfo") {
        arity(4, "setinfo")?;
        let (attr, value) = (&call.args[2], &call.args[3]);
        let label = if is(attr, "lib-name") {
            "lib-name"
        } else if is(attr, "lib-ver") {
            "lib-ver"
        } else {
            return Err(Value::error(format!(
                "ERR Unrecognized option '{}'",
                String::from_utf8_lossy(attr)
            )));
        };
        if !valid_name(value) {
            return Err(Value::error(format!(
                "ERR {label} cannot contain spaces, newlines or special characters."
            )));
        }
        // Accepted for compatibility; only the debug log sees it.
        tracing::debug!(client = call.client.id, %label, value = %String::from_utf8_lossy(value), "client setinfo");
        Ok(Outcome::reply(OK))
    } else if is(&sub, "help") {
        let lines = [
            "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "SETINFO <option> <value>",
            "    Set client meta attr. Options are:",
            "    * LIB-NAME: the client lib name.",
            "    * LIB-VER: the client lib version.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
            "HELP",
            "    Print this help.",
        ];
        Ok(Outcome::reply(Value::Array(
            lines.into_iter().map(Value::Simple).collect(),
        )))
    } else {
        Err(unknown_subcommand(&sub, "client"))
    }
}

/// Redis allows names of printable ASCII without spaces.
fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// Sets (or, with an empty name, clears) the connection's name.
fn set_name(call: &mut Call<'_>, name: Bytes) -> Result<()> {
    if !valid_name(&name) {
        return Err(Value::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    call.client.name = (!name.is_empty()).then_some(name);
    Ok(())
}

/// `QUIT`: `OK`, then the connection is closed. An open `MULTI` is dropped unrun (its
/// queue is freed now rather than when the connection goes).
pub(super) fn quit(call: &mut Call<'_>) -> Result {
    call.client.transaction.clear();
    Ok(Outcome {
        close: true,
        ..Outcome::reply(OK)
    })
}
