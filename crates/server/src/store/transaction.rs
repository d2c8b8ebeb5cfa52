//! Transactions: several commands on declared keys, seen by everyone else as one step, and
//! persisted as one record.
//!
//! ```text
//! Store::transaction(keys, |tx: &mut Transaction| { ...store methods on declared keys... })
//!     -> Result<R, TransactionTooLarge>
//! Transaction::declares(key) / version_of(key) / rollback()
//! Store::version_of(key)                  // for WATCH, outside a transaction
//! ```
//!
//! How the promises are kept:
//!
//! - **Isolation.** The transaction holds its keys' gates exclusively ([`super::gate`]) for
//!   its whole run. Every other command on those keys, on either protocol, waits at the gate;
//!   commands on other keys do not wait at all.
//! - **One record.** While the transaction runs, the store's writes are not handed to the
//!   sink one by one: the keys they changed are noted. At the end, the final state of each
//!   changed key (its whole entry, or its removal; a new deadline for a key only touched) is
//!   handed to the sink as one batch, which the append-only file writes as one BATCH record
//!   with one checksum: replay applies all of it or, if a crash cut it short, none of it.
//!   Reading the final states under the gates is exact: nothing else changes those keys
//!   before the batch is recorded (eviction and the per-owner limit pass over gated keys).
//! - **Rollback.** Each declared key's entry is copied when the transaction begins;
//!   [`Transaction::rollback`] puts the copies back and forgets the noted changes, so nothing
//!   reaches the file. Scripts use it to be all-or-nothing.
//! - **Snapshots.** An append-only-file rewrite reads the map shard by shard. It must never
//!   copy a transaction's half-done state (a rollback, or a crash before the batch, would
//!   then leave half of it in the new file), so it visits a shard only while no transaction
//!   is running ([`Store::visit_live_sessions_in_shard`] holds `Shared::transactions`
//!   exclusively for one shard's visit; transactions hold it shared).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use super::gate::Held;
use super::raw::Slot;
use super::{Mutation, SessionState, Store};

/// Largest batch a transaction may hand to the append-only file, in bytes, as
/// [`estimated_len`] counts them (an upper bound of the encoded size). A transaction whose
/// writes add up to more is rolled back.
pub const MAX_TRANSACTION_BYTES: usize = 64 * 1024 * 1024;

/// What the estimate adds to each mutation's key, value and owner: more than any record's
/// fixed fields and the batch's length prefix.
const MUTATION_OVERHEAD: usize = 64;

/// A transaction's writes would make one append-only-file record larger than the limit;
/// nothing it did was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the transaction's writes add up to {bytes} bytes, over the limit of {limit} bytes; \
     nothing was applied"
)]
pub struct TransactionTooLarge {
    /// The size of the writes, as estimated.
    pub bytes: usize,
    /// [`MAX_TRANSACTION_BYTES`].
    pub limit: usize,
}

/// How a transaction changed a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Only its deadline moved.
    Touched,
    /// Written or removed.
    Written,
}

thread_local! {
    /// The running transaction's keys, and how it changed them so far (see the module docs).
    static NOTES: RefCell<Notes> = RefCell::new(Notes::default());
}

/// What the thread running a transaction keeps beside it. Hash-based: an `MSET` of tens of
/// thousands of pairs must not cost a quadratic scan per write.
#[derive(Default)]
struct Notes {
    declared: HashSet<Box<[u8]>>,
    changed: HashMap<Box<[u8]>, Effect>,
}

/// Notes a mutation of the running transaction's keys instead of recording it, and returns
/// true; returns false for a mutation of other keys, which the caller records at once: an
/// eviction that a write inside the transaction set off, say. Held back, such a DEL would be
/// lost if the transaction rolled back, and read at its end without the key's gate.
pub(super) fn note(mutation: &Mutation<'_>) -> bool {
    let (first, second, effect) = match mutation {
        Mutation::Set { key, .. } | Mutation::Del { key } => (*key, None, Effect::Written),
        Mutation::SessionSet(session) => (session.key, None, Effect::Written),
        Mutation::Touch { key, .. } | Mutation::SessionTouch { key, .. } => {
            (*key, None, Effect::Touched)
        }
        Mutation::Rotate { old_key, new } => (*old_key, Some(new.key), Effect::Written),
    };
    NOTES.with(|notes| {
        let mut notes = notes.borrow_mut();
        let keys = std::iter::once(first).chain(second);
        if !keys.clone().all(|key| notes.declared.contains(key)) {
            return false;
        }
        for key in keys {
            match notes.changed.get_mut(key) {
                Some(noted) => {
                    if effect == Effect::Written {
                        *noted = Effect::Written;
                    }
                }
                None => {
                    notes.changed.insert(Box::from(key), effect);
                }
            }
        }
        true
    })
}

