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

use bytes::BufMut;

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
    /// From a fixed-size array rather than through `Buf`: every request's header is read
    /// here, twice on a server that looks ahead at keys, and a `Buf` checks the length and
    /// moves its cursor once per field.
    pub fn read(bytes: &[u8; HEADER_LEN]) -> (u8, RequestHeader) {
        let [magic, version, opcode, flags, o0, o1, o2, o3, k0, k1, extras_len, reserved, v0, v1, v2, v3] =
            *bytes;
        let header = RequestHeader {
            version,
            opcode,
            flags,
            opaque: u32::from_be_bytes([o0, o1, o2, o3]),
            key_len: u16::from_be_bytes([k0, k1]),
            extras_len,
            reserved,
            value_len: u32::from_be_bytes([v0, v1, v2, v3]),
        };
        (magic, header)
    }

    /// Writes the header, magic first.
    pub fn write(&self, buf: &mut impl BufMut) {
        let [o0, o1, o2, o3] = self.opaque.to_be_bytes();
        let [k0, k1] = self.key_len.to_be_bytes();
        let [v0, v1, v2, v3] = self.value_len.to_be_bytes();
        buf.put_slice(&[
            REQUEST_MAGIC,
            self.version,
            self.opcode,
            self.flags,
            o0,
            o1,
            o2,
            o3,
            k0,
            k1,
            self.extras_len,
            self.reserved,
            v0,
            v1,
            v2,
            v3,
        ]);
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

    /// Reads a header, returning it with the magic byte that was found (from an array, as
    /// [`RequestHeader::read`] does).
    pub fn read(bytes: &[u8; HEADER_LEN]) -> (u8, ResponseHeader) {
        let [magic, version, opcode, extras_len, o0, o1, o2, o3, s0, s1, r0, r1, v0, v1, v2, v3] =
            *bytes;
        let header = ResponseHeader {
            version,
            opcode,
            extras_len,
            opaque: u32::from_be_bytes([o0, o1, o2, o3]),
            status: u16::from_be_bytes([s0, s1]),
            reserved: u16::from_be_bytes([r0, r1]),
            value_len: u32::from_be_bytes([v0, v1, v2, v3]),
        };
        (magic, header)
    }

    /// Writes the header, magic first, in one copy: every response's header is written
    /// here.
    pub fn write(&self, buf: &mut impl BufMut) {
        let [o0, o1, o2, o3] = self.opaque.to_be_bytes();
        let [s0, s1] = self.status.to_be_bytes();
        let [r0, r1] = self.reserved.to_be_bytes();
        let [v0, v1, v2, v3] = self.value_len.to_be_bytes();
        buf.put_slice(&[
            RESPONSE_MAGIC,
            self.version,
            self.opcode,
            self.extras_len,
            o0,
            o1,
            o2,
            o3,
            s0,
            s1,
            r0,
            r1,
            v0,
            v1,
            v2,
            v3,
        ]);
    }
}
