//! The RESP commands: one file per group, a table that describes them all.
//!
//! [`execute`] does what Redis's `processCommand` does before a command runs, in the same
//! order, so that clients see the same errors: look the name up (`unknown command`), check
//! the argument count (`wrong number of arguments`), check authentication (`NOAUTH`), and
//! refuse writes while the append-only file cannot be written (`MISCONF`). Each command
//! then parses its own options and replies with Redis's reply types and error strings.
//!
//! Every read and write goes through the same [`Store`](crate::store::Store) methods as the
//! native protocol, so versions, expiry, limits, persistence and the `STATS` counters apply
//! to both alike.
//!
//! [`COMMANDS`] is also what `COMMAND`, `COMMAND INFO` and `COMMAND DOCS` report, which is
//! how `redis-cli` learns the commands it offers hints for.

mod connection;
mod keys;
mod scripting;
mod server;
mod sessiond;
mod strings;
mod transactions;

use bytes::Bytes;

use super::decode::parse_i64;
use super::frame::{Value, Version};
use super::Shared;
use crate::access::{Access, Category, Denied};
use crate::metrics::{self, RequestTag};
use crate::server::Context;

/// What a command produced.
#[derive(Debug)]
pub(super) struct Outcome {
    /// The reply; `None` only when the connection is dropped without one.
    pub(super) value: Option<Value>,
    /// Whether the store changed (the reply may have to wait for the AOF).
    pub(super) mutated: bool,
    /// Whether to close the connection after the reply.
    pub(super) close: bool,
    /// How long to wait before replying (a throttled failed `AUTH`).
    pub(super) delay: Option<std::time::Duration>,
}

impl Outcome {
    fn reply(value: Value) -> Outcome {
        Outcome::write(value, false)
    }

    fn write(value: Value, mutated: bool) -> Outcome {
        Outcome {
            value: Some(value),
            mutated,
            close: false,
            delay: None,
        }
    }
}

/// What a command function returns: an error reply is `Err`, so that argument parsing can
/// use `?`.
type Result<T = Outcome> = std::result::Result<T, Value>;

/// Per-connection state that commands read and change.
#[derive(Debug)]
pub(crate) struct Client {
    /// Unique id (`CLIENT ID`, `HELLO`).
    pub(crate) id: u64,
    /// The RESP version replies are written in.
    pub(crate) version: Version,
    /// Who the client is authenticated as, and so what it may run.
    pub(crate) access: Access,
    /// `CLIENT SETNAME`.
    pub(crate) name: Option<Bytes>,
    /// `MULTI`'s queue and the keys under `WATCH`.
    pub(crate) transaction: transactions::State,
}

/// One command invocation.
pub(super) struct Call<'a> {
    /// The arguments; `args[0]` is the command name as sent.
    args: Vec<Bytes>,
    ctx: &'a Context,
    shared: &'a Shared,
    client: &'a mut Client,
}

impl Call<'_> {
    /// The key at `index`, if it is a key sessiond can hold: 1 to `limits.max_key_bytes`
    /// bytes. The native protocol has the same rule, so every key is reachable from both.
    fn key(&self, index: usize) -> Result<&Bytes> {
        let key = &self.args[index];
        let max = self.ctx.limits.max_key_len as usize;
        if key.is_empty() {
            return Err(Value::error("ERR empty keys are not supported"));
        }
        if key.len() > max {
            return Err(Value::error(format!(
                "ERR key is too long ({} bytes; limits.max_key_bytes is {max})",
                key.len()
            )));
        }
        Ok(key)
    }

    /// Every argument from `from` on, checked as keys.
    fn keys(&self, from: usize) -> Result<Vec<&Bytes>> {
        (from..self.args.len()).map(|i| self.key(i)).collect()
    }

    /// The current time, Unix milliseconds, on the store's clock.
    fn now_ms(&self) -> u64 {
        self.ctx.store.clock().now_ms()
    }

    /// The longest TTL, in milliseconds.
    fn max_ttl_ms(&self) -> u64 {
        self.ctx.limits.max_ttl_ms
    }
}

/// `ERR syntax error`.
fn syntax_error() -> Value {
    Value::error("ERR syntax error")
}

/// The error for a non-integer (or out-of-range) integer argument.
fn not_an_integer() -> Value {
    Value::error("ERR value is not an integer or out of range")
}

/// Parses an integer argument as Redis does (`string2ll`).
fn int_arg(arg: &[u8]) -> Result<i64> {
    parse_i64(arg).ok_or_else(not_an_integer)
}

/// Whether `arg` is `word`, ignoring ASCII case (Redis options are case-insensitive).
fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// `ERR invalid expire time in 'NAME' command`.
fn invalid_expire(name: &str) -> Value {
    Value::error(format!("ERR invalid expire time in '{name}' command"))
}

