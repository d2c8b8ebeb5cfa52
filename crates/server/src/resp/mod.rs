//! The RESP listener: Redis's protocol over the same store, so that existing Redis session
//! backends (Flask-Session, connect-redis, Django's cache sessions) work unchanged.
//!
//! It is optional (`[resp] listen`, or `--resp-listen`) and runs beside the native listener
//! on its own port. A session written through one protocol is visible through the other,
//! with the same expiry, versions, limits, persistence and statistics, because every command
//! goes through the same [`Store`](crate::store::Store) methods, and the same connection
//! handler ([`crate::server`]) does the I/O: batched responses, idle timeout, the shared
//! connection limit, graceful shutdown, and (with `fsync = "always"`) holding write
//! acknowledgements until the append-only file has synced them.
//!
//! How the parts fit:
//!
//! - [`decode`] takes requests (arrays of bulk strings, and inline commands typed into
//!   `telnet`) out of the read buffer, incrementally, within limits.
//! - [`frame`] holds reply values and their RESP2/RESP3 encodings.
//! - `cmd` has the commands, one file per group, and the table `COMMAND` reports.
//! - `glob` matches `SCAN ... MATCH` patterns.
//! - `peek` finds the keys of pipelined commands ahead of decoding, for prefetching.
//! - `Resp` (here) is the per-connection state (protocol version, authentication, name)
//!   and the glue to the connection handler.
//!
//! Where it differs from Redis (every key is a string that expires; see `docs/RESP.md`):
//! a write without a TTL gets `default_ttl`; TTLs are capped at `limits.max_ttl`;
//! `PERSIST` answers 0 and keeps the TTL; `FLUSHDB`/`FLUSHALL` are refused unless
//! `allow_flush` is set; commands outside the supported set are unknown commands.

mod cmd;
pub(crate) mod decode;
pub(crate) mod frame;
mod glob;
mod peek;
mod script;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use sessiond_proto::Limits;
use tokio::time::Instant;
use tracing::debug;

use crate::access::Access;
use crate::aof::PersistenceError;
use crate::metrics::{self, RequestTag};
use crate::server::{Answer, Context, Protocol};
use crate::stats::Stats;
use cmd::Client;
use decode::{DecodeLimits, Decoded, Decoder, TooLarge};
use frame::{Value, Version};

/// How much more than the key and value limits one request's arguments may add up to:
/// room for the command name, options, and multi-key commands (`MGET`, `DEL`) with a few
/// thousand keys.
const REQUEST_SLACK_BYTES: usize = 256 * 1024;

/// Settings of the RESP listener (the `[resp]` section, less the address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// TTL in milliseconds of a write that gives none (`SET` without `EX`/`PX`/...).
    pub default_ttl_ms: u64,
    /// Whether `FLUSHDB` and `FLUSHALL` are allowed.
    pub allow_flush: bool,
    /// Largest reply a multi-key command may build, in bytes (`[resp] max_reply_bytes`).
    pub max_reply_bytes: usize,
    /// How long one script may run, in milliseconds (`[resp] max_script_time_ms`).
    pub max_script_time_ms: u64,
    /// How much Lua memory one script may allocate (`[resp] max_script_memory_bytes`).
    pub max_script_memory_bytes: usize,
    /// How many scripts are kept for `EVALSHA` (`[resp] max_cached_scripts`).
    pub max_cached_scripts: usize,
}

/// The name of entry `index` of the command table (the metrics' `command` label).
pub(crate) fn command_name(index: usize) -> Option<&'static str> {
    cmd::command_name(index)
}

/// What every RESP connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    settings: Settings,
    decode_limits: DecodeLimits,
    /// The listener's port, for `INFO`.
    port: u16,
    /// The connection limit, for `INFO`.
    max_clients: u32,
    next_client_id: AtomicU64,
    /// The scripts `EVALSHA` can run, by SHA1.
    scripts: script::Cache,
}

impl Shared {
    /// Shared state for a listener on `port`, serving at most `max_clients` connections.
    pub(crate) fn new(
        settings: Settings,
        limits: Limits,
        port: u16,
        max_clients: u32,
    ) -> Arc<Shared> {
        let max_key = limits.max_key_len as usize;
        let max_value = limits.max_value_len as usize;
        Arc::new(Shared {
            decode_limits: DecodeLimits {
                max_arg_bytes: max_key.max(max_value),
                max_request_bytes: max_key + max_value + REQUEST_SLACK_BYTES,
            },
            port,
            max_clients,
            next_client_id: AtomicU64::new(1),
            scripts: script::Cache::new(settings.max_cached_scripts),
            settings,
        })
    }

