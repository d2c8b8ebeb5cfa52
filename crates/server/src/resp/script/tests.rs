//! The engine against a dispatcher over a plain map: the sandbox, the limits, the
//! conversions as a script sees them, and what a failure reports.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::resp::frame::OK;

const LIMITS: Limits = Limits {
    time: Duration::from_millis(200),
    memory: 4 << 20,
    reply_bytes: 1 << 20,
    cached_scripts: 100,
};

/// A stand-in for the command table: GET, SET and DEL over a map, an error otherwise.
#[derive(Default)]
struct Map {
    data: HashMap<Bytes, Bytes>,
    calls: usize,
}

impl Map {
    fn dispatch(&mut self, args: Vec<Bytes>) -> Value {
        self.calls += 1;
        let name = args[0].to_ascii_lowercase();
        match (&name[..], &args[1..]) {
            (b"get", [key]) => self
                .data
                .get(key)
                .map_or(Value::Null, |v| Value::Bulk(v.clone())),
            (b"set", [key, value]) => {
                self.data.insert(key.clone(), value.clone());
                OK
            }
            (b"del", [key]) => Value::Integer(i64::from(self.data.remove(key).is_some())),
            (b"echo", [arg]) => Value::Bulk(arg.clone()),
            (b"nested", []) => Value::Array(vec![
                Value::Integer(1),
                Value::Null,
                Value::Array(vec![Value::bulk_static("x")]),
            ]),
            _ => Value::error("ERR unknown command"),
        }
    }
}

fn script(source: &str) -> Script {
    Script {
        sha: Sha::of(source.as_bytes()),
        source: Bytes::copy_from_slice(source.as_bytes()),
        generation: 0,
    }
}

fn bytes(items: &[&str]) -> Vec<Bytes> {
    items
        .iter()
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect()
}

fn eval_with(
    map: &mut Map,
    source: &str,
    keys: &[&str],
    argv: &[&str],
    limits: &Limits,
) -> Result<Value, Failure> {
    run(
        &script(source),
        &bytes(keys),
        &bytes(argv),
        limits,
        None,
        &mut |args| map.dispatch(args),
    )
}

fn eval(source: &str) -> Result<Value, Failure> {
    eval_with(&mut Map::default(), source, &[], &[], &LIMITS)
}

fn runtime_error(result: Result<Value, Failure>) -> String {
    match result {
        Err(Failure::Runtime(message)) => message,
        other => panic!("expected a runtime error, got {other:?}"),
    }
}

/// phpredis's session unlock (redis_session.c, `UNLOCK_SCRIPT`).
const UNLOCK: &str = "if redis.call(\"get\",KEYS[1]) == ARGV[1] then return redis.call(\"del\",KEYS[1]) else return 0 end";

#[test]
fn phpredis_unlock_deletes_only_with_the_matching_token() {
    let mut map = Map::default();
    map.data.insert("lock".into(), "token".into());
    let other = eval_with(&mut map, UNLOCK, &["lock"], &["other"], &LIMITS);
    assert_eq!(other, Ok(Value::Integer(0)));
    assert!(map.data.contains_key("lock".as_bytes()));
    let mine = eval_with(&mut map, UNLOCK, &["lock"], &["token"], &LIMITS);
    assert_eq!(mine, Ok(Value::Integer(1)));
    assert!(map.data.is_empty());
}

#[test]
fn keys_and_argv_and_replies_reach_the_script_converted() {
    let mut map = Map::default();
    let reply = eval_with(
        &mut map,
        "redis.call('set', KEYS[1], ARGV[1]) return {redis.call('get', KEYS[1]), #KEYS, #ARGV, redis.call('set', 'a', 1)}",
        &["k"],
        &["v", "w"],
        &LIMITS,
    );
    assert_eq!(
        reply,
        Ok(Value::Array(vec![
            Value::bulk_static("v"),
            Value::Integer(1),
            Value::Integer(2),
            OK,
        ]))
    );
    // A number argument reaches the command as its decimal text.
    assert_eq!(
        map.data.get("a".as_bytes()),
        Some(&Bytes::from_static(b"1"))
    );
    let shapes = "local r = redis.call('nested') return {type(r[1]), type(r[2]), r[3][1], redis.call('get', 'missing') == false}";
    assert_eq!(
        eval_with(&mut map, shapes, &[], &[], &LIMITS),
        Ok(Value::Array(vec![
            Value::bulk_static("number"),
            Value::bulk_static("boolean"),
            Value::bulk_static("x"),
            Value::Integer(1),
        ]))
    );
}

