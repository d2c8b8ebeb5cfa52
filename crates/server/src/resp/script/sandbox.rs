//! One worker thread's Lua state: built once, sandboxed, reused by every script that runs
//! on the thread, with the thread's compiled scripts.
//!
//! The sandbox itself is written in Lua (`sandbox.lua`): it is clearer there what a script
//! can reach. This side builds the state with only the base, string, table and math
//! libraries (no `os`, `io`, `debug`, `package`), runs that chunk, and keeps the two things
//! it returns: the function that runs a compiled script with fresh globals, and the table
//! through which `redis.call` reaches the command dispatcher of the current run.
//!
//! Limits are enforced here, per run:
//! - **time**: a hook every [`HOOK_INSTRUCTIONS`] VM instructions compares the clock with
//!   the run's deadline, and once it has passed raises an error, and again at every later
//!   hook, while `pcall` (wrapped by the sandbox) re-raises it: the script cannot catch its
//!   way past the limit.
//! - **memory**: mlua's allocator refuses allocations past a limit set, for the run, to
//!   what the state holds at its start plus `resp.max_script_memory_bytes`. The same hook
//!   keeps the state's size in the server's memory accounting up to date.
//! - **bytecode**: scripts are compiled in text mode only, and `string.dump`, `load` and
//!   `loadstring` are not in the sandbox.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use mlua::chunk::ChunkMode;
use mlua::{Function, HookTriggers, Lua, LuaOptions, LuaString, StdLib, Table, VmState};

use super::cache::Sha;
use crate::memory::Charge;

/// How many VM instructions run between two looks at the clock: often enough that a
/// script stops within a fraction of a millisecond of its deadline, rarely enough that the
/// look costs nothing measurable.
pub(super) const HOOK_INSTRUCTIONS: u32 = 1000;

/// Lua's message for an allocation that failed.
const OUT_OF_MEMORY: &[u8] = b"not enough memory";

/// Why the current run must stop, once a limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// The deadline passed.
    Time,
    /// An allocation failed at the memory limit.
    Memory,
}

/// The run in progress, as the hook and `aborted` see it.
#[derive(Debug, Default)]
pub(super) struct Run {
    /// When the run must stop; `None` between runs.
    pub(super) deadline: Cell<Option<Instant>>,
    /// Set once a limit stopped the run.
    pub(super) stopped: Cell<Option<Stop>>,
    /// The state's memory, as counted in the server's memory accounting: brought up to date
    /// by the hook while a script runs and after each run, released when the state is
    /// dropped (its thread ended, or it held too much after a run).
    pub(super) charge: RefCell<Option<Charge>>,
}

/// A sandboxed Lua state and what has been compiled in it.
pub(super) struct Sandbox {
    pub(super) lua: Lua,
    /// `run(f, KEYS, ARGV)` from `sandbox.lua`.
    pub(super) runner: Function,
    /// `current` from `sandbox.lua`: `dispatch` is set for the length of a run.
    pub(super) current: Table,
    pub(super) run: Rc<Run>,
    /// Compiled scripts, by name.
    compiled: HashMap<Sha, Function>,
    /// The scripts whose last run on this thread was quick (see [`super::QUICK`]).
    pub(super) quick: HashSet<Sha>,
    /// The script cache's generation these were compiled under.
    generation: u64,
}

impl Sandbox {
    /// A new state with the sandbox set up.
    pub(super) fn new() -> mlua::Result<Sandbox> {
        let options = LuaOptions::new().catch_rust_panics(false);
        let lua = Lua::new_with(StdLib::STRING | StdLib::TABLE | StdLib::MATH, options)?;
        let run = Rc::new(Run::default());

        let aborted = {
            let run = Rc::clone(&run);
            lua.create_function(move |_, error: mlua::Value| {
                if run.stopped.get().is_none() && is_memory_error(&error) {
                    run.stopped.set(Some(Stop::Memory));
                }
                Ok(run.stopped.get().is_some())
            })?
        };
        let sha1hex = lua.create_function(|_, text: LuaString| {
            Ok(Sha::of(&text.as_bytes()).as_str().to_owned())
        })?;
        let (runner, current): (Function, Table) = lua
            .load(include_str!("sandbox.lua"))
            .set_name("=sandbox")
            .call((aborted, sha1hex))?;

        let hook_run = Rc::clone(&run);
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(HOOK_INSTRUCTIONS),
            move |lua, _| {
                if let Some(charge) = hook_run.charge.borrow_mut().as_mut() {
                    charge.set(lua.used_memory());
                }
                let late = hook_run
                    .deadline
                    .get()
                    .is_some_and(|deadline| Instant::now() >= deadline);
                if late && hook_run.stopped.get().is_none() {
                    hook_run.stopped.set(Some(Stop::Time));
                }
                if hook_run.stopped.get() == Some(Stop::Time) {
                    return Err(mlua::Error::runtime("script time limit reached"));
                }
                Ok(VmState::Continue)
            },
        )?;
        Ok(Sandbox {
            lua,
            runner,
            current,
            run,
            compiled: HashMap::new(),
            quick: HashSet::new(),
            generation: 0,
        })
    }

    /// The compiled function of script `sha`, compiling `source` if this thread has not yet.
    /// At most `max` scripts stay compiled; past that the thread starts afresh (a thread
    /// sees the scripts it runs again soon after, and the cache is bounded the same way).
    pub(super) fn compile(
        &mut self,
        sha: Sha,
        source: &[u8],
        generation: u64,
        max: usize,
    ) -> mlua::Result<Function> {
        if generation != self.generation || self.compiled.len() >= max {
            self.compiled.clear();
            self.quick.clear();
            self.generation = generation;
        }
        if let Some(function) = self.compiled.get(&sha) {
            return Ok(function.clone());
        }
        let function = self
            .lua
            .load(source)
            .set_name("@user_script")
            .set_mode(ChunkMode::Text)
            .into_function()?;
        self.compiled.insert(sha, function.clone());
        Ok(function)
    }
}

/// Whether a caught error is an allocation failure: Lua's own message, or mlua's error for
/// an allocation made on the Rust side (a reply converted for `redis.call`).
pub(super) fn is_memory_error(value: &mlua::Value) -> bool {
    match value {
        mlua::Value::String(s) => s.as_bytes() == OUT_OF_MEMORY,
        mlua::Value::Error(error) => mlua_memory_error(error),
        _ => false,
    }
}

/// Whether `error` is, or was caused by, an allocation failure.
pub(super) fn mlua_memory_error(error: &mlua::Error) -> bool {
    match error {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => mlua_memory_error(cause),
        _ => false,
    }
}
