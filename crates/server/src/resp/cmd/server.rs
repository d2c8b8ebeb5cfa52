//! Server commands: `INFO`, `COMMAND`, `CONFIG GET` and `SLOWLOG`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::connection::REDIS_COMPAT_VERSION;
use super::{
    int_arg, is, lookup, unknown_subcommand, wrong_arity, Call, Outcome, Result, COMMANDS,
};
use crate::access::Category;
use crate::resp::frame::Value;
use crate::resp::glob::Pattern;

/// The sections of `INFO`, in the order Redis prints them.
const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "keyspace",
];

/// `INFO [section ...]`: `# Section` headers and `field:value` lines, as Redis formats
/// them, so that tools which parse Redis's `INFO` can parse this. Without a section (or
/// with `default`, `all`, `everything`) every section is included; unknown sections are
/// empty. The `redis_version` field says which Redis this listener behaves like;
/// `sessiond_version` says what it is. The keyspace section counts the keys, which is
/// enumeration: it is left out for a role that may not enumerate (see [`crate::access`]).
pub(super) fn info(call: &mut Call<'_>) -> Result {
    let may_count_keys = call.client.access.check(Category::Keyspace).is_ok();
    let wanted: Vec<&str> = if call.args.len() == 1
        || call.args[1..]
            .iter()
            .any(|a| is(a, "default") || is(a, "all") || is(a, "everything"))
    {
        SECTIONS.to_vec()
    } else {
        SECTIONS
            .iter()
            .copied()
            .filter(|s| call.args[1..].iter().any(|a| is(a, s)))
            .collect()
    };
    let wanted = wanted
        .into_iter()
        .filter(|section| *section != "keyspace" || may_count_keys);
    let mut text = String::new();
    for (i, section) in wanted.enumerate() {
        if i > 0 {
            text.push_str("\r\n");
        }
        write_section(call, section, &mut text);
    }
    Ok(Outcome::reply(Value::Verbatim(text)))
}

