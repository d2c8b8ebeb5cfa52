-- The environment scripts run in (see sandbox.rs). This chunk runs once per Lua state,
-- with the state's whole (already reduced) standard library, before any script; scripts
-- never see the globals it sees. It returns the functions the Rust side keeps.
--
-- Arguments: `aborted(err)` says whether an error caught by pcall must be raised again
-- (the time or memory limit stopped the script), `sha1hex(s)`.

local aborted, sha1hex = ...

local pcall, error, type, tostring, select = pcall, error, type, tostring, select
local setmetatable, getmetatable, rawget, rawset, setfenv = setmetatable, getmetatable, rawget, rawset, setfenv
local find, sub = string.find, string.sub

-- Tables shared by every run are read-only, so that no script leaves anything behind for
-- the next one: a script sees a proxy whose writes fail. `__metatable` hides the proxy's
-- metatable from getmetatable and makes setmetatable refuse it; rawset is wrapped below.
local readonly = {}
local function protect(t)
  local proxy = setmetatable({}, {
    __index = t,
    __newindex = function() error("Attempt to modify a readonly table", 2) end,
    __metatable = false,
  })
  readonly[proxy] = true
  return proxy
end

local function guarded_rawset(t, k, v)
  if readonly[t] then error("Attempt to modify a readonly table", 2) end
  return rawset(t, k, v)
end

-- pcall and xpcall must not let a script survive its limits: once the time limit has
-- passed or memory ran out, a caught error is raised again.
local function pass(ok, ...)
  if not ok and aborted((...)) then error((...), 0) end
  return ok, ...
end
local function guarded_pcall(f, ...) return pass(pcall(f, ...)) end

-- xpcall is built on pcall: Lua 5.1 calls a real xpcall's handler with hooks disabled, so a
-- handler that never returned would never meet the time limit. Here the handler runs once
-- the error has been caught, under the hook like any other code; a limit is re-raised
-- before it runs. (The handler therefore sees the error, not the stack where it happened;
-- there is no debug library to look at that stack anyway.)
local function handled(handler, ok, ...)
  if ok then return true, ... end
  local err = (...)
  if aborted(err) then error(err, 0) end
  return false, (select(2, pass(pcall(handler, err))))
end
local function guarded_xpcall(f, handler) return handled(handler, pcall(f)) end

-- string.dump turns a function into bytecode, which no script may load (and string methods
-- reach the real string table through the strings' metatable, so remove it there).
string.dump = nil
getmetatable("").__metatable = false

-- `current.dispatch` runs one command; the Rust side sets it for the length of a run only.
local current = {}
local function dispatch(...)
  local run = current.dispatch
  if run == nil then error("redis.call is only available while a script runs", 3) end
  return run(...)
end

local redis = {
  LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
  REPL_NONE = 0, REPL_AOF = 1, REPL_SLAVE = 2, REPL_REPLICA = 2, REPL_ALL = 3,
  REDIS_VERSION = "7.2.0", REDIS_VERSION_NUM = 0x070200,
}

-- An error reply is raised, as a table, so that `pcall(redis.call, ...)` gets it whole.
function redis.call(...)
  local reply = dispatch(...)
  if type(reply) == "table" and rawget(reply, "err") ~= nil then error(reply, 0) end
  return reply
end

function redis.pcall(...)
  return dispatch(...)
end

-- Redis's rules: a leading '-' is dropped; a message without a code (no space) gets "ERR".
function redis.error_reply(message)
  if type(message) ~= "string" then error("wrong number or type of arguments", 2) end
  if sub(message, 1, 1) == "-" then message = sub(message, 2) end
  if not find(message, " ", 1, true) then message = "ERR " .. message end
  return { err = message }
end

function redis.status_reply(status)
  if type(status) ~= "string" then error("wrong number or type of arguments", 2) end
  return { ok = status }
end

function redis.sha1hex(s)
  if type(s) ~= "string" and type(s) ~= "number" then
    error("wrong number or type of arguments", 2)
  end
  return sha1hex(tostring(s))
end

-- Log lines could carry session data; sessiond writes none from scripts.
function redis.log(level, ...)
  if type(level) ~= "number" or select("#", ...) == 0 then
    error("redis.log() requires two arguments or more.", 2)
  end
end

-- Replies reach scripts in their RESP2 form only.
function redis.setresp(version)
  if version ~= 2 then error("RESP version must be 2 (RESP3 is not supported in scripts)", 2) end
end

-- Replication is not a concept here: always "effects replication", as in Redis 7.
function redis.replicate_commands() return true end
function redis.set_repl(_) end

-- What scripts may use: no os, io, debug, package, coroutine, load*, dofile, require,
-- getfenv/setfenv, collectgarbage, newproxy. print does nothing (Redis writes to its
-- stdout, which a daemon does not read).
local sandbox = {
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
  pcall = guarded_pcall, xpcall = guarded_xpcall, rawequal = rawequal, rawget = rawget,
  rawset = guarded_rawset, select = select, tonumber = tonumber, tostring = tostring,
  type = type, unpack = unpack, _VERSION = _VERSION, getmetatable = getmetatable,
  setmetatable = setmetatable, print = function() end,
  string = protect(string), table = protect(table), math = protect(math),
  redis = protect(redis),
}

-- Globals: reading an unknown one and creating one are errors (Redis 7 refuses both).
local globals_meta = {
  __index = function(_, name)
    local value = sandbox[name]
    if value == nil then
      error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
    end
    return value
  end,
  __newindex = function(_, name)
    error("Script attempted to create global variable '" .. tostring(name) .. "'", 2)
  end,
  __metatable = false,
}

-- Runs a compiled script `f` with fresh globals holding KEYS and ARGV: nothing one run
-- defines is seen by the next. Returns pcall's results.
local function run(f, keys, argv)
  local env = { KEYS = keys, ARGV = argv }
  env._G = env
  setfenv(f, setmetatable(env, globals_meta))
  return pcall(f)
end

return run, current
