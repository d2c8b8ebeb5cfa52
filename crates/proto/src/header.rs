//! The fixed-size request and response headers.
//!
//! Both are 16 bytes, big-endian, laid out so that the fields a reader needs first (magic,
//! version, opcode) come first and the opaque sits at the same offset in both:
//!
//! ```text
//! request                               response
//!  0 magic 0xB5 | version | opcode | flags      0 magic 0xB6 | version | opcode | extras len
//!  4 opaque (u32)                               4 opaque (u32)
//!  8 key len (u16) | extras len | reserved      8 status (u16)   | reserved (u16)
//! 12 value len (u32)                           12 value len (u32)
//! ```
//!
//! A request's body is `extras ‖ key ‖ value`; a response's is `extras ‖ value`.

use bytes::{Buf, BufMut};

/// First byte of every request.
pub const REQUEST_MAGIC: u8 = 0xB5;
/// First byte of every response.
pub const RESPONSE_MAGIC: u8 = 0xB6;
/// Length of either header in bytes.
pub const HEADER_LEN: usize = 16;

/// The decoded fields of a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Protocol version the frame is written in.
    pub version: u8,
    /// Raw opcode byte (see [`Opcode`](crate::Opcode)).
    pub opcode: u8,
    /// Per-opcode flags.
    pub flags: u8,
    /// Echoed unchanged in the response, so clients can match responses to requests.
    pub opaque: u32,
    /// Length of the key.
    pub key_len: u16,
    /// Length of the extras.
    pub extras_len: u8,
    /// Must be zero.
    pub reserved: u8,
    /// Length of the value.
    pub value_len: u32,
}

impl RequestHeader {
    /// Bytes of body (extras, key, value) that follow the header.
    pub fn body_len(&self) -> u64 {
        u64::from(self.extras_len) + u64::from(self.key_len) + u64::from(self.value_len)
    }

    /// Reads a header, returning it with the magic byte that was found. The caller checks the
    /// magic and the version: this only splits bytes into fields.
    ///
    /// `buf` must hold at least [`HEADER_LEN`] bytes.
    pub fn read(buf: &mut impl Buf) -> (u8, RequestHeader) {
        let magic = buf.get_u8();
        let header = RequestHeader {
            version: buf.get_u8(),
            opcode: buf.get_u8(),
            flags: buf.get_u8(),
            opaque: buf.get_u32(),
            key_len: buf.get_u16(),
            extras_len: buf.get_u8(),
            reserved: buf.get_u8(),
            value_len: buf.get_u32(),
        };
        (magic, header)
    }

    /// Writes the header, magic first.
    pub fn write(&self, buf: &mut impl BufMut) {
        buf.put_u8(REQUEST_MAGIC);
        buf.put_u8(self.version);
        buf.put_u8(self.opcode);
        buf.put_u8(self.flags);
        buf.put_u32(self.opaque);
        buf.put_u16(self.key_len);
        buf.put_u8(self.extras_len);
        buf.put_u8(self.reserved);
        buf.put_u32(self.value_len);
    }
}

/// The decoded fields of a response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// Protocol version the frame is written in.
    pub version: u8,
    /// The request's opcode, echoed.
    pub opcode: u8,
    /// Length of the extras.
    pub extras_len: u8,
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// Raw status code (see [`Status`](crate::Status)).
    pub status: u16,
    /// Must be zero.
    pub reserved: u16,
    /// Length of the value.
    pub value_len: u32,
}

impl ResponseHeader {
    /// Bytes of body (extras, value) that follow the header.
    pub fn body_len(&self) -> u64 {
        u64::from(self.extras_len) + u64::from(self.value_len)
    }

    /// Reads a header, returning it with the magic byte that was found.
    ///
    /// `buf` must hold at least [`HEADER_LEN`] bytes.
    pub fn read(buf: &mut impl Buf) -> (u8, ResponseHeader) {
        let magic = buf.get_u8();
        let header = ResponseHeader {
            version: buf.get_u8(),
            opcode: buf.get_u8(),
            extras_len: buf.get_u8(),
            opaque: buf.get_u32(),
            status: buf.get_u16(),
            reserved: buf.get_u16(),
            value_len: buf.get_u32(),
        };
        (magic, header)
    }

    /// Writes the header, magic first.
    pub fn write(&self, buf: &mut impl BufMut) {
        buf.put_u8(RESPONSE_MAGIC);
        buf.put_u8(self.version);
        buf.put_u8(self.opcode);
        buf.put_u8(self.extras_len);
        buf.put_u32(self.opaque);
        buf.put_u16(self.status);
        buf.put_u16(self.reserved);
        buf.put_u32(self.value_len);
    }
}
