//! Cursor-based iteration over the keys, for Redis's `SCAN`.
//!
//! The cursor walks the hash-table buckets of each shard in order, as the expiry sweep does
//! (see [`super::sweep`]), and is handed back to the client between calls. It packs three
//! fields into a `u64`:
//!
//! ```text
//! bits 0-36   bucket index within the shard
//! bits 37-42  log2 of the shard's bucket count when the cursor was made
//! bits 43-52  shard index
//! ```
//!
//! Cursors stay below 2^53 because JavaScript clients parse them as a `Number` (node-redis
//! 4's `SCAN`, which connect-redis uses): a larger cursor would come back rounded and the
//! scan would skip keys. Redis's own cursors are small for the same reason in practice.
//! 37 bucket bits allow 137 billion buckets per shard.
//!
//! Redis promises that a full scan returns every key present for its whole duration at
//! least once. When a table is resized between two calls its elements are re-placed, so a
//! bucket index from before means nothing: if the recorded bucket count differs from the
//! shard's current one, the shard is scanned again from its start. That may return keys
//! twice (which Redis allows too) but never skips one.

use bytes::Bytes;

use super::Store;

const BUCKET_BITS: u32 = 37;
const LOG_BITS: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    shard: usize,
    log2_buckets: u32,
    bucket: usize,
}

impl Cursor {
    fn decode(raw: u64) -> Cursor {
        Cursor {
            bucket: (raw & ((1 << BUCKET_BITS) - 1)) as usize,
            log2_buckets: ((raw >> BUCKET_BITS) & ((1 << LOG_BITS) - 1)) as u32,
            shard: (raw >> (BUCKET_BITS + LOG_BITS)) as usize,
        }
    }

    fn encode(self) -> u64 {
        ((self.shard as u64) << (BUCKET_BITS + LOG_BITS))
            | (u64::from(self.log2_buckets) << BUCKET_BITS)
            | self.bucket as u64
    }
}

impl Store {
    /// Returns live keys for which `filter` holds, from `cursor` on, and the cursor to
    /// continue from (0 once the scan is complete; start with 0). `count` is a hint for how
    /// many keys to return; each call looks at a bounded number of buckets, so it may return
    /// fewer, even none, before the scan is complete.
    pub fn scan(
        &self,
        cursor: u64,
        count: usize,
        filter: impl Fn(&[u8]) -> bool,
    ) -> (u64, Vec<Bytes>) {
        let now = self.shared.clock.now_ms();
        let shard_count = self.shard_count();
        let mut cursor = Cursor::decode(cursor);
        if cursor.shard >= shard_count {
            // Not a cursor we made: Redis treats an unknown cursor as the end.
            return (0, Vec::new());
        }
        let count = count.max(1);
        // Bound the work per call like Redis does (COUNT is "amount of work"), while
        // guaranteeing progress through empty shards.
        let mut budget = count.saturating_mul(16).max(1024);
        let mut keys = Vec::new();
        loop {
            let resume = cursor.bucket;
            let (end, buckets) = self.visit_buckets(cursor.shard, resume, budget, |slot| {
                if slot.is_live(now) && filter(slot.key()) {
                    keys.push(Bytes::copy_from_slice(slot.key()));
                }
            });
            let log2_buckets = buckets.trailing_zeros();
            if resume > 0 && cursor.log2_buckets != log2_buckets {
                // The table was resized since the cursor was made: its bucket index means
                // nothing now, so this shard is scanned again from its start.
                cursor = Cursor {
                    bucket: 0,
                    log2_buckets,
                    ..cursor
                };
                continue;
            }
            budget -= end - resume;
            if end < buckets {
                cursor = Cursor {
                    bucket: end,
                    log2_buckets,
                    ..cursor
                };
            } else if cursor.shard + 1 < shard_count {
                cursor = Cursor {
                    shard: cursor.shard + 1,
                    log2_buckets: 0,
                    bucket: 0,
                };
            } else {
                return (0, keys);
            }
            if keys.len() >= count || budget == 0 {
                return (cursor.encode(), keys);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_fit_a_javascript_number() {
        let largest = Cursor {
            shard: super::super::SHARDS - 1,
            log2_buckets: (1 << LOG_BITS) - 1,
            bucket: (1 << BUCKET_BITS) - 1,
        };
        assert!(largest.encode() < 1 << 53);
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            shard: 1023,
            log2_buckets: 17,
            bucket: 123_456,
        };
        assert_eq!(Cursor::decode(c.encode()), c);
        assert_eq!(Cursor::decode(0).encode(), 0);
    }
}
