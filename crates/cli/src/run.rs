//! Carrying out one subcommand: turn it into a request, send it, print what the reply means.

use std::ffi::OsStr;
use std::io::{IsTerminal, Write};

use anyhow::{bail, Context};
use bytes::Bytes;
use sessiond_client::transport::Connector;
use sessiond_client::{Credentials, TlsOptions};
use sessiond_proto::command::{
    Del, DelOutcome, Get, GetReply, Ping, PingReply, Set, SetMode, SetOutcome, Stats, StatsReply,
    Touch, TouchReply,
};
use sessiond_proto::{Limits, Request, ResponseFrame};

use crate::cli::{Cli, Command};
use crate::client::{Client, OPAQUE};
use crate::rebalance;
use crate::{session, slowlog, watch};

/// The environment variable the password of `--user` is read from, unless
/// `--password-file` is given.
const PASSWORD_VAR: &str = "SESSIOND_PASSWORD";

/// What `PING` sends; the reply must echo it.
const PING_PAYLOAD: &[u8] = b"sessiond-cli";

/// How a request that got a reply ended.
#[derive(Debug)]
pub enum Outcome {
    /// Carried out (exit 0).
    Done,
    /// Answered, but not carried out: a missing key, an existing key under `--nx`, another
    /// version under `--if-version` (exit 1). The reason starts with the status name.
    Declined(String),
}

/// Runs `cli`'s command against its server.
pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    if let Command::Rebalance {
        from,
        to,
        progress,
        concurrency,
        rate,
        report_every,
    } = &cli.command
    {
        let options = rebalance::Options {
            from: from.clone(),
            to: to.clone(),
            progress: progress.clone(),
            concurrency: *concurrency as usize,
            rate: *rate,
            report_every: *report_every,
            timeout: cli.timeout,
            credentials: credentials(&cli)?,
            tls: tls_options(&cli)?,
        };
        return rebalance::run(options).await;
    }
    // Build the request first so that an argument the wire cannot carry is reported without
    // touching the network.
    let request = request(&cli.command)?;
    let credentials = credentials(&cli)?;
    let connector = connector(&cli)?;
    let mut client = Client::connect(&cli.addr, &connector, cli.timeout).await?;
    if let Command::Stats {
        watch: true,
        interval,
        count,
    } = cli.command
    {
        return watch::run(&mut client, credentials.as_ref(), interval, count).await;
    }
    let reply = client
        .call(credentials.as_ref(), request.to_frame(OPAQUE))
        .await?;
    report(&cli.command, &reply)
}

/// The credentials of `--user`, with the password from `--password-file` or
/// `$SESSIOND_PASSWORD`.
fn credentials(cli: &Cli) -> anyhow::Result<Option<Credentials>> {
    let Some(user) = &cli.user else {
        return Ok(None);
    };
    let credentials =
        Credentials::from_file_or_env(user, cli.password_file.as_deref(), PASSWORD_VAR)?;
    Ok(Some(credentials))
}

/// Plain TCP, or TLS per `--tls`, `--cacert`, `--cert`/`--key` and `--server-name`.
fn connector(cli: &Cli) -> anyhow::Result<Connector> {
    Ok(Connector::new(tls_options(cli)?))
}

/// The TLS options of `--tls`, `--cacert`, `--cert`/`--key` and `--server-name`, if any.
fn tls_options(cli: &Cli) -> anyhow::Result<Option<TlsOptions>> {
    if !cli.tls {
        return Ok(None);
    }
    let Some(ca) = &cli.cacert else {
        bail!("--tls needs --cacert FILE");
    };
    let client_cert = cli.cert.as_deref().zip(cli.cert_key.as_deref());
    let tls = TlsOptions::from_files(ca, client_cert, cli.server_name.as_deref())?;
    Ok(Some(tls))
}

fn request(command: &Command) -> anyhow::Result<Request> {
    if let Some(request) = session::request(command)? {
        return Ok(request);
    }
    Ok(match command {
        Command::Ping => Request::Ping(Ping {
            payload: Bytes::from_static(PING_PAYLOAD),
        }),
        Command::Set {
            key,
            value,
            ttl,
            nx,
            xx,
            if_version,
            ..
        } => Request::Set(Set {
            key: key_bytes(key)?,
            value: value_bytes(value)?,
            ttl_ms: *ttl,
            mode: match (nx, xx, if_version) {
                (_, _, Some(v)) => SetMode::IfVersion(*v),
                (true, _, _) => SetMode::CreateOnly,
                (_, true, _) => SetMode::UpdateOnly,
                _ => SetMode::Upsert,
            },
        }),
        Command::Get { key, touch, .. } => Request::Get(Get {
            key: key_bytes(key)?,
            touch_ttl_ms: *touch,
        }),
        Command::Touch { key, ttl } => Request::Touch(Touch {
            key: key_bytes(key)?,
            ttl_ms: *ttl,
        }),
        Command::Del { key, if_version } => Request::Del(Del {
            key: key_bytes(key)?,
            if_version: *if_version,
        }),
        Command::Stats { .. } => Request::Stats(Stats),
        Command::Slowlog { op } => slowlog::request(*op),
        Command::Sessions { .. }
        | Command::EndAll { .. }
        | Command::Rotate { .. }
        | Command::Rebalance { .. } => {
            bail!("{command:?} has no request")
        }
    })
}

