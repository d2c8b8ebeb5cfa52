//! Lua scripts for `EVAL` and `EVALSHA`: Redis's scripting, in the Lua version Redis
//! embeds (5.1), sandboxed and bounded.
//!
//! How the parts fit:
//!
//! - [`cache`]: the scripts `EVALSHA` can name, by SHA1, shared by every connection and
//!   bounded (least recently used forgotten first).
//! - `sandbox`: one Lua state per worker thread, built on first use: the libraries a
//!   script may use, read-only shared tables, fresh globals per run, the time and memory
//!   limits, and the thread's compiled scripts.
//! - `convert`: Redis's conversions between replies and Lua values.
//! - [`run`] (here): runs one script, with `redis.call` wired to a dispatcher the caller
//!   supplies. The caller (`cmd::scripting`) runs it inside a store transaction over the
//!   script's `KEYS`, dispatches each `redis.call` through the command table with the
//!   caller's role, and rolls the transaction back if [`run`] fails.
//!
//! This module knows nothing of the store or of roles: a dispatcher is any function from a
//! command's arguments to its reply, which is also how its tests drive it.
//!
//! Why one state per thread, and not one per script run or one per server: a sandboxed
//! state takes about a millisecond and 50 KiB to build (measured in a release build), while
//! running phpredis's unlock in a built one takes about 6 µs; one shared state would need a
//! lock around every script. A state per worker thread is used by one script at a time
//! without any lock, and what a script could leave in it is prevented by the sandbox (fresh
//! globals each run, read-only shared tables).

mod cache;
mod convert;
mod sandbox;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mlua::{Lua, MultiValue, Variadic};

pub(crate) use cache::{Cache, Sha};
use convert::BadReply;
use sandbox::{is_memory_error, mlua_memory_error, Run, Sandbox, Stop};

use super::frame::Value;

/// The bounds of one run (from `[resp]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `resp.max_script_time_ms`.
    pub(crate) time: Duration,
    /// `resp.max_script_memory_bytes`.
    pub(crate) memory: usize,
    /// `resp.max_reply_bytes`: the script's reply, encoded.
    pub(crate) reply_bytes: usize,
    /// `resp.max_cached_scripts`: also how many scripts a thread keeps compiled.
    pub(crate) cached_scripts: usize,
}

/// A script to run: its name, its text, and the cache generation it was found under.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    /// The SHA1 of `source`.
    pub(crate) sha: Sha,
    /// The Lua text.
    pub(crate) source: Bytes,
    /// [`Cache::generation`] when the script was looked up.
    pub(crate) generation: u64,
}

/// Why a script did not produce a reply. Every one of these means the caller must undo
/// what the script wrote.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// The text is not valid Lua (or is bytecode).
    Compile(String),
    /// A Lua error the script did not catch (position included).
    Runtime(String),
    /// An error reply raised by `redis.call` (or a script's `error({err = ...})`) that the
    /// script did not catch: the reply as it is.
    Command(String),
    /// The time limit passed.
    TimedOut(Duration),
    /// An allocation failed at the memory limit.
    OutOfMemory(usize),
    /// The script's return value cannot be sent.
    Reply(BadReply, usize),
    /// The Lua state could not be built, or a script was run from inside a script.
    Engine(String),
}

impl Failure {
    /// The error reply for this failure of script `sha`.
    pub(crate) fn reply(&self, sha: &Sha) -> Value {
        const UNDONE: &str = "nothing the script wrote was applied";
        Value::error(match self {
            Failure::Compile(message) => {
                format!("ERR Error compiling script (new function): {message}")
            }
            Failure::Runtime(message) => format!("ERR {message} script: {}", sha.as_str()),
            Failure::Command(message) => message.clone(),
            Failure::TimedOut(limit) => format!(
                "ERR Script killed: it ran longer than resp.max_script_time_ms ({} ms); {UNDONE}",
                limit.as_millis()
            ),
            Failure::OutOfMemory(limit) => format!(
                "ERR Script killed: it used more than resp.max_script_memory_bytes ({limit} bytes) of Lua memory; {UNDONE}"
            ),
            Failure::Reply(BadReply::TooLarge, limit) => format!(
                "ERR reply too large: the script's reply is over resp.max_reply_bytes ({limit} bytes); {UNDONE}"
            ),
            Failure::Reply(BadReply::TooDeep, _) => format!(
                "ERR reached lua stack limit: the script's reply nests tables more than {} deep; {UNDONE}",
                convert::MAX_REPLY_DEPTH
            ),
            Failure::Engine(message) => format!("ERR the script engine failed: {message}"),
        })
    }
}

/// A script whose last run on a thread took less than this runs there again in place; any
/// other first hands the thread's other connections to another worker, which costs more
/// than such a script itself (see `cmd::scripting`).
pub(crate) const QUICK: Duration = Duration::from_millis(1);

thread_local! {
    /// This worker thread's Lua state (see the module docs), built on first use.
    static SANDBOX: RefCell<Option<Sandbox>> = const { RefCell::new(None) };
}