    /// The error for a request the decoder threw away.
    fn too_large(&self, reason: TooLarge) -> Value {
        let limits = self.decode_limits;
        Value::error(match reason {
            TooLarge::Argument { len } => format!(
                "ERR request too large: an argument of {len} bytes is over the limit of {} bytes (limits.max_value_bytes)",
                limits.max_arg_bytes
            ),
            TooLarge::Total => format!(
                "ERR request too large: its arguments add up to more than {} bytes",
                limits.max_request_bytes
            ),
        })
    }
}

/// A reply and the protocol version to write it in. The version is fixed when the reply
/// is made: a held reply must not change encoding because a later `HELLO` in the same
/// batch switched the connection to RESP3.
#[derive(Debug)]
pub(crate) struct Reply {
    value: Value,
    version: Version,
}

/// One RESP connection's state.
pub(crate) struct Resp {
    shared: Arc<Shared>,
    decoder: Decoder,
    client: Client,
}

impl Resp {
    pub(crate) fn new(shared: Arc<Shared>, access: Access) -> Resp {
        Resp {
            decoder: Decoder::new(shared.decode_limits, access.is_authenticated()),
            client: Client {
                id: shared.next_client_id.fetch_add(1, Ordering::Relaxed),
                version: Version::Resp2,
                access,
                name: None,
                transaction: Default::default(),
            },
            shared,
        }
    }

    fn reply(&self, value: Value) -> Reply {
        Reply {
            value,
            version: self.client.version,
        }
    }
}

impl Protocol for Resp {
    type Response = Reply;

    fn prefetch(&self, buf: &[u8], ctx: &Context) {
        // Mid-request, the buffer does not start at a command; before authentication the
        // keys are an unknown peer's.
        if self.decoder.is_idle() && self.client.access.is_authenticated() {
            ctx.store.prefetch(peek::BufferedKeys::new(buf));
        }
    }

    fn next(&mut self, buf: &mut BytesMut, ctx: &Context) -> Option<Answer<Reply>> {
        let decoded = match self.decoder.decode(buf) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return None,
            Err(error) => {
                // As in Redis: say what was wrong, then close, since the stream can no
                // longer be framed.
                Stats::bump(&ctx.stats.protocol_errors);
                debug!(%error, "RESP protocol error; closing");
                return Some(Answer {
                    response: Some(self.reply(Value::error(format!("ERR {error}")))),
                    mutated: false,
                    close: true,
                    delay: None,
                    tag: RequestTag::resp(None, "unknown", metrics::Outcome::Error, 0),
                });
            }
        };
        Stats::bump(&ctx.stats.requests_total);
        let (outcome, tag) = match decoded {
            Decoded::Command(args) => cmd::execute(args, ctx, &self.shared, &mut self.client),
            Decoded::TooLarge(reason) => {
                Stats::bump(&ctx.stats.protocol_errors);
                // A command meant for an open MULTI was thrown away: EXEC must not run
                // the others without it.
                self.client.transaction.discard_on_exec();
                let outcome = cmd::Outcome {
                    value: Some(self.shared.too_large(reason)),
                    mutated: false,
                    close: false,
                    delay: None,
                };
                (
                    outcome,
                    RequestTag::resp(None, "unknown", metrics::Outcome::Error, 0),
                )
            }
        };
        // `AUTH` may have just lifted the unauthenticated limits.
        self.decoder
            .set_authenticated(self.client.access.is_authenticated());
        Some(Answer {
            response: outcome.value.map(|value| self.reply(value)),
            mutated: outcome.mutated,
            close: outcome.close,
            delay: outcome.delay,
            tag,
        })
    }

    fn auth_deadline(&self) -> Option<Instant> {
        self.client.access.deadline()
    }

    fn mid_request(&self) -> bool {
        !self.decoder.is_idle()
    }

    fn encode(&self, response: &Reply, out: &mut BytesMut) {
        response.value.encode(response.version, out);
    }

    fn encoded_len(response: &Reply) -> usize {
        response.value.encoded_len()
    }

    fn persistence_failed(&self, response: &Reply, error: &PersistenceError) -> Reply {
        Reply {
            value: Value::error(format!(
                "MISCONF Errors writing to the AOF file: {}; the write may not survive a restart",
                error.0
            )),
            version: response.version,
        }
    }

    fn busy_message() -> Vec<u8> {
        // Redis's words for the same situation.
        b"-ERR max number of clients reached\r\n".to_vec()
    }

    fn shutting_down_message() -> Option<Vec<u8>> {
        // Redis, too, just closes its connections when it shuts down.
        None
    }
}
