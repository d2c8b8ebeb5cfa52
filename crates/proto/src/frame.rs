//! Whole frames: a header's fields plus the body, before any meaning is attached.

use bytes::{BufMut, Bytes};

use crate::header::{RequestHeader, ResponseHeader, HEADER_LEN};
use crate::{Opcode, Status, PROTOCOL_VERSION};

/// A request as it travels on the wire.
///
/// The opcode is kept raw so that a frame with an unknown opcode can still be decoded,
/// answered with [`Status::UnknownOpcode`], and skipped without losing the connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestFrame {
    /// Raw opcode byte.
    pub opcode: u8,
    /// Per-opcode flags.
    pub flags: u8,
    /// Client-chosen id echoed in the response.
    pub opaque: u32,
    /// Fixed-layout, per-opcode arguments.
    pub extras: Bytes,
    /// The key, if the opcode takes one.
    pub key: Bytes,
    /// The value, if the opcode takes one.
    pub value: Bytes,
}

impl RequestFrame {
    /// A frame for `opcode` with empty flags and body.
    pub fn new(opcode: Opcode, opaque: u32) -> Self {
        RequestFrame {
            opcode: opcode.into(),
            opaque,
            ..Default::default()
        }
    }

    /// The total encoded length, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.extras.len() + self.key.len() + self.value.len()
    }

    /// Appends the encoded frame to `dst`.
    ///
    /// # Panics
    ///
    /// If the extras are longer than 255 bytes, the key longer than 65535 bytes or the value
    /// longer than `u32::MAX` bytes: those cannot be represented, and building such a frame
    /// is a bug in the caller, not bad input.
    pub fn encode(&self, dst: &mut impl BufMut) {
        let header = RequestHeader {
            version: PROTOCOL_VERSION,
            opcode: self.opcode,
            flags: self.flags,
            opaque: self.opaque,
            key_len: checked_len(self.key.len(), "key"),
            extras_len: checked_len(self.extras.len(), "extras"),
            reserved: 0,
            value_len: checked_len(self.value.len(), "value"),
        };
        header.write(dst);
        dst.put_slice(&self.extras);
        dst.put_slice(&self.key);
        dst.put_slice(&self.value);
    }
}

/// A response as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseFrame {
    /// The request's opcode, echoed.
    pub opcode: u8,
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// Raw status code; see [`ResponseFrame::status`].
    pub status: u16,
    /// Fixed-layout, per-opcode results.
    pub extras: Bytes,
    /// The value, or for an error status its UTF-8 message.
    pub value: Bytes,
}

impl ResponseFrame {
    /// A response with `status` and an empty body.
    pub fn new(opcode: u8, opaque: u32, status: Status) -> Self {
        ResponseFrame {
            opcode,
            opaque,
            status: status.into(),
            ..Default::default()
        }
    }

    /// An error response carrying `message` as its value.
    pub fn error(opcode: u8, opaque: u32, status: Status, message: impl Into<String>) -> Self {
        ResponseFrame {
            value: Bytes::from(message.into()),
            ..ResponseFrame::new(opcode, opaque, status)
        }
    }

    /// The status, or `None` if the server sent a code this crate does not know.
    pub fn status(&self) -> Option<Status> {
        Status::from_u16(self.status)
    }

    /// The error message of an error response (lossy UTF-8).
    pub fn message(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }

    /// The total encoded length, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.extras.len() + self.value.len()
    }

    /// Appends the encoded frame to `dst`.
    ///
    /// # Panics
    ///
    /// If the extras are longer than 255 bytes or the value longer than `u32::MAX` bytes.
    pub fn encode(&self, dst: &mut impl BufMut) {
        let header = ResponseHeader {
            version: PROTOCOL_VERSION,
            opcode: self.opcode,
            extras_len: checked_len(self.extras.len(), "extras"),
            opaque: self.opaque,
            status: self.status,
            reserved: 0,
            value_len: checked_len(self.value.len(), "value"),
        };
        header.write(dst);
        dst.put_slice(&self.extras);
        dst.put_slice(&self.value);
    }
}

fn checked_len<T: TryFrom<usize>>(len: usize, what: &str) -> T {
    match T::try_from(len) {
        Ok(len) => len,
        // Only reachable through a programming error in the code that built the frame; every
        // length that came from the network was checked against the limits on decode.
        Err(_) => panic!("{what} of {len} bytes does not fit its length field"),
    }
}