#[test]
fn call_raises_command_errors_and_pcall_returns_them() {
    let mut map = Map::default();
    assert_eq!(
        eval_with(&mut map, "return redis.call('nope')", &[], &[], &LIMITS),
        Err(Failure::Command("ERR unknown command".into()))
    );
    assert_eq!(
        eval_with(&mut map, "return redis.pcall('nope')", &[], &[], &LIMITS),
        Ok(Value::error("ERR unknown command"))
    );
    // Raised as a table, so that a script can catch it and look at it.
    let caught = "local ok, e = pcall(redis.call, 'nope') return {tostring(ok), e.err}";
    assert_eq!(
        eval_with(&mut map, caught, &[], &[], &LIMITS),
        Ok(Value::Array(vec![
            Value::bulk_static("false"),
            Value::bulk_static("ERR unknown command"),
        ]))
    );
    // Arguments must be strings or numbers; the command is not run.
    let calls = map.calls;
    assert_eq!(
        eval_with(&mut map, "return redis.pcall('get', {})", &[], &[], &LIMITS),
        Ok(Value::error(
            "ERR Lua redis lib command arguments must be strings or integers"
        ))
    );
    assert_eq!(map.calls, calls);
}

#[test]
fn reply_helpers_follow_redis() {
    assert_eq!(eval("return redis.status_reply('OK')"), Ok(OK));
    assert_eq!(
        eval("return redis.error_reply('MY failure')"),
        Ok(Value::error("MY failure"))
    );
    assert_eq!(
        eval("return redis.error_reply('-oops')"),
        Ok(Value::error("ERR oops"))
    );
    assert_eq!(
        eval("return redis.sha1hex('return 1')"),
        Ok(Value::bulk_static(
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        ))
    );
    assert_eq!(
        eval("redis.log(redis.LOG_WARNING, 'x') redis.setresp(2) return 1"),
        Ok(Value::Integer(1))
    );
    assert!(eval("redis.setresp(3)").is_err());
}

#[test]
fn dangerous_globals_are_absent() {
    for name in [
        "os",
        "io",
        "debug",
        "package",
        "require",
        "module",
        "load",
        "loadstring",
        "loadfile",
        "dofile",
        "getfenv",
        "setfenv",
        "collectgarbage",
        "newproxy",
        "coroutine",
    ] {
        let message = runtime_error(eval(&format!("return {name}")));
        assert!(
            message.contains("nonexistent global variable"),
            "{name}: {message}"
        );
    }
    // string.dump, directly or as a string method, is gone too.
    assert_eq!(eval("return string.dump"), Ok(Value::Null));
    let message = runtime_error(eval("return ('x').dump(function() end)"));
    assert!(message.contains("dump"), "{message}");
    // What is there works.
    assert_eq!(
        eval("return {string.rep('ab', 2), table.concat({1, 2}, ','), math.floor(2.5), ('x'):upper()}"),
        Ok(Value::Array(vec![
            Value::bulk_static("abab"),
            Value::bulk_static("1,2"),
            Value::Integer(2),
            Value::bulk_static("X"),
        ]))
    );
}

#[test]
fn xpcall_calls_its_handler_with_the_error() {
    let source =
        "return {xpcall(function() error('x') end, function(e) return 'handled: ' .. e end)}";
    assert_eq!(
        eval(source),
        Ok(Value::Array(vec![
            Value::Null,
            Value::bulk_static("handled: user_script:1: x"),
        ]))
    );
    assert_eq!(
        eval("return {xpcall(function() return 1, 2 end, print)}"),
        Ok(Value::Array(vec![
            Value::Integer(1),
            Value::Integer(1),
            Value::Integer(2)
        ]))
    );
}

#[test]
fn bytecode_is_refused() {
    // The 5.1 bytecode signature, ESC "Lua", then anything.
    let result = eval("\x1bLuaQ\x00\x01\x04\x08\x04\x08\x00");
    assert!(matches!(result, Err(Failure::Compile(_))), "{result:?}");
}

#[test]
fn globals_cannot_be_created_and_shared_tables_are_read_only() {
    let message = runtime_error(eval("x = 1"));
    assert!(
        message.contains("Script attempted to create global variable 'x'"),
        "{message}"
    );
    for attempt in [
        "string.rep = nil",
        "redis.call = nil",
        "rawset(string, 'rep', nil)",
        "setmetatable(math, {})",
        "getmetatable('').__index = {}",
        "setmetatable(_G, nil)",
    ] {
        assert!(eval(attempt).is_err(), "{attempt} succeeded");
    }
    // Nothing leaked into the next run.
    assert_eq!(
        eval("return string.rep('a', 3)"),
        Ok(Value::bulk_static("aaa"))
    );
    // rawset on the run's own globals is allowed and forgotten with them.
    assert_eq!(eval("rawset(_G, 'y', 5) return y"), Ok(Value::Integer(5)));
    assert!(runtime_error(eval("return y")).contains("nonexistent global"));
}

