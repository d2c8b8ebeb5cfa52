//! `stats --watch`: a line of rates per interval, like `redis-cli --stat`.
//!
//! Each line compares two successive `STATS` replies on one connection: counters become
//! rates per second over the server's own clock (`uptime_ms`), so that a slow network or a
//! late timer does not skew them, and gauges (sessions, memory, connections) are shown as
//! they are now. Everything is computed from names `STATS` documents (PROTOCOL.md 5.7); a
//! name the server does not send is shown as `-`.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use sessiond_client::Credentials;
use sessiond_proto::command::{Stats, StatsReply};
use tokio::time::{self, Instant, MissedTickBehavior};

use crate::client::{Client, OPAQUE};
use crate::run::Outcome;

/// The header is printed again every this many lines, so that it stays on screen.
const HEADER_EVERY: u64 = 20;

/// Requests `STATS` every `interval` and prints a line of rates for each pair of replies,
/// `count` lines (until interrupted without a count). The credentials go with the first
/// request only: the connection stays authenticated.
pub async fn run(
    client: &mut Client,
    credentials: Option<&Credentials>,
    interval: Duration,
    count: Option<u64>,
) -> anyhow::Result<Outcome> {
    let mut previous = sample(client, credentials).await?;
    let mut ticks = time::interval_at(Instant::now() + interval, interval);
    // After a stall (a suspended terminal), carry on at the pace asked for rather than
    // printing a burst of lines.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut printed = 0;
    while count.is_none_or(|count| printed < count) {
        ticks.tick().await;
        let current = sample(client, None).await?;
        let mut text = String::new();
        if printed % HEADER_EVERY == 0 {
            text.push_str(HEADER);
        }
        text.push_str(&line(&previous, &current, interval));
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("writing to stdout")?;
        printed += 1;
        previous = current;
    }
    Ok(Outcome::Done)
}

async fn sample(
    client: &mut Client,
    credentials: Option<&Credentials>,
) -> anyhow::Result<StatsReply> {
    let reply = client.call(credentials, Stats.to_frame(OPAQUE)).await?;
    Ok(StatsReply::from_frame(&reply)?)
}

/// The column titles; [`line`] fills them in the same order and widths.
const HEADER: &str = "sessions  mem_used   mem_cap  conns     req/s     get/s     hit/s    miss/s     set/s   touch/s     del/s     err/s\n";

/// One line: the gauges of `current`, and the counters' rates since `previous`.
fn line(previous: &StatsReply, current: &StatsReply, interval: Duration) -> String {
    let number = |reply: &StatsReply, name: &str| reply.get(name)?.parse::<u64>().ok();
    // The server's clock, unless it did not move (or restarted): then the interval asked for.
    let seconds = match (number(previous, "uptime_ms"), number(current, "uptime_ms")) {
        (Some(before), Some(now)) if now > before => (now - before) as f64 / 1000.0,
        _ => interval.as_secs_f64(),
    };
    let rate = |names: &[&str]| -> String {
        let mut total = 0u64;
        for name in names {
            match (number(previous, name), number(current, name)) {
                // A counter that went down means the server restarted: count from zero.
                (Some(before), Some(now)) => total += now.checked_sub(before).unwrap_or(now),
                _ => return "-".to_string(),
            }
        }
        format_rate(total as f64 / seconds)
    };
    let gauge = |name: &str| number(current, name).map_or("-".to_string(), |n| n.to_string());
    let bytes = |name: &str| number(current, name).map_or("-".to_string(), human_bytes);
    let cap = match number(current, "memory_limit_bytes") {
        Some(0) => "none".to_string(),
        Some(n) => human_bytes(n),
        None => "-".to_string(),
    };
    format!(
        "{:>8} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        gauge("entries"),
        bytes("memory_used_bytes"),
        cap,
        gauge("connections_current"),
        rate(&["requests_total"]),
        rate(&["get_hits", "get_misses"]),
        rate(&["get_hits"]),
        rate(&["get_misses"]),
        rate(&["set_stored", "set_rejected"]),
        rate(&["touch_hits", "touch_misses"]),
        rate(&["del_deleted", "del_misses"]),
        rate(&["protocol_errors"]),
    )
}

/// A rate with a decimal while it is small, whole above.
fn format_rate(rate: f64) -> String {
    if rate < 10.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.0}")
    }
}

/// Bytes as `redis-cli --stat` shows memory: `512B`, `1.50K`, `12.00M`, `6.00G`.
fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    UNITS.iter().find(|(_, size)| n >= *size).map_or_else(
        || format!("{n}B"),
        |(unit, size)| format!("{:.2}{unit}", n as f64 / *size as f64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pairs: &[(&str, u64)]) -> StatsReply {
        StatsReply {
            stats: pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn fields(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    #[test]
    fn rates_are_per_second_of_the_servers_clock() {
        let before = stats(&[
            ("uptime_ms", 10_000),
            ("requests_total", 100),
            ("get_hits", 10),
            ("get_misses", 5),
            ("set_stored", 0),
            ("set_rejected", 0),
            ("touch_hits", 0),
            ("touch_misses", 0),
            ("del_deleted", 0),
            ("del_misses", 0),
            ("protocol_errors", 0),
        ]);
        let after = stats(&[
            ("uptime_ms", 12_000),
            ("entries", 42),
            ("memory_used_bytes", 3 << 20),
            ("memory_limit_bytes", 0),
            ("connections_current", 3),
            ("requests_total", 2_100),
            ("get_hits", 1_010),
            ("get_misses", 25),
            ("set_stored", 300),
            ("set_rejected", 10),
            ("touch_hits", 4),
            ("touch_misses", 0),
            ("del_deleted", 1),
            ("del_misses", 0),
            ("protocol_errors", 0),
        ]);
        // The interval asked for (1 s) is not what the server measured (2 s).
        let line = line(&before, &after, Duration::from_secs(1));
        assert_eq!(
            fields(&line),
            ["42", "3.00M", "none", "3", "1000", "510", "500", "10", "155", "2.0", "0.5", "0.0"]
        );
        assert_eq!(fields(&line).len(), fields(HEADER).len());
    }

    #[test]
    fn missing_names_and_restarts_do_not_break_the_line() {
        let before = stats(&[("uptime_ms", 50_000), ("requests_total", 1_000)]);
        let after = stats(&[
            ("uptime_ms", 1_000),
            ("requests_total", 30),
            ("memory_limit_bytes", 1 << 30),
        ]);
        let line = line(&before, &after, Duration::from_secs(2));
        let fields = fields(&line);
        // Restarted: uptime went back, so the interval asked for is used, and the counter
        // counts from zero.
        assert_eq!(fields[4], "15");
        assert_eq!(fields[2], "1.00G");
        assert_eq!(fields[0], "-");
        assert_eq!(fields[5], "-");
    }

    #[test]
    fn bytes_read_like_redis_cli() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.50K");
        assert_eq!(human_bytes(6 << 30), "6.00G");
    }
}
