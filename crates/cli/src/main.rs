//! `sessiond-cli`: a command-line client for sessiond.
//!
//! ```text
//! sessiond-cli [--addr HOST:PORT] [--timeout 5s] [--user NAME [--password-file FILE]]
//!              [--tls --cacert FILE [--cert FILE --key FILE] [--server-name NAME]] <command>
//!   ping
//!   set KEY VALUE --ttl 30s [--nx | --xx | --if-version N] [--lifetime 12h]
//!       [--owner OWNER [--owner-limit N [--end-lru]]]
//!   get KEY [--touch 30m] [--meta]
//!   touch KEY 30m
//!   del KEY [--if-version N]
//!   stats [--watch [--interval 1s] [--count N]]
//!   slowlog [get [N] | len | reset]
//!   sessions OWNER
//!   end-all OWNER [--except KEY]
//!   rotate OLD NEW [--if-version N] [--owner OWNER [--owner-limit N [--end-lru]]]
//!   rebalance --from OLD.toml --to NEW.toml [--progress FILE] [--concurrency N] [--rate N]
//! ```
//!
//! Each invocation opens one connection, sends one request and prints the reply; `--addr`
//! defaults to `$SESSIOND_ADDR`, then `127.0.0.1:7878`. It is built for scripts, so its output
//! and exit status are a contract (also printed by `--help`):
//!
//! - `get` writes the value bytes to stdout exactly as stored, adding a trailing newline only
//!   when stdout is a terminal, so `sessiond-cli get k > file` is byte-exact. `--meta` adds
//!   `version N` and `ttl_ms N` lines on stderr.
//! - `set` and `touch` print `version N`; `del` prints nothing; `ping` prints `PONG`; `stats`
//!   prints the server's `name value` lines (`stats --watch`, a line of rates per interval:
//!   [`watch`]); `slowlog` prints one line per slow request ([`slowlog`]).
//! - Exit 0 on success. Exit 1 when the server answered but did not carry the request out
//!   (`NOT_FOUND`, `EXISTS`, `VERSION_MISMATCH`), with a one-line reason on stderr that starts
//!   with the status name and, for a version mismatch, gives the current version. Exit 2 for
//!   everything else: usage errors (clap's own exit code), connection failures, timeouts and
//!   error statuses from the server, whose message is shown.
//!
//! With `--user` (or `$SESSIOND_USER`) the request is preceded by an `AUTH`, in the same
//! write; the password comes from `$SESSIOND_PASSWORD` or `--password-file`, never from an
//! argument, which every user of the machine could read in the process list. `--tls`
//! connects through TLS exactly as `sessiond-client` does (its `transport` module).
//!
//! Keys and values are taken from the arguments byte for byte (on Unix, non-UTF-8 arguments
//! included). Durations are humantime strings (`500ms`, `30s`, `30m`, `2h`).
//!
//! The parts, mini-redis style: [`cli`] is the command line, [`client`] one framed
//! connection over the protocol crate's codec, [`run`] turns a command into a request and a
//! reply into output ([`session`] for the commands about owners, absolute lifetimes and
//! rotation), [`rebalance`] moves sessions between topologies of many nodes. This file only
//! wires them together.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod cli;
mod client;
mod rebalance;
mod run;
mod session;
mod slowlog;
mod watch;

use std::process::ExitCode;

use clap::Parser;

use crate::run::Outcome;

// One request per process: a single-threaded runtime is all it needs.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Exits 2 on a usage error, 0 for --help and --version.
    let cli = cli::Cli::parse();
    match run::run(cli).await {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Declined(reason)) => {
            eprintln!("{reason}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each once: `{:#}` would repeat a cause whose message the one
/// before it already quotes (as `cannot read FILE: {source}` messages do).
fn error_chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .fold(String::new(), |out, cause| match out.as_str() {
            "" => cause,
            s if s.ends_with(&cause) => out,
            _ => format!("{out}: {cause}"),
        })
}