fn write_section(call: &Call<'_>, section: &str, out: &mut String) {
    let ctx = call.ctx;
    let stats = &ctx.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let _ = write!(out, "# {}\r\n", capitalize(section));
    let mut line = |name: &str, value: &dyn std::fmt::Display| {
        let _ = write!(out, "{name}:{value}\r\n");
    };
    match section {
        "server" => {
            let uptime = stats.uptime().as_secs();
            line("redis_version", &REDIS_COMPAT_VERSION);
            line("sessiond_version", &env!("CARGO_PKG_VERSION"));
            line("redis_mode", &"standalone");
            line("os", &std::env::consts::OS);
            line("arch_bits", &(usize::BITS));
            line("process_id", &std::process::id());
            line("tcp_port", &call.shared.port);
            line("uptime_in_seconds", &uptime);
            line("uptime_in_days", &(uptime / 86_400));
        }
        "clients" => {
            line("connected_clients", &load(&stats.connections_current));
            line("maxclients", &call.shared.max_clients);
            line("blocked_clients", &0);
        }
        "memory" => {
            // What limits.max_memory is held against (crate::memory), as Redis reports its
            // used_memory against maxmemory; 0 means no cap, as in Redis.
            let memory = ctx.store.memory();
            let used = memory.used();
            let limit = memory.limit().unwrap_or(0);
            line("used_memory", &used);
            line("used_memory_human", &human_bytes(used));
            line("maxmemory", &limit);
            line("maxmemory_human", &human_bytes(limit));
            line("maxmemory_policy", &redis_policy(memory.policy()));
            line("sessiond_memory_policy", &memory.policy().name());
            line("mem_allocator", &"mimalloc");
        }
        "persistence" => {
            let aof = ctx.aof.as_ref();
            line("loading", &0);
            line("aof_enabled", &u8::from(aof.is_some()));
            line("aof_fsync", &aof.map_or("off", |a| a.policy().name()));
            line("aof_rewrites", &aof.map_or(0, |a| a.rewrites()));
            line(
                "aof_last_write_status",
                &if ctx.refuse_writes() { "err" } else { "ok" },
            );
        }
        "stats" => {
            line(
                "total_connections_received",
                &load(&stats.connections_total),
            );
            line("total_commands_processed", &load(&stats.requests_total));
            line("rejected_connections", &load(&stats.connections_rejected));
            line("expired_keys", &ctx.store.expired_reclaimed());
            line("evicted_keys", &ctx.store.memory().evicted());
            line("sessiond_memory_refused", &ctx.store.memory().refused());
            line("keyspace_hits", &load(&stats.get_hits));
            line("keyspace_misses", &load(&stats.get_misses));
            // Redis's name for failed AUTH attempts.
            line("acl_access_denied_auth", &load(&stats.auth_failures));
        }
        "keyspace" => {
            let keys = ctx.store.len();
            // Redis omits empty databases. Every key has an expiry.
            if keys > 0 {
                line("db0", &format_args!("keys={keys},expires={keys},avg_ttl=0"));
            }
        }
        _ => {}
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// Bytes the way Redis's `used_memory_human` shows them.
fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1024.0 {
        format!("{n}B")
    } else if n < 1024.0 * 1024.0 {
        format!("{:.2}K", n / 1024.0)
    } else if n < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}M", n / (1024.0 * 1024.0))
    } else {
        format!("{:.2}G", n / (1024.0 * 1024.0 * 1024.0))
    }
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND LIST`, `COMMAND INFO [name ...]`,
/// `COMMAND DOCS [name ...]`: what the listener supports, in Redis's formats. `redis-cli`
/// sends `COMMAND DOCS` when it starts and builds its hints from the reply.
pub(super) fn command(call: &mut Call<'_>) -> Result {
    let Some(sub) = call.args.get(1) else {
        return Ok(Outcome::reply(Value::Array(
            COMMANDS.iter().map(|c| c.info()).collect(),
        )));
    };
    let names = &call.args[2..];
    let value = if is(sub, "count") && names.is_empty() {
        Value::Integer(COMMANDS.len() as i64)
    } else if is(sub, "list") && names.is_empty() {
        Value::Array(
            COMMANDS
                .iter()
                .map(|c| Value::bulk_static(c.name))
                .collect(),
        )
    } else if is(sub, "info") {
        if names.is_empty() {
            Value::Array(COMMANDS.iter().map(|c| c.info()).collect())
        } else {
            Value::Array(
                names
                    .iter()
                    .map(|n| lookup(n).map_or(Value::Null, |c| c.info()))
                    .collect(),
            )
        }
    } else if is(sub, "docs") {
        let specs: Vec<_> = if names.is_empty() {
            COMMANDS.iter().collect()
        } else {
            names.iter().filter_map(|n| lookup(n)).collect()
        };
        Value::Map(
            specs
                .into_iter()
                .map(|c| (Value::bulk_static(c.name), c.docs()))
                .collect(),
        )
    } else {
        return Err(unknown_subcommand(sub, "command"));
    };
    Ok(Outcome::reply(value))
}

/// `CONFIG GET parameter [parameter ...]`: the Redis parameters whose values tools read
/// (`redis-benchmark` reads `save` and `appendonly` before it starts), as a map (a flat
/// array in RESP2). Patterns are globs; unknown parameters are left out, as in Redis.
/// Nothing can be changed at run time: sessiond is configured by its file.
pub(super) fn config(call: &mut Call<'_>) -> Result {
    let sub = &call.args[1];
    if !is(sub, "get") {
        return Err(unknown_subcommand(sub, "config"));
    }
    if call.args.len() < 3 {
        return Err(super::wrong_arity("config|get"));
    }
    let aof = call.ctx.aof.as_ref();
    let memory = call.ctx.store.memory();
    let params: [(&str, String); 7] = [
        ("save", String::new()),
        (
            "appendonly",
            if aof.is_some() { "yes" } else { "no" }.into(),
        ),
        (
            "appendfsync",
            aof.map_or("no", |a| a.policy().name()).into(),
        ),
        ("databases", "1".into()),
        ("maxclients", call.shared.max_clients.to_string()),
        ("maxmemory", memory.limit().unwrap_or(0).to_string()),
        ("maxmemory-policy", redis_policy(memory.policy()).into()),
    ];
    let patterns: Vec<Pattern> = call.args[2..]
        .iter()
        .map(|p| Pattern::new(&p.to_ascii_lowercase()))
        .collect();
    let pairs = params
        .into_iter()
        .filter(|(name, _)| patterns.iter().any(|p| p.matches(name.as_bytes())))
        .map(|(name, value)| (Value::bulk_static(name), Value::bulk_string(value)))
        .collect();
    Ok(Outcome::reply(Value::Map(pairs)))
}

/// Redis's nearest name for a memory policy, for `INFO` and `CONFIG GET`: `noeviction`
/// refuses writes that need memory, and `volatile-ttl` evicts the keys with the shortest
/// remaining TTL (sampled there, exact here).
fn redis_policy(policy: crate::memory::Policy) -> &'static str {
    match policy {
        crate::memory::Policy::RefuseNew => "noeviction",
        crate::memory::Policy::EvictSoonestExpiring => "volatile-ttl",
    }
}

/// `SLOWLOG GET [count]`, `SLOWLOG LEN`, `SLOWLOG RESET`, `SLOWLOG HELP`: the slow-request
/// log ([`crate::slowlog`]) in Redis's reply shapes, so that `redis-cli` and redis-py's
/// `slowlog_get()` read it. An entry is `[id, unix seconds, microseconds, [command,
/// "<key: N bytes>"], client address, client name]`: the key is never shown (a session id is
/// a credential), only its length, and the client name is empty (it is not kept). Like
/// Redis, `GET` returns 10 entries without a count and all of them with -1. `RESET` needs
/// the admin role, as the native `SLOWLOG RESET` does (PROTOCOL.md).
pub(super) fn slowlog(call: &mut Call<'_>) -> Result {
    let sub = &call.args[1];
    let extra = call.args.len() - 2;
    let log = &call.ctx.slowlog;
    let value = if is(sub, "get") && extra <= 1 {
        let count = match call.args.get(2) {
            None => Some(10),
            Some(arg) => match int_arg(arg)? {
                -1 => None,
                n if n < -1 => {
                    return Err(Value::error(
                        "ERR count should be greater than or equal to -1",
                    ))
                }
                n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            },
        };
        Value::Array(log.get(count).iter().map(slowlog_entry).collect())
    } else if is(sub, "len") && extra == 0 {
        Value::Integer(i64::try_from(log.len()).unwrap_or(i64::MAX))
    } else if is(sub, "reset") && extra == 0 {
        super::require(&call.client.access, Category::Keyspace, "slowlog|reset")?;
        log.reset();
        Value::Simple("OK")
    } else if is(sub, "help") && extra == 0 {
        Value::Array(
            [
                "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET [<count>]",
                "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                "    Entries are made of:",
                "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                "    client name",
                "LEN",
                "    Return the length of the slowlog.",
                "RESET",
                "    Reset the slowlog.",
                "HELP",
                "    Print this help.",
            ]
            .into_iter()
            .map(Value::Simple)
            .collect(),
        )
    } else if ["get", "len", "reset", "help"].iter().any(|s| is(sub, s)) {
        return Err(wrong_arity("slowlog"));
    } else {
        return Err(unknown_subcommand(sub, "slowlog"));
    };
    Ok(Outcome::reply(value))
}

/// One slow-log entry as Redis shapes it.
fn slowlog_entry(logged: &crate::slowlog::Logged) -> Value {
    let entry = &logged.entry;
    let mut command = vec![Value::bulk_static(entry.command)];
    if entry.key_len > 0 {
        command.push(Value::bulk_string(format!(
            "<key: {} bytes>",
            entry.key_len
        )));
    }
    let int = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    Value::Array(vec![
        int(logged.id),
        int(entry.unix_ms / 1000),
        int(u64::try_from(entry.duration.as_micros()).unwrap_or(u64::MAX)),
        Value::Array(command),
        Value::bulk_string(entry.client.to_string()),
        Value::bulk_static(""),
    ])
}
