//! Record constructors shared by the append-only file tests.

// Each test crate that includes this module uses only some of it.
#![allow(dead_code)]

use bytes::Bytes;
use sessiond::aof::record::Record;

/// A SET record.
pub fn set(key: &[u8], value: &[u8], expires_at_ms: u64, version: u64) -> Record {
    Record::Set {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        expires_at_ms,
        version,
    }
}

/// A TOUCH record.
pub fn touch(key: &[u8], expires_at_ms: u64) -> Record {
    Record::Touch {
        key: Bytes::copy_from_slice(key),
        expires_at_ms,
    }
}

/// A DEL record.
pub fn del(key: &[u8]) -> Record {
    Record::Del {
        key: Bytes::copy_from_slice(key),
    }
}
