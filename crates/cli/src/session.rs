//! The session commands: `set` with an owner or absolute lifetime (`SET_SESSION`),
//! `sessions` (`LIST_SESSIONS`), `end-all` (`END_ALL`) and `rotate` (`ROTATE`).
//!
//! A `set` without `--owner` or `--lifetime` stays a plain `SET`, so the CLI keeps working
//! with servers that predate these commands for everything else.

use std::ffi::OsStr;

use anyhow::bail;
use bytes::Bytes;
use sessiond_proto::command::{
    Bind, EndAll, EndAllReply, LimitPolicy, ListSessions, OwnerLimit, Rotate, SessionList,
    SessionWriteOutcome, SetMode, SetSession, MAX_OWNER_LEN,
};
use sessiond_proto::{Opcode, Request, ResponseFrame};

use crate::cli::{Command, OwnerArgs};
use crate::run::{key_bytes, not_found, print, show, value_bytes, version_mismatch, Outcome};

/// Whether a `set` needs `SET_SESSION` rather than `SET`.
pub fn is_session_set(lifetime: Option<u64>, bind: &OwnerArgs) -> bool {
    lifetime.is_some() || bind.owner.is_some()
}

/// The request for a session command; `None` for the others.
pub fn request(command: &Command) -> anyhow::Result<Option<Request>> {
    Ok(Some(match command {
        Command::Set {
            key,
            value,
            ttl,
            lifetime,
            bind,
            ..
        } if is_session_set(*lifetime, bind) => {
            let (owner, owner_limit) = owner(bind)?.unzip();
            let value = value_bytes(value)?;
            if value.len() + owner.as_ref().map_or(0, Bytes::len) > value_limit() {
                bail!("value and owner together are longer than the protocol allows");
            }
            Request::SetSession(SetSession {
                key: key_bytes(key)?,
                value,
                ttl_ms: *ttl,
                mode: set_mode(command),
                owner,
                lifetime_ms: *lifetime,
                owner_limit: owner_limit.flatten(),
            })
        }
        Command::Sessions { owner } => Request::ListSessions(ListSessions {
            owner: owner_bytes(owner)?,
            max_sessions: 0,
        }),
        Command::EndAll { owner, except } => Request::EndAll(EndAll {
            owner: owner_bytes(owner)?,
            except: except.as_deref().map(key_bytes).transpose()?,
        }),
        Command::Rotate {
            old,
            new,
            if_version,
            bind,
        } => Request::Rotate(Rotate {
            old_key: key_bytes(old)?,
            new_key: key_bytes(new)?,
            if_version: *if_version,
            bind: owner(bind)?.map(|(owner, limit)| Bind { owner, limit }),
        }),
        _ => return Ok(None),
    }))
}

/// What the reply to a session command means; `None` for the others.
pub fn report(command: &Command, reply: &ResponseFrame) -> Option<anyhow::Result<Outcome>> {
    Some(match command {
        Command::Set {
            key,
            if_version,
            lifetime,
            bind,
            ..
        } if is_session_set(*lifetime, bind) => {
            SessionWriteOutcome::from_frame(reply, Opcode::SetSession)
                .map_err(Into::into)
                .and_then(|outcome| written(outcome, key, *if_version, bind))
        }
        Command::Rotate {
            old,
            new,
            if_version,
            bind,
        } => SessionWriteOutcome::from_frame(reply, Opcode::Rotate)
            .map_err(Into::into)
            .and_then(|outcome| match outcome {
                // For a rotation, EXISTS is about the new key, NOT_FOUND about the old one.
                SessionWriteOutcome::Exists => Ok(Outcome::Declined(format!(
                    "EXISTS: key {} already exists",
                    show(new)
                ))),
                outcome => written(outcome, old, *if_version, bind),
            }),
        Command::Sessions { .. } => SessionList::from_frame(reply)
            .map_err(Into::into)
            .and_then(|list| print(listing(&list).as_bytes())),
        Command::EndAll { .. } => EndAllReply::from_frame(reply)
            .map_err(Into::into)
            .and_then(|reply| print(format!("ended {}\n", reply.ended).as_bytes())),
        _ => return None,
    })
}

/// The output of `sessions`; `more N` goes to stderr when some did not fit the reply.
fn listing(list: &SessionList) -> String {
    if list.more() {
        eprintln!("more {}", list.total - list.sessions.len() as u64);
    }
    list.sessions
        .iter()
        .map(|s| {
            let deadline = s.deadline_ms.map_or("-".to_string(), |ms| ms.to_string());
            format!(
                "{} {} {} {} {} {deadline}\n",
                s.key.escape_ascii(),
                s.version,
                s.created_ms,
                s.last_access_ms,
                s.ttl_ms
            )
        })
        .collect()
}

/// The outcome of a `SET_SESSION` or `ROTATE` on `key`.
fn written(
    outcome: SessionWriteOutcome,
    key: &OsStr,
    if_version: Option<u64>,
    bind: &OwnerArgs,
) -> anyhow::Result<Outcome> {
    match outcome {
        SessionWriteOutcome::Stored { version, ended } => {
            let ended = match ended {
                0 => String::new(),
                n => format!("ended {n}\n"),
            };
            print(format!("version {version}\n{ended}").as_bytes())
        }
        SessionWriteOutcome::Exists => Ok(Outcome::Declined(format!(
            "EXISTS: key {} already exists",
            show(key)
        ))),
        SessionWriteOutcome::NotFound => Ok(not_found(key)),
        SessionWriteOutcome::VersionMismatch { current } => {
            Ok(version_mismatch(key, current, if_version))
        }
        SessionWriteOutcome::OwnerLimit => Ok(Outcome::Declined(format!(
            "OWNER_LIMIT: owner {} already has as many sessions as allowed",
            bind.owner.as_deref().map_or_else(|| "\"\"".into(), show)
        ))),
    }
}

/// The mode of a `set`, from its flags.
fn set_mode(command: &Command) -> SetMode {
    match command {
        Command::Set {
            if_version: Some(v),
            ..
        } => SetMode::IfVersion(*v),
        Command::Set { nx: true, .. } => SetMode::CreateOnly,
        Command::Set { xx: true, .. } => SetMode::UpdateOnly,
        _ => SetMode::Upsert,
    }
}

/// The owner of `--owner`, with the limit of `--owner-limit`/`--end-lru` (clap has checked
/// that a limit comes with an owner).
fn owner(bind: &OwnerArgs) -> anyhow::Result<Option<(Bytes, Option<OwnerLimit>)>> {
    let Some(owner) = &bind.owner else {
        return Ok(None);
    };
    let limit = bind.owner_limit.map(|max| OwnerLimit {
        max,
        policy: match bind.end_lru {
            true => LimitPolicy::EndLeastRecentlyUsed,
            false => LimitPolicy::Refuse,
        },
    });
    Ok(Some((owner_bytes(owner)?, limit)))
}

/// An owner's bytes: 1 to 256, checked here so that an owner the frame cannot carry is a
/// usage error, not a refusal (or worse) later.
fn owner_bytes(owner: &OsStr) -> anyhow::Result<Bytes> {
    let bytes = owner.as_encoded_bytes();
    if bytes.is_empty() || bytes.len() > MAX_OWNER_LEN {
        bail!(
            "an owner must be 1 to {MAX_OWNER_LEN} bytes, not {}",
            bytes.len()
        );
    }
    Ok(Bytes::copy_from_slice(bytes))
}

fn value_limit() -> usize {
    sessiond_proto::Limits::HARD_MAX_VALUE_LEN as usize
}