#[test]
fn syntax_errors_are_compile_failures() {
    let result = eval("return (");
    let Err(failure @ Failure::Compile(_)) = result else {
        panic!("{result:?}");
    };
    let Value::Error(reply) = failure.reply(&Sha::of(b"return (")) else {
        panic!("not an error reply");
    };
    assert!(
        reply.starts_with("ERR Error compiling script (new function): user_script:1:"),
        "{reply}"
    );
}

#[test]
fn runtime_errors_name_the_line_and_the_script() {
    let source = "local a = 1\nreturn a.b.c";
    let result = eval(source);
    let message = runtime_error(result.clone());
    assert!(message.starts_with("user_script:2:"), "{message}");
    let reply = result.unwrap_err().reply(&Sha::of(source.as_bytes()));
    let Value::Error(reply) = reply else {
        panic!("not an error reply");
    };
    assert!(reply.starts_with("ERR user_script:2:"), "{reply}");
    assert!(
        reply.ends_with(Sha::of(source.as_bytes()).as_str()),
        "{reply}"
    );
}

#[test]
fn an_endless_loop_stops_at_the_time_limit_even_under_pcall() {
    for source in [
        "while true do end",
        "while true do pcall(function() while true do end end) end",
        "while true do xpcall(function() while true do end end, function() while true do end end) end",
    ] {
        let started = Instant::now();
        let result = eval(source);
        let took = started.elapsed();
        assert_eq!(result, Err(Failure::TimedOut(LIMITS.time)), "{source}");
        assert!(took >= LIMITS.time && took < LIMITS.time * 3, "{source}: {took:?}");
    }
    // The state is usable afterwards.
    assert_eq!(eval("return 1"), Ok(Value::Integer(1)));
}

#[test]
fn a_memory_bomb_stops_at_the_memory_limit_even_under_pcall() {
    // Distinct strings: Lua interns strings, so `string.rep('x', 1e6)` made again and again
    // is one string, and a loop storing it is stopped by the time limit instead (below).
    for source in [
        "local t = {} while true do t[#t + 1] = string.rep('x', 1e6) .. #t end",
        "local t = {} while true do pcall(function() t[#t + 1] = string.rep('x', 1e5) .. #t end) end",
        "local t = {} while true do xpcall(function() t[#t + 1] = string.rep('x', 1e5) .. #t end, print) end",
        "return string.rep('x', 1e9)",
        "local t = {} for i = 1, 1e7 do t[i] = i end",
    ] {
        assert_eq!(
            eval(source),
            Err(Failure::OutOfMemory(LIMITS.memory)),
            "{source}"
        );
    }
    let same_string = "local t = {} while true do t[#t + 1] = string.rep('x', 1e6) end";
    let stopped = eval(same_string);
    assert!(
        matches!(stopped, Err(Failure::OutOfMemory(_) | Failure::TimedOut(_))),
        "{stopped:?}"
    );
    // The state is usable afterwards, and has given the memory back.
    assert_eq!(
        eval("return #string.rep('x', 1e6)"),
        Ok(Value::Integer(1_000_000))
    );
}

#[test]
fn reply_bounds_are_failures() {
    let limits = Limits {
        reply_bytes: 10_000,
        ..LIMITS
    };
    let wide =
        "local s = string.rep('x', 1000) local t = {} for i = 1, 100 do t[i] = s end return t";
    assert_eq!(
        eval_with(&mut Map::default(), wide, &[], &[], &limits),
        Err(Failure::Reply(BadReply::TooLarge, 10_000))
    );
}

#[test]
fn a_flushed_cache_recompiles() {
    let mut map = Map::default();
    let mut first = script("return 1");
    let dispatch = &mut |args| map.dispatch(args);
    assert_eq!(
        run(&first, &[], &[], &LIMITS, None, dispatch),
        Ok(Value::Integer(1))
    );
    // Same name, other text: only a new generation may compile it again (the name is the
    // SHA1 of the text, so this only happens here, in a test).
    first.source = Bytes::from_static(b"return 2");
    assert_eq!(
        run(&first, &[], &[], &LIMITS, None, dispatch),
        Ok(Value::Integer(1))
    );
    first.generation = 1;
    assert_eq!(
        run(&first, &[], &[], &LIMITS, None, dispatch),
        Ok(Value::Integer(2))
    );
}

