//! Size and TTL limits.

/// The limits a server enforces, advertised to clients in the `HELLO` reply.
///
/// The server codec checks the declared key and value lengths in a header against these
/// *before* buffering the frame, which is what keeps a hostile length from turning into an
/// allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key accepted, in bytes (1 ..= [`Limits::HARD_MAX_KEY_LEN`]).
    pub max_key_len: u32,
    /// Longest value accepted, in bytes (0 ..= [`Limits::HARD_MAX_VALUE_LEN`]).
    pub max_value_len: u32,
    /// Longest TTL accepted, in milliseconds (1 ..= [`Limits::HARD_MAX_TTL_MS`]).
    pub max_ttl_ms: u64,
}

impl Limits {
    /// The key length field is 16 bits wide.
    pub const HARD_MAX_KEY_LEN: u32 = u16::MAX as u32;
    /// No server may accept values larger than 16 MiB: sessions are small, and a bound that
    /// every client can rely on lets clients size their buffers.
    pub const HARD_MAX_VALUE_LEN: u32 = 16 * 1024 * 1024;
    /// Ten years (of 365 days). Sessions always expire; this bounds how far away.
    pub const HARD_MAX_TTL_MS: u64 = 10 * 365 * 24 * 60 * 60 * 1000;
    /// Longest payload a `PING` or `HELLO` client name may carry; these are not storage.
    pub const MAX_AUX_VALUE_LEN: u32 = 1024;
    /// Longest body (extras + key + value) a server accepts from a connection that has not
    /// authenticated yet, when it requires authentication. Enough for `HELLO`, `AUTH` (a
    /// 255-byte user and a 1024-byte password) and `PING`; it keeps an unauthenticated peer
    /// from making the server buffer megabytes (the lesson of Redis's CVE-2021-32675).
    pub const MAX_UNAUTHENTICATED_BODY_LEN: u32 = 4096;
    /// Longest user name `AUTH` accepts, in bytes.
    pub const MAX_USER_LEN: usize = 255;
    /// Longest password `AUTH` accepts, in bytes.
    pub const MAX_PASSWORD_LEN: usize = 1024;

    /// Whether every limit is within the protocol's hard bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_key_len == 0 || self.max_key_len > Self::HARD_MAX_KEY_LEN {
            return Err(format!(
                "max_key_len must be between 1 and {}, got {}",
                Self::HARD_MAX_KEY_LEN,
                self.max_key_len
            ));
        }
        if self.max_value_len > Self::HARD_MAX_VALUE_LEN {
            return Err(format!(
                "max_value_len must be at most {}, got {}",
                Self::HARD_MAX_VALUE_LEN,
                self.max_value_len
            ));
        }
        if self.max_ttl_ms == 0 || self.max_ttl_ms > Self::HARD_MAX_TTL_MS {
            return Err(format!(
                "max_ttl_ms must be between 1 and {}, got {}",
                Self::HARD_MAX_TTL_MS,
                self.max_ttl_ms
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    /// 1 KiB keys, 1 MiB values, 400-day TTLs: room for any session id with a prefix, far more
    /// than a session should hold, and longer than the 31-day permanent-session lifetime that
    /// web frameworks default to.
    fn default() -> Self {
        Limits {
            max_key_len: 1024,
            max_value_len: 1024 * 1024,
            max_ttl_ms: 400 * 24 * 60 * 60 * 1000,
        }
    }
}
