//! Holding the sessions that exist at start to `limits.max_session_lifetime`.
//!
//! A session created while the setting is on gets its absolute deadline at creation
//! ([`Store::created_meta`]). The sessions replayed from the file were created under whatever
//! the setting was then: none at all, or a longer one. Without this walk, turning the setting
//! on (typically after an incident, to be rid of long-lived stolen sessions) would not touch
//! the very sessions that exist, and sliding expiry would keep them alive for ever.
//!
//! So after replay the server walks the map once, a shard at a time, and gives every live
//! entry whose absolute deadline is missing or later than its creation plus the lifetime the
//! deadline `created + lifetime` (the start of this walk standing in for the creation time of
//! an entry that does not record one: a plain entry, or one from a file that predates it),
//! clamping its expiry to it. Each change is recorded as a SESSION_SET like any write, so the
//! deadline survives restarts: an entry whose creation time was unknown keeps the start time
//! it was given rather than getting a fresh one at every start, and lowering the setting or
//! removing it later never moves a deadline it gave (as for sessions created under it).
//! The value and version do not change, so a client's if-version write still matches.

use super::raw::{Meta, SlotMut};
use super::{clamp, Store};

impl Store {
    /// Caps the live entries of one shard (an index below [`Store::shard_count`]) to
    /// `max_lifetime_ms` as the module docs say, `started_ms` standing in for unknown creation
    /// times; returns how many entries it changed. Runs after replay and before the listeners
    /// are bound, a shard at a time so that the caller can let the AOF writer drain between
    /// shards.
    pub fn cap_lifetime_in_shard(
        &self,
        shard: usize,
        max_lifetime_ms: u64,
        started_ms: u64,
    ) -> u64 {
        let now = self.shared.clock.now_ms();
        // The keys to change, found under the shard's read lock; changed one by one under
        // its write lock, which a table walk cannot hand out as a `SlotMut`.
        let mut over = Vec::new();
        self.visit_buckets(shard, 0, usize::MAX, |slot| {
            if slot.is_live(now) && capped_meta(slot.meta(), max_lifetime_ms, started_ms).is_some()
            {
                over.push(Box::<[u8]>::from(slot.key()));
            }
        });
        let mut capped = 0;
        for key in over {
            let Some(mut found) = self.shared.map.get_mut(&key[..]) else {
                continue;
            };
            let mut slot = SlotMut::from_ref_mut(&mut found);
            // Looked at again: nothing else runs before the listeners are bound, but the
            // answer must not depend on that.
            let current = slot.slot().meta();
            let Some(wanted) = capped_meta(current, max_lifetime_ms, started_ms) else {
                continue;
            };
            // The owner is borrowed from the block being replaced: copy it first.
            let owner = wanted.owner.map(<[u8]>::to_vec);
            let absolute = wanted.absolute_deadline_ms;
            let wanted = Meta {
                owner: owner.as_deref(),
                created_ms: wanted.created_ms,
                last_access_ms: wanted.last_access_ms,
                absolute_deadline_ms: absolute,
            };
            self.replace_meta(&mut slot, wanted);
            let expires_at_ms = clamp(slot.slot().expires_at_ms(), absolute);
            slot.set_expires_at_ms(expires_at_ms);
            self.record_set(slot.slot());
            capped += 1;
        }
        capped
    }
}