#[test]
fn only_scripts_that_ran_quickly_on_this_thread_count_as_quick() {
    let quick = script("return 'quick'");
    assert!(!ran_quickly(&quick.sha), "never ran here");
    assert_eq!(eval("return 'quick'"), Ok(Value::bulk_static("quick")));
    assert!(ran_quickly(&quick.sha));
    let slow = script("while true do end");
    assert!(eval("while true do end").is_err());
    assert!(!ran_quickly(&slow.sha));
}

#[test]
fn a_backtracking_pattern_is_refused_before_it_runs() {
    // The review's reproduction: without the bound this never returns (the matcher runs in
    // C, where the time limit's hook does not fire).
    let started = Instant::now();
    let message = runtime_error(eval(
        "local s = string.rep('a', 3000) return string.find(s, '.-.-.-.-.-.-.-b')",
    ));
    assert!(message.contains("pattern too costly"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // The same through a string method, gmatch and gsub.
    for call in [
        "s:match('(.*)(.*)(.*)x')",
        "s:gsub('.-.-.-b', '')",
        "string.gmatch(s, '.*.*.*b')()",
    ] {
        let source = format!("local s = string.rep('a', 3000) return {call}");
        let message = runtime_error(eval(&source));
        assert!(message.contains("pattern too costly"), "{call}: {message}");
    }
}

#[test]
fn ordinary_patterns_and_plain_finds_still_work() {
    let reply = eval(
        "local s = string.rep('a', 100000) .. 'b'
         return {
           string.find(s, 'ab', 1, true),            -- plain: always allowed
           string.find(s, 'b'),                      -- no magic character
           select(3, string.find('user:42:x', '^user:(%d+):')), -- anchored, one quantifier
           string.match('2026-11-26', '^(%d+)%-(%d+)%-(%d+)$'),
           (string.gsub('a,b,c', ',', ';')),
           #s:gsub('%a', 'x'),                       -- unanchored, no quantifier, 100 KB
         }",
    );
    assert_eq!(
        reply,
        Ok(Value::Array(vec![
            Value::Integer(100_000),
            Value::Integer(100_001),
            Value::bulk_static("42"),
            Value::bulk_static("2026"),
            Value::bulk_static("a;b;c"),
            Value::Integer(100_001),
        ]))
    );
}

#[test]
fn table_functions_cannot_write_into_shared_tables() {
    // The review's probes: raw sets through table.* used to reach the shared proxies, and
    // the next script (any client's) saw what this one left.
    for probe in [
        "table.insert(string, 'leaked')",
        "table.insert(redis, function() return 'planted' end)",
        "table.remove(math)",
        "table.sort(table)",
    ] {
        let message = runtime_error(eval(probe));
        assert!(message.contains("readonly table"), "{probe}: {message}");
    }
    assert_eq!(
        eval("return {type(string[1]), type(redis[1])}"),
        Ok(Value::Array(vec![
            Value::bulk_static("nil"),
            Value::bulk_static("nil")
        ]))
    );
    // The functions still work on a script's own tables.
    assert_eq!(
        eval("local t = {3, 1} table.insert(t, 2) table.sort(t) return table.remove(t, 1)"),
        Ok(Value::Integer(1))
    );
}

#[test]
fn each_run_draws_the_same_random_numbers_whatever_an_earlier_run_seeded() {
    let draw = "return {math.random(1000000), math.random(5, 6), math.random() < 1}";
    let first = eval(draw);
    assert!(eval("math.randomseed(12345) return math.random(1000000)").is_ok());
    assert_eq!(eval(draw), first);
    let seeded = "math.randomseed(7) return math.random(1000000)";
    assert_eq!(eval(seeded), eval(seeded));
    assert_ne!(eval(seeded), eval("return math.random(1000000)"));
}

#[test]
fn a_running_scripts_memory_is_counted_and_released_after_it() {
    let accounting = Arc::new(Accounting::unlimited());
    let seen = std::cell::Cell::new(0);
    let source = "local t = {} for i = 1, 20 do t[i] = string.rep('x', 100000) .. i end \
                  local n = 0 for i = 1, 5000 do n = n + i end \
                  redis.call('echo', 'x') t = nil";
    let result = run(
        &script(source),
        &[],
        &[],
        &LIMITS,
        Some(&accounting),
        &mut |_| {
            seen.set(accounting.used_by(SCRIPT_PART));
            OK
        },
    );
    assert_eq!(result, Ok(Value::Null));
    // 2 MB of strings while it ran; after the run the garbage is collected and the state
    // dropped or back under the floor.
    assert!(
        seen.get() > 2_000_000,
        "counted {} while running",
        seen.get()
    );
    assert!(accounting.used_by(SCRIPT_PART) <= KEPT_STATE_BYTES as u64);
}