/// The error for an argument count that does not fit `name`'s arity.
fn wrong_arity(name: &str) -> Value {
    Value::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// Redis's reply to an unknown command, word for word: the name and up to 128 bytes of
/// arguments, each quoted and followed by a space.
fn unknown_command(args: &[Bytes]) -> Value {
    let name = String::from_utf8_lossy(&args[0][..args[0].len().min(128)]).into_owned();
    let mut quoted = String::new();
    for arg in &args[1..] {
        if quoted.len() >= 128 {
            break;
        }
        let room = 128 - quoted.len();
        let arg = String::from_utf8_lossy(&arg[..arg.len().min(room)]).into_owned();
        quoted.push('\'');
        quoted.push_str(&arg);
        quoted.push_str("' ");
    }
    Value::error(format!(
        "ERR unknown command '{name}', with args beginning with: {quoted}"
    ))
}

/// `ERR unknown subcommand 'SUB'. Try NAME HELP.`
fn unknown_subcommand(sub: &[u8], name: &str) -> Value {
    let sub = String::from_utf8_lossy(&sub[..sub.len().min(128)]).into_owned();
    Value::error(format!(
        "ERR unknown subcommand '{sub}'. Try {} HELP.",
        name.to_ascii_uppercase()
    ))
}

/// Runs one command for `client`, and says what the metrics and the slow log record of it.
/// Inside `MULTI`, a command that passes the checks is queued instead (see
/// [`transactions`]).
pub(super) fn execute(
    args: Vec<Bytes>,
    ctx: &Context,
    shared: &Shared,
    client: &mut Client,
) -> (Outcome, RequestTag) {
    let found = find(&args[0]);
    let spec = found.map(|(_, spec)| spec);
    let key_len = spec.map_or(0, |spec| key_args(spec, &args).map(Bytes::len).sum());
    let outcome = if spec.is_none() && (is(&args[0], "post") || is(&args[0], "host:")) {
        // Browsers can be made to send HTTP to any port. Redis closes the connection on
        // `POST` and `Host:` lines rather than run what follows them; so do we.
        tracing::warn!("HTTP request on the RESP port (possible cross-protocol attack); closing the connection");
        Outcome {
            value: None,
            close: true,
            ..Outcome::reply(Value::Null)
        }
    } else {
        match check(spec, &args, client) {
            Err(error) => {
                // As in Redis, a command refused while queueing makes `EXEC` fail.
                client.transaction.discard_on_exec();
                Outcome::reply(error)
            }
            Ok(spec) if client.transaction.in_multi() && !transactions::runs_immediately(spec) => {
                transactions::queue(spec, args, shared, client)
            }
            Ok(spec) => invoke(spec, args, ctx, shared, client),
        }
    };
    let tag = RequestTag::resp(
        found.map(|(index, _)| index),
        spec.map_or("unknown", |spec| spec.name),
        classify(spec, outcome.value.as_ref()),
        key_len,
    );
    (outcome, tag)
}

/// The key arguments of a command, by its `keys` triple (first, last, step); for `EVAL` and
/// `EVALSHA`, whose keys move with `numkeys`, the `numkeys` arguments after it (none if
/// `numkeys` is not a count the arguments hold: the command then fails on its own).
fn key_args<'a>(spec: &Spec, args: &'a [Bytes]) -> impl Iterator<Item = &'a Bytes> {
    let (first, last, step) = match spec.keys {
        _ if scripting::declares_keys(spec.name) => (3, 2 + scripting::numkeys(args), 1),
        (first, last, step) if first > 0 && step > 0 => (first, last, step),
        // A command without keys: a range that yields nothing.
        _ => (1, 0, 1),
    };
    let last = if last < 0 {
        args.len() as i64 + last
    } else {
        last
    };
    (first..=last)
        .step_by(step as usize)
        .filter_map(|i| args.get(i as usize))
}

/// The metrics' outcome of a reply: what Redis's reply types say about a session command.
fn classify(spec: Option<&Spec>, reply: Option<&Value>) -> metrics::Outcome {
    use metrics::Outcome as O;
    let (Some(spec), Some(reply)) = (spec, reply) else {
        return O::Error;
    };
    match reply {
        Value::Error(e)
            if ["NOAUTH", "NOPERM", "WRONGPASS"]
                .iter()
                .any(|p| e.starts_with(p)) =>
        {
            O::Denied
        }
        Value::Error(e) if e.starts_with("OOM") || e.starts_with("MISCONF") => O::Refused,
        Value::Error(_) => O::Error,
        // An EXEC that a WATCHed key's new version aborted (nothing else answers it).
        Value::NullArray => O::VersionMismatch,
        // A missing key, or a SET whose NX/XX condition did not hold.
        Value::Null => O::Miss,
        _ => match (spec.name, reply) {
            ("ttl" | "pttl", Value::Integer(-2)) => O::Miss,
            ("get" | "getex" | "mget" | "ttl" | "pttl", _) => O::Hit,
            ("set" | "setex" | "psetex", _) => O::Stored,
            ("getdel", _) => O::Deleted,
            (
                "del" | "unlink" | "exists" | "expire" | "pexpire" | "expireat" | "pexpireat",
                Value::Integer(0),
            ) => O::Miss,
            ("del" | "unlink", _) => O::Deleted,
            ("exists" | "expire" | "pexpire" | "expireat" | "pexpireat", _) => O::Hit,
            _ => O::Ok,
        },
    }
}

/// The name of entry `index` of [`COMMANDS`], for the metrics' `command` label.
pub(super) fn command_name(index: usize) -> Option<&'static str> {
    COMMANDS.get(index).map(|spec| spec.name)
}