/// Runs `script` with `keys` as `KEYS` and `argv` as `ARGV`, within `limits`. Each
/// `redis.call`/`redis.pcall` hands the command's arguments to `dispatch` and gives the
/// script its reply. Blocks the thread for as long as the script runs (at most
/// `limits.time`, plus the last instructions before the limit is noticed).
pub(crate) fn run(
    script: &Script,
    keys: &[Bytes],
    argv: &[Bytes],
    limits: &Limits,
    dispatch: &mut dyn FnMut(Vec<Bytes>) -> Value,
) -> Result<Value, Failure> {
    SANDBOX.with(|slot| {
        // A script's commands never run a script (EVAL is flagged `noscript`); this only
        // guards the state against being entered twice.
        let mut slot = slot
            .try_borrow_mut()
            .map_err(|_| Failure::Engine("a script cannot run another script".into()))?;
        if slot.is_none() {
            let built = Sandbox::new().map_err(|e| Failure::Engine(message(&e)))?;
            *slot = Some(built);
        }
        let Some(sandbox) = slot.as_mut() else {
            return Err(Failure::Engine("no Lua state".into()));
        };
        let started = Instant::now();
        let result = run_in(sandbox, script, keys, argv, limits, dispatch);
        if started.elapsed() < QUICK {
            sandbox.quick.insert(script.sha);
        } else {
            sandbox.quick.remove(&script.sha);
        }
        // What a stopped script allocated is garbage now; a state that still holds more
        // than one script may use is rebuilt rather than kept at that size.
        let lua = &sandbox.lua;
        if lua.used_memory() > limits.memory
            && (lua.gc_collect().is_err() || lua.used_memory() > limits.memory)
        {
            *slot = None;
        }
        result
    })
}

/// Whether script `sha` last ran on this thread in less than [`QUICK`].
pub(crate) fn ran_quickly(sha: &Sha) -> bool {
    SANDBOX.with(|slot| {
        slot.try_borrow()
            .ok()
            .and_then(|sandbox| sandbox.as_ref().map(|s| s.quick.contains(sha)))
            .unwrap_or(false)
    })
}

fn run_in(
    sandbox: &mut Sandbox,
    script: &Script,
    keys: &[Bytes],
    argv: &[Bytes],
    limits: &Limits,
    dispatch: &mut dyn FnMut(Vec<Bytes>) -> Value,
) -> Result<Value, Failure> {
    let function = sandbox
        .compile(
            script.sha,
            &script.source,
            script.generation,
            limits.cached_scripts,
        )
        .map_err(|e| Failure::Compile(message(&e)))?;
    let lua = sandbox.lua.clone();
    let run = &sandbox.run;
    run.stopped.set(None);
    run.deadline.set(Some(Instant::now() + limits.time));
    let memory_limit = lua.used_memory().saturating_add(limits.memory);
    let limited = lua.set_memory_limit(memory_limit);
    let result = limited.and_then(|_| {
        lua.scope(|scope| {
            let call = scope.create_function_mut(|lua, args: Variadic<mlua::Value>| {
                let args = match args.iter().map(convert::command_arg).collect() {
                    Ok(args) => args,
                    Err(message) => return convert::error_table(lua, message),
                };
                convert::to_lua(lua, dispatch(args))
            })?;
            sandbox.current.raw_set("dispatch", call)?;
            let outcome = strings(&lua, keys).and_then(|keys| {
                let argv = strings(&lua, argv)?;
                sandbox.runner.call::<MultiValue>((function, keys, argv))
            });
            sandbox.current.raw_set("dispatch", mlua::Value::Nil)?;
            Ok(settle(outcome, run, limits))
        })
    });
    run.deadline.set(None);
    // Between runs the state is unlimited: compiling and building the next run's tables
    // must not fail for what this run left behind.
    let _ = lua.set_memory_limit(0);
    match result {
        Ok(settled) => settled,
        Err(error) => Err(failure(&error, run, limits)),
    }
}

/// A Lua table `{s1, s2, ...}` of strings.
fn strings(lua: &Lua, items: &[Bytes]) -> mlua::Result<mlua::Table> {
    let table = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, item) in items.iter().enumerate() {
        table.raw_seti(i + 1, lua.create_string(item)?)?;
    }
    Ok(table)
}

/// What a run's `pcall(script)` returned, as the script's reply or failure.
fn settle(outcome: mlua::Result<MultiValue>, run: &Run, limits: &Limits) -> Result<Value, Failure> {
    if let Some(stop) = run.stopped.get() {
        return Err(stopped(stop, limits));
    }
    let values = outcome.map_err(|e| failure(&e, run, limits))?;
    let mut values = values.into_iter();
    let ok = matches!(values.next(), Some(mlua::Value::Boolean(true)));
    let value = values.next().unwrap_or(mlua::Value::Nil);
    if ok {
        return convert::to_reply(&value, limits.reply_bytes)
            .map_err(|bad| Failure::Reply(bad, limits.reply_bytes));
    }
    if is_memory_error(&value) {
        return Err(Failure::OutOfMemory(limits.memory));
    }
    if let Some(message) = convert::error_message(&value) {
        return Err(Failure::Command(message));
    }
    Err(Failure::Runtime(match &value {
        mlua::Value::String(s) => s.to_string_lossy(),
        mlua::Value::Error(error) => message(error),
        other => format!("(error object is a {} value)", other.type_name()),
    }))
}

/// A failure raised outside the script's own protected call.
fn failure(error: &mlua::Error, run: &Run, limits: &Limits) -> Failure {
    if let Some(stop) = run.stopped.get() {
        return stopped(stop, limits);
    }
    if mlua_memory_error(error) {
        return Failure::OutOfMemory(limits.memory);
    }
    Failure::Runtime(message(error))
}

fn stopped(stop: Stop, limits: &Limits) -> Failure {
    match stop {
        Stop::Time => Failure::TimedOut(limits.time),
        Stop::Memory => Failure::OutOfMemory(limits.memory),
    }
}

/// An mlua error's message, without mlua's wrapping or a traceback (which would quote
/// sessiond's internals, not the script).
fn message(error: &mlua::Error) -> String {
    let text = match error {
        mlua::Error::RuntimeError(message) | mlua::Error::MemoryError(message) => message.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::CallbackError { cause, .. } => return message(cause),
        other => other.to_string(),
    };
    match text.find("\nstack traceback:") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests;
