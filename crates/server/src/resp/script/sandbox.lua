-- The environment scripts run in (see sandbox.rs). This chunk runs once per Lua state,
-- with the state's whole (already reduced) standard library, before any script; scripts
-- never see the globals it sees. It returns the functions the Rust side keeps.
--
-- Arguments: `aborted(err)` says whether an error caught by pcall must be raised again
-- (the time or memory limit stopped the script), `sha1hex(s)`.

local aborted, sha1hex = ...

local pcall, error, type, tostring, select = pcall, error, type, tostring, select
local setmetatable, getmetatable, rawget, rawset, setfenv = setmetatable, getmetatable, rawget, rawset, setfenv
local find, sub, byte = string.find, string.sub, string.byte
local floor = math.floor

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

-- table.insert, table.remove and table.sort write with raw sets, which bypass a proxy's
-- __newindex: without these guards a script could append to `string` or `redis` and the
-- next script on this Lua state (any client's) would see it.
for _, name in ipairs({ "insert", "remove", "sort" }) do
  local raw = table[name]
  table[name] = function(t, ...)
    if readonly[t] then error("Attempt to modify a readonly table", 2) end
    return raw(t, ...)
  end
end

-- Lua's pattern matcher backtracks in C, where the time limit's instruction hook never runs:
-- `string.find(string.rep('a', 3000), '.-.-.-.-.-.-.-b')` would run for years. So a pattern
-- with magic characters is accepted only when a bound on the matcher's work stays under
-- PATTERN_BUDGET steps. The bound follows the matcher's recursion: each `*`, `+`, `-` (and
-- each `%b`) tries at most n + 1 extents of an n-byte subject and each `?` two, every such
-- path walks the pattern once (plus a scan of the subject where a quantifier counts its
-- extent), and an unanchored search starts at each of the n + 1 positions:
--   starts * (n + 1)^quantifiers * 2^optionals * (m + 1 + (quantifiers > 0 and n or 0))
-- for an m-byte pattern. A plain search (no magic character, or find's `plain` argument)
-- is a memory comparison and always allowed.
local PATTERN_BUDGET = 1e8
local SPECIALS = "[%^%$%*%+%?%.%(%[%%%-]"

-- The quantifiers, optionals and whether `p` is anchored, read as Lua 5.1's matcher reads it.
local function pattern_shape(p, anchors)
  local m, i, quantifiers, optionals = #p, 1, 0, 0
  local anchored = anchors and byte(p, 1) == 94 -- '^'
  if anchored then i = 2 end
  while i <= m do
    local c = byte(p, i)
    local single = true
    if c == 37 then -- '%'
      local d = byte(p, i + 1)
      if d == 98 then -- %bxy: scans up to the whole subject, as a quantifier does
        quantifiers, i, single = quantifiers + 1, i + 4, false
      elseif d == 102 then -- %f[set]: one look, then its set
        i, single = i + 2, false
      else
        i = i + 2
      end
    elseif c == 91 then -- '[': a set, up to its unescaped ']' (a ']' first is literal)
      i = i + 1
      if byte(p, i) == 94 then i = i + 1 end
      repeat
        if byte(p, i) == 37 then i = i + 1 end
        i = i + 1
      until i > m or byte(p, i) == 93
      i = i + 1
    elseif c == 40 or c == 41 then -- captures match nothing themselves
      i, single = i + 1, false
    else
      i = i + 1
    end
    if single then
      local q = byte(p, i)
      if q == 42 or q == 43 or q == 45 then -- * + -
        quantifiers, i = quantifiers + 1, i + 1
      elseif q == 63 then -- ?
        optionals, i = optionals + 1, i + 1
      end
    end
  end
  return quantifiers, optionals, anchored
end

local function check_pattern(s, p, anchors)
  if type(s) == "number" then s = tostring(s) end
  if type(p) == "number" then p = tostring(p) end
  -- Wrong types are left to the real function, whose error names them.
  if type(s) ~= "string" or type(p) ~= "string" or not find(p, SPECIALS) then return end
  local n, m = #s, #p
  local quantifiers, optionals, anchored = pattern_shape(p, anchors)
  local cost = (m + 1 + (quantifiers > 0 and n or 0)) * 2 ^ optionals
  if not anchored then cost = cost * (n + 1) end
  for _ = 1, quantifiers do
    cost = cost * (n + 1)
    if cost > PATTERN_BUDGET then break end
  end
  if cost > PATTERN_BUDGET then
    error("pattern too costly for sessiond's script limits: " .. quantifiers ..
      " quantifiers over a " .. n .. "-byte subject could take over " ..
      floor(PATTERN_BUDGET) .. " matching steps; use fewer quantifiers, an anchored " ..
      "pattern ('^...'), a shorter subject or a plain find", 3)
  end
end

do
  local raw_find, raw_match, raw_gmatch, raw_gsub =
    string.find, string.match, string.gmatch, string.gsub
  -- Replaced in the real string table: string methods (`s:find(p)`) reach it through the
  -- strings' metatable, not through the proxy.
  string.find = function(s, p, init, plain)
    if not plain then check_pattern(s, p, true) end
    return raw_find(s, p, init, plain)
  end
  string.match = function(s, p, ...)
    check_pattern(s, p, true)
    return raw_match(s, p, ...)
  end
  -- gmatch does not treat a leading '^' as an anchor in Lua 5.1.
  string.gmatch = function(s, p)
    check_pattern(s, p, false)
    return raw_gmatch(s, p)
  end
  string.gsub = function(s, p, ...)
    check_pattern(s, p, true)
    return raw_gsub(s, p, ...)
  end
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

-- math.random: Lua 5.1's uses the C library's rand(), one sequence for the whole process, so
-- a script's math.randomseed would steer what every later script (on any thread) draws.
-- Here each run draws from its own sequence, reset to the same seed when the run starts, as
-- Redis does (Park-Miller's generator: exact in doubles).
local random_state = 1
local function reseed(seed)
  random_state = floor(seed) % 2147483647
  if random_state <= 0 then random_state = random_state + 2147483646 end
end
math.random = function(low, high)
  random_state = (random_state * 16807) % 2147483647
  local r = (random_state - 1) / 2147483646
  if low == nil then return r end
  if type(low) ~= "number" or (high ~= nil and type(high) ~= "number") then
    error("bad argument to 'random' (number expected)", 2)
  end
  if high == nil then low, high = 1, low end
  low, high = floor(low), floor(high)
  if low > high then error("bad argument to 'random' (interval is empty)", 2) end
  return low + floor(r * (high - low + 1))
end
math.randomseed = function(seed)
  if type(seed) ~= "number" then error("bad argument to 'randomseed' (number expected)", 2) end
  reseed(seed)
end

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
  reseed(1)
  local env = { KEYS = keys, ARGV = argv }
  env._G = env
  setfenv(f, setmetatable(env, globals_meta))
  return pcall(f)
end

return run, current