/// What Redis's `processCommand` checks before anything runs, in its order: the name
/// (`unknown command`), the argument count, and the caller's permission (`NOAUTH`,
/// `NOPERM`). `MULTI` queues only what passes, and `EXEC` and scripts check again.
fn check(
    spec: Option<&'static Spec>,
    args: &[Bytes],
    client: &Client,
) -> std::result::Result<&'static Spec, Value> {
    let Some(spec) = spec else {
        return Err(unknown_command(args));
    };
    let argc = args.len() as i32;
    if (spec.arity > 0 && argc != spec.arity) || argc < -spec.arity {
        return Err(wrong_arity(spec.name));
    }
    require(&client.access, spec.category, spec.name)?;
    Ok(spec)
}

/// Refuses a role that may not run `category`, with Redis's error for `command` (a command
/// name, or `name|subcommand` for a subcommand that needs more than its command, such as
/// `script|flush`), so that clients that recognise the wording can say what happened.
fn require(access: &Access, category: Category, command: &str) -> std::result::Result<(), Value> {
    access.check(category).map_err(|denied| match denied {
        Denied::AuthRequired => Value::error("NOAUTH Authentication required."),
        Denied::NoPermission { user, .. } => Value::error(format!(
            "NOPERM User {user} has no permissions to run the '{command}' command"
        )),
    })
}

/// Runs a command that passed [`check`]: refuses a write while the AOF cannot be written,
/// else calls the command's function.
fn invoke(
    spec: &'static Spec,
    args: Vec<Bytes>,
    ctx: &Context,
    shared: &Shared,
    client: &mut Client,
) -> Outcome {
    // DEL, UNLINK and SESSIOND.ENDALL are logouts: they run even then, and answer the
    // error themselves.
    let deletes = matches!(spec.name, "del" | "unlink" | "sessiond.endall");
    if spec.has_flag("write") && !deletes && ctx.refuse_writes() {
        return Outcome::reply(Value::error(
            "MISCONF Errors writing to the AOF file: writes are refused until sessiond can \
             persist them again (see the server log)",
        ));
    }
    let mut call = Call {
        args,
        ctx,
        shared,
        client,
    };
    (spec.run)(&mut call).unwrap_or_else(Outcome::reply)
}

/// The command named `name` (any case).
fn lookup(name: &[u8]) -> Option<&'static Spec> {
    find(name).map(|(_, spec)| spec)
}

/// The command named `name` (any case), and its place in [`COMMANDS`].
fn find(name: &[u8]) -> Option<(usize, &'static Spec)> {
    COMMANDS
        .iter()
        .enumerate()
        .find(|(_, spec)| spec.name.len() == name.len() && is(name, spec.name))
}

/// What `COMMAND DOCS` says about an argument (enough for `redis-cli`'s hints).
#[derive(Debug, Clone, Copy)]
pub(super) struct ArgDoc {
    name: &'static str,
    kind: ArgKind,
    token: Option<&'static str>,
    optional: bool,
    multiple: bool,
}

#[derive(Debug, Clone, Copy)]
enum ArgKind {
    Key,
    String,
    Integer,
    Pattern,
    UnixTime,
    PureToken,
    OneOf(&'static [ArgDoc]),
}

impl ArgKind {
    fn name(self) -> &'static str {
        match self {
            ArgKind::Key => "key",
            ArgKind::String => "string",
            ArgKind::Integer => "integer",
            ArgKind::Pattern => "pattern",
            ArgKind::UnixTime => "unix-time",
            ArgKind::PureToken => "pure-token",
            ArgKind::OneOf(_) => "oneof",
        }
    }
}

const fn arg(name: &'static str, kind: ArgKind) -> ArgDoc {
    ArgDoc {
        name,
        kind,
        token: None,
        optional: false,
        multiple: false,
    }
}

const fn token(name: &'static str, token: &'static str, kind: ArgKind) -> ArgDoc {
    ArgDoc {
        token: Some(token),
        ..arg(name, kind)
    }
}

const fn flag(name: &'static str, word: &'static str) -> ArgDoc {
    token(name, word, ArgKind::PureToken)
}

impl ArgDoc {
    const fn optional(self) -> ArgDoc {
        ArgDoc {
            optional: true,
            ..self
        }
    }

    const fn multiple(self) -> ArgDoc {
        ArgDoc {
            multiple: true,
            ..self
        }
    }

    fn to_value(self) -> Value {
        let s = Value::bulk_static;
        let mut fields = vec![(s("name"), s(self.name)), (s("type"), s(self.kind.name()))];
        if let Some(token) = self.token {
            fields.push((s("token"), s(token)));
        }
        let mut flags = Vec::new();
        if self.optional {
            flags.push(Value::Simple("optional"));
        }
        if self.multiple {
            flags.push(Value::Simple("multiple"));
        }
        if !flags.is_empty() {
            fields.push((s("flags"), Value::Set(flags)));
        }
        if let ArgKind::OneOf(options) = self.kind {
            fields.push((
                s("arguments"),
                Value::Array(options.iter().map(|a| a.to_value()).collect()),
            ));
        }
        Value::Map(fields)
    }
}