/// Starts the notes of a transaction of `keys` on this thread (dropping any a panicked
/// transaction left).
fn begin_notes(keys: &[&[u8]]) {
    NOTES.with(|notes| {
        let mut notes = notes.borrow_mut();
        notes.changed.clear();
        notes.declared = keys.iter().map(|key| Box::from(*key)).collect();
    });
}

/// Takes the changes noted so far.
fn take_changed() -> HashMap<Box<[u8]>, Effect> {
    NOTES.with(|notes| std::mem::take(&mut notes.borrow_mut().changed))
}

/// Ends the notes of the transaction on this thread.
fn end_notes() {
    NOTES.with(|notes| *notes.borrow_mut() = Notes::default());
}

/// A running transaction: the keys it holds and what they held when it began.
pub struct Transaction<'a> {
    store: &'a Store,
    /// Each declared key and a copy of its entry when the transaction began.
    before: HashMap<Box<[u8]>, Option<Slot>>,
    /// Whether it runs inside another transaction of the same store, which holds the locks
    /// and records the writes of both.
    nested: bool,
}

impl Transaction<'_> {
    /// Whether `key` is one of the keys the transaction holds.
    pub fn declares(&self, key: &[u8]) -> bool {
        self.before.contains_key(key)
    }

    /// The live version of `key`, without touching it (`None`: absent or expired).
    pub fn version_of(&self, key: &[u8]) -> Option<u64> {
        self.store.live_version(key)
    }

    /// Undoes every change made inside the transaction so far: every declared key holds
    /// again what it held when the transaction began, and nothing reaches the append-only
    /// file. Writes after a rollback are recorded again.
    pub fn rollback(&mut self) {
        // Inside another transaction, the outer one's changes stay noted; the keys put back
        // here are recorded at its end as what they then hold.
        if !self.nested {
            take_changed();
        }
        for (key, slot) in &self.before {
            match slot {
                Some(slot) => self.store.restore_copy(copy(slot)),
                None => self.store.restore_del(key),
            }
        }
    }
}

/// A copy of an entry, session fields and all.
fn copy(slot: &Slot) -> Slot {
    Slot::with_meta(
        slot.key(),
        slot.value(),
        slot.expires_at_ms(),
        slot.version(),
        slot.meta().as_ref(),
    )
}

