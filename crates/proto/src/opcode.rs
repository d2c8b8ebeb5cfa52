//! Operation codes.

/// The operation a request asks for; echoed in its response.
///
/// Frames carry the opcode as a raw byte so that an unknown opcode is still a well-formed
/// frame that the server can answer with [`Status::UnknownOpcode`](crate::Status) without
/// closing the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// Protocol version negotiation; returns the server's version and limits.
    Hello = 0x00,
    /// Liveness check; echoes its payload.
    Ping = 0x01,
    /// Read a value, optionally extending its TTL in the same round trip.
    Get = 0x02,
    /// Write a value in one of four modes (upsert, create-only, update-only, if-version).
    Set = 0x03,
    /// Set a new TTL without changing the value or its version.
    Touch = 0x04,
    /// Remove a key, optionally only if its version matches.
    Del = 0x05,
    /// Server counters as text.
    Stats = 0x06,
    /// Authenticate the connection as a configured user.
    Auth = 0x07,
    /// Read or clear the log of slow requests.
    Slowlog = 0x08,
    /// `SET` with session options: an owner, an absolute lifetime, a per-owner limit.
    SetSession = 0x10,
    /// The live sessions of an owner.
    ListSessions = 0x11,
    /// End every session of an owner, or all but one.
    EndAll = 0x12,
    /// Move a session to a new key in one step, optionally binding an owner.
    Rotate = 0x13,
    /// Every live entry with its session fields, in batches (moving sessions between
    /// servers).
    Scan = 0x14,
}

impl Opcode {
    /// Every defined opcode, in numeric order.
    pub const ALL: [Opcode; 14] = [
        Opcode::Hello,
        Opcode::Ping,
        Opcode::Get,
        Opcode::Set,
        Opcode::Touch,
        Opcode::Del,
        Opcode::Stats,
        Opcode::Auth,
        Opcode::Slowlog,
        Opcode::SetSession,
        Opcode::ListSessions,
        Opcode::EndAll,
        Opcode::Rotate,
        Opcode::Scan,
    ];

    /// The opcode for a wire byte, or `None` if the byte is not a defined opcode. Every
    /// request looks its opcode up, so this is a table lookup rather than a search.
    pub fn from_u8(byte: u8) -> Option<Opcode> {
        BY_BYTE[usize::from(byte)]
    }

    /// The upper-case name used in the specification and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Opcode::Hello => "HELLO",
            Opcode::Ping => "PING",
            Opcode::Get => "GET",
            Opcode::Set => "SET",
            Opcode::Touch => "TOUCH",
            Opcode::Del => "DEL",
            Opcode::Stats => "STATS",
            Opcode::Auth => "AUTH",
            Opcode::Slowlog => "SLOWLOG",
            Opcode::SetSession => "SET_SESSION",
            Opcode::ListSessions => "LIST_SESSIONS",
            Opcode::EndAll => "END_ALL",
            Opcode::Rotate => "ROTATE",
            Opcode::Scan => "SCAN",
        }
    }
}

/// [`Opcode::ALL`] indexed by wire byte, built at compile time.
const BY_BYTE: [Option<Opcode>; 256] = {
    let mut table = [None; 256];
    let mut i = 0;
    while i < Opcode::ALL.len() {
        table[Opcode::ALL[i] as usize] = Some(Opcode::ALL[i]);
        i += 1;
    }
    table
};

impl From<Opcode> for u8 {
    fn from(op: Opcode) -> u8 {
        op as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_u8_inverts_the_discriminant() {
        for op in Opcode::ALL {
            assert_eq!(Opcode::from_u8(op as u8), Some(op));
        }
        assert_eq!(Opcode::from_u8(0x09), None);
        assert_eq!(Opcode::from_u8(0x15), None);
        assert_eq!(Opcode::from_u8(0xff), None);
    }
}