/// One command: what `COMMAND` reports about it, and the function that runs it.
pub(super) struct Spec {
    /// Lower-case name.
    name: &'static str,
    /// Redis's arity: exactly N arguments (name included) if positive, at least -N if
    /// negative.
    arity: i32,
    /// Redis's command flags; `write` also drives [`execute`]. (`no-auth` is reported for
    /// `COMMAND`; what may run before `AUTH` is `category`'s business.)
    flags: &'static [&'static str],
    /// What the command does, for the role table in [`crate::access`].
    category: Category,
    /// First key, last key (-1: the last argument), step.
    keys: (i64, i64, i64),
    /// Redis's command group (`string`, `generic`, `connection`, `server`).
    group: &'static str,
    /// The Redis version that introduced it (for `COMMAND DOCS`).
    since: &'static str,
    summary: &'static str,
    args: &'static [ArgDoc],
    run: fn(&mut Call<'_>) -> Result,
}

impl Spec {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// The `COMMAND INFO` entry (Redis 7's ten fields).
    fn info(&self) -> Value {
        let (first, last, step) = self.keys;
        Value::Array(vec![
            Value::bulk_static(self.name),
            Value::Integer(i64::from(self.arity)),
            Value::Set(self.flags.iter().map(|f| Value::Simple(f)).collect()),
            Value::Integer(first),
            Value::Integer(last),
            Value::Integer(step),
            Value::Set(vec![Value::Simple(acl_category(self.group))]),
            Value::Set(Vec::new()),
            Value::Array(Vec::new()),
            Value::Array(Vec::new()),
        ])
    }

    /// The `COMMAND DOCS` entry.
    fn docs(&self) -> Value {
        let s = Value::bulk_static;
        let mut fields = vec![
            (s("summary"), s(self.summary)),
            (s("since"), s(self.since)),
            (s("group"), s(self.group)),
        ];
        if !self.args.is_empty() {
            fields.push((
                s("arguments"),
                Value::Array(self.args.iter().map(|a| a.to_value()).collect()),
            ));
        }
        Value::Map(fields)
    }
}

fn acl_category(group: &str) -> &'static str {
    match group {
        "string" => "@string",
        "generic" => "@keyspace",
        "connection" => "@connection",
        "transactions" => "@transaction",
        "scripting" => "@scripting",
        _ => "@admin",
    }
}

/// Argument docs shared by several commands.
const KEY: ArgDoc = arg("key", ArgKind::Key);
const KEYS: ArgDoc = KEY.multiple();
const VALUE: ArgDoc = arg("value", ArgKind::String);
const SECONDS: ArgDoc = arg("seconds", ArgKind::Integer);
const MILLISECONDS: ArgDoc = arg("milliseconds", ArgKind::Integer);
const EXPIRE_CONDITION: ArgDoc = arg(
    "condition",
    ArgKind::OneOf(&[
        flag("nx", "NX"),
        flag("xx", "XX"),
        flag("gt", "GT"),
        flag("lt", "LT"),
    ]),
)
.optional();