impl Store {
    /// Runs `f` atomically with respect to every other command, on both protocols, that
    /// reads or writes any of `keys` (duplicates allowed); see the module docs.
    ///
    /// Inside `f`, the ordinary store methods, called on this store, act on the declared
    /// keys under the locks the transaction holds. The caller must keep to declared keys
    /// ([`Transaction::declares`]): the store does not refuse others, it would just not hold
    /// their gates. `f` must not await or block.
    ///
    /// Called inside another transaction of this store, it joins it: the outer one must
    /// hold `keys` already, and its record holds the writes of both. A rollback then undoes
    /// the inner transaction's writes only.
    ///
    /// Every write made inside `f` reaches the sink as one batch when `f` returns, unless it
    /// was rolled back. If that batch would be larger than [`MAX_TRANSACTION_BYTES`], the
    /// transaction is rolled back and the error returned (only with a sink: without
    /// persistence there is no record to bound).
    pub fn transaction<R>(
        &self,
        keys: &[&[u8]],
        f: impl FnOnce(&mut Transaction<'_>) -> R,
    ) -> Result<R, TransactionTooLarge> {
        let shared = &*self.shared;
        if Held::is_running(&shared.gates) {
            // A command that is a transaction of its own (MSET) queued in a MULTI: the outer
            // transaction holds its keys (the caller declared them there) and records its
            // writes.
            let mut tx = Transaction {
                store: self,
                before: self.copies(keys),
                nested: true,
            };
            return Ok(f(&mut tx));
        }
        let _running = super::gate::read(&shared.transactions);
        let _gates = shared.gates.exclusive(keys);
        let _held = Held::mark(&shared.gates);
        begin_notes(keys);
        let mut tx = Transaction {
            store: self,
            before: self.copies(keys),
            nested: false,
        };
        let result = f(&mut tx);
        let changed = take_changed();
        end_notes();
        if let Some(sink) = &shared.sink {
            if !changed.is_empty() {
                let finals: Vec<Final> = changed
                    .iter()
                    .filter_map(|(key, effect)| self.final_state(key, *effect))
                    .collect();
                let bytes: usize = finals.iter().map(Final::estimated_len).sum();
                if bytes > MAX_TRANSACTION_BYTES {
                    tx.rollback();
                    return Err(TransactionTooLarge {
                        bytes,
                        limit: MAX_TRANSACTION_BYTES,
                    });
                }
                let batch: Vec<Mutation<'_>> = finals.iter().map(Final::mutation).collect();
                sink.record_batch(&batch);
            }
        }
        Ok(result)
    }

    /// Each of `keys` once, with a copy of its entry.
    fn copies(&self, keys: &[&[u8]]) -> HashMap<Box<[u8]>, Option<Slot>> {
        let mut copies = HashMap::with_capacity(keys.len());
        for key in keys {
            if !copies.contains_key(*key) {
                let slot = self.shared.map.get(*key).map(|found| copy(found.key()));
                copies.insert(Box::from(*key), slot);
            }
        }
        copies
    }

    /// The live version of `key`, without touching it (`None`: absent or expired): what
    /// `WATCH` remembers.
    pub fn version_of(&self, key: &[u8]) -> Option<u64> {
        let _gate = self.shared.gates.shared(key);
        self.live_version(key)
    }

    fn live_version(&self, key: &[u8]) -> Option<u64> {
        let now = self.shared.clock.now_ms();
        self.shared
            .map
            .get(key)
            .filter(|found| found.key().is_live(now))
            .map(|found| found.key().version())
    }

    /// What a key changed by a transaction holds at its end, as the record to write.
    fn final_state(&self, key: &[u8], effect: Effect) -> Option<Final> {
        let now = self.shared.clock.now_ms();
        let live = self
            .shared
            .map
            .get(key)
            .filter(|found| found.key().is_live(now))
            .map(|found| copy(found.key()));
        match (live, effect) {
            (Some(slot), Effect::Written) => Some(Final::Entry(slot)),
            (Some(slot), Effect::Touched) => Some(Final::Deadline(slot)),
            (None, Effect::Written) => Some(Final::Removed(Box::from(key))),
            // Touched, then expired: the deadline it had in the file has passed too.
            (None, Effect::Touched) => None,
        }
    }

    /// Puts a copy of an entry back in place of whatever its key holds (a rollback), with
    /// its owner indexed as a live binding is.
    fn restore_copy(&self, slot: Slot) {
        if let Some(owner) = slot.owner() {
            self.shared.owners.lock(owner).add(slot.key());
        }
        self.restore_entry(slot);
    }
}

/// The final state of one key a transaction changed.
enum Final {
    /// It holds this entry.
    Entry(Slot),
    /// Its deadline moved; this is the entry.
    Deadline(Slot),
    /// It is gone.
    Removed(Box<[u8]>),
}

impl Final {
    fn mutation(&self) -> Mutation<'_> {
        match self {
            Final::Entry(slot) => match slot.meta() {
                Some(meta) => Mutation::SessionSet(SessionState {
                    key: slot.key(),
                    value: slot.value(),
                    expires_at_ms: slot.expires_at_ms(),
                    version: slot.version(),
                    meta,
                }),
                None => Mutation::Set {
                    key: slot.key(),
                    value: slot.value(),
                    expires_at_ms: slot.expires_at_ms(),
                    version: slot.version(),
                },
            },
            Final::Deadline(slot) => match slot.meta() {
                Some(meta) => Mutation::SessionTouch {
                    key: slot.key(),
                    expires_at_ms: slot.expires_at_ms(),
                    last_access_ms: meta.last_access_ms,
                },
                None => Mutation::Touch {
                    key: slot.key(),
                    expires_at_ms: slot.expires_at_ms(),
                },
            },
            Final::Removed(key) => Mutation::Del { key },
        }
    }

