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
//! - [`Turn`] (here): at most [`MAX_RUNNING`] scripts run at once, process-wide, so that
//!   concurrent long scripts cannot take a thread and a Lua state each; a running state's
//!   memory counts in the server's memory accounting.
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
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mlua::{Lua, MultiValue, Variadic};

pub(crate) use cache::{Cache, Sha};
use convert::BadReply;
use sandbox::{is_memory_error, mlua_memory_error, Run, Sandbox, Stop};

use super::frame::Value;
use crate::memory::{Accounting, Part};

/// The part of the memory accounting live Lua states count under: they are memory the
/// connections' requests hold while, and after, they run (the accounting has no part of
/// its own for scripts).
const SCRIPT_PART: Part = Part::Connections;

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
    /// [`MAX_RUNNING`] scripts were running and none ended within the time limit (or too
    /// many were already waiting): this one never started.
    Busy(usize, Duration),
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
            Failure::Busy(running, limit) => format!(
                "BUSY {running} scripts are running, the most sessiond runs at once, and none ended within resp.max_script_time_ms ({} ms); this one did not run, retry it",
                limit.as_millis()
            ),
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

/// A Lua state that holds more than this after a run is collected, and dropped if it still
/// does: an idle thread keeps at most this much (a state with the sandbox and a few dozen
/// compiled scripts holds well under it), not what its largest script once needed.
pub(crate) const KEPT_STATE_BYTES: usize = 1 << 20;

/// How many scripts may run at once, process-wide. Each running script holds a thread
/// (handed off the async worker) and a Lua state of up to `resp.max_script_memory_bytes`;
/// without a bound, N concurrent long scripts took N threads and N states. Sized to the
/// cores, as tokio sizes its workers: more scripts at once would not run faster.
pub(crate) static MAX_RUNNING: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(2, |n| n.get().max(2)));

/// How many scripts may wait for a turn, per running one; past that a script is refused at
/// once, so that waiting scripts (each on a thread of its own, without a Lua state) do not
/// pile up threads without bound either. Generous: a script's first run on a thread is
/// handed off the worker, so a burst of short scripts from many clients (50 phpredis
/// unlocks at once) briefly waits many deep, and must not be refused.
const WAITING_PER_RUNNING: usize = 32;

/// Scripts running and waiting, process-wide.
#[derive(Debug, Default)]
struct Turns {
    running: usize,
    waiting: usize,
}

static TURNS: Mutex<Turns> = Mutex::new(Turns {
    running: 0,
    waiting: 0,
});
static TURN_FREED: Condvar = Condvar::new();

fn lock_turns() -> MutexGuard<'static, Turns> {
    TURNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A script's turn to run (see [`MAX_RUNNING`]); the next waiting script's when dropped.
#[derive(Debug)]
pub(crate) struct Turn(());

impl Turn {
    /// Takes a turn: at once if fewer than [`MAX_RUNNING`] scripts run; otherwise waits, off
    /// the async worker, for one to end, at most `limit` (the time limit, after which every
    /// running script has ended), and refuses with [`Failure::Busy`] past that or when too
    /// many already wait.
    pub(crate) fn take(limit: Duration) -> Result<Turn, Failure> {
        let max = *MAX_RUNNING;
        let mut turns = lock_turns();
        if turns.running < max {
            turns.running += 1;
            return Ok(Turn(()));
        }
        if turns.waiting >= max * WAITING_PER_RUNNING {
            return Err(Failure::Busy(max, limit));
        }
        turns.waiting += 1;
        drop(turns);
        let deadline = Instant::now() + limit;
        crate::store::off_the_worker(|| {
            let mut turns = lock_turns();
            loop {
                if turns.running < max {
                    turns.waiting -= 1;
                    turns.running += 1;
                    return Ok(Turn(()));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    turns.waiting -= 1;
                    return Err(Failure::Busy(max, limit));
                }
                turns = TURN_FREED
                    .wait_timeout(turns, left)
                    .map_or_else(|poisoned| poisoned.into_inner().0, |(guard, _)| guard);
            }
        })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut turns = lock_turns();
        turns.running -= 1;
        let waited_for = turns.waiting > 0;
        drop(turns);
        // A waiter counts itself under the lock before it waits, so none is missed; and the
        // common case, nobody waiting, makes no system call (a notify always does one).
        if waited_for {
            TURN_FREED.notify_one();
        }
    }
}

/// Runs `script` with `keys` as `KEYS` and `argv` as `ARGV`, within `limits`. Each
/// `redis.call`/`redis.pcall` hands the command's arguments to `dispatch` and gives the
/// script its reply. The state's memory after the run is counted in `memory` (if given)
/// for as long as the thread keeps the state. The caller holds a [`Turn`]. Blocks the thread for as long as the script runs (at most
/// `limits.time`, plus the last instructions before the limit is noticed).
pub(crate) fn run(
    script: &Script,
    keys: &[Bytes],
    argv: &[Bytes],
    limits: &Limits,
    memory: Option<&Arc<Accounting>>,
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
        if let Some(memory) = memory {
            let mut charge = sandbox.run.charge.borrow_mut();
            charge
                .get_or_insert_with(|| memory.charge(SCRIPT_PART))
                .set(sandbox.lua.used_memory());
        }
        let started = Instant::now();
        let result = run_in(sandbox, script, keys, argv, limits, dispatch);
        if started.elapsed() < QUICK {
            sandbox.quick.insert(script.sha);
        } else {
            sandbox.quick.remove(&script.sha);
        }
        // What the script allocated is garbage now (a stopped script's too); a state that
        // still holds more than a small floor is dropped rather than kept at that size by
        // an idle thread.
        let lua = &sandbox.lua;
        if lua.used_memory() > KEPT_STATE_BYTES
            && (lua.gc_collect().is_err() || lua.used_memory() > KEPT_STATE_BYTES)
        {
            *slot = None;
        } else if let Some(charge) = sandbox.run.charge.borrow_mut().as_mut() {
            charge.set(lua.used_memory());
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
