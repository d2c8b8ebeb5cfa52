//! The parsers of outside bytes that are not otherwise public, for the fuzz targets in
//! `fuzz/` and the property tests in `tests/`. Not an API: hidden from the docs and free to
//! change with the modules it re-exports.

/// The RESP request decoder (`resp::decode`), which the server keeps crate-private.
pub mod resp {
    pub use crate::resp::decode::{
        split_args, DecodeLimits, Decoded, Decoder, ProtocolError, TooLarge, MAX_INLINE,
    };
}