    /// An upper bound of the record's encoded size.
    fn estimated_len(&self) -> usize {
        MUTATION_OVERHEAD
            + match self {
                Final::Entry(slot) => {
                    slot.key().len() + slot.value().len() + slot.owner().map_or(0, <[u8]>::len)
                }
                Final::Deadline(slot) => slot.key().len(),
                Final::Removed(key) => key.len(),
            }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::Duration;

    use sessiond_proto::command::{GetReply, SetMode};

    use super::*;
    use crate::clock::Clock;
    use crate::store::{Expiry, MutationSink, SessionOptions};

    const HOUR_MS: u64 = 3_600_000;

    /// What reached the sink: single mutations as batches of one, told apart by `single`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        Single(String),
        Batch(Vec<String>),
    }

    /// A sink that describes each mutation in a line of text.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<Seen>>);

    fn describe(mutation: &Mutation<'_>) -> String {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match mutation {
            Mutation::Set { key, value, .. } => format!("set {} {}", text(key), text(value)),
            Mutation::SessionSet(s) => format!(
                "session {} {} {}",
                text(s.key),
                text(s.value),
                text(s.meta.owner.unwrap_or_default())
            ),
            Mutation::Touch { key, .. } => format!("touch {}", text(key)),
            Mutation::SessionTouch { key, .. } => format!("session-touch {}", text(key)),
            Mutation::Del { key } => format!("del {}", text(key)),
            Mutation::Rotate { old_key, new } => {
                format!("rotate {} {}", text(old_key), text(new.key))
            }
        }
    }

    impl MutationSink for Recorded {
        fn record(&self, mutation: Mutation<'_>) {
            let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
            seen.push(Seen::Single(describe(&mutation)));
        }

        fn record_batch(&self, mutations: &[Mutation<'_>]) {
            let mut lines: Vec<String> = mutations.iter().map(describe).collect();
            lines.sort();
            let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
            seen.push(Seen::Batch(lines));
        }
    }

    impl Recorded {
        fn take(&self) -> Vec<Seen> {
            std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
        }
    }

    fn store() -> (Store, Arc<Recorded>) {
        let sink = Arc::new(Recorded::default());
        let store = Store::with_parts(Clock::new(), Some(sink.clone()));
        (store, sink)
    }

    fn value(store: &Store, key: &[u8]) -> Option<Vec<u8>> {
        match store.get(key, None) {
            GetReply::Hit(entry) => Some(entry.value.to_vec()),
            GetReply::Miss => None,
        }
    }

    fn set(store: &Store, key: &[u8], value: &[u8]) {
        store.set(key, value, HOUR_MS, SetMode::Upsert);
    }

    #[test]
    fn the_writes_of_a_transaction_are_recorded_as_one_batch_of_final_states() {
        let (store, sink) = store();
        set(&store, b"touched", b"t");
        set(&store, b"removed", b"r");
        sink.take();
        let done = store.transaction(&[b"a", b"touched", b"removed", b"gone"], |_| {
            set(&store, b"a", b"1");
            set(&store, b"a", b"2");
            store.touch(b"touched", HOUR_MS * 2);
            store.del(b"removed", None);
            set(&store, b"gone", b"x");
            store.del(b"gone", None);
            // Nothing is recorded until the transaction ends.
            assert!(sink.take().is_empty());
        });
        assert_eq!(done, Ok(()));
        assert_eq!(
            sink.take(),
            vec![Seen::Batch(vec![
                "del gone".into(),
                "del removed".into(),
                "set a 2".into(),
                "touch touched".into(),
            ])]
        );
        // Outside a transaction, writes are recorded one by one again.
        set(&store, b"a", b"3");
        assert_eq!(sink.take(), vec![Seen::Single("set a 3".into())]);
    }

    #[test]
    fn a_transaction_that_writes_nothing_records_nothing() {
        let (store, sink) = store();
        set(&store, b"a", b"1");
        sink.take();
        let read = store.transaction(&[b"a"], |tx| (value(&store, b"a"), tx.version_of(b"a")));
        let (seen, version) = read.unwrap_or_default();
        assert_eq!(seen.as_deref(), Some(&b"1"[..]));
        assert!(version.is_some());
        assert!(sink.take().is_empty());
    }

    #[test]
    fn a_rollback_restores_every_declared_key_and_records_nothing() {
        let (store, sink) = store();
        set(&store, b"plain", b"before");
        let owned = SessionOptions {
            owner: Some(b"alice"),
            absolute_deadline: None,
            owner_limit: None,
        };
        let stored =
            store.set_session(b"owned", b"s", Expiry::In(HOUR_MS), SetMode::Upsert, &owned);
        assert!(stored.is_ok());
        let versions = (store.version_of(b"plain"), store.version_of(b"owned"));
        sink.take();
        let done = store.transaction(&[b"plain", b"owned", b"new"], |tx| {
            set(&store, b"plain", b"after");
            store.del(b"owned", None);
            set(&store, b"new", b"n");
            tx.rollback();
        });
        assert_eq!(done, Ok(()));
        assert!(sink.take().is_empty());
        assert_eq!(value(&store, b"plain").as_deref(), Some(&b"before"[..]));
        assert_eq!(value(&store, b"owned").as_deref(), Some(&b"s"[..]));
        assert_eq!(value(&store, b"new"), None);
        assert_eq!(
            (store.version_of(b"plain"), store.version_of(b"owned")),
            versions
        );
        // The owner index has the session back.
        let sessions: Vec<_> = store
            .sessions_of(b"alice")
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(sessions, vec![bytes::Bytes::from_static(b"owned")]);
    }

    #[test]
    fn a_write_of_an_undeclared_key_is_recorded_at_once_and_survives_a_rollback() {
        // What eviction does when a write inside a transaction needs room: it removes other
        // keys, on the transaction's thread. Held back, their DELs would be lost by a
        // rollback and the evicted sessions would come back after a restart.
        let (store, sink) = store();
        set(&store, b"evicted", b"e");
        sink.take();
        let done = store.transaction(&[b"a"], |tx| {
            set(&store, b"a", b"1");
            store.del(b"evicted", None);
            assert_eq!(sink.take(), vec![Seen::Single("del evicted".into())]);
            tx.rollback();
        });
        assert_eq!(done, Ok(()));
        assert!(sink.take().is_empty());
        assert_eq!(value(&store, b"evicted"), None);
    }

    #[test]
    fn writes_after_a_rollback_are_recorded() {
        let (store, sink) = store();
        let done = store.transaction(&[b"a"], |tx| {
            set(&store, b"a", b"1");
            tx.rollback();
            set(&store, b"a", b"2");
        });
        assert_eq!(done, Ok(()));
        assert_eq!(sink.take(), vec![Seen::Batch(vec!["set a 2".into()])]);
    }

    #[test]
    fn a_nested_transaction_joins_the_outer_one() {
        let (store, sink) = store();
        set(&store, b"b", b"0");
        sink.take();
        let done = store.transaction(&[b"a", b"b"], |_| {
            set(&store, b"a", b"1");
            let inner = store.transaction(&[b"b"], |inner| {
                set(&store, b"b", b"2");
                inner.rollback();
                assert_eq!(value(&store, b"b").as_deref(), Some(&b"0"[..]));
                set(&store, b"b", b"3");
            });
            assert_eq!(inner, Ok(()));
            assert!(sink.take().is_empty());
        });
        assert_eq!(done, Ok(()));
        assert_eq!(
            sink.take(),
            vec![Seen::Batch(vec!["set a 1".into(), "set b 3".into()])]
        );
    }

    #[test]
    fn a_transaction_over_the_size_limit_is_rolled_back() {
        let (store, sink) = store();
        let big = vec![b'x'; 1024 * 1024];
        let keys: Vec<Vec<u8>> = (0..70).map(|i| format!("k{i}").into_bytes()).collect();
        let declared: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let done = store.transaction(&declared, |_| {
            for key in &keys {
                set(&store, key, &big);
            }
        });
        let Err(too_large) = done else {
            panic!("70 MiB of writes were accepted");
        };
        assert_eq!(too_large.limit, MAX_TRANSACTION_BYTES);
        assert!(too_large.bytes > MAX_TRANSACTION_BYTES);
        assert!(sink.take().is_empty());
        assert!(keys.iter().all(|key| value(&store, key).is_none()));
    }

    #[test]
    fn other_commands_on_a_declared_key_wait_for_the_transaction() {
        let (store, _sink) = store();
        set(&store, b"a", b"0");
        set(&store, b"other", b"0");
        let (read_tx, read_rx) = mpsc::channel();
        let done = store.transaction(&[b"a"], |_| {
            set(&store, b"a", b"1");
            let reader = store.clone();
            let read_tx = read_tx.clone();
            std::thread::spawn(move || {
                let seen = value(&reader, b"a");
                let _ = read_tx.send(seen);
            });
            // A key the transaction does not hold is not held up.
            assert_eq!(value(&store, b"other").as_deref(), Some(&b"0"[..]));
            // The reader is held at the gate: it cannot see "1" before the end, nor "0".
            assert!(read_rx.recv_timeout(Duration::from_millis(100)).is_err());
            set(&store, b"a", b"2");
        });
        assert_eq!(done, Ok(()));
        let seen = read_rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(seen, Ok(Some(b"2".to_vec())));
    }

    #[test]
    fn a_command_waiting_for_a_held_key_does_not_hold_up_its_worker() {
        // One async worker: if the GET waiting at the gate blocked it, the timer task could
        // not run until the transaction ended.
        let (store, _sink) = store();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("a runtime");
        let (held_tx, held_rx) = mpsc::channel();
        let holder = store.clone();
        let transaction = std::thread::spawn(move || {
            holder.transaction(&[b"k"], |_| {
                let _ = held_tx.send(());
                std::thread::sleep(Duration::from_millis(1500));
            })
        });
        assert!(held_rx.recv_timeout(Duration::from_secs(10)).is_ok());
        let timer_took = runtime.block_on(async {
            let reader = store.clone();
            let waiting = tokio::spawn(async move { value(&reader, b"k") });
            tokio::task::yield_now().await;
            let started = std::time::Instant::now();
            let timer = tokio::spawn(tokio::time::sleep(Duration::from_millis(10)));
            let _ = timer.await;
            let took = started.elapsed();
            let _ = waiting.await;
            took
        });
        assert!(timer_took < Duration::from_millis(1000), "{timer_took:?}");
        assert_eq!(transaction.join().ok(), Some(Ok(())));
    }

    #[test]
    fn concurrent_transactions_are_serializable() {
        // Each transaction moves one unit between two of four counters; the total never
        // changes, and a transaction that reads all four always sees the same total.
        let (store, _sink) = store();
        let keys: [&[u8]; 4] = [b"c0", b"c1", b"c2", b"c3"];
        for key in keys {
            set(&store, key, b"100");
        }
        let read = |store: &Store, key: &[u8]| -> i64 {
            value(store, key)
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(i64::MIN)
        };
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut bad_totals = 0;
                    for i in 0..2_000usize {
                        let (from, to) = (keys[(t + i) % 4], keys[(t + i + 1) % 4]);
                        let moved = store.transaction(&[from, to], |_| {
                            let a = read(&store, from);
                            let b = read(&store, to);
                            set(&store, from, (a - 1).to_string().as_bytes());
                            set(&store, to, (b + 1).to_string().as_bytes());
                        });
                        assert!(moved.is_ok());
                        let total = store.transaction(&keys, |_| {
                            keys.iter().map(|k| read(&store, k)).sum::<i64>()
                        });
                        if total != Ok(400) {
                            bad_totals += 1;
                        }
                    }
                    bad_totals
                })
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().ok(), Some(0));
        }
        let total: i64 = keys.iter().map(|k| read(&store, k)).sum();
        assert_eq!(total, 400);
    }

    #[test]
    fn end_all_waits_for_a_transaction_holding_one_of_the_sessions() {
        let (store, sink) = store();
        let owned = SessionOptions {
            owner: Some(b"bob"),
            absolute_deadline: None,
            owner_limit: None,
        };
        for key in [&b"s1"[..], b"s2"] {
            let stored = store.set_session(key, b"v", Expiry::In(HOUR_MS), SetMode::Upsert, &owned);
            assert!(stored.is_ok());
        }
        sink.take();
        let (ended_tx, ended_rx) = mpsc::channel();
        let done = store.transaction(&[b"s1"], |_| {
            set(&store, b"s1", b"updated");
            let other = store.clone();
            std::thread::spawn(move || {
                let _ = ended_tx.send(other.end_all(b"bob", None));
            });
            assert!(ended_rx.recv_timeout(Duration::from_millis(100)).is_err());
        });
        assert_eq!(done, Ok(()));
        assert_eq!(ended_rx.recv_timeout(Duration::from_secs(10)), Ok(2));
        // The transaction's record comes first, so replay ends the session it wrote.
        let seen = sink.take();
        let position = |wanted: &Seen| seen.iter().position(|s| s == wanted);
        let batch = position(&Seen::Batch(vec!["session s1 updated bob".into()]));
        let del = position(&Seen::Single("del s1".into()));
        assert!(batch.is_some() && del.is_some() && batch < del, "{seen:?}");
        assert_eq!(value(&store, b"s1"), None);
    }
}