/// Every command the RESP listener knows, most frequent first (lookup is a linear scan).
pub(super) static COMMANDS: &[Spec] = &[
    Spec {
        name: "get",
        arity: 2,
        flags: &["readonly", "fast"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "string",
        since: "1.0.0",
        summary: "Returns the string value of a key.",
        args: &[KEY],
        run: strings::get,
    },
    Spec {
        name: "set",
        arity: -3,
        flags: &["write", "denyoom"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "string",
        since: "1.0.0",
        summary: "Sets the string value of a key. Without an expiry option the key gets resp.default_ttl; every TTL is capped at limits.max_ttl.",
        args: &[
            KEY,
            VALUE,
            arg(
                "condition",
                ArgKind::OneOf(&[flag("nx", "NX"), flag("xx", "XX")]),
            )
            .optional(),
            flag("get", "GET").optional(),
            arg(
                "expiration",
                ArgKind::OneOf(&[
                    token("seconds", "EX", ArgKind::Integer),
                    token("milliseconds", "PX", ArgKind::Integer),
                    token("unix-time-seconds", "EXAT", ArgKind::UnixTime),
                    token("unix-time-milliseconds", "PXAT", ArgKind::UnixTime),
                    flag("keepttl", "KEEPTTL"),
                ]),
            )
            .optional(),
        ],
        run: strings::set,
    },
    Spec {
        name: "setex",
        arity: 4,
        flags: &["write", "denyoom"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "string",
        since: "2.0.0",
        summary: "Sets the string value and expiration time of a key.",
        args: &[KEY, SECONDS, VALUE],
        run: strings::setex,
    },
    Spec {
        name: "psetex",
        arity: 4,
        flags: &["write", "denyoom"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "string",
        since: "2.6.0",
        summary: "Sets the string value and expiration time in milliseconds of a key.",
        args: &[KEY, MILLISECONDS, VALUE],
        run: strings::psetex,
    },
    Spec {
        name: "getex",
        arity: -2,
        flags: &["write", "fast"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "string",
        since: "6.2.0",
        summary: "Returns the string value of a key after setting its expiration time. PERSIST keeps the TTL: every session expires.",
        args: &[
            KEY,
            arg(
                "expiration",
                ArgKind::OneOf(&[
                    token("seconds", "EX", ArgKind::Integer),
                    token("milliseconds", "PX", ArgKind::Integer),
                    token("unix-time-seconds", "EXAT", ArgKind::UnixTime),
                    token("unix-time-milliseconds", "PXAT", ArgKind::UnixTime),
                    flag("persist", "PERSIST"),
                ]),
            )
            .optional(),
        ],
        run: strings::getex,
    },
    Spec {
        name: "getdel",
        arity: 2,
        flags: &["write", "fast"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "string",
        since: "6.2.0",
        summary: "Returns the string value of a key after deleting the key.",
        args: &[KEY],
        run: strings::getdel,
    },
    Spec {
        name: "mget",
        arity: -2,
        flags: &["readonly", "fast"],
        keys: (1, -1, 1),
        category: Category::Session,
        group: "string",
        since: "1.0.0",
        summary: "Atomically returns the string values of one or more keys.",
        args: &[KEYS],
        run: strings::mget,
    },
    Spec {
        name: "mset",
        arity: -3,
        flags: &["write", "denyoom"],
        keys: (1, -1, 2),
        category: Category::Session,
        group: "string",
        since: "1.0.1",
        summary: "Atomically creates or modifies the string values of one or more keys.",
        args: &[arg("data", ArgKind::OneOf(&[KEY, VALUE])).multiple()],
        run: strings::mset,
    },
    Spec {
        name: "del",
        arity: -2,
        flags: &["write"],
        keys: (1, -1, 1),
        category: Category::Session,
        group: "generic",
        since: "1.0.0",
        summary: "Deletes one or more keys.",
        args: &[KEYS],
        run: keys::del,
    },
    Spec {
        name: "unlink",
        arity: -2,
        flags: &["write", "fast"],
        keys: (1, -1, 1),
        category: Category::Session,
        group: "generic",
        since: "4.0.0",
        summary: "Deletes one or more keys (the same as DEL here).",
        args: &[KEYS],
        run: keys::del,
    },
    Spec {
        name: "exists",
        arity: -2,
        flags: &["readonly", "fast"],
        keys: (1, -1, 1),
        category: Category::Session,
        group: "generic",
        since: "1.0.0",
        summary: "Determines whether one or more keys exist.",
        args: &[KEYS],
        run: keys::exists,
    },
    Spec {
        name: "expire",
        arity: -3,
        flags: &["write", "fast"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "generic",
        since: "1.0.0",
        summary: "Sets the expiration time of a key in seconds.",
        args: &[KEY, SECONDS, EXPIRE_CONDITION],
        run: keys::expire,
    },
    Spec {
        name: "pexpire",
        arity: -3,
        flags: &["write", "fast"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "generic",
        since: "2.6.0",
        summary: "Sets the expiration time of a key in milliseconds.",
        args: &[KEY, MILLISECONDS, EXPIRE_CONDITION],
        run: keys::pexpire,
    },
    Spec {
        name: "expireat",
        arity: -3,
        flags: &["write", "fast"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "generic",
        since: "1.2.0",
        summary: "Sets the expiration time of a key to a Unix timestamp.",
        args: &[
            KEY,
            arg("unix-time-seconds", ArgKind::UnixTime),
            EXPIRE_CONDITION,
        ],
        run: keys::expireat,
    },
    Spec {
        name: "pexpireat",
        arity: -3,
        flags: &["write", "fast"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "generic",
        since: "2.6.0",
        summary: "Sets the expiration time of a key to a Unix milliseconds timestamp.",
        args: &[
            KEY,
            arg("unix-time-milliseconds", ArgKind::UnixTime),
            EXPIRE_CONDITION,
        ],
        run: keys::pexpireat,
    },
    Spec {
        name: "ttl",
        arity: 2,
        flags: &["readonly", "fast"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "generic",
        since: "1.0.0",
        summary: "Returns the expiration time in seconds of a key.",
        args: &[KEY],
        run: keys::ttl,
    },
    Spec {
        name: "pttl",
        arity: 2,
        flags: &["readonly", "fast"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "generic",
        since: "2.6.0",
        summary: "Returns the expiration time in milliseconds of a key.",
        args: &[KEY],
        run: keys::pttl,
    },
    Spec {
        name: "persist",
        arity: 2,
        flags: &["write", "fast"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "generic",
        since: "2.2.0",
        summary: "Always 0: every session expires, so the TTL is kept.",
        args: &[KEY],
        run: keys::persist,
    },
    Spec {
        name: "scan",
        arity: -2,
        flags: &["readonly", "no_multi", "noscript"],
        keys: (0, 0, 0),
        category: Category::Keyspace,
        group: "generic",
        since: "2.8.0",
        summary: "Iterates over the key names.",
        args: &[
            arg("cursor", ArgKind::Integer),
            token("pattern", "MATCH", ArgKind::Pattern).optional(),
            token("count", "COUNT", ArgKind::Integer).optional(),
            token("type", "TYPE", ArgKind::String).optional(),
        ],
        run: keys::scan,
    },
    Spec {
        name: "dbsize",
        arity: 1,
        flags: &["readonly", "fast"],
        keys: (0, 0, 0),
        category: Category::Keyspace,
        group: "server",
        since: "1.0.0",
        summary: "Returns the number of keys (including expired ones not yet reclaimed).",
        args: &[],
        run: keys::dbsize,
    },
    Spec {
        name: "flushdb",
        arity: -1,
        flags: &["write", "no_multi", "noscript"],
        keys: (0, 0, 0),
        category: Category::Keyspace,
        group: "server",
        since: "1.0.0",
        summary: "Removes all keys. Refused unless resp.allow_flush is true.",
        args: &[FLUSH_MODE],
        run: keys::flush,
    },
    Spec {
        name: "flushall",
        arity: -1,
        flags: &["write", "no_multi", "noscript"],
        keys: (0, 0, 0),
        category: Category::Keyspace,
        group: "server",
        since: "1.0.0",
        summary: "Removes all keys. Refused unless resp.allow_flush is true.",
        args: &[FLUSH_MODE],
        run: keys::flush,
    },
    Spec {
        name: "ping",
        arity: -1,
        flags: &["fast"],
        keys: (0, 0, 0),
        category: Category::Handshake,
        group: "connection",
        since: "1.0.0",
        summary: "Returns the server's liveliness response.",
        args: &[arg("message", ArgKind::String).optional()],
        run: connection::ping,
    },
    Spec {
        name: "echo",
        arity: 2,
        flags: &["fast"],
        keys: (0, 0, 0),
        category: Category::Connection,
        group: "connection",
        since: "1.0.0",
        summary: "Returns the given string.",
        args: &[arg("message", ArgKind::String)],
        run: connection::echo,
    },
    Spec {
        name: "auth",
        arity: -2,
        flags: &["no-auth", "fast", "no_multi", "noscript"],
        keys: (0, 0, 0),
        category: Category::Handshake,
        group: "connection",
        since: "1.0.0",
        summary: "Authenticates the connection.",
        args: &[
            arg("username", ArgKind::String).optional(),
            arg("password", ArgKind::String),
        ],
        run: connection::auth,
    },
    Spec {
        name: "hello",
        arity: -1,
        flags: &["no-auth", "fast", "no_multi", "noscript"],
        keys: (0, 0, 0),
        category: Category::Handshake,
        group: "connection",
        since: "6.0.0",
        summary: "Handshakes with the server: chooses RESP2 or RESP3.",
        args: &[
            arg("protover", ArgKind::Integer).optional(),
            token("username", "AUTH", ArgKind::String).optional(),
            token("clientname", "SETNAME", ArgKind::String).optional(),
        ],
        run: connection::hello,
    },
    Spec {
        name: "select",
        arity: 2,
        flags: &["fast"],
        keys: (0, 0, 0),
        category: Category::Connection,
        group: "connection",
        since: "1.0.0",
        summary: "Changes the selected database: only 0 exists.",
        args: &[arg("index", ArgKind::Integer)],
        run: connection::select,
    },
    Spec {
        name: "client",
        arity: -2,
        flags: &["no_multi", "noscript"],
        keys: (0, 0, 0),
        category: Category::Connection,
        group: "connection",
        since: "2.4.0",
        summary: "CLIENT ID, GETNAME, SETNAME, SETINFO.",
        args: &[arg(
            "subcommand",
            ArgKind::OneOf(&[
                flag("id", "ID"),
                flag("getname", "GETNAME"),
                token("connection-name", "SETNAME", ArgKind::String),
                token("libname", "SETINFO", ArgKind::String),
            ]),
        )],
        run: connection::client,
    },
    Spec {
        name: "quit",
        arity: -1,
        flags: &["no-auth", "fast", "noscript"],
        keys: (0, 0, 0),
        category: Category::Handshake,
        group: "connection",
        since: "1.0.0",
        summary: "Closes the connection.",
        args: &[],
        run: connection::quit,
    },
    Spec {
        name: "multi",
        arity: 1,
        flags: &["noscript", "fast"],
        keys: (0, 0, 0),
        category: Category::Connection,
        group: "transactions",
        since: "1.2.0",
        summary: "Starts a transaction: the commands that follow are queued until EXEC.",
        args: &[],
        run: transactions::multi,
    },
    Spec {
        name: "exec",
        arity: 1,
        flags: &["noscript"],
        keys: (0, 0, 0),
        // Each queued command was checked against the role when it was queued, and is
        // checked again when it runs.
        category: Category::Connection,
        group: "transactions",
        since: "1.2.0",
        summary: "Runs the queued commands atomically; null if a watched key changed.",
        args: &[],
        run: transactions::exec,
    },
    Spec {
        name: "discard",
        arity: 1,
        flags: &["noscript", "fast"],
        keys: (0, 0, 0),
        category: Category::Connection,
        group: "transactions",
        since: "2.0.0",
        summary: "Drops the queued commands and unwatches every key.",
        args: &[],
        run: transactions::discard,
    },
    Spec {
        name: "watch",
        arity: -2,
        flags: &["noscript", "fast", "no_multi"],
        keys: (1, -1, 1),
        // It reads the keys' versions: a read, like GET.
        category: Category::Session,
        group: "transactions",
        since: "2.2.0",
        summary: "Makes the next EXEC abort if any of the keys changes, expires or is deleted.",
        args: &[KEYS],
        run: transactions::watch,
    },
    Spec {
        name: "unwatch",
        arity: 1,
        flags: &["noscript", "fast"],
        keys: (0, 0, 0),
        category: Category::Connection,
        group: "transactions",
        since: "2.2.0",
        summary: "Forgets every watched key.",
        args: &[],
        run: transactions::unwatch,
    },
    Spec {
        name: "info",
        arity: -1,
        flags: &[],
        keys: (0, 0, 0),
        category: Category::Stats,
        group: "server",
        since: "1.0.0",
        summary: "Returns information and statistics about the server.",
        args: &[arg("section", ArgKind::String).optional().multiple()],
        run: server::info,
    },
    Spec {
        name: "config",
        arity: -2,
        flags: &["noscript"],
        keys: (0, 0, 0),
        category: Category::Keyspace,
        group: "server",
        since: "2.0.0",
        summary: "CONFIG GET: reads Redis configuration parameters (read-only).",
        args: &[token("parameter", "GET", ArgKind::String).multiple()],
        run: server::config,
    },
    Spec {
        name: "slowlog",
        arity: -2,
        flags: &["admin", "loading", "stale"],
        keys: (0, 0, 0),
        // RESET is admin only: `server::slowlog` checks it, as INFO checks its keyspace
        // section.
        category: Category::Stats,
        group: "server",
        since: "2.2.12",
        summary: "SLOWLOG GET [count], LEN, RESET: the log of slow requests (keys not shown).",
        args: &[arg(
            "subcommand",
            ArgKind::OneOf(&[
                token("count", "GET", ArgKind::Integer),
                flag("len", "LEN"),
                flag("reset", "RESET"),
                flag("help", "HELP"),
            ]),
        )],
        run: server::slowlog,
    },
    Spec {
        name: "command",
        arity: -1,
        flags: &[],
        keys: (0, 0, 0),
        category: Category::Connection,
        group: "server",
        since: "2.8.13",
        summary: "Returns detailed information about the commands.",
        args: &[arg(
            "subcommand",
            ArgKind::OneOf(&[
                flag("count", "COUNT"),
                token("command-name", "INFO", ArgKind::String),
                token("command-name", "DOCS", ArgKind::String),
                flag("list", "LIST"),
            ]),
        )
        .optional()],
        run: server::command,
    },
    Spec {
        name: "sessiond.set",
        arity: -3,
        flags: &["write", "denyoom"],
        keys: (1, 1, 1),
        category: Category::Session,
        group: "string",
        since: "7.2.0",
        summary: "sessiond: SET with an owner, an absolute lifetime and a limit on the owner's sessions. Replies [version, ended].",
        args: &[
            KEY,
            VALUE,
            arg(
                "condition",
                ArgKind::OneOf(&[
                    flag("nx", "NX"),
                    flag("xx", "XX"),
                    token("version", "IFVERSION", ArgKind::Integer),
                ]),
            )
            .optional(),
            arg(
                "expiration",
                ArgKind::OneOf(&[
                    token("seconds", "EX", ArgKind::Integer),
                    token("milliseconds", "PX", ArgKind::Integer),
                ]),
            )
            .optional(),
            OWNER.optional(),
            token("milliseconds", "LIFETIME", ArgKind::Integer).optional(),
            OWNER_LIMIT,
        ],
        run: sessiond::set,
    },
    Spec {
        name: "sessiond.sessions",
        arity: -2,
        flags: &["readonly", "no_multi", "noscript"],
        keys: (0, 0, 0),
        category: Category::Owner,
        group: "generic",
        since: "7.2.0",
        summary: "sessiond: the live sessions of an owner, most recently used first.",
        args: &[
            arg("owner", ArgKind::String),
            token("count", "COUNT", ArgKind::Integer).optional(),
        ],
        run: sessiond::sessions,
    },
    Spec {
        name: "sessiond.endall",
        arity: -2,
        flags: &["write", "no_multi", "noscript"],
        keys: (0, 0, 0),
        category: Category::Owner,
        group: "generic",
        since: "7.2.0",
        summary: "sessiond: ends every session of an owner, or all but one. Replies how many ended.",
        args: &[
            arg("owner", ArgKind::String),
            token("key", "EXCEPT", ArgKind::Key).optional(),
        ],
        run: sessiond::end_all,
    },
    Spec {
        name: "sessiond.rotate",
        arity: -3,
        flags: &["write", "denyoom"],
        keys: (1, 2, 1),
        category: Category::Session,
        group: "generic",
        since: "7.2.0",
        summary: "sessiond: moves a session to a new key in one step, optionally binding an owner. Replies [version, ended].",
        args: &[
            KEY,
            arg("newkey", ArgKind::Key),
            token("version", "IFVERSION", ArgKind::Integer).optional(),
            OWNER.optional(),
            OWNER_LIMIT,
        ],
        run: sessiond::rotate,
    },
    Spec {
        name: "eval",
        arity: -3,
        // Not in scripts. In MULTI, EXEC holds the keys it declares and the script runs as a
        // transaction nested in EXEC's.
        flags: &["noscript", "no_mandatory_keys", "movablekeys"],
        keys: (0, 0, 0),
        // The script's commands are checked against the caller's role one by one.
        category: Category::Session,
        group: "scripting",
        since: "2.6.0",
        summary: "Runs a Lua script atomically over the keys it declares; all or nothing.",
        args: SCRIPT_ARGS,
        run: scripting::eval,
    },
    Spec {
        name: "evalsha",
        arity: -3,
        flags: &["noscript", "no_mandatory_keys", "movablekeys"],
        keys: (0, 0, 0),
        category: Category::Session,
        group: "scripting",
        since: "2.6.0",
        summary: "Runs a cached Lua script by its SHA1; NOSCRIPT if it is not cached.",
        args: &[
            arg("sha1", ArgKind::String),
            SCRIPT_ARGS[1],
            SCRIPT_ARGS[2],
            SCRIPT_ARGS[3],
        ],
        run: scripting::evalsha,
    },
    Spec {
        name: "script",
        arity: -2,
        flags: &["noscript"],
        keys: (0, 0, 0),
        // FLUSH is admin only: `scripting::script` checks it.
        category: Category::Session,
        group: "scripting",
        since: "2.6.0",
        summary: "SCRIPT LOAD, EXISTS, FLUSH (admin), KILL, HELP: the script cache.",
        args: &[arg(
            "subcommand",
            ArgKind::OneOf(&[
                token("script", "LOAD", ArgKind::String),
                token("sha1", "EXISTS", ArgKind::String),
                flag("flush", "FLUSH"),
                flag("kill", "KILL"),
                flag("help", "HELP"),
            ]),
        )],
        run: scripting::script,
    },
];

/// `script numkeys [key ...] [arg ...]`, for EVAL (EVALSHA replaces the first).
const SCRIPT_ARGS: &[ArgDoc] = &[
    arg("script", ArgKind::String),
    arg("numkeys", ArgKind::Integer),
    KEY.optional().multiple(),
    arg("arg", ArgKind::String).optional().multiple(),
];

/// `OWNER owner`, for the sessiond commands.
const OWNER: ArgDoc = token("owner", "OWNER", ArgKind::String);

/// `LIMIT n [REFUSE | ENDLRU]`, for the sessiond commands.
const OWNER_LIMIT: ArgDoc = token("limit", "LIMIT", ArgKind::Integer).optional();

const FLUSH_MODE: ArgDoc = arg(
    "flush-type",
    ArgKind::OneOf(&[flag("async", "ASYNC"), flag("sync", "SYNC")]),
)
.optional();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lower_case() {
        let mut names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        assert!(names.iter().all(|n| *n == n.to_ascii_lowercase()));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len());
    }

    #[test]
    fn only_handshake_commands_run_before_auth_and_they_say_so() {
        // `no-auth` in COMMAND INFO must agree with what actually runs before AUTH (PING
        // runs too: sessiond lets health checks through).
        for spec in COMMANDS {
            let handshake = spec.category == Category::Handshake;
            assert_eq!(
                handshake,
                spec.has_flag("no-auth") || spec.name == "ping",
                "{}",
                spec.name
            );
        }
    }

    #[test]
    fn commands_whose_keys_are_not_in_their_arguments_stay_out_of_transactions() {
        // A transaction holds the keys named by the `keys` triple and no others: a command
        // that reaches sessions some other way (a walk, an owner's sessions) must be refused
        // in MULTI and in scripts, or it would run unprotected.
        for spec in COMMANDS {
            // (The scripting commands are Session for the role table but reach sessions only
            // through the keys a script declares; EVAL's own check is below.)
            let reaches_sessions = (matches!(spec.category, Category::Session | Category::Owner)
                && spec.group != "scripting")
                || matches!(spec.name, "scan" | "flushdb" | "flushall");
            if reaches_sessions && spec.keys.0 <= 0 {
                assert!(spec.has_flag("no_multi"), "{}", spec.name);
                assert!(spec.has_flag("noscript"), "{}", spec.name);
            }
            // A script in MULTI runs nested in EXEC's transaction, which holds the keys
            // the script declares: those must be what `key_args` reads.
            if spec.name.starts_with("eval") {
                assert!(scripting::declares_keys(spec.name), "{}", spec.name);
                let args: Vec<Bytes> = ["evalsha", "sha", "2", "k1", "k2", "arg"]
                    .into_iter()
                    .map(|arg| Bytes::from_static(arg.as_bytes()))
                    .collect();
                let keys: Vec<&Bytes> = key_args(spec, &args).collect();
                assert_eq!(keys, [&args[3], &args[4]]);
            }
        }
    }

    #[test]
    fn scripting_commands_are_in_redis_scripting_category() {
        for name in ["eval", "evalsha", "script"] {
            let spec = lookup(name.as_bytes()).expect("a scripting command");
            let Value::Array(fields) = spec.info() else {
                panic!("COMMAND INFO {name} is not an array");
            };
            assert_eq!(fields[6], Value::Set(vec![Value::Simple("@scripting")]));
        }
    }

    #[test]
    fn unknown_command_is_worded_like_redis() {
        let args = vec![
            Bytes::from_static(b"foo"),
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
        ];
        assert_eq!(
            unknown_command(&args),
            Value::error("ERR unknown command 'foo', with args beginning with: 'a' 'b' ")
        );
        assert_eq!(
            unknown_command(&args[..1]),
            Value::error("ERR unknown command 'foo', with args beginning with: ")
        );
    }
}