/// The session fields an entry with `current` (`None`: a plain entry) gets under the cap, or
/// `None` if its absolute deadline is already within it.
fn capped_meta<'a>(
    current: Option<Meta<'a>>,
    max_lifetime_ms: u64,
    started_ms: u64,
) -> Option<Meta<'a>> {
    let current = current.unwrap_or(Meta {
        owner: None,
        created_ms: 0,
        last_access_ms: started_ms,
        absolute_deadline_ms: None,
    });
    // 0 is what a plain entry and a session from an older file record: not known.
    let created_ms = if current.created_ms == 0 {
        started_ms
    } else {
        current.created_ms
    };
    let latest = created_ms.saturating_add(max_lifetime_ms);
    if current.absolute_deadline_ms.is_some_and(|at| at <= latest) {
        return None;
    }
    Some(Meta {
        created_ms,
        absolute_deadline_ms: Some(latest),
        ..current
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use sessiond_proto::command::{GetReply, SetMode};

    use crate::clock::Clock;
    use crate::store::{Expiry, Mutation, MutationSink, SessionOptions, Store};

    const HOUR_MS: u64 = 3_600_000;

    /// One SESSION_SET record: key, absolute deadline, expiry.
    type Record = (Vec<u8>, Option<u64>, u64);

    /// The SESSION_SET records written.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<Record>>);

    impl MutationSink for Recorded {
        fn record(&self, mutation: Mutation<'_>) {
            if let Mutation::SessionSet(state) = mutation {
                let mut recorded = self.0.lock().unwrap_or_else(|p| p.into_inner());
                recorded.push((
                    state.key.to_vec(),
                    state.meta.absolute_deadline_ms,
                    state.expires_at_ms,
                ));
            }
        }
    }

    impl Recorded {
        fn take(&self) -> Vec<Record> {
            let mut taken = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
            taken.sort();
            taken
        }
    }

    fn cap_all(store: &Store, max_ms: u64, started_ms: u64) -> u64 {
        (0..store.shard_count())
            .map(|shard| store.cap_lifetime_in_shard(shard, max_ms, started_ms))
            .sum()
    }

    fn session(store: &Store, key: &[u8], owner: Option<&[u8]>, absolute: Option<u64>) {
        let options = SessionOptions {
            owner,
            absolute_deadline: absolute,
            owner_limit: None,
        };
        let written = store.set_session(key, b"v", Expiry::In(HOUR_MS), SetMode::Upsert, &options);
        assert!(written.is_ok(), "{written:?}");
    }

    async fn advance_ms(ms: u64) {
        tokio::time::advance(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn caps_plain_entries_and_longer_sessions_and_records_each_once() {
        let created = 1_000_000;
        let sink = Arc::new(Recorded::default());
        let store = Store::with_parts(Clock::following_tokio_from(created), Some(sink.clone()));
        store.set(b"plain", b"v", HOUR_MS, SetMode::Upsert);
        session(&store, b"owned", Some(b"alice"), None);
        session(&store, b"long", None, Some(created + 10 * HOUR_MS));
        session(&store, b"short", None, Some(created + 1_000));
        sink.take();

        advance_ms(500).await;
        let started = store.clock().now_ms();
        assert_eq!(cap_all(&store, 2_000, started), 3);
        assert_eq!(
            sink.take(),
            vec![
                // Sessions keep the creation time they record.
                (b"long".to_vec(), Some(created + 2_000), created + 2_000),
                (b"owned".to_vec(), Some(created + 2_000), created + 2_000),
                // A plain entry's creation time is not known: the start stands in.
                (b"plain".to_vec(), Some(started + 2_000), started + 2_000),
            ]
        );
        // The next start under the same setting finds nothing to change.
        assert_eq!(cap_all(&store, 2_000, started + 10_000), 0);
        assert_eq!(sink.take(), vec![]);
        // The owner index still holds the capped session.
        assert_eq!(store.owner_count(), 1);

        // Touching never passes the cap; each entry is gone after its own.
        assert!(matches!(
            store.get(b"owned", Some(HOUR_MS)),
            GetReply::Hit(_)
        ));
        advance_ms(1_000).await;
        assert!(matches!(store.get(b"short", None), GetReply::Miss));
        assert!(matches!(
            store.get(b"owned", Some(HOUR_MS)),
            GetReply::Hit(_)
        ));
        advance_ms(500).await;
        assert!(matches!(store.get(b"owned", Some(HOUR_MS)), GetReply::Miss));
        assert!(matches!(store.get(b"long", Some(HOUR_MS)), GetReply::Miss));
        assert!(matches!(
            store.get(b"plain", Some(HOUR_MS)),
            GetReply::Hit(_)
        ));
        advance_ms(500).await;
        assert!(matches!(store.get(b"plain", Some(HOUR_MS)), GetReply::Miss));
    }

    /// A session created longer ago than a newly lowered lifetime ends at the start, and the
    /// record says so: replay does not bring it back.
    #[tokio::test(start_paused = true)]
    async fn a_session_older_than_the_lifetime_ends_at_once() {
        let created = 1_000_000;
        let sink = Arc::new(Recorded::default());
        let store = Store::with_parts(Clock::following_tokio_from(created), Some(sink.clone()));
        session(&store, b"old", Some(b"alice"), Some(created + HOUR_MS));
        sink.take();
        advance_ms(10_000).await;
        assert_eq!(cap_all(&store, 5_000, store.clock().now_ms()), 1);
        assert_eq!(
            sink.take(),
            vec![(b"old".to_vec(), Some(created + 5_000), created + 5_000)]
        );
        assert!(matches!(store.get(b"old", None), GetReply::Miss));
        assert!(store.sessions_of(b"alice").is_empty());
    }
}