fn report(command: &Command, reply: &ResponseFrame) -> anyhow::Result<Outcome> {
    if let Some(outcome) = session::report(command, reply) {
        return outcome;
    }
    match command {
        Command::Ping => {
            let reply = PingReply::from_frame(reply)?;
            if reply.payload != PING_PAYLOAD {
                bail!("PING reply did not echo the payload");
            }
            print(b"PONG\n")
        }
        Command::Set {
            key, if_version, ..
        } => match SetOutcome::from_frame(reply)? {
            SetOutcome::Stored { version } => print(format!("version {version}\n").as_bytes()),
            SetOutcome::Exists => Ok(Outcome::Declined(format!(
                "EXISTS: key {} already exists",
                show(key)
            ))),
            SetOutcome::NotFound => Ok(not_found(key)),
            SetOutcome::VersionMismatch { current } => {
                Ok(version_mismatch(key, current, *if_version))
            }
        },
        Command::Get { key, meta, .. } => match GetReply::from_frame(reply)? {
            GetReply::Hit(entry) => {
                if *meta {
                    eprintln!("version {}\nttl_ms {}", entry.version, entry.ttl_ms);
                }
                let mut out = std::io::stdout().lock();
                out.write_all(&entry.value).context("writing to stdout")?;
                // Byte-exact for pipes and files; a terminal gets the newline a prompt needs.
                if out.is_terminal() {
                    out.write_all(b"\n").context("writing to stdout")?;
                }
                out.flush().context("writing to stdout")?;
                Ok(Outcome::Done)
            }
            GetReply::Miss => Ok(not_found(key)),
        },
        Command::Touch { key, .. } => match TouchReply::from_frame(reply)? {
            TouchReply::Touched { version } => print(format!("version {version}\n").as_bytes()),
            TouchReply::NotFound => Ok(not_found(key)),
        },
        Command::Del { key, if_version } => match DelOutcome::from_frame(reply)? {
            DelOutcome::Deleted => Ok(Outcome::Done),
            DelOutcome::NotFound => Ok(not_found(key)),
            DelOutcome::VersionMismatch { current } => {
                Ok(version_mismatch(key, current, *if_version))
            }
        },
        Command::Slowlog { op } => slowlog::report(*op, reply),
        Command::Stats { .. } => {
            let stats = StatsReply::from_frame(reply)?;
            let text: String = stats
                .stats
                .iter()
                .map(|(name, value)| format!("{name} {value}\n"))
                .collect();
            print(text.as_bytes())
        }
        Command::Sessions { .. }
        | Command::EndAll { .. }
        | Command::Rotate { .. }
        | Command::Rebalance { .. } => {
            bail!("{command:?} has no report")
        }
    }
}

pub(crate) fn not_found(key: &OsStr) -> Outcome {
    Outcome::Declined(format!("NOT_FOUND: key {} does not exist", show(key)))
}

pub(crate) fn version_mismatch(key: &OsStr, current: u64, expected: Option<u64>) -> Outcome {
    // The server only sends VERSION_MISMATCH to an if-version request, but its reply is data
    // from the network, so `expected` is not assumed to be there.
    let expected = expected.map(|v| format!(", not {v}")).unwrap_or_default();
    Outcome::Declined(format!(
        "VERSION_MISMATCH: key {} has version {current}{expected}",
        show(key)
    ))
}

pub(crate) fn print(bytes: &[u8]) -> anyhow::Result<Outcome> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("writing to stdout")?;
    Ok(Outcome::Done)
}

/// The key's bytes. On Unix these are exactly the argument's bytes, so any key can be named.
///
/// The length is checked here because a frame cannot represent a longer key (the field is
/// 16 bits); the server applies its own, usually lower, limit.
pub(crate) fn key_bytes(key: &OsStr) -> anyhow::Result<Bytes> {
    let bytes = key.as_encoded_bytes();
    if bytes.len() > Limits::HARD_MAX_KEY_LEN as usize {
        bail!(
            "key of {} bytes is longer than the protocol allows ({} bytes)",
            bytes.len(),
            Limits::HARD_MAX_KEY_LEN
        );
    }
    Ok(Bytes::copy_from_slice(bytes))
}

/// The value's bytes, like [`key_bytes`].
pub(crate) fn value_bytes(value: &OsStr) -> anyhow::Result<Bytes> {
    let bytes = value.as_encoded_bytes();
    if bytes.len() > Limits::HARD_MAX_VALUE_LEN as usize {
        bail!(
            "value of {} bytes is longer than the protocol allows ({} bytes)",
            bytes.len(),
            Limits::HARD_MAX_VALUE_LEN
        );
    }
    Ok(Bytes::copy_from_slice(bytes))
}

/// A key as it can be shown in a message: quoted, with non-printable bytes escaped.
pub(crate) fn show(key: &OsStr) -> String {
    format!("\"{}\"", key.as_encoded_bytes().escape_ascii())
}
