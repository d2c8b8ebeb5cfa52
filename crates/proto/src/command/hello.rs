//! `HELLO`: protocol version negotiation.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{malformed, reply_status, unexpected, CommandError, Presence, ReplyError, Shape};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Limits, Opcode, Status};

/// `HELLO`: the client states the protocol versions it speaks; the server picks one and
/// returns its software version and limits.
///
/// ```text
/// flags   0
/// extras  min_version u8 | max_version u8
/// key     none
/// value   optional client name, at most 1024 bytes (informational)
/// ```
///
/// A `HELLO` frame is always written with header version 1, whatever the client's range, so
/// that every server can read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Lowest version the client speaks.
    pub min_version: u8,
    /// Highest version the client speaks.
    pub max_version: u8,
    /// Optional client name, for logs.
    pub client_name: Bytes,
}

const SHAPE: Shape = Shape {
    opcode: Opcode::Hello,
    allowed_flags: 0,
    extras_lens: &[2],
    key: Presence::Forbidden,
    value: Presence::Optional,
};

impl Hello {
    /// Parses a `HELLO` frame.
    pub fn parse(frame: RequestFrame) -> Result<Hello, CommandError> {
        SHAPE.check(&frame)?;
        if frame.value.len() > Limits::MAX_AUX_VALUE_LEN as usize {
            return Err(CommandError::InvalidArgument(format!(
                "HELLO: client name longer than {} bytes",
                Limits::MAX_AUX_VALUE_LEN
            )));
        }
        let (min_version, max_version) = (frame.extras[0], frame.extras[1]);
        if min_version > max_version {
            return Err(CommandError::InvalidArgument(format!(
                "HELLO: min_version {min_version} is above max_version {max_version}"
            )));
        }
        Ok(Hello {
            min_version,
            max_version,
            client_name: frame.value,
        })
    }

    /// The frame for this request.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        RequestFrame {
            extras: Bytes::copy_from_slice(&[self.min_version, self.max_version]),
            value: self.client_name.clone(),
            ..RequestFrame::new(Opcode::Hello, opaque)
        }
    }

    /// The highest version both this request and the range `min..=max` allow.
    pub fn negotiate(&self, min: u8, max: u8) -> Option<u8> {
        let high = self.max_version.min(max);
        (high >= self.min_version.max(min)).then_some(high)
    }

    /// The answer when [`Hello::negotiate`] with the server's range `min..=max` finds no
    /// version: `UNSUPPORTED_VERSION`, after which the server closes the connection.
    pub fn no_common_version(&self, opaque: u32, min: u8, max: u8) -> ResponseFrame {
        ResponseFrame::error(
            Opcode::Hello.into(),
            opaque,
            Status::UnsupportedVersion,
            format!(
                "no common protocol version: client speaks {}..={}, server speaks {min}..={max}",
                self.min_version, self.max_version
            ),
        )
    }
}

/// The bit of [`HelloReply::flags`] that says the server requires `AUTH` before any command
/// other than `HELLO`, `AUTH` and `PING`.
pub const HELLO_FLAG_AUTH_REQUIRED: u8 = 0x01;

/// The successful `HELLO` reply.
///
/// ```text
/// extras  version u8 | flags u8 | reserved [0; 2] | max_key_len u32 | max_value_len u32
///         | reserved u32 (0) | max_ttl_ms u64                         (24 bytes)
/// value   server software, e.g. "sessiond/0.1.0"
/// ```
///
/// The flags byte was reserved (zero, ignored by clients) before `AUTH` existed, so a client
/// that does not know about authentication still reads the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloReply {
    /// The version chosen for the rest of the connection.
    pub version: u8,
    /// Server flags: [`HELLO_FLAG_AUTH_REQUIRED`]; other bits are reserved and clients
    /// ignore them.
    pub flags: u8,
    /// The server's limits.
    pub limits: Limits,
    /// Server software name and version.
    pub server: String,
}

impl HelloReply {
    /// Whether the server requires `AUTH` before other commands.
    pub fn auth_required(&self) -> bool {
        self.flags & HELLO_FLAG_AUTH_REQUIRED != 0
    }

    /// The response frame for this reply.
    pub fn to_frame(&self, opaque: u32) -> ResponseFrame {
        let mut extras = BytesMut::with_capacity(24);
        extras.put_u8(self.version);
        extras.put_u8(self.flags);
        extras.put_bytes(0, 2);
        extras.put_u32(self.limits.max_key_len);
        extras.put_u32(self.limits.max_value_len);
        extras.put_u32(0);
        extras.put_u64(self.limits.max_ttl_ms);
        ResponseFrame {
            extras: extras.freeze(),
            value: Bytes::from(self.server.clone()),
            ..ResponseFrame::new(Opcode::Hello.into(), opaque, Status::Ok)
        }
    }

    /// Reads a `HELLO` reply.
    pub fn from_frame(frame: &ResponseFrame) -> Result<HelloReply, ReplyError> {
        match reply_status(frame, Opcode::Hello)? {
            Status::Ok => {}
            other => return Err(unexpected(Opcode::Hello, other)),
        }
        if frame.extras.len() != 24 {
            return Err(malformed(
                Opcode::Hello,
                format!("extras must be 24 bytes, got {}", frame.extras.len()),
            ));
        }
        let mut extras = &frame.extras[..];
        let version = extras.get_u8();
        let flags = extras.get_u8();
        extras.advance(2);
        let max_key_len = extras.get_u32();
        let max_value_len = extras.get_u32();
        extras.advance(4);
        let max_ttl_ms = extras.get_u64();
        Ok(HelloReply {
            version,
            flags,
            limits: Limits {
                max_key_len,
                max_value_len,
                max_ttl_ms,
            },
            server: frame.message(),
        })
    }
}
