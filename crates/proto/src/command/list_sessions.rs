//! `LIST_SESSIONS`: the live sessions of one owner.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::owner::check_owner;
use super::{
    malformed, read_u64s, reply_status, reply_u64s, u64_extras, unexpected, CommandError, Presence,
    ReplyError, Shape,
};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Opcode, Status};

/// `LIST_SESSIONS`: returns the owner's live sessions, most recently used first, as many as
/// fit the server's reply budget (its `max_value_len`) and `max_sessions`, with the number
/// the owner has in all.
///
/// ```text
/// flags   0
/// extras  max_sessions u32   (0: as many as fit)
/// key     the owner
/// value   none
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSessions {
    /// The owner whose sessions to list.
    pub owner: Bytes,
    /// At most this many sessions in the reply; 0 for as many as fit.
    pub max_sessions: u32,
}

const SHAPE: Shape = Shape {
    opcode: Opcode::ListSessions,
    allowed_flags: 0,
    extras_lens: &[4],
    key: Presence::Required,
    value: Presence::Forbidden,
};

impl ListSessions {
    /// Parses a `LIST_SESSIONS` frame.
    pub fn parse(frame: RequestFrame) -> Result<ListSessions, CommandError> {
        SHAPE.check(&frame)?;
        check_owner("LIST_SESSIONS", &frame.key)?;
        Ok(ListSessions {
            max_sessions: (&frame.extras[..]).get_u32(),
            owner: frame.key,
        })
    }

    /// The frame for this request.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        RequestFrame {
            extras: Bytes::copy_from_slice(&self.max_sessions.to_be_bytes()),
            key: self.owner.clone(),
            ..RequestFrame::new(Opcode::ListSessions, opaque)
        }
    }
}

/// One live session of an owner, as `LIST_SESSIONS` reports it.
///
/// ```text
/// key_len u16 | version u64 | created_ms u64 | last_access_ms u64 | ttl_ms u64
/// | deadline_ms u64 | key                        (42 bytes + the key)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's key: its id, a bearer credential.
    pub key: Bytes,
    /// The version of its last write.
    pub version: u64,
    /// When it was created, in Unix milliseconds of the server's clock.
    pub created_ms: u64,
    /// When it was last read with a touch, touched or written, in Unix milliseconds.
    pub last_access_ms: u64,
    /// Milliseconds until it expires unless touched again, at least 1.
    pub ttl_ms: u64,
    /// Its absolute deadline in Unix milliseconds, if it has one.
    pub deadline_ms: Option<u64>,
}

/// Bytes of a [`SessionInfo`] record before its key.
const RECORD_FIXED_LEN: usize = 2 + 5 * 8;

impl SessionInfo {
    /// The length of this record in a `LIST_SESSIONS` reply.
    pub fn encoded_len(&self) -> usize {
        RECORD_FIXED_LEN + self.key.len()
    }

    fn encode(&self, dst: &mut BytesMut) {
        // Keys are at most 65 535 bytes (the request key field is 16 bits), so this holds for
        // every stored key.
        dst.put_u16(u16::try_from(self.key.len()).unwrap_or(u16::MAX));
        dst.put_u64(self.version);
        dst.put_u64(self.created_ms);
        dst.put_u64(self.last_access_ms);
        dst.put_u64(self.ttl_ms);
        dst.put_u64(self.deadline_ms.unwrap_or(0));
        dst.put_slice(&self.key);
    }

    fn decode(src: &mut Bytes) -> Option<SessionInfo> {
        if src.len() < RECORD_FIXED_LEN {
            return None;
        }
        let key_len = usize::from(src.get_u16());
        let [version, created_ms, last_access_ms, ttl_ms, deadline_ms] =
            read_u64s::<5>(&src.split_to(5 * 8));
        if src.len() < key_len {
            return None;
        }
        Some(SessionInfo {
            key: src.split_to(key_len),
            version,
            created_ms,
            last_access_ms,
            ttl_ms,
            deadline_ms: (deadline_ms != 0).then_some(deadline_ms),
        })
    }
}

/// The `LIST_SESSIONS` reply.
///
/// ```text
/// OK  extras  total u64 | count u64     value  count SessionInfo records
/// ```
///
/// `total` is how many live sessions the owner has; when it is above `count`, the reply holds
/// the `count` most recently used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionList {
    /// How many live sessions the owner has in all.
    pub total: u64,
    /// The most recently used of them, most recent first.
    pub sessions: Vec<SessionInfo>,
}

impl SessionList {
    /// The list of an owner's `sessions` (in any order) that fits `max_bytes` of reply value
    /// and `max_sessions` (0: no count limit): the most recently used first, ties by key.
    pub fn fitting(sessions: Vec<SessionInfo>, max_sessions: u32, max_bytes: usize) -> Self {
        Self::fitting_by(sessions, max_sessions, max_bytes, SessionInfo::encoded_len)
    }

    /// [`SessionList::fitting`] for a reply that encodes each session in `cost(session)`
    /// bytes (another protocol's encoding).
    pub fn fitting_by(
        mut sessions: Vec<SessionInfo>,
        max_sessions: u32,
        max_bytes: usize,
        cost: impl Fn(&SessionInfo) -> usize,
    ) -> Self {
        let total = sessions.len() as u64;
        sessions.sort_unstable_by(|a, b| {
            b.last_access_ms
                .cmp(&a.last_access_ms)
                .then_with(|| a.key.cmp(&b.key))
        });
        let max_count = match max_sessions {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let mut used = 0usize;
        let fit = sessions
            .iter()
            .take(max_count)
            .take_while(|s| {
                used = used.saturating_add(cost(s));
                used <= max_bytes
            })
            .count();
        sessions.truncate(fit);
        SessionList { total, sessions }
    }

    /// Whether the owner has sessions that the reply leaves out.
    pub fn more(&self) -> bool {
        self.total > self.sessions.len() as u64
    }

    /// The response frame for this reply.
    pub fn to_frame(&self, opaque: u32) -> ResponseFrame {
        let len = self.sessions.iter().map(SessionInfo::encoded_len).sum();
        let mut value = BytesMut::with_capacity(len);
        for session in &self.sessions {
            session.encode(&mut value);
        }
        ResponseFrame {
            extras: u64_extras(&[self.total, self.sessions.len() as u64]),
            value: value.freeze(),
            ..ResponseFrame::new(Opcode::ListSessions.into(), opaque, Status::Ok)
        }
    }

    /// Reads a `LIST_SESSIONS` reply.
    pub fn from_frame(frame: &ResponseFrame) -> Result<SessionList, ReplyError> {
        const OP: Opcode = Opcode::ListSessions;
        match reply_status(frame, OP)? {
            Status::Ok => {}
            other => return Err(unexpected(OP, other)),
        }
        let [total, count] = reply_u64s::<2>(frame, OP)?;
        let mut rest = frame.value.clone();
        // Each record is at least 42 bytes, so a count the value cannot hold is refused before
        // anything is reserved for it.
        if count > (rest.len() / RECORD_FIXED_LEN) as u64 || count > total {
            return Err(malformed(
                OP,
                format!("count {count} does not fit the reply (total {total})"),
            ));
        }
        let mut sessions = Vec::with_capacity(count as usize);
        for i in 0..count {
            let session = SessionInfo::decode(&mut rest)
                .ok_or_else(|| malformed(OP, format!("session record {i} is truncated")))?;
            sessions.push(session);
        }
        if !rest.is_empty() {
            return Err(malformed(
                OP,
                format!("{} bytes after the last record", rest.len()),
            ));
        }
        Ok(SessionList { total, sessions })
    }
}
